// The life of one port mapping at the gateway, as an I/O-free core that takes `now`:
// which protocol to ask (PCP, then NAT-PMP, then UPnP IGD, each only when the one
// before it failed), when to renew, when the mapping is lost, and what to delete at
// the end. The glue (port_mapper.h) runs the requests it asks for on a worker thread
// and feeds the answers back.
//
// Renewal at half the granted lifetime: RFC 6886 section 3.3 and RFC 6887 section
// 11.2.1 (between 1/2 and 5/8 of it); a failed renewal is retried every
// kRenewRetryUs until the mapping expires, then the mapping is lost.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace natfwd::portmap {

enum class MapProtocol { kPcp, kNatPmp, kUpnp };
std::string_view to_string(MapProtocol protocol);  // "pcp", "nat-pmp", "upnp"

// The answer of one request (a create, a renewal or a delete).
struct MapAnswer {
  bool ok = false;
  std::string external_ip;
  uint16_t external_port = 0;
  uint32_t lifetime_seconds = 0;
  std::string error;  // why not, for the log ("no answer", "PCP NOT_AUTHORIZED", ...)
};

// RFC 6886 section 3.3 recommends asking for two hours.
inline constexpr uint32_t kRequestedLifetimeSeconds = 7200;
inline constexpr int64_t kRenewRetryUs = 30'000'000;

class MappingLifecycle {
 public:
  enum class State { kRequesting, kMapped, kFailed, kLost, kReleased };
  struct Step {
    enum class Kind { kNone, kRequest, kDelete };
    Kind kind = Kind::kNone;
    MapProtocol protocol = MapProtocol::kPcp;
  };

  // `order` is tried front to back; it must not be empty.
  explicit MappingLifecycle(std::vector<MapProtocol> order);

  Step start();
  // The answer to the last kRequest.
  Step on_answer(const MapAnswer& answer, int64_t now_us);
  // Call at next_deadline(): a renewal is due, or the mapping has expired.
  Step on_timer(int64_t now_us);
  // The owner is done: kDelete when a mapping exists (or may, while a request runs).
  Step release();

  std::optional<int64_t> next_deadline() const;
  State state() const { return state_; }
  MapProtocol protocol() const { return order_[index_]; }
  const std::string& external_ip() const { return external_ip_; }
  uint16_t external_port() const { return external_port_; }
  // Every protocol's failure, "pcp: no answer; nat-pmp: ...": for the log line.
  const std::string& errors() const { return errors_; }
  bool request_in_flight() const { return in_flight_; }

 private:
  std::vector<MapProtocol> order_;
  size_t index_ = 0;
  State state_ = State::kRequesting;
  bool in_flight_ = false;
  bool renewing_ = false;
  std::string external_ip_;
  uint16_t external_port_ = 0;
  int64_t renew_at_us_ = 0, expires_at_us_ = 0;
  std::string errors_;
};

}  // namespace natfwd::portmap

// Port mappings at this machine's gateway for the UDP ports of our ICE host candidates,
// so that a peer behind a NAT that would otherwise only be relayed (endpoint-dependent
// mapping) can offer an address anyone may send to (the `mapped` candidate).
//
// PortMapper is per process: it knows the gateway, remembers which protocol it
// answered (PCP, NAT-PMP or UPnP IGD) and, when none did, stops asking for a minute.
// A PortMapping is one mapping, owned by one ICE session: it is requested when made,
// renewed before it expires, and deleted at the gateway when the owner drops it.
// Every request runs on a worker thread (GTask): miniupnpc's discovery and HTTP calls
// block, and the main loop must not. ~PortMapper waits, bounded, for the deletes still
// running so that an exiting peer leaves no mapping behind.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <gio/gio.h>

#include "glib_ptr.h"
#include "portmap/gateway_requests.h"
#include "portmap/mapping_lifecycle.h"

namespace natfwd::portmap {

class PortMapper;

class PortMapping {
 public:
  struct Callbacks {
    // The gateway granted external_ip:external_port (again after a renewal).
    std::function<void(MapProtocol, const std::string& external_ip, uint16_t external_port)>
        on_mapped;
    // No protocol gave a mapping, or a granted one expired without renewal.
    std::function<void(const std::string& why)> on_failed;
  };
  ~PortMapping();  // deletes the mapping at the gateway
  PortMapping(const PortMapping&) = delete;
  PortMapping& operator=(const PortMapping&) = delete;

  const std::string& internal_ip() const { return job_.client_ip; }
  uint16_t internal_port() const { return job_.internal_port; }
  bool mapped() const { return life_.state() == MappingLifecycle::State::kMapped; }
  // "ip:port" once mapped.
  std::string external() const;

 private:
  friend class PortMapper;
  PortMapping(PortMapper& mapper, uint64_t id, MapJob job, std::vector<MapProtocol> order,
              Callbacks callbacks);
  void act(MappingLifecycle::Step step);
  void on_answer(const MapAnswer& answer);
  void arm_timer();
  static gboolean on_timer(gpointer self);

  PortMapper& mapper_;
  uint64_t id_;
  MapJob job_;
  MappingLifecycle life_;
  Callbacks callbacks_;
  SourceId timer_;
};

class PortMapper {
 public:
  // `gateway`: an IPv4 literal; "" takes the default route's gateway at each map().
  // `protocols`: those asked, in this order (not empty).
  explicit PortMapper(std::string gateway = "",
                      std::vector<MapProtocol> protocols = {MapProtocol::kPcp, MapProtocol::kNatPmp,
                                                            MapProtocol::kUpnp});
  ~PortMapper();
  PortMapper(const PortMapper&) = delete;
  PortMapper& operator=(const PortMapper&) = delete;

  // Our IPv4 address toward the gateway, "" when there is none: the host candidate
  // whose port is worth mapping.
  std::string local_address() const;
  // Starts mapping internal_ip:internal_port (UDP). nullptr when there is no gateway
  // or no protocol answered within the last kNoGatewayRetryUs: nothing to wait for.
  std::unique_ptr<PortMapping> map(const std::string& internal_ip, uint16_t internal_port,
                                   PortMapping::Callbacks callbacks);
  // Finds the UPnP gateway in the background, once, when UPnP is among the protocols:
  // its discovery and description take seconds on many routers, longer than a tunnel's
  // candidates wait for a mapping, so a serving peer does it before anyone connects.
  void prepare();
  // Runs the default main context until no request is running, at most timeout_us.
  void drain(int64_t timeout_us);

  static constexpr int64_t kNoGatewayRetryUs = 60'000'000;
  static constexpr int64_t kDrainUs = 3'000'000;

 private:
  friend class PortMapping;
  struct Alive {};
  struct Pending;
  void submit(uint64_t owner, const MapJob& job);
  static void run_in_thread(GTask*, gpointer, gpointer task_data, GCancellable*);
  static void on_done(GObject*, GAsyncResult* result, gpointer);
  void finished(Pending& pending);
  std::string gateway() const;

  std::string fixed_gateway_;
  std::vector<MapProtocol> protocols_;
  bool prepared_ = false;
  std::shared_ptr<Alive> alive_ = std::make_shared<Alive>();
  std::map<uint64_t, PortMapping*> live_;
  uint64_t next_id_ = 1;
  size_t running_ = 0;
  std::optional<MapProtocol> working_;  // the protocol that answered last
  int64_t none_until_us_ = 0;
};

}  // namespace natfwd::portmap

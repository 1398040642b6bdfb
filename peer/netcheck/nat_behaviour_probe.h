// RFC 5780 NAT behaviour discovery, client side, without I/O: datagrams and `now` in,
// datagrams to send and a deadline out. The glue (netcheck_runner) owns two UDP
// sockets and a timer; unit tests drive it with a fake clock.
//
// Two local sockets, so that one test cannot open the NAT for another:
//   mapping socket (section 4.3): Binding to the primary address (test I), to the
//     alternate IP with the primary port (II), to the alternate IP and port (III);
//     the mapped addresses compared tell the mapping behaviour.
//   filtering socket (section 4.4): Binding to the primary (I), with CHANGE-REQUEST
//     "change IP and port" (II), then "change port" (III); which answers arrive tells
//     the filtering behaviour. Had these run on the mapping socket, test III there
//     would already have let the alternate address in.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "stun/stun_message.h"

namespace natfwd::netcheck {

using TimePoint = std::chrono::steady_clock::time_point;
using Duration = std::chrono::milliseconds;

// RFC 4787 / RFC 5780 terms. kNoNat: the mapped address is the local one.
enum class Mapping { kUnknown, kNoNat, kEndpointIndependent, kAddressDependent,
                     kAddressAndPortDependent };
enum class Filtering { kUnknown, kEndpointIndependent, kAddressDependent,
                       kAddressAndPortDependent };

std::string_view to_string(Mapping mapping);
std::string_view to_string(Filtering filtering);

struct NatBehaviour {
  bool udp = false;              // the server answered at all
  bool server_discovery = false; // it gave OTHER-ADDRESS (can do RFC 5780)
  std::optional<stun::TransportAddress> mapped;  // test I on the mapping socket
  std::vector<stun::TransportAddress> mapped_by_test;  // I, II, III as far as they ran
  Mapping mapping = Mapping::kUnknown;
  Filtering filtering = Filtering::kUnknown;
  bool port_preserved = false;   // mapped port == local port
};

class NatBehaviourProbe {
 public:
  enum Socket { kMappingSocket = 0, kFilteringSocket = 1 };
  struct Send {
    int socket = kMappingSocket;
    stun::TransportAddress to;
    std::vector<std::byte> bytes;
  };
  struct Timing {
    // Retransmissions at these offsets from the first send (RFC 8489 section 6.2.1
    // doubles from 500 ms over 39.5 s; a diagnosis cannot wait that long, and for the
    // filtering tests silence is the answer, so this is short but still several tries).
    std::array<Duration, 4> retransmit_at{Duration(0), Duration(250), Duration(750),
                                          Duration(1500)};
    Duration give_up_after{2500};
  };

  // `locals` are the two sockets' bound addresses (to tell "no NAT" and port
  // preservation); `id_seed` makes the transaction ids (random in the glue).
  NatBehaviourProbe(stun::TransportAddress server,
                    std::array<stun::TransportAddress, 2> locals, uint64_t id_seed,
                    Timing timing);
  NatBehaviourProbe(stun::TransportAddress server,
                    std::array<stun::TransportAddress, 2> locals, uint64_t id_seed)
      : NatBehaviourProbe(server, locals, id_seed, Timing()) {}

  void start(TimePoint now);
  // A datagram arrived on `socket`; anything not an answer to a running test is
  // ignored (malformed bytes included).
  void on_datagram(int socket, std::span<const std::byte> datagram, TimePoint now);
  void on_timer(TimePoint now);

  std::vector<Send> take_sends();
  std::optional<TimePoint> next_deadline() const;
  bool done() const { return !mapping_.running && !filtering_.running; }
  const NatBehaviour& result() const { return result_; }

 private:
  // One Binding transaction in flight on one socket.
  struct Transaction {
    bool running = false;
    int step = 0;  // which test of the sequence (1, 2, 3)
    stun::TransactionId id{};
    stun::TransportAddress to;
    uint8_t change_flags = 0;
    TimePoint started{};
    size_t sent = 0;  // how many of timing_.retransmit_at have gone
  };

  void begin(Transaction& t, int socket, int step, const stun::TransportAddress& to,
             uint8_t change_flags, TimePoint now);
  void transmit(Transaction& t, int socket);
  void mapping_answered(const stun::TransportAddress& mapped,
                        const std::optional<stun::TransportAddress>& other, TimePoint now);
  void mapping_timed_out();
  void filtering_answered(TimePoint now);
  void filtering_timed_out(TimePoint now);

  stun::TransportAddress server_;
  std::array<stun::TransportAddress, 2> locals_;
  uint64_t id_seed_;
  uint64_t next_id_ = 0;
  Timing timing_;
  std::optional<stun::TransportAddress> other_;  // OTHER-ADDRESS of mapping test I
  Transaction mapping_;
  Transaction filtering_;
  std::vector<Send> sends_;
  NatBehaviour result_;
};

}  // namespace natfwd::netcheck

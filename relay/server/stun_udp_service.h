// STUN and TURN over UDP on the relay's port: reads datagrams, answers Binding
// requests through stun::BindingResponder, hands the other STUN methods and
// ChannelData to the TURN server (when there is one), drops garbage (rate-limited
// warning).
//
// With RFC 5780 discovery (--alternate-address) it also reads the three other
// sockets (primary IP / alternate port, alternate IP / both ports); those answer
// Binding only, and a CHANGE-REQUEST is answered from the socket it names.
//
// With data-plane shards (`relay --threads N`, turn_shards.h) each shard runs one of
// these for its own socket of the listen port's SO_REUSEPORT group (Reads::kMain:
// the discovery sockets only to answer from), and the main thread one for the
// discovery sockets (Reads::kDiscovery). Sources attach to the thread-default
// main context.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gio/gio.h>

#include "glib_ptr.h"
#include "metrics/relay_stats.h"
#include "net/datagrams.h"
#include "binding/binding_responder.h"

namespace natfwd::relay {

class TurnService;

// The four bound UDP sockets of RFC 5780 discovery, [ip][port] as in
// stun::DiscoveryAddresses; [0][0] is the main socket.
struct DiscoverySockets {
  std::array<std::array<GSocket*, 2>, 2> by_ip_port{};
  stun::DiscoveryAddresses addresses;
};

class StunUdpService {
 public:
  // Which of the sockets this service reads.
  enum class Reads { kAll, kMain, kDiscovery };
  // Takes a reference on the bound, non-blocking UDP socket. `turn` (may be null:
  // --no-turn) must outlive this service. `discovery` (optional) holds `socket` at
  // [0][0] and the three others.
  StunUdpService(GSocket* socket, std::string software, TurnService* turn = nullptr,
                 const std::optional<DiscoverySockets>& discovery = std::nullopt,
                 Reads reads = Reads::kAll);
  ~StunUdpService();
  StunUdpService(const StunUdpService&) = delete;
  StunUdpService& operator=(const StunUdpService&) = delete;
  // Counts answered Binding requests and dropped garbage there (--metrics).
  void set_stats(RelayStats* stats) { stats_ = stats; }

 private:
  // One socket read by this service, and which of the four it is.
  struct Listener {
    StunUdpService* service = nullptr;
    stun::ServerEndpoint endpoint;
    GObjectPtr<GSocket> socket;
    GSourcePtr read_source;  // null: only answered from
  };

  static gboolean on_readable_trampoline(GSocket*, GIOCondition, gpointer listener);
  void on_readable(Listener& listener);
  void handle_datagram(std::span<const std::byte> datagram, const sockaddr_storage& from,
                       socklen_t from_length, stun::ServerEndpoint on);
  void add_listener(GSocket* socket, stun::ServerEndpoint endpoint, bool read);
  GSocket* socket_at(stun::ServerEndpoint endpoint) const;

  // A burst of datagrams is read in one wakeup, but not forever: let others run.
  static constexpr int kMaxDatagramsPerWakeup = 64;

  std::vector<std::unique_ptr<Listener>> listeners_;  // [0] is the main socket
  stun::BindingResponder responder_;
  TurnService* turn_;
  RelayStats* stats_ = nullptr;
  net::DatagramReader reader_{net::udp_io_mode_from_environment()};
};

}  // namespace natfwd::relay

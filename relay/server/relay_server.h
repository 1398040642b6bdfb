// The relay process's network side: one port number, bound on UDP (STUN, TURN) and
// TCP (rendezvous, TURN over TCP, TLS), an optional TLS port, and the services on
// them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "address.h"
#include "metrics/relay_stats.h"
#include "rendezvous/rendezvous_core.h"
#include "glib_ptr.h"
#include "server/tls_service.h"
#include "server/turn_service.h"
#include "server/turn_shards.h"

namespace natfwd::relay {

class StunUdpService;
class RendezvousService;

struct RelayServerConfig {
  HostPort listen{"0.0.0.0", 3478};  // IP literal; port 0 picks a free port
  RendezvousConfig rendezvous;        // stun_port and TLS fields are filled in here
  std::string software;               // SOFTWARE attribute, "natfwd-relay 0.1.0"
  bool turn_enabled = true;           // false: --no-turn
  TurnServiceConfig turn;             // listen_ip is filled in from `listen`
  std::optional<HostPort> tls_listen;
  // The certificate for TLS on the main TCP port (first byte 0x16) and on tls_listen.
  // Empty cert_file: no TLS at all (tls_listen must then be unset).
  TlsIdentity tls;
  // Counters for --metrics (the cores and services count into it); null: none.
  RelayStats* stats = nullptr;
  // Who may hold a name (NameBindingFile in the relay); null: bindings in memory.
  std::unique_ptr<NameBindingPolicy> names;
  // RFC 5780 behaviour discovery: a second IP of the same family as `listen` (which
  // must then be a real address, not a wildcard), and the alternate port (0: the
  // listen port + 1, or any free one when the listen port is 0). Empty: off.
  std::string alternate_ip;
  uint16_t alternate_port = 0;
  // --threads: TURN-over-UDP data-plane shards (turn_shards.h); 1 serves UDP on the
  // main thread with one socket, as without threads.
  size_t threads = 1;
};

class RelayServer {
 public:
  // Binds and starts serving on the thread-default main context. Throws
  // std::runtime_error with a one-line message when the sockets cannot be bound.
  explicit RelayServer(RelayServerConfig config);
  ~RelayServer();
  RelayServer(const RelayServer&) = delete;
  RelayServer& operator=(const RelayServer&) = delete;

  // The bound address: same IP as asked for, the real port.
  const HostPort& local_address() const { return local_address_; }
  // The bound TLS address, if any.
  const std::optional<HostPort>& tls_address() const { return tls_address_; }
  // What the cores hold now, for --metrics.
  RelayGauges gauges() const;
  // The rendezvous's registry, for the publishing front door's lookups.
  const RendezvousCore& rendezvous() const;
  // Publishing: TLS connections (main port and --tls-listen) whose ClientHello the
  // front door takes go to it untouched (sni_peek.h). False when there is no TLS.
  bool set_sni_route(SniPeek::Route route) {
    if (tls_) tls_->set_sni_route(std::move(route));
    return tls_ != nullptr;
  }
  // Custom domains: the DNS look-ups of claims (RendezvousService::set_domain_checker),
  // and their answers.
  void set_domain_checker(std::function<void(const CheckDomainsAction&)> checker);
  void domains_checked(ConnectionId id, uint64_t check, const std::vector<DomainVerdict>& verdicts);
  // RFC 5780: the OTHER-ADDRESS of the main port (alternate IP and port), if on.
  const std::optional<HostPort>& discovery_address() const { return discovery_address_; }

 private:
  // With port 0 the kernel picks a free TCP port, which may be taken on UDP; try
  // again with another one this many times.
  static constexpr int kBindAttempts = 10;

  // `udp_sockets` > 1: the UDP port is an SO_REUSEPORT group of that many sockets.
  void bind_sockets(const HostPort& listen, size_t udp_sockets);
  void bind_tls(const HostPort& listen);
  void bind_discovery(const std::string& alternate_ip, uint16_t alternate_port);

  GObjectPtr<GSocket> tcp_;
  GObjectPtr<GSocket> udp_;
  // With data-plane shards, the rest of the listen port's SO_REUSEPORT group.
  std::vector<GObjectPtr<GSocket>> more_udp_;
  GObjectPtr<GSocket> tls_socket_;
  HostPort local_address_;
  std::optional<HostPort> tls_address_;
  // RFC 5780 sockets: primary IP / alternate port, alternate IP / primary and
  // alternate port.
  GObjectPtr<GSocket> udp_primary_ip_alt_port_;
  GObjectPtr<GSocket> udp_alt_ip_primary_port_;
  GObjectPtr<GSocket> udp_alt_ip_alt_port_;
  std::optional<HostPort> discovery_address_;
  bool listen_port_was_zero_ = false;
  // Declared in dependency order: destroyed rendezvous first, TURN last.
  std::unique_ptr<TurnService> turn_;  // TURN over TCP/TLS, and UDP without shards
  std::unique_ptr<TurnShards> shards_;
  std::unique_ptr<TlsService> tls_;
  std::unique_ptr<StunUdpService> stun_;
  std::unique_ptr<RendezvousService> rendezvous_;
};

// The host's interface addresses: added to `policy` as the relay's own, and the
// first global IPv6 one (for IPv6 allocations) returned, "" if none.
std::string add_host_addresses(turn::PeerPolicy& policy);

}  // namespace natfwd::relay

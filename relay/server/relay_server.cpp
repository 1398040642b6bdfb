#include "server/relay_server.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <algorithm>
#include <stdexcept>

#include "log.h"
#include "server/rendezvous_service.h"
#include "net/socket_address.h"
#include "server/stun_udp_service.h"
#include "socket_buffers.h"

namespace natfwd::relay {
namespace {

// Listen queue for the rendezvous port; bursts of reconnecting peers after a relay
// restart should not see refused connections.
constexpr int kListenBacklog = 1024;
constexpr int kUdpBufferBytes = 8 << 20;

GObjectPtr<GSocket> new_socket(GSocketFamily family, GSocketType type, GSocketProtocol protocol) {
  GError* raw_error = nullptr;
  GSocket* socket = g_socket_new(family, type, protocol, &raw_error);
  if (!socket) {
    GErrorPtr error(raw_error);
    throw std::runtime_error(std::string("cannot create socket: ") + error->message);
  }
  return GObjectPtr<GSocket>(socket);
}

// Binds; on failure returns false and sets `error_message`, `in_use` tells EADDRINUSE.
bool bind_socket(GSocket* socket, GSocketAddress* address, bool allow_reuse, bool& in_use,
                 std::string& error_message) {
  GError* raw_error = nullptr;
  if (g_socket_bind(socket, address, allow_reuse, &raw_error)) return true;
  GErrorPtr error(raw_error);
  in_use = g_error_matches(error.get(), G_IO_ERROR, G_IO_ERROR_ADDRESS_IN_USE);
  error_message = error->message;
  return false;
}

uint16_t bound_port(GSocket* socket) {
  GObjectPtr<GSocketAddress> local(g_socket_get_local_address(socket, nullptr));
  if (!local) throw std::runtime_error("cannot read the bound address");
  return g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(local.get()));
}

}  // namespace

std::string add_host_addresses(turn::PeerPolicy& policy) {
  std::string ipv6;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return ipv6;
  for (ifaddrs* entry = list; entry; entry = entry->ifa_next) {
    if (!entry->ifa_addr) continue;
    if (entry->ifa_addr->sa_family == AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(entry->ifa_addr);
      const auto* b = reinterpret_cast<const uint8_t*>(&in->sin_addr);
      policy.add_own_address(stun::TransportAddress::ipv4({b[0], b[1], b[2], b[3]}, 0));
      if (entry->ifa_netmask) {
        const auto* mask = reinterpret_cast<const sockaddr_in*>(entry->ifa_netmask);
        policy.add_own_network(turn::network_of(
            std::span(b, 4), std::span(reinterpret_cast<const uint8_t*>(&mask->sin_addr), 4)));
      }
    } else if (entry->ifa_addr->sa_family == AF_INET6) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(entry->ifa_addr);
      std::array<uint8_t, 16> ip{};
      std::copy_n(reinterpret_cast<const uint8_t*>(&in6->sin6_addr), 16, ip.begin());
      const auto address = stun::TransportAddress::ipv6(ip, 0);
      policy.add_own_address(address);
      if (entry->ifa_netmask) {
        const auto* mask = reinterpret_cast<const sockaddr_in6*>(entry->ifa_netmask);
        policy.add_own_network(turn::network_of(
            std::span(ip), std::span(reinterpret_cast<const uint8_t*>(&mask->sin6_addr), 16)));
      }
      if (ipv6.empty() && !turn::PeerPolicy::is_special(address)) {
        char text[INET6_ADDRSTRLEN] = {};
        inet_ntop(AF_INET6, ip.data(), text, sizeof text);
        ipv6 = text;
      }
    }
  }
  freeifaddrs(list);
  return ipv6;
}

RelayServer::RelayServer(RelayServerConfig config) {
  config.rendezvous.stats = config.stats;
  config.turn.turn.stats = config.stats;
  const size_t shards = config.turn_enabled ? std::max<size_t>(config.threads, 1) : 1;
  bind_sockets(config.listen, shards);
  config.rendezvous.stun_port = local_address_.port;
  if (config.tls_listen) {
    if (config.tls.cert_file.empty()) throw std::runtime_error("TLS port without a certificate");
    bind_tls(*config.tls_listen);
    config.rendezvous.turn.tls_port = tls_address_->port;
    config.rendezvous.turn.tls_spki_sha256 = config.tls.spki_sha256;
  }
  config.rendezvous.turn.own_turn = config.turn_enabled;
  if (config.turn_enabled) {
    config.turn.listen_ip = config.listen.host;
    config.turn.turn.software = config.software;
    // The listen address is ours too, whatever the interfaces say.
    GObjectPtr<GSocketAddress> own(net::make_socket_address(local_address_.host, 0));
    if (own) config.turn.turn.peers.add_own_address(net::to_transport_address(own.get()));
    // One set of quotas and one nonce key for every TurnServer core (turn_shards.h).
    const auto& turn = config.turn.turn;
    config.turn.turn.registry = std::make_shared<turn::AllocationRegistry>(
        turn::AllocationRegistry::Limits{turn.max_allocations_per_user,
                                         turn.max_allocations_per_address,
                                         turn.max_allocations});
    config.turn.nonces = turn::NonceMint::with_random_key();
    turn_ = std::make_unique<TurnService>(udp_.get(), config.turn);
  }
  // TLS on the main TCP port too (the first byte tells it apart), so always a
  // TlsService when there is a certificate; its own listener only with tls_listen.
  if (!config.tls.cert_file.empty()) {
    tls_ = std::make_unique<TlsService>(tls_socket_.get(), config.tls);
    tls_->set_stats(config.stats);
  }
  std::optional<DiscoverySockets> discovery;
  if (!config.alternate_ip.empty()) {
    bind_discovery(config.alternate_ip, config.alternate_port);
    DiscoverySockets sockets;
    sockets.by_ip_port = {{{udp_.get(), udp_primary_ip_alt_port_.get()},
                           {udp_alt_ip_primary_port_.get(), udp_alt_ip_alt_port_.get()}}};
    const HostPort hosts[2][2] = {
        {local_address_, {local_address_.host, discovery_address_->port}},
        {{discovery_address_->host, local_address_.port}, *discovery_address_}};
    for (int ip = 0; ip < 2; ++ip)
      for (int port = 0; port < 2; ++port) {
        GObjectPtr<GSocketAddress> a(net::make_socket_address(hosts[ip][port].host,
                                                         hosts[ip][port].port));
        sockets.addresses.by_ip_port[ip][port] = net::to_transport_address(a.get());
      }
    discovery = sockets;
  }
  if (shards > 1) {
    std::vector<GSocket*> sockets{udp_.get()};
    for (const auto& socket : more_udp_) sockets.push_back(socket.get());
    shards_ = std::make_unique<TurnShards>(sockets, config.turn, config.software, discovery,
                                           config.stats);
    if (discovery)
      stun_ = std::make_unique<StunUdpService>(udp_.get(), config.software, nullptr, discovery,
                                               StunUdpService::Reads::kDiscovery);
  } else {
    stun_ = std::make_unique<StunUdpService>(udp_.get(), config.software, turn_.get(), discovery);
  }
  if (stun_) stun_->set_stats(config.stats);
  rendezvous_ = std::make_unique<RendezvousService>(tcp_.get(), config.rendezvous, turn_.get(),
                                                    tls_.get(), std::move(config.names));
  if (tls_) tls_->set_targets(rendezvous_.get(), turn_.get());
}

const RendezvousCore& RelayServer::rendezvous() const { return rendezvous_->core(); }

void RelayServer::set_domain_checker(std::function<void(const CheckDomainsAction&)> checker) {
  rendezvous_->set_domain_checker(std::move(checker));
}

void RelayServer::domains_checked(ConnectionId id, uint64_t check,
                                  const std::vector<DomainVerdict>& verdicts) {
  rendezvous_->domains_checked(id, check, verdicts);
}

RelayGauges RelayServer::gauges() const {
  RelayGauges g;
  const RendezvousCore& rendezvous = rendezvous_->core();
  g.registered_peers = rendezvous.registered_count();
  g.rendezvous_connections = rendezvous.connection_count();
  g.open_sessions = rendezvous.session_count();
  if (turn_) {
    g.turn_allocations = turn_->core().config().registry->allocation_count();
    g.turn_permissions = turn_->core().permission_count();
    g.turn_channels = turn_->core().channel_count();
  }
  if (shards_) {
    g.turn_permissions += shards_->permission_count();
    g.turn_channels += shards_->channel_count();
  }
  return g;
}

RelayServer::~RelayServer() {
  rendezvous_.reset();
  stun_.reset();
  tls_.reset();
  shards_.reset();
  turn_.reset();
  if (udp_) g_socket_close(udp_.get(), nullptr);
  for (auto& socket : more_udp_) g_socket_close(socket.get(), nullptr);
  for (auto* socket : {&udp_primary_ip_alt_port_, &udp_alt_ip_primary_port_,
                       &udp_alt_ip_alt_port_})
    if (*socket) g_socket_close(socket->get(), nullptr);
  if (tcp_) g_socket_close(tcp_.get(), nullptr);
  if (tls_socket_) g_socket_close(tls_socket_.get(), nullptr);
}

void RelayServer::bind_tls(const HostPort& listen) {
  GObjectPtr<GSocketAddress> address(net::make_socket_address(listen.host, listen.port));
  if (!address) throw std::runtime_error("'" + listen.host + "' is not an IP address");
  auto socket = new_socket(g_socket_address_get_family(address.get()), G_SOCKET_TYPE_STREAM,
                           G_SOCKET_PROTOCOL_TCP);
  bool in_use = false;
  std::string error;
  if (!bind_socket(socket.get(), address.get(), true, in_use, error))
    throw std::runtime_error("cannot bind tls " + listen.to_string() + ": " + error);
  g_socket_set_listen_backlog(socket.get(), kListenBacklog);
  GError* raw_error = nullptr;
  if (!g_socket_listen(socket.get(), &raw_error)) {
    GErrorPtr listen_error(raw_error);
    throw std::runtime_error("cannot listen on tls " + listen.to_string() + ": " +
                             listen_error->message);
  }
  tls_address_ = HostPort{listen.host, bound_port(socket.get())};
  tls_socket_ = std::move(socket);
}

void RelayServer::bind_discovery(const std::string& alternate_ip, uint16_t alternate_port) {
  GObjectPtr<GSocketAddress> probe(net::make_socket_address(alternate_ip, 0));
  if (!probe) throw std::runtime_error("'" + alternate_ip + "' is not an IP address");
  const GSocketFamily family = g_socket_address_get_family(probe.get());
  auto bind_udp = [&](const std::string& host, uint16_t port) {
    auto socket = new_socket(family, G_SOCKET_TYPE_DATAGRAM, G_SOCKET_PROTOCOL_UDP);
    GObjectPtr<GSocketAddress> address(net::make_socket_address(host, port));
    bool in_use = false;
    std::string error;
    if (!bind_socket(socket.get(), address.get(), false, in_use, error))
      throw std::runtime_error("cannot bind udp " + HostPort{host, port}.to_string() +
                               " (--alternate-address/--alternate-port): " + error);
    return socket;
  };
  // The alternate port: as given, else the listen port + 1, else (port 0, as tests
  // run) whatever the kernel picks on the primary IP.
  uint16_t port = alternate_port;
  if (port == 0 && local_address_.port != 0 && local_address_.port < 65535 &&
      !listen_port_was_zero_)
    port = static_cast<uint16_t>(local_address_.port + 1);
  udp_primary_ip_alt_port_ = bind_udp(local_address_.host, port);
  port = bound_port(udp_primary_ip_alt_port_.get());
  udp_alt_ip_primary_port_ = bind_udp(alternate_ip, local_address_.port);
  udp_alt_ip_alt_port_ = bind_udp(alternate_ip, port);
  discovery_address_ = HostPort{alternate_ip, port};
}

void RelayServer::bind_sockets(const HostPort& listen, size_t udp_sockets) {
  listen_port_was_zero_ = listen.port == 0;
  GObjectPtr<GSocketAddress> probe(net::make_socket_address(listen.host, 0));
  if (!probe) throw std::runtime_error("'" + listen.host + "' is not an IP address");
  const GSocketFamily family = g_socket_address_get_family(probe.get());
  const std::string where = listen.to_string();

  for (int attempt = 0; attempt < kBindAttempts; ++attempt) {
    bool in_use = false;
    std::string error;
    // TCP first: SO_REUSEADDR so that a restart does not wait for TIME_WAIT.
    auto tcp = new_socket(family, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP);
    GObjectPtr<GSocketAddress> tcp_address(net::make_socket_address(listen.host, listen.port));
    if (!bind_socket(tcp.get(), tcp_address.get(), true, in_use, error))
      throw std::runtime_error("cannot bind tcp " + where + ": " + error);
    const uint16_t port = bound_port(tcp.get());

    // UDP on the same port number, without SO_REUSEPORT (GLib sets it for datagram
    // sockets when allow_reuse is true): a second relay must fail, not share. Data-plane
    // shards need a group of sockets on the port, so SO_REUSEPORT then; a second relay
    // still fails, on the TCP port bound above without it (and the kernel admits only
    // sockets of the same user to the group).
    GObjectPtr<GSocketAddress> udp_address(net::make_socket_address(listen.host, port));
    std::vector<GObjectPtr<GSocket>> group;
    for (size_t i = 0; i < udp_sockets; ++i) {
      auto udp = new_socket(family, G_SOCKET_TYPE_DATAGRAM, G_SOCKET_PROTOCOL_UDP);
      if (!bind_socket(udp.get(), udp_address.get(), udp_sockets > 1, in_use, error)) break;
      group.push_back(std::move(udp));
    }
    if (group.size() < udp_sockets) {
      if (listen.port == 0 && in_use) continue;  // the kernel's TCP pick is busy on UDP
      throw std::runtime_error("cannot bind udp " + HostPort{listen.host, port}.to_string() +
                               ": " + error);
    }
    auto udp = std::move(group.front());

    g_socket_set_listen_backlog(tcp.get(), kListenBacklog);
    GError* raw_error = nullptr;
    if (!g_socket_listen(tcp.get(), &raw_error)) {
      GErrorPtr listen_error(raw_error);
      throw std::runtime_error("cannot listen on tcp " + where + ": " + listen_error->message);
    }
    // The listen port carries STUN and the TURN traffic of every client (tunnels
    // relayed at 100+ MB/s): give it a large receive queue (see socket_buffers.h).
    for (size_t i = 1; i < group.size(); ++i) {
      raise_socket_buffers(g_socket_get_fd(group[i].get()), kUdpBufferBytes);
      more_udp_.push_back(std::move(group[i]));
    }
    const int granted = raise_socket_buffers(g_socket_get_fd(udp.get()), kUdpBufferBytes);
    if (granted >= 0 && granted < kUdpBufferBytes)
      log::info("udp receive buffer is %d KiB, not %d (net.core.rmem_max; needs "
                "CAP_NET_ADMIN to exceed): relayed tunnels may lose bursts",
                granted / 1024, kUdpBufferBytes / 1024);
    tcp_ = std::move(tcp);
    udp_ = std::move(udp);
    local_address_ = HostPort{listen.host, port};
    return;
  }
  throw std::runtime_error("cannot find a port free on both tcp and udp at " + listen.host);
}

}  // namespace natfwd::relay

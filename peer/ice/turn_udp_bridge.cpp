#include "ice/turn_udp_bridge.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstring>

#include <glib-unix.h>

#include "ice/connected_receive.h"
#include "ice/twin_socket.h"
#include "log.h"
#include "net/socket_address.h"
#include "socket_buffers.h"

namespace natfwd {
namespace {

// Datagrams read per wakeup, as ConnectedReceiver: a busy relayed pair cannot starve
// the rest of the main loop.
constexpr int kMaxDatagramsPerWakeup = 256;

std::string text(const sockaddr_storage& address) {
  return net::to_transport_address(address).to_string();
}

}  // namespace

std::unique_ptr<TurnUdpBridge> TurnUdpBridge::open(const sockaddr_storage& server,
                                                   const sockaddr_storage& host,
                                                   FindIceSocket find_ice_socket) {
  sockaddr_storage bound = host;
  if (host.ss_family != server.ss_family) return nullptr;
  if (host.ss_family == AF_INET) reinterpret_cast<sockaddr_in&>(bound).sin_port = 0;
  else if (host.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6&>(bound).sin6_port = 0;
  else return nullptr;
  const int fd = socket(bound.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  socklen_t length = net::sockaddr_length(bound);
  if (fd < 0 || bind(fd, reinterpret_cast<const sockaddr*>(&bound), length) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length) != 0) {
    log::debug("ice: libnice talks to TURN server %s itself (bridge: %s)",
               text(server).c_str(), std::strerror(errno));
    if (fd >= 0) close(fd);
    return nullptr;
  }
  raise_socket_buffers(fd, kTunnelSocketBufferBytes);
  return std::unique_ptr<TurnUdpBridge>(
      new TurnUdpBridge(fd, server, bound, std::move(find_ice_socket)));
}

TurnUdpBridge::TurnUdpBridge(int fd, const sockaddr_storage& server,
                             const sockaddr_storage& address, FindIceSocket find_ice_socket)
    : fd_(fd),
      server_(server),
      address_(address),
      own_ip_(net::to_transport_address(address).ip),
      find_ice_socket_(std::move(find_ice_socket)),
      reader_(net::udp_io_mode_from_environment()) {
  watch_.reset(g_unix_fd_source_new(fd_.get(), G_IO_IN));
  g_source_set_callback(watch_.get(), G_SOURCE_FUNC(&TurnUdpBridge::on_libnice_readable), this,
                        nullptr);
  g_source_attach(watch_.get(), nullptr);
}

TurnUdpBridge::~TurnUdpBridge() {
  if (destroyed_) *destroyed_ = true;
  if (tunnel_datagrams_ > 0)
    log::debug("ice: TURN bridge to %s handed %" G_GUINT64_FORMAT
               " datagram(s) straight to the tunnel",
               text(server_).c_str(), tunnel_datagrams_);
}

std::string TurnUdpBridge::address_ip() const {
  char ip[INET6_ADDRSTRLEN] = {};
  const void* raw = address_.ss_family == AF_INET
                        ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in&>(address_).sin_addr)
                        : &reinterpret_cast<const sockaddr_in6&>(address_).sin6_addr;
  inet_ntop(address_.ss_family, raw, ip, sizeof ip);
  return ip;
}

uint16_t TurnUdpBridge::address_port() const { return net::to_transport_address(address_).port; }

int TurnUdpBridge::upstream_fd_for(const sockaddr_storage& base) const {
  for (const auto& upstream : upstreams_)
    if (net::same_address(upstream->ice_address, base)) return upstream->fd.get();
  return -1;
}

gboolean TurnUdpBridge::on_libnice_readable(gint, GIOCondition, gpointer self) {
  guard_callback("ice: TURN bridge", [self] { static_cast<TurnUdpBridge*>(self)->from_libnice(); });
  return G_SOURCE_CONTINUE;
}

gboolean TurnUdpBridge::on_upstream_readable(gint, GIOCondition, gpointer data) {
  auto* upstream = static_cast<Upstream*>(data);
  guard_callback("ice: TURN bridge", [upstream] { upstream->bridge->from_server(*upstream); });
  return G_SOURCE_CONTINUE;
}

void TurnUdpBridge::from_libnice() {
  reader_.read(fd_.get(), kMaxDatagramsPerWakeup, "ice: TURN bridge",
               [this](std::span<std::byte> bytes, const sockaddr_storage& from, socklen_t) {
                 // Only libnice's sockets are forwarded for; anything else is
                 // dropped, as the network would. libnice's share our address (a
                 // packet from outside cannot carry it: Linux drops a source address
                 // of its own arriving from a link), so strangers cost one comparison.
                 if (net::to_transport_address(from).ip != own_ip_) return true;
                 if (Upstream* upstream = upstream_for(from))
                   send(upstream->fd.get(), bytes.data(), bytes.size(), MSG_DONTWAIT);
                 return true;
               });
}

TurnUdpBridge::Upstream* TurnUdpBridge::upstream_for(const sockaddr_storage& ice_address) {
  for (const auto& upstream : upstreams_)
    if (net::same_address(upstream->ice_address, ice_address)) return upstream.get();
  const int ice_fd = find_ice_socket_ ? find_ice_socket_(ice_address) : -1;
  if (ice_fd < 0) return nullptr;  // another program on this host
  std::string why_not;
  int fd = open_twin_socket(ice_fd, server_, why_not);
  if (fd < 0) {
    // Not expected on Linux. A socket of its own still carries the allocation, and
    // our own sends use it (upstream_fd_for); only the address the server reports as
    // mapped is then this socket's, not libnice's.
    log::debug("ice: TURN bridge to %s: no twin of %s (%s), using a socket of its own",
               text(server_).c_str(), text(ice_address).c_str(), why_not.c_str());
    fd = socket(server_.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 &&
        connect(fd, reinterpret_cast<const sockaddr*>(&server_), net::sockaddr_length(server_)) != 0) {
      close(fd);
      fd = -1;
    }
    if (fd < 0) return nullptr;
  }
  raise_socket_buffers(fd, kTunnelSocketBufferBytes);
  auto upstream = std::make_unique<Upstream>(fd);
  upstream->ice_address = ice_address;
  upstream->bridge = this;
  upstream->watch.reset(g_unix_fd_source_new(fd, G_IO_IN));
  keep_polled_while_dispatched(upstream->watch.get());  // the relayed tunnel's receive path
  g_source_set_callback(upstream->watch.get(),
                        G_SOURCE_FUNC(&TurnUdpBridge::on_upstream_readable), upstream.get(),
                        nullptr);
  g_source_attach(upstream->watch.get(), nullptr);
  log::debug("ice: TURN bridge %s -> %s for libnice's %s", text(address_).c_str(),
             text(server_).c_str(), text(ice_address).c_str());
  upstreams_.push_back(std::move(upstream));
  return upstreams_.back().get();
}

void TurnUdpBridge::from_server(Upstream& upstream) {
  bool destroyed = false;
  destroyed_ = &destroyed;
  const socklen_t ice_length = net::sockaddr_length(upstream.ice_address);
  try {
    reader_.read(upstream.fd.get(), kMaxDatagramsPerWakeup, "ice: TURN bridge",
                 [&](std::span<std::byte> bytes, const sockaddr_storage&, socklen_t) {
                   if (on_tunnel_datagram_) {
                     if (auto data = tunnel_data_from_turn_server(bytes)) {
                       if (tunnel_datagrams_++ == 0)
                         log::debug("ice: TURN bridge to %s: the tunnel's datagrams now skip "
                                    "libnice",
                                    text(server_).c_str());
                       on_tunnel_datagram_(*data);
                       return !destroyed;
                     }
                   }
                   sendto(fd_.get(), bytes.data(), bytes.size(), MSG_DONTWAIT,
                          reinterpret_cast<const sockaddr*>(&upstream.ice_address), ice_length);
                   return true;
                 });
  } catch (...) {
    if (!destroyed) destroyed_ = nullptr;
    throw;
  }
  if (!destroyed) destroyed_ = nullptr;
}

}  // namespace natfwd

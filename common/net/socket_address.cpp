#include "net/socket_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace natfwd::net {

stun::TransportAddress to_transport_address(GSocketAddress* address) {
  stun::TransportAddress out;
  if (!address || !G_IS_INET_SOCKET_ADDRESS(address)) return out;
  auto* inet = G_INET_SOCKET_ADDRESS(address);
  GInetAddress* ip = g_inet_socket_address_get_address(inet);
  const auto* bytes = g_inet_address_to_bytes(ip);
  const uint16_t port = g_inet_socket_address_get_port(inet);
  if (g_inet_address_get_family(ip) == G_SOCKET_FAMILY_IPV4)
    return stun::TransportAddress::ipv4({bytes[0], bytes[1], bytes[2], bytes[3]}, port);
  std::array<uint8_t, 16> v6{};
  std::copy_n(bytes, 16, v6.begin());
  static constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::equal(v6.begin(), v6.begin() + 12, kMappedPrefix))
    return stun::TransportAddress::ipv4({v6[12], v6[13], v6[14], v6[15]}, port);
  return stun::TransportAddress::ipv6(v6, port);
}

HostPort to_host_port(GSocketAddress* address) {
  if (!address || !G_IS_INET_SOCKET_ADDRESS(address)) return {"?", 0};
  const auto transport = to_transport_address(address);
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(transport.family == stun::TransportAddress::Family::kIPv4 ? AF_INET : AF_INET6,
            transport.ip.data(), text, sizeof text);
  return {text, transport.port};
}

std::string to_string(GSocketAddress* address) {
  if (!address || !G_IS_INET_SOCKET_ADDRESS(address)) return "?";
  return to_host_port(address).to_string();
}

GObjectPtr<GSocketAddress> make_socket_address(const std::string& ip, uint16_t port) {
  GObjectPtr<GInetAddress> inet(g_inet_address_new_from_string(ip.c_str()));
  if (!inet) return nullptr;
  return GObjectPtr<GSocketAddress>(g_inet_socket_address_new(inet.get(), port));
}

GObjectPtr<GSocketAddress> make_socket_address(const stun::TransportAddress& address) {
  GObjectPtr<GInetAddress> inet(g_inet_address_new_from_bytes(
      address.ip.data(), address.family == stun::TransportAddress::Family::kIPv4
                             ? G_SOCKET_FAMILY_IPV4
                             : G_SOCKET_FAMILY_IPV6));
  return GObjectPtr<GSocketAddress>(g_inet_socket_address_new(inet.get(), address.port));
}

stun::TransportAddress to_transport_address(const sockaddr_storage& address) {
  if (address.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(address);
    const auto* b = reinterpret_cast<const uint8_t*>(&in.sin_addr);
    return stun::TransportAddress::ipv4({b[0], b[1], b[2], b[3]}, ntohs(in.sin_port));
  }
  if (address.ss_family != AF_INET6) return {};
  const auto& in6 = reinterpret_cast<const sockaddr_in6&>(address);
  std::array<uint8_t, 16> v6{};
  std::memcpy(v6.data(), &in6.sin6_addr, 16);
  const uint16_t port = ntohs(in6.sin6_port);
  static constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::equal(v6.begin(), v6.begin() + 12, kMappedPrefix))
    return stun::TransportAddress::ipv4({v6[12], v6[13], v6[14], v6[15]}, port);
  return stun::TransportAddress::ipv6(v6, port);
}

socklen_t sockaddr_length(const sockaddr_storage& address) {
  return address.ss_family == AF_INET6 ? sizeof(sockaddr_in6)
         : address.ss_family == AF_INET ? sizeof(sockaddr_in)
                                        : 0;
}

socklen_t to_sockaddr(const stun::TransportAddress& address, int socket_family,
                      sockaddr_storage& out) {
  out = {};
  const bool v4 = address.family == stun::TransportAddress::Family::kIPv4;
  if (socket_family == AF_INET) {
    if (!v4) return 0;
    auto& in = reinterpret_cast<sockaddr_in&>(out);
    in.sin_family = AF_INET;
    in.sin_port = htons(address.port);
    std::memcpy(&in.sin_addr, address.ip.data(), 4);
    return sizeof in;
  }
  auto& in6 = reinterpret_cast<sockaddr_in6&>(out);
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(address.port);
  auto* bytes = reinterpret_cast<uint8_t*>(&in6.sin6_addr);
  if (v4) {
    bytes[10] = bytes[11] = 0xff;
    std::memcpy(bytes + 12, address.ip.data(), 4);
  } else {
    std::memcpy(bytes, address.ip.data(), 16);
  }
  return sizeof in6;
}

HostPort listen_tcp_on(GSocketListener* listener, const HostPort& listen,
                       const std::string& what) {
  GObjectPtr<GSocketAddress> address(make_socket_address(listen.host, listen.port));
  if (!address)
    throw std::runtime_error("--" + what + ": '" + listen.host + "' is not an IP address");
  GSocketAddress* effective = nullptr;
  GError* raw_error = nullptr;
  if (!g_socket_listener_add_address(listener, address.get(), G_SOCKET_TYPE_STREAM,
                                     G_SOCKET_PROTOCOL_TCP, nullptr, &effective, &raw_error)) {
    GErrorPtr error(raw_error);
    throw std::runtime_error("cannot listen on " + what + " " + listen.to_string() + ": " +
                             error->message);
  }
  GObjectPtr<GSocketAddress> bound(effective);
  return to_host_port(bound.get());
}

bool same_address(const sockaddr_storage& a, const sockaddr_storage& b) {
  if (a.ss_family != b.ss_family) return false;
  if (a.ss_family == AF_INET) {
    const auto& x = reinterpret_cast<const sockaddr_in&>(a);
    const auto& y = reinterpret_cast<const sockaddr_in&>(b);
    return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
  }
  if (a.ss_family == AF_INET6) {
    const auto& x = reinterpret_cast<const sockaddr_in6&>(a);
    const auto& y = reinterpret_cast<const sockaddr_in6&>(b);
    return x.sin6_port == y.sin6_port &&
           std::memcmp(&x.sin6_addr, &y.sin6_addr, sizeof x.sin6_addr) == 0;
  }
  return false;
}

}  // namespace natfwd::net

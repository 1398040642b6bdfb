// Conversions between the address forms of the sockets layer: GLib socket addresses,
// plain sockaddrs (libnice hands those out too) and stun::TransportAddress, plus the
// text form for logs. HostPort (proto/address.h) stays the command-line and wire type.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>

#include <gio/gio.h>

#include "address.h"
#include "glib_ptr.h"
#include "stun/stun_message.h"

namespace natfwd::net {

// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d, what a dual-stack socket reports for
// IPv4 peers) come out as plain IPv4: that is what the peer's NAT mapped.
stun::TransportAddress to_transport_address(GSocketAddress* address);
// {"?", 0} when `address` is not an inet address.
HostPort to_host_port(GSocketAddress* address);
// "ip:port", "[ip]:port" for IPv6, "?" when `address` is not an inet address.
std::string to_string(GSocketAddress* address);
// A GInetSocketAddress for an IP literal and port; null when `ip` is not one.
GObjectPtr<GSocketAddress> make_socket_address(const std::string& ip, uint16_t port);
GObjectPtr<GSocketAddress> make_socket_address(const stun::TransportAddress& address);
// Adds a TCP listening socket on `listen` (an IP literal; port 0 picks one) to
// `listener` and returns the address it is bound to. Throws std::runtime_error naming
// the flag `what` ("metrics", "publish-http") when the address is bad or cannot be
// bound.
HostPort listen_tcp_on(GSocketListener* listener, const HostPort& listen, const std::string& what);

// The per-datagram paths (TURN relaying, STUN) use plain sockaddrs: a GSocketAddress
// per datagram, and the text round trip some of them took, cost the relay about a
// sixth of its CPU. Same IPv4-mapped rule as above; other families give {}.
stun::TransportAddress to_transport_address(const sockaddr_storage& address);
// For sending on a socket of `socket_family` (AF_INET or AF_INET6): an IPv4 address
// on an IPv6 socket becomes ::ffff:a.b.c.d. Returns the length to pass to sendto, or
// 0 when the address cannot go out on such a socket (IPv6 on an IPv4 socket).
socklen_t to_sockaddr(const stun::TransportAddress& address, int socket_family,
                      sockaddr_storage& out);
// The length to pass with `address` to connect or sendto: by its family, 0 for
// another family than AF_INET and AF_INET6.
socklen_t sockaddr_length(const sockaddr_storage& address);
// The same family, IP and port (IPv4 and IPv6 only; anything else is never the same).
bool same_address(const sockaddr_storage& a, const sockaddr_storage& b);

}  // namespace natfwd::net

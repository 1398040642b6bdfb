// Conversions from GLib socket addresses to the relay's own address types.
#pragma once

#include <sys/socket.h>

#include <gio/gio.h>

#include "address.h"
#include "stun/stun_message.h"

namespace natfwd::relay {

// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d, what a dual-stack socket reports for
// IPv4 peers) come out as plain IPv4: that is what the peer's NAT mapped.
stun::TransportAddress to_transport_address(GSocketAddress* address);
HostPort to_host_port(GSocketAddress* address);
// A GInetSocketAddress for an IP literal and port; nullptr when `ip` is not one.
GSocketAddress* make_socket_address(const std::string& ip, uint16_t port);
// The same from a STUN transport address (new reference).
GSocketAddress* make_socket_address(const stun::TransportAddress& address);

// The per-datagram paths (TURN relaying, STUN) use plain sockaddrs: a GSocketAddress
// per datagram, and the text round trip some of them took, cost the relay about a
// sixth of its CPU. Same IPv4-mapped rule as above.
stun::TransportAddress to_transport_address(const sockaddr_storage& address);
// For sending on a socket of `socket_family` (AF_INET or AF_INET6): an IPv4 address
// on an IPv6 socket becomes ::ffff:a.b.c.d. Returns the length to pass to sendto, or
// 0 when the address cannot go out on such a socket (IPv6 on an IPv4 socket).
socklen_t to_sockaddr(const stun::TransportAddress& address, int socket_family,
                      sockaddr_storage& out);

}  // namespace natfwd::relay

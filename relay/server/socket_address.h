// Conversions from GLib socket addresses to the relay's own address types.
#pragma once

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

}  // namespace natfwd::relay

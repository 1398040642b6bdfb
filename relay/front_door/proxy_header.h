// The PROXY protocol version 2 header (haproxy's "The PROXY protocol", section 2.2)
// that the front door puts before a visitor's bytes when a tcp or tls publish asks for
// it, so that the target at home learns the visitor's address and the relay's address
// the visitor reached. I/O free: two addresses in, the binary header out.
#pragma once

#include <optional>
#include <string>

#include "address.h"

namespace natfwd::relay::front_door {

// A PROXY command over TCP from `visitor` to `relay` (numeric IPs). IPv4 when both are
// IPv4 (IPv4-mapped IPv6 counts as IPv4), IPv6 otherwise, an IPv4 side then written
// IPv4-mapped. nullopt when a host is not a numeric IP.
std::optional<std::string> proxy_v2_header(const HostPort& visitor, const HostPort& relay);

}  // namespace natfwd::relay::front_door

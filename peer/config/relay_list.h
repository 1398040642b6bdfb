// Which relays a peer command talks to: --relay flags (repeatable), else
// $NATFWD_RELAY (comma-separated). Shared by `peer` and `peer netcheck`, so both read
// the same spellings the same way.
#pragma once

#include <string>
#include <vector>

#include "address.h"

namespace natfwd {

inline constexpr uint16_t kDefaultRelayPort = 3478;

// `flags` are the --relay values as given (peer.conf's relay list arrives as flags).
// Each may be HOST[:PORT] or tls://HOST[:PORT] (TLS is the default anyway). The error
// is one sentence without the program's name: none configured, a bad address, an
// unknown scheme, tls:// with --insecure-relay, or the same relay twice.
Parsed<std::vector<HostPort>> parse_relay_list(const std::vector<std::string>& flags,
                                               bool insecure_relay);

}  // namespace natfwd

// The forwarding specs of the command line, as ssh spells them.
//
//   --serve [PORT:]HOST:HOSTPORT   a target this peer lets others reach
//   -L [BIND:]PORT:HOST:HOSTPORT   listen on BIND:PORT, carry connections to HOST:HOSTPORT
//   -D [BIND:]PORT                 a SOCKS proxy on BIND:PORT
//
// In --serve, PORT is the port a connecting peer conventionally uses for -L (the
// README's 2222:buffalo:22); the target itself is HOST:HOSTPORT.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "address.h"

namespace natfwd {

struct ServeSpec {
  std::optional<uint16_t> suggested_port;  // PORT, if given
  HostPort target;                         // HOST:HOSTPORT, resolved when a stream asks
};

struct LocalForwardSpec {
  HostPort listen;  // BIND (default 127.0.0.1) : PORT (0 = any free port)
  HostPort target;  // HOST:HOSTPORT, resolved by the serving peer
};

Parsed<ServeSpec> parse_serve_spec(std::string_view text);
Parsed<LocalForwardSpec> parse_local_forward_spec(std::string_view text);
// -D [BIND:]PORT (BIND defaults to 127.0.0.1; PORT 0 picks one).
Parsed<HostPort> parse_socks_listen_spec(std::string_view text);

// Peer names as the relay accepts them: [a-z0-9][a-z0-9._-]{0,62}.
bool is_valid_peer_name(std::string_view name);

}  // namespace natfwd

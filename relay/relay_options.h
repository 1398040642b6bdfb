// The relay's command line, as a typed struct. Defaults live in one place (the
// member initialisers below), and --help shows each of them.
#pragma once

#include <cstddef>
#include <string>

#include "address.h"

namespace natfwd::relay {

struct RelayOptions {
  // --listen: address and port for STUN/udp and rendezvous/tcp; port 0 picks one.
  HostPort listen{"0.0.0.0", 3478};
  // --state-dir: default_state_dir("relay"), created 0700. Nothing kept there yet.
  std::string state_dir;
  // -v/--verbose: debug logging.
  bool verbose = false;
  // --max-peers-per-address: concurrent TCP connections from one source IP.
  size_t max_peers_per_address = 64;
};

// Parses argv. --help prints usage and exits 0. On a usage error returns the one-line
// message (without the "relay: " prefix) in `error` and false.
bool parse_relay_options(int argc, char** argv, RelayOptions& options, std::string& error);

}  // namespace natfwd::relay

// peer.conf: the peer's flags in a file (see dist/peer.conf.example and peer(1)).
//
//   [peer]             one key per long flag: relay, state-dir, force-relay, serve...
//   [serve LABEL]      target = HOST:HOSTPORT, port = PORT       -> --serve [PORT:]HOST:HOSTPORT
//   [forward LABEL]    peer = NAME[@KEYID], listen = [BIND:]PORT, target = HOST:HOSTPORT
//                                                                -> -L [BIND:]PORT:HOST:HOSTPORT NAME
//   (forwards to several peers: -L SPEC... NAME1 -L SPEC... NAME2, one group per peer
//   in the order the peers first appear, after the [peer] flags; so a `dynamic` key
//   goes to the first forward's peer)
//
// The file is read from --config FILE, else $XDG_CONFIG_HOME/natfwd/peer.conf (a
// missing default file is no error). Its arguments go before the command line's, so a
// flag on the command line wins; a repeatable flag given on the command line (--serve,
// -L, --allow, --ice-address) replaces the file's whole list, and a NAME on the
// command line replaces the file's forwards' peer.
#pragma once

#include <string>
#include <variant>
#include <vector>

#include "config_file.h"

namespace natfwd {

// Which part of the file a command takes.
enum class PeerConfigUse {
  kRun,           // peer --serve / -L: everything
  kRelayLink,     // peer pair, peer nc: how to reach the relay, no serving or forwarding
  kStateDirOnly,  // peer id, peer invite, peer status, peer authorized
  kNetcheck,      // peer netcheck: relay, relay-key, insecure-relay, proxy, state-dir
};

const config::ConfigSchema& peer_config_schema();
const std::vector<config::FlagSpec>& peer_flags();

// The arguments a parsed file stands for. Two groups pinning one peer to different
// keys are an error, naming the line.
std::variant<std::vector<config::FileArgument>, std::string> peer_file_arguments(
    const config::ConfigFile& file, const std::string& file_name, PeerConfigUse use);

// $XDG_CONFIG_HOME/natfwd/peer.conf (~/.config/natfwd/peer.conf).
std::string default_peer_config_path();

// argv with the subcommand, if any, moved to argv[1] (subcommand_first) and the config
// file's arguments inserted after the program (and subcommand) name. Prints one line and exits 2 when the file is bad or --config FILE is missing.
std::vector<std::string> peer_arguments_with_config(int argc, char** argv);

}  // namespace natfwd

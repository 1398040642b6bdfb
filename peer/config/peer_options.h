// The peer's options as a typed struct, and the parser of its command line (the
// config file's flags already inserted, see peer_config_file.h).
//
//   peer [FLAGS] -L SPEC... [-D SPEC...] NAME[@KEYID]          one serving peer
//   peer [FLAGS] -L SPEC... NAME1 -L SPEC... NAME2 ...         several: each NAME takes
//                                                              the -L/-D before it
//   peer [FLAGS] nc NAME HOST:PORT, peer [FLAGS] pair CODE
//   peer [FLAGS] SUBCOMMAND [FLAGS]      id, invite, status, netcheck, authorized
//
// A subcommand is the first word that is neither a flag nor a flag's value, wherever
// it stands among the flags (`peer --state-dir DIR status`); it is moved to the front
// before anything else reads the command line, so each subcommand sees only its own
// options and has its own --help.
//
// With one NAME every -L and -D goes to it wherever it stands, as ssh reads one
// destination; with several, each NAME ends the -L/-D options before it.
#pragma once

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "address.h"
#include "forward/forward_spec.h"
#include "publish/publish_spec.h"

namespace natfwd {

// One serving peer this process connects to.
struct RemotePeerOptions {
  std::string name;
  std::optional<std::string> key_id;       // NAME@KEYID: pinned explicitly
  std::vector<LocalForwardSpec> forwards;  // -L before the NAME
  std::vector<HostPort> socks;             // -D before the NAME: SOCKS listeners
};

struct PeerOptions {
  // --relay (repeatable): relays in the order a connecting peer tries them; a serving
  // peer registers at every one. Default: $NATFWD_RELAY (no built-in relay).
  std::vector<HostPort> relays;
  std::optional<std::string> name;          // --name: register and serve under it
  std::vector<ServeSpec> serves;            // --serve; default none
  std::vector<PublishSpec> publishes;       // --publish; default none
  // An https publish without cert=/key= gets its certificate from this ACME directory
  // (RFC 8555 section 7.1.1); default none: such a publish is refused, so nothing
  // reaches a CA unless asked to.
  std::string acme_directory;               // --acme-directory URL
  std::string acme_email;                   // --acme-email; default: no contact
  std::string acme_ca_file;                 // --acme-ca-file; default: system roots
  // The serving peers of -L/-D, `peer nc` and `peer pair`, in command-line order.
  std::vector<RemotePeerOptions> remotes;
  std::vector<std::string> allow;           // --allow KEYID (beside authorized_peers)
  std::optional<std::string> pair_secret;   // `peer pair CODE`: redeem and exit
  // `peer handover NAME KEYID`: hand a name this key holds at the relays to KEYID, exit.
  struct Handover {
    std::string name;
    std::string to_key_id;
  };
  std::optional<Handover> handover;
  std::optional<HostPort> netcat_target;    // `peer nc NAME HOST:PORT`
  std::string state_dir;                    // --state-dir; default default_state_dir("peer")
  std::vector<std::string> ice_addresses;   // --ice-address: restrict host candidates
  bool relay_tls = true;                    // TLS to the relay unless --insecure-relay
  std::optional<std::string> relay_key;     // --relay-key SHA256:...: pinned explicitly
  std::optional<std::string> relay_ca;      // --relay-ca FILE: verify against this CA
  std::optional<HostPort> proxy;            // --proxy or https_proxy: HTTP CONNECT proxy
  bool force_relay = false;                 // --force-relay: relayed candidates only
  // A UDP mapping at the gateway (PCP, NAT-PMP, UPnP IGD) offered as an ICE candidate;
  // default on, off with --no-port-mapping.
  bool port_mapping = true;
  // --port-mapping: which protocols are asked, always in the order PCP, NAT-PMP, UPnP
  // (the next only when the one before gets no mapping); all three by default.
  bool map_pcp = true, map_nat_pmp = true, map_upnp = true;
  // A tunnel that starts relayed tries a hard-NAT punch (peer/punch/) for a direct UDP
  // path; default on, off with --no-punch (and always with --force-relay).
  bool punch = true;
  bool turn_udp = true, turn_tcp = true, turn_tls = true;  // --turn-transport; all
  bool verbose = false;                     // -v

  // The remote peer of `nc`, `pair` and of scripts written for one (nullptr: none).
  const RemotePeerOptions* first_remote() const {
    return remotes.empty() ? nullptr : &remotes.front();
  }
};

// The words that name a subcommand rather than a serving peer.
enum class PeerSubcommand {
  kNone, kId, kInvite, kStatus, kNetcheck, kPair, kNc, kAuthorized, kHandover
};
PeerSubcommand peer_subcommand(const std::string& word);

// The words of a comma-separated option value ("udp, tls"), each one of `allowed`, or
// the problem in one line: "'quic' is not udp, tcp or tls", "names none of ...".
std::variant<std::vector<std::string>, std::string> parse_choice_list(
    const std::string& text, const std::vector<std::string>& allowed);
inline const std::vector<std::string> kTurnTransportNames = {"udp", "tcp", "tls"};
inline const std::vector<std::string> kPortMappingNames = {"pcp", "nat-pmp", "upnp"};

// args (args[0] the program) with the subcommand, if the first positional word is one,
// moved to args[1]; unchanged otherwise. Words after "--" are never a subcommand.
std::vector<std::string> subcommand_first(const std::vector<std::string>& args);

struct PeerCommandLine {
  enum class Outcome { kRun, kVersion, kUsageError };
  Outcome outcome = Outcome::kRun;
  PeerOptions options;
  std::string error;  // kUsageError: one line, without the "peer: " prefix
};

// args[0] is the program. --help prints and exits 0 (GOption's own behaviour).
PeerCommandLine parse_peer_command_line(const std::vector<std::string>& args);

}  // namespace natfwd

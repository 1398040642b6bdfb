#include "config/peer_config_file.h"

#include <gio/gio.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "config/peer_options.h"
#include "forward/forward_spec.h"
#include "publish/publish_spec.h"
#include "transport/connector.h"
#include "trust/known_peers.h"

namespace natfwd {
namespace {

using config::KeySpec;
using config::ValueKind;

constexpr int kExitUsage = 2;
constexpr uint16_t kDefaultRelayPort = 3478;

template <typename T>
std::string problem_of(const Parsed<T>& parsed) {
  if (auto* message = std::get_if<std::string>(&parsed)) return *message;
  return {};
}

std::string check_relay(const std::string& text) {
  std::string relay = text;
  if (relay.rfind("tls://", 0) == 0) relay = relay.substr(6);
  else if (relay.find("://") != std::string::npos)
    return "'" + text + "': only tls:// or a plain HOST:PORT is understood";
  return problem_of(parse_host_port(relay, kDefaultRelayPort));
}

std::string check_relay_key(const std::string& text) {
  if (text.rfind("SHA256:", 0) == 0 && text.size() == 50) return {};
  return "'" + text + "' is not SHA256:<43 base64 characters> as known_relays shows it";
}

std::string check_peer_name(const std::string& text) {
  if (is_valid_peer_name(text)) return {};
  return "'" + text + "' is not a valid peer name (lowercase letters, digits, '.', '_', '-')";
}

std::string check_key_id(const std::string& text) {
  if (is_valid_key_id(text)) return {};
  return "'" + text + "' is not a key id (32 characters as `peer id` prints them)";
}

// NAME or NAME@KEYID, as after -L on the command line.
std::string check_remote_peer(const std::string& text) {
  const auto at = text.find('@');
  if (at != std::string::npos) {
    if (auto problem = check_key_id(text.substr(at + 1)); !problem.empty()) return problem;
  }
  return check_peer_name(text.substr(0, at));
}

std::string check_ip(const std::string& text) {
  GInetAddress* address = g_inet_address_new_from_string(text.c_str());
  if (!address) return "'" + text + "' is not an IP address";
  g_object_unref(address);
  return {};
}

std::string check_turn_transports(const std::string& text) {
  return problem_of(parse_choice_list(text, kTurnTransportNames));
}

std::string check_port_mapping(const std::string& text) {
  return problem_of(parse_choice_list(text, kPortMappingNames));
}

std::string check_serve(const std::string& text) { return problem_of(parse_serve_spec(text)); }

std::string check_publish(const std::string& text) { return problem_of(parse_publish_spec(text)); }

std::string check_target(const std::string& text) {
  // HOST:HOSTPORT alone is a whole serve spec, with the same rules.
  return problem_of(parse_serve_spec(text));
}

std::string check_port(const std::string& text) { return problem_of(parse_port(text, false)); }

std::string check_publish_kind(const std::string& text) {
  return text == "http" || text == "tls" || text == "https" || text == "tcp"
             ? ""
             : "'" + text + "' is not http, tls, https or tcp";
}

// [HOST:]PORT of a [publish NAME] group: the target of a --publish spec.
std::string check_publish_target(const std::string& text) {
  return problem_of(parse_publish_spec("http:" + text));
}

// DOMAIN of a [publish NAME] group: the custom domain of a tls or https publish.
std::string check_custom_domain(const std::string& text) {
  return problem_of(parse_publish_spec("tls:" + text + "=1"));
}

std::string check_public_port(const std::string& text) {
  return problem_of(parse_port(text, true));
}

// The --publish spec that a [publish NAME] group says: KIND:[PUBLICPORT:]TARGET and its
// options, in the order the command line takes them.
std::string publish_spec_of(const config::Section& section) {
  const std::string kind = section.find("kind")->values[0];
  std::string spec = kind + ":";
  if (const config::Value* domain = section.find("domain")) spec += domain->values[0] + "=";
  if (const config::Value* port = section.find("public-port")) spec += port->values[0] + ":";
  spec += section.find("target")->values[0];
  if (const config::Value* proxy = section.find("proxy-protocol");
      proxy && proxy->values[0] == "true")
    spec += ",proxy-protocol";
  if (const config::Value* ranges = section.find("allow-from"))
    for (const std::string& range : ranges->values) spec += ",allow-from=" + range;
  if (const config::Value* auth = section.find("auth")) spec += ",auth=" + auth->values[0];
  if (const config::Value* cert = section.find("cert")) spec += ",cert=" + cert->values[0];
  if (const config::Value* key = section.find("key")) spec += ",key=" + key->values[0];
  return spec;
}

// [BIND:]PORT of -L.
std::string check_listen(const std::string& text) {
  return problem_of(parse_local_forward_spec(text + ":localhost:1"));
}

std::string check_proxy(const std::string& text) { return problem_of(parse_proxy_url(text)); }

// [BIND:]PORT of -D.
std::string check_socks_listen(const std::string& text) {
  return problem_of(parse_socks_listen_spec(text));
}

const char* const kRelayLinkKeys[] = {"relay",   "relay-key",      "relay-ca",
                                      "insecure-relay", "proxy", "force-relay",
                                      "no-port-mapping", "port-mapping", "no-punch", "turn-transport", "state-dir", "ice-address", "verbose"};

// What `peer netcheck` understands of the relay link (it makes no tunnel).
const char* const kNetcheckKeys[] = {"relay", "relay-key", "insecure-relay", "proxy",
                                     "state-dir"};

bool is_netcheck_key(const std::string& key) {
  for (const char* name : kNetcheckKeys)
    if (key == name) return true;
  return false;
}

bool is_relay_link_key(const std::string& key) {
  for (const char* name : kRelayLinkKeys)
    if (key == name) return true;
  return false;
}

[[noreturn]] void usage_error(const std::string& message) {
  fprintf(stderr, "peer: %s\n", message.c_str());
  exit(kExitUsage);
}

}  // namespace

const config::ConfigSchema& peer_config_schema() {
  static const config::ConfigSchema schema = {
      {"peer",
       false,
       {
           {"relay", ValueKind::kList, check_relay},
           {"relay-key", ValueKind::kText, check_relay_key},
           {"relay-ca", ValueKind::kText, nullptr},
           {"insecure-relay", ValueKind::kSwitch, nullptr},
           {"proxy", ValueKind::kText, check_proxy},
           {"force-relay", ValueKind::kSwitch, nullptr},
           {"no-port-mapping", ValueKind::kSwitch, nullptr},
           {"no-punch", ValueKind::kSwitch, nullptr},
           {"port-mapping", ValueKind::kText, check_port_mapping},
           {"turn-transport", ValueKind::kText, check_turn_transports},
           {"name", ValueKind::kText, check_peer_name},
           {"serve", ValueKind::kList, check_serve},
           {"publish", ValueKind::kList, check_publish},
           {"dynamic", ValueKind::kList, check_socks_listen},
           {"allow", ValueKind::kList, check_key_id},
           {"state-dir", ValueKind::kText, nullptr},
           {"ice-address", ValueKind::kList, check_ip},
           {"verbose", ValueKind::kSwitch, nullptr},
           {"acme-directory", ValueKind::kText, nullptr},
           {"acme-email", ValueKind::kText, nullptr},
           {"acme-ca-file", ValueKind::kText, nullptr},
           {"publish-cert", ValueKind::kText, nullptr},
           {"publish-key", ValueKind::kText, nullptr},
       }},
      {"serve",
       true,
       {
           {"target", ValueKind::kText, check_target, /*required=*/true},
           {"port", ValueKind::kText, check_port},
       }},
      {"publish",
       true,
       {
           {"kind", ValueKind::kText, check_publish_kind, /*required=*/true},
           {"target", ValueKind::kText, check_publish_target, /*required=*/true},
           {"public-port", ValueKind::kText, check_public_port},
           {"domain", ValueKind::kText, check_custom_domain},
           {"proxy-protocol", ValueKind::kSwitch, nullptr},
           {"allow-from", ValueKind::kList, nullptr},
           {"auth", ValueKind::kText, nullptr},
           {"cert", ValueKind::kText, nullptr},
           {"key", ValueKind::kText, nullptr},
       }},
      {"forward",
       true,
       {
           {"peer", ValueKind::kText, check_remote_peer, /*required=*/true},
           {"listen", ValueKind::kText, check_listen, /*required=*/true},
           {"target", ValueKind::kText, check_target, /*required=*/true},
       }},
  };
  return schema;
}

const std::vector<config::FlagSpec>& peer_flags() {
  static const std::vector<config::FlagSpec> flags = {
      {"relay", 0, true},          {"relay-key", 0, true},   {"relay-ca", 0, true},
      {"insecure-relay", 0, false}, {"proxy", 0, true},       {"force-relay", 0, false},
      {"turn-transport", 0, true}, {"name", 0, true},        {"serve", 0, true},
      {"allow", 0, true},          {"local", 'L', true},     {"state-dir", 0, true},
      {"ice-address", 0, true},    {"verbose", 'v', false},  {"version", 0, false},
      {"config", 0, true},         {"expires", 0, true},     {"help", 'h', false},
      {"dynamic", 'D', true},      {"json", 0, false},       {"timeout", 0, true},
      {"stun-port", 0, true},      {"label", 0, true},       {"publish", 0, true},
      {"no-port-mapping", 0, false}, {"port-mapping", 0, true},
      {"no-punch", 0, false},
      {"acme-directory", 0, true}, {"acme-email", 0, true},  {"acme-ca-file", 0, true},
      {"publish-cert", 0, true},   {"publish-key", 0, true},
  };
  return flags;
}

std::variant<std::vector<config::FileArgument>, std::string> peer_file_arguments(
    const config::ConfigFile& file, const std::string& file_name, PeerConfigUse use) {
  std::vector<config::FileArgument> arguments;
  // [forward] groups by their peer, in the order each peer first appears: each peer's
  // -L specs, then its NAME (the command line's spelling for several peers).
  struct RemoteForwards {
    std::string peer;  // NAME or NAME@KEYID
    int line = 0;
    std::vector<std::string> specs;
  };
  std::vector<RemoteForwards> remotes;
  for (const config::Section& section : file.sections) {
    if (section.group == "peer") {
      config::append_flag_arguments(section, peer_config_schema()[0], arguments,
                                    [use](const std::string& key) {
                                      if (use == PeerConfigUse::kStateDirOnly) return key == "state-dir";
                                      if (use == PeerConfigUse::kRelayLink) return is_relay_link_key(key);
                                      if (use == PeerConfigUse::kNetcheck) return is_netcheck_key(key);
                                      return true;
                                    });
    } else if (section.group == "serve" && use == PeerConfigUse::kRun) {
      const config::Value* port = section.find("port");
      const std::string target = section.find("target")->values[0];
      arguments.push_back({"serve", port ? port->values[0] + ":" + target : target, true});
    } else if (section.group == "publish" && use == PeerConfigUse::kRun) {
      // The options' own rules (which kind takes which, the ranges) are the spec's.
      const std::string spec = publish_spec_of(section);
      if (auto problem = problem_of(parse_publish_spec(spec)); !problem.empty())
        return file_name + ":" + std::to_string(section.line) + ": [publish " + section.label +
               "]: " + problem;
      arguments.push_back({"publish", spec, true});
    } else if (section.group == "forward" && use == PeerConfigUse::kRun) {
      const config::Value* peer = section.find("peer");
      const std::string spec =
          section.find("listen")->values[0] + ":" + section.find("target")->values[0];
      if (auto problem = problem_of(parse_local_forward_spec(spec)); !problem.empty())
        return file_name + ":" + std::to_string(section.line) + ": [forward " + section.label +
               "]: " + problem;
      const std::string& wanted = peer->values[0];
      const std::string name = wanted.substr(0, wanted.find('@'));
      auto same_peer = std::find_if(remotes.begin(), remotes.end(), [&](const RemoteForwards& r) {
        return r.peer.substr(0, r.peer.find('@')) == name;
      });
      if (same_peer == remotes.end()) {
        remotes.push_back({wanted, peer->line, {}});
        same_peer = remotes.end() - 1;
      } else if (same_peer->peer != wanted && wanted.find('@') != std::string::npos &&
                 same_peer->peer.find('@') != std::string::npos) {
        return file_name + ":" + std::to_string(peer->line) + ": key 'peer': '" + wanted +
               "' pins another key than '" + same_peer->peer + "' (line " +
               std::to_string(same_peer->line) + ")";
      } else if (wanted.find('@') != std::string::npos) {
        same_peer->peer = wanted;  // NAME@KEYID in one group pins the peer for all
      }
      same_peer->specs.push_back(spec);
    }
  }
  for (const RemoteForwards& remote : remotes) {
    for (const std::string& spec : remote.specs) arguments.push_back({"local", spec, true});
    arguments.push_back({"", remote.peer, false});
  }
  return arguments;
}

std::string default_peer_config_path() {
  return std::string(g_get_user_config_dir()) + "/natfwd/peer.conf";
}

std::vector<std::string> peer_arguments_with_config(int argc, char** argv) {
  std::vector<std::string> args = subcommand_first(std::vector<std::string>(argv, argv + argc));
  // A subcommand stands at args[1] now; the file's words go after it.
  const PeerSubcommand subcommand =
      args.size() > 1 ? peer_subcommand(args[1]) : PeerSubcommand::kNone;
  size_t insert_at = subcommand == PeerSubcommand::kNone ? 1 : 2;
  PeerConfigUse use = PeerConfigUse::kRun;
  switch (subcommand) {
    case PeerSubcommand::kId:
    case PeerSubcommand::kInvite:
    case PeerSubcommand::kStatus:
    case PeerSubcommand::kAuthorized:
      use = PeerConfigUse::kStateDirOnly;
      break;
    case PeerSubcommand::kNetcheck:
      use = PeerConfigUse::kNetcheck;
      break;
    case PeerSubcommand::kPair:
    case PeerSubcommand::kNc:
    case PeerSubcommand::kHandover:
      // They reach a peer or the relay: the file's relay settings, not its serves and
      // forwards.
      use = PeerConfigUse::kRelayLink;
      break;
    case PeerSubcommand::kNone:
      break;
  }
  const config::CommandLineScan command_line = config::scan_command_line(
      std::vector<std::string>(args.begin() + insert_at - 1, args.end()), peer_flags());
  // --help and --version work whatever the file says.
  if (command_line.help || command_line.flags.count("version")) return args;

  std::string path;
  auto loaded =
      config::load_config_file(command_line, default_peer_config_path(), peer_config_schema(), path);
  if (auto* message = std::get_if<std::string>(&loaded)) usage_error(*message);
  auto arguments = peer_file_arguments(std::get<config::ConfigFile>(loaded), path, use);
  if (auto* message = std::get_if<std::string>(&arguments)) usage_error(*message);
  // -L or a NAME on the command line: the file's forwards (and their peer) give way.
  const bool command_line_forwards =
      command_line.flags.count("local") || !command_line.positionals.empty();
  const std::vector<std::string> words = config::file_argument_words(
      std::get<std::vector<config::FileArgument>>(arguments), command_line, command_line_forwards);
  args.insert(args.begin() + insert_at, words.begin(), words.end());
  return args;
}

}  // namespace natfwd

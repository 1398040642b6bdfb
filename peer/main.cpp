// peer: serve targets on this machine's network, or reach another peer's targets.
//
//   peer --relay HOST:PORT --name home --serve 2222:buffalo:22
//   peer --relay HOST:PORT -L 2222:buffalo:22 home
//   peer --relay HOST:PORT nc home buffalo:22      (ssh ProxyCommand)
//   peer status
#include <glib-unix.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "config/peer_config_file.h"
#include "config/relay_list.h"
#include "forward/forward_spec.h"
#include "control/control_server.h"
#include "log.h"
#include "nc/netcat_command.h"
#include "netcheck/netcheck_command.h"
#include "peer_app.h"
#include "state_dir.h"
#include "transport/connector.h"
#include "trust/authorization.h"
#include "trust/known_peers.h"

namespace {

constexpr int kExitUsage = 2;
// How long an exiting peer keeps its main loop running for its goodbyes (see main).
constexpr guint kShutdownDrainMs = 300;

[[noreturn]] void usage_error(const std::string& message) {
  fprintf(stderr, "peer: %s\n", message.c_str());
  exit(kExitUsage);
}

struct Options {
  gchar* config = nullptr;
  gchar** relays = nullptr;
  gchar* name = nullptr;
  gchar** serves = nullptr;
  gchar** forwards = nullptr;
  gchar** socks = nullptr;
  gchar* state_dir = nullptr;
  gchar** ice_addresses = nullptr;
  gchar* proxy = nullptr;
  gboolean force_relay = FALSE;
  gchar* turn_transports = nullptr;
  gboolean insecure_relay = FALSE;
  gchar* relay_key = nullptr;
  gchar* relay_ca = nullptr;
  gchar** allow = nullptr;
  gboolean verbose = FALSE;
  gboolean version = FALSE;
};

// What `peer nc NAME HOST:PORT` asks for (empty for the other commands).
std::optional<natfwd::HostPort> netcat_target;

natfwd::PeerConfig parse_command_line(int argc, char** argv) {
  static Options o;
  const std::string default_state = natfwd::default_state_dir("peer");
  const std::string state_help = "Keep the identity key in DIR (default: " + default_state + ")";
  const std::string config_help = "Read flags from FILE (GKeyFile, see peer(1)); command-line flags override it (default: " + natfwd::default_peer_config_path() + " if it exists)";
  GOptionEntry entries[] = {
      {"config", 0, 0, G_OPTION_ARG_FILENAME, &o.config, config_help.c_str(), "FILE"},
      {"relay", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o.relays,
       "Relay to meet other peers at, HOST[:PORT] (default port 3478; TLS; tls:// may prefix it). Repeatable: a serving peer registers at every relay, a connecting peer tries them in turn (default from $NATFWD_RELAY, comma-separated; no built-in relay)",
       "HOST:PORT"},
      {"relay-key", 0, 0, G_OPTION_ARG_STRING, &o.relay_key,
       "Trust the relay only with this key, as known_relays prints it (default: trust on first use, recorded in STATE_DIR/known_relays)",
       "SHA256:..."},
      {"relay-ca", 0, 0, G_OPTION_ARG_FILENAME, &o.relay_ca,
       "Trust the relay when its certificate chains to this CA (PEM) for its host name (default: trust on first use)",
       "FILE"},
      {"insecure-relay", 0, 0, G_OPTION_ARG_NONE, &o.insecure_relay,
       "Talk to the relay over plain TCP (it then sees the rendezvous in clear; peer-to-peer traffic stays encrypted) (default: off)",
       nullptr},
      {"proxy", 0, 0, G_OPTION_ARG_STRING, &o.proxy,
       "Reach the relay and TURN over TCP/TLS through this HTTP CONNECT proxy (default: $https_proxy/$HTTPS_PROXY, else none)",
       "http://HOST:PORT"},
      {"force-relay", 0, 0, G_OPTION_ARG_NONE, &o.force_relay,
       "Use relayed (TURN) candidates only, never a direct path (default: off)", nullptr},
      {"turn-transport", 0, 0, G_OPTION_ARG_STRING, &o.turn_transports,
       "Reach TURN servers only over these, comma-separated: udp,tcp,tls (default: all three)",
       "LIST"},
      {"name", 0, 0, G_OPTION_ARG_STRING, &o.name,
       "Register at the relay under NAME, so that others can reach --serve targets (default: none)",
       "NAME"},
      {"serve", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o.serves,
       "Let connecting peers reach HOST:HOSTPORT (repeatable; exact allowlist; default: none)",
       "[PORT:]HOST:HOSTPORT"},
      {"allow", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o.allow,
       "Accept connecting peers with this key id (repeatable; beside STATE_DIR/authorized_peers; default: only those)",
       "KEYID"},
      {"local", 'L', 0, G_OPTION_ARG_STRING_ARRAY, &o.forwards,
       "Listen on BIND:PORT (default BIND 127.0.0.1; PORT 0 picks one) and carry each connection to HOST:HOSTPORT as seen by the peer NAME (repeatable; default: none)",
       "[BIND:]PORT:HOST:HOSTPORT"},
      {"dynamic", 'D', 0, G_OPTION_ARG_STRING_ARRAY, &o.socks,
       "Listen on BIND:PORT (default BIND 127.0.0.1; PORT 0 picks one) as a SOCKS5/SOCKS4a proxy whose CONNECTs go to the targets the peer NAME serves (others are refused) (repeatable)",
       "[BIND:]PORT"},
      {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &o.state_dir, state_help.c_str(), "DIR"},
      {"ice-address", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o.ice_addresses,
       "Offer only this local address as an ICE host candidate (repeatable; default: every interface, or loopback when the relay is on loopback)",
       "ADDR"},
      {"verbose", 'v', 0, G_OPTION_ARG_NONE, &o.verbose, "Log debug messages (default: off; also NATFWD_DEBUG=1)", nullptr},
      {"version", 0, 0, G_OPTION_ARG_NONE, &o.version, "Print the version and exit", nullptr},
      {nullptr, 0, 0, G_OPTION_ARG_NONE, nullptr, nullptr, nullptr},
  };
  GOptionContext* context = g_option_context_new("[NAME[@KEYID]] - reach machines behind NAT through a relay");
  g_option_context_set_summary(context,
      "Serve:   peer --relay vps.example:3478 --name home --serve 2222:buffalo:22\n"
      "Connect: peer --relay vps.example:3478 -L 2222:buffalo:22 home\n"
      "SOCKS:   peer --relay vps.example:3478 -D 1080 home\n"
      "ssh:     ssh -o ProxyCommand='peer --relay vps.example:3478 nc home %h:%p' buffalo\n"
      "Other commands: peer status [--json], peer id, peer invite, peer pair CODE,\n"
      "                peer [--relay ...] nc NAME HOST:PORT");
  g_option_context_set_description(context,
      "NAME is the serving peer that -L connections go to; its key is recorded on first\n"
      "use in STATE_DIR/known_peers and must match afterwards (NAME@KEYID pins it\n"
      "explicitly). A serving peer accepts only the keys in STATE_DIR/authorized_peers\n"
      "and --allow. `peer id` prints this peer's key id; `peer invite` (serving side)\n"
      "prints a one-time code, and `peer pair CODE` (other side) uses it to get\n"
      "authorised and to pin the serving peer's key. Ready lines go to stdout,\n"
      "logs to stderr. Exit status: 0 on SIGINT/SIGTERM, 1 on failure, 2 on bad usage.\n"
      "-D reaches only the targets NAME serves; others get SOCKS reply 2 (not allowed).\n"
      "`peer nc` writes only the connection to stdout and exits 0 when both directions\n"
      "finished cleanly, 1 with one line on stderr otherwise (-v: path line on stderr).\n"
      "A running peer answers `peer status` on STATE_DIR/control (owner only).\n"
      "`peer netcheck` reports what the Internet sees of this machine (see peer netcheck --help).");
  g_option_context_add_main_entries(context, entries, nullptr);
  GError* error = nullptr;
  if (!g_option_context_parse(context, &argc, &argv, &error)) {
    std::string message = error->message;
    g_error_free(error);
    g_option_context_free(context);
    usage_error(message + " (see peer --help)");
  }
  g_option_context_free(context);
  if (o.version) {
    printf("natfwd peer %s\n", NATFWD_VERSION);
    exit(0);
  }

  natfwd::PeerConfig config;
  std::vector<std::string> positional(argv + 1, argv + argc);
  if (!positional.empty() && positional[0] == "--") positional.erase(positional.begin());
  if (!positional.empty() && positional[0] == "pair" && o.forwards == nullptr) {
    // peer pair NAME@KEYID.SECRET: redeem an invite of the serving peer, then exit.
    if (positional.size() != 2) usage_error("pair: give the code `peer invite` printed: peer pair NAME@KEYID.SECRET");
    std::string name, id, secret, error;
    if (!natfwd::parse_invite_code(positional[1], name, id, secret, error)) usage_error("pair: " + error);
    if (o.serves || o.name) usage_error("pair: --serve/--name do not go with pair");
    config.remote_peer = name;
    config.remote_key_id = id;
    config.pair_secret = secret;
    positional.clear();
  }
  if (!positional.empty() && positional[0] == "nc") {
    // peer [flags] nc NAME HOST:PORT: stdin/stdout to HOST:PORT as NAME sees it.
    if (positional.size() != 3) usage_error("nc: give the peer and the target: peer nc NAME HOST:PORT");
    if (o.forwards || o.socks || o.serves || o.name)
      usage_error("nc: -L/-D/--serve/--name do not go with nc");
    auto target = natfwd::parse_host_port(positional[2]);
    if (auto* e = std::get_if<std::string>(&target)) usage_error("nc: " + positional[2] + ": " + *e);
    netcat_target = std::get<natfwd::HostPort>(target);
    positional.erase(positional.begin());
    positional.pop_back();
  }
  if (positional.size() > 1) usage_error("too many arguments: only one peer NAME after the -L specs");
  if (positional.size() == 1) {
    std::string name = positional[0];
    if (const auto at = name.find('@'); at != std::string::npos) {
      const std::string id = name.substr(at + 1);
      name.resize(at);
      if (!natfwd::is_valid_key_id(id))
        usage_error("'" + id + "' is not a key id (32 characters as `peer id` prints them)");
      config.remote_key_id = id;
    }
    if (!natfwd::is_valid_peer_name(name))
      usage_error("'" + name + "' is not a valid peer name (lowercase letters, digits, '.', '_', '-')");
    config.remote_peer = name;
  }

  for (gchar** f = o.forwards; f && *f; ++f) {
    auto spec = natfwd::parse_local_forward_spec(*f);
    if (auto* e = std::get_if<std::string>(&spec)) usage_error("-L " + std::string(*f) + ": " + *e);
    config.forwards.push_back(std::get<natfwd::LocalForwardSpec>(spec));
  }
  for (gchar** d = o.socks; d && *d; ++d) {
    auto listen = natfwd::parse_socks_listen_spec(*d);
    if (auto* e = std::get_if<std::string>(&listen)) usage_error("-D " + std::string(*d) + ": " + *e);
    config.socks.push_back(std::get<natfwd::HostPort>(listen));
  }
  for (gchar** s = o.serves; s && *s; ++s) {
    auto spec = natfwd::parse_serve_spec(*s);
    if (auto* e = std::get_if<std::string>(&spec)) usage_error("--serve " + std::string(*s) + ": " + *e);
    config.serves.push_back(std::get<natfwd::ServeSpec>(spec));
  }
  if (!config.forwards.empty() && !config.remote_peer)
    usage_error("-L needs the name of the serving peer after the specs, e.g. peer -L 2222:buffalo:22 home");
  if (!config.socks.empty() && !config.remote_peer)
    usage_error("-D needs the name of the serving peer, e.g. peer -D 1080 home");
  if (config.remote_peer && config.forwards.empty() && config.socks.empty() &&
      !config.pair_secret && !netcat_target)
    usage_error("a peer name was given but no -L [BIND:]PORT:HOST:HOSTPORT or -D [BIND:]PORT to forward");
  if (!config.serves.empty() && !o.name)
    usage_error("--serve needs --name NAME, the name connecting peers will use");
  if (o.name) {
    if (!natfwd::is_valid_peer_name(o.name))
      usage_error(std::string("--name: '") + o.name + "' is not a valid peer name (lowercase letters, digits, '.', '_', '-')");
    if (config.serves.empty()) usage_error("--name given but nothing to --serve");
    config.name = o.name;
  }
  for (gchar** a = o.allow; a && *a; ++a) {
    if (!natfwd::is_valid_key_id(*a))
      usage_error(std::string("--allow: '") + *a + "' is not a key id (32 characters as `peer id` prints them)");
    config.allow.push_back(*a);
  }
  if (config.serves.empty() && config.forwards.empty() && config.socks.empty() &&
      !config.pair_secret && !netcat_target)
    usage_error("nothing to do: give --name NAME --serve [PORT:]HOST:HOSTPORT, or -L [BIND:]PORT:HOST:HOSTPORT NAME");

  std::vector<std::string> relay_flags;
  for (gchar** r = o.relays; r && *r; ++r) relay_flags.push_back(*r);
  auto relays = natfwd::parse_relay_list(relay_flags, o.insecure_relay);
  if (auto* e = std::get_if<std::string>(&relays)) usage_error(*e);
  config.relays = std::get<std::vector<natfwd::HostPort>>(relays);
  config.relay_tls = !o.insecure_relay;

  std::optional<std::string> proxy;
  if (o.proxy) proxy = o.proxy;
  else proxy = natfwd::proxy_from_environment(config.relays.front().host);
  if (proxy && !proxy->empty()) {
    auto parsed = natfwd::parse_proxy_url(*proxy);
    if (auto* e = std::get_if<std::string>(&parsed))
      usage_error(std::string(o.proxy ? "--proxy" : "https_proxy") + ": " + *e);
    config.proxy = std::get<natfwd::HostPort>(parsed);
  }
  config.force_relay = o.force_relay;
  if (o.relay_key && o.relay_ca) usage_error("give --relay-key or --relay-ca, not both");
  if (o.relay_key && config.relays.size() > 1)
    usage_error("--relay-key pins one relay; with several relays use --relay-ca or the keys recorded in known_relays");
  if ((o.relay_key || o.relay_ca) && o.insecure_relay)
    usage_error("--relay-key/--relay-ca need TLS; drop --insecure-relay");
  if (o.relay_key) {
    std::string key = o.relay_key;
    if (key.rfind("SHA256:", 0) != 0 || key.size() != 50)
      usage_error("--relay-key: '" + key + "' is not SHA256:<43 base64 characters> as known_relays shows it");
    config.relay_key = key;
  }
  if (o.relay_ca) {
    if (!g_file_test(o.relay_ca, G_FILE_TEST_IS_REGULAR))
      usage_error(std::string("--relay-ca: cannot read ") + o.relay_ca);
    config.relay_ca = o.relay_ca;
  }
  if (o.turn_transports) {
    config.turn_udp = config.turn_tcp = config.turn_tls = false;
    gchar** names = g_strsplit(o.turn_transports, ",", -1);
    for (gchar** name = names; *name; ++name) {
      const std::string transport = g_strstrip(*name);
      if (transport == "udp") config.turn_udp = true;
      else if (transport == "tcp") config.turn_tcp = true;
      else if (transport == "tls") config.turn_tls = true;
      else {
        g_strfreev(names);
        usage_error("--turn-transport: '" + transport + "' is not udp, tcp or tls");
      }
    }
    g_strfreev(names);
  }

  for (gchar** a = o.ice_addresses; a && *a; ++a) {
    GInetAddress* address = g_inet_address_new_from_string(*a);
    if (!address) usage_error(std::string("--ice-address: '") + *a + "' is not an IP address");
    g_object_unref(address);
    config.ice_addresses.push_back(*a);
  }
  config.state_dir = o.state_dir ? o.state_dir : default_state;
  // nc runs under ssh, which shows its stderr: one line on failure, nothing otherwise.
  const auto quiet_level = netcat_target ? natfwd::log::Level::kError : natfwd::log::Level::kInfo;
  natfwd::log::init("peer", o.verbose ? natfwd::log::Level::kDebug : quiet_level);
  return config;
}

// Parses a subcommand's options (`peer id`, `peer invite`); exits 2 with one line on
// a bad flag or a stray argument.
void parse_subcommand(const char* name, const char* summary, GOptionEntry* entries, int argc,
                      char** argv) {
  GOptionContext* context = g_option_context_new(summary);
  g_option_context_add_main_entries(context, entries, nullptr);
  GError* error = nullptr;
  if (!g_option_context_parse(context, &argc, &argv, &error)) {
    std::string message = error->message;
    g_error_free(error);
    g_option_context_free(context);
    usage_error(std::string(name) + ": " + message);
  }
  g_option_context_free(context);
  if (argc > 1) usage_error(std::string(name) + ": unexpected argument '" + argv[1] + "'");
  natfwd::log::init("peer", natfwd::log::Level::kInfo);
}

// --help of --config for the subcommands that take only state-dir from the file
// (peer_arguments_with_config reads it before any parser runs).
std::string state_dir_config_help() {
  return "Take state-dir from FILE (default: " + natfwd::default_peer_config_path() +
         " if it exists)";
}

// `peer id [--state-dir DIR]`: this peer's key id (line 1, for scripts) and fingerprint.
int print_identity(int argc, char** argv) {
  gchar* state_dir = nullptr;
  const std::string default_state = natfwd::default_state_dir("peer");
  const std::string state_help = "Read (or create) the identity key in DIR (default: " + default_state + ")";
  gchar* config_file = nullptr;
  const std::string config_help = state_dir_config_help();
  GOptionEntry entries[] = {
      {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &state_dir, state_help.c_str(), "DIR"},
      {"config", 0, 0, G_OPTION_ARG_FILENAME, &config_file, config_help.c_str(), "FILE"},
      {nullptr, 0, 0, G_OPTION_ARG_NONE, nullptr, nullptr, nullptr},
  };
  parse_subcommand("id", "- print this peer's key id and fingerprint", entries, argc, argv);
  try {
    auto identity = natfwd::Identity::load_or_create(state_dir ? state_dir : default_state);
    printf("%s\n%s\n", natfwd::key_id(identity.public_key()).c_str(),
           natfwd::key_fingerprint(identity.public_key()).c_str());
  } catch (const std::exception& e) {
    natfwd::log::error("%s", e.what());
    return 1;
  }
  return 0;
}

// `peer invite [--state-dir DIR] [--expires MINUTES]`: a one-time pairing code.
int print_invite(int argc, char** argv) {
  gchar* state_dir = nullptr;
  gint minutes = 60;
  const std::string default_state = natfwd::default_state_dir("peer");
  const std::string state_help = "The serving peer's state dir (default: " + default_state + ")";
  gchar* config_file = nullptr;
  const std::string config_help = state_dir_config_help();
  GOptionEntry entries[] = {
      {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &state_dir, state_help.c_str(), "DIR"},
      {"config", 0, 0, G_OPTION_ARG_FILENAME, &config_file, config_help.c_str(), "FILE"},
      {"expires", 0, 0, G_OPTION_ARG_INT, &minutes, "The code works for this many minutes, once (default: 60)", "MINUTES"},
      {nullptr, 0, 0, G_OPTION_ARG_NONE, nullptr, nullptr, nullptr},
  };
  parse_subcommand("invite", "- print a one-time code that lets another peer pair with this one",
                   entries, argc, argv);
  if (minutes < 1 || minutes > 7 * 24 * 60) usage_error("invite: --expires must be 1 to 10080 minutes");
  const std::string dir = state_dir ? state_dir : default_state;
  gchar* name = nullptr;
  if (!g_file_get_contents((dir + "/name").c_str(), &name, nullptr, nullptr)) {
    natfwd::log::error("no serving peer has registered from %s yet: start `peer --name NAME --serve ...` with this state dir first", dir.c_str());
    return 1;
  }
  std::string peer_name = g_strstrip(name);
  g_free(name);
  try {
    auto identity = natfwd::Identity::load_or_create(dir);
    const std::string secret = natfwd::Authorization::create_invite(dir, minutes * 60L);
    // The code goes to stdout alone (scripts); how to use it to stderr.
    printf("%s@%s.%s\n", peer_name.c_str(), natfwd::key_id(identity.public_key()).c_str(), secret.c_str());
    fprintf(stderr, "on the other machine: peer --relay RELAY pair CODE   (works once, for %d minutes)\n", minutes);
  } catch (const std::exception& e) {
    natfwd::log::error("%s", e.what());
    return 1;
  }
  return 0;
}

// `peer status [--state-dir DIR] [--json]`: asks the peer running with DIR.
int print_status(int argc, char** argv) {
  gchar* state_dir = nullptr;
  gchar* config_file = nullptr;  // read before main() parses: see peer_arguments_with_config
  gboolean json = FALSE;
  const std::string default_state = natfwd::default_state_dir("peer");
  const std::string state_help = "The running peer's state dir (default: " + default_state + ")";
  const std::string config_help = state_dir_config_help();
  GOptionEntry entries[] = {
      {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &state_dir, state_help.c_str(), "DIR"},
      {"config", 0, 0, G_OPTION_ARG_FILENAME, &config_file, config_help.c_str(), "FILE"},
      {"json", 0, 0, G_OPTION_ARG_NONE, &json, "Print one JSON object, for scripts (default: text)", nullptr},
      {nullptr, 0, 0, G_OPTION_ARG_NONE, nullptr, nullptr, nullptr},
  };
  parse_subcommand("status", "- show what the running peer is doing: relay link, tunnels, paths, RTT, bytes",
                   entries, argc, argv);
  std::string error;
  auto answer = natfwd::query_control(state_dir ? state_dir : default_state,
                                      json ? "status json" : "status text", error);
  if (!answer) {
    natfwd::log::error("%s", error.c_str());
    return 1;
  }
  if (answer->rfind("error: ", 0) == 0) {
    natfwd::log::error("the running peer answered: %s", answer->substr(7).c_str());
    return 1;
  }
  fputs(answer->c_str(), stdout);
  return 0;
}

gboolean on_signal(gpointer loop) {
  g_main_loop_quit(static_cast<GMainLoop*>(loop));
  return G_SOURCE_REMOVE;
}

}  // namespace

int main(int argc, char** argv) {
  // peer.conf's flags go in front of the command line's (which win).
  std::vector<std::string> args = natfwd::peer_arguments_with_config(argc, argv);
  std::vector<char*> arg_pointers;
  for (std::string& arg : args) arg_pointers.push_back(arg.data());
  arg_pointers.push_back(nullptr);
  argc = static_cast<int>(args.size());
  argv = arg_pointers.data();
  if (argc >= 2 && std::string(argv[1]) == "id") return print_identity(argc - 1, argv + 1);
  if (argc >= 2 && std::string(argv[1]) == "invite") return print_invite(argc - 1, argv + 1);
  if (argc >= 2 && std::string(argv[1]) == "status") return print_status(argc - 1, argv + 1);
  if (argc >= 2 && std::string(argv[1]) == "netcheck")
    return natfwd::netcheck::netcheck_command(argc - 1, argv + 1);
  natfwd::PeerConfig config = parse_command_line(argc, argv);
  std::optional<natfwd::NetcatCommand> netcat;
  std::optional<natfwd::Identity> identity;
  try {
    identity.emplace(natfwd::Identity::load_or_create(config.state_dir));
  } catch (const std::exception& e) {
    natfwd::log::error("%s", e.what());
    return 1;
  }
  GMainLoop* loop = g_main_loop_new(nullptr, FALSE);
  int exit_code = 0;
  if (netcat_target) {
    config.remote_peer = config.remote_peer.value_or("");
    netcat.emplace(*config.remote_peer, *netcat_target, loop);
  }
  {
    natfwd::PeerApp app(std::move(config), std::move(*identity), loop);
    g_unix_signal_add(SIGINT, on_signal, loop);
    g_unix_signal_add(SIGTERM, on_signal, loop);
    // ssh sends its ProxyCommand SIGHUP when it is done: close the tunnel properly.
    if (netcat) g_unix_signal_add(SIGHUP, on_signal, loop);
    if (app.start()) {
      if (netcat) netcat->start(app);
      g_main_loop_run(loop);
      if (netcat) netcat->stopped_by_signal();
      app.shutdown();
      // Let the CONNECTION_CLOSE datagrams, the relay close and libnice's TURN
      // deallocations (a Refresh with lifetime 0, RFC 8656 section 7, sent from its
      // own sources after the agent is closed) go out. Stopping at the first idle
      // iteration left every allocation of an exiting peer on the relay until its
      // lifetime ran out (600 s): one socket each there.
      bool drained = false;
      g_timeout_add(kShutdownDrainMs, [](gpointer done) -> gboolean {
        *static_cast<bool*>(done) = true;
        return G_SOURCE_REMOVE;
      }, &drained);
      while (!drained) g_main_context_iteration(nullptr, TRUE);
    }
    exit_code = app.exit_code();
    if (netcat && exit_code == 0) exit_code = netcat->exit_code();
  }
  netcat.reset();
  g_main_loop_unref(loop);
  return exit_code;
}

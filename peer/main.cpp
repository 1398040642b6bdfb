// peer: serve targets on this machine's network, or reach another peer's targets.
//
//   peer --relay HOST:PORT --name home --serve 2222:buffalo:22
//   peer --relay HOST:PORT -L 2222:buffalo:22 home
//   peer --relay HOST:PORT -L 2222:buffalo:22 home -L 5433:db:5432 office
//   peer --relay HOST:PORT nc home buffalo:22      (ssh ProxyCommand)
//   peer status
#include <glib-unix.h>

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "config/peer_config_file.h"
#include "config/peer_options.h"
#include "config/relay_list.h"
#include "forward/forward_spec.h"
#include "invite/qr_code.h"
#include "control/control_server.h"
#include "control/status_lookup.h"
#include "log.h"
#include "nc/netcat_command.h"
#include "netcheck/netcheck_command.h"
#include "peer_app.h"
#include "serving/serving_lock.h"
#include "state_dir.h"
#include "transport/connector.h"
#include "trust/authorization.h"
#include "trust/known_peers.h"

namespace {

constexpr int kExitUsage = 2;
// How long an exiting peer keeps its main loop running for its goodbyes (see main).
constexpr guint kShutdownDrainMs = 300;
// The quiet zone around `peer invite --qr`'s code, in modules (see invite/qr_code.h).
constexpr int kInviteQrMarginModules = 2;

[[noreturn]] void usage_error(const std::string& message) {
  fprintf(stderr, "peer: %s\n", message.c_str());
  exit(kExitUsage);
}

// Parses a subcommand's options (`peer id`, `peer invite`); exits 2 with one line on
// a bad flag or more than `max_words` other arguments, which it returns.
std::vector<std::string> parse_subcommand(const char* name, const char* summary,
                                          GOptionEntry* entries, int argc, char** argv,
                                          size_t max_words = 0) {
  GOptionContext* context = g_option_context_new(summary);
  g_option_context_add_main_entries(context, entries, nullptr);
  std::string program = std::string("peer ") + name;  // what --help's usage line shows
  argv[0] = program.data();
  GError* error = nullptr;
  if (!g_option_context_parse(context, &argc, &argv, &error)) {
    std::string message = error->message;
    g_error_free(error);
    g_option_context_free(context);
    usage_error(std::string(name) + ": " + message);
  }
  g_option_context_free(context);
  if (argc > 1 + static_cast<int>(max_words))
    usage_error(std::string(name) + ": unexpected argument '" + argv[1 + max_words] + "'");
  natfwd::log::init("peer", natfwd::log::Level::kInfo);
  return std::vector<std::string>(argv + 1, argv + argc);
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
    auto identity = natfwd::load_identity(state_dir ? state_dir : default_state);
    printf("%s\n%s\n", natfwd::key_id(identity.public_key()).c_str(),
           natfwd::key_fingerprint(identity.public_key()).c_str());
  } catch (const std::exception& e) {
    natfwd::log::error("%s", e.what());
    return 1;
  }
  return 0;
}

// The flags `peer pair` needs on the other machine, as the serving peer wrote them
// when it registered (STATE_DIR/relay_flags): "--relay A --relay B [--insecure-relay] ",
// or a placeholder before it ever did.
std::string relay_hint_flags(const std::string& dir) {
  gchar* text = nullptr;
  std::string flags = "--relay RELAY ";
  if (g_file_get_contents((dir + "/relay_flags").c_str(), &text, nullptr, nullptr)) {
    const std::string known = g_strstrip(text);
    if (!known.empty()) flags = known + " ";
  }
  g_free(text);
  return flags;
}

// The first relay of `flags` ("" when there is none but the placeholder); `flags` then
// keeps only the other switches (--insecure-relay): one relay is enough to pair.
std::string take_first_relay(std::string& flags) {
  std::istringstream words(flags);
  std::string word, first, rest;
  while (words >> word) {
    if (word != "--relay") {
      rest += word + " ";
      continue;
    }
    std::string relay;
    if (words >> relay && first.empty()) first = relay;
  }
  if (first.empty() || first == "RELAY") return "";
  flags = rest;
  return first;
}

// `peer invite [--state-dir DIR] [--expires MINUTES] [--label LABEL] [--with-relay] [--qr]`:
// a one-time pairing code.
int print_invite(int argc, char** argv) {
  gchar* state_dir = nullptr;
  gchar* label = nullptr;
  gboolean with_relay = FALSE;
  gboolean qr = FALSE;
  gint minutes = 60;
  const std::string default_state = natfwd::default_state_dir("peer");
  const std::string state_help = "The serving peer's state dir (default: " + default_state + ")";
  gchar* config_file = nullptr;
  const std::string config_help = state_dir_config_help();
  GOptionEntry entries[] = {
      {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &state_dir, state_help.c_str(), "DIR"},
      {"config", 0, 0, G_OPTION_ARG_FILENAME, &config_file, config_help.c_str(), "FILE"},
      {"expires", 0, 0, G_OPTION_ARG_INT, &minutes, "The code works for this many minutes, once (default: 60)", "MINUTES"},
      {"with-relay", 0, 0, G_OPTION_ARG_NONE, &with_relay, "Append +HOST:PORT of the serving peer's first relay to the code, so that `peer pair CODE` needs no --relay (default: off)", nullptr},
      {"label", 0, 0, G_OPTION_ARG_STRING, &label, "Label the key that pairs with this code in authorized_peers, e.g. laptop (default: \"paired\")", "LABEL"},
      {"qr", 0, 0, G_OPTION_ARG_NONE, &qr, "Also print the code as a QR code under it, to read it off the screen with a camera (default: off)", nullptr},
      {nullptr, 0, 0, G_OPTION_ARG_NONE, nullptr, nullptr, nullptr},
  };
  parse_subcommand("invite", "- print a one-time code that lets another peer pair with this one",
                   entries, argc, argv);
  if (minutes < 1 || minutes > 7 * 24 * 60) usage_error("invite: --expires must be 1 to 10080 minutes");
  if (label && !natfwd::is_valid_label(label))
    usage_error(std::string("invite: --label: '") + label + "' is not 1 to 64 of A-Z a-z 0-9 . _ -");
  const std::string dir = state_dir ? state_dir : default_state;
  // Before reading anything from it: another user could have planted the name file
  // or a symlink where the invite is written.
  try {
    natfwd::open_state_dir(dir);
  } catch (const std::exception& e) {
    natfwd::log::error("%s", e.what());
    return 1;
  }
  gchar* name = nullptr;
  if (!g_file_get_contents((dir + "/name").c_str(), &name, nullptr, nullptr)) {
    natfwd::log::error("no serving peer has registered from %s yet: start `peer --name NAME --serve ...` with this state dir first", dir.c_str());
    return 1;
  }
  std::string peer_name = g_strstrip(name);
  g_free(name);
  try {
    // The code goes to stdout alone (scripts); how to use it to stderr, with the relays
    // the serving peer registered at.
    std::string flags = relay_hint_flags(dir);
    std::string code_relay;  // "+HOST:PORT" with --with-relay
    if (with_relay) {
      code_relay = take_first_relay(flags);
      if (code_relay.empty()) {
        natfwd::log::error("invite --with-relay: the serving peer of %s has not registered at a relay yet", dir.c_str());
        return 1;
      }
      code_relay = "+" + code_relay;
    }
    auto identity = natfwd::Identity::load_or_create(dir);  // dir checked above
    const std::string secret =
        natfwd::Authorization::create_invite(dir, minutes * 60L, label ? label : "");
    const std::string code =
        peer_name + "@" + natfwd::key_id(identity.public_key()) + "." + secret + code_relay;
    // The code's line first, whatever follows: scripts take line 1.
    printf("%s\n", code.c_str());
    if (qr) fputs(natfwd::qr_code_utf8(code, kInviteQrMarginModules).c_str(), stdout);
    fprintf(stderr, "on the other machine: peer %spair CODE   (works once, for %d minutes)\n",
            flags.c_str(), minutes);
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
  gchar* name = nullptr;
  gboolean json = FALSE;
  const std::string default_state = natfwd::default_state_dir("peer");
  const std::string state_help = "The running peer's state dir (default: " + default_state +
                                 ", the peer-* folders beside it and the services' in " +
                                 natfwd::kServiceStateBase + ")";
  const std::string name_help =
      std::string("Ask only the peer natfwd-peer@NAME.service runs, with the state dir ") +
      natfwd::kServiceStateBase + "/peer-NAME (default: none)";
  const std::string config_help = state_dir_config_help();
  GOptionEntry entries[] = {
      {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &state_dir, state_help.c_str(), "DIR"},
      {"name", 0, 0, G_OPTION_ARG_STRING, &name, name_help.c_str(), "NAME"},
      {"config", 0, 0, G_OPTION_ARG_FILENAME, &config_file, config_help.c_str(), "FILE"},
      {"json", 0, 0, G_OPTION_ARG_NONE, &json, "Print one JSON object per peer, for scripts (default: text)", nullptr},
      {nullptr, 0, 0, G_OPTION_ARG_NONE, nullptr, nullptr, nullptr},
  };
  parse_subcommand("status", "- show what the running peer is doing: relay link, tunnels, paths, RTT, bytes",
                   entries, argc, argv);
  if (name && !natfwd::is_valid_peer_name(name))
    usage_error(std::string("status: --name: '") + name + "' is not a valid peer name");
  const natfwd::StatusLookup lookup = natfwd::status_lookup(
      state_dir ? std::optional<std::string>(state_dir) : std::nullopt,
      name ? std::optional<std::string>(name) : std::nullopt, default_state);
  std::vector<std::pair<std::string, std::string>> answers;  // state dir, answer
  std::string first_error, permission_hint;
  for (const std::string& dir : lookup.state_dirs) {
    std::string error;
    int connect_errno = 0;
    auto answer = natfwd::query_control(dir, json ? "status json" : "status text", error,
                                        &connect_errno);
    if (answer && answer->rfind("error: ", 0) == 0) {
      error = "the running peer of " + dir + " answered: " + answer->substr(7);
      answer.reset();
    }
    if (answer) {
      answers.emplace_back(dir, *answer);
      continue;
    }
    if (first_error.empty()) first_error = error;
    if (permission_hint.empty())
      permission_hint = natfwd::status_permission_hint(dir, connect_errno);
  }
  if (answers.empty()) {
    if (!permission_hint.empty()) natfwd::log::error("%s", permission_hint.c_str());
    else if (lookup.explicit_dir) natfwd::log::error("%s", first_error.c_str());
    else
      natfwd::log::error("%s; nor in any peer-* state dir beside it or in %s: start one, or "
                         "give --state-dir DIR or --name NAME", first_error.c_str(),
                         natfwd::kServiceStateBase);
    return 1;
  }
  // One peer: its answer as it is (scripts rely on it). Several (a home server's
  // services): each under a line naming its state dir; with --json one object a line.
  for (const auto& [dir, answer] : answers) {
    if (answers.size() > 1 && !json) printf("== %s\n", dir.c_str());
    fputs(answer.c_str(), stdout);
  }
  return 0;
}

// `peer authorized [list]` and `peer authorized revoke KEYID|LABEL [--state-dir DIR]`:
// the keys a serving peer accepts besides --allow.
int authorized_command(int argc, char** argv) {
  gchar* state_dir = nullptr;
  gchar* config_file = nullptr;  // read before main() parses: see peer_arguments_with_config
  const std::string default_state = natfwd::default_state_dir("peer");
  const std::string state_help = "The serving peer's state dir (default: " + default_state + ")";
  const std::string config_help = state_dir_config_help();
  GOptionEntry entries[] = {
      {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &state_dir, state_help.c_str(), "DIR"},
      {"config", 0, 0, G_OPTION_ARG_FILENAME, &config_file, config_help.c_str(), "FILE"},
      {nullptr, 0, 0, G_OPTION_ARG_NONE, nullptr, nullptr, nullptr},
  };
  const std::vector<std::string> words = parse_subcommand(
      "authorized",
      "[list | revoke KEYID|LABEL] - the keys this serving peer accepts (STATE_DIR/authorized_peers)",
      entries, argc, argv, 2);
  const std::string dir = state_dir ? state_dir : default_state;
  const std::string action = words.empty() ? "list" : words[0];
  try {
    natfwd::open_state_dir(dir);
    if (action == "list" && words.size() <= 1) {
      const auto keys = natfwd::Authorization::list(dir);
      if (keys.empty()) fprintf(stderr, "no keys in %s/authorized_peers\n", dir.c_str());
      // One key a line: the key id, then its label (for scripts: the first word).
      for (const auto& key : keys)
        printf("%s%s%s\n", key.key_id.c_str(), key.label.empty() ? "" : " ", key.label.c_str());
      return 0;
    }
    if (action == "revoke" && words.size() == 2) {
      for (const auto& key : natfwd::Authorization::revoke(dir, words[1]))
        printf("revoked %s%s%s\n", key.key_id.c_str(), key.label.empty() ? "" : " ",
               key.label.c_str());
      // Connections already carried stay; the serving peer checks each new one.
      fprintf(stderr, "its new connections are refused, also through a tunnel open now\n");
      return 0;
    }
  } catch (const std::exception& e) {
    natfwd::log::error("%s", e.what());
    return 1;
  }
  usage_error("authorized: give list, or revoke KEYID|LABEL");
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
  if (argc >= 2 && std::string(argv[1]) == "authorized") return authorized_command(argc - 1, argv + 1);
  if (argc >= 2 && std::string(argv[1]) == "netcheck")
    return natfwd::netcheck::netcheck_command(argc - 1, argv + 1);
  natfwd::PeerCommandLine command_line =
      natfwd::parse_peer_command_line(std::vector<std::string>(argv, argv + argc));
  if (command_line.outcome == natfwd::PeerCommandLine::Outcome::kUsageError)
    usage_error(command_line.error);
  if (command_line.outcome == natfwd::PeerCommandLine::Outcome::kVersion) {
    printf("natfwd peer %s\n", NATFWD_VERSION);
    return 0;
  }
  natfwd::PeerOptions config = std::move(command_line.options);
  // nc runs under ssh, which shows its stderr: one line on failure, nothing otherwise.
  const auto quiet_level =
      config.netcat_target ? natfwd::log::Level::kError : natfwd::log::Level::kInfo;
  natfwd::log::init("peer", config.verbose ? natfwd::log::Level::kDebug : quiet_level);
  if (config.netcat_target) {
    // A peer already running here with a tunnel to NAME carries the connection.
    const natfwd::RemotePeerOptions& remote = *config.first_remote();
    const std::string peer = remote.key_id ? remote.name + "@" + *remote.key_id : remote.name;
    if (auto code = natfwd::NetcatCommand::through_running_peer(config.state_dir, peer,
                                                                *config.netcat_target))
      return *code;
  }
  std::optional<natfwd::NetcatCommand> netcat;
  std::optional<natfwd::Identity> identity;
  std::optional<natfwd::ServingLock> serving_lock;  // held until main returns
  try {
    identity.emplace(natfwd::load_identity(config.state_dir));
    if (config.name) serving_lock.emplace(config.state_dir);
  } catch (const std::exception& e) {
    natfwd::log::error("%s", e.what());
    return 1;
  }
  GMainLoop* loop = g_main_loop_new(nullptr, FALSE);
  int exit_code = 0;
  if (config.netcat_target)
    netcat.emplace(config.first_remote()->name, *config.netcat_target, loop);
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

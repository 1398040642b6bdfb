#include "config/peer_options.h"

#include <gio/gio.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <unistd.h>
#include <memory>

#include "config/peer_config_file.h"
#include "config/relay_list.h"
#include "state_dir.h"
#include "transport/connector.h"
#include "trust/authorization.h"
#include "trust/known_peers.h"

namespace natfwd {
namespace {

// Thrown by the checks below and turned into PeerCommandLine::kUsageError at the
// top: a bad command line is the user's, reported in one line, never a crash.
struct UsageError {
  std::string message;
};

[[noreturn]] void usage_error(const std::string& message) { throw UsageError{message}; }

// What GOption fills in; freed with the parse.
struct Flags {
  gchar* config = nullptr;
  gchar** relays = nullptr;
  gchar* name = nullptr;
  gchar** serves = nullptr;
  gchar** publishes = nullptr;
  gchar** forwards = nullptr;
  gchar** socks = nullptr;
  gchar* state_dir = nullptr;
  gchar** ice_addresses = nullptr;
  gchar* proxy = nullptr;
  gboolean force_relay = FALSE;
  gboolean no_port_mapping = FALSE;
  gboolean no_punch = FALSE;
  gchar* turn_transports = nullptr;
  gchar* port_mapping = nullptr;
  gboolean insecure_relay = FALSE;
  gchar* relay_key = nullptr;
  gchar* relay_ca = nullptr;
  gchar* acme_directory = nullptr;
  gchar* acme_email = nullptr;
  gchar* acme_ca_file = nullptr;
  gchar* publish_cert = nullptr;
  gchar* publish_key = nullptr;
  gchar** allow = nullptr;
  gboolean verbose = FALSE;
  gboolean version = FALSE;

  ~Flags() {
    for (gchar* text : {config, name, state_dir, proxy, turn_transports, port_mapping, relay_key,
                         relay_ca, acme_directory, acme_email, acme_ca_file, publish_cert,
                         publish_key})
      g_free(text);
    for (gchar** list : {relays, serves, publishes, forwards, socks, ice_addresses, allow}) g_strfreev(list);
  }
};

std::vector<std::string> list_of(gchar** list) {
  std::vector<std::string> out;
  for (gchar** item = list; item && *item; ++item) out.push_back(*item);
  return out;
}

// Each value of a repeatable flag through `parse`; the first bad one is a usage error
// naming the flag and the value.
template <typename Parse>
auto parse_each(gchar** list, const std::string& flag, Parse parse) {
  using Value = std::remove_cvref_t<decltype(std::get<0>(parse(std::string_view())))>;
  std::vector<Value> values;
  for (const std::string& text : list_of(list)) {
    auto parsed = parse(text);
    if (auto* e = std::get_if<std::string>(&parsed)) usage_error(flag + " " + text + ": " + *e);
    values.push_back(std::get<Value>(parsed));
  }
  return values;
}

// NAME[@KEYID] as given after the -L specs.
RemotePeerOptions parse_remote(const std::string& word) {
  RemotePeerOptions remote;
  std::string name = word;
  if (const auto at = name.find('@'); at != std::string::npos) {
    const std::string id = name.substr(at + 1);
    name.resize(at);
    if (!is_valid_key_id(id))
      usage_error("'" + id + "' is not a key id (32 characters as `peer id` prints them)");
    remote.key_id = id;
  }
  if (!is_valid_peer_name(name))
    usage_error("'" + name + "' is not a valid peer name (lowercase letters, digits, '.', '_', '-')");
  remote.name = name;
  return remote;
}

// Which NAME each -L and -D belongs to. One NAME: all of them, wherever it stands.
// Several: each NAME takes the -L/-D between it and the NAME before it.
void assign_forwards(const std::vector<std::string>& args, const std::vector<std::string>& names,
                     const std::vector<LocalForwardSpec>& forwards,
                     const std::vector<HostPort>& socks, PeerOptions& options) {
  std::map<std::string, size_t> index_of;
  for (const std::string& word : names) {
    RemotePeerOptions remote = parse_remote(word);
    auto [it, added] = index_of.emplace(remote.name, options.remotes.size());
    if (added) {
      options.remotes.push_back(std::move(remote));
    } else if (remote.key_id && options.remotes[it->second].key_id != remote.key_id) {
      usage_error("'" + remote.name + "' is given twice with different key ids");
    }
  }
  if (options.remotes.size() == 1 && names.size() == 1) {
    options.remotes[0].forwards = forwards;
    options.remotes[0].socks = socks;
    return;
  }
  // Several NAMEs: the command line's order decides.
  const config::CommandLineScan scan = config::scan_command_line(args, peer_flags());
  size_t next_forward = 0, next_socks = 0;
  std::vector<std::pair<bool, size_t>> held;  // (-L, index) or (-D, index) awaiting a NAME
  std::string first_held;                     // "-L SPEC" for the message
  for (const auto& [flag, value] : scan.in_order) {
    if (flag == "local" && next_forward < forwards.size()) {
      if (held.empty()) first_held = "-L " + value;
      held.push_back({true, next_forward++});
    } else if (flag == "dynamic" && next_socks < socks.size()) {
      if (held.empty()) first_held = "-D " + value;
      held.push_back({false, next_socks++});
    } else if (flag.empty()) {
      if (held.empty())
        usage_error("'" + value + "' has no -L or -D before it: with several peers, each NAME "
                    "follows its own options (peer -L 2222:buffalo:22 home -L 5433:db:5432 office)");
      RemotePeerOptions& remote = options.remotes[index_of.at(parse_remote(value).name)];
      for (const auto& [is_forward, index] : held) {
        if (is_forward) remote.forwards.push_back(forwards[index]);
        else remote.socks.push_back(socks[index]);
      }
      held.clear();
    }
  }
  if (!held.empty())
    usage_error(first_held + " has no peer NAME after it: with several peers, each NAME "
                "follows its own -L/-D options");
}

// `peer pair --help`, `peer nc --help` and `peer handover --help`: only the flags that
// reach the relay and the other peer; the serving and forwarding flags stay understood
// (and refused with a reason by the checks below) but are not shown.
GOptionContext* relay_link_subcommand_context(PeerSubcommand subcommand, GOptionEntry* entries) {
  for (GOptionEntry* entry = entries; entry->long_name; ++entry) {
    const std::string flag = entry->long_name;
    if (flag == "name" || flag == "serve" || flag == "allow" || flag == "local" ||
        flag == "dynamic" || flag == "version")
      entry->flags |= G_OPTION_FLAG_HIDDEN;
  }
  struct Usage {
    const char* parameters;
    const char* summary;
  };
  static const std::map<PeerSubcommand, Usage> kUsages = {
      {PeerSubcommand::kPair,
       {"CODE - redeem a serving peer's one-time invite: get authorised there and pin its key",
        "Pair:    peer --relay vps.example:3478 pair home@KEYID.SECRET\n"
        "CODE is what `peer invite` printed on the serving peer. On success this peer's\n"
        "key is in the serving peer's authorized_peers and the serving peer's key in\n"
        "STATE_DIR/known_peers; the command then exits 0 (1 with one line on failure)."}},
      {PeerSubcommand::kHandover,
       {"NAME KEYID - hand the name this key holds at the relays to another key",
        "Reinstalled: peer --relay vps.example:3478 --state-dir OLD handover home KEYID\n"
        "Run it with the state dir of the key that holds NAME (the old machine's, or a\n"
        "backup); KEYID is what `peer id` prints on the new one, which may then register\n"
        "NAME. The old key keeps NAME until then. Exit 0 when every relay took it, 3 when\n"
        "a relay refused (this key does not hold NAME there).\n"
        "NAME may be a custom domain this key holds (--publish https:www.example.org=...):\n"
        "the new key claims it once its TXT record _natfwd.www.example.org holds KEYID."}},
      {PeerSubcommand::kNc,
       {"NAME HOST:PORT - carry stdin/stdout to HOST:PORT as the serving peer NAME sees it",
        "ssh:     ssh -o ProxyCommand='peer --relay vps.example:3478 nc home %h:%p' buffalo\n"
        "Writes only the connection to stdout and exits 0 when both directions finished\n"
        "cleanly, 1 with one line on stderr otherwise (-v: path line on stderr)."}},
  };
  const Usage& usage = kUsages.at(subcommand);
  GOptionContext* context = g_option_context_new(usage.parameters);
  g_option_context_set_summary(context, usage.summary);
  return context;
}

PeerOptions parse(const std::vector<std::string>& args, bool& version) {
  Flags o;
  const std::string default_state = default_state_dir("peer");
  const std::string state_help = "Keep the identity key in DIR (default: " + default_state + ")";
  const std::string config_help = "Read flags from FILE (GKeyFile, see peer(1)); command-line flags override it (default: " + default_peer_config_path() + " if it exists)";
  GOptionEntry entries[] = {
      {"config", 0, 0, G_OPTION_ARG_FILENAME, &o.config, config_help.c_str(), "FILE"},
      {"relay", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o.relays,
       "Relay to meet other peers at, HOST[:PORT] (default port 3478; an IPv6 literal in brackets, [2001:db8::1]:3478; TLS; tls:// may prefix it). Repeatable: a serving peer registers at every relay, a connecting peer tries them in turn (default from $NATFWD_RELAY, comma-separated; no built-in relay)",
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
       "Reach the relay, TURN over TCP/TLS and the --acme-directory CA through this HTTP CONNECT proxy (default: $https_proxy/$HTTPS_PROXY, else none)",
       "http://HOST:PORT"},
      {"force-relay", 0, 0, G_OPTION_ARG_NONE, &o.force_relay,
       "Use relayed (TURN) candidates only, never a direct path (default: off)", nullptr},
      {"no-port-mapping", 0, 0, G_OPTION_ARG_NONE, &o.no_port_mapping,
       "Do not ask the gateway for a UDP port mapping (PCP, NAT-PMP, UPnP IGD) to offer as a 'mapped' candidate (default: ask)",
       nullptr},
      {"no-punch", 0, 0, G_OPTION_ARG_NONE, &o.no_punch,
       "Do not try a hard-NAT punch (birthday probing toward the other side's public address) when a tunnel starts relayed (default: try)",
       nullptr},
      {"port-mapping", 0, 0, G_OPTION_ARG_STRING, &o.port_mapping,
       "Ask the gateway for a port mapping only with these, comma-separated, tried in the order pcp, nat-pmp, upnp (default: all three)",
       "LIST"},
      {"turn-transport", 0, 0, G_OPTION_ARG_STRING, &o.turn_transports,
       "Reach TURN servers only over these, comma-separated: udp,tcp,tls (default: all three)",
       "LIST"},
      {"name", 0, 0, G_OPTION_ARG_STRING, &o.name,
       "Register at the relay under NAME, so that others can reach --serve targets (default: none)",
       "NAME"},
      {"serve", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o.serves,
       "Let connecting peers reach HOST:HOSTPORT (repeatable; exact allowlist; default: none)",
       "[PORT:]HOST:HOSTPORT"},
      {"publish", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o.publishes,
       "Let visitors with only a browser reach HOST:PORT (default HOST 127.0.0.1) through the relay's front door: http: at http://NAME.DOMAIN/, tls: (a server with its own certificate, passed through by SNI) at https://NAME.DOMAIN/, https: (passed through by SNI, TLS terminated by this peer with ,cert=FILE,key=FILE: a PEM certificate chain and its key, or without them a certificate from --acme-directory; HOST:PORT gets plain HTTP/1.1) at https://NAME.DOMAIN/, tcp: on the relay's PUBLICPORT (0 or none: any of its --publish-ports) (DOMAIN: the relay's --publish-domain; the relay must allow this peer's key); http: requests carry X-Forwarded-For with the visitor's address, and ,proxy-protocol after a tcp:, tls: or https: spec puts a PROXY protocol v2 header before the visitor's bytes; ,allow-from=CIDR (repeatable) lets only visitors from those ranges through, refused at the relay; ,auth=FILE after an http: or https: spec (not with proxy-protocol) lets through only requests with a user and password of FILE (htpasswd: bcrypt, SHA-crypt, apr1 MD5), checked by this peer on every request; tls:DOMAIN=[HOST:]PORT and https:DOMAIN=[HOST:]PORT publish at https://DOMAIN/, a custom domain such as www.example.org, which the relay routes once DOMAIN resolves to it and a TXT record _natfwd.DOMAIN holds this peer's key id (`peer id`) (repeatable; one http, and one tls or https for NAME.DOMAIN and for each custom domain, each https with its own target; default: none)",
       "KIND:[HOST:]PORT[,OPTION...]"},
      {"acme-directory", 0, 0, G_OPTION_ARG_STRING, &o.acme_directory,
       "Get the certificate of an https: publish without cert=/key= from this ACME directory (RFC 8555; TLS-ALPN-01 through the relay's port 443), e.g. Let's Encrypt's https://acme-v02.api.letsencrypt.org/directory or, to try things, its staging https://acme-staging-v02.api.letsencrypt.org/directory; the account key and certificates live in STATE_DIR/acme/ (default: none; such a publish is refused)",
       "URL"},
      {"acme-email", 0, 0, G_OPTION_ARG_STRING, &o.acme_email,
       "Contact address given to the ACME CA for expiry notices (default: none)", "ADDRESS"},
      {"publish-cert", 0, 0, G_OPTION_ARG_FILENAME, &o.publish_cert,
       "The PEM certificate chain every https: publish without cert=/key= serves, instead of one from ACME (with --publish-key; default: none)",
       "FILE"},
      {"publish-key", 0, 0, G_OPTION_ARG_FILENAME, &o.publish_key,
       "The PEM private key of --publish-cert (default: none)", "FILE"},
      {"acme-ca-file", 0, 0, G_OPTION_ARG_FILENAME, &o.acme_ca_file,
       "Trust only the PEM roots in FILE for the ACME directory's HTTPS, e.g. a test CA's (default: the system's roots)",
       "FILE"},
      {"allow", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o.allow,
       "Accept connecting peers with this key id (repeatable; beside STATE_DIR/authorized_peers; default: only those)",
       "KEYID"},
      {"local", 'L', 0, G_OPTION_ARG_STRING_ARRAY, &o.forwards,
       "Listen on BIND:PORT (default BIND 127.0.0.1; PORT 0 picks one) and carry each connection to HOST:HOSTPORT as seen by the peer NAME (repeatable; default: none)",
       "[BIND:]PORT:HOST:HOSTPORT"},
      {"dynamic", 'D', 0, G_OPTION_ARG_STRING_ARRAY, &o.socks,
       "Listen on BIND:PORT (default BIND 127.0.0.1; PORT 0 picks one) as a SOCKS5/SOCKS4a proxy whose CONNECTs go to the targets the peer NAME serves (others are refused); when a peer that forwards to NAME already runs with the same --state-dir, the -L and -D connections go through its tunnel (repeatable; default: none)",
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
      "Several: peer --relay vps.example:3478 -L 2222:buffalo:22 home -L 5433:db:5432 office\n"
      "SOCKS:   peer --relay vps.example:3478 -D 1080 home\n"
      "ssh:     ssh -o ProxyCommand='peer --relay vps.example:3478 nc home %h:%p' buffalo\n"
      "Other commands: peer status [--json], peer id, peer invite, peer pair CODE,\n"
      "                peer [--relay ...] nc NAME HOST:PORT, peer netcheck,\n"
      "                peer authorized [list|revoke KEYID|LABEL], peer handover NAME KEYID\n"
      "                (each with its own --help; flags may stand before or after it)");
  g_option_context_set_description(context,
      "NAME is the serving peer that -L connections go to; its key is recorded on first\n"
      "use in STATE_DIR/known_peers and must match afterwards (NAME@KEYID pins it\n"
      "explicitly). With one NAME every -L/-D goes to it; with several, each NAME takes\n"
      "the -L/-D options before it and gets its own tunnel.\n"
      "A serving peer accepts only the keys in STATE_DIR/authorized_peers\n"
      "and --allow. `peer id` prints this peer's key id; `peer invite` (serving side)\n"
      "prints a one-time code, and `peer pair CODE` (other side) uses it to get\n"
      "authorised and to pin the serving peer's key. Ready lines go to stdout,\n"
      "logs to stderr. Exit status: 0 on SIGINT/SIGTERM, 1 on failure, 2 on bad usage,\n"
      "3 when a relay refuses this peer for good (its name is another key's, the relay's\n"
      "key changed, not a natfwd relay): a service manager should not restart it.\n"
      "-D reaches only the targets NAME serves; others get SOCKS reply 2 (not allowed).\n"
      "`peer nc` writes only the connection to stdout and exits 0 when both directions\n"
      "finished cleanly, 1 with one line on stderr otherwise (-v: path line on stderr).\n"
      "A running peer answers `peer status` on STATE_DIR/control (owner only).\n"
      "`peer netcheck` reports what the Internet sees of this machine (see peer netcheck --help).");
  const PeerSubcommand subcommand =
      args.size() > 1 ? peer_subcommand(args[1]) : PeerSubcommand::kNone;
  const bool relay_link_only = subcommand == PeerSubcommand::kPair ||
                               subcommand == PeerSubcommand::kNc ||
                               subcommand == PeerSubcommand::kHandover;
  if (relay_link_only) {
    g_option_context_free(context);
    context = relay_link_subcommand_context(subcommand, entries);
  }
  g_option_context_add_main_entries(context, entries, nullptr);
  std::vector<std::string> words = args;
  // `peer pair --help` shows "peer pair [OPTION...] CODE" (GOption names argv[0]).
  if (relay_link_only)
    words[0] = "peer " + args[1];
  std::vector<char*> argv_words;
  for (std::string& word : words) argv_words.push_back(word.data());
  int argc = static_cast<int>(argv_words.size());
  char** argv = argv_words.data();
  GError* error = nullptr;
  const bool parsed = g_option_context_parse(context, &argc, &argv, &error);
  g_option_context_free(context);
  if (!parsed) {
    std::string message = error->message;
    g_error_free(error);
    usage_error(message + " (see peer --help)");
  }
  PeerOptions options;
  if (o.version) {
    version = true;
    return options;
  }
  options.verbose = o.verbose;

  std::vector<std::string> positional(argv + 1, argv + argc);
  if (!positional.empty() && positional[0] == "--") positional.erase(positional.begin());
  std::string code_relay;  // `peer pair NAME@KEYID.SECRET+RELAY`
  if (!positional.empty() && positional[0] == "pair" && o.forwards == nullptr) {
    // peer pair NAME@KEYID.SECRET: redeem an invite of the serving peer, then exit.
    if (positional.size() != 2) usage_error("pair: give the code `peer invite` printed: peer pair NAME@KEYID.SECRET");
    std::string name, id, secret, problem;
    if (!parse_invite_code(positional[1], name, id, secret, code_relay, problem))
      usage_error("pair: " + problem);
    if (o.serves || o.name) usage_error("pair: --serve/--name do not go with pair");
    options.remotes.push_back({name, id, {}, {}});
    options.pair_secret = secret;
    positional.clear();
  }
  if (!positional.empty() && positional[0] == "handover") {
    if (positional.size() != 3)
      usage_error("handover: give the name and the new key: peer handover NAME KEYID");
    if (!is_valid_peer_name(positional[1]) && !is_custom_domain_name(positional[1]))
      usage_error("handover: '" + positional[1] +
                  "' is neither a peer name nor a custom domain (lowercase, as published)");
    if (!is_valid_key_id(positional[2]))
      usage_error("handover: '" + positional[2] +
                  "' is not a key id (32 characters, as `peer id` prints it on the new machine)");
    if (o.forwards || o.socks || o.serves || o.name)
      usage_error("handover: -L/-D/--serve/--name do not go with handover");
    options.handover = PeerOptions::Handover{positional[1], positional[2]};
    positional.clear();
  }
  if (!positional.empty() && positional[0] == "nc") {
    // peer [flags] nc NAME HOST:PORT: stdin/stdout to HOST:PORT as NAME sees it.
    if (positional.size() != 3) usage_error("nc: give the peer and the target: peer nc NAME HOST:PORT");
    if (o.forwards || o.socks || o.serves || o.name)
      usage_error("nc: -L/-D/--serve/--name do not go with nc");
    auto target = parse_host_port(positional[2]);
    if (auto* e = std::get_if<std::string>(&target)) usage_error("nc: " + positional[2] + ": " + *e);
    options.netcat_target = std::get<HostPort>(target);
    positional.erase(positional.begin());
    positional.pop_back();
  }

  const std::vector<LocalForwardSpec> forwards =
      parse_each(o.forwards, "-L", parse_local_forward_spec);
  const std::vector<HostPort> socks = parse_each(o.socks, "-D", parse_socks_listen_spec);
  if (positional.empty()) {
    if (!forwards.empty())
      usage_error("-L needs the name of the serving peer after the specs, e.g. peer -L 2222:buffalo:22 home");
    if (!socks.empty()) usage_error("-D needs the name of the serving peer, e.g. peer -D 1080 home");
  } else {
    assign_forwards(args, positional, forwards, socks, options);
  }
  options.serves = parse_each(o.serves, "--serve", parse_serve_spec);
  options.publishes = parse_each(o.publishes, "--publish", parse_publish_spec);
  // tls and https both answer https://NAME.DOMAIN/ (routed by SNI): one of them for
  // NAME.DOMAIN and one per custom domain.
  const auto by_sni = [](PublishSpec::Kind kind) {
    return kind == PublishSpec::Kind::kHttps ? PublishSpec::Kind::kTls : kind;
  };
  for (size_t i = 0; i < options.publishes.size(); ++i)
    for (size_t j = 0; j < i; ++j) {
      const PublishSpec& a = options.publishes[i];
      const PublishSpec& b = options.publishes[j];
      if (by_sni(a.kind) != by_sni(b.kind) || a.kind == PublishSpec::Kind::kTcp ||
          a.custom_domain != b.custom_domain)
        continue;
      const std::string where = a.custom_domain.empty() ? "NAME.DOMAIN" : a.custom_domain;
      usage_error(std::string("--publish: one ") +
                  (by_sni(a.kind) == PublishSpec::Kind::kTls ? "tls or https"
                                                             : publish_kind_name(a.kind)) +
                  " service for " + where + " (the relay routes a name to one target)");
    }
  // Each https publish ends TLS with its own certificate, chosen by the stream's target.
  for (size_t i = 0; i < options.publishes.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (options.publishes[i].kind == PublishSpec::Kind::kHttps &&
          options.publishes[j].kind == PublishSpec::Kind::kHttps &&
          options.publishes[i].target == options.publishes[j].target)
        usage_error("--publish: " + options.publishes[i].target.to_string() +
                    " is the target of two https publishes; give each its own target (this "
                    "peer picks the certificate by target), or publish it once as tls: to a "
                    "server that holds both certificates");
  // The front door names only the target of a stream: a target behind basic auth
  // must not be reachable through another publish without it.
  for (const PublishSpec& auth : options.publishes)
    for (const PublishSpec& other : options.publishes)
      if (!auth.auth_file.empty() && &other != &auth && other.target == auth.target)
        usage_error("--publish: " + auth.target.to_string() + " is behind auth= and must not "
                    "be published a second time");
  // This peer tells an https stream from a plain one by its target.
  for (const PublishSpec& https : options.publishes)
    for (const PublishSpec& other : options.publishes)
      if (https.kind == PublishSpec::Kind::kHttps && other.kind != PublishSpec::Kind::kHttps &&
          https.target == other.target)
        usage_error("--publish: " + https.target.to_string() +
                    " is published as https and as " + publish_kind_name(other.kind) +
                    "; give each its own target");
  if (!options.publishes.empty() && !o.name)
    usage_error("--publish needs --name NAME: visitors reach it as NAME.DOMAIN");
  if (o.acme_directory) {
    const std::string url = o.acme_directory;
    if (!(url.starts_with("https://") || url.starts_with("http://")) ||
        !g_uri_is_valid(o.acme_directory, G_URI_FLAGS_NONE, nullptr))
      usage_error("--acme-directory: '" + url + "' is not an http(s) URL");
    options.acme_directory = url;
  }
  if (o.acme_email) {
    options.acme_email = o.acme_email;
    if (options.acme_email.find('@') == std::string::npos ||
        options.acme_email.find_first_of(" ,<>\"") != std::string::npos)
      usage_error("--acme-email: '" + options.acme_email + "' is not an e-mail address");
  }
  if (o.acme_ca_file) {
    options.acme_ca_file = o.acme_ca_file;
    if (access(o.acme_ca_file, R_OK) != 0)
      usage_error("--acme-ca-file: cannot read " + options.acme_ca_file);
  }
  // --publish-cert/--publish-key: what cert=/key= say, for the https publish that names
  // none of its own.
  if (!o.publish_cert != !o.publish_key)
    usage_error("--publish-cert and --publish-key go together (the certificate chain and its "
                "key)");
  if (o.publish_cert) {
    bool used = false;
    for (PublishSpec& https : options.publishes)
      if (https.kind == PublishSpec::Kind::kHttps && https.cert_file.empty()) {
        https.cert_file = o.publish_cert;
        https.key_file = o.publish_key;
        used = true;
      }
    if (!used)
      usage_error("--publish-cert: no --publish https: without its own cert=/key= to serve it");
  }
  for (const PublishSpec& https : options.publishes)
    if (https.kind == PublishSpec::Kind::kHttps && https.cert_file.empty() &&
        options.acme_directory.empty())
      usage_error("--publish https:" + https.target.to_string() +
                  " needs cert=FILE,key=FILE or --publish-cert/--publish-key (the certificate "
                  "chain and key to serve), or "
                  "--acme-directory URL to get one by ACME (Let's Encrypt: "
                  "https://acme-v02.api.letsencrypt.org/directory)");
  if (!options.remotes.empty() && forwards.empty() && socks.empty() && !options.pair_secret &&
      !options.netcat_target && !options.handover)
    usage_error("a peer name was given but no -L [BIND:]PORT:HOST:HOSTPORT or -D [BIND:]PORT to forward");
  if (!options.serves.empty() && !o.name)
    usage_error("--serve needs --name NAME, the name connecting peers will use");
  if (o.name) {
    if (!is_valid_peer_name(o.name))
      usage_error(std::string("--name: '") + o.name + "' is not a valid peer name (lowercase letters, digits, '.', '_', '-')");
    if (options.serves.empty() && options.publishes.empty())
      usage_error("--name given but nothing to --serve or --publish");
    options.name = o.name;
  }
  for (const std::string& id : list_of(o.allow)) {
    if (!is_valid_key_id(id))
      usage_error("--allow: '" + id + "' is not a key id (32 characters as `peer id` prints them)");
    options.allow.push_back(id);
  }
  if (options.serves.empty() && options.publishes.empty() && forwards.empty() && socks.empty() &&
      !options.pair_secret && !options.netcat_target && !options.handover)
    usage_error("nothing to do: give --name NAME --serve [PORT:]HOST:HOSTPORT, or -L [BIND:]PORT:HOST:HOSTPORT NAME");

  // --relay (or peer.conf's relay) wins over the one an invite code carries, which
  // wins over $NATFWD_RELAY.
  std::vector<std::string> relay_flags = list_of(o.relays);
  if (relay_flags.empty() && !code_relay.empty()) relay_flags.push_back(code_relay);
  auto relays = parse_relay_list(relay_flags, o.insecure_relay);
  if (auto* e = std::get_if<std::string>(&relays)) usage_error(*e);
  options.relays = std::get<std::vector<HostPort>>(relays);
  options.relay_tls = !o.insecure_relay;

  std::optional<std::string> proxy;
  if (o.proxy) proxy = o.proxy;
  else proxy = proxy_from_environment(options.relays.front().host);
  if (proxy && !proxy->empty()) {
    auto parsed_proxy = parse_proxy_url(*proxy);
    if (auto* e = std::get_if<std::string>(&parsed_proxy))
      usage_error(std::string(o.proxy ? "--proxy" : "https_proxy") + ": " + *e);
    options.proxy = std::get<HostPort>(parsed_proxy);
  }
  options.force_relay = o.force_relay;
  options.port_mapping = !o.no_port_mapping;
  options.punch = !o.no_punch;
  if (o.relay_key && o.relay_ca) usage_error("give --relay-key or --relay-ca, not both");
  if (o.relay_key && options.relays.size() > 1)
    usage_error("--relay-key pins one relay; with several relays use --relay-ca or the keys recorded in known_relays");
  if ((o.relay_key || o.relay_ca) && o.insecure_relay)
    usage_error("--relay-key/--relay-ca need TLS; drop --insecure-relay");
  if (o.relay_key) {
    std::string key = o.relay_key;
    if (key.rfind("SHA256:", 0) != 0 || key.size() != 50)
      usage_error("--relay-key: '" + key + "' is not SHA256:<43 base64 characters> as known_relays shows it");
    options.relay_key = key;
  }
  if (o.relay_ca) {
    if (!g_file_test(o.relay_ca, G_FILE_TEST_IS_REGULAR))
      usage_error(std::string("--relay-ca: cannot read ") + o.relay_ca);
    options.relay_ca = o.relay_ca;
  }
  auto chosen = [](const char* flag, const char* text, const std::vector<std::string>& allowed) {
    auto words = parse_choice_list(text, allowed);
    if (auto* problem = std::get_if<std::string>(&words))
      usage_error(std::string(flag) + ": " + *problem);
    return [words = std::get<std::vector<std::string>>(words)](const std::string& word) {
      return std::find(words.begin(), words.end(), word) != words.end();
    };
  };
  if (o.turn_transports) {
    auto named = chosen("--turn-transport", o.turn_transports, kTurnTransportNames);
    options.turn_udp = named("udp");
    options.turn_tcp = named("tcp");
    options.turn_tls = named("tls");
  }
  if (o.port_mapping) {
    if (o.no_port_mapping) usage_error("--port-mapping and --no-port-mapping contradict each other");
    auto named = chosen("--port-mapping", o.port_mapping, kPortMappingNames);
    options.map_pcp = named("pcp");
    options.map_nat_pmp = named("nat-pmp");
    options.map_upnp = named("upnp");
  }
  for (const std::string& text : list_of(o.ice_addresses)) {
    GInetAddress* address = g_inet_address_new_from_string(text.c_str());
    if (!address) usage_error("--ice-address: '" + text + "' is not an IP address");
    g_object_unref(address);
    options.ice_addresses.push_back(text);
  }
  options.state_dir = o.state_dir ? o.state_dir : default_state;
  return options;
}

}  // namespace

PeerSubcommand peer_subcommand(const std::string& word) {
  static const std::map<std::string, PeerSubcommand> kByWord = {
      {"id", PeerSubcommand::kId},           {"invite", PeerSubcommand::kInvite},
      {"status", PeerSubcommand::kStatus},   {"netcheck", PeerSubcommand::kNetcheck},
      {"pair", PeerSubcommand::kPair},       {"nc", PeerSubcommand::kNc},
      {"authorized", PeerSubcommand::kAuthorized}, {"handover", PeerSubcommand::kHandover},
  };
  auto it = kByWord.find(word);
  return it == kByWord.end() ? PeerSubcommand::kNone : it->second;
}

std::vector<std::string> subcommand_first(const std::vector<std::string>& args) {
  // The first word the scan counts as positional: a flag's value (`--name status`)
  // is not one, since the scan knows which flags take a value.
  for (size_t i = 1; i < args.size() && args[i] != "--"; ++i) {
    const std::vector<std::string> prefix(args.begin(), args.begin() + i + 1);
    if (config::scan_command_line(prefix, peer_flags()).positionals.empty()) continue;
    if (peer_subcommand(args[i]) == PeerSubcommand::kNone) return args;
    std::vector<std::string> reordered = args;
    reordered.erase(reordered.begin() + i);
    reordered.insert(reordered.begin() + 1, args[i]);
    return reordered;
  }
  return args;
}

std::variant<std::vector<std::string>, std::string> parse_choice_list(
    const std::string& text, const std::vector<std::string>& allowed) {
  auto one_of = [&] {
    std::string names;
    for (size_t i = 0; i < allowed.size(); ++i)
      names += (i == 0 ? "" : i + 1 == allowed.size() ? " or " : ", ") + allowed[i];
    return names;
  };
  std::vector<std::string> words;
  gchar** parts = g_strsplit(text.c_str(), ",", -1);
  std::unique_ptr<gchar*, decltype(&g_strfreev)> owned(parts, g_strfreev);
  for (gchar** part = parts; *part; ++part) {
    const std::string word = g_strstrip(*part);
    if (std::find(allowed.begin(), allowed.end(), word) == allowed.end())
      return "'" + word + "' is not " + one_of();
    words.push_back(word);
  }
  if (words.empty()) return "names none of " + one_of();
  return words;
}

PeerCommandLine parse_peer_command_line(const std::vector<std::string>& args) {
  PeerCommandLine result;
  try {
    bool version = false;
    result.options = parse(args, version);
    if (version) result.outcome = PeerCommandLine::Outcome::kVersion;
  } catch (const UsageError& error) {
    result.outcome = PeerCommandLine::Outcome::kUsageError;
    result.error = error.message;
  }
  return result;
}

}  // namespace natfwd

#include "netcheck/netcheck_command.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include <glib.h>

#include "config/relay_list.h"
#include "forward/forward_spec.h"
#include "glib_ptr.h"
#include "identity.h"
#include "log.h"
#include "netcheck/netcheck_output.h"
#include "netcheck/netcheck_runner.h"
#include "signaling/known_relays.h"
#include "signaling/relay_client.h"
#include "state_dir.h"
#include "transport/connector.h"
#include "trust/known_peers.h"

namespace natfwd::netcheck {
namespace {

constexpr int kExitUsage = 2;
constexpr int kExitNoPeerFacts = 3;
constexpr uint64_t kQueryId = 1;

[[noreturn]] void usage_error(const std::string& message) {
  fprintf(stderr, "peer: netcheck: %s\n", message.c_str());
  exit(kExitUsage);
}

// The other side of `peer netcheck NAME`: a rendezvous link without a name, one
// signed NetcheckQuery, and the answer.
class RemoteQuery {
 public:
  RemoteQuery(ConnectOptions link, const Identity& identity, std::string target,
              std::function<void()> changed)
      : target_(std::move(target)), changed_(std::move(changed)) {
    RelayClient::Callbacks callbacks;
    callbacks.on_welcome = [this, &identity](const wire::Welcome& welcome, const std::string&) {
      if (sent_) return;  // a reconnect: the answer, if any, went with the old link
      sent_ = true;
      wire::Envelope envelope;
      auto* query = envelope.mutable_netcheck_query();
      query->set_query_id(kQueryId);
      query->set_target(target_);
      query->set_signature(identity.sign(netcheck_query_message(welcome.challenge(), target_)));
      client_->send(envelope);
    };
    callbacks.on_session_message = [this](const wire::Envelope& envelope) {
      if (!envelope.has_netcheck_reply() || envelope.netcheck_reply().query_id() != kQueryId)
        return;
      reply_ = envelope.netcheck_reply();
      changed_();
    };
    callbacks.on_disconnected = [this](const std::string& reason, bool fatal) {
      error_ = reason;
      if (fatal) {
        failed_ = true;
        changed_();
      }
    };
    client_ = std::make_unique<RelayClient>(std::move(link), identity, std::nullopt,
                                            std::move(callbacks));
    client_->start();
  }

  bool finished() const { return reply_.has_value() || failed_; }
  const std::optional<wire::NetcheckReply>& reply() const { return reply_; }
  // Why there is no reply (after the deadline, or a fatal refusal).
  std::string why_not() const {
    if (!error_.empty()) return "the relay link failed: " + error_;
    return "no answer from the relay within the timeout";
  }

 private:
  std::string target_;
  std::function<void()> changed_;
  std::unique_ptr<RelayClient> client_;
  std::optional<wire::NetcheckReply> reply_;
  std::string error_;
  bool failed_ = false;
  bool sent_ = false;
};

std::string explain(const wire::NetcheckReply& reply, const std::string& name) {
  switch (reply.status()) {
    case wire::NetcheckReply::NO_SUCH_PEER:
      return name + " is not registered at the relay";
    case wire::NetcheckReply::REFUSED:
      return name + " does not authorise this peer's key (pair first: peer invite / peer pair)";
    case wire::NetcheckReply::NOT_YET:
      return name + " has not finished its own netcheck yet; try again in a few seconds";
    case wire::NetcheckReply::LIMIT:
      return "the relay refused: too many queries";
    default:
      return name + " sent an answer this peer does not understand";
  }
}

}  // namespace

int netcheck_command(int argc, char** argv) {
  gchar** relay_texts = nullptr;
  gchar* config_path = nullptr;  // read before parsing (peer_arguments_with_config)
  gchar* proxy_text = nullptr;
  gint stun_port = 0;
  gint timeout = 8;
  gboolean json = FALSE;
  gboolean verbose = FALSE;
  gboolean insecure_relay = FALSE;
  gchar* relay_key = nullptr;
  gchar* state_dir = nullptr;
  const std::string default_state = default_state_dir("peer");
  const std::string state_help =
      "With NAME: this peer's identity and known_relays (default: " + default_state + ")";
  GOptionEntry entries[] = {
      {"relay", 0, 0, G_OPTION_ARG_STRING_ARRAY, &relay_texts,
       "The relay to look from, HOST[:PORT]; tls:// may prefix it; of several, the first "
       "(default: peer.conf's relay, else $NATFWD_RELAY)",
       "HOST:PORT"},
      {"config", 0, 0, G_OPTION_ARG_FILENAME, &config_path,
       "Take relay, relay-key, insecure-relay, proxy and state-dir from this peer.conf "
       "(default: ~/.config/natfwd/peer.conf if it exists)",
       "FILE"},
      {"proxy", 0, 0, G_OPTION_ARG_STRING, &proxy_text,
       "Also try the relay through this HTTP CONNECT proxy (default: $https_proxy, else none)",
       "http://HOST:PORT"},
      {"stun-port", 0, 0, G_OPTION_ARG_INT, &stun_port,
       "The relay's STUN/UDP port (default: the relay's port, or 3478 when that is 443)", "PORT"},
      {"timeout", 0, 0, G_OPTION_ARG_INT, &timeout,
       "Give up on what has not answered after this many seconds (default: 8)", "SECONDS"},
      {"json", 0, 0, G_OPTION_ARG_NONE, &json, "One JSON object instead of lines (default: off)",
       nullptr},
      {"verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "Log debug messages (default: off)",
       nullptr},
      {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &state_dir, state_help.c_str(), "DIR"},
      {"insecure-relay", 0, 0, G_OPTION_ARG_NONE, &insecure_relay,
       "With NAME: plain TCP to the relay (default: TLS)", nullptr},
      {"relay-key", 0, 0, G_OPTION_ARG_STRING, &relay_key,
       "With NAME: trust the relay only with this key (default: known_relays, trust on "
       "first use)",
       "SHA256:..."},
      {nullptr, 0, 0, G_OPTION_ARG_NONE, nullptr, nullptr, nullptr},
  };
  GOptionContext* context = g_option_context_new(
      "[NAME] - what the Internet sees of this machine, from the relay; with NAME, the path "
      "to that peer");
  g_option_context_set_description(
      context,
      "Reports the address the relay sees, the NAT's mapping and filtering behaviour\n"
      "(RFC 5780; needs a relay started with --alternate-address), whether UDP and TCP\n"
      "reach the relay (and through the proxy), whether a UPnP IGD or NAT-PMP/PCP\n"
      "gateway answers on the LAN and which UDP mapping it grants (deleted again at\n"
      "exit), and which peers this machine can meet directly.\n"
      "With NAME (a serving peer that authorises this peer's key), it also asks NAME\n"
      "for its own netcheck through the relay and says which path the two will take\n"
      "(direct udp/tcp, relayed turn-udp/tcp/tls), why, and what would make it direct.\n"
      "Exit status: 0 the relay was reached (by UDP, TCP or the proxy) and, with NAME,\n"
      "its facts came; 1 the relay was not reached at all; 2 bad usage; 3 NAME's facts\n"
      "could not be had (not registered, not authorised, no answer).");
  g_option_context_add_main_entries(context, entries, nullptr);
  static char program[] = "peer netcheck";  // what --help's usage line shows
  argv[0] = program;
  GError* raw_error = nullptr;
  if (!g_option_context_parse(context, &argc, &argv, &raw_error)) {
    const std::string message = GErrorPtr(raw_error)->message;
    g_option_context_free(context);
    usage_error(message);
  }
  g_option_context_free(context);
  if (argc > 2) usage_error(std::string("unexpected argument '") + argv[2] + "'");
  std::optional<std::string> peer_name;
  if (argc == 2) {
    if (!is_valid_peer_name(argv[1]))
      usage_error(std::string("'") + argv[1] +
                  "' is not a valid peer name (lowercase letters, digits, '.', '_', '-')");
    peer_name = argv[1];
  }
  log::init("peer", verbose ? log::Level::kDebug : log::Level::kInfo);

  std::vector<std::string> relay_flags;
  for (gchar** r = relay_texts; r && *r; ++r) relay_flags.push_back(*r);
  g_strfreev(relay_texts);
  g_free(config_path);
  auto relays = parse_relay_list(relay_flags, insecure_relay);
  if (auto* e = std::get_if<std::string>(&relays)) usage_error(*e);
  if (relay_key && (std::string_view(relay_key).rfind("SHA256:", 0) != 0 ||
                    std::string_view(relay_key).size() != 50))
    usage_error(std::string("--relay-key: '") + relay_key +
                "' is not SHA256:<43 base64 characters> as known_relays shows it");
  NetcheckOptions options;
  options.relay = std::get<std::vector<HostPort>>(relays).front();
  if (stun_port < 0 || stun_port > 65535) usage_error("--stun-port: not a port");
  options.stun_port = stun_port ? static_cast<uint16_t>(stun_port)
                                : options.relay.port == 443 ? kDefaultRelayPort
                                                            : options.relay.port;
  if (timeout < 1 || timeout > 120) usage_error("--timeout: 1 to 120 seconds");
  options.timeout_seconds = static_cast<unsigned>(timeout);
  options.try_port_mapping = true;
  std::optional<std::string> proxy;
  if (proxy_text) proxy = proxy_text;
  else proxy = proxy_from_environment(options.relay.host);
  if (proxy && !proxy->empty()) {
    auto parsed_proxy = parse_proxy_url(*proxy);
    if (auto* e = std::get_if<std::string>(&parsed_proxy))
      usage_error(std::string(proxy_text ? "--proxy" : "https_proxy") + ": " + *e);
    options.proxy = std::get<HostPort>(parsed_proxy);
  }
  g_free(proxy_text);

  if (!peer_name) {
    const NetcheckReport report = run_netcheck(options);
    const std::string out = json ? format_json(options, report, std::nullopt)
                                 : format_text(options, report, std::nullopt);
    fputs(out.c_str(), stdout);
    fflush(stdout);
    return exit_status(report);
  }

  // Both at once: this side's checks and the query to NAME.
  const std::string dir = state_dir ? state_dir : default_state;
  std::optional<Identity> identity;
  try {
    identity.emplace(load_identity(dir));
  } catch (const std::exception& e) {
    log::error("%s", e.what());
    return 1;
  }
  KnownRelays known_relays(dir + "/known_relays");
  ConnectOptions link;
  link.server = options.relay;
  link.http_proxy = options.proxy;
  link.tls = !insecure_relay;
  const std::optional<std::string> pinned = relay_key ? std::optional<std::string>(relay_key)
                                                      : std::nullopt;
  link.tls_check = [&](X509*, const std::string& spki) -> std::string {
    if (pinned) {
      const std::string presented = spki_fingerprint(spki);
      return presented == *pinned ? "" : "relay presented key " + presented + ", not " + *pinned;
    }
    return known_relays.check(options.relay, spki);
  };
  GMainLoopPtr owned_loop(g_main_loop_new(nullptr, FALSE));
  GMainLoop* loop = owned_loop.get();
  std::optional<NetcheckReport> report;
  auto maybe_quit = [&] { g_main_loop_quit(loop); };
  NetcheckRun local(options, [&](const NetcheckReport& r) {
    report = r;
    maybe_quit();
  });
  RemoteQuery remote(link, *identity, *peer_name, maybe_quit);
  const SourceId deadline(g_timeout_add_seconds(
      options.timeout_seconds + 2,
      +[](gpointer l) -> gboolean {
        g_main_loop_quit(static_cast<GMainLoop*>(l));
        return G_SOURCE_CONTINUE;
      },
      loop));
  gint64 until = g_get_monotonic_time() + (options.timeout_seconds + 2) * G_USEC_PER_SEC;
  while (!(report && remote.finished()) && g_get_monotonic_time() < until)
    g_main_loop_run(loop);
  if (!report) report = NetcheckReport{};  // cannot happen: the run has its own timeout

  std::optional<RemoteSide> side;
  std::string problem;
  if (remote.reply() && remote.reply()->status() == wire::NetcheckReply::OK) {
    side.emplace();
    side->name = *peer_name;
    side->facts = from_wire(remote.reply()->facts());
    side->verdict = predict_path(report->facts(), side->facts, *peer_name);
  } else {
    problem = remote.reply() ? explain(*remote.reply(), *peer_name) : remote.why_not();
  }
  std::string out = json ? format_json(options, *report, side)
                         : format_text(options, *report, side);
  if (!problem.empty()) {
    if (json) out.insert(out.rfind('}'), ", \"peer_error\": " + json_string(problem));
    else out += "peer " + *peer_name + ": " + problem + "\n";
  }
  fputs(out.c_str(), stdout);
  fflush(stdout);
  const int status = exit_status(*report);
  return status != 0 ? status : side ? 0 : kExitNoPeerFacts;
}

}  // namespace natfwd::netcheck

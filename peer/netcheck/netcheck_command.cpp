#include "netcheck/netcheck_command.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include <glib.h>

#include "log.h"
#include "netcheck/netcheck_output.h"
#include "netcheck/netcheck_runner.h"
#include "transport/connector.h"

namespace natfwd::netcheck {
namespace {

constexpr int kExitUsage = 2;
constexpr uint16_t kDefaultRelayPort = 3478;

[[noreturn]] void usage_error(const std::string& message) {
  fprintf(stderr, "peer: netcheck: %s\n", message.c_str());
  exit(kExitUsage);
}

}  // namespace

int netcheck_command(int argc, char** argv) {
  gchar* relay_text = nullptr;
  gchar* proxy_text = nullptr;
  gint stun_port = 0;
  gint timeout = 8;
  gboolean json = FALSE;
  gboolean verbose = FALSE;
  GOptionEntry entries[] = {
      {"relay", 0, 0, G_OPTION_ARG_STRING, &relay_text,
       "The relay to look from, HOST[:PORT]; tls:// may prefix it (default: $NATFWD_RELAY)",
       "HOST:PORT"},
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
      {nullptr, 0, 0, G_OPTION_ARG_NONE, nullptr, nullptr, nullptr},
  };
  GOptionContext* context =
      g_option_context_new("- what the Internet sees of this machine, from the relay");
  g_option_context_set_description(
      context,
      "Reports the address the relay sees, the NAT's mapping and filtering behaviour\n"
      "(RFC 5780; needs a relay started with --alternate-address), whether UDP and TCP\n"
      "reach the relay (and through the proxy), whether a UPnP IGD or NAT-PMP/PCP\n"
      "gateway answers on the LAN, and which peers this machine can meet directly.\n"
      "Exit status: 0 the relay was reached (by UDP, TCP or the proxy), 1 it was not\n"
      "reached at all, 2 bad usage.");
  g_option_context_add_main_entries(context, entries, nullptr);
  GError* error = nullptr;
  if (!g_option_context_parse(context, &argc, &argv, &error)) {
    std::string message = error->message;
    g_error_free(error);
    g_option_context_free(context);
    usage_error(message);
  }
  g_option_context_free(context);
  if (argc > 1) usage_error(std::string("unexpected argument '") + argv[1] + "'");
  log::init("peer", verbose ? log::Level::kDebug : log::Level::kInfo);

  std::string relay = relay_text ? relay_text : "";
  if (relay.empty()) {
    const char* env = g_getenv("NATFWD_RELAY");
    relay = env ? env : "";
  }
  if (relay.empty()) usage_error("no relay configured: give --relay HOST:PORT or set NATFWD_RELAY");
  if (relay.rfind("tls://", 0) == 0) relay = relay.substr(6);
  auto parsed = parse_host_port(relay, kDefaultRelayPort);
  if (auto* e = std::get_if<std::string>(&parsed)) usage_error("--relay: " + *e);
  NetcheckOptions options;
  options.relay = std::get<HostPort>(parsed);
  if (stun_port < 0 || stun_port > 65535) usage_error("--stun-port: not a port");
  options.stun_port = stun_port ? static_cast<uint16_t>(stun_port)
                                : options.relay.port == 443 ? kDefaultRelayPort
                                                            : options.relay.port;
  if (timeout < 1 || timeout > 120) usage_error("--timeout: 1 to 120 seconds");
  options.timeout_seconds = static_cast<unsigned>(timeout);
  std::optional<std::string> proxy;
  if (proxy_text) proxy = proxy_text;
  else proxy = proxy_from_environment(options.relay.host);
  if (proxy && !proxy->empty()) {
    auto parsed_proxy = parse_proxy_url(*proxy);
    if (auto* e = std::get_if<std::string>(&parsed_proxy))
      usage_error(std::string(proxy_text ? "--proxy" : "https_proxy") + ": " + *e);
    options.proxy = std::get<HostPort>(parsed_proxy);
  }
  g_free(relay_text);
  g_free(proxy_text);

  const NetcheckReport report = run_netcheck(options);
  const std::string out = json ? format_json(options, report, std::nullopt)
                               : format_text(options, report, std::nullopt);
  fputs(out.c_str(), stdout);
  fflush(stdout);
  return exit_status(report);
}

}  // namespace natfwd::netcheck

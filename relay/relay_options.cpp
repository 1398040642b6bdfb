#include "relay_options.h"

#include <charconv>
#include <memory>

#include <gio/gio.h>

#include "state_dir.h"

namespace natfwd::relay {
namespace {

struct OptionContextFree {
  void operator()(GOptionContext* context) const { g_option_context_free(context); }
};

// Largest sensible value; the relay holds at most 20000 connections anyway.
constexpr unsigned long kMaxPeersPerAddressLimit = 100000;

}  // namespace

bool parse_relay_options(int argc, char** argv, RelayOptions& options, std::string& error) {
  const RelayOptions defaults;
  options.state_dir = default_state_dir("relay");

  gchar* listen_text = nullptr;
  gchar* state_dir_text = nullptr;
  gchar* max_peers_text = nullptr;
  gboolean verbose = FALSE;

  const std::string listen_help =
      "Address and port for STUN (udp) and rendezvous (tcp); port 0 picks a free port "
      "[default: " + defaults.listen.to_string() + "]";
  const std::string state_dir_help =
      "Directory for the relay's state, created mode 0700 [default: " + options.state_dir + "]";
  const std::string max_peers_help =
      "Most concurrent connections from one IP address [default: " +
      std::to_string(defaults.max_peers_per_address) + "]";
  GOptionEntry entries[] = {
      {"listen", 'l', 0, G_OPTION_ARG_STRING, &listen_text, listen_help.c_str(), "ADDR:PORT"},
      {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &state_dir_text, state_dir_help.c_str(), "DIR"},
      {"verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "Log debug messages [default: off]",
       nullptr},
      {"max-peers-per-address", 0, 0, G_OPTION_ARG_STRING, &max_peers_text,
       max_peers_help.c_str(), "N"},
      {nullptr, 0, 0, G_OPTION_ARG_NONE, nullptr, nullptr, nullptr}};

  std::unique_ptr<GOptionContext, OptionContextFree> context(
      g_option_context_new("- natfwd rendezvous and STUN server"));
  g_option_context_add_main_entries(context.get(), entries, nullptr);
  g_option_context_set_description(
      context.get(),
      "On ready, prints one line on stdout: relay listening on ADDR:PORT (stun/udp, "
      "rendezvous/tcp)\nSIGINT or SIGTERM stop it. Logs go to stderr.\n");

  struct Strings {
    gchar** values[3];
    ~Strings() {
      for (gchar** value : values) g_free(*value);
    }
  } strings{{&listen_text, &state_dir_text, &max_peers_text}};

  GError* raw_error = nullptr;
  if (!g_option_context_parse(context.get(), &argc, &argv, &raw_error)) {
    error = raw_error->message;
    g_error_free(raw_error);
    return false;
  }
  if (argc > 1) {
    error = std::string("unexpected argument '") + argv[1] + "'";
    return false;
  }

  options.verbose = verbose;
  if (listen_text) {
    auto parsed = parse_host_port(listen_text, defaults.listen.port, /*allow_zero_port=*/true);
    if (auto* message = std::get_if<std::string>(&parsed)) {
      error = "--listen: " + *message;
      return false;
    }
    options.listen = std::get<HostPort>(parsed);
    GInetAddress* ip = g_inet_address_new_from_string(options.listen.host.c_str());
    if (!ip) {
      error = "--listen: '" + options.listen.host + "' is not an IP address";
      return false;
    }
    g_object_unref(ip);
  }
  if (state_dir_text) {
    if (!*state_dir_text) {
      error = "--state-dir: empty directory name";
      return false;
    }
    options.state_dir = state_dir_text;
  }
  if (max_peers_text) {
    const std::string_view text = max_peers_text;
    unsigned long value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value == 0 ||
        value > kMaxPeersPerAddressLimit) {
      error = "--max-peers-per-address: '" + std::string(text) + "' is not a number from 1 to " +
              std::to_string(kMaxPeersPerAddressLimit);
      return false;
    }
    options.max_peers_per_address = value;
  }
  return true;
}

}  // namespace natfwd::relay

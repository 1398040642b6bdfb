#include "relay_options.h"

#include <charconv>
#include <memory>

#include <gio/gio.h>

#include "glib_ptr.h"
#include "identity.h"
#include "state_dir.h"

namespace natfwd::relay {
namespace {

struct OptionContextFree {
  void operator()(GOptionContext* context) const { g_option_context_free(context); }
};

// Largest sensible value; the relay holds at most 20000 connections anyway.
constexpr unsigned long kMaxPeersPerAddressLimit = 100000;
constexpr unsigned long kMaxAllocationsLimit = 1000000;
// --threads: more data-plane threads than any relay host has cores.
constexpr unsigned long kMaxThreads = 256;
constexpr unsigned long kMaxRateLimit = 1000000;

// A whole decimal number in [min, max]; false otherwise.
bool parse_number(std::string_view text, uint64_t min, uint64_t max, uint64_t& out) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value < min ||
      value > max)
    return false;
  out = value;
  return true;
}

bool is_ip_literal(const std::string& text) {
  return GObjectPtr<GInetAddress>(g_inet_address_new_from_string(text.c_str())) != nullptr;
}

// ADDR:PORT of a listening flag: an IP literal, PORT defaulting to `default_port`,
// port 0 allowed (the kernel picks one). False with `error` set otherwise.
bool parse_ip_port_flag(const char* flag, const char* text, uint16_t default_port,
                        std::optional<HostPort>& out, std::string& error) {
  auto parsed = parse_host_port(text, default_port, /*allow_zero_port=*/true);
  if (auto* message = std::get_if<std::string>(&parsed)) {
    error = std::string("--") + flag + ": " + *message;
    return false;
  }
  const HostPort& address = std::get<HostPort>(parsed);
  if (!is_ip_literal(address.host)) {
    error = std::string("--") + flag + ": '" + address.host + "' is not an IP address";
    return false;
  }
  out = address;
  return true;
}

// MIN-MAX of a port range flag; false with `error` set when it is not one.
bool parse_port_range(const char* flag, std::string_view text, uint16_t& min_out,
                      uint16_t& max_out, std::string& error) {
  const size_t dash = text.find('-');
  uint64_t min = 0, max = 0;
  if (dash == std::string_view::npos || !parse_number(text.substr(0, dash), 1, 65535, min) ||
      !parse_number(text.substr(dash + 1), 1, 65535, max) || min > max) {
    error = std::string("--") + flag + ": '" + std::string(text) +
            "' is not MIN-MAX with 1 <= MIN <= MAX <= 65535";
    return false;
  }
  min_out = static_cast<uint16_t>(min);
  max_out = static_cast<uint16_t>(max);
  return true;
}

}  // namespace

bool parse_relay_options(int argc, char** argv, RelayOptions& options, std::string& error) {
  const RelayOptions defaults;
  options.state_dir = default_state_dir("relay");

  gchar* listen_text = nullptr;
  gchar* state_dir_text = nullptr;
  gchar* max_peers_text = nullptr;
  gchar* max_registrations_text = nullptr;
  gchar* max_new_names_text = nullptr;
  gchar* max_sessions_text = nullptr;
  gchar* tls_listen_text = nullptr;
  gchar* cert_text = nullptr;
  gchar* key_text = nullptr;
  gchar* secret_text = nullptr;
  gchar* realm_text = nullptr;
  gchar* per_user_text = nullptr;
  gchar* per_address_text = nullptr;
  gchar* max_allocations_text = nullptr;
  gchar* name_expiry_text = nullptr;
  gchar* bandwidth_text = nullptr;
  gchar* threads_text = nullptr;
  gchar* relay_ports_text = nullptr;
  gchar* config_text = nullptr;  // read before parsing (relay_config_file.h); listed for --help
  gchar* alternate_address_text = nullptr;
  gchar* alternate_port_text = nullptr;
  gchar* metrics_text = nullptr;
  gchar** turn_server_texts = nullptr;
  gchar** allow_peer_texts = nullptr;
  gchar** relay_address_texts = nullptr;
  gchar* publish_domain_text = nullptr;
  gchar* publish_http_text = nullptr;
  gchar** allow_publisher_texts = nullptr;
  gchar** publish_address_texts = nullptr;
  gchar* publish_ports_text = nullptr;
  gchar* publish_max_visitors_text = nullptr;
  gchar* publish_max_visitors_total_text = nullptr;
  gchar* publish_max_new_text = nullptr;
  gchar* publish_max_new_total_text = nullptr;
  gchar* publish_bandwidth_text = nullptr;
  gchar* publish_bandwidth_total_text = nullptr;
  gboolean verbose = FALSE;
  gboolean version = FALSE;
  gboolean no_turn = FALSE;

  const std::string listen_help =
      "Address and port for STUN/TURN (udp) and rendezvous/TURN (tcp); port 0 picks a free "
      "port. [::]:PORT listens on IPv6 and IPv4 both (dual-stack), 0.0.0.0 on IPv4 only, "
      "a specific address on that one only [default: " + defaults.listen.to_string() + "]";
  const std::string state_dir_help =
      "Directory for the relay's state (name bindings, TURN secret, self-signed "
      "certificate), created mode "
      "0700 [default: " + options.state_dir + "]";
  const std::string max_peers_help =
      "Most concurrent connections from one IP address [default: " +
      std::to_string(defaults.max_peers_per_address) + "]";
  const std::string max_new_names_help =
      "Most names newly bound per hour from one IPv4 address or IPv6 /64; names a key "
      "already holds do not count [default: " +
      std::to_string(defaults.max_new_names_per_hour) + "]";
  const std::string max_registrations_help =
      "Most name registrations per minute from one IP address; beyond, Error RATE_LIMITED "
      "[default: " + std::to_string(defaults.max_registrations_per_minute) + "]";
  const std::string max_sessions_help =
      "Most session requests per minute from one IP address; beyond, the session is refused "
      "[default: " + std::to_string(defaults.max_sessions_per_minute) + "]";
  const std::string per_user_help =
      "Most TURN allocations per user (486 beyond) [default: " +
      std::to_string(defaults.max_allocations_per_user) + "]";
  const std::string per_address_help =
      "Most TURN allocations from one IP address (an IPv6 /64 is one), whatever the user "
      "(486 beyond), and most TURN over TCP/TLS connections from it [default: " +
      std::to_string(defaults.max_allocations_per_address) + "]";
  const std::string max_allocations_help =
      "Most TURN allocations in total (508 beyond) [default: " +
      std::to_string(defaults.max_allocations) + "]";
  const std::string threads_help =
      "Threads relaying TURN over UDP, each with its own socket on the --listen port "
      "(SO_REUSEPORT) and its own allocations; 1 serves UDP on the main thread "
      "[default: the number of CPUs, here " + std::to_string(g_get_num_processors()) + "]";
  const std::string name_expiry_help =
      "A name bound to a key is free again for any key after DAYS without a connection "
      "holding it; 0 keeps names forever [default: " +
      std::to_string(defaults.name_expiry_days) + "]";
  const std::string publish_max_visitors_help =
      "Most visitor connections open at once to one publisher's services (a key); beyond, "
      "HTTP 429 or a closed connection [default: " +
      std::to_string(defaults.publish_max_visitors) + "]";
  const std::string publish_max_visitors_total_help =
      "Most visitor connections open at once in all; beyond, HTTP 503 or a closed "
      "connection [default: " + std::to_string(defaults.publish_max_visitors_total) + "]";
  const std::string publish_max_new_help =
      "Most new visitor connections per minute to one publisher's services [default: " +
      std::to_string(defaults.publish_max_new_visitors_per_minute) + "]";
  const std::string publish_max_new_total_help =
      "Most new visitor connections per minute in all [default: " +
      std::to_string(defaults.publish_max_new_visitors_per_minute_total) + "]";
  const std::string publish_bandwidth_help =
      "Most visitor bytes per second each way for one publisher's services; 0 = no cap "
      "[default: " + std::to_string(defaults.publish_bandwidth_cap) + "]";
  const std::string publish_bandwidth_total_help =
      "Most visitor bytes per second each way in all; 0 = no cap [default: " +
      std::to_string(defaults.publish_bandwidth_cap_total) + "]";
  const std::string realm_help = "TURN realm [default: " + defaults.realm + "]";
  GOptionEntry entries[] = {
      {"config", 0, 0, G_OPTION_ARG_FILENAME, &config_text,
       "Read flags from FILE (GKeyFile, see relay(1)); command-line flags override it "
       "[default: /etc/natfwd/relay.conf if it exists]",
       "FILE"},
      {"listen", 'l', 0, G_OPTION_ARG_STRING, &listen_text, listen_help.c_str(), "ADDR:PORT"},
      {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &state_dir_text, state_dir_help.c_str(), "DIR"},
      {"verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "Log debug messages [default: off]",
       nullptr},
      {"max-peers-per-address", 0, 0, G_OPTION_ARG_STRING, &max_peers_text,
       max_peers_help.c_str(), "N"},
      {"max-registrations-per-minute", 0, 0, G_OPTION_ARG_STRING, &max_registrations_text,
       max_registrations_help.c_str(), "N"},
      {"max-new-names-per-hour", 0, 0, G_OPTION_ARG_STRING, &max_new_names_text,
       max_new_names_help.c_str(), "N"},
      {"max-sessions-per-minute", 0, 0, G_OPTION_ARG_STRING, &max_sessions_text,
       max_sessions_help.c_str(), "N"},
      {"tls-listen", 0, 0, G_OPTION_ARG_STRING, &tls_listen_text,
       "Also serve TLS (rendezvous or TURN inside) on this address, typically port 443; "
       "port 0 picks one. TLS is always served on the --listen TCP port too [default: off]",
       "ADDR:PORT"},
      {"cert", 0, 0, G_OPTION_ARG_FILENAME, &cert_text,
       "PEM certificate chain for TLS [default: self-signed, made in the state dir]",
       "FILE"},
      {"key", 0, 0, G_OPTION_ARG_FILENAME, &key_text,
       "PEM private key for --cert [default: made with the self-signed certificate]", "FILE"},
      {"auth-secret-file", 0, 0, G_OPTION_ARG_FILENAME, &secret_text,
       "TURN REST API shared secret (as coturn's static-auth-secret) [default: "
       "<state-dir>/turn-secret, generated on first run]",
       "FILE"},
      {"realm", 0, 0, G_OPTION_ARG_STRING, &realm_text, realm_help.c_str(), "REALM"},
      {"turn-server", 0, 0, G_OPTION_ARG_STRING_ARRAY, &turn_server_texts,
       "Also announce this external TURN server (UDP and TCP) to peers, with credentials "
       "from the same secret; repeatable [default: none]",
       "HOST:PORT"},
      {"no-turn", 0, 0, G_OPTION_ARG_NONE, &no_turn,
       "Turn off the relay's own TURN server (external --turn-server only) [default: on]",
       nullptr},
      {"allow-peer", 0, 0, G_OPTION_ARG_STRING_ARRAY, &allow_peer_texts,
       "Relay to this range even if denied by default (loopback, private, link-local, "
       "CGNAT, multicast, own addresses); repeatable [default: none]",
       "CIDR"},
      {"max-allocations-per-user", 0, 0, G_OPTION_ARG_STRING, &per_user_text,
       per_user_help.c_str(), "N"},
      {"max-allocations-per-address", 0, 0, G_OPTION_ARG_STRING, &per_address_text,
       per_address_help.c_str(), "N"},
      {"name-expiry", 0, 0, G_OPTION_ARG_STRING, &name_expiry_text, name_expiry_help.c_str(),
       "DAYS"},
      {"max-allocations", 0, 0, G_OPTION_ARG_STRING, &max_allocations_text,
       max_allocations_help.c_str(), "N"},
      {"threads", 0, 0, G_OPTION_ARG_STRING, &threads_text, threads_help.c_str(), "N"},
      {"bandwidth-cap", 0, 0, G_OPTION_ARG_STRING, &bandwidth_text,
       "Most bytes per second relayed per TURN allocation; excess is dropped [default: 0, "
       "no cap]",
       "BYTES_PER_SEC"},
      {"relay-address", 0, 0, G_OPTION_ARG_STRING_ARRAY, &relay_address_texts,
       "The address TURN relays from, one of each family at most (repeat for both): "
       "relayed sockets bind to it and allocations report it [default: IPv4: the --listen "
       "address, or with a wildcard the one the kernel uses toward the client (its "
       "default route's for an IPv6 client); IPv6: an IPv6 --listen address, else the "
       "host's first global IPv6 address, none: no IPv6 allocations]",
       "IP"},
      {"relay-ports", 0, 0, G_OPTION_ARG_STRING, &relay_ports_text,
       "Port range for relayed UDP sockets [default: any port the kernel picks]", "MIN-MAX"},
      {"alternate-address", 0, 0, G_OPTION_ARG_STRING, &alternate_address_text,
       "A second IP address of this host: STUN then does RFC 5780 NAT behaviour discovery "
       "(OTHER-ADDRESS, CHANGE-REQUEST) on both addresses and both ports; needs --listen "
       "on a real address of the same family [default: off]",
       "IP"},
      {"alternate-port", 0, 0, G_OPTION_ARG_STRING, &alternate_port_text,
       "The second STUN port for discovery [default: the --listen port + 1]", "PORT"},
      {"metrics", 0, 0, G_OPTION_ARG_STRING, &metrics_text,
       "Serve Prometheus metrics (text format) at http://ADDR:PORT/metrics; port 0 picks "
       "one [default: off]",
       "ADDR:PORT"},
      {"publish-domain", 0, 0, G_OPTION_ARG_STRING, &publish_domain_text,
       "Publish peers' services (peer --publish) as NAME.DOMAIN; a wildcard DNS record "
       "*.DOMAIN points at this host; needs --publish-http [default: off]",
       "DOMAIN"},
      {"publish-http", 0, 0, G_OPTION_ARG_STRING, &publish_http_text,
       "Plain HTTP/1.1 front door, routed by Host NAME.DOMAIN to the peer NAME, or a 308 "
       "redirect to https when NAME publishes https (typically "
       "0.0.0.0:80; port 0 picks one; default port 80) [default: off]",
       "ADDR:PORT"},
      {"allow-publisher", 0, 0, G_OPTION_ARG_STRING_ARRAY, &allow_publisher_texts,
       "A peer key id (`peer id`) that may publish, or `any`; repeatable; beside the state "
       "dir's publishers file (one key id per line) [default: none]",
       "KEYID"},
      {"publish-address", 0, 0, G_OPTION_ARG_STRING_ARRAY, &publish_address_texts,
       "A public IP address of this relay; repeatable. Custom domains (peer --publish "
       "https:www.example.org=PORT) are taken when the name resolves to one of them and "
       "TXT _natfwd.NAME holds the peer's key id [default: the --listen address unless "
       "it is a wildcard; else custom domains are off]",
       "ADDR"},
      {"publish-ports", 0, 0, G_OPTION_ARG_STRING, &publish_ports_text,
       "Ports for raw TCP publishing (peer --publish tcp:), one per published target; "
       "the relay listens on all of them; needs --publish-domain [default: none]",
       "MIN-MAX"},
      {"publish-max-visitors", 0, 0, G_OPTION_ARG_STRING, &publish_max_visitors_text,
       publish_max_visitors_help.c_str(), "N"},
      {"publish-max-visitors-total", 0, 0, G_OPTION_ARG_STRING, &publish_max_visitors_total_text,
       publish_max_visitors_total_help.c_str(), "N"},
      {"publish-max-new-visitors-per-minute", 0, 0, G_OPTION_ARG_STRING, &publish_max_new_text,
       publish_max_new_help.c_str(), "N"},
      {"publish-max-new-visitors-per-minute-total", 0, 0, G_OPTION_ARG_STRING,
       &publish_max_new_total_text, publish_max_new_total_help.c_str(), "N"},
      {"publish-bandwidth-cap", 0, 0, G_OPTION_ARG_STRING, &publish_bandwidth_text,
       publish_bandwidth_help.c_str(), "BYTES_PER_SEC"},
      {"publish-bandwidth-cap-total", 0, 0, G_OPTION_ARG_STRING, &publish_bandwidth_total_text,
       publish_bandwidth_total_help.c_str(), "BYTES_PER_SEC"},
      {"version", 0, 0, G_OPTION_ARG_NONE, &version, "Print the version and exit", nullptr},
      {nullptr, 0, 0, G_OPTION_ARG_NONE, nullptr, nullptr, nullptr}};

  std::unique_ptr<GOptionContext, OptionContextFree> context(
      g_option_context_new("- natfwd rendezvous, STUN and TURN server"));
  g_option_context_add_main_entries(context.get(), entries, nullptr);
  g_option_context_set_description(
      context.get(),
      "On ready, prints one line on stdout: relay listening on ADDR:PORT (stun/udp, "
      "rendezvous/tcp, turn/udp+tcp[, tls ADDR:PORT][, rfc5780 ALT_IP:ALT_PORT]"
      "[, metrics http://ADDR:PORT/metrics][, publish http ADDR:PORT https *.DOMAIN"
      "[, tcp MIN-MAX]])\n"
      "SIGINT or SIGTERM stop it. Logs go to "
      "stderr.\n\n`relay id [OPTIONS]` prints the relay's TLS key fingerprint (SHA256:...), "
      "the value peers pin with --relay-key, and exits; it reads the same --state-dir, "
      "--cert and --config as the relay.\n`relay names [list | release NAME]` and `relay "
      "domains [list | release NAME]` list or free the state dir's name bindings and "
      "custom domain claims.\n");

  struct Strings {
    std::vector<gchar**> values;
    std::vector<gchar***> arrays;
    ~Strings() {
      for (gchar** value : values) g_free(*value);
      for (gchar*** array : arrays) g_strfreev(*array);
    }
  } strings{{&listen_text, &state_dir_text, &max_peers_text, &max_registrations_text,
             &max_new_names_text, &max_sessions_text, &tls_listen_text, &cert_text,
             &key_text, &secret_text, &realm_text, &per_user_text, &per_address_text,
             &max_allocations_text, &name_expiry_text,
             &bandwidth_text, &threads_text, &relay_ports_text, &config_text, &alternate_address_text,
             &alternate_port_text, &metrics_text, &publish_domain_text, &publish_http_text,
             &publish_ports_text, &publish_max_visitors_text, &publish_max_visitors_total_text,
             &publish_max_new_text, &publish_max_new_total_text, &publish_bandwidth_text,
             &publish_bandwidth_total_text},
            {&turn_server_texts, &allow_peer_texts, &allow_publisher_texts,
             &publish_address_texts, &relay_address_texts}};

  GError* raw_error = nullptr;
  if (!g_option_context_parse(context.get(), &argc, &argv, &raw_error)) {
    error = GErrorPtr(raw_error)->message;
    return false;
  }
  if (argc > 1) {
    error = std::string("unexpected argument '") + argv[1] + "'";
    return false;
  }

  options.verbose = verbose;
  options.version = version;
  options.no_turn = no_turn;
  if (listen_text) {
    auto parsed = parse_host_port(listen_text, defaults.listen.port, /*allow_zero_port=*/true);
    if (auto* message = std::get_if<std::string>(&parsed)) {
      error = "--listen: " + *message;
      return false;
    }
    options.listen = std::get<HostPort>(parsed);
    if (!is_ip_literal(options.listen.host)) {
      error = "--listen: '" + options.listen.host + "' is not an IP address";
      return false;
    }
  }
  if (state_dir_text) {
    if (!*state_dir_text) {
      error = "--state-dir: empty directory name";
      return false;
    }
    options.state_dir = state_dir_text;
  }
  // The counts: 1 to their limit.
  struct CountOption {
    const char* flag;
    const gchar* text;
    uint64_t max;
    size_t& value;
  };
  for (const CountOption& count : {
           CountOption{"--max-peers-per-address", max_peers_text, kMaxPeersPerAddressLimit,
                       options.max_peers_per_address},
           CountOption{"--max-registrations-per-minute", max_registrations_text, kMaxRateLimit,
                       options.max_registrations_per_minute},
           CountOption{"--max-new-names-per-hour", max_new_names_text, kMaxRateLimit,
                       options.max_new_names_per_hour},
           CountOption{"--max-sessions-per-minute", max_sessions_text, kMaxRateLimit,
                       options.max_sessions_per_minute},
           CountOption{"--max-allocations-per-user", per_user_text, kMaxAllocationsLimit,
                       options.max_allocations_per_user},
           CountOption{"--max-allocations-per-address", per_address_text, kMaxAllocationsLimit,
                       options.max_allocations_per_address},
           CountOption{"--max-allocations", max_allocations_text, kMaxAllocationsLimit,
                       options.max_allocations},
           CountOption{"--threads", threads_text, kMaxThreads, options.threads},
           CountOption{"--publish-max-visitors", publish_max_visitors_text,
                       kMaxAllocationsLimit, options.publish_max_visitors},
           CountOption{"--publish-max-visitors-total", publish_max_visitors_total_text,
                       kMaxAllocationsLimit, options.publish_max_visitors_total},
           CountOption{"--publish-max-new-visitors-per-minute", publish_max_new_text,
                       kMaxRateLimit, options.publish_max_new_visitors_per_minute},
           CountOption{"--publish-max-new-visitors-per-minute-total", publish_max_new_total_text,
                       kMaxRateLimit, options.publish_max_new_visitors_per_minute_total},
       }) {
    if (!count.text) continue;
    uint64_t value = 0;
    if (!parse_number(count.text, 1, count.max, value)) {
      error = std::string(count.flag) + ": '" + count.text + "' is not a number from 1 to " +
              std::to_string(count.max);
      return false;
    }
    count.value = value;
  }
  if (tls_listen_text &&
      !parse_ip_port_flag("tls-listen", tls_listen_text, 443, options.tls_listen, error))
    return false;
  if (cert_text) options.cert_file = cert_text;
  if (key_text) options.key_file = key_text;
  if (options.cert_file.empty() != options.key_file.empty()) {
    error = "--cert and --key go together";
    return false;
  }
  if (secret_text) {
    if (!*secret_text) {
      error = "--auth-secret-file: empty file name";
      return false;
    }
    options.auth_secret_file = secret_text;
  }
  if (realm_text) {
    const std::string_view realm = realm_text;
    // RFC 8489 section 14.9: fewer than 128 characters.
    if (realm.empty() || realm.size() > 127) {
      error = "--realm: 1 to 127 characters";
      return false;
    }
    options.realm = realm;
  }
  for (gchar** text = turn_server_texts; text && *text; ++text) {
    auto parsed = parse_host_port(*text, 3478, /*allow_zero_port=*/false);
    if (auto* message = std::get_if<std::string>(&parsed)) {
      error = "--turn-server: " + *message;
      return false;
    }
    if (!is_valid_host(std::get<HostPort>(parsed).host)) {
      error = std::string("--turn-server: '") + *text + "' is not HOST:PORT";
      return false;
    }
    options.turn_servers.push_back(std::get<HostPort>(parsed));
  }
  for (gchar** text = allow_peer_texts; text && *text; ++text) {
    auto cidr = turn::parse_cidr(*text);
    if (!cidr) {
      error = std::string("--allow-peer: '") + *text + "' is not an address or CIDR range";
      return false;
    }
    options.allow_peers.push_back(*cidr);
  }
  for (gchar** text = relay_address_texts; text && *text; ++text) {
    GObjectPtr<GInetAddress> address(g_inet_address_new_from_string(*text));
    if (!address || g_inet_address_get_is_any(address.get())) {
      error = std::string("--relay-address: '") + *text + "' is not an IP address of this host";
      return false;
    }
    const bool v6 = g_inet_address_get_family(address.get()) == G_SOCKET_FAMILY_IPV6;
    std::string& slot = v6 ? options.relay_ipv6 : options.relay_ipv4;
    if (!slot.empty()) {
      error = std::string("--relay-address: two ") + (v6 ? "IPv6" : "IPv4") + " addresses (" +
              slot + ", " + *text + "); give one of each family at most";
      return false;
    }
    slot = *text;
  }
  if (name_expiry_text) {
    uint64_t value = 0;
    if (!parse_number(name_expiry_text, 0, 36500, value)) {
      error = "--name-expiry: '" + std::string(name_expiry_text) +
              "' is not a number of days from 0 to 36500";
      return false;
    }
    options.name_expiry_days = value;
  }
  struct RateOption {
    const char* flag;
    const gchar* text;
    uint64_t& value;
  };
  for (const RateOption& rate : {
           RateOption{"--bandwidth-cap", bandwidth_text, options.bandwidth_cap},
           RateOption{"--publish-bandwidth-cap", publish_bandwidth_text,
                      options.publish_bandwidth_cap},
           RateOption{"--publish-bandwidth-cap-total", publish_bandwidth_total_text,
                      options.publish_bandwidth_cap_total},
       }) {
    if (!rate.text) continue;
    uint64_t value = 0;
    if (!parse_number(rate.text, 0, uint64_t{1} << 40, value)) {
      error = std::string(rate.flag) + ": '" + rate.text + "' is not a number of bytes per second";
      return false;
    }
    rate.value = value;
  }
  if (relay_ports_text && !parse_port_range("relay-ports", relay_ports_text,
                                             options.relay_port_min, options.relay_port_max,
                                             error))
    return false;
  if (publish_ports_text && !parse_port_range("publish-ports", publish_ports_text,
                                              options.publish_port_min,
                                              options.publish_port_max, error))
    return false;
  if (alternate_port_text) {
    uint64_t value = 0;
    if (!alternate_address_text) {
      error = "--alternate-port needs --alternate-address";
      return false;
    }
    if (!parse_number(alternate_port_text, 1, 65535, value)) {
      error = "--alternate-port: '" + std::string(alternate_port_text) +
              "' is not a port from 1 to 65535";
      return false;
    }
    options.alternate_port = static_cast<uint16_t>(value);
  }
  if (alternate_address_text) {
    GObjectPtr<GInetAddress> alternate(g_inet_address_new_from_string(alternate_address_text));
    GObjectPtr<GInetAddress> primary(g_inet_address_new_from_string(options.listen.host.c_str()));
    std::string problem;
    if (!alternate)
      problem = "'" + std::string(alternate_address_text) + "' is not an IP address";
    else if (g_inet_address_get_is_any(primary.get()))
      problem = "needs --listen on a real address (responses say which address they come "
                "from), not " + options.listen.host;
    else if (g_inet_address_get_family(alternate.get()) !=
             g_inet_address_get_family(primary.get()))
      problem = "not the same address family as --listen " + options.listen.host;
    else if (g_inet_address_equal(alternate.get(), primary.get()))
      problem = "the same address as --listen";
    if (!problem.empty()) {
      error = "--alternate-address: " + problem;
      return false;
    }
    options.alternate_address = alternate_address_text;
  }
  if (metrics_text &&
      !parse_ip_port_flag("metrics", metrics_text, 9478, options.metrics_listen, error))
    return false;
  if (publish_domain_text) {
    GCharPtr lower(g_ascii_strdown(publish_domain_text, -1));
    std::string domain = lower.get();
    if (!domain.empty() && domain.back() == '.') domain.pop_back();
    if (!is_valid_domain(domain)) {
      error = std::string("--publish-domain: '") + publish_domain_text +
              "' is not a domain name (labels of a-z, 0-9 and '-')";
      return false;
    }
    options.publish_domain = domain;
  }
  if (publish_http_text &&
      !parse_ip_port_flag("publish-http", publish_http_text, 80, options.publish_http, error))
    return false;
  for (gchar** text = allow_publisher_texts; text && *text; ++text) {
    if (std::string_view(*text) != "any" && !is_valid_key_id(*text)) {
      error = std::string("--allow-publisher: '") + *text +
              "' is not a key id (32 characters as `peer id` prints them) or `any`";
      return false;
    }
    options.allow_publishers.emplace_back(*text);
  }
  for (gchar** text = publish_address_texts; text && *text; ++text) {
    const GObjectPtr<GInetAddress> parsed(g_inet_address_new_from_string(*text));
    if (!parsed || g_inet_address_get_is_any(parsed.get())) {
      error = std::string("--publish-address: '") + *text +
              "' is not an IP address of this relay (such as 203.0.113.7 or 2001:db8::7)";
      return false;
    }
    options.publish_addresses.emplace_back(*text);
  }
  return true;
}

bool is_valid_domain(std::string_view domain) {
  if (domain.empty() || domain.size() > 253) return false;
  size_t label = 0;
  for (size_t i = 0; i <= domain.size(); ++i) {
    const char c = i < domain.size() ? domain[i] : '.';
    if (c == '.') {
      // RFC 1035 section 2.3.1: 1-63 characters, no hyphen at either end.
      if (label == 0 || label > 63 || domain[i - 1] == '-' || domain[i - label] == '-')
        return false;
      label = 0;
    } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') {
      ++label;
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace natfwd::relay

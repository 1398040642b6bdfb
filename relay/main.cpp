// relay: the public rendezvous, STUN and TURN server of natfwd (see DESIGN.md and
// relay/README.md for the flags).
//
// Exit status: 0 after SIGINT/SIGTERM, 1 when it cannot start (e.g. port in use),
// 2 on a usage error.
#include <glib-unix.h>
#include <glib.h>
#include <glib/gstdio.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <google/protobuf/stubs/common.h>

#include "glib_ptr.h"
#include "identity.h"
#include "log.h"
#include "path_safety.h"
#include "state_dir.h"
#include "front_door/domain_claims.h"
#include "front_door/domain_resolver.h"
#include "front_door/front_door_peer.h"
#include "front_door/http_front_door.h"
#include "front_door/publishers_file.h"
#include "front_door/visitor_limits.h"
#include "front_door/tcp_front_door.h"
#include "front_door/tls_front_door.h"
#include "relay_config_file.h"
#include "relay_options.h"
#include "metrics/relay_stats.h"
#include "net/socket_address.h"
#include "server/metrics_service.h"
#include "server/name_store.h"
#include "server/relay_server.h"
#include "turn/credentials.h"

#ifndef NATFWD_VERSION
#define NATFWD_VERSION "0"
#endif

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

gboolean on_stop_signal(gpointer loop) {
  natfwd::log::info("stopping");
  g_main_loop_quit(static_cast<GMainLoop*>(loop));
  return G_SOURCE_CONTINUE;
}

// Reads a secret file: its text without surrounding white space.
std::string read_secret(const std::string& path) {
  if (std::string unsafe = natfwd::unsafe_path_reason(path, natfwd::PathKind::kSecretFile,
                                                      "TURN secret");
      !unsafe.empty())
    throw std::runtime_error(unsafe);
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path + ": " + g_strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  std::string secret = text.str();
  const auto first = secret.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) throw std::runtime_error(path + " is empty");
  secret = secret.substr(first, secret.find_last_not_of(" \t\r\n") - first + 1);
  return secret;
}

// The TURN REST secret: --auth-secret-file, else <state-dir>/turn-secret, made on
// first run (32 random bytes, base64, mode 0600).
std::string load_or_create_secret(const natfwd::relay::RelayOptions& options) {
  if (!options.auth_secret_file.empty()) return read_secret(options.auth_secret_file);
  const std::string path = options.state_dir + "/turn-secret";
  if (access(path.c_str(), F_OK) == 0) return read_secret(path);
  const std::string secret = natfwd::turn::generate_secret();
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) throw std::runtime_error("cannot create " + path + ": " + g_strerror(errno));
  const std::string line = secret + "\n";
  const ssize_t n = write(fd, line.data(), line.size());
  close(fd);
  if (n != static_cast<ssize_t>(line.size())) throw std::runtime_error("cannot write " + path);
  natfwd::log::info("made a TURN secret in %s", path.c_str());
  return secret;
}

// The state dir holds the name bindings, the TURN secret and the TLS key.
bool open_state_dir(const natfwd::relay::RelayOptions& options) {
  try {
    natfwd::open_state_dir(options.state_dir);
  } catch (const std::exception& e) {
    natfwd::log::error("%s", e.what());
    return false;
  }
  return true;
}

std::unique_ptr<natfwd::relay::NameStore> open_name_store(
    const natfwd::relay::RelayOptions& options) {
  natfwd::relay::NameStore::Options store;
  store.expiry = std::chrono::hours(24 * options.name_expiry_days);
  return std::make_unique<natfwd::relay::NameStore>(options.state_dir + "/names.db",
                                                   options.state_dir + "/names", store);
}

// Custom domain claims (Publish.custom_domain), kept like names but never expiring: a
// claim is the DNS owner's word, held until the operator releases it.
std::unique_ptr<natfwd::relay::NameStore> open_domain_store(
    const natfwd::relay::RelayOptions& options) {
  natfwd::relay::NameStore::Options store;
  store.expiry = std::chrono::seconds(0);
  return std::make_unique<natfwd::relay::NameStore>(options.state_dir + "/domains.db",
                                                   options.state_dir + "/domains", store);
}

// `relay names [list]` and `relay names release NAME`: the bindings in the state dir,
// read and changed beside a running relay (NameStore reads the database on every
// lookup, so a released name is free at once). `domains` does the same for the
// custom domains' claims.
int names_command(const natfwd::relay::RelayOptions& options,
                  const std::vector<std::string>& words, bool domains) {
  using namespace natfwd;
  if (!open_state_dir(options)) return kExitFailure;
  try {
    auto store = domains ? open_domain_store(options) : open_name_store(options);
    if (words.size() == 2 && words[0] == "release") {
      if (!store->release(words[1])) {
        log::error("no %s '%s' is %s at this relay", domains ? "custom domain" : "name",
                   words[1].c_str(), domains ? "claimed" : "bound");
        return kExitFailure;
      }
      printf("released '%s': the next key to %s it gets it\n", words[1].c_str(),
             domains ? "claim" : "register");
      return 0;
    }
    for (const auto& binding : store->list()) {
      PublicKey key{};
      public_key_from_bytes(std::span(reinterpret_cast<const uint8_t*>(binding.public_key.data()),
                                      binding.public_key.size()),
                            key);
      char last_seen[32] = "?";
      const time_t seen = static_cast<time_t>(binding.last_seen_unix);
      strftime(last_seen, sizeof last_seen, "%Y-%m-%d", gmtime(&seen));
      const std::string heir =
          binding.handover_to.empty() ? "" : " handed-over-to " + binding.handover_to;
      printf("%s %s last-used %s%s%s\n", binding.name.c_str(), key_id(key).c_str(), last_seen,
             heir.c_str(), binding.expired ? " (expired: free for any key)" : "");
    }
  } catch (const std::exception& e) {
    log::error("%s", e.what());
    return kExitFailure;
  }
  return 0;
}

// `relay id`: the fingerprint peers pin (--relay-key), from the certificate the relay
// would serve; a self-signed one is made first when there is none yet, as at start.
int print_id(const natfwd::relay::RelayOptions& options) {
  if (options.cert_file.empty() && !open_state_dir(options)) return kExitFailure;
  try {
    const auto identity = natfwd::relay::load_or_create_tls_identity(
        options.cert_file, options.key_file, options.state_dir);
    printf("%s\n", natfwd::spki_fingerprint(identity.spki_sha256).c_str());
  } catch (const std::exception& e) {
    natfwd::log::error("%s", e.what());
    return kExitFailure;
  }
  return 0;
}

int run(const natfwd::relay::RelayOptions& options) {
  using namespace natfwd;
  if (!open_state_dir(options)) return kExitFailure;

  relay::RelayServerConfig config;
  config.listen = options.listen;
  config.rendezvous.max_connections_per_address = options.max_peers_per_address;
  config.rendezvous.max_registrations_per_minute = options.max_registrations_per_minute;
  config.rendezvous.max_new_names_per_hour = options.max_new_names_per_hour;
  config.rendezvous.max_sessions_per_minute = options.max_sessions_per_minute;
  config.software = "natfwd-relay " NATFWD_VERSION;
  config.turn_enabled = !options.no_turn;
  config.rendezvous.turn.external = options.turn_servers;
  turn::TurnConfig& turn = config.turn.turn;
  turn.realm = options.realm;
  turn.max_allocations_per_user = options.max_allocations_per_user;
  turn.max_allocations_per_address = options.max_allocations_per_address;
  config.turn.max_stream_clients_per_address = options.max_allocations_per_address;
  turn.max_allocations = options.max_allocations;
  turn.bandwidth_cap = options.bandwidth_cap;
  for (const auto& range : options.allow_peers) turn.peers.allow(range);
  const std::string host_ipv6 = relay::add_host_addresses(turn.peers);
  // The relayed addresses (--relay-address): IPv4 falls back in the TURN service,
  // which knows the client; IPv6 to an IPv6 --listen address, then the host's.
  config.turn.ipv4_address = options.relay_ipv4;
  const bool listen_v6 = options.listen.host.find(':') != std::string::npos;
  if (!options.relay_ipv6.empty())
    config.turn.ipv6_address = options.relay_ipv6;
  else if (listen_v6 && options.listen.host != "::")
    config.turn.ipv6_address = options.listen.host;
  else
    config.turn.ipv6_address = host_ipv6;
  for (const std::string& ip : {options.relay_ipv4, options.relay_ipv6}) {
    GObjectPtr<GSocketAddress> own(net::make_socket_address(ip, 0));
    if (own) turn.peers.add_own_address(net::to_transport_address(own.get()));
  }
  turn.ipv6_available = !config.turn.ipv6_address.empty();
  config.turn.min_port = options.relay_port_min;
  config.turn.max_port = options.relay_port_max;
  config.tls_listen = options.tls_listen;
  config.alternate_ip = options.alternate_address;
  config.alternate_port = options.alternate_port;
  config.threads = options.threads != 0 ? options.threads
                                        : static_cast<size_t>(g_get_num_processors());

  relay::RelayStats stats;
  if (options.metrics_listen) config.stats = &stats;
  const gint64 started = g_get_monotonic_time();

  GMainLoop* loop = g_main_loop_new(nullptr, FALSE);
  int status = 0;
  try {
    // Names first: a malformed old names file stops the start before anything is made.
    auto names = open_name_store(options);
    if (config.turn_enabled || !options.turn_servers.empty()) {
      turn.secret = load_or_create_secret(options);
      config.rendezvous.turn.secret = turn.secret;
    }
    const size_t bound = names->size();
    log::info("%zu name binding%s in %s/names.db", bound, bound == 1 ? "" : "s",
              options.state_dir.c_str());
    config.names = std::move(names);
    // The main TCP port takes TLS too, so the certificate is needed in any case.
    config.tls = relay::load_or_create_tls_identity(options.cert_file, options.key_file,
                                                    options.state_dir);
    std::optional<Identity> front_door_key;
    // Custom domains must resolve to one of these (none: custom domains are off).
    std::vector<std::string> domain_addresses = options.publish_addresses;
    if (domain_addresses.empty() && options.listen.host != "0.0.0.0" &&
        options.listen.host != "::")
      domain_addresses.push_back(options.listen.host);
    if (!options.publish_domain.empty()) {
      const auto publishers = relay::front_door::load_publishers(
          options.state_dir + "/publishers", options.allow_publishers);
      front_door_key = relay::front_door::FrontDoorPeer::load_identity(options.state_dir);
      const PublicKey& key = front_door_key->public_key();
      relay::PublishConfig& publish = config.rendezvous.publish;
      publish.domain = options.publish_domain;
      publish.relay_key = std::string(key.begin(), key.end());
      publish.any_publisher = publishers.any;
      publish.publishers = publishers.key_ids;
      publish.tcp_port_min = options.publish_port_min;
      publish.tcp_port_max = options.publish_port_max;
      if (!domain_addresses.empty()) publish.domain_claims = open_domain_store(options);
    }
    const bool config_has_domains = config.rendezvous.publish.domain_claims != nullptr;
    relay::RelayServer server(std::move(config));
    std::string services = "stun/udp, rendezvous/tcp";
    if (!options.no_turn) services += ", turn/udp+tcp";
    if (server.tls_address()) services += ", tls " + server.tls_address()->to_string();
    if (server.discovery_address())
      services += ", rfc5780 " + server.discovery_address()->to_string();
    // Publishing: the relay connects to home peers as a peer of its own rendezvous.
    // The limits go last: the visitor connections of the doors hold places in them.
    std::shared_ptr<relay::front_door::VisitorLimits> visitor_limits;
    std::unique_ptr<relay::front_door::FrontDoorPeer> front_door;
    std::unique_ptr<relay::front_door::HttpFrontDoor> http_front_door;
    std::unique_ptr<relay::front_door::TlsFrontDoor> tls_front_door;
    std::unique_ptr<relay::front_door::TcpFrontDoor> tcp_front_door;
    std::unique_ptr<relay::front_door::DomainResolver> domain_resolver;
    std::string publish_services;
    if (front_door_key) {
      visitor_limits = std::make_shared<relay::front_door::VisitorLimits>(
          relay::front_door::VisitorLimits::Limits{
              {options.publish_max_visitors, options.publish_max_new_visitors_per_minute,
               options.publish_bandwidth_cap},
              {options.publish_max_visitors_total,
               options.publish_max_new_visitors_per_minute_total,
               options.publish_bandwidth_cap_total}},
          relay::front_door::VisitorLimits::Clock::now(), &stats);
      front_door = std::make_unique<relay::front_door::FrontDoorPeer>(
          std::move(*front_door_key),
          relay::front_door::front_door_rendezvous(server.local_address()),
          relay::front_door::front_door_ice_addresses(server.local_address().host),
          relay::front_door::FrontDoorPeer::state_dir_of(options.state_dir));
      http_front_door = std::make_unique<relay::front_door::HttpFrontDoor>(
          *options.publish_http, options.publish_domain,
          [&server](const std::string& name) {
            if (auto http = server.rendezvous().published(name, wire::Publish::HTTP)) return http;
            // An https publish answers plain HTTP with a redirect (HttpFrontDoor::route).
            auto tls = server.rendezvous().published(name, wire::Publish::TLS);
            return tls && tls->tls_at_home ? tls : std::nullopt;
          },
          *front_door, visitor_limits);
      publish_services = ", publish http " + http_front_door->local_address().to_string();
      tls_front_door = std::make_unique<relay::front_door::TlsFrontDoor>(
          options.publish_domain,
          [&server](const std::string& name) {
            return server.rendezvous().published(name, wire::Publish::TLS);
          },
          *front_door, visitor_limits);
      if (server.set_sni_route([door = tls_front_door.get()](GSocket* socket,
                                                             const std::string& server_name) {
            return door->route(socket, server_name);
          }))
        publish_services += " https *." + options.publish_domain;
      if (config_has_domains) {
        // An https publish's custom domain answers plain HTTP with the redirect, as
        // NAME.DOMAIN does; a tls one is not plain HTTP at all.
        http_front_door->set_custom_lookup([&server](const std::string& host) {
          auto custom = server.rendezvous().published_custom(host);
          return custom && custom->second.tls_at_home ? custom : std::nullopt;
        });
        tls_front_door->set_custom_lookup([&server](const std::string& host) {
          return server.rendezvous().published_custom(host);
        });
        domain_resolver = std::make_unique<relay::front_door::DomainResolver>(
            relay::front_door::DomainClaimCheck(domain_addresses),
            [&server](relay::ConnectionId id, uint64_t check,
                      const std::vector<relay::DomainVerdict>& verdicts) {
              server.domains_checked(id, check, verdicts);
            });
        server.set_domain_checker(
            [resolver = domain_resolver.get()](const relay::CheckDomainsAction& action) {
              resolver->check(action);
            });
        std::string addresses;
        for (const std::string& address : domain_addresses)
          addresses += (addresses.empty() ? "" : ", ") + address;
        log::info("custom domains: taken when they resolve to %s and TXT _natfwd.NAME holds "
                  "the peer's key id", addresses.c_str());
      } else {
        log::info("custom domains: off (no --publish-address)");
      }
      if (options.publish_port_max != 0) {
        tcp_front_door = std::make_unique<relay::front_door::TcpFrontDoor>(
            server.local_address().host, options.publish_port_min, options.publish_port_max,
            [&server](uint16_t port) { return server.rendezvous().published_tcp(port); },
            *front_door, visitor_limits);
        publish_services += ", tcp " + std::to_string(options.publish_port_min) + "-" +
                            std::to_string(options.publish_port_max);
      }
      front_door->start();
    }
    std::unique_ptr<relay::MetricsService> metrics;
    if (options.metrics_listen) {
      metrics = std::make_unique<relay::MetricsService>(*options.metrics_listen, [&] {
        relay::RelayGauges gauges = server.gauges();
        if (visitor_limits) gauges.publish_visitors = visitor_limits->open_by_publisher();
        gauges.uptime_seconds = static_cast<double>(g_get_monotonic_time() - started) / 1e6;
        gauges.version = NATFWD_VERSION;
        return relay::render_prometheus(stats, gauges);
      });
      services += ", metrics http://" + metrics->local_address().to_string() + "/metrics";
    }
    services += publish_services;
    // Handlers before the ready line: a SIGTERM right after it must still exit 0.
    const SourceId sigint(g_unix_signal_add(SIGINT, on_stop_signal, loop));
    const SourceId sigterm(g_unix_signal_add(SIGTERM, on_stop_signal, loop));
    log::ready("relay listening on %s (%s)", server.local_address().to_string().c_str(),
               services.c_str());
    g_main_loop_run(loop);
    if (front_door) front_door->shutdown();
    server.set_domain_checker(nullptr);  // the resolver goes first
  } catch (const std::exception& e) {
    // log::error, so that under journald the line carries the error priority.
    log::error("%s", e.what());
    status = kExitFailure;
  }
  g_main_loop_unref(loop);
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace natfwd;
  relay::RelayOptions options;
  std::string error;
  // relay.conf's flags go in front of the command line's (which win).
  std::vector<std::string> args;
  // Subcommands take the relay's own options: `relay id [OPTIONS]`, `relay names
  // [list | release NAME] [OPTIONS]`, `relay domains [list | release NAME] [OPTIONS]`.
  const std::string subcommand = argc >= 2 ? argv[1] : "";
  const bool print_id_only = subcommand == "id";
  const bool domains = subcommand == "domains";
  const bool names = subcommand == "names" || domains;
  std::vector<char*> command_line(argv, argv + argc);
  std::vector<std::string> names_words;
  if (print_id_only) command_line.erase(command_line.begin() + 1);
  if (names) {
    command_line.erase(command_line.begin() + 1);
    if (command_line.size() > 1 && std::string(command_line[1]) == "list") {
      command_line.erase(command_line.begin() + 1);
    } else if (command_line.size() > 1 && std::string(command_line[1]) == "release") {
      if (command_line.size() < 3 || command_line[2][0] == '-') {
        fprintf(stderr, "relay: %s release: which name? (relay %s release NAME)\n",
                subcommand.c_str(), subcommand.c_str());
        return kExitUsage;
      }
      names_words = {"release", command_line[2]};
      command_line.erase(command_line.begin() + 1, command_line.begin() + 3);
    }
  }
  if (!relay::relay_arguments_with_config(static_cast<int>(command_line.size()),
                                          command_line.data(), args, error)) {
    fprintf(stderr, "relay: %s\n", error.c_str());
    return kExitUsage;
  }
  std::vector<char*> arg_pointers;
  for (std::string& arg : args) arg_pointers.push_back(arg.data());
  arg_pointers.push_back(nullptr);
  if (!relay::parse_relay_options(static_cast<int>(args.size()), arg_pointers.data(), options,
                                  error)) {
    fprintf(stderr, "relay: %s\n", error.c_str());
    return kExitUsage;
  }
  if (options.version) {
    printf("natfwd relay %s\n", NATFWD_VERSION);
    return 0;
  }
  // Flags that only work together (each is checked alone while parsing, so that
  // relay.conf names the line of a bad value).
  if (options.publish_domain.empty() != !options.publish_http) {
    fprintf(stderr, "relay: --publish-domain and --publish-http go together: the HTTP front "
                    "door routes NAME.DOMAIN\n");
    return kExitUsage;
  }
  if (options.publish_port_max != 0 && options.publish_domain.empty()) {
    fprintf(stderr, "relay: --publish-ports needs --publish-domain (publishing is off)\n");
    return kExitUsage;
  }
  log::init("relay", options.verbose ? log::Level::kDebug : log::Level::kInfo);
  const int status = print_id_only ? print_id(options)
                     : names      ? names_command(options, names_words, domains)
                                  : run(options);
  google::protobuf::ShutdownProtobufLibrary();
  return status;
}

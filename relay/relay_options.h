// The relay's command line, as a typed struct. Defaults live in one place (the
// member initialisers below), and --help shows each of them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "address.h"
#include "turn/peer_policy.h"

namespace natfwd::relay {

struct RelayOptions {
  // --listen: address and port for STUN/TURN on udp and rendezvous/TURN on tcp; port
  // 0 picks one. The IPv6 wildcard [::] is dual-stack: one socket per protocol takes
  // IPv4 too (IPv4-mapped, which net/socket_address.h turns back into IPv4).
  HostPort listen{"0.0.0.0", 3478};
  // --state-dir: default_state_dir("relay"), created 0700. Holds the name bindings
  // (names.db), and the TURN secret and self-signed TLS certificate when generated.
  std::string state_dir;
  // -v/--verbose: debug logging.
  bool verbose = false;
  // --version: print "natfwd relay VERSION" and exit.
  bool version = false;
  // --max-peers-per-address: concurrent TCP connections from one source IP.
  size_t max_peers_per_address = 64;
  // --max-registrations-per-minute: Register messages per source IP per minute.
  size_t max_registrations_per_minute = 30;
  // --max-new-names-per-hour: names newly bound per source IP (IPv6: /64) per hour.
  size_t max_new_names_per_hour = 20;
  // --max-sessions-per-minute: OpenSession messages per source IP per minute.
  size_t max_sessions_per_minute = 120;
  // --name-expiry: days after which a name nobody used is free again; 0: never.
  uint64_t name_expiry_days = 365;

  // --tls-listen: TLS (rendezvous or TURN inside) on this address too; none by
  // default (TLS is always served on the main TCP port).
  std::optional<HostPort> tls_listen;
  // --cert/--key: PEM files for TLS; default: a self-signed pair in the state dir.
  std::string cert_file;
  std::string key_file;
  // --auth-secret-file: the TURN REST API secret; default: <state-dir>/turn-secret,
  // 32 random bytes in base64, made on first run (mode 0600).
  std::string auth_secret_file;
  // --realm: the TURN realm.
  std::string realm = "natfwd";
  // --turn-server (repeatable): external TURN servers announced to peers.
  std::vector<HostPort> turn_servers;
  // --no-turn: the relay's own TURN is off.
  bool no_turn = false;
  // --allow-peer (repeatable): ranges relayed to despite the default deny list.
  std::vector<turn::Cidr> allow_peers;
  // --max-allocations-per-user: TURN allocations per REST user id.
  size_t max_allocations_per_user = 10;
  // --max-allocations-per-address: TURN allocations from one source IP, whatever
  // the user; also caps TURN-over-TCP/TLS connections from one IP.
  size_t max_allocations_per_address = 128;
  // --max-allocations: TURN allocations in total.
  size_t max_allocations = 20000;
  // --threads: threads of the TURN-over-UDP data plane (server/turn_shards.h);
  // 0 = one per CPU (g_get_num_processors()), 1 = UDP served on the main thread.
  size_t threads = 0;
  // --bandwidth-cap: bytes per second per allocation; 0 = off.
  uint64_t bandwidth_cap = 0;
  // --relay-address (repeatable, one per family): relayed sockets of that family bind
  // to it and TURN reports it; "" for none. Default (server/turn_service.h): IPv4 the
  // --listen IP or the kernel's source address, IPv6 an IPv6 --listen IP or the host's
  // first global IPv6 address.
  std::string relay_ipv4;
  std::string relay_ipv6;
  // --relay-ports MIN-MAX: ports of relayed sockets; 0-0 = ephemeral from the kernel.
  uint16_t relay_port_min = 0;
  uint16_t relay_port_max = 0;
  // --alternate-address: a second IP of this host for RFC 5780 NAT behaviour
  // discovery (OTHER-ADDRESS, CHANGE-REQUEST); needs --listen on a real address.
  std::string alternate_address;
  // --alternate-port: the second port for discovery; 0 = listen port + 1.
  uint16_t alternate_port = 0;
  // --metrics: serve Prometheus text on http://ADDR:PORT/metrics; none by default.
  std::optional<HostPort> metrics_listen;

  // --publish-domain: publishing is on, visitors reach peer NAME as NAME.DOMAIN
  // (lowercase); empty by default: off.
  std::string publish_domain;
  // --publish-http: the front door for plain HTTP, routed by Host; none by default.
  std::optional<HostPort> publish_http;
  // --allow-publisher (repeatable): key ids that may publish, or `any`; beside the
  // state dir's publishers file. None by default: only the file's.
  std::vector<std::string> allow_publishers;
  // --publish-address (repeatable): the relay's public IP addresses, those a custom
  // domain (peer --publish https:www.example.org=PORT) must resolve to. None by
  // default: the --listen address when it is not a wildcard, else custom domains off.
  std::vector<std::string> publish_addresses;
  // --publish-ports MIN-MAX: the relay's ports for raw TCP publishing; 0-0 = none.
  uint16_t publish_port_min = 0;
  uint16_t publish_port_max = 0;
  // Visitor limits of the front door (front_door/visitor_limits.h). Per publisher key:
  // a home user's friends open a few connections each (a browser about six per site),
  // so these stop only a flood. In total: what one small host carries.
  // --publish-max-visitors: open visitor connections per publisher.
  size_t publish_max_visitors = 256;
  // --publish-max-visitors-total: open visitor connections in all.
  size_t publish_max_visitors_total = 4096;
  // --publish-max-new-visitors-per-minute: new visitor connections per publisher.
  size_t publish_max_new_visitors_per_minute = 600;
  // --publish-max-new-visitors-per-minute-total: new visitor connections in all.
  size_t publish_max_new_visitors_per_minute_total = 6000;
  // --publish-bandwidth-cap: bytes per second each way per publisher; 0 = none. Above
  // any home uplink (800 Mbit/s), so only a publisher on a fat line meets it.
  uint64_t publish_bandwidth_cap = 100'000'000;
  // --publish-bandwidth-cap-total: bytes per second each way in all; 0 = none.
  uint64_t publish_bandwidth_cap_total = 0;
};

// Parses argv. --help prints usage and exits 0. On a usage error returns the one-line
// message (without the "relay: " prefix) in `error` and false.
bool parse_relay_options(int argc, char** argv, RelayOptions& options, std::string& error);

// A DNS name as --publish-domain takes it: labels of a-z, 0-9 and '-', dot-separated,
// at most 253 characters (RFC 1035 section 2.3.4).
bool is_valid_domain(std::string_view domain);

}  // namespace natfwd::relay

// The peer's command line as a typed PeerOptions: one serving peer as ssh reads one
// destination, several with each NAME ending the -L/-D options before it.
#include <catch2/catch.hpp>

#include "config/peer_options.h"
#include "config/relay_list.h"

using namespace natfwd;

namespace {

const char* const kKeyId = "abcdefghijklmnopqrstuvwxyz234567";

PeerCommandLine parse(std::vector<std::string> words) {
  words.insert(words.begin(), {"peer", "--relay", "127.0.0.1:3478", "--insecure-relay",
                               "--state-dir", "/nonexistent/state"});
  return parse_peer_command_line(words);
}

PeerOptions options_of(std::vector<std::string> words) {
  PeerCommandLine parsed = parse(std::move(words));
  INFO(parsed.error);
  REQUIRE(parsed.outcome == PeerCommandLine::Outcome::kRun);
  return parsed.options;
}

std::string error_of(std::vector<std::string> words) {
  PeerCommandLine parsed = parse(std::move(words));
  REQUIRE(parsed.outcome == PeerCommandLine::Outcome::kUsageError);
  return parsed.error;
}

std::vector<std::string> targets_of(const RemotePeerOptions& remote) {
  std::vector<std::string> out;
  for (const auto& forward : remote.forwards) out.push_back(forward.target.to_string());
  return out;
}

}  // namespace

TEST_CASE("one NAME takes every -L and -D, wherever it stands") {
  for (const auto& words : std::vector<std::vector<std::string>>{
           {"-L", "2222:buffalo:22", "-L", "8080:nas:80", "-D", "1080", "home"},
           {"home", "-L", "2222:buffalo:22", "-L", "8080:nas:80", "-D", "1080"},
           {"-L", "2222:buffalo:22", "home", "-L", "8080:nas:80", "-D", "1080"}}) {
    PeerOptions options = options_of(words);
    REQUIRE(options.remotes.size() == 1);
    CHECK(options.remotes[0].name == "home");
    CHECK_FALSE(options.remotes[0].key_id);
    CHECK(targets_of(options.remotes[0]) == std::vector<std::string>{"buffalo:22", "nas:80"});
    REQUIRE(options.remotes[0].socks.size() == 1);
    CHECK(options.remotes[0].socks[0].port == 1080);
  }
}

TEST_CASE("several NAMEs: each takes the -L/-D options before it") {
  PeerOptions options = options_of({"-L", "2222:buffalo:22", "-D", "1080", "home", "-L",
                                    "5433:db:5432", "--local=5434:db2:5432",
                                    std::string("office@") + kKeyId});
  REQUIRE(options.remotes.size() == 2);
  CHECK(options.remotes[0].name == "home");
  CHECK(targets_of(options.remotes[0]) == std::vector<std::string>{"buffalo:22"});
  CHECK(options.remotes[0].socks.size() == 1);
  CHECK(options.remotes[1].name == "office");
  CHECK(options.remotes[1].key_id == std::string(kKeyId));
  CHECK(targets_of(options.remotes[1]) == std::vector<std::string>{"db:5432", "db2:5432"});
  CHECK(options.remotes[1].socks.empty());
  CHECK(options.first_remote() == &options.remotes[0]);
}

TEST_CASE("the same NAME twice collects both groups") {
  PeerOptions options = options_of({"-L", "1:a:22", "home", "-L", "2:b:22", "office", "-L",
                                    "3:c:22", "home"});
  REQUIRE(options.remotes.size() == 2);
  CHECK(targets_of(options.remotes[0]) == std::vector<std::string>{"a:22", "c:22"});
  CHECK(targets_of(options.remotes[1]) == std::vector<std::string>{"b:22"});
}

TEST_CASE("several NAMEs: options left without a NAME, or a NAME without options, are errors") {
  CHECK(error_of({"-L", "1:a:22", "home", "-L", "2:b:22", "office", "-L", "3:c:22"}) ==
        "-L 3:c:22 has no peer NAME after it: with several peers, each NAME follows its own "
        "-L/-D options");
  CHECK(error_of({"-L", "1:a:22", "home", "office"}).rfind("'office' has no -L or -D before it", 0) == 0);
  CHECK(error_of({"-L", "1:a:22", "home@" + std::string(kKeyId), "-L", "2:b:22",
                  "home@bbcdefghijklmnopqrstuvwxyz234567"}) ==
        "'home' is given twice with different key ids");
}

TEST_CASE("the errors of one peer are as before") {
  CHECK(error_of({"-L", "2222:buffalo:22"}) ==
        "-L needs the name of the serving peer after the specs, e.g. peer -L 2222:buffalo:22 home");
  CHECK(error_of({"-D", "1080"}) == "-D needs the name of the serving peer, e.g. peer -D 1080 home");
  CHECK(error_of({"home"}) ==
        "a peer name was given but no -L [BIND:]PORT:HOST:HOSTPORT or -D [BIND:]PORT to forward");
  CHECK(error_of({"-L", "2222:buffalo:22", "Home"}) ==
        "'Home' is not a valid peer name (lowercase letters, digits, '.', '_', '-')");
  CHECK(error_of({}) == "nothing to do: give --name NAME --serve [PORT:]HOST:HOSTPORT, or -L "
                        "[BIND:]PORT:HOST:HOSTPORT NAME");
  CHECK(error_of({"--serve", "buffalo:22"}) ==
        "--serve needs --name NAME, the name connecting peers will use");
  CHECK(error_of({"--turn-transport", "udp,sctp", "-L", "1:a:22", "home"}) ==
        "--turn-transport: 'sctp' is not udp, tcp or tls");
}

TEST_CASE("serving options, relays and TURN transports are typed") {
  PeerOptions options = options_of({"--name", "home", "--serve", "2222:buffalo:22", "--allow",
                                    kKeyId, "--turn-transport", "tcp, tls", "--force-relay",
                                    "--ice-address", "192.0.2.1", "-v"});
  CHECK(options.name == std::string("home"));
  REQUIRE(options.serves.size() == 1);
  CHECK(options.serves[0].target.to_string() == "buffalo:22");
  CHECK(options.serves[0].suggested_port == 2222);
  CHECK(options.allow == std::vector<std::string>{kKeyId});
  CHECK_FALSE(options.turn_udp);
  CHECK(options.turn_tcp);
  CHECK(options.turn_tls);
  CHECK(options.force_relay);
  CHECK(options.verbose);
  CHECK_FALSE(options.relay_tls);
  CHECK(options.state_dir == "/nonexistent/state");
  REQUIRE(options.relays.size() == 1);
  CHECK(options.relays[0].to_string() == "127.0.0.1:3478");
  CHECK(options.ice_addresses == std::vector<std::string>{"192.0.2.1"});
  CHECK(options.remotes.empty());
  CHECK(options.port_mapping);
}

TEST_CASE("--no-port-mapping turns the gateway mapping off") {
  CHECK_FALSE(options_of({"--no-port-mapping", "-L", "1:a:22", "home"}).port_mapping);
  CHECK(options_of({"-L", "1:a:22", "home"}).port_mapping);
}

TEST_CASE("--no-punch turns hard-NAT punching off") {
  CHECK_FALSE(options_of({"--no-punch", "-L", "1:a:22", "home"}).punch);
  CHECK(options_of({"-L", "1:a:22", "home"}).punch);
}

TEST_CASE("--port-mapping names the gateway protocols asked") {
  PeerOptions all = options_of({"-L", "1:a:22", "home"});
  CHECK((all.map_pcp && all.map_nat_pmp && all.map_upnp));
  PeerOptions some = options_of({"--port-mapping", "upnp, nat-pmp", "-L", "1:a:22", "home"});
  CHECK(some.port_mapping);
  CHECK_FALSE(some.map_pcp);
  CHECK(some.map_nat_pmp);
  CHECK(some.map_upnp);
  CHECK(error_of({"--port-mapping", "pcp,igd", "-L", "1:a:22", "home"}) ==
        "--port-mapping: 'igd' is not pcp, nat-pmp or upnp");
  CHECK(error_of({"--port-mapping", "", "-L", "1:a:22", "home"}) ==
        "--port-mapping: names none of pcp, nat-pmp or upnp");
  CHECK(error_of({"--port-mapping", "pcp", "--no-port-mapping", "-L", "1:a:22", "home"}) ==
        "--port-mapping and --no-port-mapping contradict each other");
}

TEST_CASE("nc and pair name one remote peer") {
  PeerOptions nc = options_of({"nc", "home", "buffalo:22"});
  REQUIRE(nc.remotes.size() == 1);
  CHECK(nc.remotes[0].name == "home");
  REQUIRE(nc.netcat_target);
  CHECK(nc.netcat_target->to_string() == "buffalo:22");
  CHECK(error_of({"nc", "home"}) == "nc: give the peer and the target: peer nc NAME HOST:PORT");
  CHECK(error_of({"-L", "1:a:22", "nc", "home", "a:22"}) ==
        "nc: -L/-D/--serve/--name do not go with nc");

  PeerOptions pair = options_of({"pair", std::string("home@") + kKeyId + ".abcdefghijklmnopqrstuvwxyz"});
  REQUIRE(pair.remotes.size() == 1);
  CHECK(pair.remotes[0].name == "home");
  CHECK(pair.remotes[0].key_id == std::string(kKeyId));
  CHECK(pair.pair_secret == std::string("abcdefghijklmnopqrstuvwxyz"));
}

TEST_CASE("--version and unknown flags") {
  CHECK(parse({"--version"}).outcome == PeerCommandLine::Outcome::kVersion);
  CHECK(error_of({"--no-such-flag"}) == "Unknown option --no-such-flag (see peer --help)");
}

TEST_CASE("a subcommand is found wherever it stands among the flags") {
  using Words = std::vector<std::string>;
  CHECK(subcommand_first({"peer", "--state-dir", "/d", "status"}) ==
        Words{"peer", "status", "--state-dir", "/d"});
  CHECK(subcommand_first({"peer", "--config", "f", "status", "--json"}) ==
        Words{"peer", "status", "--config", "f", "--json"});
  CHECK(subcommand_first({"peer", "--relay", "r:1", "-v", "netcheck", "--timeout", "2"}) ==
        Words{"peer", "netcheck", "--relay", "r:1", "-v", "--timeout", "2"});
  CHECK(subcommand_first({"peer", "--timeout", "2", "netcheck"}) ==
        Words{"peer", "netcheck", "--timeout", "2"});
  CHECK(subcommand_first({"peer", "--relay=r:1", "pair", "CODE"}) ==
        Words{"peer", "pair", "--relay=r:1", "CODE"});
  // A flag's value, a serving peer's name and words after "--" stay where they are.
  CHECK(subcommand_first({"peer", "--name", "status", "--serve", "a:1"}) ==
        Words{"peer", "--name", "status", "--serve", "a:1"});
  CHECK(subcommand_first({"peer", "-L", "1:a:22", "home"}) ==
        Words{"peer", "-L", "1:a:22", "home"});
  CHECK(subcommand_first({"peer", "-L", "1:a:22", "--", "status"}) ==
        Words{"peer", "-L", "1:a:22", "--", "status"});
  CHECK(subcommand_first({"peer", "status"}) == Words{"peer", "status"});
  CHECK(peer_subcommand("authorized") == PeerSubcommand::kAuthorized);
  CHECK(peer_subcommand("home") == PeerSubcommand::kNone);
}

TEST_CASE("--relay takes IPv6 literals in brackets, with and without a port") {
  auto parsed = parse_relay_list({"[2001:db8::1]:3478", "tls://[2001:db8::2]", "[::1]:4000"},
                                 false);
  REQUIRE(std::holds_alternative<std::vector<HostPort>>(parsed));
  const auto& relays = std::get<std::vector<HostPort>>(parsed);
  REQUIRE(relays.size() == 3);
  CHECK(relays[0] == HostPort{"2001:db8::1", 3478});
  CHECK(relays[1] == HostPort{"2001:db8::2", kDefaultRelayPort});
  CHECK(relays[2] == HostPort{"::1", 4000});
  CHECK(relays[0].to_string() == "[2001:db8::1]:3478");
  CHECK(std::holds_alternative<std::string>(parse_relay_list({"[2001:db8::1"}, false)));
}

TEST_CASE("--publish-cert/--publish-key serve the https publish without its own") {
  const PeerOptions o =
      options_of({"--name", "home", "--publish", "https:www.example.org=8001", "--publish",
                  "tcp:22", "--publish-cert", "all.crt", "--publish-key", "all.key"});
  REQUIRE(o.publishes.size() == 2);
  CHECK(o.publishes[0].cert_file == "all.crt");
  CHECK(o.publishes[0].key_file == "all.key");
  CHECK(o.publishes[1].cert_file.empty());
  CHECK(error_of({"--name", "home", "--publish", "https:8000", "--publish-cert", "a.crt"}) ==
        "--publish-cert and --publish-key go together (the certificate chain and its key)");
  CHECK(error_of({"--name", "home", "--publish", "https:9000,cert=own.crt,key=own.key",
                  "--publish-cert", "a.crt", "--publish-key", "a.key"}) ==
        "--publish-cert: no --publish https: without its own cert=/key= to serve it");
  CHECK(error_of({"--name", "home", "--publish", "http:8000", "--publish-cert", "a.crt",
                  "--publish-key", "a.key"}) ==
        "--publish-cert: no --publish https: without its own cert=/key= to serve it");
}

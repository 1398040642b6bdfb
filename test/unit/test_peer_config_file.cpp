// peer.conf: [peer] keys are the long flags; [serve NAME] and [forward NAME] groups
// become --serve and -L ... NAME.
#include <catch2/catch.hpp>

#include "config/peer_config_file.h"

using namespace natfwd;

namespace {

std::variant<config::ConfigFile, std::string> parse(std::string_view text) {
  return config::parse_config_text("peer.conf", text, peer_config_schema());
}

std::string error_of(std::string_view text, PeerConfigUse use = PeerConfigUse::kRun) {
  auto result = parse(text);
  if (auto* e = std::get_if<std::string>(&result)) return *e;
  auto arguments = peer_file_arguments(std::get<config::ConfigFile>(result), "peer.conf", use);
  REQUIRE(std::holds_alternative<std::string>(arguments));
  return std::get<std::string>(arguments);
}

std::vector<std::string> words_of(std::string_view text, std::vector<std::string> command_line,
                                  PeerConfigUse use = PeerConfigUse::kRun) {
  auto result = parse(text);
  if (auto* e = std::get_if<std::string>(&result)) FAIL(*e);
  auto arguments = peer_file_arguments(std::get<config::ConfigFile>(result), "peer.conf", use);
  if (auto* e = std::get_if<std::string>(&arguments)) FAIL(*e);
  command_line.insert(command_line.begin(), "peer");
  const auto scan = config::scan_command_line(command_line, peer_flags());
  return config::file_argument_words(std::get<std::vector<config::FileArgument>>(arguments), scan,
                                     scan.flags.count("local") || !scan.positionals.empty());
}

const char* const kHome =
    "[peer]\n"
    "relay = vps.example:3478\n"
    "name = home\n"
    "force-relay = true\n"
    "insecure-relay = false\n"
    "state-dir = /var/lib/natfwd/peer-home\n"
    "[serve ssh]\n"
    "target = buffalo:22\n"
    "port = 2222\n"
    "[serve web]\n"
    "target = nas:443\n";

const char* const kLaptop =
    "[peer]\n"
    "relay = tls://vps.example\n"
    "[forward ssh]\n"
    "peer = home\n"
    "listen = 2222\n"
    "target = buffalo:22\n"
    "[forward web]\n"
    "peer = home\n"
    "listen = 127.0.0.1:8443\n"
    "target = nas:443\n";

}  // namespace

TEST_CASE("a serving peer's file becomes --name and --serve arguments") {
  CHECK(words_of(kHome, {}) ==
        std::vector<std::string>{"--relay=vps.example:3478", "--name=home", "--force-relay",
                                 "--state-dir=/var/lib/natfwd/peer-home", "--serve=2222:buffalo:22",
                                 "--serve=nas:443"});
  // --serve and --relay (repeatable) on the command line replace the file's lists;
  // other keys stay (and lose to the command line's own, which come after them).
  CHECK(words_of(kHome, {"--serve", "x:1", "--relay", "other:1"}) ==
        std::vector<std::string>{"--name=home", "--force-relay",
                                 "--state-dir=/var/lib/natfwd/peer-home"});
  CHECK(words_of(kHome, {"--serve", "x:1"}) ==
        std::vector<std::string>{"--relay=vps.example:3478", "--name=home", "--force-relay",
                                 "--state-dir=/var/lib/natfwd/peer-home"});
}

TEST_CASE("forwards become -L specs and the peer name; the command line replaces them") {
  CHECK(words_of(kLaptop, {}) == std::vector<std::string>{"--relay=tls://vps.example",
                                                           "--local=2222:buffalo:22",
                                                           "--local=127.0.0.1:8443:nas:443", "home"});
  CHECK(words_of(kLaptop, {"-L", "0:x:1", "nas"}) == std::vector<std::string>{"--relay=tls://vps.example"});
  // A NAME alone takes the file's forwards to another peer.
  CHECK(words_of(kLaptop, {"office"}) == std::vector<std::string>{"--relay=tls://vps.example",
                                                                   "--local=2222:buffalo:22",
                                                                   "--local=127.0.0.1:8443:nas:443"});
}

TEST_CASE("peer id/invite take only the state dir; peer pair only the relay link") {
  CHECK(words_of(kHome, {}, PeerConfigUse::kStateDirOnly) ==
        std::vector<std::string>{"--state-dir=/var/lib/natfwd/peer-home"});
  CHECK(words_of(kHome, {"pair", "CODE"}, PeerConfigUse::kRelayLink) ==
        std::vector<std::string>{"--relay=vps.example:3478", "--force-relay",
                                 "--state-dir=/var/lib/natfwd/peer-home"});
}

TEST_CASE("no-port-mapping in peer.conf becomes --no-port-mapping") {
  CHECK(words_of("[peer]\nno-port-mapping = true\n", {"-L", "1:a:22", "home"}) ==
        std::vector<std::string>{"--no-port-mapping"});
  CHECK(words_of("[peer]\nno-port-mapping = false\n", {"-L", "1:a:22", "home"}).empty());
}

TEST_CASE("no-punch in peer.conf becomes --no-punch") {
  CHECK(words_of("[peer]\nno-punch = true\n", {"-L", "1:a:22", "home"}) ==
        std::vector<std::string>{"--no-punch"});
  CHECK(words_of("[peer]\nno-punch = false\n", {"-L", "1:a:22", "home"}).empty());
}

TEST_CASE("port-mapping in peer.conf becomes --port-mapping, checked") {
  CHECK(words_of("[peer]\nport-mapping = nat-pmp,upnp\n", {"-L", "1:a:22", "home"}) ==
        std::vector<std::string>{"--port-mapping=nat-pmp,upnp"});
  CHECK(error_of("[peer]\nport-mapping = natpmp\n") ==
        "peer.conf:2: key 'port-mapping': 'natpmp' is not pcp, nat-pmp or upnp");
}

TEST_CASE("bad peer.conf values name the line and the key") {
  CHECK(error_of("[peer]\nname = Home\n") ==
        "peer.conf:2: key 'name': 'Home' is not a valid peer name (lowercase letters, digits, '.', '_', '-')");
  CHECK(error_of("[peer]\nrelay = http://x\n") ==
        "peer.conf:2: key 'relay': 'http://x': only tls:// or a plain HOST:PORT is understood");
  CHECK(error_of("[peer]\nturn-transport = udp,quic\n") ==
        "peer.conf:2: key 'turn-transport': 'quic' is not udp, tcp or tls");
  CHECK(error_of("[peer]\nallow = short\n").rfind("peer.conf:2: key 'allow': 'short' is not a key id", 0) == 0);
  CHECK(error_of("[peer]\nice-address = 10.0.0.1;eth0\n") == "peer.conf:2: key 'ice-address': 'eth0' is not an IP address");
  CHECK(error_of("[serve ssh]\ntarget = buffalo\n").rfind("peer.conf:2: key 'target': ", 0) == 0);
  CHECK(error_of("[serve ssh]\ntarget = buffalo:22\nport = 0\n").rfind("peer.conf:3: key 'port': ", 0) == 0);
  CHECK(error_of("[forward ssh]\npeer = home\nlisten = 99999\ntarget = b:22\n").rfind("peer.conf:3: key 'listen': ", 0) == 0);
  CHECK(error_of("[forward ssh]\npeer = home\ntarget = b:22\n") == "peer.conf:1: [forward ssh] needs key 'listen'");
  CHECK(error_of("[forward ssh]\npeer = home@nokey\nlisten = 1\ntarget = b:22\n").rfind("peer.conf:2: key 'peer': 'nokey' is not a key id", 0) == 0);
  CHECK(error_of("[peer]\nlocal = 2222:b:22\n").rfind("peer.conf:2: unknown key 'local' in [peer]", 0) == 0);
}

TEST_CASE("forwards to several peers become one -L group per peer, in first-seen order") {
  const char* const two = "[peer]\ndynamic = 1080\n"
                          "[forward a]\npeer = home\nlisten = 1\ntarget = a:22\n"
                          "[forward b]\npeer = office\nlisten = 2\ntarget = b:22\n"
                          "[forward c]\npeer = home@abcdefghijklmnopqrstuvwxyz234567\n"
                          "listen = 3\ntarget = c:22\n";
  // The [peer] keys come first, so -D goes to the first peer.
  CHECK(words_of(two, {}) == std::vector<std::string>{
                                 "--dynamic=1080", "--local=1:a:22", "--local=3:c:22",
                                 "home@abcdefghijklmnopqrstuvwxyz234567", "--local=2:b:22",
                                 "office"});
  // -L on the command line replaces all of them; a NAME alone takes every forward.
  CHECK(words_of(two, {"-L", "0:x:1", "nas"}) == std::vector<std::string>{"--dynamic=1080"});
  CHECK(words_of(two, {"work"}) == std::vector<std::string>{"--dynamic=1080", "--local=1:a:22",
                                                             "--local=3:c:22", "--local=2:b:22"});
}

TEST_CASE("one peer pinned to two keys is refused at the second one's line") {
  CHECK(error_of("[forward a]\npeer = home@abcdefghijklmnopqrstuvwxyz234567\nlisten = 1\n"
                 "target = b:22\n[forward b]\npeer = home@bbcdefghijklmnopqrstuvwxyz234567\n"
                 "listen = 2\ntarget = b:22\n") ==
        "peer.conf:6: key 'peer': 'home@bbcdefghijklmnopqrstuvwxyz234567' pins another key "
        "than 'home@abcdefghijklmnopqrstuvwxyz234567' (line 2)");
}

TEST_CASE("the shipped peer examples load") {
  for (const char* name : {"/dist/peer.conf.example", "/dist/peer-laptop.conf.example"}) {
    INFO(name);
    config::FileText example = config::read_config_file(std::string(NATFWD_SOURCE_DIR) + name);
    REQUIRE(example.found);
    auto result = parse(example.text);
    if (auto* e = std::get_if<std::string>(&result)) FAIL(*e);
    auto arguments = peer_file_arguments(std::get<config::ConfigFile>(result), name, PeerConfigUse::kRun);
    if (auto* e = std::get_if<std::string>(&arguments)) FAIL(*e);
    CHECK_FALSE(std::get<std::vector<config::FileArgument>>(arguments).empty());
  }
}

TEST_CASE("[publish NAME] groups become --publish specs with their options") {
  const char* const text =
      "[peer]\n"
      "name = home\n"
      "[publish web]\n"
      "kind = http\n"
      "target = 8000\n"
      "allow-from = 192.168.0.0/16;2001:db8::/32\n"
      "auth = /etc/natfwd/users\n"
      "[publish ssh]\n"
      "kind = tcp\n"
      "public-port = 20022\n"
      "target = 192.168.1.20:22\n"
      "proxy-protocol = true\n"
      "[publish site]\n"
      "kind = tls\n"
      "target = 127.0.0.1:8443\n"
      "proxy-protocol = false\n"
      "[publish shop]\n"
      "kind = https\n"
      "target = 8080\n"
      "cert = /etc/natfwd/shop.pem\n"
      "key = /etc/natfwd/shop.key\n";
  CHECK(words_of(text, {}) ==
        std::vector<std::string>{
            "--name=home",
            "--publish=http:8000,allow-from=192.168.0.0/16,allow-from=2001:db8::/32,"
            "auth=/etc/natfwd/users",
            "--publish=tcp:20022:192.168.1.20:22,proxy-protocol",
            "--publish=tls:127.0.0.1:8443",
            "--publish=https:8080,cert=/etc/natfwd/shop.pem,key=/etc/natfwd/shop.key"});
  // --publish on the command line replaces the file's.
  CHECK(words_of(text, {"--publish", "http:9000"}) == std::vector<std::string>{"--name=home"});
  CHECK(error_of("[publish web]\nkind = ftp\ntarget = 21\n") ==
        "peer.conf:2: key 'kind': 'ftp' is not http, tls, https or tcp");
  CHECK(error_of("[publish shop]\nkind = https\ntarget = 8080\ncert = /x.pem\n")
            .find("needs cert=FILE,key=FILE") != std::string::npos);
  CHECK(error_of("[publish web]\nkind = http\n") == "peer.conf:1: [publish web] needs key 'target'");
  // The spec's own rules: proxy-protocol is not for http, auth= only for http.
  CHECK(error_of("[publish web]\nkind = http\ntarget = 80\nproxy-protocol = true\n")
            .rfind("peer.conf:1: [publish web]: 'proxy-protocol' in ", 0) == 0);
  CHECK(error_of("[publish s]\nkind = tcp\ntarget = 22\nauth = /f\n")
            .rfind("peer.conf:1: [publish s]: 'auth=' in ", 0) == 0);
  CHECK(error_of("[publish s]\nkind = tcp\ntarget = 22\nallow-from = nowhere\n")
            .rfind("peer.conf:1: [publish s]: 'nowhere' in ", 0) == 0);
}

#include <catch2/catch.hpp>

#include "forward/forward_spec.h"

using namespace natfwd;

TEST_CASE("--serve accepts HOST:HOSTPORT and PORT:HOST:HOSTPORT") {
  auto a = std::get<ServeSpec>(parse_serve_spec("buffalo:22"));
  REQUIRE_FALSE(a.suggested_port);
  REQUIRE(a.target == HostPort{"buffalo", 22});
  auto b = std::get<ServeSpec>(parse_serve_spec("2222:buffalo:22"));
  REQUIRE(b.suggested_port == 2222);
  REQUIRE(b.target == HostPort{"buffalo", 22});
  auto c = std::get<ServeSpec>(parse_serve_spec("2222:[fd00::5]:22"));
  REQUIRE(c.target == HostPort{"fd00::5", 22});
}

TEST_CASE("-L accepts PORT:HOST:HOSTPORT and BIND:PORT:HOST:HOSTPORT") {
  auto a = std::get<LocalForwardSpec>(parse_local_forward_spec("2222:buffalo:22"));
  REQUIRE(a.listen == HostPort{"127.0.0.1", 2222});
  REQUIRE(a.target == HostPort{"buffalo", 22});
  auto b = std::get<LocalForwardSpec>(parse_local_forward_spec("0.0.0.0:0:buffalo:22"));
  REQUIRE(b.listen == HostPort{"0.0.0.0", 0});
  auto c = std::get<LocalForwardSpec>(parse_local_forward_spec("[::1]:2222:[::1]:22"));
  REQUIRE(c.listen == HostPort{"::1", 2222});
  REQUIRE(c.target == HostPort{"::1", 22});
}

TEST_CASE("bad specs are refused with a message") {
  for (const char* bad : {"", "buffalo", "buffalo:0", "buffalo:99999", "0:buffalo:22",
                          "x:buffalo:22", "a:b:c:d:e", "bad host:22", "[::1:22"}) {
    INFO(bad);
    auto r = parse_serve_spec(bad);
    REQUIRE(std::holds_alternative<std::string>(r));
    REQUIRE_FALSE(std::get<std::string>(r).empty());
  }
  for (const char* bad : {"", "2222:buffalo", "99999:buffalo:22", "2222:buffalo:0",
                          "2222:buffalo:x", "a:b:c:d:e", "bad bind:1:h:2", "-1:h:2"}) {
    INFO(bad);
    auto r = parse_local_forward_spec(bad);
    REQUIRE(std::holds_alternative<std::string>(r));
    REQUIRE_FALSE(std::get<std::string>(r).empty());
  }
}

TEST_CASE("peer names follow the relay's rule") {
  REQUIRE(is_valid_peer_name("home"));
  REQUIRE(is_valid_peer_name("home-2.lan_x"));
  REQUIRE_FALSE(is_valid_peer_name(""));
  REQUIRE_FALSE(is_valid_peer_name("Home"));
  REQUIRE_FALSE(is_valid_peer_name("-home"));
  REQUIRE_FALSE(is_valid_peer_name(std::string(64, 'a')));
  REQUIRE_FALSE(is_valid_peer_name("home@key"));
}

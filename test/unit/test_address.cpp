#include <catch2/catch.hpp>

#include "address.h"

using namespace natfwd;

TEST_CASE("host:port parses names, IPv4 and bracketed IPv6") {
  auto a = std::get<HostPort>(parse_host_port("vps.example:3478"));
  REQUIRE(a.host == "vps.example");
  REQUIRE(a.port == 3478);
  auto b = std::get<HostPort>(parse_host_port("[::1]:22"));
  REQUIRE(b.host == "::1");
  REQUIRE(b.to_string() == "[::1]:22");
  auto c = std::get<HostPort>(parse_host_port("127.0.0.1", 3478));
  REQUIRE(c.port == 3478);
  auto d = std::get<HostPort>(parse_host_port("0.0.0.0:0", std::nullopt, true));
  REQUIRE(d.port == 0);
}

TEST_CASE("bad host:port gives one line naming the problem") {
  for (const char* bad : {"", "host", "host:", "host:99999", "host:-1", "host:22x", "[::1:22",
                          "::1]:22", "a:b:c", "ho st:22", "[::1]x:22"}) {
    INFO(bad);
    auto result = parse_host_port(bad);
    REQUIRE(std::holds_alternative<std::string>(result));
    REQUIRE_FALSE(std::get<std::string>(result).empty());
  }
  REQUIRE(std::holds_alternative<std::string>(parse_host_port("h:0")));
}

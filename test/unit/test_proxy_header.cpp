// The PROXY protocol v2 header (relay/front_door/proxy_header.h) against the bytes
// haproxy's spec (section 2.2) defines, for IPv4, IPv6 and mixed addresses.
#include <catch2/catch.hpp>

#include "front_door/proxy_header.h"

using namespace natfwd;
using namespace natfwd::relay::front_door;

namespace {

const std::string kSignature("\r\n\r\n\0\r\nQUIT\n", 12);

}  // namespace

TEST_CASE("PROXY v2 over IPv4: signature, PROXY command, TCP4, 12 address bytes") {
  const auto header = proxy_v2_header({"192.0.2.7", 51000}, {"203.0.113.1", 20022});
  REQUIRE(header);
  CHECK(*header == kSignature + std::string("\x21\x11\x00\x0c", 4) +
                       std::string("\xc0\x00\x02\x07\xcb\x00\x71\x01", 8) +
                       std::string("\xc7\x38\x4e\x36", 4));
}

TEST_CASE("PROXY v2 over IPv6, and an IPv4 side mapped when the other is IPv6") {
  const auto header = proxy_v2_header({"2001:db8::1", 443}, {"::ffff:203.0.113.1", 8443});
  REQUIRE(header);
  REQUIRE(header->size() == 16 + 36);
  CHECK(header->substr(12, 4) == std::string("\x21\x21\x00\x24", 4));
  CHECK(header->substr(16, 16) ==
        std::string("\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16));
  CHECK(header->substr(32, 16) ==
        std::string("\0\0\0\0\0\0\0\0\0\0\xff\xff\xcb\x00\x71\x01", 16));
  CHECK(header->substr(48) == std::string("\x01\xbb\x20\xfb", 4));
  // IPv4-mapped on both sides is IPv4.
  const auto mapped = proxy_v2_header({"::ffff:127.0.0.1", 1}, {"127.0.0.1", 2});
  REQUIRE(mapped);
  CHECK(mapped->substr(13, 1) == "\x11");
  CHECK(mapped->size() == 16 + 12);
}

TEST_CASE("a PROXY v2 header needs numeric addresses") {
  CHECK_FALSE(proxy_v2_header({"relay.example", 1}, {"127.0.0.1", 2}));
  CHECK_FALSE(proxy_v2_header({"127.0.0.1", 1}, {"?", 0}));
}

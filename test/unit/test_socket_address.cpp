// Address conversions (sockaddr and GSocketAddress <-> STUN transport address, text):
// both families, IPv4 on a dual-stack (IPv6) socket, and what cannot be sent.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <catch2/catch.hpp>

#include <cstring>

#include "net/socket_address.h"

using natfwd::net::to_sockaddr;
using natfwd::net::to_transport_address;
using natfwd::stun::TransportAddress;

TEST_CASE("socket address: IPv4 round trip on an IPv4 socket") {
  const auto address = TransportAddress::ipv4({192, 0, 2, 7}, 3478);
  sockaddr_storage out{};
  REQUIRE(to_sockaddr(address, AF_INET, out) == sizeof(sockaddr_in));
  const auto& in = reinterpret_cast<const sockaddr_in&>(out);
  CHECK(in.sin_family == AF_INET);
  CHECK(ntohs(in.sin_port) == 3478);
  char text[INET_ADDRSTRLEN];
  CHECK(std::string(inet_ntop(AF_INET, &in.sin_addr, text, sizeof text)) == "192.0.2.7");
  CHECK(to_transport_address(out) == address);
}

TEST_CASE("socket address: IPv4 on a dual-stack socket goes as ::ffff:a.b.c.d and comes back plain") {
  const auto address = TransportAddress::ipv4({203, 0, 113, 10}, 49152);
  sockaddr_storage out{};
  REQUIRE(to_sockaddr(address, AF_INET6, out) == sizeof(sockaddr_in6));
  const auto& in6 = reinterpret_cast<const sockaddr_in6&>(out);
  char text[INET6_ADDRSTRLEN];
  CHECK(std::string(inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof text)) ==
        "::ffff:203.0.113.10");
  CHECK(ntohs(in6.sin6_port) == 49152);
  const auto back = to_transport_address(out);
  CHECK(back.family == TransportAddress::Family::kIPv4);
  CHECK(back == address);
}

TEST_CASE("socket address: IPv6 round trip, and no IPv6 on an IPv4 socket") {
  std::array<uint8_t, 16> ip{0x20, 0x01, 0x0d, 0xb8};
  ip[15] = 1;
  const auto address = TransportAddress::ipv6(ip, 443);
  sockaddr_storage out{};
  REQUIRE(to_sockaddr(address, AF_INET6, out) == sizeof(sockaddr_in6));
  CHECK(to_transport_address(out) == address);
  CHECK(to_sockaddr(address, AF_INET, out) == 0);
}

TEST_CASE("socket address: an unknown family reads as an empty address") {
  sockaddr_storage unix_socket{};
  unix_socket.ss_family = AF_UNIX;
  CHECK(to_transport_address(unix_socket) == TransportAddress{});
}

TEST_CASE("socket address: GLib addresses to text, HostPort and back") {
  using natfwd::net::make_socket_address;
  const auto v4 = make_socket_address("203.0.113.10", 3478);
  REQUIRE(v4);
  CHECK(natfwd::net::to_string(v4.get()) == "203.0.113.10:3478");
  CHECK(natfwd::net::to_host_port(v4.get()) == natfwd::HostPort{"203.0.113.10", 3478});
  const auto v6 = make_socket_address("2001:db8::1", 443);
  REQUIRE(v6);
  CHECK(natfwd::net::to_string(v6.get()) == "[2001:db8::1]:443");
  // What a dual-stack socket reports for an IPv4 sender reads as the IPv4 address.
  const auto mapped = make_socket_address("::ffff:198.51.100.7", 9);
  REQUIRE(mapped);
  CHECK(natfwd::net::to_string(mapped.get()) == "198.51.100.7:9");
  CHECK(natfwd::net::to_transport_address(mapped.get()) ==
        TransportAddress::ipv4({198, 51, 100, 7}, 9));
  const auto back = make_socket_address(natfwd::net::to_transport_address(v6.get()));
  CHECK(natfwd::net::to_string(back.get()) == "[2001:db8::1]:443");
  CHECK(natfwd::net::to_string(nullptr) == "?");
  CHECK_FALSE(make_socket_address("relay.example", 1));
}

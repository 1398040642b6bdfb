#include "front_door/proxy_header.h"

#include <arpa/inet.h>

#include <array>
#include <cstring>

namespace natfwd::relay::front_door {
namespace {

// Section 2.2: the 12-byte signature, then version 2 with command PROXY (0x21).
constexpr char kSignature[] = "\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A";
constexpr size_t kSignatureBytes = 12;
constexpr char kVersion2Proxy = 0x21;
// Address family and transport: TCP over IPv4 (0x11) or over IPv6 (0x21).
constexpr char kTcpOverIpv4 = 0x11;
constexpr char kTcpOverIpv6 = 0x21;

// The 16 bytes of `host` as IPv6 (IPv4 mapped into ::ffff:0:0/96); nullopt when not an IP.
std::optional<std::array<unsigned char, 16>> as_ipv6(const std::string& host) {
  std::array<unsigned char, 16> out{};
  if (inet_pton(AF_INET6, host.c_str(), out.data()) == 1) return out;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) != 1) return std::nullopt;
  out[10] = out[11] = 0xff;
  std::memcpy(out.data() + 12, &v4, 4);
  return out;
}

bool is_mapped_ipv4(const std::array<unsigned char, 16>& address) {
  static constexpr unsigned char kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(address.data(), kPrefix, sizeof kPrefix) == 0;
}

void put_port(std::string& out, uint16_t port) {
  out += static_cast<char>(port >> 8);
  out += static_cast<char>(port & 0xff);
}

}  // namespace

std::optional<std::string> proxy_v2_header(const HostPort& visitor, const HostPort& relay) {
  const auto source = as_ipv6(visitor.host);
  const auto destination = as_ipv6(relay.host);
  if (!source || !destination) return std::nullopt;
  const bool ipv4 = is_mapped_ipv4(*source) && is_mapped_ipv4(*destination);
  std::string out(kSignature, kSignatureBytes);
  out += kVersion2Proxy;
  out += ipv4 ? kTcpOverIpv4 : kTcpOverIpv6;
  // Section 2.2: the length of the address block that follows, network byte order:
  // 2 x 4 + 2 x 2 for IPv4, 2 x 16 + 2 x 2 for IPv6.
  put_port(out, ipv4 ? 12 : 36);
  const size_t offset = ipv4 ? 12 : 0;
  out.append(reinterpret_cast<const char*>(source->data()) + offset, 16 - offset);
  out.append(reinterpret_cast<const char*>(destination->data()) + offset, 16 - offset);
  put_port(out, visitor.port);
  put_port(out, relay.port);
  return out;
}

}  // namespace natfwd::relay::front_door

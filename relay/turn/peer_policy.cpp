#include "turn/peer_policy.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>

namespace natfwd::turn {
namespace {

using Family = stun::TransportAddress::Family;

bool prefix_matches(const uint8_t* a, const uint8_t* b, unsigned bits) {
  const unsigned whole = bits / 8;
  if (!std::equal(a, a + whole, b)) return false;
  const unsigned rest = bits % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<uint8_t>(0xFF << (8 - rest));
  return (a[whole] & mask) == (b[whole] & mask);
}

struct Range {
  std::array<uint8_t, 16> ip;
  unsigned bits;
};

// Default-denied IPv4 ranges (RFC 6890 special-purpose registry, the ones that are
// not globally reachable or are ours).
constexpr Range kDeniedV4[] = {
    {{0, 0, 0, 0}, 8},          // "this network"
    {{10, 0, 0, 0}, 8},         // RFC 1918
    {{100, 64, 0, 0}, 10},      // CGNAT, RFC 6598
    {{127, 0, 0, 0}, 8},        // loopback
    {{169, 254, 0, 0}, 16},     // link-local
    {{172, 16, 0, 0}, 12},      // RFC 1918
    {{192, 0, 0, 0}, 24},       // IETF protocol assignments
    {{192, 168, 0, 0}, 16},     // RFC 1918
    {{198, 18, 0, 0}, 15},      // benchmarking
    {{224, 0, 0, 0}, 4},        // multicast
    {{240, 0, 0, 0}, 4},        // reserved, and 255.255.255.255 broadcast
};
constexpr Range kDeniedV6[] = {
    {{}, 128},                                                       // ::
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128},         // ::1
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, 96},                // ::ffff:0:0/96 mapped
    {{0, 0x64, 0xff, 0x9b}, 96},                                     // 64:ff9b::/96 NAT64
    {{0xfc}, 7},                                                     // unique local
    {{0xfe, 0x80}, 10},                                              // link-local
    {{0xff}, 8},                                                     // multicast
};

}  // namespace

bool Cidr::contains(const stun::TransportAddress& address) const {
  if (address.family != family) return false;
  return prefix_matches(address.ip.data(), ip.data(), prefix_length);
}

std::string Cidr::to_string() const {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == Family::kIPv4 ? AF_INET : AF_INET6, ip.data(), text, sizeof text);
  return std::string(text) + "/" + std::to_string(prefix_length);
}

Cidr network_of(std::span<const uint8_t> ip, std::span<const uint8_t> mask) {
  Cidr network;
  network.family = ip.size() == 4 ? Family::kIPv4 : Family::kIPv6;
  for (size_t i = 0; i < ip.size() && i < network.ip.size() && i < mask.size(); ++i) {
    network.ip[i] = ip[i] & mask[i];
    for (int bit = 7; bit >= 0 && (mask[i] >> bit) & 1; --bit) ++network.prefix_length;
    if (mask[i] != 0xFF) break;
  }
  return network;
}

std::optional<Cidr> parse_cidr(std::string_view text) {
  const size_t slash = text.find('/');
  const std::string ip_text(text.substr(0, slash));
  Cidr cidr;
  if (inet_pton(AF_INET, ip_text.c_str(), cidr.ip.data()) == 1) {
    cidr.family = Family::kIPv4;
  } else if (inet_pton(AF_INET6, ip_text.c_str(), cidr.ip.data()) == 1) {
    cidr.family = Family::kIPv6;
  } else {
    return std::nullopt;
  }
  const unsigned max_bits = cidr.family == Family::kIPv4 ? 32 : 128;
  cidr.prefix_length = max_bits;
  if (slash != std::string_view::npos) {
    const std::string_view bits = text.substr(slash + 1);
    auto [end, ec] = std::from_chars(bits.data(), bits.data() + bits.size(), cidr.prefix_length);
    if (bits.empty() || ec != std::errc() || end != bits.data() + bits.size() ||
        cidr.prefix_length > max_bits)
      return std::nullopt;
  }
  return cidr;
}

void PeerPolicy::add_own_address(const stun::TransportAddress& address) {
  stun::TransportAddress ip_only = address;
  ip_only.port = 0;
  if (std::find(own_.begin(), own_.end(), ip_only) == own_.end()) own_.push_back(ip_only);
}

bool PeerPolicy::is_special(const stun::TransportAddress& peer) {
  const auto& ranges = peer.family == Family::kIPv4 ? std::span<const Range>(kDeniedV4)
                                                     : std::span<const Range>(kDeniedV6);
  for (const Range& range : ranges)
    if (prefix_matches(peer.ip.data(), range.ip.data(), range.bits)) return true;
  return false;
}

bool PeerPolicy::is_allowed(const stun::TransportAddress& peer) const {
  for (const Cidr& range : allowed_)
    if (range.contains(peer)) return true;
  if (is_special(peer)) return false;
  for (const Cidr& network : own_networks_)
    if (network.contains(peer)) return false;
  stun::TransportAddress ip_only = peer;
  ip_only.port = 0;
  return std::find(own_.begin(), own_.end(), ip_only) == own_.end();
}

}  // namespace natfwd::turn

// Who the TURN server relays to (RFC 8656 section 21.3: not an open relay). By
// default no relaying to loopback, private, link-local, CGNAT, multicast, "this
// network", broadcast and reserved ranges, their IPv4-mapped IPv6 forms, nor to the
// relay's own addresses, nor to the networks the relay is directly connected to (its
// provider's LAN: neighbours a stranger must not reach through us). --allow-peer CIDR
// overrides (as coturn's allowed-peer-ip).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "stun/stun_message.h"

namespace natfwd::turn {

struct Cidr {
  stun::TransportAddress::Family family = stun::TransportAddress::Family::kIPv4;
  std::array<uint8_t, 16> ip{};
  unsigned prefix_length = 0;

  bool contains(const stun::TransportAddress& address) const;  // the port is ignored
  std::string to_string() const;
};

// "10.0.0.0/8", "::1/128", or a bare address (a /32 or /128). nullopt if malformed.
std::optional<Cidr> parse_cidr(std::string_view text);
// The network of an interface address and its netmask (4 or 16 bytes each; the
// prefix is the mask's leading one bits).
Cidr network_of(std::span<const uint8_t> ip, std::span<const uint8_t> mask);

class PeerPolicy {
 public:
  void allow(const Cidr& range) { allowed_.push_back(range); }
  // The relay's own addresses (listen address, interface addresses).
  void add_own_address(const stun::TransportAddress& address);
  // A network the relay has an interface on (address and netmask of that interface).
  void add_own_network(const Cidr& network) { own_networks_.push_back(network); }

  bool is_allowed(const stun::TransportAddress& peer) const;
  // The ranges denied by default, whatever else is configured.
  static bool is_special(const stun::TransportAddress& peer);

 private:
  std::vector<Cidr> allowed_;
  std::vector<stun::TransportAddress> own_;
  std::vector<Cidr> own_networks_;
};

}  // namespace natfwd::turn

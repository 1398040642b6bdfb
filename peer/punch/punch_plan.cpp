#include "punch/punch_plan.h"

#include <charconv>

namespace natfwd::punch {

std::optional<TransportAddress> parse_ipv4_address(std::string_view text) {
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  std::array<uint8_t, 4> ip{};
  std::string_view rest = text.substr(0, colon);
  for (size_t i = 0; i < 4; ++i) {
    const size_t dot = i < 3 ? rest.find('.') : rest.size();
    if (dot == std::string_view::npos || dot == 0 || dot > 3) return std::nullopt;
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(rest.data(), rest.data() + dot, value);
    if (ec != std::errc() || end != rest.data() + dot || value > 255) return std::nullopt;
    ip[i] = static_cast<uint8_t>(value);
    rest = i < 3 ? rest.substr(dot + 1) : std::string_view();
  }
  const std::string_view port_text = text.substr(colon + 1);
  unsigned port = 0;
  const auto [end, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() ||
      port == 0 || port > 65535)
    return std::nullopt;
  return TransportAddress::ipv4(ip, static_cast<uint16_t>(port));
}

wire::PunchOffer make_offer(bool endpoint_dependent, const TransportAddress& public_address,
                            uint64_t session_id, const PunchKey* key) {
  wire::PunchOffer offer;
  offer.set_endpoint_dependent(endpoint_dependent);
  offer.set_address(public_address.to_string());
  offer.set_session_id(session_id);
  if (key) offer.set_key(std::string(reinterpret_cast<const char*>(key->data()), key->size()));
  return offer;
}

PlanOutcome plan_punch(const wire::PunchOffer& local, const wire::PunchOffer& remote,
                       const wire::PunchOffer& key_offer) {
  PlanOutcome out;
  if (local.session_id() != remote.session_id()) {
    out.why_not = "the offers name different punch sessions";
    return out;
  }
  if (key_offer.key().size() != PunchKey().size()) {
    out.why_not = "the punch key is not 32 bytes";
    return out;
  }
  const auto remote_address = parse_ipv4_address(remote.address());
  if (!remote_address) {
    out.why_not = "the other side's public address is not IPv4 ip:port";
    return out;
  }
  const auto role = choose_role(local.endpoint_dependent(), remote.endpoint_dependent());
  if (!role) {
    out.why_not = local.endpoint_dependent()
                      ? "both NATs map each destination to a new port: out of a punch's reach"
                      : "neither NAT maps per destination: nothing for a punch to add";
    return out;
  }
  PunchPlan plan;
  plan.role = *role;
  plan.session_id = local.session_id();
  std::copy(key_offer.key().begin(), key_offer.key().end(),
            reinterpret_cast<char*>(plan.key.data()));
  plan.remote = *remote_address;
  out.plan = plan;
  return out;
}

}  // namespace natfwd::punch

// What two peers agree on before a hard-NAT punch, without I/O: each side's offer
// (wire::PunchOffer, exchanged on a stream of the tunnel's QUIC connection, so only
// the two peers see the key) in, the plan for BirthdayPunch (birthday_punch.h) or the
// reason there is none out.
//
// The connecting side makes the attempt's session id and key and sends its offer
// first; the serving side answers with its own offer under the same session id. Each
// then plans from (its own offer, the other's): the role from the two mapping
// behaviours (choose_role), and the address to punch toward, which is the other
// side's public address as the relay's STUN server saw it (the only destination the
// search may use).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "punch/birthday_punch.h"
#include "rendezvous.pb.h"

namespace natfwd::punch {

// The serving side's StreamOpenResult detail (status NOT_SERVED) while its own probe
// still runs: the connecting side asks again a little later.
inline constexpr std::string_view kPunchNotReady = "punch probe still running";

struct PunchPlan {
  Role role = Role::kEasy;
  uint64_t session_id = 0;
  PunchKey key{};
  TransportAddress remote;  // the other side's public address (hard: only its IP counts)
};

// "192.0.2.1:4000" as an IPv4 transport address (the punch runs over IPv4: over IPv6
// there is no NAT to punch, RFC 6092). Anything else: none.
std::optional<TransportAddress> parse_ipv4_address(std::string_view text);

// This side's offer. `key` is sent by the connecting side only.
wire::PunchOffer make_offer(bool endpoint_dependent, const TransportAddress& public_address,
                            uint64_t session_id, const PunchKey* key);

struct PlanOutcome {
  std::optional<PunchPlan> plan;
  std::string why_not;  // when there is no plan: a sentence for the log
};

// `key_offer` is the connecting side's (it carries the key); both offers must name the
// same session id.
PlanOutcome plan_punch(const wire::PunchOffer& local, const wire::PunchOffer& remote,
                       const wire::PunchOffer& key_offer);

}  // namespace natfwd::punch

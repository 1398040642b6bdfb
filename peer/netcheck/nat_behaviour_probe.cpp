#include "netcheck/nat_behaviour_probe.h"

#include <utility>

namespace natfwd::netcheck {
namespace {

// CHANGE-REQUEST flags (RFC 5780 section 7.2).
constexpr uint8_t kChangeIp = 0x04;
constexpr uint8_t kChangePort = 0x02;

std::optional<stun::TransportAddress> address_attribute(const stun::Message& m, uint16_t type) {
  const stun::Attribute* a = m.find(type);
  if (!a) return std::nullopt;
  return stun::decode_address(a->value);
}

}  // namespace

std::string_view to_string(Mapping mapping) {
  switch (mapping) {
    case Mapping::kNoNat: return "no NAT";
    case Mapping::kEndpointIndependent: return "endpoint-independent";
    case Mapping::kAddressDependent: return "address-dependent";
    case Mapping::kAddressAndPortDependent: return "address-and-port-dependent";
    case Mapping::kUnknown: break;
  }
  return "unknown";
}

std::string_view to_string(Filtering filtering) {
  switch (filtering) {
    case Filtering::kEndpointIndependent: return "endpoint-independent";
    case Filtering::kAddressDependent: return "address-dependent";
    case Filtering::kAddressAndPortDependent: return "address-and-port-dependent";
    case Filtering::kUnknown: break;
  }
  return "unknown";
}

NatBehaviourProbe::NatBehaviourProbe(stun::TransportAddress server,
                                     std::array<stun::TransportAddress, 2> locals,
                                     uint64_t id_seed, Timing timing)
    : server_(server), locals_(locals), id_seed_(id_seed), timing_(timing) {}

void NatBehaviourProbe::start(TimePoint now) {
  begin(mapping_, kMappingSocket, 1, server_, 0, now);
  begin(filtering_, kFilteringSocket, 1, server_, 0, now);
}

void NatBehaviourProbe::begin(Transaction& t, int socket, int step,
                              const stun::TransportAddress& to, uint8_t change_flags,
                              TimePoint now) {
  t.running = true;
  t.step = step;
  t.to = to;
  t.change_flags = change_flags;
  t.started = now;
  t.sent = 0;
  // Seed in the first 8 bytes, a counter in the last 4: unique within this probe,
  // unguessable across runs.
  const uint64_t counter = ++next_id_;
  for (int i = 0; i < 8; ++i) t.id[i] = static_cast<std::byte>(id_seed_ >> (8 * i));
  for (int i = 0; i < 4; ++i) t.id[8 + i] = static_cast<std::byte>(counter >> (8 * i));
  transmit(t, socket);
}

void NatBehaviourProbe::transmit(Transaction& t, int socket) {
  stun::MessageBuilder builder(stun::method::kBinding, stun::MessageClass::kRequest, t.id);
  if (t.change_flags) {
    const std::byte value[4] = {std::byte{0}, std::byte{0}, std::byte{0},
                                static_cast<std::byte>(t.change_flags)};
    builder.add_attribute(stun::attr::kChangeRequest, value);
  }
  builder.add_fingerprint();
  sends_.push_back({socket, t.to, builder.take()});
  ++t.sent;
}

std::vector<NatBehaviourProbe::Send> NatBehaviourProbe::take_sends() {
  return std::exchange(sends_, {});
}

std::optional<TimePoint> NatBehaviourProbe::next_deadline() const {
  std::optional<TimePoint> next;
  for (const Transaction* t : {&mapping_, &filtering_}) {
    if (!t->running) continue;
    const TimePoint at = t->sent < timing_.retransmit_at.size()
                             ? t->started + timing_.retransmit_at[t->sent]
                             : t->started + timing_.give_up_after;
    if (!next || at < *next) next = at;
  }
  return next;
}

void NatBehaviourProbe::on_timer(TimePoint now) {
  for (int socket : {kMappingSocket, kFilteringSocket}) {
    Transaction& t = socket == kMappingSocket ? mapping_ : filtering_;
    if (!t.running) continue;
    while (t.running && t.sent < timing_.retransmit_at.size() &&
           now >= t.started + timing_.retransmit_at[t.sent])
      transmit(t, socket);
    if (t.running && now >= t.started + timing_.give_up_after) {
      t.running = false;
      if (socket == kMappingSocket) mapping_timed_out();
      else filtering_timed_out(now);
    }
  }
}

void NatBehaviourProbe::on_datagram(int socket, std::span<const std::byte> datagram,
                                    TimePoint now) {
  Transaction& t = socket == kMappingSocket ? mapping_ : filtering_;
  if (!t.running) return;
  auto parsed = stun::parse(datagram);
  if (parsed.status != stun::ParseStatus::kOk) return;
  const stun::Message& m = parsed.message;
  if (m.transaction_id != t.id || m.method() != stun::method::kBinding ||
      m.message_class() != stun::MessageClass::kSuccessResponse)
    return;  // strays, and error answers: a 420 means no RFC 5780, as silence would
  std::optional<stun::TransportAddress> mapped;
  if (const stun::Attribute* x = m.find(stun::attr::kXorMappedAddress))
    mapped = stun::decode_xor_address(x->value, m.transaction_id);
  if (!mapped) mapped = address_attribute(m, stun::attr::kMappedAddress);
  if (!mapped) return;
  t.running = false;
  result_.udp = true;
  const auto other = address_attribute(m, stun::attr::kOtherAddress);
  if (socket == kMappingSocket) mapping_answered(*mapped, other, now);
  else {
    if (filtering_.step == 1) {
      if (!other) return;  // no RFC 5780 server: filtering stays unknown
    }
    filtering_answered(now);
  }
}

void NatBehaviourProbe::mapping_answered(const stun::TransportAddress& mapped,
                                         const std::optional<stun::TransportAddress>& other,
                                         TimePoint now) {
  // Only test I's OTHER-ADDRESS counts; tests II and III reach other server sockets.
  result_.mapped_by_test.push_back(mapped);
  switch (mapping_.step) {
    case 1: {
      result_.mapped = mapped;
      result_.port_preserved = mapped.port == locals_[kMappingSocket].port;
      result_.server_discovery = other.has_value();
      if (mapped == locals_[kMappingSocket]) {
        result_.mapping = Mapping::kNoNat;  // section 4.3: no NAT, nothing to compare
        return;
      }
      if (!other) return;  // mapping stays unknown
      other_ = other;
      stun::TransportAddress alternate_ip = *other;
      alternate_ip.port = server_.port;
      begin(mapping_, kMappingSocket, 2, alternate_ip, 0, now);
      return;
    }
    case 2:
      if (mapped == result_.mapped_by_test[0]) {
        result_.mapping = Mapping::kEndpointIndependent;
        return;
      }
      // Test III: the alternate IP and port, test I's OTHER-ADDRESS.
      begin(mapping_, kMappingSocket, 3, *other_, 0, now);
      return;
    case 3:
      result_.mapping = mapped == result_.mapped_by_test[1]
                            ? Mapping::kAddressDependent
                            : Mapping::kAddressAndPortDependent;
      return;
  }
}

void NatBehaviourProbe::mapping_timed_out() {
  // Test I silent: no UDP to the server at all. II or III silent: the alternate
  // address is unreachable, so the mapping stays unknown.
}

void NatBehaviourProbe::filtering_answered(TimePoint now) {
  switch (filtering_.step) {
    case 1:
      begin(filtering_, kFilteringSocket, 2, server_, kChangeIp | kChangePort, now);
      return;
    case 2:
      result_.filtering = Filtering::kEndpointIndependent;
      return;
    case 3:
      result_.filtering = Filtering::kAddressDependent;
      return;
  }
}

void NatBehaviourProbe::filtering_timed_out(TimePoint now) {
  switch (filtering_.step) {
    case 2:
      begin(filtering_, kFilteringSocket, 3, server_, kChangePort, now);
      return;
    case 3:
      result_.filtering = Filtering::kAddressAndPortDependent;
      return;
  }
}

}  // namespace natfwd::netcheck

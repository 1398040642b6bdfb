#include "turn/turn_server.h"

#include <algorithm>
#include <cinttypes>
#include <ctime>

#include "log.h"
#include "stun/turn_framing.h"

namespace natfwd::turn {
namespace {

using stun::Attribute;
using stun::Message;
using stun::MessageBuilder;
using stun::MessageClass;
namespace method = stun::method;

uint32_t read_u32(std::span<const std::byte> value) {
  return (std::to_integer<uint32_t>(value[0]) << 24) | (std::to_integer<uint32_t>(value[1]) << 16) |
         (std::to_integer<uint32_t>(value[2]) << 8) | std::to_integer<uint32_t>(value[3]);
}

std::vector<std::byte> u32_value(uint32_t value) {
  return {static_cast<std::byte>(value >> 24), static_cast<std::byte>(value >> 16),
          static_cast<std::byte>(value >> 8), static_cast<std::byte>(value)};
}

std::string_view text_of(const Attribute& attribute) {
  return {reinterpret_cast<const char*>(attribute.value.data()), attribute.value.size()};
}

// Comprehension-required attributes this server knows (it may ignore some); others
// in a request get a 420 (RFC 8489 section 6.3.1).
bool understands(uint16_t type) {
  switch (type) {
    case stun::attr::kMappedAddress:
    case stun::attr::kUsername:
    case stun::attr::kMessageIntegrity:
    case stun::attr::kErrorCode:
    case stun::attr::kUnknownAttributes:
    case stun::attr::kRealm:
    case stun::attr::kNonce:
    case stun::attr::kMessageIntegritySha256:
    case stun::attr::kPasswordAlgorithm:
    case stun::attr::kXorMappedAddress:
    case stun::attr::kPriority:
    case stun::attr::kUseCandidate:
    case attr::kChannelNumber:
    case attr::kLifetime:
    case attr::kBandwidth:
    case attr::kXorPeerAddress:
    case attr::kData:
    case attr::kXorRelayedAddress:
    case attr::kRequestedAddressFamily:
    case attr::kRequestedTransport:
    case attr::kDontFragment:
    case attr::kEvenPort:
    case attr::kReservationToken:
      return true;
    default:
      return !stun::attr::is_comprehension_required(type);
  }
}

// RFC 8656 sections 7.2 and 7.3: min(requested, maximum), but never below the
// default; a Refresh may ask for 0 (delete). nullopt: malformed LIFETIME.
std::optional<std::chrono::seconds> desired_lifetime(const Message& request, bool allow_zero) {
  const Attribute* lifetime = request.find(attr::kLifetime);
  if (!lifetime) return kDefaultAllocationLifetime;
  if (lifetime->value.size() != 4) return std::nullopt;
  const std::chrono::seconds asked{read_u32(lifetime->value)};
  if (asked.count() == 0 && allow_zero) return asked;
  return std::max(kDefaultAllocationLifetime, std::min(asked, kMaxAllocationLifetime));
}

std::array<uint8_t, 16> ip_key(const TransportAddress& address) {
  return address.ip;  // permissions are per allocation, whose family is fixed
}

std::array<uint8_t, 16> channel_key(uint16_t number) {
  return {static_cast<uint8_t>(number >> 8), static_cast<uint8_t>(number)};
}

// RFC 8656 section 7.2: the family of the relayed address an Allocate asks for.
struct FamilyChoice {
  TransportAddress::Family family = TransportAddress::Family::kIPv4;
  // ADDITIONAL-ADDRESS-FAMILY asked for an IPv6 address beside the IPv4 one.
  bool ipv6_refused = false;
  int error = 0;  // an error response instead, with `reason`
  const char* reason = "";
};

FamilyChoice relayed_family(const Message& request, bool ipv6_available) {
  FamilyChoice choice;
  const Attribute* requested = request.find(attr::kRequestedAddressFamily);
  const Attribute* additional = request.find(attr::kAdditionalAddressFamily);
  auto bad = [&](const char* reason) {
    choice.error = error_code::kBadRequest;
    choice.reason = reason;
    return choice;
  };
  // Section 7.2: both attributes at once, or an ADDITIONAL-ADDRESS-FAMILY other than
  // IPv6 (IPv4 is always the first family then), are a 400.
  if (requested && additional) return bad("Both REQUESTED- and ADDITIONAL-ADDRESS-FAMILY");
  if (additional) {
    if (additional->value.size() != 4 ||
        std::to_integer<uint8_t>(additional->value[0]) != kFamilyIPv6)
      return bad("Bad ADDITIONAL-ADDRESS-FAMILY");
    // One allocation here holds one relayed address: the server "is unable to
    // allocate" the IPv6 one, so it gives the IPv4 one and an ADDRESS-ERROR-CODE
    // (section 18.12) saying 440 for IPv6. A client that wants both allocates twice.
    choice.ipv6_refused = true;
    return choice;
  }
  if (!requested) return choice;  // section 7.2: IPv4 by default
  if (requested->value.size() != 4) return bad("Bad REQUESTED-ADDRESS-FAMILY");
  const auto value = std::to_integer<uint8_t>(requested->value[0]);
  if (value == kFamilyIPv6 && ipv6_available) {
    choice.family = TransportAddress::Family::kIPv6;
  } else if (value != kFamilyIPv4) {
    // Section 7.2: a family the server does not support (or has no address of): 440.
    choice.error = error_code::kAddressFamilyNotSupported;
    choice.reason = "Address Family not Supported";
  }
  return choice;
}

// Section 18.12: ADDRESS-ERROR-CODE for the IPv6 half of a dual allocation: family,
// reserved, then the error code as in ERROR-CODE (class, number) and its reason.
std::vector<std::byte> ipv6_refused_value() {
  constexpr std::string_view kReason = "Address Family not Supported";
  std::vector<std::byte> value = {std::byte{kFamilyIPv6}, std::byte{0},
                                  std::byte{error_code::kAddressFamilyNotSupported / 100},
                                  std::byte{error_code::kAddressFamilyNotSupported % 100}};
  for (char c : kReason) value.push_back(static_cast<std::byte>(c));
  return value;
}

}  // namespace

const char* to_string(Transport transport) {
  switch (transport) {
    case Transport::kUdp: return "udp";
    case Transport::kTcp: return "tcp";
    case Transport::kTls: return "tls";
  }
  return "?";
}

std::string ClientKey::to_string() const {
  std::string text = std::string(turn::to_string(transport)) + " " + address.to_string();
  if (connection != 0) text += " #" + std::to_string(connection);
  return text;
}

TurnServer::TurnServer(TurnConfig config, TurnIo& io, std::optional<NonceMint> nonces)
    : config_(std::move(config)),
      io_(io),
      nonces_(nonces ? std::move(*nonces) : NonceMint::with_random_key()),
      registry_(config_.registry ? config_.registry
                                 : std::make_shared<AllocationRegistry>(AllocationRegistry::Limits{
                                       config_.max_allocations_per_user,
                                       config_.max_allocations_per_address,
                                       config_.max_allocations})),
      relayed_(config_.stats ? &config_.stats->relayed_counters() : nullptr) {}

// The I/O side owns the relayed sockets and closes them itself at shutdown.
TurnServer::~TurnServer() = default;

uint64_t TurnServer::unix_now() const {
  return config_.unix_now ? config_.unix_now() : static_cast<uint64_t>(std::time(nullptr));
}

TurnServer::Allocation* TurnServer::find(const ClientKey& client) {
  auto it = by_client_.find(client);
  if (it == by_client_.end()) return nullptr;
  return &allocations_.at(it->second);
}

std::optional<TransportAddress> TurnServer::relayed_address(const ClientKey& client) const {
  auto it = by_client_.find(client);
  if (it == by_client_.end()) return std::nullopt;
  return allocations_.at(it->second).relayed;
}

// ---- input ---------------------------------------------------------------------

TurnServer::Result TurnServer::on_client_message(const ClientKey& client,
                                                 std::span<const std::byte> bytes,
                                                 TimePoint now) {
  if (looks_like_channel_data(bytes)) {
    auto channel_data = parse_channel_data(bytes);
    if (!channel_data) return {Verdict::kMalformed, "truncated ChannelData"};
    handle_channel_data(client, channel_data->channel, channel_data->data, now);
    return {};
  }
  auto parsed = stun::parse(bytes);
  if (parsed.status != stun::ParseStatus::kOk) return {Verdict::kMalformed, parsed.error};
  handle_request(client, parsed.message, now);
  return {};
}

void TurnServer::handle_request(const ClientKey& client, const Message& request, TimePoint now) {
  const uint16_t method = request.method();
  if (request.message_class() == MessageClass::kIndication) {
    if (method == method::kSend) handle_send_indication(client, request, now);
    return;  // other indications: nothing to do
  }
  if (request.message_class() != MessageClass::kRequest) return;  // stray responses

  switch (method) {
    case method::kBinding: {
      // The services send Binding to stun::BindingResponder; answer anyway.
      MessageBuilder builder(method, MessageClass::kSuccessResponse, request.transaction_id);
      builder.add_xor_mapped_address(client.address);
      builder.add_software(config_.software);
      builder.add_fingerprint();
      io_.send_to_client(client, builder.bytes());
      return;
    }
    case method::kAllocate:
    case method::kRefresh:
    case method::kCreatePermission:
    case method::kChannelBind:
      break;
    default:
      send_error(client, request, error_code::kBadRequest, "Unsupported method", nullptr);
      return;
  }

  auto auth = authenticate(client, request, now);
  if (!auth) return;
  std::vector<uint16_t> unknown;
  for (const auto& attribute : request.attributes)
    if (!understands(attribute.type) &&
        std::find(unknown.begin(), unknown.end(), attribute.type) == unknown.end())
      unknown.push_back(attribute.type);
  if (!unknown.empty()) {
    log::debug("turn: %s: unknown attribute 0x%04x", client.to_string().c_str(), unknown[0]);
    send_error(client, request, error_code::kUnknownAttribute, "Unknown Attribute", &*auth,
               unknown);
    return;
  }
  if (method == method::kAllocate) {
    handle_allocate(client, request, *auth, now);
    return;
  }
  Allocation* allocation = find(client);
  if (!allocation) {
    send_error(client, request, error_code::kAllocationMismatch, "Allocation Mismatch", &*auth);
    return;
  }
  switch (method) {
    case method::kRefresh:
      handle_refresh(client, *allocation, request, *auth, now);
      break;
    case method::kCreatePermission:
      handle_create_permission(client, *allocation, request, *auth, now);
      break;
    case method::kChannelBind:
      handle_channel_bind(client, *allocation, request, *auth, now);
      break;
    default:
      break;
  }
}

// RFC 8489 section 9.2.4, in its order: no integrity -> 401 with REALM and NONCE;
// missing USERNAME/REALM/NONCE -> 400; bad username (here: not a REST username, or
// expired) -> 401; wrong integrity -> 401 (441 when the 5-tuple already has an
// allocation: RFC 8656 section 5, "credentials do not match"); stale nonce -> 438.
std::optional<TurnServer::Auth> TurnServer::authenticate(const ClientKey& client,
                                                         const Message& request,
                                                         TimePoint now) {
  const Attribute* integrity = request.find(stun::attr::kMessageIntegrity);
  const Attribute* integrity256 = request.find(stun::attr::kMessageIntegritySha256);
  if (!integrity && !integrity256) {
    send_challenge(client, request, error_code::kUnauthorized, "Unauthorized", now);
    return std::nullopt;
  }
  const Attribute* username = request.find(stun::attr::kUsername);
  const Attribute* realm = request.find(stun::attr::kRealm);
  const Attribute* nonce = request.find(stun::attr::kNonce);
  if (!username || !realm || !nonce) {
    send_error(client, request, error_code::kBadRequest, "Missing USERNAME, REALM or NONCE",
               nullptr);
    return std::nullopt;
  }
  // The first 401 (no integrity yet) is how every client learns the nonce; only
  // the refusals below are errors worth counting (--metrics: turn_401).
  if (text_of(*realm) != config_.realm) {
    count_error(error_code::kUnauthorized);
    send_challenge(client, request, error_code::kUnauthorized, "Unknown realm", now);
    return std::nullopt;
  }
  const std::string name(text_of(*username));
  const auto expiry = rest_expiry(name);
  if (!expiry || *expiry < unix_now()) {
    log::warn_limited("turn-auth", "turn: %s: %s username '%.80s'", client.to_string().c_str(),
                      expiry ? "expired" : "not a REST", name.c_str());
    count_error(error_code::kUnauthorized);
    send_challenge(client, request, error_code::kUnauthorized,
                   expiry ? "Credentials expired" : "Unknown user", now);
    return std::nullopt;
  }
  const std::string password = rest_password(config_.secret, name);
  const auto key = long_term_key(name, config_.realm, password);
  const bool ok = integrity256 ? stun::verify_message_integrity_sha256(request, key)
                               : stun::verify_message_integrity(request, key);
  const Allocation* existing = find(client);
  if (!ok || (existing && existing->username != name)) {
    log::warn_limited("turn-auth", "turn: %s: wrong credentials for '%.80s'",
                      client.to_string().c_str(), name.c_str());
    if (existing) {
      send_error(client, request, error_code::kWrongCredentials, "Wrong Credentials", nullptr);
    } else {
      count_error(error_code::kUnauthorized);
      send_challenge(client, request, error_code::kUnauthorized, "Unauthorized", now);
    }
    return std::nullopt;
  }
  if (nonces_.check(text_of(*nonce), now, client.to_string()) != NonceMint::Check::kValid) {
    send_challenge(client, request, error_code::kStaleNonce, "Stale Nonce", now);
    return std::nullopt;
  }
  return Auth{name, std::vector<std::byte>(key.begin(), key.end()), integrity256 != nullptr};
}

// ---- requests --------------------------------------------------------------------

void TurnServer::handle_allocate(const ClientKey& client, const Message& request, const Auth& auth,
                                 TimePoint now) {
  if (Allocation* existing = find(client)) {
    // Section 7.2: a retransmitted Allocate gets the same answer; anything else on
    // a 5-tuple that has an allocation is a mismatch.
    if (existing->allocate_transaction != request.transaction_id) {
      send_error(client, request, error_code::kAllocationMismatch, "Allocation Mismatch", &auth);
      return;
    }
    const auto left = std::chrono::duration_cast<std::chrono::seconds>(existing->expires - now);
    const TransportAddress relayed = existing->relayed;
    const auto reservation = existing->reservation;
    send_success(client, request, auth, [&](MessageBuilder& builder) {
      builder.add_attribute(attr::kXorRelayedAddress,
                            stun::encode_xor_address(relayed, request.transaction_id));
      builder.add_attribute(attr::kLifetime,
                            u32_value(static_cast<uint32_t>(std::max<int64_t>(left.count(), 0))));
      if (reservation)
        builder.add_attribute(attr::kReservationToken, std::as_bytes(std::span(*reservation)));
      builder.add_xor_mapped_address(client.address);
      if (relayed_family(request, config_.ipv6_available).ipv6_refused)
        builder.add_attribute(attr::kAddressErrorCode, ipv6_refused_value());
    });
    return;
  }
  const Attribute* transport = request.find(attr::kRequestedTransport);
  if (!transport || transport->value.size() != 4) {
    send_error(client, request, error_code::kBadRequest, "Missing REQUESTED-TRANSPORT", &auth);
    return;
  }
  if (std::to_integer<uint8_t>(transport->value[0]) != kProtocolUdp) {
    send_error(client, request, error_code::kUnsupportedTransportProtocol,
               "Unsupported Transport Protocol", &auth);
    return;
  }
  // Section 7.2: a RESERVATION-TOKEN names the relayed address already, so it comes
  // with neither EVEN-PORT nor an address family (400); its length is fixed
  // (section 18.10).
  const Attribute* token = request.find(attr::kReservationToken);
  if (token && (token->value.size() != kReservationTokenBytes || request.find(attr::kEvenPort) ||
                request.find(attr::kRequestedAddressFamily) ||
                request.find(attr::kAdditionalAddressFamily))) {
    send_error(client, request, error_code::kBadRequest, "Bad RESERVATION-TOKEN", &auth);
    return;
  }
  const FamilyChoice family = relayed_family(request, config_.ipv6_available);
  if (family.error != 0) {
    send_error(client, request, family.error, family.reason, &auth);
    return;
  }
  // Section 7.2: EVEN-PORT asks for an even relayed port; its R bit asks to reserve
  // the next one too (allocate_pair).
  bool even_port = false;
  bool reserve_next = false;
  if (const Attribute* even = request.find(attr::kEvenPort)) {
    if (even->value.empty()) {
      send_error(client, request, error_code::kBadRequest, "Bad EVEN-PORT", &auth);
      return;
    }
    reserve_next = (std::to_integer<uint8_t>(even->value[0]) & kEvenPortReserveBit) != 0;
    even_port = true;
  }
  const auto lifetime = desired_lifetime(request, /*allow_zero=*/false);
  if (!lifetime) {
    send_error(client, request, error_code::kBadRequest, "Bad LIFETIME", &auth);
    return;
  }
  if (token) {
    ReservationToken value{};
    std::transform(token->value.begin(), token->value.end(), value.begin(),
                   [](std::byte b) { return std::to_integer<uint8_t>(b); });
    allocate_reserved(client, request, auth, value, *lifetime, now);
    return;
  }
  if (reserve_next) {
    allocate_pair(client, request, auth, family.family, *lifetime, now);
    return;
  }
  const std::string user_id(rest_user_id(auth.username));
  const relay::SourceKey source = relay::source_key(client.address);
  if (refuse_admission(client, request, auth, user_id, registry_->admit(user_id, source))) return;
  const AllocationId id = next_id_++;
  const auto relayed = io_.open_relay(id, client, family.family, even_port);
  if (!relayed) {
    registry_->release(user_id, source);
    log::warn_limited("turn-capacity", "turn: no relayed port for %s",
                      client.to_string().c_str());
    send_error(client, request, error_code::kInsufficientCapacity, "Insufficient Capacity", &auth);
    return;
  }
  install_allocation(client, request, auth, id, *relayed, *lifetime, std::nullopt, now);
}

bool TurnServer::refuse_admission(const ClientKey& client, const Message& request,
                                  const Auth& auth, const std::string& user_id,
                                  const AllocationRegistry::Verdict& verdict) {
  switch (verdict.admission) {
    case AllocationRegistry::Admission::kAdmitted:
      return false;
    case AllocationRegistry::Admission::kUserQuota:
      log::warn_limited("turn-quota",
                        "turn: %s: user '%.64s' has %zu allocations, the most allowed",
                        client.to_string().c_str(), user_id.c_str(), verdict.held);
      count_kind("turn_quota_user");
      send_error(client, request, error_code::kAllocationQuotaReached,
                 "Allocation Quota Reached", &auth);
      return true;
    case AllocationRegistry::Admission::kAddressQuota:
      log::warn_limited("turn-quota-address",
                        "turn: %s: its address has %zu allocations, the most allowed",
                        client.to_string().c_str(), verdict.held);
      count_kind("turn_quota_address");
      send_error(client, request, error_code::kAllocationQuotaReached,
                 "Allocation Quota Reached", &auth);
      return true;
    case AllocationRegistry::Admission::kFull:
      log::warn_limited("turn-capacity", "turn: %zu allocations, the most allowed; refusing %s",
                        verdict.held, client.to_string().c_str());
      send_error(client, request, error_code::kInsufficientCapacity, "Insufficient Capacity",
                 &auth);
      return true;
  }
  return true;
}

// Section 7.2, EVEN-PORT with R=1: two places in the quotas (the allocation and the
// reservation), an even port, and the next one held under a token for
// reservation_lifetime.
void TurnServer::allocate_pair(const ClientKey& client, const Message& request,
                               const Auth& auth, TransportAddress::Family family,
                               std::chrono::seconds lifetime, TimePoint now) {
  const std::string user_id(rest_user_id(auth.username));
  const relay::SourceKey source = relay::source_key(client.address);
  if (refuse_admission(client, request, auth, user_id, registry_->admit(user_id, source, 2)))
    return;
  const AllocationId id = next_id_++;
  auto pair = io_.open_relay_pair(id, client, family);
  if (!pair || !pair->reserved) {
    if (pair) io_.close_relay(id);
    registry_->release(user_id, source);
    registry_->release(user_id, source);
    log::warn_limited("turn-capacity", "turn: no relayed port pair for %s",
                      client.to_string().c_str());
    send_error(client, request, error_code::kInsufficientCapacity, "Insufficient Capacity", &auth);
    return;
  }
  const TimePoint expires = now + config_.reservation_lifetime;
  const ReservationToken token =
      registry_->reserve(user_id, source, std::move(pair->reserved), expires, this);
  if (config_.stats) ++config_.stats->turn_reservations_total;
  Timer timer{expires, 0, TimerKind::kReservation, {}};
  std::copy(token.begin(), token.end(), timer.key.begin());
  timers_.insert(timer);
  install_allocation(client, request, auth, id, pair->relayed, lifetime, token, now);
}

// Section 7.2: the Allocate that brings a RESERVATION-TOKEN gets the reserved port,
// wherever (on whichever shard) it was reserved; a token that is unknown, expired,
// used already or another user's gets a 508.
void TurnServer::allocate_reserved(const ClientKey& client, const Message& request,
                                   const Auth& auth, const ReservationToken& token,
                                   std::chrono::seconds lifetime, TimePoint now) {
  const std::string user_id(rest_user_id(auth.username));
  auto redeemed =
      registry_->redeem(token, user_id, relay::source_key(client.address), now, this);
  if (!redeemed.relay) {
    if (refuse_admission(client, request, auth, user_id, {redeemed.admission, redeemed.held}))
      return;
    log::warn_limited("turn-reservation", "turn: %s: no reservation under its token",
                      client.to_string().c_str());
    count_kind("turn_reservation_unknown");
    send_error(client, request, error_code::kInsufficientCapacity, "Unknown reservation", &auth);
    return;
  }
  const AllocationId id = next_id_++;
  const auto relayed = io_.adopt_relay(id, client, std::move(redeemed.relay));
  if (!relayed) {
    registry_->release(user_id, relay::source_key(client.address));
    log::warn_limited("turn-capacity", "turn: reserved port not taken in for %s",
                      client.to_string().c_str());
    send_error(client, request, error_code::kInsufficientCapacity, "Insufficient Capacity", &auth);
    return;
  }
  if (config_.stats)
    ++(redeemed.other_owner ? config_.stats->turn_reservations_redeemed_other_shard
                            : config_.stats->turn_reservations_redeemed_same_shard);
  install_allocation(client, request, auth, id, *relayed, lifetime, std::nullopt, now);
}

void TurnServer::install_allocation(const ClientKey& client, const Message& request,
                                    const Auth& auth, AllocationId id,
                                    const TransportAddress& relayed,
                                    std::chrono::seconds lifetime,
                                    std::optional<ReservationToken> reservation, TimePoint now) {
  Allocation& allocation = allocations_[id];
  if (config_.stats) ++config_.stats->turn_allocations_total;
  allocation.id = id;
  allocation.client = client;
  allocation.relayed = relayed;
  registry_->add_relayed(relayed);
  by_relayed_[relayed] = id;
  allocation.username = auth.username;
  allocation.user_id = rest_user_id(auth.username);
  allocation.key = auth.key;
  allocation.allocate_transaction = request.transaction_id;
  allocation.reservation = reservation;
  allocation.bucket =
      TokenBucket(static_cast<double>(config_.bandwidth_cap), std::chrono::seconds(1), now);
  set_allocation_expiry(allocation, now + lifetime);
  allocation.unused_deadline = now + config_.unused_allocation_timeout;
  timers_.insert({*allocation.unused_deadline, id, TimerKind::kUnused, {}});
  by_client_[client] = id;
  log::debug("turn: allocation %" PRIu64 " for %s (%s): relayed %s, %lld s%s", id,
             client.to_string().c_str(), auth.username.c_str(), relayed.to_string().c_str(),
             static_cast<long long>(lifetime.count()),
             reservation ? ", next port reserved" : "");
  send_success(client, request, auth, [&](MessageBuilder& builder) {
    builder.add_attribute(attr::kXorRelayedAddress,
                          stun::encode_xor_address(relayed, request.transaction_id));
    builder.add_attribute(attr::kLifetime, u32_value(static_cast<uint32_t>(lifetime.count())));
    if (reservation)
      builder.add_attribute(attr::kReservationToken, std::as_bytes(std::span(*reservation)));
    builder.add_xor_mapped_address(client.address);
    if (relayed_family(request, config_.ipv6_available).ipv6_refused)
      builder.add_attribute(attr::kAddressErrorCode, ipv6_refused_value());
  });
}

void TurnServer::handle_refresh(const ClientKey& client, Allocation& allocation,
                                const Message& request, const Auth& auth, TimePoint now) {
  if (const Attribute* requested = request.find(attr::kRequestedAddressFamily)) {
    const bool v6 = requested->value.size() == 4 &&
                    std::to_integer<uint8_t>(requested->value[0]) == kFamilyIPv6;
    if (v6 != (allocation.relayed.family == TransportAddress::Family::kIPv6)) {
      send_error(client, request, error_code::kPeerAddressFamilyMismatch,
                 "Peer Address Family Mismatch", &auth);
      return;
    }
  }
  const auto lifetime = desired_lifetime(request, /*allow_zero=*/true);
  if (!lifetime) {
    send_error(client, request, error_code::kBadRequest, "Bad LIFETIME", &auth);
    return;
  }
  send_success(client, request, auth, [&](MessageBuilder& builder) {
    builder.add_attribute(attr::kLifetime, u32_value(static_cast<uint32_t>(lifetime->count())));
  });
  if (lifetime->count() == 0) {
    remove(allocation.id, "refreshed with lifetime 0");
    return;
  }
  set_allocation_expiry(allocation, now + *lifetime);
}

void TurnServer::handle_create_permission(const ClientKey& client, Allocation& allocation,
                                          const Message& request, const Auth& auth, TimePoint now) {
  std::vector<TransportAddress> peers;
  for (const auto& attribute : request.attributes) {
    if (attribute.type != attr::kXorPeerAddress) continue;
    auto peer = stun::decode_xor_address(attribute.value, request.transaction_id);
    if (!peer) {
      send_error(client, request, error_code::kBadRequest, "Bad XOR-PEER-ADDRESS", &auth);
      return;
    }
    peers.push_back(*peer);
  }
  if (peers.empty()) {
    send_error(client, request, error_code::kBadRequest, "Missing XOR-PEER-ADDRESS", &auth);
    return;
  }
  // Section 9.2: all or nothing.
  for (const auto& peer : peers) {
    if (peer.family != allocation.relayed.family) {
      send_error(client, request, error_code::kPeerAddressFamilyMismatch,
                 "Peer Address Family Mismatch", &auth);
      return;
    }
    if (!may_relay(peer, true)) {
      log::warn_limited("turn-forbidden", "turn: %s: permission for %s refused",
                        client.to_string().c_str(), peer.to_string().c_str());
      send_error(client, request, error_code::kForbidden, "Forbidden", &auth);
      return;
    }
  }
  if (!has_room(allocation, peers, 0)) {
    refuse_beyond_room(client, request, auth);
    return;
  }
  for (const auto& peer : peers) install_permission(allocation, peer, now);
  send_success(client, request, auth, [](MessageBuilder&) {});
}

void TurnServer::handle_channel_bind(const ClientKey& client, Allocation& allocation,
                                     const Message& request, const Auth& auth, TimePoint now) {
  const Attribute* number_attribute = request.find(attr::kChannelNumber);
  const Attribute* peer_attribute = request.find(attr::kXorPeerAddress);
  std::optional<TransportAddress> peer;
  if (peer_attribute) peer = stun::decode_xor_address(peer_attribute->value, request.transaction_id);
  if (!number_attribute || number_attribute->value.size() != 4 || !peer) {
    send_error(client, request, error_code::kBadRequest,
               "Missing CHANNEL-NUMBER or XOR-PEER-ADDRESS", &auth);
    return;
  }
  const auto number = static_cast<uint16_t>(read_u32(number_attribute->value) >> 16);
  if (!is_valid_channel_number(number)) {
    send_error(client, request, error_code::kBadRequest, "Bad channel number", &auth);
    return;
  }
  if (peer->family != allocation.relayed.family) {
    send_error(client, request, error_code::kPeerAddressFamilyMismatch,
               "Peer Address Family Mismatch", &auth);
    return;
  }
  if (!may_relay(*peer, false)) {
    log::warn_limited("turn-forbidden", "turn: %s: channel to %s refused",
                      client.to_string().c_str(), peer->to_string().c_str());
    send_error(client, request, error_code::kForbidden, "Forbidden", &auth);
    return;
  }
  // Section 12.2: a number is bound to one peer and a peer to one number, also for
  // kChannelRebindGuard after the binding expires.
  for (const auto& [other_number, channel] : allocation.channels) {
    const bool same_number = other_number == number;
    const bool same_peer = channel.peer == *peer;
    if (same_number != same_peer) {
      send_error(client, request, error_code::kBadRequest,
                 same_number ? "Channel bound to another peer" : "Peer bound to another channel",
                 &auth);
      return;
    }
  }
  if (!has_room(allocation, std::span(&*peer, 1), number)) {
    refuse_beyond_room(client, request, auth);
    return;
  }
  auto [slot, fresh] = allocation.channels.try_emplace(number);
  if (fresh) ++channel_count_;
  Channel& channel = slot->second;
  if (channel.expires != TimePoint{})
    timers_.erase(channel_timer(allocation, number, channel.expires));
  channel = Channel{*peer, now + kChannelLifetime};
  timers_.insert(channel_timer(allocation, number, channel.expires));
  install_permission(allocation, *peer, now);
  send_success(client, request, auth, [](MessageBuilder&) {});
}

// ---- data ------------------------------------------------------------------------

void TurnServer::handle_send_indication(const ClientKey& client, const Message& indication,
                                        TimePoint now) {
  Allocation* allocation = find(client);
  if (!allocation) return;  // section 10.2: silently discarded
  const Attribute* peer_attribute = indication.find(attr::kXorPeerAddress);
  const Attribute* data = indication.find(attr::kData);
  if (!peer_attribute || !data) return;
  auto peer = stun::decode_xor_address(peer_attribute->value, indication.transaction_id);
  if (!peer || peer->family != allocation->relayed.family) return;
  if (!has_permission(*allocation, *peer, now) || !may_relay(*peer, false)) return;
  if (!take_tokens(*allocation, data->value.size(), now)) return;
  count_relayed(true, data->value.size());
  send_from(*allocation, *peer, data->value, now);
}

void TurnServer::handle_channel_data(const ClientKey& client, uint16_t number,
                                     std::span<const std::byte> data, TimePoint now) {
  Allocation* allocation = find(client);
  if (!allocation) return;
  auto it = allocation->channels.find(number);
  if (it == allocation->channels.end() || now >= it->second.expires) return;  // section 12.6
  const TransportAddress& peer = it->second.peer;
  if (!has_permission(*allocation, peer, now) || !may_relay(peer, false)) return;
  if (!take_tokens(*allocation, data.size(), now)) return;
  count_relayed(true, data.size());
  send_from(*allocation, peer, data, now);
}

void TurnServer::send_from(const Allocation& from, const TransportAddress& peer,
                           std::span<const std::byte> data, TimePoint now) {
  // Relayed addresses of one relay share an IP or two: one comparison keeps the
  // lookup off every other datagram's path.
  if (peer.ip == from.relayed.ip && peer.family == from.relayed.family) {
    if (auto it = by_relayed_.find(peer); it != by_relayed_.end()) {
      if (relayed_) relayed_->count_handed_over();
      // on_peer_data() only looks allocations up and sends to a client: `from` and
      // the caller's references stay valid.
      on_peer_data(it->second, from.relayed, data, now);
      return;
    }
  }
  io_.send_to_peer(from.id, peer, data);
}

void TurnServer::on_peer_data(AllocationId id, const TransportAddress& peer,
                              std::span<const std::byte> bytes, TimePoint now) {
  auto it = allocations_.find(id);
  if (it == allocations_.end()) return;
  Allocation& allocation = it->second;
  // Section 11.3: only from peers with a permission; never from denied ranges.
  if (!has_permission(allocation, peer, now) || !may_relay(peer, false)) return;
  if (!take_tokens(allocation, bytes.size(), now)) return;
  count_relayed(false, bytes.size());
  for (const auto& [number, channel] : allocation.channels) {
    if (channel.peer == peer && now < channel.expires) {
      const bool pad = allocation.client.transport != Transport::kUdp;
      const auto header = channel_data_header(number, bytes.size());
      const std::span<const std::byte> pieces[] = {header, bytes,
                                                   channel_data_padding(bytes.size(), pad)};
      io_.send_gathered_to_client(allocation.client, pieces);
      return;
    }
  }
  // Section 11.3: a Data indication. Its transaction id only needs to be unique.
  stun::TransactionId transaction{};
  const uint64_t counter = ++data_indications_;
  for (size_t i = 0; i < 8; ++i) transaction[4 + i] = static_cast<std::byte>(counter >> (8 * i));
  transaction[0] = static_cast<std::byte>(id);
  transaction[1] = static_cast<std::byte>(id >> 8);
  MessageBuilder builder(method::kData, MessageClass::kIndication, transaction);
  builder.add_attribute(attr::kXorPeerAddress, stun::encode_xor_address(peer, transaction));
  builder.add_attribute(attr::kData, bytes);
  io_.send_to_client(allocation.client, builder.bytes());
}

void TurnServer::count_relayed(bool to_peer, size_t bytes) {
  if (relayed_) relayed_->count(to_peer, bytes);
}

bool TurnServer::take_tokens(Allocation& allocation, size_t bytes, TimePoint now) {
  if (config_.bandwidth_cap == 0) return true;
  return allocation.bucket.take(static_cast<double>(bytes), now);
}

bool TurnServer::has_permission(const Allocation& allocation, const TransportAddress& peer,
                                TimePoint now) const {
  if (peer.family != allocation.relayed.family) return false;
  auto it = allocation.permissions.find(ip_key(peer));
  return it != allocation.permissions.end() && now < it->second;
}

bool TurnServer::has_room(const Allocation& allocation, std::span<const TransportAddress> peers,
                          uint16_t number) const {
  const size_t limit = config_.max_permissions_per_allocation;
  if (number != 0 && !allocation.channels.contains(number) &&
      allocation.channels.size() >= limit)
    return false;
  std::set<std::array<uint8_t, 16>> fresh;
  for (const auto& peer : peers)
    if (!allocation.permissions.contains(ip_key(peer))) fresh.insert(ip_key(peer));
  return allocation.permissions.size() + fresh.size() <= limit;
}

void TurnServer::refuse_beyond_room(const ClientKey& client, const Message& request,
                                    const Auth& auth) {
  log::warn_limited("turn-permissions", "turn: %s: permissions or channels beyond %zu refused",
                    client.to_string().c_str(), config_.max_permissions_per_allocation);
  count_kind("turn_permission_limit");
  send_error(client, request, error_code::kInsufficientCapacity, "Insufficient Capacity", &auth);
}

void TurnServer::install_permission(Allocation& allocation, const TransportAddress& peer,
                                    TimePoint now) {
  const auto ip = ip_key(peer);
  auto [it, inserted] = allocation.permissions.try_emplace(ip, TimePoint{});
  if (inserted)
    ++permission_count_;
  else
    timers_.erase(permission_timer(allocation, ip, it->second));
  it->second = now + kPermissionLifetime;
  timers_.insert(permission_timer(allocation, ip, it->second));
  // In use now: it is no longer given back early.
  if (allocation.unused_deadline) {
    timers_.erase({*allocation.unused_deadline, allocation.id, TimerKind::kUnused, {}});
    allocation.unused_deadline.reset();
  }
}

TurnServer::Timer TurnServer::permission_timer(const Allocation& allocation,
                                               const std::array<uint8_t, 16>& ip,
                                               TimePoint expires) {
  return {expires, allocation.id, TimerKind::kPermission, ip};
}

// A channel's entry goes when its rebinding guard ends (section 12); until then it
// is kept, expired, so that the number and the peer stay tied to each other.
TurnServer::Timer TurnServer::channel_timer(const Allocation& allocation, uint16_t number,
                                            TimePoint expires) {
  return {expires + kChannelRebindGuard, allocation.id, TimerKind::kChannel,
          channel_key(number)};
}

void TurnServer::on_client_closed(const ClientKey& client) {
  if (Allocation* allocation = find(client)) remove(allocation->id, "client connection closed");
}

// ---- time ------------------------------------------------------------------------

void TurnServer::set_allocation_expiry(Allocation& allocation, TimePoint expires) {
  if (allocation.expires != TimePoint{})
    timers_.erase({allocation.expires, allocation.id, TimerKind::kAllocation, {}});
  allocation.expires = expires;
  timers_.insert({expires, allocation.id, TimerKind::kAllocation, {}});
}

void TurnServer::on_tick(TimePoint now) {
  for (size_t done = 0; done < kMaxExpiriesPerTick && !timers_.empty() &&
                        timers_.begin()->when <= now;
       ++done) {
    const Timer timer = *timers_.begin();
    timers_.erase(timers_.begin());
    expire(timer);
  }
}

// Every entry in timers_ is current: a refresh replaces its entry, and remove()
// takes all of an allocation's.
void TurnServer::expire(const Timer& timer) {
  if (timer.kind == TimerKind::kReservation) {
    ReservationToken token{};
    std::copy_n(timer.key.begin(), token.size(), token.begin());
    registry_->expire_reservation(token, timer.when);
    return;
  }
  auto it = allocations_.find(timer.id);
  if (it == allocations_.end()) return;
  Allocation& allocation = it->second;
  switch (timer.kind) {
    case TimerKind::kAllocation:
      remove(timer.id, "expired");
      return;
    case TimerKind::kUnused:
      allocation.unused_deadline.reset();
      count_kind("turn_unused_allocation");
      remove(timer.id, "no permission or channel in time");
      return;
    case TimerKind::kPermission:
      if (allocation.permissions.erase(timer.key) > 0) --permission_count_;
      return;
    case TimerKind::kChannel:
      if (allocation.channels.erase(static_cast<uint16_t>((timer.key[0] << 8) | timer.key[1])) > 0)
        --channel_count_;
      return;
    case TimerKind::kReservation:
      return;
  }
}

std::optional<TimePoint> TurnServer::next_deadline() const {
  if (timers_.empty()) return std::nullopt;
  return timers_.begin()->when;
}

bool TurnServer::may_relay(const TransportAddress& peer, bool any_port) const {
  if (config_.peers.is_allowed(peer)) return true;
  return registry_->is_relayed(peer, any_port);
}

void TurnServer::remove(AllocationId id, std::string_view why) {
  auto it = allocations_.find(id);
  if (it == allocations_.end()) return;
  Allocation& allocation = it->second;
  log::debug("turn: allocation %" PRIu64 " of %s removed: %.*s", id,
             allocation.client.to_string().c_str(), static_cast<int>(why.size()), why.data());
  io_.close_relay(id);
  registry_->remove_relayed(allocation.relayed);
  by_relayed_.erase(allocation.relayed);
  registry_->release(allocation.user_id, relay::source_key(allocation.client.address));
  by_client_.erase(allocation.client);
  timers_.erase({allocation.expires, id, TimerKind::kAllocation, {}});
  if (allocation.unused_deadline)
    timers_.erase({*allocation.unused_deadline, id, TimerKind::kUnused, {}});
  for (const auto& [ip, expires] : allocation.permissions)
    timers_.erase(permission_timer(allocation, ip, expires));
  for (const auto& [number, channel] : allocation.channels)
    timers_.erase(channel_timer(allocation, number, channel.expires));
  permission_count_ -= allocation.permissions.size();
  channel_count_ -= allocation.channels.size();
  allocations_.erase(it);
}

// ---- responses -------------------------------------------------------------------

void TurnServer::send_success(const ClientKey& client, const Message& request, const Auth& auth,
                              const std::function<void(MessageBuilder&)>& add) {
  MessageBuilder builder(request.method(), MessageClass::kSuccessResponse, request.transaction_id);
  add(builder);
  builder.add_software(config_.software);
  if (auth.sha256)
    builder.add_message_integrity_sha256(auth.key);
  else
    builder.add_message_integrity(auth.key);
  builder.add_fingerprint();
  io_.send_to_client(client, builder.bytes());
}

void TurnServer::count_error(int code) {
  if (config_.stats) config_.stats->error("turn_" + std::to_string(code));
}

void TurnServer::count_kind(std::string_view kind) {
  if (config_.stats) config_.stats->error(kind);
}

void TurnServer::send_error(const ClientKey& client, const Message& request, int code,
                            std::string_view reason, const Auth* auth,
                            std::span<const uint16_t> unknown) {
  count_error(code);
  MessageBuilder builder(request.method(), MessageClass::kErrorResponse, request.transaction_id);
  builder.add_error_code(code, reason);
  if (!unknown.empty()) builder.add_unknown_attributes(unknown);
  builder.add_software(config_.software);
  if (auth) {
    if (auth->sha256)
      builder.add_message_integrity_sha256(auth->key);
    else
      builder.add_message_integrity(auth->key);
  }
  builder.add_fingerprint();
  io_.send_to_client(client, builder.bytes());
}

void TurnServer::send_challenge(const ClientKey& client, const Message& request, int code,
                                std::string_view reason, TimePoint now) {
  MessageBuilder builder(request.method(), MessageClass::kErrorResponse, request.transaction_id);
  builder.add_error_code(code, reason);
  const std::string nonce = nonces_.issue(now, client.to_string());
  builder.add_attribute(stun::attr::kRealm, std::as_bytes(std::span(config_.realm)));
  builder.add_attribute(stun::attr::kNonce, std::as_bytes(std::span(nonce)));
  builder.add_software(config_.software);
  builder.add_fingerprint();
  io_.send_to_client(client, builder.bytes());
}

}  // namespace natfwd::turn

// TURN server core (relay/turn/): long-term auth with REST credentials, the error
// vocabulary, lifetimes on a fake clock, permissions and channels, relaying both ways,
// and bad input. No sockets: a recording TurnIo stands in for the GLib side.
#include <catch2/catch.hpp>

#include <deque>
#include <memory>
#include <map>
#include <string>

#include "turn/credentials.h"
#include "stun/turn_framing.h"
#include "turn/peer_policy.h"
#include "turn/turn_server.h"

using namespace natfwd;
using namespace natfwd::turn;
using stun::MessageBuilder;
using stun::MessageClass;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t kUnixNow = 1700000000;
const std::string kSecret = "s3cret";

std::span<const std::byte> bytes_of(std::string_view text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

TransportAddress v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint16_t port) {
  return TransportAddress::ipv4({a, b, c, d}, port);
}

struct FakeIo : TurnIo {
  struct PeerSend {
    AllocationId id;
    TransportAddress peer;
    std::vector<std::byte> bytes;
  };
  std::deque<std::pair<ClientKey, std::vector<std::byte>>> to_client;
  std::vector<PeerSend> to_peer;
  std::map<AllocationId, TransportAddress> open;
  bool refuse = false;
  uint16_t next_port = 50000;

  std::optional<TransportAddress> open_relay(AllocationId id, const ClientKey&,
                                             TransportAddress::Family family,
                                             bool even) override {
    if (refuse) return std::nullopt;
    if (even && next_port % 2) ++next_port;
    auto address = family == TransportAddress::Family::kIPv4
                       ? v4(203, 0, 113, 1, next_port++)
                       : TransportAddress::ipv6({0x20, 0x01, 0x0d, 0xb8}, next_port++);
    open[id] = address;
    return address;
  }
  void close_relay(AllocationId id) override { open.erase(id); }
  // EVEN-PORT R=1: the reserved port is a FakeReserved; reserved_alive() counts the
  // ones not yet destroyed (a port given back).
  // The count is shared: a registry may outlive the FakeIo that reserved.
  struct FakeReserved : ReservedRelay {
    TransportAddress where;
    std::shared_ptr<int> alive;
    FakeReserved(TransportAddress a, std::shared_ptr<int> count) : where(a), alive(count) {
      ++*alive;
    }
    ~FakeReserved() override { --*alive; }
    TransportAddress address() const override { return where; }
  };
  std::shared_ptr<int> alive_count = std::make_shared<int>(0);
  int reserved_alive() const { return *alive_count; }
  std::optional<RelayPair> open_relay_pair(AllocationId id, const ClientKey& client,
                                           TransportAddress::Family family) override {
    if (refuse) return std::nullopt;
    auto even = open_relay(id, client, family, true);
    auto odd = *even;
    ++odd.port;
    ++next_port;
    return RelayPair{*even, std::make_unique<FakeReserved>(odd, alive_count)};
  }
  std::optional<TransportAddress> adopt_relay(AllocationId id, const ClientKey&,
                                              std::unique_ptr<ReservedRelay> reserved) override {
    if (refuse) return std::nullopt;
    open[id] = reserved->address();
    return reserved->address();
  }
  void send_to_client(const ClientKey& client, std::span<const std::byte> bytes) override {
    to_client.emplace_back(client, std::vector<std::byte>(bytes.begin(), bytes.end()));
  }
  void send_to_peer(AllocationId id, const TransportAddress& peer,
                    std::span<const std::byte> bytes) override {
    to_peer.push_back({id, peer, std::vector<std::byte>(bytes.begin(), bytes.end())});
  }
};

struct Response {
  std::vector<std::byte> bytes;
  stun::Message message;
  int error = 0;  // 0 for success
  std::string nonce;
};

// A server and one client on a fake clock.
struct Fixture {
  FakeIo io;
  TimePoint now = TimePoint{} + 1000000s;
  uint64_t unix_now = kUnixNow;
  TurnServer server;
  ClientKey client{Transport::kUdp, v4(192, 0, 2, 10, 40000), 0};
  std::string username = rest_username(kUnixNow + 3600, "peerid");
  std::string password = rest_password(kSecret, username);
  std::string nonce;
  uint32_t txn_counter = 1;

  static TurnConfig make_config(Fixture* self, std::function<void(TurnConfig&)> tweak) {
    TurnConfig config;
    config.secret = kSecret;
    config.software = "test";
    config.unix_now = [self] { return self->unix_now; };
    if (tweak) tweak(config);
    return config;
  }
  explicit Fixture(std::function<void(TurnConfig&)> tweak = nullptr)
      : server(make_config(this, tweak), io) {}

  stun::TransactionId txn() {
    stun::TransactionId id{};
    const uint32_t n = txn_counter++;
    for (int i = 0; i < 4; ++i) id[i] = static_cast<std::byte>(n >> (8 * i));
    return id;
  }

  Response take() {
    REQUIRE(!io.to_client.empty());
    Response response;
    response.bytes = std::move(io.to_client.front().second);
    io.to_client.pop_front();
    auto parsed = stun::parse(response.bytes);
    REQUIRE(parsed.status == stun::ParseStatus::kOk);
    response.message = parsed.message;
    response.message.bytes = response.bytes;  // keep the view valid
    auto reparsed = stun::parse(response.bytes);
    response.message = reparsed.message;
    if (response.message.message_class() == MessageClass::kErrorResponse) {
      auto code = stun::decode_error_code(response.message.find(stun::attr::kErrorCode)->value);
      response.error = code->code;
    }
    if (const auto* n = response.message.find(stun::attr::kNonce))
      response.nonce.assign(reinterpret_cast<const char*>(n->value.data()), n->value.size());
    return response;
  }

  // Sends a request with credentials (after a first 401 to learn the nonce).
  using Adder = std::function<void(MessageBuilder&, const stun::TransactionId&)>;
  Response request(uint16_t method, const Adder& add, bool sha256 = false,
                   std::optional<std::string> user = std::nullopt,
                   std::optional<std::string> pass = std::nullopt) {
    if (nonce.empty()) {
      MessageBuilder probe(method, MessageClass::kRequest, txn());
      probe.add_fingerprint();
      server.on_client_message(client, probe.bytes(), now);
      auto challenge = take();
      REQUIRE(challenge.error == 401);
      REQUIRE(challenge.message.find(stun::attr::kRealm));
      nonce = challenge.nonce;
    }
    const std::string name = user.value_or(username);
    const std::string secret = pass.value_or(rest_password(kSecret, name));
    const auto id = txn();
    MessageBuilder builder(method, MessageClass::kRequest, id);
    add(builder, id);
    builder.add_attribute(stun::attr::kUsername, bytes_of(name));
    builder.add_attribute(stun::attr::kRealm, bytes_of("natfwd"));
    builder.add_attribute(stun::attr::kNonce, bytes_of(nonce));
    const auto key = long_term_key(name, "natfwd", secret);
    if (sha256)
      builder.add_message_integrity_sha256(key);
    else
      builder.add_message_integrity(key);
    builder.add_fingerprint();
    REQUIRE(server.on_client_message(client, builder.bytes(), now).verdict ==
            TurnServer::Verdict::kHandled);
    return take();
  }

  static void udp_transport(MessageBuilder& b, const stun::TransactionId&) {
    const std::byte value[4] = {std::byte{17}, {}, {}, {}};
    b.add_attribute(attr::kRequestedTransport, value);
  }
  Response allocate() { return request(stun::method::kAllocate, udp_transport); }
  // EVEN-PORT with the R bit (RFC 8656 section 18.7).
  Response allocate_pair() {
    return request(stun::method::kAllocate, [](MessageBuilder& b, const stun::TransactionId& id) {
      udp_transport(b, id);
      const std::byte reserve[1] = {std::byte{0x80}};
      b.add_attribute(attr::kEvenPort, reserve);
    });
  }
  Response allocate_reserved(std::span<const std::byte> token) {
    return request(stun::method::kAllocate, [&](MessageBuilder& b, const stun::TransactionId& id) {
      udp_transport(b, id);
      b.add_attribute(attr::kReservationToken, token);
    });
  }
  // RFC 8656 section 7.2: REQUESTED-ADDRESS-FAMILY IPv6.
  Response allocate_ipv6() {
    return request(stun::method::kAllocate, [](MessageBuilder& b, const stun::TransactionId& id) {
      udp_transport(b, id);
      const std::byte v6[4] = {std::byte{2}, {}, {}, {}};
      b.add_attribute(attr::kRequestedAddressFamily, v6);
    });
  }
  Response refresh(uint32_t lifetime) {
    return request(stun::method::kRefresh, [&](MessageBuilder& b, const stun::TransactionId&) {
      const std::byte value[4] = {static_cast<std::byte>(lifetime >> 24),
                                  static_cast<std::byte>(lifetime >> 16),
                                  static_cast<std::byte>(lifetime >> 8),
                                  static_cast<std::byte>(lifetime)};
      b.add_attribute(attr::kLifetime, value);
    });
  }
  Response create_permission(const TransportAddress& peer) {
    return request(stun::method::kCreatePermission,
                   [&](MessageBuilder& b, const stun::TransactionId& id) {
                     b.add_attribute(attr::kXorPeerAddress, stun::encode_xor_address(peer, id));
                   });
  }
  Response channel_bind(uint16_t number, const TransportAddress& peer) {
    return request(stun::method::kChannelBind,
                   [&](MessageBuilder& b, const stun::TransactionId& id) {
                     const std::byte value[4] = {static_cast<std::byte>(number >> 8),
                                                 static_cast<std::byte>(number & 0xFF), {}, {}};
                     b.add_attribute(attr::kChannelNumber, value);
                     b.add_attribute(attr::kXorPeerAddress, stun::encode_xor_address(peer, id));
                   });
  }
  void send_indication(const TransportAddress& peer, std::string_view data) {
    const auto id = txn();
    MessageBuilder builder(stun::method::kSend, MessageClass::kIndication, id);
    builder.add_attribute(attr::kXorPeerAddress, stun::encode_xor_address(peer, id));
    builder.add_attribute(attr::kData, bytes_of(data));
    server.on_client_message(client, builder.bytes(), now);
  }
  AllocationId allocation_id() const { return io.open.begin()->first; }
  // The clock moves on, and the server's timer fires.
  void advance(std::chrono::seconds by) {
    now += by;
    server.on_tick(now);
  }
};

const TransportAddress kPeer = v4(198, 51, 100, 7, 5000);

// A fixture tweak that also counts into `stats` (--metrics).
std::function<void(TurnConfig&)> counting(natfwd::relay::RelayStats& stats,
                                          std::function<void(TurnConfig&)> tweak) {
  return [&stats, tweak](TurnConfig& c) {
    c.stats = &stats;
    tweak(c);
  };
}

bool verifies(const Response& response, const Fixture& f) {
  const auto key = long_term_key(f.username, "natfwd", f.password);
  return stun::verify_message_integrity(response.message, key);
}

}  // namespace

TEST_CASE("REST credentials match coturn's formula") {
  // base64(HMAC-SHA1("s3cret", "1700003600:peerid")), computed with openssl dgst.
  CHECK(rest_username(1700003600, "peerid") == "1700003600:peerid");
  CHECK(rest_expiry("1700003600:peerid") == 1700003600u);
  CHECK(rest_expiry("1700003600") == 1700003600u);
  CHECK_FALSE(rest_expiry("alice:1700003600"));
  CHECK(rest_user_id("1700003600:peerid") == "peerid");
  CHECK(rest_password(kSecret, "1700003600:peerid").size() == 28);
  CHECK(rest_password(kSecret, "a") != rest_password(kSecret, "b"));
}

TEST_CASE("nonces expire and are bound to the client") {
  auto mint = NonceMint::with_random_key();
  const TimePoint t0 = TimePoint{} + 5000s;
  const auto nonce = mint.issue(t0, "udp 192.0.2.1:1");
  CHECK(mint.check(nonce, t0 + 599s, "udp 192.0.2.1:1") == NonceMint::Check::kValid);
  CHECK(mint.check(nonce, t0 + 600s, "udp 192.0.2.1:1") == NonceMint::Check::kStale);
  CHECK(mint.check(nonce, t0, "udp 192.0.2.1:2") == NonceMint::Check::kStale);
  CHECK(mint.check("garbage", t0, "udp 192.0.2.1:1") == NonceMint::Check::kStale);
  CHECK(mint.check("", t0, "udp 192.0.2.1:1") == NonceMint::Check::kStale);
}

TEST_CASE("long-term auth: 401 with REALM and NONCE, then an authenticated Allocate") {
  Fixture f;
  auto response = f.allocate();
  REQUIRE(response.error == 0);
  CHECK(response.message.method() == stun::method::kAllocate);
  CHECK(response.message.has_fingerprint);
  CHECK(verifies(response, f));
  auto relayed = stun::decode_xor_address(
      response.message.find(attr::kXorRelayedAddress)->value, response.message.transaction_id);
  REQUIRE(relayed);
  CHECK(*relayed == f.io.open.begin()->second);
  auto mapped = stun::decode_xor_address(
      response.message.find(stun::attr::kXorMappedAddress)->value,
      response.message.transaction_id);
  CHECK(*mapped == f.client.address);
  CHECK(response.message.find(stun::attr::kSoftware));
  CHECK(f.server.allocation_count() == 1);
}

TEST_CASE("MESSAGE-INTEGRITY-SHA256 is accepted and answered in kind") {
  Fixture f;
  auto response = f.request(stun::method::kAllocate, Fixture::udp_transport, /*sha256=*/true);
  REQUIRE(response.error == 0);
  CHECK(response.message.find(stun::attr::kMessageIntegritySha256));
  const auto key = long_term_key(f.username, "natfwd", f.password);
  CHECK(stun::verify_message_integrity_sha256(response.message, key));
}

TEST_CASE("wrong password: 401 on Allocate, 441 on an existing allocation") {
  Fixture f;
  CHECK(f.request(stun::method::kAllocate, Fixture::udp_transport, false, std::nullopt,
                  std::string("wrong")).error == 401);
  CHECK(f.server.allocation_count() == 0);
  REQUIRE(f.allocate().error == 0);
  CHECK(f.request(stun::method::kRefresh, [](auto&, auto&) {}, false, std::nullopt,
                  std::string("wrong")).error == 441);
  // Valid credentials of another user on the same 5-tuple: also 441.
  const auto other = rest_username(kUnixNow + 3600, "someone-else");
  CHECK(f.request(stun::method::kRefresh, [](auto&, auto&) {}, false, other).error == 441);
}

TEST_CASE("refused logins are counted in --metrics, the first challenge is not") {
  natfwd::relay::RelayStats stats;
  Fixture f([&stats](TurnConfig& c) { c.stats = &stats; });
  REQUIRE(f.allocate().error == 0);  // a 401 challenge first, as every client gets
  CHECK(stats.errors["turn_401"] == 0);
  Fixture g([&stats](TurnConfig& c) { c.stats = &stats; });
  CHECK(g.request(stun::method::kAllocate, Fixture::udp_transport, false, std::nullopt,
                  std::string("wrong")).error == 401);
  CHECK(stats.errors["turn_401"] == 1);
  g.username = "not-a-rest-name";
  CHECK(g.allocate().error == 401);
  CHECK(stats.errors["turn_401"] == 2);
}

TEST_CASE("an expired REST username gets 401") {
  Fixture f;
  f.username = rest_username(kUnixNow - 1, "peerid");
  f.password = rest_password(kSecret, f.username);
  CHECK(f.allocate().error == 401);
  f.username = "not-a-rest-name";
  CHECK(f.allocate().error == 401);
}

TEST_CASE("a nonce older than 10 minutes gets 438 with a fresh one") {
  Fixture f;
  REQUIRE(f.allocate().error == 0);
  f.now += 601s;
  auto stale = f.refresh(600);
  CHECK(stale.error == 438);
  REQUIRE(!stale.nonce.empty());
  CHECK(stale.nonce != f.nonce);
  f.nonce = stale.nonce;
  CHECK(f.refresh(600).error == 0);
}

TEST_CASE("a second Allocate on the same 5-tuple is 437; a retransmission is answered") {
  Fixture f;
  REQUIRE(f.allocate().error == 0);
  CHECK(f.allocate().error == 437);
  CHECK(f.server.allocation_count() == 1);
  // Requests other than Allocate without an allocation: 437.
  Fixture g;
  CHECK(g.refresh(600).error == 437);
  CHECK(g.create_permission(kPeer).error == 437);
}

TEST_CASE("allocation quota per user: 486; no relayed port: 508") {
  Fixture f([](TurnConfig& c) { c.max_allocations_per_user = 2; });
  for (int i = 0; i < 2; ++i) {
    f.client.address.port = static_cast<uint16_t>(41000 + i);
    f.nonce.clear();
    REQUIRE(f.allocate().error == 0);
  }
  f.client.address.port = 42000;
  f.nonce.clear();
  CHECK(f.allocate().error == 486);
  // Another user is not affected; a refused socket is 508.
  f.username = rest_username(kUnixNow + 3600, "other");
  f.password = rest_password(kSecret, f.username);
  f.io.refuse = true;
  CHECK(f.allocate().error == 508);
  f.io.refuse = false;
  CHECK(f.allocate().error == 0);
}

TEST_CASE("REQUESTED-TRANSPORT other than UDP: 442; missing: 400; IPv6 without IPv6: 440") {
  Fixture f;
  CHECK(f.request(stun::method::kAllocate, [](MessageBuilder& b, auto&) {
           const std::byte tcp[4] = {std::byte{6}, {}, {}, {}};
           b.add_attribute(attr::kRequestedTransport, tcp);
         }).error == 442);
  CHECK(f.request(stun::method::kAllocate, [](auto&, auto&) {}).error == 400);
  CHECK(f.request(stun::method::kAllocate, [](MessageBuilder& b, auto& id) {
           Fixture::udp_transport(b, id);
           const std::byte v6[4] = {std::byte{2}, {}, {}, {}};
           b.add_attribute(attr::kRequestedAddressFamily, v6);
         }).error == 440);
  Fixture with_v6([](TurnConfig& c) { c.ipv6_available = true; });
  auto response = with_v6.allocate_ipv6();
  CHECK(response.error == 0);
  CHECK(with_v6.io.open.begin()->second.family == TransportAddress::Family::kIPv6);
}

TEST_CASE("an IPv6 client gets an IPv4 relayed address by default, and relays to IPv4 only") {
  // RFC 8656 section 7.2: without REQUESTED-ADDRESS-FAMILY the relayed address is
  // IPv4 whatever the client's own family, which is how a peer with only IPv6 reaches
  // one with only IPv4; section 9.1: peers of the other family get 443.
  Fixture f([](TurnConfig& c) { c.ipv6_available = true; });
  f.client = {Transport::kUdp, TransportAddress::ipv6({0x20, 0x01, 0x0d, 0xb8, 0, 1}, 40000), 0};
  auto response = f.allocate();
  REQUIRE(response.error == 0);
  auto relayed = stun::decode_xor_address(
      response.message.find(attr::kXorRelayedAddress)->value, response.message.transaction_id);
  REQUIRE(relayed);
  CHECK(relayed->family == TransportAddress::Family::kIPv4);
  auto mapped = stun::decode_xor_address(
      response.message.find(stun::attr::kXorMappedAddress)->value,
      response.message.transaction_id);
  REQUIRE(mapped);
  CHECK(*mapped == f.client.address);
  const auto v6_peer = TransportAddress::ipv6({0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0,
                                               0, 0, 7},
                                              5000);
  CHECK(f.create_permission(v6_peer).error == 443);
  CHECK(f.channel_bind(0x4001, v6_peer).error == 443);
  CHECK(f.create_permission(kPeer).error == 0);
  f.send_indication(kPeer, "to an IPv4 peer");
  REQUIRE(f.io.to_peer.size() == 1);
  CHECK(f.io.to_peer[0].peer == kPeer);
}

TEST_CASE("an IPv6 allocation refuses IPv4 peers with 443 and refreshes only as IPv6") {
  Fixture f([](TurnConfig& c) { c.ipv6_available = true; });
  REQUIRE(f.allocate_ipv6().error == 0);
  CHECK(f.create_permission(kPeer).error == 443);
  // Section 7.3: a Refresh naming the other family is a 443 too.
  CHECK(f.request(stun::method::kRefresh, [](MessageBuilder& b, auto&) {
           const std::byte v4_family[4] = {std::byte{1}, {}, {}, {}};
           b.add_attribute(attr::kRequestedAddressFamily, v4_family);
         }).error == 443);
}

TEST_CASE("ADDITIONAL-ADDRESS-FAMILY: IPv4 allocated, IPv6 refused in ADDRESS-ERROR-CODE") {
  const std::byte v4_family[4] = {std::byte{1}, {}, {}, {}};
  const std::byte v6_family[4] = {std::byte{2}, {}, {}, {}};
  Fixture f([](TurnConfig& c) { c.ipv6_available = true; });
  // Section 7.2: IPv4 as the additional family, or both attributes at once: 400.
  CHECK(f.request(stun::method::kAllocate, [&](MessageBuilder& b, auto& id) {
           Fixture::udp_transport(b, id);
           b.add_attribute(attr::kAdditionalAddressFamily, v4_family);
         }).error == 400);
  CHECK(f.request(stun::method::kAllocate, [&](MessageBuilder& b, auto& id) {
           Fixture::udp_transport(b, id);
           b.add_attribute(attr::kRequestedAddressFamily, v6_family);
           b.add_attribute(attr::kAdditionalAddressFamily, v6_family);
         }).error == 400);
  CHECK(f.io.open.empty());
  auto response = f.request(stun::method::kAllocate, [&](MessageBuilder& b, auto& id) {
    Fixture::udp_transport(b, id);
    b.add_attribute(attr::kAdditionalAddressFamily, v6_family);
  });
  REQUIRE(response.error == 0);
  REQUIRE(f.io.open.size() == 1);
  CHECK(f.io.open.begin()->second.family == TransportAddress::Family::kIPv4);
  const auto* refused = response.message.find(attr::kAddressErrorCode);
  REQUIRE(refused);
  REQUIRE(refused->value.size() > 4);
  CHECK(std::to_integer<int>(refused->value[0]) == 2);  // the family not allocated: IPv6
  CHECK(std::to_integer<int>(refused->value[2]) * 100 + std::to_integer<int>(refused->value[3]) ==
        440);
}

TEST_CASE("unknown comprehension-required attributes get 420") {
  Fixture f;
  auto response = f.request(stun::method::kAllocate, [](MessageBuilder& b, auto& id) {
    Fixture::udp_transport(b, id);
    // CONNECTION-ID (RFC 6062): TCP relaying, which this server does not offer.
    b.add_attribute(0x002A, std::vector<std::byte>(4));
  });
  CHECK(response.error == 420);
  CHECK(response.message.find(stun::attr::kUnknownAttributes));
}

TEST_CASE("allocation lifetimes: default 600 s, capped at 3600 s, refresh, refresh 0") {
  // Lifetimes alone: an allocation that is never used goes earlier (a test below).
  Fixture f([](TurnConfig& c) { c.unused_allocation_timeout = 7200s; });
  REQUIRE(f.allocate().error == 0);
  REQUIRE(f.server.next_deadline());
  CHECK(*f.server.next_deadline() == f.now + 600s);
  f.now += 599s;
  f.server.on_tick(f.now);
  CHECK(f.server.allocation_count() == 1);
  f.nonce.clear();
  auto refreshed = f.refresh(100000);
  REQUIRE(refreshed.error == 0);
  CHECK(refreshed.message.find(attr::kLifetime)->value[2] == std::byte{0x0E});  // 3600
  f.now += 3599s;
  f.server.on_tick(f.now);
  CHECK(f.server.allocation_count() == 1);
  f.now += 1s;
  f.server.on_tick(f.now);
  CHECK(f.server.allocation_count() == 0);
  CHECK(f.io.open.empty());

  Fixture g;
  REQUIRE(g.allocate().error == 0);
  CHECK(g.refresh(0).error == 0);
  CHECK(g.server.allocation_count() == 0);
  CHECK(g.io.open.empty());
  CHECK(g.refresh(600).error == 437);
}

TEST_CASE("permissions last 300 s; data without one is dropped both ways") {
  Fixture f;
  REQUIRE(f.allocate().error == 0);
  const auto id = f.allocation_id();
  f.send_indication(kPeer, "early");
  CHECK(f.io.to_peer.empty());
  f.server.on_peer_data(id, kPeer, bytes_of("early"), f.now);
  CHECK(f.io.to_client.empty());

  REQUIRE(f.create_permission(kPeer).error == 0);
  f.send_indication(kPeer, "hello");
  REQUIRE(f.io.to_peer.size() == 1);
  CHECK(f.io.to_peer[0].peer == kPeer);
  CHECK(std::string(reinterpret_cast<const char*>(f.io.to_peer[0].bytes.data()),
                    f.io.to_peer[0].bytes.size()) == "hello");
  // Same IP, another port: the permission is per IP (section 9).
  f.server.on_peer_data(id, v4(198, 51, 100, 7, 6000), bytes_of("back"), f.now);
  auto data = f.take();
  CHECK(data.message.method() == stun::method::kData);
  CHECK(data.message.message_class() == MessageClass::kIndication);
  auto from = stun::decode_xor_address(data.message.find(attr::kXorPeerAddress)->value,
                                       data.message.transaction_id);
  CHECK(*from == v4(198, 51, 100, 7, 6000));
  CHECK(data.message.find(attr::kData)->value.size() == 4);

  f.now += 300s;
  f.server.on_tick(f.now);
  f.send_indication(kPeer, "late");
  CHECK(f.io.to_peer.size() == 1);
  f.server.on_peer_data(id, kPeer, bytes_of("late"), f.now);
  CHECK(f.io.to_client.empty());
}

TEST_CASE("channels: data both ways, expiry after 600 s, rebinding rules") {
  Fixture f;
  REQUIRE(f.allocate().error == 0);
  const auto id = f.allocation_id();
  CHECK(f.channel_bind(0x3FFF, kPeer).error == 400);
  CHECK(f.channel_bind(0x8000, kPeer).error == 400);
  REQUIRE(f.channel_bind(0x4001, kPeer).error == 0);
  // Same number to another peer, or the same peer to another number: 400.
  CHECK(f.channel_bind(0x4001, v4(198, 51, 100, 8, 5000)).error == 400);
  CHECK(f.channel_bind(0x4002, kPeer).error == 400);
  // Rebinding the same pair refreshes it.
  CHECK(f.channel_bind(0x4001, kPeer).error == 0);

  const auto channel_data = encode_channel_data(0x4001, bytes_of("via channel"), false);
  f.server.on_client_message(f.client, channel_data, f.now);
  REQUIRE(f.io.to_peer.size() == 1);
  CHECK(f.io.to_peer[0].bytes.size() == 11);

  f.server.on_peer_data(id, kPeer, bytes_of("reply"), f.now);
  REQUIRE(f.io.to_client.size() == 1);
  auto parsed = parse_channel_data(f.io.to_client.front().second);
  REQUIRE(parsed);
  CHECK(parsed->channel == 0x4001);
  CHECK(parsed->data.size() == 5);
  f.io.to_client.clear();

  // Keep the permission alive, let the channel expire.
  f.now += 299s;
  f.nonce.clear();
  REQUIRE(f.create_permission(kPeer).error == 0);
  REQUIRE(f.refresh(3600).error == 0);  // the allocation itself would expire at 600 s
  f.now += 299s;
  REQUIRE(f.create_permission(kPeer).error == 0);
  f.now += 2s;  // 600 s after the last ChannelBind
  f.server.on_tick(f.now);
  f.server.on_client_message(f.client, channel_data, f.now);
  CHECK(f.io.to_peer.size() == 1);  // dropped
  f.server.on_peer_data(id, kPeer, bytes_of("reply"), f.now);
  auto fallback = f.take();
  CHECK(fallback.message.method() == stun::method::kData);  // a Data indication now
  // Within 5 minutes after expiry the number is still tied to its peer.
  CHECK(f.channel_bind(0x4001, v4(198, 51, 100, 8, 5000)).error == 400);
}

TEST_CASE("relayed data counted per core: two cores on one RelayStats, summed for a scrape") {
  natfwd::relay::RelayStats stats;
  auto udp = std::make_unique<Fixture>([&stats](TurnConfig& c) { c.stats = &stats; });
  Fixture tcp([&stats](TurnConfig& c) { c.stats = &stats; });
  tcp.client = ClientKey{Transport::kTcp, v4(192, 0, 2, 10, 40000), 7};
  for (Fixture* f : {udp.get(), &tcp}) {
    REQUIRE(f->allocate().error == 0);
    REQUIRE(f->channel_bind(0x4000, kPeer).error == 0);
  }
  const auto channel_data = encode_channel_data(0x4000, bytes_of("twelve bytes"), false);
  udp->server.on_client_message(udp->client, channel_data, udp->now);
  udp->server.on_client_message(udp->client, channel_data, udp->now);
  udp->server.on_peer_data(udp->allocation_id(), kPeer, bytes_of("abc"), udp->now);
  tcp.server.on_client_message(tcp.client, channel_data, tcp.now);
  tcp.server.on_peer_data(tcp.allocation_id(), kPeer, bytes_of("abcde"), tcp.now);
  // Not relayed (no permission for this peer): not counted.
  udp->server.on_peer_data(udp->allocation_id(), v4(198, 51, 100, 99, 1), bytes_of("x"),
                           udp->now);
  auto sum = stats.relayed();
  CHECK(sum.packets_to_peer == 3);
  CHECK(sum.bytes_to_peer == 36);
  CHECK(sum.packets_to_client == 2);
  CHECK(sum.bytes_to_client == 8);  // payload, without the ChannelData header or padding
  // A core that goes leaves its counts in the sum.
  udp.reset();
  sum = stats.relayed();
  CHECK(sum.packets_to_peer == 3);
  CHECK(sum.bytes_to_client == 8);
}

TEST_CASE("ChannelData in pieces (header, data, padding) is the message encode makes") {
  std::vector<std::byte> data;
  for (size_t size = 0; size <= 9; ++size) {
    for (bool pad : {false, true}) {
      const auto header = natfwd::turn::channel_data_header(0x4abc, data.size());
      const auto padding = natfwd::turn::channel_data_padding(data.size(), pad);
      std::vector<std::byte> joined(header.begin(), header.end());
      joined.insert(joined.end(), data.begin(), data.end());
      joined.insert(joined.end(), padding.begin(), padding.end());
      CHECK(joined == encode_channel_data(0x4abc, data, pad));
      CHECK(joined.size() % 4 == (pad ? 0 : (4 + data.size()) % 4));
    }
    data.push_back(static_cast<std::byte>(size + 1));
  }
}

TEST_CASE("ChannelData over TCP is padded to 4 bytes") {
  Fixture f;
  f.client = ClientKey{Transport::kTcp, v4(192, 0, 2, 10, 40000), 7};
  REQUIRE(f.allocate().error == 0);
  REQUIRE(f.channel_bind(0x4000, kPeer).error == 0);
  f.server.on_peer_data(f.allocation_id(), kPeer, bytes_of("abcde"), f.now);
  REQUIRE(f.io.to_client.size() == 1);
  CHECK(f.io.to_client.front().second.size() == 12);
  CHECK(stream_frame_length(f.io.to_client.front().second).length == 12);
}

TEST_CASE("not an open relay: denied peers get 403, --allow-peer overrides") {
  Fixture f;
  REQUIRE(f.allocate().error == 0);
  for (auto peer : {v4(127, 0, 0, 1, 80), v4(10, 1, 2, 3, 80), v4(192, 168, 1, 1, 80),
                    v4(172, 16, 0, 1, 80), v4(169, 254, 1, 1, 80), v4(100, 64, 0, 1, 80),
                    v4(224, 0, 0, 1, 80), v4(0, 1, 2, 3, 80), v4(255, 255, 255, 255, 80)}) {
    CAPTURE(peer.to_string());
    CHECK(f.create_permission(peer).error == 403);
  }
  CHECK(f.channel_bind(0x4000, v4(127, 0, 0, 1, 80)).error == 403);
  // Data from a denied address is dropped even with a (wrongly) allowed permission.
  f.server.on_peer_data(f.allocation_id(), v4(127, 0, 0, 1, 80), bytes_of("x"), f.now);
  CHECK(f.io.to_client.empty());

  Fixture g([](TurnConfig& c) { c.peers.allow(*parse_cidr("127.0.0.0/8")); });
  REQUIRE(g.allocate().error == 0);
  CHECK(g.create_permission(v4(127, 0, 0, 1, 80)).error == 0);
  CHECK(g.create_permission(v4(10, 0, 0, 1, 80)).error == 403);
}

TEST_CASE("the relay's own address is denied, except another live allocation's") {
  // Two clients whose only way is TURN (both behind UDP-blocking firewalls): each
  // must reach the other's relayed address, which is on the relay's own IP.
  Fixture f([](TurnConfig& c) { c.peers.add_own_address(v4(203, 0, 113, 1, 0)); });
  REQUIRE(f.allocate().error == 0);
  const TransportAddress first_relayed = f.io.open.begin()->second;
  f.client = ClientKey{Transport::kUdp, v4(192, 0, 2, 20, 40000), 0};
  f.nonce.clear();
  REQUIRE(f.allocate().error == 0);
  CHECK(f.create_permission(first_relayed).error == 0);
  CHECK(f.channel_bind(0x4001, first_relayed).error == 0);
  // The relay's service port on the same IP stays out of reach for data.
  CHECK(f.channel_bind(0x4002, v4(203, 0, 113, 1, 3478)).error == 403);
  const size_t sent_before = f.io.to_peer.size();
  f.send_indication(v4(203, 0, 113, 1, 3478), "probe");
  CHECK(f.io.to_peer.size() == sent_before);
  // Let through, and handed to the first allocation in the core (see below), which has
  // no permission for this one: dropped there.
  f.io.to_client.clear();
  f.send_indication(first_relayed, "hello");
  CHECK(f.io.to_peer.size() == sent_before);
  CHECK(f.io.to_client.empty());
  // Once that allocation is gone, its address is an own address like any other.
  f.now += 3700s;
  f.server.on_tick(f.now);
  CHECK(f.io.open.empty());
}

TEST_CASE("both peers relayed by one core: datagrams are handed over, checked on arrival") {
  natfwd::relay::RelayStats stats;
  Fixture f([&stats](TurnConfig& c) {
    c.stats = &stats;
    c.peers.add_own_address(v4(203, 0, 113, 1, 0));
  });
  const ClientKey first = f.client;
  REQUIRE(f.allocate().error == 0);
  const TransportAddress first_relayed = f.io.open.begin()->second;
  const ClientKey second{Transport::kUdp, v4(192, 0, 2, 20, 40000), 0};
  f.client = second;
  f.nonce.clear();
  REQUIRE(f.allocate().error == 0);
  REQUIRE(f.io.open.size() == 2);
  const TransportAddress second_relayed = std::prev(f.io.open.end())->second;
  REQUIRE(f.channel_bind(0x4001, first_relayed).error == 0);
  f.io.to_client.clear();

  // The first allocation has no permission for the second's relayed address: dropped
  // on arrival, as its socket would have dropped it. Nothing goes out either way.
  f.server.on_client_message(second, encode_channel_data(0x4001, bytes_of("knock"), false),
                             f.now);
  CHECK(f.io.to_peer.empty());
  CHECK(f.io.to_client.empty());

  // With a channel back, it arrives at the first client as ChannelData from there.
  f.client = first;
  f.nonce.clear();
  REQUIRE(f.channel_bind(0x4002, second_relayed).error == 0);
  f.io.to_client.clear();
  f.server.on_client_message(second, encode_channel_data(0x4001, bytes_of("hello"), false),
                             f.now);
  CHECK(f.io.to_peer.empty());
  REQUIRE(f.io.to_client.size() == 1);
  CHECK(f.io.to_client[0].first == first);
  auto parsed = parse_channel_data(f.io.to_client[0].second);
  REQUIRE(parsed);
  CHECK(parsed->channel == 0x4002);
  CHECK(std::string(reinterpret_cast<const char*>(parsed->data.data()), parsed->data.size()) ==
        "hello");

  // And back by Send indication, onto the second's channel.
  f.io.to_client.clear();
  f.send_indication(second_relayed, "back");
  CHECK(f.io.to_peer.empty());
  REQUIRE(f.io.to_client.size() == 1);
  CHECK(f.io.to_client[0].first == second);
  parsed = parse_channel_data(f.io.to_client[0].second);
  REQUIRE(parsed);
  CHECK(parsed->channel == 0x4001);

  // Counted as relayed to a peer and to a client, each, and as handed over.
  auto sum = stats.relayed();
  CHECK(sum.packets_to_peer == 3);
  CHECK(sum.packets_to_client == 2);
  CHECK(sum.packets_handed_over == 3);

  // A peer on another IP still goes out through the I/O side.
  f.io.to_client.clear();
  REQUIRE(f.create_permission(kPeer).error == 0);
  f.send_indication(kPeer, "out");
  REQUIRE(f.io.to_peer.size() == 1);
  CHECK(f.io.to_peer[0].peer == kPeer);

  // The first allocation gone, its address is an own address again: nothing relayed.
  REQUIRE(f.refresh(0).error == 0);
  f.io.to_client.clear();
  f.server.on_client_message(second, encode_channel_data(0x4001, bytes_of("late"), false),
                             f.now);
  CHECK(f.io.to_client.empty());
  CHECK(f.io.to_peer.size() == 1);
  CHECK(stats.relayed().packets_handed_over == 3);
}

TEST_CASE("peer policy ranges") {
  PeerPolicy policy;
  policy.add_own_address(v4(203, 0, 113, 5, 0));
  CHECK(policy.is_allowed(v4(198, 51, 100, 1, 1)));
  CHECK_FALSE(policy.is_allowed(v4(203, 0, 113, 5, 9)));
  auto v6 = [](std::string_view text) {
    auto cidr = parse_cidr(text);
    REQUIRE(cidr);
    return TransportAddress::ipv6(cidr->ip, 1);
  };
  CHECK_FALSE(policy.is_allowed(v6("::1")));
  CHECK_FALSE(policy.is_allowed(v6("fd00::1")));
  CHECK_FALSE(policy.is_allowed(v6("fe80::1")));
  CHECK_FALSE(policy.is_allowed(v6("ff02::1")));
  CHECK_FALSE(policy.is_allowed(v6("::ffff:127.0.0.1")));
  CHECK(policy.is_allowed(v6("2001:db8::1")));
  CHECK_FALSE(parse_cidr("10.0.0.0/33"));
  CHECK_FALSE(parse_cidr("nonsense"));
  CHECK(parse_cidr("10.0.0.0/8")->to_string() == "10.0.0.0/8");
}

TEST_CASE("peer policy: the relay's directly connected networks are refused by default") {
  // A VPS's neighbours on its provider's LAN are not for strangers to reach through
  // the relay (issue 13, finding 8); --allow-peer still opens them.
  const uint8_t ip[4] = {192, 0, 2, 77};
  const uint8_t mask[4] = {255, 255, 255, 0};
  const Cidr lan = network_of(ip, mask);
  CHECK(lan.to_string() == "192.0.2.0/24");
  const uint8_t ip6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9};
  uint8_t mask6[16] = {};
  for (int i = 0; i < 8; ++i) mask6[i] = 0xFF;
  CHECK(network_of(ip6, mask6).to_string() == "2001:db8:1::/64");
  const uint8_t odd_mask[4] = {255, 255, 240, 0};
  CHECK(network_of(ip, odd_mask).to_string() == "192.0.0.0/20");

  PeerPolicy policy;
  policy.add_own_network(lan);
  CHECK_FALSE(policy.is_allowed(v4(192, 0, 2, 1, 5000)));
  CHECK(policy.is_allowed(v4(198, 51, 100, 1, 5000)));
  policy.allow(*parse_cidr("192.0.2.1/32"));
  CHECK(policy.is_allowed(v4(192, 0, 2, 1, 5000)));
  CHECK_FALSE(policy.is_allowed(v4(192, 0, 2, 2, 5000)));
}

TEST_CASE("bandwidth cap: a token bucket drops the excess") {
  Fixture f([](TurnConfig& c) {
    c.bandwidth_cap = 1000;
    c.peers.allow(*parse_cidr("0.0.0.0/0"));
  });
  REQUIRE(f.allocate().error == 0);
  REQUIRE(f.create_permission(kPeer).error == 0);
  const std::string chunk(400, 'x');
  for (int i = 0; i < 5; ++i) f.send_indication(kPeer, chunk);
  CHECK(f.io.to_peer.size() == 2);
  f.now += 1s;
  for (int i = 0; i < 5; ++i) f.send_indication(kPeer, chunk);
  CHECK(f.io.to_peer.size() == 4);
}

TEST_CASE("a closed TCP client loses its allocation") {
  Fixture f;
  f.client = ClientKey{Transport::kTcp, v4(192, 0, 2, 10, 40000), 3};
  REQUIRE(f.allocate().error == 0);
  f.server.on_client_closed(f.client);
  CHECK(f.server.allocation_count() == 0);
  CHECK(f.io.open.empty());
}

TEST_CASE("every prefix of a valid Allocate is rejected cleanly") {
  Fixture f;
  f.allocate();  // learn a nonce; the allocation is irrelevant
  Fixture g;
  MessageBuilder builder(stun::method::kAllocate, MessageClass::kRequest, g.txn());
  Fixture::udp_transport(builder, {});
  builder.add_attribute(stun::attr::kUsername, bytes_of(g.username));
  builder.add_attribute(stun::attr::kRealm, bytes_of("natfwd"));
  builder.add_attribute(stun::attr::kNonce, bytes_of("0-00"));
  builder.add_message_integrity(long_term_key(g.username, "natfwd", g.password));
  builder.add_fingerprint();
  const auto& whole = builder.bytes();
  for (size_t n = 0; n < whole.size(); ++n) {
    CAPTURE(n);
    auto result = g.server.on_client_message(g.client, std::span(whole).first(n), g.now);
    CHECK(result.verdict == TurnServer::Verdict::kMalformed);
    CHECK(stream_frame_length(std::span(whole).first(n)).status != stun::StreamStatus::kComplete);
  }
  CHECK(g.io.to_client.empty());
  CHECK(g.server.allocation_count() == 0);
  CHECK(stream_frame_length(whole).length == whole.size());
}

TEST_CASE("named bad inputs") {
  Fixture f;
  REQUIRE(f.allocate().error == 0);
  f.io.to_client.clear();
  SECTION("attribute overruns the message") {
    MessageBuilder builder(stun::method::kRefresh, MessageClass::kRequest, f.txn());
    builder.add_attribute(attr::kLifetime, std::vector<std::byte>(4));
    auto bytes = builder.take();
    bytes[22] = std::byte{0};
    bytes[23] = std::byte{40};  // LIFETIME claims 40 bytes
    CHECK(f.server.on_client_message(f.client, bytes, f.now).verdict ==
          TurnServer::Verdict::kMalformed);
  }
  SECTION("truncated ChannelData") {
    auto bytes = encode_channel_data(0x4000, bytes_of("abcdef"), false);
    bytes.resize(7);
    CHECK(f.server.on_client_message(f.client, bytes, f.now).verdict ==
          TurnServer::Verdict::kMalformed);
    CHECK(f.server.on_client_message(f.client, std::span(bytes).first(3), f.now).verdict ==
          TurnServer::Verdict::kMalformed);
  }
  SECTION("oversize: a length field past the datagram") {
    std::vector<std::byte> bytes(20);
    bytes[2] = std::byte{0xFF};
    bytes[3] = std::byte{0xFC};
    bytes[4] = std::byte{0x21};
    bytes[5] = std::byte{0x12};
    bytes[6] = std::byte{0xA4};
    bytes[7] = std::byte{0x42};
    CHECK(f.server.on_client_message(f.client, bytes, f.now).verdict ==
          TurnServer::Verdict::kMalformed);
    CHECK(stream_frame_length(bytes).status == stun::StreamStatus::kNeedMore);
  }
  SECTION("ChannelData on an unbound channel is dropped quietly") {
    auto bytes = encode_channel_data(0x4ABC, bytes_of("x"), false);
    CHECK(f.server.on_client_message(f.client, bytes, f.now).verdict ==
          TurnServer::Verdict::kHandled);
    CHECK(f.io.to_peer.empty());
  }
  SECTION("missing USERNAME with MESSAGE-INTEGRITY is 400") {
    MessageBuilder builder(stun::method::kRefresh, MessageClass::kRequest, f.txn());
    builder.add_message_integrity(std::vector<std::byte>(16));
    f.server.on_client_message(f.client, builder.bytes(), f.now);
    CHECK(f.take().error == 400);
  }
  CHECK(f.server.allocation_count() == 1);
}

TEST_CASE("allocations per source address: 486 beyond, whatever the user; counted") {
  natfwd::relay::RelayStats stats;
  Fixture f(counting(stats, [](TurnConfig& c) { c.max_allocations_per_address = 3; }));
  auto as_user = [&f](int user, uint16_t port) {
    f.client.address.port = port;
    f.username = rest_username(kUnixNow + 3600, "key" + std::to_string(user));
    f.password = rest_password(kSecret, f.username);
    f.nonce.clear();
    return f.allocate().error;
  };
  // Throwaway keys from one address: each key is under its own per-user quota.
  for (int i = 0; i < 3; ++i) REQUIRE(as_user(i, static_cast<uint16_t>(41000 + i)) == 0);
  CHECK(as_user(3, 41003) == 486);
  CHECK(as_user(4, 41004) == 486);
  CHECK(stats.errors["turn_quota_address"] == 2);
  CHECK(f.server.allocation_count() == 3);
  // Another address is not affected.
  f.client.address = v4(192, 0, 2, 11, 41000);
  CHECK(as_user(5, 41000) == 0);
  // A place comes back when an allocation goes.
  f.client.address = v4(192, 0, 2, 10, 41000);
  f.username = rest_username(kUnixNow + 3600, "key0");
  f.password = rest_password(kSecret, f.username);
  f.nonce.clear();  // nonces are bound to the 5-tuple
  REQUIRE(f.refresh(0).error == 0);
  CHECK(as_user(6, 41006) == 0);
}

TEST_CASE("an allocation with no permission or channel within 30 s is given back") {
  natfwd::relay::RelayStats stats;
  Fixture f(counting(stats, [](TurnConfig& c) { c.max_allocations_per_address = 1; }));
  REQUIRE(f.allocate().error == 0);
  CHECK(*f.server.next_deadline() == f.now + 30s);
  f.advance(29s);
  CHECK(f.server.allocation_count() == 1);
  f.advance(1s);
  CHECK(f.server.allocation_count() == 0);
  CHECK(f.io.open.empty());
  CHECK(stats.errors["turn_unused_allocation"] == 1);
  CHECK(f.refresh(600).error == 437);
  // Its place is free again; one used in time lives its whole lifetime.
  f.client.address.port = 41000;
  f.nonce.clear();
  REQUIRE(f.allocate().error == 0);
  f.now += 10s;
  REQUIRE(f.create_permission(kPeer).error == 0);
  f.advance(280s);
  CHECK(f.server.allocation_count() == 1);
  f.advance(310s);  // 600 s after the Allocate
  CHECK(f.server.allocation_count() == 0);
  CHECK(stats.errors["turn_unused_allocation"] == 1);
  // A channel counts as use too.
  Fixture g;
  REQUIRE(g.allocate().error == 0);
  REQUIRE(g.channel_bind(0x4000, kPeer).error == 0);
  g.advance(60s);
  CHECK(g.server.allocation_count() == 1);
}

TEST_CASE("permissions and channels per allocation are bounded: 508 beyond, all or nothing") {
  natfwd::relay::RelayStats stats;
  Fixture f(counting(stats, [](TurnConfig& c) { c.max_permissions_per_allocation = 4; }));
  REQUIRE(f.allocate().error == 0);
  for (uint8_t i = 0; i < 4; ++i)
    REQUIRE(f.create_permission(v4(198, 51, 100, i, 5000)).error == 0);
  CHECK(f.create_permission(v4(198, 51, 100, 99, 5000)).error == 508);
  CHECK(stats.errors["turn_508"] == 1);
  CHECK(stats.errors["turn_permission_limit"] == 1);
  // Refreshing one it has is fine; a request naming one old and one new IP is refused whole.
  CHECK(f.create_permission(v4(198, 51, 100, 2, 6000)).error == 0);
  auto both = f.request(stun::method::kCreatePermission,
                        [](MessageBuilder& b, const stun::TransactionId& id) {
                          b.add_attribute(attr::kXorPeerAddress,
                                          stun::encode_xor_address(v4(198, 51, 100, 1, 1), id));
                          b.add_attribute(attr::kXorPeerAddress,
                                          stun::encode_xor_address(v4(198, 51, 100, 98, 1), id));
                        });
  CHECK(both.error == 508);
  CHECK(f.server.permission_count() == 4);
  // Channels: to the permitted IPs (any port), at most 4 numbers.
  for (uint16_t i = 0; i < 4; ++i)
    REQUIRE(f.channel_bind(static_cast<uint16_t>(0x4000 + i), v4(198, 51, 100, 0, 7000 + i))
                .error == 0);
  CHECK(f.channel_bind(0x4004, v4(198, 51, 100, 0, 7004)).error == 508);
  CHECK(f.channel_bind(0x4001, v4(198, 51, 100, 0, 7001)).error == 0);  // a refresh
  CHECK(f.server.channel_count() == 4);
  // Expired permissions make room again.
  f.now += 300s;
  f.server.on_tick(f.now);
  f.nonce.clear();
  CHECK(f.server.permission_count() == 0);
  CHECK(f.create_permission(v4(198, 51, 100, 99, 5000)).error == 0);
}

TEST_CASE("a burst of expiries is done in slices, with the loop served between them") {
  const size_t count = 3 * TurnServer::kMaxExpiriesPerTick + 10;
  Fixture f([count](TurnConfig& c) { c.max_permissions_per_allocation = count; });
  REQUIRE(f.allocate().error == 0);
  REQUIRE(f.refresh(3600).error == 0);
  for (size_t i = 0; i < count; ++i)
    REQUIRE(f.create_permission(v4(198, 51, static_cast<uint8_t>(100 + i / 250),
                                   static_cast<uint8_t>(i % 250), 5000))
                .error == 0);
  REQUIRE(f.server.permission_count() == count);
  f.now += 300s;
  size_t ticks = 0;
  while (f.server.permission_count() > 0) {
    const size_t before = f.server.permission_count();
    f.server.on_tick(f.now);
    ++ticks;
    CHECK(before - f.server.permission_count() <= TurnServer::kMaxExpiriesPerTick);
    // Work left: the next deadline is now, so the service's timer fires again at once.
    if (f.server.permission_count() > 0) CHECK(*f.server.next_deadline() <= f.now);
    REQUIRE(ticks <= 10);
  }
  CHECK(ticks == 4);
  CHECK(f.server.allocation_count() == 1);
  CHECK(*f.server.next_deadline() == f.now - 300s + 3600s);
}

// ---- data-plane shards (relay --threads N): one AllocationRegistry, several cores ----

TEST_CASE("allocation registry: user, then address, then total; a release gives back at once") {
  AllocationRegistry registry({/*per_user=*/2, /*per_address=*/3, /*total=*/4});
  const auto a = natfwd::relay::source_key(v4(192, 0, 2, 1, 1000));
  const auto b = natfwd::relay::source_key(v4(192, 0, 2, 2, 1000));
  using Admission = AllocationRegistry::Admission;
  CHECK(registry.admit("u1", a).admission == Admission::kAdmitted);
  CHECK(registry.admit("u1", a).admission == Admission::kAdmitted);
  const auto user_full = registry.admit("u1", a);
  CHECK(user_full.admission == Admission::kUserQuota);
  CHECK(user_full.held == 2);
  CHECK(registry.admit("u2", a).admission == Admission::kAdmitted);
  CHECK(registry.admit("u3", a).admission == Admission::kAddressQuota);
  CHECK(registry.admit("u3", b).admission == Admission::kAdmitted);
  CHECK(registry.admit("u4", b).admission == Admission::kFull);
  CHECK(registry.allocation_count() == 4);
  // Refusals count nothing.
  registry.release("u1", a);
  CHECK(registry.allocation_count() == 3);
  CHECK(registry.admit("u4", b).admission == Admission::kAdmitted);
  CHECK(registry.admit("u1", a).admission == Admission::kFull);
}

TEST_CASE("shards: the per-address quota holds across cores; Refresh 0 frees it on any shard") {
  // Two cores as two shards: the kernel hashes each client 5-tuple to one of them.
  auto registry = std::make_shared<AllocationRegistry>(AllocationRegistry::Limits{10, 2, 100});
  auto shared = [&registry](TurnConfig& c) { c.registry = registry; };
  Fixture shard_a(shared), shard_b(shared);
  shard_b.io.next_port = 60000;
  shard_a.client = ClientKey{Transport::kUdp, v4(192, 0, 2, 10, 40001), 0};
  shard_b.client = ClientKey{Transport::kUdp, v4(192, 0, 2, 10, 40002), 0};
  REQUIRE(shard_a.allocate().error == 0);
  REQUIRE(shard_b.allocate().error == 0);
  CHECK(registry->allocation_count() == 2);
  // The third from that address is refused wherever it lands.
  shard_a.client.address.port = 40003;
  shard_a.nonce.clear();
  CHECK(shard_a.allocate().error == 486);
  // The allocation belongs to the shard that answered its Allocate: the other one
  // does not know the 5-tuple.
  shard_a.client.address.port = 40002;
  shard_a.nonce.clear();
  CHECK(shard_a.refresh(600).error == 437);
  // Deleting on shard B gives the place back to shard A at once.
  REQUIRE(shard_b.refresh(0).error == 0);
  CHECK(registry->allocation_count() == 1);
  shard_a.client.address.port = 40003;
  shard_a.nonce.clear();
  CHECK(shard_a.allocate().error == 0);
  CHECK(shard_a.server.allocation_count() == 2);
  CHECK(shard_b.server.allocation_count() == 0);
}

TEST_CASE("shards: one shard's relayed address is a permitted peer on another, while it lives") {
  auto registry = std::make_shared<AllocationRegistry>(AllocationRegistry::Limits{10, 10, 100});
  auto shared = [&registry](TurnConfig& c) {
    c.registry = registry;
    c.peers.add_own_address(v4(203, 0, 113, 1, 0));
  };
  Fixture shard_a(shared), shard_b(shared);
  shard_b.io.next_port = 60000;
  shard_b.client = ClientKey{Transport::kUdp, v4(192, 0, 2, 20, 40000), 0};
  REQUIRE(shard_a.allocate().error == 0);
  REQUIRE(shard_b.allocate().error == 0);
  const TransportAddress relayed_on_a = shard_a.io.open.begin()->second;
  CHECK(shard_b.channel_bind(0x4001, relayed_on_a).error == 0);
  CHECK(shard_b.channel_bind(0x4002, v4(203, 0, 113, 1, 3478)).error == 403);
  shard_b.send_indication(relayed_on_a, "while it lives");
  REQUIRE(shard_b.io.to_peer.size() == 1);
  // Gone from shard A: an own address like any other on shard B, data is dropped.
  REQUIRE(shard_a.refresh(0).error == 0);
  shard_b.send_indication(relayed_on_a, "after");
  CHECK(shard_b.io.to_peer.size() == 1);
  CHECK(shard_b.server.channel_count() == 1);
  CHECK(shard_b.server.permission_count() == 1);
}

// ---- EVEN-PORT with the R bit and RESERVATION-TOKEN (RFC 8656 section 7.2) ----

namespace {

std::vector<std::byte> token_of(const Response& response) {
  const auto* token = response.message.find(attr::kReservationToken);
  REQUIRE(token);
  return {token->value.begin(), token->value.end()};
}

TransportAddress relayed_of(const Response& response) {
  const auto* relayed = response.message.find(attr::kXorRelayedAddress);
  REQUIRE(relayed);
  auto address = stun::decode_xor_address(relayed->value, response.message.transaction_id);
  REQUIRE(address);
  return *address;
}

}  // namespace

TEST_CASE("EVEN-PORT R=1: an even port, the next one under a token another 5-tuple redeems") {
  Fixture f;
  const auto pair = f.allocate_pair();
  REQUIRE(pair.error == 0);
  const auto rtp = relayed_of(pair);
  CHECK(rtp.port % 2 == 0);
  const auto token = token_of(pair);
  CHECK(token.size() == 8);
  CHECK(f.io.reserved_alive() == 1);
  // Another pair gets another token: they are random, not counted.
  Fixture g;
  const auto other = g.allocate_pair();
  REQUIRE(other.error == 0);
  CHECK(token_of(other) != token);
  // The RTCP allocation from another port of the client gets the odd port.
  f.client.address.port = 40001;
  f.nonce.clear();
  const auto rtcp = f.allocate_reserved(token);
  REQUIRE(rtcp.error == 0);
  CHECK(relayed_of(rtcp).port == rtp.port + 1);
  CHECK_FALSE(rtcp.message.find(attr::kReservationToken));
  CHECK(f.server.allocation_count() == 2);
  CHECK(f.io.reserved_alive() == 0);  // taken in: no longer a reservation
}

TEST_CASE("RESERVATION-TOKEN: good once, for ~30 s, for its own user only; 508 otherwise") {
  auto registry = std::make_shared<AllocationRegistry>(AllocationRegistry::Limits{10, 10, 100});
  // Allocations stay while the reservation's clock runs.
  auto shared = [&registry](TurnConfig& c) {
    c.registry = registry;
    c.unused_allocation_timeout = 1h;
  };
  Fixture f(shared);
  const auto pair = f.allocate_pair();
  REQUIRE(pair.error == 0);
  const auto token = token_of(pair);
  CHECK(registry->reservation_count() == 1);

  SECTION("another user's token is unknown to this user, and stays reserved") {
    f.client.address.port = 40001;
    f.username = rest_username(kUnixNow + 3600, "mallory");
    f.nonce.clear();
    CHECK(f.allocate_reserved(token).error == 508);
    CHECK(registry->reservation_count() == 1);
    CHECK(f.io.reserved_alive() == 1);
  }
  SECTION("used twice: the second Allocate gets 508") {
    f.client.address.port = 40001;
    f.nonce.clear();
    REQUIRE(f.allocate_reserved(token).error == 0);
    f.client.address.port = 40002;
    f.nonce.clear();
    CHECK(f.allocate_reserved(token).error == 508);
    CHECK(registry->allocation_count() == 2);
  }
  SECTION("expired: the port and its place go back when the timer fires") {
    f.advance(29s);
    CHECK(registry->reservation_count() == 1);
    f.advance(1s);
    CHECK(registry->reservation_count() == 0);
    CHECK(f.io.reserved_alive() == 0);
    CHECK(registry->allocation_count() == 1);
    f.client.address.port = 40001;
    f.nonce.clear();
    CHECK(f.allocate_reserved(token).error == 508);
  }
  SECTION("past its time it is refused even before the timer fires") {
    f.now += 31s;  // no on_tick
    f.client.address.port = 40001;
    f.nonce.clear();
    CHECK(f.allocate_reserved(token).error == 508);
    CHECK(registry->reservation_count() == 0);
    CHECK(f.io.reserved_alive() == 0);
  }
  SECTION("an unknown token: 508") {
    auto wrong = token;
    wrong[0] ^= std::byte{1};
    f.client.address.port = 40001;
    f.nonce.clear();
    CHECK(f.allocate_reserved(wrong).error == 508);
  }
  SECTION("the reservation outlives the allocation that made it (server-wide, section 7.2)") {
    REQUIRE(f.refresh(0).error == 0);
    CHECK(registry->reservation_count() == 1);
    f.client.address.port = 40001;
    f.nonce.clear();
    CHECK(f.allocate_reserved(token).error == 0);
  }
}

TEST_CASE("RESERVATION-TOKEN with EVEN-PORT or an address family, or of the wrong size: 400") {
  Fixture f;
  const auto token = token_of(f.allocate_pair());
  f.client.address.port = 40001;
  f.nonce.clear();
  auto with = [&](uint16_t type, std::vector<std::byte> value, std::span<const std::byte> t) {
    return f.request(stun::method::kAllocate, [&](MessageBuilder& b, const stun::TransactionId& id) {
      Fixture::udp_transport(b, id);
      b.add_attribute(attr::kReservationToken, t);
      if (type) b.add_attribute(type, value);
    });
  };
  CHECK(with(attr::kEvenPort, {std::byte{0}}, token).error == 400);
  CHECK(with(attr::kRequestedAddressFamily, {std::byte{1}, {}, {}, {}}, token).error == 400);
  CHECK(with(0, {}, std::span(token).first(4)).error == 400);
  // None of that used the token up.
  CHECK(f.allocate_reserved(token).error == 0);
}

TEST_CASE("a reservation holds a place in the quotas until it is redeemed or expires") {
  auto registry = std::make_shared<AllocationRegistry>(AllocationRegistry::Limits{3, 10, 100});
  Fixture f([&registry](TurnConfig& c) {
    c.registry = registry;
    c.unused_allocation_timeout = 1h;
  });
  REQUIRE(f.allocate_pair().error == 0);  // 2 of 3: the allocation and the reservation
  f.client.address.port = 40001;
  f.nonce.clear();
  CHECK(f.allocate_pair().error == 486);  // needs 2 more
  REQUIRE(f.allocate().error == 0);       // 3 of 3
  f.client.address.port = 40002;
  f.nonce.clear();
  CHECK(f.allocate().error == 486);
  CHECK(registry->allocation_count() == 2);
  CHECK(registry->reservation_count() == 1);
  // Expired: its place is free again.
  f.advance(30s);
  CHECK(f.allocate().error == 0);
  // A refused pair counts nothing; one with no port pair free gives both places back.
  AllocationRegistry alone({4, 10, 100});
  const auto source = natfwd::relay::source_key(v4(192, 0, 2, 1, 1));
  REQUIRE(alone.admit("u", source, 2).admission == AllocationRegistry::Admission::kAdmitted);
  CHECK(alone.admit("u", source, 3).admission == AllocationRegistry::Admission::kUserQuota);
  CHECK(alone.admit("u", source, 2).admission == AllocationRegistry::Admission::kAdmitted);
  Fixture g;
  g.io.refuse = true;
  CHECK(g.allocate_pair().error == 508);
  g.io.refuse = false;
  for (int i = 0; i < 5; ++i) {
    g.client.address.port = static_cast<uint16_t>(41000 + i);
    g.nonce.clear();
    REQUIRE(g.allocate_pair().error == 0);  // 10 places: none leaked by the 508
  }
}

TEST_CASE("shards: a port reserved on one shard is taken in by the shard that gets the token") {
  auto registry = std::make_shared<AllocationRegistry>(AllocationRegistry::Limits{10, 10, 100});
  auto shared = [&registry](TurnConfig& c) {
    c.registry = registry;
    c.unused_allocation_timeout = 1h;
  };
  Fixture shard_a(shared), shard_b(shared);
  shard_b.io.next_port = 60000;
  const auto pair = shard_a.allocate_pair();
  REQUIRE(pair.error == 0);
  shard_b.client = ClientKey{Transport::kUdp, v4(192, 0, 2, 10, 40001), 0};
  const auto rtcp = shard_b.allocate_reserved(token_of(pair));
  REQUIRE(rtcp.error == 0);
  CHECK(relayed_of(rtcp).port == relayed_of(pair).port + 1);
  CHECK(shard_b.server.allocation_count() == 1);
  CHECK(shard_b.io.open.begin()->second.port == relayed_of(pair).port + 1);
  CHECK(shard_a.io.reserved_alive() == 0);
  // Shard A's timer for the token finds it redeemed: nothing to give back twice.
  shard_a.advance(30s);
  CHECK(registry->allocation_count() == 2);
  // Its relayed address is a live one for the other shard's allocations.
  CHECK(registry->is_relayed(relayed_of(rtcp), false));
}

// RFC 5780 at the relay's Binding responder: OTHER-ADDRESS and RESPONSE-ORIGIN, and
// CHANGE-REQUEST answered from the socket it names. (RFC 5769 has no RFC 5780
// vectors; the attribute layouts are MAPPED-ADDRESS's, checked against RFC 5769's
// bytes in test_stun.cpp.)
#include <catch2/catch.hpp>

#include "binding/binding_responder.h"
#include "stun/stun_message.h"
#include "stun_vectors.h"

using namespace natfwd::stun;
using natfwd::stun::test::error_code_of;

namespace {

const TransportAddress kA1P1 = TransportAddress::ipv4({203, 0, 113, 10}, 3478);
const TransportAddress kA1P2 = TransportAddress::ipv4({203, 0, 113, 10}, 3479);
const TransportAddress kA2P1 = TransportAddress::ipv4({203, 0, 113, 11}, 3478);
const TransportAddress kA2P2 = TransportAddress::ipv4({203, 0, 113, 11}, 3479);
const TransportAddress kClient = TransportAddress::ipv4({198, 51, 100, 2}, 40000);

DiscoveryAddresses addresses() {
  DiscoveryAddresses d;
  d.by_ip_port = {{{kA1P1, kA1P2}, {kA2P1, kA2P2}}};
  return d;
}

std::vector<std::byte> request(std::optional<uint8_t> change_flags, size_t change_size = 4) {
  TransactionId id{};
  id[0] = std::byte{0x42};
  MessageBuilder builder(method::kBinding, MessageClass::kRequest, id);
  if (change_flags) {
    std::vector<std::byte> value(change_size);
    if (change_size == 4) value[3] = std::byte{*change_flags};
    builder.add_attribute(attr::kChangeRequest, value);
  }
  builder.add_fingerprint();
  return builder.take();
}

std::optional<TransportAddress> address_of(const Message& m, uint16_t type) {
  const Attribute* a = m.find(type);
  return a ? decode_address(a->value) : std::nullopt;
}

}  // namespace

TEST_CASE("RFC 5780 7.2: CHANGE-REQUEST picks the socket the answer leaves from") {
  BindingResponder responder("x", addresses());
  struct Row {
    ServerEndpoint on;
    uint8_t flags;
    ServerEndpoint from;
    TransportAddress origin, other;
  };
  const Row rows[] = {
      {{0, 0}, 0x0, {0, 0}, kA1P1, kA2P2},
      {{0, 0}, 0x6, {1, 1}, kA2P2, kA2P2},  // change IP and port
      {{0, 0}, 0x2, {0, 1}, kA1P2, kA2P2},  // change port
      {{0, 0}, 0x4, {1, 0}, kA2P1, kA2P2},  // change IP
      {{1, 0}, 0x0, {1, 0}, kA2P1, kA1P2},  // test II of section 4.3 arrives here
      {{1, 1}, 0x6, {0, 0}, kA1P1, kA1P1},
  };
  for (const Row& row : rows) {
    INFO("on " << row.on.ip << row.on.port << " flags " << int(row.flags));
    auto result = responder.handle(request(row.flags), kClient, row.on);
    REQUIRE(result.outcome == BindingResponder::Outcome::kRespond);
    CHECK(result.send_from == row.from);
    auto parsed = parse(result.response);
    REQUIRE(parsed.status == ParseStatus::kOk);
    CHECK(parsed.message.message_class() == MessageClass::kSuccessResponse);
    CHECK(address_of(parsed.message, attr::kResponseOrigin) == row.origin);
    CHECK(address_of(parsed.message, attr::kOtherAddress) == row.other);
    const Attribute* mapped = parsed.message.find(attr::kXorMappedAddress);
    REQUIRE(mapped);
    CHECK(decode_xor_address(mapped->value, parsed.message.transaction_id) == kClient);
  }
}

TEST_CASE("without a second address: no OTHER-ADDRESS, and CHANGE-REQUEST gets 420") {
  BindingResponder responder("x");
  auto plain = responder.handle(request(std::nullopt), kClient);
  auto parsed = parse(plain.response);
  REQUIRE(parsed.status == ParseStatus::kOk);
  CHECK(parsed.message.find(attr::kOtherAddress) == nullptr);
  CHECK(parsed.message.find(attr::kResponseOrigin) == nullptr);

  auto changed = responder.handle(request(0x6), kClient);
  CHECK(changed.send_from == ServerEndpoint{});
  auto error = parse(changed.response);
  REQUIRE(error.status == ParseStatus::kOk);
  CHECK(error.message.message_class() == MessageClass::kErrorResponse);
  CHECK(error_code_of(error.message) == 420);
  CHECK(decode_unknown_attributes(error.message.find(attr::kUnknownAttributes)->value) ==
        std::vector<uint16_t>{attr::kChangeRequest});
}

TEST_CASE("a CHANGE-REQUEST of the wrong size is a 400, answered where it came in") {
  BindingResponder responder("x", addresses());
  auto result = responder.handle(request(0x6, 2), kClient);
  CHECK(result.send_from == ServerEndpoint{});
  auto parsed = parse(result.response);
  REQUIRE(parsed.status == ParseStatus::kOk);
  CHECK(error_code_of(parsed.message) == 400);
}

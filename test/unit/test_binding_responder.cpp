// The relay's STUN Binding responder (RFC 8489 section 6.3): answers, 420s, what it
// ignores or drops, RFC 3489 clients.
#include <catch2/catch.hpp>

#include <string>

#include "binding/binding_responder.h"
#include "stun/stun_message.h"
#include "stun_vectors.h"

using namespace natfwd::stun;
using namespace natfwd::stun::test;

TEST_CASE("the Binding responder answers with XOR-MAPPED-ADDRESS, SOFTWARE, FINGERPRINT") {
  BindingResponder responder("natfwd-relay test");
  const auto id = sample_transaction_id();
  for (const auto& from :
       {TransportAddress::ipv4({127, 0, 0, 1}, 40000),
        TransportAddress::ipv6({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 9)}) {
    auto request = binding_request(id);
    auto result = responder.handle(request, from);
    REQUIRE(result.outcome == BindingResponder::Outcome::kRespond);
    auto parsed = parse(result.response);
    REQUIRE(parsed.status == ParseStatus::kOk);
    const Message& response = parsed.message;
    CHECK(response.method() == method::kBinding);
    CHECK(response.message_class() == MessageClass::kSuccessResponse);
    CHECK(response.transaction_id == id);
    CHECK(response.has_fingerprint);
    CHECK(software_of(response) == "natfwd-relay test");
    const Attribute* mapped = response.find(attr::kXorMappedAddress);
    REQUIRE(mapped);
    CHECK(decode_xor_address(mapped->value, id) == from);
  }
}

TEST_CASE("the Binding responder answers the RFC 5769 request despite its credentials") {
  BindingResponder responder("x");
  auto result = responder.handle(kSampleRequest, TransportAddress::ipv4({10, 0, 0, 1}, 1));
  CHECK(result.outcome == BindingResponder::Outcome::kRespond);
}

TEST_CASE("unknown comprehension-required attributes get a 420 with UNKNOWN-ATTRIBUTES") {
  BindingResponder responder("x");
  MessageBuilder builder(method::kBinding, MessageClass::kRequest, sample_transaction_id());
  const std::byte value[4] = {};
  builder.add_attribute(0x0003, value);  // CHANGE-REQUEST (RFC 5780), not supported
  builder.add_attribute(0x7777, value);
  builder.add_attribute(0x8888, value);  // comprehension-optional: ignored
  builder.add_fingerprint();
  auto result = responder.handle(builder.bytes(), TransportAddress::ipv4({10, 0, 0, 1}, 1));
  REQUIRE(result.outcome == BindingResponder::Outcome::kRespond);
  auto parsed = parse(result.response);
  REQUIRE(parsed.status == ParseStatus::kOk);
  CHECK(parsed.message.message_class() == MessageClass::kErrorResponse);
  const Attribute* error = parsed.message.find(attr::kErrorCode);
  REQUIRE(error);
  auto code = decode_error_code(error->value);
  REQUIRE(code);
  CHECK(code->code == 420);
  const Attribute* unknown = parsed.message.find(attr::kUnknownAttributes);
  REQUIRE(unknown);
  CHECK(decode_unknown_attributes(unknown->value) == std::vector<uint16_t>{0x0003, 0x7777});
  CHECK(parsed.message.find(attr::kXorMappedAddress) == nullptr);
}

TEST_CASE("the Binding responder ignores indications and responses, drops garbage") {
  BindingResponder responder("x");
  const auto from = TransportAddress::ipv4({10, 0, 0, 1}, 1);
  MessageBuilder indication(method::kBinding, MessageClass::kIndication, sample_transaction_id());
  CHECK(responder.handle(indication.bytes(), from).outcome == BindingResponder::Outcome::kIgnore);
  CHECK(responder.handle(kSampleIpv4Response, from).outcome ==
        BindingResponder::Outcome::kIgnore);
  auto garbage = from_hex("deadbeef");
  CHECK(responder.handle(garbage, from).outcome == BindingResponder::Outcome::kDrop);
  CHECK(responder.handle({}, from).outcome == BindingResponder::Outcome::kDrop);
}

TEST_CASE("a request for an unsupported method gets 400") {
  BindingResponder responder("x");
  MessageBuilder builder(method::kAllocate, MessageClass::kRequest, sample_transaction_id());
  auto result = responder.handle(builder.bytes(), TransportAddress::ipv4({10, 0, 0, 1}, 1));
  REQUIRE(result.outcome == BindingResponder::Outcome::kRespond);
  auto parsed = parse(result.response);
  REQUIRE(parsed.status == ParseStatus::kOk);
  CHECK(parsed.message.method() == method::kAllocate);
  CHECK(error_code_of(parsed.message) == 400);
}

TEST_CASE("an RFC 3489 Binding request (no magic cookie) gets MAPPED-ADDRESS back") {
  // What libnice 0.1.21 sends to gather server-reflexive candidates.
  auto request = from_hex("00010000 a1b2c3d4 0102030405060708090a0b0c");
  CHECK(parse(request).status == ParseStatus::kInvalid);  // strict by default
  auto lenient = parse(request, Compatibility::kAcceptRfc3489);
  REQUIRE(lenient.status == ParseStatus::kOk);
  CHECK(lenient.message.classic);

  BindingResponder responder("x");
  const auto from = TransportAddress::ipv4({203, 0, 113, 5}, 61000);
  auto result = responder.handle(request, from);
  REQUIRE(result.outcome == BindingResponder::Outcome::kRespond);
  REQUIRE(result.response.size() >= kHeaderSize);
  // The 128-bit RFC 3489 transaction id is echoed whole.
  CHECK(std::equal(result.response.begin() + 4, result.response.begin() + 20,
                   request.begin() + 4));
  auto parsed = parse(result.response, Compatibility::kAcceptRfc3489);
  REQUIRE(parsed.status == ParseStatus::kOk);
  CHECK(parsed.message.type == 0x0101);
  CHECK(parsed.message.find(attr::kXorMappedAddress) == nullptr);
  const Attribute* mapped = parsed.message.find(attr::kMappedAddress);
  REQUIRE(mapped);
  CHECK(decode_address(mapped->value) == from);
}

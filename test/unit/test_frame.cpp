#include <catch2/catch.hpp>

#include "byte_literals.h"

#include "frame.h"
#include "rendezvous.pb.h"

using namespace natfwd::wire;

namespace {
using natfwd::test::bytes;

std::vector<std::byte> sample_frame() {
  Envelope envelope;
  envelope.mutable_open_session()->set_session_id(0x1122334455667788ull);
  envelope.mutable_open_session()->set_target("home");
  envelope.mutable_open_session()->mutable_ice()->set_ufrag("abcd");
  std::vector<std::byte> out;
  encode_message(envelope, out);
  return out;
}
}  // namespace

TEST_CASE("an Envelope survives a round trip through a frame") {
  auto frame = sample_frame();
  auto result = decode_frame(frame);
  REQUIRE(result.status == DecodeStatus::kComplete);
  REQUIRE(result.consumed == frame.size());
  Envelope decoded;
  REQUIRE(parse_message(result.payload, decoded));
  REQUIRE(decoded.open_session().session_id() == 0x1122334455667788ull);
  REQUIRE(decoded.open_session().target() == "home");
  REQUIRE(decoded.open_session().ice().ufrag() == "abcd");
}

TEST_CASE("every proper prefix of a valid frame needs more") {
  auto frame = sample_frame();
  for (size_t n = 0; n < frame.size(); ++n) {
    INFO("prefix length " << n);
    auto result = decode_frame(std::span(frame).first(n));
    REQUIRE(result.status == DecodeStatus::kNeedMore);
  }
}

TEST_CASE("two frames back to back decode one at a time") {
  auto first = sample_frame();
  std::vector<std::byte> stream = first;
  Envelope ping;
  ping.mutable_ping()->set_nonce(7);
  encode_message(ping, stream);
  auto one = decode_frame(stream);
  REQUIRE(one.status == DecodeStatus::kComplete);
  REQUIRE(one.consumed == first.size());
  auto two = decode_frame(std::span(stream).subspan(one.consumed));
  REQUIRE(two.status == DecodeStatus::kComplete);
  Envelope decoded;
  REQUIRE(parse_message(two.payload, decoded));
  REQUIRE(decoded.ping().nonce() == 7);
}

TEST_CASE("an empty payload is a valid frame") {
  std::vector<std::byte> frame;
  encode_frame({}, frame);
  auto result = decode_frame(frame);
  REQUIRE(result.status == DecodeStatus::kComplete);
  REQUIRE(result.payload.empty());
  REQUIRE(result.consumed == kFrameHeaderSize);
}

TEST_CASE("named bad frames are invalid as soon as the bad byte arrives") {
  struct Vector {
    const char* name;
    std::vector<std::byte> input;
  };
  const Vector vectors[] = {
      {"STUN binding request", bytes({0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42})},
      {"TLS client hello", bytes({0x16, 0x03, 0x01, 0x02, 0x00})},
      {"HTTP request", bytes({int('G'), int('E'), int('T'), int(' ')})},
      {"second magic byte wrong", bytes({0xC5, int('X')})},
      {"future version", bytes({0xC5, int('F'), 2})},
      {"reserved byte set", bytes({0xC5, int('F'), 1, 1})},
      {"length over the limit", bytes({0xC5, int('F'), 1, 0, 0x00, 0x01, 0x00, 0x01})},
      {"length 4 GiB", bytes({0xC5, int('F'), 1, 0, 0xff, 0xff, 0xff, 0xff})},
  };
  for (const auto& v : vectors) {
    INFO(v.name);
    auto result = decode_frame(v.input);
    REQUIRE(result.status == DecodeStatus::kInvalid);
    REQUIRE_FALSE(result.error.empty());
  }
}

TEST_CASE("a frame exactly at the limit is accepted, one byte over is not") {
  std::vector<std::byte> payload(kMaxFramePayload, std::byte{0x42});
  std::vector<std::byte> frame;
  encode_frame(payload, frame);
  REQUIRE(decode_frame(frame).status == DecodeStatus::kComplete);
  REQUIRE(decode_frame(frame, kMaxFramePayload - 1).status == DecodeStatus::kInvalid);
  payload.push_back(std::byte{0});
  std::vector<std::byte> too_big;
  REQUIRE_THROWS_AS(encode_frame(payload, too_big), std::length_error);
}

TEST_CASE("frames never look like STUN, ChannelData, TLS or HTTP") {
  REQUIRE(looks_like_frame(kFrameMagic0));
  for (int first : {0x00, 0x01, 0x40, 0x4f, 0x7f, 0x16, int('G'), int('C'), int('P')})
    REQUIRE_FALSE(looks_like_frame(static_cast<std::byte>(first)));
}

TEST_CASE("a garbage payload is not an Envelope with a message") {
  auto garbage = bytes({0xff, 0xff, 0xff, 0xff, 0x0f});
  Envelope envelope;
  bool parsed = parse_message(garbage, envelope);
  REQUIRE((!parsed || envelope.msg_case() == Envelope::MSG_NOT_SET));
}

// SendIndicationFramer: the relayed pair's own TURN framing (RFC 8656 section 11.1),
// read back with the STUN codec the relay uses.
#include <catch2/catch.hpp>

#include <cstddef>
#include <vector>

#include "ice/send_indication.h"
#include "stun/stun_message.h"

using namespace natfwd;

namespace {

// RFC 8656 section 18.
constexpr uint16_t kXorPeerAddress = 0x0012;
constexpr uint16_t kData = 0x0013;

std::vector<std::byte> payload_of(size_t size) {
  std::vector<std::byte> out(size);
  for (size_t i = 0; i < size; ++i) out[i] = static_cast<std::byte>(i * 7 + 1);
  return out;
}

struct Read {
  stun::TransportAddress peer;
  std::vector<std::byte> data;
  stun::TransactionId transaction;
};

Read read_indication(std::span<const std::byte> bytes) {
  auto parsed = stun::parse(bytes);
  REQUIRE(parsed.status == stun::ParseStatus::kOk);
  CHECK(parsed.message.method() == stun::method::kSend);
  CHECK(parsed.message.message_class() == stun::MessageClass::kIndication);
  const auto* peer = parsed.message.find(kXorPeerAddress);
  const auto* data = parsed.message.find(kData);
  REQUIRE(peer);
  REQUIRE(data);
  auto address = stun::decode_xor_address(peer->value, parsed.message.transaction_id);
  REQUIRE(address);
  return {*address, {data->value.begin(), data->value.end()}, parsed.message.transaction_id};
}

}  // namespace

TEST_CASE("send indications carry the payload to the peer, padded, for both families") {
  const auto v4 = stun::TransportAddress::ipv4({198, 51, 100, 7}, 40123);
  const auto v6 = stun::TransportAddress::ipv6(
      {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34}, 3478);
  for (const auto& peer : {v4, v6}) {
    stun::TransactionId first{};
    first.fill(std::byte{0xAB});
    SendIndicationFramer framer(peer, first);
    for (size_t size : {0, 1, 2, 3, 4, 1350, 1351}) {
      const auto payload = payload_of(size);
      std::vector<std::byte> out;
      framer.append(payload, out);
      REQUIRE(out.size() == framer.framed_size(size));
      CHECK(out.size() % 4 == 0);
      CHECK(out.size() <= size + SendIndicationFramer::kMaxOverhead);
      const auto read = read_indication(out);
      CHECK(read.peer == peer);
      CHECK(read.data == payload);
    }
  }
}

TEST_CASE("back-to-back send indications in one buffer each stand alone, with their own ids") {
  const auto peer = stun::TransportAddress::ipv4({203, 0, 113, 9}, 50000);
  stun::TransactionId first{};
  first.back() = std::byte{0xFF};  // the counter carries into the next byte
  SendIndicationFramer framer(peer, first);
  std::vector<std::byte> out;
  const std::vector<size_t> sizes = {1350, 1350, 17};
  for (size_t size : sizes) framer.append(payload_of(size), out);
  size_t offset = 0;
  std::vector<stun::TransactionId> ids;
  for (size_t size : sizes) {
    const size_t framed = framer.framed_size(size);
    const auto read = read_indication(std::span(out).subspan(offset, framed));
    CHECK(read.data == payload_of(size));
    ids.push_back(read.transaction);
    offset += framed;
  }
  CHECK(offset == out.size());
  CHECK(ids[0] != first);
  CHECK(ids[0] != ids[1]);
  CHECK(ids[1] != ids[2]);
  // Equal payloads frame to equal sizes: one GSO run.
  CHECK(framer.framed_size(1350) == framer.framed_size(1350));
}

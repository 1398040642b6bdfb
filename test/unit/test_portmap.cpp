// Port mapping cores without I/O: the PCP MAP codec (RFC 6887 sections 7 and 11), the
// retransmission of one request, and a mapping's life (protocol fallback, renewal,
// expiry, delete) on a fake clock.
#include <catch2/catch.hpp>

#include <cstring>

#include "portmap/mapping_lifecycle.h"
#include "portmap/pcp_codec.h"

using namespace natfwd::portmap;

namespace {

PcpNonce test_nonce() {
  PcpNonce nonce;
  for (size_t i = 0; i < nonce.size(); ++i) nonce[i] = std::byte(0xa0 + i);
  return nonce;
}

// A MAP success response the way a PCP server writes it (RFC 6887 sections 7.2, 11.1).
std::vector<std::byte> map_response(uint8_t result, uint32_t lifetime, const PcpNonce& nonce,
                                    std::array<uint8_t, 4> external_ip, uint16_t port,
                                    uint8_t version = 2) {
  std::vector<std::byte> out(60, std::byte{0});
  out[0] = std::byte{version};
  out[1] = std::byte{0x81};
  out[3] = std::byte{result};
  for (int i = 0; i < 4; ++i) out[4 + i] = std::byte((lifetime >> (24 - 8 * i)) & 0xff);
  out[11] = std::byte{42};  // epoch
  std::memcpy(out.data() + 24, nonce.data(), 12);
  out[36] = std::byte{17};
  out[40] = std::byte{0xa0};  // internal port 41000
  out[41] = std::byte{0x28};
  out[42] = std::byte(port >> 8);
  out[43] = std::byte(port & 0xff);
  out[54] = out[55] = std::byte{0xff};
  for (int i = 0; i < 4; ++i) out[56 + i] = std::byte{external_ip[i]};
  return out;
}

}  // namespace

TEST_CASE("PCP MAP request has the RFC 6887 layout", "[portmap]") {
  PcpMapRequest request;
  request.client_ip = {192, 168, 10, 2};
  request.internal_port = 41000;
  request.suggested_external_port = 41000;
  request.lifetime_seconds = 7200;
  request.nonce = test_nonce();
  const auto bytes = encode_map_request(request);
  REQUIRE(bytes.size() == 60);
  CHECK(bytes[0] == std::byte{2});      // version
  CHECK(bytes[1] == std::byte{1});      // R = 0, opcode MAP
  CHECK(bytes[4] == std::byte{0x00});   // lifetime 7200 = 0x00001c20
  CHECK(bytes[6] == std::byte{0x1c});
  CHECK(bytes[7] == std::byte{0x20});
  // Client address ::ffff:192.168.10.2
  for (int i = 8; i < 18; ++i) CHECK(bytes[i] == std::byte{0});
  CHECK(bytes[18] == std::byte{0xff});
  CHECK(bytes[19] == std::byte{0xff});
  CHECK(bytes[20] == std::byte{192});
  CHECK(bytes[23] == std::byte{2});
  CHECK(std::memcmp(bytes.data() + 24, test_nonce().data(), 12) == 0);
  CHECK(bytes[36] == std::byte{17});    // UDP
  CHECK(bytes[40] == std::byte{0xa0});  // internal port 41000 = 0xa028
  CHECK(bytes[41] == std::byte{0x28});
  CHECK(bytes[42] == std::byte{0xa0});  // suggested external port
  CHECK(bytes[54] == std::byte{0xff});  // suggested external ::ffff:0.0.0.0
  CHECK(bytes[59] == std::byte{0});
}

TEST_CASE("PCP MAP response is parsed and checked", "[portmap]") {
  const PcpNonce nonce = test_nonce();
  SECTION("success") {
    const auto bytes = map_response(0, 3600, nonce, {11, 0, 0, 2}, 41001);
    const PcpParse p = parse_map_response(bytes, nonce);
    REQUIRE(p.status == PcpParse::Status::kComplete);
    CHECK(p.response.result == PcpResult::kSuccess);
    CHECK(p.response.lifetime_seconds == 3600);
    CHECK(p.response.epoch_seconds == 42);
    CHECK(p.response.internal_port == 41000);
    CHECK(p.response.external_port == 41001);
    CHECK(p.response.external_ip == "11.0.0.2");
  }
  SECTION("an error result is a complete answer") {
    const auto bytes = map_response(2, 0, nonce, {0, 0, 0, 0}, 0);
    const PcpParse p = parse_map_response(bytes, nonce);
    REQUIRE(p.status == PcpParse::Status::kComplete);
    CHECK(to_string(p.response.result) == "NOT_AUTHORIZED");
  }
  SECTION("a short error response without opcode data") {
    auto bytes = map_response(8, 0, nonce, {0, 0, 0, 0}, 0);
    bytes.resize(24);
    const PcpParse p = parse_map_response(bytes, nonce);
    REQUIRE(p.status == PcpParse::Status::kComplete);
    CHECK(p.response.result == PcpResult::kNoResources);
  }
  SECTION("a NAT-PMP server's version 0 answer") {
    const std::vector<std::byte> natpmp = {std::byte{0}, std::byte{0x81}, std::byte{0},
                                           std::byte{1}, std::byte{0}, std::byte{0},
                                           std::byte{0}, std::byte{9}};
    CHECK(parse_map_response(natpmp, nonce).status == PcpParse::Status::kNotPcp);
    const auto v1 = map_response(1, 0, nonce, {0, 0, 0, 0}, 0, 1);
    CHECK(parse_map_response(v1, nonce).status == PcpParse::Status::kNotPcp);
  }
  SECTION("named bad vectors") {
    auto check_invalid = [&](std::vector<std::byte> bytes) {
      CHECK(parse_map_response(bytes, nonce).status == PcpParse::Status::kInvalid);
    };
    auto other_nonce = nonce;
    other_nonce[0] = std::byte{0};
    check_invalid(map_response(0, 3600, other_nonce, {11, 0, 0, 2}, 41001));
    auto request_bit = map_response(0, 3600, nonce, {11, 0, 0, 2}, 41001);
    request_bit[1] = std::byte{0x01};
    check_invalid(request_bit);
    auto other_opcode = map_response(0, 3600, nonce, {11, 0, 0, 2}, 41001);
    other_opcode[1] = std::byte{0x82};  // PEER
    check_invalid(other_opcode);
    auto not_v4 = map_response(0, 3600, nonce, {11, 0, 0, 2}, 41001);
    not_v4[54] = std::byte{0};
    check_invalid(not_v4);
    check_invalid(map_response(0, 3600, nonce, {11, 0, 0, 2}, 0));  // external port 0
    auto odd = map_response(0, 3600, nonce, {11, 0, 0, 2}, 41001);
    odd.push_back(std::byte{0});
    check_invalid(odd);
  }
  SECTION("every prefix of a success is refused or read as an error, never read past") {
    const auto bytes = map_response(0, 3600, nonce, {11, 0, 0, 2}, 41001);
    for (size_t n = 0; n < bytes.size(); ++n) {
      const PcpParse p = parse_map_response(std::span(bytes.data(), n), nonce);
      CHECK(p.status != PcpParse::Status::kComplete);
    }
  }
}

TEST_CASE("PCP request retransmits at 250 ms doubling and gives up at 2 s", "[portmap]") {
  PcpMapRequest request;
  request.nonce = test_nonce();
  request.lifetime_seconds = 7200;
  const int64_t t0 = 1'000'000;
  PcpExchange exchange(request, t0);
  std::vector<int64_t> sent;
  for (int64_t now = t0; now < t0 + 3'000'000; now += 10'000) {
    if (exchange.due(now)) sent.push_back(now - t0);
    if (exchange.check(now) == PcpExchange::Outcome::kGaveUp) break;
  }
  CHECK(sent == std::vector<int64_t>{0, 250'000, 750'000, 1'750'000});
  CHECK(exchange.check(t0 + kPcpGiveUpUs) == PcpExchange::Outcome::kGaveUp);
  CHECK(exchange.check(t0 + kPcpGiveUpUs - 1) == PcpExchange::Outcome::kPending);
}

TEST_CASE("PCP exchange ignores garbage and stops at the answer", "[portmap]") {
  PcpMapRequest request;
  request.nonce = test_nonce();
  PcpExchange exchange(request, 0);
  REQUIRE(exchange.due(0));
  const std::vector<std::byte> garbage(7, std::byte{0x55});
  CHECK(exchange.on_datagram(garbage) == PcpExchange::Outcome::kPending);
  const auto answer = map_response(0, 3600, test_nonce(), {11, 0, 0, 2}, 41001);
  CHECK(exchange.on_datagram(answer) == PcpExchange::Outcome::kAnswered);
  CHECK(exchange.response().external_port == 41001);
  CHECK_FALSE(exchange.due(250'000));  // no retransmission after the answer
  CHECK(exchange.check(5'000'000) == PcpExchange::Outcome::kAnswered);
}

TEST_CASE("a mapping tries PCP, then NAT-PMP, then UPnP, and says why each failed",
          "[portmap]") {
  using Kind = MappingLifecycle::Step::Kind;
  MappingLifecycle life({MapProtocol::kPcp, MapProtocol::kNatPmp, MapProtocol::kUpnp});
  auto step = life.start();
  CHECK(step.kind == Kind::kRequest);
  CHECK(step.protocol == MapProtocol::kPcp);
  step = life.on_answer({false, "", 0, 0, "refused"}, 0);
  CHECK(step.kind == Kind::kRequest);
  CHECK(step.protocol == MapProtocol::kNatPmp);
  step = life.on_answer({false, "", 0, 0, "no answer"}, 0);
  CHECK(step.protocol == MapProtocol::kUpnp);
  step = life.on_answer({false, "", 0, 0, "no UPnP gateway answered"}, 0);
  CHECK(step.kind == Kind::kNone);
  CHECK(life.state() == MappingLifecycle::State::kFailed);
  CHECK(life.errors() ==
        "pcp: refused; nat-pmp: no answer; upnp: no UPnP gateway answered");
  CHECK_FALSE(life.next_deadline());
  CHECK(life.release().kind == Kind::kNone);  // nothing to delete
}

TEST_CASE("a mapping renews at half its lifetime and is lost when renewals fail",
          "[portmap]") {
  using Kind = MappingLifecycle::Step::Kind;
  MappingLifecycle life({MapProtocol::kPcp, MapProtocol::kNatPmp});
  life.start();
  const int64_t s = 1'000'000;
  CHECK(life.on_answer({true, "11.0.0.2", 41000, 120, ""}, 0).kind == Kind::kNone);
  REQUIRE(life.state() == MappingLifecycle::State::kMapped);
  CHECK(life.external_ip() == "11.0.0.2");
  REQUIRE(life.next_deadline() == 60 * s);
  CHECK(life.on_timer(59 * s).kind == Kind::kNone);
  auto step = life.on_timer(60 * s);
  CHECK(step.kind == Kind::kRequest);
  CHECK(step.protocol == MapProtocol::kPcp);  // the protocol that mapped it
  CHECK_FALSE(life.next_deadline());          // waiting for the answer
  // Renewed: a new half-life from now.
  life.on_answer({true, "11.0.0.2", 41000, 120, ""}, 61 * s);
  CHECK(life.next_deadline() == 121 * s);
  // A failed renewal keeps the mapping and retries every 30 s until it expires.
  life.on_timer(121 * s);
  life.on_answer({false, "", 0, 0, "no answer"}, 122 * s);
  CHECK(life.state() == MappingLifecycle::State::kMapped);
  CHECK(life.next_deadline() == 152 * s);
  life.on_timer(152 * s);
  life.on_answer({false, "", 0, 0, "no answer"}, 153 * s);
  CHECK(life.next_deadline() == 181 * s);  // capped at the expiry (61 + 120)
  CHECK(life.on_timer(181 * s).kind == Kind::kNone);
  CHECK(life.state() == MappingLifecycle::State::kLost);
}

TEST_CASE("a released mapping is deleted, also when its request was still running",
          "[portmap]") {
  using Kind = MappingLifecycle::Step::Kind;
  SECTION("mapped") {
    MappingLifecycle life({MapProtocol::kNatPmp});
    life.start();
    life.on_answer({true, "11.0.0.2", 41000, 7200, ""}, 0);
    const auto step = life.release();
    CHECK(step.kind == Kind::kDelete);
    CHECK(step.protocol == MapProtocol::kNatPmp);
    CHECK_FALSE(life.next_deadline());
  }
  SECTION("released before the answer") {
    MappingLifecycle life({MapProtocol::kPcp});
    life.start();
    CHECK(life.release().kind == Kind::kNone);
    const auto step = life.on_answer({true, "11.0.0.2", 41000, 7200, ""}, 0);
    CHECK(step.kind == Kind::kDelete);
    CHECK(life.state() == MappingLifecycle::State::kReleased);
  }
}

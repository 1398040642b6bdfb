// What two peers agree on before a hard-NAT punch (peer/punch/punch_plan.h), the punch
// offer on the wire (proto/stream_open.h) and the serving side's handling of it
// (peer/tunnel/stream_opening.h): roles, addresses, key and session checks, and the
// refusal an older serving peer gives.
#include <catch2/catch.hpp>

#include "punch/punch_plan.h"
#include "stream_open.h"
#include "tunnel/stream_opening.h"

using namespace natfwd;
using namespace natfwd::punch;

namespace {

constexpr uint64_t kSession = 0x0123456789abcdefULL;

PunchKey test_key() {
  PunchKey key{};
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(i * 7 + 1);
  return key;
}

wire::PunchOffer offer(bool dependent, const char* address, const PunchKey* key = nullptr,
                       uint64_t session = kSession) {
  return make_offer(dependent, *parse_ipv4_address(address), session, key);
}

}  // namespace

TEST_CASE("punch plan: IPv4 ip:port parses, anything else does not") {
  auto parsed = parse_ipv4_address("203.0.113.5:41234");
  REQUIRE(parsed);
  CHECK(*parsed == TransportAddress::ipv4({203, 0, 113, 5}, 41234));
  CHECK(parse_ipv4_address("0.0.0.0:1"));
  for (const char* bad : {"", ":", "203.0.113.5", "203.0.113.5:", "203.0.113.5:0",
                          "203.0.113.5:65536", "203.0.113:80", "203.0.113.5.1:80",
                          "256.0.0.1:80", "a.b.c.d:80", "[2001:db8::1]:80", "1..2.3:4",
                          "203.0.113.5:80x", "-1.0.0.1:80", "1234.0.0.1:80"}) {
    INFO(bad);
    CHECK_FALSE(parse_ipv4_address(bad));
  }
}

TEST_CASE("punch plan: the side whose NAT maps per destination is hard, the other easy") {
  const PunchKey key = test_key();
  const auto connecting = offer(true, "198.51.100.2:40001", &key);  // behind `symmetric`
  const auto serving = offer(false, "198.51.100.10:50123");         // behind `eim`

  const auto hard = plan_punch(connecting, serving, connecting);
  REQUIRE(hard.plan);
  CHECK(hard.plan->role == Role::kHard);
  CHECK(hard.plan->remote == TransportAddress::ipv4({198, 51, 100, 10}, 50123));
  CHECK(hard.plan->session_id == kSession);
  CHECK(hard.plan->key == key);

  const auto easy = plan_punch(serving, connecting, connecting);
  REQUIRE(easy.plan);
  CHECK(easy.plan->role == Role::kEasy);
  CHECK(easy.plan->remote == TransportAddress::ipv4({198, 51, 100, 2}, 40001));
  CHECK(easy.plan->key == key);
}

TEST_CASE("punch plan: two easy or two hard sides do not punch, and say why") {
  const PunchKey key = test_key();
  const auto easy_a = offer(false, "198.51.100.2:40001", &key);
  const auto easy_b = offer(false, "198.51.100.10:50123");
  auto both_easy = plan_punch(easy_a, easy_b, easy_a);
  CHECK_FALSE(both_easy.plan);
  CHECK_THAT(both_easy.why_not, Catch::Contains("neither"));
  const auto hard_a = offer(true, "198.51.100.2:40001", &key);
  const auto hard_b = offer(true, "198.51.100.10:50123");
  auto both_hard = plan_punch(hard_a, hard_b, hard_a);
  CHECK_FALSE(both_hard.plan);
  CHECK_THAT(both_hard.why_not, Catch::Contains("both"));
}

TEST_CASE("punch plan: a bad key, another session or a bad address gives no plan") {
  const PunchKey key = test_key();
  const auto local = offer(true, "198.51.100.2:40001", &key);
  SECTION("the key is not 32 bytes") {
    auto short_key = local;
    short_key.set_key("short");
    CHECK_FALSE(plan_punch(short_key, offer(false, "198.51.100.10:1"), short_key).plan);
    auto no_key = local;
    no_key.clear_key();
    CHECK_FALSE(plan_punch(no_key, offer(false, "198.51.100.10:1"), no_key).plan);
  }
  SECTION("the answer names another session") {
    const auto other = offer(false, "198.51.100.10:1", nullptr, kSession + 1);
    const auto outcome = plan_punch(local, other, local);
    CHECK_FALSE(outcome.plan);
    CHECK_THAT(outcome.why_not, Catch::Contains("session"));
  }
  SECTION("the other side's address is not IPv4 ip:port") {
    for (const char* bad : {"", "198.51.100.10", "[2001:db8::1]:4000", "home:4000"}) {
      wire::PunchOffer remote;
      remote.set_session_id(kSession);
      remote.set_address(bad);
      INFO(bad);
      CHECK_FALSE(plan_punch(local, remote, local).plan);
    }
  }
}

TEST_CASE("punch offer: the stream header and the answer carry it both ways") {
  const PunchKey key = test_key();
  const auto sent = offer(true, "203.0.113.5:41234", &key);
  const auto header = wire::encode_punch_request(sent);
  const auto decoded = wire::decode_stream_open(header);
  REQUIRE(decoded.status == wire::DecodeStatus::kComplete);
  CHECK(decoded.consumed == header.size());
  REQUIRE(decoded.request.punch);
  CHECK(decoded.request.punch->SerializeAsString() == sent.SerializeAsString());
  CHECK_FALSE(decoded.request.is_pairing());
  // Every prefix needs more.
  for (size_t n = 0; n < header.size(); ++n)
    CHECK(wire::decode_stream_open(std::span(header).first(n)).status ==
          wire::DecodeStatus::kNeedMore);

  const auto reply = offer(false, "198.51.100.7:50123");
  const auto answer = wire::encode_stream_open_result(0, "", &reply);
  const auto answer_decoded = wire::decode_stream_open_result(answer);
  REQUIRE(answer_decoded.status == wire::DecodeStatus::kComplete);
  REQUIRE(answer_decoded.punch);
  CHECK(answer_decoded.punch->address() == "198.51.100.7:50123");
  // An ordinary answer carries none.
  CHECK_FALSE(wire::decode_stream_open_result(wire::encode_stream_open_result(0, "")).punch);
}

TEST_CASE("punch offer: a serving side that does not punch refuses it, one that does answers") {
  const PunchKey key = test_key();
  const auto header = wire::encode_punch_request(offer(true, "203.0.113.5:41234", &key));
  auto policy = [](const HostPort&) { return StreamDecision{}; };

  auto without = StreamOpening::serving(policy, {});
  CHECK(without.receive(header, false) == StreamOpening::Outcome::kRefuse);
  CHECK(without.decision().status == static_cast<int>(wire::StreamStatus::kNotServed));
  CHECK_FALSE(without.decision().punch);
  CHECK(without.target().host.empty());  // never a connect

  std::optional<uint64_t> seen;
  auto with = StreamOpening::serving(policy, {}, [&](const wire::PunchOffer& got) {
    seen = got.session_id();
    StreamDecision answer;
    answer.punch = offer(false, "198.51.100.7:50123");
    return answer;
  });
  CHECK(with.receive(header, false) == StreamOpening::Outcome::kRefuse);
  CHECK(seen == kSession);
  CHECK(with.decision().status == static_cast<int>(wire::StreamStatus::kOk));
  REQUIRE(with.decision().punch);

  // The connecting side reads the answer with the offer in it.
  auto asking = StreamOpening::punching(offer(true, "203.0.113.5:41234", &key));
  const auto reply = offer(false, "198.51.100.7:50123");
  CHECK(asking.receive(wire::encode_stream_open_result(0, "", &reply), true) ==
        StreamOpening::Outcome::kAnswered);
  REQUIRE(asking.decision().punch);
  CHECK(asking.decision().punch->address() == "198.51.100.7:50123");
}

// ConnectionBudget (relay/admission/): places per source address and in total for TLS
// handshakes and TURN-over-TCP/TLS streams, and the deadline each connection must
// meet, on a fake clock.
#include <catch2/catch.hpp>

#include "admission/connection_budget.h"

using namespace natfwd;
using namespace natfwd::relay;
using namespace std::chrono_literals;
using Admission = ConnectionBudget::Admission;

namespace {

stun::TransportAddress from(uint8_t last, uint16_t port = 40000) {
  return stun::TransportAddress::ipv4({192, 0, 2, last}, port);
}

const ConnectionBudget::TimePoint kStart = ConnectionBudget::TimePoint{} + 1000s;

}  // namespace

TEST_CASE("connection budget: a thousand connections from one address leave room for others") {
  ConnectionBudget budget({.total = 1024, .per_address = 64, .deadline = 10s});
  size_t accepted = 0, refused = 0;
  for (uint64_t id = 1; id <= 1000; ++id) {
    const auto verdict = budget.admit(id, from(66, static_cast<uint16_t>(id)), kStart);
    (verdict == Admission::kAccepted ? accepted : refused) += 1;
    if (verdict != Admission::kAccepted) CHECK(verdict == Admission::kTooManyFromAddress);
  }
  CHECK(accepted == 64);
  CHECK(refused == 936);
  CHECK(budget.count_from(from(66)) == 64);
  CHECK(budget.admit(5000, from(7), kStart) == Admission::kAccepted);
  // A closed connection gives its place back.
  budget.release(1);
  CHECK(budget.admit(1001, from(66), kStart) == Admission::kAccepted);
  CHECK(budget.admit(1002, from(66), kStart) == Admission::kTooManyFromAddress);
}

TEST_CASE("connection budget: the total bounds all addresses together") {
  ConnectionBudget budget({.total = 3, .per_address = 2, .deadline = 10s});
  CHECK(budget.admit(1, from(1), kStart) == Admission::kAccepted);
  CHECK(budget.admit(2, from(1), kStart) == Admission::kAccepted);
  CHECK(budget.admit(3, from(2), kStart) == Admission::kAccepted);
  CHECK(budget.admit(4, from(3), kStart) == Admission::kTooMany);
  CHECK(budget.count() == 3);
  budget.release(3);
  budget.release(3);  // twice is harmless
  CHECK(budget.count() == 2);
  CHECK(budget.admit(4, from(3), kStart) == Admission::kAccepted);
}

TEST_CASE("connection budget: no progress by the deadline expires; touch moves it, hold stops it") {
  ConnectionBudget budget({.total = 10, .per_address = 10, .deadline = 10s});
  REQUIRE(budget.admit(1, from(1), kStart) == Admission::kAccepted);
  REQUIRE(budget.admit(2, from(1), kStart + 1s) == Admission::kAccepted);
  REQUIRE(budget.admit(3, from(2), kStart + 2s) == Admission::kAccepted);
  CHECK(budget.next_deadline() == kStart + 10s);
  // 2 makes progress at 9 s, 3 gets an allocation (held): only 1 expires at 10 s.
  budget.touch(2, kStart + 9s);
  budget.hold(3);
  CHECK(budget.take_expired(kStart + 10s - 1ms).empty());
  CHECK(budget.take_expired(kStart + 10s) == std::vector<uint64_t>{1});
  CHECK(budget.next_deadline() == kStart + 19s);
  CHECK(budget.take_expired(kStart + 100s) == std::vector<uint64_t>{2});
  CHECK(!budget.next_deadline());
  // Expired connections keep their place until the service has closed them.
  CHECK(budget.count() == 3);
  // A held connection whose allocation went away must make progress again.
  budget.touch(3, kStart + 200s);
  CHECK(budget.take_expired(kStart + 210s) == std::vector<uint64_t>{3});
  for (uint64_t id : {1, 2, 3}) budget.release(id);
  CHECK(budget.count() == 0);
  CHECK(budget.count_from(from(1)) == 0);
}

TEST_CASE("connection budget: an IPv6 /64 is one source, as one subscriber's prefix") {
  ConnectionBudget budget({.total = 10, .per_address = 2, .deadline = 10s});
  auto v6 = [](uint8_t subnet, uint8_t host) {
    return stun::TransportAddress::ipv6(
        {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, subnet, 0, 0, 0, 0, 0, 0, 0, host}, 443);
  };
  CHECK(budget.admit(1, v6(1, 1), kStart) == Admission::kAccepted);
  CHECK(budget.admit(2, v6(1, 2), kStart) == Admission::kAccepted);
  CHECK(budget.admit(3, v6(1, 3), kStart) == Admission::kTooManyFromAddress);
  CHECK(budget.admit(4, v6(2, 1), kStart) == Admission::kAccepted);
  CHECK(source_key(v6(1, 9)) == source_key(v6(1, 200)));
  CHECK(source_key(from(1)) != source_key(from(2)));
}

// The publishing front door's visitor limits (relay/front_door/visitor_limits.h) on a
// fake clock: places per publisher and in total, new visitors per minute, byte
// budgets each way, and the counters --metrics shows.
#include <catch2/catch.hpp>

#include <chrono>

#include "front_door/visitor_limits.h"
#include "metrics/relay_stats.h"

using natfwd::relay::RelayStats;
using natfwd::relay::front_door::VisitorLimits;
using Admission = VisitorLimits::Admission;
using Direction = VisitorLimits::Direction;
using namespace std::chrono_literals;

namespace {
const VisitorLimits::TimePoint kStart = VisitorLimits::TimePoint{} + 1000s;
const std::string kHome = "homekey";
const std::string kOther = "otherkey";
}  // namespace

TEST_CASE("visitor limits: places per publisher, given back on release") {
  RelayStats stats;
  VisitorLimits limits({{2, 0, 0}, {0, 0, 0}}, kStart, &stats);
  CHECK(limits.admit(kHome, kStart) == Admission::kAccepted);
  CHECK(limits.admit(kHome, kStart) == Admission::kAccepted);
  CHECK(limits.admit(kHome, kStart) == Admission::kPublisherConnections);
  // Another publisher has places of its own.
  CHECK(limits.admit(kOther, kStart) == Admission::kAccepted);
  CHECK(limits.open(kHome) == 2);
  CHECK(limits.open_total() == 3);
  limits.release(kHome);
  CHECK(limits.admit(kHome, kStart) == Admission::kAccepted);
  CHECK(stats.publishers[kHome].accepted == 3);
  CHECK(stats.publishers[kHome].refused_limit == 1);
  CHECK(stats.publishers[kOther].accepted == 1);
  CHECK(limits.open_by_publisher().at(kHome) == 2);
  // A release of a place nobody holds changes nothing.
  limits.release("nobody");
  CHECK(limits.open_total() == 3);
}

TEST_CASE("visitor limits: the total caps every publisher together") {
  VisitorLimits limits({{10, 0, 0}, {3, 0, 0}}, kStart);
  CHECK(limits.admit(kHome, kStart) == Admission::kAccepted);
  CHECK(limits.admit(kHome, kStart) == Admission::kAccepted);
  CHECK(limits.admit(kOther, kStart) == Admission::kAccepted);
  CHECK(limits.admit(kOther, kStart) == Admission::kTotalConnections);
  limits.release(kHome);
  CHECK(limits.admit(kOther, kStart) == Admission::kAccepted);
}

TEST_CASE("visitor limits: new visitors per minute, refilled evenly") {
  VisitorLimits limits({{0, 6, 0}, {0, 100, 0}}, kStart);
  for (int i = 0; i < 6; ++i) CHECK(limits.admit(kHome, kStart) == Admission::kAccepted);
  CHECK(limits.admit(kHome, kStart) == Admission::kPublisherRate);
  CHECK(limits.admit(kHome, kStart + 9s) == Admission::kPublisherRate);
  CHECK(limits.admit(kHome, kStart + 10s) == Admission::kAccepted);
  // A refusal for lack of places spends no token.
  VisitorLimits places({{1, 1, 0}, {0, 0, 0}}, kStart);
  CHECK(places.admit(kHome, kStart) == Admission::kAccepted);
  CHECK(places.admit(kHome, kStart) == Admission::kPublisherConnections);
  CHECK(places.admit(kHome, kStart + 60s) == Admission::kPublisherConnections);
  places.release(kHome);
  CHECK(places.admit(kHome, kStart + 60s) == Admission::kAccepted);
  // The total rate.
  VisitorLimits total({{0, 0, 0}, {0, 2, 0}}, kStart);
  CHECK(total.admit(kHome, kStart) == Admission::kAccepted);
  CHECK(total.admit(kOther, kStart) == Admission::kAccepted);
  CHECK(total.admit(kOther, kStart) == Admission::kTotalRate);
}

TEST_CASE("visitor limits: no limits configured admits and allows everything") {
  VisitorLimits limits({{0, 0, 0}, {0, 0, 0}}, kStart);
  for (int i = 0; i < 1000; ++i) CHECK(limits.admit(kHome, kStart) == Admission::kAccepted);
  CHECK(limits.allowance(kHome, Direction::kToVisitor, kStart) == SIZE_MAX);
}

TEST_CASE("visitor limits: bytes per second each way, per publisher and in total") {
  RelayStats stats;
  VisitorLimits limits({{0, 0, 100'000}, {0, 0, 150'000}}, kStart, &stats);
  CHECK(limits.allowance(kHome, Direction::kToVisitor, kStart) == 100'000);
  limits.spent(kHome, Direction::kToVisitor, 100'000, kStart);
  CHECK(limits.allowance(kHome, Direction::kToVisitor, kStart) == 0);
  // The other direction has its own budget.
  CHECK(limits.allowance(kHome, Direction::kToHome, kStart) == 100'000);
  // Under kMinGrantBytes is no allowance yet: a throttled connection moves in steps.
  CHECK(limits.allowance(kHome, Direction::kToVisitor, kStart + 100ms) == 0);
  CHECK(limits.retry_after(kHome, Direction::kToVisitor, kStart + 100ms) == 64ms);
  CHECK(limits.allowance(kHome, Direction::kToVisitor, kStart + 200ms) == 20'000);
  // The other publisher meets the total, not its own budget.
  CHECK(limits.allowance(kOther, Direction::kToVisitor, kStart + 200ms) == 80'000);
  // Bytes that went beyond the budget are a debt.
  limits.spent(kOther, Direction::kToVisitor, 90'000, kStart + 200ms);
  CHECK(limits.allowance(kOther, Direction::kToVisitor, kStart + 200ms) == 0);
  CHECK(limits.retry_after(kOther, Direction::kToVisitor, kStart + 200ms) == 176ms);
  CHECK(stats.publishers[kHome].bytes_to_visitor == 100'000);
  CHECK(stats.publishers[kOther].bytes_to_visitor == 90'000);
  CHECK(stats.publishers[kHome].bytes_to_home == 0);
}

TEST_CASE("visitor limits: refusals by allow-from are counted, nothing else") {
  RelayStats stats;
  VisitorLimits limits({{1, 1, 0}, {0, 0, 0}}, kStart, &stats);
  limits.refused_by_allow_from(kHome);
  limits.refused_by_allow_from(kHome);
  CHECK(stats.publishers[kHome].refused_allow_from == 2);
  CHECK(limits.admit(kHome, kStart) == Admission::kAccepted);
}

TEST_CASE("visitor limits: idle publishers are forgotten, busy or rate-limited ones kept") {
  RelayStats stats;
  // 1 new visitor per minute per publisher, so a publisher that just had one is not
  // idle until its bucket has refilled.
  VisitorLimits limits({{0, 1, 0}, {0, 0, 0}}, kStart, &stats);
  const size_t sweep_size = VisitorLimits::kMinSweepSize;
  auto strangers_visited = [&](size_t count, const std::string& prefix, auto when) {
    for (size_t i = 0; i < count; ++i) {
      const std::string key = prefix + std::to_string(i);
      REQUIRE(limits.admit(key, when) == Admission::kAccepted);
      limits.release(key);
    }
  };
  // Holding a visitor: kept whatever the time.
  REQUIRE(limits.admit(kHome, kStart) == Admission::kAccepted);
  strangers_visited(sweep_size - 1, "stranger", kStart);
  CHECK(stats.publishers.size() == sweep_size);

  // A minute later every stranger's bucket is full again: the next admission sweeps.
  const auto later = kStart + 61s;
  REQUIRE(limits.admit(kOther, later) == Admission::kAccepted);
  limits.release(kOther);
  CHECK(stats.publishers.size() == 2);
  CHECK(stats.publishers.count(kHome) == 1);
  CHECK(stats.publishers.count(kOther) == 1);
  CHECK(limits.open(kHome) == 1);
  CHECK(limits.open_by_publisher().size() == 2);

  // The next sweep comes while kOther's bucket is still empty: its rate limit holds.
  strangers_visited(sweep_size - 2, "late", later + 1s);
  CHECK(limits.admit(kOther, later + 2s) == Admission::kPublisherRate);
  CHECK(stats.publishers.count(kOther) == 1);
  CHECK(stats.publishers.count("late0") == 1);  // its bucket too is not full yet
}

// The publishing front door's limits on visitors, so that a flood of strangers at one
// published name cannot take the relay (or the home behind it) down, and one
// publisher cannot spend what the others need: concurrent visitor connections, new
// connections per minute and bytes per second each way, per publisher key and in
// total. I/O free: publisher key ids, byte counts and `now` in; admissions,
// allowances and retry times out. The counters go to RelayStats for --metrics.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "metrics/relay_stats.h"
#include "token_bucket.h"

namespace natfwd::relay::front_door {

class VisitorLimits {
 public:
  using Clock = std::chrono::steady_clock;
  using TimePoint = Clock::time_point;

  // 0 in any field: no limit of that kind.
  struct Limit {
    size_t connections = 0;       // open at once
    size_t new_per_minute = 0;    // accepted per minute (a bucket of this many, refilled evenly)
    uint64_t bytes_per_second = 0;  // each direction (a bucket of one second's worth)
  };
  struct Limits {
    Limit per_publisher;
    Limit total;
  };
  enum class Admission {
    kAccepted,
    kPublisherConnections,
    kPublisherRate,
    kTotalConnections,
    kTotalRate,
  };
  enum class Direction { kToHome, kToVisitor };

  // `stats` (optional) gets the per-publisher counters; it must outlive this.
  VisitorLimits(Limits limits, TimePoint now, RelayStats* stats = nullptr);

  // A new visitor of `publisher` (a key id). kAccepted: it holds a place until
  // release(); anything else is counted as refused by a limit.
  Admission admit(const std::string& publisher, TimePoint now);
  void release(const std::string& publisher);
  // A visitor kept out by the publisher's allow-from (counted only).
  void refused_by_allow_from(const std::string& publisher);

  // Bytes of `publisher`'s visitors that may go in `direction` now: the smaller of
  // its own and the total budget, 0 while that is under kMinGrantBytes (so that a
  // throttled connection moves in a few sizeable steps, not in many tiny ones).
  size_t allowance(const std::string& publisher, Direction direction, TimePoint now);
  // After an allowance of 0: how long until one is there.
  std::chrono::milliseconds retry_after(const std::string& publisher, Direction direction,
                                        TimePoint now);
  // `bytes` went: taken from both budgets (even beyond them) and counted.
  void spent(const std::string& publisher, Direction direction, size_t bytes, TimePoint now);

  size_t open(const std::string& publisher) const;
  size_t open_total() const { return open_total_; }
  // Open visitor connections by publisher key id (for the --metrics gauge).
  std::map<std::string, uint64_t> open_by_publisher() const;
  const Limits& limits() const { return limits_; }

  static constexpr size_t kMinGrantBytes = 16 * 1024;
  // Idle publishers are swept when the map has doubled since the last sweep, and not
  // below this size (amortised O(1) per admission).
  static constexpr size_t kMinSweepSize = 1024;

 private:
  struct Budget {
    size_t open = 0;
    TokenBucket new_connections;
    TokenBucket to_home;
    TokenBucket to_visitor;
  };
  Budget make_budget(const Limit& limit, TimePoint now) const;
  Budget& budget_of(const std::string& publisher, TimePoint now);
  static TokenBucket& bytes_of(Budget& budget, Direction direction) {
    return direction == Direction::kToHome ? budget.to_home : budget.to_visitor;
  }
  PublisherStats* stats_of(const std::string& publisher);
  // Forgets publishers with no open visitor whose buckets are full again (a fresh
  // budget would be the same), with their counters: under `--allow-publisher any`
  // strangers' keys come and go, and each must not cost memory for ever.
  void forget_idle(TimePoint now);

  Limits limits_;
  RelayStats* stats_;
  Budget total_;
  size_t open_total_ = 0;
  std::map<std::string, Budget> publishers_;
  size_t next_sweep_size_ = kMinSweepSize;
};

const char* admission_text(VisitorLimits::Admission admission);

}  // namespace natfwd::relay::front_door

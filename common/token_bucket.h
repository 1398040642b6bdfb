// A token bucket (RFC 2697's single-rate idea without the colours): `capacity` tokens,
// refilled evenly at `capacity` per `period`, starting full. Time is an argument, so
// the cores that use it stay I/O-free and tests drive it with a fake clock.
#pragma once

#include <algorithm>
#include <chrono>

namespace natfwd {

class TokenBucket {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  using Seconds = std::chrono::duration<double>;

  TokenBucket() = default;
  TokenBucket(double capacity, Seconds period, TimePoint now)
      : capacity_(capacity),
        period_s_(period.count()),
        tokens_(capacity),
        last_(now) {}

  // Takes `amount` tokens, or none and returns false when fewer are left. A `now`
  // earlier than one seen before refills nothing.
  bool take(double amount, TimePoint now) {
    advance(now);
    if (tokens_ < amount) return false;
    tokens_ -= amount;
    return true;
  }

  // Tokens there at `now` (below zero after spend() took more than there was).
  double available(TimePoint now) {
    advance(now);
    return tokens_;
  }
  // Takes `amount` even when fewer are left: a debt that the refill pays back first
  // (bytes that already went cannot be refused).
  void spend(double amount, TimePoint now) {
    advance(now);
    tokens_ -= amount;
  }
  // How long from `now` until `amount` tokens are there (at most the capacity).
  Seconds time_until(double amount, TimePoint now) const {
    const double have = std::min(capacity_, tokens_ + (now > last_ ? refill(now) : 0));
    const double want = std::min(amount, capacity_);
    if (have >= want || capacity_ <= 0) return Seconds(0);
    return Seconds((want - have) * period_s_ / capacity_);
  }

  // Full again at `now`: a bucket in this state can be forgotten and made anew.
  bool full_at(TimePoint now) const {
    return tokens_ + (now > last_ ? refill(now) : 0) >= capacity_;
  }

 private:
  void advance(TimePoint now) {
    if (now > last_) {
      tokens_ = std::min(capacity_, tokens_ + refill(now));
      last_ = now;
    }
  }
  // Multiplied before dividing: 6 s of a 10-per-minute bucket is exactly one token.
  double refill(TimePoint now) const {
    return period_s_ > 0 ? Seconds(now - last_).count() * capacity_ / period_s_ : capacity_;
  }

  double capacity_ = 0;
  double period_s_ = 0;
  double tokens_ = 0;
  TimePoint last_{};
};

}  // namespace natfwd

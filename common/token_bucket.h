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
    if (now > last_) {
      tokens_ = std::min(capacity_, tokens_ + refill(now));
      last_ = now;
    }
    if (tokens_ < amount) return false;
    tokens_ -= amount;
    return true;
  }

  // Full again at `now`: a bucket in this state can be forgotten and made anew.
  bool full_at(TimePoint now) const {
    return tokens_ + (now > last_ ? refill(now) : 0) >= capacity_;
  }

 private:
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

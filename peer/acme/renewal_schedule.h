// When to order a certificate, without I/O (wall-clock seconds in, a time out): at
// once without one; at two thirds of the current one's lifetime (a 90-day certificate
// renews 30 days before it expires, as Let's Encrypt advises); after a failed order
// again after a pause that doubles from kFirstRetrySeconds to kMaxRetrySeconds, so a
// CA that is down is asked again soon but never hammered.
#pragma once

#include <ctime>
#include <optional>

namespace natfwd::acme {

class RenewalSchedule {
 public:
  static constexpr std::time_t kFirstRetrySeconds = 60;
  static constexpr std::time_t kMaxRetrySeconds = 3600;

  // A certificate is in hand (read at start or just issued): failures are forgotten.
  void on_certificate(std::time_t not_before, std::time_t not_after);
  // An order failed at `now`.
  void on_failure(std::time_t now);
  // When the next order should start; 0: at once.
  std::time_t next_order_at() const;
  int failures() const { return failures_; }

 private:
  std::optional<std::time_t> renew_at_;
  std::time_t retry_at_ = 0;
  int failures_ = 0;
};

}  // namespace natfwd::acme

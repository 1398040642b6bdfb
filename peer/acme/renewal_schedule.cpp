#include "acme/renewal_schedule.h"

#include <algorithm>

namespace natfwd::acme {

void RenewalSchedule::on_certificate(std::time_t not_before, std::time_t not_after) {
  renew_at_ = not_before + (not_after - not_before) * 2 / 3;
  failures_ = 0;
  retry_at_ = 0;
}

void RenewalSchedule::on_failure(std::time_t now) {
  const std::time_t pause =
      std::min(kMaxRetrySeconds, kFirstRetrySeconds << std::min(failures_, 10));
  ++failures_;
  retry_at_ = now + pause;
}

std::time_t RenewalSchedule::next_order_at() const {
  // A failure's pause applies whether or not a certificate is still in hand.
  return std::max(renew_at_.value_or(0), retry_at_);
}

}  // namespace natfwd::acme

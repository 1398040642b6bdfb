#include "front_door/visitor_limits.h"

#include <algorithm>
#include <cmath>

namespace natfwd::relay::front_door {
namespace {

using Seconds = TokenBucket::Seconds;

// What a bucket's limit of 0 means: no bucket (take() and available() never stop).
bool limited(uint64_t limit) { return limit != 0; }

}  // namespace

const char* admission_text(VisitorLimits::Admission admission) {
  switch (admission) {
    case VisitorLimits::Admission::kAccepted: return "accepted";
    case VisitorLimits::Admission::kPublisherConnections:
      return "too many visitors of this publisher at once";
    case VisitorLimits::Admission::kPublisherRate:
      return "too many new visitors of this publisher per minute";
    case VisitorLimits::Admission::kTotalConnections: return "too many visitors at once";
    case VisitorLimits::Admission::kTotalRate: return "too many new visitors per minute";
  }
  return "?";
}

VisitorLimits::VisitorLimits(Limits limits, TimePoint now, RelayStats* stats)
    : limits_(limits), stats_(stats), total_(make_budget(limits.total, now)) {}

VisitorLimits::Budget VisitorLimits::make_budget(const Limit& limit, TimePoint now) const {
  Budget budget;
  budget.new_connections =
      TokenBucket(static_cast<double>(limit.new_per_minute), std::chrono::minutes(1), now);
  budget.to_home = TokenBucket(static_cast<double>(limit.bytes_per_second), Seconds(1), now);
  budget.to_visitor = TokenBucket(static_cast<double>(limit.bytes_per_second), Seconds(1), now);
  return budget;
}

VisitorLimits::Budget& VisitorLimits::budget_of(const std::string& publisher, TimePoint now) {
  auto it = publishers_.find(publisher);
  if (it == publishers_.end())
    it = publishers_.emplace(publisher, make_budget(limits_.per_publisher, now)).first;
  return it->second;
}

PublisherStats* VisitorLimits::stats_of(const std::string& publisher) {
  return stats_ ? &stats_->publishers[publisher] : nullptr;
}

void VisitorLimits::forget_idle(TimePoint now) {
  std::erase_if(publishers_, [&](const auto& entry) {
    const Budget& budget = entry.second;
    const bool idle = budget.open == 0 && budget.new_connections.full_at(now) &&
                      budget.to_home.full_at(now) && budget.to_visitor.full_at(now);
    if (idle && stats_) stats_->publishers.erase(entry.first);
    return idle;
  });
  next_sweep_size_ = std::max(kMinSweepSize, 2 * publishers_.size());
}

VisitorLimits::Admission VisitorLimits::admit(const std::string& publisher, TimePoint now) {
  if (publishers_.size() >= next_sweep_size_) forget_idle(now);
  Budget& own = budget_of(publisher, now);
  Admission verdict = Admission::kAccepted;
  // Places before rates: a refused visitor does not spend a token it never used.
  if (limited(limits_.per_publisher.connections) &&
      own.open >= limits_.per_publisher.connections)
    verdict = Admission::kPublisherConnections;
  else if (limited(limits_.total.connections) && open_total_ >= limits_.total.connections)
    verdict = Admission::kTotalConnections;
  else if (limited(limits_.per_publisher.new_per_minute) && !own.new_connections.take(1, now))
    verdict = Admission::kPublisherRate;
  else if (limited(limits_.total.new_per_minute) && !total_.new_connections.take(1, now))
    verdict = Admission::kTotalRate;
  PublisherStats* stats = stats_of(publisher);
  if (verdict != Admission::kAccepted) {
    if (stats) ++stats->refused_limit;
    return verdict;
  }
  ++own.open;
  ++open_total_;
  if (stats) ++stats->accepted;
  return verdict;
}

void VisitorLimits::release(const std::string& publisher) {
  auto it = publishers_.find(publisher);
  if (it == publishers_.end() || it->second.open == 0 || open_total_ == 0) return;
  --it->second.open;
  --open_total_;
}

void VisitorLimits::refused_by_allow_from(const std::string& publisher) {
  if (PublisherStats* stats = stats_of(publisher)) ++stats->refused_allow_from;
}

size_t VisitorLimits::allowance(const std::string& publisher, Direction direction,
                                TimePoint now) {
  double allowed = static_cast<double>(SIZE_MAX);
  size_t smallest_capacity = SIZE_MAX;
  auto apply = [&](TokenBucket& bucket, uint64_t limit) {
    if (!limited(limit)) return;
    allowed = std::min(allowed, bucket.available(now));
    smallest_capacity = std::min<size_t>(smallest_capacity, limit);
  };
  apply(bytes_of(budget_of(publisher, now), direction), limits_.per_publisher.bytes_per_second);
  apply(bytes_of(total_, direction), limits_.total.bytes_per_second);
  if (allowed >= static_cast<double>(SIZE_MAX)) return SIZE_MAX;
  const double floor_bytes = std::floor(std::max(0.0, allowed));
  if (floor_bytes < static_cast<double>(std::min(kMinGrantBytes, smallest_capacity))) return 0;
  return static_cast<size_t>(floor_bytes);
}

std::chrono::milliseconds VisitorLimits::retry_after(const std::string& publisher,
                                                     Direction direction, TimePoint now) {
  Seconds wait(0);
  auto apply = [&](TokenBucket& bucket, uint64_t limit) {
    if (!limited(limit)) return;
    const double grant = static_cast<double>(std::min<uint64_t>(kMinGrantBytes, limit));
    wait = std::max(wait, bucket.time_until(grant, now));
  };
  apply(bytes_of(budget_of(publisher, now), direction), limits_.per_publisher.bytes_per_second);
  apply(bytes_of(total_, direction), limits_.total.bytes_per_second);
  // At least 1 ms: GLib timeouts are whole milliseconds, and 0 would spin.
  return std::max(std::chrono::milliseconds(1),
                  std::chrono::ceil<std::chrono::milliseconds>(wait));
}

void VisitorLimits::spent(const std::string& publisher, Direction direction, size_t bytes,
                          TimePoint now) {
  const double amount = static_cast<double>(bytes);
  if (limited(limits_.per_publisher.bytes_per_second))
    bytes_of(budget_of(publisher, now), direction).spend(amount, now);
  if (limited(limits_.total.bytes_per_second)) bytes_of(total_, direction).spend(amount, now);
  if (PublisherStats* stats = stats_of(publisher))
    (direction == Direction::kToHome ? stats->bytes_to_home : stats->bytes_to_visitor) += bytes;
}

size_t VisitorLimits::open(const std::string& publisher) const {
  auto it = publishers_.find(publisher);
  return it == publishers_.end() ? 0 : it->second.open;
}

std::map<std::string, uint64_t> VisitorLimits::open_by_publisher() const {
  std::map<std::string, uint64_t> out;
  for (const auto& [publisher, budget] : publishers_) out[publisher] = budget.open;
  return out;
}

}  // namespace natfwd::relay::front_door

#include "turn/allocation_registry.h"

#include <openssl/rand.h>

#include <stdexcept>

namespace natfwd::turn {

AllocationRegistry::Verdict AllocationRegistry::admit(std::string_view user_id,
                                                      const relay::SourceKey& source,
                                                      size_t places) {
  std::lock_guard lock(mutex_);
  const std::string user(user_id);
  if (auto it = per_user_.find(user);
      it != per_user_.end() && it->second + places > limits_.per_user)
    return {Admission::kUserQuota, it->second};
  if (places > limits_.per_user) return {Admission::kUserQuota, 0};
  if (auto it = per_source_.find(source);
      it != per_source_.end() && it->second + places > limits_.per_address)
    return {Admission::kAddressQuota, it->second};
  if (places > limits_.per_address) return {Admission::kAddressQuota, 0};
  if (total_ + places > limits_.total) return {Admission::kFull, total_};
  per_user_[user] += places;
  per_source_[source] += places;
  total_ += places;
  return {};
}

void AllocationRegistry::release(std::string_view user_id, const relay::SourceKey& source) {
  std::lock_guard lock(mutex_);
  release_locked(std::string(user_id), source);
}

void AllocationRegistry::release_locked(const std::string& user_id,
                                        const relay::SourceKey& source) {
  if (auto it = per_user_.find(user_id); it != per_user_.end() && --it->second == 0)
    per_user_.erase(it);
  if (auto it = per_source_.find(source); it != per_source_.end() && --it->second == 0)
    per_source_.erase(it);
  if (total_ > 0) --total_;
}

ReservationToken AllocationRegistry::reserve(std::string_view user_id,
                                             const relay::SourceKey& source,
                                             std::unique_ptr<ReservedRelay> relay,
                                             TimePoint expires, const void* owner) {
  std::lock_guard lock(mutex_);
  ReservationToken token{};
  do {
    if (RAND_bytes(token.data(), static_cast<int>(token.size())) != 1)
      throw std::runtime_error("no random bytes for a RESERVATION-TOKEN");
  } while (reservations_.contains(token));
  reservations_.emplace(token, Reservation{std::string(user_id), source, expires,
                                           std::move(relay), owner});
  return token;
}

AllocationRegistry::Redeemed AllocationRegistry::redeem(const ReservationToken& token,
                                                        std::string_view user_id,
                                                        const relay::SourceKey& source,
                                                        TimePoint now, const void* owner) {
  std::unique_ptr<ReservedRelay> expired;  // closed after the lock is given back
  std::lock_guard lock(mutex_);
  auto it = reservations_.find(token);
  if (it == reservations_.end() || it->second.user_id != user_id) return {};
  Reservation& reservation = it->second;
  if (now >= reservation.expires) {
    expired = std::move(reservation.relay);
    release_locked(reservation.user_id, reservation.source);
    reservations_.erase(it);
    return {};
  }
  if (source != reservation.source) {
    if (auto held = per_source_.find(source);
        held != per_source_.end() && held->second >= limits_.per_address)
      return {Admission::kAddressQuota, nullptr, held->second};
    // The place moves from the reserving address to this one.
    if (auto old = per_source_.find(reservation.source);
        old != per_source_.end() && --old->second == 0)
      per_source_.erase(old);
    ++per_source_[source];
  }
  Redeemed redeemed{Admission::kAdmitted, std::move(reservation.relay), 0,
                    reservation.owner != owner};
  reservations_.erase(it);
  return redeemed;
}

void AllocationRegistry::expire_reservation(const ReservationToken& token, TimePoint now) {
  std::unique_ptr<ReservedRelay> expired;  // closed after the lock is given back
  std::lock_guard lock(mutex_);
  auto it = reservations_.find(token);
  if (it == reservations_.end() || now < it->second.expires) return;
  expired = std::move(it->second.relay);
  release_locked(it->second.user_id, it->second.source);
  reservations_.erase(it);
}

size_t AllocationRegistry::reservation_count() const {
  std::lock_guard lock(mutex_);
  return reservations_.size();
}

void AllocationRegistry::add_relayed(const stun::TransportAddress& relayed) {
  std::lock_guard lock(mutex_);
  relayed_.insert({static_cast<uint8_t>(relayed.family), relayed.ip, relayed.port});
}

void AllocationRegistry::remove_relayed(const stun::TransportAddress& relayed) {
  std::lock_guard lock(mutex_);
  relayed_.erase({static_cast<uint8_t>(relayed.family), relayed.ip, relayed.port});
}

bool AllocationRegistry::is_relayed(const stun::TransportAddress& address, bool any_port) const {
  const auto family = static_cast<uint8_t>(address.family);
  std::lock_guard lock(mutex_);
  if (!any_port) return relayed_.count({family, address.ip, address.port}) > 0;
  auto it = relayed_.lower_bound({family, address.ip, 0});
  return it != relayed_.end() && std::get<0>(*it) == family && std::get<1>(*it) == address.ip;
}

size_t AllocationRegistry::allocation_count() const {
  std::lock_guard lock(mutex_);
  return total_ - reservations_.size();
}

}  // namespace natfwd::turn

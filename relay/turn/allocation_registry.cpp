#include "turn/allocation_registry.h"

namespace natfwd::turn {

AllocationRegistry::Verdict AllocationRegistry::admit(std::string_view user_id,
                                                      const relay::SourceKey& source) {
  std::lock_guard lock(mutex_);
  const std::string user(user_id);
  if (auto it = per_user_.find(user); it != per_user_.end() && it->second >= limits_.per_user)
    return {Admission::kUserQuota, it->second};
  if (auto it = per_source_.find(source);
      it != per_source_.end() && it->second >= limits_.per_address)
    return {Admission::kAddressQuota, it->second};
  if (total_ >= limits_.total) return {Admission::kFull, total_};
  ++per_user_[user];
  ++per_source_[source];
  ++total_;
  return {};
}

void AllocationRegistry::release(std::string_view user_id, const relay::SourceKey& source) {
  std::lock_guard lock(mutex_);
  if (auto it = per_user_.find(std::string(user_id)); it != per_user_.end() && --it->second == 0)
    per_user_.erase(it);
  if (auto it = per_source_.find(source); it != per_source_.end() && --it->second == 0)
    per_source_.erase(it);
  if (total_ > 0) --total_;
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
  return total_;
}

}  // namespace natfwd::turn

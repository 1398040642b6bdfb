#include "admission/connection_budget.h"

#include <arpa/inet.h>

#include <algorithm>

namespace natfwd::relay {

SourceKey source_key(const stun::TransportAddress& address) {
  SourceKey key{static_cast<uint8_t>(address.family), address.ip};
  if (address.family == stun::TransportAddress::Family::kIPv6)
    std::fill(key.second.begin() + 8, key.second.end(), 0);
  return key;
}

std::string source_group(const std::string& host) {
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) != 1) return host;
  std::fill(v6.s6_addr + 8, v6.s6_addr + 16, 0);
  char text[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, &v6, text, sizeof text);
  return std::string(text) + "/64";
}

ConnectionBudget::Admission ConnectionBudget::admit(uint64_t id,
                                                    const stun::TransportAddress& from,
                                                    TimePoint now) {
  const SourceKey source = source_key(from);
  if (connections_.size() >= limits_.total) return Admission::kTooMany;
  auto count = per_source_.find(source);
  if (count != per_source_.end() && count->second >= limits_.per_address)
    return Admission::kTooManyFromAddress;
  auto [it, inserted] = connections_.try_emplace(id, Connection{source, std::nullopt});
  if (!inserted) return Admission::kAccepted;  // already counted
  ++per_source_[source];
  touch(id, now);
  return Admission::kAccepted;
}

void ConnectionBudget::clear_deadline(uint64_t id, Connection& connection) {
  if (connection.deadline) deadlines_.erase({*connection.deadline, id});
  connection.deadline.reset();
}

void ConnectionBudget::touch(uint64_t id, TimePoint now) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return;
  clear_deadline(id, it->second);
  it->second.deadline = now + limits_.deadline;
  deadlines_.insert({*it->second.deadline, id});
}

void ConnectionBudget::hold(uint64_t id) {
  auto it = connections_.find(id);
  if (it != connections_.end()) clear_deadline(id, it->second);
}

void ConnectionBudget::release(uint64_t id) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return;
  clear_deadline(id, it->second);
  if (auto count = per_source_.find(it->second.source);
      count != per_source_.end() && --count->second == 0)
    per_source_.erase(count);
  connections_.erase(it);
}

std::vector<uint64_t> ConnectionBudget::take_expired(TimePoint now) {
  std::vector<uint64_t> expired;
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    const uint64_t id = deadlines_.begin()->second;
    deadlines_.erase(deadlines_.begin());
    connections_.at(id).deadline.reset();
    expired.push_back(id);
  }
  return expired;
}

std::optional<ConnectionBudget::TimePoint> ConnectionBudget::next_deadline() const {
  if (deadlines_.empty()) return std::nullopt;
  return deadlines_.begin()->first;
}

size_t ConnectionBudget::count_from(const stun::TransportAddress& from) const {
  auto it = per_source_.find(source_key(from));
  return it == per_source_.end() ? 0 : it->second;
}

}  // namespace natfwd::relay

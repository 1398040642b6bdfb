// Admission of the relay's TCP and TLS connections that are not rendezvous
// connections (those have RendezvousCore's own count): TLS handshakes in progress and
// TURN-over-TCP/TLS streams. A place per connection, at most `per_address` from one
// source IP and `total` in all, and a deadline per connection by which it must make
// progress. I/O free: connection ids, addresses and `now` in; verdicts, the ids whose
// deadline passed and the next deadline out (one timer in the service drives it).
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "stun/stun_message.h"

namespace natfwd::relay {

// What counts as one source: an IPv4 address, or an IPv6 /64 -- the prefix one
// subscriber gets (RFC 6177), every address of which one host may use -- as
// (family, address bytes with the rest zero). Ports never count.
using SourceKey = std::pair<uint8_t, std::array<uint8_t, 16>>;
SourceKey source_key(const stun::TransportAddress& address);
// The same for an address in text ("192.0.2.1", "2001:db8::1"): the IPv4 address, or
// the /64 as "2001:db8::/64"; other text as it is.
std::string source_group(const std::string& host);

class ConnectionBudget {
 public:
  using Clock = std::chrono::steady_clock;
  using TimePoint = Clock::time_point;

  struct Limits {
    size_t total = 0;
    size_t per_address = 0;
    // A connection that makes no progress (touch()) for this long is expired.
    std::chrono::milliseconds deadline{0};
  };
  enum class Admission { kAccepted, kTooManyFromAddress, kTooMany };

  explicit ConnectionBudget(Limits limits) : limits_(limits) {}

  // A new connection `id` from `from` (counted by source_key()). kAccepted: it holds a
  // place until release(), and its deadline is now + limits.deadline.
  Admission admit(uint64_t id, const stun::TransportAddress& from, TimePoint now);
  // Progress: the deadline moves to now + limits.deadline.
  void touch(uint64_t id, TimePoint now);
  // No deadline until the next touch() (a TURN stream with an allocation lives as
  // long as the allocation).
  void hold(uint64_t id);
  // The place is free again.
  void release(uint64_t id);
  // The connections whose deadline has passed, in deadline order; their deadlines
  // are dropped, their places kept until release().
  std::vector<uint64_t> take_expired(TimePoint now);
  std::optional<TimePoint> next_deadline() const;

  size_t count() const { return connections_.size(); }
  size_t count_from(const stun::TransportAddress& from) const;
  const Limits& limits() const { return limits_; }

 private:
  struct Connection {
    SourceKey source;
    std::optional<TimePoint> deadline;
  };
  void clear_deadline(uint64_t id, Connection& connection);

  Limits limits_;
  std::unordered_map<uint64_t, Connection> connections_;
  std::map<SourceKey, size_t> per_source_;
  std::set<std::pair<TimePoint, uint64_t>> deadlines_;
};

}  // namespace natfwd::relay

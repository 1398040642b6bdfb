// What the TURN allocations of every data-plane shard hold together: the counts the
// quotas are checked against (per REST user id, per client source address, in total)
// and the relayed addresses, which are legitimate peers of each other's allocations
// wherever they live (turn_server.h, may_relay). One registry is shared by the
// TurnServer cores of all shards (`relay --threads N`), each on its own thread, so
// every member takes one mutex: an Allocate or a removal holds it for a few map
// operations, and a relayed datagram only for a lookup when its peer is not already
// let through by the peer policy (one relay relaying to itself).
//
// I/O free; thread safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>

#include "admission/connection_budget.h"
#include "stun/stun_message.h"

namespace natfwd::turn {

class AllocationRegistry {
 public:
  struct Limits {
    size_t per_user = 10;      // --max-allocations-per-user
    size_t per_address = 128;  // --max-allocations-per-address
    size_t total = 20000;      // all shards together
  };
  enum class Admission { kAdmitted, kUserQuota, kAddressQuota, kFull };
  struct Verdict {
    Admission admission = Admission::kAdmitted;
    size_t held = 0;  // what the refused user, address or relay holds already
  };

  explicit AllocationRegistry(Limits limits) : limits_(limits) {}
  AllocationRegistry(const AllocationRegistry&) = delete;
  AllocationRegistry& operator=(const AllocationRegistry&) = delete;

  // Checks the quotas in the order user, address, total and, when all have room,
  // counts the allocation at once (two shards cannot both take the last place).
  Verdict admit(std::string_view user_id, const relay::SourceKey& source);
  // Gives back what admit() counted; an allocation that failed to open a relayed
  // socket after admit() gives its place back here too.
  void release(std::string_view user_id, const relay::SourceKey& source);

  void add_relayed(const stun::TransportAddress& relayed);
  void remove_relayed(const stun::TransportAddress& relayed);
  // A live relayed address: exactly, or (`any_port`) any port of that IP.
  bool is_relayed(const stun::TransportAddress& address, bool any_port) const;

  size_t allocation_count() const;
  const Limits& limits() const { return limits_; }

 private:
  using AddressKey = std::tuple<uint8_t, std::array<uint8_t, 16>, uint16_t>;

  const Limits limits_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, size_t> per_user_;
  std::map<relay::SourceKey, size_t> per_source_;
  size_t total_ = 0;
  std::set<AddressKey> relayed_;
};

}  // namespace natfwd::turn

// What the TURN allocations of every data-plane shard hold together: the counts the
// quotas are checked against (per REST user id, per client source address, in total)
// and the relayed addresses, which are legitimate peers of each other's allocations
// wherever they live (turn_server.h, may_relay). One registry is shared by the
// TurnServer cores of all shards (`relay --threads N`), each on its own thread, so
// every member takes one mutex: an Allocate or a removal holds it for a few map
// operations, and a relayed datagram only for a lookup when its peer is not already
// let through by the peer policy (one relay relaying to itself).
//
// It also holds the ports reserved for RESERVATION-TOKENs (RFC 8656 section 7.2): the
// reservation is server-wide, and the Allocate that redeems the token comes from
// another 5-tuple, which the kernel may hash to another shard, so the reserved socket
// passes from the shard that made it to the one that redeems it through here.
//
// I/O free; thread safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>

#include "admission/connection_budget.h"
#include "stun/stun_message.h"
#include "stun/turn_constants.h"

namespace natfwd::turn {

// A relayed port held under a RESERVATION-TOKEN: the I/O side's socket, opaque here.
// Destroying it gives the port back. It may be destroyed on any shard's thread.
class ReservedRelay {
 public:
  virtual ~ReservedRelay() = default;
  virtual stun::TransportAddress address() const = 0;
};

using ReservationToken = std::array<uint8_t, kReservationTokenBytes>;

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

  using TimePoint = std::chrono::steady_clock::time_point;

  // Checks the quotas in the order user, address, total for `places` allocations and,
  // when all have room, counts them at once (two shards cannot both take the last
  // place). An Allocate with EVEN-PORT R=1 takes two: its own and its reservation's.
  Verdict admit(std::string_view user_id, const relay::SourceKey& source, size_t places = 1);
  // Gives back what admit() counted; an allocation that failed to open a relayed
  // socket after admit() gives its place back here too.
  void release(std::string_view user_id, const relay::SourceKey& source);

  // Holds `relay` until `expires` under a fresh unguessable token, on one of the
  // places admit() counted for `user_id` and `source`: a reservation counts in the
  // quotas like an allocation, or one allocation that is deleted and made again could
  // hold ports without end.
  // `owner`: the core that reserves, only compared with the one that redeems.
  ReservationToken reserve(std::string_view user_id, const relay::SourceKey& source,
                           std::unique_ptr<ReservedRelay> relay, TimePoint expires,
                           const void* owner);
  struct Redeemed {
    Admission admission = Admission::kAdmitted;
    // Null: no live reservation of this user under the token (RFC 8656 section 7.2:
    // 508), or a quota refused it (admission says which; the reservation stays).
    std::unique_ptr<ReservedRelay> relay;
    size_t held = 0;
    bool other_owner = false;  // reserved by another core (shard) than the redeeming one
  };
  // The port reserved under `token`, if it is live and `user_id` reserved it: the
  // reservation ends and its place passes to the allocation being made, counted under
  // `source` (the address quota is checked when that is another address). A token is
  // good once; another user's token is unknown to this user and stays reserved.
  Redeemed redeem(const ReservationToken& token, std::string_view user_id,
                  const relay::SourceKey& source, TimePoint now, const void* owner);
  // Ends the reservation under `token` if it has not been redeemed and its time is
  // up at `now`, and gives back its place.
  void expire_reservation(const ReservationToken& token, TimePoint now);
  size_t reservation_count() const;

  void add_relayed(const stun::TransportAddress& relayed);
  void remove_relayed(const stun::TransportAddress& relayed);
  // A live relayed address: exactly, or (`any_port`) any port of that IP.
  bool is_relayed(const stun::TransportAddress& address, bool any_port) const;

  // Allocations, without the places reservations hold.
  size_t allocation_count() const;
  const Limits& limits() const { return limits_; }

 private:
  using AddressKey = std::tuple<uint8_t, std::array<uint8_t, 16>, uint16_t>;
  struct Reservation {
    std::string user_id;
    relay::SourceKey source;
    TimePoint expires;
    std::unique_ptr<ReservedRelay> relay;
    const void* owner = nullptr;
  };

  void release_locked(const std::string& user_id, const relay::SourceKey& source);

  const Limits limits_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, size_t> per_user_;
  std::map<relay::SourceKey, size_t> per_source_;
  size_t total_ = 0;  // allocations and reservations
  std::set<AddressKey> relayed_;
  std::map<ReservationToken, Reservation> reservations_;
};

}  // namespace natfwd::turn

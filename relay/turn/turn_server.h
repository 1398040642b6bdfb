// The TURN server (RFC 8656): allocations, permissions, channels, long-term
// authentication with REST API credentials. I/O free: the GLib side
// (server/turn_service.h) hands it client messages and peer datagrams with `now`, and
// it answers through the TurnIo interface (send to a client, send from a relayed
// socket, open/close a relayed socket). One timer at next_deadline() drives expiry:
// every lifetime (allocation, unused allocation, permission, channel) is one entry in
// an ordered set, so an expiry costs O(log n) and no scan, and on_tick() does at
// most kMaxExpiriesPerTick of them before it returns to the event loop.
//
// Errors (HACKING.md, "Error policy"): malformed client input comes back as
// Verdict::kMalformed (the caller drops the datagram or closes the TCP connection, with
// a rate-limited warning); protocol errors become STUN error responses; peer datagrams
// that are not allowed are dropped.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "admission/connection_budget.h"
#include "metrics/relay_stats.h"
#include "stun/stun_message.h"
#include "token_bucket.h"
#include "turn/allocation_registry.h"
#include "turn/credentials.h"
#include "turn/peer_policy.h"
#include "stun/turn_constants.h"

namespace natfwd::turn {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using AllocationId = uint64_t;
using stun::TransportAddress;

enum class Transport : uint8_t { kUdp, kTcp, kTls };
const char* to_string(Transport transport);

// The client side of the 5-tuple. The server side is implied: one UDP socket, and
// one TCP/TLS connection per `connection` id (0 for UDP).
struct ClientKey {
  Transport transport = Transport::kUdp;
  TransportAddress address;
  uint64_t connection = 0;

  auto tie() const {
    return std::tie(transport, connection, address.family, address.ip, address.port);
  }
  bool operator<(const ClientKey& other) const { return tie() < other.tie(); }
  bool operator==(const ClientKey& other) const { return tie() == other.tie(); }
  std::string to_string() const;  // "udp 192.0.2.1:4000"
};

// What the core asks of the I/O side.
class TurnIo {
 public:
  virtual ~TurnIo() = default;
  // A relayed UDP socket for allocation `id` of `client`, of the given family, on an
  // even port if `even_port` (EVEN-PORT, RFC 8656 section 14.6); nullopt when none
  // can be had (no free port: 508).
  virtual std::optional<TransportAddress> open_relay(AllocationId id, const ClientKey& client,
                                                     TransportAddress::Family family,
                                                     bool even_port) = 0;
  virtual void close_relay(AllocationId id) = 0;
  // EVEN-PORT with the R bit (RFC 8656 section 7.2): a relayed socket on an even port
  // for allocation `id`, as open_relay() makes, and the next port held for a
  // RESERVATION-TOKEN. nullopt when no such pair is free (508); an I/O side that
  // keeps no pairs refuses them all.
  struct RelayPair {
    TransportAddress relayed;
    std::unique_ptr<ReservedRelay> reserved;
  };
  virtual std::optional<RelayPair> open_relay_pair(AllocationId, const ClientKey&,
                                                   TransportAddress::Family) {
    return std::nullopt;
  }
  // The relayed socket of allocation `id` is `reserved`, a port open_relay_pair() held
  // (on this shard or another); nullopt when it cannot be taken in (508).
  virtual std::optional<TransportAddress> adopt_relay(AllocationId, const ClientKey&,
                                                      std::unique_ptr<ReservedRelay>) {
    return std::nullopt;
  }
  virtual void send_to_client(const ClientKey& client, std::span<const std::byte> bytes) = 0;
  // One message given in pieces (a ChannelData header, the relayed payload where it was
  // read, padding), so that it is copied once, into what goes out. By default joined.
  virtual void send_gathered_to_client(const ClientKey& client,
                                       std::span<const std::span<const std::byte>> pieces) {
    std::vector<std::byte> joined;
    for (const auto& piece : pieces) joined.insert(joined.end(), piece.begin(), piece.end());
    send_to_client(client, joined);
  }
  virtual void send_to_peer(AllocationId id, const TransportAddress& peer,
                            std::span<const std::byte> bytes) = 0;
};

struct TurnConfig {
  // Counters for --metrics; null: not counted.
  relay::RelayStats* stats = nullptr;
  std::string realm = "natfwd";
  std::string software = "natfwd-relay";
  // TURN REST API shared secret (the bytes of the secret file's text).
  std::string secret;
  // --max-allocations-per-user: allocations one REST user id may hold (486 beyond).
  size_t max_allocations_per_user = 10;
  // --max-allocations-per-address: allocations from one client IP (an IPv6 /64,
  // relay::source_key()), whatever the user (486 beyond): one address with many keys
  // cannot take the whole relay.
  size_t max_allocations_per_address = 128;
  // Allocations in total (508 beyond).
  size_t max_allocations = 20000;
  // The quotas' counts and the relayed addresses, shared by the cores of all
  // data-plane shards (allocation_registry.h). Null: the core makes its own from the
  // three limits above; given, the registry's limits hold instead.
  std::shared_ptr<AllocationRegistry> registry;
  // Peer IPs with a permission, and channels, per allocation (508 beyond,
  // RFC 8656 sections 9.2 and 12.2 let a server refuse for lack of capacity).
  size_t max_permissions_per_allocation = kMaxPermissionsPerAllocation;
  // RFC 8656 section 7.2: a port reserved by EVEN-PORT R=1 is held "for approximately
  // 30 seconds" for the Allocate that brings its RESERVATION-TOKEN.
  std::chrono::seconds reservation_lifetime = kReservationLifetime;
  // An allocation with no permission or channel this long after it was made is
  // given back (kUnusedAllocationTimeout says why this figure).
  std::chrono::seconds unused_allocation_timeout = kUnusedAllocationTimeout;
  // --bandwidth-cap: bytes per second per allocation, both directions together;
  // 0 is off. Excess datagrams are dropped (a token bucket of one second).
  uint64_t bandwidth_cap = 0;
  PeerPolicy peers;
  // Whether the host has IPv6 for relayed sockets (REQUESTED-ADDRESS-FAMILY IPv6).
  bool ipv6_available = false;
  // Wall-clock unix seconds, for REST username expiry; injectable for tests.
  std::function<uint64_t()> unix_now;
};

class TurnServer {
 public:
  enum class Verdict {
    kHandled,    // answered, relayed or quietly ignored
    kMalformed,  // not STUN/ChannelData, or broken: drop / close the TCP connection
  };
  struct Result {
    Verdict verdict = Verdict::kHandled;
    std::string_view reason;  // kMalformed; static string
  };

  // `nonces` defaults to a random key.
  TurnServer(TurnConfig config, TurnIo& io, std::optional<NonceMint> nonces = std::nullopt);
  ~TurnServer();
  TurnServer(const TurnServer&) = delete;
  TurnServer& operator=(const TurnServer&) = delete;

  // One STUN message or ChannelData from a client (a UDP datagram, or a message cut
  // out of a TCP/TLS stream with stream_frame_length).
  Result on_client_message(const ClientKey& client, std::span<const std::byte> bytes,
                           TimePoint now);
  // A datagram that arrived on the relayed socket of allocation `id`.
  void on_peer_data(AllocationId id, const TransportAddress& peer,
                    std::span<const std::byte> bytes, TimePoint now);
  // A TCP/TLS client connection closed: its allocation goes (RFC 8656 section 3.1).
  void on_client_closed(const ClientKey& client);
  // Expires allocations, permissions and channels whose time has come.
  void on_tick(TimePoint now);
  // May be now or past when on_tick() left work for the next turn of the loop.
  std::optional<TimePoint> next_deadline() const;

  // Expiries handled per on_tick(): each is a set erase, perhaps a socket close; a
  // burst of a million permissions made at once then expires in slices of about a
  // millisecond with I/O served between them.
  static constexpr size_t kMaxExpiriesPerTick = 256;

  // Introspection for tests and logs.
  size_t allocation_count() const { return allocations_.size(); }
  // Safe to read from another thread (the relay's metrics read every shard's).
  size_t permission_count() const { return permission_count_.load(std::memory_order_relaxed); }
  size_t channel_count() const { return channel_count_.load(std::memory_order_relaxed); }
  std::optional<TransportAddress> relayed_address(const ClientKey& client) const;
  const TurnConfig& config() const { return config_; }

 private:
  struct Channel {
    TransportAddress peer;
    TimePoint expires;  // the binding; it still blocks rebinding kChannelRebindGuard longer
  };
  // One lifetime, keyed by when it ends. `key`: the peer IP of a permission, the
  // channel number (first two bytes) of a channel, zero otherwise.
  // kReservation: a RESERVATION-TOKEN this core handed out (id 0, key the token); the
  // registry holds the port, this core's timer ends it.
  enum class TimerKind : uint8_t { kAllocation, kUnused, kPermission, kChannel, kReservation };
  struct Timer {
    TimePoint when;
    AllocationId id = 0;
    TimerKind kind = TimerKind::kAllocation;
    std::array<uint8_t, 16> key{};
    auto tie() const { return std::tie(when, id, kind, key); }
    bool operator<(const Timer& other) const { return tie() < other.tie(); }
  };

  struct Allocation {
    AllocationId id = 0;
    ClientKey client;
    TransportAddress relayed;
    std::string username;
    std::string user_id;
    std::vector<std::byte> key;  // long-term key
    stun::TransactionId allocate_transaction{};
    // EVEN-PORT R=1: the token of the port reserved beside this one, repeated in the
    // answer to a retransmitted Allocate.
    std::optional<ReservationToken> reservation;
    TimePoint expires;
    // Until a permission or channel is installed: when it goes back unused.
    std::optional<TimePoint> unused_deadline;
    // IP (port ignored, RFC 8656 section 9) -> expiry.
    std::map<std::array<uint8_t, 16>, TimePoint> permissions;
    std::map<uint16_t, Channel> channels;
    TokenBucket bucket;
  };
  // An authenticated request: who, and how to sign the answer.
  struct Auth {
    std::string username;
    std::vector<std::byte> key;
    bool sha256 = false;  // the request used MESSAGE-INTEGRITY-SHA256
  };

  void handle_request(const ClientKey& client, const stun::Message& request, TimePoint now);
  void handle_allocate(const ClientKey& client, const stun::Message& request, const Auth& auth,
                       TimePoint now);
  // The Allocate's checks passed and its places are counted: EVEN-PORT R=1 opens an
  // even port and reserves the next; RESERVATION-TOKEN takes a reserved port.
  void allocate_pair(const ClientKey& client, const stun::Message& request, const Auth& auth,
                     TransportAddress::Family family, std::chrono::seconds lifetime,
                     TimePoint now);
  void allocate_reserved(const ClientKey& client, const stun::Message& request,
                         const Auth& auth, const ReservationToken& token,
                         std::chrono::seconds lifetime, TimePoint now);
  // Records allocation `id` on `relayed` and sends the success response.
  void install_allocation(const ClientKey& client, const stun::Message& request,
                          const Auth& auth, AllocationId id, const TransportAddress& relayed,
                          std::chrono::seconds lifetime,
                          std::optional<ReservationToken> reservation, TimePoint now);
  // 486/508 for a quota refusal of the registry; false when admitted.
  bool refuse_admission(const ClientKey& client, const stun::Message& request,
                        const Auth& auth, const std::string& user_id,
                        const AllocationRegistry::Verdict& verdict);
  void handle_refresh(const ClientKey& client, Allocation& allocation,
                      const stun::Message& request, const Auth& auth, TimePoint now);
  void handle_create_permission(const ClientKey& client, Allocation& allocation,
                                const stun::Message& request, const Auth& auth, TimePoint now);
  void handle_channel_bind(const ClientKey& client, Allocation& allocation,
                           const stun::Message& request, const Auth& auth, TimePoint now);
  void handle_send_indication(const ClientKey& client, const stun::Message& indication,
                              TimePoint now);
  void handle_channel_data(const ClientKey& client, uint16_t channel,
                           std::span<const std::byte> data, TimePoint now);

  // RFC 8489 section 9.2.4; answers 400/401/438/441 itself and returns nullopt then.
  std::optional<Auth> authenticate(const ClientKey& client, const stun::Message& request,
                                   TimePoint now);

  void send_success(const ClientKey& client, const stun::Message& request, const Auth& auth,
                    const std::function<void(stun::MessageBuilder&)>& add);
  // --metrics: errors by code ("turn_401", ...).
  void count_error(int code);
  void send_error(const ClientKey& client, const stun::Message& request, int code,
                  std::string_view reason, const Auth* auth,
                  std::span<const uint16_t> unknown = {});
  void send_challenge(const ClientKey& client, const stun::Message& request, int code,
                      std::string_view reason, TimePoint now);

  Allocation* find(const ClientKey& client);
  void remove(AllocationId id, std::string_view why);
  void set_allocation_expiry(Allocation& allocation, TimePoint expires);
  void expire(const Timer& timer);
  static Timer permission_timer(const Allocation& allocation, const std::array<uint8_t, 16>& ip,
                                TimePoint expires);
  static Timer channel_timer(const Allocation& allocation, uint16_t number, TimePoint expires);
  bool has_permission(const Allocation& allocation, const TransportAddress& peer,
                      TimePoint now) const;
  // Whether installing permissions for `peers` and channel `number` (0: none) stays
  // within max_permissions_per_allocation.
  bool has_room(const Allocation& allocation, std::span<const TransportAddress> peers,
                uint16_t number) const;
  // 508 (RFC 8656 sections 9.2, 12.2): no room for another peer IP or channel.
  void refuse_beyond_room(const ClientKey& client, const stun::Message& request,
                          const Auth& auth);
  void install_permission(Allocation& allocation, const TransportAddress& peer, TimePoint now);
  void count_kind(std::string_view kind);  // --metrics: errors_total{kind}
  bool take_tokens(Allocation& allocation, size_t bytes, TimePoint now);
  // Sends `data` from `from`'s relayed address to `peer`. When `peer` is the relayed
  // address of another allocation of this core (both peers of a tunnel relayed by
  // this relay, on this thread), the datagram is handed to it here, as if its socket
  // had received it (on_peer_data: the same permission and policy checks), instead of
  // going out and back in through the kernel.
  void send_from(const Allocation& from, const TransportAddress& peer,
                 std::span<const std::byte> data, TimePoint now);
  // The peer policy, plus: another allocation's relayed address on this relay. Both
  // peers relayed (each behind UDP-blocking firewalls) is the case TURN exists for;
  // the own-address rule is there to keep clients off the relay's service ports, so
  // only live relayed addresses are let through. `any_port`: CreatePermission, which
  // is per IP (RFC 8656 section 9); the exact address is checked when data flows.
  bool may_relay(const TransportAddress& peer, bool any_port) const;
  uint64_t unix_now() const;
  void count_relayed(bool to_peer, size_t bytes);

  TurnConfig config_;
  TurnIo& io_;
  NonceMint nonces_;
  AllocationId next_id_ = 1;
  std::unordered_map<AllocationId, Allocation> allocations_;
  std::map<ClientKey, AllocationId> by_client_;
  struct AddressHash {
    size_t operator()(const TransportAddress& address) const noexcept {
      return (static_cast<size_t>(address.ip[address.ip_size() - 1]) << 16) | address.port;
    }
  };
  // This core's allocations by relayed address, for send_from().
  std::unordered_map<TransportAddress, AllocationId, AddressHash> by_relayed_;
  std::shared_ptr<AllocationRegistry> registry_;
  std::set<Timer> timers_;
  std::atomic<size_t> permission_count_ = 0;
  std::atomic<size_t> channel_count_ = 0;
  // This core's own block of config_.stats (null: not counted): shards never write a
  // shared counter per datagram.
  relay::RelayedCounters* relayed_ = nullptr;
  uint64_t data_indications_ = 0;  // makes their transaction ids unique
};

}  // namespace natfwd::turn

// The relay's counters, kept by the I/O-free cores (they hold a pointer to one
// RelayStats, null in unit tests that do not care) and rendered as Prometheus text
// exposition format (version 0.0.4) for `relay --metrics`. Gauges are read from the
// cores at scrape time instead of being mirrored here.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace natfwd::relay {

// The publishing front door's counters for one publisher key (front_door/visitor_limits.h).
struct PublisherStats {
  uint64_t accepted = 0;            // visitor connections carried to home
  uint64_t refused_limit = 0;       // refused by a visitor limit (per publisher or total)
  uint64_t refused_allow_from = 0;  // kept out by the publisher's allow-from
  uint64_t bytes_to_home = 0;       // visitor -> home
  uint64_t bytes_to_visitor = 0;    // home -> visitor
};

// Two cores that write the same cache line keep taking it from each other; x86's
// adjacent-line prefetcher fetches lines in pairs, so 128 bytes apart (as folly's
// hardware_destructive_interference_size) keeps two writers from meeting.
inline constexpr size_t kCacheLineBytes = 128;

// The relayed-data counters of one TurnServer (one data-plane shard, or the main
// thread's core for TURN over TCP/TLS), written per relayed datagram. One thread
// writes a block, so a relaxed load and store adds (no locked read-modify-write), and
// the block has its cache line to itself; a scrape reads every block from another
// thread and sums them (RelayStats::relayed()).
struct alignas(kCacheLineBytes) RelayedCounters {
  std::atomic<uint64_t> bytes_to_peer = 0;  // client -> relay -> peer (payload)
  std::atomic<uint64_t> packets_to_peer = 0;
  std::atomic<uint64_t> bytes_to_client = 0;  // peer -> relay -> client (payload)
  std::atomic<uint64_t> packets_to_client = 0;

  // Of the packets to peers: those that went to another allocation of the same core,
  // handed over without the kernel (TurnServer::send_from).
  std::atomic<uint64_t> packets_handed_over = 0;

  // Only from the thread that owns this block.
  void count(bool to_peer, uint64_t bytes) {
    add(to_peer ? bytes_to_peer : bytes_to_client, bytes);
    add(to_peer ? packets_to_peer : packets_to_client, 1);
  }
  void count_handed_over() { add(packets_handed_over, 1); }

 private:
  static void add(std::atomic<uint64_t>& counter, uint64_t n) {
    counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
};

// The sum of every RelayedCounters block, as one scrape sees it.
struct RelayedTotals {
  uint64_t bytes_to_peer = 0;
  uint64_t packets_to_peer = 0;
  uint64_t bytes_to_client = 0;
  uint64_t packets_to_client = 0;
  uint64_t packets_handed_over = 0;
};

// The counters the TURN data-plane shards (`relay --threads N`) write from their
// own threads are atomic (the relayed data in a block per core, relayed_counters()),
// and `errors` is guarded by errors_mutex; the rendezvous counters are written on the
// main thread only.
struct RelayStats {
  uint64_t registrations_total = 0;          // names registered (first time or again)
  uint64_t sessions_total = 0;               // OpenSession routed to a registered peer
  uint64_t rate_limited_registrations = 0;   // --max-registrations-per-minute
  uint64_t rate_limited_sessions = 0;        // --max-sessions-per-minute
  uint64_t rate_limited_new_names = 0;       // --max-new-names-per-hour
  std::atomic<uint64_t> stun_binding_requests = 0;        // answered Binding requests (udp)
  std::atomic<uint64_t> turn_allocations_total = 0;
  // Ports reserved by EVEN-PORT R=1, and those taken in by a RESERVATION-TOKEN on the
  // data-plane thread that reserved them or on another (turn_shards.h).
  std::atomic<uint64_t> turn_reservations_total = 0;
  std::atomic<uint64_t> turn_reservations_redeemed_same_shard = 0;
  std::atomic<uint64_t> turn_reservations_redeemed_other_shard = 0;
  std::map<std::string, uint64_t> errors;    // kind -> count
  // Publisher key id -> counters (main thread only; an idle publisher is forgotten,
  // so its counters may start again from 0, see VisitorLimits::forget_idle).
  std::map<std::string, PublisherStats> publishers;
  mutable std::mutex errors_mutex;

  void error(std::string_view kind) {
    std::lock_guard lock(errors_mutex);
    ++errors[std::string(kind)];
  }

  // A fresh block for one core to count its relayed data in; it lives as long as
  // these stats, so the counts of a core that has gone stay in the sum. Thread safe.
  RelayedCounters& relayed_counters();
  // Every block summed; thread safe. Each counter is read whole; a block's bytes and
  // packets may be read between the two additions of one datagram.
  RelayedTotals relayed() const;

 private:
  mutable std::mutex relayed_mutex_;
  std::vector<std::unique_ptr<RelayedCounters>> relayed_blocks_;
};

// What the cores hold right now.
struct RelayGauges {
  uint64_t registered_peers = 0;
  uint64_t rendezvous_connections = 0;
  uint64_t open_sessions = 0;
  uint64_t turn_allocations = 0;
  uint64_t turn_permissions = 0;
  uint64_t turn_channels = 0;
  std::map<std::string, uint64_t> publish_visitors;  // publisher key id -> open visitors
  double uptime_seconds = 0;
  std::string version;
};

std::string render_prometheus(const RelayStats& stats, const RelayGauges& gauges);

// The metrics endpoint's HTTP/1.1 (RFC 9112) request head, as far as it has arrived:
// GET /metrics is served, any other well-formed request gets 404, anything else (or
// a head over kMaxRequestHead bytes) closes the connection.
enum class MetricsRequest { kNeedMore, kMetrics, kNotFound, kMalformed };
inline constexpr size_t kMaxRequestHead = 8192;
MetricsRequest classify_metrics_request(std::string_view received);

}  // namespace natfwd::relay

// The TURN-over-UDP data plane spread over threads (`relay --threads N`, N > 1).
//
// The listen port is N UDP sockets in one SO_REUSEPORT group. The kernel hashes a
// datagram's 4-tuple to one socket of the group, the same one for as long as the group
// does not change, so every datagram of one client 5-tuple reaches the same shard: the
// shard whose TurnServer answered the Allocate owns that allocation, and its relayed
// socket is read by the same thread. Each shard is a thread with its own GMainContext
// running a StunUdpService (Binding and TURN on its socket) and a TurnService (its
// allocations and relayed sockets).
//
// What the shards share is explicit: the allocation quotas and relayed addresses
// (turn::AllocationRegistry, given in the TurnConfig), the nonce key (one NonceMint
// copied into each core; it is stateless), the REST secret (read-only), the counters
// (RelayStats: atomic where shards write; the relayed data, counted per datagram, in
// a cache line per core, summed by a scrape) and the log (thread safe). The rendezvous,
// TURN over TCP/TLS and metrics stay on the main thread.
#pragma once

#include <cstddef>
#include <exception>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gio/gio.h>

#include "glib_ptr.h"
#include "metrics/relay_stats.h"
#include "server/stun_udp_service.h"
#include "server/turn_service.h"

namespace natfwd::relay {

class TurnShards {
 public:
  // One shard per socket of `sockets` (bound, SO_REUSEPORT, same port); starts them
  // all and returns once each serves, or throws what a shard's setup threw.
  // `discovery`: the RFC 5780 sockets to answer CHANGE-REQUESTs from ([0][0] is
  // replaced by each shard's own socket); the main thread reads them.
  TurnShards(const std::vector<GSocket*>& sockets, const TurnServiceConfig& config,
             const std::string& software, const std::optional<DiscoverySockets>& discovery,
             RelayStats* stats);
  // Stops every shard's loop and joins its thread; each shard's services are
  // destroyed on that thread.
  ~TurnShards();
  TurnShards(const TurnShards&) = delete;
  TurnShards& operator=(const TurnShards&) = delete;

  size_t size() const { return shards_.size(); }
  // Summed over the shards; safe from the main thread (the cores' counts are atomic).
  size_t permission_count() const;
  size_t channel_count() const;

 private:
  struct Shard {
    GMainContextPtr context;
    GMainLoopPtr loop;
    // Made and destroyed on the shard's thread; read by the main thread only
    // through the cores' atomic counts.
    std::unique_ptr<TurnService> turn;
    std::unique_ptr<StunUdpService> stun;
    std::thread thread;
  };

  static void run(Shard& shard, GSocket* socket, const TurnServiceConfig& config,
                  const std::string& software, const std::optional<DiscoverySockets>& discovery,
                  RelayStats* stats, std::promise<void>& ready);
  void stop() noexcept;

  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace natfwd::relay

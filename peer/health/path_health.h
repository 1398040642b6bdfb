// Path health on the connecting side, as a pure function of the tunnels' state and
// the time: which tunnels have gone silent and should look for a new path now.
//
// A tunnel hears from the other side about once a second even when idle (QUIC
// keepalive PINGs and their ACKs, quic_connection.h). After kSilentRestart without a
// datagram the path is taken for dead: the tunnel restarts its path, and if that
// fails a fresh tunnel takes new connections while the old one keeps its open ones
// (QUIC's idle timeout ends them otherwise). Three missed keepalives: a lossy path is
// not mistaken for a dead one. Right after a local network change the old path is
// most likely gone, so the limit is shorter. A replaced tunnel keeps retrying its
// path restart while it has open connections, backing off 1, 2, 4, 8 s: the other
// side may have moved too and is back at the relay a moment later (lab roam-home).
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

namespace natfwd {

using Micros = std::chrono::microseconds;

// What path health needs to know of one connecting tunnel.
struct TunnelHealth {
  uint64_t tunnel_id = 0;
  bool established = false;
  bool closed = false;
  bool restarting = false;
  bool current = false;  // takes new connections
  bool retired = false;  // replaced; carries its open connections on
  size_t open_streams = 0;
  Micros silent_for{0};          // since the last datagram from the other side
  Micros restart_failed_at{0};   // when its last path restart failed; 0: none did
  int restart_failures = 0;      // in a row
};

class PathHealth {
 public:
  static constexpr Micros kSilentRestart = std::chrono::seconds(3);
  static constexpr Micros kSilentRestartAfterChange = std::chrono::milliseconds(1200);
  // How long after a network change the shorter limit applies.
  static constexpr Micros kNetworkChangeWindow = std::chrono::seconds(10);
  // A new connection is not given to a tunnel silent for longer than this (one and a
  // half keepalive intervals): a fresh path costs less than a connection that hangs.
  static constexpr Micros kSilentOnAccept = std::chrono::milliseconds(1500);
  static constexpr Micros kRestartRetry = std::chrono::seconds(1);
  static constexpr int kRestartRetryMaxDoublings = 3;  // 1, 2, 4, 8 s (QUIC idles out at 30 s)

  // The local network settled after a change at `now` (monotonic).
  void network_changed(Micros now) { network_changed_at_ = now; }
  bool after_network_change(Micros now) const;
  Micros silence_limit(Micros now) const;
  // The wait after `failures` failed path restarts in a row before the next one.
  static Micros retry_delay(int failures);
  // The tunnels to restart a path for now, in the order given.
  std::vector<uint64_t> due_for_restart(const std::vector<TunnelHealth>& tunnels,
                                        Micros now) const;
  // A new connection arrives: restart this tunnel's path first?
  static bool restart_on_accept(const TunnelHealth& tunnel);

 private:
  Micros network_changed_at_{0};  // 0: no change seen
};

}  // namespace natfwd

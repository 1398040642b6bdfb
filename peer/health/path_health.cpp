#include "health/path_health.h"

#include <algorithm>

namespace natfwd {

bool PathHealth::after_network_change(Micros now) const {
  return network_changed_at_ != Micros{0} && now - network_changed_at_ < kNetworkChangeWindow;
}

Micros PathHealth::silence_limit(Micros now) const {
  return after_network_change(now) ? kSilentRestartAfterChange : kSilentRestart;
}

Micros PathHealth::retry_delay(int failures) {
  const int doublings = std::clamp(failures - 1, 0, kRestartRetryMaxDoublings);
  return kRestartRetry * (1 << doublings);
}

std::vector<uint64_t> PathHealth::due_for_restart(const std::vector<TunnelHealth>& tunnels,
                                                  Micros now) const {
  const Micros limit = silence_limit(now);
  std::vector<uint64_t> due;
  for (const TunnelHealth& tunnel : tunnels) {
    if (!tunnel.established || tunnel.closed || tunnel.restarting) continue;
    // The current tunnel, and replaced ones that still carry connections.
    if (!tunnel.current && !(tunnel.retired && tunnel.open_streams > 0)) continue;
    if (tunnel.silent_for <= limit) continue;
    if (tunnel.restart_failed_at != Micros{0} &&
        now - tunnel.restart_failed_at < retry_delay(tunnel.restart_failures))
      continue;
    due.push_back(tunnel.tunnel_id);
  }
  return due;
}

bool PathHealth::restart_on_accept(const TunnelHealth& tunnel) {
  return tunnel.established && !tunnel.closed && tunnel.silent_for > kSilentOnAccept;
}

}  // namespace natfwd

#include "outgoing/remote_peer.h"

#include <openssl/rand.h>

#include "log.h"
#include "tcp_reset.h"
#include "trust/authorization.h"

namespace natfwd {
namespace {

// Connections held while no relay link is up, and for how long.
constexpr size_t kMaxWaitingConnections = 256;
constexpr int kRelayWaitSeconds = 30;
// After a relay restart every peer reconnects: for this long after our own link is
// back, "no such peer" may only mean the serving peer has not yet; retried this often.
constexpr gint64 kReregisterGraceSeconds = 15;
constexpr guint kReregisterRetryMs = 1000;

uint64_t random_session_id() {
  uint64_t id = 0;
  while (id == 0) RAND_bytes(reinterpret_cast<unsigned char*>(&id), sizeof id);
  return id;
}

}  // namespace

RemotePeer::RemotePeer(const RemotePeerOptions& options, std::optional<std::string> pair_secret,
                       Context context)
    : options_(options), pair_secret_(std::move(pair_secret)), context_(std::move(context)) {}

RemotePeer::~RemotePeer() {
  if (waiting_timer_) g_source_remove(waiting_timer_);
  if (retry_timer_) g_source_remove(retry_timer_);
  for (auto& waiting : waiting_) {
    reset_connection(waiting.forward.tcp);
    g_object_unref(waiting.forward.tcp);
  }
  for (Tunnel* tunnel : tunnels_.list()) context_.router.remove_tunnel(*tunnel);
  tunnels_.clear();
}

void RemotePeer::on_relay_welcome() {
  if (!outgoing_ || outgoing_->closed()) start_outgoing_tunnel();
  hand_waiting_to_tunnel();
}

void RemotePeer::accept(GSocketConnection* tcp, const HostPort& target) {
  if (outgoing_ && PathHealth::restart_on_accept(health_of(*outgoing_))) {
    // A new connection on a tunnel that has probably lost its path: find a new path
    // now rather than at the next health check.
    restart_path(*outgoing_, "nothing heard from " + outgoing_->remote_label() + " for " +
                                 std::to_string(outgoing_->silent_for_us() / 1000) +
                                 " ms when a new connection came");
  }
  forward_connection(tcp, target);
}

void RemotePeer::forward_connection(GSocketConnection* tcp, const HostPort& target,
                                    OpenResultHandler on_result, std::string first_bytes,
                                    std::shared_ptr<TrafficMeter> meter) {
  if (!outgoing_ || outgoing_->closed()) start_outgoing_tunnel();
  if (outgoing_) {
    outgoing_->forward(tcp, target, std::move(on_result), std::move(first_bytes),
                       std::move(meter));
  } else if (context_.relays.all_unreachable()) {
    fail_connection(tcp, on_result, "no relay can be reached: " + context_.relays.unreachable_text());
  } else {
    g_object_ref(tcp);
    hold_until_relay_ready(
        {tcp, target, std::move(on_result), std::move(first_bytes), std::move(meter)});
  }
}

TunnelHealth RemotePeer::health_of(const Tunnel& tunnel) const {
  TunnelHealth health;
  health.tunnel_id = tunnel.tunnel_id();
  health.established = tunnel.established();
  health.closed = tunnel.closed();
  health.restarting = tunnel.restarting();
  health.current = &tunnel == outgoing_;
  health.retired = tunnel.retired();
  health.open_streams = tunnel.open_streams();
  health.silent_for = Micros{tunnel.silent_for_us()};
  health.restart_failed_at = Micros{tunnel.restart_failed_us()};
  health.restart_failures = tunnel.restart_failures();
  return health;
}

void RemotePeer::check_health(const PathHealth& health, Micros now, bool after_network_change) {
  std::vector<TunnelHealth> tunnels;
  for (const Tunnel* tunnel : tunnels_.list()) tunnels.push_back(health_of(*tunnel));
  // Restarting may replace the current tunnel (the set changes): act after the scan.
  for (uint64_t id : health.due_for_restart(tunnels, now)) {
    Tunnel* tunnel = tunnels_.find(id);
    if (!tunnel || tunnel->closed()) continue;
    const gint64 quiet = tunnel->silent_for_us();
    restart_path(*tunnel, "nothing heard from " + tunnel->remote_label() + " for " +
                              std::to_string(quiet / 1000) + " ms" +
                              (after_network_change ? " after a network change" : ""));
  }
}

void RemotePeer::replace_outgoing(const std::string& why) {
  Tunnel* old = outgoing_;
  outgoing_ = nullptr;
  log::warn("%s: %s; setting up a fresh tunnel for new connections (%zu open "
            "connection(s) stay on the old one until it recovers or times out)",
            old->remote_label().c_str(), why.c_str(), old->open_streams());
  old->retire("replaced by a fresh tunnel: " + why);
  start_outgoing_tunnel();
}

void RemotePeer::restart_path(Tunnel& tunnel, const std::string& why) {
  if (tunnel.restarting()) return;
  // Through the relay that worked last, else any that is up. None up (a link being
  // checked after a network change): the next health check tries again.
  RelayLink* link = context_.relays.first_ready(preferred_relay_);
  if (!link) return;
  const uint64_t id = random_session_id();
  context_.router.add(id, tunnel, *link);
  log::warn("%s: %s; looking for a new path%s through relay %s (%zu open connection(s) "
            "wait for it)", tunnel.remote_label().c_str(), why.c_str(),
            tunnel.retired() ? " for a replaced tunnel" : "",
            link->address.to_string().c_str(), tunnel.open_streams());
  tunnel.restart_path(id, link->ice_options);
}

void RemotePeer::start_outgoing_tunnel() {
  RelayLinks& relays = context_.relays;
  RelayLink* link = relays.first_ready(preferred_relay_, tried_relays_);
  if (!link && tried_relays_.size() == relays.size()) {
    tried_relays_.clear();  // every relay failed once: start over
    link = relays.first_ready(preferred_relay_, tried_relays_);
  }
  if (!link) return;
  tried_relays_.insert(link->index);
  const uint64_t id = random_session_id();
  const std::string& label = options_.name;
  SessionRouter& router = context_.router;
  Tunnel::Hooks hooks = router.hooks_for(*link);
  hooks.on_session_moved = [this, &router](Tunnel& tunnel, uint64_t old_session) {
    router.remove(old_session);
    const SessionRouter::Route* route = router.find(tunnel.session_id());
    if (route && &tunnel == outgoing_) preferred_relay_ = route->relay->index;
  };
  hooks.on_restart_failed = [this, &router](Tunnel& tunnel, const std::string& reason) {
    router.keep_current_only(tunnel);
    // A fresh tunnel takes new connections; the old one keeps trying for its open ones.
    if (&tunnel == outgoing_) replace_outgoing("path restart failed: " + reason);
  };
  hooks.on_closed = [this](Tunnel& tunnel, const std::string& reason) {
    tunnel_closed(tunnel, reason);
  };
  // The serving peer's key must be the one we pinned (NAME@KEYID) or, failing that,
  // the one known_peers recorded the first time. Checked inside the QUIC handshake,
  // so a relay that announces another key cannot get a byte through.
  hooks.authorize_key = [this, label](const PublicKey& key) {
    const std::string refusal = options_.key_id
                                    ? check_pinned_key_id(label, *options_.key_id, key)
                                    : context_.known_peers.check(label, key);
    if (refusal.empty()) return true;
    log::error("%s", refusal.c_str());
    return false;
  };
  hooks.on_established = [this, label, link](Tunnel& tunnel) {
    context_.known_peers.remember(label, tunnel.remote_key());
    if (&tunnel == outgoing_) {
      preferred_relay_ = link->index;
      tried_relays_.clear();
    }
  };
  hooks.rescue_pending = [this, link](Tunnel& tunnel,
                                      std::vector<Tunnel::PendingForward>& pending) {
    return rescue(tunnel, *link, pending);
  };
  Tunnel& tunnel = tunnels_.add(std::make_unique<Tunnel>(Tunnel::Role::kConnecting, id, label,
                                                         context_.identity, link->ice_options,
                                                         context_.target_policy,
                                                         std::move(hooks)));
  router.add(id, tunnel, *link);
  outgoing_ = &tunnel;
  log::info("connecting to %s via relay %s", label.c_str(), link->address.to_string().c_str());
  outgoing_->start_outgoing(
      label, pair_secret_ ? pairing_proof(*pair_secret_, context_.identity.public_key(), id)
                          : std::string());
  if (pair_secret_) outgoing_->request_pairing(*pair_secret_, context_.on_paired);
}

bool RemotePeer::rescue(Tunnel& tunnel, RelayLink& relay,
                        std::vector<Tunnel::PendingForward>& pending) {
  // Just after this relay came back (a restart), the serving peer may not have
  // registered again yet: its connections wait and the attempt is repeated, for a
  // while, instead of failing at once.
  const gint64 since_welcome = g_get_monotonic_time() - relay.welcomed_us;
  if (tunnel.peer_not_registered() && relay.welcomes > 1 &&
      since_welcome < kReregisterGraceSeconds * G_USEC_PER_SEC) {
    log::info("%s is not registered at %s yet, which just came back; trying again",
              tunnel.remote_label().c_str(), relay.address.to_string().c_str());
    for (auto& waiting : pending) hold_until_relay_ready(std::move(waiting));
    if (!retry_timer_) retry_timer_ = g_timeout_add(kReregisterRetryMs, on_retry_outgoing, this);
    return true;
  }
  // A setup that failed through one relay is tried through each other relay once,
  // with the connections that were waiting for it.
  if (tried_relays_.size() >= context_.relays.size()) return false;
  rescued_.insert(rescued_.end(), pending.begin(), pending.end());
  return true;
}

void RemotePeer::tunnel_closed(Tunnel& tunnel, const std::string& reason) {
  const bool was_outgoing = &tunnel == outgoing_;
  // A failure of the tunnel new connections use is worth a warning; a deliberate
  // close (shutdown, the other side stopping) and old tunnels ending are news.
  if (was_outgoing && !tunnel.closed_in_order())
    log::warn("%s: %s", tunnel.remote_label().c_str(), reason.c_str());
  else
    log::info("%s: %s", tunnel.remote_label().c_str(), reason.c_str());
  if (was_outgoing) outgoing_ = nullptr;
  context_.router.remove_tunnel(tunnel);
  tunnels_.destroy_later(tunnel);
  if (!was_outgoing || rescued_.empty()) return;
  std::vector<Tunnel::PendingForward> rescued;
  rescued.swap(rescued_);
  start_outgoing_tunnel();
  log::info("trying %s through another relay with %zu waiting connection(s)",
            options_.name.c_str(), rescued.size());
  for (auto& pending : rescued) {
    if (outgoing_) {
      outgoing_->forward(pending.tcp, pending.target, std::move(pending.on_result),
                         std::move(pending.first_bytes), std::move(pending.meter));
      g_object_unref(pending.tcp);
    } else {
      // No other relay is up yet.
      hold_until_relay_ready(std::move(pending));
    }
  }
}

void RemotePeer::hold_until_relay_ready(Tunnel::PendingForward forward) {
  if (waiting_.size() >= kMaxWaitingConnections) {
    fail_connection(forward.tcp, forward.on_result,
                    "no relay is connected (" + context_.relays.text() + ")");
    g_object_unref(forward.tcp);
    return;
  }
  // The relay links are (re)connecting: hold the connection until one is up.
  waiting_.push_back({std::move(forward), g_get_monotonic_time()});
  if (!waiting_timer_) waiting_timer_ = g_timeout_add_seconds(1, on_waiting_timeout, this);
}

void RemotePeer::hand_waiting_to_tunnel() {
  if (!outgoing_) return;
  for (auto& waiting : waiting_) {
    Tunnel::PendingForward& forward = waiting.forward;
    outgoing_->forward(forward.tcp, forward.target, std::move(forward.on_result),
                       std::move(forward.first_bytes), std::move(forward.meter));
    g_object_unref(forward.tcp);
  }
  waiting_.clear();
}

gboolean RemotePeer::on_waiting_timeout(gpointer self) {
  auto* remote = static_cast<RemotePeer*>(self);
  try {
    remote->expire_waiting();
  } catch (const std::exception& e) {
    log::error("%s: %s", remote->options_.name.c_str(), e.what());
  }
  if (!remote->waiting_.empty()) return G_SOURCE_CONTINUE;
  remote->waiting_timer_ = 0;
  return G_SOURCE_REMOVE;
}

void RemotePeer::expire_waiting() {
  const gint64 now = g_get_monotonic_time();
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (now - it->accepted_us < kRelayWaitSeconds * G_USEC_PER_SEC) {
      ++it;
      continue;
    }
    const std::string why = "no link to any relay (" + context_.relays.text() + ") after " +
                            std::to_string(kRelayWaitSeconds) + " s";
    fail_connection(it->forward.tcp, it->forward.on_result, why);
    g_object_unref(it->forward.tcp);
    it = waiting_.erase(it);
  }
}

void RemotePeer::relays_unreachable() {
  if (waiting_.empty()) return;
  const std::string why = "no relay can be reached: " + context_.relays.unreachable_text();
  std::vector<WaitingConnection> failed = std::move(waiting_);
  waiting_.clear();
  for (auto& waiting : failed) {
    fail_connection(waiting.forward.tcp, waiting.forward.on_result, why);
    g_object_unref(waiting.forward.tcp);
  }
}

void RemotePeer::fail_connection(GSocketConnection* tcp, OpenResultHandler& on_result,
                                 const std::string& why) {
  log::warn("cannot reach %s: %s", options_.name.c_str(), why.c_str());
  if (on_result) on_result(kOpenFailedLocally, why);
  else reset_connection(tcp);
}

gboolean RemotePeer::on_retry_outgoing(gpointer self) {
  auto* remote = static_cast<RemotePeer*>(self);
  remote->retry_timer_ = 0;
  try {
    if (!remote->outgoing_ || remote->outgoing_->closed()) remote->start_outgoing_tunnel();
    remote->hand_waiting_to_tunnel();
  } catch (const std::exception& e) {
    log::error("%s: %s", remote->options_.name.c_str(), e.what());
  }
  return G_SOURCE_REMOVE;
}

void RemotePeer::append_status(std::vector<TunnelStatus>& out) const {
  for (const Tunnel* tunnel : tunnels_.list()) out.push_back(tunnel->status());
}

}  // namespace natfwd

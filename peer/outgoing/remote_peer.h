// One serving peer this process forwards to (-L, -D, `peer nc`, `peer pair`): the
// tunnel that takes its new connections, the connections waiting for a relay link or
// a tunnel, the rescue of a failed setup through another relay, and the path
// restarts that PathHealth asks for. Each remote peer has its own tunnels, pinning
// (known_peers by its name) and relay failover order.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <gio/gio.h>

#include "config/peer_options.h"
#include "control/peer_status.h"
#include "health/path_health.h"
#include "identity.h"
#include "relays/relay_links.h"
#include "routing/session_router.h"
#include "routing/tunnel_set.h"
#include "trust/known_peers.h"

namespace natfwd {

class RemotePeer {
 public:
  // What a RemotePeer shares with the rest of the process.
  struct Context {
    const Identity& identity;
    RelayLinks& relays;
    SessionRouter& router;
    KnownPeers& known_peers;
    TargetPolicy target_policy;
    // `peer pair`: the serving peer answered (or the tunnel failed first).
    std::function<void(bool ok, const std::string& detail)> on_paired;
  };

  RemotePeer(const RemotePeerOptions& options, std::optional<std::string> pair_secret,
             Context context);
  ~RemotePeer();
  RemotePeer(const RemotePeer&) = delete;
  RemotePeer& operator=(const RemotePeer&) = delete;

  const std::string& name() const { return options_.name; }
  const RemotePeerOptions& options() const { return options_; }

  // A relay welcomed us: connect ahead of the first TCP connection, so that it finds
  // the tunnel ready, and hand over what waited for a link.
  void on_relay_welcome();
  // A connection accepted on a -L listener: restarts a path that has gone quiet first.
  void accept(GSocketConnection* tcp, const HostPort& target);
  // Carries one local connection to `target` at the remote peer; held while no relay
  // link or tunnel is up yet. Does not take the caller's reference. `first_bytes`:
  // already read from `tcp`, sent first (Tunnel::forward); `meter` (optional) limits
  // and counts its bytes.
  void forward_connection(GSocketConnection* tcp, const HostPort& target,
                          OpenResultHandler on_result = {}, std::string first_bytes = {},
                          std::shared_ptr<TrafficMeter> meter = {});
  // No relay can be reached (RelayLinks::all_unreachable): the connections waiting for
  // a link fail now, with why, instead of at the end of their wait.
  void relays_unreachable();
  // Restarts the paths of the tunnels that `health` finds silent at `now`.
  void check_health(const PathHealth& health, Micros now, bool after_network_change);

  void close_all(const std::string& reason) { tunnels_.close_all(reason); }
  void append_status(std::vector<TunnelStatus>& out) const;

 private:
  struct WaitingConnection {
    Tunnel::PendingForward forward;
    gint64 accepted_us;
  };

  void start_outgoing_tunnel();
  bool rescue(Tunnel& tunnel, RelayLink& relay, std::vector<Tunnel::PendingForward>& pending);
  void tunnel_closed(Tunnel& tunnel, const std::string& reason);
  void replace_outgoing(const std::string& why);
  void restart_path(Tunnel& tunnel, const std::string& why);
  TunnelHealth health_of(const Tunnel& tunnel) const;
  // Takes the reference: the connection waits (bounded) for a relay.
  void hold_until_relay_ready(Tunnel::PendingForward forward);
  void hand_waiting_to_tunnel();
  static gboolean on_waiting_timeout(gpointer self);
  static gboolean on_retry_outgoing(gpointer self);
  void expire_waiting();
  // Fails one waiting (or new) connection: its handler or a TCP reset, and one line.
  void fail_connection(GSocketConnection* tcp, OpenResultHandler& on_result,
                       const std::string& why);

  RemotePeerOptions options_;
  std::optional<std::string> pair_secret_;
  Context context_;
  TunnelSet tunnels_;
  Tunnel* outgoing_ = nullptr;  // the tunnel that new connections use
  // Where the next outgoing tunnel starts looking for a ready relay: the one that
  // worked last, or the one after a relay that failed.
  size_t preferred_relay_ = 0;
  // Relays tried since the last outgoing tunnel came up: a failed setup is retried
  // through a relay not tried yet; once every relay failed, a new round begins.
  std::set<size_t> tried_relays_;
  // Connections of a failed setup, carried over to the next relay's attempt.
  std::vector<Tunnel::PendingForward> rescued_;
  std::vector<WaitingConnection> waiting_;
  guint waiting_timer_ = 0;
  guint retry_timer_ = 0;  // a setup to try again (see kReregisterGraceSeconds)
};

}  // namespace natfwd

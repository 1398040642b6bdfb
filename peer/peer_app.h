// The peer program: serves targets (--serve), forwards local ports to one or more
// serving peers (-L, -D, `peer nc`), or both. PeerApp is the wiring between the
// objects that own the state: the relay links, the session router, the serving side
// and one RemotePeer per serving peer it forwards to.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gio/gio.h>

#include "config/peer_options.h"
#include "control/carried_connections.h"
#include "control/control_server.h"
#include "control/peer_status.h"
#include "forward/local_listener.h"
#include "health/path_health.h"
#include "identity.h"
#include "outgoing/remote_peer.h"
#include "relays/name_handover.h"
#include "relays/relay_links.h"
#include "routing/session_router.h"
#include "serving/incoming_tunnels.h"
#include "serving/serving_policy.h"
#include "socks/socks_listener.h"
#include "trust/known_peers.h"

namespace natfwd {

class PeerApp {
 public:
  PeerApp(PeerOptions options, Identity identity, GMainLoop* loop);
  ~PeerApp();
  // Binds listeners and starts the relay links. Returns false (after logging one
  // line) when something the user asked for cannot be done, e.g. a port in use.
  bool start();
  // Closes every tunnel (CONNECTION_CLOSE to the other side) before the loop ends.
  void shutdown();
  // 1: failure; kExitRefusedForGood: a relay refused this peer for a reason a restart
  // does not mend (its name is bound to another key, protocols differ...), so that a
  // service manager stops restarting it (RestartPreventExitStatus=).
  static constexpr int kExitRefusedForGood = 3;
  int exit_code() const { return exit_code_; }
  // Carries one local connection to `target` at the first remote peer (`peer nc`).
  void forward_connection(GSocketConnection* tcp, const HostPort& target,
                          OpenResultHandler on_result = {});
  // What `peer status` shows (peer_app_status.cpp).
  PeerStatus status() const;

 private:
  RelayLinks::Events relay_events();
  void on_session_message(RelayLink& link, const wire::Envelope& envelope);
  // True when a peer running with our state dir carries connections to every serving
  // peer we forward to: then our listeners go through its tunnels (a second -L or -D
  // beside a laptop's service) and we start no relay link, tunnel or control socket.
  bool through_running_peer();
  CarriedConnections* carrier_of(const RemotePeer& remote) const;
  bool start_listeners();
  bool start_socks_and_control();
  std::string answer_control(const std::string& request) const;
  // `connect NAME HOST:PORT` on the control socket: carries `fd` through our tunnel to
  // NAME (see control_server.h); false for other requests.
  bool carry_for_control(int fd, const std::string& request);
  // The remote peer a control request names (NAME or NAME@KEYID), or nullptr.
  RemotePeer* remote_for_control(const std::string& peer) const;
  static gboolean on_health_check(gpointer self);
  static void on_network_changed(GNetworkMonitor*, gboolean available, gpointer self);
  static gboolean on_network_settled(gpointer self);
  void pairing_finished(bool ok, const std::string& detail);
  void fatal(const std::string& message, int exit_code = 1);

  PeerOptions options_;
  Identity identity_;
  GMainLoop* loop_;
  KnownPeers known_peers_;
  ServingPolicy serving_;
  RelayLinks relays_;
  SessionRouter router_;
  PathHealth health_;
  IncomingTunnels incoming_;
  std::vector<std::unique_ptr<RemotePeer>> remotes_;  // in command-line order
  // Per remote peer, when a running peer carries our connections to it (see
  // through_running_peer); before the listeners, whose callbacks use them.
  std::map<const RemotePeer*, std::unique_ptr<CarriedConnections>> carriers_;
  std::vector<std::unique_ptr<LocalListener>> listeners_;
  std::vector<std::pair<std::unique_ptr<SocksListener>, std::string>> socks_listeners_;
  std::unique_ptr<ControlServer> control_;
  guint health_timer_ = 0;
  GNetworkMonitor* network_monitor_ = nullptr;  // GLib's process-wide one, not owned
  gulong network_handler_ = 0;
  guint network_settle_timer_ = 0;
  int exit_code_ = 0;
  std::unique_ptr<NameHandover> handover_;  // `peer handover` only
  gint64 started_us_ = g_get_monotonic_time();
};

}  // namespace natfwd

// The peer program: serves targets (--serve), forwards local ports (-L), or both.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <gio/gio.h>

#include "control/control_server.h"
#include "control/peer_status.h"
#include "forward/forward_spec.h"
#include "identity.h"
#include "netcheck/netcheck_responder.h"
#include "signaling/known_relays.h"
#include "signaling/relay_client.h"
#include "trust/authorization.h"
#include "socks/socks_listener.h"
#include "trust/known_peers.h"
#include "transport/turn_bridge.h"
#include "tunnel/tunnel.h"

namespace natfwd {

struct PeerConfig {
  // --relay (repeatable): relays in the order a connecting peer tries them; a serving
  // peer registers at every one.
  std::vector<HostPort> relays;
  std::optional<std::string> name;          // --name: register and serve under it
  std::vector<ServeSpec> serves;            // --serve
  std::vector<LocalForwardSpec> forwards;   // -L
  std::vector<HostPort> socks;              // -D [BIND:]PORT: SOCKS listeners
  std::optional<std::string> remote_peer;   // the NAME after -L specs
  std::optional<std::string> remote_key_id; // NAME@KEYID: pinned explicitly
  std::vector<std::string> allow;           // --allow KEYID (beside authorized_peers)
  std::optional<std::string> pair_secret;   // `peer pair CODE`: redeem and exit
  std::string state_dir;
  std::vector<std::string> ice_addresses;   // --ice-address: restrict host candidates
  bool relay_tls = true;                    // TLS to the relay unless --insecure-relay
  std::optional<std::string> relay_key;     // --relay-key SHA256:...: pinned explicitly
  std::optional<std::string> relay_ca;      // --relay-ca FILE: verify against this CA
  std::optional<HostPort> proxy;            // --proxy or https_proxy: HTTP CONNECT proxy
  bool force_relay = false;                 // --force-relay: relayed candidates only
  bool turn_udp = true, turn_tcp = true, turn_tls = true;  // --turn-transport
};

class PeerApp {
 public:
  PeerApp(PeerConfig config, Identity identity, GMainLoop* loop);
  ~PeerApp();
  // Binds listeners and starts the relay link. Returns false (after logging one line)
  // when something the user asked for cannot be done, e.g. a port already in use.
  bool start();
  // Closes every tunnel (CONNECTION_CLOSE to the other side) before the loop ends.
  void shutdown();
  int exit_code() const { return exit_code_; }
  // Carries one local connection to `target` at the remote peer (-L, -D, `peer nc`);
  // held while the relay link or the tunnel is not up yet.
  void forward_connection(GSocketConnection* tcp, const HostPort& target,
                          OpenResultHandler on_result = {});
  // What `peer status` shows (peer_app_status.cpp).
  PeerStatus status() const;

 private:
  struct Listener {
    LocalForwardSpec spec;
    std::string bound;
    GSocket* socket = nullptr;
    GSource* source = nullptr;
  };

  // One relay: the link to it and what it told us. Each tunnel is set up through
  // one relay, with that relay's STUN/TURN servers.
  struct RelayLink {
    size_t index = 0;  // position in --relay order
    HostPort address;
    std::unique_ptr<RelayClient> client;
    std::string ip;  // the relay's IP for STUN/TURN over UDP; empty when unknown
    IceSession::Options ice_options;
    // TURN server "ip:port" as libnice sees it -> what the path line says.
    std::map<std::string, std::string> labels;
    bool registered = false;
    int welcomes = 0;         // Welcome messages so far: more than one after a reconnect
    gint64 welcomed_us = 0;   // when the last one came
    bool ready() const { return client && client->ready(); }
  };

  bool bind_listener(Listener& listener);
  static gboolean on_accept(GSocket* socket, GIOCondition, gpointer self);
  void accept_from(GSocket* socket);
  // Takes the reference: the connection waits (bounded, kRelayWaitSeconds) for a relay.
  void hold_until_relay_ready(GSocketConnection* connection, const HostPort& target,
                              OpenResultHandler on_result = {});
  std::unique_ptr<RelayLink> make_relay_link(size_t index, const HostPort& address);
  void on_registered(RelayLink& link, const std::string& name);
  void on_relay_lost(RelayLink& link, const std::string& reason, bool fatal_error);
  void on_welcome(RelayLink& link, const std::string& relay_ip, const wire::Welcome& welcome);
  void use_ice_servers(RelayLink& link,
                       const google::protobuf::RepeatedPtrField<wire::IceServer>& servers);
  TurnBridge* bridge_for(const wire::IceServer& server, const HostPort& address);
  void on_session_message(RelayLink& link, const wire::Envelope& envelope);
  void refuse_session(RelayLink& link, uint64_t session_id, const std::string& detail);
  RelayLink* pick_relay_for_outgoing();
  bool any_relay_ready() const;
  std::string relays_text() const;
  void start_outgoing_tunnel();
  std::unique_ptr<Tunnel> make_tunnel(Tunnel::Role role, uint64_t session_id,
                                      const std::string& label, RelayLink& link,
                                      const PublicKey* caller = nullptr, bool pairing_only = false);
  void tunnel_closed(Tunnel& tunnel, const std::string& reason);
  // Path health (connecting side): a tunnel that has gone silent restarts its path;
  // if that fails, a fresh tunnel takes new connections while the old one keeps
  // trying for its open ones; see kSilentReplace* in peer_app.cpp.
  static gboolean on_health_check(gpointer self);
  void replace_outgoing(const std::string& why);
  void restart_path(Tunnel& tunnel, const std::string& why);
  void send_for_session(const wire::Envelope& envelope);
  void accept_path_restart(RelayLink& link, const wire::IncomingSession& incoming);
  static void on_network_changed(GNetworkMonitor*, gboolean available, gpointer self);
  static gboolean on_network_settled(gpointer self);
  StreamDecision check_target(const HostPort& target) const;
  void pairing_finished(bool ok, const std::string& detail);
  void fatal(const std::string& message);

  PeerConfig config_;
  Identity identity_;
  GMainLoop* loop_;
  std::vector<std::unique_ptr<RelayLink>> relays_;
  // Where the next outgoing tunnel starts looking for a ready relay: the one that
  // worked last, or the one after a relay that failed.
  size_t preferred_relay_ = 0;
  // Relays tried since the last outgoing tunnel came up: a failed setup is retried
  // through a relay not tried yet; once every relay failed, a new round begins.
  std::set<size_t> tried_relays_;
  // -L connections of a failed setup, carried over to the next relay's attempt.
  std::vector<Tunnel::PendingForward> rescued_;
  // Every session a tunnel runs on or is restarting through, and its relay: relay
  // messages are routed by session id, and only taken from that relay.
  struct SessionRoute {
    Tunnel* tunnel;
    RelayLink* relay;
  };
  std::map<uint64_t, SessionRoute> sessions_;
  // Serving peers only: their own netcheck, for `peer netcheck NAME` callers; its
  // answer goes to the relay the query came through.
  std::unique_ptr<netcheck::NetcheckResponder> netcheck_;
  RelayLink* netcheck_reply_link_ = nullptr;
  KnownRelays known_relays_;
  KnownPeers known_peers_;
  Authorization authorization_;
  // Loopback bridges for TURN over TCP/TLS, by "kind host:port"; kept across sessions.
  std::map<std::string, std::unique_ptr<TurnBridge>> bridges_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::map<uint64_t, std::unique_ptr<Tunnel>> tunnels_;  // by Tunnel::tunnel_id()
  Tunnel* outgoing_ = nullptr;  // the tunnel that -L connections use
  // -L connections accepted while the relay link is down, with their target.
  struct WaitingConnection {
    GSocketConnection* tcp;
    HostPort target;
    gint64 accepted_us;
    OpenResultHandler on_result;
  };
  std::vector<WaitingConnection> waiting_;
  guint waiting_timer_ = 0;
  static gboolean on_waiting_timeout(gpointer self);
  void hand_waiting_to_tunnel();
  guint health_timer_ = 0;
  guint retry_timer_ = 0;  // a setup to try again (see kReregisterGraceSeconds)
  static gboolean on_retry_outgoing(gpointer self);
  GNetworkMonitor* network_monitor_ = nullptr;
  gulong network_handler_ = 0;
  guint network_settle_timer_ = 0;
  gint64 network_changed_us_ = 0;  // when the last network change settled; 0: never
  bool announced_ = false;
  int exit_code_ = 0;
  // -D listeners and the control socket (peer_app_status.cpp).
  bool start_socks_and_control();
  std::string answer_control(const std::string& request) const;
  std::vector<std::unique_ptr<SocksListener>> socks_listeners_;
  std::unique_ptr<ControlServer> control_;
  gint64 started_us_ = g_get_monotonic_time();
};

}  // namespace natfwd

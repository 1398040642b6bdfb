// The peer program: serves targets (--serve), forwards local ports (-L), or both.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gio/gio.h>

#include "forward/forward_spec.h"
#include "identity.h"
#include "netcheck/netcheck_responder.h"
#include "signaling/known_relays.h"
#include "signaling/relay_client.h"
#include "trust/authorization.h"
#include "trust/known_peers.h"
#include "transport/turn_bridge.h"
#include "tunnel/tunnel.h"

namespace natfwd {

struct PeerConfig {
  HostPort relay;
  std::string relay_text;                   // as the user wrote it, for the ready line
  std::optional<std::string> name;          // --name: register and serve under it
  std::vector<ServeSpec> serves;            // --serve
  std::vector<LocalForwardSpec> forwards;   // -L
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

 private:
  struct Listener {
    LocalForwardSpec spec;
    GSocket* socket = nullptr;
    GSource* source = nullptr;
  };

  bool bind_listener(Listener& listener);
  static gboolean on_accept(GSocket* socket, GIOCondition, gpointer self);
  void accept_from(GSocket* socket);
  void on_welcome(const std::string& relay_ip, const wire::Welcome& welcome);
  void use_ice_servers(const google::protobuf::RepeatedPtrField<wire::IceServer>& servers);
  TurnBridge* bridge_for(const wire::IceServer& server, const HostPort& address);
  std::string relay_label(const std::string& server) const;
  void on_session_message(const wire::Envelope& envelope);
  void start_outgoing_tunnel();
  std::unique_ptr<Tunnel> make_tunnel(Tunnel::Role role, uint64_t session_id,
                                      const std::string& label,
                                      const PublicKey* caller = nullptr, bool pairing_only = false);
  void tunnel_closed(Tunnel& tunnel, const std::string& reason);
  StreamDecision check_target(const HostPort& target) const;
  void pairing_finished(bool ok, const std::string& detail);
  void fatal(const std::string& message);

  PeerConfig config_;
  Identity identity_;
  GMainLoop* loop_;
  std::unique_ptr<RelayClient> relay_;
  // Serving peers only: their own netcheck, for `peer netcheck NAME` callers.
  std::unique_ptr<netcheck::NetcheckResponder> netcheck_;
  IceSession::Options ice_options_;
  std::string relay_ip_;
  KnownRelays known_relays_;
  KnownPeers known_peers_;
  Authorization authorization_;
  // Loopback bridges for TURN over TCP/TLS, by "kind host:port"; kept across sessions.
  std::map<std::string, std::unique_ptr<TurnBridge>> bridges_;
  // TURN server "ip:port" as libnice sees it -> what the path line says.
  std::map<std::string, std::string> relay_labels_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::map<uint64_t, std::unique_ptr<Tunnel>> tunnels_;  // by session id
  Tunnel* outgoing_ = nullptr;  // the tunnel that -L connections use
  // -L connections accepted while the relay link is down, with their target.
  struct WaitingConnection {
    GSocketConnection* tcp;
    HostPort target;
    gint64 accepted_us;
  };
  std::vector<WaitingConnection> waiting_;
  guint waiting_timer_ = 0;
  static gboolean on_waiting_timeout(gpointer self);
  void hand_waiting_to_tunnel();
  bool announced_ = false;
  int exit_code_ = 0;
};

}  // namespace natfwd

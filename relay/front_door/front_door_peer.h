// The relay as one more connecting peer: the publishing front door reaches home peers
// the way `peer -L` does, with the peer's own connecting library (relay links, ICE,
// QUIC tunnels, RemotePeer), under a key of its own (STATE_DIR/front-door/identity.key).
//
// It is a client of this relay's own rendezvous, over plain TCP to the relay's own
// address, so a published peer is reached exactly as any peer reaches another: the
// same proof of key, session limits, candidates and TURN credentials, and ICE picks a
// direct UDP path to home when one works (the relay is public: the easy case of hole
// punching) and the relay's TURN otherwise. One tunnel per home peer; each visitor
// connection is one more QUIC stream on it (no handshake, no head-of-line blocking).
// Home authorises this key for its --publish targets only (PublishGrant).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gio/gio.h>

#include "address.h"
#include "config/peer_options.h"
#include "glib_ptr.h"
#include "health/path_health.h"
#include "identity.h"
#include "outgoing/remote_peer.h"
#include "relays/relay_links.h"
#include "routing/session_router.h"
#include "trust/known_peers.h"

namespace natfwd::relay::front_door {

class FrontDoorPeer {
 public:
  // `rendezvous`: this relay's rendezvous port as the front door reaches it.
  // `ice_addresses`: the host candidates it offers (the relay's own addresses).
  // `state_dir`: where known_peers goes (the relay's STATE_DIR/front-door).
  FrontDoorPeer(Identity identity, const HostPort& rendezvous,
                std::vector<std::string> ice_addresses, const std::string& state_dir);
  ~FrontDoorPeer();
  FrontDoorPeer(const FrontDoorPeer&) = delete;
  FrontDoorPeer& operator=(const FrontDoorPeer&) = delete;

  void start();
  // Carries a visitor's connection to `target` at the peer registered as `name` with
  // `key` (what the rendezvous knows of it: the tunnel pins that key). `first_bytes`:
  // what was read from `tcp` to route it. Does not take the caller's reference.
  // `on_result` (optional) learns home's answer (tunnel/stream_opening.h); with it, a
  // connection home never took is closed, not reset, once it returns. `meter`: the
  // visitor's limits and counters (visitor_limits.h), held as long as the connection.
  void forward(const std::string& name, const PublicKey& key, GSocketConnection* tcp,
               const HostPort& target, std::string first_bytes,
               OpenResultHandler on_result = {}, std::shared_ptr<TrafficMeter> meter = {});
  // Closes every tunnel (CONNECTION_CLOSE to each home peer) before the loop ends.
  void shutdown();

  // The relay's own key file for the front door, made on first run.
  static Identity load_identity(const std::string& relay_state_dir);
  static std::string state_dir_of(const std::string& relay_state_dir) {
    return relay_state_dir + "/front-door";
  }

 private:
  RelayLinks::Events relay_events();
  static gboolean on_health_check(gpointer self);

  PeerOptions options_;
  Identity identity_;
  KnownPeers known_peers_;
  RelayLinks relays_;
  SessionRouter router_;
  PathHealth health_;
  // One RemotePeer per home peer a visitor asked for, by name.
  std::map<std::string, std::unique_ptr<RemotePeer>> remotes_;
  SourceId health_timer_;
};

// The addresses the front door offers as ICE host candidates when the relay listens
// on `listen_ip`: that address, or every interface address for a wildcard.
std::vector<std::string> front_door_ice_addresses(const std::string& listen_ip);
// Where the front door reaches the rendezvous on `listen`: loopback for a wildcard.
HostPort front_door_rendezvous(const HostPort& listen);

}  // namespace natfwd::relay::front_door

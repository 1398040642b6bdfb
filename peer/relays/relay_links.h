// The peer's links to its relays (--relay, repeatable), what each relay told it (its
// ICE servers, turned into libnice options with loopback bridges for TURN over
// TCP/TLS), and the failover order in which a connecting peer picks a relay.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <gio/gio.h>

#include "config/peer_options.h"
#include "ice/ice_session.h"
#include "identity.h"
#include "rendezvous.pb.h"
#include "signaling/known_relays.h"
#include "signaling/relay_client.h"
#include "transport/turn_bridge.h"

namespace natfwd {

// One relay: the link to it and what it told us. Each tunnel is set up through one
// relay, with that relay's STUN/TURN servers.
struct RelayLink {
  size_t index = 0;  // position in --relay order
  HostPort address;
  std::unique_ptr<RelayClient> client;
  std::string ip;  // the relay's IP for STUN/TURN over UDP; empty when unknown
  IceSession::Options ice_options;
  // TURN server "ip:port" as libnice sees it -> what the path line says.
  std::map<std::string, std::string> labels;
  bool registered = false;
  // What the relay granted a publishing peer (rendezvous.proto, PublishGrant): the
  // domain visitors use, and the key of the relay's front door, which this peer
  // authorises for its published targets on tunnels set up through this link only.
  std::string publish_domain;
  std::optional<PublicKey> front_door_key;
  // Why the relay refused this peer for good (its client does not reconnect); empty
  // while the link is in use or retried.
  std::string refusal;
  // The key the relay's TLS presented, recorded in known_relays at its Welcome.
  std::string unpinned_spki;
  int welcomes = 0;        // Welcome messages so far: more than one after a reconnect
  gint64 welcomed_us = 0;  // when the last one came

  bool ready() const { return client && client->ready(); }
  // "turn-tls 203.0.113.10:443" for the TURN server libnice names "ip:port".
  std::string turn_label(const std::string& server) const;
};

class RelayLinks {
 public:
  // What the links report; each names the link it came from.
  struct Events {
    std::function<void(RelayLink&, const wire::Welcome&)> on_welcome;
    std::function<void(RelayLink&, const wire::Registered&)> on_registered;
    std::function<void(RelayLink&, const wire::Envelope&)> on_session_message;
    std::function<void(RelayLink&, const std::string& reason, bool fatal)> on_lost;
  };

  RelayLinks(const PeerOptions& options, const Identity& identity, Events events);
  RelayLinks(const RelayLinks&) = delete;
  RelayLinks& operator=(const RelayLinks&) = delete;

  void start();
  // The local network changed: each link pings its relay and reconnects if it is dead.
  void check_links();

  size_t size() const { return links_.size(); }
  RelayLink& at(size_t index) { return *links_[index]; }
  const std::vector<std::unique_ptr<RelayLink>>& all() const { return links_; }
  bool any_ready() const;
  // Every relay's last attempt failed before it answered (refused, unreachable, timed
  // out): a connection waiting for a link would wait in vain.
  bool all_unreachable() const;
  // Every relay refused this peer for a reason a retry cannot fix.
  bool all_refused_for_good() const;
  // "relay a:3478: ...; relay b:443: ..." for messages.
  std::string unreachable_text() const;
  // "a:3478, b:443" for messages.
  std::string text() const;
  // The first ready link in --relay order starting at `preferred` (wrapping round)
  // whose index is not in `skip`; nullptr when none is.
  RelayLink* first_ready(size_t preferred, const std::set<size_t>& skip = {});

 private:
  std::unique_ptr<RelayLink> make_link(size_t index, const HostPort& address);
  void use_ice_servers(RelayLink& link,
                       const google::protobuf::RepeatedPtrField<wire::IceServer>& servers);
  TurnBridge* bridge_for(const wire::IceServer& server, const HostPort& address);

  const PeerOptions& options_;
  const Identity& identity_;
  Events events_;
  // Port mappings at our gateway for every ICE session (--no-port-mapping: none).
  // Declared before the links so that it outlives what refers to it.
  std::unique_ptr<portmap::PortMapper> port_mapper_;
  KnownRelays known_relays_;
  std::vector<std::unique_ptr<RelayLink>> links_;
  // Loopback bridges for TURN over TCP/TLS, by "kind host:port"; kept across sessions.
  std::map<std::string, std::unique_ptr<TurnBridge>> bridges_;
};

}  // namespace natfwd

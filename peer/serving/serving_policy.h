// What a serving peer lets callers do: which keys may have a tunnel (authorized_peers,
// --allow, a pending invite for pairing, the front door of a relay that granted this
// peer's --publish), which targets a stream may open (the exact --serve allowlist;
// for a front door the exact --publish list and nothing else), and its own netcheck
// facts for authorised `peer netcheck NAME` callers, answered through the relay the
// query came through.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "config/peer_options.h"
#include "https/https_server.h"
#include "identity.h"
#include "netcheck/netcheck_responder.h"
#include "relays/relay_links.h"
#include "serving/publish_connector.h"
#include "trust/authorization.h"
#include "tunnel/tunnel.h"

namespace natfwd {

class ServingPolicy {
 public:
  enum class Admission { kRefused, kPairingOnly, kAuthorized, kFrontDoor };

  // Reads the --publish auth files (throws std::runtime_error for a bad one).
  explicit ServingPolicy(const PeerOptions& options);

  bool serves() const { return !options_.serves.empty() || !options_.publishes.empty(); }
  // An exact allowlist: the same host spelling and port as a --serve entry.
  StreamDecision check_target(const HostPort& target) const;
  // The same for a relay's front door and the --publish targets.
  StreamDecision check_published_target(const HostPort& target) const;
  // `link`: the relay that announced the caller. Its front door's key is admitted
  // only on sessions that come through that relay. A caller whose key is not
  // authorised is admitted for pairing only when its OpenSession carried a valid proof
  // of a pending invite; otherwise it is refused before any ICE, so a stranger learns
  // nothing about this peer's addresses. `pairing_refusal` says why a caller that
  // tried to pair was refused.
  Admission admit(const PublicKey& caller, const RelayLink& link,
                  const wire::IncomingSession& incoming, std::string& pairing_refusal) const;
  // Hooks of a serving tunnel to `caller`: its key is checked again inside the QUIC
  // handshake, and a pairing-only caller may redeem an invite and nothing else.
  void add_hooks(Tunnel::Hooks& hooks, TargetPolicy& policy, const PublicKey& caller,
                 const std::string& label, Admission admission);

  // The relay link events a serving peer acts on: the registration line and its own
  // netcheck (measured against the relay that welcomed it last).
  void on_welcome(const RelayLink& link, const wire::Welcome& welcome);
  // Returns why the peer must stop: its publishes need what the relay's grant does
  // not list in its features (an older relay would publish them unprotected).
  std::optional<std::string> on_registered(RelayLink& link, const wire::Registered& registered);
  bool announced() const { return announced_; }
  // For `peer status`: each --publish, its public URL once a relay granted it.
  std::vector<PublishStatus> publish_status() const;
  void answer_netcheck(RelayLink& link, const wire::NetcheckQuery& query);

 private:
  const PeerOptions& options_;
  Authorization authorization_;
  PublishConnector publish_connector_;  // the front door's streams
  std::unique_ptr<netcheck::NetcheckResponder> netcheck_;  // serving peers only
  // Each https publish's TLS, by --publish index (null for other kinds).
  std::vector<std::unique_ptr<HttpsServer>> https_;
  bool announced_ = false;
  bool published_ = false;  // the `published` ready lines are out
  std::vector<std::string> publish_urls_;  // by --publish index; empty: not granted
};

}  // namespace natfwd

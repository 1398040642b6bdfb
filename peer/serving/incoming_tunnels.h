// The serving side's tunnels: one per caller the relay announces (IncomingSession),
// admitted by the ServingPolicy before any ICE, QUIC or target, and path restarts of
// those tunnels asked for by the peer that proved its key on them.
#pragma once

#include <string>
#include <vector>

#include "control/peer_status.h"
#include "identity.h"
#include "relays/relay_links.h"
#include "routing/session_router.h"
#include "routing/tunnel_set.h"
#include "serving/serving_policy.h"

namespace natfwd {

class IncomingTunnels {
 public:
  IncomingTunnels(const Identity& identity, ServingPolicy& policy, SessionRouter& router);
  ~IncomingTunnels();
  IncomingTunnels(const IncomingTunnels&) = delete;
  IncomingTunnels& operator=(const IncomingTunnels&) = delete;

  void on_incoming_session(RelayLink& link, const wire::IncomingSession& incoming);
  void close_all(const std::string& reason) { tunnels_.close_all(reason); }
  void append_status(std::vector<TunnelStatus>& out) const;

 private:
  void accept_path_restart(RelayLink& link, const wire::IncomingSession& incoming);
  static void refuse(RelayLink& link, uint64_t session_id, const std::string& detail);

  const Identity& identity_;
  ServingPolicy& policy_;
  SessionRouter& router_;
  TunnelSet tunnels_;
};

}  // namespace natfwd

// Which tunnel each rendezvous session belongs to, and through which relay it runs.
// A tunnel has one session, plus one more while a path restart is under way (see
// tunnel/ice_leg.h); its owner registers each as it begins and the router drops them
// when they end. Relay messages are routed by session id and taken only from the
// relay the session runs through: another relay cannot speak for it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "rendezvous.pb.h"
#include "tunnel/tunnel.h"

namespace natfwd {

struct RelayLink;

class SessionRouter {
 public:
  struct Route {
    Tunnel* tunnel;
    RelayLink* relay;
  };

  void add(uint64_t session_id, Tunnel& tunnel, RelayLink& relay);
  void remove(uint64_t session_id) { routes_.erase(session_id); }
  // Every session of a tunnel that is gone.
  void remove_tunnel(const Tunnel& tunnel);
  // A path restart failed: the tunnel keeps only the session it runs on.
  void keep_current_only(const Tunnel& tunnel);
  bool contains(uint64_t session_id) const { return routes_.contains(session_id); }
  const Route* find(uint64_t session_id) const;

  // AcceptSession, Candidate or CloseSession from `relay`: to the session's tunnel if
  // it runs through that relay.
  void deliver(const RelayLink& relay, const wire::Envelope& envelope) const;
  // From a tunnel: through the relay its session runs on (dropped when unknown).
  void send(const wire::Envelope& envelope) const;
  // The link to `relay` was lost. Tunnels still waiting for the other side's answer
  // through it can never get it (a new link does not know the session): they are
  // closed, so that their connections try another relay instead of waiting for the
  // setup timeout; path restarts through it are given up. Setups past the answer
  // carry on (ICE needs no relay), as do established tunnels.
  void relay_lost(const RelayLink& relay, const std::string& why);

  // The hooks through which a tunnel set up via `relay` talks to the relay and keeps
  // its sessions registered here: it sends through its session's relay, a session a
  // path restart moved away from ends, and a failed restart's session is dropped. The
  // owner adds its own hooks, and may wrap these.
  Tunnel::Hooks hooks_for(RelayLink& relay);

  // The session id an envelope is about (0 for other messages).
  static uint64_t session_of(const wire::Envelope& envelope);

 private:
  std::map<uint64_t, Route> routes_;
};

}  // namespace natfwd

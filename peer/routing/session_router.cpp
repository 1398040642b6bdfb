#include "routing/session_router.h"

#include "relays/relay_links.h"

namespace natfwd {

void SessionRouter::add(uint64_t session_id, Tunnel& tunnel, RelayLink& relay) {
  routes_[session_id] = {&tunnel, &relay};
}

void SessionRouter::remove_tunnel(const Tunnel& tunnel) {
  std::erase_if(routes_, [&](const auto& entry) { return entry.second.tunnel == &tunnel; });
}

void SessionRouter::keep_current_only(const Tunnel& tunnel) {
  std::erase_if(routes_, [&](const auto& entry) {
    return entry.second.tunnel == &tunnel && entry.first != tunnel.session_id();
  });
}

const SessionRouter::Route* SessionRouter::find(uint64_t session_id) const {
  auto it = routes_.find(session_id);
  return it == routes_.end() ? nullptr : &it->second;
}

uint64_t SessionRouter::session_of(const wire::Envelope& envelope) {
  switch (envelope.msg_case()) {
    case wire::Envelope::kOpenSession: return envelope.open_session().session_id();
    case wire::Envelope::kAcceptSession: return envelope.accept_session().session_id();
    case wire::Envelope::kCandidate: return envelope.candidate().session_id();
    case wire::Envelope::kCloseSession: return envelope.close_session().session_id();
    default: return 0;
  }
}

void SessionRouter::deliver(const RelayLink& relay, const wire::Envelope& envelope) const {
  const Route* route = find(session_of(envelope));
  if (route && route->relay == &relay) route->tunnel->on_relay_message(envelope);
}

void SessionRouter::send(const wire::Envelope& envelope) const {
  if (const Route* route = find(session_of(envelope))) route->relay->client->send(envelope);
}

Tunnel::Hooks SessionRouter::hooks_for(RelayLink& relay) {
  Tunnel::Hooks hooks;
  hooks.send_to_relay = [this](const wire::Envelope& envelope) { send(envelope); };
  hooks.on_session_moved = [this](Tunnel&, uint64_t old_session) { remove(old_session); };
  hooks.on_restart_failed = [this](Tunnel& tunnel, const std::string&) {
    keep_current_only(tunnel);
  };
  hooks.relay_label = [&relay](const std::string& server) { return relay.turn_label(server); };
  return hooks;
}

void SessionRouter::relay_lost(const RelayLink& relay, const std::string& why) {
  std::vector<Tunnel*> stuck;
  std::vector<Tunnel*> restarting;
  for (auto& [id, route] : routes_) {
    if (route.relay != &relay) continue;
    if (route.tunnel->awaiting_answer()) stuck.push_back(route.tunnel);
    else if (route.tunnel->restart_session_id() == id) restarting.push_back(route.tunnel);
  }
  for (Tunnel* tunnel : restarting) tunnel->cancel_restart(why);
  for (Tunnel* tunnel : stuck) tunnel->close(why + " while waiting for the peer's answer");
}

}  // namespace natfwd

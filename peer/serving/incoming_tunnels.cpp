#include "serving/incoming_tunnels.h"

#include "log.h"

namespace natfwd {
namespace {

bool caller_key(const wire::IncomingSession& incoming, PublicKey& key) {
  return public_key_from_bytes(
      std::span(reinterpret_cast<const uint8_t*>(incoming.caller_key().data()),
                incoming.caller_key().size()),
      key);
}

}  // namespace

IncomingTunnels::IncomingTunnels(const Identity& identity, ServingPolicy& policy,
                                 SessionRouter& router)
    : identity_(identity), policy_(policy), router_(router) {}

IncomingTunnels::~IncomingTunnels() {
  for (Tunnel* tunnel : tunnels_.list()) router_.remove_tunnel(*tunnel);
}

void IncomingTunnels::refuse(RelayLink& link, uint64_t session_id, const std::string& detail) {
  wire::Envelope refuse;
  refuse.mutable_close_session()->set_session_id(session_id);
  refuse.mutable_close_session()->set_reason(wire::CloseSession::REFUSED);
  refuse.mutable_close_session()->set_detail(detail);
  link.client->send(refuse);
}

void IncomingTunnels::on_incoming_session(RelayLink& link, const wire::IncomingSession& incoming) {
  if (!policy_.serves()) {
    refuse(link, incoming.session_id(), "this peer serves nothing");
    return;
  }
  if (router_.contains(incoming.session_id())) return;
  if (incoming.resumes_session() != 0) {
    accept_path_restart(link, incoming);
    return;
  }
  PublicKey caller{};
  caller_key(incoming, caller);
  const std::string label = "peer " + key_id(caller).substr(0, 12);
  std::string pairing_refusal;
  const ServingPolicy::Admission admission = policy_.admit(caller, link, incoming, pairing_refusal);
  if (admission == ServingPolicy::Admission::kRefused && !pairing_refusal.empty()) {
    log::warn_limited("refused-pairing", "pairing refused for peer %s from %s: %s",
                      key_id(caller).c_str(), incoming.caller_address().c_str(),
                      pairing_refusal.c_str());
    refuse(link, incoming.session_id(), pairing_refusal);
    return;
  }
  if (admission == ServingPolicy::Admission::kRefused) {
    // Refused before any ICE, QUIC or target: the caller learns only "refused". Rate
    // limited: strangers are free to ask as often as the relay lets them.
    log::warn_limited("refused-peer", "refused peer %s (%s) from %s: its key is not "
                      "authorised (allow it with --allow %s, or pair it with `peer invite`)",
              key_id(caller).c_str(), key_fingerprint(caller).c_str(),
              incoming.caller_address().c_str(), key_id(caller).c_str());
    refuse(link, incoming.session_id(), "this peer's key is not authorised there");
    return;
  }
  const bool pairing_only = admission == ServingPolicy::Admission::kPairingOnly;
  log::info("%s (%s) wants a tunnel%s", label.c_str(), incoming.caller_address().c_str(),
            pairing_only ? " (not authorised: pairing only)"
            : admission == ServingPolicy::Admission::kFrontDoor
                ? " (the relay's front door: published targets only)"
                : "");
  Tunnel::Hooks hooks = router_.hooks_for(link);
  hooks.on_closed = [this](Tunnel& tunnel, const std::string& reason) {
    log::info("%s: %s", tunnel.remote_label().c_str(), reason.c_str());
    router_.remove_tunnel(tunnel);
    tunnels_.destroy_later(tunnel);
  };
  TargetPolicy target_policy = [this](const HostPort& target) {
    return policy_.check_target(target);
  };
  policy_.add_hooks(hooks, target_policy, caller, label, admission);
  Tunnel& tunnel = tunnels_.add(std::make_unique<Tunnel>(
      Tunnel::Role::kServing, incoming.session_id(), label, identity_, link.ice_options,
      std::move(target_policy), std::move(hooks)));
  router_.add(incoming.session_id(), tunnel, link);
  tunnel.start_incoming(incoming);
}

void IncomingTunnels::accept_path_restart(RelayLink& link, const wire::IncomingSession& incoming) {
  // Only for the peer that proved its key on this very tunnel: anyone else (or a
  // relay announcing a borrowed key) gets a refusal and touches nothing. Even a
  // relay that lies gets no further: QUIC packets on the new path must still
  // decrypt with this connection's keys.
  const SessionRouter::Route* route = router_.find(incoming.resumes_session());
  Tunnel* tunnel = route ? route->tunnel : nullptr;
  PublicKey caller{};
  const bool key_ok = caller_key(incoming, caller);
  if (!tunnel || tunnel->closed() || !tunnel->established() || !key_ok ||
      caller != tunnel->remote_key()) {
    log::info("path restart for an unknown tunnel from %s: refused",
              incoming.caller_address().c_str());
    refuse(link, incoming.session_id(), "no such tunnel to restart");
    return;
  }
  if (const uint64_t previous = tunnel->restart_session_id()) router_.remove(previous);
  router_.add(incoming.session_id(), *tunnel, link);
  tunnel->accept_restart(incoming, link.ice_options);
}

void IncomingTunnels::append_status(std::vector<TunnelStatus>& out) const {
  for (const Tunnel* tunnel : tunnels_.list()) out.push_back(tunnel->status());
}

}  // namespace natfwd

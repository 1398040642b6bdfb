#include "peer_app.h"

#include "forward/tcp_listener.h"
#include "log.h"

namespace natfwd {
namespace {

constexpr guint kHealthCheckMs = 250;
// Netlink reports a move as a burst of address and route events: act once it settles.
constexpr guint kNetworkSettleMs = 200;

Micros monotonic_now() { return Micros{g_get_monotonic_time()}; }

}  // namespace

PeerApp::PeerApp(PeerOptions options, Identity identity, GMainLoop* loop)
    : options_(std::move(options)),
      identity_(std::move(identity)),
      loop_(loop),
      known_peers_(options_.state_dir + "/known_peers"),
      serving_(options_),
      relays_(options_, identity_, relay_events()),
      incoming_(identity_, serving_, router_) {
  RemotePeer::Context context{identity_, relays_, router_, known_peers_,
                              [this](const HostPort& target) { return serving_.check_target(target); },
                              [this](bool ok, const std::string& detail) {
                                pairing_finished(ok, detail);
                              }};
  for (const RemotePeerOptions& remote : options_.remotes)
    remotes_.push_back(std::make_unique<RemotePeer>(remote, options_.pair_secret, context));
  if (options_.handover)
    handover_ = std::make_unique<NameHandover>(
        NameHandover::Request{options_.handover->name, options_.handover->to_key_id},
        options_.relays.size(), [this] { g_main_loop_quit(loop_); });
}

PeerApp::~PeerApp() {
  if (health_timer_) g_source_remove(health_timer_);
  if (network_settle_timer_) g_source_remove(network_settle_timer_);
  if (network_handler_) g_signal_handler_disconnect(network_monitor_, network_handler_);
}

RelayLinks::Events PeerApp::relay_events() {
  RelayLinks::Events events;
  events.on_welcome = [this](RelayLink& link, const wire::Welcome& welcome) {
    serving_.on_welcome(link, welcome);
    if (handover_) handover_->on_welcome(link);
    for (auto& remote : remotes_) remote->on_relay_welcome();
  };
  events.on_registered = [this](RelayLink& link, const wire::Registered& registered) {
    if (auto stop = serving_.on_registered(link, registered))
      fatal(*stop, kExitRefusedForGood);
  };
  events.on_session_message = [this](RelayLink& link, const wire::Envelope& envelope) {
    on_session_message(link, envelope);
  };
  events.on_lost = [this](RelayLink& link, const std::string& reason, bool fatal_error) {
    if (fatal_error) {
      // One relay's refusal ends the peer only when no other relay is left to use.
      link.refusal = reason;
      if (relays_.all_refused_for_good()) return fatal(reason, kExitRefusedForGood);
      log::error("%s; going on without relay %s", reason.c_str(),
                 link.address.to_string().c_str());
    } else {
      log::warn("%s; reconnecting", reason.c_str());
    }
    router_.relay_lost(link, "the link to relay " + link.address.to_string() + " was lost");
    if (relays_.all_unreachable())
      for (auto& remote : remotes_) remote->relays_unreachable();
  };
  return events;
}

bool PeerApp::start() {
  if (through_running_peer()) return start_listeners() && start_socks_and_control();
  if (!start_listeners()) return false;
  if (!options_.relay_tls)
    log::warn("--insecure-relay: the rendezvous with %s is not encrypted (who meets whom, "
              "candidates and TURN credentials are readable on the way; tunnels stay "
              "end-to-end encrypted)", relays_.text().c_str());
  if (!start_socks_and_control()) return false;
  relays_.start();
  if (!remotes_.empty()) health_timer_ = g_timeout_add(kHealthCheckMs, on_health_check, this);
  network_monitor_ = g_network_monitor_get_default();
  network_handler_ = g_signal_connect(network_monitor_, "network-changed",
                                      G_CALLBACK(on_network_changed), this);
  return true;
}

bool PeerApp::through_running_peer() {
  // Only a process that does nothing but forward local connections: serving, pairing,
  // handing a name over and `peer nc` (which asks by itself) need their own links.
  if (remotes_.empty() || options_.name || !options_.serves.empty() ||
      !options_.publishes.empty() || options_.pair_secret || options_.handover ||
      options_.netcat_target)
    return false;
  // Nor one that asks for a path of its own: the running peer's tunnel may be direct
  // where --force-relay wants a relay, or run over a transport --turn-transport leaves
  // out.
  if (options_.force_relay || !options_.ice_addresses.empty() ||
      !(options_.turn_udp && options_.turn_tcp && options_.turn_tls))
    return false;
  for (auto& remote : remotes_) {
    const RemotePeerOptions& spec = remote->options();
    auto carrier = CarriedConnections::through_running_peer(
        options_.state_dir, spec.key_id ? spec.name + "@" + *spec.key_id : spec.name);
    if (!carrier) {
      carriers_.clear();  // all or none: one process, one way of reaching the relays
      return false;
    }
    carriers_.emplace(remote.get(), std::move(carrier));
  }
  for (const auto& [remote, carrier] : carriers_)
    log::info("using the running peer's tunnel to %s (control socket %s)",
              remote->name().c_str(), carrier->control_path().c_str());
  return true;
}

CarriedConnections* PeerApp::carrier_of(const RemotePeer& remote) const {
  const auto found = carriers_.find(&remote);
  return found == carriers_.end() ? nullptr : found->second.get();
}

bool PeerApp::start_listeners() {
  for (auto& remote : remotes_) {
    for (const LocalForwardSpec& spec : remote->options().forwards) {
      TcpListenResult listening = listen_tcp(spec.listen);
      if (!listening.socket) {
        if (listening.bad_address)
          log::error("-L %s: %s", spec.listen.to_string().c_str(), listening.error.c_str());
        else
          log::error("%s", listening.error.c_str());
        exit_code_ = listening.bad_address ? 2 : 1;
        return false;
      }
      RemotePeer* to = remote.get();
      CarriedConnections* carrier = carrier_of(*remote);
      listeners_.push_back(std::make_unique<LocalListener>(
          listening.socket, listening.bound, spec, remote->name(),
          [to, carrier](GSocketConnection* tcp, const HostPort& target) {
            if (carrier) carrier->forward(tcp, target);
            else to->accept(tcp, target);
          }));
      log::ready("listening on %s -> %s %s", listening.bound.c_str(), remote->name().c_str(),
                 spec.target.to_string().c_str());
    }
  }
  return true;
}

void PeerApp::forward_connection(GSocketConnection* tcp, const HostPort& target,
                                 OpenResultHandler on_result) {
  remotes_.front()->forward_connection(tcp, target, std::move(on_result));
}

void PeerApp::on_session_message(RelayLink& link, const wire::Envelope& envelope) {
  if (handover_ && handover_->on_message(link, envelope)) return;
  if (envelope.has_netcheck_query()) serving_.answer_netcheck(link, envelope.netcheck_query());
  else if (envelope.has_netcheck_reply()) return;  // we ask no one
  else if (envelope.has_incoming_session()) incoming_.on_incoming_session(link, envelope.incoming_session());
  else router_.deliver(link, envelope);
}

gboolean PeerApp::on_health_check(gpointer self) {
  auto* app = static_cast<PeerApp*>(self);
  try {
    const Micros now = monotonic_now();
    const bool after_change = app->health_.after_network_change(now);
    for (auto& remote : app->remotes_) remote->check_health(app->health_, now, after_change);
  } catch (const std::exception& e) {
    log::error("path health check: %s", e.what());
  }
  return G_SOURCE_CONTINUE;
}

void PeerApp::on_network_changed(GNetworkMonitor*, gboolean, gpointer self) {
  auto* app = static_cast<PeerApp*>(self);
  if (app->network_settle_timer_) g_source_remove(app->network_settle_timer_);
  app->network_settle_timer_ = g_timeout_add(kNetworkSettleMs, on_network_settled, self);
}

gboolean PeerApp::on_network_settled(gpointer self) {
  auto* app = static_cast<PeerApp*>(self);
  app->network_settle_timer_ = 0;
  app->health_.network_changed(monotonic_now());
  log::info("the local network changed: checking the relay link%s and the tunnels",
            app->relays_.size() > 1 ? "s" : "");
  app->relays_.check_links();
  return G_SOURCE_REMOVE;
}

void PeerApp::pairing_finished(bool ok, const std::string& detail) {
  const RemotePeerOptions& remote = *options_.first_remote();
  if (ok) {
    log::ready("paired with %s (%s): it now accepts this peer (%s)", remote.name.c_str(),
               remote.key_id->c_str(), key_id(identity_.public_key()).c_str());
  } else {
    log::error("pairing with %s failed: %s", remote.name.c_str(), detail.c_str());
    exit_code_ = 1;
  }
  g_main_loop_quit(loop_);
}

void PeerApp::fatal(const std::string& message, int exit_code) {
  log::error("%s", message.c_str());
  exit_code_ = exit_code;
  g_main_loop_quit(loop_);
}

void PeerApp::shutdown() {
  for (auto& remote : remotes_) remote->close_all("peer shutting down");
  incoming_.close_all("peer shutting down");
}

}  // namespace natfwd

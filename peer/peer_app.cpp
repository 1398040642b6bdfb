#include "peer_app.h"

#include <openssl/rand.h>

#include <algorithm>

#include "forward/tcp_listener.h"
#include "log.h"
#include "tcp_reset.h"

namespace natfwd {
namespace {

uint64_t random_session_id() {
  uint64_t id = 0;
  while (id == 0) RAND_bytes(reinterpret_cast<unsigned char*>(&id), sizeof id);
  return id;
}

bool is_loopback_ip(const std::string& ip) {
  GInetAddress* address = g_inet_address_new_from_string(ip.c_str());
  if (!address) return false;
  bool loopback = g_inet_address_get_is_loopback(address);
  g_object_unref(address);
  return loopback;
}

std::string join_targets(const std::vector<ServeSpec>& serves) {
  std::string out;
  for (const auto& serve : serves) {
    if (!out.empty()) out += ", ";
    out += serve.target.to_string();
  }
  return out;
}

// -L connections held while the relay link is down, and for how long.
constexpr size_t kMaxWaitingConnections = 256;
constexpr int kRelayWaitSeconds = 30;

// A tunnel hears from the other side about once a second even when idle (QUIC
// keepalive PINGs and their ACKs, quic_connection.h). After this long without a
// datagram the path is taken for dead and new connections go to a fresh tunnel; the
// old one keeps its open connections in case the path comes back (QUIC's idle timeout
// ends them otherwise). Three missed keepalives: a lossy path is not mistaken for a
// dead one.
constexpr gint64 kSilentReplaceUs = 3 * G_USEC_PER_SEC;
// Right after a local network change the old path is most likely gone: act sooner.
constexpr gint64 kSilentReplaceAfterChangeUs = 1200 * G_USEC_PER_SEC / 1000;
constexpr gint64 kNetworkChangeWindowUs = 10 * G_USEC_PER_SEC;
constexpr guint kHealthCheckMs = 250;
// A tunnel replaced after a failed path restart keeps trying to restart its path while
// it has open connections: the other side may have moved too, and is back at the relay
// a moment later (lab roam-home). The first retry comes after 1 s, each further one
// after twice as long, up to 8 s (QUIC's idle timeout ends the tunnel after 30 s).
constexpr gint64 kRestartRetryUs = 1 * G_USEC_PER_SEC;
constexpr int kRestartRetryMaxDoublings = 3;
// After a relay restart every peer reconnects: for this long after our own link is
// back, "no such peer" may only mean the serving peer has not yet; retried this often.
constexpr gint64 kReregisterGraceSeconds = 15;
constexpr guint kReregisterRetryMs = 1000;
// A new connection is not given to a tunnel silent for longer than this (one and a
// half keepalive intervals): a fresh tunnel costs less than a connection that hangs.
constexpr gint64 kSilentOnAcceptUs = 1500 * G_USEC_PER_SEC / 1000;
// Netlink reports a move as a burst of address and route events: act once it settles.
constexpr guint kNetworkSettleMs = 200;

}  // namespace

PeerApp::PeerApp(PeerConfig config, Identity identity, GMainLoop* loop)
    : config_(std::move(config)),
      identity_(std::move(identity)),
      loop_(loop),
      known_relays_(config_.state_dir + "/known_relays"),
      known_peers_(config_.state_dir + "/known_peers"),
      authorization_(config_.state_dir, config_.allow) {}

PeerApp::~PeerApp() {
  if (waiting_timer_) g_source_remove(waiting_timer_);
  if (health_timer_) g_source_remove(health_timer_);
  if (retry_timer_) g_source_remove(retry_timer_);
  if (network_settle_timer_) g_source_remove(network_settle_timer_);
  if (network_handler_) g_signal_handler_disconnect(network_monitor_, network_handler_);
  for (auto& waiting : waiting_) {
    reset_connection(waiting.tcp);
    g_object_unref(waiting.tcp);
  }
  tunnels_.clear();
  relays_.clear();
  for (auto& listener : listeners_) {
    if (listener->source) {
      g_source_destroy(listener->source);
      g_source_unref(listener->source);
    }
    if (listener->socket) {
      g_socket_close(listener->socket, nullptr);
      g_object_unref(listener->socket);
    }
  }
}

bool PeerApp::start() {
  for (const auto& spec : config_.forwards) {
    auto listener = std::make_unique<Listener>();
    listener->spec = spec;
    if (!bind_listener(*listener)) return false;
    listeners_.push_back(std::move(listener));
  }
  if (!config_.relay_tls)
    log::warn("--insecure-relay: the rendezvous with %s is not encrypted (who meets whom, "
              "candidates and TURN credentials are readable on the way; tunnels stay "
              "end-to-end encrypted)", relays_text().c_str());
  if (!start_socks_and_control()) return false;
  if (!config_.serves.empty()) {
    // Answers go back through the relay the query came from (netcheck_reply_link_).
    netcheck_ = std::make_unique<netcheck::NetcheckResponder>(
        [this](const wire::Envelope& envelope) {
          if (netcheck_reply_link_) netcheck_reply_link_->client->send(envelope);
        },
        [this](const std::string& caller_key) {
          PublicKey caller{};
          return public_key_from_bytes(
                     std::span(reinterpret_cast<const uint8_t*>(caller_key.data()),
                               caller_key.size()),
                     caller) &&
                 authorization_.is_authorized(caller);
        });
  }
  for (size_t i = 0; i < config_.relays.size(); ++i)
    relays_.push_back(make_relay_link(i, config_.relays[i]));
  for (auto& link : relays_) link->client->start();
  if (config_.remote_peer) health_timer_ = g_timeout_add(kHealthCheckMs, on_health_check, this);
  // Not owned: GLib's process-wide monitor (netlink on Linux).
  network_monitor_ = g_network_monitor_get_default();
  network_handler_ = g_signal_connect(network_monitor_, "network-changed",
                                      G_CALLBACK(on_network_changed), this);
  return true;
}

void PeerApp::on_network_changed(GNetworkMonitor*, gboolean, gpointer self) {
  auto* app = static_cast<PeerApp*>(self);
  if (app->network_settle_timer_) g_source_remove(app->network_settle_timer_);
  app->network_settle_timer_ = g_timeout_add(kNetworkSettleMs, on_network_settled, self);
}

gboolean PeerApp::on_network_settled(gpointer self) {
  auto* app = static_cast<PeerApp*>(self);
  app->network_settle_timer_ = 0;
  app->network_changed_us_ = g_get_monotonic_time();
  log::info("the local network changed: checking the relay link%s and the tunnels",
            app->relays_.size() > 1 ? "s" : "");
  for (auto& link : app->relays_) link->client->check_link();
  return G_SOURCE_REMOVE;
}

gboolean PeerApp::on_health_check(gpointer self) {
  auto* app = static_cast<PeerApp*>(self);
  const gint64 now = g_get_monotonic_time();
  const bool after_change = app->network_changed_us_ != 0 &&
                            now - app->network_changed_us_ < kNetworkChangeWindowUs;
  const gint64 limit = after_change ? kSilentReplaceAfterChangeUs : kSilentReplaceUs;
  // The current tunnel, and replaced ones that still carry connections.
  std::vector<Tunnel*> silent;
  for (auto& [id, tunnel] : app->tunnels_) {
    if (tunnel->role() != Tunnel::Role::kConnecting || !tunnel->established() ||
        tunnel->closed() || tunnel->restarting())
      continue;
    if (tunnel.get() != app->outgoing_ && !(tunnel->retired() && tunnel->open_streams() > 0))
      continue;
    if (tunnel->silent_for_us() <= limit) continue;
    const int doublings = std::min(tunnel->restart_failures() - 1, kRestartRetryMaxDoublings);
    if (tunnel->restart_failed_us() != 0 &&
        now - tunnel->restart_failed_us() < (kRestartRetryUs << std::max(doublings, 0)))
      continue;
    silent.push_back(tunnel.get());
  }
  // Restarting may replace the current tunnel (tunnels_ changes): act after the scan.
  for (Tunnel* tunnel : silent) {
    if (tunnel->closed()) continue;
    const gint64 quiet = tunnel->silent_for_us();
    app->restart_path(*tunnel, "nothing heard from " + tunnel->remote_label() + " for " +
                                   std::to_string(quiet / 1000) + " ms" +
                                   (after_change ? " after a network change" : ""));
  }
  return G_SOURCE_CONTINUE;
}

void PeerApp::replace_outgoing(const std::string& why) {
  Tunnel* old = outgoing_;
  outgoing_ = nullptr;
  log::warn("%s: %s; setting up a fresh tunnel for new connections (%zu open "
            "connection(s) stay on the old one until it recovers or times out)",
            old->remote_label().c_str(), why.c_str(), old->open_streams());
  old->retire("replaced by a fresh tunnel: " + why);
  start_outgoing_tunnel();
}

void PeerApp::restart_path(Tunnel& tunnel, const std::string& why) {
  if (tunnel.restarting()) return;
  // Through the relay that worked last, else any that is up. None up (a link being
  // checked after a network change): the next health check tries again.
  RelayLink* link = nullptr;
  for (size_t i = 0; i < relays_.size() && !link; ++i) {
    RelayLink& candidate = *relays_[(preferred_relay_ + i) % relays_.size()];
    if (candidate.ready()) link = &candidate;
  }
  if (!link) return;
  const uint64_t id = random_session_id();
  sessions_[id] = {&tunnel, link};
  log::warn("%s: %s; looking for a new path%s through relay %s (%zu open connection(s) "
            "wait for it)", tunnel.remote_label().c_str(), why.c_str(),
            tunnel.retired() ? " for a replaced tunnel" : "",
            link->address.to_string().c_str(), tunnel.open_streams());
  tunnel.restart_path(id, link->ice_options);
}

void PeerApp::send_for_session(const wire::Envelope& envelope) {
  uint64_t id = 0;
  switch (envelope.msg_case()) {
    case wire::Envelope::kOpenSession: id = envelope.open_session().session_id(); break;
    case wire::Envelope::kAcceptSession: id = envelope.accept_session().session_id(); break;
    case wire::Envelope::kCandidate: id = envelope.candidate().session_id(); break;
    case wire::Envelope::kCloseSession: id = envelope.close_session().session_id(); break;
    default: break;
  }
  auto it = sessions_.find(id);
  if (it != sessions_.end()) it->second.relay->client->send(envelope);
}

void PeerApp::accept_path_restart(RelayLink& link, const wire::IncomingSession& incoming) {
  // Only for the peer that proved its key on this very tunnel: anyone else (or a
  // relay announcing a borrowed key) gets a refusal and touches nothing. Even a
  // relay that lies gets no further: QUIC packets on the new path must still
  // decrypt with this connection's keys.
  auto it = sessions_.find(incoming.resumes_session());
  Tunnel* tunnel = it == sessions_.end() ? nullptr : it->second.tunnel;
  PublicKey caller{};
  const bool key_ok = public_key_from_bytes(
      std::span(reinterpret_cast<const uint8_t*>(incoming.caller_key().data()),
                incoming.caller_key().size()),
      caller);
  if (!tunnel || tunnel->closed() || !tunnel->established() || !key_ok ||
      caller != tunnel->remote_key()) {
    log::info("path restart for an unknown tunnel from %s: refused",
              incoming.caller_address().c_str());
    refuse_session(link, incoming.session_id(), "no such tunnel to restart");
    return;
  }
  if (const uint64_t previous = tunnel->restart_session_id()) sessions_.erase(previous);
  sessions_[incoming.session_id()] = {tunnel, &link};
  tunnel->accept_restart(incoming, link.ice_options);
}

std::unique_ptr<PeerApp::RelayLink> PeerApp::make_relay_link(size_t index,
                                                             const HostPort& address) {
  auto link = std::make_unique<RelayLink>();
  link->index = index;
  link->address = address;
  RelayLink* raw = link.get();
  RelayClient::Callbacks callbacks;
  callbacks.on_welcome = [this, raw](const wire::Welcome& welcome, const std::string& relay_ip) {
    on_welcome(*raw, relay_ip, welcome);
  };
  callbacks.on_registered = [this, raw](const std::string& name) { on_registered(*raw, name); };
  callbacks.on_session_message = [this, raw](const wire::Envelope& envelope) {
    on_session_message(*raw, envelope);
  };
  callbacks.on_disconnected = [this, raw](const std::string& reason, bool fatal_error) {
    on_relay_lost(*raw, reason, fatal_error);
  };
  callbacks.on_ice_servers = [this, raw](const wire::IceServersUpdate& update) {
    use_ice_servers(*raw, update.ice_servers());
  };
  ConnectOptions options;
  options.server = address;
  options.http_proxy = config_.proxy;
  options.tls = config_.relay_tls;
  options.tls_check = [this, address](X509* leaf, const std::string& spki) -> std::string {
    if (config_.relay_key) {
      const std::string presented = spki_fingerprint(spki);
      if (presented == *config_.relay_key) return "";
      return "relay " + address.to_string() + " presented key " + presented +
             ", not the --relay-key " + *config_.relay_key;
    }
    if (config_.relay_ca) return verify_with_ca_file(leaf, *config_.relay_ca, address.host);
    return known_relays_.check(address, spki);
  };
  link->client = std::make_unique<RelayClient>(options, identity_, config_.name,
                                               std::move(callbacks));
  return link;
}

void PeerApp::on_registered(RelayLink& link, const std::string& name) {
  if (netcheck_) netcheck_->on_registered();
  const bool again = link.registered;
  link.registered = true;
  if (!announced_) {
    announced_ = true;
    // `peer invite` puts the name in the codes it prints.
    g_file_set_contents((config_.state_dir + "/name").c_str(), (name + "\n").c_str(), -1,
                        nullptr);
    log::ready("registered as %s at %s, serving %s", name.c_str(),
               link.address.to_string().c_str(), join_targets(config_.serves).c_str());
  } else if (again) {
    log::info("registered again as %s at %s", name.c_str(), link.address.to_string().c_str());
  } else {
    log::info("registered as %s at %s too", name.c_str(), link.address.to_string().c_str());
  }
}

void PeerApp::on_relay_lost(RelayLink& link, const std::string& reason, bool fatal_error) {
  if (fatal_error) {
    fatal(reason);
    return;
  }
  log::warn("%s; reconnecting", reason.c_str());
  // Tunnels still waiting for the other side's answer through this relay can never
  // get it (a new link does not know the session): fail them now, so that their
  // connections try another relay instead of waiting for the setup timeout. Setups
  // past the answer carry on (ICE needs no relay), as do established tunnels.
  std::vector<Tunnel*> stuck;
  std::vector<Tunnel*> restarting;
  for (auto& [id, route] : sessions_) {
    if (route.relay != &link) continue;
    if (route.tunnel->awaiting_answer()) stuck.push_back(route.tunnel);
    else if (route.tunnel->restart_session_id() == id) restarting.push_back(route.tunnel);
  }
  const std::string why = "the link to relay " + link.address.to_string() + " was lost";
  for (Tunnel* tunnel : restarting) tunnel->cancel_restart(why);
  for (Tunnel* tunnel : stuck) tunnel->close(why + " while waiting for the peer's answer");
}

bool PeerApp::bind_listener(Listener& listener) {
  const auto& spec = listener.spec;
  TcpListenResult listening = listen_tcp(spec.listen);
  if (!listening.socket) {
    if (listening.bad_address)
      log::error("-L %s: %s", spec.listen.to_string().c_str(), listening.error.c_str());
    else
      log::error("%s", listening.error.c_str());
    exit_code_ = listening.bad_address ? 2 : 1;
    return false;
  }
  GSocket* socket = listening.socket;
  const std::string& bound = listening.bound;
  listener.bound = bound;
  listener.socket = socket;
  listener.source = g_socket_create_source(socket, G_IO_IN, nullptr);
  g_source_set_callback(listener.source, G_SOURCE_FUNC(on_accept), this, nullptr);
  g_source_attach(listener.source, nullptr);
  log::ready("listening on %s -> %s %s", bound.c_str(), config_.remote_peer->c_str(),
             spec.target.to_string().c_str());
  return true;
}

gboolean PeerApp::on_accept(GSocket* socket, GIOCondition, gpointer self) {
  static_cast<PeerApp*>(self)->accept_from(socket);
  return G_SOURCE_CONTINUE;
}

void PeerApp::accept_from(GSocket* socket) {
  const Listener* listener = nullptr;
  for (const auto& candidate : listeners_)
    if (candidate->socket == socket) listener = candidate.get();
  while (listener) {
    GError* error = nullptr;
    GSocket* client = g_socket_accept(socket, nullptr, &error);
    if (!client) {
      if (!g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        log::warn("accept on %s: %s", listener->spec.listen.to_string().c_str(), error->message);
      g_error_free(error);
      return;
    }
    GSocketConnection* connection = g_socket_connection_factory_create_connection(client);
    g_object_unref(client);
    if (outgoing_ && outgoing_->established() && !outgoing_->closed() &&
        outgoing_->silent_for_us() > kSilentOnAcceptUs) {
      // A new connection on a tunnel that has probably lost its path: find a new
      // path now rather than at the next health check.
      restart_path(*outgoing_, "nothing heard from " + outgoing_->remote_label() + " for " +
                                   std::to_string(outgoing_->silent_for_us() / 1000) +
                                   " ms when a new connection came");
    }
    forward_connection(connection, listener->spec.target);
    g_object_unref(connection);
  }
}

void PeerApp::forward_connection(GSocketConnection* connection, const HostPort& target,
                                 OpenResultHandler on_result) {
  if (!outgoing_ || outgoing_->closed()) start_outgoing_tunnel();
  if (outgoing_) {
    outgoing_->forward(connection, target, std::move(on_result));
  } else {
    g_object_ref(connection);
    hold_until_relay_ready(connection, target, std::move(on_result));
  }
}

void PeerApp::hold_until_relay_ready(GSocketConnection* connection, const HostPort& target,
                                     OpenResultHandler on_result) {
  if (waiting_.size() >= kMaxWaitingConnections) {
    const std::string why = "no relay is connected (" + relays_text() + ")";
    log::warn("cannot reach %s: %s", config_.remote_peer->c_str(), why.c_str());
    if (on_result) on_result(kOpenFailedLocally, why);
    else reset_connection(connection);
    g_object_unref(connection);
    return;
  }
  // The relay links are (re)connecting: hold the connection until one is up.
  waiting_.push_back({connection, target, g_get_monotonic_time(), std::move(on_result)});
  if (!waiting_timer_) waiting_timer_ = g_timeout_add_seconds(1, on_waiting_timeout, this);
}

gboolean PeerApp::on_retry_outgoing(gpointer self) {
  auto* app = static_cast<PeerApp*>(self);
  app->retry_timer_ = 0;
  if (!app->outgoing_ || app->outgoing_->closed()) app->start_outgoing_tunnel();
  app->hand_waiting_to_tunnel();
  return G_SOURCE_REMOVE;
}

void PeerApp::on_welcome(RelayLink& link, const std::string& relay_ip,
                         const wire::Welcome& welcome) {
  link.ip = relay_ip;
  ++link.welcomes;
  link.welcomed_us = g_get_monotonic_time();
  // The serving peer's own netcheck measures against the relay that welcomed it last.
  if (netcheck_)
    netcheck_->on_welcome(
        netcheck::options_from_welcome(welcome, link.address, relay_ip, config_.proxy),
        config_.proxy.has_value());
  use_ice_servers(link, welcome.ice_servers());
  // Connect ahead of the first TCP connection, so that it finds the tunnel ready.
  if (config_.remote_peer && (!outgoing_ || outgoing_->closed())) start_outgoing_tunnel();
  hand_waiting_to_tunnel();
}

void PeerApp::use_ice_servers(
    RelayLink& link, const google::protobuf::RepeatedPtrField<wire::IceServer>& servers) {
  IceSession::Options options;
  options.force_relay = config_.force_relay;
  link.labels.clear();
  for (const auto& server : servers) {
    // An empty host means "the relay you are talking to".
    HostPort address{server.host().empty() ? link.address.host : server.host(),
                     static_cast<uint16_t>(server.port())};
    const std::string ip = server.host().empty() ? link.ip : server.host();
    const bool ip_known = !ip.empty() && g_hostname_is_ip_address(ip.c_str());
    switch (server.kind()) {
      case wire::IceServer::STUN:
        if (ip_known && options.stun_server.ip.empty())
          options.stun_server = {ip, address.port};
        break;
      case wire::IceServer::TURN_UDP:
        if (!ip_known || !config_.turn_udp) break;  // libnice needs an IP; behind a proxy UDP is moot anyway
        options.turn_servers.push_back(
            {ip, address.port, server.username(), server.password(), false});
        link.labels[HostPort{ip, address.port}.to_string()] = "turn-udp " + address.to_string();
        break;
      case wire::IceServer::TURN_TCP:
      case wire::IceServer::TURN_TLS: {
        const bool tls = server.kind() == wire::IceServer::TURN_TLS;
        if ((tls && !config_.turn_tls) || (!tls && !config_.turn_tcp)) break;
        TurnBridge* bridge = bridge_for(server, address);
        if (!bridge) break;
        options.turn_servers.push_back(
            {"127.0.0.1", bridge->port(), server.username(), server.password(), true});
        link.labels["127.0.0.1:" + std::to_string(bridge->port())] = bridge->label();
        break;
      }
      default:
        break;
    }
  }
  if (!config_.ice_addresses.empty()) {
    options.local_addresses = config_.ice_addresses;
  } else if (is_loopback_ip(link.ip)) {
    // A relay on loopback means every peer is on this machine (tests, demos): keep
    // ICE on loopback too instead of every interface.
    options.local_addresses = {link.ip};
  }
  log::debug("ice servers of relay %s: stun %s:%u, %zu turn", link.address.to_string().c_str(),
             options.stun_server.ip.c_str(), options.stun_server.port,
             options.turn_servers.size());
  link.ice_options = std::move(options);
}

TurnBridge* PeerApp::bridge_for(const wire::IceServer& server, const HostPort& address) {
  const bool tls = server.kind() == wire::IceServer::TURN_TLS;
  const std::string label = (tls ? "turn-tls " : "turn-tcp ") + address.to_string();
  auto& bridge = bridges_[label];
  if (bridge) return bridge.get();
  ConnectOptions upstream;
  upstream.server = address;
  upstream.http_proxy = config_.proxy;
  upstream.tls = tls;
  if (tls) {
    const std::string pin = server.tls_spki_sha256();
    const std::string host = address.host;
    upstream.tls_check = [pin, host](X509* leaf, const std::string& spki) -> std::string {
      // The pin came over the (trusted) rendezvous link; external servers without a
      // pin must have a certificate the system trusts for their name.
      if (!pin.empty())
        return spki == pin ? "" : "TURN server key " + spki_fingerprint(spki) +
                                      " is not the one the relay announced";
      return verify_with_system_cas(leaf, host);
    };
  }
  try {
    bridge = std::make_unique<TurnBridge>(upstream, label);
  } catch (const std::exception& e) {
    log::warn("%s", e.what());
    bridges_.erase(label);
    return nullptr;
  }
  return bridge.get();
}

bool PeerApp::any_relay_ready() const {
  for (const auto& link : relays_)
    if (link->ready()) return true;
  return false;
}

std::string PeerApp::relays_text() const {
  std::string out;
  for (const auto& relay : config_.relays) {
    if (!out.empty()) out += ", ";
    out += relay.to_string();
  }
  return out;
}

PeerApp::RelayLink* PeerApp::pick_relay_for_outgoing() {
  for (size_t i = 0; i < relays_.size(); ++i) {
    RelayLink& link = *relays_[(preferred_relay_ + i) % relays_.size()];
    if (link.ready() && !tried_relays_.contains(link.index)) return &link;
  }
  return nullptr;
}

void PeerApp::hand_waiting_to_tunnel() {
  if (!outgoing_) return;
  for (auto& waiting : waiting_) {
    outgoing_->forward(waiting.tcp, waiting.target, std::move(waiting.on_result));
    g_object_unref(waiting.tcp);
  }
  waiting_.clear();
}

gboolean PeerApp::on_waiting_timeout(gpointer self) {
  auto* app = static_cast<PeerApp*>(self);
  const gint64 now = g_get_monotonic_time();
  auto& waiting = app->waiting_;
  for (auto it = waiting.begin(); it != waiting.end();) {
    if (now - it->accepted_us < kRelayWaitSeconds * G_USEC_PER_SEC) {
      ++it;
      continue;
    }
    const std::string why = "no link to any relay (" + app->relays_text() + ") after " +
                            std::to_string(kRelayWaitSeconds) + " s";
    log::warn("cannot reach %s: %s", app->config_.remote_peer->c_str(), why.c_str());
    if (it->on_result) it->on_result(kOpenFailedLocally, why);
    else reset_connection(it->tcp);
    g_object_unref(it->tcp);
    it = waiting.erase(it);
  }
  if (!waiting.empty()) return G_SOURCE_CONTINUE;
  app->waiting_timer_ = 0;
  return G_SOURCE_REMOVE;
}

void PeerApp::start_outgoing_tunnel() {
  RelayLink* link = pick_relay_for_outgoing();
  if (!link && tried_relays_.size() == relays_.size()) {
    tried_relays_.clear();  // every relay failed once: start over
    link = pick_relay_for_outgoing();
  }
  if (!link) return;
  tried_relays_.insert(link->index);
  const uint64_t id = random_session_id();
  auto tunnel = make_tunnel(Tunnel::Role::kConnecting, id, *config_.remote_peer, *link);
  outgoing_ = tunnel.get();
  tunnels_[id] = std::move(tunnel);
  log::info("connecting to %s via relay %s", config_.remote_peer->c_str(),
            link->address.to_string().c_str());
  outgoing_->start_outgoing(*config_.remote_peer);
  if (config_.pair_secret) {
    outgoing_->request_pairing(*config_.pair_secret, [this](bool ok, const std::string& detail) {
      pairing_finished(ok, detail);
    });
  }
}

std::unique_ptr<Tunnel> PeerApp::make_tunnel(Tunnel::Role role, uint64_t session_id,
                                             const std::string& label, RelayLink& link,
                                             const PublicKey* caller, bool pairing_only) {
  Tunnel::Hooks hooks;
  RelayLink* relay = &link;
  hooks.send_to_relay = [this](const wire::Envelope& envelope) { send_for_session(envelope); };
  hooks.on_session_moved = [this](Tunnel& tunnel, uint64_t old_session) {
    sessions_.erase(old_session);
    auto it = sessions_.find(tunnel.session_id());
    if (it != sessions_.end() && &tunnel == outgoing_) preferred_relay_ = it->second.relay->index;
  };
  hooks.on_restart_failed = [this](Tunnel& tunnel, const std::string& reason) {
    std::erase_if(sessions_, [&](const auto& entry) {
      return entry.second.tunnel == &tunnel && entry.first != tunnel.session_id();
    });
    // The connecting side falls back to a fresh tunnel; the serving side waits for
    // the other side's next move.
    if (&tunnel == outgoing_) replace_outgoing("path restart failed: " + reason);
  };
  hooks.on_closed = [this](Tunnel& tunnel, const std::string& reason) {
    tunnel_closed(tunnel, reason);
  };
  hooks.relay_label = [relay](const std::string& server) {
    auto it = relay->labels.find(server);
    return it == relay->labels.end() ? "turn " + server : it->second;
  };
  if (role == Tunnel::Role::kConnecting) {
    // The serving peer's key must be the one we pinned (NAME@KEYID) or, failing that,
    // the one known_peers recorded the first time. Checked inside the QUIC handshake,
    // so a relay that announces another key cannot get a byte through.
    hooks.authorize_key = [this, label](const PublicKey& key) {
      const std::string refusal =
          config_.remote_key_id ? check_pinned_key_id(label, *config_.remote_key_id, key)
                                : known_peers_.check(label, key);
      if (refusal.empty()) return true;
      log::error("%s", refusal.c_str());
      return false;
    };
    hooks.on_established = [this, label, relay](Tunnel& tunnel) {
      known_peers_.remember(label, tunnel.remote_key());
      if (&tunnel == outgoing_) {
        preferred_relay_ = relay->index;
        tried_relays_.clear();
      }
    };
    // A setup that failed through one relay is tried through each other relay once,
    // with the connections that were waiting for it.
    hooks.rescue_pending = [this, relay](Tunnel& tunnel,
                                         std::vector<Tunnel::PendingForward>& pending) {
      // Just after this relay came back (a restart), the serving peer may not have
      // registered again yet: its connections wait and the attempt is repeated,
      // for a while, instead of failing at once.
      const gint64 since_welcome = g_get_monotonic_time() - relay->welcomed_us;
      if (tunnel.peer_not_registered() && relay->welcomes > 1 &&
          since_welcome < kReregisterGraceSeconds * G_USEC_PER_SEC) {
        log::info("%s is not registered at %s yet, which just came back; trying again",
                  tunnel.remote_label().c_str(), relay->address.to_string().c_str());
        for (auto& waiting : pending)
          hold_until_relay_ready(waiting.tcp, waiting.target, std::move(waiting.on_result));
        if (!retry_timer_) retry_timer_ = g_timeout_add(kReregisterRetryMs, on_retry_outgoing, this);
        return true;
      }
      // A setup that failed through one relay is tried through each other relay once,
      // with the connections that were waiting for it.
      if (tried_relays_.size() >= relays_.size()) return false;
      rescued_.insert(rescued_.end(), pending.begin(), pending.end());
      return true;
    };
  }
  TargetPolicy policy = [this](const HostPort& target) { return check_target(target); };
  if (role == Tunnel::Role::kServing && caller) {
    const PublicKey key = *caller;
    if (pairing_only) {
      policy = [](const HostPort&) {
        return StreamDecision{wire::StreamOpenResult::NOT_AUTHORIZED,
                              "this peer's key is not authorised here; pair it first"};
      };
    }
    // The QUIC handshake checks again that the key is the authorised one, so a relay
    // that announced one key and sent another peer gets nowhere.
    hooks.authorize_key = [this, pairing_only](const PublicKey& presented) {
      return authorization_.is_authorized(presented) ||
             (pairing_only && authorization_.has_pending_invite());
    };
    hooks.pair = [this, key, label](const std::string& secret) {
      if (!authorization_.redeem_invite(secret)) {
        log::warn("%s: pairing refused: invite unknown, used or expired", label.c_str());
        return StreamDecision{wire::StreamOpenResult::NOT_AUTHORIZED,
                              "invite unknown, already used or expired"};
      }
      if (!authorization_.authorize(key, "paired")) {
        return StreamDecision{wire::StreamOpenResult::NOT_AUTHORIZED,
                              "the serving peer cannot write its authorized_peers"};
      }
      log::info("%s: paired: key %s (%s) added to authorized_peers", label.c_str(),
                key_id(key).c_str(), key_fingerprint(key).c_str());
      return StreamDecision{wire::StreamOpenResult::OK, "paired"};
    };
  }
  auto tunnel = std::make_unique<Tunnel>(role, session_id, label, identity_, link.ice_options,
                                         std::move(policy), std::move(hooks));
  sessions_[session_id] = {tunnel.get(), &link};
  return tunnel;
}

void PeerApp::refuse_session(RelayLink& link, uint64_t session_id, const std::string& detail) {
  wire::Envelope refuse;
  refuse.mutable_close_session()->set_session_id(session_id);
  refuse.mutable_close_session()->set_reason(wire::CloseSession::REFUSED);
  refuse.mutable_close_session()->set_detail(detail);
  link.client->send(refuse);
}

void PeerApp::on_session_message(RelayLink& link, const wire::Envelope& envelope) {
  if (envelope.has_netcheck_query()) {
    if (netcheck_) {
      netcheck_reply_link_ = &link;
      netcheck_->on_query(envelope.netcheck_query());
      netcheck_reply_link_ = nullptr;
    }
    return;
  }
  if (envelope.has_netcheck_reply()) return;  // we ask no one
  if (envelope.has_incoming_session()) {
    const auto& incoming = envelope.incoming_session();
    if (config_.serves.empty()) {
      refuse_session(link, incoming.session_id(), "this peer serves nothing");
      return;
    }
    if (sessions_.contains(incoming.session_id())) return;
    if (incoming.resumes_session() != 0) {
      accept_path_restart(link, incoming);
      return;
    }
    PublicKey caller{};
    public_key_from_bytes(std::span(reinterpret_cast<const uint8_t*>(incoming.caller_key().data()),
                                    incoming.caller_key().size()),
                          caller);
    const std::string label = "peer " + key_id(caller).substr(0, 12);
    const bool authorized = authorization_.is_authorized(caller);
    const bool pairing_only = !authorized && authorization_.has_pending_invite();
    if (!authorized && !pairing_only) {
      // Refused before any ICE, QUIC or target: the caller learns only "refused".
      log::warn("refused peer %s (%s) from %s: its key is not authorised (allow it with "
                "--allow %s, or pair it with `peer invite`)",
                key_id(caller).c_str(), key_fingerprint(caller).c_str(),
                incoming.caller_address().c_str(), key_id(caller).c_str());
      refuse_session(link, incoming.session_id(), "this peer's key is not authorised there");
      return;
    }
    log::info("%s (%s) wants a tunnel%s", label.c_str(), incoming.caller_address().c_str(),
              pairing_only ? " (not authorised: pairing only)" : "");
    auto tunnel = make_tunnel(Tunnel::Role::kServing, incoming.session_id(), label, link,
                              &caller, pairing_only);
    Tunnel* raw = tunnel.get();
    tunnels_[incoming.session_id()] = std::move(tunnel);
    raw->start_incoming(incoming);
    return;
  }
  uint64_t id = 0;
  if (envelope.has_accept_session()) id = envelope.accept_session().session_id();
  else if (envelope.has_candidate()) id = envelope.candidate().session_id();
  else if (envelope.has_close_session()) id = envelope.close_session().session_id();
  auto it = sessions_.find(id);
  // Only from the relay the session runs through: another relay cannot speak for it.
  if (it != sessions_.end() && it->second.relay == &link)
    it->second.tunnel->on_relay_message(envelope);
}

void PeerApp::tunnel_closed(Tunnel& tunnel, const std::string& reason) {
  const bool was_outgoing = &tunnel == outgoing_;
  if (was_outgoing) {
    log::warn("%s: %s", tunnel.remote_label().c_str(), reason.c_str());
    outgoing_ = nullptr;
  } else {
    log::info("%s: %s", tunnel.remote_label().c_str(), reason.c_str());
  }
  // Destroyed from an idle callback: we are inside one of the tunnel's own calls.
  std::erase_if(sessions_, [&](const auto& entry) { return entry.second.tunnel == &tunnel; });
  auto it = tunnels_.find(tunnel.tunnel_id());
  if (it == tunnels_.end()) return;
  Tunnel* doomed = it->second.release();
  tunnels_.erase(it);
  g_idle_add_full(G_PRIORITY_DEFAULT, [](gpointer p) -> gboolean {
    delete static_cast<Tunnel*>(p);
    return G_SOURCE_REMOVE;
  }, doomed, nullptr);
  if (was_outgoing && !rescued_.empty()) {
    std::vector<Tunnel::PendingForward> rescued;
    rescued.swap(rescued_);
    start_outgoing_tunnel();
    log::info("trying %s through another relay with %zu waiting connection(s)",
              config_.remote_peer->c_str(), rescued.size());
    for (auto& pending : rescued) {
      if (outgoing_) {
        outgoing_->forward(pending.tcp, pending.target, std::move(pending.on_result));
        g_object_unref(pending.tcp);
      } else {
        // No other relay is up yet.
        hold_until_relay_ready(pending.tcp, pending.target, std::move(pending.on_result));
      }
    }
  }
}

StreamDecision PeerApp::check_target(const HostPort& target) const {
  // An exact allowlist: the same host spelling and port as a --serve entry.
  for (const auto& serve : config_.serves)
    if (serve.target == target) return {};
  return {wire::StreamOpenResult::NOT_SERVED,
          target.to_string() + " is not in this peer's --serve list"};
}

void PeerApp::pairing_finished(bool ok, const std::string& detail) {
  if (ok) {
    log::ready("paired with %s (%s): it now accepts this peer (%s)",
               config_.remote_peer->c_str(), config_.remote_key_id->c_str(),
               key_id(identity_.public_key()).c_str());
  } else {
    log::error("pairing with %s failed: %s", config_.remote_peer->c_str(), detail.c_str());
    exit_code_ = 1;
  }
  g_main_loop_quit(loop_);
}

void PeerApp::fatal(const std::string& message) {
  log::error("%s", message.c_str());
  exit_code_ = 1;
  g_main_loop_quit(loop_);
}

void PeerApp::shutdown() {
  // close() reports back through tunnel_closed, which edits tunnels_: walk a copy.
  std::vector<Tunnel*> open;
  for (auto& [id, tunnel] : tunnels_) open.push_back(tunnel.get());
  for (Tunnel* tunnel : open) tunnel->close("peer shutting down");
}

}  // namespace natfwd

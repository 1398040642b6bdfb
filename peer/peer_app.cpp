#include "peer_app.h"

#include <openssl/rand.h>

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
  for (auto& waiting : waiting_) {
    reset_connection(waiting.tcp);
    g_object_unref(waiting.tcp);
  }
  tunnels_.clear();
  relay_.reset();
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
  RelayClient::Callbacks callbacks;
  callbacks.on_welcome = [this](const wire::Welcome& welcome, const std::string& relay_ip) {
    on_welcome(relay_ip, welcome);
  };
  callbacks.on_registered = [this](const std::string& name) {
    if (!announced_) {
      announced_ = true;
      // `peer invite` puts the name in the codes it prints.
      g_file_set_contents((config_.state_dir + "/name").c_str(), (name + "\n").c_str(), -1,
                          nullptr);
      log::ready("registered as %s at %s, serving %s", name.c_str(), config_.relay_text.c_str(),
                 join_targets(config_.serves).c_str());
    } else {
      log::info("registered again as %s at %s", name.c_str(), config_.relay_text.c_str());
    }
  };
  callbacks.on_session_message = [this](const wire::Envelope& envelope) {
    on_session_message(envelope);
  };
  callbacks.on_disconnected = [this](const std::string& reason, bool fatal_error) {
    if (fatal_error) {
      fatal(reason);
      return;
    }
    log::warn("%s; reconnecting", reason.c_str());
    // relay_link_lost() may close a tunnel, which edits tunnels_: walk a copy.
    std::vector<Tunnel*> open;
    for (auto& [id, tunnel] : tunnels_) open.push_back(tunnel.get());
    for (Tunnel* tunnel : open) tunnel->relay_link_lost();
  };
  callbacks.on_ice_servers = [this](const wire::IceServersUpdate& update) {
    use_ice_servers(update.ice_servers());
  };
  ConnectOptions link;
  link.server = config_.relay;
  link.http_proxy = config_.proxy;
  link.tls = config_.relay_tls;
  link.tls_check = [this](X509* leaf, const std::string& spki) -> std::string {
    if (config_.relay_key) {
      const std::string presented = spki_fingerprint(spki);
      if (presented == *config_.relay_key) return "";
      return "relay " + config_.relay.to_string() + " presented key " + presented +
             ", not the --relay-key " + *config_.relay_key;
    }
    if (config_.relay_ca) return verify_with_ca_file(leaf, *config_.relay_ca, config_.relay.host);
    return known_relays_.check(config_.relay, spki);
  };
  if (!config_.relay_tls)
    log::warn("--insecure-relay: the rendezvous with %s is not encrypted (who meets whom, "
              "candidates and TURN credentials are readable on the way; tunnels stay "
              "end-to-end encrypted)", config_.relay_text.c_str());
  relay_ = std::make_unique<RelayClient>(link, identity_, config_.name, std::move(callbacks));
  relay_->start();
  return true;
}

bool PeerApp::bind_listener(Listener& listener) {
  const auto& spec = listener.spec;
  GInetAddress* address = g_inet_address_new_from_string(
      spec.listen.host == "localhost" ? "127.0.0.1" : spec.listen.host.c_str());
  if (!address) {
    log::error("-L %s: bind address must be an IP address", spec.listen.to_string().c_str());
    exit_code_ = 2;
    return false;
  }
  GError* error = nullptr;
  GSocket* socket = g_socket_new(g_inet_address_get_family(address), G_SOCKET_TYPE_STREAM,
                                 G_SOCKET_PROTOCOL_TCP, &error);
  GSocketAddress* socket_address = g_inet_socket_address_new(address, spec.listen.port);
  g_object_unref(address);
  bool ok = socket && g_socket_bind(socket, socket_address, TRUE, &error) &&
            g_socket_listen(socket, &error);
  g_object_unref(socket_address);
  if (!ok) {
    log::error("cannot listen on %s: %s", spec.listen.to_string().c_str(),
               error ? error->message : "unknown error");
    if (error) g_error_free(error);
    if (socket) g_object_unref(socket);
    exit_code_ = 1;
    return false;
  }
  g_socket_set_blocking(socket, FALSE);
  GSocketAddress* local = g_socket_get_local_address(socket, nullptr);
  std::string bound = socket_address_to_string(local);
  g_object_unref(local);
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
    if (!outgoing_ || outgoing_->closed()) start_outgoing_tunnel();
    if (outgoing_) {
      outgoing_->forward(connection, listener->spec.target);
      g_object_unref(connection);
    } else if (waiting_.size() < kMaxWaitingConnections) {
      // The relay link is (re)connecting: hold the connection until it is up.
      waiting_.push_back({connection, listener->spec.target, g_get_monotonic_time()});
      if (!waiting_timer_) waiting_timer_ = g_timeout_add_seconds(1, on_waiting_timeout, this);
    } else {
      log::warn("cannot reach %s: the relay %s is not connected", config_.remote_peer->c_str(),
                config_.relay_text.c_str());
      reset_connection(connection);
      g_object_unref(connection);
    }
  }
}

void PeerApp::on_welcome(const std::string& relay_ip, const wire::Welcome& welcome) {
  relay_ip_ = relay_ip;
  use_ice_servers(welcome.ice_servers());
  // Connect ahead of the first TCP connection, so that it finds the tunnel ready.
  if (config_.remote_peer && (!outgoing_ || outgoing_->closed())) start_outgoing_tunnel();
  hand_waiting_to_tunnel();
}

void PeerApp::use_ice_servers(
    const google::protobuf::RepeatedPtrField<wire::IceServer>& servers) {
  IceSession::Options options;
  options.force_relay = config_.force_relay;
  relay_labels_.clear();
  for (const auto& server : servers) {
    // An empty host means "the relay you are talking to".
    HostPort address{server.host().empty() ? config_.relay.host : server.host(),
                     static_cast<uint16_t>(server.port())};
    const std::string ip = server.host().empty() ? relay_ip_ : server.host();
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
        relay_labels_[HostPort{ip, address.port}.to_string()] = "turn-udp " + address.to_string();
        break;
      case wire::IceServer::TURN_TCP:
      case wire::IceServer::TURN_TLS: {
        const bool tls = server.kind() == wire::IceServer::TURN_TLS;
        if ((tls && !config_.turn_tls) || (!tls && !config_.turn_tcp)) break;
        TurnBridge* bridge = bridge_for(server, address);
        if (!bridge) break;
        options.turn_servers.push_back(
            {"127.0.0.1", bridge->port(), server.username(), server.password(), true});
        relay_labels_["127.0.0.1:" + std::to_string(bridge->port())] = bridge->label();
        break;
      }
      default:
        break;
    }
  }
  if (!config_.ice_addresses.empty()) {
    options.local_addresses = config_.ice_addresses;
  } else if (is_loopback_ip(relay_ip_)) {
    // A relay on loopback means every peer is on this machine (tests, demos): keep
    // ICE on loopback too instead of every interface.
    options.local_addresses = {relay_ip_};
  }
  log::debug("ice servers: stun %s:%u, %zu turn", options.stun_server.ip.c_str(),
             options.stun_server.port, options.turn_servers.size());
  ice_options_ = std::move(options);
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

std::string PeerApp::relay_label(const std::string& server) const {
  auto it = relay_labels_.find(server);
  return it == relay_labels_.end() ? "turn " + server : it->second;
}

void PeerApp::hand_waiting_to_tunnel() {
  if (!outgoing_) return;
  for (auto& waiting : waiting_) {
    outgoing_->forward(waiting.tcp, waiting.target);
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
    log::warn("cannot reach %s: no link to the relay %s after %d s",
              app->config_.remote_peer->c_str(), app->config_.relay_text.c_str(),
              kRelayWaitSeconds);
    reset_connection(it->tcp);
    g_object_unref(it->tcp);
    it = waiting.erase(it);
  }
  if (!waiting.empty()) return G_SOURCE_CONTINUE;
  app->waiting_timer_ = 0;
  return G_SOURCE_REMOVE;
}

void PeerApp::start_outgoing_tunnel() {
  if (!relay_ || !relay_->ready()) return;
  const uint64_t id = random_session_id();
  auto tunnel = make_tunnel(Tunnel::Role::kConnecting, id, *config_.remote_peer);
  outgoing_ = tunnel.get();
  tunnels_[id] = std::move(tunnel);
  log::info("connecting to %s via relay %s", config_.remote_peer->c_str(),
            config_.relay_text.c_str());
  outgoing_->start_outgoing(*config_.remote_peer);
  if (config_.pair_secret) {
    outgoing_->request_pairing(*config_.pair_secret, [this](bool ok, const std::string& detail) {
      pairing_finished(ok, detail);
    });
  }
}

std::unique_ptr<Tunnel> PeerApp::make_tunnel(Tunnel::Role role, uint64_t session_id,
                                             const std::string& label, const PublicKey* caller,
                                             bool pairing_only) {
  Tunnel::Hooks hooks;
  hooks.send_to_relay = [this](const wire::Envelope& envelope) {
    if (relay_) relay_->send(envelope);
  };
  hooks.on_closed = [this](Tunnel& tunnel, const std::string& reason) {
    tunnel_closed(tunnel, reason);
  };
  hooks.relay_label = [this](const std::string& server) { return relay_label(server); };
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
    hooks.on_established = [this, label](Tunnel& tunnel) {
      known_peers_.remember(label, tunnel.remote_key());
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
  return std::make_unique<Tunnel>(role, session_id, label, identity_, ice_options_,
                                  std::move(policy), std::move(hooks));
}

void PeerApp::on_session_message(const wire::Envelope& envelope) {
  if (envelope.has_incoming_session()) {
    const auto& incoming = envelope.incoming_session();
    if (config_.serves.empty()) {
      wire::Envelope refuse;
      refuse.mutable_close_session()->set_session_id(incoming.session_id());
      refuse.mutable_close_session()->set_reason(wire::CloseSession::REFUSED);
      refuse.mutable_close_session()->set_detail("this peer serves nothing");
      relay_->send(refuse);
      return;
    }
    if (tunnels_.count(incoming.session_id())) return;
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
      wire::Envelope refuse;
      refuse.mutable_close_session()->set_session_id(incoming.session_id());
      refuse.mutable_close_session()->set_reason(wire::CloseSession::REFUSED);
      refuse.mutable_close_session()->set_detail("this peer's key is not authorised there");
      relay_->send(refuse);
      return;
    }
    log::info("%s (%s) wants a tunnel%s", label.c_str(), incoming.caller_address().c_str(),
              pairing_only ? " (not authorised: pairing only)" : "");
    auto tunnel = make_tunnel(Tunnel::Role::kServing, incoming.session_id(), label, &caller,
                              pairing_only);
    Tunnel* raw = tunnel.get();
    tunnels_[incoming.session_id()] = std::move(tunnel);
    raw->start_incoming(incoming);
    return;
  }
  uint64_t id = 0;
  if (envelope.has_accept_session()) id = envelope.accept_session().session_id();
  else if (envelope.has_candidate()) id = envelope.candidate().session_id();
  else if (envelope.has_close_session()) id = envelope.close_session().session_id();
  auto it = tunnels_.find(id);
  if (it != tunnels_.end()) it->second->on_relay_message(envelope);
}

void PeerApp::tunnel_closed(Tunnel& tunnel, const std::string& reason) {
  if (&tunnel == outgoing_) {
    log::warn("%s: %s", tunnel.remote_label().c_str(), reason.c_str());
    outgoing_ = nullptr;
  } else {
    log::info("%s: %s", tunnel.remote_label().c_str(), reason.c_str());
  }
  // Destroyed from an idle callback: we are inside one of the tunnel's own calls.
  auto it = tunnels_.find(tunnel.session_id());
  if (it == tunnels_.end()) return;
  Tunnel* doomed = it->second.release();
  tunnels_.erase(it);
  g_idle_add_full(G_PRIORITY_DEFAULT, [](gpointer p) -> gboolean {
    delete static_cast<Tunnel*>(p);
    return G_SOURCE_REMOVE;
  }, doomed, nullptr);
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

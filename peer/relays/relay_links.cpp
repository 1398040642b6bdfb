#include "relays/relay_links.h"

#include "log.h"

namespace natfwd {
namespace {

bool is_loopback_ip(const std::string& ip) {
  GInetAddress* address = g_inet_address_new_from_string(ip.c_str());
  if (!address) return false;
  bool loopback = g_inet_address_get_is_loopback(address);
  g_object_unref(address);
  return loopback;
}

// --no-port-mapping: none; --port-mapping: the protocols named, in their fixed order.
std::unique_ptr<portmap::PortMapper> port_mapper_for(const PeerOptions& options) {
  using portmap::MapProtocol;
  std::vector<MapProtocol> protocols;
  if (options.map_pcp) protocols.push_back(MapProtocol::kPcp);
  if (options.map_nat_pmp) protocols.push_back(MapProtocol::kNatPmp);
  if (options.map_upnp) protocols.push_back(MapProtocol::kUpnp);
  if (!options.port_mapping || protocols.empty()) return nullptr;
  return std::make_unique<portmap::PortMapper>("", std::move(protocols));
}

}  // namespace

std::string RelayLink::turn_label(const std::string& server) const {
  auto it = labels.find(server);
  return it == labels.end() ? "turn " + server : it->second;
}

RelayLinks::RelayLinks(const PeerOptions& options, const Identity& identity, Events events)
    : options_(options),
      identity_(identity),
      events_(std::move(events)),
      port_mapper_(port_mapper_for(options)),
      known_relays_(options.state_dir + "/known_relays") {
  for (size_t i = 0; i < options_.relays.size(); ++i)
    links_.push_back(make_link(i, options_.relays[i]));
}

void RelayLinks::start() {
  for (auto& link : links_) link->client->start();
}

void RelayLinks::check_links() {
  for (auto& link : links_)
    if (link->refusal.empty()) link->client->check_link();
}

bool RelayLinks::any_ready() const {
  for (const auto& link : links_)
    if (link->ready()) return true;
  return false;
}

bool RelayLinks::all_unreachable() const {
  for (const auto& link : links_)
    if (link->client->unreachable().empty() && link->refusal.empty()) return false;
  return !links_.empty();
}

bool RelayLinks::all_refused_for_good() const {
  for (const auto& link : links_)
    if (link->refusal.empty()) return false;
  return true;
}

std::string RelayLinks::unreachable_text() const {
  std::string out;
  for (const auto& link : links_) {
    const std::string& why =
        link->refusal.empty() ? link->client->unreachable() : link->refusal;
    if (why.empty()) continue;
    if (!out.empty()) out += "; ";
    out += why;
  }
  return out;
}

std::string RelayLinks::text() const {
  std::string out;
  for (const auto& relay : options_.relays) {
    if (!out.empty()) out += ", ";
    out += relay.to_string();
  }
  return out;
}

RelayLink* RelayLinks::first_ready(size_t preferred, const std::set<size_t>& skip) {
  for (size_t i = 0; i < links_.size(); ++i) {
    RelayLink& link = *links_[(preferred + i) % links_.size()];
    if (link.ready() && !skip.contains(link.index)) return &link;
  }
  return nullptr;
}

std::unique_ptr<RelayLink> RelayLinks::make_link(size_t index, const HostPort& address) {
  auto link = std::make_unique<RelayLink>();
  link->index = index;
  link->address = address;
  RelayLink* raw = link.get();
  RelayClient::Callbacks callbacks;
  callbacks.on_welcome = [this, raw](const wire::Welcome& welcome, const std::string& relay_ip) {
    raw->ip = relay_ip;
    if (!raw->unpinned_spki.empty()) known_relays_.remember(raw->address, raw->unpinned_spki);
    ++raw->welcomes;
    raw->welcomed_us = g_get_monotonic_time();
    use_ice_servers(*raw, welcome.ice_servers());
    events_.on_welcome(*raw, welcome);
  };
  callbacks.on_registered = [this, raw](const wire::Registered& registered) {
    raw->publish_domain = registered.publish().domain();
    raw->front_door_key.reset();
    const std::string& key = registered.publish().relay_key();
    PublicKey front_door{};
    if (registered.has_publish() &&
        public_key_from_bytes(
            std::span(reinterpret_cast<const uint8_t*>(key.data()), key.size()), front_door))
      raw->front_door_key = front_door;
    events_.on_registered(*raw, registered);
  };
  callbacks.on_session_message = [this, raw](const wire::Envelope& envelope) {
    events_.on_session_message(*raw, envelope);
  };
  callbacks.on_disconnected = [this, raw](const std::string& reason, bool fatal_error) {
    events_.on_lost(*raw, reason, fatal_error);
  };
  callbacks.on_ice_servers = [this, raw](const wire::IceServersUpdate& update) {
    use_ice_servers(*raw, update.ice_servers());
  };
  ConnectOptions connect;
  connect.server = address;
  connect.http_proxy = options_.proxy;
  connect.tls = options_.relay_tls;
  connect.tls_check = [this, address, raw](X509* leaf,
                                            const std::string& spki) -> std::string {
    if (options_.relay_key) {
      const std::string presented = spki_fingerprint(spki);
      if (presented == *options_.relay_key) return "";
      return "relay " + address.to_string() + " presented key " + presented +
             ", not the --relay-key " + *options_.relay_key;
    }
    if (options_.relay_ca) return verify_with_ca_file(leaf, *options_.relay_ca, address.host);
    raw->unpinned_spki = spki;
    return known_relays_.check(address, spki);
  };
  link->client = std::make_unique<RelayClient>(connect, identity_, options_.name,
                                               std::move(callbacks));
  std::vector<wire::Publish> publishes;
  for (const PublishSpec& spec : options_.publishes) {
    wire::Publish publish;
    // https is TLS passed through by SNI, as tls is; this peer terminates it.
    publish.set_kind(spec.kind == PublishSpec::Kind::kTls || spec.kind == PublishSpec::Kind::kHttps
                         ? wire::Publish::TLS
                     : spec.kind == PublishSpec::Kind::kTcp ? wire::Publish::TCP
                                                            : wire::Publish::HTTP);
    publish.set_public_port(spec.public_port);
    publish.set_proxy_protocol(spec.proxy_protocol);
    publish.set_tls_at_home(spec.kind == PublishSpec::Kind::kHttps);
    publish.set_custom_domain(spec.custom_domain);
    for (const std::string& range : spec.allow_from) publish.add_allow_from(range);
    publish.set_host(spec.target.host);
    publish.set_port(spec.target.port);
    publishes.push_back(std::move(publish));
  }
  link->client->set_publishes(std::move(publishes));
  return link;
}

void RelayLinks::use_ice_servers(
    RelayLink& link, const google::protobuf::RepeatedPtrField<wire::IceServer>& servers) {
  IceSession::Options options;
  options.force_relay = options_.force_relay;
  options.punch = options_.punch && !options_.force_relay;
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
        if (!ip_known || !options_.turn_udp) break;  // libnice needs an IP; behind a proxy UDP is moot anyway
        options.turn_servers.push_back(
            {ip, address.port, server.username(), server.password(), false});
        link.labels[HostPort{ip, address.port}.to_string()] = "turn-udp " + address.to_string();
        break;
      case wire::IceServer::TURN_TCP:
      case wire::IceServer::TURN_TLS: {
        const bool tls = server.kind() == wire::IceServer::TURN_TLS;
        if ((tls && !options_.turn_tls) || (!tls && !options_.turn_tcp)) break;
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
  if (!options_.ice_addresses.empty()) {
    options.local_addresses = options_.ice_addresses;
  } else if (is_loopback_ip(link.ip)) {
    // A relay on loopback means every peer is on this machine (tests, demos): keep
    // ICE on loopback too instead of every interface.
    options.local_addresses = {link.ip};
  }
  // A relay on loopback is a test or a demo on this machine: its gateway has nothing
  // to do with it, and tests send nothing beyond what they built.
  if (!is_loopback_ip(link.ip) && port_mapper_) {
    options.port_mapper = port_mapper_.get();
    port_mapper_->prepare();
  }
  log::debug("ice servers of relay %s: stun %s:%u, %zu turn", link.address.to_string().c_str(),
             options.stun_server.ip.c_str(), options.stun_server.port,
             options.turn_servers.size());
  link.ice_options = std::move(options);
}

TurnBridge* RelayLinks::bridge_for(const wire::IceServer& server, const HostPort& address) {
  const bool tls = server.kind() == wire::IceServer::TURN_TLS;
  const std::string label = (tls ? "turn-tls " : "turn-tcp ") + address.to_string();
  auto& bridge = bridges_[label];
  if (bridge) return bridge.get();
  ConnectOptions upstream;
  upstream.server = address;
  upstream.http_proxy = options_.proxy;
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

}  // namespace natfwd

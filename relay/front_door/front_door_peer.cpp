#include "front_door/front_door_peer.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include "log.h"
#include "socket_buffers.h"
#include "state_dir.h"

namespace natfwd::relay::front_door {
namespace {

// As often as the peer checks its tunnels (peer_app.cpp): a home peer that went
// silent gets a path restart, as for any connecting peer.
constexpr guint kHealthCheckMs = 250;

Micros monotonic_now() { return Micros{g_get_monotonic_time()}; }

bool is_wildcard(const std::string& ip) { return ip == "0.0.0.0" || ip == "::"; }

}  // namespace

std::vector<std::string> front_door_ice_addresses(const std::string& listen_ip) {
  if (!is_wildcard(listen_ip)) return {listen_ip};
  // Every address of the host, loopback too (a home peer on this machine), but not
  // IPv6 link-local ones, which need a scope no candidate carries.
  std::vector<std::string> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* entry = list; entry; entry = entry->ifa_next) {
    if (!entry->ifa_addr) continue;
    char text[INET6_ADDRSTRLEN] = {};
    if (entry->ifa_addr->sa_family == AF_INET && listen_ip == "0.0.0.0") {
      inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(entry->ifa_addr)->sin_addr, text,
                sizeof text);
    } else if (entry->ifa_addr->sa_family == AF_INET6 && listen_ip == "::") {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(entry->ifa_addr);
      if (IN6_IS_ADDR_LINKLOCAL(&in6->sin6_addr)) continue;
      inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    } else {
      continue;
    }
    out.emplace_back(text);
  }
  freeifaddrs(list);
  return out;
}

HostPort front_door_rendezvous(const HostPort& listen) {
  if (listen.host == "0.0.0.0") return {"127.0.0.1", listen.port};
  if (listen.host == "::") return {"::1", listen.port};
  return listen;
}

Identity FrontDoorPeer::load_identity(const std::string& relay_state_dir) {
  return Identity::load_or_create(state_dir_of(relay_state_dir));
}

FrontDoorPeer::FrontDoorPeer(Identity identity, const HostPort& rendezvous,
                             std::vector<std::string> ice_addresses,
                             const std::string& state_dir)
    : options_([&] {
        PeerOptions options;
        options.relays = {rendezvous};
        // Its own rendezvous on its own host: nothing on the way to encrypt against.
        options.relay_tls = false;
        options.state_dir = state_dir;
        options.ice_addresses = std::move(ice_addresses);
        // The relay has a public address: no gateway to ask for a mapping.
        options.port_mapping = false;
        return options;
      }()),
      identity_(std::move(identity)),
      known_peers_(state_dir + "/known_peers"),
      relays_(options_, identity_, relay_events()) {}

FrontDoorPeer::~FrontDoorPeer() = default;

RelayLinks::Events FrontDoorPeer::relay_events() {
  RelayLinks::Events events;
  events.on_welcome = [this](RelayLink&, const wire::Welcome&) {
    for (auto& [name, remote] : remotes_) remote->on_relay_welcome();
  };
  events.on_registered = [](RelayLink&, const wire::Registered&) {};
  events.on_session_message = [this](RelayLink& link, const wire::Envelope& envelope) {
    // It registers no name, so nobody can open a session to it: only the answers to
    // its own sessions come.
    router_.deliver(link, envelope);
  };
  events.on_lost = [this](RelayLink& link, const std::string& reason, bool fatal) {
    log::warn("publishing front door: %s%s", reason.c_str(), fatal ? "" : "; reconnecting");
    router_.relay_lost(link, "the front door's link to its relay was lost");
  };
  return events;
}

void FrontDoorPeer::start() {
  relays_.start();
  health_timer_.reset(g_timeout_add(kHealthCheckMs, on_health_check, this));
}

void FrontDoorPeer::forward(const std::string& name, const PublicKey& key,
                            GSocketConnection* tcp, const HostPort& target,
                            std::string first_bytes, OpenResultHandler on_result,
                            std::shared_ptr<TrafficMeter> meter) {
  const std::string id = key_id(key);
  auto it = remotes_.find(name);
  if (it != remotes_.end() && it->second->options().key_id != id) {
    // The name went to another key (`relay names release`): the old tunnel is not it.
    it->second->close_all("'" + name + "' is registered with another key now");
    remotes_.erase(it);
    it = remotes_.end();
  }
  if (it == remotes_.end()) {
    RemotePeerOptions remote;
    remote.name = name;
    remote.key_id = id;  // pinned: the key the rendezvous holds for the name now
    RemotePeer::Context context{identity_, relays_, router_, known_peers_,
                                [](const HostPort&) {
                                  // Nobody connects to the front door.
                                  return StreamDecision{wire::StreamOpenResult::NOT_SERVED,
                                                        "the front door serves nothing"};
                                },
                                [](bool, const std::string&) {}};
    it = remotes_.emplace(name, std::make_unique<RemotePeer>(remote, std::nullopt, context)).first;
  }
  // A visitor's download leaves the relay on this connection, the one kernel-TCP leg of
  // its path: with loss, CUBIC (the usual default) holds it to ~1 MB/s whatever the
  // tunnel to home carries (socket_buffers.h; `scripts/bench publish`).
  if (GSocket* socket = g_socket_connection_get_socket(tcp)) prefer_bbr(g_socket_get_fd(socket));
  it->second->forward_connection(tcp, target, std::move(on_result), std::move(first_bytes),
                                 std::move(meter));
}

gboolean FrontDoorPeer::on_health_check(gpointer self) {
  auto* door = static_cast<FrontDoorPeer*>(self);
  return guard_callback("front door health check", G_SOURCE_CONTINUE, [door] {
    const Micros now = monotonic_now();
    const bool after_change = door->health_.after_network_change(now);
    for (auto& [name, remote] : door->remotes_)
      remote->check_health(door->health_, now, after_change);
    return G_SOURCE_CONTINUE;
  });
}

void FrontDoorPeer::shutdown() {
  for (auto& [name, remote] : remotes_) remote->close_all("relay shutting down");
}

}  // namespace natfwd::relay::front_door

// PeerApp's everyday-use surface: the -D SOCKS listeners, the control socket and the
// snapshot `peer status` shows.
#include "forward/tcp_listener.h"
#include "log.h"
#include "peer_app.h"

namespace natfwd {

bool PeerApp::start_socks_and_control() {
  for (auto& remote : remotes_) {
    for (const HostPort& listen : remote->options().socks) {
      TcpListenResult listening = listen_tcp(listen);
      if (!listening.socket) {
        log::error("-D %s: %s", listen.to_string().c_str(), listening.error.c_str());
        exit_code_ = listening.bad_address ? 2 : 1;
        return false;
      }
      RemotePeer* to = remote.get();
      auto forward = [to](GSocketConnection* tcp, const HostPort& target, OpenResultHandler done) {
        to->forward_connection(tcp, target, std::move(done));
      };
      socks_listeners_.emplace_back(
          std::make_unique<SocksListener>(listening.socket, listening.bound, std::move(forward)),
          remote->name());
      log::ready("listening on %s -> %s socks", listening.bound.c_str(), remote->name().c_str());
    }
  }
  std::string error;
  control_ = ControlServer::open(
      options_.state_dir, [this](const std::string& request) { return answer_control(request); },
      error);
  // Not fatal: forwarding works without it, only `peer status` does not.
  if (!control_) log::warn("no control socket: %s", error.c_str());
  return true;
}

std::string PeerApp::answer_control(const std::string& request) const {
  std::vector<std::string> words;
  std::string error;
  if (!parse_control_request(request, words, error)) return "error: " + error + "\n";
  if (words.size() == 2 && words[0] == "status" && words[1] == "json")
    return status_json(status()) + "\n";
  if (words.size() == 2 && words[0] == "status" && words[1] == "text") return status_text(status());
  return "error: unknown control command '" + request + "'\n";
}

PeerStatus PeerApp::status() const {
  PeerStatus status;
  status.key_id = key_id(identity_.public_key());
  status.relay = options_.relays.front().to_string();
  for (const auto& link : relays_.all()) {
    status.relays.push_back({link->address.to_string(), link->ready(), link->registered});
    status.relay_up = status.relay_up || link->ready();
  }
  if (serving_.announced() && options_.name) status.registered_name = options_.name;
  for (const auto& serve : options_.serves) status.serves.push_back(serve.target.to_string());
  if (const RemotePeerOptions* first = options_.first_remote()) status.remote_peer = first->name;
  for (const auto& remote : remotes_) status.remote_peers.push_back(remote->name());
  for (const auto& listener : listeners_)
    status.listeners.push_back({listener->bound(), "forward", listener->spec().target.to_string(),
                                listener->peer()});
  for (const auto& [socks, peer] : socks_listeners_)
    status.listeners.push_back({socks->bound(), "socks", "", peer});
  for (const auto& remote : remotes_) remote->append_status(status.tunnels);
  incoming_.append_status(status.tunnels);
  status.uptime_s = static_cast<double>(g_get_monotonic_time() - started_us_) / 1e6;
  return status;
}

}  // namespace natfwd

// PeerApp's everyday-use surface: the -D SOCKS listeners, the control socket and the
// snapshot `peer status` shows.
#include <sys/socket.h>
#include <unistd.h>

#include "forward/tcp_listener.h"
#include "log.h"
#include "peer_app.h"
#include "rendezvous.pb.h"

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
      CarriedConnections* carrier = carrier_of(*remote);
      auto forward = [to, carrier](GSocketConnection* tcp, const HostPort& target,
                                   OpenResultHandler done) {
        if (carrier) carrier->forward(tcp, target, std::move(done));
        else to->forward_connection(tcp, target, std::move(done));
      };
      socks_listeners_.emplace_back(
          std::make_unique<SocksListener>(listening.socket, listening.bound, std::move(forward)),
          remote->name());
      log::ready("listening on %s -> %s socks", listening.bound.c_str(), remote->name().c_str());
    }
  }
  if (!carriers_.empty()) return true;  // the running peer's control socket stays its own
  std::string error;
  control_ = ControlServer::open(
      options_.state_dir, [this](const std::string& request) { return answer_control(request); },
      [this](int fd, const std::string& request) { return carry_for_control(fd, request); },
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
  if (words.size() == 2 && words[0] == "carries")
    return remote_for_control(words[1]) ? "yes\n"
                                        : "no-tunnel: this peer keeps no tunnel to " + words[1] + "\n";
  return "error: unknown control command '" + request + "'\n";
}

bool PeerApp::carry_for_control(int fd, const std::string& request) {
  std::vector<std::string> words;
  std::string error;
  if (!parse_control_request(request, words, error) || words.empty() || words[0] != "connect")
    return false;
  // A short blocking write of one line to a fresh socket: the buffer takes it.
  auto answer_and_close = [fd](const std::string& line) {
    if (send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
      log::debug("control: the client left before its answer");
    close(fd);
    return true;
  };
  const bool with_status = words.size() == 4 && words[3] == "status";
  if (words.size() != 3 && !with_status)
    return answer_and_close("error: connect takes NAME HOST:PORT [status]\n");
  auto target = parse_host_port(words[2]);
  if (auto* problem = std::get_if<std::string>(&target))
    return answer_and_close("error: " + words[2] + ": " + *problem + "\n");
  RemotePeer* remote = remote_for_control(words[1]);
  if (!remote)
    return answer_and_close("no-tunnel: this peer keeps no tunnel to " + words[1] + "\n");
  GError* raw_error = nullptr;
  GObjectPtr<GSocket> socket(g_socket_new_from_fd(fd, &raw_error));
  GErrorPtr socket_error(raw_error);
  if (!socket) return answer_and_close("error: " + std::string(socket_error->message) + "\n");
  GObjectPtr<GSocketConnection> connection(
      g_socket_connection_factory_create_connection(socket.get()));
  log::debug("control: carrying a connection to %s via %s", words[2].c_str(), words[1].c_str());
  // The answer goes out before any byte of the stream: the handler runs when the
  // serving peer answers the stream open, before the bridge passes data on.
  std::shared_ptr<GSocket> held = ref_object(socket.get());
  remote->forward_connection(
      connection.get(), std::get<HostPort>(target),
      [held, with_status](int status, const std::string& detail) {
        if (status == kStreamBroken) return;  // after "ok": the client sees the reset
        const std::string error = with_status ? "error " + std::to_string(status) + ": "
                                              : std::string("error: ");
        const std::string line = status == wire::StreamOpenResult::OK
                                     ? std::string("ok\n")
                                     : error + open_result_text(status, detail) + "\n";
        g_socket_send(held.get(), line.data(), line.size(), nullptr, nullptr);
      });
  return true;
}

RemotePeer* PeerApp::remote_for_control(const std::string& peer) const {
  // NAME, or NAME@KEYID: then only a tunnel pinned to that very key will do.
  const auto at = peer.find('@');
  const std::string name = peer.substr(0, at);
  const std::optional<std::string> key_id =
      at == std::string::npos ? std::nullopt : std::optional(peer.substr(at + 1));
  for (const auto& candidate : remotes_)
    if (candidate->name() == name && (!key_id || candidate->options().key_id == key_id))
      return candidate.get();
  return nullptr;
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
  status.publishes = serving_.publish_status();
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

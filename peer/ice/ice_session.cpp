#include "ice/ice_session.h"

#include <sys/socket.h>

#include "log.h"

namespace natfwd {
namespace {

constexpr guint kComponent = 1;
// Datagrams held while no pair is selected: enough for QUIC's first flight and a few
// retransmissions; older ones are dropped (QUIC recovers them).
constexpr size_t kMaxPendingDatagrams = 256;
// NOTES-transport.md: libnice leaves UDP buffers at ~208 KiB; QUIC needs a few MiB.
constexpr int kSocketBufferBytes = 8 << 20;

const char* candidate_type_name(NiceCandidateType type) {
  switch (type) {
    case NICE_CANDIDATE_TYPE_HOST: return "host";
    case NICE_CANDIDATE_TYPE_SERVER_REFLEXIVE: return "srflx";
    case NICE_CANDIDATE_TYPE_PEER_REFLEXIVE: return "prflx";
    case NICE_CANDIDATE_TYPE_RELAYED: return "relay";
  }
  return "unknown";
}

std::string candidate_address(const NiceCandidate* candidate) {
  gchar text[NICE_ADDRESS_STRING_LEN];
  nice_address_to_string(&candidate->addr, text);
  std::string host = text;
  std::string port = std::to_string(nice_address_get_port(&candidate->addr));
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + port;
  return host + ":" + port;
}

}  // namespace

std::string SelectedPath::describe() const {
  if (relayed) return "relayed " + transport + " " + local_type + " " + local_address +
                      " <-> " + remote_type + " " + remote_address;
  return "direct " + transport + " " + local_type + " " + local_address + " <-> " +
         remote_type + " " + remote_address;
}

IceSession::IceSession(const Options& options, Callbacks callbacks)
    : options_(options), callbacks_(std::move(callbacks)) {
  // Regular nomination: with aggressive nomination libnice ignores remote ICE-TCP
  // candidates that trickle in after checks started ("conncheck has started already
  // in aggressive mode"), which lost the only working pair when UDP is blocked.
  agent_ = nice_agent_new_full(
      g_main_context_default(), NICE_COMPATIBILITY_RFC5245,
      static_cast<NiceAgentOption>(NICE_AGENT_OPTION_ICE_TRICKLE |
                                   NICE_AGENT_OPTION_REGULAR_NOMINATION));
  // Every default that matters is set explicitly: Debian's libnice has UPnP on.
  g_object_set(agent_, "controlling-mode", options_.controlling ? TRUE : FALSE, "upnp", FALSE,
               "ice-udp", options_.udp ? TRUE : FALSE, "ice-tcp", options_.tcp ? TRUE : FALSE,
               nullptr);
  if (!options_.stun_server.ip.empty())
    g_object_set(agent_, "stun-server", options_.stun_server.ip.c_str(), "stun-server-port",
                 static_cast<guint>(options_.stun_server.port), nullptr);
  for (const auto& ip : options_.local_addresses) {
    NiceAddress address;
    nice_address_init(&address);
    if (nice_address_set_from_string(&address, ip.c_str()))
      nice_agent_add_local_address(agent_, &address);
  }
  if (options_.force_relay) g_object_set(agent_, "force-relay", TRUE, nullptr);
  stream_id_ = nice_agent_add_stream(agent_, 1);
  nice_agent_set_stream_name(agent_, stream_id_, "application");
  for (const auto& turn : options_.turn_servers) {
    nice_agent_set_relay_info(agent_, stream_id_, kComponent, turn.ip.c_str(), turn.port,
                              turn.username.c_str(), turn.password.c_str(),
                              turn.tcp ? NICE_RELAY_TYPE_TURN_TCP : NICE_RELAY_TYPE_TURN_UDP);
  }
  // Attach the receive callback before gathering, or checks never complete.
  nice_agent_attach_recv(agent_, stream_id_, kComponent, g_main_context_default(),
                         on_recv_trampoline, this);
  signal_handlers_ = {
      g_signal_connect(agent_, "new-candidate-full", G_CALLBACK(on_new_candidate_trampoline),
                       this),
      g_signal_connect(agent_, "candidate-gathering-done",
                       G_CALLBACK(on_gathering_done_trampoline), this),
      g_signal_connect(agent_, "component-state-changed",
                       G_CALLBACK(on_state_changed_trampoline), this),
      g_signal_connect(agent_, "new-selected-pair-full",
                       G_CALLBACK(on_selected_pair_trampoline), this),
      g_signal_connect(agent_, "reliable-transport-writable",
                       G_CALLBACK(on_writable_trampoline), this),
  };
}

IceSession::~IceSession() {
  for (gulong handler : signal_handlers_) g_signal_handler_disconnect(agent_, handler);
  nice_agent_attach_recv(agent_, stream_id_, kComponent, g_main_context_default(), nullptr,
                         nullptr);
  nice_agent_remove_stream(agent_, stream_id_);
  // Closing the agent asynchronously lets libnice free TURN allocations and sockets
  // cleanly; the unref then drops our reference.
  nice_agent_close_async(agent_, nullptr, nullptr);
  g_object_unref(agent_);
}

std::pair<std::string, std::string> IceSession::local_credentials() const {
  gchar* ufrag = nullptr;
  gchar* pwd = nullptr;
  nice_agent_get_local_credentials(agent_, stream_id_, &ufrag, &pwd);
  std::pair<std::string, std::string> out{ufrag ? ufrag : "", pwd ? pwd : ""};
  g_free(ufrag);
  g_free(pwd);
  return out;
}

void IceSession::start_gathering() {
  if (!nice_agent_gather_candidates(agent_, stream_id_)) {
    failed_ = true;
    if (callbacks_.on_failed) callbacks_.on_failed("cannot gather ICE candidates");
  }
}

void IceSession::set_remote_credentials(const std::string& ufrag, const std::string& pwd) {
  nice_agent_set_remote_credentials(agent_, stream_id_, ufrag.c_str(), pwd.c_str());
}

bool IceSession::add_remote_candidate(const std::string& sdp) {
  NiceCandidate* candidate = nice_agent_parse_remote_candidate_sdp(agent_, stream_id_,
                                                                   sdp.c_str());
  if (!candidate) return false;
  GSList* list = g_slist_append(nullptr, candidate);
  int added = nice_agent_set_remote_candidates(agent_, stream_id_, kComponent, list);
  g_slist_free_full(list, reinterpret_cast<GDestroyNotify>(nice_candidate_free));
  return added >= 0;
}

void IceSession::remote_gathering_done() {
  nice_agent_peer_candidate_gathering_done(agent_, stream_id_);
}

bool IceSession::send(std::span<const std::byte> datagram) {
  if (failed_) return true;  // dropped; the owner is tearing down
  if (!selected_) {
    if (pending_.size() >= kMaxPendingDatagrams) pending_.pop_front();
    pending_.emplace_back(datagram.begin(), datagram.end());
    return true;
  }
  return send_now(datagram);
}

bool IceSession::send_now(std::span<const std::byte> datagram) {
  GOutputVector vector{datagram.data(), datagram.size()};
  NiceOutputMessage message{&vector, 1};
  GError* error = nullptr;
  gint sent = nice_agent_send_messages_nonblocking(agent_, stream_id_, kComponent, &message, 1,
                                                   nullptr, &error);
  if (sent >= 1) return true;
  if (error && g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) {
    g_error_free(error);
    return false;
  }
  // Any other error (a route gone, a closed TCP pair): drop it; QUIC retransmits, and
  // ICE reports a failed component if the path is really dead.
  if (error) {
    log::debug("ice send failed: %s", error->message);
    g_error_free(error);
  }
  return true;
}

void IceSession::on_recv_trampoline(NiceAgent*, guint, guint, guint length, gchar* data,
                                    gpointer self) {
  auto* session = static_cast<IceSession*>(self);
  if (session->callbacks_.on_datagram)
    session->callbacks_.on_datagram(
        std::span(reinterpret_cast<const std::byte*>(data), length));
}

void IceSession::on_new_candidate_trampoline(NiceAgent* agent, NiceCandidate* candidate,
                                             gpointer self) {
  auto* session = static_cast<IceSession*>(self);
  if (candidate->stream_id != session->stream_id_) return;
  gchar* sdp = nice_agent_generate_local_candidate_sdp(agent, candidate);
  if (sdp && session->callbacks_.on_local_candidate) session->callbacks_.on_local_candidate(sdp);
  g_free(sdp);
}

void IceSession::on_gathering_done_trampoline(NiceAgent*, guint stream, gpointer self) {
  auto* session = static_cast<IceSession*>(self);
  if (stream == session->stream_id_ && session->callbacks_.on_gathering_done)
    session->callbacks_.on_gathering_done();
}

void IceSession::on_state_changed_trampoline(NiceAgent*, guint stream, guint, guint state,
                                             gpointer self) {
  auto* session = static_cast<IceSession*>(self);
  if (stream != session->stream_id_) return;
  log::debug("ice state: %s", nice_component_state_to_string(static_cast<NiceComponentState>(state)));
  if (state == NICE_COMPONENT_STATE_FAILED && !session->failed_) {
    session->failed_ = true;
    if (session->callbacks_.on_failed)
      session->callbacks_.on_failed("ICE failed: no candidate pair works");
  }
}

void IceSession::on_selected_pair_trampoline(NiceAgent*, guint stream, guint,
                                             NiceCandidate* local, NiceCandidate* remote,
                                             gpointer self) {
  auto* session = static_cast<IceSession*>(self);
  if (stream == session->stream_id_) session->handle_selected_pair(local, remote);
}

void IceSession::on_writable_trampoline(NiceAgent*, guint stream, guint, gpointer self) {
  auto* session = static_cast<IceSession*>(self);
  if (stream != session->stream_id_) return;
  while (!session->pending_.empty()) {
    if (!session->send_now(session->pending_.front())) return;
    session->pending_.pop_front();
  }
  if (session->callbacks_.on_writable) session->callbacks_.on_writable();
}

void IceSession::handle_selected_pair(NiceCandidate* local, NiceCandidate* remote) {
  SelectedPath path;
  path.relayed = local->type == NICE_CANDIDATE_TYPE_RELAYED ||
                 remote->type == NICE_CANDIDATE_TYPE_RELAYED;
  path.transport = local->transport == NICE_CANDIDATE_TRANSPORT_UDP ? "udp" : "tcp";
  path.local_type = candidate_type_name(local->type);
  path.remote_type = candidate_type_name(remote->type);
  path.local_address = candidate_address(local);
  NiceCandidate* live_local = nullptr;
  NiceCandidate* live_remote = nullptr;
  // The signal hands us copies, and libnice 0.1.21's copies drop the TURN server
  // (nice_candidate_relay_address would crash on them): ask for the agent's own.
  if (local->type == NICE_CANDIDATE_TYPE_RELAYED &&
      nice_agent_get_selected_pair(agent_, stream_id_, kComponent, &live_local, &live_remote) &&
      live_local && live_local->type == NICE_CANDIDATE_TYPE_RELAYED) {
    NiceAddress server;
    nice_address_init(&server);
    nice_candidate_relay_address(live_local, &server);
    gchar text[NICE_ADDRESS_STRING_LEN];
    nice_address_to_string(&server, text);
    path.local_relay_server = std::string(text) + ":" + std::to_string(nice_address_get_port(&server));
  }
  path.remote_address = candidate_address(remote);
  const bool first = !selected_;
  selected_ = true;
  tune_socket_buffers();
  if (callbacks_.on_selected_pair) callbacks_.on_selected_pair(path);
  if (first) {
    // The controlled side may have queued QUIC datagrams before it had a pair.
    while (!pending_.empty()) {
      if (!send_now(pending_.front())) break;
      pending_.pop_front();
    }
  }
}

void IceSession::tune_socket_buffers() {
  // NULL for TCP pairs (NOTES-transport.md); then the kernel's TCP autotuning applies.
  GSocket* socket = nice_agent_get_selected_socket(agent_, stream_id_, kComponent);
  if (!socket) return;
  int fd = g_socket_get_fd(socket);
  for (int option : {SO_RCVBUF, SO_SNDBUF}) {
    int force = option == SO_RCVBUF ? SO_RCVBUFFORCE : SO_SNDBUFFORCE;
    // Beyond net.core.[rw]mem_max only the *FORCE variants (CAP_NET_ADMIN) work; try
    // them first and fall back quietly.
    if (setsockopt(fd, SOL_SOCKET, force, &kSocketBufferBytes, sizeof kSocketBufferBytes) != 0)
      setsockopt(fd, SOL_SOCKET, option, &kSocketBufferBytes, sizeof kSocketBufferBytes);
  }
  g_object_unref(socket);
}

}  // namespace natfwd

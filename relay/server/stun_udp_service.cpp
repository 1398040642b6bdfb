#include "server/stun_udp_service.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <exception>

#include "log.h"
#include "net/datagrams.h"
#include "net/socket_address.h"
#include "server/turn_service.h"
#include "stun/turn_framing.h"

namespace natfwd::relay {

StunUdpService::StunUdpService(GSocket* socket, std::string software, TurnService* turn,
                               const std::optional<DiscoverySockets>& discovery, Reads reads)
    : responder_(std::move(software),
                 discovery ? std::optional(discovery->addresses) : std::nullopt),
      turn_(turn) {
  add_listener(socket, {0, 0}, reads != Reads::kDiscovery);
  if (discovery)
    for (int ip = 0; ip < 2; ++ip)
      for (int port = 0; port < 2; ++port)
        if (ip || port)
          add_listener(discovery->by_ip_port[ip][port], {ip, port}, reads != Reads::kMain);
}

StunUdpService::~StunUdpService() {
  for (auto& listener : listeners_) listener->read_source.reset();  // before the sockets go
}

void StunUdpService::add_listener(GSocket* socket, stun::ServerEndpoint endpoint, bool read) {
  auto listener = std::make_unique<Listener>();
  listener->service = this;
  listener->endpoint = endpoint;
  listener->socket.reset(G_SOCKET(g_object_ref(socket)));
  g_socket_set_blocking(socket, FALSE);
  if (!read) {
    listeners_.push_back(std::move(listener));
    return;
  }
  listener->read_source.reset(g_socket_create_source(socket, G_IO_IN, nullptr));
  g_source_set_callback(listener->read_source.get(), G_SOURCE_FUNC(on_readable_trampoline),
                        listener.get(), nullptr);
  keep_polled_while_dispatched(listener->read_source.get());
  g_source_attach(listener->read_source.get(), g_main_context_get_thread_default());
  listeners_.push_back(std::move(listener));
}

GSocket* StunUdpService::socket_at(stun::ServerEndpoint endpoint) const {
  for (const auto& listener : listeners_)
    if (listener->endpoint == endpoint) return listener->socket.get();
  return listeners_.front()->socket.get();
}

gboolean StunUdpService::on_readable_trampoline(GSocket*, GIOCondition, gpointer data) {
  auto* listener = static_cast<Listener*>(data);
  guard_callback("stun/udp", [listener] { listener->service->on_readable(*listener); });
  return G_SOURCE_CONTINUE;
}

void StunUdpService::on_readable(Listener& listener) {
  // The relayed datagrams of this burst go out together when it is handled.
  std::optional<TurnService::BatchedSends> batched;
  if (turn_) batched.emplace(*turn_);
  reader_.read(
      g_socket_get_fd(listener.socket.get()), kMaxDatagramsPerWakeup, "stun/udp",
      [&](std::span<const std::byte> datagram, const sockaddr_storage& from,
          socklen_t from_length) {
        handle_datagram(datagram, from, from_length, listener.endpoint);
        return true;
      });
}

void StunUdpService::handle_datagram(std::span<const std::byte> datagram,
                                     const sockaddr_storage& from, socklen_t from_length,
                                     stun::ServerEndpoint on) {
  const auto sender = net::to_transport_address(from);
  // RFC 7983 demultiplexing: 01 is ChannelData; STUN methods other than Binding
  // (Allocate, Send, ...) belong to TURN. Without TURN (--no-turn) they get no service.
  const bool channel_data = turn::looks_like_channel_data(datagram);
  const bool turn_method =
      datagram.size() >= 2 && !channel_data &&
      stun::method_of(static_cast<uint16_t>((std::to_integer<uint16_t>(datagram[0]) << 8) |
                                            std::to_integer<uint16_t>(datagram[1]))) !=
          stun::method::kBinding;
  if (channel_data || turn_method) {
    // TURN lives on the main socket only; the discovery sockets answer Binding.
    if (!turn_ || on != stun::ServerEndpoint{}) {
      log::debug("stun/udp: TURN is off; ignored %zu bytes from %s", datagram.size(),
                 sender.to_string().c_str());
      return;
    }
    const auto verdict = turn_->on_udp_message(datagram, sender);
    if (verdict.verdict == turn::TurnServer::Verdict::kMalformed && stats_)
      stats_->error("turn_malformed");
    if (verdict.verdict == turn::TurnServer::Verdict::kMalformed)
      log::warn_limited("stun-garbage", "turn/udp: dropped %zu bytes from %s: %.*s",
                        datagram.size(), sender.to_string().c_str(),
                        static_cast<int>(verdict.reason.size()), verdict.reason.data());
    return;
  }
  auto result = responder_.handle(datagram, sender, on);
  switch (result.outcome) {
    case stun::BindingResponder::Outcome::kDrop:
      if (stats_) stats_->error("stun_malformed");
      log::warn_limited("stun-garbage", "stun/udp: dropped %zu bytes from %s: %.*s",
                        datagram.size(), sender.to_string().c_str(),
                        static_cast<int>(result.reason.size()), result.reason.data());
      return;
    case stun::BindingResponder::Outcome::kIgnore:
      log::debug("stun/udp: ignored message from %s: %.*s", sender.to_string().c_str(),
                 static_cast<int>(result.reason.size()), result.reason.data());
      return;
    case stun::BindingResponder::Outcome::kRespond:
      if (stats_) ++stats_->stun_binding_requests;
      break;
  }
  // The answering socket (RFC 5780: maybe another address or port) has the same family
  // as the one the request came in on.
  const ssize_t sent =
      sendto(g_socket_get_fd(socket_at(result.send_from)), result.response.data(),
             result.response.size(), MSG_DONTWAIT, reinterpret_cast<const sockaddr*>(&from),
             from_length);
  if (sent < 0) {
    log::warn_limited("stun-send", "stun/udp: send to %s: %s", sender.to_string().c_str(),
                      std::strerror(errno));
    return;
  }
  log::debug("stun/udp: binding response to %s", sender.to_string().c_str());
}

}  // namespace natfwd::relay

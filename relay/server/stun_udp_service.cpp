#include "server/stun_udp_service.h"

#include <exception>

#include "log.h"
#include "server/socket_address.h"
#include "server/turn_service.h"
#include "turn/framing.h"

namespace natfwd::relay {

StunUdpService::StunUdpService(GSocket* socket, std::string software, TurnService* turn)
    : socket_(G_SOCKET(g_object_ref(socket))), responder_(std::move(software)), turn_(turn) {
  g_socket_set_blocking(socket_.get(), FALSE);
  read_source_.reset(g_socket_create_source(socket_.get(), G_IO_IN, nullptr));
  g_source_set_callback(read_source_.get(), G_SOURCE_FUNC(on_readable_trampoline), this,
                        nullptr);
  g_source_attach(read_source_.get(), nullptr);
}

StunUdpService::~StunUdpService() {
  read_source_.reset();  // before the socket goes
}

gboolean StunUdpService::on_readable_trampoline(GSocket*, GIOCondition, gpointer self) {
  try {
    static_cast<StunUdpService*>(self)->on_readable();
  } catch (const std::exception& e) {
    log::error("stun/udp: %s", e.what());
  }
  return G_SOURCE_CONTINUE;
}

void StunUdpService::on_readable() {
  for (int i = 0; i < kMaxDatagramsPerWakeup; ++i) {
    GSocketAddress* from = nullptr;
    GError* raw_error = nullptr;
    const gssize n = g_socket_receive_from(socket_.get(), &from,
                                           reinterpret_cast<gchar*>(buffer_.data()),
                                           buffer_.size(), nullptr, &raw_error);
    GObjectPtr<GSocketAddress> from_owned(from);
    if (n < 0) {
      GErrorPtr error(raw_error);
      // ICMP errors from earlier sends surface here (ECONNREFUSED); not ours to fix.
      if (!g_error_matches(error.get(), G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        log::debug("stun/udp: receive: %s", error->message);
      return;
    }
    handle_datagram(std::span(buffer_).first(static_cast<size_t>(n)), from);
  }
}

void StunUdpService::handle_datagram(std::span<const std::byte> datagram, GSocketAddress* from) {
  const auto sender = to_transport_address(from);
  // RFC 7983 demultiplexing: 01 is ChannelData; STUN methods other than Binding
  // (Allocate, Send, ...) belong to TURN. Without TURN (--no-turn) they get no service.
  const bool channel_data = turn::looks_like_channel_data(datagram);
  const bool turn_method =
      datagram.size() >= 2 && !channel_data &&
      stun::method_of(static_cast<uint16_t>((std::to_integer<uint16_t>(datagram[0]) << 8) |
                                            std::to_integer<uint16_t>(datagram[1]))) !=
          stun::method::kBinding;
  if (channel_data || turn_method) {
    if (!turn_) {
      log::debug("stun/udp: TURN is off; ignored %zu bytes from %s", datagram.size(),
                 sender.to_string().c_str());
      return;
    }
    const auto verdict = turn_->on_udp_message(datagram, sender);
    if (verdict.verdict == turn::TurnServer::Verdict::kMalformed)
      log::warn_limited("stun-garbage", "turn/udp: dropped %zu bytes from %s: %.*s",
                        datagram.size(), sender.to_string().c_str(),
                        static_cast<int>(verdict.reason.size()), verdict.reason.data());
    return;
  }
  auto result = responder_.handle(datagram, sender);
  switch (result.outcome) {
    case stun::BindingResponder::Outcome::kDrop:
      log::warn_limited("stun-garbage", "stun/udp: dropped %zu bytes from %s: %.*s",
                        datagram.size(), sender.to_string().c_str(),
                        static_cast<int>(result.reason.size()), result.reason.data());
      return;
    case stun::BindingResponder::Outcome::kIgnore:
      log::debug("stun/udp: ignored message from %s: %.*s", sender.to_string().c_str(),
                 static_cast<int>(result.reason.size()), result.reason.data());
      return;
    case stun::BindingResponder::Outcome::kRespond:
      break;
  }
  GError* raw_error = nullptr;
  const gssize sent = g_socket_send_to(socket_.get(), from,
                                       reinterpret_cast<const gchar*>(result.response.data()),
                                       result.response.size(), nullptr, &raw_error);
  if (sent < 0) {
    GErrorPtr error(raw_error);
    log::warn_limited("stun-send", "stun/udp: send to %s: %s", sender.to_string().c_str(),
                      error->message);
    return;
  }
  log::debug("stun/udp: binding response to %s", sender.to_string().c_str());
}

}  // namespace natfwd::relay

// STUN and TURN over UDP on the relay's port: reads datagrams, answers Binding
// requests through stun::BindingResponder, hands the other STUN methods and
// ChannelData to the TURN server (when there is one), drops garbage (rate-limited
// warning).
#pragma once

#include <array>
#include <cstddef>
#include <string>

#include <gio/gio.h>

#include "server/glib_ptr.h"
#include "stun/binding_responder.h"

namespace natfwd::relay {

class TurnService;

class StunUdpService {
 public:
  // Takes a reference on the bound, non-blocking UDP socket. `turn` (may be null:
  // --no-turn) must outlive this service.
  StunUdpService(GSocket* socket, std::string software, TurnService* turn = nullptr);
  ~StunUdpService();
  StunUdpService(const StunUdpService&) = delete;
  StunUdpService& operator=(const StunUdpService&) = delete;

 private:
  static gboolean on_readable_trampoline(GSocket*, GIOCondition, gpointer self);
  void on_readable();
  void handle_datagram(std::span<const std::byte> datagram, GSocketAddress* from);

  // A burst of datagrams is read in one wakeup, but not forever: let others run.
  static constexpr int kMaxDatagramsPerWakeup = 64;

  GObjectPtr<GSocket> socket_;
  GSourcePtr read_source_;
  stun::BindingResponder responder_;
  TurnService* turn_;
  // One datagram; UDP payloads are at most 64 KiB.
  std::array<std::byte, 65536> buffer_{};
};

}  // namespace natfwd::relay

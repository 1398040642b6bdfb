// STUN over UDP on the relay's port: reads datagrams, answers Binding requests through
// stun::BindingResponder, drops garbage (rate-limited warning). Issue 3 adds TURN
// allocations and ChannelData here, dispatched by the first byte and the method.
#pragma once

#include <array>
#include <cstddef>
#include <string>

#include <gio/gio.h>

#include "server/glib_ptr.h"
#include "stun/binding_responder.h"

namespace natfwd::relay {

class StunUdpService {
 public:
  // Takes a reference on the bound, non-blocking UDP socket.
  StunUdpService(GSocket* socket, std::string software);
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
  // One datagram; UDP payloads are at most 64 KiB.
  std::array<std::byte, 65536> buffer_{};
};

}  // namespace natfwd::relay

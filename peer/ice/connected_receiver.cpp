#include "ice/connected_receiver.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <glib-unix.h>

#include "ice/twin_socket.h"
#include "log.h"
#include "net/socket_address.h"
#include "socket_buffers.h"

namespace natfwd {
namespace {

// Datagrams read per wakeup: a bound, so that a busy pair cannot starve the rest of the
// main loop (libnice reads until the socket is empty); eight recvmmsg calls.
constexpr int kMaxDatagramsPerWakeup = 256;

}  // namespace

std::unique_ptr<ConnectedReceiver> ConnectedReceiver::open(int ice_fd,
                                                           const sockaddr_storage& remote,
                                                           CheckResponder responder,
                                                           OnDatagram on_datagram) {
  sockaddr_storage local{};
  socklen_t local_length = sizeof local;
  getsockname(ice_fd, reinterpret_cast<sockaddr*>(&local), &local_length);
  const std::string label = net::to_transport_address(local).to_string() + " <- " +
                            net::to_transport_address(remote).to_string();
  std::string why_not;
  const int fd = open_twin_socket(ice_fd, remote, why_not);
  if (fd < 0) {
    log::debug("ice: pair %s stays on libnice's socket (%s)", label.c_str(), why_not.c_str());
    return nullptr;
  }
  raise_socket_buffers(fd, kTunnelSocketBufferBytes);
  log::debug("ice: reading pair %s on a connected socket", label.c_str());
  return std::unique_ptr<ConnectedReceiver>(
      new ConnectedReceiver(fd, label, remote, std::move(responder), std::move(on_datagram)));
}

ConnectedReceiver::ConnectedReceiver(int fd, std::string label, const sockaddr_storage& remote,
                                     CheckResponder responder,
                                     OnDatagram on_datagram)
    : fd_(fd),
      label_(std::move(label)),
      remote_(net::to_transport_address(remote)),
      responder_(std::move(responder)),
      on_datagram_(std::move(on_datagram)),
      reader_(net::udp_io_mode_from_environment()) {
  watch_.reset(g_unix_fd_source_new(fd_.get(), G_IO_IN));
  keep_polled_while_dispatched(watch_.get());  // the direct tunnel's receive path
  g_source_set_callback(watch_.get(), G_SOURCE_FUNC(&ConnectedReceiver::on_readable), this,
                        nullptr);
  g_source_attach(watch_.get(), nullptr);
}

ConnectedReceiver::~ConnectedReceiver() {
  if (destroyed_) *destroyed_ = true;
  log::debug("ice: connected socket of pair %s closed after %" G_GUINT64_FORMAT
             " datagram(s), %" G_GUINT64_FORMAT " check(s) answered",
             label_.c_str(), datagrams_, checks_answered_);
}

gboolean ConnectedReceiver::on_readable(gint, GIOCondition, gpointer self) {
  auto* receiver = static_cast<ConnectedReceiver*>(self);
  // Destroying the source from its own callback is safe: GLib holds a reference while
  // it dispatches, and the return value of a destroyed source is ignored.
  guard_callback("ice: connected receive", [receiver] { receiver->read_batch(); });
  return G_SOURCE_CONTINUE;
}

void ConnectedReceiver::read_batch() {
  bool destroyed = false;
  destroyed_ = &destroyed;
  try {
    reader_.read(fd_.get(), kMaxDatagramsPerWakeup, "ice: connected receive",
                 [this, &destroyed](std::span<std::byte> bytes, const sockaddr_storage& from,
                                    socklen_t) {
                   if (classify_datagram(bytes) == DatagramKind::kStun) {
                     handle_stun(bytes, from);
                     return true;
                   }
                   ++datagrams_;
                   on_datagram_(bytes);
                   return !destroyed;
                 });
  } catch (...) {
    if (!destroyed) destroyed_ = nullptr;
    throw;
  }
  if (!destroyed) destroyed_ = nullptr;
}

void ConnectedReceiver::handle_stun(std::span<const std::byte> datagram,
                                    const sockaddr_storage& from) {
  // Only the remote candidate reaches a connected socket, but datagrams queued in the
  // moment between bind and connect may come from anyone: those were libnice's.
  const auto sender = net::to_transport_address(from);
  if (!(sender == remote_)) return;
  auto response = responder_.answer(datagram, sender);
  if (!response) return;
  if (send(fd_.get(), response->data(), response->size(), MSG_DONTWAIT) >= 0) ++checks_answered_;
}

}  // namespace natfwd

#include "ice/connected_receiver.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include <unistd.h>

#include <glib-unix.h>

#include "log.h"
#include "net/socket_address.h"
#include "socket_buffers.h"

namespace natfwd {
namespace {

// Datagrams read per wakeup: a bound, so that a busy pair cannot starve the rest of the
// main loop (libnice reads until the socket is empty); eight recvmmsg calls.
constexpr int kMaxDatagramsPerWakeup = 256;

int reuse_address_of(int fd) {
  int value = 0;
  socklen_t length = sizeof value;
  return getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &value, &length) == 0 ? value : 0;
}

bool set_reuse_address(int fd, int value) {
  return setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &value, sizeof value) == 0;
}

}  // namespace

std::unique_ptr<ConnectedReceiver> ConnectedReceiver::open(int ice_fd,
                                                           const sockaddr_storage& remote,
                                                           CheckResponder responder,
                                                           OnDatagram on_datagram) {
  sockaddr_storage local{};
  socklen_t local_length = sizeof local;
  if (getsockname(ice_fd, reinterpret_cast<sockaddr*>(&local), &local_length) != 0) {
    log::debug("ice: pair stays on libnice's socket (getsockname: %s)", g_strerror(errno));
    return nullptr;
  }
  if (local.ss_family != remote.ss_family || net::sockaddr_length(remote) == 0) {
    // ICE pairs candidates of one family (RFC 8445 section 6.1.2.2): not expected.
    log::debug("ice: pair stays on libnice's socket (the remote is of another family)");
    return nullptr;
  }
  const std::string label = net::to_transport_address(local).to_string() + " <- " +
                            net::to_transport_address(remote).to_string();
  // Linux lets a second UDP socket bind an address in use only when both have
  // SO_REUSEADDR. GLib binds libnice's socket with it off; it is on, on both, only
  // around our bind, so that no third socket can join later (a newer unconnected one
  // would take the datagrams from everyone else).
  const int ice_reuse = reuse_address_of(ice_fd);
  const int fd = socket(local.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const char* failed = nullptr;
  if (fd < 0) {
    failed = "socket";
  } else if (!set_reuse_address(ice_fd, 1) || !set_reuse_address(fd, 1)) {
    failed = "SO_REUSEADDR";
  } else if (bind(fd, reinterpret_cast<const sockaddr*>(&local), local_length) != 0) {
    failed = "bind";
  } else if (connect(fd, reinterpret_cast<const sockaddr*>(&remote), net::sockaddr_length(remote)) != 0) {
    failed = "connect";
  }
  const int error = errno;
  set_reuse_address(ice_fd, ice_reuse);
  if (fd >= 0) set_reuse_address(fd, 0);
  if (failed) {
    if (fd >= 0) close(fd);
    log::debug("ice: pair %s stays on libnice's socket (%s: %s)", label.c_str(), failed,
               g_strerror(error));
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

// The selected direct UDP pair's incoming datagrams, read on a socket of our own
// instead of through libnice.
//
// libnice reads its sockets one datagram per recvmsg and takes its agent lock, looks up
// the component and tries STUN on each before handing it over; on the relay's front
// door that was over half of the process's time. This socket is a twin of libnice's
// socket for the pair (twin_socket.h), connected to the remote candidate: every
// datagram from the remote candidate lands here while datagrams from anyone else still
// reach libnice. It is read with recvmmsg (net::DatagramReader), a bounded batch per
// wakeup; data goes to the tunnel one datagram at a time, as from libnice; STUN goes to
// a CheckResponder (connected_receive.h).
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include <glib.h>

#include "glib_ptr.h"
#include "ice/connected_receive.h"
#include "net/datagrams.h"

namespace natfwd {

class ConnectedReceiver {
 public:
  using OnDatagram = std::function<void(std::span<const std::byte>)>;

  // A socket beside libnice's `ice_fd`, connected to `remote`; nullptr (with one debug
  // line) when the kernel refuses a step, and then the pair stays on libnice's socket.
  static std::unique_ptr<ConnectedReceiver> open(int ice_fd, const sockaddr_storage& remote,
                                                 CheckResponder responder,
                                                 OnDatagram on_datagram);
  ~ConnectedReceiver();
  ConnectedReceiver(const ConnectedReceiver&) = delete;
  ConnectedReceiver& operator=(const ConnectedReceiver&) = delete;

  // "LOCAL <- REMOTE", for logs.
  const std::string& describe() const { return label_; }
  uint64_t datagrams() const { return datagrams_; }
  uint64_t checks_answered() const { return checks_answered_; }

 private:
  ConnectedReceiver(int fd, std::string label, const sockaddr_storage& remote,
                    CheckResponder responder, OnDatagram on_datagram);
  static gboolean on_readable(gint fd, GIOCondition, gpointer self);
  // Reads one wakeup's batch; stops when on_datagram_ destroyed this object.
  void read_batch();
  void handle_stun(std::span<const std::byte> datagram, const sockaddr_storage& from);

  UniqueFd fd_;
  std::string label_;
  stun::TransportAddress remote_;
  CheckResponder responder_;
  OnDatagram on_datagram_;
  net::DatagramReader reader_;
  uint64_t datagrams_ = 0;
  uint64_t checks_answered_ = 0;
  // Set during read_batch(): the tunnel may destroy us from on_datagram_.
  bool* destroyed_ = nullptr;
  GSourcePtr watch_;  // last: its callback reaches the members above
};

}  // namespace natfwd

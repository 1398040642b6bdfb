// A TCP connection that carries frames (proto/frame.h) of Envelopes, driven by the
// GLib main loop. Shared by the relay (one per peer) and the peer (one per relay).
//
// Error policy: anything the remote sends that is not a valid frame or Envelope
// closes this connection (on_closed with a reason) and never throws.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gio/gio.h>

#include "rendezvous.pb.h"

namespace natfwd {

class FramedConnection {
 public:
  using EnvelopeHandler = std::function<void(const wire::Envelope&)>;
  // Called once, when the connection is closed for any reason other than close().
  using ClosedHandler = std::function<void(const std::string& reason)>;

  // Takes a reference on `socket` and makes it non-blocking.
  FramedConnection(GSocket* socket, EnvelopeHandler on_envelope, ClosedHandler on_closed,
                   size_t max_outbound_bytes = 1 << 20);
  ~FramedConnection();
  FramedConnection(const FramedConnection&) = delete;
  FramedConnection& operator=(const FramedConnection&) = delete;

  // Queues one Envelope. If the remote does not read and the queue passes
  // max_outbound_bytes, the connection is closed as too slow.
  void send(const wire::Envelope& envelope);
  // Sends what is queued (best effort, non-blocking) and closes. No callback.
  void close();
  bool is_open() const { return socket_ != nullptr; }

  // Address of the remote end, "host:port", for logs.
  const std::string& remote_address() const { return remote_address_; }
  std::string local_address() const;
  GSocket* socket() const { return socket_; }
  // Bytes received that did not form a whole frame yet (tests and limits).
  size_t buffered_input() const { return input_.size(); }

 private:
  static gboolean on_readable_trampoline(GSocket*, GIOCondition, gpointer self);
  static gboolean on_writable_trampoline(GSocket*, GIOCondition, gpointer self);
  bool on_readable();
  bool on_writable();
  void fail(const std::string& reason);
  void flush();
  void detach_sources();

  GSocket* socket_ = nullptr;
  GSource* read_source_ = nullptr;
  GSource* write_source_ = nullptr;
  EnvelopeHandler on_envelope_;
  ClosedHandler on_closed_;
  size_t max_outbound_bytes_;
  std::vector<std::byte> input_;
  std::vector<std::byte> output_;
  size_t output_offset_ = 0;
  std::string remote_address_;
  // Set to false on destruction so that a handler that destroys us mid-loop is noticed.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// "host:port" of a GSocketAddress (brackets for IPv6); "?" if not an inet address.
std::string socket_address_to_string(GSocketAddress* address);

}  // namespace natfwd

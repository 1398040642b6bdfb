// A TCP connection that carries frames (proto/frame.h) of Envelopes, driven by the
// GLib main loop. Shared by the relay (one per peer) and the peer (one per relay).
//
// Errors (HACKING.md, "Error policy"): anything the remote sends that is not a valid
// frame or Envelope closes this connection (on_closed with a reason).
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gio/gio.h>

#include "byte_stream.h"
#include "glib_ptr.h"
#include "rendezvous.pb.h"

namespace natfwd {

class FramedConnection {
 public:
  using EnvelopeHandler = std::function<void(const wire::Envelope&)>;
  // Called once, when the connection is closed for any reason other than close().
  using ClosedHandler = std::function<void(const std::string& reason)>;

  // Takes a reference on `socket` and makes it non-blocking (plain TCP).
  FramedConnection(GSocket* socket, EnvelopeHandler on_envelope, ClosedHandler on_closed,
                   size_t max_outbound_bytes = 1 << 20);
  // Over any byte stream, e.g. TLS (common/byte_stream.h). `already_read` are bytes
  // the caller read from the stream before (a sniffed first byte).
  FramedConnection(std::unique_ptr<ByteStream> stream, EnvelopeHandler on_envelope,
                   ClosedHandler on_closed, size_t max_outbound_bytes = 1 << 20,
                   std::span<const std::byte> already_read = {});
  ~FramedConnection();
  FramedConnection(const FramedConnection&) = delete;
  FramedConnection& operator=(const FramedConnection&) = delete;

  // Queues one Envelope. If the remote does not read and the queue passes
  // max_outbound_bytes, the connection is closed as too slow.
  void send(const wire::Envelope& envelope);
  // Sends what is queued (best effort, non-blocking) and closes. No callback.
  void close();
  bool is_open() const { return stream_ != nullptr; }

  // Address of the remote end, "host:port", for logs.
  const std::string& remote_address() const { return remote_address_; }
  std::string local_address() const;
  GSocket* socket() const { return stream_ ? stream_->socket() : nullptr; }
  // Bytes received that did not form a whole frame yet (tests and limits).
  size_t buffered_input() const { return input_.size(); }

 private:
  static gboolean on_readable_trampoline(GSocket*, GIOCondition, gpointer self);
  static gboolean on_writable_trampoline(GSocket*, GIOCondition, gpointer self);
  void on_readable();
  void on_writable();
  void fail(const std::string& reason);
  void flush();
  bool deliver_frames();
  void watch(GSourcePtr& source, GIOCondition condition, GSourceFunc callback);
  void release_stream();

  std::unique_ptr<ByteStream> stream_;
  GSourcePtr read_source_;
  GIOCondition read_condition_ = G_IO_IN;
  GSourcePtr write_source_;
  GIOCondition write_condition_ = G_IO_OUT;
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

}  // namespace natfwd

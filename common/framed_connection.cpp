#include "framed_connection.h"

#include "frame.h"
#include "net/socket_address.h"

namespace natfwd {

FramedConnection::FramedConnection(GSocket* socket, EnvelopeHandler on_envelope,
                                   ClosedHandler on_closed, size_t max_outbound_bytes)
    : FramedConnection(make_plain_stream(socket), std::move(on_envelope), std::move(on_closed),
                       max_outbound_bytes) {}

FramedConnection::FramedConnection(std::unique_ptr<ByteStream> stream,
                                   EnvelopeHandler on_envelope, ClosedHandler on_closed,
                                   size_t max_outbound_bytes,
                                   std::span<const std::byte> already_read)
    : stream_(std::move(stream)),
      on_envelope_(std::move(on_envelope)),
      on_closed_(std::move(on_closed)),
      max_outbound_bytes_(max_outbound_bytes),
      input_(already_read.begin(), already_read.end()) {
  remote_address_ = stream_->remote_address();
  watch(read_source_, G_IO_IN, G_SOURCE_FUNC(on_readable_trampoline));
  // Bytes handed in (or buffered inside TLS) are not announced by the socket again:
  // deliver them from the main loop, not from inside the constructor.
  if (!input_.empty() || stream_->has_buffered_input()) {
    struct Pending {
      std::weak_ptr<bool> alive;
      FramedConnection* connection;
    };
    g_idle_add_full(
        G_PRIORITY_DEFAULT,
        [](gpointer data) -> gboolean {
          auto* pending = static_cast<Pending*>(data);
          auto alive = pending->alive.lock();
          guard_callback("framed connection", [&] {
            if (alive && *alive && pending->connection->stream_ &&
                pending->connection->deliver_frames())
              pending->connection->on_readable();
          });
          return G_SOURCE_REMOVE;
        },
        new Pending{alive_, this}, [](gpointer data) { delete static_cast<Pending*>(data); });
  }
}

FramedConnection::~FramedConnection() {
  *alive_ = false;
  release_stream();
}

std::string FramedConnection::local_address() const {
  if (!stream_) return "?";
  GObjectPtr<GSocketAddress> local(g_socket_get_local_address(stream_->socket(), nullptr));
  return net::to_string(local.get());
}

void FramedConnection::watch(GSourcePtr& source, GIOCondition condition, GSourceFunc callback) {
  GIOCondition& current = (&source == &read_source_) ? read_condition_ : write_condition_;
  if (source && current == condition) return;
  source.reset();
  current = condition;
  source.reset(g_socket_create_source(stream_->socket(), condition, nullptr));
  g_source_set_callback(source.get(), callback, this, nullptr);
  g_source_attach(source.get(), nullptr);
}

void FramedConnection::release_stream() {
  read_source_.reset();
  write_source_.reset();
  stream_.reset();  // closes the socket when the last reference goes
}

// The sources manage themselves through watch() and reset(), so the callbacks always
// return CONTINUE (destroying a source from its own dispatch is allowed).
gboolean FramedConnection::on_readable_trampoline(GSocket*, GIOCondition, gpointer self) {
  auto* connection = static_cast<FramedConnection*>(self);
  guard_callback("framed connection: read", [connection] { connection->on_readable(); });
  return G_SOURCE_CONTINUE;
}

gboolean FramedConnection::on_writable_trampoline(GSocket*, GIOCondition, gpointer self) {
  auto* connection = static_cast<FramedConnection*>(self);
  guard_callback("framed connection: write", [connection] { connection->on_writable(); });
  return G_SOURCE_CONTINUE;
}

void FramedConnection::on_readable() {
  std::weak_ptr<bool> alive = alive_;
  // Read until the stream would block: TLS may hold decrypted bytes the socket will
  // never announce again. Bounded, so that one sender cannot monopolise the loop.
  for (int i = 0; i < 64 && stream_; ++i) {
    std::byte buffer[16384];
    size_t n = 0;
    std::string error;
    switch (stream_->read(buffer, n, error)) {
      case ByteStream::Io::kOk:
        input_.insert(input_.end(), buffer, buffer + n);
        if (!deliver_frames()) return;  // closed, or destroyed by a handler
        if (alive.expired() || !stream_) return;
        continue;
      case ByteStream::Io::kWouldBlock:
        watch(read_source_, stream_->wait_condition(), G_SOURCE_FUNC(on_readable_trampoline));
        return;
      case ByteStream::Io::kEof:
        fail("connection closed by remote");
        return;
      case ByteStream::Io::kError:
        fail(error);
        return;
    }
  }
}

bool FramedConnection::deliver_frames() {
  std::weak_ptr<bool> alive = alive_;
  size_t offset = 0;
  while (true) {
    auto result = wire::decode_frame(std::span(input_).subspan(offset));
    if (result.status == wire::DecodeStatus::kNeedMore) break;
    if (result.status == wire::DecodeStatus::kInvalid) {
      fail(std::string(result.error));
      return false;
    }
    wire::Envelope envelope;
    if (!wire::parse_message(result.payload, envelope) ||
        envelope.msg_case() == wire::Envelope::MSG_NOT_SET) {
      fail("malformed message");
      return false;
    }
    offset += result.consumed;
    on_envelope_(envelope);
    // The handler may have closed or destroyed this connection.
    if (alive.expired() || !*alive.lock() || !stream_) return false;
  }
  input_.erase(input_.begin(), input_.begin() + static_cast<ptrdiff_t>(offset));
  return true;
}

void FramedConnection::send(const wire::Envelope& envelope) {
  if (!stream_) return;
  wire::encode_message(envelope, output_);
  if (output_.size() - output_offset_ > max_outbound_bytes_) {
    fail("remote reads too slowly (outbound queue full)");
    return;
  }
  flush();
}

void FramedConnection::flush() {
  while (stream_ && output_offset_ < output_.size()) {
    size_t n = 0;
    std::string error;
    switch (stream_->write(std::span(output_).subspan(output_offset_), n, error)) {
      case ByteStream::Io::kOk:
        output_offset_ += n;
        continue;
      case ByteStream::Io::kWouldBlock:
        watch(write_source_, stream_->wait_condition(), G_SOURCE_FUNC(on_writable_trampoline));
        return;
      case ByteStream::Io::kEof:
      case ByteStream::Io::kError:
        fail(error.empty() ? "connection closed" : error);
        return;
    }
  }
  output_.clear();
  output_offset_ = 0;
  write_source_.reset();
}

void FramedConnection::on_writable() { flush(); }

void FramedConnection::fail(const std::string& reason) {
  if (!stream_) return;
  release_stream();
  if (on_closed_) {
    auto handler = std::move(on_closed_);
    on_closed_ = nullptr;
    handler(reason);  // may destroy this
  }
}

void FramedConnection::close() {
  if (!stream_) return;
  on_closed_ = nullptr;
  flush();
  if (stream_) stream_->shutdown_write();
  release_stream();
}

}  // namespace natfwd

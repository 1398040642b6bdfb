#include "framed_connection.h"

#include "frame.h"

namespace natfwd {

std::string socket_address_to_string(GSocketAddress* address) {
  if (!address || !G_IS_INET_SOCKET_ADDRESS(address)) return "?";
  auto* inet = G_INET_SOCKET_ADDRESS(address);
  gchar* host = g_inet_address_to_string(g_inet_socket_address_get_address(inet));
  std::string text = host;
  g_free(host);
  const auto port = std::to_string(g_inet_socket_address_get_port(inet));
  if (text.find(':') != std::string::npos) return "[" + text + "]:" + port;
  return text + ":" + port;
}

FramedConnection::FramedConnection(GSocket* socket, EnvelopeHandler on_envelope,
                                   ClosedHandler on_closed, size_t max_outbound_bytes)
    : socket_(G_SOCKET(g_object_ref(socket))),
      on_envelope_(std::move(on_envelope)),
      on_closed_(std::move(on_closed)),
      max_outbound_bytes_(max_outbound_bytes) {
  g_socket_set_blocking(socket_, FALSE);
  if (GSocketAddress* remote = g_socket_get_remote_address(socket_, nullptr)) {
    remote_address_ = socket_address_to_string(remote);
    g_object_unref(remote);
  }
  read_source_ = g_socket_create_source(socket_, G_IO_IN, nullptr);
  g_source_set_callback(read_source_, G_SOURCE_FUNC(on_readable_trampoline), this, nullptr);
  g_source_attach(read_source_, nullptr);
}

FramedConnection::~FramedConnection() {
  *alive_ = false;
  detach_sources();
  if (socket_) {
    g_socket_close(socket_, nullptr);
    g_object_unref(socket_);
  }
}

std::string FramedConnection::local_address() const {
  if (!socket_) return "?";
  GSocketAddress* local = g_socket_get_local_address(socket_, nullptr);
  std::string text = socket_address_to_string(local);
  if (local) g_object_unref(local);
  return text;
}

void FramedConnection::detach_sources() {
  for (GSource** source : {&read_source_, &write_source_}) {
    if (*source) {
      g_source_destroy(*source);
      g_source_unref(*source);
      *source = nullptr;
    }
  }
}

gboolean FramedConnection::on_readable_trampoline(GSocket*, GIOCondition, gpointer self) {
  return static_cast<FramedConnection*>(self)->on_readable() ? G_SOURCE_CONTINUE
                                                             : G_SOURCE_REMOVE;
}

gboolean FramedConnection::on_writable_trampoline(GSocket*, GIOCondition, gpointer self) {
  return static_cast<FramedConnection*>(self)->on_writable() ? G_SOURCE_CONTINUE
                                                             : G_SOURCE_REMOVE;
}

bool FramedConnection::on_readable() {
  std::byte buffer[16384];
  GError* error = nullptr;
  gssize n = g_socket_receive(socket_, reinterpret_cast<gchar*>(buffer), sizeof buffer,
                              nullptr, &error);
  if (n < 0) {
    if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) {
      g_error_free(error);
      return true;
    }
    std::string reason = error->message;
    g_error_free(error);
    fail(reason);
    return false;
  }
  if (n == 0) {
    fail("connection closed by remote");
    return false;
  }
  input_.insert(input_.end(), buffer, buffer + n);

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
    if (alive.expired() || !*alive.lock() || !socket_) return false;
  }
  input_.erase(input_.begin(), input_.begin() + static_cast<ptrdiff_t>(offset));
  return true;
}

void FramedConnection::send(const wire::Envelope& envelope) {
  if (!socket_) return;
  wire::encode_message(envelope, output_);
  if (output_.size() - output_offset_ > max_outbound_bytes_) {
    fail("remote reads too slowly (outbound queue full)");
    return;
  }
  flush();
}

void FramedConnection::flush() {
  while (socket_ && output_offset_ < output_.size()) {
    GError* error = nullptr;
    gssize n = g_socket_send(socket_,
                             reinterpret_cast<const gchar*>(output_.data() + output_offset_),
                             output_.size() - output_offset_, nullptr, &error);
    if (n < 0) {
      if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) {
        g_error_free(error);
        if (!write_source_) {
          write_source_ = g_socket_create_source(socket_, G_IO_OUT, nullptr);
          g_source_set_callback(write_source_, G_SOURCE_FUNC(on_writable_trampoline), this,
                                nullptr);
          g_source_attach(write_source_, nullptr);
        }
        return;
      }
      std::string reason = error->message;
      g_error_free(error);
      fail(reason);
      return;
    }
    output_offset_ += static_cast<size_t>(n);
  }
  output_.clear();
  output_offset_ = 0;
}

bool FramedConnection::on_writable() {
  flush();
  if (!socket_) return false;
  if (output_offset_ < output_.size()) return true;
  g_source_unref(write_source_);
  write_source_ = nullptr;
  return false;
}

void FramedConnection::fail(const std::string& reason) {
  if (!socket_) return;
  detach_sources();
  g_socket_close(socket_, nullptr);
  g_object_unref(socket_);
  socket_ = nullptr;
  if (on_closed_) {
    auto handler = std::move(on_closed_);
    on_closed_ = nullptr;
    handler(reason);  // may destroy this
  }
}

void FramedConnection::close() {
  if (!socket_) return;
  on_closed_ = nullptr;
  flush();
  detach_sources();
  g_socket_shutdown(socket_, FALSE, TRUE, nullptr);
  g_socket_close(socket_, nullptr);
  g_object_unref(socket_);
  socket_ = nullptr;
}

}  // namespace natfwd

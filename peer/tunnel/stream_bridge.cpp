#include "tunnel/stream_bridge.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <exception>

#include "log.h"
#include "tcp_reset.h"

namespace natfwd {
namespace {

constexpr size_t kTcpReadChunk = 64 * 1024;
// Reads per readable event, so one busy connection cannot starve the others.
constexpr int kMaxReadsPerEvent = 16;
// Stream -> TCP: bytes from one batch of received datagrams are written together at the
// end of the batch (one send() instead of one per ~1.3 kB packet; with TCP_NODELAY each
// send is a segment and a wake-up of the reader, which cost the receiving peer most of
// its CPU at 100 MB/s). Past this many pending bytes they are written at once.
constexpr size_t kTcpWriteBatch = 256 * 1024;
// Pieces of the stream -> TCP queue given to one sendmsg (ByteQueue blocks: 512 KiB).
constexpr size_t kSendPieces = 8;
// GSocketClient gives up a connect after this long.
constexpr guint kConnectTimeoutSeconds = 15;

// C callbacks must not throw into GLib: log and carry on.
template <typename F>
gboolean guarded(const char* what, F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    log::error("%s: %s", what, e.what());
  } catch (...) {
    log::error("%s: unknown exception", what);
  }
  return G_SOURCE_REMOVE;
}

GSourcePtr socket_source(GSocket* socket, GIOCondition condition, GSourceFunc callback,
                                gpointer self) {
  GSourcePtr source(g_socket_create_source(socket, condition, nullptr));
  keep_polled_while_dispatched(source.get());
  g_source_set_callback(source.get(), callback, self, nullptr);
  g_source_attach(source.get(), nullptr);
  return source;
}

}  // namespace

StreamBridge::StreamBridge(GSocketConnection* tcp, std::string first_bytes,
                           std::shared_ptr<TrafficMeter> meter)
    : tcp_(G_SOCKET_CONNECTION(g_object_ref(tcp))),
      socket_(g_socket_connection_get_socket(tcp)),
      first_bytes_(std::move(first_bytes)),
      meter_(std::move(meter)) {}

StreamBridge::~StreamBridge() {
  read_source_.reset();
  write_source_.reset();
  pump_idle_.reset();
  first_bytes_idle_.reset();
  throttle_timer_.reset();
  if (tcp_) g_io_stream_close(G_IO_STREAM(tcp_.get()), nullptr, nullptr);
}

void StreamBridge::start(Stream& stream) {
  stream_ = &stream;
  g_socket_set_blocking(socket_, FALSE);
  // GSocketClient's connect timeout stays on the socket as an I/O timeout, which
  // would reset a connection that is quiet in one direction for that long.
  g_socket_set_timeout(socket_, 0);
  g_socket_set_option(socket_, IPPROTO_TCP, TCP_NODELAY, 1, nullptr);
  if (!first_bytes_.empty()) {
    // Not from inside start() (LocalEndpoint's contract): from the loop, before any
    // read, since the socket may never turn readable again (the visitor waits for
    // the answer to the request these bytes hold).
    first_bytes_idle_.reset(g_idle_source_new());
    g_source_set_priority(first_bytes_idle_.get(), G_PRIORITY_DEFAULT);
    g_source_set_callback(first_bytes_idle_.get(), &StreamBridge::on_first_bytes_idle, this,
                          nullptr);
    g_source_attach(first_bytes_idle_.get(), nullptr);
    return;
  }
  update_read_interest();
}

gboolean StreamBridge::on_first_bytes_idle(gpointer self) {
  return guarded("stream bridge", [self] {
    auto* bridge = static_cast<StreamBridge*>(self);
    bridge->first_bytes_idle_.reset();
    if (bridge->closed_ || !bridge->stream_) return G_SOURCE_REMOVE;
    const std::string bytes = std::move(bridge->first_bytes_);
    bridge->first_bytes_.clear();
    // Already read: counted, never held back (the caller read them to route).
    if (bridge->meter_) bridge->meter_->spent(TrafficMeter::Direction::kToStream, bytes.size());
    bridge->stream_accepts_ = bridge->stream_->send(std::as_bytes(std::span(bytes)));
    if (!bridge->closed_) bridge->update_read_interest();
    return G_SOURCE_REMOVE;
  });
}

void StreamBridge::receive(std::span<const std::byte> data) {
  if (closed_) return;
  to_tcp_.append(data);
  if (to_tcp_.size() >= kTcpWriteBatch) {
    pump_stream_to_tcp();
  } else if (!write_source_ && !pump_idle_) {
    // An idle source runs after the sources ready now, i.e. after libnice has read
    // every datagram waiting on the socket. If the socket is full, write_source_ pumps.
    // Default priority, as libnice's: at GLib's idle priority a busy tunnel (its socket
    // always readable) would hold a quiet stream's bytes back until the batch limit.
    pump_idle_.reset(g_idle_source_new());
    g_source_set_priority(pump_idle_.get(), G_PRIORITY_DEFAULT);
    g_source_set_callback(pump_idle_.get(), &StreamBridge::on_pump_idle, this, nullptr);
    g_source_attach(pump_idle_.get(), nullptr);
  }
}

void StreamBridge::receive_end() {
  end_received_ = true;
  pump_stream_to_tcp();
}

void StreamBridge::on_send_space() {
  stream_accepts_ = true;
  pump_tcp_to_stream();
}

void StreamBridge::close(bool reset) {
  if (closed_) return;
  closed_ = true;
  stream_ = nullptr;
  read_source_.reset();
  write_source_.reset();
  pump_idle_.reset();
  first_bytes_idle_.reset();
  throttle_timer_.reset();
  // SO_LINGER with a zero timeout makes close() send RST: the TCP peer sees the
  // failure instead of a clean EOF that would look like a complete transfer.
  if (reset) reset_socket(socket_);
  g_io_stream_close(G_IO_STREAM(tcp_.get()), nullptr, nullptr);
  tcp_.reset();
  socket_ = nullptr;
}

gboolean StreamBridge::on_pump_idle(gpointer self) {
  return guarded("stream bridge", [self] {
    auto* bridge = static_cast<StreamBridge*>(self);
    bridge->pump_idle_.reset();  // destroying a source from its own dispatch is allowed
    bridge->pump_stream_to_tcp();
    return G_SOURCE_REMOVE;
  });
}

gboolean StreamBridge::on_throttle_timer(gpointer self) {
  return guarded("stream bridge", [self] {
    auto* bridge = static_cast<StreamBridge*>(self);
    bridge->throttle_timer_.reset();  // destroying a source from its own dispatch is allowed
    bridge->read_throttled_ = false;
    bridge->write_throttled_ = false;
    bridge->pump_stream_to_tcp();
    if (!bridge->closed_) bridge->pump_tcp_to_stream();
    return G_SOURCE_REMOVE;
  });
}

size_t StreamBridge::metered(TrafficMeter::Direction direction, size_t wanted) {
  if (!meter_) return wanted;
  const size_t allowed = std::min(wanted, meter_->allowance(direction));
  bool& throttled =
      direction == TrafficMeter::Direction::kToStream ? read_throttled_ : write_throttled_;
  throttled = allowed == 0;
  if (allowed > 0) return allowed;
  if (!throttle_timer_) {
    throttle_timer_.reset(g_timeout_source_new(meter_->retry_after_ms(direction)));
    g_source_set_callback(throttle_timer_.get(), &StreamBridge::on_throttle_timer, this,
                          nullptr);
    g_source_attach(throttle_timer_.get(), nullptr);
  }
  return 0;
}

gboolean StreamBridge::on_tcp_readable(GSocket*, GIOCondition, gpointer self) {
  // The pump adds and removes read_source_ itself (destroying it from inside its own
  // dispatch is allowed), so the source always asks to continue.
  return guarded("stream bridge", [self] {
    static_cast<StreamBridge*>(self)->pump_tcp_to_stream();
    return G_SOURCE_CONTINUE;
  });
}

gboolean StreamBridge::on_tcp_writable(GSocket*, GIOCondition, gpointer self) {
  return guarded("stream bridge", [self] {
    static_cast<StreamBridge*>(self)->pump_stream_to_tcp();
    return G_SOURCE_CONTINUE;
  });
}

void StreamBridge::pump_tcp_to_stream() {
  if (closed_ || !stream_) return;
  std::byte buffer[kTcpReadChunk];
  for (int i = 0; i < kMaxReadsPerEvent && stream_accepts_ && !read_eof_; ++i) {
    const size_t wanted = metered(TrafficMeter::Direction::kToStream, sizeof buffer);
    if (wanted == 0) break;
    GError* error = nullptr;
    gssize n = g_socket_receive(socket_, reinterpret_cast<gchar*>(buffer), wanted, nullptr,
                                &error);
    if (n < 0) {
      GErrorPtr owned(error);
      if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) break;
      stream_->failed(std::string("read: ") + error->message);  // closes us
      return;
    }
    if (n == 0) {
      read_eof_ = true;
      stream_->send_end();  // may close us
      if (closed_) return;
      break;
    }
    if (meter_) meter_->spent(TrafficMeter::Direction::kToStream, static_cast<size_t>(n));
    stream_accepts_ = stream_->send(std::span(buffer, static_cast<size_t>(n)));
    if (closed_) return;
  }
  update_read_interest();
}

void StreamBridge::pump_stream_to_tcp() {
  if (closed_ || !stream_) return;
  while (!to_tcp_.empty()) {
    size_t wanted = metered(TrafficMeter::Direction::kToLocal, to_tcp_.size());
    if (wanted == 0) break;
    std::array<std::span<const std::byte>, kSendPieces> pieces;
    std::array<GOutputVector, kSendPieces> vectors;
    const size_t count = to_tcp_.front(pieces);
    gint used = 0;
    for (size_t i = 0; i < count && wanted > 0; ++i, ++used) {
      const size_t n = std::min(wanted, pieces[i].size());
      vectors[i] = GOutputVector{pieces[i].data(), n};
      wanted -= n;
    }
    GError* error = nullptr;
    gssize n = g_socket_send_message(socket_, nullptr, vectors.data(), used, nullptr, 0, 0,
                                     nullptr, &error);
    if (n < 0) {
      GErrorPtr owned(error);
      if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) break;
      stream_->failed(std::string("write: ") + error->message);  // closes us
      return;
    }
    to_tcp_.consume(static_cast<size_t>(n));
    if (meter_) meter_->spent(TrafficMeter::Direction::kToLocal, static_cast<size_t>(n));
    stream_->delivered(static_cast<size_t>(n));
    if (closed_) return;
  }
  const bool pending = !to_tcp_.empty();
  if (write_throttled_) {
    write_source_.reset();  // the throttle timer pumps again
  } else if (pending && !write_source_) {
    write_source_ = socket_source(socket_, G_IO_OUT, G_SOURCE_FUNC(on_tcp_writable), this);
  } else if (!pending && write_source_) {
    write_source_.reset();
  }
  if (!pending && end_received_ && !write_shut_) {
    g_socket_shutdown(socket_, FALSE, TRUE, nullptr);
    write_shut_ = true;
    stream_->write_shut();  // may close us
  }
}

void StreamBridge::update_read_interest() {
  const bool want = !closed_ && stream_ && !read_eof_ && stream_accepts_ && !read_throttled_;
  if (want && !read_source_) {
    read_source_ = socket_source(socket_, G_IO_IN, G_SOURCE_FUNC(on_tcp_readable), this);
  } else if (!want && read_source_) {
    read_source_.reset();
  }
}

// ---- the serving side's connects -------------------------------------------------------

namespace {

// Lives until GLib reports the connect (the attempt may be gone by then).
struct ConnectContext {
  std::weak_ptr<bool> wanted;
  LocalConnector::Done done;
};

class TcpAttempt final : public LocalConnector::Attempt {
 public:
  TcpAttempt() : cancellable_(g_cancellable_new()) {}
  ~TcpAttempt() override {
    *wanted_ = false;
    g_cancellable_cancel(cancellable_.get());
  }
  GCancellable* cancellable() { return cancellable_.get(); }
  std::weak_ptr<bool> wanted() const { return wanted_; }

 private:
  GObjectPtr<GCancellable> cancellable_;
  std::shared_ptr<bool> wanted_ = std::make_shared<bool>(true);
};

void on_target_connected(GObject* client, GAsyncResult* result, gpointer data) {
  std::unique_ptr<ConnectContext> context(static_cast<ConnectContext*>(data));
  GError* error = nullptr;
  GObjectPtr<GSocketConnection> tcp(
      g_socket_client_connect_to_host_finish(G_SOCKET_CLIENT(client), result, &error));
  GErrorPtr owned(error);
  auto wanted = context->wanted.lock();
  if (!wanted || !*wanted) return;
  LocalConnector::Result outcome;
  if (tcp) {
    outcome.endpoint = std::make_unique<StreamBridge>(tcp.get());
  } else {
    outcome.error = error ? error->message : "connect failed";
    outcome.unresolved = error && error->domain == G_RESOLVER_ERROR;
  }
  guarded("target connected", [&] {
    context->done(std::move(outcome));
    return G_SOURCE_REMOVE;
  });
}

}  // namespace

std::unique_ptr<LocalConnector::Attempt> TcpConnector::connect(const HostPort& target,
                                                               Done done) {
  auto attempt = std::make_unique<TcpAttempt>();
  GObjectPtr<GSocketClient> client(g_socket_client_new());
  g_socket_client_set_timeout(client.get(), kConnectTimeoutSeconds);
  // Targets are on the serving peer's own network: never through a proxy (and never
  // let GIO consult desktop proxy settings).
  g_socket_client_set_enable_proxy(client.get(), FALSE);
  auto* context = new ConnectContext{attempt->wanted(), std::move(done)};
  g_socket_client_connect_to_host_async(client.get(), target.host.c_str(), target.port,
                                        attempt->cancellable(), on_target_connected, context);
  return attempt;
}

}  // namespace natfwd

#include "tunnel/stream_bridge.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "frame.h"
#include "log.h"
#include "tcp_reset.h"
#include "rendezvous.pb.h"

namespace natfwd {
namespace {

constexpr size_t kTcpReadChunk = 64 * 1024;
// Reads per readable event, so one busy connection cannot starve the others.
constexpr int kMaxReadsPerEvent = 16;
// QUIC -> TCP: bytes from one batch of received datagrams are written together at the
// end of the batch (one send() instead of one per ~1.3 kB packet; with TCP_NODELAY each
// send is a segment and a wake-up of the reader, which cost the receiving peer most of
// its CPU at 100 MB/s). Past this many pending bytes they are written at once.
constexpr size_t kTcpWriteBatch = 256 * 1024;
// QUIC application error codes (RFC 9000 section 20.2: ours to define).
constexpr uint64_t kErrorTcpReset = 1;
constexpr uint64_t kErrorRefused = 2;

const char* status_text(int status) {
  switch (status) {
    case wire::StreamOpenResult::OK: return "ok";
    case wire::StreamOpenResult::NOT_SERVED: return "not served";
    case wire::StreamOpenResult::RESOLVE_FAILED: return "cannot resolve";
    case wire::StreamOpenResult::CONNECT_FAILED: return "cannot connect";
    case wire::StreamOpenResult::BAD_REQUEST: return "bad request";
    case wire::StreamOpenResult::NOT_AUTHORIZED: return "not authorised";
    default: return "refused";
  }
}

struct ConnectContext {
  std::weak_ptr<bool> alive;
  StreamBridge* bridge;
};

}  // namespace

StreamBridge::StreamBridge(Role role, quic::Connection& quic, int64_t stream_id,
                           std::string log_prefix, DoneHandler done,
                           std::function<void()> flush)
    : role_(role),
      quic_(quic),
      stream_id_(stream_id),
      log_prefix_(std::move(log_prefix)),
      done_(std::move(done)),
      flush_(std::move(flush)) {}

std::unique_ptr<StreamBridge> StreamBridge::connecting(quic::Connection& quic, int64_t stream_id,
                                                       GSocketConnection* tcp,
                                                       const HostPort& target,
                                                       std::string log_prefix, DoneHandler done,
                                                       std::function<void()> flush,
                                                       OpenResultHandler on_result) {
  std::unique_ptr<StreamBridge> bridge(new StreamBridge(Role::kConnecting, quic, stream_id,
                                                        std::move(log_prefix), std::move(done),
                                                        std::move(flush)));
  bridge->target_ = target;
  bridge->has_result_handler_ = static_cast<bool>(on_result);
  bridge->on_result_ = std::move(on_result);
  wire::StreamOpen open;
  open.set_host(target.host);
  open.set_port(target.port);
  std::vector<std::byte> frame;
  wire::encode_message(open, frame);
  bridge->write_to_stream(frame);
  // Read the client's first bytes at once (optimistic): they travel with the header
  // and the serving side holds them until the target is connected.
  bridge->attach_tcp(tcp);
  bridge->flush_();
  return bridge;
}

std::unique_ptr<StreamBridge> StreamBridge::serving(quic::Connection& quic, int64_t stream_id,
                                                    TargetPolicy policy, PairHandler pair,
                                                    std::string log_prefix, DoneHandler done,
                                                    std::function<void()> flush) {
  std::unique_ptr<StreamBridge> bridge(new StreamBridge(Role::kServing, quic, stream_id,
                                                        std::move(log_prefix), std::move(done),
                                                        std::move(flush)));
  bridge->policy_ = std::move(policy);
  bridge->pair_ = std::move(pair);
  return bridge;
}

StreamBridge::~StreamBridge() {
  *alive_ = false;
  if (connect_cancellable_) {
    g_cancellable_cancel(connect_cancellable_);
    g_object_unref(connect_cancellable_);
  }
  for (GSource** source : {&read_source_, &write_source_, &pump_idle_}) {
    if (*source) {
      g_source_destroy(*source);
      g_source_unref(*source);
    }
  }
  if (tcp_) {
    g_io_stream_close(G_IO_STREAM(tcp_), nullptr, nullptr);
    g_object_unref(tcp_);
  }
}

void StreamBridge::attach_tcp(GSocketConnection* tcp) {
  tcp_ = G_SOCKET_CONNECTION(g_object_ref(tcp));
  socket_ = g_socket_connection_get_socket(tcp_);
  g_socket_set_blocking(socket_, FALSE);
  // GSocketClient's connect timeout stays on the socket as an I/O timeout, which
  // would reset a connection that is quiet in one direction for that long.
  g_socket_set_timeout(socket_, 0);
  g_socket_set_option(socket_, IPPROTO_TCP, TCP_NODELAY, 1, nullptr);
  update_tcp_read_interest();
}

void StreamBridge::write_to_stream(std::span<const std::byte> data) {
  size_t accepted = quic_.stream_write(stream_id_, data);
  to_quic_.insert(to_quic_.end(), data.begin() + static_cast<ptrdiff_t>(accepted), data.end());
}

// ---- QUIC -> this bridge ---------------------------------------------------------

void StreamBridge::on_stream_data(std::span<const std::byte> data, bool fin) {
  if (phase_ == Phase::kDone) {
    quic_.stream_consumed(stream_id_, data.size());
    return;
  }
  if (fin) quic_fin_received_ = true;
  if (phase_ == Phase::kOpening) {
    header_.insert(header_.end(), data.begin(), data.end());
    handle_header_bytes();
    return;
  }
  to_tcp_.insert(to_tcp_.end(), data.begin(), data.end());
  if (phase_ != Phase::kForwarding) return;
  if (to_tcp_.size() - to_tcp_offset_ >= kTcpWriteBatch || fin) {
    pump_quic_to_tcp();
  } else if (!write_source_ && !pump_idle_) {
    // An idle source runs after the sources ready now, i.e. after libnice has read
    // every datagram waiting on the socket. If the socket is full, write_source_ pumps.
    // Default priority, as libnice's: at GLib's idle priority a busy tunnel (its socket
    // always readable) would hold a quiet stream's bytes back until the batch limit.
    pump_idle_ = g_idle_source_new();
    g_source_set_priority(pump_idle_, G_PRIORITY_DEFAULT);
    g_source_set_callback(pump_idle_, G_SOURCE_FUNC(on_pump_idle), this, nullptr);
    g_source_attach(pump_idle_, nullptr);
  }
}

gboolean StreamBridge::on_pump_idle(gpointer self) {
  auto* bridge = static_cast<StreamBridge*>(self);
  g_source_unref(bridge->pump_idle_);
  bridge->pump_idle_ = nullptr;
  bridge->pump_quic_to_tcp();
  return G_SOURCE_REMOVE;
}

void StreamBridge::handle_header_bytes() {
  auto result = wire::decode_frame(header_, 4096);
  if (result.status == wire::DecodeStatus::kNeedMore) {
    if (quic_fin_received_) refuse(wire::StreamOpenResult::BAD_REQUEST, "stream ended early");
    return;
  }
  if (result.status == wire::DecodeStatus::kInvalid) {
    log::warn_limited("bad stream header", "%s: bad stream header: %.*s", log_prefix_.c_str(),
                      static_cast<int>(result.error.size()), result.error.data());
    refuse(wire::StreamOpenResult::BAD_REQUEST, std::string(result.error));
    return;
  }
  const size_t header_length = result.consumed;
  std::vector<std::byte> rest(header_.begin() + static_cast<ptrdiff_t>(header_length),
                              header_.end());
  if (role_ == Role::kServing) {
    wire::StreamOpen open;
    if (wire::parse_message(result.payload, open) && !open.pair_secret().empty()) {
      quic_.stream_consumed(stream_id_, header_length);
      const StreamDecision decision =
          pair_ ? pair_(open.pair_secret())
                : StreamDecision{wire::StreamOpenResult::NOT_AUTHORIZED, "pairing not possible"};
      refuse(decision.status, decision.detail);  // answers, ends the stream
      return;
    }
    if (!wire::parse_message(result.payload, open) || open.port() == 0 || open.port() > 65535 ||
        !is_valid_host(open.host())) {
      refuse(wire::StreamOpenResult::BAD_REQUEST, "malformed target");
      return;
    }
    quic_.stream_consumed(stream_id_, header_length);
    header_.clear();
    to_tcp_ = std::move(rest);
    handle_stream_open(HostPort{open.host(), static_cast<uint16_t>(open.port())});
    return;
  }

  wire::StreamOpenResult answer;
  if (!wire::parse_message(result.payload, answer)) {
    log::warn("%s: malformed answer from the serving peer", log_prefix_.c_str());
    finish(true);
    return;
  }
  quic_.stream_consumed(stream_id_, header_length);
  header_.clear();
  report_open_result(answer.status(), answer.detail());
  if (phase_ == Phase::kDone) return;  // the handler gave up on the connection
  if (answer.status() != wire::StreamOpenResult::OK) {
    log::warn("%s: %s refused: %s%s%s", log_prefix_.c_str(), target_.to_string().c_str(),
              status_text(answer.status()), answer.detail().empty() ? "" : ": ",
              answer.detail().c_str());
    finish(true);
    return;
  }
  log::debug("%s: connected to %s", log_prefix_.c_str(), target_.to_string().c_str());
  phase_ = Phase::kForwarding;
  to_tcp_ = std::move(rest);
  pump_quic_to_tcp();
}

void StreamBridge::handle_stream_open(const HostPort& target) {
  target_ = target;
  const StreamDecision decision =
      policy_ ? policy_(target) : StreamDecision{wire::StreamOpenResult::NOT_SERVED, "no policy"};
  if (decision.status != wire::StreamOpenResult::OK) {
    log::warn("%s: refused %s: %s (%s)", log_prefix_.c_str(), target.to_string().c_str(),
              status_text(decision.status), decision.detail.c_str());
    refuse(decision.status, decision.detail);
    return;
  }
  phase_ = Phase::kConnectingTarget;
  connect_cancellable_ = g_cancellable_new();
  GSocketClient* client = g_socket_client_new();
  g_socket_client_set_timeout(client, 15);
  // Targets are on the serving peer's own network: never through a proxy (and never
  // let GIO consult desktop proxy settings).
  g_socket_client_set_enable_proxy(client, FALSE);
  // The context outlives us if we are destroyed first; the callback checks `alive`.
  auto* context = new ConnectContext{alive_, this};
  g_socket_client_connect_to_host_async(client, target.host.c_str(), target.port,
                                        connect_cancellable_, on_target_connected, context);
  g_object_unref(client);
}

void StreamBridge::on_target_connected(GObject* client, GAsyncResult* result, gpointer data) {
  std::unique_ptr<ConnectContext> context(static_cast<ConnectContext*>(data));
  GError* error = nullptr;
  GSocketConnection* tcp =
      g_socket_client_connect_to_host_finish(G_SOCKET_CLIENT(client), result, &error);
  auto alive = context->alive.lock();
  if (!alive || !*alive) {
    if (tcp) g_object_unref(tcp);
    if (error) g_error_free(error);
    return;
  }
  std::string message = error ? error->message : "";
  // A name that does not resolve is not a refused connection: the connecting side
  // (a SOCKS client: "host unreachable") is told which.
  const bool unresolved = error && error->domain == G_RESOLVER_ERROR;
  if (error) g_error_free(error);
  context->bridge->target_connected(tcp, message, unresolved);
  if (tcp) g_object_unref(tcp);
}

void StreamBridge::target_connected(GSocketConnection* tcp, const std::string& error,
                                    bool unresolved) {
  if (phase_ == Phase::kDone) return;
  if (!tcp) {
    log::warn("%s: cannot connect %s: %s", log_prefix_.c_str(), target_.to_string().c_str(),
              error.c_str());
    refuse(unresolved ? wire::StreamOpenResult::RESOLVE_FAILED
                      : wire::StreamOpenResult::CONNECT_FAILED,
           error);
    return;
  }
  log::debug("%s: connected %s", log_prefix_.c_str(), target_.to_string().c_str());
  send_result(wire::StreamOpenResult::OK, "");
  phase_ = Phase::kForwarding;
  attach_tcp(tcp);
  pump_quic_to_tcp();
  flush_();
}

void StreamBridge::send_result(int status, const std::string& detail) {
  wire::StreamOpenResult answer;
  answer.set_status(static_cast<wire::StreamOpenResult::Status>(status));
  answer.set_detail(detail);
  std::vector<std::byte> frame;
  wire::encode_message(answer, frame);
  write_to_stream(frame);
}

// Serving side: answers and ends the stream (a refusal, or a pairing's answer).
// Connecting side: resets the TCP client.
void StreamBridge::refuse(int status, const std::string& detail) {
  if (role_ == Role::kServing) {
    // Tell the connecting side why, end our direction, and ignore what it still sends.
    send_result(status, detail);
    if (to_quic_.empty()) {
      quic_.stream_shutdown_write(stream_id_);
      fin_sent_ = true;
    }
    flush_();
  }
  finish(role_ == Role::kConnecting);
}

void StreamBridge::on_stream_reset(uint64_t app_error) {
  if (phase_ == Phase::kDone) return;
  log::info("%s: reset by the other side (code %llu)", log_prefix_.c_str(),
             static_cast<unsigned long long>(app_error));
  finish(true);
}

void StreamBridge::on_stream_send_space() {
  if (phase_ == Phase::kDone) {
    if (!to_quic_.empty()) {  // a refusal's answer that did not fit at once
      size_t accepted = quic_.stream_write(stream_id_, to_quic_);
      to_quic_.erase(to_quic_.begin(), to_quic_.begin() + static_cast<ptrdiff_t>(accepted));
      if (to_quic_.empty() && !fin_sent_) {
        quic_.stream_shutdown_write(stream_id_);
        fin_sent_ = true;
      }
    }
    return;
  }
  pump_tcp_to_quic();
}

void StreamBridge::on_stream_closed() { stream_closed_ = true; }

void StreamBridge::abort(const std::string& reason) {
  if (phase_ == Phase::kDone) return;
  abort_reason_ = reason;
  log::debug("%s: aborted: %s", log_prefix_.c_str(), reason.c_str());
  finish(true);
}

// ---- TCP <-> QUIC pumps ------------------------------------------------------------

gboolean StreamBridge::on_tcp_readable(GSocket*, GIOCondition, gpointer self) {
  // The pump adds and removes read_source_ itself (destroying it from inside its own
  // dispatch is allowed), so the source always asks to continue.
  static_cast<StreamBridge*>(self)->pump_tcp_to_quic();
  return G_SOURCE_CONTINUE;
}

gboolean StreamBridge::on_tcp_writable(GSocket*, GIOCondition, gpointer self) {
  auto* bridge = static_cast<StreamBridge*>(self);
  bridge->pump_quic_to_tcp();
  return G_SOURCE_CONTINUE;
}

void StreamBridge::pump_tcp_to_quic() {
  if (phase_ == Phase::kDone || !socket_) return;
  if (!to_quic_.empty()) {
    size_t accepted = quic_.stream_write(stream_id_, to_quic_);
    to_quic_.erase(to_quic_.begin(), to_quic_.begin() + static_cast<ptrdiff_t>(accepted));
  }
  std::byte buffer[kTcpReadChunk];
  for (int i = 0; i < kMaxReadsPerEvent && to_quic_.empty() && !tcp_read_eof_; ++i) {
    GError* error = nullptr;
    gssize n = g_socket_receive(socket_, reinterpret_cast<gchar*>(buffer), sizeof buffer,
                                nullptr, &error);
    if (n < 0) {
      bool would_block = g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK);
      std::string message = error->message;
      g_error_free(error);
      if (would_block) break;
      log::info("%s: connection reset (read: %s)", log_prefix_.c_str(), message.c_str());
      quic_.stream_reset(stream_id_, kErrorTcpReset);
      flush_();
      finish(true);
      return;
    }
    if (n == 0) {
      tcp_read_eof_ = true;
      break;
    }
    write_to_stream(std::span(buffer, static_cast<size_t>(n)));
  }
  if (tcp_read_eof_ && to_quic_.empty() && !fin_sent_) {
    quic_.stream_shutdown_write(stream_id_);
    fin_sent_ = true;
  }
  flush_();
  update_tcp_read_interest();
  maybe_finish();
}

void StreamBridge::pump_quic_to_tcp() {
  if (phase_ != Phase::kForwarding || !socket_) return;
  while (to_tcp_offset_ < to_tcp_.size()) {
    GError* error = nullptr;
    gssize n = g_socket_send(socket_,
                             reinterpret_cast<const gchar*>(to_tcp_.data() + to_tcp_offset_),
                             to_tcp_.size() - to_tcp_offset_, nullptr, &error);
    if (n < 0) {
      bool would_block = g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK);
      std::string message = error->message;
      g_error_free(error);
      if (would_block) break;
      log::info("%s: connection reset (write: %s)", log_prefix_.c_str(), message.c_str());
      quic_.stream_reset(stream_id_, kErrorTcpReset);
      flush_();
      finish(true);
      return;
    }
    to_tcp_offset_ += static_cast<size_t>(n);
    quic_.stream_consumed(stream_id_, static_cast<size_t>(n));
  }
  flush_();
  const bool pending = to_tcp_offset_ < to_tcp_.size();
  if (!pending) {
    to_tcp_.clear();
    to_tcp_offset_ = 0;
  } else if (to_tcp_offset_ > (1u << 20)) {
    to_tcp_.erase(to_tcp_.begin(), to_tcp_.begin() + static_cast<ptrdiff_t>(to_tcp_offset_));
    to_tcp_offset_ = 0;
  }
  if (pending && !write_source_) {
    write_source_ = g_socket_create_source(socket_, G_IO_OUT, nullptr);
    g_source_set_callback(write_source_, G_SOURCE_FUNC(on_tcp_writable), this, nullptr);
    g_source_attach(write_source_, nullptr);
  } else if (!pending && write_source_) {
    g_source_destroy(write_source_);
    g_source_unref(write_source_);
    write_source_ = nullptr;
  }
  if (!pending && quic_fin_received_ && !tcp_write_shut_) {
    g_socket_shutdown(socket_, FALSE, TRUE, nullptr);
    tcp_write_shut_ = true;
  }
  maybe_finish();
}

void StreamBridge::update_tcp_read_interest() {
  const bool want = socket_ && phase_ != Phase::kDone && !tcp_read_eof_ && to_quic_.empty();
  if (want && !read_source_) {
    read_source_ = g_socket_create_source(socket_, G_IO_IN, nullptr);
    g_source_set_callback(read_source_, G_SOURCE_FUNC(on_tcp_readable), this, nullptr);
    g_source_attach(read_source_, nullptr);
  } else if (!want && read_source_) {
    g_source_destroy(read_source_);
    g_source_unref(read_source_);
    read_source_ = nullptr;
  }
}

void StreamBridge::maybe_finish() {
  if (phase_ == Phase::kForwarding && fin_sent_ && tcp_write_shut_) finish(false);
}

void StreamBridge::report_open_result(int status, const std::string& detail) {
  if (!on_result_ || open_result_reported_) return;
  open_result_reported_ = true;
  on_result_(status, detail);
  if (status != wire::StreamOpenResult::OK) on_result_ = nullptr;
}

void StreamBridge::finish(bool reset_tcp) {
  if (phase_ == Phase::kDone) return;
  // A handler has told the client why a stream never got going; a reset could
  // destroy that answer before the client reads it.
  const bool told_client = has_result_handler_ && phase_ != Phase::kForwarding;
  const bool was_forwarding = phase_ == Phase::kForwarding;
  phase_ = Phase::kDone;
  report_open_result(kOpenFailedLocally,
                     abort_reason_.empty() ? "the stream ended before the serving peer answered"
                                           : abort_reason_);
  if (was_forwarding && reset_tcp && on_result_) {
    auto handler = std::move(on_result_);
    on_result_ = nullptr;
    handler(kStreamBroken, abort_reason_.empty() ? "the stream was reset" : abort_reason_);
  }
  for (GSource** source : {&read_source_, &write_source_, &pump_idle_}) {
    if (*source) {
      g_source_destroy(*source);
      g_source_unref(*source);
      *source = nullptr;
    }
  }
  if (socket_ && reset_tcp && !told_client) {
    // SO_LINGER with a zero timeout makes close() send RST: the TCP peer sees the
    // failure instead of a clean EOF that would look like a complete transfer.
    reset_socket(socket_);
  }
  if (tcp_) {
    g_io_stream_close(G_IO_STREAM(tcp_), nullptr, nullptr);
    g_object_unref(tcp_);
    tcp_ = nullptr;
    socket_ = nullptr;
  }
  if (reset_tcp && !stream_closed_ && !(fin_sent_ && role_ == Role::kServing)) {
    quic_.stream_reset(stream_id_, role_ == Role::kConnecting ? kErrorRefused : kErrorTcpReset);
    flush_();
  }
  if (done_) done_(stream_id_);
}

}  // namespace natfwd

#include "quic_connection.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include "log.h"
#include "tls_session.h"

namespace natfwd::quic {
namespace {

// Connection ids are only labels between two endpoints that already know each other;
// 16 bytes of randomness makes them unguessable (RFC 9000 section 5.1).
constexpr size_t kCidLength = 16;
// A write pass sends at most this many packets even when the send quantum allows more,
// so one connection cannot monopolise the main loop.
constexpr size_t kMaxPacketsPerPass = 64;
// At most this many SendBuffer chunks are offered to ngtcp2 per call (a packet needs two).
constexpr size_t kMaxVecs = 8;
// How many copies of CONNECTION_CLOSE we send: it is never acknowledged
// (RFC 9000 section 10.2.1), so one loss must not leave the remote waiting for the idle timeout.
constexpr int kCloseCopies = 3;

void random_bytes(uint8_t* out, size_t length) {
  if (gnutls_rnd(GNUTLS_RND_RANDOM, out, length) != 0)
    throw std::runtime_error("gnutls_rnd failed");
}

ngtcp2_cid random_cid() {
  ngtcp2_cid cid{};
  cid.datalen = kCidLength;
  random_bytes(cid.data, cid.datalen);
  return cid;
}

// Human-readable form of a CONNECTION_CLOSE error code (RFC 9000 section 20).
std::string describe_error(const ngtcp2_connection_close_error& error) {
  std::string out;
  switch (error.type) {
    case NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION:
      out = "application error " + std::to_string(error.error_code);
      break;
    case NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT:
      if (error.error_code >= NGTCP2_CRYPTO_ERROR && error.error_code <= NGTCP2_CRYPTO_ERROR + 0xff) {
        // CRYPTO_ERROR carries a TLS alert (RFC 9001 section 4.8).
        auto alert = static_cast<gnutls_alert_description_t>(error.error_code - NGTCP2_CRYPTO_ERROR);
        const char* name = gnutls_alert_get_name(alert);
        out = std::string("TLS alert ") + (name ? name : std::to_string(alert));
      } else if (error.error_code == NGTCP2_NO_ERROR)
        out = "no error";
      else
        out = "transport error " + std::to_string(error.error_code);
      break;
    default:
      out = "error " + std::to_string(error.error_code);
  }
  if (error.reason && error.reasonlen > 0)
    out += ": " + std::string(reinterpret_cast<const char*>(error.reason), error.reasonlen);
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Setup

Connection::Connection(const Config& config, Observer& observer, Timestamp now)
    : config_(config), observer_(observer), now_(now) {
  if (!config_.identity) throw std::invalid_argument("quic::Config::identity is required");
  if (config_.max_udp_payload < NGTCP2_MAX_UDP_PAYLOAD_SIZE)
    throw std::invalid_argument("quic::Config::max_udp_payload must be at least 1200");

  // Fixed labels, never used for I/O: 127.0.0.1:1 (us) and 127.0.0.1:2 (them).
  local_addr_.sin_family = remote_addr_.sin_family = AF_INET;
  local_addr_.sin_addr.s_addr = remote_addr_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  local_addr_.sin_port = htons(1);
  remote_addr_.sin_port = htons(2);
  path_.local = {reinterpret_cast<ngtcp2_sockaddr*>(&local_addr_), sizeof local_addr_};
  path_.remote = {reinterpret_cast<ngtcp2_sockaddr*>(&remote_addr_), sizeof remote_addr_};

  tls_ = std::make_unique<TlsSession>(
      config_.is_server ? TlsSession::Role::kServer : TlsSession::Role::kClient,
      *config_.identity, config_.verify_remote_key, &Connection::get_conn, this);
  scratch_.resize(config_.max_udp_payload);
  // The server cannot create its ngtcp2_conn before the client's first Initial: it
  // needs the connection ids chosen by the client (create_server).
  if (!config_.is_server) create_client(now);
}

Connection::~Connection() = default;

ngtcp2_callbacks Connection::callbacks() const {
  ngtcp2_callbacks cb{};
  // The TLS handshake and packet protection: ngtcp2's GnuTLS helper does it all.
  if (config_.is_server) {
    cb.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
  } else {
    cb.client_initial = ngtcp2_crypto_client_initial_cb;
    cb.recv_retry = ngtcp2_crypto_recv_retry_cb;
  }
  cb.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
  cb.encrypt = ngtcp2_crypto_encrypt_cb;
  cb.decrypt = ngtcp2_crypto_decrypt_cb;
  cb.hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb.update_key = ngtcp2_crypto_update_key_cb;
  cb.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb.version_negotiation = ngtcp2_crypto_version_negotiation_cb;
  cb.rand = &Connection::rand_cb;
  cb.get_new_connection_id = &Connection::get_new_connection_id_cb;
  // Ours: streams and the handshake.
  cb.handshake_completed = &Connection::on_handshake_completed_cb;
  cb.recv_stream_data = &Connection::on_recv_stream_data_cb;
  cb.acked_stream_data_offset = &Connection::on_acked_stream_data_cb;
  cb.stream_open = &Connection::on_stream_open_cb;
  cb.stream_close = &Connection::on_stream_close_cb;
  cb.stream_reset = &Connection::on_stream_reset_cb;
  cb.stream_stop_sending = &Connection::on_stream_stop_sending_cb;
  cb.extend_max_local_streams_bidi = &Connection::on_extend_max_local_streams_cb;
  cb.extend_max_stream_data = &Connection::on_extend_max_stream_data_cb;
  return cb;
}

ngtcp2_settings Connection::settings(Timestamp now) const {
  ngtcp2_settings s;
  ngtcp2_settings_default(&s);
  s.initial_ts = now;
  s.cc_algo = config_.cc;
  s.max_tx_udp_payload_size = config_.max_udp_payload;
  // The ICE path carries max_udp_payload; use it from the first packet instead of
  // starting at 1200 and probing (no PMTUD: TURN framing must fit later, see Config).
  s.no_tx_udp_payload_size_shaping = 1;
  s.no_pmtud = 1;
  s.handshake_timeout = config_.handshake_timeout;
  // Flow-control windows stay fixed (no auto-tuning): the receiver's memory bound is
  // then exactly stream_window per stream and connection_window in total.
  s.max_window = 0;
  s.max_stream_window = 0;
  return s;
}

ngtcp2_transport_params Connection::transport_params() const {
  ngtcp2_transport_params p;
  ngtcp2_transport_params_default(&p);
  // RFC 9000 section 18.2. Only bidirectional streams are used.
  p.initial_max_stream_data_bidi_local = config_.stream_window;
  p.initial_max_stream_data_bidi_remote = config_.stream_window;
  p.initial_max_stream_data_uni = 0;
  p.initial_max_data = config_.connection_window;
  p.initial_max_streams_bidi = config_.max_streams;
  p.initial_max_streams_uni = 0;
  p.max_idle_timeout = config_.idle_timeout;
  // The path labels are fake (libnice moves the datagrams); the client "migrates" only
  // when ICE moved the tunnel to a new path (move_to_new_path).
  p.disable_active_migration = 0;
  return p;
}

void Connection::create_client(Timestamp now) {
  // The Initial's destination id must be at least 8 bytes (RFC 9000 section 7.2).
  ngtcp2_cid dcid = random_cid();
  ngtcp2_cid scid = random_cid();
  ngtcp2_callbacks cb = callbacks();
  ngtcp2_settings s = settings(now);
  ngtcp2_transport_params p = transport_params();
  ngtcp2_conn* conn = nullptr;
  int rv = ngtcp2_conn_client_new(&conn, &dcid, &scid, &path_, NGTCP2_PROTO_VER_V1, &cb, &s,
                                  &p, nullptr, this);
  if (rv != 0) throw std::runtime_error(std::string("ngtcp2_conn_client_new: ") + ngtcp2_strerror(rv));
  conn_.reset(conn);
  ngtcp2_conn_set_tls_native_handle(conn, tls_->native());
  ngtcp2_conn_set_keep_alive_timeout(conn, config_.keepalive_interval);
}

bool Connection::create_server(std::span<const std::byte> datagram, Timestamp now) {
  // Anything but a client Initial of a version we speak is dropped: a server with no
  // connection has nothing else to do with it.
  ngtcp2_pkt_hd hd{};
  if (ngtcp2_accept(&hd, reinterpret_cast<const uint8_t*>(datagram.data()), datagram.size()) != 0) {
    log::warn_limited("quic-accept", "quic: dropping a datagram that is not a client Initial");
    return false;
  }
  ngtcp2_cid scid = random_cid();
  ngtcp2_callbacks cb = callbacks();
  ngtcp2_settings s = settings(now);
  ngtcp2_transport_params p = transport_params();
  p.original_dcid = hd.dcid;  // RFC 9000 section 7.3: authenticates the client's choice
  ngtcp2_conn* conn = nullptr;
  int rv = ngtcp2_conn_server_new(&conn, &hd.scid, &scid, &path_, hd.version, &cb, &s, &p,
                                  nullptr, this);
  if (rv != 0) {
    finish(std::string("cannot create QUIC server: ") + ngtcp2_strerror(rv));
    return false;
  }
  conn_.reset(conn);
  ngtcp2_conn_set_tls_native_handle(conn, tls_->native());
  ngtcp2_conn_set_keep_alive_timeout(conn, config_.keepalive_interval);
  return true;
}

// ---------------------------------------------------------------------------------------
// Input and timers

void Connection::receive(std::span<const std::byte> datagram, Timestamp now) {
  if (closed()) return;
  now_ = now;
  bytes_received_ += datagram.size();
  if (!conn_ && !create_server(datagram, now)) return;

  ngtcp2_pkt_info pi{};
  ++callback_depth_;
  int rv = ngtcp2_conn_read_pkt(conn_.get(), &path_, &pi,
                                reinterpret_cast<const uint8_t*>(datagram.data()),
                                datagram.size(), now);
  --callback_depth_;
  switch (rv) {
    case 0:
      break;
    case NGTCP2_ERR_DRAINING:
      // The remote sent CONNECTION_CLOSE (RFC 9000 section 10.2.2): nothing more to send.
      closed_in_order_ = remote_closed_without_error();
      finish("remote closed the connection: " + remote_close_reason());
      return;
    case NGTCP2_ERR_CLOSING:
      return;
    case NGTCP2_ERR_DROP_CONN:
      finish("connection dropped: " + remote_close_reason());
      return;
    case NGTCP2_ERR_CRYPTO: {
      // The TLS handshake failed here (e.g. our key check refused the remote): tell the
      // remote with the TLS alert as a CRYPTO_ERROR (RFC 9001 section 4.8).
      ngtcp2_connection_close_error error;
      ngtcp2_connection_close_error_default(&error);
      ngtcp2_connection_close_error_set_transport_error_tls_alert(
          &error, ngtcp2_conn_get_tls_alert(conn_.get()), nullptr, 0);
      std::string reason = tls_->refusal().empty() ? "TLS handshake failed"
                                                   : "TLS handshake failed: " + tls_->refusal();
      start_closing(error, reason, now);
      return;
    }
    default:
      if (!ngtcp2_err_is_fatal(rv)) {
        // A packet ngtcp2 refused without harm to the connection (garbage, a stray copy).
        log::debug("quic: packet dropped: %s", ngtcp2_strerror(rv));
        break;
      }
      fail(rv, now);
      return;
  }
  after_callbacks(now);
}

Timestamp Connection::expiry() const {
  if (state_ == State::kClosed) return kNever;
  if (state_ == State::kClosing) return 0;  // the CONNECTION_CLOSE copies are due now
  if (!conn_) return kNever;
  return ngtcp2_conn_get_expiry(conn_.get());
}

void Connection::move_to_new_path(Timestamp now) {
  if (closed() || !conn_ || callback_depth_ > 0 || !handshake_reported_) return;
  now_ = now;
  ++path_generation_;
  // A new address, not only a new port: a port-only change looks like NAT rebinding,
  // after which the congestion state may be kept (RFC 9000 section 9.4).
  const uint32_t fake_ip = (127u << 24) | (1u << 16) | (path_generation_ & 0xffffu);
  if (config_.is_server) {
    remote_addr_.sin_addr.s_addr = htonl(fake_ip);
    return;  // takes effect with the next datagram from the client
  }
  local_addr_.sin_addr.s_addr = htonl(fake_ip);
  ++callback_depth_;
  int rv = ngtcp2_conn_initiate_immediate_migration(conn_.get(), &path_, now);
  --callback_depth_;
  if (rv != 0) {
    // No spare connection id yet, say: keep going on the old label; the probe timer
    // recovers, only later.
    log::debug("quic: migration to the new path not possible: %s", ngtcp2_strerror(rv));
    --path_generation_;
    local_addr_.sin_addr.s_addr = htonl(path_generation_ == 0
                                            ? INADDR_LOOPBACK
                                            : (127u << 24) | (1u << 16) | path_generation_);
    return;
  }
  after_callbacks(now);
}

void Connection::handle_expiry(Timestamp now) {
  if (closed() || !conn_ || callback_depth_ > 0) return;
  now_ = now;
  ++callback_depth_;
  int rv = ngtcp2_conn_handle_expiry(conn_.get(), now);
  --callback_depth_;
  if (rv == NGTCP2_ERR_IDLE_CLOSE) {
    // RFC 9000 section 10.1: silently closed, nothing is sent.
    finish("idle timeout");
    return;
  }
  if (rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
    finish("handshake timeout");
    return;
  }
  if (rv != 0) {
    fail(rv, now);
    return;
  }
  after_callbacks(now);
}

// Work noticed inside ngtcp2 callbacks that must wait until ngtcp2 has returned.
void Connection::after_callbacks(Timestamp now) {
  if (closed()) return;
  if (handshake_just_completed_) {
    handshake_just_completed_ = false;
    if (!tls_->remote_key()) {
      // Cannot happen unless GnuTLS skipped our check: refuse rather than trust.
      ngtcp2_connection_close_error error;
      ngtcp2_connection_close_error_default(&error);
      ngtcp2_connection_close_error_set_transport_error_tls_alert(
          &error, GNUTLS_A_BAD_CERTIFICATE, nullptr, 0);
      start_closing(error, "remote certificate was not verified", now);
      return;
    }
    state_ = State::kOpen;
    handshake_reported_ = true;
    // Before its first RTT sample ngtcp2 paced with a 333 ms initial RTT; restart the
    // pacing clock now that a sample exists (NOTES-transport.md: this removed ~25 ms
    // before the first data in the prototype).
    ngtcp2_conn_update_pkt_tx_time(conn_.get(), now);
    observer_.on_handshake_complete(*tls_->remote_key());
    if (closed()) return;
  }
  if (streams_available_) {
    streams_available_ = false;
    if (handshake_reported_) observer_.on_streams_available();
    if (closed()) return;
  }
  if (pending_close_) {
    auto [code, reason] = std::move(*pending_close_);
    pending_close_.reset();
    close(code, reason);
  }
}

// ---------------------------------------------------------------------------------------
// Output

bool Connection::flush_held_datagrams(const std::function<bool(std::span<const std::byte>)>& send) {
  while (!held_.empty()) {
    if (!send(held_.front())) return false;
    bytes_sent_ += held_.front().size();
    held_.pop_front();
  }
  return true;
}

void Connection::write(Timestamp now, const std::function<bool(std::span<const std::byte>)>& send) {
  // ngtcp2 must not be asked to write from inside its own callbacks.
  if (state_ == State::kClosed || callback_depth_ > 0) return;
  now_ = now;
  if (!flush_held_datagrams(send)) return;
  if (state_ == State::kClosing) {
    finish(closing_reason_);
    return;
  }
  if (!conn_) return;
  write_streams(now, send);
}

void Connection::enqueue(int64_t id, Stream& stream) {
  if (stream.queued || !stream.has_pending()) return;
  stream.queued = true;
  ready_.push_back(id);
}

// The write loop (ngtcp2_conn_writev_stream): each call fills at most one packet; with
// NGTCP2_WRITE_STREAM_FLAG_MORE several streams share a packet. Streams take turns
// (round robin over ready_), a flow-control-blocked stream steps aside for the pass so
// ACKs and the other streams still go out, and a pass stops at the send quantum.
void Connection::write_streams(Timestamp now,
                               const std::function<bool(std::span<const std::byte>)>& send) {
  ngtcp2_conn* conn = conn_.get();
  const size_t quantum_packets =
      std::clamp<size_t>(ngtcp2_conn_get_send_quantum(conn) / config_.max_udp_payload, 1,
                         kMaxPacketsPerPass);
  std::vector<int64_t> blocked;      // stream ids that could not send in this pass
  std::vector<int64_t> space_freed;  // on_stream_send_space owed, after the loop
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi{};
  size_t packets = 0;
  uint8_t* buffer = reinterpret_cast<uint8_t*>(scratch_.data());

  for (;;) {
    int64_t id = -1;
    Stream* stream = nullptr;
    while (!ready_.empty()) {
      id = ready_.front();
      ready_.pop_front();
      stream = find(id);
      if (stream) {
        stream->queued = false;
        if (stream->has_pending()) break;
      }
      id = -1;
      stream = nullptr;
    }

    ngtcp2_vec vecs[kMaxVecs];
    size_t vec_count = 0;
    uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_NONE;
    if (stream) {
      flags |= NGTCP2_WRITE_STREAM_FLAG_MORE;
      vec_count = stream->send.unsent_vecs(vecs, kMaxVecs);
      size_t described = 0;
      for (size_t i = 0; i < vec_count; ++i) described += vecs[i].len;
      // FIN only when this call describes every remaining byte: ngtcp2 sets it once
      // all the data given is in the frame.
      if (stream->fin_requested && described == stream->send.unsent())
        flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
    }

    ngtcp2_ssize data_length = -1;
    ngtcp2_ssize n = ngtcp2_conn_writev_stream(conn, &ps.path, &pi, buffer, scratch_.size(),
                                               &data_length, flags, id, vecs, vec_count, now);
    if (stream && data_length >= 0) {
      stream->send.mark_sent(static_cast<size_t>(data_length));
      if (stream->send_space_owed && stream->send.free_space() >= stream->send.capacity() / 4) {
        stream->send_space_owed = false;
        space_freed.push_back(id);
      }
      if ((flags & NGTCP2_WRITE_STREAM_FLAG_FIN) && stream->send.unsent() == 0)
        stream->fin_sent = true;
    }

    if (n == NGTCP2_ERR_WRITE_MORE) {
      // The packet has room for more: give the next stream a turn.
      if (stream) enqueue(id, *stream);
      continue;
    }
    if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
      // Flow control (RFC 9000 section 4.1): this stream sits out the rest of the pass.
      blocked.push_back(id);
      continue;
    }
    if (n == NGTCP2_ERR_STREAM_SHUT_WR || n == NGTCP2_ERR_STREAM_NOT_FOUND) {
      if (stream) stream->write_closed = true;
      continue;
    }
    if (n < 0) {
      fail(static_cast<int>(n), now);
      return;
    }
    if (n == 0) {
      // Congestion-limited, paced, or nothing at all to send: keep this stream's turn.
      if (stream && stream->has_pending()) {
        stream->queued = true;
        ready_.push_front(id);
      }
      break;
    }
    if (stream) enqueue(id, *stream);
    std::span<const std::byte> datagram(scratch_.data(), static_cast<size_t>(n));
    if (!send(datagram)) {
      // ngtcp2 counts it as sent; keep it and send it first when the path is writable.
      held_.emplace_back(datagram.begin(), datagram.end());
      break;
    }
    bytes_sent_ += datagram.size();
    if (++packets >= quantum_packets) break;
  }
  for (int64_t id : blocked)
    if (Stream* stream = find(id)) enqueue(id, *stream);
  ngtcp2_conn_update_pkt_tx_time(conn, now);
  // Only now, with ngtcp2 out of its write sequence, may the observer call back in. It
  // counts as a callback: a close() from it is deferred to just below.
  ++callback_depth_;
  for (int64_t id : space_freed) {
    if (closed()) break;
    if (find(id)) observer_.on_stream_send_space(id);
  }
  --callback_depth_;
  if (pending_close_ && !closed()) {
    auto [code, reason] = std::move(*pending_close_);
    pending_close_.reset();
    close(code, reason);  // queued; sent by the next write()
  }
}

// ---------------------------------------------------------------------------------------
// Streams

Connection::Stream* Connection::find(int64_t id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : &it->second;
}

std::optional<int64_t> Connection::open_stream() {
  if (state_ != State::kOpen || !handshake_reported_) return std::nullopt;
  int64_t id = -1;
  // NGTCP2_ERR_STREAM_ID_BLOCKED: the remote's MAX_STREAMS limit (RFC 9000 section 4.6).
  if (ngtcp2_conn_open_bidi_stream(conn_.get(), &id, nullptr) != 0) return std::nullopt;
  streams_.emplace(id, Stream(config_.stream_send_buffer));
  return id;
}

size_t Connection::stream_write(int64_t id, std::span<const std::byte> data) {
  Stream* stream = find(id);
  if (closed() || !stream || stream->write_closed || stream->fin_requested) return 0;
  size_t taken = stream->send.append(data);
  stream_bytes_sent_ += taken;
  if (taken < data.size()) stream->send_space_owed = true;
  enqueue(id, *stream);
  return taken;
}

void Connection::stream_shutdown_write(int64_t id) {
  Stream* stream = find(id);
  if (closed() || !stream || stream->write_closed) return;
  stream->fin_requested = true;
  enqueue(id, *stream);
}

void Connection::stream_reset(int64_t id, uint64_t app_error) {
  Stream* stream = find(id);
  if (closed() || !stream) return;
  // RESET_STREAM + STOP_SENDING (RFC 9000 section 3.5). The send buffer stays until
  // ngtcp2 closes the stream: frames already built may still point into it.
  ngtcp2_conn_shutdown_stream(conn_.get(), id, app_error);
  stream->write_closed = true;
  stream->reset_reported = true;  // the remote's answering RESET_STREAM is no news
  stream->send_space_owed = false;
  // The application stops reading: return the credit of what it will never consume.
  if (stream->unconsumed > 0) {
    ngtcp2_conn_extend_max_offset(conn_.get(), stream->unconsumed);
    stream->unconsumed = 0;
  }
}

void Connection::stream_consumed(int64_t id, size_t bytes) {
  Stream* stream = find(id);
  if (closed() || !stream) return;
  uint64_t n = std::min<uint64_t>(bytes, stream->unconsumed);
  if (n == 0) return;
  stream->unconsumed -= n;
  // ngtcp2 sends MAX_STREAM_DATA / MAX_DATA once enough credit has accumulated.
  ngtcp2_conn_extend_max_stream_offset(conn_.get(), id, n);
  ngtcp2_conn_extend_max_offset(conn_.get(), n);
}

void Connection::handle_remote_reset(int64_t id, uint64_t app_error, bool stop_sending) {
  Stream* stream = find(id);
  if (!stream) return;
  if (stop_sending) {
    // ngtcp2 answers STOP_SENDING with RESET_STREAM by itself (RFC 9000 section 3.5).
    stream->write_closed = true;
    stream->send_space_owed = false;
  }
  if (stream->reset_reported) return;
  stream->reset_reported = true;
  // An aborted stream's unread bytes will not be consumed by the application.
  if (stream->unconsumed > 0) {
    ngtcp2_conn_extend_max_offset(conn_.get(), stream->unconsumed);
    stream->unconsumed = 0;
  }
  observer_.on_stream_reset(id, app_error);
}

// ---------------------------------------------------------------------------------------
// Closing

void Connection::close(uint64_t app_error, const std::string& reason) {
  if (closed()) return;
  closed_in_order_ = app_error == 0;
  if (callback_depth_ > 0) {
    // Inside an ngtcp2 callback: ngtcp2 cannot write now; after_callbacks() will.
    if (!pending_close_) pending_close_.emplace(app_error, reason);
    return;
  }
  if (!conn_) {
    finish(reason);
    return;
  }
  ngtcp2_connection_close_error error;
  ngtcp2_connection_close_error_default(&error);
  ngtcp2_connection_close_error_set_application_error(
      &error, app_error, reinterpret_cast<const uint8_t*>(reason.data()), reason.size());
  start_closing(error, reason, now_);
}

void Connection::fail(int liberr, Timestamp now) {
  log::debug("quic: fatal error: %s", ngtcp2_strerror(liberr));
  ngtcp2_connection_close_error error;
  ngtcp2_connection_close_error_default(&error);
  ngtcp2_connection_close_error_set_transport_error_liberr(&error, liberr, nullptr, 0);
  start_closing(error, std::string("QUIC error: ") + ngtcp2_strerror(liberr), now);
}

void Connection::start_closing(const ngtcp2_connection_close_error& error,
                               const std::string& reason, Timestamp now) {
  if (closed()) return;
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi{};
  ngtcp2_ssize n = ngtcp2_conn_write_connection_close(
      conn_.get(), &ps.path, &pi, reinterpret_cast<uint8_t*>(scratch_.data()), scratch_.size(),
      &error, now);
  if (n <= 0) {
    // Nothing can be sent (e.g. no keys yet): the remote will time out.
    finish(reason);
    return;
  }
  held_.clear();  // stale data packets are pointless now
  for (int i = 0; i < kCloseCopies; ++i)
    held_.emplace_back(scratch_.begin(), scratch_.begin() + n);
  ready_.clear();
  state_ = State::kClosing;
  closing_reason_ = reason;
}

void Connection::finish(const std::string& reason) {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  held_.clear();
  ready_.clear();
  pending_close_.reset();
  observer_.on_connection_closed(reason);
}

bool Connection::remote_closed_without_error() const {
  if (!conn_) return false;
  ngtcp2_connection_close_error error;
  ngtcp2_connection_close_error_default(&error);
  ngtcp2_conn_get_connection_close_error(conn_.get(), &error);
  return error.error_code == 0 &&
         (error.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION ||
          error.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT);
}

std::string Connection::remote_close_reason() const {
  if (!conn_) return "unknown";
  ngtcp2_connection_close_error error;
  ngtcp2_connection_close_error_default(&error);
  ngtcp2_conn_get_connection_close_error(conn_.get(), &error);
  return describe_error(error);
}

Connection::Stats Connection::stats() const {
  Stats stats{};
  if (conn_) {
    ngtcp2_conn_stat cs;
    ngtcp2_conn_get_conn_stat(conn_.get(), &cs);
    stats.smoothed_rtt = cs.smoothed_rtt;
    stats.min_rtt = cs.min_rtt == UINT64_MAX ? cs.smoothed_rtt : cs.min_rtt;
    stats.rtt_sampled = cs.min_rtt != UINT64_MAX;
    stats.cwnd = cs.cwnd;
    stats.bytes_in_flight = cs.bytes_in_flight;
    stats.delivery_rate = cs.delivery_rate_sec;
  }
  stats.bytes_sent = bytes_sent_;
  stats.bytes_received = bytes_received_;
  stats.stream_bytes_sent = stream_bytes_sent_;
  stats.stream_bytes_received = stream_bytes_received_;
  stats.open_streams = streams_.size();
  return stats;
}

// ---------------------------------------------------------------------------------------
// ngtcp2 callbacks. They run inside ngtcp2_conn_read_pkt / handle_expiry / writev_stream,
// return 0 or NGTCP2_ERR_CALLBACK_FAILURE, and never let an exception through C code.

ngtcp2_conn* Connection::get_conn(ngtcp2_crypto_conn_ref* ref) {
  return static_cast<Connection*>(ref->user_data)->conn_.get();
}

int Connection::on_handshake_completed_cb(ngtcp2_conn*, void* user_data) {
  static_cast<Connection*>(user_data)->handshake_just_completed_ = true;
  return 0;
}

int Connection::on_recv_stream_data_cb(ngtcp2_conn*, uint32_t flags, int64_t id, uint64_t,
                                       const uint8_t* data, size_t len, void* user_data, void*) {
  auto* self = static_cast<Connection*>(user_data);
  try {
    Stream* stream = self->find(id);
    if (!stream) return 0;
    stream->unconsumed += len;
    self->stream_bytes_received_ += len;
    self->observer_.on_stream_data(id, {reinterpret_cast<const std::byte*>(data), len},
                                   (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0);
    return 0;
  } catch (const std::exception& e) {
    log::error("quic: on_stream_data threw: %s", e.what());
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
}

int Connection::on_acked_stream_data_cb(ngtcp2_conn*, int64_t id, uint64_t offset, uint64_t len,
                                        void* user_data, void*) {
  auto* self = static_cast<Connection*>(user_data);
  try {
    Stream* stream = self->find(id);
    if (!stream) return 0;
    // ngtcp2 reports the acknowledged prefix growing, like a TCP cumulative ACK: the
    // memory below it is ours again.
    stream->send.acknowledge_to(offset + len);
    return 0;
  } catch (const std::exception& e) {
    log::error("quic: releasing acknowledged data failed: %s", e.what());
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
}

int Connection::on_stream_open_cb(ngtcp2_conn*, int64_t id, void* user_data) {
  auto* self = static_cast<Connection*>(user_data);
  try {
    // Only called for streams the remote opened; unidirectional ones are refused by
    // our transport parameters (initial_max_streams_uni = 0).
    if (!ngtcp2_is_bidi_stream(id)) return 0;
    self->streams_.emplace(id, Stream(self->config_.stream_send_buffer));
    self->observer_.on_remote_stream_opened(id);
    return 0;
  } catch (const std::exception& e) {
    log::error("quic: on_remote_stream_opened threw: %s", e.what());
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
}

int Connection::on_stream_close_cb(ngtcp2_conn* conn, uint32_t, int64_t id, uint64_t,
                                   void* user_data, void*) {
  auto* self = static_cast<Connection*>(user_data);
  try {
    auto it = self->streams_.find(id);
    if (it == self->streams_.end()) return 0;
    // Credit of bytes the application never consumed goes back to the connection
    // window, or it would shrink for good.
    if (it->second.unconsumed > 0) ngtcp2_conn_extend_max_offset(conn, it->second.unconsumed);
    self->streams_.erase(it);
    // Let the remote open another stream in place of this one (RFC 9000 section 4.6).
    if (!ngtcp2_conn_is_local_stream(conn, id)) ngtcp2_conn_extend_max_streams_bidi(conn, 1);
    self->observer_.on_stream_closed(id);
    return 0;
  } catch (const std::exception& e) {
    log::error("quic: on_stream_closed threw: %s", e.what());
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
}

int Connection::on_stream_reset_cb(ngtcp2_conn*, int64_t id, uint64_t, uint64_t app_error,
                                   void* user_data, void*) {
  auto* self = static_cast<Connection*>(user_data);
  try {
    self->handle_remote_reset(id, app_error, false);
    return 0;
  } catch (const std::exception& e) {
    log::error("quic: on_stream_reset threw: %s", e.what());
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
}

int Connection::on_stream_stop_sending_cb(ngtcp2_conn*, int64_t id, uint64_t app_error,
                                          void* user_data, void*) {
  auto* self = static_cast<Connection*>(user_data);
  try {
    self->handle_remote_reset(id, app_error, true);
    return 0;
  } catch (const std::exception& e) {
    log::error("quic: on_stream_reset threw: %s", e.what());
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
}

int Connection::on_extend_max_local_streams_cb(ngtcp2_conn*, uint64_t, void* user_data) {
  static_cast<Connection*>(user_data)->streams_available_ = true;
  return 0;
}

int Connection::on_extend_max_stream_data_cb(ngtcp2_conn*, int64_t id, uint64_t, void* user_data,
                                             void*) {
  auto* self = static_cast<Connection*>(user_data);
  if (Stream* stream = self->find(id)) self->enqueue(id, *stream);
  return 0;
}

void Connection::rand_cb(uint8_t* dest, size_t len, const ngtcp2_rand_ctx*) {
  // ngtcp2 uses this for non-secret choices (e.g. PING padding); gnutls_rnd cannot
  // fail in practice, and this callback has no way to report it.
  (void)gnutls_rnd(GNUTLS_RND_NONCE, dest, len);
}

int Connection::get_new_connection_id_cb(ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token,
                                         size_t cidlen, void*) {
  // RFC 9000 section 5.1.1 (NEW_CONNECTION_ID) and 10.3 (stateless reset token).
  if (gnutls_rnd(GNUTLS_RND_RANDOM, cid->data, cidlen) != 0 ||
      gnutls_rnd(GNUTLS_RND_RANDOM, token, NGTCP2_STATELESS_RESET_TOKENLEN) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  cid->datalen = cidlen;
  return 0;
}

}  // namespace natfwd::quic

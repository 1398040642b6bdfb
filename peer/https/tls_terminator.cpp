#include "https/tls_terminator.h"

#include <cstring>
#include <stdexcept>

#include "log.h"
#include "openssl_handles.h"

namespace natfwd {
namespace {

// Plaintext read from SSL at a time: one TLS record's worth (RFC 8446 section 5.1).
constexpr size_t kPlaintextChunk = 16 * 1024;
// PROXY protocol v2: a 16-byte fixed header whose last two bytes are the length of
// what follows (haproxy's proxy-protocol.txt section 2.2).
constexpr size_t kProxyFixedHeader = 16;
constexpr std::string_view kAcmeTlsAlpn = "acme-tls/1";
// What a TLS failure with nothing on OpenSSL's error queue means here.
constexpr const char* kNoTlsError = "connection ended";
// What a visitor whose handshake went through sees when the target cannot be reached.
constexpr std::string_view kBadGateway =
    "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 44\r\n"
    "Connection: close\r\n\r\nThe published service at home is not running\n";

}  // namespace

TlsTerminator::TlsTerminator(SSL_CTX* ctx, TargetOpener open_target, bool proxy_header)
    : open_target_(std::move(open_target)), proxy_header_(proxy_header) {
  // SSL_new holds its own reference to the context: a renewal may replace it.
  ssl_.reset(SSL_new(ctx));
  if (!ssl_)
    throw std::runtime_error("cannot create a TLS connection: " +
                             openssl_error_text(kNoTlsError));
  network_in_ = BIO_new(BIO_s_mem());
  network_out_ = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl_.get(), network_in_, network_out_);
  SSL_set_accept_state(ssl_.get());
}

TlsTerminator::~TlsTerminator() {
  *alive_ = false;
  attempt_.reset();
  target_.reset();
}

void TlsTerminator::start(Stream& stream) {
  stream_ = &stream;
}

void TlsTerminator::receive(std::span<const std::byte> data) {
  if (closed_ || phase_ == Phase::kDone) {
    stream_->delivered(data.size());
    return;
  }
  uncredited_ += data.size();
  if (proxy_header_) {
    // Collected whole before any TLS byte; the relay writes it in one piece first.
    const size_t before = prefix_.size();
    prefix_.insert(prefix_.end(), data.begin(), data.end());
    if (prefix_.size() < kProxyFixedHeader) return;
    const size_t whole = kProxyFixedHeader + ((std::to_integer<size_t>(prefix_[14]) << 8) |
                                              std::to_integer<size_t>(prefix_[15]));
    if (prefix_.size() < whole) return;
    data = data.subspan(whole - before);
    prefix_.resize(whole);
    proxy_header_ = false;
  }
  if (!data.empty()) BIO_write(network_in_, data.data(), static_cast<int>(data.size()));
  advance();
}

void TlsTerminator::advance() {
  if (phase_ == Phase::kHandshake) handshake();
  if (closed_) return;
  if (phase_ == Phase::kOpening || phase_ == Phase::kForwarding) decrypt();
  if (closed_) return;
  credit_stream();
}

void TlsTerminator::handshake() {
  const int result = SSL_do_handshake(ssl_.get());
  if (!flush_records()) return;
  if (result != 1) {
    const int error = SSL_get_error(ssl_.get(), result);
    if (error == SSL_ERROR_WANT_READ) {
      if (stream_ended_) end_quietly();
      return;
    }
    // A visitor's broken or refused handshake (no shared cipher, a scanner): its
    // alert is out; this connection ends, nothing else does.
    log::debug("https visitor: TLS handshake failed: %s",
               openssl_error_text(kNoTlsError).c_str());
    fail("TLS handshake failed");
    return;
  }
  const unsigned char* alpn = nullptr;
  unsigned alpn_size = 0;
  SSL_get0_alpn_selected(ssl_.get(), &alpn, &alpn_size);
  if (std::string_view(reinterpret_cast<const char*>(alpn), alpn_size) == kAcmeTlsAlpn) {
    // RFC 8737 section 3: the CA only looks at the certificate; nothing follows.
    end_quietly();
    return;
  }
  phase_ = Phase::kOpening;
  open_target();
}

void TlsTerminator::decrypt() {
  std::byte buffer[kPlaintextChunk];
  while (!closed_ && phase_ != Phase::kDone) {
    const int n = SSL_read(ssl_.get(), buffer, sizeof buffer);
    if (n <= 0) {
      const int error = SSL_get_error(ssl_.get(), n);
      if (!flush_records()) return;
      if (error == SSL_ERROR_WANT_READ) break;
      if (error == SSL_ERROR_ZERO_RETURN) {
        stream_ended_ = true;  // close_notify: the visitor's end, as a FIN would be
        break;
      }
      log::debug("https visitor: TLS failed: %s", openssl_error_text(kNoTlsError).c_str());
      fail("TLS failed");
      return;
    }
    const std::span<const std::byte> plain(buffer, static_cast<size_t>(n));
    if (phase_ == Phase::kOpening) {
      to_target_.insert(to_target_.end(), plain.begin(), plain.end());
    } else {
      plaintext_pending_ += plain.size();
      target_->receive(plain);
    }
  }
  if (closed_) return;
  if (stream_ended_ && phase_ == Phase::kForwarding && !target_told_end_) {
    target_told_end_ = true;
    target_->receive_end();
  }
}

bool TlsTerminator::flush_records() {
  char buffer[kPlaintextChunk];
  while (!closed_ && BIO_pending(network_out_) > 0) {
    const int n = BIO_read(network_out_, buffer, sizeof buffer);
    if (n <= 0) break;
    stream_full_ = !stream_->send(std::as_bytes(std::span(buffer, static_cast<size_t>(n))));
  }
  return !closed_;
}

void TlsTerminator::credit_stream() {
  // Hold the credit while plaintext waits for the target: the visitor's window then
  // bounds what is buffered here.
  if (uncredited_ == 0 || plaintext_pending_ > 0 || !to_target_.empty()) return;
  const size_t bytes = uncredited_;
  uncredited_ = 0;
  stream_->delivered(bytes);
}

void TlsTerminator::end_quietly() {
  phase_ = Phase::kDone;
  SSL_shutdown(ssl_.get());
  if (!flush_records()) return;
  stream_->send_end();
  if (closed_) return;
  stream_->write_shut();
  if (closed_) return;
  credit_stream();
}

void TlsTerminator::open_target() {
  std::weak_ptr<bool> alive = alive_;
  attempt_ = open_target_([this, alive](LocalConnector::Result result) {
    auto still = alive.lock();
    if (still && *still) target_opened(std::move(result));
  });
}

void TlsTerminator::target_opened(LocalConnector::Result result) {
  if (closed_ || phase_ != Phase::kOpening) return;
  if (!result.endpoint) {
    log::warn("https visitor: cannot reach the published target: %s", result.error.c_str());
    SSL_write(ssl_.get(), kBadGateway.data(), static_cast<int>(kBadGateway.size()));
    to_target_.clear();
    end_quietly();
    return;
  }
  target_ = std::move(result.endpoint);
  target_->start(target_side_);
  phase_ = Phase::kForwarding;
  if (!prefix_.empty()) {
    plaintext_pending_ += prefix_.size();
    target_->receive(prefix_);
    if (closed_) return;
  }
  if (!to_target_.empty()) {
    std::vector<std::byte> held = std::move(to_target_);
    to_target_.clear();
    plaintext_pending_ += held.size();
    target_->receive(held);
    if (closed_) return;
  }
  advance();
}

bool TlsTerminator::from_target(std::span<const std::byte> data) {
  if (closed_ || phase_ != Phase::kForwarding) return false;
  // Memory BIOs take everything: SSL_write returns the whole size or fails.
  if (!data.empty() &&
      SSL_write(ssl_.get(), data.data(), static_cast<int>(data.size())) <= 0) {
    fail("TLS write failed: " + openssl_error_text(kNoTlsError));
    return false;
  }
  if (!flush_records()) return false;
  return !stream_full_;
}

void TlsTerminator::target_ended() {
  if (closed_ || phase_ != Phase::kForwarding) return;
  SSL_shutdown(ssl_.get());  // close_notify, RFC 8446 section 6.1
  if (!flush_records()) return;
  stream_->send_end();
}

void TlsTerminator::target_delivered(size_t bytes) {
  plaintext_pending_ -= std::min(bytes, plaintext_pending_);
  if (!closed_) credit_stream();
}

void TlsTerminator::target_write_shut() {
  if (!closed_) stream_->write_shut();
}

void TlsTerminator::fail(const std::string& why) {
  if (closed_) return;
  stream_->failed(why);
}

void TlsTerminator::receive_end() {
  if (closed_) return;
  stream_ended_ = true;
  if (phase_ == Phase::kHandshake) {
    end_quietly();
  } else if (phase_ == Phase::kForwarding && !target_told_end_) {
    target_told_end_ = true;
    target_->receive_end();
  }
  // kOpening: target_opened() passes the end on after the held plaintext.
}

void TlsTerminator::on_send_space() {
  stream_full_ = false;
  if (target_ && !closed_) target_->on_send_space();
}

void TlsTerminator::close(bool reset) {
  if (closed_) return;
  closed_ = true;
  phase_ = Phase::kDone;
  attempt_.reset();
  if (target_) target_->close(reset);
}

}  // namespace natfwd

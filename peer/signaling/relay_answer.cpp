#include "signaling/relay_answer.h"

#include <sys/socket.h>

#include <cstdio>

#include "frame.h"
#include "log.h"

namespace natfwd {
namespace {

// Enough for a banner's or a status line's first words, and for a frame header.
constexpr size_t kKeptBytes = 64;
constexpr size_t kQuotedChars = 40;

bool is_tls_record(std::string_view bytes) {
  // RFC 8446 section 5.1: content type change_cipher_spec (20), alert (21), handshake
  // (22) or application_data (23, which carries TLS 1.3's encrypted handshake), then
  // legacy version 3.x.
  return bytes.size() >= 2 && bytes[0] >= 0x14 && bytes[0] <= 0x17 && bytes[1] == 0x03;
}

// The first line, cut short, if it is printable text; "" otherwise.
std::string text_line(std::string_view bytes) {
  std::string line;
  for (char c : bytes) {
    if (c == '\r' || c == '\n') break;
    if (c < 0x20 || c > 0x7e) return "";
    if (line.size() == kQuotedChars) {
      line += "...";
      break;
    }
    line += c;
  }
  return line;
}

class RecordingStream : public ByteStream {
 public:
  RecordingStream(std::unique_ptr<ByteStream> inner, std::shared_ptr<FirstBytes> seen)
      : inner_(std::move(inner)), seen_(std::move(seen)) {}

  Io read(std::span<std::byte> buffer, size_t& n, std::string& error) override {
    peek_raw();
    const Io status = inner_->read(buffer, n, error);
    if (status == Io::kOk && seen_->decoded.size() < kKeptBytes) {
      const size_t keep = std::min(n, kKeptBytes - seen_->decoded.size());
      seen_->decoded.append(reinterpret_cast<const char*>(buffer.data()), keep);
    }
    return status;
  }
  Io write(std::span<const std::byte> data, size_t& n, std::string& error) override {
    peek_raw();  // a TLS handshake may read inside a write
    return inner_->write(data, n, error);
  }
  GIOCondition wait_condition() const override { return inner_->wait_condition(); }
  bool has_buffered_input() const override { return inner_->has_buffered_input(); }
  void shutdown_write() override { inner_->shutdown_write(); }
  GSocket* socket() const override { return inner_->socket(); }

 private:
  // Before every call into the inner stream, until something came: what is waiting
  // in the socket then is the start of what the server sent, since only the inner
  // stream's calls consume it.
  void peek_raw() {
    if (!seen_->raw.empty()) return;
    char buffer[kKeptBytes];
    const ssize_t got = recv(g_socket_get_fd(inner_->socket()), buffer, sizeof buffer,
                             MSG_PEEK | MSG_DONTWAIT);
    if (got > 0) seen_->raw.assign(buffer, static_cast<size_t>(got));
  }

  std::unique_ptr<ByteStream> inner_;
  std::shared_ptr<FirstBytes> seen_;
};

}  // namespace

std::string foreign_protocol(std::string_view bytes) {
  if (bytes.empty()) return "";
  const auto magic0 = static_cast<char>(wire::kFrameMagic0);
  const auto magic1 = static_cast<char>(wire::kFrameMagic1);
  if (bytes[0] == magic0 && (bytes.size() == 1 || bytes[1] == magic1)) return "";
  const std::string line = text_line(bytes);
  if (bytes.starts_with("SSH-")) return "SSH ('" + line + "')";
  if (bytes.starts_with("HTTP/")) return "HTTP ('" + line + "')";
  // A server that takes our bytes for an HTTP/0.9 request answers with the page alone.
  if (bytes.starts_with("<!DOCTYPE") || bytes.starts_with("<!doctype") ||
      bytes.starts_with("<html") || bytes.starts_with("<HTML"))
    return "HTTP ('" + line + "')";
  if (is_tls_record(bytes)) return "TLS";
  if (!line.empty()) return "'" + line + "'";
  std::string hex;
  for (size_t i = 0; i < bytes.size() && i < 8; ++i) {
    char byte[4];
    snprintf(byte, sizeof byte, "%s%02x", i ? " " : "", static_cast<unsigned char>(bytes[i]));
    hex += byte;
  }
  return "binary data (" + hex + (bytes.size() > 8 ? " ..." : "") + ")";
}

std::string_view bytes_to_judge(const FirstBytes& seen, bool tls) {
  if (tls && !seen.raw.empty() && !is_tls_record(seen.raw)) return seen.raw;
  if (!tls && seen.decoded.empty()) return seen.raw;
  return seen.decoded;
}

std::unique_ptr<ByteStream> record_first_bytes(std::unique_ptr<ByteStream> inner,
                                               std::shared_ptr<FirstBytes> seen) {
  return std::make_unique<RecordingStream>(std::move(inner), std::move(seen));
}


RelayProbe::RelayProbe(const ConnectOptions& options, unsigned timeout_seconds, Done done)
    : done_(std::move(done)), seen_(std::make_shared<FirstBytes>()) {
  ConnectOptions plain = options;
  plain.tls = false;
  plain.tls_check = nullptr;
  plain.timeout_seconds = timeout_seconds;
  attempt_ = std::make_unique<ConnectAttempt>(
      plain, [this](std::unique_ptr<ByteStream> stream, const std::string& error) {
        delete_later(std::move(attempt_));
        if (!stream) return finish({false, "", error});
        ask(std::move(stream));
      });
  timer_.reset(g_timeout_add_seconds(timeout_seconds, on_timeout, this));
}

RelayProbe::~RelayProbe() {
  finished_ = true;
  if (link_) link_->close();
}

gboolean RelayProbe::on_timeout(gpointer self) {
  auto* probe = static_cast<RelayProbe*>(self);
  probe->timer_.release();
  guard_callback("relay probe: timeout", [probe] {
    const std::string foreign = foreign_protocol(bytes_to_judge(*probe->seen_, false));
    probe->finish({false, foreign, foreign.empty() ? "connected, but nothing answered" : ""});
  });
  return G_SOURCE_REMOVE;
}

void RelayProbe::ask(std::unique_ptr<ByteStream> stream) {
  link_ = std::make_unique<FramedConnection>(
      record_first_bytes(std::move(stream), seen_),
      [this](const wire::Envelope&) { finish({true, "", ""}); },
      [this](const std::string& reason) {
        const std::string foreign = foreign_protocol(bytes_to_judge(*seen_, false));
        finish({false, foreign, foreign.empty() ? "the connection closed: " + reason : ""});
      });
  // Every relay port takes plain frames (it tells them from TLS by the first byte) and
  // answers a Hello with a frame (a Challenge); the key is thrown away.
  wire::Envelope hello;
  hello.mutable_hello()->set_protocol_version(wire::kProtocolVersion);
  const Identity throwaway = Identity::generate();
  hello.mutable_hello()->set_public_key(
      std::string(reinterpret_cast<const char*>(throwaway.public_key().data()),
                  throwaway.public_key().size()));
  hello.mutable_hello()->set_software("natfwd-peer " NATFWD_VERSION " probe");
  link_->send(hello);
}

void RelayProbe::finish(const Answer& answer) {
  if (finished_) return;
  finished_ = true;
  timer_.reset();
  if (link_) {
    link_->close();
    delete_later(std::move(link_));  // we may be inside its callback
  }
  done_(answer);  // may destroy this
}

}  // namespace natfwd

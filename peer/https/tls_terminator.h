// The visitor's end of an https publish: a LocalEndpoint (tunnel/local_endpoint.h)
// that terminates TLS on the stream the relay's front door passed through untouched
// by SNI, and carries the plaintext to a second LocalEndpoint, the TCP connection to
// the published target, opened once the handshake is done.
//
//   stream (TLS records) -> SSL (memory BIOs) -> plaintext -> target
//   target plaintext -> SSL -> TLS records -> stream
//
// Flow control: TLS bytes from the stream are reported delivered once the plaintext
// they carried has been delivered to the target (handshake bytes at once), so a slow
// target stops the visitor as it would behind a plain TCP publish.
// A handshake that negotiated ALPN acme-tls/1 (RFC 8737 section 3) has done its job
// when it completes: the connection ends there and no target is opened.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <openssl/ssl.h>

#include "tunnel/local_endpoint.h"

namespace natfwd {

class TlsTerminator final : public LocalEndpoint {
 public:
  // Opens the target's endpoint; `done` runs later, never inside the call.
  using TargetOpener =
      std::function<std::unique_ptr<LocalConnector::Attempt>(LocalConnector::Done done)>;

  // `ctx`: the publish's server context (certificate, ALPN), used at once.
  // `proxy_header`: the stream starts with a PROXY v2 header the relay put before the
  // visitor's TLS bytes; it goes to the target as it is, before the plaintext.
  TlsTerminator(SSL_CTX* ctx, TargetOpener open_target, bool proxy_header);
  ~TlsTerminator() override;
  TlsTerminator(const TlsTerminator&) = delete;
  TlsTerminator& operator=(const TlsTerminator&) = delete;

  // LocalEndpoint
  void start(Stream& stream) override;
  void receive(std::span<const std::byte> data) override;
  void receive_end() override;
  void on_send_space() override;
  void close(bool reset) override;

 private:
  // What the target's endpoint sees as its stream: the plaintext side.
  class TargetSide final : public LocalEndpoint::Stream {
   public:
    explicit TargetSide(TlsTerminator& owner) : owner_(owner) {}
    bool send(std::span<const std::byte> data) override { return owner_.from_target(data); }
    void send_end() override { owner_.target_ended(); }
    void delivered(size_t bytes) override { owner_.target_delivered(bytes); }
    void write_shut() override { owner_.target_write_shut(); }
    void failed(const std::string& why) override { owner_.fail(why); }

   private:
    TlsTerminator& owner_;
  };

  enum class Phase { kHandshake, kOpening, kForwarding, kDone };

  void take_proxy_header();
  void advance();
  void handshake();
  void decrypt();
  bool flush_records();
  void open_target();
  void target_opened(LocalConnector::Result result);
  bool from_target(std::span<const std::byte> data);
  void target_ended();
  void target_delivered(size_t bytes);
  void target_write_shut();
  void fail(const std::string& why);
  void end_quietly();
  void credit_stream();

  TargetOpener open_target_;
  bool proxy_header_;  // the stream starts with a PROXY v2 header not yet taken
  std::vector<std::byte> prefix_;  // that header, for the target
  std::unique_ptr<SSL, void (*)(SSL*)> ssl_{nullptr, SSL_free};
  BIO* network_in_ = nullptr;   // owned by ssl_: TLS bytes from the stream
  BIO* network_out_ = nullptr;  // owned by ssl_: TLS bytes to the stream
  Stream* stream_ = nullptr;
  Phase phase_ = Phase::kHandshake;
  bool closed_ = false;
  bool stream_ended_ = false;     // the visitor's FIN
  bool target_told_end_ = false;  // receive_end() passed to the target
  bool stream_full_ = false;      // the last send() to the stream said stop
  size_t uncredited_ = 0;         // stream bytes taken, not yet reported delivered
  size_t plaintext_pending_ = 0;  // plaintext given to the target, not yet delivered
  std::vector<std::byte> to_target_;  // plaintext decrypted before the target was open
  TargetSide target_side_{*this};
  std::unique_ptr<LocalConnector::Attempt> attempt_;
  std::unique_ptr<LocalEndpoint> target_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace natfwd

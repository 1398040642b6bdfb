// The serving peer's side of an https publish (`--publish https:[HOST:]PORT,...`): the
// relay's front door passes visitors' TLS through by SNI, and this peer terminates it
// with its own certificate, so neither the relay nor anything between sees the
// plaintext; the target at home gets plain HTTP/1.1 (or bytes).
//
// It is the LocalConnector of the front door's tunnels: a stream to the https
// publish's target becomes a TlsTerminator (tls_terminator.h) that opens the target
// after the handshake; any other published target is a plain TCP connection.
#pragma once

#include <memory>
#include <string>

#include "byte_stream.h"
#include "https/certificate.h"
#include "publish/publish_spec.h"
#include "tunnel/stream_bridge.h"

namespace natfwd {

class HttpsServer final : public LocalConnector {
 public:
  // `publish`: the https publish (kind kHttps), which outlives this. Throws with a
  // one-line reason when its certificate or key cannot be used. `targets` opens the
  // plaintext's connection to the target (with the publish's auth gate, say) and
  // outlives this.
  HttpsServer(const PublishSpec& publish, LocalConnector& targets);

  // The relay granted the publish as NAME.DOMAIN: the ready line, once a certificate
  // is in hand.
  void on_published(const std::string& host_name);

  // LocalConnector
  std::unique_ptr<Attempt> connect(const HostPort& target, Done done) override;

 private:
  const PublishSpec& publish_;
  SslCtxPtr ctx_;
  X509Ptr certificate_;  // the leaf being served
  LocalConnector& targets_;
  TcpConnector tcp_;
};

}  // namespace natfwd

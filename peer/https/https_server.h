// The serving peer's side of an https publish (`--publish https:[HOST:]PORT,...`): the
// relay's front door passes visitors' TLS through by SNI, and this peer terminates it
// with its own certificate, so neither the relay nor anything between sees the
// plaintext; the target at home gets plain HTTP/1.1 (or bytes).
//
// The certificate is the publish's cert=/key= files, or, without them, one an
// AcmeAgent keeps for NAME.DOMAIN (acme/acme_agent.h): until that one is in hand only
// the CA's TLS-ALPN-01 handshakes get through (RFC 8737 section 3: a ClientHello for
// the name offering ALPN acme-tls/1 gets the challenge certificate), every other
// handshake fails rather than meet an invalid certificate. A renewed certificate
// serves new connections; open ones keep the one they started with.
//
// It is the LocalConnector of the front door's tunnels: a stream to the https
// publish's target becomes a TlsTerminator (tls_terminator.h) that opens the target
// after the handshake; any other published target is a plain TCP connection.
#pragma once

#include <memory>
#include <string>

#include "acme/acme_agent.h"
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
  // outlives this. `acme`: where a publish without cert= gets its certificate
  // (directory_url empty: it has one).
  HttpsServer(const PublishSpec& publish, LocalConnector& targets,
              acme::AcmeAgent::Settings acme);
  ~HttpsServer() override;

  // The relay granted the publish as NAME.DOMAIN: the ready line, once a certificate
  // is in hand (from the files at once; from ACME when the agent has one).
  void on_published(const std::string& host_name);

  // LocalConnector
  std::unique_ptr<Attempt> connect(const HostPort& target, Done done) override;

 private:
  static int on_client_hello(SSL* ssl, int* alert, void* data);
  void use_certificate(const acme::AcmeAgent::Certificate& certificate);
  void use_challenge(X509* certificate, EVP_PKEY* key);

  const PublishSpec& publish_;
  LocalConnector& targets_;
  acme::AcmeAgent::Settings acme_settings_;
  std::string host_name_;  // NAME.DOMAIN once published
  SslCtxPtr ctx_;          // for new connections; each SSL holds its own reference
  X509Ptr certificate_;    // the leaf being served; null until there is one
  X509Ptr challenge_certificate_;  // RFC 8737 while the CA validates; null otherwise
  EvpPkeyPtr challenge_key_;
  bool ready_ = false;  // the ready line is out
  TcpConnector tcp_;
  std::unique_ptr<acme::AcmeAgent> agent_;  // after the state its events reach
};

}  // namespace natfwd

#include "https/https_server.h"

#include <glib.h>

#include <stdexcept>

#include "glib_ptr.h"
#include "https/certificate.h"
#include "https/tls_terminator.h"
#include "log.h"

namespace natfwd {
namespace {

// TLS 1.2 suites with forward secrecy and AEAD only (Mozilla's "intermediate"
// profile); TLS 1.3's suites are all of that kind and stay OpenSSL's default.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
// The target speaks HTTP/1.1 (RFC 7301 section 3.1: the protocol ids); a client that
// offers only h2 goes on without ALPN.
constexpr unsigned char kAlpnHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

int select_alpn(SSL*, const unsigned char** out, unsigned char* out_size,
                const unsigned char* offered, unsigned offered_size, void*) {
  unsigned char* chosen = nullptr;
  if (SSL_select_next_proto(&chosen, out_size, kAlpnHttp11, sizeof kAlpnHttp11, offered,
                            offered_size) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

SslCtxPtr make_https_context(const std::string& cert_file, const std::string& key_file) {
  SslCtxPtr ctx = make_tls_server_context(cert_file, key_file);
  SSL_CTX_set_cipher_list(ctx.get(), kTls12Ciphers);
  SSL_CTX_set_options(ctx.get(), SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_alpn_select_cb(ctx.get(), select_alpn, nullptr);
  return ctx;
}

// Hands the endpoint over from the main loop: a connect's `done` never runs inside
// connect().
class ReadyAttempt final : public LocalConnector::Attempt {
 public:
  ReadyAttempt(std::unique_ptr<LocalEndpoint> endpoint, LocalConnector::Done done)
      : endpoint_(std::move(endpoint)), done_(std::move(done)) {
    idle_.reset(g_idle_source_new());
    g_source_set_callback(idle_.get(), &ReadyAttempt::on_idle, this, nullptr);
    g_source_attach(idle_.get(), nullptr);
  }

 private:
  static gboolean on_idle(gpointer data) {
    auto* self = static_cast<ReadyAttempt*>(data);
    return guard_callback("https connection", G_SOURCE_REMOVE, [self] {
      GSource* source = self->idle_.release();
      g_source_unref(source);
      LocalConnector::Result result;
      result.endpoint = std::move(self->endpoint_);
      auto done = std::move(self->done_);
      done(std::move(result));  // may destroy this attempt
      return G_SOURCE_REMOVE;
    });
  }

  std::unique_ptr<LocalEndpoint> endpoint_;
  LocalConnector::Done done_;
  GSourcePtr idle_;
};

}  // namespace

HttpsServer::HttpsServer(const PublishSpec& publish, LocalConnector& targets)
    : publish_(publish), targets_(targets) {
  if (publish.cert_file.empty())
    throw std::logic_error("an https publish without a certificate file");
  ctx_ = make_https_context(publish.cert_file, publish.key_file);
  certificate_ = read_pem_certificate_file(publish.cert_file);
}

void HttpsServer::on_published(const std::string& host_name) {
  if (!certificate_covers(certificate_.get(), host_name))
    log::warn("certificate %s does not cover %s: browsers will refuse it",
              publish_.cert_file.c_str(), host_name.c_str());
  log::ready("published https://%s/ -> %s (certificate from %s, expires %s)", host_name.c_str(),
             publish_.target.to_string().c_str(), publish_.cert_file.c_str(),
             utc_date(certificate_validity(certificate_.get()).not_after).c_str());
}

std::unique_ptr<LocalConnector::Attempt> HttpsServer::connect(const HostPort& target,
                                                              Done done) {
  if (!(target == publish_.target)) return tcp_.connect(target, std::move(done));
  auto open_target = [this](Done opened) {
    return targets_.connect(publish_.target, std::move(opened));
  };
  return std::make_unique<ReadyAttempt>(
      std::make_unique<TlsTerminator>(ctx_.get(), std::move(open_target), publish_.proxy_protocol),
      std::move(done));
}

}  // namespace natfwd

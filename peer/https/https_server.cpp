#include "https/https_server.h"

#include <glib.h>

#include <stdexcept>

#include "glib_ptr.h"
#include "https/certificate.h"
#include "https/tls_terminator.h"
#include "log.h"
#include "openssl_handles.h"

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
// RFC 8737 section 6.2: the CA's validation handshake offers only this protocol.
constexpr unsigned char kAlpnAcmeTls[] = {10, 'a', 'c', 'm', 'e', '-', 't', 'l', 's', '/', '1'};

// Marks an SSL whose handshake is the CA's TLS-ALPN-01 validation.
int challenge_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

int select_alpn(SSL* ssl, const unsigned char** out, unsigned char* out_size,
                const unsigned char* offered, unsigned offered_size, void*) {
  const bool challenge = SSL_get_ex_data(ssl, challenge_index()) != nullptr;
  unsigned char* chosen = nullptr;
  if (SSL_select_next_proto(&chosen, out_size, challenge ? kAlpnAcmeTls : kAlpnHttp11,
                            challenge ? sizeof kAlpnAcmeTls : sizeof kAlpnHttp11, offered,
                            offered_size) != OPENSSL_NPN_NEGOTIATED)
    return challenge ? SSL_TLSEXT_ERR_ALERT_FATAL : SSL_TLSEXT_ERR_NOACK;
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

// An extension's body as the ClientHello carries it; empty when absent.
std::string_view client_hello_extension(SSL* ssl, unsigned type) {
  const unsigned char* data = nullptr;
  size_t size = 0;
  if (SSL_client_hello_get0_ext(ssl, type, &data, &size) != 1) return {};
  return {reinterpret_cast<const char*>(data), size};
}

// The ALPN list (RFC 7301 section 3.1: a 2-byte length, then 1-byte-length names)
// names acme-tls/1.
bool offers_acme_tls(std::string_view list) {
  if (list.size() < 2) return false;
  list.remove_prefix(2);
  const std::string_view wanted(reinterpret_cast<const char*>(kAlpnAcmeTls) + 1,
                                sizeof kAlpnAcmeTls - 1);
  while (!list.empty()) {
    const size_t size = static_cast<unsigned char>(list[0]);
    if (list.size() < 1 + size) return false;
    if (list.substr(1, size) == wanted) return true;
    list.remove_prefix(1 + size);
  }
  return false;
}

// The host_name of a server_name extension (RFC 6066 section 3: a 2-byte list length,
// then type 0 with a 2-byte length); empty when there is none.
std::string sni_host(std::string_view ext) {
  if (ext.size() < 5 || ext[2] != 0) return {};
  const size_t size = (static_cast<unsigned char>(ext[3]) << 8) | static_cast<unsigned char>(ext[4]);
  if (ext.size() < 5 + size) return {};
  return std::string(ext.substr(5, size));
}

SslCtxPtr make_base_context() {
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) throw std::runtime_error("cannot create TLS context: " + openssl_error_text("TLS error"));
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  return ctx;
}

void set_https_options(SSL_CTX* ctx, SSL_client_hello_cb_fn on_client_hello, void* data) {
  SSL_CTX_set_cipher_list(ctx, kTls12Ciphers);
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_alpn_select_cb(ctx, select_alpn, nullptr);
  SSL_CTX_set_client_hello_cb(ctx, on_client_hello, data);
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

HttpsServer::HttpsServer(const PublishSpec& publish, LocalConnector& targets,
                         acme::AcmeAgent::Settings acme)
    : publish_(publish), targets_(targets), acme_settings_(std::move(acme)) {
  if (publish.cert_file.empty()) {
    if (acme_settings_.directory_url.empty())
      throw std::logic_error("an https publish without a certificate file or ACME");
    // No certificate yet: only the CA's acme-tls/1 handshakes succeed.
    ctx_ = make_base_context();
  } else {
    ctx_ = make_tls_server_context(publish.cert_file, publish.key_file);
    certificate_ = read_pem_certificate_file(publish.cert_file);
  }
  set_https_options(ctx_.get(), &HttpsServer::on_client_hello, this);
}

HttpsServer::~HttpsServer() = default;

int HttpsServer::on_client_hello(SSL* ssl, int*, void* data) {
  auto* self = static_cast<HttpsServer*>(data);
  return guard_callback("https client hello", SSL_CLIENT_HELLO_SUCCESS, [self, ssl] {
    if (!self->challenge_certificate_ ||
        !offers_acme_tls(client_hello_extension(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation)))
      return SSL_CLIENT_HELLO_SUCCESS;
    // RFC 8737 section 3: the SNI names the identifier being validated.
    const std::string sni = sni_host(client_hello_extension(ssl, TLSEXT_TYPE_server_name));
    if (g_ascii_strcasecmp(sni.c_str(), self->host_name_.c_str()) != 0)
      return SSL_CLIENT_HELLO_SUCCESS;
    if (SSL_use_certificate(ssl, self->challenge_certificate_.get()) != 1 ||
        SSL_use_PrivateKey(ssl, self->challenge_key_.get()) != 1) {
      log::error("https: cannot use the tls-alpn-01 certificate: %s",
                 openssl_error_text("TLS error").c_str());
      return SSL_CLIENT_HELLO_ERROR;
    }
    SSL_set_ex_data(ssl, challenge_index(), self);
    log::debug("https: answering the tls-alpn-01 challenge for %s", sni.c_str());
    return SSL_CLIENT_HELLO_SUCCESS;
  });
}

void HttpsServer::use_challenge(X509* certificate, EVP_PKEY* key) {
  challenge_certificate_.reset(certificate && X509_up_ref(certificate) == 1 ? certificate : nullptr);
  challenge_key_.reset(key && EVP_PKEY_up_ref(key) == 1 ? key : nullptr);
}

void HttpsServer::use_certificate(const acme::AcmeAgent::Certificate& certificate) {
  SslCtxPtr ctx = make_tls_server_context(certificate.cert_file, certificate.key_file);
  set_https_options(ctx.get(), &HttpsServer::on_client_hello, this);
  ctx_ = std::move(ctx);  // open connections keep the context they started with
  certificate_ = read_pem_certificate_file(certificate.cert_file);
  const std::string expires = utc_date(certificate.validity.not_after);
  if (ready_) {
    log::info("acme %s: serving the renewed certificate, expires %s", host_name_.c_str(),
              expires.c_str());
    return;
  }
  ready_ = true;
  if (certificate.from_disk)
    log::info("acme %s: using the stored certificate %s", host_name_.c_str(),
              certificate.cert_file.c_str());
  log::ready("published https://%s/ -> %s (certificate from ACME, expires %s)", host_name_.c_str(),
             publish_.target.to_string().c_str(), expires.c_str());
}

void HttpsServer::on_published(const std::string& host_name) {
  host_name_ = host_name;
  if (!certificate_) {
    acme::AcmeAgent::Events events;
    events.challenge = [this](X509* certificate, EVP_PKEY* key) { use_challenge(certificate, key); };
    events.certificate = [this](const acme::AcmeAgent::Certificate& certificate) {
      use_certificate(certificate);
    };
    try {
      agent_ = std::make_unique<acme::AcmeAgent>(acme_settings_, host_name, std::move(events));
      agent_->start();
    } catch (const std::exception& e) {
      // The state dir or the CA file went bad after start: this publish stays without
      // a certificate, the rest of the peer goes on.
      agent_.reset();
      log::error("acme %s: cannot get certificates: %s", host_name.c_str(), e.what());
    }
    return;
  }
  ready_ = true;
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

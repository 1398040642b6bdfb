#include "tls_session.h"

#include <cstring>
#include <stdexcept>

#include <gnutls/x509.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include "log.h"

namespace natfwd::quic {
namespace {

// TLS 1.3 only (RFC 9001 section 4.2); no middlebox compatibility mode, which QUIC
// forbids (RFC 9001 section 8.4).
constexpr char kPriority[] = "NORMAL:-VERS-ALL:+VERS-TLS1.3:%DISABLE_TLS13_COMPAT_MODE";

void check(int rv, const char* what) {
  if (rv < 0) throw std::runtime_error(std::string(what) + ": " + gnutls_strerror(rv));
}

struct X509Deleter {
  void operator()(gnutls_x509_crt_t c) const { gnutls_x509_crt_deinit(c); }
};
using X509Ptr = std::unique_ptr<std::remove_pointer_t<gnutls_x509_crt_t>, X509Deleter>;

// A gnutls_datum_t whose data GnuTLS allocated.
struct OwnedDatum : gnutls_datum_t {
  OwnedDatum() : gnutls_datum_t{nullptr, 0} {}
  ~OwnedDatum() { gnutls_free(data); }
  OwnedDatum(const OwnedDatum&) = delete;
  OwnedDatum& operator=(const OwnedDatum&) = delete;
};

gnutls_datum_t datum_of(const std::string& s) {
  return gnutls_datum_t{reinterpret_cast<unsigned char*>(const_cast<char*>(s.data())),
                        static_cast<unsigned int>(s.size())};
}

}  // namespace

TlsSession::TlsSession(Role role, const Identity& identity, VerifyKey verify_remote_key,
                       ngtcp2_crypto_get_conn get_conn, void* conn_user_data)
    : verify_remote_key_(std::move(verify_remote_key)) {
  ref_.conn_ref.get_conn = get_conn;
  ref_.conn_ref.user_data = conn_user_data;
  ref_.self = this;

  gnutls_certificate_credentials_t credentials = nullptr;
  check(gnutls_certificate_allocate_credentials(&credentials), "gnutls credentials");
  credentials_.reset(credentials);
  // Our certificate is a wrapper around our identity key, made fresh for each connection.
  const std::string cert_pem = identity.self_signed_certificate_pem("natfwd");
  const std::string key_pem = identity.private_key_pem();
  gnutls_datum_t cert = datum_of(cert_pem);
  gnutls_datum_t key = datum_of(key_pem);
  check(gnutls_certificate_set_x509_key_mem2(credentials_.get(), &cert, &key,
                                             GNUTLS_X509_FMT_PEM, nullptr, 0),
        "gnutls: loading identity certificate");

  // QUIC forbids EndOfEarlyData (RFC 9001 section 8.3); we never resume, so no tickets.
  const unsigned flags = (role == Role::kServer ? GNUTLS_SERVER : GNUTLS_CLIENT) |
                         GNUTLS_NO_END_OF_EARLY_DATA | GNUTLS_NO_TICKETS;
  gnutls_session_t session = nullptr;
  check(gnutls_init(&session, flags), "gnutls_init");
  session_.reset(session);

  check(role == Role::kServer ? ngtcp2_crypto_gnutls_configure_server_session(session)
                              : ngtcp2_crypto_gnutls_configure_client_session(session),
        "ngtcp2_crypto_gnutls_configure_session");
  gnutls_session_set_ptr(session, &ref_);
  check(gnutls_priority_set_direct(session, kPriority, nullptr), "gnutls priority");
  check(gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, credentials_.get()),
        "gnutls_credentials_set");
  // Mutual authentication: the server demands the client's certificate too.
  if (role == Role::kServer) gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUIRE);
  // Called on each side when the other's Certificate arrives.
  gnutls_session_set_verify_function(session, &TlsSession::verify_trampoline);

  // ALPN is mandatory in QUIC (RFC 9001 section 8.1); a peer speaking anything else
  // is not natfwd.
  gnutls_datum_t alpn{reinterpret_cast<unsigned char*>(const_cast<char*>(kAlpn)),
                      static_cast<unsigned int>(std::strlen(kAlpn))};
  check(gnutls_alpn_set_protocols(session, &alpn, 1, GNUTLS_ALPN_MANDATORY),
        "gnutls_alpn_set_protocols");
}

int TlsSession::verify_trampoline(gnutls_session_t session) {
  auto* ref = static_cast<SessionRef*>(gnutls_session_get_ptr(session));
  try {
    return ref->self->verify_remote_certificate();
  } catch (const std::exception& e) {
    ref->self->refusal_ = std::string("certificate check failed: ") + e.what();
    return -1;
  }
}

// Returns 0 to continue the handshake; anything else makes GnuTLS abort it with a
// bad_certificate alert.
int TlsSession::verify_remote_certificate() {
  unsigned int count = 0;
  const gnutls_datum_t* chain = gnutls_certificate_get_peers(session_.get(), &count);
  if (!chain || count == 0) {
    refusal_ = "remote sent no certificate";
    return -1;
  }
  gnutls_x509_crt_t raw = nullptr;
  if (gnutls_x509_crt_init(&raw) < 0) {
    refusal_ = "out of memory";
    return -1;
  }
  X509Ptr cert(raw);
  if (gnutls_x509_crt_import(cert.get(), &chain[0], GNUTLS_X509_FMT_DER) < 0) {
    refusal_ = "remote certificate does not parse";
    return -1;
  }
  if (gnutls_x509_crt_get_pk_algorithm(cert.get(), nullptr) != GNUTLS_PK_EDDSA_ED25519) {
    refusal_ = "remote certificate key is not Ed25519";
    return -1;
  }
  // For EdDSA the raw public key comes back in `x`; `y` stays empty.
  gnutls_ecc_curve_t curve = GNUTLS_ECC_CURVE_INVALID;
  OwnedDatum x, y;
  PublicKey key{};
  if (gnutls_x509_crt_get_pk_ecc_raw(cert.get(), &curve, &x, &y) < 0 ||
      curve != GNUTLS_ECC_CURVE_ED25519 || x.size != key.size()) {
    refusal_ = "cannot read the remote Ed25519 key";
    return -1;
  }
  std::memcpy(key.data(), x.data, key.size());
  // No check configured means nobody decided to trust anyone: refuse (fail closed).
  if (!verify_remote_key_ || !verify_remote_key_(key)) {
    refusal_ = "remote key " + key_fingerprint(key) + " is not authorised";
    return -1;
  }
  remote_key_ = key;
  return 0;
}

}  // namespace natfwd::quic

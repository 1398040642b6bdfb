// The TLS 1.3 side of a QUIC connection (RFC 9001), on GnuTLS through ngtcp2's crypto
// helper, with mutual authentication by Ed25519 key instead of by CA.
//
// Each side presents a self-signed certificate made from its identity key. Nothing in
// the certificate but its public key matters: no CA, no name, no dates. The key is
// handed to a caller-supplied check (pinning / authorisation) while the handshake
// runs; refusing it aborts the handshake with a TLS alert. GnuTLS itself checks the
// CertificateVerify signature, which proves the peer holds the private key.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include "identity.h"

namespace natfwd::quic {

// ALPN of natfwd's QUIC connections; mandatory on both sides.
inline constexpr char kAlpn[] = "natfwd/1";

class TlsSession {
 public:
  enum class Role { kClient, kServer };
  using VerifyKey = std::function<bool(const PublicKey&)>;

  // `get_conn`/`conn_user_data` let ngtcp2's GnuTLS helper find the ngtcp2_conn
  // (ngtcp2_crypto_conn_ref). Throws std::runtime_error when GnuTLS refuses the setup
  // (an environment failure, not a protocol result).
  TlsSession(Role role, const Identity& identity, VerifyKey verify_remote_key,
             ngtcp2_crypto_get_conn get_conn, void* conn_user_data);
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  gnutls_session_t native() const { return session_.get(); }
  // Set once the remote certificate passed the check.
  const std::optional<PublicKey>& remote_key() const { return remote_key_; }
  // Why the remote certificate was refused ("" if it was not).
  const std::string& refusal() const { return refusal_; }

 private:
  struct CredentialsDeleter {
    void operator()(gnutls_certificate_credentials_t c) const {
      gnutls_certificate_free_credentials(c);
    }
  };
  struct SessionDeleter {
    void operator()(gnutls_session_t s) const { gnutls_deinit(s); }
  };
  using CredentialsPtr =
      std::unique_ptr<std::remove_pointer_t<gnutls_certificate_credentials_t>, CredentialsDeleter>;
  using SessionPtr = std::unique_ptr<std::remove_pointer_t<gnutls_session_t>, SessionDeleter>;

  // gnutls_session_get_ptr() must return an ngtcp2_crypto_conn_ref for the helper;
  // we put it first in a struct that also leads back to us.
  struct SessionRef {
    ngtcp2_crypto_conn_ref conn_ref;  // must stay the first member
    TlsSession* self;
  };

  static int verify_trampoline(gnutls_session_t session);
  int verify_remote_certificate();

  VerifyKey verify_remote_key_;
  SessionRef ref_{};
  CredentialsPtr credentials_;
  SessionPtr session_;
  std::optional<PublicKey> remote_key_;
  std::string refusal_;
};

}  // namespace natfwd::quic

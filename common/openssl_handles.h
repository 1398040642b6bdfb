// Owners of OpenSSL handles, and the text of OpenSSL's last error: one set for the
// relay's TLS, the peer's relay links, its https publishes and its ACME client (the
// EVP_PKEY owner, EvpPkeyPtr, stands beside the identity in proto/identity.h).
#pragma once

#include <memory>
#include <string>

#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace natfwd {

struct OpensslFree {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
  void operator()(X509* certificate) const { X509_free(certificate); }
  void operator()(BIO* bio) const { BIO_free(bio); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, OpensslFree>;
using X509Ptr = std::unique_ptr<X509, OpensslFree>;
using BioPtr = std::unique_ptr<BIO, OpensslFree>;

// The oldest error on this thread's OpenSSL error queue, as OpenSSL words it, and the
// queue emptied; `when_none` when the queue held nothing.
std::string openssl_error_text(const char* when_none);

}  // namespace natfwd

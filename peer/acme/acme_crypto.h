// The cryptography of an ACME client, without I/O (OpenSSL): P-256 keys, the account
// key's JWK and thumbprint, ES256-signed JWS requests, the CSR for finalize and the
// TLS-ALPN-01 challenge certificate.
//
//   RFC 8555 section 6.2 (JWS with "nonce" and "url"), section 8.1 (key
//   authorization), RFC 7638 (JWK thumbprint), RFC 7518 section 3.4 (ES256: R || S),
//   RFC 8737 section 3 (the acmeIdentifier extension).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "identity.h"
#include "openssl_handles.h"

namespace natfwd::acme {


std::string base64url(std::string_view bytes);
std::string sha256(std::string_view bytes);

// A fresh P-256 key; throws when OpenSSL cannot make one.
EvpPkeyPtr make_p256_key();
// PEM (PKCS#8) of a private key, and back (null when the text holds none).
std::string private_key_pem(EVP_PKEY* key);
EvpPkeyPtr read_private_key_pem(const std::string& pem);

// {"crv":"P-256","kty":"EC","x":...,"y":...} with the members in RFC 7638's order.
std::string jwk(EVP_PKEY* key);
// base64url(SHA-256(jwk)), RFC 7638 section 3.
std::string jwk_thumbprint(EVP_PKEY* key);

// A flattened JWS (RFC 7515 section 7.2.2) over `payload` (empty: POST-as-GET, RFC
// 8555 section 6.3), signed ES256. `kid` empty: the header carries the jwk instead
// (newAccount, RFC 8555 section 6.2).
std::string sign_jws(EVP_PKEY* key, const std::string& kid, const std::string& nonce,
                     const std::string& url, const std::string& payload);

// DER of a CSR for `host_name` (subjectAltName dNSName), signed by `key`.
std::string make_csr_der(EVP_PKEY* key, const std::string& host_name);

// RFC 8737 section 3: a self-signed certificate for `host_name` whose critical
// id-pe-acmeIdentifier extension holds SHA-256 of the key authorization.
X509Ptr make_challenge_certificate(EVP_PKEY* key, const std::string& host_name,
                                   const std::string& key_authorization);

}  // namespace natfwd::acme

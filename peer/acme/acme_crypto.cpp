#include "acme/acme_crypto.h"

#include <stdexcept>
#include <vector>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

namespace natfwd::acme {
namespace {

// P-256 coordinates and ES256 signature halves are 32 bytes (RFC 7518 section 3.4).
constexpr size_t kP256Bytes = 32;
// RFC 8737 section 6.1: id-pe-acmeIdentifier.
constexpr const char* kAcmeIdentifierOid = "1.3.6.1.5.5.7.1.31";
// The challenge certificate only has to live through one validation.
constexpr long kChallengeValiditySeconds = 7 * 24 * 3600;

[[noreturn]] void fail(const std::string& what) {
  const std::string text = openssl_error_text("");
  throw std::runtime_error(what + (text.empty() ? "" : ": " + text));
}


std::string bio_text(BIO* bio) {
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(size));
}

std::string fixed_bytes(const BIGNUM* number) {
  std::string out(kP256Bytes, '\0');
  if (BN_bn2binpad(number, reinterpret_cast<unsigned char*>(out.data()), kP256Bytes) !=
      static_cast<int>(kP256Bytes))
    fail("EC value too large");
  return out;
}

std::string coordinate(EVP_PKEY* key, const char* name) {
  BIGNUM* value = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &value) != 1) fail("not an EC key");
  std::string out = fixed_bytes(value);
  BN_free(value);
  return out;
}

std::string sign_es256(EVP_PKEY* key, std::string_view input) {
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  size_t size = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &size,
                     reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1)
    fail("cannot sign");
  std::vector<unsigned char> der(size);
  if (EVP_DigestSign(ctx.get(), der.data(), &size,
                     reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1)
    fail("cannot sign");
  // OpenSSL gives DER (SEQUENCE of r, s); JWS wants r || s.
  const unsigned char* p = der.data();
  std::unique_ptr<ECDSA_SIG, void (*)(ECDSA_SIG*)> sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(size)),
                                                      ECDSA_SIG_free);
  if (!sig) fail("bad signature");
  return fixed_bytes(ECDSA_SIG_get0_r(sig.get())) + fixed_bytes(ECDSA_SIG_get0_s(sig.get()));
}

void add_san(X509_EXTENSIONS* list, X509* certificate, const std::string& host_name) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, certificate, certificate, nullptr, nullptr, 0);
  X509_EXTENSION* san =
      X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name, ("DNS:" + host_name).c_str());
  if (!san) fail("bad host name " + host_name);
  if (list) sk_X509_EXTENSION_push(list, san);
  else {
    X509_add_ext(certificate, san, -1);
    X509_EXTENSION_free(san);
  }
}

}  // namespace

std::string base64url(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  size_t i = 0;
  const auto byte = [&](size_t at) { return static_cast<unsigned char>(bytes[at]); };
  for (; i + 2 < bytes.size(); i += 3) {
    const unsigned v = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
    out += {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], kAlphabet[(v >> 6) & 63],
            kAlphabet[v & 63]};
  }
  if (bytes.size() - i == 1) {
    const unsigned v = byte(i) << 16;
    out += {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63]};
  } else if (bytes.size() - i == 2) {
    const unsigned v = (byte(i) << 16) | (byte(i + 1) << 8);
    out += {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], kAlphabet[(v >> 6) & 63]};
  }
  return out;
}

std::string sha256(std::string_view bytes) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof digest);
}

EvpPkeyPtr make_p256_key() {
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) fail("cannot make a P-256 key");
  return key;
}

std::string private_key_pem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    fail("cannot write a key");
  return bio_text(bio.get());
}

EvpPkeyPtr read_private_key_pem(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  return key;
}

std::string jwk(EVP_PKEY* key) {
  return R"({"crv":"P-256","kty":"EC","x":")" + base64url(coordinate(key, OSSL_PKEY_PARAM_EC_PUB_X)) +
         R"(","y":")" + base64url(coordinate(key, OSSL_PKEY_PARAM_EC_PUB_Y)) + R"("})";
}

std::string jwk_thumbprint(EVP_PKEY* key) { return base64url(sha256(jwk(key))); }

std::string sign_jws(EVP_PKEY* key, const std::string& kid, const std::string& nonce,
                     const std::string& url, const std::string& payload) {
  // Nonces and URLs come from the server: base64url and URLs need no JSON escaping,
  // but a server that sends a quote or backslash must not break the header.
  for (const std::string* text : {&kid, &nonce, &url})
    if (text->find_first_of("\"\\") != std::string::npos)
      throw std::invalid_argument("ACME value with a quote: " + *text);
  const std::string header = R"({"alg":"ES256",)" +
                             (kid.empty() ? R"("jwk":)" + jwk(key) : R"("kid":")" + kid + "\"") +
                             R"(,"nonce":")" + nonce + R"(","url":")" + url + "\"}";
  const std::string protected64 = base64url(header);
  const std::string payload64 = base64url(payload);
  const std::string signature = sign_es256(key, protected64 + "." + payload64);
  return R"({"protected":")" + protected64 + R"(","payload":")" + payload64 +
         R"(","signature":")" + base64url(signature) + "\"}";
}

std::string make_csr_der(EVP_PKEY* key, const std::string& host_name) {
  std::unique_ptr<X509_REQ, void (*)(X509_REQ*)> request(X509_REQ_new(), X509_REQ_free);
  X509_NAME* name = X509_REQ_get_subject_name(request.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(host_name.c_str()), -1, -1, 0);
  X509_REQ_set_pubkey(request.get(), key);
  X509_EXTENSIONS* extensions = sk_X509_EXTENSION_new_null();
  add_san(extensions, nullptr, host_name);
  X509_REQ_add_extensions(request.get(), extensions);
  sk_X509_EXTENSION_pop_free(extensions, X509_EXTENSION_free);
  if (X509_REQ_sign(request.get(), key, EVP_sha256()) <= 0) fail("cannot sign the CSR");
  unsigned char* der = nullptr;
  const int size = i2d_X509_REQ(request.get(), &der);
  if (size <= 0) fail("cannot encode the CSR");
  std::string out(reinterpret_cast<const char*>(der), static_cast<size_t>(size));
  OPENSSL_free(der);
  return out;
}

X509Ptr make_challenge_certificate(EVP_PKEY* key, const std::string& host_name,
                                   const std::string& key_authorization) {
  X509Ptr certificate(X509_new());
  X509_set_version(certificate.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(certificate.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(certificate.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(certificate.get()), kChallengeValiditySeconds);
  X509_NAME* name = X509_get_subject_name(certificate.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(host_name.c_str()), -1, -1, 0);
  X509_set_issuer_name(certificate.get(), name);
  X509_set_pubkey(certificate.get(), key);
  add_san(nullptr, certificate.get(), host_name);
  // extnValue is the DER of Authorization ::= OCTET STRING (SIZE (32)).
  const std::string digest = sha256(key_authorization);
  std::string inner = std::string("\x04\x20", 2) + digest;
  std::unique_ptr<ASN1_OCTET_STRING, void (*)(ASN1_OCTET_STRING*)> value(
      ASN1_OCTET_STRING_new(), ASN1_OCTET_STRING_free);
  ASN1_OCTET_STRING_set(value.get(), reinterpret_cast<const unsigned char*>(inner.data()),
                        static_cast<int>(inner.size()));
  std::unique_ptr<ASN1_OBJECT, void (*)(ASN1_OBJECT*)> oid(OBJ_txt2obj(kAcmeIdentifierOid, 1),
                                                           ASN1_OBJECT_free);
  X509_EXTENSION* extension = X509_EXTENSION_create_by_OBJ(nullptr, oid.get(), 1, value.get());
  if (!extension) fail("cannot make the acmeIdentifier extension");
  X509_add_ext(certificate.get(), extension, -1);
  X509_EXTENSION_free(extension);
  if (X509_sign(certificate.get(), key, EVP_sha256()) <= 0) fail("cannot sign the challenge certificate");
  return certificate;
}

}  // namespace natfwd::acme

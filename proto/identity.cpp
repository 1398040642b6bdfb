#include "identity.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include <glib.h>
#include <glib/gstdio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

namespace natfwd {
namespace {

std::runtime_error openssl_error(const std::string& what) {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  char buffer[256] = "unknown error";
  if (code != 0) ERR_error_string_n(code, buffer, sizeof buffer);
  return std::runtime_error(what + ": " + buffer);
}

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

std::string bio_to_string(BIO* bio) {
  char* data = nullptr;
  long length = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(length));
}

}  // namespace

Identity::Identity(EvpPkeyPtr key) : key_(std::move(key)) {
  size_t length = public_key_.size();
  if (EVP_PKEY_get_raw_public_key(key_.get(), public_key_.data(), &length) != 1 ||
      length != public_key_.size())
    throw openssl_error("identity key is not Ed25519");
}

Identity Identity::generate() {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (!key) throw openssl_error("cannot generate Ed25519 key");
  return Identity(EvpPkeyPtr(key));
}

Identity Identity::load_or_create(const std::string& dir) {
  if (g_mkdir_with_parents(dir.c_str(), 0700) != 0)
    throw std::runtime_error("cannot create state directory " + dir + ": " + g_strerror(errno));
  const std::string path = dir + "/identity.key";
  FILE* file = std::fopen(path.c_str(), "r");
  if (file) {
    struct stat info {};
    if (fstat(fileno(file), &info) == 0 && (info.st_mode & 077) != 0) {
      std::fclose(file);
      throw std::runtime_error("identity key " + path +
                               " is accessible by others; run: chmod 600 " + path);
    }
    EVP_PKEY* key = PEM_read_PrivateKey(file, nullptr, nullptr, nullptr);
    std::fclose(file);
    if (!key) throw openssl_error("cannot read identity key " + path);
    return Identity(EvpPkeyPtr(key));
  }
  if (errno != ENOENT)
    throw std::runtime_error("cannot open identity key " + path + ": " + g_strerror(errno));

  Identity identity = generate();
  // Write to a temporary file created 0600 and rename, so a crash never leaves a
  // half-written key and the key is never readable by others, not even briefly.
  const std::string temp = path + ".tmp";
  int fd = g_open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) throw std::runtime_error("cannot create " + temp + ": " + g_strerror(errno));
  FILE* out = fdopen(fd, "w");
  bool ok = out && PEM_write_PrivateKey(out, identity.key(), nullptr, nullptr, 0, nullptr,
                                        nullptr) == 1;
  if (out) ok = (std::fclose(out) == 0) && ok;
  if (!ok || g_rename(temp.c_str(), path.c_str()) != 0) {
    g_unlink(temp.c_str());
    throw std::runtime_error("cannot write identity key " + path);
  }
  return identity;
}

std::string Identity::private_key_pem() const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key_.get(), nullptr, nullptr, 0, nullptr,
                                       nullptr) != 1)
    throw openssl_error("cannot encode identity key");
  return bio_to_string(bio.get());
}

std::string Identity::self_signed_certificate_pem(const std::string& common_name) const {
  std::unique_ptr<X509, decltype(&X509_free)> cert(X509_new(), X509_free);
  if (!cert) throw openssl_error("X509_new");
  X509_set_version(cert.get(), 2);
  // A random serial: two certificates from the same key still differ.
  std::unique_ptr<BIGNUM, decltype(&BN_free)> serial(BN_new(), BN_free);
  BN_rand(serial.get(), 64, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY);
  BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get()));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -24 * 3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 365L * 24 * 3600);
  X509_set_pubkey(cert.get(), key_.get());
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1,
                             -1, 0);
  X509_set_issuer_name(cert.get(), name);
  if (X509_sign(cert.get(), key_.get(), nullptr) <= 0) throw openssl_error("X509_sign");
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert.get()) != 1)
    throw openssl_error("cannot encode certificate");
  return bio_to_string(bio.get());
}

std::string Identity::sign(std::string_view message) const {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context(EVP_MD_CTX_new(),
                                                                   EVP_MD_CTX_free);
  std::string signature(64, '\0');
  size_t length = signature.size();
  if (!context || EVP_DigestSignInit(context.get(), nullptr, nullptr, nullptr, key_.get()) != 1 ||
      EVP_DigestSign(context.get(), reinterpret_cast<unsigned char*>(signature.data()), &length,
                     reinterpret_cast<const unsigned char*>(message.data()),
                     message.size()) != 1)
    throw openssl_error("cannot sign");
  signature.resize(length);
  return signature;
}

bool verify_signature(const PublicKey& key, std::string_view message,
                      std::string_view signature) {
  EvpPkeyPtr pkey(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, key.data(), key.size()));
  if (!pkey) return false;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context(EVP_MD_CTX_new(),
                                                                   EVP_MD_CTX_free);
  const bool ok =
      context &&
      EVP_DigestVerifyInit(context.get(), nullptr, nullptr, nullptr, pkey.get()) == 1 &&
      EVP_DigestVerify(context.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                       signature.size(), reinterpret_cast<const unsigned char*>(message.data()),
                       message.size()) == 1;
  ERR_clear_error();
  return ok;
}

namespace {
// CONTEXT NUL CHALLENGE NUL TEXT: one context per use, so that no signature made for
// one use passes for another.
std::string challenge_message(std::string_view context, std::string_view challenge,
                              std::string_view text) {
  std::string message(context);
  message.push_back('\0');
  message.append(challenge);
  message.push_back('\0');
  message.append(text);
  return message;
}
}  // namespace

std::string registration_message(std::string_view challenge, std::string_view name) {
  return challenge_message("natfwd register v1", challenge, name);
}

std::string connection_proof_message(std::string_view challenge) {
  return challenge_message("natfwd connection proof v2", challenge, "");
}

std::string netcheck_query_message(std::string_view challenge, std::string_view target) {
  return challenge_message("natfwd netcheck query v1", challenge, target);
}

bool is_valid_key_id(std::string_view text) {
  return text.size() == 32 &&
         text.find_first_not_of("abcdefghijklmnopqrstuvwxyz234567") == std::string_view::npos;
}

std::string key_id(const PublicKey& key) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(key.data(), key.size(), digest);
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  for (int i = 0; i < 20; ++i) {
    buffer = (buffer << 8) | digest[i];
    bits += 8;
    while (bits >= 5) {
      out.push_back(kAlphabet[(buffer >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  return out;
}

std::string key_fingerprint(const PublicKey& key) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(key.data(), key.size(), digest);
  return spki_fingerprint(std::string(reinterpret_cast<const char*>(digest), sizeof digest));
}

std::string to_hex(std::span<const unsigned char> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0x0F]);
  }
  return out;
}

std::string sha256_hex(std::string_view text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return to_hex(digest);
}

std::string spki_fingerprint(const std::string& sha256) {
  gchar* b64 = g_base64_encode(reinterpret_cast<const guchar*>(sha256.data()), sha256.size());
  std::string out = std::string("SHA256:") + b64;
  g_free(b64);
  while (!out.empty() && out.back() == '=') out.pop_back();
  return out;
}

bool public_key_from_bytes(std::span<const uint8_t> bytes, PublicKey& out) {
  if (bytes.size() != out.size()) return false;
  std::memcpy(out.data(), bytes.data(), out.size());
  return true;
}

}  // namespace natfwd

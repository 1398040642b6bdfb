// A peer's identity: an Ed25519 key pair kept in the state directory.
//
// The key never leaves the machine. Its raw public key (32 bytes) is what the
// rendezvous exchange announces and what QUIC's TLS checks the other side's
// certificate against; the certificate itself is a throwaway wrapper made at start.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include <openssl/evp.h>

namespace natfwd {

using PublicKey = std::array<uint8_t, 32>;

struct EvpPkeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyDeleter>;

class Identity {
 public:
  // Loads `dir`/identity.key, or creates it (mode 0600, and `dir` 0700) on first run.
  // Throws std::runtime_error with a one-line message on failure.
  static Identity load_or_create(const std::string& dir);
  // A fresh key held only in memory (tests, tools).
  static Identity generate();

  const PublicKey& public_key() const { return public_key_; }
  EVP_PKEY* key() const { return key_.get(); }
  // PKCS#8 PEM of the private key, for GnuTLS.
  std::string private_key_pem() const;
  // A self-signed X.509 certificate (PEM) carrying the public key, valid for a day
  // around now. Peers check the key inside it, never the name or the dates.
  std::string self_signed_certificate_pem(const std::string& common_name) const;
  // Ed25519 signature (64 bytes) over `message`.
  std::string sign(std::string_view message) const;

 private:
  explicit Identity(EvpPkeyPtr key);
  EvpPkeyPtr key_;
  PublicKey public_key_{};
};

// Short, typeable id of a key: base32 (RFC 4648, lowercase, no padding) of the first
// 20 bytes of SHA-256(public key), i.e. 32 characters.
std::string key_id(const PublicKey& key);
// A key id as key_id() makes it (and `peer id` prints it): 32 characters of lowercase
// base32.
bool is_valid_key_id(std::string_view text);
// "SHA256:" + base64 of SHA-256(public key), as OpenSSH prints fingerprints.
std::string key_fingerprint(const PublicKey& key);
// "SHA256:" + unpadded base64 of a SHA-256 digest (32 raw bytes), as OpenSSH prints
// fingerprints; for a relay's TLS key, the digest of its SubjectPublicKeyInfo, which
// is what --relay-key and known_relays pin.
std::string spki_fingerprint(const std::string& sha256);
// Lowercase hex of `bytes`; of SHA-256(text).
std::string to_hex(std::span<const unsigned char> bytes);
std::string sha256_hex(std::string_view text);
// Copies a 32-byte span into a PublicKey; false when the size is wrong.
bool public_key_from_bytes(std::span<const uint8_t> bytes, PublicKey& out);
// True when `signature` is `key`'s Ed25519 signature over `message`.
bool verify_signature(const PublicKey& key, std::string_view message, std::string_view signature);
// What a peer signs to register a name: a fixed context string, the relay's
// challenge and the name, so a signature is good for one relay connection and name.
std::string registration_message(std::string_view challenge, std::string_view name);
// What every peer signs to open a relay connection (Prove): the relay's fresh
// challenge under its own context string, so it can pass for neither a Register nor
// a netcheck query.
std::string connection_proof_message(std::string_view challenge);
// What a `peer netcheck NAME` caller signs: the same binding to one relay connection,
// with its own context string, so that it can never pass for a Register.
std::string netcheck_query_message(std::string_view challenge, std::string_view target);

}  // namespace natfwd

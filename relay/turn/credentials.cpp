#include "turn/credentials.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <charconv>
#include <stdexcept>

#include "identity.h"

#include "stun/turn_constants.h"

namespace natfwd::turn {
namespace {

int64_t seconds_of(std::chrono::steady_clock::time_point now) {
  return std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
}

}  // namespace

std::string base64(std::span<const std::byte> data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(data.data()),
                                static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string rest_username(uint64_t expiry_unix, std::string_view peer_id) {
  return std::to_string(expiry_unix) + ":" + std::string(peer_id);
}

std::string rest_password(std::string_view secret, std::string_view username) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_length = 0;
  HMAC(EVP_sha1(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(username.data()), username.size(), mac, &mac_length);
  return base64(std::as_bytes(std::span(mac, mac_length)));
}

std::optional<uint64_t> rest_expiry(std::string_view username) {
  const std::string_view digits = username.substr(0, username.find(':'));
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size())
    return std::nullopt;
  return value;
}

std::string_view rest_user_id(std::string_view username) {
  const size_t colon = username.find(':');
  return colon == std::string_view::npos ? username : username.substr(colon + 1);
}

std::array<std::byte, 16> long_term_key(std::string_view username, std::string_view realm,
                                        std::string_view password) {
  std::string input;
  input.reserve(username.size() + realm.size() + password.size() + 2);
  input.append(username).append(":").append(realm).append(":").append(password);
  std::array<std::byte, 16> key{};
  unsigned int length = 0;
  EVP_Digest(input.data(), input.size(), reinterpret_cast<unsigned char*>(key.data()), &length,
             EVP_md5(), nullptr);
  return key;
}

std::string generate_secret() {
  std::array<std::byte, 32> bytes{};
  if (RAND_bytes(reinterpret_cast<unsigned char*>(bytes.data()), bytes.size()) != 1)
    throw std::runtime_error("no random bytes for the TURN secret");
  return base64(bytes);
}

NonceMint::NonceMint(std::vector<std::byte> key) : key_(std::move(key)) {}

NonceMint NonceMint::with_random_key() {
  std::vector<std::byte> key(32);
  if (RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), static_cast<int>(key.size())) != 1)
    throw std::runtime_error("no random bytes for the nonce key");
  return NonceMint(std::move(key));
}

std::string NonceMint::tag(uint64_t issued, std::string_view client) const {
  std::string input = std::to_string(issued) + "|" + std::string(client);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_length = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &mac_length);
  return to_hex(std::span(mac, 12));  // 96 bits: enough against forgery
}

std::string NonceMint::issue(std::chrono::steady_clock::time_point now,
                             std::string_view client) const {
  const auto issued = static_cast<uint64_t>(seconds_of(now));
  char text[17];
  auto [end, ec] = std::to_chars(text, text + sizeof text, issued, 16);
  (void)ec;
  return std::string(text, end) + "-" + tag(issued, client);
}

NonceMint::Check NonceMint::check(std::string_view nonce, std::chrono::steady_clock::time_point now,
                                  std::string_view client) const {
  const size_t dash = nonce.find('-');
  if (dash == std::string_view::npos || dash == 0 || dash > 16) return Check::kStale;
  uint64_t issued = 0;
  auto [end, ec] = std::from_chars(nonce.data(), nonce.data() + dash, issued, 16);
  if (ec != std::errc() || end != nonce.data() + dash) return Check::kStale;
  const std::string expected = tag(issued, client);
  const std::string_view given = nonce.substr(dash + 1);
  if (given.size() != expected.size() ||
      CRYPTO_memcmp(given.data(), expected.data(), expected.size()) != 0)
    return Check::kStale;
  const int64_t age = seconds_of(now) - static_cast<int64_t>(issued);
  if (age < 0 || age >= kNonceLifetime.count()) return Check::kStale;
  return Check::kValid;
}

}  // namespace natfwd::turn

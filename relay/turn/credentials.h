// TURN credentials: the coturn "TURN REST API" (draft-uberti-behave-turn-rest-00) and
// long-term keys (RFC 8489 section 9.2), and stateless nonces. Pure functions over
// bytes and times; OpenSSL for the hashes.
//
//   username = "EXPIRY:PEERID"   (EXPIRY in unix seconds)
//   password = base64(HMAC-SHA1(secret, username))
//   key      = MD5(username ":" realm ":" password)   (MESSAGE-INTEGRITY key)
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace natfwd::turn {

std::string rest_username(uint64_t expiry_unix, std::string_view peer_id);
std::string rest_password(std::string_view secret, std::string_view username);
// The EXPIRY of a REST username (the digits before the first ':', or the whole name
// as coturn allows); nullopt when it is not a number.
std::optional<uint64_t> rest_expiry(std::string_view username);
// The part after the first ':' (the whole name if there is none): who the
// allocation quota counts against.
std::string_view rest_user_id(std::string_view username);

// MD5(username:realm:password), the long-term key of RFC 8489 section 9.2.2.
std::array<std::byte, 16> long_term_key(std::string_view username, std::string_view realm,
                                        std::string_view password);

// 32 random bytes, base64: a fresh shared secret.
std::string generate_secret();

std::string base64(std::span<const std::byte> data);

// Stateless nonces (RFC 8489 section 9.2): "<issued seconds, hex>-<HMAC tag, hex>",
// the tag binding the time to the client's transport address. No table to fill up;
// a nonce older than kNonceLifetime is stale.
class NonceMint {
 public:
  enum class Check { kValid, kStale };
  // `key`: random bytes held only in memory (nonces do not survive a restart, and
  // need not: clients just get a 438 and retry).
  explicit NonceMint(std::vector<std::byte> key);
  static NonceMint with_random_key();

  std::string issue(std::chrono::steady_clock::time_point now, std::string_view client) const;
  // kStale for expired, forged or otherwise unknown nonces: the client should retry
  // with the fresh one a 438 carries.
  Check check(std::string_view nonce, std::chrono::steady_clock::time_point now,
              std::string_view client) const;

 private:
  std::string tag(uint64_t issued, std::string_view client) const;
  std::vector<std::byte> key_;
};

}  // namespace natfwd::turn

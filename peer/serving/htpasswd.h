// The password file of an `http:` publish with `auth=FILE`, in Apache's htpasswd
// format: one `user:hash` per line, `#` comments. The hashes htpasswd(1) and
// `openssl passwd` write: bcrypt ($2y$, $2b$, $2a$), SHA-crypt ($5$, $6$) and MD5-crypt
// ($1$) through crypt(3) (libxcrypt), Apache's apr1 MD5 ($apr1$, Apache's default) and
// {SHA} (base64 SHA-1, htpasswd -s). Plain-text and DES-crypt lines are refused at load.
//
// Verification is where a stranger spends the home peer's CPU (bcrypt costs tens of
// milliseconds on the main loop): credentials that passed are remembered by their
// SHA-256 (a few, bounded), and checks of unknown credentials are rate limited.
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <string>
#include <string_view>

#include "token_bucket.h"

namespace natfwd {

// True when `password` hashes to `hash` (one of the forms above); false for a wrong
// password and for a hash this file does not know.
bool verify_password_hash(std::string_view hash, std::string_view password);
// Apache's apr1 MD5-crypt of `password` with `salt` (up to 8 characters):
// "$apr1$SALT$HASH", as `htpasswd -m` and `openssl passwd -apr1` write it.
std::string apr1_md5_crypt(std::string_view password, std::string_view salt);
// Whether `hash` is a form verify_password_hash() knows.
bool is_supported_password_hash(std::string_view hash);

class Htpasswd {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  enum class Verdict { kAccepted, kRejected, kBusy };

  // Throws std::runtime_error naming FILE:LINE for a line that is not user:hash with
  // a supported hash, or the file when it cannot be read or holds no user.
  static Htpasswd load(const std::string& path);
  // The same from text; `origin` names it in errors.
  static Htpasswd parse(std::string_view text, const std::string& origin);

  // kBusy: more unknown credentials than kChecksPerMinute were checked lately; the
  // visitor is answered without a check.
  Verdict verify(std::string_view user, std::string_view password, TimePoint now);
  size_t users() const { return hashes_.size(); }

  // Expensive checks (credentials not remembered) per minute, a burst of this many.
  static constexpr double kChecksPerMinute = 120;
  // Credentials that passed, remembered (the oldest forgotten first).
  static constexpr size_t kRemembered = 64;

 private:
  std::map<std::string, std::string, std::less<>> hashes_;  // user -> hash
  std::deque<std::string> remembered_;  // SHA-256 of "user:password" that passed
  TokenBucket checks_;
  bool started_ = false;
};

}  // namespace natfwd

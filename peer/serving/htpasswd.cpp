#include "serving/htpasswd.h"

#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/md5.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>

#include <glib.h>

#include "glib_ptr.h"

namespace natfwd {
namespace {

constexpr std::string_view kApr1 = "$apr1$";
constexpr std::string_view kSha1 = "{SHA}";
// The crypt(3) forms, as libxcrypt names them (crypt(5)).
constexpr std::string_view kCryptPrefixes[] = {"$2y$", "$2b$", "$2a$", "$5$", "$6$", "$1$"};

// crypt(3)'s alphabet ("./0-9A-Za-z"), least significant 6 bits first.
constexpr char kItoa64[] = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

void to64(std::string& out, unsigned long value, int count) {
  while (count-- > 0) {
    out += kItoa64[value & 0x3f];
    value >>= 6;
  }
}

bool equal_in_constant_time(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string sha256_of(std::string_view text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof digest);
}

}  // namespace

// Poul-Henning Kamp's MD5-crypt with Apache's magic "$apr1$" (as in APR's
// apr_md5_encode): 1000 rounds of MD5 over password, salt and the previous digest.
std::string apr1_md5_crypt(std::string_view password, std::string_view salt) {
  salt = salt.substr(0, std::min<size_t>(salt.find('$'), 8));
  using Ctx = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;
  auto md5 = [](std::initializer_list<std::string_view> parts) {
    Ctx ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    EVP_DigestInit_ex(ctx.get(), EVP_md5(), nullptr);
    for (std::string_view part : parts) EVP_DigestUpdate(ctx.get(), part.data(), part.size());
    unsigned char digest[MD5_DIGEST_LENGTH];
    EVP_DigestFinal_ex(ctx.get(), digest, nullptr);
    return std::string(reinterpret_cast<const char*>(digest), sizeof digest);
  };
  const std::string alternate = md5({password, salt, password});
  std::string first(password);
  first += kApr1;
  first += salt;
  for (size_t left = password.size(); left > 0; left -= std::min<size_t>(left, 16))
    first.append(alternate, 0, std::min<size_t>(left, 16));
  for (size_t bits = password.size(); bits; bits >>= 1)
    first += (bits & 1) ? '\0' : password.empty() ? '\0' : password[0];
  std::string digest = md5({first});
  for (int round = 0; round < 1000; ++round) {
    std::string next;
    next += (round & 1) ? std::string(password) : digest;
    if (round % 3) next += salt;
    if (round % 7) next += password;
    next += (round & 1) ? digest : std::string(password);
    digest = md5({next});
  }
  const auto* d = reinterpret_cast<const unsigned char*>(digest.data());
  std::string out(kApr1);
  out += salt;
  out += '$';
  to64(out, (d[0] << 16) | (d[6] << 8) | d[12], 4);
  to64(out, (d[1] << 16) | (d[7] << 8) | d[13], 4);
  to64(out, (d[2] << 16) | (d[8] << 8) | d[14], 4);
  to64(out, (d[3] << 16) | (d[9] << 8) | d[15], 4);
  to64(out, (d[4] << 16) | (d[10] << 8) | d[5], 4);
  to64(out, d[11], 2);
  return out;
}

bool is_supported_password_hash(std::string_view hash) {
  if (hash.starts_with(kApr1) || hash.starts_with(kSha1)) return true;
  return std::any_of(std::begin(kCryptPrefixes), std::end(kCryptPrefixes),
                     [hash](std::string_view prefix) { return hash.starts_with(prefix); });
}

bool verify_password_hash(std::string_view hash, std::string_view password) {
  if (hash.starts_with(kApr1)) {
    const std::string_view salt = hash.substr(kApr1.size());
    return equal_in_constant_time(apr1_md5_crypt(password, salt), hash);
  }
  if (hash.starts_with(kSha1)) {
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1(reinterpret_cast<const unsigned char*>(password.data()), password.size(), digest);
    GCharPtr encoded(g_base64_encode(digest, sizeof digest));
    return equal_in_constant_time(std::string(kSha1) + encoded.get(), hash);
  }
  if (!is_supported_password_hash(hash)) return false;
  // crypt_r's data is large (tens of KiB): on the heap. A password with a NUL cannot
  // be passed to crypt(3), so it matches nothing.
  if (password.find('\0') != std::string_view::npos) return false;
  auto data = std::make_unique<crypt_data>();
  const std::string key(password);
  const std::string setting(hash);
  const char* result = crypt_r(key.c_str(), setting.c_str(), data.get());
  // libxcrypt answers a hash it cannot use with a string starting with '*'.
  if (!result || result[0] == '*') return false;
  return equal_in_constant_time(result, hash);
}

Htpasswd Htpasswd::load(const std::string& path) {
  gchar* contents = nullptr;
  gsize length = 0;
  GError* raw_error = nullptr;
  if (!g_file_get_contents(path.c_str(), &contents, &length, &raw_error)) {
    GErrorPtr error(raw_error);
    throw std::runtime_error("auth file " + path + ": " + error->message);
  }
  GCharPtr owned(contents);
  return parse(std::string_view(contents, length), path);
}

Htpasswd Htpasswd::parse(std::string_view text, const std::string& origin) {
  Htpasswd out;
  size_t number = 0;
  while (!text.empty()) {
    ++number;
    const size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    const size_t colon = line.find(':');
    const std::string where = origin + ":" + std::to_string(number);
    if (colon == 0 || colon == std::string_view::npos)
      throw std::runtime_error(where + ": not user:hash");
    const std::string_view user = line.substr(0, colon);
    const std::string_view hash = line.substr(colon + 1);
    if (!is_supported_password_hash(hash))
      throw std::runtime_error(where + ": user " + std::string(user) +
                               " has no supported hash (use htpasswd -B, or openssl passwd "
                               "-apr1, -5 or -6)");
    out.hashes_.insert_or_assign(std::string(user), std::string(hash));
  }
  if (out.hashes_.empty()) throw std::runtime_error("auth file " + origin + " holds no user");
  return out;
}

Htpasswd::Verdict Htpasswd::verify(std::string_view user, std::string_view password,
                                   TimePoint now) {
  if (!started_) {
    checks_ = TokenBucket(kChecksPerMinute, std::chrono::minutes(1), now);
    started_ = true;
  }
  std::string credentials(user);
  credentials += ':';
  credentials += password;
  const std::string digest = sha256_of(credentials);
  auto it = hashes_.find(user);
  if (it != hashes_.end() &&
      std::find(remembered_.begin(), remembered_.end(), digest) != remembered_.end())
    return Verdict::kAccepted;
  if (!checks_.take(1, now)) return Verdict::kBusy;
  if (it == hashes_.end()) {
    // As slow as a wrong password, so that the time of the answer does not tell a
    // guesser which user names exist.
    verify_password_hash(hashes_.begin()->second, password);
    return Verdict::kRejected;
  }
  if (!verify_password_hash(it->second, password)) return Verdict::kRejected;
  remembered_.push_back(digest);
  if (remembered_.size() > kRemembered) remembered_.pop_front();
  return Verdict::kAccepted;
}

}  // namespace natfwd

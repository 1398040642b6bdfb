#include "trust/authorization.h"

#include <fcntl.h>
#include <unistd.h>

#include <ctime>
#include <fstream>
#include <sstream>

#include <glib.h>
#include <glib/gstdio.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "log.h"
#include "record_file.h"
#include "trust/known_peers.h"

namespace natfwd {
namespace {

bool append_line(const std::string& path, const std::string& line) {
  int fd = g_open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (fd < 0) return false;
  const bool ok = write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  return close(fd) == 0 && ok;
}

struct Invite {
  std::string hash;
  long expires = 0;
};

std::vector<Invite> load_invites(const std::string& path) {
  std::vector<Invite> invites;
  for_each_record(path, [&](int, std::istringstream& fields) {
    Invite invite;
    if (fields >> invite.hash >> invite.expires && invite.hash.size() == 64)
      invites.push_back(invite);
    return true;
  });
  return invites;
}

bool save_invites(const std::string& path, const std::vector<Invite>& invites) {
  const std::string temp = path + ".tmp";
  int fd = g_open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return false;
  std::string text;
  for (const auto& invite : invites)
    text += invite.hash + " " + std::to_string(invite.expires) + "\n";
  const bool ok = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  if (close(fd) != 0 || !ok || g_rename(temp.c_str(), path.c_str()) != 0) {
    g_unlink(temp.c_str());
    return false;
  }
  return true;
}

std::string proof_keyed_by_hash(const std::string& invite_hash, const PublicKey& caller,
                                uint64_t session_id) {
  static constexpr char kLabel[] = "natfwd pairing proof v1";
  std::string message(kLabel, sizeof kLabel);  // with its NUL: the label ends there
  message.append(reinterpret_cast<const char*>(caller.data()), caller.size());
  for (int shift = 56; shift >= 0; shift -= 8)
    message.push_back(static_cast<char>((session_id >> shift) & 0xff));
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_length = 0;
  HMAC(EVP_sha256(), invite_hash.data(), static_cast<int>(invite_hash.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac, &mac_length);
  return std::string(reinterpret_cast<const char*>(mac), mac_length);
}

}  // namespace

std::string pairing_proof(const std::string& invite_secret, const PublicKey& caller,
                          uint64_t session_id) {
  return proof_keyed_by_hash(sha256_hex(invite_secret), caller, session_id);
}

Authorization::Authorization(std::string state_dir, std::vector<std::string> allowed_ids)
    : state_dir_(std::move(state_dir)), allowed_(allowed_ids.begin(), allowed_ids.end()) {}

std::set<std::string> Authorization::load_ids() const {
  std::set<std::string> ids;
  for_each_record(state_dir_ + "/authorized_peers", [&](int, std::istringstream& fields) {
    std::string id;
    if (fields >> id && is_valid_key_id(id)) ids.insert(id);
    return true;
  });
  return ids;
}

bool Authorization::is_authorized(const PublicKey& key) const {
  const std::string id = key_id(key);
  return allowed_.count(id) > 0 || load_ids().count(id) > 0;
}

bool Authorization::authorize(const PublicKey& key, const std::string& comment) {
  return append_line(state_dir_ + "/authorized_peers", key_id(key) + " " + comment + "\n");
}

bool Authorization::has_pending_invite() const {
  const long now = static_cast<long>(time(nullptr));
  for (const auto& invite : load_invites(state_dir_ + "/invites"))
    if (invite.expires > now) return true;
  return false;
}

bool Authorization::accepts_pairing_proof(const PublicKey& caller, uint64_t session_id,
                                          const std::string& proof) const {
  const long now = static_cast<long>(time(nullptr));
  for (const auto& invite : load_invites(state_dir_ + "/invites")) {
    if (invite.expires <= now) continue;
    const std::string expected = proof_keyed_by_hash(invite.hash, caller, session_id);
    if (proof.size() == expected.size() &&
        CRYPTO_memcmp(proof.data(), expected.data(), expected.size()) == 0)
      return true;
  }
  return false;
}

bool Authorization::redeem_invite(const std::string& secret) {
  const std::string path = state_dir_ + "/invites";
  const std::string hash = sha256_hex(secret);
  const long now = static_cast<long>(time(nullptr));
  auto invites = load_invites(path);
  bool found = false;
  std::vector<Invite> kept;
  for (const auto& invite : invites) {
    if (invite.expires <= now) continue;  // expired ones go at the next write
    // Constant time: the comparison must not tell an attacker how close a guess was.
    if (!found && CRYPTO_memcmp(invite.hash.data(), hash.data(), hash.size()) == 0) {
      found = true;
      continue;  // used up
    }
    kept.push_back(invite);
  }
  if (found && !save_invites(path, kept)) {
    log::warn("cannot update %s; refusing the invite rather than leaving it reusable",
              path.c_str());
    return false;
  }
  return found;
}

std::string Authorization::create_invite(const std::string& state_dir, long lifetime_seconds) {
  unsigned char raw[16];
  RAND_bytes(raw, sizeof raw);
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  std::string secret;
  uint32_t buffer = 0;
  int bits = 0;
  for (unsigned char byte : raw) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      secret.push_back(kAlphabet[(buffer >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  if (bits > 0) secret.push_back(kAlphabet[(buffer << (5 - bits)) & 31]);
  const long expires = static_cast<long>(time(nullptr)) + lifetime_seconds;
  if (!append_line(state_dir + "/invites", sha256_hex(secret) + " " + std::to_string(expires) + "\n"))
    throw std::runtime_error("cannot write " + state_dir + "/invites");
  return secret;
}

bool parse_invite_code(const std::string& code, std::string& name, std::string& key_id_out,
                       std::string& secret, std::string& error) {
  const auto at = code.find('@');
  if (at == std::string::npos || at == 0 || code.size() < at + 1 + 32 + 2 ||
      code[at + 1 + 32] != '.') {
    error = "'" + code + "' is not an invite code (NAME@KEYID.SECRET, as `peer invite` prints)";
    return false;
  }
  name = code.substr(0, at);
  key_id_out = code.substr(at + 1, 32);
  secret = code.substr(at + 1 + 32 + 1);
  if (!is_valid_key_id(key_id_out) || secret.size() != 26 ||
      secret.find_first_not_of("abcdefghijklmnopqrstuvwxyz234567") != std::string::npos) {
    error = "'" + code + "' is not an invite code (NAME@KEYID.SECRET, as `peer invite` prints)";
    return false;
  }
  return true;
}

}  // namespace natfwd

#include "trust/authorization.h"

#include <fcntl.h>
#include <unistd.h>

#include <ctime>
#include <optional>
#include <stdexcept>
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

// How long a used or expired invite is kept, so that `peer pair` can say which.
constexpr long kSpentInviteKeptSeconds = 7 * 24 * 3600;

struct Invite {
  std::string hash;
  long expires = 0;
  bool used = false;
  std::string label;
};

std::vector<Invite> load_invites(const std::string& path) {
  std::vector<Invite> invites;
  for_each_record(path, [&](int, std::istringstream& fields) {
    Invite invite;
    if (!(fields >> invite.hash >> invite.expires) || invite.hash.size() != 64) return true;
    for (std::string word; fields >> word;) {
      if (word == "used") invite.used = true;
      else if (word.rfind("label=", 0) == 0) invite.label = word.substr(6);
    }
    invites.push_back(invite);
    return true;
  });
  return invites;
}

// Writes `text` to `path` through a temporary file and a rename, mode 0600.
bool replace_file(const std::string& path, const std::string& text) {
  const std::string temp = path + ".tmp";
  int fd = g_open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return false;
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

std::string invite_line(const Invite& invite) {
  return invite.hash + " " + std::to_string(invite.expires) +
         (invite.label.empty() ? "" : " label=" + invite.label) + (invite.used ? " used" : "") +
         "\n";
}

bool save_invites(const std::string& path, const std::vector<Invite>& invites) {
  std::string text;
  for (const auto& invite : invites) text += invite_line(invite);
  return replace_file(path, text);
}

// key id, then the label (the rest of the line, trimmed); nullopt for no key line.
std::optional<AuthorizedKey> parse_authorized(const std::string& line) {
  std::istringstream fields(line);
  AuthorizedKey key;
  if (!(fields >> key.key_id) || !is_valid_key_id(key.key_id)) return std::nullopt;
  std::getline(fields, key.label);
  const auto first = key.label.find_first_not_of(" \t");
  key.label = first == std::string::npos ? "" : key.label.substr(first);
  while (!key.label.empty() && (key.label.back() == ' ' || key.label.back() == '\t' ||
                                key.label.back() == '\r'))
    key.label.pop_back();
  return key;
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
  for (const AuthorizedKey& key : list(state_dir_)) ids.insert(key.key_id);
  return ids;
}

std::vector<AuthorizedKey> Authorization::list(const std::string& state_dir) {
  std::vector<AuthorizedKey> keys;
  std::ifstream in(state_dir + "/authorized_peers");
  for (std::string line; std::getline(in, line);)
    if (auto key = parse_authorized(line)) keys.push_back(*key);
  return keys;
}

std::vector<AuthorizedKey> Authorization::revoke(const std::string& state_dir,
                                                 const std::string& which) {
  const std::string path = state_dir + "/authorized_peers";
  std::ifstream in(path);
  std::string kept;
  std::vector<AuthorizedKey> removed;
  std::set<std::string> labelled;  // key ids the label names
  for (std::string line; std::getline(in, line);) {
    auto key = parse_authorized(line);
    if (key && (key->key_id == which || (!key->label.empty() && key->label == which))) {
      removed.push_back(*key);
      if (key->key_id != which) labelled.insert(key->key_id);
      continue;
    }
    kept += line + "\n";  // comments and other keys as they were
  }
  if (removed.empty())
    throw std::runtime_error("no key id or label '" + which + "' in " + path +
                             " (see peer authorized list)");
  if (labelled.size() > 1)
    throw std::runtime_error("the label '" + which + "' names " +
                             std::to_string(labelled.size()) +
                             " keys in " + path + "; revoke them by key id");
  if (!replace_file(path, kept)) throw std::runtime_error("cannot rewrite " + path);
  return removed;
}

bool Authorization::is_authorized(const PublicKey& key) const {
  const std::string id = key_id(key);
  return allowed_.count(id) > 0 || load_ids().count(id) > 0;
}

bool Authorization::authorize(const PublicKey& key, const std::string& label) {
  if (load_ids().count(key_id(key))) return true;
  return append_line(state_dir_ + "/authorized_peers",
                     key_id(key) + (label.empty() ? "" : " " + label) + "\n");
}

bool Authorization::has_pending_invite() const {
  const long now = static_cast<long>(time(nullptr));
  for (const auto& invite : load_invites(state_dir_ + "/invites"))
    if (invite.expires > now && !invite.used) return true;
  return false;
}

InviteOutcome Authorization::check_pairing_proof(const PublicKey& caller, uint64_t session_id,
                                                 const std::string& proof) const {
  const long now = static_cast<long>(time(nullptr));
  for (const auto& invite : load_invites(state_dir_ + "/invites")) {
    const std::string expected = proof_keyed_by_hash(invite.hash, caller, session_id);
    if (proof.size() != expected.size() ||
        CRYPTO_memcmp(proof.data(), expected.data(), expected.size()) != 0)
      continue;
    if (invite.used) return InviteOutcome::kUsed;
    if (invite.expires <= now) return InviteOutcome::kExpired;
    return InviteOutcome::kPending;
  }
  return InviteOutcome::kUnknown;
}

InviteOutcome Authorization::redeem_invite(const std::string& secret, std::string& label) {
  const std::string path = state_dir_ + "/invites";
  const std::string hash = sha256_hex(secret);
  const long now = static_cast<long>(time(nullptr));
  std::vector<Invite> kept;
  std::optional<InviteOutcome> outcome;
  for (Invite invite : load_invites(path)) {
    if (invite.expires + kSpentInviteKeptSeconds <= now) continue;  // forgotten at last
    // Constant time: the comparison must not tell an attacker how close a guess was.
    if (!outcome && CRYPTO_memcmp(invite.hash.data(), hash.data(), hash.size()) == 0) {
      if (invite.used) outcome = InviteOutcome::kUsed;
      else if (invite.expires <= now) outcome = InviteOutcome::kExpired;
      else outcome = InviteOutcome::kRedeemed;
      invite.used = true;
      label = invite.label;
    }
    kept.push_back(invite);
  }
  if (outcome != InviteOutcome::kRedeemed) return outcome.value_or(InviteOutcome::kUnknown);
  if (!save_invites(path, kept)) {
    log::warn("cannot update %s; refusing the invite rather than leaving it reusable",
              path.c_str());
    return InviteOutcome::kCannotWrite;
  }
  return InviteOutcome::kRedeemed;
}

std::string Authorization::create_invite(const std::string& state_dir, long lifetime_seconds,
                                         const std::string& label) {
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
  Invite invite{sha256_hex(secret), static_cast<long>(time(nullptr)) + lifetime_seconds, false,
                label};
  if (!append_line(state_dir + "/invites", invite_line(invite)))
    throw std::runtime_error("cannot write " + state_dir + "/invites");
  return secret;
}

bool is_valid_label(const std::string& label) {
  return !label.empty() && label.size() <= 64 &&
         label.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") ==
             std::string::npos;
}

bool parse_invite_code(const std::string& whole, std::string& name, std::string& key_id_out,
                       std::string& secret, std::string& relay, std::string& error) {
  // `peer invite --with-relay` appends "+HOST:PORT"; '+' is in no name, key id or secret.
  const auto plus = whole.find('+');
  const std::string code = whole.substr(0, plus);
  relay = plus == std::string::npos ? "" : whole.substr(plus + 1);
  if (plus != std::string::npos && relay.empty()) {
    error = "'" + whole + "' ends in '+' without the relay's HOST:PORT";
    return false;
  }
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

const char* invite_refusal(InviteOutcome outcome) {
  switch (outcome) {
    case InviteOutcome::kRedeemed:
    case InviteOutcome::kPending: return nullptr;
    case InviteOutcome::kUnknown:
      return "invite unknown here (mistyped, or made by another serving peer)";
    case InviteOutcome::kUsed: return "invite already used (each code works once)";
    case InviteOutcome::kExpired: return "invite expired (make a new one: peer invite)";
    case InviteOutcome::kCannotWrite: return "the serving peer cannot update its invites";
  }
  return "invite refused";
}

}  // namespace natfwd

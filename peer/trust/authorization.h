// Who may use a serving peer: the keys in STATE_DIR/authorized_peers (one key id per
// line, then an optional comment) and --allow KEYID; and one-time invites.
//
// `peer invite` writes STATE_DIR/invites: `SHA256-HEX-OF-SECRET EXPIRY-UNIX` lines.
// The code it prints, NAME@KEYID.SECRET, carries the secret; the serving peer only
// keeps its hash, compares in constant time, and deletes the line on use, so a code
// works once, before it expires, and the relay (which never sees it: it travels
// inside the QUIC stream) has nothing to replay.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "identity.h"

namespace natfwd {

class Authorization {
 public:
  Authorization(std::string state_dir, std::vector<std::string> allowed_ids);

  bool is_authorized(const PublicKey& key) const;
  // Appends key_id(key) to authorized_peers (with a comment).
  bool authorize(const PublicKey& key, const std::string& comment);
  // True when at least one invite is unused and unexpired.
  bool has_pending_invite() const;
  // True when `proof` is pairing_proof() of a pending invite for this caller and
  // session: only a caller holding an invite code gets as far as the pairing stream.
  bool accepts_pairing_proof(const PublicKey& caller, uint64_t session_id,
                             const std::string& proof) const;
  // Uses up the invite whose secret this is; false if none matches (or expired).
  bool redeem_invite(const std::string& secret);

  // `peer invite`: records a fresh invite valid for `lifetime_seconds` and returns its
  // secret (26 base32 characters).
  static std::string create_invite(const std::string& state_dir, long lifetime_seconds);

 private:
  std::set<std::string> load_ids() const;
  std::string state_dir_;
  std::set<std::string> allowed_;  // --allow
};

// OpenSession.pairing_proof: HMAC-SHA256 keyed by the invite's stored hash (so the
// serving peer can check it without keeping the secret) over a label, the caller's
// public key and the session id, so the relay can replay it for no one else.
std::string pairing_proof(const std::string& invite_secret, const PublicKey& caller,
                          uint64_t session_id);

// NAME@KEYID.SECRET, split; false (with `error`) when malformed.
bool parse_invite_code(const std::string& code, std::string& name, std::string& key_id,
                       std::string& secret, std::string& error);

}  // namespace natfwd

// Who may use a serving peer: the keys in STATE_DIR/authorized_peers (one key id per
// line, then an optional label: the rest of the line, e.g. "laptop" or "paired") and
// --allow KEYID; and one-time invites.
//
// `peer invite` writes STATE_DIR/invites: `SHA256-HEX-OF-SECRET EXPIRY-UNIX` lines,
// then `label=LABEL` when the invite names the key it will authorise, and `used` once
// redeemed. Used and expired invites stay a week past their expiry, so that a late
// `peer pair` hears which it was.
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

// One line of authorized_peers.
struct AuthorizedKey {
  std::string key_id;
  std::string label;  // "" when the line has none
};

// What became of a `peer pair` secret.
enum class InviteOutcome { kRedeemed, kUnknown, kUsed, kExpired, kCannotWrite };

class Authorization {
 public:
  Authorization(std::string state_dir, std::vector<std::string> allowed_ids);

  bool is_authorized(const PublicKey& key) const;
  // Appends key_id(key) to authorized_peers with its label, unless the key is there
  // already (pairing twice adds nothing).
  bool authorize(const PublicKey& key, const std::string& label);
  // True when at least one invite is unused and unexpired.
  bool has_pending_invite() const;
  // Uses up the invite whose secret this is; `label` is the one `peer invite` gave it.
  InviteOutcome redeem_invite(const std::string& secret, std::string& label);

  // `peer invite`: records a fresh invite valid for `lifetime_seconds` (its key to be
  // labelled `label`, if not empty) and returns its secret (26 base32 characters).
  static std::string create_invite(const std::string& state_dir, long lifetime_seconds,
                                   const std::string& label = "");
  // `peer authorized list`: the lines of authorized_peers, in file order.
  static std::vector<AuthorizedKey> list(const std::string& state_dir);
  // `peer authorized revoke`: removes the lines whose key id or label is `which` and
  // returns them; throws std::runtime_error (one line) when none is, when a label names
  // several keys, or when the file cannot be rewritten.
  static std::vector<AuthorizedKey> revoke(const std::string& state_dir, const std::string& which);

 private:
  std::set<std::string> load_ids() const;
  std::string state_dir_;
  std::set<std::string> allowed_;  // --allow
};

// A label as `peer invite --label` takes it: 1 to 64 of A-Z a-z 0-9 . _ -
bool is_valid_label(const std::string& label);

// NAME@KEYID.SECRET[+RELAY], split (`relay` empty without the suffix, else the text
// after '+', checked by the caller as a --relay); false (with `error`) when malformed.
bool parse_invite_code(const std::string& code, std::string& name, std::string& key_id,
                       std::string& secret, std::string& relay, std::string& error);

}  // namespace natfwd

// Who may use a serving peer: the keys in STATE_DIR/authorized_peers (one key id per
// line, then an optional label: the rest of the line, e.g. "laptop" or "paired") and
// --allow KEYID; and one-time invites.
//
// `peer invite` writes STATE_DIR/invites: `SHA256-HEX-OF-SECRET EXPIRY-UNIX` lines,
// then `label=LABEL` when the invite names the key it will authorise, and `used` once
// redeemed. Used and expired invites stay a week past their expiry, so that a late
// `peer pair` hears which it was.
// The code it prints, NAME@KEYID.SECRET, carries the secret; the serving peer only
// keeps its hash, compares in constant time, and marks the line used, so a code works
// once, before it expires, and the relay (which never sees it: it travels inside the
// QUIC stream) has nothing to replay. The pairing side's OpenSession carries
// pairing_proof(), so home tells it from a stranger before it reveals anything.
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
enum class InviteOutcome { kRedeemed, kPending, kUnknown, kUsed, kExpired, kCannotWrite };

class Authorization {
 public:
  Authorization(std::string state_dir, std::vector<std::string> allowed_ids);

  bool is_authorized(const PublicKey& key) const;
  // Appends key_id(key) to authorized_peers with its label, unless the key is there
  // already (pairing twice adds nothing).
  bool authorize(const PublicKey& key, const std::string& label);
  // True when at least one invite is unused and unexpired.
  bool has_pending_invite() const;
  // What a caller's OpenSession.pairing_proof (pairing_proof()) is worth: kPending
  // when it is for a pending invite, this caller and session (only such a caller gets
  // as far as the pairing stream), else why not (kUnknown, kUsed, kExpired).
  InviteOutcome check_pairing_proof(const PublicKey& caller, uint64_t session_id,
                                    const std::string& proof) const;
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

// OpenSession.pairing_proof: HMAC-SHA256 keyed by the invite's stored hash (so the
// serving peer can check it without keeping the secret) over a label, the caller's
// public key and the session id, so the relay can replay it for no one else.
std::string pairing_proof(const std::string& invite_secret, const PublicKey& caller,
                          uint64_t session_id);

// A label as `peer invite --label` takes it: 1 to 64 of A-Z a-z 0-9 . _ -
bool is_valid_label(const std::string& label);

// Why a pairing was refused, for the caller and the log; nullptr for kRedeemed/kPending.
const char* invite_refusal(InviteOutcome outcome);

// NAME@KEYID.SECRET[+RELAY], split (`relay` empty without the suffix, else the text
// after '+', checked by the caller as a --relay); false (with `error`) when malformed.
bool parse_invite_code(const std::string& code, std::string& name, std::string& key_id,
                       std::string& secret, std::string& relay, std::string& error);

}  // namespace natfwd

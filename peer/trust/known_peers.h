// Pinning the keys of serving peers, like ssh's known_hosts.
//
// STATE_DIR/known_peers holds one line per name: `NAME ed25519 BASE64-PUBLIC-KEY`. The
// first tunnel to a name records the key it proved in the QUIC handshake; later
// tunnels must present the same key, or they are refused with both fingerprints.
// `peer -L ... home@KEYID` pins explicitly: no first-use trust at all.
#pragma once

#include <optional>
#include <string>

#include "identity.h"

namespace natfwd {

class KnownPeers {
 public:
  explicit KnownPeers(std::string path) : path_(std::move(path)) {}

  // Empty: `key` may be `name` (already known with this key, or unknown). Otherwise a
  // loud refusal naming both fingerprints and the line to remove.
  std::string check(const std::string& name, const PublicKey& key) const;
  // Records `name` -> `key` if the name is not known yet; logs the first use.
  void remember(const std::string& name, const PublicKey& key) const;
  const std::string& path() const { return path_; }

 private:
  struct Entry {
    PublicKey key;
    int line;
  };
  std::optional<Entry> find(const std::string& name) const;
  std::string path_;
};

// For `home@KEYID`: empty when key_id(key) is `expected_id`, else the refusal.
std::string check_pinned_key_id(const std::string& name, const std::string& expected_id,
                                const PublicKey& key);

}  // namespace natfwd

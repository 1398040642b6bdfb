// Trust on first use for relays reached over TLS, like ssh's known_hosts: the first
// connection to a relay records the SHA-256 of its certificate's public key in
// STATE_DIR/known_relays; later connections must present the same key.
#pragma once

#include <string>

#include "address.h"
#include "identity.h"

namespace natfwd {

class KnownRelays {
 public:
  explicit KnownRelays(std::string path) : path_(std::move(path)) {}
  // Empty string: trusted (already known with this key, or not known yet). Otherwise a
  // loud explanation naming both fingerprints and the file to edit.
  std::string check(const HostPort& relay, const std::string& spki_sha256) const;
  // Records a relay's key on the first connection, once the server has answered as a
  // natfwd relay: a TLS server at a mistyped address is never pinned. Known: no-op.
  void remember(const HostPort& relay, const std::string& spki_sha256);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace natfwd

// Name bindings persisted in the relay's state dir (STATE_DIR/names), one line each:
//
//   NAME KEYID BASE64KEY
//
// NAME as is_valid_peer_name(), KEYID = key_id() of the key (proto/identity.h), and
// BASE64KEY the raw 32-byte Ed25519 public key in base64. Empty lines and lines
// starting with '#' are skipped. Loaded once at start; rewritten whole on each new
// binding (temporary file, then rename, mode 0600), so a crash leaves the old or the
// new file, never half of one.
#pragma once

#include <string>
#include <string_view>

#include "rendezvous/name_binding.h"

namespace natfwd::relay {

class NameBindingFile final : public MemoryNameBinding {
 public:
  // Loads `path` if it exists. Throws std::runtime_error("PATH:LINE: reason") on a
  // malformed line, or with the reason when the file cannot be read.
  explicit NameBindingFile(std::string path);

  bool bind(std::string_view name, std::string_view public_key) override;

 private:
  // Writes all bindings; false (and an error logged) on failure.
  bool save() const;
  std::string path_;
};

}  // namespace natfwd::relay

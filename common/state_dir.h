#pragma once

#include <string>

#include "identity.h"

namespace natfwd {

// Where a program keeps its keys when --state-dir is not given:
//   root:  /var/lib/natfwd/<program>
//   users: $XDG_STATE_HOME/natfwd/<program>  (default ~/.local/state/natfwd/<program>)
std::string default_state_dir(const std::string& program);

// Makes `dir` (mode 0700, with its parents) and checks that nobody but this user or
// root can change it or a directory above it (path_safety.h): it holds the keys and
// the lists of who may connect. Throws std::runtime_error with one line.
void open_state_dir(const std::string& dir);

// Writes `text` to `path` readable by this user only (0600), whole or not at all: a
// crash leaves the old file. "" when written, else one line saying why not.
std::string write_private_file(const std::string& path, const std::string& text);

// open_state_dir, then the identity key in it (made on first use).
Identity load_identity(const std::string& dir);

}  // namespace natfwd

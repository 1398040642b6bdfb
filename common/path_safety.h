// Files that decide who gets in (identity keys, authorized_peers, names, the TURN
// secret, config files with `allow`) are only as safe as the directories above them.
// As OpenSSH's StrictModes does, a path is refused when it, or a directory above it,
// can be changed by someone other than this user or root: owned by another user, or
// writable by group or others. A directory with the sticky bit (such as /tmp) may be
// writable by all as an ancestor, since nobody can rename or remove another user's
// entry in it; the state dir itself never.
#pragma once

#include <string>

namespace natfwd {

enum class PathKind {
  kStateDir,    // a directory of this user's: not even a sticky one writable by others
  kConfigFile,  // read by the program: others may read it, not change it
  kSecretFile,  // others may not even read it (its group may: a secret shared with coturn)
};

// "" when `path` is safe to trust, else one line saying what is wrong and the command
// that fixes it. `what` names the path in that line ("state dir", "config file").
// A missing path is safe (it will be made by this user).
std::string unsafe_path_reason(const std::string& path, PathKind kind, const std::string& what);

}  // namespace natfwd

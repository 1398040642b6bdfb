#include "path_safety.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace natfwd {
namespace {

std::string octal_mode(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return text;
}

// The owner and write bits of one path; "" when acceptable.
std::string check_one(const std::string& path, const struct stat& info, bool is_leaf,
                      const std::string& what, const std::string& shown) {
  // "state dir /srv/x" for the path itself, "state dir /srv/x: its directory /srv" above.
  const std::string subject =
      !is_leaf        ? what + " " + shown + ": its directory " + path
      : shown != path ? what + " " + shown + " (" + path + ")"
                      : what + " " + shown;
  const uid_t me = geteuid();
  if (info.st_uid != me && info.st_uid != 0)
    return subject + " is owned by uid " + std::to_string(info.st_uid) +
           ", not by this user (uid " + std::to_string(me) + ") or root; use a directory of "
           "your own, or run: chown " + std::to_string(me) + " " + path;
  const bool writable_by_others = (info.st_mode & (S_IWGRP | S_IWOTH)) != 0;
  const bool sticky_ancestor = !is_leaf && S_ISDIR(info.st_mode) && (info.st_mode & S_ISVTX);
  if (writable_by_others && !sticky_ancestor)
    return subject + " is writable by group or others (mode " + octal_mode(info.st_mode) +
           "); run: chmod go-w " + path;
  return "";
}

}  // namespace

std::string unsafe_path_reason(const std::string& path, PathKind kind, const std::string& what) {
  char resolved[PATH_MAX];
  if (!realpath(path.c_str(), resolved)) {
    if (errno == ENOENT) return "";
    return what + " " + path + ": " + std::strerror(errno);
  }
  std::string current = resolved;
  bool leaf = true;
  while (true) {
    struct stat info {};
    if (stat(current.c_str(), &info) != 0) return what + " " + path + ": " + std::strerror(errno);
    if (leaf && kind == PathKind::kStateDir && !S_ISDIR(info.st_mode))
      return what + " " + path + " is not a directory";
    // Others may not read it; a group may (a secret shared with coturn's group).
    if (leaf && kind == PathKind::kSecretFile && (info.st_mode & 007))
      return what + " " + path + " is accessible by others (mode " + octal_mode(info.st_mode) +
             "); run: chmod o-rwx " + current;
    // A device such as /dev/null (--config /dev/null: no file) holds nothing to plant.
    const bool device = leaf && (S_ISCHR(info.st_mode) || S_ISBLK(info.st_mode));
    if (std::string reason = device ? "" : check_one(current, info, leaf, what, path);
        !reason.empty())
      return reason;
    if (current == "/") return "";
    const size_t slash = current.rfind('/');
    current = slash == 0 ? "/" : current.substr(0, slash);
    leaf = false;
  }
}

}  // namespace natfwd

#include "control/status_lookup.h"

#include <glob.h>
#include <pwd.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>

namespace natfwd {
namespace {

std::string parent_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos || slash == 0 ? "/" : path.substr(0, slash);
}

// The peer-* folders of `base` (state dirs of several peers), sorted.
std::vector<std::string> peer_dirs_in(const std::string& base) {
  std::vector<std::string> dirs;
  glob_t found{};
  if (glob((base + "/peer-*").c_str(), GLOB_ONLYDIR, nullptr, &found) == 0) {
    for (size_t i = 0; i < found.gl_pathc; ++i) {
      struct stat info {};
      // GLOB_ONLYDIR is only a hint to glob().
      if (stat(found.gl_pathv[i], &info) == 0 && S_ISDIR(info.st_mode))
        dirs.emplace_back(found.gl_pathv[i]);
    }
  }
  globfree(&found);
  return dirs;
}

}  // namespace

StatusLookup status_lookup(const std::optional<std::string>& state_dir,
                           const std::optional<std::string>& name,
                           const std::string& default_state_dir,
                           const std::string& services_base) {
  StatusLookup lookup;
  if (state_dir || name) {
    lookup.state_dirs = {state_dir ? *state_dir : services_base + "/peer-" + *name};
    lookup.explicit_dir = true;
    return lookup;
  }
  lookup.state_dirs.push_back(default_state_dir);
  for (const std::string& base : {parent_of(default_state_dir), services_base})
    for (std::string& dir : peer_dirs_in(base))
      if (std::find(lookup.state_dirs.begin(), lookup.state_dirs.end(), dir) ==
          lookup.state_dirs.end())
        lookup.state_dirs.push_back(std::move(dir));
  return lookup;
}

std::string status_permission_hint(const std::string& state_dir, int connect_errno) {
  if (connect_errno != EACCES && connect_errno != EPERM) return "";
  // The state dir's owner; when even its folder is closed to us, that folder's.
  struct stat info {};
  if (stat(state_dir.c_str(), &info) != 0 &&
      (errno != EACCES || stat(parent_of(state_dir).c_str(), &info) != 0))
    return "";
  const passwd* owner = getpwuid(info.st_uid);
  const std::string user = owner ? owner->pw_name : std::to_string(info.st_uid);
  return "the peer of " + state_dir + " belongs to the user " + user +
         ", and only its owner may ask it: sudo -u " + user + " peer status --state-dir " +
         state_dir;
}

}  // namespace natfwd

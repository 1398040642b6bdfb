// StrictModes-like checks of state dirs and config files (common/path_safety.h), on
// real directories made under a private temporary one.
#include <catch2/catch.hpp>

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "path_safety.h"

using natfwd::PathKind;
using natfwd::unsafe_path_reason;

namespace {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "natfwd-paths-XXXXXX").string();
    REQUIRE(mkdtemp(pattern.data()));
    path = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string make_dir(const char* name, mode_t mode) const {
    const std::string dir = (path / name).string();
    REQUIRE(mkdir(dir.c_str(), 0700) == 0);
    REQUIRE(chmod(dir.c_str(), mode) == 0);
    return dir;
  }
  std::string make_file(const std::string& dir, const char* name, mode_t mode) const {
    const std::string file = dir + "/" + name;
    std::ofstream(file) << "allow = x\n";
    REQUIRE(chmod(file.c_str(), mode) == 0);
    return file;
  }
};

}  // namespace

TEST_CASE("a private state dir and a missing one are fine") {
  TempDir tmp;
  CHECK(unsafe_path_reason(tmp.make_dir("state", 0700), PathKind::kStateDir, "state dir") == "");
  CHECK(unsafe_path_reason((tmp.path / "not-yet").string(), PathKind::kStateDir, "state dir") ==
        "");
}

TEST_CASE("a state dir writable by others is refused with the chmod that fixes it") {
  TempDir tmp;
  const std::string dir = tmp.make_dir("state", 0777);
  const std::string reason = unsafe_path_reason(dir, PathKind::kStateDir, "state dir");
  CHECK(reason == "state dir " + dir +
                      " is writable by group or others (mode 0777); run: chmod go-w " + dir);
  // Sticky, as /tmp: fine above a private dir, never as the state dir itself.
  const std::string shared = tmp.make_dir("shared", 01777);
  CHECK_THAT(unsafe_path_reason(shared, PathKind::kStateDir, "state dir"),
             Catch::Contains("writable by group or others (mode 1777)"));
  const std::string inside = shared + "/mine";
  REQUIRE(mkdir(inside.c_str(), 0700) == 0);
  CHECK(unsafe_path_reason(inside, PathKind::kStateDir, "state dir") == "");
}

TEST_CASE("a directory above, writable by others without the sticky bit, is refused") {
  TempDir tmp;
  const std::string open_parent = tmp.make_dir("open", 0777);
  const std::string dir = open_parent + "/state";
  REQUIRE(mkdir(dir.c_str(), 0700) == 0);
  CHECK_THAT(unsafe_path_reason(dir, PathKind::kStateDir, "state dir"),
             Catch::Contains("state dir " + dir + ": its directory " + open_parent +
                             " is writable by group or others"));
}

TEST_CASE("a config file writable by others is refused; read-only for others is fine") {
  TempDir tmp;
  const std::string dir = tmp.make_dir("etc", 0755);
  CHECK(unsafe_path_reason(tmp.make_file(dir, "ok.conf", 0644), PathKind::kConfigFile,
                           "config file") == "");
  const std::string bad = tmp.make_file(dir, "bad.conf", 0666);
  CHECK(unsafe_path_reason(bad, PathKind::kConfigFile, "config file") ==
        "config file " + bad + " is writable by group or others (mode 0666); run: chmod go-w " +
            bad);
}

TEST_CASE("--config /dev/null (no file at all) is fine though the device is 0666") {
  CHECK(unsafe_path_reason("/dev/null", PathKind::kConfigFile, "config file") == "");
}

TEST_CASE("a secret file readable by others is refused; by its group is fine") {
  TempDir tmp;
  const std::string dir = tmp.make_dir("state", 0700);
  const std::string key = tmp.make_file(dir, "turn-secret", 0644);
  CHECK(unsafe_path_reason(key, PathKind::kSecretFile, "TURN secret") ==
        "TURN secret " + key + " is accessible by others (mode 0644); run: chmod o-rwx " + key);
  const std::string shared = tmp.make_file(dir, "shared-secret", 0640);
  CHECK(unsafe_path_reason(shared, PathKind::kSecretFile, "TURN secret") == "");
}

TEST_CASE("a symlink is judged by what it points to") {
  TempDir tmp;
  const std::string open = tmp.make_dir("open", 0777);
  const std::string link = (tmp.path / "link").string();
  REQUIRE(symlink(open.c_str(), link.c_str()) == 0);
  CHECK_THAT(unsafe_path_reason(link, PathKind::kStateDir, "state dir"),
             Catch::Contains("state dir " + link + " (" + open + ") is writable by group or others"));
}

TEST_CASE("a path owned by another user is refused (as root: chown to nobody)") {
  // Only root can give a file away; CI runs as root, so this runs there.
  if (geteuid() != 0) return;
  const passwd* nobody = getpwnam("nobody");
  REQUIRE(nobody);
  TempDir tmp;
  const std::string dir = tmp.make_dir("theirs", 0700);
  REQUIRE(chown(dir.c_str(), nobody->pw_uid, nobody->pw_gid) == 0);
  CHECK(unsafe_path_reason(dir, PathKind::kStateDir, "state dir") ==
        "state dir " + dir + " is owned by uid " + std::to_string(nobody->pw_uid) +
            ", not by this user (uid 0) or root; use a directory of your own, or run: chown 0 " +
            dir);
}

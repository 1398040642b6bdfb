// control/status_lookup: which state dirs `peer status` asks, in a temp "BASE".
#include <catch2/catch.hpp>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string>

#include "control/status_lookup.h"

using natfwd::status_lookup;
using natfwd::status_permission_hint;

namespace {

struct Base {
  std::filesystem::path path;
  Base() {
    std::string pattern = (std::filesystem::temp_directory_path() / "natfwd-base-XXXXXX").string();
    REQUIRE(mkdtemp(pattern.data()));
    path = pattern;
    for (const char* dir : {"peer", "peer-office", "peer-home", "relay"})
      std::filesystem::create_directory(path / dir);
    std::ofstream(path / "peer-notes") << "a file, not a peer's state dir\n";
  }
  ~Base() { std::filesystem::remove_all(path); }
  std::string at(const char* name) const { return (path / name).string(); }
};

}  // namespace

TEST_CASE("peer status asks the default state dir, then every service's beside it") {
  Base base;
  // root: the default state dir and the services share one folder.
  const auto lookup = status_lookup(std::nullopt, std::nullopt, base.at("peer"), base.path);
  CHECK_FALSE(lookup.explicit_dir);
  CHECK(lookup.state_dirs ==
        std::vector<std::string>{base.at("peer"), base.at("peer-home"), base.at("peer-office")});
  // Another user: its own, then the machine's services (whose owners it learns).
  Base user;
  std::filesystem::remove_all(user.path / "peer-home");
  std::filesystem::remove_all(user.path / "peer-office");
  const auto mixed = status_lookup(std::nullopt, std::nullopt, user.at("peer"), base.path);
  CHECK(mixed.state_dirs ==
        std::vector<std::string>{user.at("peer"), base.at("peer-home"), base.at("peer-office")});
}

TEST_CASE("peer status --name NAME asks natfwd-peer@NAME's state dir only") {
  Base base;
  const auto lookup = status_lookup(std::nullopt, std::string("home"), "/home/u/.local/state/"
                                    "natfwd/peer", base.path);
  CHECK(lookup.explicit_dir);
  CHECK(lookup.state_dirs == std::vector<std::string>{base.at("peer-home")});
  // --state-dir wins over both.
  const auto given =
      status_lookup(std::string("/srv/x"), std::string("home"), base.at("peer"), base.path);
  CHECK(given.state_dirs == std::vector<std::string>{"/srv/x"});
}

TEST_CASE("a permission hint names the owner and the command, only for EACCES") {
  Base base;
  const std::string hint = status_permission_hint(base.at("peer-home"), EACCES);
  CHECK(hint.find("belongs to the user ") != std::string::npos);
  CHECK(hint.find("peer status --state-dir " + base.at("peer-home")) != std::string::npos);
  CHECK(status_permission_hint(base.at("peer-home"), ENOENT).empty());
  CHECK(status_permission_hint(base.at("no-such"), EACCES).empty());
}

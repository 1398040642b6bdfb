// The relay's publishing options: --publish-domain, --publish-http and
// --allow-publisher on the command line and in relay.conf, and the publishers file.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "front_door/publishers_file.h"
#include "relay_config_file.h"
#include "relay_options.h"

using namespace natfwd;
using namespace natfwd::relay;

namespace {

const std::string kKeyId = "abcdefghijklmnopqrstuvwxyz234567";

bool parse(std::vector<std::string> args, RelayOptions& options, std::string& error) {
  args.insert(args.begin(), "relay");
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  return parse_relay_options(static_cast<int>(args.size()), argv.data(), options, error);
}

std::string error_of(std::vector<std::string> args) {
  RelayOptions options;
  std::string error;
  REQUIRE_FALSE(parse(std::move(args), options, error));
  return error;
}

}  // namespace

TEST_CASE("publishing flags are typed: a lowercase domain, an HTTP address, key ids") {
  RelayOptions options;
  std::string error;
  REQUIRE(parse({"--publish-domain", "Share.Example.NET.", "--publish-http", "0.0.0.0",
                 "--allow-publisher", kKeyId, "--allow-publisher", "any"},
                options, error));
  CHECK(options.publish_domain == "share.example.net");
  CHECK(options.publish_http == HostPort{"0.0.0.0", 80});
  CHECK(options.allow_publishers == std::vector<std::string>{kKeyId, "any"});
  REQUIRE(parse({"--publish-ports", "20000-20099"}, options, error));
  CHECK(options.publish_port_min == 20000);
  CHECK(options.publish_port_max == 20099);

  RelayOptions defaults;
  REQUIRE(parse({}, defaults, error));
  CHECK(defaults.publish_domain.empty());
  CHECK_FALSE(defaults.publish_http);
  CHECK(defaults.allow_publishers.empty());
}

TEST_CASE("bad publishing flags name the flag and the value") {
  CHECK(error_of({"--publish-domain", "bad_domain.net"}).rfind("--publish-domain: ", 0) == 0);
  CHECK(error_of({"--publish-domain", "-x.net"}).rfind("--publish-domain: ", 0) == 0);
  CHECK(error_of({"--publish-domain", "a..net"}).rfind("--publish-domain: ", 0) == 0);
  CHECK(error_of({"--publish-http", "example.net:80"}) ==
        "--publish-http: 'example.net' is not an IP address");
  CHECK(error_of({"--allow-publisher", "nobody"}).rfind("--allow-publisher: 'nobody'", 0) == 0);
  CHECK(error_of({"--publish-ports", "20099-20000"}).rfind("--publish-ports: ", 0) == 0);
}

TEST_CASE("relay.conf takes the publishing keys, checked as the flags are") {
  auto good = config::parse_config_text(
      "relay.conf",
      "[relay]\npublish-domain = share.example.net\npublish-http = 0.0.0.0:80\n"
      "allow-publisher = " + kKeyId + ";any\npublish-ports = 20000-20099\n",
      relay_config_schema());
  CHECK(std::holds_alternative<config::ConfigFile>(good));
  auto bad = config::parse_config_text("relay.conf", "[relay]\nallow-publisher = x\n",
                                       relay_config_schema());
  REQUIRE(std::holds_alternative<std::string>(bad));
  CHECK(std::get<std::string>(bad).rfind("relay.conf:2: key 'allow-publisher': ", 0) == 0);
}

TEST_CASE("the publishers file adds key ids and `any`, and names a bad line") {
  std::string pattern =
      (std::filesystem::temp_directory_path() / "natfwd-publishers-XXXXXX").string();
  REQUIRE(mkdtemp(pattern.data()));
  const std::filesystem::path dir = pattern;
  const std::string path = (dir / "publishers").string();

  using front_door::load_publishers;
  CHECK_FALSE(load_publishers(path, {}).any);  // missing file: nobody
  CHECK(load_publishers(path, {"any"}).any);

  std::ofstream(path) << "# who may publish\n" << kKeyId << "  # home\n\n";
  auto publishers = load_publishers(path, {});
  CHECK_FALSE(publishers.any);
  CHECK(publishers.key_ids == std::set<std::string>{kKeyId});

  std::ofstream(path) << "any\n";
  CHECK(load_publishers(path, {}).any);

  std::ofstream(path) << kKeyId << "\nnot-a-key\n";
  try {
    load_publishers(path, {});
    FAIL("a bad line loaded");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).rfind(path + ":2: 'not-a-key'", 0) == 0);
  }
  std::filesystem::remove_all(dir);
}

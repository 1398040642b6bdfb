#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "identity.h"

using namespace natfwd;

namespace {
struct TempDir {
  std::string path;
  TempDir() {
    gchar* p = g_dir_make_tmp("natfwd-test-XXXXXX", nullptr);
    path = p;
    g_free(p);
  }
  ~TempDir() {
    g_unlink((path + "/state/identity.key").c_str());
    g_rmdir((path + "/state").c_str());
    g_rmdir(path.c_str());
  }
};
}  // namespace

TEST_CASE("the identity key is created once, 0600, and loaded again") {
  TempDir dir;
  const std::string state = dir.path + "/state";
  Identity first = Identity::load_or_create(state);
  struct stat info {};
  REQUIRE(stat((state + "/identity.key").c_str(), &info) == 0);
  REQUIRE((info.st_mode & 0777) == 0600);
  REQUIRE(stat(state.c_str(), &info) == 0);
  REQUIRE((info.st_mode & 077) == 0);
  Identity second = Identity::load_or_create(state);
  REQUIRE(first.public_key() == second.public_key());
}

TEST_CASE("a key file readable by others is refused") {
  TempDir dir;
  const std::string state = dir.path + "/state";
  Identity::load_or_create(state);
  g_chmod((state + "/identity.key").c_str(), 0640);
  REQUIRE_THROWS_WITH(Identity::load_or_create(state),
                      Catch::Contains("accessible by others"));
}

TEST_CASE("key ids are 32 base32 characters and differ between keys") {
  Identity a = Identity::generate();
  Identity b = Identity::generate();
  std::string id = key_id(a.public_key());
  REQUIRE(id.size() == 32);
  REQUIRE(id.find_first_not_of("abcdefghijklmnopqrstuvwxyz234567") == std::string::npos);
  REQUIRE(id != key_id(b.public_key()));
  REQUIRE(key_fingerprint(a.public_key()).rfind("SHA256:", 0) == 0);
}

TEST_CASE("the self-signed certificate is PEM and carries the key") {
  Identity a = Identity::generate();
  std::string pem = a.self_signed_certificate_pem("natfwd");
  REQUIRE(pem.find("BEGIN CERTIFICATE") != std::string::npos);
  REQUIRE(a.private_key_pem().find("BEGIN PRIVATE KEY") != std::string::npos);
}

TEST_CASE("registration signatures verify only for the same key, challenge and name") {
  Identity a = Identity::generate();
  Identity b = Identity::generate();
  const std::string challenge(32, 'c');
  const std::string message = registration_message(challenge, "home");
  const std::string signature = a.sign(message);
  REQUIRE(signature.size() == 64);
  REQUIRE(verify_signature(a.public_key(), message, signature));
  REQUIRE_FALSE(verify_signature(b.public_key(), message, signature));
  REQUIRE_FALSE(verify_signature(a.public_key(), registration_message(challenge, "homf"), signature));
  REQUIRE_FALSE(verify_signature(a.public_key(), registration_message(std::string(32, 'd'), "home"),
                                 signature));
  REQUIRE_FALSE(verify_signature(a.public_key(), message, signature.substr(0, 63)));
  REQUIRE_FALSE(verify_signature(a.public_key(), message, ""));
}

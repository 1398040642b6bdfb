// authorized_peers with labels, and what became of an invite: files in a temp dir.
#include <catch2/catch.hpp>

#include <ctime>
#include <fstream>
#include <sstream>

#include <glib.h>
#include <glib/gstdio.h>

#include "trust/authorization.h"

using namespace natfwd;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    gchar* p = g_dir_make_tmp("natfwd-auth-XXXXXX", nullptr);
    path = p;
    g_free(p);
  }
  ~TempDir() {
    for (const char* name : {"authorized_peers", "invites"}) g_unlink((path + "/" + name).c_str());
    g_rmdir(path.c_str());
  }
  std::string read(const std::string& name) const {
    std::ifstream in(path + "/" + name);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
};

}  // namespace

TEST_CASE("authorising a key twice writes one line, with its label") {
  TempDir dir;
  Authorization authorization(dir.path, {});
  const Identity laptop = Identity::generate();
  REQUIRE(authorization.authorize(laptop.public_key(), "laptop"));
  REQUIRE(authorization.authorize(laptop.public_key(), "paired"));
  CHECK(dir.read("authorized_peers") == key_id(laptop.public_key()) + " laptop\n");
  CHECK(authorization.is_authorized(laptop.public_key()));
}

TEST_CASE("labels are the rest of the line; old lines without one still count") {
  TempDir dir;
  const std::string a(32, 'a'), b(32, 'b'), c(32, 'c');
  std::ofstream(dir.path + "/authorized_peers")
      << a << "\n# a comment\n" << b << "  work laptop \n" << c << " phone\n";
  const auto keys = Authorization::list(dir.path);
  REQUIRE(keys.size() == 3);
  CHECK((keys[0].key_id == a && keys[0].label.empty()));
  CHECK(keys[1].label == "work laptop");
  CHECK(keys[2].label == "phone");

  const auto removed = Authorization::revoke(dir.path, "phone");
  REQUIRE(removed.size() == 1);
  CHECK(removed[0].key_id == c);
  CHECK(dir.read("authorized_peers") == a + "\n# a comment\n" + b + "  work laptop \n");
  CHECK_THROWS_WITH(Authorization::revoke(dir.path, "phone"),
                    Catch::Contains("no key id or label 'phone'"));
  CHECK(Authorization::revoke(dir.path, a).size() == 1);
}

TEST_CASE("a label that names two keys is not revoked by label") {
  TempDir dir;
  const std::string a(32, 'a'), b(32, 'b');
  std::ofstream(dir.path + "/authorized_peers") << a << " laptop\n" << b << " laptop\n";
  CHECK_THROWS_WITH(Authorization::revoke(dir.path, "laptop"),
                    Catch::Contains("names 2 keys"));
  CHECK(Authorization::list(dir.path).size() == 2);
}

TEST_CASE("an invite is redeemed once, then said to be used; unknown and expired are told apart") {
  TempDir dir;
  Authorization authorization(dir.path, {});
  const std::string secret = Authorization::create_invite(dir.path, 600, "laptop");
  CHECK(authorization.has_pending_invite());
  std::string label;
  CHECK(authorization.redeem_invite(secret, label) == InviteOutcome::kRedeemed);
  CHECK(label == "laptop");
  CHECK_FALSE(authorization.has_pending_invite());
  CHECK(authorization.redeem_invite(secret, label) == InviteOutcome::kUsed);
  CHECK(authorization.redeem_invite("abcdefghijklmnopqrstuvwxyz", label) ==
        InviteOutcome::kUnknown);

  const std::string late = Authorization::create_invite(dir.path, -60);
  CHECK(authorization.redeem_invite(late, label) == InviteOutcome::kExpired);
  CHECK_FALSE(is_valid_label("two words"));
  CHECK(is_valid_label("laptop-2.home_lan"));
}

TEST_CASE("a pairing proof opens the door only for its invite, caller and session") {
  TempDir dir;
  Authorization authorization(dir.path, {});
  const Identity caller = Identity::generate();
  const Identity stranger = Identity::generate();
  const PublicKey& key = caller.public_key();
  CHECK(authorization.check_pairing_proof(key, 42, "") == InviteOutcome::kUnknown);

  const std::string secret = Authorization::create_invite(dir.path, 3600);
  const std::string proof = pairing_proof(secret, key, 42);
  CHECK(proof.size() == 32);
  CHECK(authorization.check_pairing_proof(key, 42, proof) == InviteOutcome::kPending);
  // The relay sees the proof; it is worth nothing for another key or session.
  CHECK(authorization.check_pairing_proof(stranger.public_key(), 42, proof) ==
        InviteOutcome::kUnknown);
  CHECK(authorization.check_pairing_proof(key, 43, proof) == InviteOutcome::kUnknown);
  CHECK(authorization.check_pairing_proof(
            key, 42, pairing_proof(std::string(secret[0] == 'a' ? "b" : "a") + secret.substr(1),
                                   key, 42)) == InviteOutcome::kUnknown);
  CHECK(authorization.check_pairing_proof(key, 42, proof.substr(0, 16)) ==
        InviteOutcome::kUnknown);

  // Used up: the proof now says so, before any ICE.
  std::string label;
  REQUIRE(authorization.redeem_invite(secret, label) == InviteOutcome::kRedeemed);
  CHECK(authorization.check_pairing_proof(key, 42, proof) == InviteOutcome::kUsed);
  CHECK(invite_refusal(InviteOutcome::kUsed) == std::string("invite already used (each code "
                                                            "works once)"));
  CHECK(invite_refusal(InviteOutcome::kPending) == nullptr);
}

TEST_CASE("an expired invite's pairing proof says it expired") {
  TempDir dir;
  Authorization authorization(dir.path, {});
  const Identity caller = Identity::generate();
  const std::string secret = Authorization::create_invite(dir.path, 3600);
  std::string hash;
  long expires = 0;
  {
    std::ifstream in(dir.path + "/invites");
    in >> hash >> expires;
  }
  std::ofstream(dir.path + "/invites") << hash << " " << (time(nullptr) - 1) << "\n";
  CHECK_FALSE(authorization.has_pending_invite());
  CHECK(authorization.check_pairing_proof(caller.public_key(), 7,
                                          pairing_proof(secret, caller.public_key(), 7)) ==
        InviteOutcome::kExpired);
}

TEST_CASE("an invite code may carry its relay after '+'") {
  const std::string base = "home@" + std::string(32, 'a') + "." + std::string(26, 'b');
  std::string name, id, secret, relay, error;
  REQUIRE(parse_invite_code(base, name, id, secret, relay, error));
  CHECK((name == "home" && relay.empty()));
  REQUIRE(parse_invite_code(base + "+vps.example:3478", name, id, secret, relay, error));
  CHECK(relay == "vps.example:3478");
  CHECK(secret == std::string(26, 'b'));
  CHECK_FALSE(parse_invite_code(base + "+", name, id, secret, relay, error));
  CHECK(error.find("without the relay's HOST:PORT") != std::string::npos);
}

// trust/authorization: one-time invites and the pairing proof a caller sends in its
// OpenSession, checked by the serving peer before it reveals anything.
#include <catch2/catch.hpp>

#include <ctime>
#include <fstream>
#include <string>

#include <glib.h>
#include <glib/gstdio.h>

#include "identity.h"
#include "trust/authorization.h"

using natfwd::Authorization;
using natfwd::Identity;
using natfwd::pairing_proof;

namespace {

struct StateDir {
  std::string path;
  StateDir() {
    gchar* p = g_dir_make_tmp("natfwd-auth-XXXXXX", nullptr);
    path = p;
    g_free(p);
  }
  ~StateDir() {
    g_unlink((path + "/invites").c_str());
    g_unlink((path + "/authorized_peers").c_str());
    g_rmdir(path.c_str());
  }
};

}  // namespace

TEST_CASE("a pairing proof opens the door only for its invite, caller and session") {
  StateDir dir;
  Authorization authorization(dir.path, {});
  const Identity caller = Identity::generate();
  const Identity stranger = Identity::generate();
  REQUIRE_FALSE(authorization.has_pending_invite());

  const std::string secret = Authorization::create_invite(dir.path, 3600);
  REQUIRE(authorization.has_pending_invite());
  const std::string proof = pairing_proof(secret, caller.public_key(), 42);
  CHECK(proof.size() == 32);

  CHECK(authorization.accepts_pairing_proof(caller.public_key(), 42, proof));
  // The relay sees the proof; it is worth nothing for another key or session.
  CHECK_FALSE(authorization.accepts_pairing_proof(stranger.public_key(), 42, proof));
  CHECK_FALSE(authorization.accepts_pairing_proof(caller.public_key(), 43, proof));
  CHECK_FALSE(authorization.accepts_pairing_proof(
      caller.public_key(), 42, pairing_proof("a" + secret.substr(1), caller.public_key(), 42)));
  CHECK_FALSE(authorization.accepts_pairing_proof(caller.public_key(), 42, ""));
  CHECK_FALSE(authorization.accepts_pairing_proof(caller.public_key(), 42, proof.substr(0, 16)));

  // Used up: neither the proof nor the code works again.
  REQUIRE(authorization.redeem_invite(secret));
  CHECK_FALSE(authorization.accepts_pairing_proof(caller.public_key(), 42, proof));
  CHECK_FALSE(authorization.redeem_invite(secret));
}

TEST_CASE("an expired invite accepts no pairing proof") {
  StateDir dir;
  Authorization authorization(dir.path, {});
  const Identity caller = Identity::generate();
  const std::string secret = Authorization::create_invite(dir.path, 3600);
  // Rewrite the expiry into the past, as the clock would.
  std::string hash;
  long expires = 0;
  {
    std::ifstream in(dir.path + "/invites");
    in >> hash >> expires;
  }
  std::ofstream(dir.path + "/invites") << hash << " " << (time(nullptr) - 1) << "\n";
  CHECK_FALSE(authorization.has_pending_invite());
  CHECK_FALSE(authorization.accepts_pairing_proof(caller.public_key(), 7,
                                                  pairing_proof(secret, caller.public_key(), 7)));
}

// The connection phases a person sees: each once, in order, and a failure sentence
// that names the phase.
#include <catch2/catch.hpp>

#include "tunnel/connect_progress.h"

using namespace natfwd;

TEST_CASE("each phase is announced once, never going back") {
  ConnectProgress progress("home");
  REQUIRE(progress.reach(ConnectPhase::kRelay) == "home: relay reached, asking for the peer");
  REQUIRE_FALSE(progress.reach(ConnectPhase::kRelay));
  REQUIRE(progress.reach(ConnectPhase::kPeerFound, "(key abc)") == "home: peer found (key abc)");
  REQUIRE(progress.reach(ConnectPhase::kGathering) == "home: gathering candidates");
  REQUIRE(progress.reach(ConnectPhase::kChecks) == "home: connectivity checks");
  REQUIRE_FALSE(progress.reach(ConnectPhase::kChecks));  // every later candidate
  REQUIRE_FALSE(progress.reach(ConnectPhase::kGathering));
  REQUIRE(progress.reach(ConnectPhase::kConnected, "direct udp in 84 ms") ==
          "home: connected direct udp in 84 ms");
  REQUIRE(progress.phase() == ConnectPhase::kConnected);
}

TEST_CASE("a failure names the phase it happened in and the cause") {
  ConnectProgress progress("home");
  progress.reach(ConnectPhase::kRelay);
  REQUIRE(progress.failure(ConnectProgress::no_such_peer("home")) ==
          "connecting to home failed while looking for the peer at the relay: peer home is not "
          "registered at the relay (is `peer --name home --serve ...` running there, with the "
          "same relay?)");
  progress.reach(ConnectPhase::kPeerFound);
  progress.reach(ConnectPhase::kChecks);
  REQUIRE(progress.failure(ConnectProgress::ice_failed(false, false)) ==
          "connecting to home failed during the connectivity checks: ICE checks failed: no direct "
          "path (NATs that map per destination, such as symmetric ones, or UDP blocked) and TURN "
          "unavailable on both sides");
  progress.reach(ConnectPhase::kQuicHandshake);
  REQUIRE(progress.failure(ConnectProgress::key_mismatch("home")).find(
              "during the QUIC handshake: QUIC handshake failed: key mismatch") != std::string::npos);
}

TEST_CASE("ICE failure causes depend on which side had TURN") {
  REQUIRE(ConnectProgress::ice_failed(true, true).find("even through TURN") != std::string::npos);
  REQUIRE(ConnectProgress::ice_failed(true, false).find("only on this side") != std::string::npos);
  REQUIRE(ConnectProgress::ice_failed(false, true).find("only on the other side") != std::string::npos);
  REQUIRE(ConnectProgress::ice_failed(false, true, true).find("--force-relay allows only TURN") !=
          std::string::npos);
  REQUIRE(ConnectProgress::refused("home", "this peer's key is not authorised there")
              .rfind("home refused this peer: this peer's key is not authorised there (", 0) == 0);
}

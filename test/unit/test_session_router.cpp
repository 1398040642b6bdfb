// SessionRouter: relay messages reach the tunnel of their session only from the relay
// that session runs through; a lost relay fails the setups waiting on it.
#include <catch2/catch.hpp>

#include <glib.h>

#include <filesystem>
#include <string>
#include <vector>

#include "identity.h"
#include "relays/relay_links.h"
#include "routing/session_router.h"
#include "tunnel/tunnel.h"

using namespace natfwd;

namespace {

struct Fixture {
  Fixture() {
    gchar* dir = g_dir_make_tmp("natfwd-router-XXXXXX", nullptr);
    state_dir = dir;
    g_free(dir);
    identity.emplace(Identity::load_or_create(state_dir));
    relay_a.index = 0;
    relay_b.index = 1;
  }
  ~Fixture() {
    tunnels.clear();
    std::filesystem::remove_all(state_dir);
  }
  // A connecting tunnel that has not started (no ICE, no QUIC): it only records
  // what it reports.
  Tunnel& tunnel(uint64_t session_id) {
    Tunnel::Hooks hooks;
    hooks.send_to_relay = [](const wire::Envelope&) {};
    hooks.on_closed = [this](Tunnel& t, const std::string& reason) {
      closed.push_back(t.tunnel_id());
      reasons.push_back(reason);
    };
    tunnels.push_back(std::make_unique<Tunnel>(Tunnel::Role::kConnecting, session_id, "home",
                                               *identity, IceSession::Options{},
                                               TargetPolicy{}, std::move(hooks)));
    return *tunnels.back();
  }

  std::string state_dir;
  std::optional<Identity> identity;
  RelayLink relay_a, relay_b;
  SessionRouter router;
  std::vector<std::unique_ptr<Tunnel>> tunnels;
  std::vector<uint64_t> closed;
  std::vector<std::string> reasons;
};

wire::Envelope close_session(uint64_t session_id) {
  wire::Envelope envelope;
  envelope.mutable_close_session()->set_session_id(session_id);
  envelope.mutable_close_session()->set_reason(wire::CloseSession::REFUSED);
  envelope.mutable_close_session()->set_detail("refused");
  return envelope;
}

}  // namespace

TEST_CASE("a session's messages are taken only from its own relay") {
  Fixture f;
  Tunnel& tunnel = f.tunnel(7);
  f.router.add(7, tunnel, f.relay_a);
  f.router.deliver(f.relay_b, close_session(7));
  CHECK(f.closed.empty());
  f.router.deliver(f.relay_a, close_session(8));  // no such session
  CHECK(f.closed.empty());
  f.router.deliver(f.relay_a, close_session(7));
  CHECK(f.closed == std::vector<uint64_t>{7});
}

TEST_CASE("a tunnel's sessions end with it; a failed restart keeps only the current one") {
  Fixture f;
  Tunnel& tunnel = f.tunnel(7);
  f.router.add(7, tunnel, f.relay_a);
  f.router.add(9, tunnel, f.relay_b);  // a path restart through another relay
  f.router.keep_current_only(tunnel);
  CHECK(f.router.contains(7));
  CHECK_FALSE(f.router.contains(9));
  f.router.add(9, tunnel, f.relay_b);
  f.router.remove_tunnel(tunnel);
  CHECK_FALSE(f.router.contains(7));
  CHECK_FALSE(f.router.contains(9));
}

TEST_CASE("a lost relay fails the setups still waiting for an answer through it") {
  Fixture f;
  Tunnel& through_a = f.tunnel(1);
  Tunnel& through_b = f.tunnel(2);
  f.router.add(1, through_a, f.relay_a);
  f.router.add(2, through_b, f.relay_b);
  f.router.relay_lost(f.relay_a, "the link to relay a was lost");
  CHECK(f.closed == std::vector<uint64_t>{1});
  REQUIRE(f.reasons.size() == 1);
  CHECK(f.reasons[0].find("the link to relay a was lost while waiting for the peer's answer") !=
        std::string::npos);
  CHECK_FALSE(through_b.closed());
}

TEST_CASE("the session of an envelope") {
  wire::Envelope envelope;
  CHECK(SessionRouter::session_of(envelope) == 0);
  envelope.mutable_candidate()->set_session_id(5);
  CHECK(SessionRouter::session_of(envelope) == 5);
  envelope.mutable_accept_session()->set_session_id(6);
  CHECK(SessionRouter::session_of(envelope) == 6);
  envelope.mutable_open_session()->set_session_id(4);
  CHECK(SessionRouter::session_of(envelope) == 4);
  CHECK(SessionRouter::session_of(close_session(3)) == 3);
}

// The rendezvous side of TURN: Welcome carries TURN servers with REST credentials
// for the peer's key, and an IceServersUpdate follows before they expire. Fake clocks
// (steady and unix), no sockets.
#include <catch2/catch.hpp>

#include <string>

#include "frame.h"
#include "identity.h"
#include "rendezvous/rendezvous_core.h"
#include "turn/credentials.h"

using namespace natfwd;
using namespace natfwd::relay;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t kUnixNow = 1700000000;

struct Fixture {
  uint64_t unix_now = kUnixNow;
  RendezvousConfig config;
  std::optional<RendezvousCore> core;
  TimePoint now = TimePoint{} + 100s;
  Identity identity = Identity::generate();

  explicit Fixture(std::function<void(RendezvousConfig&)> tweak = nullptr) {
    config.stun_port = 3478;
    config.turn.secret = "s3cret";
    config.turn.unix_now = [this] { return unix_now; };
    if (tweak) tweak(config);
    core.emplace(config);
  }

  wire::Envelope hello() {
    REQUIRE(core->on_connection_opened(1, HostPort{"192.0.2.1", 4000}, now) ==
            Admission::kAccepted);
    wire::Envelope envelope;
    envelope.mutable_hello()->set_protocol_version(wire::kProtocolVersion);
    const auto& key = identity.public_key();
    envelope.mutable_hello()->set_public_key(std::string(key.begin(), key.end()));
    core->on_envelope(1, envelope, now);
    auto actions = core->take_actions();
    REQUIRE(actions.size() == 1);
    // TURN credentials only after the key is proven: the Challenge carries none.
    const auto challenge = std::get<SendAction>(actions[0]).envelope;
    REQUIRE(challenge.has_challenge());
    wire::Envelope prove;
    prove.mutable_prove()->set_signature(
        identity.sign(connection_proof_message(challenge.challenge().challenge())));
    core->on_envelope(1, prove, now);
    actions = core->take_actions();
    REQUIRE(actions.size() == 1);
    return std::get<SendAction>(actions[0]).envelope;
  }
};

void check_credentials(const wire::IceServer& server, const std::string& peer_id,
                       uint64_t expires) {
  CHECK(server.username() == std::to_string(expires) + ":" + peer_id);
  CHECK(server.password() == turn::rest_password("s3cret", server.username()));
  CHECK(server.expires_unix() == expires);
}

}  // namespace

TEST_CASE("Welcome lists STUN, TURN over UDP/TCP/TLS and external TURN servers") {
  Fixture f([](RendezvousConfig& c) {
    c.turn.tls_port = 443;
    c.turn.tls_spki_sha256 = std::string(32, 'p');
    c.turn.external = {HostPort{"turn.example.net", 3478}};
  });
  const auto welcome = f.hello().welcome();
  const std::string peer_id = key_id(f.identity.public_key());
  REQUIRE(welcome.ice_servers_size() == 6);
  CHECK(welcome.ice_servers(0).kind() == wire::IceServer::STUN);
  CHECK(welcome.ice_servers(0).username().empty());
  CHECK(welcome.ice_servers(1).kind() == wire::IceServer::TURN_UDP);
  CHECK(welcome.ice_servers(1).host().empty());
  CHECK(welcome.ice_servers(1).port() == 3478);
  CHECK(welcome.ice_servers(2).kind() == wire::IceServer::TURN_TCP);
  CHECK(welcome.ice_servers(3).kind() == wire::IceServer::TURN_TLS);
  CHECK(welcome.ice_servers(3).port() == 443);
  CHECK(welcome.ice_servers(3).tls_spki_sha256() == std::string(32, 'p'));
  CHECK(welcome.ice_servers(4).host() == "turn.example.net");
  CHECK(welcome.ice_servers(4).kind() == wire::IceServer::TURN_UDP);
  CHECK(welcome.ice_servers(5).kind() == wire::IceServer::TURN_TCP);
  for (int i = 1; i < 6; ++i) check_credentials(welcome.ice_servers(i), peer_id, kUnixNow + 86400);
}

TEST_CASE("--no-turn: only external servers; no secret: STUN only") {
  Fixture f([](RendezvousConfig& c) {
    c.turn.own_turn = false;
    c.turn.external = {HostPort{"192.0.2.50", 3479}};
  });
  const auto welcome = f.hello().welcome();
  REQUIRE(welcome.ice_servers_size() == 3);
  CHECK(welcome.ice_servers(1).host() == "192.0.2.50");

  Fixture g([](RendezvousConfig& c) { c.turn.secret.clear(); });
  CHECK(g.hello().welcome().ice_servers_size() == 1);
  CHECK_FALSE(g.core->next_deadline() > g.now + 3600s);
}

TEST_CASE("fresh credentials every 12 hours, before the 24-hour ones expire") {
  Fixture f;
  f.hello();
  for (int round = 1; round <= 3; ++round) {
    // Keep the connection alive with pings until the refresh is due.
    for (int i = 0; i < 12 * 3600 / 30; ++i) {
      f.now += 30s;
      f.unix_now += 30;
      wire::Envelope ping;
      ping.mutable_ping()->set_nonce(1);
      f.core->on_envelope(1, ping, f.now);
      f.core->on_tick(f.now);
    }
    auto actions = f.core->take_actions();
    int updates = 0;
    for (auto& action : actions) {
      auto* send = std::get_if<SendAction>(&action);
      REQUIRE(send);
      if (!send->envelope.has_ice_servers_update()) continue;
      ++updates;
      const auto& servers = send->envelope.ice_servers_update().ice_servers();
      REQUIRE(servers.size() == 3);
      check_credentials(servers[1], key_id(f.identity.public_key()), f.unix_now + 86400);
    }
    CHECK(updates == 1);
  }
}

TEST_CASE("a peer may not send IceServersUpdate") {
  Fixture f;
  f.hello();
  wire::Envelope envelope;
  envelope.mutable_ice_servers_update();
  f.core->on_envelope(1, envelope, f.now);
  auto actions = f.core->take_actions();
  REQUIRE(actions.size() == 2);
  CHECK(std::get<SendAction>(actions[0]).envelope.has_error());
  CHECK(std::holds_alternative<CloseAction>(actions[1]));
}

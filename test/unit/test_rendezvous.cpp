// RendezvousCore driven through events with a fake clock: no sockets, no sleeps.
#include <catch2/catch.hpp>

#include <deque>
#include <map>
#include <string>

#include "frame.h"
#include "test_rendezvous_harness.h"
#include "log.h"
#include "rendezvous/rendezvous_core.h"
#include "tcp_dispatch.h"

using namespace natfwd;
using namespace natfwd::relay;
using std::chrono::seconds;
using namespace natfwd::relay::testing;


TEST_CASE("peer names follow [a-z0-9][a-z0-9._-]{0,62}") {
  CHECK(is_valid_peer_name("home"));
  CHECK(is_valid_peer_name("0"));
  CHECK(is_valid_peer_name("my-box_2.lan"));
  CHECK(is_valid_peer_name(std::string(63, 'a')));
  CHECK_FALSE(is_valid_peer_name(""));
  CHECK_FALSE(is_valid_peer_name(std::string(64, 'a')));
  CHECK_FALSE(is_valid_peer_name("Home"));
  CHECK_FALSE(is_valid_peer_name("-home"));
  CHECK_FALSE(is_valid_peer_name(".home"));
  CHECK_FALSE(is_valid_peer_name("ho me"));
  CHECK_FALSE(is_valid_peer_name("hóme"));
}

TEST_CASE("a proven Hello gets a Welcome with the observed address and the STUN server") {
  RendezvousConfig config;
  config.stun_port = 40123;
  Harness h(config);
  const ConnectionId id = h.connect("198.51.100.7");
  const std::string challenge = h.hello_only(id, key_of('a'));
  CHECK_FALSE(h.has_message(id));  // nothing more until the Prove
  h.deliver(id, Harness::make_prove(key_of('a'), challenge));
  auto reply = h.pop(id);
  REQUIRE(reply.has_welcome());
  CHECK(reply.welcome().observed_address() == "198.51.100.7:40000");
  CHECK(reply.welcome().keepalive_seconds() == 15);
  REQUIRE(reply.welcome().ice_servers_size() == 1);
  CHECK(reply.welcome().ice_servers(0).kind() == wire::IceServer::STUN);
  CHECK(reply.welcome().ice_servers(0).host().empty());
  CHECK(reply.welcome().ice_servers(0).port() == 40123);
  CHECK_FALSE(h.closed(id));
}

TEST_CASE("an IPv6 observed address is bracketed") {
  Harness h;
  const ConnectionId id = h.connect("2001:db8::1");
  const std::string challenge = h.hello_only(id, key_of('a'));
  h.deliver(id, Harness::make_prove(key_of('a'), challenge));
  CHECK(h.pop(id).welcome().observed_address() == "[2001:db8::1]:40000");
}

TEST_CASE("a claimed key is worth nothing until proven") {
  // The victim's public key is no secret; the squatter has only that.
  Harness h;
  const ConnectionId home = h.registered("home", key_of('h'));
  const ConnectionId squatter = h.connect("203.0.113.66");
  const std::string challenge = h.hello_only(squatter, key_of('l'));
  SECTION("OpenSession before the Prove: NOT_PROVEN, closed, home hears nothing") {
    h.deliver(squatter, Harness::make_open(7, "home"));
    CHECK(error_code(h.pop(squatter)) == wire::Error::NOT_PROVEN);
    CHECK(h.closed(squatter));
    CHECK_FALSE(h.has_message(home));
    CHECK(h.core().session_count() == 0);
  }
  SECTION("Register and netcheck queries before the Prove: NOT_PROVEN") {
    wire::Envelope query;
    query.mutable_netcheck_query()->set_query_id(1);
    query.mutable_netcheck_query()->set_target("home");
    h.deliver(squatter, query);
    CHECK(error_code(h.pop(squatter)) == wire::Error::NOT_PROVEN);
    CHECK(h.closed(squatter));
    CHECK_FALSE(h.has_message(home));
  }
  SECTION("a Prove signed by another key: BAD_SIGNATURE, no Welcome, no TURN credentials") {
    h.deliver(squatter, Harness::make_prove(key_of('s'), challenge));
    CHECK(error_code(h.pop(squatter)) == wire::Error::BAD_SIGNATURE);
    CHECK_FALSE(h.has_message(squatter));
    CHECK(h.closed(squatter));
  }
  SECTION("a Prove over another connection's challenge: BAD_SIGNATURE") {
    // What a relay-in-the-middle could replay: the real laptop's proof for its own
    // connection does not open this one.
    const ConnectionId laptop = h.connect("198.51.100.20");
    const std::string laptop_challenge = h.hello_only(laptop, key_of('l'));
    REQUIRE(laptop_challenge != challenge);
    h.deliver(squatter, Harness::make_prove(key_of('l'), laptop_challenge));
    CHECK(error_code(h.pop(squatter)) == wire::Error::BAD_SIGNATURE);
    CHECK(h.closed(squatter));
  }
  SECTION("a Register signature does not pass for a connection proof") {
    wire::Envelope prove;
    prove.mutable_prove()->set_signature(
        identity_of('l').sign(registration_message(challenge, "")));
    h.deliver(squatter, prove);
    CHECK(error_code(h.pop(squatter)) == wire::Error::BAD_SIGNATURE);
  }
  SECTION("no Prove within the Hello timeout: closed") {
    h.advance(seconds(11));
    CHECK(h.closed(squatter));
    CHECK_FALSE(h.closed(home));
  }
}

TEST_CASE("a first message other than Hello gets NOT_HELLO and a close") {
  Harness h;
  const ConnectionId id = h.connect();
  h.deliver(id, h.make_register(id, "home"));
  CHECK(error_code(h.pop(id)) == wire::Error::NOT_HELLO);
  CHECK(h.closed(id));
  CHECK(h.core().connection_count() == 0);
}

TEST_CASE("Hello with a wrong version or key size is refused") {
  Harness h;
  SECTION("a newer peer: VERSION, and the relay says to upgrade the relay") {
    const ConnectionId id = h.connect();
    wire::Envelope hello;
    hello.mutable_hello()->set_protocol_version(wire::kProtocolVersion + 1);
    hello.mutable_hello()->set_public_key(key_of('a'));
    h.deliver(id, hello);
    const auto error = h.pop(id);
    CHECK(error_code(error) == wire::Error::VERSION);
    CHECK_THAT(error.error().detail(), Catch::EndsWith("upgrade the relay"));
    CHECK(h.closed(id));
  }
  SECTION("an older peer (protocol 1, before connection proofs): upgrade the peer") {
    const ConnectionId id = h.connect();
    wire::Envelope hello;
    hello.mutable_hello()->set_protocol_version(1);
    hello.mutable_hello()->set_public_key(key_of('a'));
    h.deliver(id, hello);
    const auto error = h.pop(id);
    CHECK(error_code(error) == wire::Error::VERSION);
    CHECK_THAT(error.error().detail(), Catch::EndsWith("upgrade the peer"));
    CHECK(h.closed(id));
  }
  SECTION("key size") {
    const ConnectionId id = h.connect();
    wire::Envelope hello;
    hello.mutable_hello()->set_protocol_version(wire::kProtocolVersion);
    hello.mutable_hello()->set_public_key(std::string(31, 'a'));
    h.deliver(id, hello);
    CHECK(error_code(h.pop(id)) == wire::Error::BAD_MESSAGE);
    CHECK(h.closed(id));
  }
  SECTION("Prove twice") {
    const ConnectionId id = h.hello(key_of('a'));
    h.deliver(id, Harness::make_prove(key_of('a'), h.challenge(id)));
    CHECK(error_code(h.pop(id)) == wire::Error::BAD_MESSAGE);
    CHECK(h.closed(id));
  }
  SECTION("Hello twice") {
    const ConnectionId id = h.hello(key_of('a'));
    wire::Envelope hello;
    hello.mutable_hello()->set_protocol_version(wire::kProtocolVersion);
    hello.mutable_hello()->set_public_key(key_of('a'));
    h.deliver(id, hello);
    CHECK(error_code(h.pop(id)) == wire::Error::BAD_MESSAGE);
    CHECK(h.closed(id));
  }
}

TEST_CASE("Register binds a name; an invalid name closes the connection") {
  Harness h;
  const ConnectionId home = h.registered("home", key_of('h'));
  CHECK(h.core().holder_of("home") == home);

  const ConnectionId bad = h.hello(key_of('b'));
  h.deliver(bad, h.make_register(bad, "Not Valid"));
  CHECK(error_code(h.pop(bad)) == wire::Error::NAME_INVALID);
  CHECK(h.closed(bad));
}

TEST_CASE("a name held by another key is NAME_TAKEN; the holder keeps it") {
  Harness h;
  const ConnectionId home = h.registered("home", key_of('h'));
  const ConnectionId thief = h.hello(key_of('t'), "203.0.113.9");
  h.deliver(thief, h.make_register(thief, "home"));
  CHECK(error_code(h.pop(thief)) == wire::Error::NAME_TAKEN);
  CHECK(h.closed(thief));
  CHECK_FALSE(h.closed(home));
  CHECK(h.core().holder_of("home") == home);
}

TEST_CASE("the same key on a new connection takes the name over and ends the old one") {
  Harness h;
  const ConnectionId old_home = h.registered("home", key_of('h'));
  const ConnectionId laptop = h.hello(key_of('l'));
  h.deliver(laptop, Harness::make_open(7, "home"));
  REQUIRE(h.pop(old_home).has_incoming_session());

  const ConnectionId new_home = h.hello(key_of('h'), "203.0.113.50");
  h.deliver(new_home, h.make_register(new_home, "home"));
  CHECK(h.pop(new_home).has_registered());
  CHECK(error_code(h.pop(old_home)) == wire::Error::NAME_TAKEN);
  CHECK(h.closed(old_home));
  CHECK(h.core().holder_of("home") == new_home);
  // The old connection's session ends for the caller.
  auto gone = h.pop(laptop);
  REQUIRE(gone.has_close_session());
  CHECK(gone.close_session().session_id() == 7);
  CHECK(gone.close_session().reason() == wire::CloseSession::PEER_GONE);
  CHECK(h.core().session_count() == 0);
}

TEST_CASE("a session is routed both ways and closed") {
  Harness h;
  const ConnectionId home = h.registered("home", key_of('h'), "192.0.2.10");
  const ConnectionId laptop = h.hello(key_of('l'), "198.51.100.20");

  h.deliver(laptop, Harness::make_open(0x1122334455667788ull, "home"));
  auto incoming = h.pop(home);
  REQUIRE(incoming.has_incoming_session());
  CHECK(incoming.incoming_session().session_id() == 0x1122334455667788ull);
  CHECK(incoming.incoming_session().caller_key() == key_of('l'));
  CHECK(incoming.incoming_session().ice().ufrag() == "cufr");
  CHECK(incoming.incoming_session().ice().pwd() == "caller-password-0123456789");
  CHECK(incoming.incoming_session().caller_address().rfind("198.51.100.20:", 0) == 0);
  CHECK_FALSE(h.has_message(laptop));

  wire::Envelope accept;
  accept.mutable_accept_session()->set_session_id(0x1122334455667788ull);
  accept.mutable_accept_session()->mutable_ice()->set_ufrag("hufr");
  accept.mutable_accept_session()->set_callee_key("forged");
  h.deliver(home, accept);
  auto accepted = h.pop(laptop);
  REQUIRE(accepted.has_accept_session());
  CHECK(accepted.accept_session().ice().ufrag() == "hufr");
  CHECK(accepted.accept_session().callee_key() == key_of('h'));  // from Hello, not the peer

  h.deliver(laptop, Harness::make_candidate(0x1122334455667788ull, "candidate:1 1 UDP 1 a 1 typ host"));
  auto to_home = h.pop(home);
  REQUIRE(to_home.has_candidate());
  CHECK(to_home.candidate().sdp() == "candidate:1 1 UDP 1 a 1 typ host");

  wire::Envelope end;
  end.mutable_candidate()->set_session_id(0x1122334455667788ull);
  end.mutable_candidate()->set_end_of_candidates(true);
  h.deliver(home, end);
  auto to_laptop = h.pop(laptop);
  REQUIRE(to_laptop.has_candidate());
  CHECK(to_laptop.candidate().end_of_candidates());

  wire::Envelope close;
  close.mutable_close_session()->set_session_id(0x1122334455667788ull);
  close.mutable_close_session()->set_reason(wire::CloseSession::NORMAL);
  close.mutable_close_session()->set_detail("bye");
  h.deliver(home, close);
  auto closed = h.pop(laptop);
  REQUIRE(closed.has_close_session());
  CHECK(closed.close_session().reason() == wire::CloseSession::NORMAL);
  CHECK(closed.close_session().detail() == "bye");
  CHECK(h.core().session_count() == 0);

  // After the close, the session id is unknown: candidates are dropped.
  h.deliver(laptop, Harness::make_candidate(0x1122334455667788ull, "late"));
  CHECK_FALSE(h.has_message(home));
  CHECK_FALSE(h.closed(laptop));
}

TEST_CASE("OpenSession to an unregistered name or a used id is refused, not fatal") {
  Harness h;
  const ConnectionId home = h.registered("home", key_of('h'));
  const ConnectionId laptop = h.hello(key_of('l'));

  h.deliver(laptop, Harness::make_open(1, "nobody"));
  auto none = h.pop(laptop);
  REQUIRE(none.has_close_session());
  CHECK(none.close_session().session_id() == 1);
  CHECK(none.close_session().reason() == wire::CloseSession::NO_SUCH_PEER);
  CHECK(none.close_session().detail() == "no peer named nobody is registered");

  h.deliver(laptop, Harness::make_open(2, "home"));
  REQUIRE(h.pop(home).has_incoming_session());
  h.deliver(laptop, Harness::make_open(2, "home"));
  auto dup = h.pop(laptop);
  REQUIRE(dup.has_close_session());
  CHECK(dup.close_session().reason() == wire::CloseSession::PROTOCOL);
  CHECK_FALSE(h.has_message(home));
  CHECK(h.core().session_count() == 1);
  CHECK_FALSE(h.closed(laptop));
}

TEST_CASE("messages for unknown sessions or from non-members are dropped") {
  Harness h;
  const ConnectionId home = h.registered("home", key_of('h'));
  const ConnectionId laptop = h.hello(key_of('l'));
  const ConnectionId stranger = h.hello(key_of('s'));
  h.deliver(laptop, Harness::make_open(5, "home"));
  REQUIRE(h.pop(home).has_incoming_session());

  h.deliver(stranger, Harness::make_candidate(5, "intruder"));
  h.deliver(stranger, Harness::make_candidate(6, "unknown"));
  wire::Envelope accept;
  accept.mutable_accept_session()->set_session_id(5);
  h.deliver(stranger, accept);  // not the callee
  h.deliver(laptop, accept);    // the caller is not the callee either
  wire::Envelope close;
  close.mutable_close_session()->set_session_id(5);
  h.deliver(stranger, close);

  CHECK_FALSE(h.has_message(home));
  CHECK_FALSE(h.has_message(laptop));
  CHECK_FALSE(h.has_message(stranger));
  CHECK_FALSE(h.closed(stranger));
  CHECK(h.core().session_count() == 1);
}

TEST_CASE("a closed connection ends its sessions with PEER_GONE and frees its name") {
  Harness h;
  const ConnectionId home = h.registered("home", key_of('h'));
  const ConnectionId laptop = h.hello(key_of('l'));
  const ConnectionId phone = h.hello(key_of('p'));
  h.deliver(laptop, Harness::make_open(10, "home"));
  h.deliver(phone, Harness::make_open(11, "home"));
  h.pop(home);
  h.pop(home);

  h.transport_closed(home);
  for (auto [peer, session] : {std::pair{laptop, SessionId{10}}, std::pair{phone, SessionId{11}}}) {
    auto gone = h.pop(peer);
    REQUIRE(gone.has_close_session());
    CHECK(gone.close_session().session_id() == session);
    CHECK(gone.close_session().reason() == wire::CloseSession::PEER_GONE);
  }
  CHECK_FALSE(h.core().holder_of("home"));
  CHECK(h.core().session_count() == 0);

  // The name is free again for its key (it stays bound to it: see
  // test_rendezvous_security.cpp).
  h.registered("home", key_of('h'));
}

TEST_CASE("no Hello within 10 s closes the connection") {
  Harness h;
  const ConnectionId id = h.connect();
  REQUIRE(h.core().next_deadline() == h.now() + seconds(10));
  h.advance(seconds(9));
  CHECK_FALSE(h.closed(id));
  h.advance(seconds(1));
  CHECK(h.closed(id));
  CHECK(h.core().connection_count() == 0);
  CHECK_FALSE(h.core().next_deadline());
}

TEST_CASE("a connection silent for 45 s is closed; any message keeps it alive") {
  Harness h;
  const ConnectionId home = h.registered("home", key_of('h'));
  h.advance(seconds(40));
  CHECK_FALSE(h.closed(home));
  wire::Envelope ping;
  ping.mutable_ping()->set_nonce(99);
  h.deliver(home, ping);
  auto pong = h.pop(home);
  REQUIRE(pong.has_pong());
  CHECK(pong.pong().nonce() == 99);
  CHECK(h.core().next_deadline() == h.now() + seconds(45));

  h.advance(seconds(44));
  CHECK_FALSE(h.closed(home));
  h.advance(seconds(1));
  CHECK(h.closed(home));
  CHECK_FALSE(h.core().holder_of("home"));
}

TEST_CASE("at most 64 sessions per connection") {
  Harness h;
  const ConnectionId home = h.registered("home", key_of('h'));
  const ConnectionId laptop = h.hello(key_of('l'));
  for (SessionId id = 1; id <= 64; ++id) {
    h.deliver(laptop, Harness::make_open(id, "home"));
    REQUIRE(h.pop(home).has_incoming_session());
  }
  h.deliver(laptop, Harness::make_open(65, "home"));
  auto refused = h.pop(laptop);
  REQUIRE(refused.has_close_session());
  CHECK(refused.close_session().reason() == wire::CloseSession::LIMIT);
  CHECK_FALSE(h.has_message(home));

  // The callee's limit counts too.
  const ConnectionId phone = h.hello(key_of('p'));
  h.deliver(phone, Harness::make_open(100, "home"));
  CHECK(h.pop(phone).close_session().reason() == wire::CloseSession::LIMIT);

  // Closing one makes room.
  wire::Envelope close;
  close.mutable_close_session()->set_session_id(1);
  h.deliver(laptop, close);
  h.pop(home);
  h.deliver(laptop, Harness::make_open(65, "home"));
  CHECK(h.pop(home).has_incoming_session());
}

TEST_CASE("connections per source address and in total are limited") {
  RendezvousConfig config;
  config.max_connections_per_address = 2;
  config.max_connections = 3;
  Harness h(config);
  const TimePoint t{};
  const ConnectionId a = h.connect("192.0.2.1");
  h.connect("192.0.2.1");
  CHECK(h.core().on_connection_opened(100, HostPort{"192.0.2.1", 1}, t) ==
        Admission::kTooManyFromAddress);
  h.connect("192.0.2.2");
  CHECK(h.core().on_connection_opened(101, HostPort{"192.0.2.3", 1}, t) ==
        Admission::kTooManyConnections);
  h.transport_closed(a);
  h.connect("192.0.2.1");
  CHECK(h.core().connection_count() == 3);
}

TEST_CASE("a session with oneself and messages only the relay sends are refused") {
  Harness h;
  const ConnectionId home = h.registered("home", key_of('h'));
  h.deliver(home, Harness::make_open(3, "home"));
  CHECK(h.pop(home).close_session().reason() == wire::CloseSession::PROTOCOL);
  CHECK_FALSE(h.closed(home));

  wire::Envelope welcome;
  welcome.mutable_welcome();
  h.deliver(home, welcome);
  CHECK(error_code(h.pop(home)) == wire::Error::BAD_MESSAGE);
  CHECK(h.closed(home));
}

TEST_CASE("oversized ICE fields close the sender, nothing is relayed") {
  Harness h;
  const ConnectionId home = h.registered("home", key_of('h'));
  const ConnectionId laptop = h.hello(key_of('l'));
  auto open = Harness::make_open(1, "home");
  open.mutable_open_session()->mutable_ice()->set_pwd(std::string(60000, 'x'));
  h.deliver(laptop, open);
  CHECK(error_code(h.pop(laptop)) == wire::Error::BAD_MESSAGE);
  CHECK(h.closed(laptop));
  CHECK_FALSE(h.has_message(home));
}

TEST_CASE("re-registering moves the connection to the new name") {
  Harness h;
  const ConnectionId id = h.registered("first", key_of('h'));
  h.deliver(id, h.make_register(id, "second"));
  CHECK(h.pop(id).has_registered());
  CHECK_FALSE(h.core().holder_of("first"));
  CHECK(h.core().holder_of("second") == id);
}

TEST_CASE("the first byte on the TCP port tells the protocol apart") {
  CHECK(classify_first_byte(std::byte{0xC5}) == TcpProtocol::kRendezvous);
  CHECK(classify_first_byte(std::byte{0x00}) == TcpProtocol::kStun);  // Binding, Allocate
  CHECK(classify_first_byte(std::byte{0x01}) == TcpProtocol::kStun);  // responses
  CHECK(classify_first_byte(std::byte{0x16}) == TcpProtocol::kTls);
  CHECK(classify_first_byte(std::byte{'G'}) == TcpProtocol::kUnknown);  // HTTP
  CHECK(classify_first_byte(std::byte{0x40}) == TcpProtocol::kUnknown);  // ChannelData
  CHECK(classify_first_byte(std::byte{0xFF}) == TcpProtocol::kUnknown);
}

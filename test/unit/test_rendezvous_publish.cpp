// Publishing in RendezvousCore: who may publish (allowed keys, `any`, a relay that
// does not publish), what a publisher is told (PublishGrant), and what the front door
// finds by name, with the fake clock of test_rendezvous_harness.h.
#include <catch2/catch.hpp>

#include <string>

#include "identity.h"
#include "test_rendezvous_harness.h"

using namespace natfwd;
using namespace natfwd::relay;
using namespace natfwd::relay::testing;

namespace {

const std::string kDomain = "share.example.net";

RendezvousConfig publishing_config(bool any = false, const std::string& allowed = "") {
  RendezvousConfig config;
  config.publish.domain = kDomain;
  config.publish.relay_key = key_of('r');
  config.publish.any_publisher = any;
  if (!allowed.empty()) config.publish.publishers.insert(allowed);
  return config;
}

wire::Envelope register_publishing(Harness& h, ConnectionId id, const std::string& name,
                                   const std::string& host = "127.0.0.1", uint32_t port = 8000) {
  wire::Envelope envelope = h.make_register(id, name);
  auto* publish = envelope.mutable_register_()->add_publish();
  publish->set_kind(wire::Publish::HTTP);
  publish->set_host(host);
  publish->set_port(port);
  return envelope;
}

std::string id_of(char letter) { return key_id(identity_of(letter).public_key()); }

}  // namespace

TEST_CASE("an allowed publisher is registered with a grant and found by the front door") {
  Harness h(publishing_config(false, id_of('a')));
  const ConnectionId home = h.hello(key_of('a'));
  h.deliver(home, register_publishing(h, home, "home"));
  const auto reply = h.pop(home);
  REQUIRE(reply.has_registered());
  CHECK(reply.registered().publish().domain() == kDomain);
  CHECK(reply.registered().publish().relay_key() == key_of('r'));

  const auto found = h.core().published("home", wire::Publish::HTTP);
  REQUIRE(found);
  CHECK(found->target == HostPort{"127.0.0.1", 8000});
  CHECK(found->public_key == key_of('a'));
  CHECK_FALSE(h.core().published("nobody", wire::Publish::HTTP));

  // Gone with the connection: a visitor then gets the "not published" answer.
  h.transport_closed(home);
  CHECK_FALSE(h.core().published("home", wire::Publish::HTTP));
}

TEST_CASE("a key that is not an allowed publisher is refused with NOT_PUBLISHER naming it") {
  Harness h(publishing_config(false, id_of('a')));
  const ConnectionId stranger = h.hello(key_of('b'));
  h.deliver(stranger, register_publishing(h, stranger, "home"));
  const auto reply = h.pop(stranger);
  CHECK(error_code(reply) == wire::Error::NOT_PUBLISHER);
  CHECK(reply.error().detail().find(id_of('b')) != std::string::npos);
  CHECK(h.closed(stranger));
  // Refused before the name was taken: the name stays free.
  CHECK_FALSE(h.core().holder_of("home"));
  CHECK_FALSE(h.core().published("home", wire::Publish::HTTP));
}

TEST_CASE("`any` lets every proven key publish") {
  Harness h(publishing_config(true));
  const ConnectionId home = h.hello(key_of('c'));
  h.deliver(home, register_publishing(h, home, "home"));
  REQUIRE(h.pop(home).has_registered());
  CHECK(h.core().published("home", wire::Publish::HTTP));
}

TEST_CASE("a relay without a publish domain refuses to publish but registers plain peers") {
  Harness h;
  const ConnectionId home = h.hello(key_of('a'));
  h.deliver(home, register_publishing(h, home, "home"));
  CHECK(error_code(h.pop(home)) == wire::Error::NOT_PUBLISHER);

  const ConnectionId plain = h.registered("other", key_of('b'));
  CHECK_FALSE(h.closed(plain));
}

TEST_CASE("a plain registration gets no grant and publishes nothing") {
  Harness h(publishing_config(true));
  const ConnectionId id = h.hello(key_of('a'));
  h.deliver(id, h.make_register(id, "home"));
  const auto reply = h.pop(id);
  REQUIRE(reply.has_registered());
  CHECK_FALSE(reply.registered().has_publish());
  CHECK_FALSE(h.core().published("home", wire::Publish::HTTP));
}

TEST_CASE("a malformed publish list is BAD_MESSAGE") {
  Harness h(publishing_config(true));
  SECTION("no port") {
    const ConnectionId id = h.hello(key_of('a'));
    h.deliver(id, register_publishing(h, id, "home", "127.0.0.1", 0));
    CHECK(error_code(h.pop(id)) == wire::Error::BAD_MESSAGE);
  }
  SECTION("two of one kind") {
    const ConnectionId id = h.hello(key_of('a'));
    wire::Envelope envelope = register_publishing(h, id, "home");
    *envelope.mutable_register_()->add_publish() = envelope.register_().publish(0);
    h.deliver(id, envelope);
    CHECK(error_code(h.pop(id)) == wire::Error::BAD_MESSAGE);
  }
}

// Publishing in RendezvousCore: who may publish (allowed keys, `any`, a relay that
// does not publish), what a publisher is told (PublishGrant), and what the front door
// finds by name, with the fake clock of test_rendezvous_harness.h.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

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
  // What the front door enforces, so that a peer can tell an older relay that would not.
  const auto& features = reply.registered().publish().features();
  CHECK(std::vector<std::string>(features.begin(), features.end()) ==
        std::vector<std::string>{"allow-from", "proxy-protocol", "custom-domain"});

  const auto found = h.core().published("home", wire::Publish::HTTP);
  REQUIRE(found);
  CHECK(found->target == HostPort{"127.0.0.1", 8000});
  CHECK(found->public_key == key_of('a'));
  CHECK_FALSE(found->proxy_protocol);
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

namespace {

wire::Envelope register_tcp(Harness& h, ConnectionId id, const std::string& name,
                            std::vector<uint32_t> public_ports) {
  wire::Envelope envelope = h.make_register(id, name);
  uint32_t target_port = 22;
  for (uint32_t public_port : public_ports) {
    auto* publish = envelope.mutable_register_()->add_publish();
    publish->set_kind(wire::Publish::TCP);
    publish->set_host("192.168.1.20");
    publish->set_port(target_port++);
    publish->set_public_port(public_port);
  }
  return envelope;
}

RendezvousConfig tcp_config() {
  RendezvousConfig config = publishing_config(true);
  config.publish.tcp_port_min = 20000;
  config.publish.tcp_port_max = 20002;
  return config;
}

}  // namespace

TEST_CASE("tcp publishes get the ports asked for, or free ones, and give them back") {
  Harness h(tcp_config());
  const ConnectionId home = h.hello(key_of('a'));
  h.deliver(home, register_tcp(h, home, "home", {0, 20001}));
  const auto reply = h.pop(home);
  REQUIRE(reply.has_registered());
  const auto& published = reply.registered().publish().published();
  REQUIRE(published.size() == 2);
  CHECK(published[0].public_port() == 20000);  // any: the first free, not the one asked
  CHECK(published[1].public_port() == 20001);
  const auto found = h.core().published_tcp(20001);
  REQUIRE(found);
  CHECK(found->first == "home");
  CHECK(found->second.target == HostPort{"192.168.1.20", 23});
  CHECK_FALSE(h.core().published_tcp(20002));

  // Taken ports are refused to another key; a free one is given.
  const ConnectionId office = h.hello(key_of('b'));
  h.deliver(office, register_tcp(h, office, "office", {20001}));
  CHECK(error_code(h.pop(office)) == wire::Error::NOT_PUBLISHER);
  const ConnectionId office2 = h.hello(key_of('b'));
  h.deliver(office2, register_tcp(h, office2, "office", {0}));
  REQUIRE(h.pop(office2).registered().publish().published(0).public_port() == 20002);

  // The range is full; once home goes, its ports are free again.
  const ConnectionId third = h.hello(key_of('c'));
  h.deliver(third, register_tcp(h, third, "third", {0}));
  CHECK(error_code(h.pop(third)) == wire::Error::NOT_PUBLISHER);
  h.transport_closed(home);
  CHECK_FALSE(h.core().published_tcp(20000));
  const ConnectionId fourth = h.hello(key_of('c'));
  h.deliver(fourth, register_tcp(h, fourth, "third", {20000}));
  CHECK(h.pop(fourth).has_registered());
}

TEST_CASE("a reconnecting publisher keeps its tcp port") {
  Harness h(tcp_config());
  const ConnectionId first = h.hello(key_of('a'));
  h.deliver(first, register_tcp(h, first, "home", {20002}));
  REQUIRE(h.pop(first).has_registered());
  // The same key from a new connection (a network change): the old one is replaced.
  const ConnectionId second = h.hello(key_of('a'));
  h.deliver(second, register_tcp(h, second, "home", {20002}));
  const auto reply = h.pop(second);
  REQUIRE(reply.has_registered());
  CHECK(reply.registered().publish().published(0).public_port() == 20002);
  CHECK(h.core().published_tcp(20002));
}

TEST_CASE("tcp publishing needs the relay's port range, and ports inside it") {
  Harness no_ports(publishing_config(true));
  const ConnectionId a = no_ports.hello(key_of('a'));
  no_ports.deliver(a, register_tcp(no_ports, a, "home", {0}));
  CHECK(error_code(no_ports.pop(a)) == wire::Error::NOT_PUBLISHER);

  Harness h(tcp_config());
  const ConnectionId b = h.hello(key_of('a'));
  h.deliver(b, register_tcp(h, b, "home", {8080}));
  CHECK(error_code(h.pop(b)) == wire::Error::NOT_PUBLISHER);
}

TEST_CASE("the front door learns which tcp and tls publishes want a PROXY header") {
  Harness h(tcp_config());
  const ConnectionId home = h.hello(key_of('a'));
  wire::Envelope envelope = register_tcp(h, home, "home", {20001});
  envelope.mutable_register_()->mutable_publish(0)->set_proxy_protocol(true);
  auto* tls = envelope.mutable_register_()->add_publish();
  tls->set_kind(wire::Publish::TLS);
  tls->set_host("127.0.0.1");
  tls->set_port(8443);
  tls->set_proxy_protocol(true);
  auto* http = envelope.mutable_register_()->add_publish();
  http->set_kind(wire::Publish::HTTP);
  http->set_host("127.0.0.1");
  http->set_port(8000);
  http->set_proxy_protocol(true);  // http carries X-Forwarded-For instead
  h.deliver(home, envelope);
  REQUIRE(h.pop(home).has_registered());
  const auto tcp = h.core().published_tcp(20001);
  REQUIRE(tcp);
  CHECK(tcp->second.proxy_protocol);
  CHECK(h.core().published("home", wire::Publish::TLS)->proxy_protocol);
  CHECK_FALSE(h.core().published("home", wire::Publish::HTTP)->proxy_protocol);
}

TEST_CASE("allow-from reaches the front door, which admits only visitors in range") {
  Harness h(publishing_config(true));
  const ConnectionId home = h.hello(key_of('a'));
  wire::Envelope envelope = register_publishing(h, home, "home");
  envelope.mutable_register_()->mutable_publish(0)->add_allow_from("192.168.0.0/16");
  envelope.mutable_register_()->mutable_publish(0)->add_allow_from("2001:db8::/32");
  h.deliver(home, envelope);
  REQUIRE(h.pop(home).has_registered());
  const auto service = h.core().published("home", wire::Publish::HTTP);
  REQUIRE(service);
  CHECK(service->admits({"192.168.4.5", 80}));
  CHECK(service->admits({"::ffff:192.168.4.5", 80}));  // a dual-stack listener's view
  CHECK(service->admits({"2001:db8:1::7", 80}));
  CHECK_FALSE(service->admits({"192.169.0.1", 80}));
  CHECK_FALSE(service->admits({"127.0.0.1", 80}));
  CHECK_FALSE(service->admits({"2001:db9::1", 80}));
  CHECK_FALSE(service->admits({"?", 0}));
  // No ranges: everyone.
  CHECK(PublishedService{}.admits({"198.51.100.1", 1}));
}

TEST_CASE("a malformed or endless allow-from is refused at registration") {
  Harness h(publishing_config(true));
  const ConnectionId home = h.hello(key_of('a'));
  wire::Envelope envelope = register_publishing(h, home, "home");
  SECTION("malformed") {
    envelope.mutable_register_()->mutable_publish(0)->add_allow_from("10.0.0.0/40");
  }
  SECTION("too many") {
    for (int i = 0; i < 33; ++i)
      envelope.mutable_register_()->mutable_publish(0)->add_allow_from("10.0.0.1");
  }
  h.deliver(home, envelope);
  const auto reply = h.pop(home);
  REQUIRE(reply.has_error());
  CHECK(reply.error().code() == wire::Error::BAD_MESSAGE);
  CHECK(reply.error().detail().find("allow-from") != std::string::npos);
  CHECK_FALSE(h.core().published("home", wire::Publish::HTTP));
}

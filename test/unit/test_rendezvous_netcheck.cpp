// `peer netcheck NAME` through the rendezvous core: the signed query, its routing to
// the target with the caller's key, the answer routed back, and every refusal.
#include <catch2/catch.hpp>

#include "identity.h"
#include "rendezvous/rendezvous_core.h"
#include "test_rendezvous_harness.h"

using namespace natfwd;
using namespace natfwd::relay;
using namespace natfwd::relay::testing;

namespace {

wire::Envelope make_query(Harness& h, ConnectionId id, char letter, uint64_t query_id,
                          const std::string& target) {
  wire::Envelope envelope;
  auto* query = envelope.mutable_netcheck_query();
  query->set_query_id(query_id);
  query->set_target(target);
  query->set_signature(identity_of(letter).sign(netcheck_query_message(h.challenge(id), target)));
  return envelope;
}

}  // namespace

TEST_CASE("a netcheck query reaches the target with the caller's key; the answer comes back") {
  Harness h;
  const ConnectionId home = h.registered("home", key_of('h'));
  const ConnectionId laptop = h.hello(key_of('l'));
  h.deliver(laptop, make_query(h, laptop, 'l', 77, "home"));
  auto forwarded = h.pop(home);
  REQUIRE(forwarded.has_netcheck_query());
  CHECK(forwarded.netcheck_query().caller_key() == key_of('l'));
  CHECK(forwarded.netcheck_query().signature().empty());
  const uint64_t relay_id = forwarded.netcheck_query().query_id();

  wire::Envelope answer;
  answer.mutable_netcheck_reply()->set_query_id(relay_id);
  answer.mutable_netcheck_reply()->set_status(wire::NetcheckReply::OK);
  answer.mutable_netcheck_reply()->mutable_facts()->set_mapping(
      wire::NatFacts::MAPPING_ENDPOINT_INDEPENDENT);
  // Someone else answering that id is ignored.
  const ConnectionId other = h.registered("other", key_of('o'));
  h.deliver(other, answer);
  CHECK_FALSE(h.has_message(laptop));
  h.deliver(home, answer);
  auto reply = h.pop(laptop);
  REQUIRE(reply.has_netcheck_reply());
  CHECK(reply.netcheck_reply().query_id() == 77);
  CHECK(reply.netcheck_reply().facts().mapping() == wire::NatFacts::MAPPING_ENDPOINT_INDEPENDENT);
  // A second answer to the same query goes nowhere.
  h.deliver(home, answer);
  CHECK_FALSE(h.has_message(laptop));
}

TEST_CASE("a netcheck query with a forged signature closes the caller") {
  Harness h;
  const ConnectionId home = h.registered("home", key_of('h'));
  const ConnectionId laptop = h.hello(key_of('l'));
  // Signed by another key than the Hello's: a caller pretending to be an authorised peer.
  h.deliver(laptop, make_query(h, laptop, 'a', 1, "home"));
  CHECK(error_code(h.pop(laptop)) == wire::Error::BAD_SIGNATURE);
  CHECK(h.closed(laptop));
  CHECK_FALSE(h.has_message(home));
}

TEST_CASE("netcheck queries to unknown names, beyond the limit, or to a leaving target") {
  Harness h;
  const ConnectionId laptop = h.hello(key_of('l'));
  h.deliver(laptop, make_query(h, laptop, 'l', 5, "nobody"));
  auto none = h.pop(laptop);
  REQUIRE(none.has_netcheck_reply());
  CHECK(none.netcheck_reply().status() == wire::NetcheckReply::NO_SUCH_PEER);
  CHECK(none.netcheck_reply().query_id() == 5);

  const ConnectionId home = h.registered("home", key_of('h'));
  for (uint64_t i = 0; i < 4; ++i) {
    h.deliver(laptop, make_query(h, laptop, 'l', 10 + i, "home"));
    CHECK(h.pop(home).has_netcheck_query());
  }
  h.deliver(laptop, make_query(h, laptop, 'l', 20, "home"));
  auto limited = h.pop(laptop);
  CHECK(limited.netcheck_reply().status() == wire::NetcheckReply::LIMIT);
  CHECK_FALSE(h.has_message(home));

  // The target goes: each pending query is told so.
  h.transport_closed(home);
  for (uint64_t i = 0; i < 4; ++i) {
    auto gone = h.pop(laptop);
    REQUIRE(gone.has_netcheck_reply());
    CHECK(gone.netcheck_reply().status() == wire::NetcheckReply::NO_SUCH_PEER);
  }
  CHECK_FALSE(h.closed(laptop));
}

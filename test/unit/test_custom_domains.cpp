// Custom domains for publishing: what the DNS answers decide (DomainClaimCheck, no
// I/O), and how RendezvousCore holds a Register until they are in, keeps a claim for
// the key that made it and ends the route when the DNS stops backing it, with the fake
// clock of test_rendezvous_harness.h.
#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include "address.h"
#include "front_door/domain_claims.h"
#include "identity.h"
#include "test_rendezvous_harness.h"

using namespace natfwd;
using namespace natfwd::relay;
using namespace natfwd::relay::front_door;
using namespace natfwd::relay::testing;
using Outcome = DomainVerdict::Outcome;
using Status = DnsAnswer::Status;

namespace {

const std::string kDomain = "share.example.net";
const std::string kKeyId = "abcdefghijklmnopqrstuvwxyz234567";
const DomainCheck kCheck{"www.example.org", kKeyId, "home.share.example.net"};

DnsAnswer found(std::vector<std::string> values) { return {Status::kFound, std::move(values), ""}; }
DnsAnswer not_found() { return {Status::kNotFound, {}, ""}; }
DnsAnswer failed() { return {Status::kFailed, {}, "Temporary failure in name resolution"}; }

const DomainClaimCheck& check() {
  static const DomainClaimCheck judge({"203.0.113.7", "2001:db8::7"});
  return judge;
}

std::string id_of(char letter) { return key_id(identity_of(letter).public_key()); }

RendezvousConfig custom_domain_config() {
  RendezvousConfig config;
  config.publish.domain = kDomain;
  config.publish.relay_key = key_of('r');
  config.publish.any_publisher = true;
  config.publish.domain_claims = std::make_shared<MemoryNameBinding>();
  return config;
}

wire::Envelope register_custom(Harness& h, ConnectionId id, const std::string& name,
                               const std::string& domain,
                               wire::Publish::Kind kind = wire::Publish::TLS) {
  wire::Envelope envelope = h.make_register(id, name);
  auto* publish = envelope.mutable_register_()->add_publish();
  publish->set_kind(kind);
  publish->set_host("127.0.0.1");
  publish->set_port(8443);
  publish->set_tls_at_home(true);
  publish->set_custom_domain(domain);
  return envelope;
}

// A connection of key `letter` whose Register of `name` claims `domain`, which the DNS backs.
ConnectionId claimed(Harness& h, char letter, const std::string& name, const std::string& domain) {
  const ConnectionId id = h.hello(key_of(letter));
  h.deliver(id, register_custom(h, id, name, domain));
  h.answer(h.take_checks().at(0), {{Outcome::kPass, ""}});
  REQUIRE(h.pop(id).has_registered());
  return id;
}
}  // namespace

TEST_CASE("a claim passes when the name resolves to the relay and the TXT record holds the key id") {
  CHECK(check().judge(kCheck, found({"203.0.113.7"}), found({kKeyId})).outcome == Outcome::kPass);
  // Through a CNAME the resolver followed, among other addresses; IPv6 too.
  CHECK(check().judge(kCheck, found({"198.51.100.1", "2001:db8:0:0::7"}), found({"other", kKeyId}))
            .outcome == Outcome::kPass);
  // The key id as a user may paste it: upper case, spaces around.
  CHECK(check().judge(kCheck, found({"203.0.113.7"}), found({" ABCDEFGHIJKLMNOPQRSTUVWXYZ234567 "}))
            .outcome == Outcome::kPass);
}

TEST_CASE("a missing TXT record is refused with the record to add") {
  const DomainVerdict verdict = check().judge(kCheck, found({"203.0.113.7"}), not_found());
  CHECK(verdict.outcome == Outcome::kRefused);
  CHECK(verdict.reason ==
        "custom domain www.example.org is not this peer's: there is no TXT record "
        "_natfwd.www.example.org: add `_natfwd.www.example.org. TXT \"" + kKeyId + "\"`");
}

TEST_CASE("a TXT record with another value is refused with what it holds and should hold") {
  const DomainVerdict verdict = check().judge(kCheck, found({"203.0.113.7"}), found({"nope"}));
  CHECK(verdict.outcome == Outcome::kRefused);
  CHECK(verdict.reason ==
        "custom domain www.example.org is not this peer's: the TXT record "
        "_natfwd.www.example.org holds \"nope\", not this peer's key id: make it "
        "`_natfwd.www.example.org. TXT \"" + kKeyId + "\"`");
}

TEST_CASE("a name that does not point at the relay is refused with the CNAME or A record to make") {
  const DomainVerdict elsewhere = check().judge(kCheck, found({"192.0.2.9"}), found({kKeyId}));
  CHECK(elsewhere.outcome == Outcome::kRefused);
  CHECK(elsewhere.reason ==
        "custom domain www.example.org is not this peer's: www.example.org resolves to "
        "192.0.2.9, not to this relay: make it `www.example.org. CNAME home.share.example.net.` "
        "(or `www.example.org. A 203.0.113.7`)");
  const DomainVerdict none = check().judge(kCheck, not_found(), not_found());
  CHECK(none.outcome == Outcome::kRefused);
  // Both records named, in one line.
  CHECK(none.reason.find("www.example.org has no address record: add") != std::string::npos);
  CHECK(none.reason.find("; there is no TXT record _natfwd.www.example.org") != std::string::npos);
}

TEST_CASE("a look-up without an answer decides nothing, unless the other one refuses") {
  const DomainVerdict retry = check().judge(kCheck, failed(), found({kKeyId}));
  CHECK(retry.outcome == Outcome::kRetry);
  CHECK(retry.reason.find("Temporary failure") != std::string::npos);
  CHECK(check().judge(kCheck, found({"203.0.113.7"}), failed()).outcome == Outcome::kRetry);
  CHECK(check().judge(kCheck, failed(), not_found()).outcome == Outcome::kRefused);
}

TEST_CASE("the relay's addresses must be IP addresses") {
  CHECK_THROWS(DomainClaimCheck({}));
  CHECK_THROWS(DomainClaimCheck({"relay.example.net"}));
}

TEST_CASE("custom domain names are DNS names of two labels or more, lowercase") {
  CHECK(is_custom_domain_name("www.example.org"));
  CHECK(is_custom_domain_name("a-1.b2.example"));
  CHECK_FALSE(is_custom_domain_name("localhost"));
  CHECK_FALSE(is_custom_domain_name("WWW.example.org"));
  CHECK_FALSE(is_custom_domain_name("www.example.org."));
  CHECK_FALSE(is_custom_domain_name("-a.example.org"));
  CHECK_FALSE(is_custom_domain_name("a..example.org"));
  CHECK_FALSE(is_custom_domain_name("192.0.2.1"));
  CHECK_FALSE(is_custom_domain_name("a_b.example.org"));
  CHECK_FALSE(is_custom_domain_name(std::string(64, 'a') + ".org"));
}

TEST_CASE("a Register with a custom domain waits for the DNS, then routes the name") {
  Harness h(custom_domain_config());
  const ConnectionId home = h.hello(key_of('a'));
  h.deliver(home, register_custom(h, home, "home", "www.example.org"));
  CHECK_FALSE(h.has_message(home));  // no Registered before the look-up
  auto checks = h.take_checks();
  REQUIRE(checks.size() == 1);
  REQUIRE(checks[0].domains.size() == 1);
  CHECK(checks[0].domains[0].domain == "www.example.org");
  CHECK(checks[0].domains[0].key_id == id_of('a'));
  CHECK(checks[0].domains[0].cname_target == "home." + kDomain);
  CHECK_FALSE(h.core().published_custom("www.example.org"));

  h.answer(checks[0], {{Outcome::kPass, ""}});
  const auto reply = h.pop(home);
  REQUIRE(reply.has_registered());
  const auto& features = reply.registered().publish().features();
  CHECK(std::find(features.begin(), features.end(), "custom-domain") != features.end());
  const auto found = h.core().published_custom("WWW.Example.org.");
  REQUIRE(found);
  CHECK(found->first == "home");
  CHECK(found->second.target == HostPort{"127.0.0.1", 8443});
  CHECK(found->second.tls_at_home);
  // The custom domain is not also NAME.DOMAIN.
  CHECK_FALSE(h.core().published("home", wire::Publish::TLS));
  // An answer that comes again (a late duplicate) changes nothing.
  h.answer(checks[0], {{Outcome::kRefused, "late"}});
  CHECK_FALSE(h.closed(home));
}

TEST_CASE("a claim the DNS does not back is refused at the peer with the record to add") {
  Harness h(custom_domain_config());
  const ConnectionId home = h.hello(key_of('a'));
  h.deliver(home, register_custom(h, home, "home", "www.example.org"));
  const auto checks = h.take_checks();
  REQUIRE(checks.size() == 1);
  h.answer(checks[0], {{Outcome::kRefused, "custom domain www.example.org is not this peer's: x"}});
  const auto reply = h.pop(home);
  REQUIRE(reply.has_error());
  CHECK(reply.error().code() == wire::Error::CLAIM_UNCONFIRMED);
  CHECK(reply.error().detail() == "custom domain www.example.org is not this peer's: x");
  CHECK(h.closed(home));
  CHECK_FALSE(h.core().published_custom("www.example.org"));
  CHECK_FALSE(h.core().holder_of("home"));
}

TEST_CASE("a name claimed by one key is refused to another without a look-up") {
  const RendezvousConfig config = custom_domain_config();
  const std::shared_ptr<NameBindingPolicy> claims = config.publish.domain_claims;
  Harness h(config);
  const ConnectionId first = claimed(h, 'a', "home", "www.example.org");
  CHECK(claims->bound_key("www.example.org") == key_of('a'));

  const ConnectionId second = h.hello(key_of('b'), "198.51.100.2");
  h.deliver(second, register_custom(h, second, "other", "www.example.org"));
  CHECK(h.take_checks().empty());
  const auto reply = h.pop(second);
  REQUIRE(reply.has_error());
  CHECK(reply.error().code() == wire::Error::NOT_PUBLISHER);
  CHECK(reply.error().detail().find("is held at this relay by key " + id_of('a')) !=
        std::string::npos);
  CHECK(reply.error().detail().find("relay domains release www.example.org") != std::string::npos);
  // Gone offline, the holder still holds it.
  h.transport_closed(first);
  const ConnectionId third = h.hello(key_of('b'), "198.51.100.2");
  h.deliver(third, register_custom(h, third, "other", "www.example.org"));
  CHECK(h.pop(third).has_error());
}

TEST_CASE("the holder hands a custom domain to a new key, whose claim then needs the DNS") {
  const RendezvousConfig config = custom_domain_config();
  const std::shared_ptr<NameBindingPolicy> claims = config.publish.domain_claims;
  Harness h(config);
  const ConnectionId old_home = claimed(h, 'a', "home", "www.example.org");

  auto hand_over = [](const std::string& name, const std::string& to) {
    wire::Envelope envelope;
    envelope.mutable_hand_over()->set_name(name);
    envelope.mutable_hand_over()->set_to_key_id(to);
    return envelope;
  };
  // Only the holder: another key's hand-over of it is refused.
  const ConnectionId thief = h.hello(key_of('t'), "198.51.100.9");
  h.deliver(thief, hand_over("www.example.org", id_of('t')));
  const auto refused = h.pop(thief);
  CHECK(refused.error().code() == wire::Error::NOT_HOLDER);
  CHECK(refused.error().detail().find("custom domain www.example.org is bound to another key") !=
        std::string::npos);

  const ConnectionId handing = h.hello(key_of('a'));
  h.deliver(handing, hand_over("www.example.org", id_of('n')));
  REQUIRE(h.pop(handing).has_handed_over());
  CHECK(claims->bound_key("www.example.org") == key_of('a'));  // until the heir's claim passes

  // A third key is still refused without a look-up.
  const ConnectionId other = h.hello(key_of('b'), "198.51.100.2");
  h.deliver(other, register_custom(h, other, "other", "www.example.org"));
  CHECK(h.take_checks().empty());
  CHECK(h.pop(other).error().code() == wire::Error::NOT_PUBLISHER);

  // The heir is looked up like any claim: a DNS that does not back it refuses it.
  const ConnectionId early = h.hello(key_of('n'), "198.51.100.40");
  h.deliver(early, register_custom(h, early, "home2", "www.example.org"));
  auto checks = h.take_checks();
  REQUIRE(checks.size() == 1);
  CHECK(checks[0].domains.at(0).key_id == id_of('n'));
  h.answer(checks[0], {{Outcome::kRefused, "custom domain www.example.org is not this peer's: z"}});
  CHECK(h.pop(early).error().code() == wire::Error::CLAIM_UNCONFIRMED);
  CHECK(claims->bound_key("www.example.org") == key_of('a'));
  CHECK(h.core().published_custom("www.example.org")->first == "home");

  // Once the TXT record names it, the heir holds the domain and the old route ends.
  const ConnectionId heir = h.hello(key_of('n'), "198.51.100.40");
  h.deliver(heir, register_custom(h, heir, "home2", "www.example.org"));
  h.answer(h.take_checks().at(0), {{Outcome::kPass, ""}});
  REQUIRE(h.pop(heir).has_registered());
  CHECK(claims->bound_key("www.example.org") == key_of('n'));
  CHECK(h.core().published_custom("www.example.org")->first == "home2");
  const auto gone = h.pop(old_home);
  CHECK(gone.error().code() == wire::Error::NOT_PUBLISHER);
  CHECK(gone.error().detail() == "custom domain www.example.org was handed over to key " +
                                     id_of('n') + ", which claimed it");
  CHECK(h.closed(old_home));

  // Now the old key is the stranger.
  const ConnectionId old_key = h.hello(key_of('a'));
  h.deliver(old_key, register_custom(h, old_key, "home", "www.example.org"));
  CHECK(h.take_checks().empty());
  CHECK(h.pop(old_key).error().code() == wire::Error::NOT_PUBLISHER);
}

TEST_CASE("a held claim is looked up again daily and a removed record ends the route") {
  RendezvousConfig config = custom_domain_config();
  config.idle_timeout = std::chrono::hours(48);  // only the claim decides here
  Harness h(config);
  const ConnectionId home = claimed(h, 'a', "home", "www.example.org");
  h.advance(std::chrono::hours(24) - std::chrono::seconds(1));
  CHECK(h.take_checks().empty());
  h.advance(std::chrono::seconds(1));
  auto rechecks = h.take_checks();
  REQUIRE(rechecks.size() == 1);
  // The DNS did not answer: the held claim stays, and is looked up again in an hour.
  h.answer(rechecks[0], {{Outcome::kRetry, "no answer"}});
  CHECK_FALSE(h.closed(home));
  CHECK(h.core().published_custom("www.example.org"));
  h.advance(std::chrono::seconds(3600));
  rechecks = h.take_checks();
  REQUIRE(rechecks.size() == 1);
  h.answer(rechecks[0], {{Outcome::kRefused, "custom domain www.example.org is not this peer's: y"}});
  CHECK(h.closed(home));
  CHECK_FALSE(h.core().published_custom("www.example.org"));
}

TEST_CASE("a new claim without a DNS answer is refused for now, not for good") {
  Harness h(custom_domain_config());
  const ConnectionId home = h.hello(key_of('a'));
  h.deliver(home, register_custom(h, home, "home", "www.example.org"));
  h.answer(h.take_checks().at(0), {{Outcome::kRetry, "custom domain www.example.org: no answer"}});
  const auto reply = h.pop(home);
  REQUIRE(reply.has_error());
  CHECK(reply.error().code() == wire::Error::CLAIM_UNCONFIRMED);  // the peer tries again
}

TEST_CASE("custom domains a relay does not take are refused at once") {
  SECTION("a relay without custom domains") {
    RendezvousConfig config = custom_domain_config();
    config.publish.domain_claims.reset();
    Harness h(config);
    const ConnectionId home = h.hello(key_of('a'));
    h.deliver(home, register_custom(h, home, "home", "www.example.org"));
    const auto reply = h.pop(home);
    REQUIRE(reply.has_error());
    CHECK(reply.error().code() == wire::Error::NOT_PUBLISHER);
    CHECK(reply.error().detail().find("takes no custom domains") != std::string::npos);
  }
  SECTION("a name under the relay's own domain") {
    Harness h(custom_domain_config());
    const ConnectionId home = h.hello(key_of('a'));
    h.deliver(home, register_custom(h, home, "home", "other." + kDomain));
    const auto reply = h.pop(home);
    REQUIRE(reply.has_error());
    CHECK(reply.error().code() == wire::Error::NOT_PUBLISHER);
  }
  SECTION("on an http publish, or not a DNS name") {
    Harness h(custom_domain_config());
    const ConnectionId home = h.hello(key_of('a'));
    h.deliver(home, register_custom(h, home, "home", "www.example.org", wire::Publish::HTTP));
    CHECK(error_code(h.pop(home)) == wire::Error::BAD_MESSAGE);
    const ConnectionId again = h.hello(key_of('a'));
    h.deliver(again, register_custom(h, again, "home", "WWW.example.org"));
    CHECK(error_code(h.pop(again)) == wire::Error::BAD_MESSAGE);
  }
}

// What a publishing peer lets the relay's front door do (peer/serving/serving_policy.h):
// its key is admitted only on sessions from the relay that granted it, reaches the
// --publish targets and nothing else, and must be the key the QUIC handshake proves;
// the peer's authorised callers reach --serve targets and not the published ones.
#include <catch2/catch.hpp>

#include "identity.h"
#include "relays/relay_links.h"
#include "serving/serving_policy.h"

using namespace natfwd;

namespace {

PeerOptions publishing_options() {
  PeerOptions options;
  options.name = "home";
  options.state_dir = "/nonexistent/natfwd-test-state";
  options.serves.push_back({std::nullopt, {"buffalo", 22}});
  options.publishes.push_back({PublishSpec::Kind::kHttp, {"127.0.0.1", 8000}, 0, false, {}, {}, {}, {}, {}});
  return options;
}

// A session without a pairing proof, as the relay announces most.
ServingPolicy::Admission admit(const ServingPolicy& policy, const PublicKey& caller,
                               const RelayLink& link) {
  const wire::IncomingSession incoming;
  std::string pairing_refusal;
  return policy.admit(caller, link, incoming, pairing_refusal);
}

bool allowed(const TargetPolicy& policy, const HostPort& target) {
  return policy(target).status == static_cast<int>(wire::StreamStatus::kOk);
}

}  // namespace

TEST_CASE("the front door's key is admitted only through the relay that granted it") {
  const PeerOptions options = publishing_options();
  ServingPolicy policy(options);
  const PublicKey front_door = Identity::generate().public_key();
  const PublicKey stranger = Identity::generate().public_key();
  RelayLink granting, other;
  granting.front_door_key = front_door;

  CHECK(policy.serves());
  CHECK(admit(policy, front_door, granting) == ServingPolicy::Admission::kFrontDoor);
  CHECK(admit(policy, front_door, other) == ServingPolicy::Admission::kRefused);
  CHECK(admit(policy, stranger, granting) == ServingPolicy::Admission::kRefused);
}

TEST_CASE("the front door reaches the published targets only, with the granted key") {
  const PeerOptions options = publishing_options();
  ServingPolicy policy(options);
  const PublicKey front_door = Identity::generate().public_key();
  Tunnel::Hooks hooks;
  TargetPolicy targets = [&policy](const HostPort& target) { return policy.check_target(target); };
  policy.add_hooks(hooks, targets, front_door, "front door",
                   ServingPolicy::Admission::kFrontDoor);

  CHECK(allowed(targets, {"127.0.0.1", 8000}));
  CHECK_FALSE(allowed(targets, {"buffalo", 22}));
  CHECK_FALSE(allowed(targets, {"127.0.0.1", 8001}));
  REQUIRE(hooks.authorize_key);
  CHECK(hooks.authorize_key(front_door));
  CHECK_FALSE(hooks.authorize_key(Identity::generate().public_key()));
}

TEST_CASE("callers of --serve do not reach published targets") {
  const PeerOptions options = publishing_options();
  ServingPolicy policy(options);
  CHECK(policy.check_target({"buffalo", 22}).status == static_cast<int>(wire::StreamStatus::kOk));
  CHECK(policy.check_target({"127.0.0.1", 8000}).status ==
        wire::StreamOpenResult::NOT_SERVED);
}

TEST_CASE("a peer that publishes nothing never admits a front door") {
  PeerOptions options = publishing_options();
  options.publishes.clear();
  ServingPolicy policy(options);
  const PublicKey front_door = Identity::generate().public_key();
  RelayLink granting;
  granting.front_door_key = front_door;
  CHECK(admit(policy, front_door, granting) == ServingPolicy::Admission::kRefused);
}

TEST_CASE("a publish that needs allow-from or proxy-protocol stops at a relay not listing it") {
  PeerOptions options = publishing_options();
  options.publishes[0].allow_from = {"10.0.0.0/8"};
  PublishSpec ssh;
  ssh.kind = PublishSpec::Kind::kTcp;
  ssh.target = {"127.0.0.1", 22};
  ssh.proxy_protocol = true;
  options.publishes.push_back(ssh);
  ServingPolicy policy(options);
  RelayLink link;
  link.address = {"relay.test", 3478};
  link.front_door_key = Identity::generate().public_key();
  link.publish_domain = "share.test";  // what RelayLinks takes from the grant
  wire::Registered registered;
  registered.set_name("home");
  registered.mutable_publish()->set_domain("share.test");
  // An older relay: a grant without features.
  auto stop = policy.on_registered(link, registered);
  REQUIRE(stop);
  CHECK(stop->find("relay relay.test:3478 does not support allow-from") == 0);
  registered.mutable_publish()->add_features("allow-from");
  stop = policy.on_registered(link, registered);
  REQUIRE(stop);
  CHECK(stop->find("does not support proxy-protocol") != std::string::npos);
  registered.mutable_publish()->add_features("proxy-protocol");
  registered.mutable_publish()->add_features("some-later-feature");
  CHECK_FALSE(policy.on_registered(link, registered));
  // Published once granted: peer status shows the URL.
  const auto status = policy.publish_status();
  REQUIRE(status.size() == 2);
  CHECK(status[0].url == "http://home.share.test/");
  CHECK(status[0].allow_from == std::vector<std::string>{"10.0.0.0/8"});
  CHECK(status[1].proxy_protocol);
}

TEST_CASE("a custom domain stops at a relay without custom-domain and is published by name") {
  PeerOptions options = publishing_options();
  options.publishes.push_back({PublishSpec::Kind::kTls, {"127.0.0.1", 8443}, 0, false, {}, {}, {}, {}, {}});
  options.publishes.back().custom_domain = "www.example.org";
  ServingPolicy policy(options);
  RelayLink link;
  link.address = {"relay.test", 3478};
  link.front_door_key = Identity::generate().public_key();
  link.publish_domain = "share.test";
  wire::Registered registered;
  registered.set_name("home");
  registered.mutable_publish()->set_domain("share.test");
  registered.mutable_publish()->add_features("allow-from");
  registered.mutable_publish()->add_features("proxy-protocol");
  // An older relay would route nothing at www.example.org.
  auto stop = policy.on_registered(link, registered);
  REQUIRE(stop);
  CHECK(*stop == "relay relay.test:3478 does not support custom domains (too old?): not "
                 "publishing tls:127.0.0.1:8443 without it; update the relay or drop custom "
                 "domains");
  registered.mutable_publish()->add_features("custom-domain");
  CHECK_FALSE(policy.on_registered(link, registered));
  const auto status = policy.publish_status();
  REQUIRE(status.size() == 2);
  CHECK(status[1].url == "https://www.example.org/");
}

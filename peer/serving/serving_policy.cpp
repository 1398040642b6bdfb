#include "serving/serving_policy.h"

#include "log.h"

namespace natfwd {
namespace {

std::string join_targets(const std::vector<ServeSpec>& serves) {
  if (serves.empty()) return "nothing";
  std::string out;
  for (const auto& serve : serves) {
    if (!out.empty()) out += ", ";
    out += serve.target.to_string();
  }
  return out;
}

}  // namespace

ServingPolicy::ServingPolicy(const PeerOptions& options)
    : options_(options), authorization_(options.state_dir, options.allow) {
  if (!serves()) return;
  // Answers go back through the relay each query came through (answer_netcheck), not
  // through a link fixed here.
  netcheck_ = std::make_unique<netcheck::NetcheckResponder>(
      netcheck::NetcheckResponder::Send{}, [this](const std::string& caller_key) {
        PublicKey caller{};
        return public_key_from_bytes(
                   std::span(reinterpret_cast<const uint8_t*>(caller_key.data()),
                             caller_key.size()),
                   caller) &&
               authorization_.is_authorized(caller);
      });
}

StreamDecision ServingPolicy::check_target(const HostPort& target) const {
  for (const auto& serve : options_.serves)
    if (serve.target == target) return {};
  return {wire::StreamOpenResult::NOT_SERVED,
          target.to_string() + " is not in this peer's --serve list"};
}

StreamDecision ServingPolicy::check_published_target(const HostPort& target) const {
  for (const auto& publish : options_.publishes)
    if (publish.target == target) return {};
  return {wire::StreamOpenResult::NOT_SERVED,
          target.to_string() + " is not in this peer's --publish list"};
}

ServingPolicy::Admission ServingPolicy::admit(const PublicKey& caller,
                                              const RelayLink& link) const {
  if (link.front_door_key && *link.front_door_key == caller && !options_.publishes.empty())
    return Admission::kFrontDoor;
  if (authorization_.is_authorized(caller)) return Admission::kAuthorized;
  if (authorization_.has_pending_invite()) return Admission::kPairingOnly;
  return Admission::kRefused;
}

void ServingPolicy::add_hooks(Tunnel::Hooks& hooks, TargetPolicy& policy,
                              const PublicKey& caller, const std::string& label,
                              Admission admission) {
  const PublicKey key = caller;
  if (admission == Admission::kFrontDoor) {
    // A relay's front door reaches the published targets and nothing else, and must
    // prove inside the QUIC handshake that it holds the key its relay granted with.
    policy = [this](const HostPort& target) { return check_published_target(target); };
    hooks.authorize_key = [key](const PublicKey& presented) { return presented == key; };
    return;
  }
  const bool pairing_only = admission == Admission::kPairingOnly;
  if (pairing_only) {
    policy = [](const HostPort&) {
      return StreamDecision{wire::StreamOpenResult::NOT_AUTHORIZED,
                            "this peer's key is not authorised here; pair it first"};
    };
  }
  // The QUIC handshake checks again that the key is the authorised one, so a relay
  // that announced one key and sent another peer gets nowhere.
  hooks.authorize_key = [this, pairing_only](const PublicKey& presented) {
    return authorization_.is_authorized(presented) ||
           (pairing_only && authorization_.has_pending_invite());
  };
  hooks.pair = [this, key, label](const std::string& secret) {
    if (!authorization_.redeem_invite(secret)) {
      log::warn("%s: pairing refused: invite unknown, used or expired", label.c_str());
      return StreamDecision{wire::StreamOpenResult::NOT_AUTHORIZED,
                            "invite unknown, already used or expired"};
    }
    if (!authorization_.authorize(key, "paired")) {
      return StreamDecision{wire::StreamOpenResult::NOT_AUTHORIZED,
                            "the serving peer cannot write its authorized_peers"};
    }
    log::info("%s: paired: key %s (%s) added to authorized_peers", label.c_str(),
              key_id(key).c_str(), key_fingerprint(key).c_str());
    return StreamDecision{wire::StreamOpenResult::OK, "paired"};
  };
}

void ServingPolicy::on_welcome(const RelayLink& link, const wire::Welcome& welcome) {
  if (netcheck_)
    netcheck_->on_welcome(
        netcheck::options_from_welcome(welcome, link.address, link.ip, options_.proxy),
        options_.proxy.has_value());
}

void ServingPolicy::on_registered(RelayLink& link, const wire::Registered& registered) {
  const std::string& name = registered.name();
  if (netcheck_) netcheck_->on_registered();
  const bool again = link.registered;
  link.registered = true;
  if (!announced_) {
    announced_ = true;
    // `peer invite` puts the name in the codes it prints.
    g_file_set_contents((options_.state_dir + "/name").c_str(), (name + "\n").c_str(), -1,
                        nullptr);
    log::ready("registered as %s at %s, serving %s", name.c_str(),
               link.address.to_string().c_str(), join_targets(options_.serves).c_str());
  } else if (again) {
    log::info("registered again as %s at %s", name.c_str(), link.address.to_string().c_str());
  } else {
    log::info("registered as %s at %s too", name.c_str(), link.address.to_string().c_str());
  }
  if (options_.publishes.empty()) return;
  if (!link.front_door_key) {
    // A relay from before publishing ignores the request (a relay that refuses says so
    // with Error NOT_PUBLISHER, and this peer stops).
    log::warn("relay %s does not publish: it answered without a grant (too old for "
              "--publish?)", link.address.to_string().c_str());
    return;
  }
  if (published_) return;
  published_ = true;
  for (const PublishSpec& publish : options_.publishes) {
    if (publish.kind == PublishSpec::Kind::kTcp) continue;
    const bool tls = publish.kind == PublishSpec::Kind::kTls;
    log::ready("published %s://%s.%s/ -> %s%s", tls ? "https" : "http", name.c_str(),
               link.publish_domain.c_str(), publish.target.to_string().c_str(),
               tls ? " (tls passthrough)" : "");
  }
  // TCP: the ports the relay gave, on the relay's own address.
  for (const wire::Publish& publish : registered.publish().published()) {
    if (publish.kind() != wire::Publish::TCP) continue;
    log::ready("published tcp://%s -> %s",
               HostPort{link.address.host, static_cast<uint16_t>(publish.public_port())}
                   .to_string().c_str(),
               HostPort{publish.host(), static_cast<uint16_t>(publish.port())}.to_string().c_str());
  }
}

void ServingPolicy::answer_netcheck(RelayLink& link, const wire::NetcheckQuery& query) {
  if (netcheck_) link.client->send(netcheck_->answer(query));
}

}  // namespace natfwd

#include "serving/serving_policy.h"

#include <algorithm>

#include "log.h"
#include "stream_open.h"

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
    : options_(options),
      authorization_(options.state_dir, options.allow),
      publish_connector_(options.publishes, options.name.value_or("natfwd")) {
  https_.resize(options.publishes.size());
  for (size_t i = 0; i < options.publishes.size(); ++i)
    if (const PublishSpec& publish = options.publishes[i]; publish.kind == PublishSpec::Kind::kHttps) {
      https_[i] = std::make_unique<HttpsServer>(
          publish, publish_connector_.target_connector(),
          acme::AcmeAgent::Settings{options.acme_directory, options.acme_email,
                                    options.acme_ca_file, options.state_dir,
                                    options.proxy ? "http://" + options.proxy->to_string()
                                                  : std::string()});
      publish_connector_.route_to(publish.target, https_[i].get());
    }
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
  // Only authorised callers get here (a pairing-only caller is refused before), so
  // the list of what is served may go back with the refusal: the connecting side
  // then sees at once that it asked for "buffalo:22" where "192.168.1.20:22" is
  // served. Targets are compared as written, never resolved: say so.
  std::string detail = options_.name.value_or("this peer") + " does not serve " +
                       target.to_string() + "; it serves " + join_targets(options_.serves) +
                       " (targets match by their exact text)";
  if (detail.size() > wire::kMaxStreamOpenDetail)
    detail = detail.substr(0, wire::kMaxStreamOpenDetail - 3) + "...";
  return {wire::StreamOpenResult::NOT_SERVED, detail};
}

StreamDecision ServingPolicy::check_published_target(const HostPort& target) const {
  for (const auto& publish : options_.publishes)
    if (publish.target == target) return {};
  return {wire::StreamOpenResult::NOT_SERVED,
          target.to_string() + " is not in this peer's --publish list"};
}

ServingPolicy::Admission ServingPolicy::admit(const PublicKey& caller, const RelayLink& link,
                                              const wire::IncomingSession& incoming,
                                              std::string& pairing_refusal) const {
  if (link.front_door_key && *link.front_door_key == caller && !options_.publishes.empty())
    return Admission::kFrontDoor;
  if (authorization_.is_authorized(caller)) return Admission::kAuthorized;
  if (incoming.pairing_proof().empty()) return Admission::kRefused;
  const InviteOutcome outcome =
      authorization_.check_pairing_proof(caller, incoming.session_id(), incoming.pairing_proof());
  if (outcome == InviteOutcome::kPending) return Admission::kPairingOnly;
  pairing_refusal = invite_refusal(outcome);
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
    hooks.connector = &publish_connector_;
    return;
  }
  const bool pairing_only = admission == Admission::kPairingOnly;
  if (pairing_only) {
    policy = [](const HostPort&) {
      return StreamDecision{wire::StreamOpenResult::NOT_AUTHORIZED,
                            "this peer's key is not authorised here; pair it first"};
    };
  } else {
    // `peer authorized revoke` takes effect on the next stream, also in a tunnel that
    // is open already.
    policy = [this, key, served = std::move(policy)](const HostPort& target) {
      if (!authorization_.is_authorized(key))
        return StreamDecision{wire::StreamOpenResult::NOT_AUTHORIZED,
                              "this peer's key is no longer authorised here"};
      return served(target);
    };
  }
  // The QUIC handshake checks again that the key is the authorised one, so a relay
  // that announced one key and sent another peer gets nowhere.
  hooks.authorize_key = [this, pairing_only](const PublicKey& presented) {
    return authorization_.is_authorized(presented) ||
           (pairing_only && authorization_.has_pending_invite());
  };
  hooks.pair = [this, key, label](const std::string& secret) {
    std::string key_label;
    const char* refusal = invite_refusal(authorization_.redeem_invite(secret, key_label));
    if (refusal) {
      log::warn("%s: pairing refused: %s", label.c_str(), refusal);
      return StreamDecision{wire::StreamOpenResult::NOT_AUTHORIZED, refusal};
    }
    if (!authorization_.authorize(key, key_label.empty() ? "paired" : key_label)) {
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

std::optional<std::string> ServingPolicy::on_registered(RelayLink& link,
                                                        const wire::Registered& registered) {
  const std::string& name = registered.name();
  if (netcheck_) netcheck_->on_registered();
  const bool again = link.registered;
  link.registered = true;
  if (!announced_) {
    announced_ = true;
    // `peer invite` puts the name in the codes it prints, and the relays in its hint
    // for the other machine (`peer --relay ... pair CODE`).
    g_file_set_contents((options_.state_dir + "/name").c_str(), (name + "\n").c_str(), -1,
                        nullptr);
    std::string relay_flags;
    for (const HostPort& relay : options_.relays) relay_flags += "--relay " + relay.to_string() + " ";
    if (!options_.relay_tls) relay_flags += "--insecure-relay ";
    g_file_set_contents((options_.state_dir + "/relay_flags").c_str(),
                        (relay_flags + "\n").c_str(), -1, nullptr);
    log::ready("registered as %s at %s, serving %s", name.c_str(),
               link.address.to_string().c_str(), join_targets(options_.serves).c_str());
  } else if (again) {
    log::info("registered again as %s at %s", name.c_str(), link.address.to_string().c_str());
  } else {
    log::info("registered as %s at %s too", name.c_str(), link.address.to_string().c_str());
  }
  if (options_.publishes.empty()) return std::nullopt;
  if (!link.front_door_key) {
    // A relay from before publishing ignores the request (a relay that refuses says so
    // with Error NOT_PUBLISHER, and this peer stops).
    log::warn("relay %s does not publish: it answered without a grant (too old for "
              "--publish?)", link.address.to_string().c_str());
    return std::nullopt;
  }
  const auto& features = registered.publish().features();
  auto has = [&features](const char* name) {
    return std::find(features.begin(), features.end(), name) != features.end();
  };
  for (const PublishSpec& publish : options_.publishes) {
    const char* missing = !publish.allow_from.empty() && !has("allow-from") ? "allow-from"
                          : publish.proxy_protocol && !has("proxy-protocol") ? "proxy-protocol"
                          : !publish.custom_domain.empty() && !has("custom-domain")
                              ? "custom domains"
                              : nullptr;
    if (missing)
      return "relay " + link.address.to_string() + " does not support " + missing +
             " (too old?): not publishing " + publish_kind_name(publish.kind) + ":" +
             publish.target.to_string() + " without it; update the relay or drop " + missing;
  }
  if (published_) return std::nullopt;
  published_ = true;
  publish_urls_.assign(options_.publishes.size(), "");
  for (size_t i = 0; i < options_.publishes.size(); ++i) {
    const PublishSpec& publish = options_.publishes[i];
    if (publish.kind == PublishSpec::Kind::kTcp) continue;
    // A custom domain in place of NAME.DOMAIN: the relay looked up its DNS records
    // before it granted the publish.
    const std::string host = publish.custom_domain.empty()
                                 ? name + "." + link.publish_domain
                                 : publish.custom_domain;
    const bool tls = publish.kind != PublishSpec::Kind::kHttp;
    publish_urls_[i] = std::string(tls ? "https" : "http") + "://" + host + "/";
    if (publish.kind == PublishSpec::Kind::kHttps) {
      https_[i]->on_published(host);  // its ready line waits for a certificate
      continue;
    }
    log::ready("published %s://%s/ -> %s%s", tls ? "https" : "http", host.c_str(),
               publish.target.to_string().c_str(), tls ? " (tls passthrough)" : "");
  }
  // TCP: the ports the relay gave, on the relay's own address.
  for (const wire::Publish& publish : registered.publish().published()) {
    if (publish.kind() != wire::Publish::TCP) continue;
    const HostPort target{publish.host(), static_cast<uint16_t>(publish.port())};
    for (size_t i = 0; i < options_.publishes.size(); ++i)
      if (options_.publishes[i].kind == PublishSpec::Kind::kTcp &&
          options_.publishes[i].target == target && publish_urls_[i].empty())
        publish_urls_[i] =
            "tcp://" + HostPort{link.address.host, static_cast<uint16_t>(publish.public_port())}
                           .to_string();
    log::ready("published tcp://%s -> %s",
               HostPort{link.address.host, static_cast<uint16_t>(publish.public_port())}
                   .to_string().c_str(),
               HostPort{publish.host(), static_cast<uint16_t>(publish.port())}.to_string().c_str());
  }
  return std::nullopt;
}

std::vector<PublishStatus> ServingPolicy::publish_status() const {
  std::vector<PublishStatus> out;
  for (size_t i = 0; i < options_.publishes.size(); ++i) {
    const PublishSpec& publish = options_.publishes[i];
    out.push_back({publish_kind_name(publish.kind),
                   i < publish_urls_.size() ? publish_urls_[i] : "",
                   publish.target.to_string(),
                   publish.allow_from,
                   !publish.auth_file.empty(),
                   publish.proxy_protocol,
                   publish_connector_.visitors(publish.target)});
  }
  return out;
}

void ServingPolicy::answer_netcheck(RelayLink& link, const wire::NetcheckQuery& query) {
  if (netcheck_) link.client->send(netcheck_->answer(query));
}

}  // namespace natfwd

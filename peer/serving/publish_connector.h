// The serving side's connector for the streams of a relay's front door: connects the
// --publish target as TcpConnector does (an `https:` publish's through its TLS end),
// and for a publish with `auth=FILE` puts an HttpAuthGate (http_auth_gate.h) in front
// of the target, so that only requests with a user and password of the file reach the
// web server: for `http:` between the visitor's stream and the target, for `https:`
// between the TLS end's plaintext and the target (target_connector()).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "publish/publish_spec.h"
#include "serving/htpasswd.h"
#include "tunnel/local_endpoint.h"
#include "tunnel/stream_bridge.h"

namespace natfwd {

class PublishConnector final : public LocalConnector {
 public:
  // Reads every auth file of `publishes` (Htpasswd::load throws for a bad one).
  // `realm`: what the browser's password prompt shows (the peer's name).
  PublishConnector(const std::vector<PublishSpec>& publishes, std::string realm);
  std::unique_ptr<Attempt> connect(const HostPort& target, Done done) override;

  // Connections to `target` are made by `connector` (an https publish's TLS end at
  // home), which outlives this.
  void route_to(const HostPort& target, LocalConnector* connector) {
    routes_[target.to_string()] = connector;
  }
  // Connects targets with their auth gate and never through a route: what an https
  // publish's TLS end (the route) opens for the plaintext. Lives as long as this.
  LocalConnector& target_connector() { return targets_; }
  // Whether `target` is behind basic auth.
  bool has_auth(const HostPort& target) const { return auth_.count(target.to_string()) != 0; }
  // Visitor connections made to `target` so far.
  uint64_t visitors(const HostPort& target) const;

 private:
  class TargetConnector final : public LocalConnector {
   public:
    explicit TargetConnector(PublishConnector& owner) : owner_(owner) {}
    std::unique_ptr<Attempt> connect(const HostPort& target, Done done) override {
      return owner_.connect_target(target, std::move(done));
    }

   private:
    PublishConnector& owner_;
  };
  // TCP to `target`, behind its auth gate when it has one.
  std::unique_ptr<Attempt> connect_target(const HostPort& target, Done done);

  TcpConnector tcp_;
  TargetConnector targets_{*this};
  std::string realm_;
  // By target ("host:port"): the password file of the http publish there.
  std::map<std::string, std::shared_ptr<Htpasswd>> auth_;
  std::map<std::string, uint64_t> visitors_;  // by target
  std::map<std::string, LocalConnector*> routes_;  // by target: made by another connector
};

// The visitor's end of a stream with an HttpAuthGate in front of `inner` (the target's
// connection): what the gate forwards goes to `inner`, its answers to the visitor.
std::unique_ptr<LocalEndpoint> make_auth_endpoint(std::unique_ptr<LocalEndpoint> inner,
                                                  std::shared_ptr<Htpasswd> users,
                                                  std::string realm);

}  // namespace natfwd

// The serving side's connector for the streams of a relay's front door: connects the
// --publish target as TcpConnector does (an `https:` publish's through its TLS end),
// and for an `http:` publish with `auth=FILE`
// puts an HttpAuthGate (http_auth_gate.h) between the visitor's stream and the target,
// so that only requests with a user and password of the file reach the web server.
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
  // Whether `target` is behind basic auth.
  bool has_auth(const HostPort& target) const { return auth_.count(target.to_string()) != 0; }
  // Visitor connections made to `target` so far.
  uint64_t visitors(const HostPort& target) const;

 private:
  TcpConnector tcp_;
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

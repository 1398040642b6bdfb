#include "serving/publish_connector.h"

#include <chrono>

#include "log.h"
#include "serving/http_auth_gate.h"

namespace natfwd {
namespace {

// LocalEndpoint toward the tunnel stream (the visitor), LocalEndpoint::Stream toward
// the target's endpoint. Bytes the gate forwards unchanged are reported delivered by
// the target's endpoint as they are written; bytes it drops or answers are reported
// delivered here at once, so the stream's flow control stays whole.
class AuthEndpoint final : public LocalEndpoint, private LocalEndpoint::Stream {
 public:
  AuthEndpoint(std::unique_ptr<LocalEndpoint> inner, std::shared_ptr<Htpasswd> users,
               std::string realm)
      : inner_(std::move(inner)),
        users_(std::move(users)),
        gate_([users = users_](const auto& credentials) {
                if (!credentials) return HttpAuthGate::Check::kRejected;
                switch (users->verify(credentials->first, credentials->second,
                                      std::chrono::steady_clock::now())) {
                  case Htpasswd::Verdict::kAccepted: return HttpAuthGate::Check::kAccepted;
                  case Htpasswd::Verdict::kBusy: return HttpAuthGate::Check::kBusy;
                  case Htpasswd::Verdict::kRejected: break;
                }
                return HttpAuthGate::Check::kRejected;
              },
              std::move(realm)) {}

  // LocalEndpoint (the visitor's side)
  void start(LocalEndpoint::Stream& stream) override {
    outer_ = &stream;
    inner_->start(*this);
  }
  void receive(std::span<const std::byte> data) override {
    if (closed_) return;
    const size_t before = gate_.held();
    const std::vector<HttpAuthGate::Action> actions = gate_.receive(data);
    size_t forwarded = 0;
    for (const HttpAuthGate::Action& action : actions) {
      if (action.kind == HttpAuthGate::Action::Kind::kForward) {
        forwarded += action.bytes.size();
        inner_->receive(std::as_bytes(std::span(action.bytes)));
      } else if (action.kind == HttpAuthGate::Action::Kind::kAnswer) {
        answer(action.bytes);
      } else {
        stop();
      }
      if (closed_) return;
    }
    // What came in and is neither forwarded nor held any more was dropped.
    const size_t dropped = before + data.size() - gate_.held() - forwarded;
    if (dropped > 0 && outer_) outer_->delivered(dropped);
  }
  void receive_end() override {
    if (closed_) return;
    visitor_ended_ = true;
    if (answered_ || stopped_) {
      if (inner_shut_ || answered_) outer_->write_shut();
      return;
    }
    inner_->receive_end();
  }
  void on_send_space() override {
    if (!answered_ && !closed_) inner_->on_send_space();
  }
  void close(bool reset) override {
    if (closed_) return;
    closed_ = true;
    outer_ = nullptr;
    if (!inner_closed_) inner_->close(reset);
    inner_closed_ = true;
  }

 private:
  // LocalEndpoint::Stream (the target's side)
  bool send(std::span<const std::byte> data) override {
    return answered_ || closed_ ? true : outer_->send(data);
  }
  void send_end() override {
    if (!answered_ && !closed_) outer_->send_end();
  }
  void delivered(size_t bytes) override {
    if (!closed_ && outer_) outer_->delivered(bytes);
  }
  void write_shut() override {
    if (closed_ || answered_) return;
    // After a stop the visitor's end may not have come yet: the stream is told once
    // both happened.
    if (stopped_ && !visitor_ended_) {
      inner_shut_ = true;
      return;
    }
    outer_->write_shut();
  }
  void failed(const std::string& why) override {
    if (!closed_ && !answered_) outer_->failed(why);
  }

  // Our own page to the visitor instead of the target's; the target connection goes.
  void answer(const std::string& page) {
    answered_ = true;
    inner_closed_ = true;
    inner_->close(false);
    outer_->send(std::as_bytes(std::span(page)));
    if (closed_) return;
    outer_->send_end();
    if (closed_) return;
    // The visitor's bytes are not read any more: nothing more to deliver.
    outer_->write_shut();
  }
  void stop() {
    stopped_ = true;
    inner_->receive_end();
  }

  std::unique_ptr<LocalEndpoint> inner_;
  std::shared_ptr<Htpasswd> users_;
  HttpAuthGate gate_;
  LocalEndpoint::Stream* outer_ = nullptr;
  bool closed_ = false;
  bool inner_closed_ = false;
  bool answered_ = false;
  bool stopped_ = false;
  bool visitor_ended_ = false;
  bool inner_shut_ = false;
};

}  // namespace

std::unique_ptr<LocalEndpoint> make_auth_endpoint(std::unique_ptr<LocalEndpoint> inner,
                                                  std::shared_ptr<Htpasswd> users,
                                                  std::string realm) {
  return std::make_unique<AuthEndpoint>(std::move(inner), std::move(users), std::move(realm));
}

PublishConnector::PublishConnector(const std::vector<PublishSpec>& publishes, std::string realm)
    : realm_(std::move(realm)) {
  for (const PublishSpec& publish : publishes) {
    if (publish.auth_file.empty()) continue;
    auto users = std::make_shared<Htpasswd>(Htpasswd::load(publish.auth_file));
    log::info("publish %s %s: basic auth for %zu user%s of %s", publish_kind_name(publish.kind),
              publish.target.to_string().c_str(), users->users(), users->users() == 1 ? "" : "s",
              publish.auth_file.c_str());
    auth_[publish.target.to_string()] = std::move(users);
  }
}

std::unique_ptr<LocalConnector::Attempt> PublishConnector::connect(const HostPort& target,
                                                                   Done done) {
  ++visitors_[target.to_string()];
  if (auto route = routes_.find(target.to_string()); route != routes_.end())
    return route->second->connect(target, std::move(done));
  return connect_target(target, std::move(done));
}

std::unique_ptr<LocalConnector::Attempt> PublishConnector::connect_target(const HostPort& target,
                                                                          Done done) {
  auto it = auth_.find(target.to_string());
  if (it == auth_.end()) return tcp_.connect(target, std::move(done));
  return tcp_.connect(target, [done = std::move(done), users = it->second,
                               realm = realm_](Result result) mutable {
    if (result.endpoint)
      result.endpoint = make_auth_endpoint(std::move(result.endpoint), users, realm);
    done(std::move(result));
  });
}

uint64_t PublishConnector::visitors(const HostPort& target) const {
  auto it = visitors_.find(target.to_string());
  return it == visitors_.end() ? 0 : it->second;
}

}  // namespace natfwd

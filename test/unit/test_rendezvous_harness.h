// Test harness for RendezvousCore: in-memory inboxes, a fake clock and real key
// pairs that sign registrations. Shared by test_rendezvous*.cpp.
#pragma once

#include <catch2/catch.hpp>

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "frame.h"
#include "identity.h"
#include "log.h"
#include "rendezvous/rendezvous_core.h"

namespace natfwd::relay::testing {
// Quiet: the core logs registrations and sessions at info. log::init() may run only
// once per process, whichever test file comes first (inline: one static for all).
inline void init_quiet_log() {
  static const bool log_ready = (log::init("test_rendezvous", log::Level::kError), true);
  (void)log_ready;
}

// Internal linkage: each test file gets its own copy.
namespace {

using namespace natfwd;
using std::chrono::seconds;

// A real key pair per letter, so that registrations can be signed.
const Identity& identity_of(char letter) {
  static std::map<char, Identity> identities;
  auto it = identities.find(letter);
  if (it == identities.end()) it = identities.emplace(letter, Identity::generate()).first;
  return it->second;
}

std::string key_of(char letter) {
  const auto& key = identity_of(letter).public_key();
  return std::string(key.begin(), key.end());
}

// The Identity whose public key is `raw`, if it is one of identity_of()'s.
const Identity* identity_with_key(const std::string& raw) {
  for (char letter = 'a'; letter <= 'z'; ++letter)
    if (key_of(letter) == raw) return &identity_of(letter);
  return nullptr;
}

// Wires the core to in-memory inboxes, one per connection.
class Harness {
 public:
  explicit Harness(RendezvousConfig config = {},
                   std::unique_ptr<NameBindingPolicy> names = std::make_unique<MemoryNameBinding>())
      : core_(config, std::move(names)) {
    init_quiet_log();
  }

  RendezvousCore& core() { return core_; }
  TimePoint now() const { return now_; }

  ConnectionId connect(const std::string& ip = "192.0.2.1") {
    const ConnectionId id = next_id_++;
    REQUIRE(core_.on_connection_opened(id, HostPort{ip, next_port_++}, now_) ==
            Admission::kAccepted);
    return id;
  }

  // Connects and says Hello with `key`; returns the Challenge's bytes.
  std::string hello_only(ConnectionId id, const std::string& key) {
    wire::Envelope envelope;
    envelope.mutable_hello()->set_protocol_version(wire::kProtocolVersion);
    envelope.mutable_hello()->set_public_key(key);
    deliver(id, envelope);
    const auto challenge = pop(id);
    REQUIRE(challenge.has_challenge());
    REQUIRE(challenge.challenge().challenge().size() == 32);
    return challenge.challenge().challenge();
  }

  // Prove as the peer does: the Hello key's signature over the connection's challenge.
  static wire::Envelope make_prove(const std::string& key, const std::string& challenge) {
    const Identity* identity = identity_with_key(key);
    REQUIRE(identity);
    wire::Envelope envelope;
    envelope.mutable_prove()->set_signature(identity->sign(connection_proof_message(challenge)));
    return envelope;
  }

  // Connects, says Hello with `key` and proves it; checks and discards the Welcome.
  ConnectionId hello(const std::string& key, const std::string& ip = "192.0.2.1") {
    const ConnectionId id = connect(ip);
    const std::string challenge = hello_only(id, key);
    deliver(id, make_prove(key, challenge));
    const auto welcome = pop(id);
    REQUIRE(welcome.has_welcome());
    REQUIRE(welcome.welcome().challenge() == challenge);
    challenges_[id] = challenge;
    keys_[id] = key;
    return id;
  }

  ConnectionId registered(const std::string& name, const std::string& key,
                          const std::string& ip = "192.0.2.1") {
    const ConnectionId id = hello(key, ip);
    deliver(id, make_register(id, name));
    auto reply = pop(id);
    REQUIRE(reply.has_registered());
    REQUIRE(reply.registered().name() == name);
    return id;
  }

  void deliver(ConnectionId id, const wire::Envelope& envelope) {
    core_.on_envelope(id, envelope, now_);
    pump();
  }

  void transport_closed(ConnectionId id) {
    core_.on_connection_closed(id, "test", now_);
    pump();
  }

  void advance(seconds by) {
    now_ += by;
    core_.on_tick(now_);
    pump();
  }

  bool has_message(ConnectionId id) const {
    auto it = inbox_.find(id);
    return it != inbox_.end() && !it->second.empty();
  }

  wire::Envelope pop(ConnectionId id) {
    REQUIRE(has_message(id));
    wire::Envelope envelope = inbox_[id].front();
    inbox_[id].pop_front();
    return envelope;
  }

  bool closed(ConnectionId id) const { return closed_.contains(id); }

  // Custom domain look-ups the core asked for since the last call.
  std::vector<CheckDomainsAction> take_checks() { return std::exchange(checks_, {}); }
  // Answers a look-up as the resolver glue does.
  void answer(const CheckDomainsAction& check, const std::vector<DomainVerdict>& verdicts) {
    core_.on_domains_checked(check.connection, check.check, verdicts, now_);
    pump();
  }

  // Register signed as the peer does: with the Hello key, over this connection's
  // challenge and the name (unsigned when the connection said no Hello here).
  wire::Envelope make_register(ConnectionId id, const std::string& name) const {
    wire::Envelope envelope;
    envelope.mutable_register_()->set_name(name);
    auto key = keys_.find(id);
    if (key == keys_.end()) return envelope;
    const Identity* identity = identity_with_key(key->second);
    REQUIRE(identity);
    envelope.mutable_register_()->set_signature(
        identity->sign(registration_message(challenges_.at(id), name)));
    return envelope;
  }

  const std::string& challenge(ConnectionId id) const { return challenges_.at(id); }

  static wire::Envelope make_open(SessionId id, const std::string& target) {
    wire::Envelope envelope;
    auto* open = envelope.mutable_open_session();
    open->set_session_id(id);
    open->set_target(target);
    open->mutable_ice()->set_ufrag("cufr");
    open->mutable_ice()->set_pwd("caller-password-0123456789");
    return envelope;
  }

  static wire::Envelope make_candidate(SessionId id, const std::string& sdp) {
    wire::Envelope envelope;
    envelope.mutable_candidate()->set_session_id(id);
    envelope.mutable_candidate()->set_sdp(sdp);
    return envelope;
  }

 private:
  void pump() {
    for (auto& action : core_.take_actions()) {
      if (auto* send = std::get_if<SendAction>(&action)) {
        // The I/O side must never be asked to write to a connection it closed.
        REQUIRE_FALSE(closed_.contains(send->connection));
        inbox_[send->connection].push_back(send->envelope);
      } else if (auto* check = std::get_if<CheckDomainsAction>(&action)) {
        checks_.push_back(*check);
      } else {
        auto& close = std::get<CloseAction>(action);
        REQUIRE_FALSE(closed_.contains(close.connection));
        closed_[close.connection] = close.reason;
      }
    }
  }

  RendezvousCore core_;
  TimePoint now_{};  // the fake clock
  ConnectionId next_id_ = 1;
  uint16_t next_port_ = 40000;
  std::map<ConnectionId, std::deque<wire::Envelope>> inbox_;
  std::map<ConnectionId, std::string> closed_;
  std::vector<CheckDomainsAction> checks_;
  std::map<ConnectionId, std::string> challenges_;  // from each Welcome
  std::map<ConnectionId, std::string> keys_;        // from each Hello
};

wire::Error::Code error_code(const wire::Envelope& envelope) {
  REQUIRE(envelope.has_error());
  return envelope.error().code();
}

}  // namespace
}  // namespace natfwd::relay::testing

// TunnelCore end to end without sockets: a connecting and a serving core joined by
// in-memory datagram links (delay, bottleneck rate, every-Nth loss, cut) on a fake clock
// that jumps to the next event; each stream's local end is a MemoryEndpoint whose bytes
// the test writes and reads.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "tunnel/tunnel_core.h"
#include "random_bytes.h"

using namespace natfwd;
using quic::Timestamp;

namespace {

using natfwd::test::make_data;

constexpr Timestamp kMs = 1'000'000;
constexpr Timestamp kSecond = 1000 * kMs;
constexpr int kOk = static_cast<int>(wire::StreamStatus::kOk);

std::vector<std::byte> text(const std::string& s) {
  std::vector<std::byte> out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

// One direction of an in-memory path.
struct Link {
  Timestamp delay = 5 * kMs;
  double bytes_per_ns = 0.1;  // 100 MB/s
  int drop_every = 0;         // drop every Nth datagram (0: none)
  bool cut = false;           // drop everything
  uint64_t sent = 0, dropped = 0;
  Timestamp busy_until = 0;
  std::deque<std::pair<Timestamp, std::vector<std::byte>>> in_flight;

  void send(Timestamp now, std::span<const std::byte> datagram) {
    ++sent;
    if (cut || (drop_every > 0 && sent % static_cast<uint64_t>(drop_every) == 0)) {
      ++dropped;
      return;
    }
    busy_until = std::max(now, busy_until) + static_cast<Timestamp>(datagram.size() / bytes_per_ns);
    in_flight.emplace_back(busy_until + delay,
                           std::vector<std::byte>(datagram.begin(), datagram.end()));
  }
  Timestamp next() const { return in_flight.empty() ? quic::kNever : in_flight.front().first; }
};

// What the test sees of one local end; outlives the endpoint.
struct EndpointState {
  LocalEndpoint::Stream* stream = nullptr;
  bool started = false;
  bool closed = false;
  bool reset = false;  // closed with reset
  std::vector<std::byte> received;
  bool end_received = false;  // the other side's FIN arrived
  // What the local side sends: `outgoing`, then EOF if `end_after`.
  std::vector<std::byte> outgoing;
  size_t outgoing_sent = 0;
  bool end_after = false;
  bool end_sent = false;
  bool accepts = true;

  bool ready() const {
    return stream && accepts &&
           (outgoing_sent < outgoing.size() || (end_after && !end_sent));
  }
  void pump() {
    constexpr size_t kChunk = 32 * 1024;
    while (stream && accepts && outgoing_sent < outgoing.size()) {
      const size_t n = std::min(kChunk, outgoing.size() - outgoing_sent);
      std::span<const std::byte> chunk(outgoing.data() + outgoing_sent, n);
      outgoing_sent += n;
      accepts = stream->send(chunk);
    }
    if (stream && end_after && !end_sent && outgoing_sent == outgoing.size()) {
      end_sent = true;
      stream->send_end();
    }
  }
  void write(const std::vector<std::byte>& data, bool then_end) {
    outgoing.insert(outgoing.end(), data.begin(), data.end());
    end_after = then_end;
  }
};

class MemoryEndpoint final : public LocalEndpoint {
 public:
  explicit MemoryEndpoint(std::shared_ptr<EndpointState> state) : state_(std::move(state)) {}
  ~MemoryEndpoint() override { state_->stream = nullptr; }
  void start(Stream& stream) override {
    state_->stream = &stream;
    state_->started = true;
  }
  void receive(std::span<const std::byte> data) override {
    state_->received.insert(state_->received.end(), data.begin(), data.end());
    state_->stream->delivered(data.size());
  }
  void receive_end() override {
    state_->end_received = true;
    state_->stream->write_shut();  // may close us
  }
  void on_send_space() override { state_->accepts = true; }
  void close(bool reset) override {
    state_->closed = true;
    state_->reset = reset;
    state_->stream = nullptr;
  }

 private:
  std::shared_ptr<EndpointState> state_;
};

// Serving side: the targets in `served` connect (to a new MemoryEndpoint, later, as a
// real connect would); others fail with "connection refused".
class MemoryConnector final : public LocalConnector {
 public:
  struct Connected {
    HostPort target;
    std::shared_ptr<EndpointState> state;
  };
  std::vector<Connected> connected;
  std::set<uint16_t> unreachable_ports;

  std::unique_ptr<Attempt> connect(const HostPort& target, Done done) override {
    auto attempt = std::make_unique<MemoryAttempt>();
    std::weak_ptr<bool> wanted = attempt->wanted;
    queued_.push_back([this, target, wanted, done = std::move(done)] {
      auto still = wanted.lock();
      if (!still || !*still) return;
      Result result;
      if (unreachable_ports.count(target.port)) {
        result.error = "Connection refused";
      } else {
        auto state = std::make_shared<EndpointState>();
        connected.push_back({target, state});
        result.endpoint = std::make_unique<MemoryEndpoint>(state);
      }
      done(std::move(result));
    });
    return attempt;
  }
  // Runs the connects started so far; true if there were any.
  bool run() {
    if (queued_.empty()) return false;
    auto queued = std::move(queued_);
    queued_.clear();
    for (auto& f : queued) f();
    return true;
  }

 private:
  struct MemoryAttempt final : Attempt {
    std::shared_ptr<bool> wanted = std::make_shared<bool>(true);
    ~MemoryAttempt() override { *wanted = false; }
  };
  std::vector<std::function<void()>> queued_;
};

struct Identities {
  Identity connecting = Identity::generate();
  Identity serving = Identity::generate();
};
Identities& identities() {
  static Identities ids;
  return ids;
}

// One side: a core plus what it told its owner.
struct Side final : TunnelCore::Io {
  Link* out = nullptr;
  Timestamp* now = nullptr;
  bool established = false;
  std::optional<std::string> closed;
  MemoryConnector connector;
  std::unique_ptr<TunnelCore> core;

  bool send_datagram(std::span<const std::byte> datagram) override {
    out->send(*now, datagram);
    return true;
  }
  void wake() override {}  // the simulation writes every round
  // As Tunnel does: a pass at once. Records how many datagrams came since the last one.
  void write_due() override {
    due_after.push_back(received_since_write);
    received_since_write = 0;
    core->write(*now);
  }
  size_t received_since_write = 0;
  std::vector<size_t> due_after;
  void on_established() override { established = true; }
  void on_closed(const std::string& reason) override { closed = reason; }
};


class Sim {
 public:
  static constexpr uint16_t kServedPort = 22;
  static constexpr uint16_t kUnreachablePort = 23;  // served, but nothing listens
  // Far above what any test here needs (4 MB each way across a path restart: ~6000).
  static constexpr size_t kMaxRounds = 100'000;

  Sim() {
    connecting.out = &path_a.forward;
    serving.out = &path_a.back;
    connecting.now = serving.now = &now;
    serving.connector.unreachable_ports.insert(kUnreachablePort);
    connecting.core = std::make_unique<TunnelCore>(options(TunnelCore::Role::kConnecting), connecting);
    serving.core = std::make_unique<TunnelCore>(options(TunnelCore::Role::kServing), serving);
    connecting.core->start(now);
    serving.core->start(now);
  }

  struct Path {
    Link forward;  // connecting -> serving
    Link back;     // serving -> connecting
  };

  // Advances the fake clock event by event until `done` or `limit` of simulated time.
  bool run_until(const std::function<bool()>& done, Timestamp limit = 60 * kSecond) {
    const Timestamp end = now + limit;
    size_t stuck = 0;
    size_t rounds = 0;
    while (!done()) {
      // A core that asks to run again in ever tinier steps would never reach `end`.
      REQUIRE(++rounds < kMaxRounds);
      bool busy = serving.connector.run();
      collect_served();
      for (auto* list : {&local, &remote_states}) {
        for (auto& state : *list) state->pump();
      }
      for (Side* side : {&connecting, &serving}) {
        side->received_since_write = 0;
        side->core->write(now);
      }
      if (done()) break;
      for (auto* list : {&local, &remote_states}) {
        for (auto& state : *list) busy = busy || state->ready();
      }
      Timestamp next = std::min({connecting.core->next_deadline(), serving.core->next_deadline()});
      for (Path* path : {&path_a, &path_b}) next = std::min({next, path->forward.next(), path->back.next()});
      if (busy) next = now;
      if (next == quic::kNever || next > end) return false;
      stuck = next <= now ? stuck + 1 : 0;
      REQUIRE(stuck < 10000);
      now = std::max(now, next);
      // As CoreLoop: a deadline that stays in the past without progress waits a little.
      if (stuck > 100) now += quic::kStaleTimerWaitNs;
      for (Path* path : {&path_a, &path_b}) {
        deliver(path->forward, serving);
        deliver(path->back, connecting);
      }
      for (Side* side : {&connecting, &serving})
        if (side->core->next_deadline() <= now) side->core->handle_expiry(now);
    }
    return true;
  }

  bool handshake() {
    return run_until([&] { return connecting.established && serving.established; }, 5 * kSecond);
  }

  // Connecting side: a new local connection to `target`; its state, and the answer
  // the handler got (if `with_handler`).
  struct Forward {
    std::shared_ptr<EndpointState> state = std::make_shared<EndpointState>();
    std::vector<std::pair<int, std::string>> results;
  };
  std::shared_ptr<Forward> forward(uint16_t port, bool with_handler = true) {
    auto f = std::make_shared<Forward>();
    local.push_back(f->state);
    OpenResultHandler handler;
    if (with_handler) {
      handler = [f](int status, const std::string& detail) { f->results.emplace_back(status, detail); };
    }
    REQUIRE(connecting.core->forward(std::make_unique<MemoryEndpoint>(f->state),
                                     HostPort{"127.0.0.1", port}, handler));
    return f;
  }

  // Switches both sides to path B, as an ICE restart that found a new pair does.
  void move_to_path_b() {
    connecting.out = &path_b.forward;
    serving.out = &path_b.back;
    connecting.core->move_to_new_path(now);
    serving.core->move_to_new_path(now);
  }

  // The serving side's local ends, as they connect.
  EndpointState& served(size_t i) { return *serving.connector.connected.at(i).state; }

  Timestamp now = 1000 * kSecond;
  Path path_a, path_b;
  Side connecting, serving;
  std::vector<std::shared_ptr<EndpointState>> local;

 private:
  TunnelCore::Options options(TunnelCore::Role role) {
    TunnelCore::Options o;
    o.role = role;
    const bool is_serving = role == TunnelCore::Role::kServing;
    o.quic.identity = is_serving ? &identities().serving : &identities().connecting;
    const PublicKey expected =
        is_serving ? identities().connecting.public_key() : identities().serving.public_key();
    o.quic.verify_remote_key = [expected](const PublicKey& key) { return key == expected; };
    o.log_label = is_serving ? "serving" : "connecting";
    if (is_serving) {
      o.target_policy = [](const HostPort& target) {
        if (target.port == kServedPort || target.port == kUnreachablePort) return StreamDecision{};
        return StreamDecision{static_cast<int>(wire::StreamStatus::kNotServed),
                              target.to_string() + " is not in --serve"};
      };
      o.pair = [](const std::string& secret) {
        if (secret == "good-secret") return StreamDecision{kOk, "paired"};
        return StreamDecision{static_cast<int>(wire::StreamStatus::kNotAuthorized),
                              "unknown invite"};
      };
      o.punch = [](const wire::PunchOffer& offer) {
        StreamDecision answer;
        answer.punch.emplace();
        answer.punch->set_session_id(offer.session_id());
        answer.punch->set_address("198.51.100.7:50123");
        answer.punch->set_endpoint_dependent(!offer.endpoint_dependent());
        return answer;
      };
      o.connector = &serving.connector;
    }
    return o;
  }
  void deliver(Link& link, Side& to) {
    while (!link.in_flight.empty() && link.in_flight.front().first <= now) {
      auto datagram = std::move(link.in_flight.front().second);
      link.in_flight.pop_front();
      ++to.received_since_write;
      to.core->receive(datagram, now);
    }
  }
  // New serving-side endpoints join the pumped set.
  void collect_served() {
    auto& connected = serving.connector.connected;
    for (size_t i = remote_states.size(); i < connected.size(); ++i)
      remote_states.push_back(connected[i].state);
  }
  std::vector<std::shared_ptr<EndpointState>> remote_states;
};

}  // namespace

TEST_CASE("tunnel core: a stream opens and the serving side answers OK") {
  Sim sim;
  REQUIRE(sim.handshake());
  auto f = sim.forward(Sim::kServedPort);
  REQUIRE(sim.run_until([&] { return !f->results.empty(); }, 2 * kSecond));
  CHECK(f->results.front().first == kOk);
  REQUIRE(sim.serving.connector.connected.size() == 1);
  CHECK(sim.serving.connector.connected[0].target == HostPort{"127.0.0.1", Sim::kServedPort});
  CHECK(sim.served(0).started);
  CHECK(sim.connecting.core->open_streams() == 1);
  CHECK(sim.serving.core->open_streams() == 1);
}

TEST_CASE("tunnel core: a connection before the handshake waits, then opens") {
  Sim sim;
  auto f = sim.forward(Sim::kServedPort);
  CHECK(sim.connecting.core->waiting() == 1);
  REQUIRE(sim.run_until([&] { return !f->results.empty(); }, 2 * kSecond));
  CHECK(f->results.front().first == kOk);
  CHECK(sim.connecting.core->waiting() == 0);
}

TEST_CASE("tunnel core: megabytes both ways arrive byte-exact, then both ends close cleanly") {
  Sim sim;
  REQUIRE(sim.handshake());
  const auto up = make_data(3 << 20, 1);
  const auto down = make_data(2 << 20, 2);
  auto f = sim.forward(Sim::kServedPort);
  f->state->write(up, true);
  REQUIRE(sim.run_until([&] { return sim.serving.connector.connected.size() == 1; }, kSecond));
  sim.served(0).write(down, true);
  REQUIRE(sim.run_until([&] { return f->state->closed && sim.served(0).closed; }, 20 * kSecond));
  CHECK(sim.served(0).received == up);
  CHECK(f->state->received == down);
  CHECK_FALSE(f->state->reset);
  CHECK_FALSE(sim.served(0).reset);
  CHECK(f->results.size() == 1);  // OK only: no kStreamBroken after a clean close
  REQUIRE(sim.run_until([&] {
    return sim.connecting.core->open_streams() == 0 && sim.serving.core->open_streams() == 0;
  }, kSecond));
}

TEST_CASE("tunnel core: a receiver handed a long burst writes (ACKs) every 16 datagrams") {
  Sim sim;
  // Every datagram of a pass arrives at once, as a socket drained in one go delivers
  // them: without a pass in between, the sender would hear nothing until the end.
  sim.path_a.forward.bytes_per_ns = 1e6;
  REQUIRE(sim.handshake());
  const auto up = make_data(2 << 20, 3);
  auto f = sim.forward(Sim::kServedPort);
  f->state->write(up, true);
  REQUIRE(sim.run_until([&] { return sim.serving.connector.connected.size() == 1; }, kSecond));
  REQUIRE(sim.run_until([&] { return sim.served(0).end_received; }, 20 * kSecond));
  CHECK(sim.served(0).received == up);
  REQUIRE(!sim.serving.due_after.empty());
  for (size_t n : sim.serving.due_after) CHECK(n == TunnelCore::kWriteEveryDatagrams);
}

TEST_CASE("tunnel core: half close, the connecting side's direction first") {
  Sim sim;
  REQUIRE(sim.handshake());
  auto f = sim.forward(Sim::kServedPort);
  f->state->write(text("request"), true);
  REQUIRE(sim.run_until([&] {
    return sim.serving.connector.connected.size() == 1 && sim.served(0).end_received;
  }, kSecond));
  CHECK(sim.served(0).received == text("request"));
  CHECK_FALSE(sim.served(0).closed);  // its own direction is still open
  CHECK_FALSE(f->state->closed);
  sim.served(0).write(text("reply after the request's end"), true);
  REQUIRE(sim.run_until([&] { return f->state->closed && sim.served(0).closed; }, kSecond));
  CHECK(f->state->end_received);
  CHECK(f->state->received == text("reply after the request's end"));
  CHECK_FALSE(f->state->reset);
  CHECK_FALSE(sim.served(0).reset);
}

TEST_CASE("tunnel core: half close, the serving side's direction first") {
  Sim sim;
  REQUIRE(sim.handshake());
  auto f = sim.forward(Sim::kServedPort);
  REQUIRE(sim.run_until([&] { return sim.serving.connector.connected.size() == 1; }, kSecond));
  sim.served(0).write(text("banner"), true);
  REQUIRE(sim.run_until([&] { return f->state->end_received; }, kSecond));
  CHECK(f->state->received == text("banner"));
  CHECK_FALSE(f->state->closed);
  f->state->write(text("still talking"), true);
  REQUIRE(sim.run_until([&] { return f->state->closed && sim.served(0).closed; }, kSecond));
  CHECK(sim.served(0).received == text("still talking"));
  CHECK(sim.served(0).end_received);
  CHECK_FALSE(f->state->reset);
}

TEST_CASE("tunnel core: a local failure on the connecting side resets the serving side") {
  Sim sim;
  REQUIRE(sim.handshake());
  auto f = sim.forward(Sim::kServedPort);
  f->state->write(make_data(100000, 3), false);
  REQUIRE(sim.run_until([&] {
    return sim.serving.connector.connected.size() == 1 && sim.served(0).received.size() == 100000;
  }, kSecond));
  f->state->stream->failed("read: Connection reset by peer");
  CHECK(f->state->closed);
  REQUIRE(sim.run_until([&] { return sim.served(0).closed; }, kSecond));
  CHECK(sim.served(0).reset);
  CHECK_FALSE(sim.served(0).end_received);
}

TEST_CASE("tunnel core: a local failure on the serving side resets the connecting side") {
  Sim sim;
  REQUIRE(sim.handshake());
  auto f = sim.forward(Sim::kServedPort);
  REQUIRE(sim.run_until([&] { return sim.serving.connector.connected.size() == 1; }, kSecond));
  sim.served(0).write(text("partial"), false);
  REQUIRE(sim.run_until([&] { return f->state->received.size() == 7; }, kSecond));
  sim.served(0).stream->failed("write: Broken pipe");
  REQUIRE(sim.run_until([&] { return f->state->closed; }, kSecond));
  CHECK(f->state->reset);
  REQUIRE(f->results.size() == 2);
  CHECK(f->results[0].first == kOk);
  CHECK(f->results[1].first == kStreamBroken);
}

TEST_CASE("tunnel core: an unserved target is refused with the serving side's status") {
  Sim sim;
  REQUIRE(sim.handshake());
  auto f = sim.forward(8080);
  f->state->write(text("GET / HTTP/1.0\r\n\r\n"), false);
  REQUIRE(sim.run_until([&] { return f->state->closed; }, kSecond));
  REQUIRE(f->results.size() == 1);
  CHECK(f->results[0].first == static_cast<int>(wire::StreamStatus::kNotServed));
  CHECK(f->results[0].second == "127.0.0.1:8080 is not in --serve");
  // The handler told its client why: a close, not a reset that could destroy the answer.
  CHECK_FALSE(f->state->reset);
  CHECK(f->state->received.empty());
  CHECK(sim.serving.connector.connected.empty());

  auto plain = sim.forward(8080, /*with_handler=*/false);
  REQUIRE(sim.run_until([&] { return plain->state->closed; }, kSecond));
  CHECK(plain->state->reset);
}

TEST_CASE("tunnel core: a served target that cannot be reached is reported as such") {
  Sim sim;
  REQUIRE(sim.handshake());
  auto f = sim.forward(Sim::kUnreachablePort);
  REQUIRE(sim.run_until([&] { return f->state->closed; }, kSecond));
  REQUIRE(f->results.size() == 1);
  CHECK(f->results[0].first == static_cast<int>(wire::StreamStatus::kConnectFailed));
  CHECK(f->results[0].second == "Connection refused");
}

TEST_CASE("tunnel core: every 20th datagram lost, the transfer still completes byte-exact") {
  Sim sim;
  sim.path_a.forward.drop_every = 20;
  sim.path_a.back.drop_every = 20;
  REQUIRE(sim.handshake());
  const auto up = make_data(2 << 20, 4);
  const auto down = make_data(2 << 20, 5);
  auto f = sim.forward(Sim::kServedPort);
  f->state->write(up, true);
  REQUIRE(sim.run_until([&] { return sim.serving.connector.connected.size() == 1; }, kSecond));
  sim.served(0).write(down, true);
  REQUIRE(sim.run_until([&] { return f->state->closed && sim.served(0).closed; }, 30 * kSecond));
  CHECK(sim.path_a.forward.dropped > 0);
  CHECK(sim.path_a.back.dropped > 0);
  CHECK(sim.served(0).received == up);
  CHECK(f->state->received == down);
  CHECK_FALSE(f->state->reset);
}

TEST_CASE("tunnel core: a path restart mid-transfer keeps the open streams") {
  Sim sim;
  REQUIRE(sim.handshake());
  const auto up = make_data(4 << 20, 6);
  const auto down = make_data(4 << 20, 7);
  auto f = sim.forward(Sim::kServedPort);
  f->state->write(up, true);
  REQUIRE(sim.run_until([&] { return sim.serving.connector.connected.size() == 1; }, kSecond));
  sim.served(0).write(down, true);
  REQUIRE(sim.run_until([&] {
    return sim.served(0).received.size() > (1 << 20) && f->state->received.size() > (1 << 20);
  }, 10 * kSecond));
  // The old path dies (a network change); a while later ICE has found a new one.
  sim.path_a.forward.cut = true;
  sim.path_a.back.cut = true;
  const size_t up_before = sim.served(0).received.size();
  sim.run_until([] { return false; }, 2 * kSecond);
  CHECK(sim.served(0).received.size() < up.size());
  CHECK_FALSE(f->state->closed);
  sim.move_to_path_b();
  const Timestamp moved_at = sim.now;
  REQUIRE(sim.run_until([&] { return f->state->closed && sim.served(0).closed; }, 10 * kSecond));
  // QUIC starts afresh on the new path (no probe timer left backed off by the outage):
  // the ~6 MB left take some tens of ms at 100 MB/s, not seconds.
  const Timestamp finish_ms = (sim.now - moved_at) / kMs;
  INFO("finished " << finish_ms << " ms after the move");
  CHECK(finish_ms < 500);
  CHECK(sim.served(0).received.size() > up_before);
  CHECK(sim.served(0).received == up);
  CHECK(f->state->received == down);
  CHECK_FALSE(f->state->reset);
  CHECK(sim.path_b.forward.sent > 0);
  CHECK_FALSE(sim.connecting.closed);
  CHECK_FALSE(sim.serving.closed);
  CHECK(sim.serving.connector.connected.size() == 1);  // the same stream, not a new one
}

TEST_CASE("tunnel core: a pairing request gets the serving side's answer") {
  Sim sim;
  std::vector<std::pair<bool, std::string>> answers;
  // Asked before the handshake: sent once the tunnel is up.
  sim.connecting.core->request_pairing("good-secret", [&](bool ok, const std::string& detail) {
    answers.emplace_back(ok, detail);
  });
  REQUIRE(sim.run_until([&] { return answers.size() == 1; }, 5 * kSecond));
  CHECK(answers[0] == std::make_pair(true, std::string("paired")));
  sim.connecting.core->request_pairing("wrong-secret", [&](bool ok, const std::string& detail) {
    answers.emplace_back(ok, detail);
  });
  REQUIRE(sim.run_until([&] { return answers.size() == 2; }, kSecond));
  CHECK(answers[1] == std::make_pair(false, std::string("unknown invite")));
  CHECK(sim.serving.connector.connected.empty());
}

TEST_CASE("tunnel core: a punch offer gets the serving side's own offer back") {
  Sim sim;
  REQUIRE(sim.handshake());
  wire::PunchOffer offer;
  offer.set_session_id(0x1234567890abcdefULL);
  offer.set_address("203.0.113.5:41234");
  offer.set_endpoint_dependent(true);
  offer.set_key(std::string(32, 'k'));
  std::vector<StreamDecision> answers;
  sim.connecting.core->request_punch(offer, [&](const StreamDecision& answer) {
    answers.push_back(answer);
  });
  REQUIRE(sim.run_until([&] { return answers.size() == 1; }, kSecond));
  CHECK(answers[0].status == kOk);
  REQUIRE(answers[0].punch);
  CHECK(answers[0].punch->session_id() == offer.session_id());
  CHECK(answers[0].punch->address() == "198.51.100.7:50123");
  CHECK_FALSE(answers[0].punch->endpoint_dependent());
  CHECK(sim.serving.connector.connected.empty());
  CHECK(sim.connecting.core->open_streams() == 0);
}

TEST_CASE("tunnel core: abort resets open streams and answers waiting connections") {
  Sim sim;
  REQUIRE(sim.handshake());
  auto f = sim.forward(Sim::kServedPort);
  REQUIRE(sim.run_until([&] { return !f->results.empty(); }, kSecond));
  sim.connecting.core->abort("the relay link is gone");
  CHECK(f->state->closed);
  CHECK(f->state->reset);
  REQUIRE(f->results.size() == 2);
  CHECK(f->results[1] == std::make_pair(kStreamBroken, std::string("the relay link is gone")));
  REQUIRE(sim.run_until([&] { return sim.served(0).closed; }, kSecond));
  CHECK(sim.served(0).reset);
}

TEST_CASE("tunnel core: connections opened during an outage go through after the move") {
  Sim sim;
  REQUIRE(sim.handshake());
  auto before = sim.forward(Sim::kServedPort);
  REQUIRE(sim.run_until([&] { return !before->results.empty(); }, kSecond));
  sim.path_a.forward.cut = true;
  sim.path_a.back.cut = true;
  // One client gives up during the outage (EOF after its first line), one waits.
  auto gave_up = sim.forward(Sim::kServedPort);
  gave_up->state->write(text("hello\r\n"), false);
  sim.run_until([] { return false; }, 2 * kSecond);
  gave_up->state->write({}, true);
  auto waits = sim.forward(Sim::kServedPort);
  waits->state->write(text("hello\r\n"), false);
  sim.run_until([] { return false; }, kSecond);
  CHECK(sim.serving.connector.connected.size() == 1);
  sim.move_to_path_b();
  const Timestamp moved_at = sim.now;
  REQUIRE(sim.run_until([&] { return sim.serving.connector.connected.size() == 3; }, kSecond));
  // The one that gave up: its line and its end reach the target.
  REQUIRE(sim.run_until([&] { return sim.served(1).end_received; }, kSecond));
  CHECK(sim.served(1).received == text("hello\r\n"));
  sim.served(2).write(text("welcome\r\n"), false);
  auto fresh = sim.forward(Sim::kServedPort);
  fresh->state->write(text("fresh\r\n"), false);
  REQUIRE(sim.run_until([&] { return sim.serving.connector.connected.size() == 4; }, kSecond));
  sim.served(3).write(text("fresh reply\r\n"), false);
  REQUIRE(sim.run_until([&] {
    return waits->state->received == text("welcome\r\n") &&
           fresh->state->received == text("fresh reply\r\n") &&
           sim.served(3).received == text("fresh\r\n");
  }, kSecond));
  CHECK(sim.served(2).received == text("hello\r\n"));
  INFO("done " << (sim.now - moved_at) / kMs << " ms after the move");
  CHECK(sim.now - moved_at < 200 * kMs);
}

// quic::Connection end to end without sockets: a client and a server wired through
// in-memory links (one-way delay, bottleneck rate, tail drop, seeded random loss) and a
// fake clock that jumps to the next event. Throughput figures are printed, never asserted.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "quic_connection.h"
#include "random_bytes.h"

using natfwd::Identity;
using natfwd::PublicKey;
using namespace natfwd::quic;

namespace {

using natfwd::test::make_data;

constexpr Timestamp kMs = 1'000'000;
constexpr Timestamp kSecond = 1000 * kMs;

// FNV-1a, 64 bit: enough to tell "intact" from "not".
struct Hash {
  uint64_t value = 1469598103934665603ull;
  void add(std::span<const std::byte> data) {
    for (std::byte b : data) value = (value ^ static_cast<uint8_t>(b)) * 1099511628211ull;
  }
};
uint64_t hash_of(const std::vector<std::byte>& data) {
  Hash h;
  h.add(data);
  return h.value;
}

// One direction of the simulated path.
struct Link {
  Timestamp delay = 10 * kMs;
  double loss = 0;                   // probability a datagram is dropped
  double bytes_per_ns = 0.1;         // bottleneck: 100 MB/s
  Timestamp max_queue = 20 * kMs;    // tail drop beyond this much queued
  bool cut = false;                  // drop everything
  double block = 0;                  // probability that send() says "would block"
  Timestamp jitter = 0;              // each datagram waits up to this much longer, in order
  std::mt19937_64 rng{1};
  Timestamp busy_until = 0;
  std::deque<std::pair<Timestamp, std::vector<std::byte>>> in_flight;  // FIFO: constant delay
  uint64_t sent = 0, dropped = 0, blocked = 0;

  bool send(Timestamp now, std::span<const std::byte> datagram) {
    if (block > 0 && std::uniform_real_distribution<double>(0, 1)(rng) < block) {
      ++blocked;
      return false;
    }
    ++sent;
    if (cut || (loss > 0 && std::uniform_real_distribution<double>(0, 1)(rng) < loss)) {
      ++dropped;
      return true;
    }
    Timestamp start = std::max(now, busy_until);
    if (start - now > max_queue) {
      ++dropped;
      return true;
    }
    busy_until = start + static_cast<Timestamp>(datagram.size() / bytes_per_ns);
    Timestamp arrival = busy_until + delay;
    if (jitter > 0) {
      arrival += std::uniform_int_distribution<Timestamp>(0, jitter)(rng);
      if (!in_flight.empty()) arrival = std::max(arrival, in_flight.back().first);
    }
    in_flight.emplace_back(arrival, std::vector<std::byte>(datagram.begin(), datagram.end()));
    return true;
  }
  Timestamp next() const { return in_flight.empty() ? kNever : in_flight.front().first; }
};

// An application on top of one Connection: records everything it is told.
class Endpoint : public Connection::Observer {
 public:
  struct StreamState {
    Hash hash;
    uint64_t received = 0;
    std::vector<std::byte> bytes;  // only when keep_bytes
    bool fin = false;
    std::optional<uint64_t> reset;
    bool closed = false;
    uint64_t unconsumed = 0;
    uint64_t max_unconsumed = 0;
  };

  Endpoint(const char* name, const Config& config, Timestamp now)
      : name_(name), conn(config, *this, now) {}

  void on_handshake_complete(const PublicKey& key) override { remote_key = key; }
  void on_remote_stream_opened(int64_t id) override {
    remote_opened.push_back(id);
    streams[id];
    if (on_opened) on_opened(id);
  }
  void on_stream_data(int64_t id, std::span<const std::byte> data, bool fin) override {
    StreamState& s = streams[id];
    s.hash.add(data);
    s.received += data.size();
    if (keep_bytes) s.bytes.insert(s.bytes.end(), data.begin(), data.end());
    s.unconsumed += data.size();
    s.max_unconsumed = std::max(s.max_unconsumed, s.unconsumed);
    if (fin) s.fin = true;
    if (consume_rate == 0) consume(id, s, s.unconsumed);
    if (fin && on_fin) on_fin(id);
  }
  void on_stream_reset(int64_t id, uint64_t code) override { streams[id].reset = code; }
  void on_stream_send_space(int64_t id) override {
    ++send_space_events;
    ++space_events[id];
  }
  void on_stream_closed(int64_t id) override {
    streams[id].closed = true;
    ++closed_streams;
  }
  void on_connection_closed(const std::string& reason) override {
    CHECK_FALSE(closed_reason.has_value());  // exactly once
    closed_reason = reason;
    INFO(name_ << " closed: " << reason);
  }
  void on_streams_available() override { ++streams_available_events; }

  void consume(int64_t id, StreamState& s, uint64_t n) {
    n = std::min(n, s.unconsumed);
    if (n == 0) return;
    s.unconsumed -= n;
    conn.stream_consumed(id, n);
  }
  // Slow reader: delivers at most consume_rate bytes per simulated millisecond.
  void tick(Timestamp now) {
    if (consume_rate == 0) return;
    if (last_tick == 0) last_tick = now;
    uint64_t budget = (now - last_tick) / kMs * consume_rate;
    if (budget == 0) return;
    last_tick += (now - last_tick) / kMs * kMs;
    for (auto& [id, s] : streams) {
      uint64_t n = std::min(budget, s.unconsumed);
      consume(id, s, n);
      budget -= n;
    }
  }
  bool wants_tick() const {
    if (consume_rate == 0) return false;
    for (auto& [id, s] : streams)
      if (s.unconsumed > 0) return true;
    return false;
  }

  std::string name_;
  std::optional<PublicKey> remote_key;
  std::optional<std::string> closed_reason;
  std::map<int64_t, StreamState> streams;
  std::vector<int64_t> remote_opened;
  std::map<int64_t, int> space_events;
  std::function<void(int64_t)> on_opened, on_fin;
  int send_space_events = 0, closed_streams = 0, streams_available_events = 0;
  bool keep_bytes = false;
  uint64_t consume_rate = 0;  // bytes per ms; 0 = consume at once
  Timestamp last_tick = 0;
  Connection conn;  // last: constructed after the state above
};

// Writes a buffer into a stream as fast as the stream accepts it, then FIN. Like a
// real forwarder, once the stream says "full" it waits for on_stream_send_space.
struct Sender {
  Endpoint* endpoint;
  int64_t id;
  const std::vector<std::byte>* data;
  bool fin = true;
  size_t offset = 0;
  bool done = false;
  bool waiting = false;
  int seen_space_events = 0;
  void pump() {
    if (waiting) {
      if (endpoint->space_events[id] == seen_space_events) return;
      waiting = false;
    }
    while (!done && offset < data->size()) {
      size_t chunk = std::min<size_t>(64 * 1024, data->size() - offset);
      size_t n = endpoint->conn.stream_write(id, std::span(data->data() + offset, chunk));
      offset += n;
      if (n < chunk) {
        waiting = true;
        seen_space_events = endpoint->space_events[id];
        return;
      }
    }
    if (!done && offset == data->size()) {
      if (fin) endpoint->conn.stream_shutdown_write(id);
      done = true;
    }
  }
};

struct Identities {
  Identity client = Identity::generate();
  Identity server = Identity::generate();
};
Identities& identities() {
  static Identities ids;
  return ids;
}

Config base_config(bool server) {
  Config c;
  c.is_server = server;
  c.identity = server ? &identities().server : &identities().client;
  const PublicKey expected = server ? identities().client.public_key() : identities().server.public_key();
  c.verify_remote_key = [expected](const PublicKey& key) { return key == expected; };
  return c;
}

class Sim {
 public:
  explicit Sim(Config client_config = base_config(false), Config server_config = base_config(true))
      : client(std::make_unique<Endpoint>("client", client_config, now)),
        server(std::make_unique<Endpoint>("server", server_config, now)) {
    s2c.rng.seed(2);
  }

  // Advances the fake clock event by event until `done` or `limit` of simulated time.
  bool run_until(const std::function<bool()>& done, Timestamp limit = 60 * kSecond) {
    const Timestamp end = now + limit;
    size_t stuck = 0;
    while (!done()) {
      for (Sender& s : senders) s.pump();
      client->tick(now);
      server->tick(now);
      client->conn.write(now, [&](std::span<const std::byte> d) { return c2s.send(now, d); });
      server->conn.write(now, [&](std::span<const std::byte> d) { return s2c.send(now, d); });
      if (done()) break;
      Timestamp next = std::min({c2s.next(), s2c.next(), client->conn.expiry(), server->conn.expiry()});
      if (client->wants_tick() || server->wants_tick()) next = std::min(next, now + kMs);
      if (next == kNever || next > end) return false;
      // Guard against a core that asks to be woken "now" forever without progress.
      stuck = next <= now ? stuck + 1 : 0;
      REQUIRE(stuck < 10000);
      now = std::max(now, next);
      // A deadline that stays in the past without progress (ngtcp2's pacing time while
      // the congestion window is full, e.g. right after a migration): quic::Driver
      // then waits kStaleTimerWaitNs, and so does the simulated clock.
      if (stuck > 100) now += kStaleTimerWaitNs;
      deliver(c2s, *server);
      deliver(s2c, *client);
      if (client->conn.expiry() <= now) client->conn.handle_expiry(now);
      if (server->conn.expiry() <= now) server->conn.handle_expiry(now);
    }
    return true;
  }
  bool handshake() {
    return run_until([&] { return client->conn.handshake_complete() && server->conn.handshake_complete(); },
                     5 * kSecond);
  }

  Timestamp now = 1000 * kSecond;
  Link c2s, s2c;
  std::unique_ptr<Endpoint> client, server;
  std::deque<Sender> senders;

 private:
  void deliver(Link& link, Endpoint& to) {
    while (!link.in_flight.empty() && link.in_flight.front().first <= now) {
      auto datagram = std::move(link.in_flight.front().second);
      link.in_flight.pop_front();
      to.conn.receive(datagram, now);
    }
  }
};

double mb_per_s(uint64_t bytes, Timestamp elapsed) {
  return elapsed == 0 ? 0 : static_cast<double>(bytes) / 1e6 / (static_cast<double>(elapsed) / 1e9);
}

}  // namespace

TEST_CASE("quic: handshake completes and each side sees the other's key") {
  Sim sim;
  REQUIRE(sim.handshake());
  REQUIRE(sim.client->remote_key == identities().server.public_key());
  REQUIRE(sim.server->remote_key == identities().client.public_key());
  CHECK_FALSE(sim.client->conn.closed());
  CHECK(sim.client->conn.stats().smoothed_rtt > 0);
}

TEST_CASE("quic: time to the first stream byte (printed)") {
  Sim sim;
  const Timestamp start = sim.now;
  Timestamp client_ready = 0;
  REQUIRE(sim.run_until([&] { return sim.client->conn.handshake_complete(); }));
  client_ready = sim.now;
  auto id = sim.client->conn.open_stream();
  REQUIRE(id);
  // The first bytes of a forwarded connection: the target name, then some data.
  const auto data = make_data(64 * 1024, 4);
  sim.client->conn.stream_write(*id, data);
  REQUIRE(sim.run_until([&] { return sim.server->streams[*id].received > 0; }));
  const Timestamp first_byte = sim.now;
  REQUIRE(sim.run_until([&] { return sim.server->streams[*id].received == data.size(); }));
  std::printf("20 ms RTT: client handshake done at %.1f ms, first stream byte at %.1f ms, 64 KiB at %.1f ms\n",
              (client_ready - start) / 1e6, (first_byte - start) / 1e6, (sim.now - start) / 1e6);
}

TEST_CASE("quic: a refused key fails the handshake on both sides") {
  Config client_config = base_config(false);
  Config server_config = base_config(true);
  SECTION("server refuses the client") {
    server_config.verify_remote_key = [](const PublicKey&) { return false; };
  }
  SECTION("client refuses the server") {
    client_config.verify_remote_key = [](const PublicKey&) { return false; };
  }
  SECTION("no check configured refuses everyone") { server_config.verify_remote_key = nullptr; }
  Sim sim(client_config, server_config);
  sim.run_until([&] { return sim.client->closed_reason && sim.server->closed_reason; }, 20 * kSecond);
  REQUIRE(sim.client->closed_reason);
  REQUIRE(sim.server->closed_reason);
  // The refusing side never accepts; the client may have finished its half before the
  // server checked its certificate, but no stream can be used on the server.
  CHECK_FALSE(sim.server->conn.handshake_complete());
  std::printf("refused handshake: client \"%s\", server \"%s\"\n", sim.client->closed_reason->c_str(),
              sim.server->closed_reason->c_str());
}

TEST_CASE("quic: 20 MB one way, slow reader, backpressure bounds unconsumed bytes") {
  Config client_config = base_config(false);
  Config server_config = base_config(true);
  server_config.stream_window = 2 << 20;  // small, so the slow reader is the limit
  Sim sim(client_config, server_config);
  REQUIRE(sim.handshake());
  sim.server->consume_rate = 20'000;  // 20 MB/s
  const auto data = make_data(20 << 20, 7);
  auto id = sim.client->conn.open_stream();
  REQUIRE(id);
  sim.senders.push_back({sim.client.get(), *id, &data});
  const Timestamp start = sim.now;
  REQUIRE(sim.run_until([&] {
    auto it = sim.server->streams.find(*id);
    return it != sim.server->streams.end() && it->second.fin;
  }));
  const auto& s = sim.server->streams[*id];
  CHECK(s.received == data.size());
  CHECK(s.hash.value == hash_of(data));
  CHECK(s.max_unconsumed <= server_config.stream_window);
  CHECK(sim.client->send_space_events > 0);
  std::printf("20 MB with a 20 MB/s reader: %.1f MB/s, max unconsumed %.2f MiB (window %.0f MiB)\n",
              mb_per_s(s.received, sim.now - start), s.max_unconsumed / 1048576.0,
              server_config.stream_window / 1048576.0);
}

TEST_CASE("quic: both directions at once on one stream") {
  Sim sim;
  REQUIRE(sim.handshake());
  const auto up = make_data(8 << 20, 1), down = make_data(8 << 20, 2);
  sim.server->on_opened = [&](int64_t id) { sim.senders.push_back({sim.server.get(), id, &down}); };
  auto id = sim.client->conn.open_stream();
  REQUIRE(id);
  sim.senders.push_back({sim.client.get(), *id, &up});
  REQUIRE(sim.run_until([&] {
    return sim.server->streams[*id].fin && sim.client->streams[*id].fin &&
           sim.client->streams[*id].closed && sim.server->streams[*id].closed;
  }));
  CHECK(sim.server->streams[*id].hash.value == hash_of(up));
  CHECK(sim.client->streams[*id].hash.value == hash_of(down));
  CHECK(sim.client->conn.stats().open_streams == 0);
  CHECK(sim.server->conn.stats().open_streams == 0);
}

TEST_CASE("quic: 50 concurrent streams of 256 KB") {
  Sim sim;
  REQUIRE(sim.handshake());
  constexpr int kStreams = 50;
  std::vector<std::vector<std::byte>> payloads;
  for (int i = 0; i < kStreams; ++i) payloads.push_back(make_data(256 * 1024, 100 + i));
  // The server answers each FIN with its own FIN, so every stream closes on both sides.
  sim.server->on_fin = [&](int64_t id) { sim.server->conn.stream_shutdown_write(id); };
  std::map<int64_t, int> index;
  for (int i = 0; i < kStreams; ++i) {
    auto id = sim.client->conn.open_stream();
    REQUIRE(id);
    index[*id] = i;
    sim.senders.push_back({sim.client.get(), *id, &payloads[i]});
  }
  REQUIRE(sim.run_until([&] {
    return sim.client->closed_streams == kStreams && sim.server->closed_streams == kStreams;
  }));
  for (auto& [id, i] : index) {
    CHECK(sim.server->streams[id].hash.value == hash_of(payloads[i]));
    CHECK(sim.server->streams[id].fin);
  }
  CHECK(sim.client->conn.stats().open_streams == 0);
  CHECK(sim.server->conn.stats().open_streams == 0);
}

TEST_CASE("quic: half close, the server replies after the client's FIN") {
  Sim sim;
  REQUIRE(sim.handshake());
  sim.server->keep_bytes = sim.client->keep_bytes = true;
  const std::string request = "GET /status", reply = "all good, and then FIN";
  sim.server->on_fin = [&](int64_t id) {
    // The client's direction is finished; ours is still open.
    CHECK(sim.server->conn.stream_write(id, std::as_bytes(std::span(reply))) == reply.size());
    sim.server->conn.stream_shutdown_write(id);
  };
  auto id = sim.client->conn.open_stream();
  REQUIRE(id);
  REQUIRE(sim.client->conn.stream_write(*id, std::as_bytes(std::span(request))) == request.size());
  sim.client->conn.stream_shutdown_write(*id);
  CHECK(sim.client->conn.stream_write(*id, std::as_bytes(std::span(request))) == 0);  // after FIN
  REQUIRE(sim.run_until([&] { return sim.client->streams[*id].closed && sim.server->streams[*id].closed; }));
  auto text = [](const std::vector<std::byte>& b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); };
  CHECK(text(sim.server->streams[*id].bytes) == request);
  CHECK(text(sim.client->streams[*id].bytes) == reply);
  CHECK(sim.client->streams[*id].fin);
}

TEST_CASE("quic: reset propagates to the other side") {
  Sim sim;
  REQUIRE(sim.handshake());
  auto id = sim.client->conn.open_stream();
  REQUIRE(id);
  const auto data = make_data(100000, 3);
  sim.client->conn.stream_write(*id, data);
  REQUIRE(sim.run_until([&] { return sim.server->streams[*id].received > 0; }));
  sim.client->conn.stream_reset(*id, 42);
  REQUIRE(sim.run_until([&] { return sim.server->streams[*id].reset.has_value(); }));
  CHECK(*sim.server->streams[*id].reset == 42);
  CHECK_FALSE(sim.client->streams[*id].reset);  // our own reset is no news to us
  REQUIRE(sim.run_until([&] { return sim.client->streams[*id].closed && sim.server->streams[*id].closed; }));
  // The connection carries on.
  auto next = sim.client->conn.open_stream();
  REQUIRE(next);
  CHECK(sim.client->conn.stream_write(*next, data) == data.size());
  sim.client->conn.stream_shutdown_write(*next);
  REQUIRE(sim.run_until([&] { return sim.server->streams[*next].fin; }));
  CHECK(sim.server->streams[*next].hash.value == hash_of(data));
}

TEST_CASE("quic: the remote's stream limit, and streams becoming available again") {
  Config server_config = base_config(true);
  server_config.max_streams = 4;
  Sim sim(base_config(false), server_config);
  REQUIRE(sim.handshake());
  std::vector<int64_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(*sim.client->conn.open_stream());
  CHECK_FALSE(sim.client->conn.open_stream());
  sim.server->on_fin = [&](int64_t id) { sim.server->conn.stream_shutdown_write(id); };
  sim.client->conn.stream_shutdown_write(ids[0]);
  const int before = sim.client->streams_available_events;
  REQUIRE(sim.run_until([&] { return sim.client->streams_available_events > before; }));
  CHECK(sim.client->streams[ids[0]].closed);
  CHECK(sim.client->conn.open_stream());
}

TEST_CASE("quic: 2% random loss still delivers intact; BBR vs BBR2 vs CUBIC") {
  const auto data = make_data(10 << 20, 9);
  for (uint64_t seed : {1, 2, 3})
  for (auto [cc, name] : {std::pair{NGTCP2_CC_ALGO_BBR2, "BBR2"}, std::pair{NGTCP2_CC_ALGO_BBR, "BBR"},
                          std::pair{NGTCP2_CC_ALGO_CUBIC, "CUBIC"}}) {
    if (cc == NGTCP2_CC_ALGO_CUBIC && seed > 1) continue;  // slow, and the point is made
    Config client_config = base_config(false), server_config = base_config(true);
    client_config.cc = server_config.cc = cc;
    Sim sim(client_config, server_config);
    sim.c2s.loss = sim.s2c.loss = 0.02;
    sim.c2s.rng.seed(seed * 10);
    sim.s2c.rng.seed(seed * 10 + 1);
    REQUIRE(sim.handshake());
    auto id = sim.client->conn.open_stream();
    REQUIRE(id);
    sim.senders.push_back({sim.client.get(), *id, &data});
    const Timestamp start = sim.now;
    REQUIRE(sim.run_until([&] { return sim.server->streams[*id].fin; }, 600 * kSecond));
    CHECK(sim.server->streams[*id].hash.value == hash_of(data));
    std::printf("2%% loss (seed %llu), 20 ms RTT, 100 MB/s link, %s: %.1f MB/s (%llu of %llu datagrams dropped)\n",
                (unsigned long long)seed, name,
                mb_per_s(data.size(), sim.now - start), (unsigned long long)sim.c2s.dropped,
                (unsigned long long)sim.c2s.sent);
  }
}

TEST_CASE("quic: throughput without loss (printed)") {
  const auto data = make_data(40 << 20, 10);
  for (double rate : {0.1, 0.4}) {
    for (auto [cc, name] : {std::pair{NGTCP2_CC_ALGO_BBR2, "BBR2"}, std::pair{NGTCP2_CC_ALGO_BBR, "BBR"}}) {
      Config client_config = base_config(false), server_config = base_config(true);
      client_config.cc = server_config.cc = cc;
      Sim sim(client_config, server_config);
      sim.c2s.bytes_per_ns = sim.s2c.bytes_per_ns = rate;
      REQUIRE(sim.handshake());
      auto id = sim.client->conn.open_stream();
      sim.senders.push_back({sim.client.get(), *id, &data});
      const Timestamp start = sim.now;
      REQUIRE(sim.run_until([&] { return sim.server->streams[*id].fin; }));
      CHECK(sim.server->streams[*id].hash.value == hash_of(data));
      std::printf("no loss, 20 ms RTT, %.0f MB/s link, %s, one stream, 40 MiB: %.1f MB/s\n", rate * 1000, name,
                  mb_per_s(data.size(), sim.now - start));
    }
  }
}

TEST_CASE("quic: a path that would block loses nothing") {
  Sim sim;
  sim.c2s.block = sim.s2c.block = 0.3;
  REQUIRE(sim.handshake());
  const auto up = make_data(2 << 20, 21), down = make_data(2 << 20, 22);
  sim.server->on_opened = [&](int64_t id) { sim.senders.push_back({sim.server.get(), id, &down}); };
  auto id = sim.client->conn.open_stream();
  REQUIRE(id);
  sim.senders.push_back({sim.client.get(), *id, &up});
  REQUIRE(sim.run_until([&] { return sim.server->streams[*id].closed && sim.client->streams[*id].closed; }));
  CHECK(sim.server->streams[*id].hash.value == hash_of(up));
  CHECK(sim.client->streams[*id].hash.value == hash_of(down));
  CHECK(sim.c2s.blocked > 0);
  CHECK(sim.c2s.dropped == 0);
  // Every datagram refused by `send` was offered again, not lost: no loss was needed
  // to recover it (nothing was dropped on the link).
  CHECK(sim.client->conn.stats().bytes_sent > (2u << 20));
}

TEST_CASE("quic: garbage datagrams are ignored") {
  Sim sim;
  std::mt19937_64 rng(5);
  auto garbage = [&](size_t size) {
    std::vector<std::byte> g(size);
    for (auto& b : g) b = static_cast<std::byte>(rng());
    return g;
  };
  // Before the handshake the server has no connection: random bytes must not create one.
  for (int i = 0; i < 50; ++i) sim.server->conn.receive(garbage(1 + rng() % 1400), sim.now);
  CHECK_FALSE(sim.server->closed_reason);
  REQUIRE(sim.handshake());
  // After: random bytes, long-header-looking bytes, truncated and bit-flipped real packets.
  std::vector<std::byte> real;
  sim.client->conn.write(sim.now, [&](std::span<const std::byte>) { return true; });
  auto id = sim.client->conn.open_stream();
  REQUIRE(id);
  const auto data = make_data(1 << 20, 11);
  sim.senders.push_back({sim.client.get(), *id, &data});
  int injected = 0;
  REQUIRE(sim.run_until([&] {
    if (injected < 2000) {
      for (int k = 0; k < 4; ++k, ++injected) {
        auto g = garbage(1 + rng() % 1400);
        if (injected % 3 == 0) g[0] = std::byte{0xc0};  // looks like a long header
        if (injected % 3 == 1) g[0] = std::byte{0x40};  // looks like a short header
        if (injected % 2) sim.client->conn.receive(g, sim.now); else sim.server->conn.receive(g, sim.now);
      }
      if (!sim.c2s.in_flight.empty()) {  // a corrupted copy of a real packet
        auto copy = sim.c2s.in_flight.back().second;
        copy[rng() % copy.size()] ^= std::byte{0x10};
        sim.server->conn.receive(std::span(copy).first(1 + rng() % copy.size()), sim.now);
      }
    }
    return sim.server->streams[*id].fin;
  }));
  CHECK(sim.server->streams[*id].hash.value == hash_of(data));
  CHECK_FALSE(sim.client->closed_reason);
  CHECK_FALSE(sim.server->closed_reason);
}

TEST_CASE("quic: idle timeout closes both sides; keep-alive keeps an idle connection") {
  SECTION("path dies") {
    Sim sim;
    REQUIRE(sim.handshake());
    sim.c2s.cut = sim.s2c.cut = true;
    REQUIRE(sim.run_until([&] { return sim.client->closed_reason && sim.server->closed_reason; }, 300 * kSecond));
    CHECK(*sim.client->closed_reason == "idle timeout");
    CHECK(*sim.server->closed_reason == "idle timeout");
    CHECK(sim.client->conn.expiry() == kNever);
  }
  SECTION("quiet but alive") {
    Sim sim;
    REQUIRE(sim.handshake());
    const Timestamp end = sim.now + 300 * kSecond;
    sim.run_until([&] { return sim.now >= end || sim.client->closed_reason || sim.server->closed_reason; },
                  301 * kSecond);
    CHECK_FALSE(sim.client->closed_reason);
    CHECK_FALSE(sim.server->closed_reason);
  }
}

TEST_CASE("quic: close() reaches the other side") {
  Sim sim;
  REQUIRE(sim.handshake());
  SECTION("even over a lossy path") { sim.c2s.loss = 0.3; }
  SECTION("clean path") {}
  sim.client->conn.close(7, "bye");
  CHECK(sim.client->conn.closed());
  CHECK_FALSE(sim.client->conn.open_stream());
  REQUIRE(sim.run_until([&] { return sim.client->closed_reason && sim.server->closed_reason; }, 120 * kSecond));
  CHECK(*sim.client->closed_reason == "bye");
  INFO(*sim.server->closed_reason);
  CHECK(sim.server->closed_reason->find("bye") != std::string::npos);
  CHECK(sim.server->closed_reason->find("application error 7") != std::string::npos);
}

TEST_CASE("quic: close() from inside a callback is deferred safely") {
  Sim sim;
  REQUIRE(sim.handshake());
  sim.server->on_opened = [&](int64_t) { sim.server->conn.close(3, "not today"); };
  auto id = sim.client->conn.open_stream();
  sim.client->conn.stream_write(*id, std::as_bytes(std::span("hello", 5)));
  REQUIRE(sim.run_until([&] { return sim.client->closed_reason && sim.server->closed_reason; }));
  CHECK(sim.client->closed_reason->find("not today") != std::string::npos);
}

TEST_CASE("quic: a handshake nobody answers times out; close() before the handshake") {
  SECTION("timeout") {
    Sim sim;
    sim.c2s.cut = true;
    REQUIRE(sim.run_until([&] { return sim.client->closed_reason.has_value(); }, 60 * kSecond));
    CHECK(*sim.client->closed_reason == "handshake timeout");
    CHECK_FALSE(sim.server->closed_reason);  // the server never heard of it
  }
  SECTION("close while handshaking") {
    Sim sim;
    sim.client->conn.write(sim.now, [&](std::span<const std::byte> d) { return sim.c2s.send(sim.now, d); });
    sim.client->conn.close(1, "changed my mind");
    REQUIRE(sim.run_until([&] { return sim.client->closed_reason && sim.server->closed_reason; }, 60 * kSecond));
    CHECK(*sim.client->closed_reason == "changed my mind");
    CHECK_FALSE(sim.server->conn.handshake_complete());
  }
}

// After a network change ICE finds a new path for the tunnel, but the seconds of
// outage before left both sides' probe timeouts backed off (RFC 9002 section 6.2):
// without a word to QUIC, the waiting data would sit until the next probe fires.
// Returns the time from the path's return until both directions finished.
Timestamp outage_then_resume(bool move_to_new_path, Timestamp outage) {
  Sim sim;
  REQUIRE(sim.handshake());
  const auto up = make_data(2 << 20, 3), down = make_data(2 << 20, 4);
  sim.server->on_opened = [&](int64_t id) { sim.senders.push_back({sim.server.get(), id, &down}); };
  auto id = sim.client->conn.open_stream();
  REQUIRE(id);
  sim.senders.push_back({sim.client.get(), *id, &up});
  // Some data flows, then the path dies mid-transfer.
  REQUIRE(sim.run_until([&] { return sim.server->streams[*id].received > (256 << 10); }));
  sim.c2s.cut = sim.s2c.cut = true;
  const Timestamp cut_until = sim.now + outage;
  sim.run_until([&] { return sim.now >= cut_until; }, outage + kSecond);
  sim.c2s.cut = sim.s2c.cut = false;
  sim.c2s.in_flight.clear();
  sim.s2c.in_flight.clear();
  if (move_to_new_path) {
    // The server switches a little later than the client, as over ICE (the
    // controlled side learns of the nomination from the controlling side's check).
    sim.client->conn.move_to_new_path(sim.now);
  }
  const Timestamp back = sim.now;
  bool server_moved = !move_to_new_path;
  REQUIRE(sim.run_until([&] {
    if (!server_moved && sim.now >= back + 5 * kMs) {
      sim.server->conn.move_to_new_path(sim.now);
      server_moved = true;
    }
    return sim.server->streams[*id].fin && sim.client->streams[*id].fin;
  }, 120 * kSecond));
  CHECK(sim.server->streams[*id].hash.value == hash_of(up));
  CHECK(sim.client->streams[*id].hash.value == hash_of(down));
  CHECK_FALSE(sim.client->closed_reason);
  CHECK_FALSE(sim.server->closed_reason);
  return sim.now - back;
}

TEST_CASE("quic: after an outage, moving to the new path resumes at once") {
  const Timestamp outage = 3 * kSecond;
  const Timestamp stay = outage_then_resume(false, outage);
  const Timestamp moved = outage_then_resume(true, outage);
  std::printf("2 MB each way left after a %.1f s outage: done %.0f ms after the path came "
              "back when QUIC moves to the new path, %.0f ms when it does not\n",
              static_cast<double>(outage) / kSecond, static_cast<double>(moved) / kMs,
              static_cast<double>(stay) / kMs);
  // 20 ms RTT, 100 MB/s: 4 MB take some tens of ms plus slow start; a backed-off
  // probe timer alone costs about as long as the outage lasted.
  CHECK(moved < stay);
  CHECK(moved < 500 * kMs);
}

// A published download as the front door sees it: the client (relay) opens a stream,
// the server (home) sends a file larger than the visitor wants, and the client resets
// the stream when the visitor leaves after `wanted` bytes. Returns the simulated time
// each of `count` such downloads in a row over the one connection took; each must end
// within `limit` of simulated time.
std::vector<Timestamp> abandoned_downloads(Sim& sim, int count, uint64_t wanted,
                                           const std::vector<std::byte>& file, Timestamp limit) {
  std::vector<Timestamp> took;
  sim.server->on_opened = [&](int64_t id) { sim.senders.push_back({sim.server.get(), id, &file}); };
  for (int i = 0; i < count; ++i) {
    auto id = sim.client->conn.open_stream();
    REQUIRE(id);
    const auto request = make_data(300, 12);  // GET /big.bin
    REQUIRE(sim.client->conn.stream_write(*id, request) == request.size());
    const Timestamp start = sim.now;
    const bool done =
        sim.run_until([&] { return sim.client->streams[*id].received >= wanted; }, limit);
    INFO("download " << i << ": " << sim.client->streams[*id].received << " bytes");
    REQUIRE(done);
    took.push_back(sim.now - start);
    sim.client->conn.stream_reset(*id, 1);
    // The sender's side of the stream goes when the reset reaches it.
    REQUIRE(sim.run_until([&] { return sim.server->streams[*id].closed; }, 10 * kSecond));
    std::erase_if(sim.senders, [&](const Sender& s) { return s.id == *id; });
  }
  return took;
}

// A tunnel that carried loss must carry the next download as well as the first: every
// abandoned download leaves no flow-control credit behind and the congestion
// controller is not left shrunk. 20 simulated seconds for 8 MiB is 0.4 MB/s, a rate
// no healthy connection on this 30 MB/s path comes near.
TEST_CASE("quic: downloads abandoned one after another under loss all keep going") {
  const auto file = make_data(64 << 20, 11);
  Sim sim;
  sim.c2s.loss = sim.s2c.loss = 0.005;
  sim.c2s.jitter = sim.s2c.jitter = 10 * kMs;  // queueing on a loaded path
  sim.c2s.bytes_per_ns = sim.s2c.bytes_per_ns = 0.03;
  REQUIRE(sim.handshake());
  const uint64_t wanted = 8 << 20;
  const auto took = abandoned_downloads(sim, 8, wanted, file, 20 * kSecond);
  for (size_t i = 0; i < took.size(); ++i)
    std::printf("0.5%% loss, 20-30 ms RTT, 30 MB/s link, download %zu, 8 MiB then abandoned: "
                "%.1f MB/s\n", i, mb_per_s(wanted, took[i]));
}

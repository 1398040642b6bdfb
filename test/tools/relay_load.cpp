// relay_load: many registered peers and rendezvous sessions against one relay, for the
// load test (test/e2e/test_relay_load.py) and scripts/bench.
//
//   relay_load --relay HOST:PORT --peers N [--sessions S] [--window W] [--bind-from A.B.C]
//              [--probe-seconds S [--probe-interval-ms MS]]
//
// Opens N plain-TCP rendezvous connections (the relay tells frames from TLS by the
// first byte), each with its own Ed25519 key: Hello, Welcome, a Register signed over
// the relay's challenge, Registered. Then S sessions between pairs of those peers:
// OpenSession, IncomingSession, AcceptSession, and one trickled Candidate each way,
// which checks that the relay routes both directions. Every connection answers the
// relay's keepalive with Pings. Prints one line per phase on stdout:
//   registered N peers in S s
//   sessions S established in S s
//   peak: N peers, S sessions open
// With --probe-seconds, then for that long a new peer connects every --probe-interval-ms
// (default 50), registers a fresh key and closes once registered; prints
//   registration latency ms: count=N median=M p99=P max=X
// (connect() to Registered: TCP handshake, Hello, Challenge, Prove, Welcome, Register)
// for a load test to judge how the rendezvous answers under load.
// Then it waits for a line on stdin ("close"), closes every connection and prints
//   closed
// Any failure (a connection closed by the relay, an Error, a phase over its time limit)
// prints "FAIL: ..." and exits 1. Bad arguments exit 2 with one line.
//
// --bind-from 127.1.2 binds connection i to 127.1.2+(i / 200) style addresses (spreading
// them over source addresses) instead of raising the relay's per-address limits.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "frame.h"
#include "identity.h"
#include "rendezvous.pb.h"

namespace {

using Clock = std::chrono::steady_clock;
using natfwd::wire::Envelope;

enum class State { kConnecting, kHello, kRegistering, kRegistered, kFailed, kProbeDone };

struct Peer {
  int fd = -1;
  State state = State::kConnecting;
  natfwd::Identity identity = natfwd::Identity::generate();
  std::string name;
  std::vector<std::byte> in;
  std::vector<std::byte> out;
  bool probe = false;                // closes once registered (--probe-seconds)
  Clock::time_point connect_started, registered_at;
};

struct Session {
  size_t caller = 0;
  size_t callee = 0;
  bool incoming = false;    // callee got IncomingSession
  bool accepted = false;    // caller got AcceptSession
  bool caller_cand = false; // caller got the callee's Candidate
  bool callee_cand = false; // callee got the caller's Candidate
  bool done() const { return incoming && accepted && caller_cand && callee_cand; }
};

[[noreturn]] void fail(const std::string& why) {
  std::printf("FAIL: %s\n", why.c_str());
  std::fflush(stdout);
  std::exit(1);
}

class Load {
 public:
  Load(sockaddr_in relay, size_t peers, size_t window, std::string bind_prefix)
      : relay_(relay), window_(window), bind_prefix_(std::move(bind_prefix)) {
    epoll_ = epoll_create1(0);
    peers_.resize(peers);
    for (size_t i = 0; i < peers; ++i) peers_[i].name = "load-" + std::to_string(i);
  }

  void register_all() {
    size_t next = 0, registered = 0;
    deadline_ = Clock::now() + std::chrono::seconds(300);
    while (registered < peers_.size()) {
      while (next < peers_.size() && next - registered < window_) connect_peer(next++);
      pump(100);
      registered = count(State::kRegistered);
    }
  }

  void open_sessions(size_t count_sessions) {
    std::mt19937_64 rng(42);
    const size_t n = peers_.size();
    if (count_sessions > n / 2) fail("--sessions needs at least twice as many peers");
    // Session k: peer 2k calls peer 2k+1, so each peer is in at most one session.
    for (size_t k = 0; k < count_sessions; ++k) {
      uint64_t id = rng() | 1;
      sessions_[id] = Session{2 * k, 2 * k + 1};
      Envelope e;
      auto* open = e.mutable_open_session();
      open->set_session_id(id);
      open->set_target(peers_[2 * k + 1].name);
      open->mutable_ice()->set_ufrag("load" + std::to_string(k));
      open->mutable_ice()->set_pwd("loadpasswordloadpassword");
      send(2 * k, e);
    }
    deadline_ = Clock::now() + std::chrono::seconds(60);
    while (true) {
      size_t done = 0;
      for (auto& [id, s] : sessions_) done += s.done();
      if (done == sessions_.size()) break;
      pump(100);
    }
  }

  // One fresh registration every `interval` for `seconds`; returns each one's latency
  // (connect() to Registered), in ms.
  std::vector<double> probe_registrations(double seconds, std::chrono::milliseconds interval) {
    std::vector<double> latencies;
    const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(seconds));
    auto next = Clock::now();
    size_t open = 0;
    while (Clock::now() < end || open > 0) {
      deadline_ = end + std::chrono::seconds(30);
      if (Clock::now() >= next && Clock::now() < end) {
        const size_t i = peers_.size();
        peers_.emplace_back();
        peers_[i].name = "probe-" + std::to_string(i);
        peers_[i].probe = true;
        peers_[i].connect_started = Clock::now();
        connect_peer(i);
        ++open;
        next += interval;
      }
      pump(5);
      for (Peer& p : peers_) {
        if (!p.probe || p.state != State::kRegistered) continue;
        latencies.push_back(
            std::chrono::duration<double, std::milli>(p.registered_at - p.connect_started)
                .count());
        ::close(p.fd);
        p.fd = -1;
        p.state = State::kProbeDone;
        --open;
      }
    }
    return latencies;
  }

  void keepalive_until_stdin() {
    pollfd in{0, POLLIN, 0};
    while (true) {
      deadline_ = Clock::now() + std::chrono::hours(24);
      pump(0);
      if (poll(&in, 1, 100) > 0) return;
    }
  }

  void close_all() {
    for (auto& p : peers_)
      if (p.fd >= 0) ::close(p.fd), p.fd = -1;
  }

 private:
  size_t count(State s) const {
    size_t n = 0;
    for (const auto& p : peers_) n += p.state == s;
    return n;
  }

  void connect_peer(size_t i) {
    Peer& p = peers_[i];
    p.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p.fd < 0) fail(std::string("socket: ") + std::strerror(errno));
    if (!bind_prefix_.empty()) {
      sockaddr_in local{};
      local.sin_family = AF_INET;
      std::string addr = bind_prefix_ + "." + std::to_string(1 + i / 50);
      if (inet_pton(AF_INET, addr.c_str(), &local.sin_addr) != 1)
        fail("--bind-from: bad address " + addr);
      if (bind(p.fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0)
        fail("bind " + addr + ": " + std::strerror(errno));
    }
    int r = connect(p.fd, reinterpret_cast<const sockaddr*>(&relay_), sizeof relay_);
    if (r != 0 && errno != EINPROGRESS) fail(std::string("connect: ") + std::strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.u64 = i;
    epoll_ctl(epoll_, EPOLL_CTL_ADD, p.fd, &ev);
    Envelope hello;
    hello.mutable_hello()->set_protocol_version(natfwd::wire::kProtocolVersion);
    const auto& key = p.identity.public_key();
    hello.mutable_hello()->set_public_key(std::string(key.begin(), key.end()));
    hello.mutable_hello()->set_software("natfwd-relay-load");
    natfwd::wire::encode_message(hello, p.out);
    p.state = State::kHello;
  }

  void send(size_t i, const Envelope& e) {
    Peer& p = peers_[i];
    natfwd::wire::encode_message(e, p.out);
    flush(i);
  }

  void flush(size_t i) {
    Peer& p = peers_[i];
    while (!p.out.empty()) {
      ssize_t n = ::send(p.fd, p.out.data(), p.out.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINPROGRESS || errno == ENOTCONN) return;
        fail(p.name + ": send: " + std::strerror(errno));
      }
      p.out.erase(p.out.begin(), p.out.begin() + n);
    }
  }

  // Every registered connection pings at half the relay's keepalive period, in every
  // phase: the relay closes a connection silent for three periods.
  void ping_due() {
    if (Clock::now() < next_ping_) return;
    for (size_t i = 0; i < peers_.size(); ++i) {
      if (peers_[i].state != State::kRegistered) continue;
      Envelope e;
      e.mutable_ping()->set_nonce(i);
      send(i, e);
    }
    next_ping_ = Clock::now() + std::chrono::seconds(std::max<uint32_t>(1, keepalive_ / 2));
  }

  void pump(int timeout_ms) {
    ping_due();
    if (Clock::now() > deadline_) {
      fail("timed out: " + std::to_string(count(State::kRegistered)) + " of " +
           std::to_string(peers_.size()) + " registered");
    }
    epoll_event events[256];
    int n = epoll_wait(epoll_, events, 256, timeout_ms);
    for (int k = 0; k < n; ++k) {
      size_t i = events[k].data.u64;
      if (events[k].events & EPOLLOUT) flush(i);
      if (events[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_from(i);
    }
  }

  void read_from(size_t i) {
    Peer& p = peers_[i];
    std::byte buf[16384];
    while (true) {
      ssize_t n = recv(p.fd, buf, sizeof buf, 0);
      if (n == 0) fail(p.name + ": the relay closed the connection");
      if (n < 0) {
        if (errno == EAGAIN) break;
        fail(p.name + ": recv: " + std::strerror(errno));
      }
      p.in.insert(p.in.end(), buf, buf + n);
    }
    size_t used = 0;
    while (true) {
      auto d = natfwd::wire::decode_frame(std::span(p.in).subspan(used));
      if (d.status == natfwd::wire::DecodeStatus::kNeedMore) break;
      if (d.status == natfwd::wire::DecodeStatus::kInvalid)
        fail(p.name + ": bad frame from the relay");
      Envelope e;
      if (!natfwd::wire::parse_message(d.payload, e)) fail(p.name + ": bad envelope");
      used += d.consumed;
      handle(i, e);
    }
    p.in.erase(p.in.begin(), p.in.begin() + used);
  }

  void handle(size_t i, const Envelope& e) {
    Peer& p = peers_[i];
    if (e.has_error()) fail(p.name + ": relay error: " + e.error().detail());
    if (e.has_challenge()) {
      Envelope prove;
      prove.mutable_prove()->set_signature(
          p.identity.sign(natfwd::connection_proof_message(e.challenge().challenge())));
      send(i, prove);
    } else if (e.has_welcome()) {
      keepalive_ = e.welcome().keepalive_seconds();
      Envelope reg;
      reg.mutable_register_()->set_name(p.name);
      reg.mutable_register_()->set_signature(
          p.identity.sign(natfwd::registration_message(e.welcome().challenge(), p.name)));
      send(i, reg);
      p.state = State::kRegistering;
    } else if (e.has_registered()) {
      p.state = State::kRegistered;
      p.registered_at = Clock::now();
    } else if (e.has_incoming_session()) {
      auto it = sessions_.find(e.incoming_session().session_id());
      if (it == sessions_.end() || it->second.callee != i) fail(p.name + ": stray session");
      it->second.incoming = true;
      Envelope accept;
      accept.mutable_accept_session()->set_session_id(it->first);
      accept.mutable_accept_session()->mutable_ice()->set_ufrag("callee");
      accept.mutable_accept_session()->mutable_ice()->set_pwd("calleepasswordcalleepassword");
      send(i, accept);
      send_candidate(i, it->first);
    } else if (e.has_accept_session()) {
      auto it = sessions_.find(e.accept_session().session_id());
      if (it == sessions_.end() || it->second.caller != i) fail(p.name + ": stray accept");
      it->second.accepted = true;
      send_candidate(i, it->first);
    } else if (e.has_candidate()) {
      auto it = sessions_.find(e.candidate().session_id());
      if (it == sessions_.end()) fail(p.name + ": stray candidate");
      if (it->second.caller == i) it->second.caller_cand = true;
      else if (it->second.callee == i) it->second.callee_cand = true;
      else fail(p.name + ": candidate for someone else's session");
    } else if (e.has_close_session()) {
      fail(p.name + ": session closed by the relay: " + e.close_session().detail());
    }
  }

  void send_candidate(size_t i, uint64_t session) {
    Envelope c;
    c.mutable_candidate()->set_session_id(session);
    c.mutable_candidate()->set_sdp("candidate:1 1 UDP 2130706431 192.0.2.1 9 typ host");
    send(i, c);
  }

  sockaddr_in relay_;
  size_t window_;
  std::string bind_prefix_;
  int epoll_ = -1;
  uint32_t keepalive_ = 15;
  Clock::time_point deadline_;
  Clock::time_point next_ping_ = Clock::now();
  std::vector<Peer> peers_;
  std::unordered_map<uint64_t, Session> sessions_;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "relay_load: %s\n", why.c_str());
  std::exit(2);
}

size_t number(const char* text, const char* flag) {
  char* end = nullptr;
  unsigned long v = std::strtoul(text, &end, 10);
  if (!*text || *end) usage(std::string(flag) + ": '" + text + "' is not a number");
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::string relay;
  std::string bind_prefix;
  size_t peers = 0, sessions = 0, window = 64, probe_interval_ms = 50;
  double probe_seconds = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--relay") relay = value();
    else if (a == "--peers") peers = number(value(), "--peers");
    else if (a == "--sessions") sessions = number(value(), "--sessions");
    else if (a == "--window") window = number(value(), "--window");
    else if (a == "--bind-from") bind_prefix = value();
    else if (a == "--probe-seconds") probe_seconds = static_cast<double>(number(value(), "--probe-seconds"));
    else if (a == "--probe-interval-ms") probe_interval_ms = number(value(), "--probe-interval-ms");
    else usage("unknown argument '" + a + "'");
  }
  auto colon = relay.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  if (colon == std::string::npos ||
      inet_pton(AF_INET, relay.substr(0, colon).c_str(), &addr.sin_addr) != 1)
    usage("--relay: '" + relay + "' is not IPv4:PORT");
  addr.sin_port = htons(static_cast<uint16_t>(number(relay.c_str() + colon + 1, "--relay")));
  if (peers == 0 || window == 0) usage("--peers and --window must be at least 1");

  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_cur < peers + 64) {
    lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, peers + 64);
    setrlimit(RLIMIT_NOFILE, &lim);
  }

  Load load(addr, peers, window, bind_prefix);
  auto t0 = Clock::now();
  load.register_all();
  auto secs = [](Clock::time_point since) {
    return std::chrono::duration<double>(Clock::now() - since).count();
  };
  std::printf("registered %zu peers in %.2f s\n", peers, secs(t0));
  std::fflush(stdout);
  t0 = Clock::now();
  if (sessions) load.open_sessions(sessions);
  std::printf("sessions %zu established in %.2f s\n", sessions, secs(t0));
  std::printf("peak: %zu peers, %zu sessions open\n", peers, sessions);
  std::fflush(stdout);
  if (probe_seconds > 0) {
    if (probe_interval_ms == 0) usage("--probe-interval-ms must be at least 1");
    auto latencies =
        load.probe_registrations(probe_seconds, std::chrono::milliseconds(probe_interval_ms));
    std::sort(latencies.begin(), latencies.end());
    const auto at = [&](double q) {
      return latencies.empty() ? 0.0
                               : latencies[std::min(latencies.size() - 1,
                                                    static_cast<size_t>(q * latencies.size()))];
    };
    std::printf("registration latency ms: count=%zu median=%.1f p99=%.1f max=%.1f\n",
                latencies.size(), at(0.5), at(0.99), latencies.empty() ? 0.0 : latencies.back());
    std::fflush(stdout);
  }
  load.keepalive_until_stdin();
  load.close_all();
  std::printf("closed\n");
  return 0;
}

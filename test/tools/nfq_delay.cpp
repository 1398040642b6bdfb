// nfq_delay: holds every packet of one NFQUEUE for a fixed time, then accepts it.
//
//   nfq_delay --queue N --delay-ms D
//
// This kernel has no netem; scripts/bench emulates link delay with it instead:
//   iptables -t mangle -A PREROUTING -i veth0 -j NFQUEUE --queue-num N --queue-bypass
//   ip netns exec NS nfq_delay --queue N --delay-ms 10 &
// Queue on the receiving side (PREROUTING): there the packet no longer belongs to the
// sending socket, so the hold does not eat into the sender's socket buffer.
//
// Every packet gets the same delay, so the release order is the arrival order and a FIFO
// is the priority queue; due packets are released with one batch verdict (all ids up to
// the newest due one). Only packet metadata is copied from the kernel. The queue fails
// open (packets are accepted when it overflows) and the rule above has --queue-bypass
// (packets pass when no program listens), so a stopped or slow tool never cuts the link.
//
// Prints "nfq_delay: queue N, delay D ms, ready" on stdout once bound; SIGINT/SIGTERM
// exit 0 and print how many packets were delayed.
#include <arpa/inet.h>  // before the netfilter headers, which include <linux/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>

#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netlink.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

namespace {

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

constexpr int64_t kNsPerMs = 1'000'000;
constexpr uint32_t kQueueMaxLen = 1u << 20;      // packets the kernel may hold for us
constexpr int kNetlinkBufferBytes = 256 << 20;  // rx buffer so bursts are not lost

int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

struct Held {
  uint32_t id;
  int64_t due_ns;
};

struct State {
  std::deque<Held> held;
  int64_t delay_ns = 0;
  uint64_t packets = 0;
};

int on_packet(nfq_q_handle*, nfgenmsg*, nfq_data* nfa, void* data) {
  auto* state = static_cast<State*>(data);
  nfqnl_msg_packet_hdr* ph = nfq_get_msg_packet_hdr(nfa);
  if (ph == nullptr) return 0;
  state->held.push_back(Held{ntohl(ph->packet_id), now_ns() + state->delay_ns});
  ++state->packets;
  return 0;
}

void usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s --queue N --delay-ms D\n", argv0);
}

}  // namespace

int main(int argc, char** argv) {
  long queue = -1;
  double delay_ms = -1;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--queue" && i + 1 < argc) {
      queue = std::strtol(argv[++i], nullptr, 10);
    } else if (arg == "--delay-ms" && i + 1 < argc) {
      delay_ms = std::strtod(argv[++i], nullptr);
    } else {
      usage(argv[0]);
      return 2;
    }
  }
  if (queue < 0 || queue > 65535 || delay_ms < 0 || delay_ms > 10000) {
    usage(argv[0]);
    return 2;
  }

  State state;
  state.delay_ns = static_cast<int64_t>(delay_ms * kNsPerMs);

  nfq_handle* h = nfq_open();
  if (h == nullptr) {
    std::fprintf(stderr, "nfq_delay: nfq_open: %s\n", std::strerror(errno));
    return 1;
  }
  nfq_q_handle* qh = nfq_create_queue(h, static_cast<uint16_t>(queue), &on_packet, &state);
  if (qh == nullptr) {
    std::fprintf(stderr, "nfq_delay: cannot bind queue %ld: %s\n", queue, std::strerror(errno));
    nfq_close(h);
    return 1;
  }
  if (nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0) {
    std::fprintf(stderr, "nfq_delay: nfq_set_mode: %s\n", std::strerror(errno));
    return 1;
  }
  nfq_set_queue_maxlen(qh, kQueueMaxLen);
  // Fail open on overflow; take GSO packets whole (no segmentation for our sake).
  uint32_t flags = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO;
  if (nfq_set_queue_flags(qh, flags, flags) < 0) {
    std::fprintf(stderr, "nfq_delay: warning: queue flags not supported\n");
  }
  int fd = nfq_fd(h);
  nfnl_rcvbufsiz(nfq_nfnlh(h), kNetlinkBufferBytes);
  int one = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);

  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  std::printf("nfq_delay: queue %ld, delay %g ms, ready\n", queue, delay_ms);
  std::fflush(stdout);

  std::vector<char> buf(1 << 16);
  int status = 0;
  while (!g_stop) {
    // Release everything that is due with one batch verdict.
    int64_t now = now_ns();
    bool release = false;
    uint32_t last_id = 0;
    while (!state.held.empty() && state.held.front().due_ns <= now) {
      last_id = state.held.front().id;
      state.held.pop_front();
      release = true;
    }
    if (release) nfq_set_verdict_batch(qh, last_id, NF_ACCEPT);

    timespec timeout{};
    timespec* timeout_ptr = nullptr;
    if (!state.held.empty()) {
      int64_t wait = state.held.front().due_ns - now_ns();
      if (wait < 0) wait = 0;
      timeout.tv_sec = wait / 1'000'000'000;
      timeout.tv_nsec = wait % 1'000'000'000;
      timeout_ptr = &timeout;
    }
    pollfd pfd{fd, POLLIN, 0};
    int n = ppoll(&pfd, 1, timeout_ptr, nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::fprintf(stderr, "nfq_delay: poll: %s\n", std::strerror(errno));
      status = 1;
      break;
    }
    if (n == 0) continue;
    // Drain what the kernel has queued for us, then go back to releasing.
    for (int batch = 0; batch < 256; ++batch) {
      ssize_t len = recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
      if (len < 0) {
        if (errno == EAGAIN || errno == EINTR) break;
        if (errno == ENOBUFS) continue;  // the kernel dropped (accepted) some: go on
        std::fprintf(stderr, "nfq_delay: recv: %s\n", std::strerror(errno));
        status = 1;
        break;
      }
      nfq_handle_packet(h, buf.data(), static_cast<int>(len));
    }
    if (status != 0) break;
  }

  // Let whatever is still held go now rather than leaving it to the kernel.
  if (!state.held.empty()) nfq_set_verdict_batch(qh, state.held.back().id, NF_ACCEPT);
  nfq_destroy_queue(qh);
  nfq_close(h);
  std::fprintf(stderr, "nfq_delay: queue %ld: %llu packets delayed\n", queue,
               static_cast<unsigned long long>(state.packets));
  return status;
}

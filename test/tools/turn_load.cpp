// A TURN load generator for scripts/bench-turn: many allocations over UDP, each with one
// channel to a peer socket of this program, and a flood of ChannelData through a few of
// them, both ways, with sendmmsg/recvmmsg so that one core of it can keep a relay
// core busy. Figures, not a test: it asserts nothing.
//
//   turn_load --server 127.0.0.1:3478 --secret S [--allocations 10000] [--flows 100]
//             [--seconds 5] [--size 1000] [--burst 16] [--rate PPS]
//
// Setup: each allocation is its own client socket (its own 5-tuple): Allocate, the 401
// with the nonce, Allocate with REST credentials (user "load"), ChannelBind 0x4000 to
// the peer socket; requests are pipelined, and retransmitted after kRetransmitMs.
// Then it prints "ready allocations=N" and waits for a line on stdin (the bench reads
// the server's memory meanwhile). Then for --seconds it floods: each of --flows
// allocations sends --burst ChannelData per round from its client socket (client ->
// relay -> peer), and the peer socket sends as many to those allocations' relayed
// addresses (peer -> relay -> client); it reads whatever arrived in between. --rate
// paces the rounds to that many datagrams per second each way. It ends
// with one line:
//   sent_to_peer=N received_at_peer=N sent_to_client=N received_at_client=N seconds=S
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "turn/credentials.h"
#include "stun/turn_framing.h"
#include "stun/turn_constants.h"

using namespace natfwd;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint16_t kChannel = 0x4000;
constexpr int kRetransmitMs = 1000;
constexpr size_t kInFlight = 512;  // allocations being set up at once
constexpr int kBufferBytes = 4 << 20;

struct Options {
  sockaddr_in server{};
  std::string secret;
  size_t allocations = 10000;
  size_t flows = 100;
  double seconds = 5;
  size_t size = 1000;
  size_t burst = 16;
  double rate = 0;  // datagrams per second each way; 0: as fast as it can send
};

enum class Step { kProbe, kAllocate, kBind, kDone };

struct Client {
  int fd = -1;
  Step step = Step::kProbe;
  std::string nonce;
  sockaddr_in relayed{};
  Clock::time_point sent{};
  uint32_t txn = 0;
};

std::span<const std::byte> bytes_of(std::string_view text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

sockaddr_in parse_address(const std::string& text) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || inet_pton(AF_INET, text.substr(0, colon).c_str(),
                                              &address.sin_addr) != 1) {
    std::fprintf(stderr, "turn_load: bad address '%s'\n", text.c_str());
    std::exit(2);
  }
  address.sin_port = htons(static_cast<uint16_t>(std::stoi(text.substr(colon + 1))));
  return address;
}

stun::TransportAddress to_transport(const sockaddr_in& address) {
  const auto* ip = reinterpret_cast<const uint8_t*>(&address.sin_addr);
  return stun::TransportAddress::ipv4({ip[0], ip[1], ip[2], ip[3]}, ntohs(address.sin_port));
}

int udp_socket() {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    std::perror("turn_load: socket (raise the open files limit)");
    std::exit(1);
  }
  // Beyond net.core.rmem_max when allowed (root): a burst the relay sends at once must
  // not be lost here and counted against the relay.
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &kBufferBytes, sizeof kBufferBytes) != 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kBufferBytes, sizeof kBufferBytes);
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &kBufferBytes, sizeof kBufferBytes) != 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &kBufferBytes, sizeof kBufferBytes);
  sockaddr_in any{};
  any.sin_family = AF_INET;
  any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&any), sizeof any) != 0) {
    std::perror("turn_load: bind");
    std::exit(1);
  }
  return fd;
}

class Setup {
 public:
  Setup(const Options& options, const sockaddr_in& peer)
      : options_(options),
        peer_(to_transport(peer)),
        user_(turn::rest_username(static_cast<uint64_t>(time(nullptr)) + 86400, "load")),
        key_(turn::long_term_key(user_, "natfwd", turn::rest_password(options.secret, user_))) {}

  // A retransmission (`fresh` false) keeps the transaction id, so that the server
  // answers it as the same request (RFC 8656 section 7.2).
  void send(Client& client, bool fresh = true) {
    stun::TransactionId id{};
    if (fresh) ++client.txn;
    std::memcpy(id.data(), &client.txn, 4);
    std::memcpy(id.data() + 4, &client.fd, 4);
    const uint16_t method =
        client.step == Step::kBind ? stun::method::kChannelBind : stun::method::kAllocate;
    stun::MessageBuilder builder(method, stun::MessageClass::kRequest, id);
    if (client.step != Step::kBind) {
      const std::byte udp[4] = {std::byte{turn::kProtocolUdp}, {}, {}, {}};
      builder.add_attribute(turn::attr::kRequestedTransport, udp);
    } else {
      const std::byte number[4] = {std::byte{kChannel >> 8}, std::byte{kChannel & 0xFF}, {}, {}};
      builder.add_attribute(turn::attr::kChannelNumber, number);
      builder.add_attribute(turn::attr::kXorPeerAddress, stun::encode_xor_address(peer_, id));
    }
    if (client.step != Step::kProbe) {
      builder.add_attribute(stun::attr::kUsername, bytes_of(user_));
      builder.add_attribute(stun::attr::kRealm, bytes_of("natfwd"));
      builder.add_attribute(stun::attr::kNonce, bytes_of(client.nonce));
      builder.add_message_integrity(key_);
    }
    builder.add_fingerprint();
    const auto bytes = builder.bytes();
    sendto(client.fd, bytes.data(), bytes.size(), 0,
           reinterpret_cast<const sockaddr*>(&options_.server), sizeof options_.server);
    client.sent = Clock::now();
  }

  // One answer; false when the allocation cannot be made.
  bool on_answer(Client& client, std::span<const std::byte> bytes) {
    int& last_error = last_error_;
    auto parsed = stun::parse(bytes);
    if (parsed.status != stun::ParseStatus::kOk) return true;
    const stun::Message& message = parsed.message;
    if (std::memcmp(message.transaction_id.data(), &client.txn, 4) != 0) return true;  // stale
    if (message.message_class() == stun::MessageClass::kErrorResponse) {
      const auto* error = message.find(stun::attr::kErrorCode);
      const auto code = error ? stun::decode_error_code(error->value) : std::nullopt;
      const auto* nonce = message.find(stun::attr::kNonce);
      if (code && (code->code == 401 || code->code == 438) && nonce) {
        client.nonce.assign(reinterpret_cast<const char*>(nonce->value.data()),
                            nonce->value.size());
        if (client.step == Step::kProbe) client.step = Step::kAllocate;
        send(client);
        return true;
      }
      last_error = code ? code->code : 0;
      return false;
    }
    if (client.step == Step::kAllocate) {
      const auto* relayed = message.find(turn::attr::kXorRelayedAddress);
      auto address = relayed ? stun::decode_xor_address(relayed->value, message.transaction_id)
                             : std::nullopt;
      if (!address) return false;
      client.relayed.sin_family = AF_INET;
      client.relayed.sin_port = htons(address->port);
      std::memcpy(&client.relayed.sin_addr, address->ip.data(), 4);
      client.step = Step::kBind;
      send(client);
      return true;
    }
    client.step = Step::kDone;
    return true;
  }

  int last_error() const { return last_error_; }

 private:
  int last_error_ = 0;
  const Options& options_;
  stun::TransportAddress peer_;
  std::string user_;
  std::array<std::byte, 16> key_;
};

// Makes every allocation; returns how many.
size_t set_up(const Options& options, std::vector<Client>& clients, const sockaddr_in& peer) {
  Setup setup(options, peer);
  size_t next = 0, done = 0, failed = 0;
  std::vector<size_t> active;
  std::array<std::byte, 2048> buffer;
  while (done + failed < clients.size()) {
    while (active.size() < kInFlight && next < clients.size()) {
      setup.send(clients[next]);
      active.push_back(next++);
    }
    std::vector<pollfd> fds;
    for (size_t index : active) fds.push_back({clients[index].fd, POLLIN, 0});
    poll(fds.data(), fds.size(), 100);
    const auto now = Clock::now();
    for (size_t i = 0; i < active.size();) {
      Client& client = clients[active[i]];
      bool ok = true;
      ssize_t n;
      while (ok && client.step != Step::kDone &&
             (n = recv(client.fd, buffer.data(), buffer.size(), 0)) > 0)
        ok = setup.on_answer(client, std::span(buffer.data(), static_cast<size_t>(n)));
      if (ok && client.step != Step::kDone &&
          now - client.sent > std::chrono::milliseconds(kRetransmitMs))
        setup.send(client, /*fresh=*/false);
      if (!ok || client.step == Step::kDone) {
        (ok ? done : failed) += 1;
        active[i] = active.back();
        active.pop_back();
      } else {
        ++i;
      }
    }
  }
  if (failed > 0)
    std::fprintf(stderr, "turn_load: %zu allocations refused (last error %d)\n", failed,
                 setup.last_error());
  return done;
}

// Reads everything waiting on `fd`; returns the datagrams.
size_t drain(int fd, std::vector<mmsghdr>& headers) {
  size_t total = 0;
  for (;;) {
    const int n = recvmmsg(fd, headers.data(), static_cast<unsigned>(headers.size()), MSG_DONTWAIT,
                           nullptr);
    if (n <= 0) return total;
    total += static_cast<size_t>(n);
    if (static_cast<size_t>(n) < headers.size()) return total;
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  bool have_server = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--server") {
      options.server = parse_address(value);
      have_server = true;
    } else if (flag == "--secret") {
      options.secret = value;
    } else if (flag == "--allocations") {
      options.allocations = std::stoul(value);
    } else if (flag == "--flows") {
      options.flows = std::stoul(value);
    } else if (flag == "--seconds") {
      options.seconds = std::stod(value);
    } else if (flag == "--size") {
      options.size = std::stoul(value);
    } else if (flag == "--burst") {
      options.burst = std::stoul(value);
    } else if (flag == "--rate") {
      options.rate = std::stod(value);
    } else {
      std::fprintf(stderr, "turn_load: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (!have_server || options.secret.empty()) {
    std::fprintf(stderr, "usage: turn_load --server IP:PORT --secret S [--allocations N] "
                         "[--flows N] [--seconds S] [--size BYTES] [--burst N] [--rate PPS]\n");
    return 2;
  }
  rlimit files{};
  getrlimit(RLIMIT_NOFILE, &files);
  files.rlim_cur = files.rlim_max;
  setrlimit(RLIMIT_NOFILE, &files);

  const int peer = udp_socket();
  sockaddr_in peer_address{};
  socklen_t length = sizeof peer_address;
  getsockname(peer, reinterpret_cast<sockaddr*>(&peer_address), &length);
  std::vector<Client> clients(options.allocations);
  for (auto& client : clients) client.fd = udp_socket();
  const size_t made = set_up(options, clients, peer_address);
  std::printf("ready allocations=%zu\n", made);
  std::fflush(stdout);
  if (made < options.flows) return 1;
  std::string go;
  std::getline(std::cin, go);

  // The flows: the first --flows allocations.
  const size_t flows = options.flows, burst = options.burst;
  const auto payload = std::vector<std::byte>(options.size, std::byte{0x5a});
  const auto channel_data = turn::encode_channel_data(kChannel, payload, false);
  std::vector<mmsghdr> client_out(burst), peer_out(flows * burst), in(256);
  std::vector<iovec> client_iov(burst), peer_iov(flows * burst), in_iov(in.size());
  std::vector<std::array<std::byte, 2048>> in_buffers(in.size());
  for (size_t i = 0; i < burst; ++i) {
    client_iov[i] = {const_cast<std::byte*>(channel_data.data()), channel_data.size()};
    client_out[i].msg_hdr = {};
    client_out[i].msg_hdr.msg_name = &options.server;
    client_out[i].msg_hdr.msg_namelen = sizeof options.server;
    client_out[i].msg_hdr.msg_iov = &client_iov[i];
    client_out[i].msg_hdr.msg_iovlen = 1;
  }
  for (size_t i = 0; i < flows * burst; ++i) {
    peer_iov[i] = {const_cast<std::byte*>(payload.data()), payload.size()};
    peer_out[i].msg_hdr = {};
    peer_out[i].msg_hdr.msg_name = &clients[i / burst].relayed;
    peer_out[i].msg_hdr.msg_namelen = sizeof(sockaddr_in);
    peer_out[i].msg_hdr.msg_iov = &peer_iov[i];
    peer_out[i].msg_hdr.msg_iovlen = 1;
  }
  for (size_t i = 0; i < in.size(); ++i) {
    in_iov[i] = {in_buffers[i].data(), in_buffers[i].size()};
    in[i].msg_hdr = {};
    in[i].msg_hdr.msg_iov = &in_iov[i];
    in[i].msg_hdr.msg_iovlen = 1;
  }
  uint64_t sent_to_peer = 0, received_at_peer = 0, sent_to_client = 0, received_at_client = 0;
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(options.seconds));
  while (Clock::now() < end) {
    if (options.rate > 0) {
      // Paced: a round of flows * burst datagrams each way when its time has come.
      const auto due = start + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(
                                       static_cast<double>(sent_to_peer) / options.rate));
      if (Clock::now() < due) {
        received_at_peer += drain(peer, in);
        for (size_t f = 0; f < flows; ++f) received_at_client += drain(clients[f].fd, in);
        std::this_thread::sleep_until(std::min(due, end));
        continue;
      }
    }
    for (size_t f = 0; f < flows; ++f) {
      const int n = sendmmsg(clients[f].fd, client_out.data(), static_cast<unsigned>(burst), 0);
      if (n > 0) sent_to_peer += static_cast<uint64_t>(n);
    }
    for (size_t offset = 0; offset < peer_out.size();) {
      const size_t count = std::min<size_t>(peer_out.size() - offset, 1024);
      const int n = sendmmsg(peer, peer_out.data() + offset, static_cast<unsigned>(count), 0);
      if (n <= 0) break;
      sent_to_client += static_cast<uint64_t>(n);
      offset += static_cast<size_t>(n);
    }
    received_at_peer += drain(peer, in);
    for (size_t f = 0; f < flows; ++f) received_at_client += drain(clients[f].fd, in);
  }
  // What is still on its way.
  const auto settle = Clock::now() + std::chrono::milliseconds(500);
  while (Clock::now() < settle) {
    pollfd one{peer, POLLIN, 0};
    poll(&one, 1, 50);
    received_at_peer += drain(peer, in);
    for (size_t f = 0; f < flows; ++f) received_at_client += drain(clients[f].fd, in);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("sent_to_peer=%llu received_at_peer=%llu sent_to_client=%llu "
              "received_at_client=%llu seconds=%.2f\n",
              static_cast<unsigned long long>(sent_to_peer),
              static_cast<unsigned long long>(received_at_peer),
              static_cast<unsigned long long>(sent_to_client),
              static_cast<unsigned long long>(received_at_client), seconds);
  return 0;
}

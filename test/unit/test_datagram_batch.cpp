// net::DatagramBatch: how queued datagrams become sendmmsg slots and GSO runs, and how a
// batch is split on partial sends and errors, through a fake sender; and once through
// a real loopback socket, that the kernel cuts a GSO run back into the same datagrams.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>
#include <deque>
#include <vector>

#include "net/datagram_batch.h"

using natfwd::net::DatagramBatch;
using natfwd::net::UdpIoMode;

namespace {

#ifndef UDP_SEGMENT
constexpr int UDP_SEGMENT = 103;
#endif

struct Datagram {
  uint16_t port;
  std::vector<std::byte> bytes;
  bool operator==(const Datagram&) const = default;
};

sockaddr_storage address_of(uint16_t port, socklen_t& length) {
  sockaddr_storage storage{};
  auto* in = reinterpret_cast<sockaddr_in*>(&storage);
  in->sin_family = AF_INET;
  in->sin_port = htons(port);
  in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  length = sizeof(sockaddr_in);
  return storage;
}

Datagram make(uint16_t port, size_t size, int tag) {
  Datagram d{port, std::vector<std::byte>(size)};
  for (size_t i = 0; i < size; ++i) d.bytes[i] = std::byte(static_cast<uint8_t>(tag * 31 + i));
  return d;
}

void add_all(DatagramBatch& batch, const std::vector<Datagram>& datagrams) {
  for (const auto& d : datagrams) {
    socklen_t length = 0;
    const auto to = address_of(d.port, length);
    batch.add(to, length, d.bytes);
  }
}

// A kernel stand-in: records what each accepted slot puts on the wire (a GSO slot
// becomes its segments), takes at most `per_call` slots per call, and answers with
// the scripted errors first.
struct FakeKernel {
  size_t per_call = 1024;
  std::deque<int> errors;  // 0 = accept; -errno = fail the first slot of this call
  bool refuse_gso = false;
  std::vector<Datagram> wire;
  size_t calls = 0;
  size_t gso_slots = 0;

  int gso_error = EIO;

  int send(std::span<mmsghdr> slots) {
    ++calls;
    if (!errors.empty()) {
      const int error = errors.front();
      errors.pop_front();
      if (error != 0) return error;
    }
    int taken = 0;
    for (auto& slot : slots) {
      if (static_cast<size_t>(taken) == per_call) break;
      const msghdr& header = slot.msg_hdr;
      uint16_t segment = 0;
      for (cmsghdr* c = CMSG_FIRSTHDR(&header); c; c = CMSG_NXTHDR(const_cast<msghdr*>(&header), c))
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_SEGMENT)
          std::memcpy(&segment, CMSG_DATA(c), sizeof segment);
      if (segment && refuse_gso) return taken > 0 ? taken : -gso_error;
      const auto* in = static_cast<const sockaddr_in*>(header.msg_name);
      std::vector<std::byte> bytes;
      for (size_t i = 0; i < header.msg_iovlen; ++i) {
        const auto* base = static_cast<const std::byte*>(header.msg_iov[i].iov_base);
        bytes.insert(bytes.end(), base, base + header.msg_iov[i].iov_len);
      }
      if (segment) {
        ++gso_slots;
        REQUIRE(bytes.size() <= DatagramBatch::kMaxGsoBytes);
        REQUIRE((bytes.size() + segment - 1) / segment <= DatagramBatch::kMaxSegments);
        for (size_t at = 0; at < bytes.size(); at += segment)
          wire.push_back({ntohs(in->sin_port),
                          {bytes.begin() + at,
                           bytes.begin() + std::min(bytes.size(), at + segment)}});
      } else {
        wire.push_back({ntohs(in->sin_port), bytes});
      }
      ++taken;
    }
    return taken;
  }
  DatagramBatch::SendFn fn() {
    return [this](std::span<mmsghdr> slots) { return send(slots); };
  }
};

DatagramBatch::Outcome send_burst(DatagramBatch& batch, FakeKernel& kernel,
                                  const std::vector<Datagram>& burst) {
  add_all(batch, burst);
  return batch.flush(kernel.fn());
}

// A burst that mixes destinations and sizes: runs to one destination, a shorter tail,
// a change of destination in the middle, a larger datagram after smaller ones.
std::vector<Datagram> mixed_burst() {
  std::vector<Datagram> out;
  int tag = 0;
  for (int i = 0; i < 5; ++i) out.push_back(make(1000, 1000, tag++));
  out.push_back(make(1000, 300, tag++));  // tail: may end the run
  out.push_back(make(1000, 1000, tag++));
  out.push_back(make(2000, 1000, tag++));  // other destination
  out.push_back(make(1000, 1000, tag++));
  out.push_back(make(1000, 1200, tag++));  // larger: may not join
  out.push_back(make(1000, 1200, tag++));
  out.push_back(make(3000, 0, tag++));  // empty datagram: never segmented
  out.push_back(make(3000, 0, tag++));
  return out;
}

}  // namespace

TEST_CASE("datagram batch: every mode puts the same datagrams on the wire, in order") {
  for (auto mode : {UdpIoMode::kGso, UdpIoMode::kBatch, UdpIoMode::kSingle}) {
    DatagramBatch batch(mode);
    FakeKernel kernel;
    const auto burst = mixed_burst();
    const auto outcome = send_burst(batch, kernel, burst);
    CHECK(kernel.wire == burst);
    CHECK(outcome.sent == burst.size());
    CHECK(outcome.dropped == 0);
    CHECK(batch.empty());
    if (mode == UdpIoMode::kGso) {
      // 5x1000+300, 1000, [2000], 1000, 1200x2, 0, 0
      CHECK(kernel.gso_slots == 2);
      CHECK(kernel.calls == 1);
    } else {
      CHECK(kernel.gso_slots == 0);
    }
  }
}

TEST_CASE("datagram batch: a datagram given in pieces goes out joined, and joins GSO runs") {
  // The relay's ChannelData toward a client: a 4-byte header, then the payload where it
  // was read. Pieces or whole, the wire is the same.
  const auto burst = mixed_burst();
  DatagramBatch batch;
  FakeKernel kernel;
  for (const auto& d : burst) {
    socklen_t length = 0;
    const auto to = address_of(d.port, length);
    const std::span<const std::byte> bytes(d.bytes);
    const size_t head = std::min<size_t>(4, bytes.size());
    const std::span<const std::byte> pieces[] = {bytes.first(head), bytes.subspan(head),
                                                 std::span<const std::byte>()};
    batch.add(to, length, pieces);
  }
  const auto outcome = batch.flush(kernel.fn());
  CHECK(kernel.wire == burst);
  CHECK(outcome.sent == burst.size());
  CHECK(kernel.gso_slots == 2);  // as when added whole
}

TEST_CASE("datagram batch: a partial send resumes where the kernel stopped") {
  for (size_t per_call : {1u, 2u, 3u}) {
    DatagramBatch batch;
    FakeKernel kernel;
    kernel.per_call = per_call;
    const auto burst = mixed_burst();
    const auto outcome = send_burst(batch, kernel, burst);
    CHECK(kernel.wire == burst);
    CHECK(outcome.sent == burst.size());
  }
}

TEST_CASE("datagram batch: an error drops only the slot it names") {
  DatagramBatch batch(UdpIoMode::kBatch);
  FakeKernel kernel;
  kernel.per_call = 2;
  std::vector<Datagram> burst;
  for (int i = 0; i < 6; ++i) burst.push_back(make(static_cast<uint16_t>(1000 + i), 100, i));
  add_all(batch, burst);
  // First call takes 0 and 1; the second fails on 2 (ICMP port unreachable reported
  // late); the rest goes.
  kernel.errors = {0, -ECONNREFUSED};
  const auto outcome = batch.flush(kernel.fn());
  auto expected = burst;
  expected.erase(expected.begin() + 2);
  CHECK(kernel.wire == expected);
  CHECK(outcome.sent == 5);
  CHECK(outcome.dropped == 1);
  CHECK(outcome.last_error == ECONNREFUSED);
}

TEST_CASE("datagram batch: a full socket drops the rest of the batch") {
  DatagramBatch batch;
  FakeKernel kernel;
  kernel.per_call = 1;
  const auto burst = mixed_burst();
  kernel.errors = {0, -EAGAIN};
  const auto outcome = send_burst(batch, kernel, burst);
  // The first slot is the GSO run of six.
  REQUIRE(kernel.wire.size() == 6);
  CHECK(std::equal(kernel.wire.begin(), kernel.wire.end(), burst.begin()));
  CHECK(outcome.sent == 6);
  CHECK(outcome.dropped == burst.size() - 6);
  CHECK(batch.empty());
}

TEST_CASE("datagram batch: a refused GSO run is sent again datagram by datagram") {
  // EIO (no checksum offload) is for good; EINVAL (a segment over the path MTU) is
  // for that run only.
  for (int error : {EIO, EINVAL}) {
    DatagramBatch batch;
    FakeKernel kernel;
    kernel.refuse_gso = true;
    kernel.gso_error = error;
    const auto burst = mixed_burst();
    const auto outcome = send_burst(batch, kernel, burst);
    CHECK(kernel.wire == burst);
    CHECK(outcome.sent == burst.size());
    CHECK(outcome.dropped == 0);
    CHECK(batch.mode() == (error == EIO ? UdpIoMode::kBatch : UdpIoMode::kGso));
  }
}

TEST_CASE("datagram batch: runs respect the segment count and the size of one IP datagram") {
  DatagramBatch batch;
  FakeKernel kernel;
  std::vector<Datagram> burst;
  for (int i = 0; i < 64; ++i) burst.push_back(make(1000, 1400, i));  // 89,600 bytes
  CHECK(send_burst(batch, kernel, burst).sent == 64);
  CHECK(kernel.wire == burst);
  CHECK(kernel.gso_slots == 2);

  FakeKernel small;
  std::vector<Datagram> tiny;
  for (int i = 0; i < 64; ++i) tiny.push_back(make(1000, 10, i));
  CHECK(send_burst(batch, small, tiny).sent == 64);
  CHECK(small.wire == tiny);
  CHECK(small.gso_slots == 1);
}

TEST_CASE("datagram batch: the kernel cuts a GSO run on loopback back into datagrams") {
  // Two receivers, so that the batch holds a run to each and a change between them.
  int receivers[2];
  uint16_t ports[2];
  for (int i = 0; i < 2; ++i) {
    receivers[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    REQUIRE(receivers[i] >= 0);
    socklen_t length = 0;
    auto any = address_of(0, length);
    REQUIRE(bind(receivers[i], reinterpret_cast<sockaddr*>(&any), length) == 0);
    REQUIRE(getsockname(receivers[i], reinterpret_cast<sockaddr*>(&any), &length) == 0);
    ports[i] = ntohs(reinterpret_cast<sockaddr_in*>(&any)->sin_port);
  }
  const int sender = socket(AF_INET, SOCK_DGRAM, 0);
  REQUIRE(sender >= 0);
  std::vector<Datagram> burst;
  for (int i = 0; i < 8; ++i) burst.push_back(make(ports[0], 500, i));
  burst.push_back(make(ports[0], 123, 8));
  for (int i = 0; i < 4; ++i) burst.push_back(make(ports[1], 700, 9 + i));
  burst.push_back(make(ports[0], 500, 13));
  for (auto mode : {UdpIoMode::kGso, UdpIoMode::kBatch, UdpIoMode::kSingle}) {
    DatagramBatch batch(mode);
    add_all(batch, burst);
    const auto outcome = batch.flush(sender);
    CHECK(outcome.sent == burst.size());
    // Loopback delivers synchronously: everything is queued at the receivers now.
    std::vector<Datagram> got[2];
    for (int i = 0; i < 2; ++i) {
      std::vector<std::byte> buffer(65536);
      ssize_t n;
      while ((n = recv(receivers[i], buffer.data(), buffer.size(), 0)) >= 0)
        got[i].push_back({ports[i], {buffer.begin(), buffer.begin() + n}});
    }
    std::vector<Datagram> want[2];
    for (const auto& d : burst) want[d.port == ports[0] ? 0 : 1].push_back(d);
    CHECK(got[0] == want[0]);
    CHECK(got[1] == want[1]);
  }
  close(sender);
  close(receivers[0]);
  close(receivers[1]);
}

// The selected pair's own receive path: which pairs qualify, STUN against QUIC, the
// answers owed to connectivity checks (against the RFC 5769 ICE sample), and on
// loopback sockets that a connected socket beside an ICE socket takes the remote
// candidate's datagrams and only those, and gives them back when it closes.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <memory>
#include <vector>

#include <glib.h>

#include "ice/connected_receive.h"
#include "ice/connected_receiver.h"
#include "stun/stun_message.h"
#include "loopback_udp.h"
#include "stun_vectors.h"

using namespace natfwd;
using natfwd::test::address_of;
using natfwd::test::loopback_udp_socket;
using natfwd::test::run_until;

namespace {

std::vector<std::byte> quic_like(uint8_t first, size_t size) {
  std::vector<std::byte> out(size, std::byte{0x5a});
  out[0] = std::byte{first};
  return out;
}

const auto kFrom = stun::TransportAddress::ipv4({192, 0, 2, 1}, 32853);

}  // namespace

TEST_CASE("only direct UDP pairs are read on a connected socket") {
  using K = CandidateKind;
  for (K local : {K::kHost, K::kServerReflexive, K::kPeerReflexive})
    for (K remote : {K::kHost, K::kServerReflexive, K::kPeerReflexive}) {
      CHECK(receives_on_connected_socket({true, local, remote}));
      CHECK_FALSE(receives_on_connected_socket({false, local, remote}));  // ICE-TCP
    }
  for (K other : {K::kHost, K::kServerReflexive, K::kPeerReflexive, K::kRelayed}) {
    CHECK_FALSE(receives_on_connected_socket({true, K::kRelayed, other}));
    CHECK_FALSE(receives_on_connected_socket({true, other, K::kRelayed}));
  }
}

TEST_CASE("STUN is told from QUIC by its first bits and the magic cookie") {
  CHECK(classify_datagram(stun::test::kSampleRequest) == DatagramKind::kStun);
  CHECK(classify_datagram(stun::test::binding_request(stun::test::sample_transaction_id())) ==
        DatagramKind::kStun);
  stun::MessageBuilder indication(stun::method::kBinding, stun::MessageClass::kIndication,
                                  stun::test::sample_transaction_id());
  indication.add_fingerprint();
  CHECK(classify_datagram(indication.bytes()) == DatagramKind::kStun);
  // QUIC long and short headers carry the fixed bit 0x40 (RFC 9000 section 17).
  CHECK(classify_datagram(quic_like(0xc3, 1200)) == DatagramKind::kData);
  CHECK(classify_datagram(quic_like(0x41, 1350)) == DatagramKind::kData);
  CHECK(classify_datagram(quic_like(0x00, 1350)) == DatagramKind::kData);  // no cookie
  CHECK(classify_datagram(quic_like(0x40, 1)) == DatagramKind::kData);
  CHECK(classify_datagram({}) == DatagramKind::kData);
  // A STUN header cut short is not STUN: it goes on as data, as libnice passes it.
  CHECK(classify_datagram(std::span(stun::test::kSampleRequest).first(12)) ==
        DatagramKind::kData);
}

TEST_CASE("a connectivity check for us is answered as RFC 8445 section 7.3 says") {
  // RFC 5769 section 2.1: USERNAME "evtj:h6vY", so our ufrag is "evtj".
  CheckResponder responder("evtj", std::string(stun::test::kPassword));
  for (const auto& from :
       {kFrom, stun::TransportAddress::ipv6({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                             0, 0, 1},
                                            9)}) {
    const auto answer = responder.answer(stun::test::kSampleRequest, from);
    REQUIRE(answer);
    const auto parsed = stun::parse(*answer);
    REQUIRE(parsed.status == stun::ParseStatus::kOk);
    const stun::Message& response = parsed.message;
    CHECK(response.method() == stun::method::kBinding);
    CHECK(response.message_class() == stun::MessageClass::kSuccessResponse);
    CHECK(response.transaction_id == stun::test::sample_transaction_id());
    CHECK(response.has_fingerprint);
    CHECK(stun::verify_message_integrity(response, stun::test::as_bytes(stun::test::kPassword)));
    const auto* mapped = response.find(stun::attr::kXorMappedAddress);
    REQUIRE(mapped);
    CHECK(stun::decode_xor_address(mapped->value, response.transaction_id) == from);
  }
}

TEST_CASE("anything but a valid check for us gets no answer") {
  SECTION("another agent's ufrag") {
    CHECK_FALSE(CheckResponder("h6vY", std::string(stun::test::kPassword))
                    .answer(stun::test::kSampleRequest, kFrom));
    CHECK_FALSE(CheckResponder("evt", std::string(stun::test::kPassword))
                    .answer(stun::test::kSampleRequest, kFrom));
  }
  SECTION("the wrong password") {
    CHECK_FALSE(CheckResponder("evtj", "not the password").answer(stun::test::kSampleRequest, kFrom));
  }
  SECTION("a tampered check") {
    auto tampered = stun::test::kSampleRequest;
    tampered[24 + 4] ^= std::byte{1};  // inside SOFTWARE, covered by the integrity
    CHECK_FALSE(CheckResponder("evtj", std::string(stun::test::kPassword)).answer(tampered, kFrom));
  }
  CheckResponder responder("evtj", std::string(stun::test::kPassword));
  SECTION("a check with no USERNAME or integrity") {
    CHECK_FALSE(responder.answer(stun::test::binding_request(stun::test::sample_transaction_id()),
                                 kFrom));
  }
  SECTION("keepalive indications and responses") {
    stun::MessageBuilder indication(stun::method::kBinding, stun::MessageClass::kIndication,
                                    stun::test::sample_transaction_id());
    indication.add_fingerprint();
    CHECK_FALSE(responder.answer(indication.bytes(), kFrom));
    CHECK_FALSE(responder.answer(stun::test::kSampleIpv4Response, kFrom));
  }
  SECTION("garbage") {
    CHECK_FALSE(responder.answer(quic_like(0x00, 40), kFrom));
    CHECK_FALSE(responder.answer(std::span(stun::test::kSampleRequest).first(20), kFrom));
  }
}

namespace {

void send_to(int from, int to, std::span<const std::byte> bytes) {
  const auto address = address_of(to);
  REQUIRE(sendto(from, bytes.data(), bytes.size(), 0, reinterpret_cast<const sockaddr*>(&address),
                 sizeof(sockaddr_in)) == static_cast<ssize_t>(bytes.size()));
}

std::vector<std::byte> read_one(int fd) {
  std::vector<std::byte> buffer(2048);
  const gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
  while (g_get_monotonic_time() < deadline) {
    const ssize_t n = recv(fd, buffer.data(), buffer.size(), 0);
    if (n >= 0) {
      buffer.resize(static_cast<size_t>(n));
      return buffer;
    }
  }
  return {};
}

struct Fds {
  int ice, remote, stranger;
  ~Fds() {
    close(ice);
    close(remote);
    close(stranger);
  }
};

}  // namespace

TEST_CASE("a connected socket takes the remote candidate's datagrams and gives them back") {
  // `ice` stands for libnice's socket: bound without SO_REUSEADDR, as GLib binds it.
  Fds fds{loopback_udp_socket(), loopback_udp_socket(), loopback_udp_socket()};
  std::vector<std::vector<std::byte>> received;
  auto receiver = ConnectedReceiver::open(
      fds.ice, address_of(fds.remote), CheckResponder("evtj", std::string(stun::test::kPassword)),
      [&](std::span<const std::byte> datagram) { received.emplace_back(datagram.begin(), datagram.end()); });
  REQUIRE(receiver);
  // libnice's socket keeps its own SO_REUSEADDR (off), so no third socket can join.
  int reuse = -1;
  socklen_t length = sizeof reuse;
  getsockopt(fds.ice, SOL_SOCKET, SO_REUSEADDR, &reuse, &length);
  CHECK(reuse == 0);
  {
    const int third = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    const int on = 1;
    setsockopt(third, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    const auto ice_address = address_of(fds.ice);
    CHECK(bind(third, reinterpret_cast<const sockaddr*>(&ice_address), sizeof(sockaddr_in)) != 0);
    close(third);
  }

  // The remote candidate's QUIC datagrams arrive on the connected socket, in order.
  const int kCount = 600;  // more than one wakeup's batch
  for (int i = 0; i < kCount; ++i) {
    auto datagram = quic_like(0x40, 1200);
    datagram[1] = static_cast<std::byte>(i);
    send_to(fds.remote, fds.ice, datagram);
  }
  REQUIRE(run_until([&] { return received.size() == kCount; }));
  for (int i = 0; i < kCount; ++i) CHECK(received[i][1] == static_cast<std::byte>(i));
  CHECK(receiver->datagrams() == kCount);

  // Its connectivity check is answered from the pair's own address; a keepalive is not.
  stun::MessageBuilder keepalive(stun::method::kBinding, stun::MessageClass::kIndication,
                                 stun::test::sample_transaction_id());
  keepalive.add_fingerprint();
  send_to(fds.remote, fds.ice, keepalive.bytes());
  send_to(fds.remote, fds.ice, stun::test::kSampleRequest);
  REQUIRE(run_until([&] { return receiver->checks_answered() == 1; }));
  sockaddr_storage from{};
  socklen_t from_length = sizeof from;
  std::vector<std::byte> answer(2048);
  const gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
  ssize_t n = -1;
  while (n < 0 && g_get_monotonic_time() < deadline)
    n = recvfrom(fds.remote, answer.data(), answer.size(), 0, reinterpret_cast<sockaddr*>(&from),
                 &from_length);
  REQUIRE(n > 0);
  answer.resize(static_cast<size_t>(n));
  const auto ice_address = address_of(fds.ice);
  CHECK(std::memcmp(&from, &ice_address, sizeof(sockaddr_in)) == 0);
  const auto parsed = stun::parse(answer);
  REQUIRE(parsed.status == stun::ParseStatus::kOk);
  CHECK(parsed.message.message_class() == stun::MessageClass::kSuccessResponse);
  CHECK(received.size() == kCount);  // STUN never reaches the tunnel

  // Anyone else still reaches libnice's socket.
  send_to(fds.stranger, fds.ice, quic_like(0x40, 100));
  CHECK(read_one(fds.ice).size() == 100);

  // Closed (the pair changed): the remote candidate's datagrams go to libnice again.
  receiver.reset();
  send_to(fds.remote, fds.ice, quic_like(0x40, 200));
  CHECK(read_one(fds.ice).size() == 200);
  CHECK(received.size() == kCount);
}

TEST_CASE("a pair the kernel will not give a connected socket stays on libnice's") {
  Fds fds{loopback_udp_socket(), loopback_udp_socket(), loopback_udp_socket()};
  // An IPv6 remote for an IPv4 socket: the open fails and says so, nothing else.
  sockaddr_storage v6{};
  v6.ss_family = AF_INET6;
  reinterpret_cast<sockaddr_in6&>(v6).sin6_port = htons(9);
  CHECK_FALSE(ConnectedReceiver::open(fds.ice, v6, CheckResponder("a", "b"),
                                      [](std::span<const std::byte>) {}));
  // A descriptor that is not a socket.
  CHECK_FALSE(ConnectedReceiver::open(-1, address_of(fds.remote), CheckResponder("a", "b"),
                                      [](std::span<const std::byte>) {}));
  send_to(fds.remote, fds.ice, quic_like(0x40, 64));
  CHECK(read_one(fds.ice).size() == 64);
}

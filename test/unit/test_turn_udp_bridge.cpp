// The TURN-over-UDP bridge's fast lane (turn_udp_bridge.h): which datagrams from the
// TURN server are the tunnel's (I/O-free), and on loopback sockets that the bridge's
// upstream is a twin of libnice's socket, carries libnice's traffic both ways, and
// hands the tunnel's datagrams over in order and nothing else.
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
#include "ice/turn_udp_bridge.h"
#include "net/socket_address.h"
#include "stun/stun_message.h"
#include "stun/turn_constants.h"
#include "stun/turn_framing.h"
#include "loopback_udp.h"
#include "stun_vectors.h"

using namespace natfwd;
using natfwd::test::address_of;
using natfwd::test::loopback_udp_socket;
using natfwd::test::run_until;

namespace {

std::vector<std::byte> quic_like(uint8_t first, size_t size, uint8_t tag = 0x5a) {
  std::vector<std::byte> out(size, std::byte{tag});
  out[0] = std::byte{first};
  return out;
}

// ChannelData as the server sends it over UDP, then `padding` bytes (section 12.5
// allows them; a receiver goes by the length field).
std::vector<std::byte> channel_data(uint16_t channel, std::span<const std::byte> data,
                                    size_t padding = 0) {
  auto out = turn::encode_channel_data(channel, data, false);
  out.resize(out.size() + padding);
  return out;
}

std::vector<std::byte> data_indication(std::span<const std::byte> data) {
  stun::MessageBuilder indication(stun::method::kData, stun::MessageClass::kIndication,
                                  stun::test::sample_transaction_id());
  const auto peer = stun::encode_xor_address(stun::TransportAddress::ipv4({203, 0, 113, 7}, 4242),
                                             stun::test::sample_transaction_id());
  indication.add_attribute(turn::attr::kXorPeerAddress, peer);
  indication.add_attribute(turn::attr::kData, data);
  return indication.take();
}

bool same_bytes(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

}  // namespace

TEST_CASE("the tunnel's data is told from what libnice must see in a TURN server's datagram") {
  const auto quic = quic_like(0x40, 1200);
  SECTION("ChannelData carrying a QUIC packet, with or without padding") {
    for (size_t padding : {0, 3}) {
      const auto message = channel_data(0x4001, quic, padding);
      const auto data = tunnel_data_from_turn_server(message);
      REQUIRE(data);
      CHECK(same_bytes(*data, quic));
      CHECK(data->data() == message.data() + 4);  // a view, no copy
    }
    const auto odd = quic_like(0xc3, 37);
    CHECK(same_bytes(*tunnel_data_from_turn_server(channel_data(0x7fff, odd, 3)), odd));
  }
  SECTION("a Data indication carrying a QUIC packet") {
    const auto message = data_indication(quic);
    const auto data = tunnel_data_from_turn_server(message);
    REQUIRE(data);
    CHECK(same_bytes(*data, quic));
  }
  SECTION("the remote's connectivity checks, relayed either way, are libnice's") {
    CHECK_FALSE(tunnel_data_from_turn_server(channel_data(0x4001, stun::test::kSampleRequest)));
    CHECK_FALSE(tunnel_data_from_turn_server(data_indication(stun::test::kSampleRequest)));
  }
  SECTION("the server's own answers are libnice's") {
    CHECK_FALSE(tunnel_data_from_turn_server(stun::test::kSampleIpv4Response));
    stun::MessageBuilder refreshed(0x004, stun::MessageClass::kSuccessResponse,
                                   stun::test::sample_transaction_id());
    refreshed.add_fingerprint();
    CHECK_FALSE(tunnel_data_from_turn_server(refreshed.bytes()));
    // A Send indication is never sent to a client; nothing in it is for the tunnel.
    stun::MessageBuilder send(stun::method::kSend, stun::MessageClass::kIndication,
                              stun::test::sample_transaction_id());
    send.add_attribute(turn::attr::kData, quic);
    CHECK_FALSE(tunnel_data_from_turn_server(send.bytes()));
  }
  SECTION("cut short, empty or garbage: not the tunnel's") {
    auto cut = channel_data(0x4001, quic);
    cut.resize(cut.size() - 1);
    CHECK_FALSE(tunnel_data_from_turn_server(cut));
    CHECK_FALSE(tunnel_data_from_turn_server(channel_data(0x4001, {})));
    CHECK_FALSE(tunnel_data_from_turn_server(std::vector<std::byte>(3, std::byte{0x40})));
    CHECK_FALSE(tunnel_data_from_turn_server({}));
    CHECK_FALSE(tunnel_data_from_turn_server(quic_like(0x80, 64)));
    stun::MessageBuilder empty(stun::method::kData, stun::MessageClass::kIndication,
                               stun::test::sample_transaction_id());
    CHECK_FALSE(tunnel_data_from_turn_server(empty.bytes()));  // no DATA
  }
}

namespace {

void send_to(int from, const sockaddr_storage& to, std::span<const std::byte> bytes) {
  REQUIRE(sendto(from, bytes.data(), bytes.size(), 0, reinterpret_cast<const sockaddr*>(&to),
                 sizeof(sockaddr_in)) == static_cast<ssize_t>(bytes.size()));
}

// One datagram read on `fd` while the main loop runs (the bridge forwards from it).
struct Received {
  std::vector<std::byte> bytes;
  sockaddr_storage from{};
};
Received read_one(int fd) {
  Received out;
  out.bytes.resize(65536);
  socklen_t length = sizeof out.from;
  ssize_t n = -1;
  const gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
  while (n < 0 && g_get_monotonic_time() < deadline) {
    g_main_context_iteration(nullptr, FALSE);
    n = recvfrom(fd, out.bytes.data(), out.bytes.size(), 0,
                 reinterpret_cast<sockaddr*>(&out.from), &length);
  }
  out.bytes.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return out;
}

struct Fds {
  int ice, server, stranger;
  ~Fds() {
    close(ice);
    close(server);
    close(stranger);
  }
};

// A bridge to `server` on the address of `stranger` (both 127.0.0.1), for which `ice`
// is libnice's socket.
std::unique_ptr<TurnUdpBridge> bridge_with_twin(const Fds& fds) {
  const auto ice_address = address_of(fds.ice);
  const int ice = fds.ice;
  auto bridge = TurnUdpBridge::open(address_of(fds.server), address_of(fds.stranger),
                                    [ice, ice_address](const sockaddr_storage& bound) {
                                      return net::same_address(bound, ice_address) ? ice : -1;
                                    });
  REQUIRE(bridge);
  return bridge;
}

}  // namespace

TEST_CASE("the TURN bridge carries libnice's traffic and hands the tunnel its data") {
  // `ice` stands for libnice's host socket (bound without SO_REUSEADDR, as GLib binds
  // it), `server` for the TURN server.
  Fds fds{loopback_udp_socket(), loopback_udp_socket(), loopback_udp_socket()};
  const auto ice_address = address_of(fds.ice);
  auto bridge = bridge_with_twin(fds);
  CHECK(bridge->address_ip() == "127.0.0.1");
  CHECK(bridge->address_port() != 0);
  std::vector<std::vector<std::byte>> tunnel;
  bridge->set_on_tunnel_datagram(
      [&](std::span<const std::byte> data) { tunnel.emplace_back(data.begin(), data.end()); });

  // libnice's request reaches the server from libnice's own address and port: the
  // allocation and the mapped address are libnice's socket's.
  const auto& request = stun::test::kSampleRequest;
  send_to(fds.ice, bridge->address(), request);
  auto at_server = read_one(fds.server);
  CHECK(same_bytes(at_server.bytes, request));
  CHECK(net::same_address(at_server.from, ice_address));
  REQUIRE(bridge->upstream_fd_for(ice_address) >= 0);

  // The server's answer comes back to libnice from the address it knows as the server.
  send_to(fds.server, ice_address, stun::test::kSampleIpv4Response);
  auto at_ice = read_one(fds.ice);
  CHECK(same_bytes(at_ice.bytes, stun::test::kSampleIpv4Response));
  CHECK(net::same_address(at_ice.from, bridge->address()));

  // The tunnel's datagrams, as ChannelData and as Data indications, go to the tunnel
  // in order, more than one wakeup's batch; none reaches libnice.
  const int kCount = 600;
  for (int i = 0; i < kCount; ++i) {
    const auto quic = quic_like(0x40, 1200, static_cast<uint8_t>(i));
    send_to(fds.server, ice_address, i % 10 == 0 ? data_indication(quic) : channel_data(0x4000, quic));
  }
  REQUIRE(run_until([&] { return tunnel.size() == kCount; }));
  for (int i = 0; i < kCount; ++i) {
    CHECK(tunnel[i].size() == 1200);
    CHECK(tunnel[i][1] == static_cast<std::byte>(i));
  }
  CHECK(bridge->tunnel_datagrams() == kCount);

  // A relayed connectivity check is libnice's, framed as it came.
  const auto check = channel_data(0x4000, stun::test::kSampleRequest);
  send_to(fds.server, ice_address, check);
  at_ice = read_one(fds.ice);
  CHECK(same_bytes(at_ice.bytes, check));
  CHECK(tunnel.size() == kCount);

  // Our own sends on the upstream twin reach the server from libnice's address.
  const auto own = quic_like(0x40, 300);
  send_to(bridge->upstream_fd_for(ice_address), address_of(fds.server), own);
  at_server = read_one(fds.server);
  CHECK(same_bytes(at_server.bytes, own));
  CHECK(net::same_address(at_server.from, ice_address));

  // Anyone but the server still reaches libnice's socket directly.
  send_to(fds.stranger, ice_address, quic_like(0x40, 100));
  at_ice = read_one(fds.ice);
  CHECK(at_ice.bytes.size() == 100);
  CHECK(net::same_address(at_ice.from, address_of(fds.stranger)));

  // With no tunnel to take it (the session is closing), data goes to libnice too.
  bridge->set_on_tunnel_datagram({});
  const auto late = channel_data(0x4000, quic_like(0x40, 80));
  send_to(fds.server, ice_address, late);
  at_ice = read_one(fds.ice);
  CHECK(same_bytes(at_ice.bytes, late));

  // Gone: the server's datagrams reach libnice's socket again.
  bridge.reset();
  send_to(fds.server, ice_address, stun::test::kSampleIpv4Response);
  at_ice = read_one(fds.ice);
  CHECK(net::same_address(at_ice.from, address_of(fds.server)));
}

TEST_CASE("a TURN bridge with no twin for libnice's socket still carries the allocation") {
  Fds fds{loopback_udp_socket(), loopback_udp_socket(), loopback_udp_socket()};
  const auto ice_address = address_of(fds.ice);
  // The kernel refuses the twin (here: what was found is not a socket).
  int pipe_fds[2];
  REQUIRE(pipe(pipe_fds) == 0);
  auto bridge = TurnUdpBridge::open(address_of(fds.server), address_of(fds.stranger),
                                    [&](const sockaddr_storage&) { return pipe_fds[0]; });
  REQUIRE(bridge);
  std::vector<std::vector<std::byte>> tunnel;
  bridge->set_on_tunnel_datagram(
      [&](std::span<const std::byte> data) { tunnel.emplace_back(data.begin(), data.end()); });
  send_to(fds.ice, bridge->address(), stun::test::kSampleRequest);
  const auto at_server = read_one(fds.server);
  CHECK(same_bytes(at_server.bytes, stun::test::kSampleRequest));
  CHECK_FALSE(net::same_address(at_server.from, ice_address));  // a socket of its own
  // Answers and the tunnel's data come back on that socket.
  send_to(fds.server, at_server.from, stun::test::kSampleIpv4Response);
  CHECK(same_bytes(read_one(fds.ice).bytes, stun::test::kSampleIpv4Response));
  send_to(fds.server, at_server.from, channel_data(0x4000, quic_like(0x40, 500)));
  REQUIRE(run_until([&] { return tunnel.size() == 1; }));
  // Our own sends go out on it too, or the server would not know them.
  const int upstream = bridge->upstream_fd_for(ice_address);
  REQUIRE(upstream >= 0);
  CHECK(net::same_address(address_of(upstream), at_server.from));
  close(pipe_fds[0]);
  close(pipe_fds[1]);
}

TEST_CASE("a TURN bridge forwards nothing for a socket that is not libnice's") {
  Fds fds{loopback_udp_socket(), loopback_udp_socket(), loopback_udp_socket()};
  int lookups = 0;
  auto bridge = TurnUdpBridge::open(address_of(fds.server), address_of(fds.stranger),
                                    [&](const sockaddr_storage&) {
                                      ++lookups;
                                      return -1;
                                    });
  REQUIRE(bridge);
  // From another address (as a packet from outside would be): not even looked up.
  const int elsewhere = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in other{};
  other.sin_family = AF_INET;
  other.sin_addr.s_addr = htonl(INADDR_LOOPBACK + 1);
  REQUIRE(bind(elsewhere, reinterpret_cast<sockaddr*>(&other), sizeof other) == 0);
  send_to(elsewhere, bridge->address(), stun::test::kSampleRequest);
  // Another program on this host (no socket of ours is bound where it sends from).
  send_to(fds.stranger, bridge->address(), stun::test::kSampleRequest);
  REQUIRE(run_until([&] { return lookups == 1; }));
  close(elsewhere);
  // Then libnice's own, with a twin: the server sees only that one.
  auto twin_bridge = TurnUdpBridge::open(address_of(fds.server), address_of(fds.stranger),
                                         [&](const sockaddr_storage&) { return fds.ice; });
  REQUIRE(twin_bridge);
  const auto marker = quic_like(0x00, 24);
  send_to(fds.ice, twin_bridge->address(), marker);
  const auto at_server = read_one(fds.server);
  CHECK(same_bytes(at_server.bytes, marker));
  CHECK(bridge->upstream_fd_for(address_of(fds.stranger)) == -1);
  CHECK(lookups == 1);  // the datagram from 127.0.0.2, read first, was not looked up
}

TEST_CASE("the tunnel may close the session, and so the bridge, from its data callback") {
  Fds fds{loopback_udp_socket(), loopback_udp_socket(), loopback_udp_socket()};
  const auto ice_address = address_of(fds.ice);
  auto bridge = bridge_with_twin(fds);
  int calls = 0;
  bridge->set_on_tunnel_datagram([&](std::span<const std::byte>) {
    ++calls;
    bridge.reset();
  });
  send_to(fds.ice, bridge->address(), stun::test::kSampleRequest);
  const auto at_server = read_one(fds.server);
  for (int i = 0; i < 5; ++i)
    send_to(fds.server, ice_address, channel_data(0x4000, quic_like(0x40, 200)));
  REQUIRE(run_until([&] { return !bridge; }));
  CHECK(calls == 1);  // the rest of the batch is dropped with the bridge
}

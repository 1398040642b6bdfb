// Figures, not a test: the TURN core (relay/turn/turn_server.h) with 3200 allocations
// of 64 permissions each (25 client addresses x 128 allocations, the most the default
// limits give 25 addresses), all made at once and so expiring at once. Prints the CPU
// time of the longest single on_tick() call -- how long the relay's event loop is held
// while they expire -- and of all of them. Uses only the core's API, so that the same
// file builds against an older tree to compare.
//
//   build/test/tools/turn_expiry_bench
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <string>
#include <vector>

#include "turn/credentials.h"
#include "turn/turn_server.h"

using namespace natfwd;
using namespace natfwd::turn;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t kUnixNow = 1700000000;
constexpr int kAddresses = 25;
constexpr int kAllocationsPerAddress = 128;
constexpr int kPermissionsPerAllocation = 64;

struct Io : TurnIo {
  std::vector<std::byte> last;
  uint32_t next = 1;
  std::optional<TransportAddress> open_relay(AllocationId, const ClientKey&,
                                             TransportAddress::Family, bool) override {
    ++next;
    return TransportAddress::ipv4({203, 0, static_cast<uint8_t>(next >> 8), 1},
                                  static_cast<uint16_t>(next));
  }
  void close_relay(AllocationId) override {}
  void send_to_client(const ClientKey&, std::span<const std::byte> bytes) override {
    last.assign(bytes.begin(), bytes.end());
  }
  void send_to_peer(AllocationId, const TransportAddress&, std::span<const std::byte>) override {}
};

std::span<const std::byte> bytes_of(std::string_view text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

double thread_cpu_ms() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) * 1e3 + static_cast<double>(now.tv_nsec) / 1e6;
}

// One client: a 401 for the nonce, an Allocate, one CreatePermission of 64 peers.
void fill(TurnServer& server, Io& io, const ClientKey& client, const std::string& user,
          uint8_t peer_net, TimePoint now, uint32_t& txn) {
  auto transaction = [&txn] {
    stun::TransactionId id{};
    for (int i = 0; i < 4; ++i) id[i] = static_cast<std::byte>(txn >> (8 * i));
    ++txn;
    return id;
  };
  stun::MessageBuilder probe(stun::method::kAllocate, stun::MessageClass::kRequest,
                             transaction());
  server.on_client_message(client, probe.bytes(), now);
  const auto challenge = stun::parse(io.last);
  const auto* nonce_attribute = challenge.message.find(stun::attr::kNonce);
  const std::string nonce(reinterpret_cast<const char*>(nonce_attribute->value.data()),
                          nonce_attribute->value.size());
  const auto key = long_term_key(user, "natfwd", rest_password("secret", user));
  auto send = [&](uint16_t method, auto add) {
    const auto id = transaction();
    stun::MessageBuilder builder(method, stun::MessageClass::kRequest, id);
    add(builder, id);
    builder.add_attribute(stun::attr::kUsername, bytes_of(user));
    builder.add_attribute(stun::attr::kRealm, bytes_of("natfwd"));
    builder.add_attribute(stun::attr::kNonce, bytes_of(nonce));
    builder.add_message_integrity(key);
    server.on_client_message(client, builder.bytes(), now);
  };
  send(stun::method::kAllocate, [](stun::MessageBuilder& builder, const stun::TransactionId&) {
    const std::byte udp[4] = {std::byte{17}, {}, {}, {}};
    builder.add_attribute(attr::kRequestedTransport, udp);
  });
  send(stun::method::kCreatePermission,
       [&](stun::MessageBuilder& builder, const stun::TransactionId& id) {
         for (int p = 0; p < kPermissionsPerAllocation; ++p)
           builder.add_attribute(
               attr::kXorPeerAddress,
               stun::encode_xor_address(
                   TransportAddress::ipv4({198, 51, peer_net, static_cast<uint8_t>(p)}, 9), id));
       });
}

}  // namespace

int main() {
  Io io;
  TurnConfig config;
  config.secret = "secret";
  config.max_allocations_per_user = 1000000;
  config.unix_now = [] { return kUnixNow; };
  TurnServer server(config, io);
  TimePoint now = TimePoint{} + 1000000s;
  uint32_t txn = 1;
  for (int a = 0; a < kAddresses; ++a)
    for (int k = 0; k < kAllocationsPerAddress; ++k) {
      const ClientKey client{Transport::kUdp,
                             TransportAddress::ipv4({10, 0, 1, static_cast<uint8_t>(a)},
                                                    static_cast<uint16_t>(1000 + k)),
                             0};
      fill(server, io, client,
           rest_username(kUnixNow + 3600, "u" + std::to_string(a * kAllocationsPerAddress + k)),
           static_cast<uint8_t>(k), now, txn);
    }
  const size_t permissions = server.permission_count();
  now += 300s;  // RFC 8656 section 9: every permission expires now
  double longest = 0, total = 0;
  int ticks = 0;
  while (server.permission_count() > 0 && ticks < 100000) {
    const double started = thread_cpu_ms();
    server.on_tick(now);
    const double took = thread_cpu_ms() - started;
    longest = std::max(longest, took);
    total += took;
    ++ticks;
  }
  std::printf("%zu allocations, %zu permissions expiring at once: %d ticks, longest %.2f ms, "
              "all %.1f ms (CPU time)\n",
              server.allocation_count(), permissions, ticks, longest, total);
  return 0;
}

// libFuzzer target for what the relay's cores do with the bytes that reach its STUN/TURN
// port: the Binding responder (plain and RFC 5780), TCP and ChannelData framing, and
// the TURN server core itself with a recording I/O stub. The codec underneath has its
// own target (stun/fuzz/fuzz_stun.cpp). Built only with -Dfuzz=true and clang
// (test/fuzz/run_fuzz.sh).
#include <cstddef>
#include <cstdint>
#include <span>

#include "log.h"
#include "binding/binding_responder.h"
#include "stun/stun_message.h"
#include "stun/turn_framing.h"
#include "turn/turn_server.h"

namespace {

using namespace natfwd;

struct NullIo : turn::TurnIo {
  uint16_t port = 40000;
  std::optional<turn::TransportAddress> open_relay(turn::AllocationId, const turn::ClientKey&,
                                                   turn::TransportAddress::Family,
                                                   bool) override {
    return turn::TransportAddress::ipv4({203, 0, 113, 1}, port++);
  }
  void close_relay(turn::AllocationId) override {}
  void send_to_client(const turn::ClientKey&, std::span<const std::byte> bytes) override {
    // Whatever we answer must parse again.
    if (!turn::looks_like_channel_data(bytes) &&
        stun::parse(bytes).status != stun::ParseStatus::kOk)
      __builtin_trap();
  }
  void send_to_peer(turn::AllocationId, const turn::TransportAddress&,
                    std::span<const std::byte>) override {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = (log::init("fuzz_turn", log::Level::kError), true);
  (void)quiet;
  const auto input = std::as_bytes(std::span(data, size));

  (void)turn::stream_frame_length(input);
  (void)turn::parse_channel_data(input);

  static const stun::BindingResponder responder("fuzz");
  (void)responder.handle(input, stun::TransportAddress::ipv4({192, 0, 2, 1}, 1));
  // RFC 5780 mode: CHANGE-REQUEST decides which socket answers.
  static const stun::BindingResponder discovery = [] {
    stun::DiscoveryAddresses addresses;
    addresses.by_ip_port = {{{stun::TransportAddress::ipv4({203, 0, 113, 10}, 3478),
                              stun::TransportAddress::ipv4({203, 0, 113, 10}, 3479)},
                             {stun::TransportAddress::ipv4({203, 0, 113, 11}, 3478),
                              stun::TransportAddress::ipv4({203, 0, 113, 11}, 3479)}}};
    return stun::BindingResponder("fuzz", addresses);
  }();
  const auto answer = discovery.handle(input, stun::TransportAddress::ipv4({192, 0, 2, 1}, 1),
                                       {1, 1});
  if (answer.send_from.ip < 0 || answer.send_from.ip > 1 || answer.send_from.port < 0 ||
      answer.send_from.port > 1)
    __builtin_trap();

  // The TURN core: one server across runs (state builds up as on a real relay),
  // fed the input as a client message and as peer data.
  static NullIo io;
  static turn::TurnServer server = [] {
    turn::TurnConfig config;
    config.secret = "fuzz";
    config.unix_now = [] { return uint64_t{1700000000}; };
    config.peers.allow(*turn::parse_cidr("0.0.0.0/0"));
    return turn::TurnServer(config, io);
  }();
  static auto now = turn::TimePoint{} + std::chrono::seconds(1000);
  now += std::chrono::seconds(1);
  const turn::ClientKey client{turn::Transport::kUdp,
                               stun::TransportAddress::ipv4({192, 0, 2, 1}, 1000), 0};
  (void)server.on_client_message(client, input, now);
  server.on_peer_data(1, stun::TransportAddress::ipv4({198, 51, 100, 1}, 9), input, now);
  server.on_tick(now);
  return 0;
}

// libFuzzer target for the hard-NAT punch packet parser, which reads whatever reaches
// the punch sockets from the other side's public address, and the search that acts on
// it, on both roles. Built only with -Dfuzz=true and clang (test/fuzz/run_fuzz.sh).
#include <cstddef>
#include <cstdint>
#include <span>

#include "punch/birthday_punch.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace natfwd::punch;
  const auto input = std::as_bytes(std::span(data, size));
  // A fixed key, so that a packet the fuzzer built from the seeds (encoded with this
  // key) passes the tag and reaches the search's deeper checks.
  PunchKey key{};
  const uint64_t session = 0x0102030405060708;
  const PacketParse parse = parse_packet(input, key, session);
  if (parse.status == PacketParse::Status::kOk &&
      (size != kPacketSize || parse.packet.session_id != session))
    __builtin_trap();  // only a whole packet of our session is ever accepted
  const auto peer = TransportAddress::ipv4({192, 0, 2, 1}, 4000);
  // Few sockets and probes: each costs an HMAC, and the parser is the point.
  Limits limits;
  limits.sockets = 4;
  limits.probes = 8;
  for (Role role : {Role::kHard, Role::kEasy}) {
    BirthdayPunch punch(role, session, key, peer, 1, limits);
    (void)punch.start(Micros(0));
    (void)punch.on_datagram(0, peer, input, Micros(1000));
    (void)punch.on_datagram(0, peer, encode_packet({PacketKind::kAck, Role::kHard, session, 0}, key),
                            Micros(2000));
    (void)punch.on_timer(Micros(20'000'000));
  }
  return 0;
}

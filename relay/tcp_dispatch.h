// What a new TCP connection speaks, judged by its first byte. The relay serves several
// protocols on one TCP port (DESIGN.md: "one port"): the rendezvous frames, STUN and
// TURN over TCP, and TLS. Pure function, no I/O.
#pragma once

#include <cstddef>
#include <cstdint>

#include "frame.h"

namespace natfwd::relay {

enum class TcpProtocol {
  kRendezvous,  // 0xC5: a natfwd frame (proto/frame.h)
  kTls,         // 0x16: TLS handshake record (RFC 8446 section 5.1)
  kStun,        // top two bits 00: STUN/TURN message (RFC 8489 section 5; RFC 7983)
  kUnknown,     // anything else, including HTTP and TURN ChannelData (01), which
                // cannot come first on a fresh connection
};

constexpr TcpProtocol classify_first_byte(std::byte first) {
  if (wire::looks_like_frame(first)) return TcpProtocol::kRendezvous;
  // 0x16 also has its top bits at 00; no STUN method is large enough to start with
  // it, so TLS wins (RFC 7983 section 7 demultiplexes the same way: 20-63 is DTLS/TLS).
  if (first == std::byte{0x16}) return TcpProtocol::kTls;
  if ((std::to_integer<uint8_t>(first) & 0xC0) == 0) return TcpProtocol::kStun;
  return TcpProtocol::kUnknown;
}

constexpr const char* to_string(TcpProtocol protocol) {
  switch (protocol) {
    case TcpProtocol::kRendezvous: return "rendezvous";
    case TcpProtocol::kTls: return "tls";
    case TcpProtocol::kStun: return "stun";
    case TcpProtocol::kUnknown: return "unknown";
  }
  return "unknown";
}

}  // namespace natfwd::relay

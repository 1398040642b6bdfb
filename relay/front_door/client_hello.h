// The publishing front door's look at a TLS connection before anything is terminated:
// the server name (SNI, RFC 6066 section 3) of the ClientHello (RFC 8446 section
// 4.1.2) in the first TLS record (RFC 8446 section 5.1). A name NAME.DOMAIN sends the
// connection, untouched, to the peer NAME; anything else is the relay's own TLS. I/O
// free: bytes in, a verdict out; input never modified.
#pragma once

#include <cstddef>
#include <span>
#include <string>

namespace natfwd::relay::front_door {

struct ClientHelloSni {
  enum class Status { kComplete, kNeedMore, kInvalid };
  Status status = Status::kNeedMore;
  std::string server_name;  // kComplete: lowercased host_name, empty when none is sent
};

// Parses the first TLS record of a connection as a ClientHello. A ClientHello that
// does not fit its first record is kInvalid here (the relay's own TLS then decides).
ClientHelloSni parse_client_hello_sni(std::span<const std::byte> data);

// A first record is at most this long: a 5-byte header and 2^14 bytes (RFC 8446 5.1).
inline constexpr size_t kMaxFirstRecordBytes = 5 + (1 << 14);

}  // namespace natfwd::relay::front_door

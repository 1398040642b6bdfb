// Codec of the stream-open header: the first frame of each QUIC stream of a tunnel.
//
//   connecting side -> serving side: StreamOpen (a target host:port, the secret of a
//                                    pairing request, or a punch offer)
//   serving side -> connecting side: StreamOpenResult (a status and a detail sentence,
//                                    and the serving side's punch offer in answer to one)
//
// Each is one frame (frame.h) with a protobuf payload (rendezvous.proto) of at most
// kMaxStreamHeaderPayload bytes; the raw bytes of the forwarded connection follow it.
// Decoders are pure functions over the bytes received so far with three outcomes:
// complete (and how many bytes the header took), need more, or invalid (and why).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "address.h"
#include "frame.h"
#include "rendezvous.pb.h"

namespace natfwd::wire {

// Largest header payload either side accepts: a host name, a port, or a short status
// sentence fit with room to spare; anything longer is garbage, refused before buffering.
inline constexpr size_t kMaxStreamHeaderPayload = 4096;
// The detail of a StreamOpenResult is cut to this length, so that an encoded answer
// always fits kMaxStreamHeaderPayload.
inline constexpr size_t kMaxStreamOpenDetail = 1024;

// The serving peer's answer (StreamOpenResult.Status), named for the code that reads it.
enum class StreamStatus : int {
  kOk = StreamOpenResult::OK,
  kNotServed = StreamOpenResult::NOT_SERVED,
  kResolveFailed = StreamOpenResult::RESOLVE_FAILED,
  kConnectFailed = StreamOpenResult::CONNECT_FAILED,
  kBadRequest = StreamOpenResult::BAD_REQUEST,
  kNotAuthorized = StreamOpenResult::NOT_AUTHORIZED,
};
// "not served", "cannot connect"...: for log lines.
const char* stream_status_text(int status);

// QUIC application error codes of RESET_STREAM / STOP_SENDING on a tunnel stream
// (RFC 9000 section 20.2 leaves them to the application).
inline constexpr uint64_t kStreamErrorTcpReset = 1;  // the local TCP connection failed
inline constexpr uint64_t kStreamErrorRefused = 2;   // the stream is refused or given up

// What a connecting side asks for on a new stream.
struct StreamRequest {
  HostPort target;          // when neither of the next two is set
  std::string pair_secret;  // a pairing request (`peer invite` code), no target
  std::optional<PunchOffer> punch;  // a hard-NAT punch offer, no target
  bool is_pairing() const { return !pair_secret.empty(); }
};

struct StreamOpenDecode {
  DecodeStatus status = DecodeStatus::kNeedMore;
  size_t consumed = 0;     // kComplete: bytes of the header; stream data follows
  StreamRequest request;   // kComplete
  std::string_view error;  // kInvalid: static sentence
};

struct StreamOpenResultDecode {
  DecodeStatus status = DecodeStatus::kNeedMore;
  size_t consumed = 0;     // kComplete
  int result = 0;          // kComplete: a StreamStatus value (others are possible)
  std::string detail;      // kComplete
  std::optional<PunchOffer> punch;  // kComplete, when the answer carries one
  std::string_view error;  // kInvalid: static sentence
};

// The header of a stream to `target`.
std::vector<std::byte> encode_stream_open(const HostPort& target);
// The header of a pairing request.
std::vector<std::byte> encode_pair_request(std::string_view secret);
// The header of a punch offer.
std::vector<std::byte> encode_punch_request(const PunchOffer& offer);
// The serving side's answer; `detail` is cut to at most kMaxStreamOpenDetail bytes
// (at a UTF-8 character boundary). `punch`: its own offer, answering one.
std::vector<std::byte> encode_stream_open_result(int status, std::string_view detail,
                                                 const PunchOffer* punch = nullptr);

// The first header in `input` (the stream's bytes so far). A target must be a valid
// host (is_valid_host) with a port 1..65535.
StreamOpenDecode decode_stream_open(std::span<const std::byte> input);
StreamOpenResultDecode decode_stream_open_result(std::span<const std::byte> input);

}  // namespace natfwd::wire

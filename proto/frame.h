// Frame codec for the rendezvous link (and the first frame of each QUIC stream).
//
//   0      1      2        3        4 .. 7              8 ..
//   0xC5   'F'    version  reserved length (u32, BE)    payload (an Envelope, or a
//                                                         StreamOpen/StreamOpenResult)
//
// The first byte has both top bits set so that a frame can never be mistaken for a
// STUN message (top bits 00), a TURN ChannelData message (01), a TLS record (0x16) or
// an HTTP request (ASCII) arriving on the same TCP port.
//
// Pure functions: no I/O, no allocation before the length is checked against the limit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace natfwd::wire {

inline constexpr std::byte kFrameMagic0{0xC5};
inline constexpr std::byte kFrameMagic1{'F'};
// The frame format's version (byte 2 of every frame). It stays 1 while the frame
// layout does, so that peers and relays of different rendezvous versions still read
// each other's Error VERSION instead of dropping the connection at the first byte.
inline constexpr uint8_t kFrameVersion = 1;
// The rendezvous protocol's version (Hello.protocol_version). 2: every connection
// proves its key (Challenge/Prove) before anything else.
inline constexpr uint32_t kProtocolVersion = 2;
inline constexpr size_t kFrameHeaderSize = 8;
// Largest payload either side accepts; an Envelope is a few hundred bytes in practice.
inline constexpr size_t kMaxFramePayload = 64 * 1024;

enum class DecodeStatus {
  kComplete,  // a whole frame: payload and consumed are set
  kNeedMore,  // a valid prefix; read more bytes and call again
  kInvalid,   // not a frame of ours: close the connection
};

struct DecodeResult {
  DecodeStatus status;
  std::span<const std::byte> payload;  // kComplete only; points into the input
  size_t consumed = 0;                 // kComplete only; header + payload
  std::string_view error;              // kInvalid only; static string
};

// Decodes the first frame in `input`. Never reads past input.size().
DecodeResult decode_frame(std::span<const std::byte> input,
                          size_t max_payload = kMaxFramePayload);

// Appends one frame carrying `payload` to `out`. Throws std::length_error when the
// payload exceeds kMaxFramePayload (a bug on our side, never network input).
void encode_frame(std::span<const std::byte> payload, std::vector<std::byte>& out);

// True when `first` can start a frame; used to tell the rendezvous protocol apart
// from STUN/TURN on a shared TCP port.
constexpr bool looks_like_frame(std::byte first) { return first == kFrameMagic0; }

// Helpers for protobuf messages (anything with SerializeToArray/ParseFromArray).
template <typename Message>
void encode_message(const Message& message, std::vector<std::byte>& out) {
  std::vector<std::byte> payload(message.ByteSizeLong());
  message.SerializeToArray(payload.data(), static_cast<int>(payload.size()));
  encode_frame(payload, out);
}

template <typename Message>
bool parse_message(std::span<const std::byte> payload, Message& message) {
  return message.ParseFromArray(payload.data(), static_cast<int>(payload.size()));
}

}  // namespace natfwd::wire

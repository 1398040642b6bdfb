// ChannelData messages (RFC 8656 section 12.4) and the framing of TURN over a byte
// stream (section 3.1 / RFC 8489 section 6.2.2): STUN messages and ChannelData back to
// back, ChannelData padded to a multiple of 4 bytes. Pure functions, no I/O.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "stun/stun_message.h"

namespace natfwd::turn {

struct ChannelData {
  uint16_t channel = 0;
  std::span<const std::byte> data;  // points into the input
};

// First two bits 01 (RFC 7983): a ChannelData message, not STUN.
bool looks_like_channel_data(std::span<const std::byte> input);

// One ChannelData message filling `input` (a datagram, or one cut out of a stream):
// the length field may be shorter than what follows (padding), never longer. The
// channel number is only checked to be in 0x4000-0x7FFF.
std::optional<ChannelData> parse_channel_data(std::span<const std::byte> input);

// ChannelData with `data`; `pad` to 4 bytes for TCP and TLS (section 12.5).
std::vector<std::byte> encode_channel_data(uint16_t channel, std::span<const std::byte> data,
                                           bool pad);
// The same in pieces, for a gathered send without a copy of `data`: the header, and
// the zeros that pad `data_length` bytes (none unless `pad`).
std::array<std::byte, 4> channel_data_header(uint16_t channel, size_t data_length);
std::span<const std::byte> channel_data_padding(size_t data_length, bool pad);

// Given the bytes received so far on a TURN-over-TCP/TLS connection: is a whole STUN
// message or padded ChannelData at the front, and how long is it?
stun::StreamProbe stream_frame_length(std::span<const std::byte> prefix);

}  // namespace natfwd::turn

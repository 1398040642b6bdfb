#include "stun/turn_framing.h"

#include <algorithm>

#include "stun/turn_constants.h"

namespace natfwd::turn {
namespace {

uint16_t read_u16(std::span<const std::byte> bytes, size_t at) {
  return static_cast<uint16_t>((std::to_integer<uint16_t>(bytes[at]) << 8) |
                               std::to_integer<uint16_t>(bytes[at + 1]));
}

constexpr size_t padded(size_t length) { return (length + 3) & ~size_t{3}; }

}  // namespace

bool looks_like_channel_data(std::span<const std::byte> input) {
  return !input.empty() && (std::to_integer<uint8_t>(input[0]) & 0xC0) == 0x40;
}

std::optional<ChannelData> parse_channel_data(std::span<const std::byte> input) {
  if (input.size() < kChannelDataHeaderSize || !looks_like_channel_data(input))
    return std::nullopt;
  const uint16_t length = read_u16(input, 2);
  if (length > input.size() - kChannelDataHeaderSize) return std::nullopt;
  return ChannelData{read_u16(input, 0), input.subspan(kChannelDataHeaderSize, length)};
}

std::array<std::byte, 4> channel_data_header(uint16_t channel, size_t data_length) {
  return {static_cast<std::byte>(channel >> 8), static_cast<std::byte>(channel & 0xFF),
          static_cast<std::byte>(data_length >> 8), static_cast<std::byte>(data_length & 0xFF)};
}

std::span<const std::byte> channel_data_padding(size_t data_length, bool pad) {
  static constexpr std::array<std::byte, 3> kZeros{};
  return std::span(kZeros).first(pad ? padded(data_length) - data_length : 0);
}

std::vector<std::byte> encode_channel_data(uint16_t channel, std::span<const std::byte> data,
                                           bool pad) {
  const auto header = channel_data_header(channel, data.size());
  const auto padding = channel_data_padding(data.size(), pad);
  std::vector<std::byte> out(header.size() + data.size() + padding.size());
  auto at = std::copy(header.begin(), header.end(), out.begin());
  at = std::copy(data.begin(), data.end(), at);
  std::copy(padding.begin(), padding.end(), at);
  return out;
}

stun::StreamProbe stream_frame_length(std::span<const std::byte> prefix) {
  if (prefix.empty()) return {stun::StreamStatus::kNeedMore, 0, {}};
  if (looks_like_channel_data(prefix)) {
    if (prefix.size() < kChannelDataHeaderSize) return {stun::StreamStatus::kNeedMore, 0, {}};
    const size_t length = kChannelDataHeaderSize + padded(read_u16(prefix, 2));
    if (prefix.size() < length) return {stun::StreamStatus::kNeedMore, 0, {}};
    return {stun::StreamStatus::kComplete, length, {}};
  }
  return stun::stream_message_length(prefix);
}

}  // namespace natfwd::turn

#include "frame.h"

#include <stdexcept>

namespace natfwd::wire {

DecodeResult decode_frame(std::span<const std::byte> input, size_t max_payload) {
  auto invalid = [](std::string_view why) {
    return DecodeResult{DecodeStatus::kInvalid, {}, 0, why};
  };
  // Check each header byte as soon as it is there, so garbage is refused early.
  if (input.size() >= 1 && input[0] != kFrameMagic0) return invalid("bad frame magic");
  if (input.size() >= 2 && input[1] != kFrameMagic1) return invalid("bad frame magic");
  if (input.size() >= 3 && std::to_integer<uint8_t>(input[2]) != kFrameVersion)
    return invalid("unsupported frame version");
  if (input.size() >= 4 && input[3] != std::byte{0}) return invalid("reserved bits set");
  if (input.size() < kFrameHeaderSize) return {DecodeStatus::kNeedMore, {}, 0, {}};

  uint32_t length = 0;
  for (size_t i = 4; i < 8; ++i) length = (length << 8) | std::to_integer<uint32_t>(input[i]);
  if (length > max_payload) return invalid("frame too large");
  if (input.size() - kFrameHeaderSize < length) return {DecodeStatus::kNeedMore, {}, 0, {}};
  return {DecodeStatus::kComplete, input.subspan(kFrameHeaderSize, length),
          kFrameHeaderSize + length, {}};
}

void encode_frame(std::span<const std::byte> payload, std::vector<std::byte>& out) {
  if (payload.size() > kMaxFramePayload) throw std::length_error("frame payload too large");
  const auto length = static_cast<uint32_t>(payload.size());
  out.reserve(out.size() + kFrameHeaderSize + payload.size());
  out.push_back(kFrameMagic0);
  out.push_back(kFrameMagic1);
  out.push_back(std::byte{kFrameVersion});
  out.push_back(std::byte{0});
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<std::byte>((length >> shift) & 0xff));
  out.insert(out.end(), payload.begin(), payload.end());
}

}  // namespace natfwd::wire

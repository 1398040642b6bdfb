// libFuzzer target for the stream-open header codec (stream_open.h): what the serving
// peer reads first on each stream, and what the connecting peer reads back. Built only
// with -Dfuzz=true and clang (test/fuzz/run_fuzz.sh).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "stream_open.h"

namespace {
// Two optional punch offers hold the same fields (one encoding of a message without
// maps is the same bytes).
bool same_offer(const std::optional<natfwd::wire::PunchOffer>& a,
                const std::optional<natfwd::wire::PunchOffer>& b) {
  if (a.has_value() != b.has_value()) return false;
  return !a || a->SerializeAsString() == b->SerializeAsString();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace natfwd::wire;
  std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data), size);
  auto open = decode_stream_open(input);
  if (open.status == DecodeStatus::kComplete) {
    // The codec must never claim bytes it was not given.
    if (open.consumed < kFrameHeaderSize || open.consumed > input.size()) __builtin_trap();
    // Whatever decoded must encode and decode to the same request.
    auto again = open.request.punch        ? encode_punch_request(*open.request.punch)
                 : open.request.is_pairing() ? encode_pair_request(open.request.pair_secret)
                                             : encode_stream_open(open.request.target);
    auto redecoded = decode_stream_open(again);
    if (redecoded.status != DecodeStatus::kComplete ||
        redecoded.request.pair_secret != open.request.pair_secret ||
        !(redecoded.request.target == open.request.target) ||
        !same_offer(redecoded.request.punch, open.request.punch))
      __builtin_trap();
  } else if (open.status == DecodeStatus::kInvalid && open.error.empty()) {
    __builtin_trap();  // an invalid header always says why
  }
  auto answer = decode_stream_open_result(input);
  if (answer.status == DecodeStatus::kComplete) {
    if (answer.consumed < kFrameHeaderSize || answer.consumed > input.size()) __builtin_trap();
    auto again = encode_stream_open_result(answer.result, answer.detail,
                                           answer.punch ? &*answer.punch : nullptr);
    auto redecoded = decode_stream_open_result(again);
    if (redecoded.status != DecodeStatus::kComplete || redecoded.result != answer.result ||
        !same_offer(redecoded.punch, answer.punch) ||
        redecoded.detail.size() > kMaxStreamOpenDetail ||
        answer.detail.compare(0, redecoded.detail.size(), redecoded.detail) != 0)
      __builtin_trap();
  }
  return 0;
}

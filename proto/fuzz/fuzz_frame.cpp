// libFuzzer target for what the relay and the peers read from a rendezvous link or
// a QUIC stream header: the frame codec, then Envelope / StreamOpen / StreamOpenResult
// parsing. Built only with -Dfuzz=true and clang (test/fuzz/run_fuzz.sh).
#include <cstddef>
#include <cstdint>
#include <span>

#include "frame.h"
#include "rendezvous.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace natfwd::wire;
  std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data), size);
  // A stream of frames, as FramedConnection consumes it.
  size_t offset = 0;
  while (offset < input.size()) {
    auto result = decode_frame(input.subspan(offset));
    if (result.status != DecodeStatus::kComplete) break;
    if (result.consumed < kFrameHeaderSize || result.consumed > input.size() - offset)
      __builtin_trap();  // the codec must never claim bytes it was not given
    Envelope envelope;
    if (parse_message(result.payload, envelope)) {
      // Whatever parsed must encode and decode again.
      std::vector<std::byte> again;
      encode_message(envelope, again);
      if (decode_frame(again).status != DecodeStatus::kComplete) __builtin_trap();
    }
    StreamOpen open;
    parse_message(result.payload, open);
    StreamOpenResult answer;
    parse_message(result.payload, answer);
    offset += result.consumed;
  }
  return 0;
}

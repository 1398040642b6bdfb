// libFuzzer target for the STUN codec (RFC 8489): datagram and stream framing, the
// attribute decoders and the integrity checks, on any bytes. Whatever parses must
// survive every decoder. Built only with -Dfuzz=true and clang (test/fuzz/run_fuzz.sh).
#include <cstddef>
#include <cstdint>
#include <span>

#include "stun/stun_message.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace natfwd;
  const auto input = std::as_bytes(std::span(data, size));

  for (const auto compatibility :
       {stun::Compatibility::kRfc8489, stun::Compatibility::kAcceptRfc3489}) {
    auto parsed = stun::parse(input, compatibility);
    if (parsed.status != stun::ParseStatus::kOk) continue;
    const auto& message = parsed.message;
    for (const auto& attribute : message.attributes) {
      // A decoded address must encode to bytes that decode to it again.
      if (const auto xored = stun::decode_xor_address(attribute.value, message.transaction_id))
        if (stun::decode_xor_address(stun::encode_xor_address(*xored, message.transaction_id),
                                     message.transaction_id) != xored)
          __builtin_trap();
      if (const auto plain = stun::decode_address(attribute.value))
        if (stun::decode_address(stun::encode_address(*plain)) != plain) __builtin_trap();
      (void)stun::decode_error_code(attribute.value);
      (void)stun::decode_unknown_attributes(attribute.value);
    }
    const std::byte key[16] = {};
    (void)stun::verify_message_integrity(message, key);
    (void)stun::verify_message_integrity_sha256(message, key);
  }
  (void)stun::looks_like_stun(input);
  (void)stun::stream_message_length(input);
  return 0;
}

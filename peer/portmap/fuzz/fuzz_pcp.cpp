// libFuzzer target for the PCP MAP response parser (RFC 6887), which reads whatever
// answers on the gateway's port 5351, and the exchange that feeds it. Built only with
// -Dfuzz=true and clang (test/fuzz/run_fuzz.sh).
#include <cstddef>
#include <cstdint>
#include <span>

#include "portmap/pcp_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace natfwd::portmap;
  const auto input = std::as_bytes(std::span(data, size));
  // The nonce from the input's own bytes when it has them, so that matching nonces
  // (and with them the parser's deeper checks) are reached.
  PcpNonce nonce{};
  if (size >= 36)
    for (size_t i = 0; i < nonce.size(); ++i) nonce[i] = input[24 + i];
  const PcpParse parse = parse_map_response(input, nonce);
  if (parse.status == PcpParse::Status::kComplete &&
      parse.response.result == PcpResult::kSuccess && parse.response.external_ip.empty())
    __builtin_trap();  // a success is never handed out without its external address
  PcpMapRequest request;
  request.nonce = nonce;
  PcpExchange exchange(request, 0);
  (void)exchange.due(0);
  (void)exchange.on_datagram(input);
  (void)exchange.check(1);
  return 0;
}

// libFuzzer target for what the publishing front door reads from visitors before any
// peer is involved: the HTTP request head (Host routing) and the TLS ClientHello's
// server name (SNI routing). Built only with -Dfuzz=true and clang
// (test/fuzz/run_fuzz.sh).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "front_door/client_hello.h"
#include "front_door/http_head.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace natfwd;
  using namespace natfwd::relay::front_door;
  const auto bytes = std::as_bytes(std::span(data, size));

  const HttpHead head = parse_http_head(bytes);
  if (head.status == HttpHead::Status::kComplete) {
    // A complete head lies within the input and names a host.
    if (head.length == 0 || head.length > size || head.host.empty()) abort();
    (void)published_name(head.host, "share.example.net");
  }

  const ClientHelloSni hello = parse_client_hello_sni(bytes);
  if (hello.status == ClientHelloSni::Status::kComplete) {
    for (char c : hello.server_name)
      if (c >= 'A' && c <= 'Z') abort();  // always lowercased
    (void)published_name(hello.server_name, "share.example.net");
  }
  return 0;
}

// The head of an HTTP/1.x request (RFC 9112 sections 2-5), as the relay's publishing
// front door (Host routing) and a publishing home peer (basic auth, request framing)
// read it. I/O free: bytes in, a verdict out; input never modified.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace natfwd {

// A head longer than this is refused (431 in spirit, 400 here: the visitor gets one
// answer for every malformed head). Browsers send a few hundred bytes to a few KiB.
inline constexpr size_t kMaxHeadBytes = 16 * 1024;

struct HttpHead {
  enum class Status { kComplete, kNeedMore, kInvalid };
  struct Field {
    std::string name;   // lowercased
    std::string value;  // without the white space around it
  };
  Status status = Status::kNeedMore;
  size_t length = 0;   // kComplete: bytes up to and including the empty line
  std::string host;    // kComplete: the Host value, lowercased, without its port
  std::string method;  // kComplete: as sent (methods are case-sensitive)
  std::string version;  // kComplete: "HTTP/1.1" or "HTTP/1.0"
  std::vector<Field> fields;  // kComplete: every field line, in order
  const char* reason = "";  // kInvalid: why, for the 400 page and the log

  // The values of the fields named `name` (lowercase), in order.
  std::vector<std::string_view> values(std::string_view name) const;
};

// Parses the start of `data` as an HTTP/1.x request head. A head without exactly one
// Host is kInvalid (RFC 9112 section 3.2).
HttpHead parse_http_head(std::span<const std::byte> data);

// A complete HTTP/1.1 response with a small text/html page, "Connection: close".
// `extra_fields`: more field lines, each ending in CRLF; `footer`: who answered.
std::string http_error_response(int status, std::string_view title, std::string_view detail,
                                std::string_view extra_fields = {},
                                std::string_view footer = "natfwd relay");

std::string http_lower(std::string_view text);
// Without spaces and tabs at either end (RFC 9110 section 5.6.3, OWS).
std::string_view http_trim(std::string_view text);

}  // namespace natfwd

// The relay's publishing front door reads only the head of a visitor's first HTTP/1.1
// request, to learn which published peer it is for (the Host header, RFC 9112 section
// 3.2); everything after, this request's body and any later requests, goes to the
// peer untouched. I/O free: bytes in, a verdict out; input never modified.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace natfwd::relay::front_door {

// A head longer than this is refused (431 in spirit, 400 here: the visitor gets one
// answer for every malformed head). Browsers send a few hundred bytes to a few KiB.
inline constexpr size_t kMaxHeadBytes = 16 * 1024;

struct HttpHead {
  enum class Status { kComplete, kNeedMore, kInvalid };
  Status status = Status::kNeedMore;
  size_t length = 0;   // kComplete: bytes up to and including the empty line
  std::string host;    // kComplete: the Host value, lowercased, without its port
  const char* reason = "";  // kInvalid: why, for the 400 page and the log
};

// Parses the start of `data` as an HTTP/1.x request head.
HttpHead parse_http_head(std::span<const std::byte> data);

// NAME when `host` is NAME.`domain` (both lowercase) and NAME is one label-ish peer
// name; nullopt otherwise.
std::optional<std::string> published_name(std::string_view host, std::string_view domain);

// `bytes` (a complete head of `head_length` bytes, then whatever followed it) with the
// de facto proxy fields that tell the target who the visitor is: `visitor_ip` appended
// to the last X-Forwarded-For (a list field, RFC 9110 section 5.3: "a, b" is one more
// hop than "a") or a new one, and "X-Forwarded-Proto: http" in place of any the
// visitor sent (the relay knows the scheme; the visitor could claim https).
std::string with_forwarded_fields(std::string_view bytes, size_t head_length,
                                  std::string_view visitor_ip);

// A complete HTTP/1.1 response with a small text/html page, "Connection: close".
std::string http_error_response(int status, std::string_view title, std::string_view detail);
// "308 Permanent Redirect" (RFC 9110 section 15.4.9: the method stays) to
// https://HOST + the request target of the head in `bytes` ("/" when it is not in
// origin form), "Connection: close".
std::string https_redirect_response(std::string_view host, std::string_view bytes);

}  // namespace natfwd::relay::front_door

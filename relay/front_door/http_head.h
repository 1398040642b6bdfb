// The relay's publishing front door reads only the head of a visitor's first HTTP/1.1
// request (common/http_request_head.h), to learn which published peer it is for (the
// Host header, RFC 9112 section 3.2); everything after, this request's body and any
// later requests, goes to the peer untouched. I/O free.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "http_request_head.h"

namespace natfwd::relay::front_door {

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

// "308 Permanent Redirect" (RFC 9110 section 15.4.9: the method stays) to
// https://HOST + the request target of the head in `bytes` ("/" when it is not in
// origin form), "Connection: close".
std::string https_redirect_response(std::string_view host, std::string_view bytes);

}  // namespace natfwd::relay::front_door

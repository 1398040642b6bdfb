#include "serving/http_auth_gate.h"

#include <glib.h>

#include <algorithm>

#include "http_request_head.h"

namespace natfwd {
namespace {

bool is_base64(std::string_view text) {
  if (text.empty() || text.size() % 4 != 0) return false;
  size_t padding = 0;
  while (padding < 2 && text.size() > padding && text[text.size() - 1 - padding] == '=')
    ++padding;
  return std::all_of(text.begin(), text.end() - static_cast<ptrdiff_t>(padding), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
  });
}

void forward(std::vector<HttpAuthGate::Action>& out, std::string_view bytes) {
  if (bytes.empty()) return;
  if (!out.empty() && out.back().kind == HttpAuthGate::Action::Kind::kForward)
    out.back().bytes.append(bytes);
  else
    out.push_back({HttpAuthGate::Action::Kind::kForward, std::string(bytes)});
}

// Content-Length (RFC 9112 section 6.3 item 5): every value the same string of digits.
std::optional<uint64_t> content_length(const std::vector<std::string_view>& values) {
  std::optional<std::string_view> seen;
  for (std::string_view value : values) {
    if (value.empty() || value.size() > 18 ||
        !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return std::nullopt;
    if (seen && *seen != value) return std::nullopt;
    seen = value;
  }
  return seen ? std::stoull(std::string(*seen)) : 0;
}

}  // namespace

std::optional<std::pair<std::string, std::string>> parse_basic_credentials(
    std::string_view value) {
  value = http_trim(value);
  const size_t space = value.find(' ');
  if (space == std::string_view::npos || http_lower(value.substr(0, space)) != "basic")
    return std::nullopt;
  const std::string_view token = http_trim(value.substr(space + 1));
  if (!is_base64(token)) return std::nullopt;
  gsize length = 0;
  guchar* decoded = g_base64_decode(std::string(token).c_str(), &length);
  std::string text(reinterpret_cast<const char*>(decoded), length);
  g_free(decoded);
  const size_t colon = text.find(':');
  if (colon == std::string::npos) return std::nullopt;
  return std::make_pair(text.substr(0, colon), text.substr(colon + 1));
}

HttpAuthGate::HttpAuthGate(Checker checker, std::string realm)
    : checker_(std::move(checker)), realm_(std::move(realm)) {}

void HttpAuthGate::refuse(std::vector<Action>& out, int status, const char* title,
                          const char* detail, bool challenge) {
  state_ = State::kDone;
  buffer_.clear();
  if (forwarded_ > 0) {
    out.push_back({Action::Kind::kStop, {}});
    return;
  }
  // RFC 7617 section 2: the challenge names the realm; charset says how the browser
  // encodes non-ASCII user names and passwords.
  const std::string fields =
      challenge ? "WWW-Authenticate: Basic realm=\"" + realm_ + "\", charset=\"UTF-8\"\r\n" : "";
  out.push_back({Action::Kind::kAnswer,
                 http_error_response(status, title, detail, fields, "natfwd peer")});
}

bool HttpAuthGate::start_request(std::vector<Action>& out) {
  const HttpHead head = parse_http_head(std::as_bytes(std::span(buffer_)));
  const std::vector<std::string_view> authorization = head.values("authorization");
  if (authorization.size() > 1) {
    refuse(out, 400, "Bad Request", "more than one Authorization header", false);
    return false;
  }
  std::optional<std::pair<std::string, std::string>> credentials;
  if (!authorization.empty()) credentials = parse_basic_credentials(authorization[0]);
  switch (checker_(credentials)) {
    case Check::kAccepted:
      break;
    case Check::kRejected:
      refuse(out, 401, "Unauthorized", "this site needs a user name and password", true);
      return false;
    case Check::kBusy:
      refuse(out, 503, "Service Unavailable",
             "too many password attempts; try again in a minute", false);
      return false;
  }
  const std::vector<std::string_view> codings = head.values("transfer-encoding");
  const std::vector<std::string_view> lengths = head.values("content-length");
  bool chunked = false;
  uint64_t length = 0;
  if (!codings.empty()) {
    // RFC 9112 section 6.1: chunked must be the last coding; with Content-Length too,
    // the two could frame the request differently for the target than for us.
    std::string all;
    for (std::string_view coding : codings) all += std::string(coding) + ",";
    all.pop_back();
    const std::string last = http_lower(http_trim(all.substr(all.rfind(',') + 1)));
    if (last != "chunked" || !lengths.empty()) {
      refuse(out, 400, "Bad Request", "unsupported request framing", false);
      return false;
    }
    chunked = true;
  } else if (auto parsed = content_length(lengths)) {
    length = *parsed;
  } else {
    refuse(out, 400, "Bad Request", "malformed Content-Length", false);
    return false;
  }
  forward(out, std::string_view(buffer_).substr(0, head.length));
  buffer_.erase(0, head.length);
  ++forwarded_;
  if (head.method == "CONNECT" || !head.values("upgrade").empty()) {
    state_ = State::kTunnel;
  } else if (chunked) {
    state_ = State::kChunkSize;
  } else {
    body_left_ = length;
    state_ = body_left_ ? State::kBody : State::kHead;
  }
  return true;
}

std::optional<std::string> HttpAuthGate::take_line(std::vector<Action>& out, bool& too_long) {
  const size_t eol = buffer_.find("\r\n");
  if (eol == std::string::npos) {
    too_long = buffer_.size() > kMaxLineBytes;
    return std::nullopt;
  }
  too_long = eol > kMaxLineBytes;
  if (too_long) return std::nullopt;
  std::string line = buffer_.substr(0, eol);
  forward(out, std::string_view(buffer_).substr(0, eol + 2));
  buffer_.erase(0, eol + 2);
  return line;
}

std::vector<HttpAuthGate::Action> HttpAuthGate::receive(std::span<const std::byte> data) {
  std::vector<Action> out;
  if (state_ == State::kDone) return out;
  buffer_.append(reinterpret_cast<const char*>(data.data()), data.size());
  while (!buffer_.empty() && state_ != State::kDone) {
    switch (state_) {
      case State::kDone:
        break;
      case State::kTunnel:
        forward(out, buffer_);
        buffer_.clear();
        break;
      case State::kHead: {
        const HttpHead head = parse_http_head(std::as_bytes(std::span(buffer_)));
        if (head.status == HttpHead::Status::kNeedMore) return out;
        if (head.status == HttpHead::Status::kInvalid) {
          refuse(out, 400, "Bad Request", head.reason, false);
          return out;
        }
        if (!start_request(out)) return out;
        break;
      }
      case State::kBody:
      case State::kChunkData: {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(body_left_, buffer_.size()));
        forward(out, std::string_view(buffer_).substr(0, n));
        buffer_.erase(0, n);
        body_left_ -= n;
        if (body_left_ == 0) state_ = state_ == State::kBody ? State::kHead : State::kChunkEnd;
        break;
      }
      case State::kChunkEnd:
        if (buffer_.size() < 2) return out;
        if (buffer_.compare(0, 2, "\r\n") != 0) {
          refuse(out, 400, "Bad Request", "malformed chunked body", false);
          return out;
        }
        forward(out, "\r\n");
        buffer_.erase(0, 2);
        state_ = State::kChunkSize;
        break;
      case State::kChunkSize:
      case State::kTrailer: {
        bool too_long = false;
        const std::optional<std::string> line = take_line(out, too_long);
        if (!line) {
          if (too_long) refuse(out, 400, "Bad Request", "chunk line too long", false);
          return out;
        }
        if (state_ == State::kTrailer) {
          if (line->empty()) state_ = State::kHead;
          break;
        }
        // chunk-size [ chunk-ext ] (RFC 9112 section 7.1): hex digits.
        const std::string size = std::string(http_trim(line->substr(0, line->find(';'))));
        if (size.empty() || size.size() > 15 ||
            size.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
          refuse(out, 400, "Bad Request", "malformed chunk size", false);
          return out;
        }
        body_left_ = std::stoull(size, nullptr, 16);
        state_ = body_left_ ? State::kChunkData : State::kTrailer;
        break;
      }
    }
  }
  return out;
}

}  // namespace natfwd

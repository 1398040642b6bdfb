#include "front_door/http_head.h"

#include <algorithm>
#include <cctype>
#include <vector>

#include "rendezvous/rendezvous_core.h"

namespace natfwd::relay::front_door {
namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

HttpHead invalid(const char* reason) {
  HttpHead head;
  head.status = HttpHead::Status::kInvalid;
  head.reason = reason;
  return head;
}

// RFC 9110 section 5.6.2: a token is visible ASCII without delimiters.
bool is_token(std::string_view text) {
  if (text.empty()) return false;
  constexpr std::string_view kDelimiters = "\"(),/:;<=>?@[\\]{}";
  for (unsigned char c : text)
    if (c <= 32 || c >= 127 || kDelimiters.find(static_cast<char>(c)) != std::string_view::npos)
      return false;
  return true;
}

// Host without its port (RFC 9110 section 7.2: uri-host [ ":" port ]); IPv6 literals
// keep their brackets. Empty when malformed.
std::string host_without_port(std::string_view value) {
  if (value.empty()) return "";
  std::string_view host = value;
  if (value.front() == '[') {
    const size_t close = value.find(']');
    if (close == std::string_view::npos) return "";
    host = value.substr(0, close + 1);
    value.remove_prefix(close + 1);
    if (!value.empty() && value.front() != ':') return "";
  } else if (const size_t colon = value.rfind(':'); colon != std::string_view::npos) {
    host = value.substr(0, colon);
    value.remove_prefix(colon);
  } else {
    value = {};
  }
  if (!value.empty()) {  // ":" port
    value.remove_prefix(1);
    if (value.size() > 5 || !std::all_of(value.begin(), value.end(), [](char c) {
          return c >= '0' && c <= '9';
        }))
      return "";
  }
  if (host.empty()) return "";
  for (unsigned char c : host)
    if (c <= 32 || c >= 127 || c == '/' || c == '@') return "";
  std::string out = lower(host);
  if (out.back() == '.') out.pop_back();  // a fully qualified "name.domain."
  return out;
}

}  // namespace

HttpHead parse_http_head(std::span<const std::byte> data) {
  const std::string_view text(reinterpret_cast<const char*>(data.data()),
                              std::min(data.size(), kMaxHeadBytes));
  const size_t end = text.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    // RFC 9112 section 2.2: a bare LF is not a line end a server must accept.
    if (data.size() >= kMaxHeadBytes) return invalid("request head too long");
    // Reject what can never become a request at once, without waiting for more.
    const size_t first_line = text.find("\r\n");
    const std::string_view start = text.substr(0, first_line);
    for (unsigned char c : start)
      if (c < 32 && c != '\t' && c != '\r') return invalid("not an HTTP request");
    return {};
  }
  HttpHead head;
  head.length = end + 4;
  std::string_view rest = text.substr(0, end + 2);
  // Request line: method SP request-target SP HTTP-version (RFC 9112 section 3).
  const size_t line_end = rest.find("\r\n");
  const std::string_view line = rest.substr(0, line_end);
  rest.remove_prefix(line_end + 2);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return invalid("malformed request line");
  if (!is_token(line.substr(0, sp1))) return invalid("malformed method");
  const std::string_view version = line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return invalid("not HTTP/1.x");
  std::optional<std::string> host;
  while (!rest.empty()) {
    const size_t eol = rest.find("\r\n");
    const std::string_view field = rest.substr(0, eol);
    rest.remove_prefix(eol + 2);
    const size_t colon = field.find(':');
    // RFC 9112 section 5.1: no white space between the name and the colon.
    if (colon == std::string_view::npos || !is_token(field.substr(0, colon)))
      return invalid("malformed header field");
    if (lower(field.substr(0, colon)) != "host") continue;
    // RFC 9112 section 3.2: more than one Host is answered with 400.
    if (host) return invalid("more than one Host header");
    host = host_without_port(trim(field.substr(colon + 1)));
    if (host->empty()) return invalid("malformed Host header");
  }
  if (!host) return invalid("no Host header");
  head.status = HttpHead::Status::kComplete;
  head.host = std::move(*host);
  return head;
}

std::optional<std::string> published_name(std::string_view host, std::string_view domain) {
  if (domain.empty() || host.size() <= domain.size() + 1) return std::nullopt;
  if (!host.ends_with(domain) || host[host.size() - domain.size() - 1] != '.')
    return std::nullopt;
  std::string name(host.substr(0, host.size() - domain.size() - 1));
  if (!is_valid_peer_name(name)) return std::nullopt;
  return name;
}

std::string with_forwarded_fields(std::string_view bytes, size_t head_length,
                                  std::string_view visitor_ip) {
  // Field lines, each without its CRLF; the request line first.
  std::vector<std::string> lines;
  std::string_view head = bytes.substr(0, head_length - 2);  // keep the last field's CRLF
  while (!head.empty()) {
    const size_t eol = head.find("\r\n");
    lines.emplace_back(head.substr(0, eol));
    head.remove_prefix(eol + 2);
  }
  std::optional<size_t> last_for;
  std::vector<std::string> kept;
  for (size_t i = 0; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    const std::string name = i == 0 ? "" : lower(std::string_view(lines[i]).substr(0, colon));
    if (name == "x-forwarded-proto") continue;
    if (name == "x-forwarded-for") last_for = kept.size();
    kept.push_back(std::move(lines[i]));
  }
  if (last_for) {
    std::string& line = kept[*last_for];
    const std::string_view value = trim(std::string_view(line).substr(line.find(':') + 1));
    line = value.empty() ? "X-Forwarded-For: " + std::string(visitor_ip)
                         : line.substr(0, line.find_last_not_of(" \t") + 1) + ", " +
                               std::string(visitor_ip);
  } else {
    kept.push_back("X-Forwarded-For: " + std::string(visitor_ip));
  }
  kept.push_back("X-Forwarded-Proto: http");
  std::string out;
  for (const std::string& line : kept) out += line + "\r\n";
  out += "\r\n";
  out.append(bytes.substr(head_length));
  return out;
}

std::string http_error_response(int status, std::string_view title, std::string_view detail) {
  std::string escaped;
  for (char c : detail) {
    if (c == '<') escaped += "&lt;";
    else if (c == '>') escaped += "&gt;";
    else if (c == '&') escaped += "&amp;";
    else escaped += c;
  }
  const std::string body = "<!DOCTYPE html>\n<html><head><title>" + std::string(title) +
                           "</title></head><body><h1>" + std::string(title) + "</h1><p>" +
                           escaped + "</p><hr><p>natfwd relay</p></body></html>\n";
  return "HTTP/1.1 " + std::to_string(status) + " " + std::string(title) +
         "\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n" +
         body;
}

std::string https_redirect_response(std::string_view host, std::string_view bytes) {
  // The request line was checked whole by parse_http_head: METHOD SP TARGET SP VERSION.
  const std::string_view line = bytes.substr(0, bytes.find('\r'));
  const size_t first = line.find(' ');
  const size_t second = first == std::string_view::npos ? first : line.find(' ', first + 1);
  std::string_view target =
      second == std::string_view::npos ? "/" : line.substr(first + 1, second - first - 1);
  if (!target.starts_with('/') || target.find_first_of("\r\n \t") != std::string_view::npos)
    target = "/";
  const std::string location = "https://" + std::string(host) + std::string(target);
  return "HTTP/1.1 308 Permanent Redirect\r\nLocation: " + location +
         "\r\nContent-Length: 0\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n";
}

}  // namespace natfwd::relay::front_door

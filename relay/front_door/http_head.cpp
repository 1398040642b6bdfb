#include "front_door/http_head.h"

#include <vector>

#include "rendezvous/rendezvous_core.h"

namespace natfwd::relay::front_door {

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
    const std::string name = i == 0 ? "" : http_lower(std::string_view(lines[i]).substr(0, colon));
    if (name == "x-forwarded-proto") continue;
    if (name == "x-forwarded-for") last_for = kept.size();
    kept.push_back(std::move(lines[i]));
  }
  if (last_for) {
    std::string& line = kept[*last_for];
    const std::string_view value = http_trim(std::string_view(line).substr(line.find(':') + 1));
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

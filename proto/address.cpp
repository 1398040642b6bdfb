#include "address.h"

#include <charconv>

namespace natfwd {

std::string HostPort::to_string() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

Parsed<std::vector<std::string>> split_colon_fields(std::string_view text) {
  std::vector<std::string> fields;
  std::string current;
  bool in_brackets = false;
  bool field_was_bracketed = false;
  for (char c : text) {
    if (c == '[') {
      if (in_brackets || !current.empty()) return std::string("unexpected '['");
      in_brackets = true;
      field_was_bracketed = true;
    } else if (c == ']') {
      if (!in_brackets) return std::string("unexpected ']'");
      in_brackets = false;
    } else if (c == ':' && !in_brackets) {
      fields.push_back(std::move(current));
      current.clear();
      field_was_bracketed = false;
    } else {
      if (field_was_bracketed && !in_brackets) return std::string("text after ']'");
      current.push_back(c);
    }
  }
  if (in_brackets) return std::string("missing ']'");
  fields.push_back(std::move(current));
  return fields;
}

Parsed<uint16_t> parse_port(std::string_view text, bool allow_zero) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value > 65535)
    return "'" + std::string(text) + "' is not a port number (0-65535)";
  if (value == 0 && !allow_zero) return std::string("port 0 is not allowed here");
  return static_cast<uint16_t>(value);
}

bool is_valid_host(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  for (char c : host) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == ':' || c == '_' || c == '%';
    if (!ok) return false;
  }
  return true;
}

bool is_custom_domain_name(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  size_t labels = 0;
  bool all_digits = true;  // every label numeric: an IPv4 literal, not a name
  while (true) {
    const size_t dot = name.find('.');
    const std::string_view label = name.substr(0, dot);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-')
      return false;
    for (char c : label) {
      const bool digit = c >= '0' && c <= '9';
      if (!digit && !(c >= 'a' && c <= 'z') && c != '-') return false;
      all_digits = all_digits && digit;
    }
    ++labels;
    if (dot == std::string_view::npos) break;
    name.remove_prefix(dot + 1);
  }
  return labels >= 2 && !all_digits;
}

Parsed<HostPort> parse_host_port(std::string_view text, std::optional<uint16_t> default_port,
                                 bool allow_zero_port) {
  // A bare IPv6 literal ("::1") has several colons and no brackets.
  auto fields_or = split_colon_fields(text);
  if (auto* error = std::get_if<std::string>(&fields_or)) return *error;
  auto& fields = std::get<std::vector<std::string>>(fields_or);
  HostPort result;
  if (fields.size() == 1 && default_port) {
    result.host = fields[0];
    result.port = *default_port;
  } else if (fields.size() == 2) {
    result.host = fields[0];
    auto port = parse_port(fields[1], allow_zero_port);
    if (auto* error = std::get_if<std::string>(&port)) return *error;
    result.port = std::get<uint16_t>(port);
  } else {
    return "'" + std::string(text) + "' is not HOST:PORT";
  }
  if (!is_valid_host(result.host)) return "'" + result.host + "' is not a valid host";
  return result;
}

}  // namespace natfwd

// Parsing of the host/port notations used on the command line and in messages.
// Pure functions; errors are one human sentence, ready to print after the flag name.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace natfwd {

struct HostPort {
  std::string host;  // without brackets, e.g. "::1" or "buffalo"
  uint16_t port = 0;

  // "host:port", with brackets around IPv6 literals.
  std::string to_string() const;
  bool operator==(const HostPort&) const = default;
};

// Either a value or a one-line error message.
template <typename T>
using Parsed = std::variant<T, std::string>;

// Splits "a:b:[::1]:d" into fields at colons outside brackets; brackets are removed.
// Returns an error for unbalanced brackets.
Parsed<std::vector<std::string>> split_colon_fields(std::string_view text);

// A port number 0..65535 (0 allowed only when allow_zero).
Parsed<uint16_t> parse_port(std::string_view text, bool allow_zero);

// "host:port"; default_port is used when the text has no port and default_port is set.
Parsed<HostPort> parse_host_port(std::string_view text,
                                 std::optional<uint16_t> default_port = std::nullopt,
                                 bool allow_zero_port = false);

// A plausible host name or IP literal (letters, digits, '-', '.', ':', '_').
bool is_valid_host(std::string_view host);

// A DNS name a publisher may claim as its own (`--publish https:www.example.org=PORT`):
// lowercase letters, digits and '-' in labels of 1-63 characters (RFC 1035 section
// 2.3.1, with RFC 1123 section 2.1's leading digits), at least two labels, 253
// characters at most, no trailing dot and no IP literal.
bool is_custom_domain_name(std::string_view name);

}  // namespace natfwd

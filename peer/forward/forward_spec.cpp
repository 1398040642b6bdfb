#include "forward_spec.h"

namespace natfwd {
namespace {

Parsed<HostPort> target_from(const std::string& host, const std::string& port_text,
                             std::string_view whole) {
  if (!is_valid_host(host)) return "'" + host + "' is not a valid host in '" + std::string(whole) + "'";
  auto port = parse_port(port_text, false);
  if (auto* error = std::get_if<std::string>(&port)) return *error;
  return HostPort{host, std::get<uint16_t>(port)};
}

// The BIND of -L and -D; "*" means every interface, as in ssh.
// Sets `host`; returns an error sentence, or an empty one.
std::string bind_host_from(const std::string& field, std::string_view whole, std::string& host) {
  host = field == "*" ? "0.0.0.0" : field;
  if (!is_valid_host(host))
    return "'" + field + "' is not a valid bind address in '" + std::string(whole) + "'";
  return "";
}

}  // namespace

Parsed<ServeSpec> parse_serve_spec(std::string_view text) {
  auto fields_or = split_colon_fields(text);
  if (auto* error = std::get_if<std::string>(&fields_or)) return *error;
  auto& fields = std::get<std::vector<std::string>>(fields_or);
  ServeSpec spec;
  if (fields.size() == 3) {
    auto port = parse_port(fields[0], false);
    if (auto* error = std::get_if<std::string>(&port)) return *error;
    spec.suggested_port = std::get<uint16_t>(port);
    fields.erase(fields.begin());
  } else if (fields.size() != 2) {
    return "'" + std::string(text) + "' is not [PORT:]HOST:HOSTPORT";
  }
  auto target = target_from(fields[0], fields[1], text);
  if (auto* error = std::get_if<std::string>(&target)) return *error;
  spec.target = std::get<HostPort>(target);
  return spec;
}

Parsed<LocalForwardSpec> parse_local_forward_spec(std::string_view text) {
  auto fields_or = split_colon_fields(text);
  if (auto* error = std::get_if<std::string>(&fields_or)) return *error;
  auto& fields = std::get<std::vector<std::string>>(fields_or);
  LocalForwardSpec spec;
  spec.listen.host = "127.0.0.1";
  if (fields.size() == 4) {
    if (auto error = bind_host_from(fields[0], text, spec.listen.host); !error.empty()) return error;
    fields.erase(fields.begin());
  } else if (fields.size() != 3) {
    return "'" + std::string(text) + "' is not [BIND:]PORT:HOST:HOSTPORT";
  }
  auto port = parse_port(fields[0], true);
  if (auto* error = std::get_if<std::string>(&port)) return *error;
  spec.listen.port = std::get<uint16_t>(port);
  auto target = target_from(fields[1], fields[2], text);
  if (auto* error = std::get_if<std::string>(&target)) return *error;
  spec.target = std::get<HostPort>(target);
  return spec;
}

Parsed<HostPort> parse_socks_listen_spec(std::string_view text) {
  auto fields_or = split_colon_fields(text);
  if (auto* error = std::get_if<std::string>(&fields_or)) return *error;
  auto& fields = std::get<std::vector<std::string>>(fields_or);
  HostPort listen{"127.0.0.1", 0};
  if (fields.size() == 2) {
    if (auto error = bind_host_from(fields[0], text, listen.host); !error.empty()) return error;
    fields.erase(fields.begin());
  } else if (fields.size() != 1) {
    return "'" + std::string(text) + "' is not [BIND:]PORT";
  }
  auto port = parse_port(fields[0], true);
  if (auto* error = std::get_if<std::string>(&port)) return *error;
  listen.port = std::get<uint16_t>(port);
  return listen;
}

bool is_valid_peer_name(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-'))) return false;
  }
  return true;
}

}  // namespace natfwd

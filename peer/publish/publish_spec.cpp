#include "publish/publish_spec.h"

#include <vector>

namespace natfwd {

Parsed<PublishSpec> parse_publish_spec(std::string_view text) {
  const std::string whole(text);
  const size_t colon = text.find(':');
  if (colon == std::string_view::npos)
    return "'" + whole + "' is not KIND:[HOST:]PORT (for example http:8000)";
  const std::string_view kind = text.substr(0, colon);
  PublishSpec spec;
  if (kind == "http") spec.kind = PublishSpec::Kind::kHttp;
  else if (kind == "tls") spec.kind = PublishSpec::Kind::kTls;
  else if (kind == "tcp") spec.kind = PublishSpec::Kind::kTcp;
  else return "'" + std::string(kind) + "' in '" + whole + "' is not a kind that can be "
              "published (http, tls, tcp)";
  auto fields_or = split_colon_fields(text.substr(colon + 1));
  if (auto* error = std::get_if<std::string>(&fields_or)) return *error;
  auto& fields = std::get<std::vector<std::string>>(fields_or);
  spec.target.host = "127.0.0.1";
  // tcp: a leading PUBLICPORT, told from a HOST by being a number.
  const bool numeric = !fields.empty() &&
                       fields[0].find_first_not_of("0123456789") == std::string::npos;
  if (spec.kind == PublishSpec::Kind::kTcp && fields.size() >= 2 &&
      (fields.size() == 3 || numeric)) {
    auto public_port = parse_port(fields[0], true);
    if (auto* error = std::get_if<std::string>(&public_port)) return *error;
    spec.public_port = std::get<uint16_t>(public_port);
    fields.erase(fields.begin());
  }
  if (fields.size() == 2) {
    spec.target.host = fields[0];
    if (!is_valid_host(spec.target.host))
      return "'" + fields[0] + "' is not a valid host in '" + whole + "'";
    fields.erase(fields.begin());
  } else if (fields.size() != 1) {
    return "'" + whole + "' is not " + std::string(kind) +
           (spec.kind == PublishSpec::Kind::kTcp ? ":[PUBLICPORT:][HOST:]PORT" : ":[HOST:]PORT");
  }
  auto port = parse_port(fields[0], false);
  if (auto* error = std::get_if<std::string>(&port)) return *error;
  spec.target.port = std::get<uint16_t>(port);
  return spec;
}

const char* publish_kind_name(PublishSpec::Kind kind) {
  switch (kind) {
    case PublishSpec::Kind::kHttp:
      return "http";
    case PublishSpec::Kind::kTls:
      return "tls";
    case PublishSpec::Kind::kTcp:
      return "tcp";
  }
  return "?";
}

}  // namespace natfwd

#include "publish/publish_spec.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <vector>

namespace natfwd {

namespace {

Parsed<PublishSpec> parse_target(std::string_view text);

constexpr std::string_view kAllowFrom = "allow-from=";
constexpr std::string_view kAuth = "auth=";
constexpr std::string_view kCert = "cert=";
constexpr std::string_view kKey = "key=";
// The relay takes this many ranges per publish (relay/rendezvous/rendezvous_core.cpp).
constexpr size_t kMaxAllowFrom = 32;

// IP[/BITS] with BITS up to the address's length; the relay parses and applies it.
bool is_address_range(std::string_view text) {
  const size_t slash = text.find('/');
  const std::string ip(text.substr(0, slash));
  unsigned char bytes[16];
  unsigned max_bits = 0;
  if (inet_pton(AF_INET, ip.c_str(), bytes) == 1) max_bits = 32;
  else if (inet_pton(AF_INET6, ip.c_str(), bytes) == 1) max_bits = 128;
  else return false;
  if (slash == std::string_view::npos) return true;
  const std::string_view bits = text.substr(slash + 1);
  unsigned value = 0;
  auto [end, ec] = std::from_chars(bits.data(), bits.data() + bits.size(), value);
  return !bits.empty() && ec == std::errc() && end == bits.data() + bits.size() &&
         value <= max_bits;
}

}  // namespace

Parsed<PublishSpec> parse_publish_spec(std::string_view text) {
  const std::string whole(text);
  const size_t comma = text.find(',');
  auto spec_or = parse_target(text.substr(0, comma));
  if (std::holds_alternative<std::string>(spec_or)) return spec_or;
  auto& spec = std::get<PublishSpec>(spec_or);
  std::string_view options = comma == std::string_view::npos ? "" : text.substr(comma + 1);
  // Every comma starts an option: "tcp:22," names an empty one.
  while (comma != std::string_view::npos) {
    const size_t next = options.find(',');
    const std::string_view option = options.substr(0, next);
    if (option == "proxy-protocol") {
      if (spec.kind == PublishSpec::Kind::kHttp)
        return "'proxy-protocol' in '" + whole + "' is for tcp, tls and https; http gets "
               "X-Forwarded-For";
      spec.proxy_protocol = true;
    } else if (option.starts_with(kAllowFrom)) {
      const std::string_view range = option.substr(kAllowFrom.size());
      if (!is_address_range(range))
        return "'" + std::string(range) + "' in '" + whole + "' is not an address range "
               "(192.168.0.0/16, 2001:db8::/32 or one address)";
      if (spec.allow_from.size() >= kMaxAllowFrom)
        return "'" + whole + "' has more than " + std::to_string(kMaxAllowFrom) +
               " allow-from ranges";
      spec.allow_from.emplace_back(range);
    } else if (option.starts_with(kAuth)) {
      if (spec.kind != PublishSpec::Kind::kHttp && spec.kind != PublishSpec::Kind::kHttps)
        return "'auth=' in '" + whole + "' is for http and https (the peer reads the "
               "requests; tls and tcp bytes pass untouched)";
      if (option.size() == kAuth.size()) return "'auth=' in '" + whole + "' names no file";
      spec.auth_file = std::string(option.substr(kAuth.size()));
    } else if ((option.starts_with(kCert) || option.starts_with(kKey)) &&
               spec.kind == PublishSpec::Kind::kHttps) {
      const bool cert = option.starts_with(kCert);
      const std::string_view file = option.substr(cert ? kCert.size() : kKey.size());
      if (file.empty()) return "'" + std::string(option) + "' in '" + whole + "' names no file";
      (cert ? spec.cert_file : spec.key_file) = file;
    } else {
      return "'" + std::string(option) + "' in '" + whole + "' is not a publish option "
             "(proxy-protocol, allow-from=CIDR; http, https: auth=FILE; https: cert=FILE, key=FILE)";
    }
    if (next == std::string_view::npos) break;
    options.remove_prefix(next + 1);
  }
  // Neither: the certificate comes from ACME (--acme-directory).
  if (spec.kind == PublishSpec::Kind::kHttps && spec.cert_file.empty() != spec.key_file.empty())
    return "'" + whole + "' needs cert=FILE,key=FILE together (the certificate chain and key "
           "to serve), or neither for a certificate from --acme-directory";
  // The PROXY header goes to the target ahead of the first request, where the peer
  // reads requests to check their credentials.
  if (spec.proxy_protocol && !spec.auth_file.empty())
    return "'" + whole + "' has both proxy-protocol and auth=; the peer checks requests "
           "only without a PROXY header in front of them";
  return spec;
}

namespace {

Parsed<PublishSpec> parse_target(std::string_view text) {
  const std::string whole(text);
  const size_t colon = text.find(':');
  if (colon == std::string_view::npos)
    return "'" + whole + "' is not KIND:[HOST:]PORT (for example http:8000)";
  const std::string_view kind = text.substr(0, colon);
  PublishSpec spec;
  if (kind == "http") spec.kind = PublishSpec::Kind::kHttp;
  else if (kind == "tls") spec.kind = PublishSpec::Kind::kTls;
  else if (kind == "tcp") spec.kind = PublishSpec::Kind::kTcp;
  else if (kind == "https") spec.kind = PublishSpec::Kind::kHttps;
  else return "'" + std::string(kind) + "' in '" + whole + "' is not a kind that can be "
              "published (http, tls, https, tcp)";
  std::string_view target = text.substr(colon + 1);
  // tls and https: a custom domain before '=' (a host or port never holds one).
  if (const size_t equals = target.find('='); equals != std::string_view::npos) {
    if (spec.kind != PublishSpec::Kind::kTls && spec.kind != PublishSpec::Kind::kHttps)
      return "'" + whole + "': a custom domain (DOMAIN=PORT) is for tls and https";
    spec.custom_domain = target.substr(0, equals);
    std::transform(spec.custom_domain.begin(), spec.custom_domain.end(),
                   spec.custom_domain.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (!spec.custom_domain.empty() && spec.custom_domain.back() == '.')
      spec.custom_domain.pop_back();
    if (!is_custom_domain_name(spec.custom_domain))
      return "'" + std::string(target.substr(0, equals)) + "' in '" + whole +
             "' is not a domain name (such as www.example.org)";
    target.remove_prefix(equals + 1);
  }
  auto fields_or = split_colon_fields(target);
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
           (spec.kind == PublishSpec::Kind::kTcp ? ":[PUBLICPORT:][HOST:]PORT"
                                                 : ":[DOMAIN=][HOST:]PORT");
  }
  auto port = parse_port(fields[0], false);
  if (auto* error = std::get_if<std::string>(&port)) return *error;
  spec.target.port = std::get<uint16_t>(port);
  return spec;
}

}  // namespace

const char* publish_kind_name(PublishSpec::Kind kind) {
  switch (kind) {
    case PublishSpec::Kind::kHttp:
      return "http";
    case PublishSpec::Kind::kTls:
      return "tls";
    case PublishSpec::Kind::kTcp:
      return "tcp";
    case PublishSpec::Kind::kHttps:
      return "https";
  }
  return "?";
}

}  // namespace natfwd

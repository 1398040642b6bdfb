#include "config/relay_list.h"

#include <glib.h>

namespace natfwd {

Parsed<std::vector<HostPort>> parse_relay_list(const std::vector<std::string>& flags,
                                               bool insecure_relay) {
  std::vector<std::string> texts = flags;
  if (texts.empty()) {
    const char* env = g_getenv("NATFWD_RELAY");
    gchar** parts = g_strsplit(env ? env : "", ",", -1);
    for (gchar** part = parts; *part; ++part)
      if (*g_strstrip(*part)) texts.push_back(*part);
    g_strfreev(parts);
  }
  if (texts.empty())
    return std::string("no relay configured: give --relay HOST:PORT or set NATFWD_RELAY "
                       "(natfwd has no default relay)");
  const std::string tls_scheme = "tls://";
  std::vector<HostPort> relays;
  for (std::string relay : texts) {
    if (relay.rfind(tls_scheme, 0) == 0) {
      if (insecure_relay) return "--insecure-relay contradicts --relay " + relay;
      relay = relay.substr(tls_scheme.size());
    } else if (relay.find("://") != std::string::npos) {
      return "--relay: '" + relay + "': only tls:// or a plain HOST:PORT is understood";
    }
    auto address = parse_host_port(relay, kDefaultRelayPort);
    if (auto* e = std::get_if<std::string>(&address)) return "--relay: " + *e;
    const HostPort parsed = std::get<HostPort>(address);
    for (const auto& seen : relays)
      if (seen == parsed) return "--relay " + parsed.to_string() + " is given twice";
    relays.push_back(parsed);
  }
  return relays;
}

}  // namespace natfwd

#include "netcheck/netcheck_output.h"

#include <cstdio>

namespace natfwd::netcheck {
namespace {

std::string yes_no(bool b) { return b ? "yes" : "no"; }

}  // namespace

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char esc[8];
      snprintf(esc, sizeof esc, "\\u%04x", c);
      out += esc;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

namespace {

std::string quote(const std::string& s) { return json_string(s); }

std::string json_side(const SideFacts& f) {
  return "{\"udp\": " + std::string(f.udp ? "true" : "false") +
         ", \"mapping\": " + quote(std::string(to_string(f.mapping))) +
         ", \"filtering\": " + quote(std::string(to_string(f.filtering))) +
         ", \"tcp\": " + (f.tcp ? "true" : "false") + ", \"proxy\": " +
         (f.proxy ? "true" : "false") + ", \"port_mapping\": " +
         (f.port_mapping ? "true" : "false") + "}";
}

}  // namespace

std::string format_text(const NetcheckOptions& options, const NetcheckReport& r,
                        const std::optional<RemoteSide>& remote) {
  std::string out;
  auto line = [&](const std::string& text) { out += text + "\n"; };
  line("relay: " + options.relay.to_string() + " (" +
       (r.relay_ip.empty() ? std::string("name does not resolve") : r.relay_ip) +
       ", stun udp port " + std::to_string(options.stun_port) + ")");
  if (!r.not_a_relay.empty()) {
    // Whatever UDP did, it was not a relay's answer or silence: no diagnosis.
    line("not a natfwd relay: " + options.relay.to_string() + " " + r.not_a_relay +
         "; check the host and port of --relay");
    return out;
  }
  if (r.nat.udp) {
    line("udp: yes, mapped address " + r.nat.mapped->to_string() + " (local " +
         r.local_address + (r.nat.port_preserved ? ", port preserved)" : ", port changed)"));
  } else {
    line("udp: no answer from the relay's STUN port");
  }
  if (r.nat.udp && !r.nat.server_discovery && r.nat.mapping != Mapping::kNoNat)
    line("nat behaviour: unknown (the relay has no --alternate-address for RFC 5780)");
  if (r.nat.udp) {
    line("nat mapping: " + std::string(to_string(r.nat.mapping)));
    line("nat filtering: " + std::string(to_string(r.nat.filtering)));
  }
  line("tcp to relay: " + (r.tcp ? "ok (" + std::to_string(r.tcp_ms) + " ms)"
                                 : "failed" + (r.tcp_error.empty() ? "" : ": " + r.tcp_error)));
  if (r.proxy_configured)
    line("via proxy " + options.proxy->to_string() + ": " +
         (r.proxy ? std::string("ok")
                  : "failed" + (r.proxy_error.empty() ? "" : ": " + r.proxy_error)));
  if (!r.gateway_skipped.empty())
    line("port mapping: not probed (" + r.gateway_skipped + ")");
  else if (r.gateway.empty())
    line("port mapping: no default gateway");
  else
    line("port mapping: upnp " + yes_no(r.upnp) + ", nat-pmp/pcp " + yes_no(r.natpmp) +
         " (gateway " + r.gateway + ")" +
         (!r.port_mapping.empty() ? "; mapped " + r.port_mapping + " " + r.port_mapped_address
          : !r.port_mapping_error.empty() ? "; no mapping (" + r.port_mapping_error + ")"
                                          : ""));
  const SideFacts facts = r.facts();
  line("reachability: " + describe_reachability(facts));
  if (remote) {
    line("peer " + remote->name + ": udp " + yes_no(remote->facts.udp) + ", mapping " +
         std::string(to_string(remote->facts.mapping)) + ", filtering " +
         std::string(to_string(remote->facts.filtering)) + ", tcp " +
         yes_no(remote->facts.tcp) + ", proxy " + yes_no(remote->facts.proxy));
    line("path " + remote->name + ": " + std::string(to_string(remote->verdict.path)));
    line("why: " + remote->verdict.why);
    for (const auto& hint : remote->verdict.make_direct) line("to make it direct: " + hint);
  }
  return out;
}

std::string format_json(const NetcheckOptions& options, const NetcheckReport& r,
                        const std::optional<RemoteSide>& remote) {
  std::string out = "{";
  out += "\"relay\": " + quote(options.relay.to_string());
  out += ", \"relay_ip\": " + quote(r.relay_ip);
  out += ", \"stun_port\": " + std::to_string(options.stun_port);
  out += ", \"udp\": " + std::string(r.nat.udp ? "true" : "false");
  out += ", \"local_address\": " + quote(r.local_address);
  out += ", \"mapped_address\": " + (r.nat.mapped ? quote(r.nat.mapped->to_string()) : "null");
  out += ", \"port_preserved\": " + std::string(r.nat.port_preserved ? "true" : "false");
  out += ", \"rfc5780\": " + std::string(r.nat.server_discovery ? "true" : "false");
  out += ", \"mapping\": " + quote(std::string(to_string(r.nat.mapping)));
  out += ", \"filtering\": " + quote(std::string(to_string(r.nat.filtering)));
  out += ", \"tcp\": " + std::string(r.tcp ? "true" : "false");
  out += ", \"tcp_ms\": " + std::to_string(r.tcp_ms);
  out += ", \"proxy\": " + (r.proxy_configured ? std::string(r.proxy ? "true" : "false")
                                               : std::string("null"));
  out += ", \"gateway\": " + quote(r.gateway);
  out += ", \"upnp\": " + std::string(r.upnp ? "true" : "false");
  out += ", \"natpmp\": " + std::string(r.natpmp ? "true" : "false");
  out += ", \"port_mapping\": " + (r.port_mapping.empty() ? "null" : quote(r.port_mapping));
  out += ", \"port_mapped_address\": " +
         (r.port_mapped_address.empty() ? "null" : quote(r.port_mapped_address));
  if (!r.not_a_relay.empty()) out += ", \"not_a_relay\": " + quote(r.not_a_relay);
  else out += ", \"reachability\": " + quote(describe_reachability(r.facts()));
  if (remote) {
    out += ", \"peer\": {\"name\": " + quote(remote->name) + ", \"facts\": " +
           json_side(remote->facts) + ", \"path\": " +
           quote(std::string(to_string(remote->verdict.path))) + ", \"why\": " +
           quote(remote->verdict.why) + ", \"make_direct\": [";
    for (size_t i = 0; i < remote->verdict.make_direct.size(); ++i)
      out += (i ? ", " : "") + quote(remote->verdict.make_direct[i]);
    out += "]}";
  }
  return out + "}\n";
}

int exit_status(const NetcheckReport& r) {
  if (!r.not_a_relay.empty()) return 1;
  return (r.nat.udp || r.tcp || r.proxy) ? 0 : 1;
}

}  // namespace natfwd::netcheck

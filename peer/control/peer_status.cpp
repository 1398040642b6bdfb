#include "control/peer_status.h"

#include <cinttypes>
#include <cstdio>

namespace natfwd {
namespace {

std::string number(double value) {
  char buffer[32];
  snprintf(buffer, sizeof buffer, "%.3f", value);
  return buffer;
}

std::string number(uint64_t value) { return std::to_string(value); }

// Appends "key": value pairs with the commas in between.
class JsonObject {
 public:
  JsonObject& raw(const char* key, const std::string& value) {
    out_ += (out_.empty() ? "{" : ",") + json_quote(key) + ":" + value;
    return *this;
  }
  JsonObject& str(const char* key, const std::string& value) { return raw(key, json_quote(value)); }
  JsonObject& boolean(const char* key, bool value) { return raw(key, value ? "true" : "false"); }
  std::string done() const { return out_.empty() ? "{}" : out_ + "}"; }

 private:
  std::string out_;
};

template <typename T, typename F>
std::string json_array(const std::vector<T>& items, F render) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? "," : "") + render(items[i]);
  return out + "]";
}

std::string path_json(const TunnelStatus& tunnel) {
  if (!tunnel.have_path) return "null";
  const SelectedPath& path = tunnel.path;
  JsonObject object;
  object.str("kind", path.relayed ? "relayed" : "direct")
      .str("transport", path.transport)
      .str("family", path.family())
      .str("local_type", path.local_type)
      .str("local_address", path.local_address)
      .str("remote_type", path.remote_type)
      .str("remote_address", path.remote_address);
  if (!tunnel.turn_server.empty()) object.str("turn_server", tunnel.turn_server);
  return object.done();
}

std::string tunnel_json(const TunnelStatus& tunnel) {
  return JsonObject()
      .str("name", tunnel.name)
      .str("key_id", tunnel.key_id)
      .str("role", tunnel.role)
      .str("state", tunnel.state)
      .raw("path", path_json(tunnel))
      .raw("rtt_ms", number(tunnel.smoothed_rtt_ms))
      .raw("min_rtt_ms", number(tunnel.min_rtt_ms))
      .raw("bytes_sent", number(tunnel.stream_bytes_sent))
      .raw("bytes_received", number(tunnel.stream_bytes_received))
      .raw("datagram_bytes_sent", number(tunnel.udp_bytes_sent))
      .raw("datagram_bytes_received", number(tunnel.udp_bytes_received))
      .raw("open_streams", number(tunnel.open_streams))
      .raw("cwnd_bytes", number(tunnel.cwnd_bytes))
      .raw("bytes_in_flight", number(tunnel.bytes_in_flight))
      .raw("delivery_rate_bytes_per_s", number(tunnel.delivery_rate_bytes_per_s))
      .raw("uptime_s", number(tunnel.uptime_s))
      .raw("last_refusal", tunnel.last_refusal.empty() ? "null" : json_quote(tunnel.last_refusal))
      .done();
}

std::string bytes_text(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(units)) {
    value /= 1024;
    ++unit;
  }
  char buffer[32];
  if (unit == 0) snprintf(buffer, sizeof buffer, "%" PRIu64 " B", bytes);
  else snprintf(buffer, sizeof buffer, "%.1f %s", value, units[unit]);
  return buffer;
}

std::string duration_text(double seconds) {
  const auto total = static_cast<uint64_t>(seconds);
  char buffer[48];
  if (total < 60) snprintf(buffer, sizeof buffer, "%" PRIu64 "s", total);
  else if (total < 3600) snprintf(buffer, sizeof buffer, "%" PRIu64 "m%02" PRIu64 "s", total / 60, total % 60);
  else snprintf(buffer, sizeof buffer, "%" PRIu64 "h%02" PRIu64 "m", total / 3600, total / 60 % 60);
  return buffer;
}

}  // namespace

std::string json_quote(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char escape[8];
          snprintf(escape, sizeof escape, "\\u%04x", c);
          out += escape;
        } else {
          out += static_cast<char>(c);  // UTF-8 passes through unchanged
        }
    }
  }
  return out + "\"";
}

std::string status_json(const PeerStatus& status) {
  JsonObject object;
  object.raw("version", std::to_string(kStatusVersion))
      .str("key_id", status.key_id)
      .raw("uptime_s", number(status.uptime_s))
      .raw("relay", JsonObject()
                        .str("address", status.relay)
                        .boolean("up", status.relay_up)
                        .raw("registered_name", status.registered_name
                                                    ? json_quote(*status.registered_name)
                                                    : "null")
                        .done())
      .raw("relays", json_array(status.relays, [](const RelayLinkStatus& relay) {
             return JsonObject()
                 .str("address", relay.address)
                 .boolean("up", relay.up)
                 .boolean("registered", relay.registered)
                 .done();
           }))
      .raw("serves", json_array(status.serves, json_quote))
      .raw("publishes", json_array(status.publishes, [](const PublishStatus& publish) {
             return JsonObject()
                 .str("kind", publish.kind)
                 .raw("url", publish.url.empty() ? "null" : json_quote(publish.url))
                 .str("target", publish.target)
                 .raw("allow_from", json_array(publish.allow_from, json_quote))
                 .boolean("auth", publish.auth)
                 .boolean("proxy_protocol", publish.proxy_protocol)
                 .raw("visitors", number(publish.visitors))
                 .done();
           }))
      .raw("remote_peer", status.remote_peer ? json_quote(*status.remote_peer) : "null")
      .raw("remote_peers", json_array(status.remote_peers, json_quote))
      .raw("listeners", json_array(status.listeners, [](const ListenerStatus& listener) {
             return JsonObject()
                 .str("address", listener.address)
                 .str("kind", listener.kind)
                 .str("target", listener.target)
                 .str("peer", listener.peer)
                 .done();
           }))
      .raw("tunnels", json_array(status.tunnels, tunnel_json));
  return object.done();
}

std::string status_text(const PeerStatus& status) {
  std::string out = "peer " + status.key_id + ", up " + duration_text(status.uptime_s) + "\n";
  std::vector<RelayLinkStatus> relays = status.relays;
  if (relays.empty()) relays.push_back({status.relay, status.relay_up, status.registered_name.has_value()});
  for (const auto& relay : relays) {
    out += "relay " + relay.address + ": " + (relay.up ? "connected" : "down (reconnecting)");
    if (status.registered_name && relay.registered)
      out += ", registered as " + *status.registered_name;
    out += "\n";
  }
  if (!status.serves.empty()) {
    out += "serving";
    for (size_t i = 0; i < status.serves.size(); ++i) out += (i ? ", " : " ") + status.serves[i];
    out += "\n";
  }
  for (const auto& publish : status.publishes) {
    out += "published " + (publish.url.empty() ? publish.kind + " (not granted yet)" : publish.url) +
           " -> " + publish.target;
    if (publish.proxy_protocol) out += ", proxy-protocol";
    if (publish.auth) out += ", basic auth";
    if (!publish.allow_from.empty()) {
      out += ", allow-from";
      for (size_t i = 0; i < publish.allow_from.size(); ++i)
        out += (i ? "," : " ") + publish.allow_from[i];
    }
    out += ", " + std::to_string(publish.visitors) + " visitor" +
           (publish.visitors == 1 ? "" : "s") + "\n";
  }
  if (status.remote_peers.size() > 1) {
    out += "forwarding to";
    for (size_t i = 0; i < status.remote_peers.size(); ++i)
      out += (i ? ", " : " ") + status.remote_peers[i];
    out += "\n";
  }
  for (const auto& listener : status.listeners) {
    const std::string peer = listener.peer.empty() ? status.remote_peer.value_or("?") : listener.peer;
    out += "listening on " + listener.address + " -> " + peer + " " +
           (listener.kind == "socks" ? "socks" : listener.target) + "\n";
  }
  if (status.tunnels.empty()) out += "no tunnels\n";
  for (const auto& tunnel : status.tunnels) {
    // The role, not a state: "connecting" read as "not up yet" next to the state.
    const std::string role = tunnel.role == "connecting" ? "outgoing"
                             : tunnel.role == "serving"  ? "incoming"
                                                         : tunnel.role;
    out += "tunnel " + tunnel.name + " (" + role + ", key " +
           (tunnel.key_id.empty() ? "not yet known" : tunnel.key_id) + "): " + tunnel.state;
    if (tunnel.state == "up") out += " for " + duration_text(tunnel.uptime_s);
    out += "\n";
    if (tunnel.have_path) {
      out += "  path " + tunnel.path.describe();
      if (!tunnel.turn_server.empty()) out += " via " + tunnel.turn_server;
      out += "\n";
    }
    char rtt[64];
    snprintf(rtt, sizeof rtt, "%.1f ms (min %.1f ms)", tunnel.smoothed_rtt_ms, tunnel.min_rtt_ms);
    out += "  rtt " + std::string(rtt) + ", sent " + bytes_text(tunnel.stream_bytes_sent) +
           ", received " + bytes_text(tunnel.stream_bytes_received) + ", " +
           std::to_string(tunnel.open_streams) + " open stream" +
           (tunnel.open_streams == 1 ? "" : "s") + "\n";
    // What a sender with data waits on: its congestion window (RFC 9002 section 7).
    if (tunnel.cwnd_bytes) {
      char rate[32];
      snprintf(rate, sizeof rate, "%.1f MB/s", static_cast<double>(tunnel.delivery_rate_bytes_per_s) / 1e6);
      out += "  congestion window " + bytes_text(tunnel.cwnd_bytes) + ", " +
             bytes_text(tunnel.bytes_in_flight) + " in flight, delivering " + rate + "\n";
    }
    if (!tunnel.last_refusal.empty()) out += "  last refused: " + tunnel.last_refusal + "\n";
  }
  return out;
}

}  // namespace natfwd

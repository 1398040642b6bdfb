// What `peer status` shows: a snapshot of a running peer, and its two renderings (JSON
// for scripts, text for people). Pure functions of the snapshot, so that they are
// unit-tested without a running peer.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ice/ice_session.h"

namespace natfwd {

// Version of the JSON object (and of the control protocol that carries it). Scripts
// may rely on the fields of a version; new fields may be added without a bump.
inline constexpr int kStatusVersion = 1;

struct TunnelStatus {
  std::string name;     // "home", or "peer 0123456789ab" for a caller
  std::string key_id;   // the remote peer's key id (empty until the relay announced it)
  std::string role;     // "connecting" (we opened it) or "serving" (the other side did)
  std::string state;    // "connecting", "up"
  bool have_path = false;
  SelectedPath path;
  std::string turn_server;  // "turn-tls 203.0.113.10:443" when our side is relayed
  double smoothed_rtt_ms = 0, min_rtt_ms = 0;
  uint64_t stream_bytes_sent = 0, stream_bytes_received = 0;  // application bytes
  uint64_t udp_bytes_sent = 0, udp_bytes_received = 0;        // QUIC datagrams
  uint64_t open_streams = 0;
  // The sender's congestion state (quic_connection.h Stats).
  uint64_t cwnd_bytes = 0, bytes_in_flight = 0, delivery_rate_bytes_per_s = 0;
  double uptime_s = 0;  // since the tunnel came up (0 while connecting)
  // The serving peer's last refusal of a stream through this tunnel, "TARGET: STATUS:
  // DETAIL" (e.g. what it serves instead); empty when none.
  std::string last_refusal;
};

struct ListenerStatus {
  std::string address;  // "127.0.0.1:2222"
  std::string kind;     // "forward" (-L) or "socks" (-D)
  std::string target;   // "buffalo:22" for -L; empty for -D
  std::string peer;     // the serving peer its connections go to
};

// One --publish service.
struct PublishStatus {
  std::string kind;    // "http", "tls" or "tcp"
  std::string url;     // "http://home.share.example.net/"; empty until the relay granted it
  std::string target;  // "127.0.0.1:8000"
  std::vector<std::string> allow_from;  // empty: every visitor
  bool auth = false;            // http basic auth (auth=FILE)
  bool proxy_protocol = false;  // tcp, tls
  uint64_t visitors = 0;        // visitor connections carried to the target so far
};

// One relay link (--relay may be given several times).
struct RelayLinkStatus {
  std::string address;
  bool up = false;
  bool registered = false;  // --name accepted there
};

struct PeerStatus {
  std::string key_id;
  std::string relay;     // the first relay (scripts written for one relay)
  bool relay_up = false;  // any relay link is up
  std::vector<RelayLinkStatus> relays;  // every relay, in --relay order
  std::optional<std::string> registered_name;  // set once the relay accepted --name
  std::vector<std::string> serves;             // --serve targets
  std::vector<PublishStatus> publishes;        // --publish services
  std::optional<std::string> remote_peer;      // the (first) NAME of -L/-D/nc
  std::vector<std::string> remote_peers;       // every serving peer forwarded to
  std::vector<ListenerStatus> listeners;
  std::vector<TunnelStatus> tunnels;
  double uptime_s = 0;
};

// One JSON object, no trailing newline.
std::string status_json(const PeerStatus& status);
// Lines for a person, ending in a newline.
std::string status_text(const PeerStatus& status);
// A JSON string literal (RFC 8259 section 7), quotes included.
std::string json_quote(const std::string& text);

}  // namespace natfwd

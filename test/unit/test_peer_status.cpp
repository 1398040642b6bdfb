// `peer status`: the JSON and text renderings of a snapshot, and the control
// protocol's request line.
#include <catch2/catch.hpp>

#include "control/control_server.h"
#include "control/peer_status.h"

using namespace natfwd;

namespace {

PeerStatus sample() {
  PeerStatus status;
  status.key_id = "aaaabbbbccccddddeeeeffffgggghhhh";
  status.relay = "vps.example:3478";
  status.relay_up = true;
  status.relays = {{"vps.example:3478", true, false}, {"vps2.example:3478", false, false}};
  status.remote_peer = "home";
  status.listeners = {{"127.0.0.1:2222", "forward", "buffalo:22", "home"},
                      {"127.0.0.1:1080", "socks", "", "home"}};
  status.uptime_s = 3725.5;
  TunnelStatus tunnel;
  tunnel.name = "home";
  tunnel.key_id = "iiiijjjjkkkkllllmmmmnnnnoooopppp";
  tunnel.role = "connecting";
  tunnel.state = "up";
  tunnel.have_path = true;
  tunnel.path.relayed = true;
  tunnel.path.transport = "udp";
  tunnel.path.local_type = "relay";
  tunnel.path.local_address = "203.0.113.10:50000";
  tunnel.path.remote_type = "srflx";
  tunnel.path.remote_address = "198.51.100.7:4000";
  tunnel.turn_server = "turn-tls 203.0.113.10:443";
  tunnel.smoothed_rtt_ms = 12.25;
  tunnel.min_rtt_ms = 10;
  tunnel.stream_bytes_sent = 1536;
  tunnel.stream_bytes_received = 5 * 1024 * 1024;
  tunnel.udp_bytes_sent = 4000;
  tunnel.udp_bytes_received = 5400000;
  tunnel.open_streams = 1;
  tunnel.cwnd_bytes = 3 * 1024 * 1024;
  tunnel.bytes_in_flight = 1536 * 1024;
  tunnel.delivery_rate_bytes_per_s = 41'500'000;
  tunnel.uptime_s = 61;
  status.tunnels = {tunnel};
  return status;
}

}  // namespace

TEST_CASE("status JSON carries every field, versioned") {
  REQUIRE(status_json(sample()) ==
          R"({"version":1,"key_id":"aaaabbbbccccddddeeeeffffgggghhhh","uptime_s":3725.500,)"
          R"("relay":{"address":"vps.example:3478","up":true,"registered_name":null},)"
          R"("relays":[{"address":"vps.example:3478","up":true,"registered":false},)"
          R"({"address":"vps2.example:3478","up":false,"registered":false}],)"
          R"("serves":[],"publishes":[],"remote_peer":"home","remote_peers":[],)"
          R"("listeners":[{"address":"127.0.0.1:2222","kind":"forward","target":"buffalo:22","peer":"home"},)"
          R"({"address":"127.0.0.1:1080","kind":"socks","target":"","peer":"home"}],)"
          R"("tunnels":[{"name":"home","key_id":"iiiijjjjkkkkllllmmmmnnnnoooopppp","role":"connecting",)"
          R"("state":"up","path":{"kind":"relayed","transport":"udp","family":"ipv4","local_type":"relay",)"
          R"("local_address":"203.0.113.10:50000","remote_type":"srflx","remote_address":"198.51.100.7:4000",)"
          R"("turn_server":"turn-tls 203.0.113.10:443"},"rtt_ms":12.250,"min_rtt_ms":10.000,)"
          R"("bytes_sent":1536,"bytes_received":5242880,"datagram_bytes_sent":4000,)"
          R"("datagram_bytes_received":5400000,"open_streams":1,"cwnd_bytes":3145728,)"
          R"("bytes_in_flight":1572864,"delivery_rate_bytes_per_s":41500000,"uptime_s":61.000,)"
          R"("last_refusal":null}]})");
}

TEST_CASE("status JSON of a serving peer with a tunnel still connecting") {
  PeerStatus status;
  status.key_id = "k";
  status.relay = "r:1";
  status.registered_name = "home";
  status.serves = {"buffalo:22", "[::1]:80"};
  TunnelStatus tunnel;
  tunnel.name = "peer 0123";
  tunnel.role = "serving";
  tunnel.state = "connecting";
  status.tunnels = {tunnel};
  const std::string json = status_json(status);
  REQUIRE(json.find(R"("up":false,"registered_name":"home")") != std::string::npos);
  REQUIRE(json.find(R"("serves":["buffalo:22","[::1]:80"],"publishes":[],"remote_peer":null,"remote_peers":[],"listeners":[])") !=
          std::string::npos);
  REQUIRE(json.find(R"("state":"connecting","path":null)") != std::string::npos);
}

TEST_CASE("status JSON says the path's address family") {
  PeerStatus status = sample();
  SelectedPath& path = status.tunnels[0].path;
  path.relayed = false;
  path.local_type = "host";
  path.local_address = "[2001:db8:10::2]:40000";
  path.remote_type = "host";
  path.remote_address = "[2001:db8:11::2]:50000";
  REQUIRE(status_json(status).find(R"("kind":"direct","transport":"udp","family":"ipv6",)") !=
          std::string::npos);
  REQUIRE(path.describe() ==
          "direct udp host [2001:db8:10::2]:40000 <-> host [2001:db8:11::2]:50000");
}

TEST_CASE("JSON strings are escaped") {
  REQUIRE(json_quote("plain") == "\"plain\"");
  REQUIRE(json_quote("a\"b\\c") == R"("a\"b\\c")");
  REQUIRE(json_quote("line\nnext\ttab\x01") == R"("line\nnext\ttab\u0001")");
  REQUIRE(json_quote("h\xc3\xa9") == "\"h\xc3\xa9\"");
}

TEST_CASE("status text reads as a summary") {
  const std::string text = status_text(sample());
  REQUIRE(text ==
          "peer aaaabbbbccccddddeeeeffffgggghhhh, up 1h02m\n"
          "relay vps.example:3478: connected\n"
          "relay vps2.example:3478: down (reconnecting)\n"
          "listening on 127.0.0.1:2222 -> home buffalo:22\n"
          "listening on 127.0.0.1:1080 -> home socks\n"
          "tunnel home (outgoing, key iiiijjjjkkkkllllmmmmnnnnoooopppp): up for 1m01s\n"
          "  path relayed udp relay 203.0.113.10:50000 <-> srflx 198.51.100.7:4000 via turn-tls 203.0.113.10:443\n"
          "  rtt 12.2 ms (min 10.0 ms), sent 1.5 KiB, received 5.0 MiB, 1 open stream\n"
          "  congestion window 3.0 MiB, 1.5 MiB in flight, delivering 41.5 MB/s\n");
  PeerStatus idle;
  idle.key_id = "k";
  idle.relay = "r:1";
  REQUIRE(status_text(idle) == "peer k, up 0s\nrelay r:1: down (reconnecting)\nno tunnels\n");
}

TEST_CASE("a refused stream shows under its tunnel, text and JSON") {
  PeerStatus status = sample();
  status.tunnels[0].last_refusal =
      "buffalo:22: not served: home does not serve buffalo:22; it serves 192.168.1.20:22";
  const std::string text = status_text(status);
  CHECK(text.find("41.5 MB/s\n  last refused: buffalo:22: not served: home does not serve "
                  "buffalo:22; it serves 192.168.1.20:22\n") != std::string::npos);
  CHECK(status_json(status).find(R"("last_refusal":"buffalo:22: not served: home does not)") !=
        std::string::npos);
  TunnelStatus incoming = status.tunnels[0];
  incoming.role = "serving";
  incoming.name = "peer 0123";
  status.tunnels = {incoming};
  CHECK(status_text(status).find("tunnel peer 0123 (incoming, key ") != std::string::npos);
}

TEST_CASE("several serving peers: each listener names its own, one line lists them") {
  PeerStatus status = sample();
  status.remote_peers = {"home", "office"};
  status.listeners[0].peer = "home";
  status.listeners.push_back({"127.0.0.1:5433", "forward", "db:5432", "office"});
  TunnelStatus office = status.tunnels[0];
  office.name = "office";
  status.tunnels.push_back(office);
  const std::string text = status_text(status);
  CHECK(text.find("relay vps2.example:3478: down (reconnecting)\nforwarding to home, office\n"
                  "listening on 127.0.0.1:2222 -> home buffalo:22\n"
                  "listening on 127.0.0.1:1080 -> home socks\n"
                  "listening on 127.0.0.1:5433 -> office db:5432\n") != std::string::npos);
  CHECK(text.find("tunnel office (outgoing") != std::string::npos);
  const std::string json = status_json(status);
  CHECK(json.find(R"("remote_peer":"home","remote_peers":["home","office"],)") != std::string::npos);
  CHECK(json.find(R"({"address":"127.0.0.1:5433","kind":"forward","target":"db:5432","peer":"office"})") !=
        std::string::npos);
}

TEST_CASE("published services: kind, URL, target, flags and visitors, text and JSON") {
  PeerStatus status;
  status.key_id = "k";
  status.relay = "r:1";
  status.publishes = {
      {"http", "http://home.share.test/", "127.0.0.1:8000", {"10.0.0.0/8"}, true, false, 3},
      {"tcp", "", "192.168.1.20:22", {}, false, true, 1}};
  const std::string text = status_text(status);
  CHECK(text.find("published http://home.share.test/ -> 127.0.0.1:8000, basic auth, "
                  "allow-from 10.0.0.0/8, 3 visitors\n") != std::string::npos);
  CHECK(text.find("published tcp (not granted yet) -> 192.168.1.20:22, proxy-protocol, "
                  "1 visitor\n") != std::string::npos);
  const std::string json = status_json(status);
  CHECK(json.find(R"("publishes":[{"kind":"http","url":"http://home.share.test/",)"
                  R"("target":"127.0.0.1:8000","allow_from":["10.0.0.0/8"],"auth":true,)"
                  R"("proxy_protocol":false,"visitors":3},{"kind":"tcp","url":null,)") !=
        std::string::npos);
}

TEST_CASE("control requests name the protocol and its version") {
  std::vector<std::string> words;
  std::string error;
  REQUIRE(parse_control_request("natfwd-control 1 status json", words, error));
  REQUIRE(words == std::vector<std::string>{"status", "json"});
  REQUIRE_FALSE(parse_control_request("natfwd-control 2 status json", words, error));
  REQUIRE(error.find("version 2") != std::string::npos);
  REQUIRE_FALSE(parse_control_request("GET / HTTP/1.1", words, error));
  REQUIRE_FALSE(parse_control_request("", words, error));
}

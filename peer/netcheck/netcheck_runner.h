// The GLib side of `peer netcheck`: the two UDP sockets and timer that drive
// NatBehaviourProbe against the relay, a TCP connection to the relay (direct and
// through the proxy), and a look for a port-mapping gateway on the LAN (UPnP IGD by
// SSDP M-SEARCH, NAT-PMP/PCP on the default gateway's UDP port 5351).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "address.h"
#include "netcheck/nat_behaviour_probe.h"
#include "netcheck/path_verdict.h"
#include "rendezvous.pb.h"

namespace natfwd::netcheck {

struct NetcheckOptions {
  HostPort relay;                       // the rendezvous/TCP address
  uint16_t stun_port = 3478;            // STUN/UDP on the relay's host
  std::optional<HostPort> proxy;        // HTTP CONNECT proxy, if configured
  unsigned timeout_seconds = 8;         // for everything together
  bool check_tcp = true;                // false: the caller knows already
  // Ask the gateway for a UDP mapping (PCP, NAT-PMP, UPnP IGD) and delete it again:
  // `peer netcheck` does, a serving peer's own check does not (its ICE sessions map).
  bool try_port_mapping = false;
};

struct NetcheckReport {
  std::string relay_ip;                 // what the relay's name resolved to
  std::string local_address;            // the mapping socket's bound address
  NatBehaviour nat;
  bool tcp = false;                     // TCP to the relay, no proxy, and it answered as one
  long tcp_ms = -1;
  std::string tcp_error;
  // "it answered like SSH (...)": what listens at the relay's address is no natfwd
  // relay, so nothing else in the report says anything about this network.
  std::string not_a_relay;
  bool proxy_configured = false;
  bool proxy = false;                   // the relay through the proxy
  std::string proxy_error;
  std::string gateway;                  // default IPv4 gateway, "" if none
  std::string gateway_skipped;          // why the LAN was not probed, "" if it was
  bool upnp = false;                    // an SSDP answer from an InternetGatewayDevice
  bool natpmp = false;                  // the gateway answered on UDP 5351
  std::string port_mapping;             // "pcp", "nat-pmp" or "upnp": what mapped a port
  std::string port_mapped_address;      // the mapping's external "ip:port"
  std::string port_mapping_error;       // why none did ("pcp: refused; ...")

  SideFacts facts() const;
};

// Every check, run on the thread-default main context; `done` is called once, when
// all have answered or the timeout has passed. Destroying it cancels the run.
class NetcheckRun {
 public:
  using Done = std::function<void(const NetcheckReport&)>;
  NetcheckRun(NetcheckOptions options, Done done);
  ~NetcheckRun();
  NetcheckRun(const NetcheckRun&) = delete;
  NetcheckRun& operator=(const NetcheckRun&) = delete;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// The same, blocking: a main loop of its own until done.
NetcheckReport run_netcheck(const NetcheckOptions& options);

// Where to look from, as the relay's Welcome tells it: the STUN entry's port, the
// relay's IP when known.
NetcheckOptions options_from_welcome(const wire::Welcome& welcome, const HostPort& relay,
                                     const std::string& relay_ip,
                                     const std::optional<HostPort>& proxy);

// The facts on the wire (NetcheckReply) and back.
wire::NatFacts to_wire(const SideFacts& facts);
SideFacts from_wire(const wire::NatFacts& facts);

}  // namespace natfwd::netcheck

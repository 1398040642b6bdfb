// The GLib side of `peer netcheck`: the two UDP sockets and timer that drive
// NatBehaviourProbe against the relay, a TCP connection to the relay (direct and
// through the proxy), and a look for a port-mapping gateway on the LAN (UPnP IGD by
// SSDP M-SEARCH, NAT-PMP/PCP on the default gateway's UDP port 5351).
#pragma once

#include <optional>
#include <string>

#include "address.h"
#include "netcheck/nat_behaviour_probe.h"
#include "netcheck/path_verdict.h"

namespace natfwd::netcheck {

struct NetcheckOptions {
  HostPort relay;                       // the rendezvous/TCP address
  uint16_t stun_port = 3478;            // STUN/UDP on the relay's host
  std::optional<HostPort> proxy;        // HTTP CONNECT proxy, if configured
  unsigned timeout_seconds = 8;         // for everything together
};

struct NetcheckReport {
  std::string relay_ip;                 // what the relay's name resolved to
  std::string local_address;            // the mapping socket's bound address
  NatBehaviour nat;
  bool tcp = false;                     // TCP to the relay, no proxy
  long tcp_ms = -1;
  std::string tcp_error;
  bool proxy_configured = false;
  bool proxy = false;                   // the relay through the proxy
  std::string proxy_error;
  std::string gateway;                  // default IPv4 gateway, "" if none
  bool gateway_skipped = false;         // relay on loopback: the LAN was not probed
  bool upnp = false;                    // an SSDP answer from an InternetGatewayDevice
  bool natpmp = false;                  // the gateway answered on UDP 5351

  SideFacts facts() const;
};

// Runs every check on the thread-default main context (a loop of its own) and
// returns when all are done or the timeout has passed.
NetcheckReport run_netcheck(const NetcheckOptions& options);

}  // namespace natfwd::netcheck

// One port-mapping request to the gateway, blocking, for a worker thread (port_mapper.h
// runs them in GTasks, never on the main loop): PCP with our codec (pcp_codec.h),
// NAT-PMP with libnatpmp, UPnP IGD with miniupnpc. Each is bounded in time: PCP and
// NAT-PMP give up after 2 s without an answer, UPnP discovery waits kUpnpDiscoverMs
// and its HTTP calls carry miniupnpc's own socket timeouts.
#pragma once

#include <cstdint>
#include <string>

#include "portmap/mapping_lifecycle.h"
#include "portmap/pcp_codec.h"

namespace natfwd::portmap {

inline constexpr int kUpnpDiscoverMs = 500;

struct MapJob {
  MapProtocol protocol = MapProtocol::kPcp;
  std::string gateway;     // IPv4 literal
  std::string client_ip;   // our address toward the gateway (IPv4 literal)
  uint16_t internal_port = 0;
  uint16_t external_port = 0;  // suggested; for a delete, the one granted
  uint32_t lifetime_seconds = kRequestedLifetimeSeconds;  // 0 deletes
  PcpNonce nonce{};        // PCP: the same for a mapping's create, renewals and delete
  // UPnP: only find the gateway's control URL (kept for the process), map nothing.
  bool discover_only = false;
};

MapAnswer run_map_job(const MapJob& job);

// The default IPv4 gateway from the kernel's routing table, "" if none.
std::string default_ipv4_gateway();
// Our IPv4 address on the route to `gateway` ("" if none); sends nothing.
std::string local_address_toward(const std::string& gateway);

}  // namespace natfwd::portmap

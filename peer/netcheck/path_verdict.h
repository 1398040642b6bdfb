// Which path two peers will take, from what each side's netcheck found: a pure
// function, so that the rules are a table in the unit tests. The rules are the ones the
// peer's ICE and TURN set-up follow (DESIGN.md), stated in RFC 4787 terms:
//
//  * Direct UDP works when, for one side X of the pair, the other side's packets sent
//    to X's reflexive address get in: X's mapping is endpoint-independent (or no NAT),
//    so the address the relay saw is valid for the other peer too; and X's filter lets
//    them in: endpoint-independent or address-dependent filtering (X has sent to the
//    other's IP), or the other side's mapping is endpoint-independent (its packets come
//    from the reflexive address X has sent to).
//  * Without UDP on a side, direct TCP (ICE-TCP) needs the other side to take inbound
//    connections: a public address with no filtering.
//  * Otherwise TURN: over TLS through the proxy when a side only has a proxy, over TCP
//    when a side has no UDP, else over UDP.
#pragma once

#include <string>
#include <vector>

#include "netcheck/nat_behaviour_probe.h"

namespace natfwd::netcheck {

// One side, as far as the verdict needs it.
struct SideFacts {
  bool udp = false;         // STUN to the relay answered
  Mapping mapping = Mapping::kUnknown;
  Filtering filtering = Filtering::kUnknown;
  bool tcp = false;         // TCP to the relay works without a proxy
  bool proxy = false;       // the relay is reachable through the configured proxy
  bool port_mapping = false;  // UPnP IGD or NAT-PMP/PCP answered on the LAN
  bool port_mapped = false;   // and it mapped a UDP port for us (taken as a full cone)
};

enum class PathKind { kDirectUdp, kDirectTcp, kTurnUdp, kTurnTcp, kTurnTls, kNone };
std::string_view to_string(PathKind path);

struct PathVerdict {
  PathKind path = PathKind::kNone;
  std::string why;                       // one sentence
  std::vector<std::string> make_direct;  // what would make it direct; empty when it is
};

// `local` is this machine, `remote` the named peer; the texts say "this side" and
// "NAME".
PathVerdict predict_path(const SideFacts& local, const SideFacts& remote,
                         const std::string& remote_name);

// One side alone: how it meets a peer it knows nothing about (no NAME given).
std::string describe_reachability(const SideFacts& side);

}  // namespace natfwd::netcheck

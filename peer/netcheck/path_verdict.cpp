#include "netcheck/path_verdict.h"

namespace natfwd::netcheck {
namespace {

bool mapping_independent(Mapping m) {
  return m == Mapping::kNoNat || m == Mapping::kEndpointIndependent;
}

// Packets from `other` to `x`'s reflexive address reach x (see the header).
bool reachable_by(const SideFacts& x, const SideFacts& other) {
  if (!mapping_independent(x.mapping)) return false;
  if (x.filtering == Filtering::kEndpointIndependent ||
      x.filtering == Filtering::kAddressDependent)
    return true;
  return mapping_independent(other.mapping);
}

// Takes inbound TCP: a public address and no filter (RFC 5780 sees EIF and no NAT).
bool open_to_tcp(const SideFacts& s) {
  return s.tcp && s.mapping == Mapping::kNoNat && s.filtering == Filtering::kEndpointIndependent;
}

// Any sender's packets to its reflexive address get in (no NAT or a full cone).
bool open_to_anyone(const SideFacts& s) {
  return mapping_independent(s.mapping) && s.filtering == Filtering::kEndpointIndependent;
}

bool proxy_only(const SideFacts& s) { return !s.udp && !s.tcp && s.proxy; }

// Hard-NAT punching (peer/punch/): one side's NAT maps each destination to a new port,
// the other's keeps one mapping. Both mappings must be known: the punch's own probe
// needs what told them apart, the relay's RFC 5780 alternate address.
bool punchable(const SideFacts& a, const SideFacts& b) {
  return a.udp && b.udp && a.mapping != Mapping::kUnknown && b.mapping != Mapping::kUnknown &&
         mapping_independent(a.mapping) != mapping_independent(b.mapping);
}

std::string side_text(const SideFacts& s) {
  if (proxy_only(s)) return "reaches the relay only through the proxy";
  if (!s.udp) return "has no UDP to the Internet";
  if (s.port_mapped) return "has a UDP port mapped at its gateway (PCP, NAT-PMP or UPnP)";
  if (s.mapping == Mapping::kNoNat)
    return std::string("has a public address (filtering ") +
           std::string(to_string(s.filtering)) + ")";
  return std::string("is behind a NAT with ") + std::string(to_string(s.mapping)) +
         " mapping and " + std::string(to_string(s.filtering)) + " filtering";
}

// A port its gateway mapped takes UDP from anyone whatever the NAT does to other
// ports: the peer offers it as its `mapped` candidate.
SideFacts with_mapping(SideFacts s) {
  if (s.udp && s.port_mapped) {
    s.mapping = Mapping::kEndpointIndependent;
    s.filtering = Filtering::kEndpointIndependent;
  }
  return s;
}

}  // namespace

std::string_view to_string(PathKind path) {
  switch (path) {
    case PathKind::kDirectUdp: return "direct udp";
    case PathKind::kDirectTcp: return "direct tcp";
    case PathKind::kTurnUdp: return "relayed turn-udp";
    case PathKind::kTurnTcp: return "relayed turn-tcp";
    case PathKind::kTurnTls: return "relayed turn-tls";
    case PathKind::kNone: break;
  }
  return "none";
}

namespace {
PathVerdict predict(const SideFacts& local, const SideFacts& remote,
                    const std::string& remote_name, bool advise);
}  // namespace

PathVerdict predict_path(const SideFacts& local, const SideFacts& remote,
                         const std::string& remote_name) {
  return predict(with_mapping(local), with_mapping(remote), remote_name, true);
}

namespace {

PathVerdict predict(const SideFacts& local, const SideFacts& remote,
                    const std::string& remote_name, bool advise) {
  PathVerdict v;
  const std::string facts = "this side " + side_text(local) + "; " + remote_name + " " +
                            side_text(remote);
  const SideFacts* sides[2] = {&local, &remote};
  const std::string names[2] = {"this side", remote_name};

  const bool local_out = local.udp || local.tcp || local.proxy;
  const bool remote_out = remote.udp || remote.tcp || remote.proxy;
  if (!local_out || !remote_out) {
    v.path = PathKind::kNone;
    v.why = (!local_out ? std::string("this side") : remote_name) +
            " cannot reach the relay at all";
    v.make_direct.push_back("let " + (!local_out ? std::string("this side") : remote_name) +
                            " reach the relay (UDP, TCP, or TLS on 443 through a proxy)");
    return v;
  }

  if (local.udp && remote.udp && (reachable_by(local, remote) || reachable_by(remote, local))) {
    v.path = PathKind::kDirectUdp;
    const int open_side = open_to_anyone(local) ? 0 : open_to_anyone(remote) ? 1 : -1;
    v.why = facts + ": " +
            (open_side >= 0 ? names[open_side] + " takes UDP from anyone at its reflexive address"
                            : std::string("ICE checks from both sides open the way (hole "
                                          "punching)"));
    return v;
  }
  if (punchable(local, remote)) {
    v.path = PathKind::kDirectUdp;
    const std::string& hard = names[mapping_independent(local.mapping) ? 1 : 0];
    v.why = facts + ": ICE alone would relay it; the tunnel starts relayed and moves to a "
                    "direct path once a birthday search finds a port " + hard +
            "'s NAT opened (hard-NAT punching, unless a side runs with --no-punch)";
    return v;
  }
  if (!local.udp || !remote.udp) {
    for (int i = 0; i < 2; ++i) {
      const SideFacts& closed = *sides[i];
      const SideFacts& open = *sides[1 - i];
      if (!closed.udp && (closed.tcp) && open_to_tcp(open)) {
        v.path = PathKind::kDirectTcp;
        v.why = facts + ": " + names[i] + " connects over TCP to " + names[1 - i] +
                "'s public address";
        return v;
      }
    }
  }

  if (proxy_only(local) || proxy_only(remote)) v.path = PathKind::kTurnTls;
  else if (!local.udp || !remote.udp) v.path = PathKind::kTurnTcp;
  else v.path = PathKind::kTurnUdp;
  v.why = facts + ": no direct path, so TURN at the relay carries the traffic";
  if (!advise) return v;

  // What would make it direct: each single change to one side that the rules above
  // turn into a direct path, so that no advice is given that would not be enough.
  struct Change {
    const char* text;
    SideFacts (*apply)(SideFacts);
    bool (*applies)(const SideFacts&);
    // Offered only when a side has no UDP (else a forwarded UDP port says it better).
    bool for_tcp_only = false;
  };
  static const Change changes[] = {
      {"allow outbound UDP on its network",
       [](SideFacts s) {
         s.udp = true;
         s.mapping = Mapping::kEndpointIndependent;
         s.filtering = Filtering::kAddressAndPortDependent;
         return s;
       },
       [](const SideFacts& s) { return !s.udp; }},
      {"a NAT with endpoint-independent mapping there (RFC 4787 REQ-1)",
       [](SideFacts s) {
         s.mapping = Mapping::kEndpointIndependent;
         return s;
       },
       [](const SideFacts& s) { return s.udp && !mapping_independent(s.mapping); }},
      {"endpoint-independent or address-dependent filtering there (RFC 4787 REQ-8)",
       [](SideFacts s) {
         s.filtering = Filtering::kAddressDependent;
         return s;
       },
       [](const SideFacts& s) {
         return s.udp && mapping_independent(s.mapping) &&
                s.filtering == Filtering::kAddressAndPortDependent;
       }},
      {"a UDP port forwarded to it", [](SideFacts s) {
         s.udp = true;
         s.mapping = Mapping::kEndpointIndependent;
         s.filtering = Filtering::kEndpointIndependent;
         return s;
       },
       [](const SideFacts& s) { return s.udp; }},
      {"a public address that takes inbound TCP (ICE-TCP then goes direct)",
       [](SideFacts s) {
         s.tcp = true;
         s.mapping = Mapping::kNoNat;
         s.filtering = Filtering::kEndpointIndependent;
         return s;
       },
       [](const SideFacts& s) { return !open_to_tcp(s); }, true},
  };
  const bool both_udp = local.udp && remote.udp;
  for (int i = 0; i < 2; ++i) {
    for (const Change& change : changes) {
      if (!change.applies(*sides[i])) continue;
      if (both_udp && change.for_tcp_only) continue;
      const SideFacts changed = change.apply(*sides[i]);
      const PathVerdict then = i == 0 ? predict(changed, remote, remote_name, false)
                                      : predict(local, changed, remote_name, false);
      if (then.path != PathKind::kDirectUdp && then.path != PathKind::kDirectTcp) continue;
      std::string hint = names[i] + ": " + change.text;
      if (std::string_view(change.text).rfind("a UDP port forwarded", 0) == 0 &&
          sides[i]->port_mapping)
        hint += " (its gateway offers UPnP/NAT-PMP)";
      v.make_direct.push_back(hint);
    }
  }
  if (v.make_direct.empty())
    v.make_direct.push_back("no single change on one side would; both sides' NATs stand in "
                            "the way");
  return v;
}

}  // namespace

std::string describe_reachability(const SideFacts& given) {
  const SideFacts side = with_mapping(given);
  if (!side.udp && !side.tcp && !side.proxy) return "none: the relay cannot be reached";
  // Try this side against typical peers; the answer is the weakest one it meets
  // directly.
  auto peer = [](Mapping mapping, Filtering filtering) {
    SideFacts p;
    p.udp = p.tcp = true;
    p.mapping = mapping;
    p.filtering = filtering;
    return p;
  };
  auto direct_with = [&](const SideFacts& other) {
    const PathKind path = predict(side, other, "x", false).path;
    return path == PathKind::kDirectUdp || path == PathKind::kDirectTcp;
  };
  if (direct_with(peer(Mapping::kAddressAndPortDependent, Filtering::kAddressAndPortDependent)))
    return "direct with peers behind any NAT, even symmetric ones";
  if (direct_with(peer(Mapping::kEndpointIndependent, Filtering::kAddressAndPortDependent)))
    return "direct with peers behind endpoint-independent NATs; relayed with symmetric ones";
  const PathKind relayed =
      predict(side, peer(Mapping::kEndpointIndependent, Filtering::kAddressAndPortDependent),
              "x", false)
          .path;
  std::string over(to_string(relayed));
  if (over.rfind("relayed ", 0) == 0) over = over.substr(8);
  if (direct_with(peer(Mapping::kEndpointIndependent, Filtering::kEndpointIndependent)))
    return "direct only with peers that take UDP from anyone (a public address or a "
           "full-cone NAT); relayed over " + over + " with the rest";
  if (direct_with(peer(Mapping::kNoNat, Filtering::kEndpointIndependent)))
    return "direct only with peers on a public address that takes TCP; relayed over " + over +
           " with the rest";
  return "relayed over " + over + " with every peer";
}

}  // namespace natfwd::netcheck

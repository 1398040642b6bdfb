// peer netcheck: the RFC 5780 probe against the relay's real Binding responder behind
// simulated NATs (fake clock), and the two-sided path verdict as a table.
#include <catch2/catch.hpp>
#include <algorithm>

#include <map>
#include <set>

#include "netcheck/nat_behaviour_probe.h"
#include "netcheck/netcheck_responder.h"
#include "netcheck/netcheck_runner.h"
#include "netcheck/netcheck_output.h"
#include "netcheck/path_verdict.h"
#include "binding/binding_responder.h"

using namespace natfwd::netcheck;
using natfwd::stun::TransportAddress;

namespace {

TransportAddress v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint16_t port) {
  return TransportAddress::ipv4({a, b, c, d}, port);
}

// A NAT as RFC 4787 describes it, in front of the probe's two sockets.
struct NatModel {
  Mapping mapping = Mapping::kEndpointIndependent;  // kNoNat: addresses pass unchanged
  Filtering filtering = Filtering::kAddressAndPortDependent;
  bool udp_blocked = false;
};

class Network {
 public:
  Network(NatModel nat, bool server_discovery) : nat_(nat) {
    natfwd::stun::DiscoveryAddresses d;
    d.by_ip_port = {{{primary, v4(203, 0, 113, 10, 3479)},
                     {v4(203, 0, 113, 11, 3478), v4(203, 0, 113, 11, 3479)}}};
    responder_.emplace("test", server_discovery ? std::optional(d) : std::nullopt);
    addresses_ = d;
  }

  const TransportAddress primary = v4(203, 0, 113, 10, 3478);
  const std::array<TransportAddress, 2> locals{v4(192, 168, 1, 2, 40000),
                                               v4(192, 168, 1, 2, 40001)};

  NatBehaviour run(NatBehaviourProbe& probe) {
    auto now = TimePoint{} + std::chrono::seconds(100);
    probe.start(now);
    for (int guard = 0; guard < 1000 && !probe.done(); ++guard) {
      auto sends = probe.take_sends();
      for (auto& send : sends) deliver(probe, send, now);
      if (probe.done()) break;
      if (!sends.empty()) continue;
      auto deadline = probe.next_deadline();
      REQUIRE(deadline);
      now = *deadline;
      probe.on_timer(now);
    }
    REQUIRE(probe.done());
    return probe.result();
  }

 private:
  TransportAddress external(int socket, const TransportAddress& to) {
    if (nat_.mapping == Mapping::kNoNat) return locals[socket];
    std::string key = std::to_string(socket);
    if (nat_.mapping == Mapping::kAddressDependent)
      key += "/" + std::string(to.ip.begin(), to.ip.begin() + 4);
    if (nat_.mapping == Mapping::kAddressAndPortDependent) key += "/" + to.to_string();
    auto [it, added] = mappings_.try_emplace(key, v4(198, 51, 100, 2, next_port_));
    if (added) ++next_port_;
    return it->second;
  }

  bool lets_in(int socket, const TransportAddress& from) const {
    const auto& sent = sent_to_[socket];
    switch (nat_.filtering) {
      case Filtering::kEndpointIndependent: return true;
      case Filtering::kAddressDependent:
        for (const auto& to : sent)
          if (to.ip == from.ip) return true;
        return false;
      default:
        for (const auto& to : sent)
          if (to == from) return true;
        return false;
    }
  }

  int index_of(const TransportAddress& a, natfwd::stun::ServerEndpoint& at) const {
    for (int ip = 0; ip < 2; ++ip)
      for (int port = 0; port < 2; ++port)
        if (addresses_.by_ip_port[ip][port] == a) {
          at = {ip, port};
          return 1;
        }
    return 0;
  }

  void deliver(NatBehaviourProbe& probe, const NatBehaviourProbe::Send& send, TimePoint now) {
    if (nat_.udp_blocked) return;
    natfwd::stun::ServerEndpoint at;
    if (!index_of(send.to, at)) return;
    // Without discovery the server has one socket only: the others do not exist.
    if (!responder_->does_discovery() && !(at == natfwd::stun::ServerEndpoint{})) return;
    const TransportAddress mapped = external(send.socket, send.to);
    sent_to_[send.socket].push_back(send.to);
    auto result = responder_->handle(send.bytes, mapped, at);
    if (result.outcome != natfwd::stun::BindingResponder::Outcome::kRespond) return;
    const TransportAddress from = addresses_.by_ip_port[result.send_from.ip][result.send_from.port];
    if (!lets_in(send.socket, from)) return;
    probe.on_datagram(send.socket, result.response, now);
  }

  NatModel nat_;
  std::optional<natfwd::stun::BindingResponder> responder_;
  natfwd::stun::DiscoveryAddresses addresses_;
  std::map<std::string, TransportAddress> mappings_;
  uint16_t next_port_ = 50000;
  std::array<std::vector<TransportAddress>, 2> sent_to_;
};

NatBehaviour probe_through(NatModel nat, bool discovery = true) {
  Network net(nat, discovery);
  NatBehaviourProbe probe(net.primary, net.locals, 0x1234);
  return net.run(probe);
}

}  // namespace

TEST_CASE("the probe tells every RFC 4787 mapping and filtering behaviour apart") {
  const Mapping mappings[] = {Mapping::kEndpointIndependent, Mapping::kAddressDependent,
                              Mapping::kAddressAndPortDependent};
  const Filtering filterings[] = {Filtering::kEndpointIndependent, Filtering::kAddressDependent,
                                  Filtering::kAddressAndPortDependent};
  for (Mapping m : mappings)
    for (Filtering f : filterings) {
      INFO(std::string(to_string(m)) + " / " + std::string(to_string(f)));
      const NatBehaviour b = probe_through({m, f});
      CHECK(b.udp);
      CHECK(b.server_discovery);
      CHECK(b.mapping == m);
      CHECK(b.filtering == f);
      REQUIRE(b.mapped);
      CHECK(b.mapped->ip == v4(198, 51, 100, 2, 0).ip);
    }
}

TEST_CASE("no NAT: the mapped address is the local one, and nothing filters") {
  const NatBehaviour b = probe_through({Mapping::kNoNat, Filtering::kEndpointIndependent});
  CHECK(b.mapping == Mapping::kNoNat);
  CHECK(b.filtering == Filtering::kEndpointIndependent);
  CHECK(b.port_preserved);
  CHECK(b.mapped_by_test.size() == 1);  // section 4.3: no further mapping tests
}

TEST_CASE("blocked UDP: no answer, nothing known, and the probe ends by its deadline") {
  Network net({Mapping::kEndpointIndependent, Filtering::kEndpointIndependent, true}, true);
  NatBehaviourProbe probe(net.primary, net.locals, 7);
  const auto before = TimePoint{} + std::chrono::seconds(100);
  const NatBehaviour b = net.run(probe);
  CHECK_FALSE(b.udp);
  CHECK(b.mapping == Mapping::kUnknown);
  CHECK(b.filtering == Filtering::kUnknown);
  (void)before;
}

TEST_CASE("retransmissions follow the schedule, then the probe gives up") {
  NatBehaviourProbe::Timing timing;
  NatBehaviourProbe probe(v4(203, 0, 113, 10, 3478),
                          {v4(10, 0, 0, 2, 1000), v4(10, 0, 0, 2, 1001)}, 1, timing);
  const TimePoint t0{};
  probe.start(t0);
  CHECK(probe.take_sends().size() == 2);  // test I on both sockets
  CHECK(*probe.next_deadline() == t0 + timing.retransmit_at[1]);
  probe.on_timer(t0 + timing.retransmit_at[1]);
  CHECK(probe.take_sends().size() == 2);
  probe.on_timer(t0 + timing.give_up_after);
  probe.take_sends();
  CHECK(probe.done());
  CHECK_FALSE(probe.result().udp);
}

TEST_CASE("a relay without RFC 5780 gives the mapped address but no behaviour") {
  const NatBehaviour b = probe_through({Mapping::kEndpointIndependent,
                                        Filtering::kAddressAndPortDependent}, false);
  CHECK(b.udp);
  CHECK_FALSE(b.server_discovery);
  CHECK(b.mapped);
  CHECK(b.mapping == Mapping::kUnknown);
  CHECK(b.filtering == Filtering::kUnknown);
}

TEST_CASE("malformed and stray datagrams are ignored") {
  NatBehaviourProbe probe(v4(203, 0, 113, 10, 3478),
                          {v4(10, 0, 0, 2, 1000), v4(10, 0, 0, 2, 1001)}, 1);
  probe.start(TimePoint{});
  probe.take_sends();
  const std::byte junk[5] = {};
  probe.on_datagram(0, junk, TimePoint{});
  probe.on_datagram(1, {}, TimePoint{});
  CHECK_FALSE(probe.done());
  CHECK_FALSE(probe.result().udp);
}

// -- the two-sided verdict ---------------------------------------------------------

namespace {

SideFacts side(const std::string& type) {
  SideFacts s;
  s.udp = s.tcp = true;
  if (type == "none") {
    s.mapping = Mapping::kNoNat;
    s.filtering = Filtering::kEndpointIndependent;
  } else if (type == "fullcone") {
    s.mapping = Mapping::kEndpointIndependent;
    s.filtering = Filtering::kEndpointIndependent;
  } else if (type == "eim" || type == "cgnat") {
    s.mapping = Mapping::kEndpointIndependent;
    s.filtering = Filtering::kAddressAndPortDependent;
  } else if (type == "adf") {
    s.mapping = Mapping::kEndpointIndependent;
    s.filtering = Filtering::kAddressDependent;
  } else if (type == "symmetric") {
    s.mapping = Mapping::kAddressAndPortDependent;
    s.filtering = Filtering::kAddressAndPortDependent;
  } else if (type == "udpblock") {
    s.udp = false;
  } else if (type == "proxyonly") {
    s.udp = s.tcp = false;
    s.proxy = true;
  } else if (type == "offline") {
    s.udp = s.tcp = false;
  }
  return s;
}

}  // namespace

TEST_CASE("the path verdict follows the lab's rules for every pair") {
  struct Row {
    const char* a;
    const char* b;
    PathKind path;
  };
  // The same table as test/lab/lab_test.py expected_path, plus ADF and offline.
  const Row table[] = {
      {"eim", "eim", PathKind::kDirectUdp},
      {"eim", "cgnat", PathKind::kDirectUdp},
      {"none", "symmetric", PathKind::kDirectUdp},
      {"fullcone", "symmetric", PathKind::kDirectUdp},
      {"adf", "symmetric", PathKind::kDirectUdp},
      {"eim", "symmetric", PathKind::kDirectUdp},  // punched after a relayed start
      {"cgnat", "symmetric", PathKind::kDirectUdp},
      {"symmetric", "symmetric", PathKind::kTurnUdp},
      {"udpblock", "none", PathKind::kDirectTcp},
      {"udpblock", "eim", PathKind::kTurnTcp},
      {"udpblock", "fullcone", PathKind::kTurnTcp},
      {"udpblock", "symmetric", PathKind::kTurnTcp},
      {"udpblock", "udpblock", PathKind::kTurnTcp},
      {"proxyonly", "none", PathKind::kTurnTls},
      {"proxyonly", "eim", PathKind::kTurnTls},
      {"proxyonly", "udpblock", PathKind::kTurnTls},
      {"offline", "eim", PathKind::kNone},
  };
  for (const Row& row : table) {
    for (bool swapped : {false, true}) {
      const auto& x = swapped ? row.b : row.a;
      const auto& y = swapped ? row.a : row.b;
      INFO(std::string(x) + " x " + y);
      const PathVerdict v = predict_path(side(x), side(y), "home");
      CHECK(v.path == row.path);
      CHECK_FALSE(v.why.empty());
      const bool direct = row.path == PathKind::kDirectUdp || row.path == PathKind::kDirectTcp;
      CHECK(v.make_direct.empty() == direct);
    }
  }
}

TEST_CASE("the advice lists only single changes that would make the pair direct") {
  // Symmetric on both sides: one side's mapping made endpoint-independent lets the
  // hard-NAT punch find a path; so does a forwarded port.
  const PathVerdict both = predict_path(side("symmetric"), side("symmetric"), "home");
  REQUIRE(both.make_direct.size() >= 2);
  CHECK(both.make_direct[0] ==
        "this side: a NAT with endpoint-independent mapping there (RFC 4787 REQ-1)");
  CHECK(both.make_direct[1] == "this side: a UDP port forwarded to it");
  // eim x symmetric is direct by punching, and says how.
  const PathVerdict punched = predict_path(side("eim"), side("symmetric"), "home");
  CHECK(punched.path == PathKind::kDirectUdp);
  CHECK(punched.why.find("birthday search finds a port home's NAT opened") != std::string::npos);
  CHECK(punched.make_direct.empty());
  // Without RFC 5780 at the relay nobody knows the mappings, and nobody punches.
  SideFacts unknown = side("eim");
  unknown.mapping = Mapping::kUnknown;
  CHECK(predict_path(unknown, side("symmetric"), "home").path == PathKind::kTurnUdp);
  // No UDP on this side and a NATed peer: NAT advice for the peer alone is no help.
  const PathVerdict blocked = predict_path(side("udpblock"), side("eim"), "home");
  CHECK(blocked.make_direct.front() == "this side: allow outbound UDP on its network");
  for (const auto& hint : blocked.make_direct) CHECK(hint.find("REQ-8") == std::string::npos);
  CHECK(blocked.make_direct.back() ==
        "home: a public address that takes inbound TCP (ICE-TCP then goes direct)");
  // Every hint really makes it direct: checked by applying it in predict_path itself.
}

TEST_CASE("netcheck JSON escapes text and is one object") {
  NetcheckOptions options;
  options.relay = {"relay.example", 3478};
  NetcheckReport report;
  report.tcp_error = "say \"no\"\n";
  const std::string json = format_json(options, report, std::nullopt);
  CHECK(json.front() == '{');
  CHECK(json.find("\"udp\": false") != std::string::npos);
  CHECK(exit_status(report) == 1);
  report.tcp = true;
  CHECK(exit_status(report) == 0);
}

TEST_CASE("the serving peer answers netcheck queries only to keys it authorises") {
  std::vector<natfwd::wire::Envelope> sent;
  NetcheckResponder responder([&](const natfwd::wire::Envelope& e) { sent.push_back(e); },
                              [](const std::string& key) { return key == "friend"; });
  natfwd::wire::NetcheckQuery query;
  query.set_query_id(9);
  query.set_caller_key("friend");
  responder.on_query(query);  // nothing measured yet
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].netcheck_reply().status() == natfwd::wire::NetcheckReply::NOT_YET);
  query.set_caller_key("stranger");
  responder.on_query(query);
  CHECK(sent[1].netcheck_reply().status() == natfwd::wire::NetcheckReply::REFUSED);
  CHECK_FALSE(sent[1].netcheck_reply().has_facts());
}

TEST_CASE("facts survive the wire, and unknown enum values read as unknown") {
  SideFacts facts = side("symmetric");
  facts.port_mapping = true;
  const SideFacts back = from_wire(to_wire(facts));
  CHECK(back.udp == facts.udp);
  CHECK(back.mapping == facts.mapping);
  CHECK(back.filtering == facts.filtering);
  CHECK(back.tcp == facts.tcp);
  CHECK(back.port_mapping);
  natfwd::wire::NatFacts future;
  future.set_mapping(static_cast<natfwd::wire::NatFacts::Mapping>(42));
  future.set_filtering(static_cast<natfwd::wire::NatFacts::Filtering>(42));
  CHECK(from_wire(future).mapping == Mapping::kUnknown);
  CHECK(from_wire(future).filtering == Filtering::kUnknown);
}

TEST_CASE("a port the gateway mapped counts as a full cone, in the verdict and its advice") {
  SideFacts mapped = side("symmetric");
  mapped.port_mapping = true;
  mapped.port_mapped = true;
  const PathVerdict v = predict_path(mapped, side("symmetric"), "home");
  CHECK(v.path == PathKind::kDirectUdp);
  CHECK(v.why.find("this side has a UDP port mapped at its gateway") != std::string::npos);
  CHECK(v.make_direct.empty());
  CHECK(describe_reachability(mapped) == "direct with peers behind any NAT, even symmetric ones");
  // A gateway that answered but mapped nothing changes nothing; the advice names it.
  SideFacts offered = side("symmetric");
  offered.port_mapping = true;
  const PathVerdict relayed = predict_path(offered, side("symmetric"), "home");
  CHECK(relayed.path == PathKind::kTurnUdp);
  CHECK(std::find(relayed.make_direct.begin(), relayed.make_direct.end(),
                  "this side: a UDP port forwarded to it (its gateway offers UPnP/NAT-PMP)") !=
        relayed.make_direct.end());
}

TEST_CASE("one side alone: which peers it meets directly") {
  CHECK(describe_reachability(side("none")) ==
        "direct with peers behind any NAT, even symmetric ones");
  CHECK(describe_reachability(side("fullcone")) ==
        "direct with peers behind any NAT, even symmetric ones");
  // With hard-NAT punching an endpoint-independent side meets symmetric ones too, and a
  // symmetric side meets endpoint-independent ones.
  CHECK(describe_reachability(side("eim")) ==
        "direct with peers behind any NAT, even symmetric ones");
  CHECK(describe_reachability(side("symmetric")) ==
        "direct with peers behind endpoint-independent NATs; relayed with symmetric ones");
  CHECK(describe_reachability(side("udpblock")) ==
        "direct only with peers on a public address that takes TCP; relayed over turn-tcp "
        "with the rest");
  CHECK(describe_reachability(side("proxyonly")) == "relayed over turn-tls with every peer");
  CHECK(describe_reachability(side("offline")) == "none: the relay cannot be reached");
}

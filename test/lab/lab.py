"""The NAT lab: Linux network namespaces joined by veth pairs, with real netfilter NATs.

    lab = Lab(workdir)                      # a unique tag, nothing created yet
    lab.build([SiteSpec("a-eim", "eim", ("home", "buffalo")),
               SiteSpec("b-symmetric", "symmetric", ("laptop",))])
    ...                                     # lab.sites["a-eim"].ns["home"], .ip["home"]
    lab.close()                             # stops what it started, deletes what it made

Topology (addresses are documentation ranges only; nothing is routed out of the lab):

    relay ns: 203.0.113.10 and 203.0.113.11/24 --- router ns "inet" (203.0.113.1)
    router --- one /29 per site in 198.51.100.0/25: router .8s+1, the site's box .8s+2
    site box (the NAT) --- bridge "LAN": 192.168.(10+s).0/24, box .1, hosts .2, .3, ...
      none:  the box only routes; its LAN is public, 198.51.100.(128+16k)/28
      cgnat: box = home NAT (masquerade) on 100.64.s.2/24 behind a carrier NAT box
             (100.64.s.1) whose public side is the /29 above

NAT types (nftables in the box's namespace; forward policy drop except LAN -> WAN and
established/related, so nothing unsolicited reaches the LAN):
    none       public addresses, no NAT, no filter
    eim        masquerade (Linux keeps the source port when it can): endpoint-independent
               mapping, address-and-port-dependent filtering (conntrack)
    fullcone   eim + endpoint-independent filtering: every UDP mapping the box makes is
               written to a dynamic map (external port -> internal address . port), and a
               prerouting dnat sends any inbound UDP for that port to it
    symmetric  masquerade fully-random: a new external port per destination
    udpblock   eim + drop every UDP packet from the LAN
    proxyonly  no forwarding at all; squid on the box (LAN side, port 3128) allows only
               CONNECT to port 443
    cgnat      eim home NAT behind a carrier NAT that maps ports deterministically but
               not preserving them (external port = internal port xor 0x2a5a; RFC 7422
               style): still endpoint-independent mapping, port-dependent filtering
    portmap    symmetric, plus Debian's miniupnpd (nftables build) in the box answering
               UPnP IGD, NAT-PMP and PCP on the LAN: a host that asks gets a mapping
               (a dnat rule in the box's table "inet miniupnpd"). Not one of the
               matrix's TYPES. Its WAN is 11.0.S.0/29, not a documentation range:
               miniupnpd 2.3.1 refuses to map on any reserved address (RFC 5737 and
               RFC 6890 included), and no lab address is routed anywhere outside the lab.

IPv6 (a site's `ipv6`, SiteSpec; the core gets IPv6 when any site has it): the relay
also has 2001:db8:ffff::10/64 (router 2001:db8:ffff::1); site S's WAN link is
2001:db8:fffe:S::/64 (router ::1, box ::2) and its LAN 2001:db8:(10+S)::/64 (box ::1,
hosts ::2, ::3, ...), routed, no NAT66.
    dual   the hosts have IPv4 as the NAT type says and a global IPv6 address behind
           the box's stateful firewall: replies only (ct state established,related
           accept; new inbound dropped), the way home routers do IPv6
    only   the same IPv6, and no IPv4 at all on the hosts
Duplicate address detection is off in every namespace (accept_dad=0, addresses added
`nodad`): an address is usable the moment it is added, nothing waits for DAD.

Delay and loss (this kernel has no netem): every packet crossing the router is dropped
with probability LOSS (nft numgen) and held DELAY/2 by test/tools/nfq_delay (NFQUEUE), so
any path across the internet gets DELAY more round-trip time.

Every name the lab makes (namespaces, veth devices) starts with a per-run tag
("nl" + 4 hex digits) that no existing namespace starts with; close() deletes exactly the
namespaces it created (their veths go with them: they are created inside namespaces and
never exist in the root namespace) and stops only the processes it started, by PID.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "test", "tools"))

from procs import Failure, Proc, ProcGroup, scaled, wait_until  # noqa: E402
from sshd_inetd import ThrowawaySshd, find_sshd  # noqa: E402

TYPES = ("none", "fullcone", "eim", "cgnat", "symmetric", "udpblock", "proxyonly")
# Router variants outside the matrix.
EXTRA_TYPES = ("portmap",)

RELAY_IP = "203.0.113.10"
RELAY_IP2 = "203.0.113.11"
ROUTER_RELAY_SIDE = "203.0.113.1"
RELAY_IP6 = "2001:db8:ffff::10"
ROUTER_RELAY_SIDE6 = "2001:db8:ffff::1"
IPV6_MODES = ("", "dual", "only")
RELAY_PORT = 3478
RELAY_TLS_PORT = 443
COTURN_PORT = 3480       # coturn (RFC 5780 discovery only) beside the relay, on both IPs
PROXY_PORT = 3128
CGNAT_PORT_XOR = 0x2A5A  # the carrier NAT's deterministic port translation
SSHD_PORT = 22

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sh(argv: Sequence[str], *, netns: Optional[str] = None, check: bool = True,
       input: Optional[str] = None, timeout: float = 60) -> subprocess.CompletedProcess:
    argv = list(argv)
    if netns:
        argv = ["ip", "netns", "exec", netns] + argv
    r = subprocess.run(argv, input=input, capture_output=True, text=True,
                       timeout=scaled(timeout))
    if check and r.returncode != 0:
        raise Failure(f"command failed ({r.returncode}): {' '.join(argv)}\n"
                      f"{r.stderr.strip()}{(chr(10) + 'input:' + chr(10) + input) if input else ''}")
    return r


def parse_duration_ms(text: str) -> float:
    """'20ms', '0.02s', '20' (ms) -> milliseconds."""
    text = text.strip()
    if not text:
        return 0.0
    m = re.fullmatch(r"([0-9.]+)\s*(ms|s)?", text)
    if not m:
        raise ValueError(f"bad duration {text!r} (e.g. 20ms)")
    value = float(m.group(1))
    return value * 1000 if m.group(2) == "s" else value


def parse_ratio(text: str) -> float:
    """'0.5%' -> 0.005, '0.005' -> 0.005."""
    text = text.strip()
    if not text:
        return 0.0
    if text.endswith("%"):
        return float(text[:-1]) / 100
    return float(text)


def missing_packages(packages: Sequence[str]) -> list[str]:
    out = []
    for pkg in packages:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True,
                           text=True)
        if r.stdout.strip() != "install ok installed":
            out.append(pkg)
    return out


def ensure_packages(packages: Sequence[str]) -> None:
    """Installs missing Debian packages through scripts/deps (which keeps their services
    from starting). Raises Failure when they cannot be had."""
    missing = missing_packages(packages)
    if not missing:
        return
    log(f"lab: installing {' '.join(missing)} (scripts/deps)")
    r = subprocess.run([os.path.join(ROOT, "scripts", "deps"), *missing],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    still = missing_packages(missing)
    if still:
        raise Failure(f"the lab needs Debian packages {' '.join(still)}; scripts/deps said:\n"
                      f"{r.stdout[-2000:]}")


def lab_preflight() -> Optional[str]:
    """Why the lab cannot run here (a reason to skip), or None."""
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces)"
    for tool in ("ip", "nft", "iptables"):
        if not shutil.which(tool):
            return f"{tool} not installed"
    return None


# Unsolicited packets from the internet to the box itself are dropped in its input hook,
# as a home router's firewall does. This matters for EIM: were they let through to the
# box's (empty) UDP stack, conntrack would confirm an entry for each one, and when the
# LAN host then sends to that same remote address and port (ICE punching a hole: the
# other side's check arrived first), masquerade would find its port taken by that entry
# and pick another one: endpoint-dependent mapping after all. Dropped before conntrack
# confirms, such a packet leaves nothing behind.
# The chains miniupnpd 2.3.1 (nftables build) fills; it creates none itself. Its dnat
# rules run before the lab's masquerade; forward accepts what they let in (the box's
# own filter_forward does too: "ct status dnat").
MINIUPNPD_TABLES = """
table inet miniupnpd {
  chain forward { type filter hook forward priority filter - 5; policy accept; jump forward_miniupnpd; }
  chain forward_miniupnpd { }
  chain prerouting { type nat hook prerouting priority dstnat - 5; policy accept; jump prerouting_miniupnpd; }
  chain prerouting_miniupnpd { }
  chain postrouting { type nat hook postrouting priority srcnat - 5; policy accept; jump postrouting_miniupnpd; }
  chain postrouting_miniupnpd { }
}
"""

INPUT_DROP = """chain filter_input {{ type filter hook input priority filter; policy accept;
    iifname "{wan}" ct state new counter drop
  }}"""


@dataclass(frozen=True)
class SiteSpec:
    name: str                 # short, e.g. "a-eim"; namespaces are TAG-NAME-ROLE
    nat: str                  # one of TYPES
    hosts: tuple[str, ...]    # roles on the LAN, e.g. ("home", "buffalo")
    ipv6: str = ""            # "", "dual" or "only" (see the module's docstring)


@dataclass
class Site:
    spec: SiteSpec
    index: int
    box_ns: str                              # the NAT box (the home NAT for cgnat)
    carrier_ns: Optional[str]                # cgnat only
    ns: dict[str, str] = field(default_factory=dict)   # role -> namespace
    ip: dict[str, str] = field(default_factory=dict)   # role -> LAN address
    ip6: dict[str, str] = field(default_factory=dict)  # role -> global IPv6 address
    gateway: str = ""                        # the box's LAN address
    public_ip: str = ""                      # what the internet sees (none: per host)
    proxy: Optional[str] = None              # proxyonly: http://GW:3128
    miniupnpd: Optional[Proc] = None         # portmap: the box's miniupnpd
    squid_log: Optional[str] = None

    @property
    def nat(self) -> str:
        return self.spec.nat

    @property
    def name(self) -> str:
        return self.spec.name


class Lab:
    def __init__(self, workdir: str, *, delay_ms: float = 0.0, loss: float = 0.0,
                 nfq_delay: Optional[str] = None):
        self.workdir = workdir
        self.delay_ms = delay_ms
        self.loss = loss
        self.nfq_delay = nfq_delay
        self.group = ProcGroup()
        self.namespaces: list[str] = []
        self.sites: dict[str, Site] = {}
        self.tag = self._new_tag()
        self.relay_ns = ""
        self.router_ns = ""
        self._none_count = 0
        self._closed = False
        self.ipv6 = False  # the core and some sites have IPv6 (set by build)
        self.coturn: Optional[Proc] = None
        self.sshd_dirs: dict[str, ThrowawaySshd] = {}
        self._moves = 0
        self._host_eth: dict[str, str] = {}  # namespace -> its LAN device after a move

    # -- names -----------------------------------------------------------------------

    @staticmethod
    def _new_tag() -> str:
        existing = set(sh(["ip", "netns", "list"]).stdout.split())
        for _ in range(100):
            tag = "nl" + secrets.token_hex(2)
            if not any(name.startswith(tag) for name in existing):
                return tag
        raise Failure("cannot find a free namespace tag")

    def dev(self, suffix: str) -> str:
        name = self.tag + suffix
        assert len(name) <= 15, name
        return name

    # -- primitives ------------------------------------------------------------------

    def add_ns(self, short: str) -> str:
        name = f"{self.tag}-{short}"
        sh(["ip", "netns", "add", name])
        self.namespaces.append(name)
        sh(["ip", "-n", name, "link", "set", "lo", "up"])
        if self.ipv6:
            # Devices made in this namespace from now on skip DAD (link-local ones too).
            for scope in ("all", "default"):
                self.sysctl(name, f"net/ipv6/conf/{scope}/accept_dad", 0)
        return name

    def ip_batch(self, netns: str, commands: list[str]) -> None:
        sh(["ip", "-n", netns, "-batch", "-"], input="\n".join(commands) + "\n")

    def sysctl(self, netns: str, key: str, value) -> None:
        """sysctl(ns, "net/ipv4/ip_forward", 1)"""
        sh(["sh", "-c", f"echo {value} > /proc/sys/{key}"], netns=netns)

    def veth(self, ns_a: str, dev_a: str, ns_b: str, dev_b: str) -> None:
        """A veth pair made directly inside the two namespaces (never in the root one)."""
        sh(["ip", "-n", ns_a, "link", "add", dev_a, "type", "veth", "peer", "name", dev_b,
            "netns", ns_b])
        if self.delay_ms or self.loss:
            # One emulated packet per wire packet (as scripts/bench does).
            for ns, dev in ((ns_a, dev_a), (ns_b, dev_b)):
                sh(["ip", "-n", ns, "link", "set", dev, "gso_max_segs", "1"], check=False)

    def move_host(self, role: str, from_site: Site, to_site: Site) -> str:
        """Moves the host `role` (its namespace and the processes in it) from one site's
        LAN to another's, as a laptop that leaves one Wi-Fi for another: its LAN link
        and address go, a new link into the other site's LAN comes up with a new
        address. Returns the new address."""
        if to_site.nat == "none":
            raise ValueError("move_host: the target site must be behind a NAT")
        ns = from_site.ns.pop(role)
        from_site.ip.pop(role)
        old_eth = self._host_eth.get(ns, self.dev("e0"))
        sh(["ip", "-n", ns, "link", "del", old_eth])  # the box's end of the pair goes too
        self._moves += 1
        port, eth = self.dev(f"m{self._moves}"), self.dev(f"e{self._moves}")
        self.veth(to_site.box_ns, port, ns, eth)
        br = self.dev("lan")
        self.ip_batch(to_site.box_ns, [f"link set {port} master {br}", f"link set {port} up"])
        address = to_site.gateway.rsplit(".", 1)[0] + f".{100 + self._moves}"
        self.ip_batch(ns, [f"addr add {address}/24 dev {eth}", f"link set {eth} up",
                           f"route add default via {to_site.gateway}"])
        self._host_eth[ns] = eth
        to_site.ns[role] = ns
        to_site.ip[role] = address
        return address

    def nft(self, netns: str, ruleset: str) -> None:
        sh(["nft", "-f", "-"], netns=netns, input=ruleset)

    def start(self, name: str, argv: Sequence[str], netns: str, **kw) -> Proc:
        return self.group.start(name, argv, netns=netns, **kw)

    # -- building --------------------------------------------------------------------

    def build(self, specs: Sequence[SiteSpec]) -> None:
        t0 = time.monotonic()
        for spec in specs:
            if spec.ipv6 not in IPV6_MODES:
                raise ValueError(f"unknown ipv6 mode {spec.ipv6!r}")
            if spec.ipv6 and spec.nat in ("cgnat", "proxyonly", "portmap"):
                raise ValueError(f"ipv6 sites are not built behind {spec.nat}")
        self.ipv6 = any(spec.ipv6 for spec in specs)
        self._build_core()
        for i, spec in enumerate(specs):
            self._build_site(i, spec)
        if any(s.nat == "proxyonly" for s in specs):
            ensure_packages(["squid"])
            for site in self.sites.values():
                if site.nat == "proxyonly":
                    self._start_squid(site)
        log(f"lab {self.tag}: {len(self.namespaces)} namespaces, {len(specs)} sites built "
            f"in {time.monotonic() - t0:.1f} s" +
            (f"; internet delay {self.delay_ms:g} ms RTT, loss {self.loss * 100:g} %"
             if self.delay_ms or self.loss else ""))

    def _build_core(self) -> None:
        self.router_ns = self.add_ns("inet")
        self.relay_ns = self.add_ns("relay")
        self.sysctl(self.router_ns, "net/ipv4/ip_forward", 1)
        r_dev, relay_dev = self.dev("r0"), self.dev("eth0")
        self.veth(self.router_ns, r_dev, self.relay_ns, relay_dev)
        self.ip_batch(self.router_ns, [f"addr add {ROUTER_RELAY_SIDE}/24 dev {r_dev}",
                                       f"link set {r_dev} up"])
        self.ip_batch(self.relay_ns, [f"addr add {RELAY_IP}/24 dev {relay_dev}",
                                      f"addr add {RELAY_IP2}/24 dev {relay_dev}",
                                      f"link set {relay_dev} up",
                                      f"route add default via {ROUTER_RELAY_SIDE}"])
        if self.ipv6:
            self.sysctl(self.router_ns, "net/ipv6/conf/all/forwarding", 1)
            self.ip_batch(self.router_ns, [f"addr add {ROUTER_RELAY_SIDE6}/64 dev {r_dev} nodad"])
            self.ip_batch(self.relay_ns, [f"addr add {RELAY_IP6}/64 dev {relay_dev} nodad",
                                          f"route add ::/0 via {ROUTER_RELAY_SIDE6}"])
        if self.loss:
            per_10k = max(1, round(self.loss * 10000))
            self.nft(self.router_ns, f"""
table ip lab_loss {{
  chain loss_pre {{ type filter hook prerouting priority raw; policy accept;
    numgen random mod 10000 < {per_10k} counter drop
  }}
}}
""")
        if self.delay_ms:
            if not self.nfq_delay or not os.access(self.nfq_delay, os.X_OK):
                raise Failure(f"LAB_DELAY needs test/tools/nfq_delay built (libnetfilter-queue-dev); "
                              f"not found at {self.nfq_delay}")
            # This kernel has nft's queue statement off; iptables' NFQUEUE target works.
            sh(["iptables", "-t", "mangle", "-A", "PREROUTING", "-j", "NFQUEUE",
                "--queue-num", "0", "--queue-bypass"], netns=self.router_ns)
            half = max(1, round(self.delay_ms / 2))
            p = self.start("nfq_delay (router)", [self.nfq_delay, "--queue", "0",
                                                  "--delay-ms", str(half)], self.router_ns)
            p.wait_stdout("ready", 10, what="nfq_delay ready line")

    def _build_site(self, s: int, spec: SiteSpec) -> None:
        if spec.nat not in TYPES + EXTRA_TYPES:
            raise ValueError(f"unknown NAT type {spec.nat}")
        if s >= 16:
            raise ValueError("at most 16 sites")
        box = self.add_ns(f"{spec.name}-nat")
        carrier = self.add_ns(f"{spec.name}-cgn") if spec.nat == "cgnat" else None
        site = Site(spec, s, box, carrier)
        outer = carrier or box
        # WAN link: router <-> outer box, a /29 in 198.51.100.0/25.
        r_ip, w_ip = f"198.51.100.{8 * s + 1}", f"198.51.100.{8 * s + 2}"
        if spec.nat == "portmap":
            r_ip, w_ip = f"11.0.{s}.1", f"11.0.{s}.2"
        r_dev, wan = self.dev(f"w{s}"), self.dev("wan")
        self.veth(self.router_ns, r_dev, outer, wan)
        router_cmds = [f"addr add {r_ip}/29 dev {r_dev}", f"link set {r_dev} up"]
        self.ip_batch(outer, [f"addr add {w_ip}/29 dev {wan}", f"link set {wan} up",
                              f"route add default via {r_ip}"])
        self.sysctl(outer, "net/ipv4/ip_forward", 0 if spec.nat == "proxyonly" else 1)
        box_wan = wan
        if carrier:
            c_in, h_wan = self.dev("cin"), self.dev("wan")
            self.veth(carrier, c_in, box, h_wan)
            self.ip_batch(carrier, [f"addr add 100.64.{s}.1/24 dev {c_in}",
                                    f"link set {c_in} up"])
            self.ip_batch(box, [f"addr add 100.64.{s}.2/24 dev {h_wan}",
                                f"link set {h_wan} up", f"route add default via 100.64.{s}.1"])
            self.sysctl(box, "net/ipv4/ip_forward", 1)
            self.nft(carrier, self._carrier_rules(c_in, wan, w_ip))
            box_wan = h_wan
        # LAN: a bridge in the box, one veth per host.
        if spec.nat == "none":
            base = 128 + 16 * self._none_count
            self._none_count += 1
            if base > 240:
                raise ValueError("too many 'none' sites")
            net = f"198.51.100.{base}"
            prefix, first = 28, base + 1
            router_cmds.append(f"route add {net}/28 via {w_ip}")
            lan_addr = lambda i: f"198.51.100.{first + i}"  # noqa: E731
        else:
            prefix = 24
            lan_addr = lambda i: f"192.168.{10 + s}.{1 + i}"  # noqa: E731
        self.ip_batch(self.router_ns, router_cmds)
        br = self.dev("lan")
        site.gateway = lan_addr(0)
        self.ip_batch(box, [f"link add {br} type bridge", f"addr add {site.gateway}/{prefix} dev {br}",
                            f"link set {br} up"])
        # Bridged frames are not IP-forwarded: keep br_netfilter out of it.
        sh(["sh", "-c", "echo 0 > /proc/sys/net/bridge/bridge-nf-call-iptables"], netns=box,
           check=False)
        if spec.ipv6:
            sh(["sh", "-c", "echo 0 > /proc/sys/net/bridge/bridge-nf-call-ip6tables"], netns=box,
               check=False)
        lan6 = f"2001:db8:{10 + s:x}::"
        if spec.ipv6:
            self._build_site_ipv6(s, box, r_dev, wan, br, lan6)
        for i, role in enumerate(spec.hosts, start=1):
            host = self.add_ns(f"{spec.name}-{role}")
            port, eth = self.dev(f"p{i}"), self.dev("e0")
            self.veth(box, port, host, eth)
            self.ip_batch(box, [f"link set {port} master {br}", f"link set {port} up"])
            cmds = [f"link set {eth} up"]
            if spec.ipv6 != "only":
                cmds.append(f"addr add {lan_addr(i)}/{prefix} dev {eth}")
                if spec.nat != "proxyonly":
                    cmds.append(f"route add default via {site.gateway}")
                site.ip[role] = lan_addr(i)
            if spec.ipv6:
                site.ip6[role] = f"{lan6}{1 + i:x}"
                cmds += [f"addr add {site.ip6[role]}/64 dev {eth} nodad",
                         f"route add ::/0 via {lan6}1"]
            self.ip_batch(host, cmds)
            site.ns[role] = host
        site.public_ip = w_ip
        ruleset = self._box_rules(spec.nat, br, box_wan)
        if ruleset:
            self.nft(box, ruleset)
        if spec.nat == "proxyonly":
            site.proxy = f"http://{site.gateway}:{PROXY_PORT}"
        if spec.nat == "portmap":
            self.nft(box, MINIUPNPD_TABLES)
            self._start_miniupnpd(site, box_wan, br, f"{lan_addr(0)}/{prefix}")
        self.sites[spec.name] = site

    def _build_site_ipv6(self, s: int, box: str, r_dev: str, wan: str, br: str,
                         lan6: str) -> None:
        """Routed IPv6 for site S: no NAT, and a firewall that lets in only replies."""
        link6 = f"2001:db8:fffe:{s:x}::"
        self.ip_batch(self.router_ns, [f"addr add {link6}1/64 dev {r_dev} nodad",
                                       f"route add {lan6}/64 via {link6}2"])
        self.sysctl(box, "net/ipv6/conf/all/forwarding", 1)
        self.ip_batch(box, [f"addr add {link6}2/64 dev {wan} nodad",
                            f"route add ::/0 via {link6}1",
                            f"addr add {lan6}1/64 dev {br} nodad"])
        self.nft(box, f"""
table ip6 lab6 {{
  {INPUT_DROP.format(wan=wan)}
  chain filter_forward {{ type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "{br}" oifname "{wan}" accept
  }}
}}
""")

    @staticmethod
    def _box_rules(nat: str, lan: str, wan: str) -> str:
        if nat == "none":
            return ""
        if nat == "proxyonly":
            return f"""
table ip lab {{
  {INPUT_DROP.format(wan=wan)}
  chain filter_forward {{ type filter hook forward priority filter; policy drop; }}
}}
"""
        masq = "masquerade fully-random" if nat in ("symmetric", "portmap") else "masquerade"
        udpblock = (f'iifname "{lan}" meta l4proto udp counter drop'
                    if nat == "udpblock" else "")
        # fullcone's dnat map and miniupnpd's mappings let new flows in.
        fullcone_fwd = (f'iifname "{wan}" ct status dnat accept'
                        if nat in ("fullcone", "portmap") else "")
        fullcone = ""
        if nat == "fullcone":
            # Endpoint-independent filtering: remember each UDP mapping the box made
            # (after its srcnat: udp sport is the external port) and send any inbound UDP
            # for that external port to the internal address and port.
            fullcone = f"""
  map fullcone {{ type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout 300s; }}
  chain fc_in {{ type nat hook prerouting priority dstnat; policy accept;
    iifname "{wan}" meta l4proto udp dnat ip to udp dport map @fullcone
  }}
  chain fc_rec {{ type filter hook postrouting priority srcnat + 10; policy accept;
    oifname "{wan}" meta l4proto udp ct direction original ct status snat update @fullcone {{ udp sport : ct original ip saddr . ct original proto-src }}
  }}"""
        return f"""
table ip lab {{
  {INPUT_DROP.format(wan=wan)}
  chain filter_forward {{ type filter hook forward priority filter; policy drop;
    ct state established,related accept
    {udpblock}
    iifname "{lan}" oifname "{wan}" accept
    {fullcone_fwd}
  }}
  chain nat_post {{ type nat hook postrouting priority srcnat; policy accept;
    oifname "{wan}" {masq}
  }}{fullcone}
}}
"""

    @staticmethod
    def _carrier_rules(inside: str, wan: str, public_ip: str) -> str:
        return f"""
table ip lab {{
  {INPUT_DROP.format(wan=wan)}
  chain filter_forward {{ type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "{inside}" oifname "{wan}" accept
  }}
  chain nat_post {{ type nat hook postrouting priority srcnat; policy accept;
    oifname "{wan}" meta l4proto udp snat to {public_ip} : udp sport ^ {CGNAT_PORT_XOR:#x}
    oifname "{wan}" meta l4proto tcp snat to {public_ip} : tcp sport ^ {CGNAT_PORT_XOR:#x}
    oifname "{wan}" masquerade
  }}
}}
"""

    # -- services --------------------------------------------------------------------

    def _start_miniupnpd(self, site: Site, wan: str, lan: str, lan_net: str) -> None:
        ensure_packages(["miniupnpd-nftables"])
        conf = os.path.join(self.workdir, f"miniupnpd-{site.name}.conf")
        with open(conf, "w") as f:
            f.write(f"""ext_ifname={wan}
listening_ip={lan}
enable_upnp=yes
enable_natpmp=yes
secure_mode=yes
system_uptime=yes
uuid=6a0c{site.index:04x}-3b7e-4c11-9d2e-{secrets.token_hex(6)}
lease_file={self.workdir}/miniupnpd-{site.name}.leases
upnp_table_name=miniupnpd
upnp_nat_table_name=miniupnpd
upnp_forward_chain=forward_miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
allow 1024-65535 {lan_net} 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
""")
        p = self.start(f"miniupnpd ({site.name})",
                       ["miniupnpd", "-d", "-f", conf,
                        "-P", os.path.join(self.workdir, f"miniupnpd-{site.name}.pid")],
                       site.box_ns)
        p.wait_stderr(r"Listening for NAT-PMP/PCP traffic", 10,
                      what="miniupnpd ready")
        site.miniupnpd = p

    def port_mappings(self, site: Site) -> list[str]:
        """The dnat rules miniupnpd holds in `site`'s box: one per mapping."""
        out = sh(["nft", "list", "chain", "inet", "miniupnpd", "prerouting_miniupnpd"],
                 netns=site.box_ns).stdout
        return [line.strip() for line in out.splitlines() if " dnat " in f" {line} "]

    def _start_squid(self, site: Site) -> None:
        d = os.path.join(self.workdir, f"squid-{site.name}")
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o777)  # squid drops to user proxy for its logs
        conf = os.path.join(d, "squid.conf")
        site.squid_log = os.path.join(d, "access.log")
        with open(conf, "w") as f:
            f.write(f"""\
http_port {site.gateway}:{PROXY_PORT}
acl SSL_ports port 443
acl CONNECT method CONNECT
http_access deny !CONNECT
http_access deny CONNECT !SSL_ports
http_access allow all
cache deny all
cache_mem 8 MB
access_log stdio:{site.squid_log}
cache_log {d}/cache.log
cache_store_log none
pid_filename {d}/squid.pid
coredump_dir {d}
netdb_filename none
pinger_enable off
shutdown_lifetime 0 seconds
dns_nameservers 127.0.0.1
visible_hostname lab-proxy
""")
        p = self.start(f"squid ({site.name})", ["squid", "-N", "-f", conf], site.box_ns)
        self.wait_tcp(site.box_ns, site.gateway, PROXY_PORT, 20, f"squid on {site.name}", p)

    def wait_tcp(self, netns: str, host: str, port: int, timeout: float, what: str,
                 proc: Optional[Proc] = None) -> None:
        """Waits until HOST:PORT accepts a TCP connection from inside NETNS."""
        probe = ("import socket,sys\n"
                 "s=socket.socket();s.settimeout(1)\n"
                 f"sys.exit(s.connect_ex(({host!r},{port})))\n")
        deadline = time.monotonic() + scaled(timeout)
        while True:
            if proc is not None:
                proc.check_running(what)
            r = sh(["python3", "-c", probe], netns=netns, check=False)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                extra = ("\n" + proc.describe()) if proc else ""
                raise Failure(f"{what}: {host}:{port} not accepting within "
                              f"{scaled(timeout):.0f} s{extra}")
            time.sleep(0.05)

    def start_sshd(self, site: Site, role: str = "buffalo",
                   listen_ip: Optional[str] = None) -> ThrowawaySshd:
        """A real sshd on port 22 in the host's namespace, throwaway host and user keys;
        on the host's LAN address unless `listen_ip` (127.0.0.1: one that moves with
        the host)."""
        if not find_sshd():
            raise Failure("sshd not installed (openssh-server)")
        d = os.path.join(self.workdir, f"sshd-{site.name}-{role}")
        os.makedirs(d, mode=0o700, exist_ok=True)
        ip = listen_ip or site.ip[role]
        sshd = ThrowawaySshd(d, ip)
        sshd.prepare()
        p = self.start(f"sshd ({site.name} {role})",
                       [sshd.sshd, "-D", "-e", "-f", sshd.config,
                        "-o", f"ListenAddress={ip}:{SSHD_PORT}"],
                       site.ns[role])
        p.wait_stderr(r"Server listening on", 10, what="sshd ready")
        self.sshd_dirs[f"{site.name}-{role}"] = sshd
        return sshd

    def start_coturn(self) -> None:
        """coturn, STUN only, on both relay addresses: the RFC 5780 reference server."""
        ensure_packages(["coturn"])
        d = os.path.join(self.workdir, "coturn")
        os.makedirs(d, exist_ok=True)
        self.coturn = self.start("coturn", [
            "turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls", "--stun-only",
            "-L", RELAY_IP, "-L", RELAY_IP2, "-p", str(COTURN_PORT),
            "--alt-listening-port", str(COTURN_PORT + 1), "--log-file", "stdout",
            "--simple-log", "--pidfile", os.path.join(d, "turnserver.pid"),
            "--no-software-attribute"], self.relay_ns)
        # Ready when it answers a Binding request.
        deadline = time.monotonic() + scaled(15)
        while True:
            self.coturn.check_running("coturn")
            r = sh(["timeout", "2", "turnutils_stunclient", "-p", str(COTURN_PORT), RELAY_IP],
                   netns=self.router_ns, check=False, timeout=10)
            if r.returncode == 0 and "UDP reflexive addr" in r.stdout + r.stderr:
                return
            if time.monotonic() > deadline:
                raise Failure("coturn does not answer STUN\n" + self.coturn.describe())
            time.sleep(0.1)

    # -- teardown --------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.group.stop_all()
        # What our processes left behind (an sshd session whose client just went away)
        # exits by itself once its connection closes: give it a moment, kill nothing.
        def pids(ns: str) -> list[str]:
            return sh(["ip", "netns", "pids", ns], check=False).stdout.split()
        deadline = time.monotonic() + 3
        while any(pids(ns) for ns in self.namespaces) and time.monotonic() < deadline:
            time.sleep(0.05)
        for ns in reversed(self.namespaces):
            left = pids(ns)
            if left:
                log(f"lab: processes still in {ns}: {' '.join(left)} (not ours to kill)")
            sh(["ip", "netns", "del", ns], check=False)
        self.namespaces.clear()


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP (meson's timeout, a closed terminal) unwind like Ctrl-C, so every
    `finally` runs and the lab is torn down."""
    def handler(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def find_nfq_delay() -> Optional[str]:
    env = os.environ.get("NFQ_DELAY")
    if env:
        return env
    build = os.environ.get("BUILD_DIR", os.path.join(ROOT, "build"))
    return os.path.join(build, "test", "tools", "nfq_delay")

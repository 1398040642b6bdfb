#!/usr/bin/env python3
"""The NAT lab tests (meson suite `lab`, root only). See test/lab/README.md.

    lab_test.py discovery                 RFC 5780 behaviour of every NAT type (coturn)
    lab_test.py matrix [--pairs A:B,...]  the 28 pairs: relay, peer --serve on home,
                                          peer -L on laptop, real ssh to buffalo, 20 MB
    lab_test.py same-lan                  both peers behind the same NAT, on one LAN
    lab_test.py relay-restart             the relay is restarted mid-transfer; the
                                          direct tunnel and the open ssh keep going
    lab_test.py several-relays            two relays; the one a relayed tunnel runs through
                                          dies; the tunnel moves to the other
    lab_test.py multi-peer                one laptop process forwards to two serving
                                          peers behind different NATs, ssh through both
    lab_test.py roam                      the laptop moves to another NAT and back;
                                          new connections work again within seconds
    lab_test.py netcheck                  `peer netcheck` from every NAT type against a
                                          relay with --alternate-address; coturn's
                                          natdiscovery against our relay and coturn agree
    lab_test.py port-mapping              home behind a symmetric NAT whose box runs
                                          miniupnpd (PCP, NAT-PMP, UPnP IGD), laptop behind
                                          another symmetric NAT: direct through the mapped
                                          candidate; the mapping goes when the peer exits;
                                          `peer netcheck` behind it reports the mapping;
                                          then again with NAT-PMP alone and UPnP alone
    lab_test.py port-mapping-bad-gateway  the symmetric box's port-mapping service answers
                                          garbage, then lies (maps to an address nothing
                                          forwards): still relayed, ssh works, the serving
                                          peer says what it got
    lab_test.py demo                      (test/lab/demo_nat.py) see there

Environment: LAB_DELAY=20ms LAB_LOSS=0.5% (internet round-trip delay and loss per
router crossing), LAB_VERBOSE=1 (peers with -v, every line echoed), NATFWD_TIMEOUT_SCALE.
Exit 0 all passed, 1 something failed, 77 cannot run here (not root, no namespaces).

A pair's expected path follows issue 4's rules, with issue 16's hard-NAT punching, in
order:
  1. either side proxyonly -> relayed, TURN over TLS (443) through that side's proxy;
  2. else either side udpblock -> direct tcp (ICE-TCP) when the other side is none,
     otherwise relayed over TURN TCP or TLS;
  3. else direct udp when either side is none or fullcone, or both are eim/cgnat;
  4. else one side eim or cgnat and the other symmetric (endpoint-dependent mapping)
     -> relayed first (ICE can do no better), then `direct udp punched` once the
     birthday search wins (the matrix's relay has its RFC 5780 --alternate-address,
     which the peers' mapping probe needs); under LAB_LOSS rule 5 applies instead,
     since a lost probe may leave the punch to a later try;
  5. else relayed over TURN UDP.
Checked on the -L peer's path line ("direct" or "relayed", and the transport; for 4 the
punched line that follows the relayed one); when the rule names one side's transport
(1, 2) it is checked on that side's own path line.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lab as L  # noqa: E402
from lab import Failure, Lab, SiteSpec, log, scaled, sh  # noqa: E402
from procs import Natfwd, Proc, find_binaries, wait_until  # noqa: E402
from sshd_inetd import ssh_argv  # noqa: E402

SKIP = 77
FILE_BYTES = 20 * 1000 * 1000
READY_TIMEOUT = 20.0
PATH_TIMEOUT = 25.0
COPY_TIMEOUT = 120.0
VERBOSE = bool(os.environ.get("LAB_VERBOSE"))

# Which side of an unordered pair is "home": the more open type (earlier in L.TYPES)
# serves, the more closed one is the roaming laptop. proxyonly x proxyonly etc. have
# the same type on both sides, each behind its own NAT box.
ORDER = {t: i for i, t in enumerate(L.TYPES)}

PATH_RE = re.compile(r"^path (\S+(?: \S+)?): (direct|relayed) (.*), rtt (\d+) ms$")
DIRECT_RE = re.compile(r"^(udp|tcp) (host|srflx|prflx|relay|mapped) (\S+) <-> "
                       r"(host|srflx|prflx|relay|mapped) (\S+)$")
RELAYED_RE = re.compile(r"^via (turn-udp|turn-tcp|turn-tls) (\S+)$")
PUNCHED_RE = re.compile(r"^udp punched (\S+) <-> (\S+)$")
# How long after the relayed path the punched one may come (the search is bounded at
# 256 sockets and 1024 probes; in the lab it wins within a few seconds).
PUNCH_TIMEOUT = 30
TUNNEL_FAIL_RE = re.compile(r"ICE failed|QUIC handshake failed|cannot gather|tunnel closed|"
                            r"connecting to \S+ failed")


# -- expectations ------------------------------------------------------------------------

@dataclass
class Expect:
    kind: str                       # "direct" or "relayed"
    transports: tuple[str, ...]     # direct: udp/tcp; relayed: turn-udp/turn-tcp/turn-tls
    sides: tuple[str, ...] = ()     # relayed: which sides must show the transport
    proxy_sides: tuple[str, ...] = ()
    punched: bool = False           # direct udp by hard-NAT punching, after a relayed start

    def text(self) -> str:
        if self.punched:
            return "relayed, then direct udp punched"
        t = "/".join(self.transports)
        return f"{self.kind} {t}" + (f" ({'+'.join(self.sides)})" if self.sides else "")


def expected_path(home: str, laptop: str, lossy: bool = False) -> Expect:
    """The path the rules give a pair. `lossy` (LAB_LOSS): where TURN over UDP is the
    rule, TURN over TCP may win instead, because a lost UDP connectivity check can let
    the TCP relayed pair succeed first and be nominated (RFC 8445 lets the controlling
    agent nominate any valid pair; seen once in a fresh-clone run)."""
    pair = (home, laptop)
    sides_of = lambda t: tuple(s for s, x in zip(("home", "laptop"), pair) if x == t)  # noqa: E731
    if "proxyonly" in pair:
        s = sides_of("proxyonly")
        return Expect("relayed", ("turn-tls",), s, s)
    if "udpblock" in pair:
        other = laptop if home == "udpblock" else home
        if other == "none":
            return Expect("direct", ("tcp",))
        return Expect("relayed", ("turn-tcp", "turn-tls"), sides_of("udpblock"))
    if "none" in pair or "fullcone" in pair or set(pair) <= {"eim", "cgnat"}:
        return Expect("direct", ("udp",))
    if not lossy and "symmetric" in pair and set(pair) & {"eim", "cgnat"}:
        return Expect("direct", ("udp",), punched=True)
    # Either side's TURN allocation will do: ICE pairs one side's relay candidate with
    # the other side's reflexive one, and only the side holding the allocation knows
    # (and prints) how it reaches the TURN server.
    return Expect("relayed", ("turn-udp", "turn-tcp") if lossy else ("turn-udp",))


def all_pairs() -> list[tuple[str, str]]:
    types = list(L.TYPES)
    return [(a, b) for i, a in enumerate(types) for b in types[i:]]


def parse_pairs(text: str) -> list[tuple[str, str]]:
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        a, _, b = item.partition(":")
        if a not in L.TYPES or b not in L.TYPES:
            raise SystemExit(f"bad pair {item!r}: types are {', '.join(L.TYPES)}")
        out.append((a, b) if ORDER[a] <= ORDER[b] else (b, a))
    return out


# -- RFC 5780 discovery ------------------------------------------------------------------

MAPPING = {"Endpoint Independent Mapping": "EIM", "Address Dependent Mapping": "ADM",
           "Address and Port Dependent Mapping": "APDM"}
FILTERING = {"Endpoint Independent Filtering": "EIF", "Address Dependent Filtering": "ADF",
             "Address and Port Dependent Filtering": "APDF"}

# type -> (mapping, filtering, address rule); "-" = no UDP answer at all.
DISCOVERY_EXPECT = {
    "none": ("EIM", "EIF", "no NAT (mapped address is the host's own)"),
    "fullcone": ("EIM", "EIF", "NAT, port preserved"),
    "eim": ("EIM", "APDF", "NAT, port preserved"),
    "cgnat": ("EIM", "APDF", "NAT, port not preserved"),
    "symmetric": ("APDM", "APDF", "NAT"),
    "udpblock": ("-", "-", "no UDP answer"),
    "proxyonly": ("-", "-", "no UDP answer"),
}


@dataclass
class Discovery:
    site: str
    nat: str
    mapping: str = "-"
    filtering: str = "-"
    local: str = ""
    mapped: str = ""
    ok: bool = False
    why: str = ""
    output: str = ""


def discovery_argv(host_ip: str, port: int = L.COTURN_PORT) -> list[str]:
    return ["timeout", str(int(scaled(8))), "turnutils_natdiscovery", "-m", "-f",
            "-p", str(port), "-L", host_ip, L.RELAY_IP]


def judge_discovery(d: Discovery, host_ip: str) -> None:
    out = d.output
    for text, short in MAPPING.items():
        if f"NAT with {text}" in out:
            d.mapping = short
    for text, short in FILTERING.items():
        if f"NAT with {text}" in out:
            d.filtering = short
    m = re.search(r"UDP reflexive addr: (\S+)", out)
    d.mapped = m.group(1) if m else ""
    m = re.search(r"Local addr: : (\S+)", out)
    d.local = m.group(1) if m else ""
    want_map, want_filter, rule = DISCOVERY_EXPECT[d.nat]
    problems = []
    if d.mapping != want_map:
        problems.append(f"mapping {d.mapping}, want {want_map}")
    if d.filtering != want_filter:
        problems.append(f"filtering {d.filtering}, want {want_filter}")
    if d.mapped and d.local:
        m_ip, _, m_port = d.mapped.rpartition(":")
        _, _, l_port = d.local.rpartition(":")
        if d.nat == "none" and m_ip != host_ip:
            problems.append(f"mapped {d.mapped} is not the host's own address {host_ip}")
        if d.nat not in ("none",) and m_ip == host_ip:
            problems.append(f"mapped {d.mapped} is the host's own address: no NAT")
        if d.nat in ("eim", "fullcone") and m_port != l_port:
            problems.append(f"port not preserved ({d.local} -> {d.mapped})")
        if d.nat == "cgnat" and m_port == l_port:
            problems.append(f"port preserved ({d.local} -> {d.mapped}); the carrier NAT "
                            "should translate it")
    elif want_map != "-":
        problems.append("no mapped address in the output")
    d.ok = not problems
    d.why = "; ".join(problems) if problems else rule


def run_discovery(lab: Lab, sites: list[L.Site], port: int = L.COTURN_PORT) -> list[Discovery]:
    """turnutils_natdiscovery from the first host of every site, all at once, against
    coturn (default) or whatever serves `port` on the relay address."""
    if lab.coturn is None and port == L.COTURN_PORT:
        lab.start_coturn()
    running = []
    for site in sites:
        role = next(iter(site.spec.hosts))
        argv = ["ip", "netns", "exec", site.ns[role]] + discovery_argv(site.ip[role], port)
        running.append((site, role, subprocess.Popen(argv, stdout=subprocess.PIPE,
                                                     stderr=subprocess.STDOUT, text=True)))
    results = []
    for site, role, popen in running:
        out, _ = popen.communicate(timeout=scaled(30))
        d = Discovery(site.name, site.nat, output=out)
        judge_discovery(d, site.ip[role])
        # natdiscovery sends each probe once: with emulated loss (LAB_LOSS) a lost probe
        # reads as "no answer". A box that really misbehaves fails every attempt.
        for _ in range(2 if lab.loss else 0):
            if d.ok:
                break
            argv = ["ip", "netns", "exec", site.ns[role]] + discovery_argv(site.ip[role], port)
            out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, timeout=scaled(30)).stdout
            d = Discovery(site.name, site.nat, output=out)
            judge_discovery(d, site.ip[role])
        results.append(d)
    return results


def print_discovery(results: list[Discovery], server: str = "coturn") -> None:
    print(f"\nRFC 5780 behaviour discovery (coturn turnutils_natdiscovery -m -f against "
          f"{server}):")
    print(f"  {'site':<14} {'type':<10} {'mapping':<8} {'filtering':<9} {'local':<22} "
          f"{'mapped':<22} result")
    for d in results:
        print(f"  {d.site:<14} {d.nat:<10} {d.mapping:<8} {d.filtering:<9} "
              f"{d.local or '-':<22} {d.mapped or '-':<22} "
              f"{'ok' if d.ok else 'FAIL'}: {d.why}")
    sys.stdout.flush()


# -- one tunnel through the lab ----------------------------------------------------------

@dataclass
class PairResult:
    home: str
    laptop: str
    expect: Expect
    ok: bool = False
    path: str = ""              # the -L peer's path line, after "path home: "
    first_path: str = ""        # punched pairs: the relayed line before it
    serving_path: str = ""
    setup_ms: Optional[float] = None
    mbps: Optional[float] = None
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.home} x {self.laptop}"


class Features:
    """What the built relay and peer offer yet (TURN and the proxy land in issue 3)."""

    def __init__(self, relay_bin: str, peer_bin: str):
        self.relay_help = subprocess.run([relay_bin, "--help"], capture_output=True,
                                         text=True).stdout
        self.peer_help = subprocess.run([peer_bin, "--help"], capture_output=True,
                                        text=True).stdout

    @property
    def relay_tls(self) -> bool:
        return "--tls-listen" in self.relay_help

    @property
    def peer_proxy(self) -> bool:
        return "--proxy" in self.peer_help


def clean_env() -> dict:
    """The environment for the lab's relay and peers: no proxy or relay settings from the
    caller's environment (a CI machine's https_proxy would send a peer to a proxy
    that does not exist in the lab)."""
    env = dict(os.environ)
    for key in ("NATFWD_RELAY", "https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY",
                "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        env.pop(key, None)
    return env


class Tunnels:
    """Starts relay and peers in the lab for one test and measures the tunnel."""

    relay_listen = f"{L.RELAY_IP}:{L.RELAY_PORT}"  # the relay's --listen

    def __init__(self, lab: Lab, workdir: str):
        self.lab = lab
        self.workdir = workdir
        relay_bin, peer_bin = find_binaries()
        self.features = Features(relay_bin, peer_bin)
        echo = (lambda name, line: log(f"  [{name}] {line}")) if VERBOSE else None
        self.natfwd = Natfwd(lab.group, workdir, relay_bin, peer_bin, echo=echo)
        self.data_file = os.path.join(workdir, "data.bin")
        if not os.path.exists(self.data_file):
            with open(self.data_file, "wb") as f:
                f.write(os.urandom(FILE_BYTES))
        with open(self.data_file, "rb") as f:
            self.data_sha = hashlib.sha256(f.read()).hexdigest()
        self._count = 0

    # relay -------------------------------------------------------------------------

    def relay_argv_extra(self) -> list[str]:
        extra = []
        if self.features.relay_tls:
            extra += ["--tls-listen", f"{L.RELAY_IP}:{L.RELAY_TLS_PORT}"]
        if VERBOSE:
            extra += ["-v"]
        return extra

    def start_relay(self, state_dir: Optional[str] = None,
                    extra: Sequence[str] = ()) -> tuple[Proc, str]:
        argv = [self.natfwd.relay_bin, "--listen", self.relay_listen,
                "--state-dir", state_dir or self.natfwd.state_dir("relay"),
                *self.relay_argv_extra(), *extra]
        p = self.lab.start("relay", argv, self.lab.relay_ns, echo=self.natfwd.echo,
                           env=clean_env())
        m = p.wait_stdout(r"listening on (\S+) ", READY_TIMEOUT, what="relay ready line")
        return p, m.group(1)

    def peer_relay_args(self, site: L.Site) -> list[str]:
        if site.nat == "proxyonly":
            if not self.features.peer_proxy:
                raise Failure("proxyonly needs `peer --proxy` (issue 3: not in this build)")
            if not self.features.relay_tls:
                raise Failure("proxyonly needs `relay --tls-listen` on 443 (issue 3: not in "
                              "this build)")
            return ["--relay", f"tls://{L.RELAY_IP}:{L.RELAY_TLS_PORT}", "--proxy", site.proxy]
        return ["--relay", f"{L.RELAY_IP}:{L.RELAY_PORT}"]

    # peers -------------------------------------------------------------------------

    def start_serving(self, site: L.Site, target: str, role: str = "home",
                      extra: Sequence[str] = ()) -> Proc:
        # Each pair gets a fresh laptop identity (its known_peers would otherwise pin the
        # previous pair's home key), which the serving peer authorises, as if paired.
        self.laptop_state = self.natfwd.state_dir("laptop")
        laptop_id = self.natfwd.key_id(self.laptop_state)
        argv = [self.natfwd.peer_bin, *self.peer_relay_args(site), "--name", "home",
                "--serve", f"2222:{target}", "--state-dir", self.natfwd.state_dir("home"),
                "--allow", laptop_id, *extra]
        argv += ["-v"] if VERBOSE else []
        p = self.lab.start(f"peer --serve ({site.name})", argv, site.ns[role],
                           echo=self.natfwd.echo, env=clean_env())
        p.wait_stdout(r"^registered as home at ", READY_TIMEOUT, what="serving peer ready")
        return p

    def start_forward(self, site: L.Site, target: str, role: str = "laptop",
                      port: int = 0, extra: Sequence[str] = (),
                      relays: Optional[Sequence[str]] = None) -> tuple[Proc, int]:
        """`relays`: --relay addresses in this order instead of the lab relay."""
        relay_args = [a for r in relays for a in ("--relay", r)] if relays else \
            self.peer_relay_args(site)
        argv = [self.natfwd.peer_bin, *relay_args, "-L", f"{port}:{target}",
                "--state-dir", self.laptop_state, *extra]
        argv += ["-v"] if VERBOSE else []
        argv += ["home"]
        p = self.lab.start(f"peer -L ({site.name})", argv, site.ns[role], echo=self.natfwd.echo,
                           env=clean_env())
        m = p.wait_stdout(r"^listening on (\S+) -> home ", READY_TIMEOUT,
                          what="-L peer ready line")
        return p, int(m.group(1).rpartition(":")[2])

    @staticmethod
    def wait_path(p: Proc, label: str, timeout: float, start: int = 0) -> tuple[str, float, int]:
        """Waits for `path LABEL: ...` on stdout, failing early when the peer reports
        that the tunnel failed. Returns (text after the label, time, line index)."""
        deadline = time.monotonic() + scaled(timeout)
        prefix = f"path {label}: "
        while True:
            for i in range(start, len(p.stdout_lines)):
                line = p.stdout_lines[i]
                if line.startswith(prefix):
                    return line[len(prefix):], p.line_times.get(i, time.monotonic()), i
            for line in p.stderr_lines:
                if TUNNEL_FAIL_RE.search(line):
                    raise Failure(f"no path: {line.strip()}")
            if not p.running():
                raise Failure(f"{p.name} exited without a path line\n" + p.describe())
            if time.monotonic() > deadline:
                raise Failure(f"no path line within {scaled(timeout):.0f} s")
            time.sleep(0.02)

    # ssh ---------------------------------------------------------------------------

    def ssh_base(self, sshd: L.ThrowawaySshd, port: int, control: str) -> list[str]:
        return ssh_argv(sshd.user_key, sshd.user, "127.0.0.1", port,
                        extra=("-S", control, "-o", "ServerAliveInterval=5"))

    def open_master(self, netns: str, sshd: L.ThrowawaySshd, port: int) -> tuple[Proc, str]:
        """An ssh connection through the tunnel that stays open (ControlMaster), so the
        copies below measure the transfer, not ssh's handshake."""
        self._count += 1
        control = os.path.join(self.workdir, f"ssh-ctl-{self._count}")
        argv = self.ssh_base(sshd, port, control)
        argv = argv[:1] + ["-M", "-N"] + argv[1:]
        p = self.lab.start("ssh master", argv, netns)
        check = self.ssh_base(sshd, port, control)
        check = check[:1] + ["-O", "check"] + check[1:]

        def up() -> bool:
            if not p.running():
                raise Failure("ssh through the tunnel exited\n" + p.describe())
            return subprocess.run(["ip", "netns", "exec", netns] + check,
                                  capture_output=True).returncode == 0
        wait_until(up, 30, "the ssh connection through the tunnel", interval=0.05)
        return p, control

    def ssh(self, netns: str, sshd: L.ThrowawaySshd, port: int, control: str, command: str,
            stdin=None, timeout: float = COPY_TIMEOUT) -> subprocess.CompletedProcess:
        argv = ["ip", "netns", "exec", netns] + self.ssh_base(sshd, port, control) + [command]
        try:
            return subprocess.run(argv, stdin=stdin, capture_output=True,
                                  timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            raise Failure(f"ssh {command!r} did not finish within {scaled(timeout):.0f} s") \
                from None

    def check_command(self, netns, sshd, port, control, client_ip: str, server_ip: str) -> None:
        r = self.ssh(netns, sshd, port, control, "echo $SSH_CONNECTION", timeout=30)
        fields = r.stdout.decode(errors="replace").split()
        if r.returncode != 0 or len(fields) != 4:
            raise Failure(f"ssh command through the tunnel: exit {r.returncode}, "
                          f"{r.stdout!r} {r.stderr.decode(errors='replace')}")
        if fields[0] != client_ip or fields[2] != server_ip or fields[3] != str(L.SSHD_PORT):
            raise Failure(f"ssh reached the wrong place: SSH_CONNECTION={' '.join(fields)}, "
                          f"want {client_ip} -> {server_ip}:{L.SSHD_PORT}")

    def copy(self, netns, sshd, port, control) -> float:
        """Copies the 20 MB file through ssh; returns MB/s. Fails unless intact."""
        dest = os.path.join(self.workdir, f"copied-{self._count}.bin")
        t0 = time.monotonic()
        with open(self.data_file, "rb") as f:
            r = self.ssh(netns, sshd, port, control, f"cat > '{dest}' && sha256sum '{dest}'",
                         stdin=f)
        elapsed = time.monotonic() - t0
        try:
            if r.returncode != 0:
                raise Failure(f"copy through ssh failed: exit {r.returncode}, "
                              f"{r.stderr.decode(errors='replace')}")
            got = r.stdout.split()[0].decode() if r.stdout.split() else ""
            if got != self.data_sha:
                raise Failure(f"copied file differs: sha256 {got or '(none)'}, "
                              f"sent {self.data_sha}")
        finally:
            if os.path.exists(dest):
                os.unlink(dest)
        return FILE_BYTES / 1e6 / elapsed


def check_path(expect: Expect, fwd_path: str, serving_path: str, home_site: L.Site,
               laptop_site: L.Site) -> list[str]:
    """Problems with the observed path lines, [] when they match the rules."""
    m = re.match(r"^(direct|relayed) (.*)$", fwd_path)
    if not m:
        return [f"unparsed path line {fwd_path!r}"]
    kind, rest = m.group(1), m.group(2)
    problems = []
    if kind != expect.kind:
        return [f"took a {kind} path, the rules say {expect.text()}"]
    if expect.punched:
        if not PUNCHED_RE.match(rest.split(", rtt")[0]):
            return [f"direct path {rest!r} is not a punched one"]
        return []
    if kind == "direct":
        d = DIRECT_RE.match(rest.split(", rtt")[0])
        if not d:
            return [f"unparsed direct path {rest!r}"]
        if d.group(1) not in expect.transports:
            problems.append(f"direct over {d.group(1)}, the rules say {expect.text()}")
        if "relay" in (d.group(2), d.group(4)):
            problems.append("a 'direct' path with a relay candidate")
        return problems
    lines = {"laptop": fwd_path, "home": serving_path}
    sides = expect.sides
    if not sides:
        # No side named by the rules: the side(s) holding the allocation must say how.
        sides = tuple(s for s in ("laptop", "home") if (lines[s] or "").startswith("relayed via turn-"))
        if not sides:
            return [f"neither side says 'relayed via turn-...': laptop {fwd_path!r}, "
                    f"home {serving_path!r}"]
    for side in sides:
        line = lines[side]
        r = re.match(r"^relayed via (turn-\S+) (\S+?),", line or "")
        if not r:
            problems.append(f"{side}'s path line {line!r} is not 'relayed via turn-...'")
            continue
        if r.group(1) not in expect.transports:
            problems.append(f"{side} relayed via {r.group(1)}, the rules say "
                            f"{'|'.join(expect.transports)}")
        want_port = L.RELAY_TLS_PORT if r.group(1) == "turn-tls" else L.RELAY_PORT
        if r.group(2) != f"{L.RELAY_IP}:{want_port}":
            problems.append(f"{side} relayed via {r.group(2)}, not the relay "
                            f"{L.RELAY_IP}:{want_port}")
    return problems


def check_proxy_logs(expect: Expect, home_site: L.Site, laptop_site: L.Site) -> list[str]:
    """Squid writes an access-log line when a CONNECT tunnel ends: call this after the
    pair's peers have stopped."""
    problems = []
    for side in expect.proxy_sides:
        site = home_site if side == "home" else laptop_site
        try:
            with open(site.squid_log or "", errors="replace") as f:
                log_text = f.read()
        except OSError:
            log_text = ""
        if f"CONNECT {L.RELAY_IP}:{L.RELAY_TLS_PORT}" not in log_text:
            problems.append(f"{side}'s proxy log has no CONNECT {L.RELAY_IP}:{L.RELAY_TLS_PORT}")
    return problems


@contextlib.contextmanager
def pair_processes(lab: Lab):
    """The processes started inside are one pair's: on a Failure their output is shown,
    and at the end they are stopped (newest first); the lab's own services stay."""
    before = len(lab.group.procs)
    try:
        yield
    except Failure:
        for p in lab.group.procs[before:]:
            if p.name.startswith(("peer", "relay")):
                log(p.describe(stderr_tail=15))
        raise
    finally:
        mine = lab.group.procs[before:]
        for p in reversed(mine):
            p.stop()
        del lab.group.procs[before:]


def run_pair(t: Tunnels, home_site: L.Site, laptop_site: L.Site, sshd) -> PairResult:
    res = PairResult(home_site.nat, laptop_site.nat,
                     expected_path(home_site.nat, laptop_site.nat, lossy=bool(t.lab.loss)))
    buffalo = f"{home_site.ip['buffalo']}:{L.SSHD_PORT}"
    try:
        with pair_processes(t.lab):
            t.start_relay(extra=["--alternate-address", L.RELAY_IP2])
            serving = t.start_serving(home_site, buffalo)
            fwd, port = t.start_forward(laptop_site, buffalo)
            started = fwd.started_at
            try:
                res.path, at, index = t.wait_path(fwd, "home", PATH_TIMEOUT)
                if res.expect.punched:
                    if not res.path.startswith("relayed "):
                        raise Failure(f"first path {res.path!r}: the rules say relayed first")
                    res.first_path = res.path
                    res.path, at, _ = t.wait_path(fwd, "home", PUNCH_TIMEOUT, start=index + 1)
            finally:
                # Whatever happened, take the serving side's line if it has one.
                for line in serving.stdout_lines:
                    if line.startswith("path peer "):
                        res.serving_path = line.split(": ", 1)[1]
            res.setup_ms = (at - started) * 1000
            if res.expect.kind == "relayed" and not res.serving_path:
                res.serving_path = wait_serving_path(serving)
            problems = check_path(res.expect, res.path, res.serving_path, home_site, laptop_site)
            netns = laptop_site.ns["laptop"]
            master, control = t.open_master(netns, sshd, port)
            t.check_command(netns, sshd, port, control, home_site.ip["home"],
                            home_site.ip["buffalo"])
            res.mbps = t.copy(netns, sshd, port, control)
            if problems:
                raise Failure("; ".join(problems))
            res.ok = True
    except Failure as e:
        res.error = str(e).split("\n")[0]
        detail = str(e)
        log(f"FAIL {res.label} (details):\n{detail}")
    if res.ok:
        problems = check_proxy_logs(res.expect, home_site, laptop_site)
        if problems:
            res.ok = False
            res.error = "; ".join(problems)
            log(f"FAIL {res.label}: {res.error}")
    return res


def wait_serving_path(serving: Proc) -> str:
    deadline = time.monotonic() + scaled(10)
    while time.monotonic() < deadline:
        for line in serving.stdout_lines:
            if line.startswith("path peer "):
                return line.split(": ", 1)[1]
        time.sleep(0.02)
    return ""


def fmt(x: Optional[float], spec: str) -> str:
    return "-" if x is None else format(x, spec)


def print_matrix(results: list[PairResult], title: str) -> None:
    print(f"\n{title}")
    print("| home x laptop | expected | path (-L peer's line) | rtt ms | setup ms | MB/s | result |")
    print("|---|---|---|---:|---:|---:|---|")
    for r in results:
        m = re.match(r"^(.*), rtt (\d+) ms$", r.path)
        path, rtt = (m.group(1), m.group(2)) if m else (r.path or "(none)", "-")
        print(f"| {r.label} | {r.expect.text()} | {path} | {rtt} | "
              f"{fmt(r.setup_ms, '.0f')} | {fmt(r.mbps, '.1f')} | {'ok' if r.ok else 'FAIL'} |")
    failed = [r for r in results if not r.ok]
    if failed:
        print("\nfailed pairs:")
        for r in failed:
            print(f"  {r.label}: {r.error}")
    sys.stdout.flush()


# -- the tests -------------------------------------------------------------------------

def site_name(side: str, nat: str) -> str:
    return f"{side}-{nat}"


def build_pairs_lab(lab: Lab, pairs: list[tuple[str, str]]) -> None:
    homes = sorted({h for h, _ in pairs}, key=ORDER.get)
    laptops = sorted({lp for _, lp in pairs}, key=ORDER.get)
    specs = [SiteSpec(site_name("a", h), h, ("home", "buffalo")) for h in homes]
    specs += [SiteSpec(site_name("b", lp), lp, ("laptop",)) for lp in laptops]
    lab.build(specs)


def test_discovery(lab: Lab, workdir: str, args) -> bool:
    del workdir, args
    specs = [SiteSpec(site_name("b", t), t, ("laptop",)) for t in L.TYPES]
    lab.build(specs)
    results = run_discovery(lab, list(lab.sites.values()))
    print_discovery(results)
    return all(d.ok for d in results)


def test_matrix(lab: Lab, workdir: str, args) -> bool:
    pairs = parse_pairs(args.pairs) if args.pairs else all_pairs()
    build_pairs_lab(lab, pairs)
    discovery = run_discovery(lab, list(lab.sites.values()))
    print_discovery(discovery)
    t = Tunnels(lab, workdir)
    sshds = {}
    for site in lab.sites.values():
        if "buffalo" in site.ns:
            sshds[site.name] = lab.start_sshd(site)
    results = []
    t_start = time.monotonic()
    for home, laptop in pairs:
        hs, ls = lab.sites[site_name("a", home)], lab.sites[site_name("b", laptop)]
        r = run_pair(t, hs, ls, sshds[hs.name])
        log(f"{'ok  ' if r.ok else 'FAIL'} {r.label}: {r.path or r.error}")
        results.append(r)
    delay = (f", internet RTT +{lab.delay_ms:g} ms, loss {lab.loss * 100:g} % per crossing"
             if lab.delay_ms or lab.loss else "")
    print_matrix(results, f"NAT matrix ({len(results)} pairs{delay}; "
                          f"{time.monotonic() - t_start:.0f} s):")
    ok_disc = all(d.ok for d in discovery)
    if not ok_disc:
        print("\nsome NAT boxes do not behave as their type (see discovery above)")
    direct = [r for r in results if r.ok and r.path.startswith("direct ")]
    punched = [r for r in direct if PUNCHED_RE.match(r.path[len("direct "):].split(", rtt")[0])]
    print(f"\n{sum(r.ok for r in results)} of {len(results)} pairs passed; {len(direct)} "
          f"direct ({len(punched)} of them punched through a hard NAT after a relayed start)")
    return ok_disc and all(r.ok for r in results)


def test_same_lan(lab: Lab, workdir: str, args) -> bool:
    del args
    lab.build([SiteSpec("a-eim", "eim", ("home", "buffalo", "laptop"))])
    site = lab.sites["a-eim"]
    sshd = lab.start_sshd(site)
    t = Tunnels(lab, workdir)
    t.start_relay()
    buffalo = f"{site.ip['buffalo']}:{L.SSHD_PORT}"
    t.start_serving(site, buffalo)
    fwd, port = t.start_forward(site, buffalo)
    path, at, _ = t.wait_path(fwd, "home", PATH_TIMEOUT)
    print(f"path home: {path}  (setup {(at - fwd.started_at) * 1000:.0f} ms)")
    want = (f"direct udp host {site.ip['laptop']}:", f" <-> host {site.ip['home']}:")
    if not (path.startswith(want[0]) and want[1] in path):
        raise Failure(f"both peers on one LAN should meet on their host candidates "
                      f"(direct udp host {site.ip['laptop']} <-> host {site.ip['home']}); "
                      f"got {path!r}")
    _, control = t.open_master(site.ns["laptop"], sshd, port)
    t.check_command(site.ns["laptop"], sshd, port, control, site.ip["home"], site.ip["buffalo"])
    mbps = t.copy(site.ns["laptop"], sshd, port, control)
    print(f"same LAN behind one eim NAT: ssh ok, 20 MB intact, {mbps:.1f} MB/s")
    return True


def test_relay_restart(lab: Lab, workdir: str, args) -> bool:
    del args
    lab.build([SiteSpec("a-eim", "eim", ("home", "buffalo")),
               SiteSpec("b-eim", "eim", ("laptop",))])
    hs, ls = lab.sites["a-eim"], lab.sites["b-eim"]
    sshd = lab.start_sshd(hs)
    t = Tunnels(lab, workdir)
    relay_state = t.natfwd.state_dir("relay")
    relay, _ = t.start_relay(relay_state)
    buffalo = f"{hs.ip['buffalo']}:{L.SSHD_PORT}"
    serving = t.start_serving(hs, buffalo)
    fwd, port = t.start_forward(ls, buffalo)
    path, _, _ = t.wait_path(fwd, "home", PATH_TIMEOUT)
    print(f"path home: {path}")
    if not path.startswith("direct udp"):
        raise Failure(f"eim x eim should be direct udp, got {path!r}")
    netns = ls.ns["laptop"]
    _, control = t.open_master(netns, sshd, port)
    t.check_command(netns, sshd, port, control, hs.ip["home"], hs.ip["buffalo"])

    # A transfer that spans the restart: half before, the relay goes, comes back, half after.
    dest = os.path.join(workdir, "restart-copy.bin")
    argv = ["ip", "netns", "exec", netns] + t.ssh_base(sshd, port, control) + \
        [f"cat > '{dest}' && sha256sum '{dest}'"]
    copy = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    with open(t.data_file, "rb") as f:
        data = f.read()
    half = len(data) // 2
    try:
        copy.stdin.write(data[:half])
        copy.stdin.flush()
        wait_until(lambda: os.path.exists(dest) and os.path.getsize(dest) >= half, 60,
                   "the first half of the transfer to arrive")
        code = relay.stop(signal.SIGTERM)
        print(f"relay stopped with SIGTERM (exit {code}) after {half} bytes arrived")
        relay, _ = t.start_relay(relay_state)
        print("relay started again on the same address")
        copy.stdin.write(data[half:])
        copy.stdin.close()
        copy.wait(timeout=scaled(COPY_TIMEOUT))
        out, err = copy.stdout.read(), copy.stderr.read()
    finally:
        if copy.poll() is None:
            copy.kill()
            copy.wait()
    got = out.split()[0].decode() if out.split() else ""
    if copy.returncode != 0 or got != t.data_sha:
        raise Failure(f"the transfer across the relay restart failed: exit {copy.returncode}, "
                      f"sha256 {got or '(none)'} want {t.data_sha}; "
                      f"{err.decode(errors='replace')}")
    os.unlink(dest)
    print("the open ssh kept working: 20 MB sent across the relay restart arrived intact")
    t.check_command(netns, sshd, port, control, hs.ip["home"], hs.ip["buffalo"])
    # A new TCP connection through the tunnel that was set up before the restart.
    r = subprocess.run(["ip", "netns", "exec", netns] +
                       ssh_argv(sshd.user_key, sshd.user, "127.0.0.1", port, "echo fresh"),
                       capture_output=True, timeout=scaled(30))
    if r.returncode != 0 or r.stdout.strip() != b"fresh":
        raise Failure(f"a new ssh through the tunnel after the restart failed: exit "
                      f"{r.returncode} {r.stderr.decode(errors='replace')}")
    print("a new ssh connection through the same tunnel works after the restart")
    for p in (serving, fwd):
        p.check_running("after the relay restart")
    # Informational: do the peers find the relay again?
    try:
        serving.wait_stderr(r"registered again", 15, what="re-registration")
        print("the serving peer registered again with the restarted relay")
    except Failure:
        print("note: the serving peer did not report registering again within 15 s")
    return True


def fresh_ssh_works(t: Tunnels, netns: str, sshd, port: int, attempt_timeout: float) -> bool:
    """One new ssh connection through the -L port running `echo fresh`."""
    argv = ["ip", "netns", "exec", netns] + \
        ssh_argv(sshd.user_key, sshd.user, "127.0.0.1", port, "echo fresh")
    try:
        r = subprocess.run(argv, capture_output=True, timeout=attempt_timeout)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0 and r.stdout.strip() == b"fresh"


def wait_recovery(t: Tunnels, netns: str, sshd, port: int, since: float,
                  limit: float = 60.0) -> float:
    """Seconds from `since` until a new ssh through the tunnel works. Each try gets a
    few seconds: one that lands on a dead path is given up and retried, as a person
    would. The first try gets 2 s, each further one half as long again, up to 10 s: on a
    loaded machine an ssh handshake alone can take longer than 2 s, and a fixed 2 s
    would then fail every try on a working path."""
    attempt = scaled(2.0)
    while True:
        if fresh_ssh_works(t, netns, sshd, port, attempt_timeout=attempt):
            return time.monotonic() - since
        attempt = min(attempt * 1.5, scaled(10.0))
        if time.monotonic() - since > scaled(limit):
            raise Failure(f"no new ssh connection through the tunnel worked within "
                          f"{scaled(limit):.0f} s")


def test_roam(lab: Lab, workdir: str, args) -> bool:
    """The laptop leaves its network for another (a symmetric NAT: relayed), then comes
    back (eim: direct). After each move the -L peer must find a new path for the same
    QUIC connection: the ssh opened before the first move keeps working, and new
    connections work again within seconds; no process hangs or dies."""
    del args
    return roam(lab, workdir, mover="laptop")


def test_roam_home(lab: Lab, workdir: str, args) -> bool:
    """The serving side moves: the home box leaves its network for one behind a
    symmetric NAT (relayed), then comes back (direct), with sshd on its own loopback.
    Its relay link must be re-established and its name registered again, and the -L
    peer, hearing nothing, must restart the path through the relay to the home peer's
    new candidates: the ssh opened before the first move keeps working, new
    connections work again within seconds."""
    del args
    return roam(lab, workdir, mover="home")


def roam(lab: Lab, workdir: str, mover: str) -> bool:
    """One tunnel from b-eim's laptop to a-eim's home; then `mover` goes to c-sym
    (symmetric: relayed) and back (direct). The laptop's sshd target is buffalo on the
    home LAN; the home box's is its own loopback, which moves with it."""
    moving_home = mover == "home"
    # The laptop's connected-socket lines (checked at the end) are debug lines.
    if not moving_home:
        os.environ["NATFWD_DEBUG"] = "1"
    lab.build([SiteSpec("a-eim", "eim", ("home",) if moving_home else ("home", "buffalo")),
               SiteSpec("b-eim", "eim", ("laptop",)),
               SiteSpec("c-sym", "symmetric", ())])
    hs, bs, cs = lab.sites["a-eim"], lab.sites["b-eim"], lab.sites["c-sym"]
    if moving_home:
        sshd = lab.start_sshd(hs, role="home", listen_ip="127.0.0.1")
        target, client_ip, server_ip = f"127.0.0.1:{L.SSHD_PORT}", "127.0.0.1", "127.0.0.1"
    else:
        sshd = lab.start_sshd(hs)
        target = f"{hs.ip['buffalo']}:{L.SSHD_PORT}"
        client_ip, server_ip = hs.ip["home"], hs.ip["buffalo"]
    t = Tunnels(lab, workdir)
    t.start_relay()
    serving = t.start_serving(hs, target)
    fwd, port = t.start_forward(bs, target)
    path, _, line = t.wait_path(fwd, "home", PATH_TIMEOUT)
    print(f"at the start: path home: {path}")
    netns = bs.ns["laptop"]
    master, control = t.open_master(netns, sshd, port)
    t.check_command(netns, sshd, port, control, client_ip, server_ip)

    start_site = hs if moving_home else bs
    rows = []
    for moves, (to_site, expect) in enumerate(((cs, "relayed"), (start_site, "direct")), 1):
        from_site = start_site if to_site is cs else cs
        t0 = time.monotonic()
        address = lab.move_host(mover, from_site, to_site)
        print(f"{mover} moved from {from_site.name} to {to_site.name} ({address})")
        recovery = wait_recovery(t, netns, sshd, port, t0)
        if moving_home:
            # Path lines come from the current tunnel and from a replaced one that still
            # carries the old ssh: wait until one of them reports the expected kind.
            seen = []
            while True:
                try:
                    path, _, line = t.wait_path(fwd, "home", PATH_TIMEOUT, start=line + 1)
                except Failure as e:
                    raise Failure(f"after home's move to {to_site.name} no {expect} path: "
                                  f"saw {seen}; {e}") from None
                seen.append(path)
                if path.startswith(expect):
                    break
            # Its old address gone, the serving peer's relay link had to be made again.
            again = [l for l in serving.stderr_lines if "registered again as home" in l]
            if len(again) < moves:
                raise Failure(f"the serving peer logged {len(again)} re-registrations after "
                              f"{moves} move(s)\n" + serving.describe())
        else:
            # One tunnel: its next path line is the one after the move.
            path, _, line = t.wait_path(fwd, "home", PATH_TIMEOUT, start=line + 1)
            if not path.startswith(expect):
                raise Failure(f"after the move to {to_site.name} the path should be "
                              f"{expect}, got {path!r}")
        # The ssh opened before the first move rides the same QUIC connection.
        if not master.running():
            raise Failure("the ssh opened before the move ended\n" + master.describe())
        t.check_command(netns, sshd, port, control, client_ip, server_ip)
        print(f"{mover} at {to_site.name}: new ssh works {recovery:.1f} s after the move; the "
              f"ssh from before the first move still works; path home: {path}")
        rows.append((f"{from_site.name} -> {to_site.name}", recovery, last_restart(fwd), path))
    # Copy through the ssh that has lived through both moves: still intact.
    rate = t.copy(netns, sshd, port, control)
    print(f"20 MB through the ssh opened before both moves: intact, {rate:.1f} MB/s")
    for p in (serving, fwd):
        p.check_running("after the moves")
    if not moving_home:
        check_connected_sockets(fwd)
    print(f"\n{'serving side roaming' if moving_home else 'roaming'}: move, time until a "
          f"new ssh works, ICE path restart, path afterwards")
    for move, recovery, restart, path in rows:
        print(f"  {move:<16} {recovery:5.1f} s   restart {restart:<8} {path}")
    return True


def check_connected_sockets(fwd: Proc) -> None:
    """The laptop read its first direct pair on a connected socket of its own, closed it
    when the path moved (relayed pairs stay on libnice), and read the direct pair it
    found on coming back on a new one."""
    opened = [m.group(1) for l in fwd.stderr_lines
              if (m := re.search(r"ice: reading pair (\S+ <- \S+) on a connected socket", l))]
    closed = {m.group(1): int(m.group(2)) for l in fwd.stderr_lines
              if (m := re.search(r"ice: connected socket of pair (\S+ <- \S+) closed after "
                                 r"(\d+) datagram", l))}
    if len(opened) < 2 or opened[0] == opened[-1]:
        raise Failure(f"the laptop's connected sockets: {opened}; expected one for the first "
                      "direct pair and another after coming back\n" + fwd.describe())
    if closed.get(opened[0], 0) == 0:
        raise Failure(f"the first pair's connected socket {opened[0]} was not closed after "
                      f"carrying datagrams: {closed}\n" + fwd.describe())
    print(f"laptop's connected sockets: {opened[0]} (closed after {closed[opened[0]]} "
          f"datagrams when the path moved), then {opened[-1]}")


def last_restart(fwd: Proc) -> str:
    """How long the -L peer's last path restart took, from its log ("-" if none)."""
    restarted = [l for l in fwd.stderr_lines if "path restarted in" in l]
    return restarted[-1].split("path restarted in ")[1].split(";")[0] if restarted else "-"


# -- peer netcheck -----------------------------------------------------------------------

# type -> (udp, mapping, filtering, tcp, proxy) as `peer netcheck --json` names them.
NETCHECK_EXPECT = {
    "none": (True, "no NAT", "endpoint-independent", True, None),
    "fullcone": (True, "endpoint-independent", "endpoint-independent", True, None),
    "eim": (True, "endpoint-independent", "address-and-port-dependent", True, None),
    "cgnat": (True, "endpoint-independent", "address-and-port-dependent", True, None),
    "symmetric": (True, "address-and-port-dependent", "address-and-port-dependent", True, None),
    "udpblock": (False, "unknown", "unknown", True, None),
    "proxyonly": (False, "unknown", "unknown", False, True),
}
# What coturn's natdiscovery prints, in peer netcheck's words.
NETCHECK_OF_DISCOVERY = {"EIM": "endpoint-independent", "ADM": "address-dependent",
                         "APDM": "address-and-port-dependent", "EIF": "endpoint-independent",
                         "ADF": "address-dependent", "APDF": "address-and-port-dependent"}


def netcheck_argv(t: "Tunnels", site: L.Site, json_out: bool) -> list[str]:
    args = t.peer_relay_args(site)
    return (["ip", "netns", "exec", site.ns["laptop"], t.natfwd.peer_bin, "netcheck",
             "--timeout", str(int(scaled(8)))] + args + (["--json"] if json_out else []))


def test_netcheck(lab: Lab, workdir: str, args) -> bool:
    del args
    import json
    lab.build([SiteSpec(site_name("b", t), t, ("laptop",)) for t in L.TYPES])
    sites = list(lab.sites.values())
    t = Tunnels(lab, workdir)
    relay, addr = t.start_relay(extra=["--alternate-address", L.RELAY_IP2])
    ready = " ".join(relay.stdout_lines)
    if "rfc5780 " + L.RELAY_IP2 not in ready:
        raise Failure(f"the relay's ready line does not name its alternate address: {ready!r}")
    ok = True
    # People's output first (it goes into the notes), all sites at once.
    running = [(s, subprocess.Popen(netcheck_argv(t, s, False), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, env=clean_env()))
               for s in sites]
    for site, p in running:
        out, _ = p.communicate(timeout=scaled(40))
        print(f"\n$ peer netcheck   # on the {site.nat} site (exit {p.returncode})")
        print(out.rstrip())
        want_exit = 0
        if p.returncode != want_exit:
            print(f"FAIL: exit {p.returncode}, want {want_exit}")
            ok = False
    # Scripts' output, checked.
    running = [(s, subprocess.Popen(netcheck_argv(t, s, True), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=clean_env()))
               for s in sites]
    print(f"\npeer netcheck --json against our relay ({addr}, alternate {L.RELAY_IP2}):")
    measured = {}
    for site, p in running:
        out, err = p.communicate(timeout=scaled(40))
        try:
            j = json.loads(out)
        except ValueError:
            print(f"  {site.nat:<10} FAIL: not JSON: {out!r} {err[-500:]}")
            ok = False
            continue
        measured[site.nat] = j
        got = (j["udp"], j["mapping"], j["filtering"], j["tcp"], j["proxy"])
        want = NETCHECK_EXPECT[site.nat]
        problems = [f"{k} {g!r}, want {w!r}" for k, g, w in
                    zip(("udp", "mapping", "filtering", "tcp", "proxy"), got, want) if g != w]
        if j["udp"] and site.nat != "none" and j["mapped_address"].split(":")[0] != site.public_ip \
                and site.public_ip:
            problems.append(f"mapped {j['mapped_address']}, want the NAT's {site.public_ip}")
        if j["upnp"] or j["natpmp"]:
            problems.append("a port-mapping gateway answered, but the lab has none")
        print(f"  {site.nat:<10} udp {str(j['udp']):<5} mapping {j['mapping']:<27} "
              f"filtering {j['filtering']:<27} tcp {str(j['tcp']):<5} "
              f"mapped {j['mapped_address'] or '-':<21} "
              f"{'ok' if not problems else 'FAIL: ' + '; '.join(problems)}")
        ok = ok and not problems
    # Interop: coturn's client against our relay sees what it sees against coturn.
    ours = run_discovery(lab, sites, L.RELAY_PORT)
    print_discovery(ours, "natfwd relay --alternate-address")
    theirs = run_discovery(lab, sites)
    print_discovery(theirs, "coturn")
    for a, b in zip(ours, theirs):
        if (a.mapping, a.filtering) != (b.mapping, b.filtering):
            print(f"FAIL: {a.nat}: our relay gives {a.mapping}/{a.filtering}, coturn "
                  f"{b.mapping}/{b.filtering}")
            ok = False
        mine = measured.get(a.nat)
        if mine and b.mapping != "-" and (
                NETCHECK_OF_DISCOVERY.get(b.mapping) != mine["mapping"] and
                not (b.mapping == "EIM" and mine["mapping"] == "no NAT")):
            print(f"FAIL: {a.nat}: peer netcheck says mapping {mine['mapping']}, coturn's "
                  f"client {b.mapping}")
            ok = False
    ok = ok and all(d.ok for d in ours)
    return test_netcheck_pairs(lab, t, workdir) and ok


# Two-sided verdicts: `peer netcheck home-X` from the laptop of site Y, against the
# lab's own rule for the pair (expected_path, which the matrix test checks with real
# tunnels).
NETCHECK_PAIRS = [("eim", "eim"), ("eim", "symmetric"), ("symmetric", "symmetric"),
                  ("eim", "udpblock"), ("none", "udpblock"), ("fullcone", "symmetric"),
                  ("eim", "proxyonly")]


def test_netcheck_pairs(lab: Lab, t: "Tunnels", workdir: str) -> bool:
    del workdir
    import json
    caller_state = t.natfwd.state_dir("netcheck-caller")
    caller_id = t.natfwd.key_id(caller_state)
    homes = {}
    for home_type in sorted({h for h, _ in NETCHECK_PAIRS}, key=ORDER.get):
        site = lab.sites[site_name("b", home_type)]
        name = f"home-{home_type}"
        argv = [t.natfwd.peer_bin, *t.peer_relay_args(site), "--name", name,
                "--serve", "2222:127.0.0.1:22", "--state-dir", t.natfwd.state_dir(name),
                "--allow", caller_id]
        p = lab.start(f"peer --serve ({name})", argv, site.ns["laptop"], echo=t.natfwd.echo,
                      env=clean_env())
        p.wait_stdout(rf"^registered as {name} at ", READY_TIMEOUT, what="serving peer ready")
        p.wait_stderr(r"netcheck: udp ", scaled(20), what=f"{name}'s own netcheck")
        homes[home_type] = p
    ok = True
    print("\nTwo-sided verdicts (peer netcheck NAME from the other site's host):")
    for home_type, laptop_type in NETCHECK_PAIRS:
        laptop = lab.sites[site_name("b", laptop_type)]
        name = f"home-{home_type}"
        base = netcheck_argv(t, laptop, False) + ["--state-dir", caller_state]
        text = subprocess.run(base + [name], capture_output=True, text=True,
                              timeout=scaled(40), env=clean_env())
        print(f"\n$ peer netcheck {name}   # on the {laptop_type} site (exit {text.returncode})")
        print(text.stdout.rstrip())
        r = subprocess.run(base + ["--json", name], capture_output=True, text=True,
                           timeout=scaled(40), env=clean_env())
        want = expected_path(home_type, laptop_type) if ORDER[home_type] <= ORDER[laptop_type] \
            else expected_path(laptop_type, home_type)
        allowed = {f"{want.kind} {tr}" for tr in want.transports}
        try:
            peer = json.loads(r.stdout)["peer"]
            got = peer["path"]
        except (ValueError, KeyError):
            got, peer = f"no verdict (exit {r.returncode}): {r.stdout} {r.stderr[-300:]}", {}
        good = r.returncode == 0 and text.returncode == 0 and got in allowed
        direct = want.kind == "direct"
        if peer and bool(peer["make_direct"]) == direct:
            good = False
            got += " (advice on making it direct does not fit)"
        print(f"  => {home_type} x {laptop_type}: {got}; lab rule: {want.text()} "
              f"{'ok' if good else 'FAIL'}")
        ok = ok and good
    for p in homes.values():
        p.check_running("after the netcheck queries")
    return ok


def test_several_relays(lab: Lab, workdir: str, args) -> bool:
    """Two relays (A and B, on the relay host's two addresses), peers given both. The
    tunnel is relayed (eim x symmetric) through the TURN server of one of them; that
    relay is killed: the open ssh carries on over a path restarted through the other,
    new connections work, and a new -L peer given the dead relay first connects
    through the live one."""
    del args
    lab.build([SiteSpec("a-eim", "eim", ("home", "buffalo")),
               SiteSpec("b-sym", "symmetric", ("laptop", "laptop2"))])
    hs, ls = lab.sites["a-eim"], lab.sites["b-sym"]
    sshd = lab.start_sshd(hs)
    t = Tunnels(lab, workdir)
    relay_a, addr_a = t.start_relay()
    argv_b = [t.natfwd.relay_bin, "--listen", f"{L.RELAY_IP2}:{L.RELAY_PORT}",
              "--state-dir", t.natfwd.state_dir("relay-b"),
              "--tls-listen", f"{L.RELAY_IP2}:{L.RELAY_TLS_PORT}"]
    relay_b = lab.start("relay B", argv_b, lab.relay_ns, echo=t.natfwd.echo, env=clean_env())
    addr_b = relay_b.wait_stdout(r"listening on (\S+) ", READY_TIMEOUT,
                                 what="relay B ready line").group(1)
    both = [addr_a, addr_b]
    buffalo = f"{hs.ip['buffalo']}:{L.SSHD_PORT}"
    serving = t.start_serving(hs, buffalo, extra=["--relay", addr_b])
    wait_until(lambda: sum(f"registered as home at {addr_b}" in l or
                           f"registered as home at {addr_a}" in l
                           for l in serving.stdout_lines + serving.stderr_lines) >= 2,
               scaled(20), "the serving peer registered at both relays")
    print(f"serving peer registered at {addr_a} and {addr_b}")
    fwd, port = t.start_forward(ls, buffalo, relays=both)
    path, _, line = t.wait_path(fwd, "home", PATH_TIMEOUT)
    print(f"path home: {path}")
    if not path.startswith("relayed"):
        raise Failure(f"eim x symmetric should be relayed, got {path!r}")
    # The tunnel was set up through whichever relay welcomed the -L peer first.
    through_b = L.RELAY_IP2 in path
    dead, dead_proc, live_ip = (addr_b, relay_b, L.RELAY_IP) if through_b else \
        (addr_a, relay_a, L.RELAY_IP2)
    live = addr_a if through_b else addr_b
    netns = ls.ns["laptop"]
    master, control = t.open_master(netns, sshd, port)
    t.check_command(netns, sshd, port, control, hs.ip["home"], hs.ip["buffalo"])

    dead_proc.stop(signal.SIGKILL)
    t0 = time.monotonic()
    print(f"relay {dead}, whose TURN carries the tunnel, killed: its allocations are gone")
    recovery = wait_recovery(t, netns, sshd, port, t0)
    path, _, line = t.wait_path(fwd, "home", PATH_TIMEOUT, start=line + 1)
    if live_ip not in path:
        raise Failure(f"after relay {dead} died the path should go through {live}, got {path!r}")
    if not master.running():
        raise Failure(f"the ssh opened through relay {dead} ended\n" + master.describe())
    t.check_command(netns, sshd, port, control, hs.ip["home"], hs.ip["buffalo"])
    print(f"new ssh works {recovery:.1f} s after relay {dead} died; the ssh opened before "
          f"still works; path home: {path}")

    # A new -L peer (the same, authorised identity) given the dead relay first.
    t1 = time.monotonic()
    fwd2, port2 = t.start_forward(ls, buffalo, role="laptop2", relays=[dead, live])
    recovery2 = wait_recovery(t, ls.ns["laptop2"], sshd, port2, t1)
    print(f"a new -L peer given the dead relay {dead} first: ssh works {recovery2:.1f} s "
          f"after its start")
    for p in (serving, fwd, fwd2):
        p.check_running("at the end")
    (relay_a if through_b else relay_b).check_running("at the end")
    return True


def test_multi_peer(lab: Lab, workdir: str, args) -> bool:
    """One laptop process (behind an EIM NAT) forwards to two serving peers at once:
    `home` behind another EIM NAT (direct udp path) and `office` behind a symmetric NAT
    (relayed over TURN UDP), started as `peer -L 0:buffalo:22 home -L 0:db:22 office`.
    Both ssh connections stay open side by side; each runs a command that shows it
    reached its own sshd and copies the 20 MB file intact."""
    del args
    lab.build([SiteSpec("a-eim", "eim", ("home", "buffalo")),
               SiteSpec("b-sym", "symmetric", ("office", "db")),
               SiteSpec("c-eim", "eim", ("laptop",))])
    hs, os_, ls = lab.sites["a-eim"], lab.sites["b-sym"], lab.sites["c-eim"]
    servers = {"home": (hs, "buffalo"), "office": (os_, "db")}
    sshds = {name: lab.start_sshd(site, role) for name, (site, role) in servers.items()}
    t = Tunnels(lab, workdir)
    t.start_relay()
    laptop_state = t.natfwd.state_dir("laptop")
    laptop_id = t.natfwd.key_id(laptop_state)
    targets = {name: f"{site.ip[role]}:{L.SSHD_PORT}" for name, (site, role) in servers.items()}
    for name, (site, _) in servers.items():
        argv = [t.natfwd.peer_bin, *t.peer_relay_args(site), "--name", name,
                "--serve", targets[name], "--state-dir", t.natfwd.state_dir(name),
                "--allow", laptop_id] + (["-v"] if VERBOSE else [])
        p = lab.start(f"peer --serve ({name}, {site.name})", argv, site.ns[name],
                      echo=t.natfwd.echo, env=clean_env())
        p.wait_stdout(rf"^registered as {name} at ", READY_TIMEOUT, what=f"{name} ready")
    argv = [t.natfwd.peer_bin, *t.peer_relay_args(ls), "--state-dir", laptop_state]
    argv += ["-v"] if VERBOSE else []
    for name in servers:
        argv += ["-L", f"0:{targets[name]}", name]
    fwd = lab.start(f"peer -L home -L office ({ls.name})", argv, ls.ns["laptop"],
                    echo=t.natfwd.echo, env=clean_env())
    ports = {}
    for name in servers:
        m = fwd.wait_stdout(rf"^listening on (\S+) -> {name} {re.escape(targets[name])}$",
                            READY_TIMEOUT, what=f"-L ready line for {name}")
        ports[name] = int(m.group(1).rpartition(":")[2])
    expect = {"home": "direct udp", "office": "relayed"}
    for name in servers:
        path, _, _ = t.wait_path(fwd, name, PATH_TIMEOUT)
        print(f"path {name}: {path}")
        if not path.startswith(expect[name]):
            raise Failure(f"{name}: expected a path '{expect[name]} ...', got {path!r}")
    netns = ls.ns["laptop"]
    masters = {}
    for name, (site, role) in servers.items():
        masters[name] = t.open_master(netns, sshds[name], ports[name])
    for name, (site, role) in servers.items():
        master, control = masters[name]
        t.check_command(netns, sshds[name], ports[name], control, site.ip[name], site.ip[role])
        rate = t.copy(netns, sshds[name], ports[name], control)
        print(f"ssh to {name} ({site.nat}): command and {FILE_BYTES} bytes intact, "
              f"{rate:.1f} MB/s")
    for name, (master, _) in masters.items():
        if not master.running():
            raise Failure(f"the ssh to {name} ended\n" + master.describe())
    fwd.check_running("at the end")
    return True


# -- port mapping ----------------------------------------------------------------------

MAPPED_PATH_RE = re.compile(r"^direct udp (host|srflx|prflx) \S+ <-> mapped (\S+):(\d+), "
                            r"rtt \d+ ms$")


def wait_no_mappings(lab: Lab, site: L.Site, what: str) -> None:
    def gone() -> bool:
        return not lab.port_mappings(site)
    try:
        wait_until(gone, 10, f"miniupnpd's mappings to go after {what}", interval=0.05)
    except Failure:
        raise Failure(f"after {what} miniupnpd still maps: {lab.port_mappings(site)}\n" +
                      (site.miniupnpd.describe(stderr_tail=20) if site.miniupnpd else ""))


def test_port_mapping(lab: Lab, workdir: str, args) -> bool:
    """symmetric x symmetric is relayed (the matrix says so); with miniupnpd in front of
    home, home's peer maps its port and the pair goes direct: with PCP (what it asks
    first), then with NAT-PMP alone and UPnP IGD alone (--port-mapping)."""
    del args
    lab.build([SiteSpec("a-portmap", "portmap", ("home", "buffalo")),
               SiteSpec("b-symmetric", "symmetric", ("laptop",))])
    hs, ls = lab.sites["a-portmap"], lab.sites["b-symmetric"]
    t = Tunnels(lab, workdir)
    sshd = lab.start_sshd(hs)
    relay, _ = t.start_relay()
    buffalo = f"{hs.ip['buffalo']}:{L.SSHD_PORT}"
    serving = t.start_serving(hs, buffalo)
    fwd, port = t.start_forward(ls, buffalo)
    path, at, _ = t.wait_path(fwd, "home", PATH_TIMEOUT)
    setup_ms = (at - fwd.started_at) * 1000
    print(f"portmap x symmetric: path home: {path} (setup {setup_ms:.0f} ms)")
    m = MAPPED_PATH_RE.match(path)
    if not m:
        raise Failure(f"the -L peer's path is not direct to a mapped candidate: {path!r}")
    if m.group(2) != hs.public_ip:
        raise Failure(f"mapped address {m.group(2)}, want the box's {hs.public_ip}")
    rules = lab.port_mappings(hs)
    if not any(f"dnat ip to {hs.ip['home']}:" in r for r in rules):
        raise Failure(f"miniupnpd holds no mapping to home {hs.ip['home']}: {rules}")
    print(f"miniupnpd in the box: {rules}")
    serving_path = wait_serving_path(serving)
    print(f"serving side: {serving_path}")
    if not serving_path.startswith(f"direct udp mapped {hs.public_ip}:{m.group(3)} <-> "):
        raise Failure(f"the serving peer's path does not say its mapping: {serving_path!r}")
    netns = ls.ns["laptop"]
    master, control = t.open_master(netns, sshd, port)
    t.check_command(netns, sshd, port, control, hs.ip["home"], hs.ip["buffalo"])
    mbps = t.copy(netns, sshd, port, control)
    print(f"20 MB through ssh over the mapped path: {mbps:.1f} MB/s")
    master.stop()
    fwd.stop()
    serving.stop()  # SIGTERM: the peer deletes its mappings on the way out
    wait_no_mappings(lab, hs, "the peers exited")
    print("after the peers exited: no mapping left in miniupnpd")
    # `peer netcheck` behind the same box asks for a mapping too, and says so.
    argv = ["ip", "netns", "exec", hs.ns["home"], t.natfwd.peer_bin, "netcheck",
            "--timeout", str(int(scaled(8))), *t.peer_relay_args(hs)]
    r = subprocess.run(argv, capture_output=True, text=True, env=clean_env(),
                       timeout=scaled(40))
    print(f"\n$ peer netcheck   # behind the portmap box (exit {r.returncode})")
    print(r.stdout.rstrip())
    if r.returncode != 0:
        raise Failure(f"netcheck exit {r.returncode}: {r.stderr[-800:]}")
    want = f"mapped pcp {hs.public_ip}:"
    if want not in r.stdout:
        raise Failure(f"netcheck does not report its mapping ({want!r})")
    if "reachability: direct with peers behind any NAT" not in r.stdout:
        raise Failure("netcheck's verdict does not count the mapping")
    wait_no_mappings(lab, hs, "netcheck exited")
    # The same box also speaks NAT-PMP and UPnP IGD, but answers PCP first, so those two
    # are reached only when the peer is told to ask with them alone.
    for protocol in ("nat-pmp", "upnp"):
        # A fresh relay: the name home is bound to the key of the home before.
        relay.stop()
        relay, _ = t.start_relay()
        serving = t.start_serving(hs, buffalo, extra=["--port-mapping", protocol])
        if protocol == "upnp":
            # UPnP discovery outlasts a tunnel's wait for its mapping; the serving peer
            # finds the gateway once, at start, and says so.
            serving.wait_stderr(r"port mapping: found the UPnP gateway at ", READY_TIMEOUT,
                                what="UPnP gateway found")
        fwd, port = t.start_forward(ls, buffalo)
        path, at, _ = t.wait_path(fwd, "home", PATH_TIMEOUT)
        print(f"\nhome with --port-mapping {protocol}: path home: {path} "
              f"(setup {(at - fwd.started_at) * 1000:.0f} ms)")
        m = MAPPED_PATH_RE.match(path)
        if not m or m.group(2) != hs.public_ip:
            raise Failure(f"--port-mapping {protocol}: not direct to a mapped candidate at "
                          f"{hs.public_ip}: {path!r}")
        said = [l for l in serving.stderr_lines if "port mapping: " in l]
        if not any(f"port mapping: {protocol} maps " in l and f"{hs.public_ip}:{m.group(3)}" in l
                   for l in said):
            raise Failure(f"--port-mapping {protocol}: the serving peer does not say which "
                          f"protocol mapped {hs.public_ip}:{m.group(3)}: {said}")
        print(said[-1])
        rules = lab.port_mappings(hs)
        if not any(f"dnat ip to {hs.ip['home']}:" in r for r in rules):
            raise Failure(f"--port-mapping {protocol}: miniupnpd holds no mapping: {rules}")
        master, control = t.open_master(ls.ns["laptop"], sshd, port)
        t.check_command(ls.ns["laptop"], sshd, port, control, hs.ip["home"], hs.ip["buffalo"])
        master.stop()
        fwd.stop()
        serving.stop()
        wait_no_mappings(lab, hs, f"the peers with --port-mapping {protocol} exited")
        print(f"after the peers exited: no {protocol} mapping left in miniupnpd")
    return True


def test_port_mapping_bad_gateway(lab: Lab, workdir: str, args) -> bool:
    """A gateway whose port-mapping service answers garbage, or lies (a PCP/NAT-PMP
    mapping to an address nothing forwards from): symmetric x symmetric still ends
    relayed as the matrix says, in about the same time, over a tunnel that works; the
    serving peer (-v) says what the gateway answered."""
    del args
    lab.build([SiteSpec("a-symmetric", "symmetric", ("home", "buffalo")),
               SiteSpec("b-symmetric", "symmetric", ("laptop",))])
    hs, ls = lab.sites["a-symmetric"], lab.sites["b-symmetric"]
    t = Tunnels(lab, workdir)
    sshd = lab.start_sshd(hs)
    buffalo = f"{hs.ip['buffalo']}:{L.SSHD_PORT}"
    claim = "203.0.113.99"
    ok = True
    for mode, said in (
            ("garbage", r"port mapping of \S+: "),
            ("lie", rf"port mapping: (pcp|nat-pmp) maps \S+ to {re.escape(claim)}:\d+")):
        with pair_processes(lab):
            gateway = lab.start(f"fake gateway ({mode})", [
                sys.executable, os.path.join(HERE, "fake_gateway.py"), "--listen",
                hs.gateway, "--mode", mode, "--claim", claim], hs.box_ns)
            gateway.wait_stdout(r"^listening on ", READY_TIMEOUT, what="fake gateway ready")
            # A fresh relay each time: the name home is bound to the key of the home before.
            t.start_relay()
            serving = t.start_serving(hs, buffalo, extra=["-v"])
            fwd, port = t.start_forward(ls, buffalo)
            path, at, _ = t.wait_path(fwd, "home", PATH_TIMEOUT)
            setup_ms = (at - fwd.started_at) * 1000
            print(f"gateway answering {mode}: path home: {path} (setup {setup_ms:.0f} ms)")
            problems = check_path(expected_path("symmetric", "symmetric"), path,
                                  wait_serving_path(serving), hs, ls)
            if claim in path:
                problems.append(f"the path uses the mapping the gateway lied about: {path!r}")
            asked = [l for l in gateway.stdout_lines if " request from " in l]
            if not asked:
                problems.append("the serving peer never asked the gateway for a mapping")
            serving.wait_stderr(said, PATH_TIMEOUT, what=f"the {mode} answer said")
            line = next(l for l in serving.stderr_lines if re.search(said, l))
            print(f"  the gateway: {asked[0] if asked else '(not asked)'}")
            print(f"  the serving peer: {line.strip()}")
            netns = ls.ns["laptop"]
            master, control = t.open_master(netns, sshd, port)
            t.check_command(netns, sshd, port, control, hs.ip["home"], hs.ip["buffalo"])
            master.stop()
            if problems:
                log(f"FAIL gateway answering {mode}: {'; '.join(problems)}")
                ok = False
    return ok


TESTS = {
    "discovery": test_discovery,
    "netcheck": test_netcheck,
    "matrix": test_matrix,
    "same-lan": test_same_lan,
    "relay-restart": test_relay_restart,
    "roam": test_roam,
    "roam-home": test_roam_home,
    "several-relays": test_several_relays,
    "multi-peer": test_multi_peer,
    "port-mapping": test_port_mapping,
    "port-mapping-bad-gateway": test_port_mapping_bad_gateway,
}


def main(tests: Optional[dict] = None) -> int:
    """Runs one test of `tests` (default: this file's TESTS) in a fresh lab."""
    tests = tests or TESTS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("test", choices=sorted(tests))
    ap.add_argument("--pairs", default=os.environ.get("LAB_PAIRS", ""),
                    help="matrix subset, e.g. eim:eim,none:udpblock (default: all 28)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    args = ap.parse_args()

    why = L.lab_preflight()
    if why:
        print(f"SKIP: {why}")
        return SKIP
    relay_bin, peer_bin = find_binaries()
    for path in (relay_bin, peer_bin):
        if not os.access(path, os.X_OK):
            print(f"SKIP: {path} is not built yet")
            return SKIP
    L.install_signal_handlers()
    delay = L.parse_duration_ms(os.environ.get("LAB_DELAY", ""))
    loss = L.parse_ratio(os.environ.get("LAB_LOSS", ""))
    workdir = tempfile.mkdtemp(prefix="natfwd-lab-")
    os.chmod(workdir, 0o755)
    lab = Lab(workdir, delay_ms=delay, loss=loss, nfq_delay=L.find_nfq_delay())
    t0 = time.monotonic()
    ok = False
    try:
        ok = tests[args.test](lab, workdir, args)
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        for p in lab.group.procs:
            if p.name.startswith(("peer", "relay", "squid", "coturn")):
                log(p.describe(stderr_tail=20))
    except KeyboardInterrupt as e:
        print(f"interrupted ({e}); tearing the lab down", file=sys.stderr)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
    finally:
        lab.close()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{'PASS' if ok else 'FAIL'}: lab {args.test} ({time.monotonic() - t0:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

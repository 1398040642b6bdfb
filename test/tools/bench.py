#!/usr/bin/env python3
"""natfwd benchmark: one table, side by side (run through scripts/bench).

Throughput of one BENCH_BYTES transfer (default 1 GB, capped at BENCH_MAX_SECONDS per
cell) through natfwd, through `ssh -L` (aes128-gcm) and over plain kernel TCP
(CUBIC and BBR), on loopback and between two network namespaces joined by a veth pair:
raw, 20 ms RTT, and 20 ms RTT + 0.5 % loss each way. Plus setup latencies, and natfwd
forced through the relay's TURN server (both peers --force-relay --turn-transport udp,
resp. tcp; a second relay with --allow-peer for loopback and the veth subnet): a cell
only gets a number if the -L peer's path line says `relayed via turn-T`.

The kernel here has no netem: delay is test/tools/nfq_delay holding each packet arriving
in a namespace for 10 ms (NFQUEUE in mangle/PREROUTING, fail-open, --queue-bypass), loss
is `iptables -m statistic --mode random --probability 0.005 -j DROP` before it. GSO
(UDP's too), TSO and GRO are off on the veth pair, so each emulated packet is one wire
packet.

Everything runs on loopback or in the namespaces created here, which are deleted at the
end with everything in them; every process is ours and stopped by PID. No pass/fail: the
targets are printed next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import shutil
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from procs import Failure, Natfwd, Proc, ProcGroup, wait_until  # noqa: E402
from sshd_inetd import ThrowawaySshd, have_ssh_tools, ssh_argv  # noqa: E402

XFER = os.path.join(HERE, "xfer.py")
SSHD_TOOL = os.path.join(HERE, "sshd_inetd.py")
NA = None
NS_SUBNET = "198.51.100.0/24"  # the veth pair's addresses (make_namespaces)
RELAYED = ("udp", "tcp")  # --turn-transport of the "natfwd relayed" rows


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def run(argv, netns=None, check=True, **kw):
    if netns:
        argv = ["ip", "netns", "exec", netns] + list(argv)
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)


class Env:
    """Where a column runs: `a` is the connecting side, `b` the serving side."""

    def __init__(self, name, ns_a=None, ns_b=None, addr_a="127.0.0.1", addr_b="127.0.0.1"):
        self.name = name
        self.ns_a, self.ns_b = ns_a, ns_b
        self.addr_a, self.addr_b = addr_a, addr_b


class Bench:
    def __init__(self, args):
        self.args = args
        self.bytes = int(float(os.environ.get("BENCH_BYTES", 1e9)))
        self.max_seconds = float(os.environ.get("BENCH_MAX_SECONDS", 20))
        # Optional subsets, for iterating on one cell, e.g. BENCH_COLUMNS=20ms
        # BENCH_ROWS=natfwd,ssh (columns: loopback, veth, 20ms, 20ms+loss; rows: tcp, ssh,
        # natfwd, turn-udp, turn-tcp).
        self.only_columns = set(filter(None, os.environ.get("BENCH_COLUMNS", "").split(",")))
        self.only_rows = set(filter(None, os.environ.get("BENCH_ROWS", "").split(",")))
        self.group = ProcGroup()
        self.tmp = tempfile.mkdtemp(prefix="natfwd-bench-")
        self.netns: list[str] = []
        self.sysctl_restore: list[tuple[str, str]] = []
        self.results: dict[tuple[str, str], object] = {}
        self.notes: list[str] = []
        self.relay_bin = os.path.join(args.build, "relay", "relay")
        self.peer_bin = os.path.join(args.build, "peer", "peer")
        self.nfq_delay = os.path.join(args.build, "test", "tools", "nfq_delay")
        self.have_natfwd = os.access(self.relay_bin, os.X_OK) and os.access(self.peer_bin, os.X_OK)
        self.have_ssh = have_ssh_tools()
        self.cc_available = open("/proc/sys/net/ipv4/tcp_available_congestion_control").read().split()

    # -- plumbing ------------------------------------------------------------------

    def cleanup(self):
        self.group.stop_all()
        for ns in self.netns:
            run(["ip", "netns", "del", ns], check=False)
        for key, value in self.sysctl_restore:
            run(["sysctl", "-q", "-w", f"{key}={value}"], check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def make_namespaces(self) -> Env:
        tag = f"nfb{os.getpid() % 100000}"
        a, b = f"{tag}a", f"{tag}b"
        for ns in (a, b):
            run(["ip", "netns", "add", ns])
            self.netns.append(ns)
            run(["ip", "link", "set", "lo", "up"], netns=ns)
        run(["ip", "link", "add", f"{tag}va", "type", "veth", "peer", "name", f"{tag}vb"])
        run(["ip", "link", "set", f"{tag}va", "netns", a])
        run(["ip", "link", "set", f"{tag}vb", "netns", b])
        self.veth = {a: f"{tag}va", b: f"{tag}vb"}
        for ns, addr in ((a, "198.51.100.1/24"), (b, "198.51.100.2/24")):
            dev = self.veth[ns]
            run(["ip", "addr", "add", addr, "dev", dev], netns=ns)
            run(["ip", "link", "set", dev, "up"], netns=ns)
            # No segmentation offload on the veth: TCP and UDP senders still build large
            # (GSO) packets and pace them as with a real NIC, but they are cut into
            # wire-sized packets before the veth, so delay and loss apply per packet as on
            # a real link. A UDP GSO send (natfwd's batched datagrams) crosses a veth
            # whole unless tx-udp-segmentation is off too: then one drop would take a
            # whole batch, and count once.
            r = run(["ethtool", "-K", dev, "gso", "off", "tso", "off", "gro", "off",
                     "tx-udp-segmentation", "off"], netns=ns, check=False)
            if r.returncode != 0:
                self.notes.append("could not turn segmentation offload off on the veth pair "
                                  "(ethtool): loss then hits whole 64 KB bursts")
        env = Env("veth", a, b, "198.51.100.1", "198.51.100.2")
        self.set_default_cc(a, "cubic")
        self.set_default_cc(b, "cubic")
        return env

    def set_default_cc(self, ns, cc):
        """The namespace default (used by ssh) -> CUBIC, as on most machines. A namespace
        may only pick an 'allowed' algorithm; if CUBIC is not, it is allowed for the moment
        it takes to set (the old list is put back at once)."""
        key = "net.ipv4.tcp_congestion_control"
        if run(["sysctl", "-q", "-w", f"{key}={cc}"], netns=ns, check=False).returncode == 0:
            return
        allowed_key = "net.ipv4.tcp_allowed_congestion_control"
        old = run(["sysctl", "-n", allowed_key]).stdout.strip()
        run(["sysctl", "-q", "-w", f"{allowed_key}={old} {cc}"], check=False)
        ok = run(["sysctl", "-q", "-w", f"{key}={cc}"], netns=ns, check=False).returncode == 0
        run(["sysctl", "-q", "-w", f"{allowed_key}={old}"], check=False)
        if not ok:
            self.notes.append(f"could not make {cc} the namespace default; ssh used "
                              + run(["sysctl", "-n", key], netns=ns).stdout.strip())

    def emulate(self, env: Env, delay_ms: float, loss: float) -> bool:
        """Sets delay (each way) and loss on both namespaces; returns False if impossible."""
        for ns in (env.ns_a, env.ns_b):
            run(["iptables", "-t", "mangle", "-F", "PREROUTING"], netns=ns, check=False)
        for p in getattr(self, "delay_procs", []):
            p.stop()
        self.delay_procs = []
        if delay_ms <= 0 and loss <= 0:
            return True
        for ns in (env.ns_a, env.ns_b):
            dev = self.veth[ns]
            if loss > 0:
                r = run(["iptables", "-t", "mangle", "-A", "PREROUTING", "-i", dev, "-m",
                         "statistic", "--mode", "random", "--probability", str(loss),
                         "-j", "DROP"], netns=ns, check=False)
                if r.returncode != 0:
                    self.notes.append(f"loss emulation failed: {r.stderr.strip()}")
                    return False
            if delay_ms > 0:
                if not os.access(self.nfq_delay, os.X_OK):
                    self.notes.append("nfq_delay not built (libnetfilter-queue-dev missing)")
                    return False
                r = run(["iptables", "-t", "mangle", "-A", "PREROUTING", "-i", dev, "-j",
                         "NFQUEUE", "--queue-num", "0", "--queue-bypass"], netns=ns, check=False)
                if r.returncode != 0:
                    self.notes.append(f"NFQUEUE rule failed: {r.stderr.strip()}")
                    return False
                p = self.group.start(f"nfq_delay {ns}", [self.nfq_delay, "--queue", "0",
                                     "--delay-ms", str(delay_ms)], netns=ns)
                p.wait_stdout("ready", 10, what="nfq_delay")
                self.delay_procs.append(p)
        return True

    # -- measurements --------------------------------------------------------------

    def ping_ms(self, env: Env):
        r = run(["ping", "-U", "-q", "-c", "10", "-i", "0.2", env.addr_b], netns=env.ns_a,
                check=False)
        m = re.search(r"= [\d.]+/([\d.]+)/", r.stdout)
        return float(m.group(1)) if m else NA

    def start_target(self, env: Env) -> tuple[Proc, str]:
        p = self.group.start("target", ["python3", XFER, "serve", "--listen",
                                        f"{env.addr_b}:0"], netns=env.ns_b)
        return p, p.wait_stdout(r"^listening on (\S+)", 10, what="xfer target").group(1)

    def xfer(self, env: Env, addr: str, cc=None):
        argv = ["python3", XFER, "send", "--connect", addr, "--bytes", str(self.bytes),
                "--max-seconds", str(self.max_seconds)]
        if cc:
            argv += ["--cc", cc]
        try:
            r = run(argv, netns=env.ns_a, timeout=self.max_seconds * 6 + 60)
        except subprocess.TimeoutExpired:
            return "timeout"
        except subprocess.CalledProcessError as e:
            last = (e.stderr or "").strip().splitlines()[-1:] or [str(e)]
            self.notes.append(f"transfer to {addr} failed: {last[0]}")
            return "failed"
        j = json.loads(r.stdout.strip().splitlines()[-1])
        return (j["mbps"], j["capped"])

    def probe(self, env: Env, addr: str, count: int):
        r = run(["python3", XFER, "probe", "--connect", addr, "--count", str(count)],
                netns=env.ns_a, timeout=120)
        return json.loads(r.stdout.strip().splitlines()[-1])["median_ms"]

    def measure_tcp(self, env, col, target_addr):
        for cc in ("cubic", "bbr"):
            if cc not in self.cc_available:
                self.results[(f"tcp_{cc}", col)] = NA
                continue
            log(f"{col}: TCP {cc}")
            self.results[(f"tcp_{cc}", col)] = self.xfer(env, target_addr, cc)
        self.results[("tcp_connect", col)] = self.probe(env, target_addr, 20)

    def measure_ssh(self, env, col, target_addr, sshd):
        if not self.have_ssh:
            self.results[("ssh", col)] = NA
            return
        log(f"{col}: ssh -L")
        sock = os.path.join(self.tmp, f"ssh-{len(self.group.procs)}.sock")
        argv = ssh_argv(sshd["key"], sshd["user"], sshd["host"], sshd["port"],
                        extra=("-N", "-c", "aes128-gcm@openssh.com", "-o", "Compression=no",
                               "-o", "ExitOnForwardFailure=yes", "-L", f"{sock}:{target_addr}"))
        p = self.group.start("ssh -L", argv, netns=env.ns_a)
        try:
            wait_until(lambda: os.path.exists(sock) or not p.running(), 30, "ssh -L socket")
            if not p.running():
                raise Failure("ssh -L exited\n" + p.describe())
            self.results[("ssh", col)] = self.xfer(env, sock)
        finally:
            p.stop()
            if os.path.exists(sock):
                os.unlink(sock)

    def measure_natfwd(self, env, col, target_addr, relay_addr, natfwd):
        if not self.have_natfwd:
            for row in ("natfwd", "first_byte", "new_conn"):
                self.results[(row, col)] = "not built"
            return
        log(f"{col}: natfwd")
        extra = ["--ice-address", env.addr_a] if env.ns_a else []
        t0 = time.monotonic()
        fwd, (laddr,) = natfwd.forward(relay_addr, "bench", [f"0:{target_addr}"],
                                       extra=extra, netns=env.ns_a)
        try:
            # First byte: connect as soon as the -L line is there; retry if refused.
            first = None
            deadline = time.monotonic() + 30
            while first is None and time.monotonic() < deadline:
                try:
                    r = run(["python3", XFER, "probe", "--connect", laddr, "--count", "1",
                             "--timeout", "30"], netns=env.ns_a, timeout=60)
                    first = json.loads(r.stdout.strip().splitlines()[-1])
                except (subprocess.CalledProcessError, ValueError):
                    pass
            if first is None:
                raise Failure("no first byte through natfwd\n" + fwd.describe())
            # The target's own record of when the byte arrived (same monotonic clock).
            tgt = self.target_proc

            def arrivals():
                out = []
                for line in list(tgt.stdout_lines):
                    if line.startswith("{") and '"mode": "E"' in line:
                        t = json.loads(line)["first_byte"]
                        if t >= t0:
                            out.append(t)
                return out

            wait_until(lambda: bool(arrivals()), 10, "the target's record of the first byte")
            arrived = min(arrivals())
            path_ms = NA
            for i, line in enumerate(fwd.stdout_lines):
                if line.startswith("path "):
                    path_ms = (fwd.line_times[i] - t0) * 1000
                    self.results[("path", col)] = line
                    break
            self.results[("first_byte", col)] = ((arrived - t0) * 1000, path_ms)
            self.results[("new_conn", col)] = self.probe(env, laddr, 20)
            self.results[("natfwd", col)] = self.xfer(env, laddr)
            if self.results[("natfwd", col)] == "failed":
                for line in fwd.stderr_lines[-3:]:
                    self.notes.append(f"{col}: -L peer said: {line}")
            fwd.check_running("after the transfer")
        finally:
            fwd.stop()

    def measure_natfwd_relayed(self, env, col, target_addr, relayed, transport):
        """One transfer with both peers forced onto the relay's TURN over `transport`;
        the cell is an error unless the -L peer's path line says so."""
        row = f"natfwd_turn_{transport}"
        if not self.have_natfwd:
            self.results[(row, col)] = "not built"
            return
        if not relayed:
            self.results[(row, col)] = "no relay"
            return
        relay_addr, natfwd = relayed
        log(f"{col}: natfwd relayed (TURN {transport})")
        name = f"bench-{transport}"
        extra = ["--force-relay", "--turn-transport", transport]
        if env.ns_a:
            extra += ["--ice-address", env.addr_a]
        fwd, (laddr,) = natfwd.forward(relay_addr, name, [f"0:{target_addr}"],
                                       extra=extra, netns=env.ns_a)
        try:
            try:
                m = fwd.wait_stdout(rf"^path {re.escape(name)}: (.*)$", 30,
                                    what=f"path line (TURN {transport})")
            except Failure as e:
                self.results[(row, col)] = "no path"
                self.notes.append(f"{col} relayed {transport}: {str(e).splitlines()[0]}")
                return
            path = m.group(1)
            self.results[(f"path_turn_{transport}", col)] = m.group(0)
            if not path.startswith(f"relayed via turn-{transport} "):
                self.results[(row, col)] = "NOT RELAYED"
                self.notes.append(f"{col} relayed {transport}: expected 'relayed via "
                                  f"turn-{transport} ...', got: {path}")
                return
            self.results[(row, col)] = self.xfer(env, laddr)
            if self.results[(row, col)] == "failed":
                for line in fwd.stderr_lines[-3:]:
                    self.notes.append(f"{col} relayed {transport}: -L peer said: {line}")
            fwd.check_running("after the transfer")
        finally:
            fwd.stop()

    def column(self, env: Env, col: str, delay_ms: float, loss: float, services):
        if env.ns_a and not self.emulate(env, delay_ms, loss):
            for row in ROWS:
                self.results[(row[0], col)] = "n/a"
            return
        self.results[("rtt", col)] = self.ping_ms(env)
        target_addr = services["target"]
        for name, fn in (("tcp", lambda: self.measure_tcp(env, col, target_addr)),
                         ("ssh", lambda: self.measure_ssh(env, col, target_addr,
                                                          services["sshd"])),
                         ("natfwd", lambda: self.measure_natfwd(env, col, target_addr,
                                                                services["relay"],
                                                                services["natfwd"])),
                         *((f"natfwd relayed {t}",
                            lambda t=t: self.measure_natfwd_relayed(env, col, target_addr,
                                                                    services["relayed"], t))
                           for t in RELAYED)):
            # BENCH_ROWS names: tcp, ssh, natfwd, turn-udp, turn-tcp
            if self.only_rows and name.replace("natfwd relayed ", "turn-") not in self.only_rows:
                continue
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - one failed cell must not end the bench
                log(f"{col}: {name} failed: {e}")
                self.notes.append(f"{col} {name}: {str(e).splitlines()[0]}")

    def services(self, env: Env, label: str):
        """Target, sshd, relay and serving peer for one environment (B side)."""
        target, target_addr = self.start_target(env)
        self.target_proc = target
        s = {"target": target_addr, "sshd": None, "relay": None, "natfwd": None,
             "relayed": None}
        if self.have_ssh:
            d = os.path.join(self.tmp, f"sshd-{label}")
            os.mkdir(d, 0o700)
            p = self.group.start("sshd", ["python3", SSHD_TOOL, "--dir", d, "--listen",
                                          f"{env.addr_b}:0"], netns=env.ns_b)
            host, port = p.wait_stdout(r"^listening on (\S+):(\d+)", 20, what="sshd").groups()
            user, key = p.wait_stdout(r"^user (\S+) key (\S+)", 20, what="sshd").groups()
            s["sshd"] = {"host": host, "port": int(port), "user": user, "key": key}
        if self.have_natfwd:
            state = os.path.join(self.tmp, f"natfwd-{label}")
            os.mkdir(state, 0o700)
            natfwd = Natfwd(self.group, state, self.relay_bin, self.peer_bin)
            try:
                _, relay_addr = natfwd.relay(listen=f"{env.addr_b}:0", netns=env.ns_b)
                extra = ["--ice-address", env.addr_b] if env.ns_b else []
                natfwd.serve(relay_addr, "bench", [target_addr], extra=extra, netns=env.ns_b)
                s["relay"], s["natfwd"] = relay_addr, natfwd
            except Failure as e:
                log(f"natfwd did not start: {e}")
                self.notes.append(f"{label}: natfwd did not start: {str(e).splitlines()[0]}")
                self.have_natfwd = False
        if self.have_natfwd:
            # A second relay, allowed to relay to loopback and the veth subnet (its own
            # addresses are denied by default), and one serving peer per TURN transport,
            # forced onto it. The direct row's relay and peers stay as they were.
            state = os.path.join(self.tmp, f"natfwd-{label}-relayed")
            os.mkdir(state, 0o700)
            natfwd = Natfwd(self.group, state, self.relay_bin, self.peer_bin)
            try:
                _, relay_addr = natfwd.relay(listen=f"{env.addr_b}:0", netns=env.ns_b,
                                             extra=["--allow-peer", "127.0.0.0/8",
                                                    "--allow-peer", NS_SUBNET])
                for t in RELAYED:
                    extra = ["--force-relay", "--turn-transport", t]
                    if env.ns_b:
                        extra += ["--ice-address", env.addr_b]
                    natfwd.serve(relay_addr, f"bench-{t}", [target_addr], extra=extra,
                                 netns=env.ns_b)
                s["relayed"] = (relay_addr, natfwd)
            except Failure as e:
                log(f"relayed natfwd did not start: {e}")
                self.notes.append(f"{label}: relayed natfwd did not start: "
                                  f"{str(e).splitlines()[0]}")
        return s

    def run(self):
        cols = []
        lo = Env("loopback")
        log(f"transfer size {self.bytes / 1e6:.0f} MB, at most {self.max_seconds:.0f} s each")
        if self.wants("loopback"):
            cols.append("loopback")
            self.column(lo, "loopback", 0, 0, self.services(lo, "lo"))
        if os.geteuid() != 0:
            self.notes.append("not root: no network namespaces, loopback only")
        else:
            env = self.make_namespaces()
            svc = self.services(env, "ns")
            for col, delay, loss in (("veth", 0, 0), ("20ms", 10, 0), ("20ms+loss", 10, 0.005)):
                if not self.wants(col):
                    continue
                cols.append(col)
                self.column(env, col, delay, loss, svc)
            self.emulate(env, 0, 0)
        self.print_table(cols)

    def wants(self, col: str) -> bool:
        return not self.only_columns or col in self.only_columns

    # -- output --------------------------------------------------------------------

    def cell(self, row, col):
        v = self.results.get((row, col), "-")
        if v is NA:
            return "n/a"
        if isinstance(v, str):
            return v
        if isinstance(v, tuple) and row == "first_byte":
            first, path = v
            return f"{first:.0f}" + (f" (path {path:.0f})" if path is not NA else "")
        if isinstance(v, tuple):
            mbps, capped = v
            return f"{mbps:.1f}" + ("*" if capped else "")
        if isinstance(v, float):
            return f"{v:.1f}"
        return str(v)

    def print_table(self, cols):
        headers = {"loopback": "loopback", "veth": "veth", "20ms": "20 ms RTT",
                   "20ms+loss": "20 ms + 0.5% loss"}
        lines = [["", *[headers[c] for c in cols], "target"]]
        for key, label, target in ROWS:
            lines.append([label, *[self.cell(key, c) for c in cols], target])
        widths = [max(len(l[i]) for l in lines) for i in range(len(lines[0]))]
        out = []
        for i, l in enumerate(lines):
            out.append("  ".join(v.ljust(widths[j]) if j == 0 else v.rjust(widths[j])
                                 if j < len(l) - 1 else v for j, v in enumerate(l)))
            if i == 0:
                out.append("-" * len(out[0]))
        print()
        print(f"natfwd bench: {self.bytes / 1e6:.0f} MB per transfer (* = stopped after "
              f"{self.max_seconds:.0f} s), MB/s = 10^6 bytes/s, times in ms")
        print("\n".join(out))
        for col in cols:
            path = self.results.get(("path", col))
            if path:
                print(f"{col}: {path}")
        for t in RELAYED:
            for col in cols:
                path = self.results.get((f"path_turn_{t}", col))
                if path:
                    print(f"{col} (TURN {t}): {path}")
        for n in dict.fromkeys(self.notes):
            print(f"note: {n}")
        print("delay: NFQUEUE (test/tools/nfq_delay), 10 ms each way; loss: iptables "
              "statistic 0.5 % each way; GSO, UDP GSO, TSO and GRO off on the veth pair")
        print("first byte: from `peer -L` start to the byte's arrival at the target "
              "(path = when the -L peer printed its path line, about ICE ready)")


ROWS = [
    ("natfwd", "natfwd (QUIC over ICE) MB/s", "20 ms: >= 3x ssh -L; loss: >= 50x ssh, >= TCP BBR"),
    *((f"natfwd_turn_{t}", f"natfwd relayed (TURN {t}) MB/s", "") for t in RELAYED),
    ("ssh", "ssh -L aes128-gcm MB/s", ""),
    ("tcp_cubic", "plain TCP CUBIC MB/s", ""),
    ("tcp_bbr", "plain TCP BBR MB/s", ""),
    ("first_byte", "natfwd first byte ms", "<= ICE ready + 2 RTT"),
    ("new_conn", "natfwd new connection ms", "one RTT (no new ICE)"),
    ("tcp_connect", "TCP connect+echo ms", "2 RTT (reference)"),
    ("rtt", "ping RTT ms", ""),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    args = ap.parse_args()
    b = Bench(args)
    try:
        b.run()
    except KeyboardInterrupt:
        return 130
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        return 1
    finally:
        b.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

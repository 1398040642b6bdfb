#!/usr/bin/env python3
"""Publishing bench: a home web server's large file downloaded by a visitor through
natfwd's front door (`peer --publish http:`) and through `ssh -g -R` to the same relay
host, over the same NAT lab path (run through `scripts/bench publish`; root only).

    visitor (internet) --- router --- relay host --- router --- home NAT (eim) --- home

The lab's router holds every packet 10 ms (test/tools/nfq_delay; this kernel has no
netem), so visitor <-> relay and relay <-> home are 20 ms RTT each (40 ms end to end),
and with loss drops 0.5 % of the packets crossing it (nft numgen), on both legs. GSO,
TSO and GRO are off on every lab link, so a lost packet is one wire packet.

- natfwd: `relay --publish-http 203.0.113.10:80`, home `peer --publish http:PORT`
  (restarted for each row, as ssh is: a fresh tunnel); the
  front door reaches home by ICE (direct UDP through the eim NAT) and QUIC (ngtcp2's
  BBR); the visitor's TCP connection ends at the relay.
- ssh: a real sshd in the relay's namespace with GatewayPorts yes; home runs
  `ssh -N -R 0.0.0.0:8080:127.0.0.1:PORT` (aes128-gcm, ssh's fastest cipher here); the
  visitor fetches http://203.0.113.10:8080/. Every byte crosses two kernel TCP
  connections: home -> relay (inside ssh) and relay -> visitor.

Each cell: one download of BENCH_BYTES (default 1 GB, a sparse file) with curl, capped at
BENCH_MAX_SECONDS (default 10), repeated BENCH_REPEAT times (default 1; the cell shows
each figure, so a tunnel that slows down over its life shows). Narrowing a run:
BENCH_CCS=cubic/cubic,bbr/cubic (relay/home rows), BENCH_CONDITIONS=0,0.005 (loss rates
at 20 ms), BENCH_SYSTEMS=natfwd,ssh. The kernel TCP congestion control is set per row in the
relay's and home's namespaces (CCS: Debian's CUBIC everywhere, BBR on the relay only,
BBR on both; the kernel default here is BBR); the visitor keeps CUBIC. What each leg
uses: ssh's home -> relay connection home's CC, relay -> visitor the relay's; natfwd's
relay <-> home leg is QUIC with its own BBR whatever the row says, relay -> visitor
BBR (the front door asks for it on each visitor's socket). BENCH_LOGS=DIR keeps the
relay's and home's output there.
Figures: MB/s (10^6 bytes/s) over the whole download, the visitor's time to first byte
(curl's time_starttransfer, median of 5 fetches of a small page; for natfwd also the
very first visit, which waits for the front door's tunnel to home), and the CPU seconds
of every process in the relay's namespace per GB carried (and in home's, where the web
server runs too); beside them what `ss -ti`
showed each kernel TCP leg using, and the CPU home's namespace spent in the 2 s after a
capped download (a visitor who leaves must stop home's upload). No pass/fail: the
issue's targets are printed beside the numbers. A second table has the HTTPS page load
(measure_https_page_load): natfwd's `--publish https:` against `ssh -g -R` to a TLS
server at home.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import time
import subprocess
import sys
import tempfile
import traceback
from typing import Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lab as L  # noqa: E402
import lab_test  # noqa: E402
from lab import Failure, Lab, SiteSpec, log, sh  # noqa: E402
from sshd_inetd import ThrowawaySshd, find_sshd, ssh_argv  # noqa: E402

DOMAIN = "bench.test"
HOST = f"home.{DOMAIN}"
SSH_REMOTE_PORT = 8080
ROUNDS_FIRST_BYTE = 5
AFTER_SECONDS = 2.0
CONDITIONS = (("20 ms RTT", 0.0), ("20 ms + 0.5 % loss", 0.005))
# TCP congestion control of new connections (relay's namespace, home's): Debian's
# default everywhere; a relay operator who turned BBR on; this kernel's default. The
# visitor (a friend's laptop) keeps CUBIC: it only receives.
CCS = (("cubic", "cubic"), ("bbr", "cubic"), ("bbr", "bbr"))
SYSTEMS = ("natfwd", "ssh")
# The relay's front door prints one each time its tunnel to home takes a path.
PATH_LINE = re.compile(r"^path home: (.*)$")


def narrowed(name: str, rows: tuple, key: Callable[[object], str]) -> tuple:
    """The `rows` the comma list in environment variable `name` names (all without it)."""
    wanted = os.environ.get(name)
    if not wanted:
        return rows
    names = [w.strip() for w in wanted.split(",") if w.strip()]
    picked = tuple(r for r in rows if key(r) in names)
    if len(picked) != len(names):
        raise SystemExit(f"{name}={wanted}: known are {', '.join(key(r) for r in rows)}")
    return picked


def set_namespace_cc(netns: str, cc: str) -> None:
    """Makes `cc` the TCP congestion control of new connections in `netns`. A namespace
    may pick only an allowed one; if `cc` is not, it is allowed for the moment it takes
    to set (the old list is put back at once)."""
    key = "net.ipv4.tcp_congestion_control"
    if sh(["sysctl", "-q", "-w", f"{key}={cc}"], netns=netns, check=False).returncode == 0:
        return
    allowed_key = "net.ipv4.tcp_allowed_congestion_control"
    old = sh(["sysctl", "-n", allowed_key]).stdout.strip()
    sh(["sysctl", "-q", "-w", f"{allowed_key}={old} {cc}"])
    try:
        sh(["sysctl", "-q", "-w", f"{key}={cc}"], netns=netns)
    finally:
        sh(["sysctl", "-q", "-w", f"{allowed_key}={old}"])


def offload_off(lab: Lab) -> None:
    """GSO (UDP's too), TSO and GRO off on every veth of the lab (delay and loss per
    wire packet)."""
    for ns in lab.namespaces:
        for line in sh(["ip", "-n", ns, "-o", "link", "show", "type", "veth"]).stdout.splitlines():
            dev = line.split(":")[1].strip().split("@")[0]
            sh(["ethtool", "-K", dev, "gso", "off", "tso", "off", "gro", "off",
                "tx-udp-segmentation", "off"], netns=ns, check=False)


def set_loss(lab: Lab, loss: float) -> None:
    sh(["nft", "delete", "table", "ip", "bench_loss"], netns=lab.router_ns, check=False)
    if loss:
        per_10k = max(1, round(loss * 10000))
        lab.nft(lab.router_ns, f"""
table ip bench_loss {{
  chain loss_pre {{ type filter hook prerouting priority raw; policy accept;
    numgen random mod 10000 < {per_10k} drop
  }}
}}
""")


def namespace_cpu_seconds(netns: str) -> float:
    """User + system CPU of every process in `netns` so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in sh(["ip", "netns", "pids", netns]).stdout.split():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / tick


class PublishBench:
    def __init__(self, lab: Lab, workdir: str):
        self.lab = lab
        self.workdir = workdir
        self.bytes = int(float(os.environ.get("BENCH_BYTES", 1e9)))
        self.max_seconds = float(os.environ.get("BENCH_MAX_SECONDS", 10))
        self.repeat = max(1, int(os.environ.get("BENCH_REPEAT", 1)))
        self.ccs = narrowed("BENCH_CCS", CCS, lambda r: f"{r[0]}/{r[1]}")
        self.conditions = narrowed("BENCH_CONDITIONS", CONDITIONS, lambda r: f"{r[1]:g}")
        self.systems = narrowed("BENCH_SYSTEMS", SYSTEMS, lambda r: r)
        self.results: dict[tuple, object] = {}
        self.notes: list[str] = []

    # -- setting up ----------------------------------------------------------------------

    def build(self) -> None:
        self.lab.build([SiteSpec("a-eim", "eim", ("home",)),
                        SiteSpec("v-none", "none", ("visitor",))])
        offload_off(self.lab)
        self.home_site = self.lab.sites["a-eim"]
        self.home_ns = self.home_site.ns["home"]
        self.visitor_ns = self.lab.sites["v-none"].ns["visitor"]
        site = os.path.join(self.workdir, "site")
        os.makedirs(site)
        with open(os.path.join(site, "index.html"), "w") as f:
            f.write("<html><body>published from home</body></html>\n")
        with open(os.path.join(site, "big.bin"), "wb") as f:
            f.truncate(self.bytes)  # sparse: nothing to write, nothing to read from disk
        web = self.lab.start("http.server (home)", [
            "python3", "-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory", site,
            "0"], self.home_ns)
        self.web_port = int(web.wait_stdout(r"Serving HTTP on \S+ port (\d+)", 20,
                                            what="http.server ready").group(1))

        t = lab_test.Tunnels(self.lab, self.workdir)
        home_state = t.natfwd.state_dir("home")
        self.relay, _ = t.start_relay(extra=[
            "--publish-domain", DOMAIN, "--publish-http", f"{L.RELAY_IP}:80",
            "--allow-publisher", t.natfwd.key_id(home_state)])
        self.home_argv = [t.natfwd.peer_bin, *t.peer_relay_args(self.home_site), "--name",
                          "home", "--state-dir", home_state, "--publish",
                          f"http:{self.web_port}"]
        self.home = None
        self.first_visits: list[float] = []

        if not find_sshd():
            raise Failure("sshd not installed (openssh-server)")
        d = os.path.join(self.workdir, "sshd-relay")
        os.makedirs(d, mode=0o700)
        self.sshd = ThrowawaySshd(d, L.RELAY_IP)
        self.sshd.prepare()
        p = self.lab.start("sshd (relay)", [
            self.sshd.sshd, "-D", "-e", "-f", self.sshd.config, "-o", "GatewayPorts=yes",
            "-o", f"ListenAddress={L.RELAY_IP}:{L.SSHD_PORT}"], self.lab.relay_ns)
        p.wait_stderr(r"Server listening on", 10, what="sshd ready")
        self.ssh_proc = None
        self.ssh_port = SSH_REMOTE_PORT

    def start_home_peer(self) -> None:
        """(Re)starts the publishing peer: each row gets a fresh tunnel from the front
        door, as ssh gets a fresh connection (BENCH_REPEAT shows what one tunnel does
        over several downloads)."""
        if self.home is not None:
            self.home.stop()
        self.home = self.lab.start("peer --publish (home)", self.home_argv, self.home_ns,
                                   env=lab_test.clean_env())
        self.home.wait_stdout(r"^published http://", 30, what="published ready line")
        line = len(self.relay.stdout_lines)
        # The first visitor waits for the front door's tunnel to home.
        _, first, _ = self.curl(f"http://{HOST}/index.html")
        self.first_visits.append(first * 1000)
        self.relay.wait_stdout(PATH_LINE.pattern, 10, start=line,
                               what="the front door's path line")

    def start_ssh_forward(self) -> None:
        """(Re)starts `ssh -g -R` from home: its TCP connection takes the namespaces'
        congestion control when it is made."""
        if self.ssh_proc is not None:
            self.ssh_proc.stop()
            # A port of its own: the old session's sshd may hold the last one a while.
            self.ssh_port += 1
        argv = ssh_argv(self.sshd.user_key, self.sshd.user, L.RELAY_IP, L.SSHD_PORT, extra=(
            "-N", "-c", "aes128-gcm@openssh.com", "-o", "Compression=no",
            "-o", "ExitOnForwardFailure=yes",
            "-R", f"0.0.0.0:{self.ssh_port}:127.0.0.1:{self.web_port}"))
        self.ssh_proc = self.lab.start("ssh -R (home)", argv, self.home_ns)
        self.lab.wait_tcp(self.visitor_ns, L.RELAY_IP, self.ssh_port, 30,
                          "ssh -g -R's port on the relay", self.ssh_proc)

    # -- measuring -----------------------------------------------------------------------

    def url(self, system: str, path: str) -> str:
        return (f"http://{HOST}{path}" if system == "natfwd" else
                f"http://{L.RELAY_IP}:{self.ssh_port}{path}")

    def curl(self, url: str, max_seconds: float = 30,
             during: Optional[Callable[[subprocess.Popen], None]] = None
             ) -> tuple[int, float, float]:
        """(bytes, seconds to first byte, seconds in all) of one fetch by the visitor;
        stopped after `max_seconds` (curl exit 28), which still counts. `during` runs
        while curl does."""
        argv = ["ip", "netns", "exec", self.visitor_ns, "curl", "-sS", "-o", "/dev/null",
                "--max-time", f"{max_seconds:g}", "--resolve", f"{HOST}:80:{L.RELAY_IP}",
                "-w", "%{http_code} %{size_download} %{time_starttransfer} %{time_total}",
                url]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            if during:
                during(p)
            out, err = p.communicate(timeout=max_seconds + 30)
        finally:
            if p.poll() is None:
                p.kill()  # by PID
                p.wait()
        fields = out.split()
        if p.returncode not in (0, 28) or len(fields) != 4 or fields[0] != "200":
            raise Failure(f"curl {url}: exit {p.returncode} {out!r} {err.strip()}")
        return int(fields[1]), float(fields[2]), float(fields[3])

    def sample_cc(self, system: str, key: tuple) -> Callable[[subprocess.Popen], None]:
        """What congestion control the download's kernel TCP legs really use, read from
        `ss -ti` while it runs: relay -> visitor, and for ssh home -> relay."""
        legs = [("relay -> visitor", self.lab.relay_ns,
                 f"( sport = :{80 if system == 'natfwd' else self.ssh_port} )")]
        if system == "ssh":
            legs.append(("home -> relay", self.home_ns, f"( dport = :{L.SSHD_PORT} )"))

        def sample(p: subprocess.Popen) -> None:
            seen: dict[str, str] = {}
            while p.poll() is None and len(seen) < len(legs):
                for leg, ns, expr in legs:
                    out = sh(["ss", "-tinH", "state", "established", expr], netns=ns,
                             check=False).stdout
                    m = re.search(r"\b(cubic|bbr|reno)\b wscale", out)
                    if m:
                        seen[leg] = m.group(1)
            self.results[key + ("cc_used",)] = ", ".join(
                f"{leg} {seen.get(leg, '?')}" for leg, _, _ in legs)
        return sample

    def measure(self, system: str, condition: str, cc: str) -> None:
        key = (system, condition, cc)
        firsts = [self.curl(self.url(system, "/index.html"))[1]
                  for _ in range(ROUNDS_FIRST_BYTE)]
        self.results[key + ("first_byte",)] = statistics.median(firsts) * 1000
        for _ in range(self.repeat):
            self.download(system, condition, cc, statistics.median(firsts))

    def download(self, system: str, condition: str, cc: tuple, first: float) -> None:
        key = (system, condition, cc)
        cpu0 = namespace_cpu_seconds(self.lab.relay_ns)
        home_cpu0 = namespace_cpu_seconds(self.home_ns)
        size, _, total = self.curl(self.url(system, "/big.bin"), self.max_seconds,
                                   during=self.sample_cc(system, key))
        cpu = namespace_cpu_seconds(self.lab.relay_ns) - cpu0
        home_cpu = namespace_cpu_seconds(self.home_ns) - home_cpu0
        # A download the visitor gave up on should stop at home too: what home's
        # namespace burns in the seconds after says whether it did.
        home0 = namespace_cpu_seconds(self.home_ns)
        time.sleep(AFTER_SECONDS)  # a measuring window, not a synchronisation
        self.results[key + ("home_cpu_after",)] = namespace_cpu_seconds(self.home_ns) - home0
        self.results.setdefault(key + ("mbps",), []).append((size / 1e6 / total, size < self.bytes))
        self.results.setdefault(key + ("home_cpu_per_gb",), []).append(
            home_cpu / (size / 1e9) if size else None)
        self.results.setdefault(key + ("cpu_per_gb",), []).append(
            cpu / (size / 1e9) if size else None)
        log(f"{condition}, relay {cc[0]} home {cc[1]}, {system}: {size / 1e6:.0f} MB in {total:.1f} s = "
            f"{size / 1e6 / total:.1f} MB/s, first byte {first * 1000:.0f} "
            f"ms, relay CPU {cpu:.2f} s; TCP {self.results.get(key + ('cc_used',))}")

    def ping_ms(self, src_ns: str, dst: str) -> float:
        r = sh(["ping", "-q", "-c", "5", "-i", "0.2", dst], netns=src_ns, check=False)
        for line in r.stdout.splitlines():
            if "min/avg" in line:
                return float(line.split("=")[1].split("/")[1])
        return float("nan")

    def run(self) -> None:
        self.build()
        set_namespace_cc(self.visitor_ns, "cubic")
        for cc in self.ccs:
            set_namespace_cc(self.lab.relay_ns, cc[0])
            set_namespace_cc(self.home_ns, cc[1])
            self.start_ssh_forward()
            self.start_home_peer()
            for condition, loss in self.conditions:
                set_loss(self.lab, loss)
                if cc == self.ccs[0]:
                    self.results[("rtt", condition)] = (
                        self.ping_ms(self.visitor_ns, L.RELAY_IP),
                        self.ping_ms(self.home_ns, L.RELAY_IP))
                for system in self.systems:
                    try:
                        self.measure(system, condition, cc)
                    except Failure as e:
                        log(f"{condition} {cc} {system}: {e}")
                        self.notes.append(f"{condition}, relay {cc[0]} home {cc[1]}, {system}: "
                                          f"{str(e).splitlines()[0]}")
        set_loss(self.lab, 0)

    # -- output --------------------------------------------------------------------------

    def cell(self, key: tuple) -> str:
        v = self.results.get(key)
        if v is None:
            return "-"
        if isinstance(v, list):
            if key[-1] == "mbps":
                return " / ".join(f"{mbps:.1f}" + ("*" if capped else "") for mbps, capped in v)
            return " / ".join("-" if x is None else f"{x:.1f}" for x in v)
        return f"{v:.0f}" if key[-1] == "first_byte" else f"{v:.1f}"

    def save_logs(self, directory: str) -> None:
        """The relay's and the last home peer's output, for a look at what the tunnel did."""
        os.makedirs(directory, exist_ok=True)
        for name, proc in (("relay", self.relay), ("home", self.home)):
            if proc is None:
                continue
            with open(os.path.join(directory, name + ".log"), "w") as f:
                f.write("\n".join(proc.stdout_lines + ["--- stderr"] + proc.stderr_lines) + "\n")

    def print_table(self) -> None:
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
        print(f"\npublish bench: a visitor downloads one file from home's http.server "
              f"({self.bytes / 1e6:.0f} MB, * = stopped after {self.max_seconds:g} s); "
              f"load average {load} on {os.cpu_count()} CPUs")
        print("| system | namespace default CC: relay, home | condition | MB/s | "
              "first byte ms | relay CPU s/GB | home CPU s/GB (its web server too) | "
              f"home CPU s in the {AFTER_SECONDS:g} s after | kernel TCP legs used (ss -ti) |")
        print("|---|---|---|---:|---:|---:|---:|---:|---|")
        for cc in self.ccs:
            for condition, _ in self.conditions:
                for system in self.systems:
                    label = ("natfwd publish http (relay <-> home: QUIC, BBR)"
                             if system == "natfwd" else "ssh -g -R (aes128-gcm)")
                    key = (system, condition, cc)
                    print(f"| {label} | {cc[0]}, {cc[1]} | {condition} | "
                          f"{self.cell(key + ('mbps',))} | {self.cell(key + ('first_byte',))} | "
                          f"{self.cell(key + ('cpu_per_gb',))} | "
                          f"{self.cell(key + ('home_cpu_per_gb',))} | "
                          f"{self.cell(key + ('home_cpu_after',))} | "
                          f"{self.results.get(key + ('cc_used',), '-')} |")
        if "natfwd" in self.systems:
            paths = [m.group(1) for m in map(PATH_LINE.search, self.relay.stdout_lines) if m]
            print(f"\nnatfwd's first visitor of each row (the front door sets its tunnel to "
                  f"home up on demand): first byte "
                  f"{', '.join(f'{v:.0f}' for v in self.first_visits)} ms; front door paths "
                  f"taken: {'; '.join(paths)}")
        for condition, _ in self.conditions:
            v, h = self.results.get(("rtt", condition), (float("nan"), float("nan")))
            print(f"ping {condition}: visitor -> relay {v:.1f} ms, home -> relay {h:.1f} ms")
        for n in self.notes:
            print(f"note: {n}")
        print("targets (issue 14): natfwd >= ssh's MB/s at 20 ms, several times it with "
              "loss; first byte within one RTT of ssh's")
        sys.stdout.flush()


HTTPS_SERVER = """
import http.server, ssl, sys
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print("serving https on port", server.server_address[1], flush=True)
server.serve_forever()
"""


def measure_https_page_load(bench: PublishBench) -> list[str]:
    """The HTTPS page load (TLS handshake done, first byte) of a small page, median of
    ROUNDS_FIRST_BYTE fresh visits, at the lab's 20 ms RTT per leg without loss: natfwd's
    `--publish https:` (TLS passed through by the relay, ended by the home peer) against
    `ssh -g -R` to a TLS server at home (Python's ssl on http.server), both with the
    same self-signed P-256 certificate for HOST. Returns the table's lines."""
    set_loss(bench.lab, 0)
    cert, key = (os.path.join(bench.workdir, f"https.{ext}") for ext in ("crt", "key"))
    sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=DNS:{HOST}", "-days",
        "1", "-keyout", key, "-out", cert])
    site = os.path.join(bench.workdir, "site")
    tls_web = bench.lab.start("https server (home)", [
        "python3", "-u", "-c", HTTPS_SERVER, cert, key], bench.home_ns, cwd=site)
    tls_port = int(tls_web.wait_stdout(r"serving https on port (\d+)", 20,
                                       what="https server ready").group(1))
    plain_web = bench.lab.start("http.server for https (home)", [
        "python3", "-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory", site,
        "0"], bench.home_ns)
    plain_port = int(plain_web.wait_stdout(r"Serving HTTP on \S+ port (\d+)", 20,
                                           what="http.server ready").group(1))
    bench.home.stop()
    bench.home = bench.lab.start("peer --publish https (home)", [
        *bench.home_argv, "--publish", f"https:{plain_port},cert={cert},key={key}"],
        bench.home_ns, env=lab_test.clean_env())
    bench.home.wait_stdout(r"^published https://", 30, what="published https ready line")
    bench.web_port, web_port = tls_port, bench.web_port
    bench.start_ssh_forward()
    bench.web_port = web_port
    rows = []
    for label, port in (("natfwd publish https (TLS ended at home)", L.RELAY_TLS_PORT),
                        ("ssh -g -R + TLS server at home", bench.ssh_port)):
        figures = []
        for _ in range(ROUNDS_FIRST_BYTE + (1 if port == L.RELAY_TLS_PORT else 0)):
            out = sh(["curl", "-sS", "-o", "/dev/null", "--max-time", "30", "--cacert", cert,
                      "--resolve", f"{HOST}:{port}:{L.RELAY_IP}", "-w",
                      "%{http_code} %{time_appconnect} %{time_starttransfer}",
                      f"https://{HOST}:{port}/index.html"], netns=bench.visitor_ns,
                     check=False).stdout.split()
            if len(out) != 3 or out[0] != "200":
                raise Failure(f"{label}: curl said {out}")
            figures.append((float(out[1]) * 1000, float(out[2]) * 1000))
        if port == L.RELAY_TLS_PORT:
            figures = figures[1:]  # the first waits for the front door's tunnel to home
        rows.append(f"| {label} | {statistics.median(f[0] for f in figures):.0f} | "
                    f"{statistics.median(f[1] for f in figures):.0f} |")
    return ["", "HTTPS page load, 20 ms RTT per leg, no loss (median of "
            f"{ROUNDS_FIRST_BYTE} fresh visits)",
            "| system | TLS handshake done ms | first byte ms |", "|---|---:|---:|", *rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", help="build dir (relay, peer, test/tools/nfq_delay)")
    args = ap.parse_args()
    if args.build:
        os.environ["BUILD_DIR"] = os.path.abspath(args.build)  # relay, peer, nfq_delay
    why = L.lab_preflight()
    if why:
        print(f"publish bench skipped: {why}")
        return 0
    L.install_signal_handlers()
    workdir = tempfile.mkdtemp(prefix="natfwd-bench-publish-")
    os.chmod(workdir, 0o755)
    lab = Lab(workdir, delay_ms=20, nfq_delay=L.find_nfq_delay())
    bench = PublishBench(lab, workdir)
    code = 0
    try:
        bench.run()
        bench.print_table()
        print("\n".join(measure_https_page_load(bench)), flush=True)
        if os.environ.get("BENCH_LOGS"):
            bench.save_logs(os.environ["BENCH_LOGS"])
    except KeyboardInterrupt:
        code = 130
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        code = 1
    finally:
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())

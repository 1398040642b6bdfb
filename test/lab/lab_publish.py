#!/usr/bin/env python3
"""Publishing through the relay's front door, from behind every NAT type of the lab
(meson test lab_publish_visitor; root only). See test/lab/README.md.

    lab_publish.py publish     [LAB_PUBLISH_TYPES=eim,proxyonly]

One relay (`--publish-domain share.test --publish-http 203.0.113.10:80 --publish-ports
...`, `--tls-listen 203.0.113.10:443`) and one visitor on the internet side that has
only curl, ssh and headless Chromium; names resolve by `curl --resolve` and Chromium's
`--host-resolver-rules`, as a wildcard DNS record *.share.test would. Then, for each
home NAT type in turn, the same home identity (`peer --name home`) runs behind that
NAT with `--publish http:... --publish tls:... --publish tcp:20022:127.0.0.1:22`, and
the visitor:

- http: loads a page of `python3 -m http.server` at home through
  http://home.share.test/ with curl and with Chromium (the page holds a random marker);
- tcp:  copies 20 MB with `ssh -p 20022` to the relay into a real sshd at home
  (sha256 checked; SSH_CONNECTION shows home's loopback);
- tls:  fetches the same page from `openssl s_server` at home (a certificate of a lab CA)
  through https://home.share.test/ (SNI passthrough on the relay's 443): curl verifies
  against the lab CA only, and the chain it saw must be home's leaf and CA, byte for
  byte. tcpdump in the relay's namespace records the whole exchange (a capture whose
  kernel ring dropped a packet fails the cell): its TCP streams, reassembled, and
  datagrams must hold the server name (it saw the connection) and must not hold the
  marker. The same capture during the http fetch must hold the marker, so the search
  can fail.

Prints a table (home NAT type x http/tls/tcp: ok or FAIL, with times) and fails if any
cell failed. Each cell stands alone: a failure is recorded with its reason and the next
cell runs.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lab as L  # noqa: E402
import lab_test  # noqa: E402
from chromium_cdp import HeadlessChromium  # noqa: E402
from lab import Failure, Lab, SiteSpec, log, scaled, sh  # noqa: E402
import pcap_streams  # noqa: E402
from pcap_streams import carried  # noqa: E402
from sshd_inetd import ssh_argv  # noqa: E402

DOMAIN = "share.test"
HOST = f"home.{DOMAIN}"
HTTP_PORT = 80
PUBLISH_PORTS = (20020, 20029)
SSH_PUBLIC_PORT = 20022
COPY_BYTES = 20 * 1000 * 1000
STEP_TIMEOUT = 60.0
COPY_TIMEOUT = 120.0
CELLS = ("http", "tcp", "tls")


@dataclass
class Row:
    nat: str
    path: str = ""                                  # the front door's path line
    home_path: str = ""                             # home's line for that tunnel
    cells: dict[str, str] = field(default_factory=dict)   # cell -> "ok 0.31 s ..."
    errors: dict[str, str] = field(default_factory=dict)  # cell -> reason

    def set(self, cell: str, ok: bool, text: str) -> None:
        self.cells[cell] = ("ok " if ok else "FAIL ") + text
        if not ok:
            self.errors[cell] = text

    @property
    def ok(self) -> bool:
        return all(self.cells.get(c, "").startswith("ok") for c in CELLS)


# -- certificates and content --------------------------------------------------------------

def make_certificates(d: str) -> dict[str, str]:
    """A lab CA and a leaf for HOST signed by it: the chain home's TLS server presents."""
    files = {k: os.path.join(d, f"{k}.pem") for k in ("ca", "ca_key", "leaf", "leaf_key",
                                                      "csr")}
    ext = os.path.join(d, "leaf.ext")
    with open(ext, "w") as f:
        f.write(f"subjectAltName=DNS:{HOST}\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    sh(["openssl", "req", "-x509", *ec, "-subj", "/CN=natfwd lab CA", "-days", "1",
        "-keyout", files["ca_key"], "-out", files["ca"]])
    sh(["openssl", "req", *ec, "-subj", f"/CN={HOST}", "-keyout", files["leaf_key"],
        "-out", files["csr"]])
    sh(["openssl", "x509", "-req", "-in", files["csr"], "-CA", files["ca"], "-CAkey",
        files["ca_key"], "-CAcreateserial", "-days", "1", "-extfile", ext,
        "-out", files["leaf"]])
    return files


PEM_RE = re.compile(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)


def pem_blocks(data: bytes) -> list[bytes]:
    return [b"".join(block.split()) for block in PEM_RE.findall(data)]


# -- the visitor ----------------------------------------------------------------------------

class Visitor:
    """What a person with only curl, ssh and a browser runs, in the visitor's namespace."""

    def __init__(self, lab: Lab, netns: str, workdir: str):
        self.lab = lab
        self.netns = netns
        self.workdir = workdir

    def run(self, argv: list[str], timeout: float, stdin=None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(["ip", "netns", "exec", self.netns, *argv], stdin=stdin,
                                  capture_output=True, timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            raise Failure(f"{argv[0]} did not finish within {scaled(timeout):.0f} s") from None

    def curl(self, url: str, port: int, extra: tuple[str, ...] = (),
             write_out: str = "") -> tuple[bytes, bytes, float]:
        """(body, write-out, seconds); Failure unless curl succeeds with HTTP 200."""
        body = os.path.join(self.workdir, "visitor-body")
        argv = ["curl", "-sS", "--max-time", str(int(scaled(STEP_TIMEOUT))), "--resolve",
                f"{HOST}:{port}:{L.RELAY_IP}", "-o", body, "-w",
                "%{http_code} %{time_total}\n" + write_out, *extra, url]
        r = self.run(argv, STEP_TIMEOUT + 10)
        head, _, rest = r.stdout.partition(b"\n")
        if r.returncode != 0:
            raise Failure(f"curl {url}: exit {r.returncode}: "
                          f"{r.stderr.decode(errors='replace').strip()}")
        code, seconds = head.decode().split()
        if code != "200":
            raise Failure(f"curl {url}: HTTP {code}")
        with open(body, "rb") as f:
            data = f.read()
        os.unlink(body)
        return data, rest, float(seconds)


class Capture:
    """tcpdump on every interface of the relay's namespace, whole packets to a file."""

    def __init__(self, lab: Lab, path: str):
        self.lab = lab
        self.path = path
        # -Z root: as root (tcpdump otherwise drops to its own user).
        self.proc = lab.start("tcpdump (relay)", [
            "tcpdump", "-i", "any", "-n", *pcap_streams.TCPDUMP_FLAGS, "-Z", "root",
            "-w", path], lab.relay_ns)
        self.proc.wait_stderr(r"listening on any", 20, what="tcpdump ready")

    def stop(self) -> bytes:
        """Ends the capture once everything before now is in the file (a datagram the
        router sends to the relay after the visit is) and it lost nothing."""
        send = ("import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                f"s.sendto(sys.argv[1].encode(), ({L.RELAY_IP!r}, 9))")
        data = pcap_streams.finish(
            self.proc, self.path,
            lambda token: sh(["python3", "-c", send, token.decode()], netns=self.lab.router_ns))
        if not os.environ.get("LAB_KEEP_PCAP"):
            os.unlink(self.path)
        return data


# -- one home ---------------------------------------------------------------------------------

class Home:
    """The services behind one NAT: http.server, openssl s_server, sshd, and the peer."""

    def __init__(self, lab: Lab, t: lab_test.Tunnels, site: L.Site, site_dir: str,
                 certs: dict[str, str], home_state: str):
        self.lab, self.site = lab, site
        netns = site.ns["home"]
        web = lab.start(f"http.server ({site.name})",
                        ["python3", "-u", "-m", "http.server", "--bind", "127.0.0.1",
                         "--directory", site_dir, "0"], netns)
        self.web_port = int(web.wait_stdout(r"Serving HTTP on \S+ port (\d+)", 20,
                                            what="http.server ready").group(1))
        tls = lab.start(f"openssl s_server ({site.name})",
                        ["openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", certs["leaf"],
                         "-key", certs["leaf_key"], "-cert_chain", certs["ca"], "-WWW"],
                        netns, cwd=site_dir)
        self.tls_port = int(tls.wait_stdout(r"^ACCEPT 127\.0\.0\.1:(\d+)", 20,
                                            what="s_server ready").group(1))
        self.sshd = lab.start_sshd(site, role="home", listen_ip="127.0.0.1")
        argv = [t.natfwd.peer_bin, *t.peer_relay_args(site), "--name", "home",
                "--state-dir", home_state, "--publish", f"http:{self.web_port}",
                "--publish", f"tls:{self.tls_port}",
                "--publish", f"tcp:{SSH_PUBLIC_PORT}:127.0.0.1:{L.SSHD_PORT}"]
        argv += ["-v"] if lab_test.VERBOSE else []
        self.peer = lab.start(f"peer --publish ({site.name})", argv, netns,
                              echo=t.natfwd.echo, env=lab_test.clean_env())
        self.started = time.monotonic()
        want = [f"published http://{HOST}/ -> 127.0.0.1:{self.web_port}",
                f"published https://{HOST}/ -> 127.0.0.1:{self.tls_port} (tls passthrough)",
                f"published tcp://{L.RELAY_IP}:{SSH_PUBLIC_PORT} -> 127.0.0.1:{L.SSHD_PORT}"]
        for line in want:
            self.peer.wait_stdout("^" + re.escape(line) + "$", lab_test.READY_TIMEOUT,
                                  what="published ready line")
        self.published_s = time.monotonic() - self.started


# -- the test -------------------------------------------------------------------------------

def timed_cell(row: Row, cell: str, body: Callable[[], str]) -> None:
    try:
        row.set(cell, True, body())
    except Failure as e:
        first = str(e).split("\n")[0]
        row.set(cell, False, first)
        log(f"FAIL {row.nat} {cell}: {e}")


def test_publish(lab: Lab, workdir: str, args) -> bool:
    del args
    wanted = os.environ.get("LAB_PUBLISH_TYPES", "")
    types = [x for x in wanted.split(",") if x] or list(L.TYPES)
    bad = [x for x in types if x not in L.TYPES]
    if bad:
        raise Failure(f"LAB_PUBLISH_TYPES: unknown types {bad}; types are {L.TYPES}")
    L.ensure_packages(["chromium"])
    lab.build([SiteSpec(f"a-{x}", x, ("home",)) for x in types] +
              [SiteSpec("v-none", "none", ("visitor",))])
    visitor_ns = lab.sites["v-none"].ns["visitor"]
    # The browser starts while the relay and the first home come up.
    browser = HeadlessChromium(visitor_ns, os.path.join(workdir, "chromium"),
                               {HOST: L.RELAY_IP})
    try:
        return run_homes(lab, workdir, types, visitor_ns, browser)
    finally:
        browser.close()


def run_homes(lab: Lab, workdir: str, types: list[str], visitor_ns: str,
              browser: HeadlessChromium) -> bool:
    t = lab_test.Tunnels(lab, workdir)
    home_state = t.natfwd.state_dir("home")
    home_id = t.natfwd.key_id(home_state)
    relay, _ = t.start_relay(extra=[
        "--publish-domain", DOMAIN, "--publish-http", f"{L.RELAY_IP}:{HTTP_PORT}",
        "--publish-ports", f"{PUBLISH_PORTS[0]}-{PUBLISH_PORTS[1]}",
        "--allow-publisher", home_id])
    want = (f", publish http {L.RELAY_IP}:{HTTP_PORT} https *.{DOMAIN}, "
            f"tcp {PUBLISH_PORTS[0]}-{PUBLISH_PORTS[1]})")
    if not relay.stdout_lines[0].endswith(want):
        raise Failure(f"relay ready line {relay.stdout_lines[0]!r} does not end with {want!r}")
    certs = make_certificates(workdir)
    with open(certs["leaf"], "rb") as f:
        home_chain = pem_blocks(f.read())
    with open(certs["ca"], "rb") as f:
        home_chain += pem_blocks(f.read())
    marker = "natfwd-lab-" + secrets.token_hex(12)
    site_dir = os.path.join(workdir, "site")
    os.makedirs(site_dir)
    page = f"<html><head><title>home</title></head><body><p id=\"m\">{marker}</p></body></html>\n"
    with open(os.path.join(site_dir, "index.html"), "w") as f:
        f.write(page)
    copy_file = os.path.join(workdir, "copy.bin")
    with open(copy_file, "wb") as f:
        f.write(os.urandom(COPY_BYTES))
    with open(copy_file, "rb") as f:
        copy_sha = hashlib.sha256(f.read()).hexdigest()
    visitor = Visitor(lab, visitor_ns, workdir)
    browser_s = browser.wait_ready()
    print(f"visitor's Chromium ready {browser_s:.1f} s after its start")

    rows = []
    started = time.monotonic()
    for nat in types:
        site = lab.sites[f"a-{nat}"]
        row = Row(nat)
        rows.append(row)
        first_proc = len(lab.group.procs)
        relay_line = len(relay.stdout_lines)
        try:
            home = Home(lab, t, site, site_dir, certs, home_state)
        except Failure as e:
            for cell in CELLS:
                row.set(cell, False, "home did not publish: " + str(e).split("\n")[0])
            log(f"FAIL {nat}: home did not publish: {e}")
            stop_since(lab, first_proc)
            continue
        log(f"{nat}: home published in {home.published_s:.1f} s")
        timed_cell(row, "http", lambda: check_http(lab, visitor, browser, marker, workdir))
        timed_cell(row, "tcp", lambda: check_tcp(visitor, home, copy_file, copy_sha,
                                                  workdir))
        timed_cell(row, "tls", lambda: check_tls(lab, visitor, certs, home_chain, marker,
                                                  workdir))
        row.path = next((l.split(": ", 1)[1] for l in reversed(relay.stdout_lines[relay_line:])
                         if l.startswith("path home: ")), "(no path line)")
        row.home_path = next((l.split(": ", 1)[1] for l in reversed(home.peer.stdout_lines)
                              if l.startswith("path peer ")), "(no path line)")
        log(f"{'ok  ' if row.ok else 'FAIL'} {nat}: {row.path}")
        if not row.ok:
            log(home.peer.describe(stderr_tail=15))
            log(relay.describe(stderr_tail=15))
        stop_since(lab, first_proc)
    relay.check_running("at the end")
    print_table(rows, time.monotonic() - started)
    return all(r.ok for r in rows)


def stop_since(lab: Lab, first: int) -> None:
    """Stops what one home started (newest first); the relay and the lab stay."""
    for p in reversed(lab.group.procs[first:]):
        p.stop()
    del lab.group.procs[first:]


def check_http(lab: Lab, visitor: Visitor, browser: HeadlessChromium, marker: str,
               workdir: str) -> str:
    capture = Capture(lab, os.path.join(workdir, "http.pcap"))
    try:
        body, _, curl_s = visitor.curl(f"http://{HOST}/", HTTP_PORT)
    finally:
        seen = capture.stop()
    if marker.encode() not in body:
        raise Failure(f"curl got a page without the marker: {body[:200]!r}")
    # The plaintext leg (visitor -> relay) is in the capture: the tls cell's search
    # for the marker would find it too.
    if not carried(seen, marker.encode()):
        raise Failure("the relay's capture of a plain HTTP visit lacks the page's marker: "
                      "the capture does not see visitor traffic")
    dom, browser_s = browser.load(f"http://{HOST}/", timeout=STEP_TIMEOUT)
    if f'<p id="m">{marker}</p>' not in dom:
        raise Failure(f"Chromium's page lacks the marker: {dom[:200]!r}")
    return f"curl {curl_s:.2f} s, chromium {browser_s:.2f} s"


def check_tcp(visitor: Visitor, home: Home, copy_file: str, copy_sha: str,
              workdir: str) -> str:
    del workdir
    dest = os.path.join(home.sshd.dir, "copied.bin")
    argv = ssh_argv(home.sshd.user_key, home.sshd.user, L.RELAY_IP, SSH_PUBLIC_PORT,
                    f"echo $SSH_CONNECTION; cat > '{dest}' && sha256sum '{dest}'; "
                    f"rm -f '{dest}'")
    t0 = time.monotonic()
    with open(copy_file, "rb") as f:
        r = visitor.run(argv, COPY_TIMEOUT, stdin=f)
    elapsed = time.monotonic() - t0
    lines = r.stdout.decode(errors="replace").splitlines()
    if r.returncode != 0 or len(lines) < 2:
        raise Failure(f"ssh -p {SSH_PUBLIC_PORT} {L.RELAY_IP}: exit {r.returncode}: "
                      f"{r.stderr.decode(errors='replace').strip()}")
    fields = lines[0].split()
    # Home's peer connects to its target from home's loopback.
    if len(fields) != 4 or fields[2] != "127.0.0.1" or fields[3] != str(L.SSHD_PORT):
        raise Failure(f"ssh reached the wrong place: SSH_CONNECTION={lines[0]!r}")
    got = lines[1].split()[0]
    if got != copy_sha:
        raise Failure(f"20 MB through ssh arrived changed: sha256 {got}, sent {copy_sha}")
    return f"{elapsed:.1f} s, {COPY_BYTES / 1e6 / elapsed:.1f} MB/s"


def check_tls(lab: Lab, visitor: Visitor, certs: dict[str, str], home_chain: list[bytes],
              marker: str, workdir: str) -> str:
    capture = Capture(lab, os.path.join(workdir, "tls.pcap"))
    try:
        # --cacert: trust the lab CA only (not the relay's certificate, not the system's).
        body, chain_text, seconds = visitor.curl(
            f"https://{HOST}/index.html", L.RELAY_TLS_PORT,
            extra=("--cacert", certs["ca"]), write_out="%{certs}")
    finally:
        seen = capture.stop()
    if marker.encode() not in body:
        raise Failure(f"the TLS page lacks the marker: {body[:200]!r}")
    chain = pem_blocks(chain_text)
    if chain != home_chain:
        raise Failure(f"the visitor saw a chain of {len(chain)} certificates that is not "
                      f"home's leaf and lab CA")
    if not carried(seen, HOST.encode()):
        raise Failure("the relay's capture does not show the visitor's ClientHello "
                      f"(no {HOST} in it): it did not see the connection")
    if carried(seen, marker.encode()):
        raise Failure("the page's plaintext (its marker) is in the relay's capture")
    return f"curl {seconds:.2f} s, home's chain, capture {len(seen) // 1024} KiB clean"


def print_table(rows: list[Row], seconds: float) -> None:
    print(f"\nPublishing through the relay's front door, one visitor, each home NAT type "
          f"({seconds:.0f} s):")
    print("| home NAT | front door's path line | home's path line | http: curl + Chromium | "
          "tcp: ssh, 20 MB | tls: SNI passthrough |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.nat} | {r.path or '-'} | {r.home_path or '-'} | "
              f"{r.cells.get('http', '-')} | {r.cells.get('tcp', '-')} | "
              f"{r.cells.get('tls', '-')} |")
    failed = [(r.nat, c, e) for r in rows for c, e in r.errors.items()]
    if failed:
        print("\nfailed cells:")
        for nat, cell, err in failed:
            print(f"  {nat} {cell}: {err}")
    print(f"\n{sum(r.ok for r in rows)} of {len(rows)} home NAT types passed every cell")
    sys.stdout.flush()


TESTS = {"publish": test_publish}

if __name__ == "__main__":
    sys.exit(lab_test.main(TESTS))

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

- https: a real ACME CA on the internet side: Debian's pebble (Let's Encrypt's test CA)
  in a namespace of the visitor's public site, validating with TLS-ALPN-01 (RFC 8737)
  through the relay's 443 (no "always valid" shortcut, no authorization reuse), its DNS
  a dnsmasq there that answers *.share.test and www.custom.test (a CNAME to the relay,
  and TXT _natfwd.www.custom.test with the custom peer's key id); the relay resolves
  custom domains through the same dnsmasq (its namespace's resolv.conf). The home peer
  is restarted as `--publish https:PORT` and a second peer at home publishes
  `https:www.custom.test=PORT`, both with `--acme-directory` (through the proxy for
  proxyonly), each issued anew for every NAT type (one pebble for all). curl trusting
  only pebble's root and Chromium whose NSS database trusts only pebble's root (beside
  its built-in ones, which pebble is not under) load https://home.share.test/ and
  https://www.custom.test/. A capture on the relay during the curl loads holds both
  server names and none of: the page's marker, the home certificate key's PEM, DER or
  private scalar. No file in the relay's state dir holds a certificate naming either
  host or that key material. pebble's certificates last 60 s: for the last NAT type the
  home peer renews its own at two thirds while a visitor loads the page every second
  (trusting only pebble's root), and a visitor after the renewal gets the new certificate.

Prints a table (home NAT type x http/tls/tcp/https: ok or FAIL, with times) and fails if
any cell failed. Each cell stands alone: a failure is recorded with its reason and the next
cell runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lab as L  # noqa: E402
import lab_test  # noqa: E402
from chromium_cdp import HeadlessChromium, nss_home_trusting  # noqa: E402
from lab import Failure, Lab, SiteSpec, log, scaled, sh  # noqa: E402
import pcap_streams  # noqa: E402
from pcap_streams import carried  # noqa: E402
from procs import Proc, wait_until  # noqa: E402
from sshd_inetd import ssh_argv  # noqa: E402

DOMAIN = "share.test"
HOST = f"home.{DOMAIN}"
HTTP_PORT = 80
PUBLISH_PORTS = (20020, 20029)
SSH_PUBLIC_PORT = 20022
COPY_BYTES = 20 * 1000 * 1000
STEP_TIMEOUT = 60.0
COPY_TIMEOUT = 120.0
CELLS = ("http", "tcp", "tls", "https")
CUSTOM_HOST = "www.custom.test"
CA_PORT = 443            # pebble's directory: the port a proxy-only home's squid CONNECTs to
CA_MANAGEMENT_PORT = 15000
DNS_PORT = 53
# pebble's certificates are short-lived, as in issue 15's proof: the peer renews at two
# thirds (40 s). Each home's cell ends well before that; the last home's waits for the
# renewal with a visitor loading the page every second throughout.
CERT_VALIDITY_SECONDS = 60
ISSUE_TIMEOUT = 90.0


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
             write_out: str = "", host: str = HOST) -> tuple[bytes, bytes, float]:
        """(body, write-out, seconds); Failure unless curl succeeds with HTTP 200."""
        body = os.path.join(self.workdir, "visitor-body")
        argv = ["curl", "-sS", "--max-time", str(int(scaled(STEP_TIMEOUT))), "--resolve",
                f"{host}:{port}:{L.RELAY_IP}", "-o", body, "-w",
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


# -- the ACME CA on the internet side ----------------------------------------------------

class AcmeLab:
    """pebble and its DNS (dnsmasq) in a namespace of the visitor's public site. The
    DNS answers every *.share.test name with the relay's address, as the wildcard
    record of a real deployment does, and holds the custom domain's records; the relay
    resolves through it too (its namespace's /etc/netns resolv.conf, which `ip netns
    exec` mounts over /etc/resolv.conf)."""

    def __init__(self, lab: Lab, workdir: str, netns: str, ip: str, custom_key_id: str):
        self.lab, self.ip = lab, ip
        self.netns_etc = f"/etc/netns/{lab.relay_ns}"
        os.makedirs(self.netns_etc)
        with open(os.path.join(self.netns_etc, "resolv.conf"), "w") as f:
            f.write(f"nameserver {ip}\noptions timeout:2 attempts:2\n")
        dns = lab.start("dnsmasq (lab DNS)", [
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", "--no-poll", "--pid-file=", f"--listen-address={ip}",
            "--bind-interfaces", f"--port={DNS_PORT}", "--local=/test/", "--log-facility=-",
            f"--address=/{DOMAIN}/{L.RELAY_IP}",
            f"--host-record=relay.custom.test,{L.RELAY_IP}",
            f"--cname={CUSTOM_HOST},relay.custom.test",
            f"--txt-record=_natfwd.{CUSTOM_HOST},{custom_key_id}"], netns)
        dns.wait_stderr(r"started, version", 20, what="dnsmasq start line")
        # pebble's own HTTPS (directory, management) has a certificate made here: the
        # Debian package ships none. Peers trust it through --acme-ca-file.
        self.server_cert = os.path.join(workdir, "pebble.crt")
        key = os.path.join(workdir, "pebble.key")
        sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-subj", "/CN=pebble", "-addext", f"subjectAltName=IP:{ip}", "-days",
            "1", "-keyout", key, "-out", self.server_cert])
        config = os.path.join(workdir, "pebble.json")
        with open(config, "w") as f:
            json.dump({"pebble": {
                "listenAddress": f"{ip}:{CA_PORT}",
                "managementListenAddress": f"{ip}:{CA_MANAGEMENT_PORT}",
                "certificate": self.server_cert, "privateKey": key,
                "httpPort": 80, "tlsPort": L.RELAY_TLS_PORT, "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
                "certificateValidityPeriod": CERT_VALIDITY_SECONDS}}, f)
        # No sleep before validating; every nonce good (the client's badNonce retry is
        # unit-tested); every order validated anew (no authorization reuse), so each
        # home's certificate is a TLS-ALPN-01 validation through the relay.
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0",
                   PEBBLE_AUTHZREUSE="0")
        self.pebble = lab.start("pebble", ["pebble", "-config", config, "-dnsserver",
                                           f"{ip}:{DNS_PORT}"], netns, env=env)
        self.pebble.wait_stdout(r"ACME directory available at", 30, what="pebble ready")
        self.directory = f"https://{ip}:{CA_PORT}/dir"
        self.root = os.path.join(workdir, "pebble-root.pem")
        r = sh(["curl", "-sS", "--max-time", "20", "--cacert", self.server_cert,
                f"https://{ip}:{CA_MANAGEMENT_PORT}/roots/0"], netns=netns)
        if "BEGIN CERTIFICATE" not in r.stdout:
            raise Failure(f"pebble's root: {r.stdout[:200]!r} {r.stderr!r}")
        with open(self.root, "w") as f:
            f.write(r.stdout)

    def close(self) -> None:
        shutil.rmtree(self.netns_etc, ignore_errors=True)


def key_material(key_file: str) -> dict[str, bytes]:
    """What of a private key must never cross the relay: its PEM body, its DER and its
    private scalar."""
    with open(key_file, "rb") as f:
        pem = f.read()
    body = b"\n".join(l for l in pem.splitlines() if not l.startswith(b"-----"))
    der = subprocess.run(["openssl", "pkey", "-in", key_file, "-outform", "DER"],
                         capture_output=True, check=True, timeout=scaled(20)).stdout
    text = sh(["openssl", "pkey", "-in", key_file, "-noout", "-text"]).stdout
    m = re.search(r"^priv:\n((?:\s+[0-9a-f:]+\n)+)", text, re.M)
    if not m or not der:
        raise Failure(f"cannot read the private key {key_file}")
    scalar = bytes.fromhex("".join(m.group(1).split()).replace(":", ""))
    # The scalar is printed with a leading zero when its top bit is set.
    return {"PEM": body, "DER": der, "private scalar": scalar.lstrip(b"\0")}


def key_leaks(data: bytes, material: dict[str, bytes]) -> list[str]:
    """Which of `material` `data` holds; the PEM by any one of its lines."""
    found = [name for name, blob in material.items() if name != "PEM" and blob in data]
    if any(line in data for line in material["PEM"].splitlines() if len(line) >= 32):
        found.append("PEM")
    return found


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
    L.ensure_packages(["chromium", "pebble", "dnsmasq-base", "libnss3-tools"])
    lab.build([SiteSpec(f"a-{x}", x, ("home",)) for x in types] +
              [SiteSpec("v-none", "none", ("visitor", "ca"))])
    visitor_site = lab.sites["v-none"]
    t = lab_test.Tunnels(lab, workdir)
    states = {name: t.natfwd.state_dir(name) for name in ("home", "www")}
    acme = AcmeLab(lab, workdir, visitor_site.ns["ca"], visitor_site.ip["ca"],
                   t.natfwd.key_id(states["www"]))
    try:
        # The browser starts while the relay and the first home come up.
        home = nss_home_trusting(os.path.join(workdir, "chromium-home"), acme.root)
        browser = HeadlessChromium(visitor_site.ns["visitor"], os.path.join(workdir, "chromium"),
                                   {HOST: L.RELAY_IP, CUSTOM_HOST: L.RELAY_IP},
                                   env=dict(os.environ, HOME=home))
        try:
            return run_homes(lab, t, workdir, types, visitor_site.ns["visitor"], browser, acme,
                             states)
        finally:
            browser.close()
    finally:
        acme.close()


def run_homes(lab: Lab, t: lab_test.Tunnels, workdir: str, types: list[str], visitor_ns: str,
              browser: HeadlessChromium, acme: AcmeLab, states: dict[str, str]) -> bool:
    home_state = states["home"]
    home_id = t.natfwd.key_id(home_state)
    relay_state = t.natfwd.state_dir("relay")
    # --publish-address: custom domains are on; the relay checks their DNS records.
    relay, _ = t.start_relay(state_dir=relay_state, extra=[
        "--publish-domain", DOMAIN, "--publish-http", f"{L.RELAY_IP}:{HTTP_PORT}",
        "--publish-ports", f"{PUBLISH_PORTS[0]}-{PUBLISH_PORTS[1]}",
        "--allow-publisher", home_id, "--allow-publisher", t.natfwd.key_id(states["www"]),
        "--publish-address", L.RELAY_IP])
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
        renew = nat == types[-1]
        timed_cell(row, "https", lambda: check_https(lab, t, site, home, acme, visitor, browser,
                                                      states, relay_state, marker, workdir,
                                                      renew))
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


def start_acme_peer(lab: Lab, t: lab_test.Tunnels, site: L.Site, acme: AcmeLab,
                    name: str, state: str, spec: str, host: str):
    """A peer at home publishing `spec` with a certificate from the lab's pebble,
    issued anew: the previous home's certificate and ACME account key are removed
    first. A new account matters: pebble reuses an account's valid authorization 1 %
    of the time even with PEBBLE_AUTHZREUSE=0 (wfe.go: `rand.Intn(100) > percent`),
    and the order then completes without the validation through the relay that this
    home must show."""
    for stored in (host + ".crt", host + ".key", "account.key"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(state, "acme", stored))
    argv = [t.natfwd.peer_bin, *t.peer_relay_args(site), "--name", name, "--state-dir", state,
            "--publish", spec, "--acme-directory", acme.directory, "--acme-ca-file",
            acme.server_cert, "--acme-email", "lab@example.org"]
    argv += ["-v"] if lab_test.VERBOSE else []
    return lab.start(f"peer --publish https ({name}, {site.name})", argv, site.ns["home"],
                     echo=t.natfwd.echo, env=lab_test.clean_env()), host


def check_https(lab: Lab, t: lab_test.Tunnels, site: L.Site, home: Home, acme: AcmeLab,
                visitor: Visitor, browser: HeadlessChromium, states: dict[str, str],
                relay_state: str, marker: str, workdir: str, renew: bool) -> str:
    # tls: and https: both answer https://home.share.test/: the tls publish goes first.
    home.peer.stop()
    started = time.monotonic()
    peers = [start_acme_peer(lab, t, site, acme, "home", states["home"],
                             f"https:{home.web_port}", HOST),
             start_acme_peer(lab, t, site, acme, "www", states["www"],
                             f"https:{CUSTOM_HOST}={home.web_port}", CUSTOM_HOST)]
    try:
        text = https_visits(lab, peers, home, acme, visitor, browser, states, relay_state,
                            marker, workdir, started)
        return text + (renewal_visits(peers[0][0], acme, visitor, marker) if renew else "")
    except Failure as e:
        raise Failure(f"{e}\n" + "\n".join(p.describe(stderr_tail=15) for p, _ in peers)) from None


def https_visits(lab: Lab, peers: list, home: Home, acme: AcmeLab, visitor: Visitor,
                 browser: HeadlessChromium, states: dict[str, str], relay_state: str,
                 marker: str, workdir: str, started: float) -> str:
    for peer, host in peers:
        peer.wait_stdout(
            "^" + re.escape(f"published https://{host}/ -> 127.0.0.1:{home.web_port} "
                            "(certificate from ACME, expires ") + r"\d{4}-\d\d-\d\d\)$",
            ISSUE_TIMEOUT, what=f"published ready line of {host}")
        # Issued just now by a validation through the relay, not read from disk.
        peer.wait_stderr(re.escape(f"acme {host}: answering the tls-alpn-01 challenge"), 5,
                         what=f"{host}'s tls-alpn-01 step")
    issued_s = time.monotonic() - started
    material = {host: key_material(os.path.join(states[name], "acme", host + ".key"))
                for name, host in (("home", HOST), ("www", CUSTOM_HOST))}

    capture = Capture(lab, os.path.join(workdir, "https.pcap"))
    try:
        # --cacert: pebble's root alone (no system roots, no lab CA).
        times = []
        for host in (HOST, CUSTOM_HOST):
            body, _, seconds = visitor.curl(f"https://{host}/index.html", L.RELAY_TLS_PORT,
                                            extra=("--cacert", acme.root), host=host)
            if marker.encode() not in body:
                raise Failure(f"https://{host}/ lacks the marker: {body[:200]!r}")
            times.append(seconds)
    finally:
        seen = capture.stop()
    # The file and what its TCP streams carried once reassembled (a key split between
    # two segments is not in the file as one piece).
    pieces = [seen, *pcap_streams.streams(seen)]
    for host in (HOST, CUSTOM_HOST):
        if not carried(seen, host.encode()):
            raise Failure(f"the relay's capture does not show {host}'s ClientHello: it did "
                          "not see the connection")
        leaks = sorted({leak for piece in pieces for leak in key_leaks(piece, material[host])})
        if leaks:
            raise Failure(f"the relay's capture holds {host}'s private key ({', '.join(leaks)})")
    if carried(seen, marker.encode()):
        raise Failure("the page's plaintext (its marker) is in the relay's capture of https")
    check_relay_state(relay_state, material)
    browser_times = []
    for host in (HOST, CUSTOM_HOST):
        dom, seconds = browser.load(f"https://{host}/", timeout=STEP_TIMEOUT)
        if f'<p id="m">{marker}</p>' not in dom:
            raise Failure(f"Chromium's https://{host}/ lacks the marker (a certificate "
                          f"error page?): {dom[:200]!r}")
        browser_times.append(seconds)
    return (f"issued {issued_s:.1f} s, curl {times[0]:.2f}/{times[1]:.2f} s, chromium "
            f"{browser_times[0]:.2f}/{browser_times[1]:.2f} s, capture "
            f"{len(seen) // 1024} KiB clean")


def renewal_visits(peer: Proc, acme: AcmeLab, visitor: Visitor, marker: str) -> str:
    """Waits for the home peer to renew its certificate (at two thirds of its lifetime),
    a visitor loading https://home.share.test/ every second throughout, trusting only
    pebble's root: each visit must get the page, and the one after the renewal another
    certificate."""
    url = f"https://{HOST}/index.html"
    renewed = re.escape(f"acme {HOST}: serving the renewed certificate")

    def leaf() -> bytes:
        """The certificate the visit was served (its PEM, whitespace dropped)."""
        body, chain, _ = visitor.curl(url, L.RELAY_TLS_PORT, extra=("--cacert", acme.root),
                                      write_out="%{certs}")
        if marker.encode() not in body:
            raise Failure(f"a visit while waiting for the renewal lacks the marker: {body[:200]!r}")
        blocks = pem_blocks(chain)
        if not blocks:
            raise Failure("curl showed no certificate for a visit")
        return blocks[0]
    before = leaf()
    started, visits = time.monotonic(), [1]

    def renewed_or_visited() -> bool:
        """One visit a second (wait_until's pace) until the renewal is logged or served."""
        if any(re.search(renewed, line) for line in peer.stderr_lines):
            return True
        visits[0] += 1
        return leaf() != before  # the new certificate is served already; its log line follows
    wait_until(renewed_or_visited, CERT_VALIDITY_SECONDS + 20,
               f"the renewal of a {CERT_VALIDITY_SECONDS} s certificate", interval=1)
    peer.wait_stderr(renewed, 10, what="the renewal's log line")
    if leaf() == before:
        raise Failure("after the renewal a new visitor still got the old certificate")
    return (f"; renewed {time.monotonic() - started:.0f} s later, {visits[0] + 1} visits "
            "served throughout, then a new certificate")


def check_relay_state(relay_state: str, material: dict[str, dict[str, bytes]]) -> None:
    """No file the relay keeps holds a certificate for a published name or its key."""
    for top, _, files in os.walk(relay_state):
        for name in files:
            path = os.path.join(top, name)
            with open(path, "rb") as f:
                data = f.read()
            for host, blobs in material.items():
                leaks = key_leaks(data, blobs)
                if leaks:
                    raise Failure(f"the relay's {path} holds {host}'s private key "
                                  f"({', '.join(leaks)})")
            for block in PEM_RE.findall(data):
                r = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName",
                                    "-subject"], input=block, capture_output=True,
                                   timeout=scaled(20))
                names = r.stdout.decode(errors="replace")
                for host in material:
                    if host in names:
                        raise Failure(f"the relay's {path} holds a certificate for {host}")


def print_table(rows: list[Row], seconds: float) -> None:
    print(f"\nPublishing through the relay's front door, one visitor, each home NAT type "
          f"({seconds:.0f} s):")
    print("| home NAT | front door's path line | home's path line | http: curl + Chromium | "
          "tcp: ssh, 20 MB | tls: SNI passthrough | https: ACME (pebble), home + custom "
          "domain, curl + Chromium |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.nat} | {r.path or '-'} | {r.home_path or '-'} | "
              f"{r.cells.get('http', '-')} | {r.cells.get('tcp', '-')} | "
              f"{r.cells.get('tls', '-')} | {r.cells.get('https', '-')} |")
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

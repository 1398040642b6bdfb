#!/usr/bin/env python3
"""An https publish whose certificate comes from a real ACME CA: Debian's pebble
(Let's Encrypt's test CA) validates the name with TLS-ALPN-01 (RFC 8737) by connecting
to the relay's TLS port, which passes the acme-tls/1 handshake through by SNI to the
serving peer; pebble-challtestsrv is pebble's DNS and answers every name with
127.0.0.1. Nothing leaves loopback.

- `peer --publish https:PORT --acme-directory URL --acme-ca-file PEBBLE_CERT` says
  which ACME step it is at, then prints exactly `published https://home.DOMAIN/ ->
  127.0.0.1:PORT (certificate from ACME, expires YYYY-MM-DD)` with the issued
  certificate's notAfter;
- curl trusting only pebble's root (from its management port, /roots/0) loads the page
  through the relay with no certificate error; the certificate and its key are in
  STATE_DIR/acme/ with mode 0600;
- pebble issues certificates valid for VALIDITY_SECONDS, so the peer renews during the
  run at two thirds of that: it says so, a TLS connection opened before the renewal
  still carries a request afterwards (with the old certificate), and new visitors get
  the new one;
- with pebble stopped, the peer restarted on the same state dir serves the stored
  certificate at once (the CA is not asked: it is gone);
- a peer whose CA is down says so in one line, keeps running and tries again; it serves
  no certificate meanwhile (a visitor's handshake fails);
- a failed challenge: pebble's DNS (pebble-challtestsrv, told through its management
  API) sends astray.share.test to 127.0.0.2, where no relay listens, so pebble's
  TLS-ALPN-01 connection fails and the authorization goes invalid. The peer says so in
  one line with the CA's detail and when it tries again, keeps running, and serves no
  certificate: neither a visitor's handshake nor one offering acme-tls/1 gets one.
"""
import json
import os
import re
import socket
import ssl
import stat
import subprocess
import urllib.request

from harness import Failure, run, scaled
from test_publish_https import curl_https

DOMAIN = "share.test"
# Short enough to see a renewal (at two thirds) within the test, long enough for the
# restart after it to find the renewed certificate still valid.
VALIDITY_SECONDS = 24


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_on_free_ports(w, label, make_argv, ready, timeout=60, attempts=10, **kwargs):
    """Starts a program that cannot listen on port 0: ports the kernel says are free now,
    and another try when it lost the race for one of them. Returns (proc, ports)."""
    for _ in range(attempts):
        ports = [free_port() for _ in range(2)]
        proc = w.group.start(label, make_argv(*ports), **kwargs)
        try:
            proc.wait_stdout(ready, scaled(timeout), what=f"{label} ready")
            return proc, ports
        except Failure:
            if proc.running():
                raise
            proc.stop()
    raise Failure(f"could not start {label} on free loopback ports")


def test(w):
    nf = w.natfwd
    relay, relay_addr = nf.relay(extra=["--publish-domain", DOMAIN, "--publish-http",
                                        "127.0.0.1:0", "--allow-publisher", "any"])
    relay_port = int(relay_addr.rsplit(":", 1)[1])
    host = f"home.{DOMAIN}"

    # pebble's own HTTPS (directory and management) with a certificate made here:
    # Debian's package ships none.
    pebble_cert = os.path.join(w.tmpdir, "pebble.crt")
    pebble_key = os.path.join(w.tmpdir, "pebble.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=pebble", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "1", "-keyout",
                    pebble_key, "-out", pebble_cert], check=True, capture_output=True,
                   timeout=scaled(30))

    dns, (dns_port, dns_management) = start_on_free_ports(
        w, "pebble-challtestsrv", lambda port, management: [
            "pebble-challtestsrv", "-dns01", f"127.0.0.1:{port}", "-management",
            f"127.0.0.1:{management}", "-http01", "", "-https01", "", "-tlsalpn01", "",
            "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
        r"Starting management server", timeout=30)

    def start_pebble():
        def argv(listen, management):
            config = os.path.join(w.tmpdir, f"pebble-{listen}.json")
            with open(config, "w") as f:
                json.dump({"pebble": {
                    "listenAddress": f"127.0.0.1:{listen}",
                    "managementListenAddress": f"127.0.0.1:{management}",
                    "certificate": pebble_cert, "privateKey": pebble_key,
                    "httpPort": free_port(), "tlsPort": relay_port,
                    "ocspResponderURL": "", "externalAccountBindingRequired": False,
                    "certificateValidityPeriod": VALIDITY_SECONDS}}, f)
            return ["pebble", "-config", config, "-dnsserver", f"127.0.0.1:{dns_port}"]
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        return start_on_free_ports(w, "pebble", argv, r"ACME directory available at",
                                   env=env)

    pebble, (acme_port, management_port) = start_pebble()
    directory = f"https://127.0.0.1:{acme_port}/dir"
    root = os.path.join(w.tmpdir, "pebble-root.pem")
    code, body, err = curl_https("127.0.0.1", management_port, "/roots/0", pebble_cert)
    if code != 0 or b"BEGIN CERTIFICATE" not in body:
        raise Failure(f"pebble's root: curl exit {code}: {err}")
    with open(root, "wb") as f:
        f.write(body)

    site, page = w.site_with_page("acme from home")
    web, web_port = w.serve_directory(site)

    state = nf.state_dir("home")
    argv = [nf.peer_bin, "--relay", relay_addr, "--name", "home", "--state-dir", state,
            "--publish", f"https:{web_port}", "--acme-directory", directory,
            "--acme-email", "admin@example.org", "--acme-ca-file", pebble_cert]
    home = w.group.start("peer --publish https (acme)", argv)
    home.wait_stdout(r"^published ", timeout=scaled(60), what="published ready line")
    line = next(l for l in home.stdout_lines if l.startswith("published "))
    for step in ("registering the account key", "ordering a certificate",
                 "answering the tls-alpn-01 challenge", "finalizing with a CSR"):
        home.wait_stderr(re.escape(f"acme {host}: {step}"), timeout=5, what=step)
    crt = os.path.join(state, "acme", f"{host}.crt")
    not_after = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-enddate",
                                "-dateopt", "iso_8601"], check=True, capture_output=True,
                               text=True).stdout.strip().split("=", 1)[1][:10]
    expected = (f"published https://{host}/ -> 127.0.0.1:{web_port} "
                f"(certificate from ACME, expires {not_after})")
    if line != expected:
        raise Failure(f"ready line {line!r}, expected {expected!r}")
    print(line)
    for name in (f"{host}.crt", f"{host}.key", "account.key"):
        mode = stat.S_IMODE(os.stat(os.path.join(state, "acme", name)).st_mode)
        if mode != 0o600:
            raise Failure(f"acme/{name} has mode {oct(mode)}, not 0600")

    code, body, err = curl_https(host, relay_port, "/index.html", root)
    if code != 0 or body != page:
        raise Failure(f"curl trusting pebble's root: exit {code}, {body[:200]!r} {err}\n"
                      f"{home.describe()}")
    print("curl trusting only pebble's root loads the page through the relay")

    # A failed challenge, beside the renewal below: the CA cannot reach this peer.
    astray_host = f"astray.{DOMAIN}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{dns_management}/add-a", method="POST",
        data=json.dumps({"host": astray_host + ".", "addresses": ["127.0.0.2"]}).encode())
    with urllib.request.urlopen(request, timeout=scaled(10)) as answer:
        if answer.status != 200:
            raise Failure(f"pebble-challtestsrv add-a: HTTP {answer.status}")
    astray = w.group.start("peer --publish https (challenge fails)", [
        nf.peer_bin, "--relay", relay_addr, "--name", "astray", "--state-dir",
        nf.state_dir("astray"), "--publish", f"https:{web_port}", "--acme-directory",
        directory, "--acme-ca-file", pebble_cert])

    # Renewal while visitors come and go: a connection from before keeps its
    # certificate and still gets the page after the swap.
    context = ssl.create_default_context(cafile=root)
    early = context.wrap_socket(socket.create_connection(("127.0.0.1", relay_port),
                                                         timeout=scaled(30)),
                                server_hostname=host)
    old_der = early.getpeercert(binary_form=True)
    home.wait_stderr(re.escape(f"acme {host}: serving the renewed certificate"),
                     timeout=scaled(VALIDITY_SECONDS + 15), what="renewal")
    early.sendall(f"GET /index.html HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    answer = b""
    while chunk := early.recv(65536):
        answer += chunk
    early.close()
    if not answer.endswith(page):
        raise Failure(f"a connection from before the renewal: {answer[:300]!r}")
    with context.wrap_socket(socket.create_connection(("127.0.0.1", relay_port),
                                                      timeout=scaled(30)),
                             server_hostname=host) as late:
        if late.getpeercert(binary_form=True) == old_der:
            raise Failure("a visitor after the renewal still got the old certificate")
    print("renewed during the run: open connection served, new visitors get the new "
          "certificate")
    not_after = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-enddate",
                                "-dateopt", "iso_8601"], check=True, capture_output=True,
                               text=True).stdout.strip().split("=", 1)[1][:10]
    expected = (f"published https://{host}/ -> 127.0.0.1:{web_port} "
                f"(certificate from ACME, expires {not_after})")

    failed = astray.wait_stderr(
        re.escape(f"acme {astray_host}: no certificate: ") + r"(.+); next try in (\d+) s$",
        timeout=scaled(30), what="failed challenge line")
    if "127.0.0.2" not in failed.group(1) or int(failed.group(2)) != 60:
        raise Failure(f"the failed challenge's line: {failed.group(0)!r}")
    lines = [l for l in astray.stderr_lines if f"acme {astray_host}: no certificate" in l]
    if len(lines) != 1:
        raise Failure(f"a failed challenge gave {len(lines)} lines: {lines}")
    print(f"failed challenge: {failed.group(0).split('] ')[-1]}")
    code, _, err = curl_https(astray_host, relay_port, "/", root)
    if code == 0:
        raise Failure("a visitor got a page from a peer whose challenge failed")
    acme_hello = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    acme_hello.check_hostname = False
    acme_hello.verify_mode = ssl.CERT_NONE
    acme_hello.set_alpn_protocols(["acme-tls/1"])
    try:
        with acme_hello.wrap_socket(socket.create_connection(("127.0.0.1", relay_port),
                                                             timeout=scaled(30)),
                                    server_hostname=astray_host) as s:
            raise Failure(f"after the failed challenge an acme-tls/1 handshake got a "
                          f"certificate: {s.getpeercert(binary_form=True)[:40]!r}")
    except (ssl.SSLError, ConnectionError):
        pass
    astray.check_running("after the failed challenge")
    print("failed challenge: the peer runs on and serves no certificate")

    # The CA goes away; the restarted peer needs it not.
    pebble.stop()
    home.stop()
    again = w.group.start("peer --publish https (acme, restarted)", argv)
    again.wait_stdout(r"^published ", timeout=scaled(30), what="published again")
    line = next(l for l in again.stdout_lines if l.startswith("published "))
    if line != expected:
        raise Failure(f"after a restart: {line!r}, expected {expected!r}")
    again.wait_stderr(r"using the stored certificate", timeout=5, what="stored certificate")
    code, body, err = curl_https(host, relay_port, "/index.html", root)
    if code != 0 or body != page:
        raise Failure(f"after a restart: curl exit {code}, {err}\n{again.describe()}")
    print("restarted with pebble down: the stored certificate is served")

    # A CA that is down: one line, the peer keeps going, no certificate is served.
    other_host = f"other.{DOMAIN}"
    other = w.group.start("peer --publish https (CA down)", [
        nf.peer_bin, "--relay", relay_addr, "--name", "other", "--state-dir",
        nf.state_dir("other"), "--publish", f"https:{web_port}", "--acme-directory",
        directory, "--acme-ca-file", pebble_cert])
    m = other.wait_stderr(re.escape(f"acme {other_host}: no answer from the CA for the "
                                    "directory") + r".*; trying again",
                          timeout=scaled(30), what="CA down line")
    print(f"CA down: {m.group(0)}")
    code, _, err = curl_https(other_host, relay_port, "/", root)
    if code == 0:
        raise Failure("a visitor got a page while the peer has no certificate")
    other.check_running("with the CA down")
    again.check_running("at the end")
    relay.check_running("at the end")
    dns.check_running("at the end")


if __name__ == "__main__":
    run(test)

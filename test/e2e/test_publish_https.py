#!/usr/bin/env python3
"""Publishing over HTTPS terminated at home: the relay passes the visitor's TLS through
by SNI, the serving peer terminates it with the certificate it was given and carries
plain HTTP/1.1 to `python3 -m http.server` at home.

- `peer --publish https:PORT --publish-cert FILE --publish-key FILE` (what
  `,cert=FILE,key=FILE` says, which the basic-auth publish uses) prints exactly
  `published https://home.DOMAIN/ -> 127.0.0.1:PORT (certificate from FILE, expires
  YYYY-MM-DD)` with the certificate's own notAfter date;
- curl trusting only that certificate (--cacert, --resolve to the relay's TLS port)
  loads the page over TLS 1.3 and over TLS 1.2 (--tls-max 1.2), ALPN http/1.1, with
  a forward-secret AEAD suite; a 4 MB file arrives byte for byte;
- the relay's --publish-http port answers http://home.DOMAIN/PATH with a 308 redirect
  to https://home.DOMAIN/PATH (the peer told it the publish ends TLS at home);
- `,auth=FILE` on an https publish (a second peer, "locked"): the password is checked
  after home's TLS end; no credentials or a wrong password get a 401 page over TLS,
  the right ones the page;
- with home's web server stopped, the visitor gets a 502 page over TLS, not a reset;
- a spec without cert=/key= is refused with a line that says what is missing.
"""
import hashlib
import json
import os
import re
import subprocess

from harness import Failure, run, scaled

DOMAIN = "share.test"
BIG_BYTES = 4 << 20


def curl_https(host, port, path, cacert, extra=(), max_time=60):
    """(exit status, body, verbose stderr) of a visitor's curl through the relay."""
    out = subprocess.run(
        ["curl", "-sS", "-v", "--max-time", str(scaled(max_time)), "--resolve",
         f"{host}:{port}:127.0.0.1", "--cacert", cacert, "-o", "-", *extra,
         f"https://{host}:{port}{path}"],
        capture_output=True, timeout=scaled(max_time) + 10)
    return out.returncode, out.stdout, out.stderr.decode(errors="replace")


def test(w):
    nf = w.natfwd
    relay, relay_addr = nf.relay(extra=["--publish-domain", DOMAIN, "--publish-http",
                                        "127.0.0.1:0", "--allow-publisher", "any"])
    relay_port = int(relay_addr.rsplit(":", 1)[1])
    http_port = int(re.search(r"publish http 127\.0\.0\.1:(\d+) ",
                              relay.stdout_lines[0]).group(1))
    host = f"home.{DOMAIN}"

    cert, key = w.self_signed_cert("home", host, days=3, dns=host)
    not_after = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-enddate",
                                "-dateopt", "iso_8601"], check=True, capture_output=True,
                               text=True).stdout.strip().split("=", 1)[1][:10]

    site, page = w.site_with_page("https from home")
    big = os.urandom(BIG_BYTES)
    with open(os.path.join(site, "big.bin"), "wb") as f:
        f.write(big)
    web, web_port = w.serve_directory(site)

    missing = subprocess.run([nf.peer_bin, "--relay", relay_addr, "--name", "home",
                              "--state-dir", nf.state_dir("nocert"), "--publish",
                              f"https:{web_port}"], capture_output=True, text=True,
                             timeout=scaled(30))
    if missing.returncode == 0 or "cert=FILE,key=FILE" not in missing.stderr:
        raise Failure(f"https without a certificate: exit {missing.returncode}, "
                      f"{missing.stderr!r}")

    home_dir = nf.state_dir("home")
    # --publish-cert/--publish-key here; the basic-auth publish below says cert=/key=.
    home = w.group.start("peer --publish https", [
        nf.peer_bin, "--relay", relay_addr, "--name", "home", "--state-dir",
        home_dir, "--publish", f"https:{web_port}", "--publish-cert", cert, "--publish-key",
        key])
    home.wait_stdout(r"^published ", timeout=30, what="published ready line")
    line = next(l for l in home.stdout_lines if l.startswith("published "))
    expected = (f"published https://{host}/ -> 127.0.0.1:{web_port} "
                f"(certificate from {cert}, expires {not_after})")
    if line != expected:
        raise Failure(f"ready line {line!r}, expected {expected!r}")
    # `peer status` lists the https publish with the URL visitors open.
    status = subprocess.run([nf.peer_bin, "status", "--state-dir", home_dir, "--json"],
                            capture_output=True, text=True, timeout=30)
    publishes = json.loads(status.stdout or "{}").get("publishes", [])
    if [(p.get("kind"), p.get("url")) for p in publishes] != [("https", f"https://{host}/")]:
        raise Failure(f"peer status --json publishes {publishes!r} (exit {status.returncode}, "
                      f"{status.stderr.strip()!r}), want https at https://{host}/")
    print(f"peer status: https publish at https://{host}/")

    for label, extra, version in [("TLS 1.3", [], "TLSv1.3"),
                                  ("TLS 1.2", ["--tls-max", "1.2"], "TLSv1.2")]:
        code, body, verbose = curl_https(host, relay_port, "/index.html", cert, extra)
        if code != 0 or body != page:
            raise Failure(f"{label}: curl exit {code}, body {body[:200]!r}\n{verbose}\n"
                          f"{home.describe()}")
        suite = re.search(r"SSL connection using (\S+) / (\S+)", verbose)
        if not suite or suite.group(1) != version:
            raise Failure(f"{label}: negotiated {suite and suite.groups()}\n{verbose}")
        if not re.search(r"(GCM|CHACHA20)", suite.group(2)) or (
                version == "TLSv1.2" and not suite.group(2).startswith("ECDHE")):
            raise Failure(f"{label}: suite {suite.group(2)} is not forward-secret AEAD")
        if not re.search(r"ALPN[:,] server accepted (to use )?http/1\.1", verbose):
            raise Failure(f"{label}: ALPN http/1.1 not accepted\n{verbose}")
        print(f"{label}: {suite.group(2)}, ALPN http/1.1, page from home")

    redirect = subprocess.run(
        ["curl", "-sS", "--max-time", str(scaled(30)), "--resolve",
         f"{host}:{http_port}:127.0.0.1", "-o", "/dev/null", "-w",
         "%{http_code} %{redirect_url}", f"http://{host}:{http_port}/index.html?a=1"],
        capture_output=True, text=True, timeout=scaled(30) + 10)
    if redirect.stdout != f"308 https://{host}/index.html?a=1":
        raise Failure(f"plain http to an https publish: {redirect.stdout!r} "
                      f"{redirect.stderr!r}\n{relay.describe()}")
    print(f"http://{host}/index.html?a=1 -> 308 https://{host}/index.html?a=1")

    # A figure for the note (loopback, no assertion): TLS handshake and first byte.
    code, body, _ = curl_https(host, relay_port, "/index.html", cert,
                               ["-w", "\n%{time_appconnect} %{time_starttransfer}"])
    if code == 0:
        handshake, first_byte = (float(x) for x in body.rsplit(b"\n", 1)[1].split())
        print(f"handshake done after {handshake * 1000:.1f} ms, first byte after "
              f"{first_byte * 1000:.1f} ms (one visitor, loopback)")

    code, body, verbose = curl_https(host, relay_port, "/big.bin", cert)
    if code != 0 or hashlib.sha256(body).digest() != hashlib.sha256(big).digest():
        raise Failure(f"big file: curl exit {code}, {len(body)} of {BIG_BYTES} bytes\n"
                      f"{verbose[-2000:]}")
    print(f"{BIG_BYTES} bytes byte for byte over https")

    locked_host = f"locked.{DOMAIN}"
    locked_cert, locked_key = w.self_signed_cert("locked", locked_host, days=3,
                                                 dns=locked_host)
    users = os.path.join(w.tmpdir, "users")
    with open(users, "w") as f:
        f.write("alice:" + subprocess.run(["openssl", "passwd", "-6", "secret"],
                                          capture_output=True, check=True,
                                          text=True).stdout)
    locked = w.group.start("peer --publish https,auth=", [
        nf.peer_bin, "--relay", relay_addr, "--name", "locked", "--state-dir",
        nf.state_dir("locked"), "--publish",
        f"https:{web_port},cert={locked_cert},key={locked_key},auth={users}"])
    locked.wait_stdout(r"^published https://locked\.", timeout=30,
                       what="published ready line (auth=)")
    for label, extra, status in [("no credentials", [], b"401"),
                                 ("wrong password", ["-u", "alice:nope"], b"401"),
                                 ("right password", ["-u", "alice:secret"], b"200")]:
        code, body, verbose = curl_https(locked_host, relay_port, "/index.html", locked_cert,
                                         [*extra, "-w", "\n%{http_code}"])
        if code != 0 or not body.endswith(b"\n" + status) or \
                (status == b"200") != body.startswith(page):
            raise Failure(f"https with auth=, {label}: curl exit {code}, {body[-300:]!r}\n"
                          f"{verbose[-1500:]}\n{locked.describe()}")
        if status == b"401" and b'realm="locked"' not in verbose.encode() + body:
            raise Failure(f"https with auth=, {label}: no challenge\n{verbose}")
    print("https with auth=: 401 over TLS without the password, the page with it")
    locked.stop()

    web.stop()
    code, body, verbose = curl_https(host, relay_port, "/index.html", cert,
                                     ["-w", "\n%{http_code}"])
    if code != 0 or not body.endswith(b"\n502"):
        raise Failure(f"target down: curl exit {code}, {body[-200:]!r}\n{verbose}")
    print("target down: 502 page over TLS")
    home.check_running("at the end")
    relay.check_running("at the end")


if __name__ == "__main__":
    run(test)

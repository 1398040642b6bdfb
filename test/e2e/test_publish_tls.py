#!/usr/bin/env python3
"""Publishing by TLS passthrough: a visitor reaches a home TLS server (openssl s_server
with its own certificate) through the relay's TLS port, routed by SNI and never
terminated at the relay.

- `peer --publish tls:PORT` prints exactly
  `published https://home.DOMAIN/ -> 127.0.0.1:PORT (tls passthrough)`;
- curl --resolve to the relay's main port, verifying against the home server's own
  certificate only (--cacert), gets s_server's page: the chain came from home;
- an unknown NAME meets the relay's own certificate and fails at once (no hang);
- a peer reaching the relay over TLS without SNI (the home peer itself) still gets
  the rendezvous, and `--allow-publisher any` lets any key publish.
"""
import re
import subprocess
import time

from harness import Failure, run, scaled

DOMAIN = "share.test"


def curl_tls(host, port, cacert, max_time):
    return subprocess.run(
        ["curl", "-sS", "--max-time", str(scaled(max_time)), "--resolve",
         f"{host}:{port}:127.0.0.1", "--cacert", cacert, f"https://{host}:{port}/"],
        capture_output=True, timeout=scaled(max_time) + 10)


def test(w):
    nf = w.natfwd
    relay, relay_addr = nf.relay(extra=["--publish-domain", DOMAIN, "--publish-http",
                                        "127.0.0.1:0", "--allow-publisher", "any"])
    if not re.search(rf"publish http 127\.0\.0\.1:\d+ https \*\.{re.escape(DOMAIN)}\)$",
                     relay.stdout_lines[0]):
        raise Failure(f"relay ready line: {relay.stdout_lines[0]!r}")
    relay_port = int(relay_addr.rsplit(":", 1)[1])

    cert, key = w.self_signed_cert("home", f"home.{DOMAIN}", dns=f"home.{DOMAIN}")
    server = w.group.start("openssl s_server", [
        "openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", cert, "-key", key, "-www"])
    tls_port = int(server.wait_stdout(r"^ACCEPT 127\.0\.0\.1:(\d+)", timeout=30,
                                      what="s_server's ACCEPT line").group(1))

    home_dir = nf.state_dir("home")
    home = w.group.start("peer --publish tls", [
        nf.peer_bin, "--relay", relay_addr, "--name", "home", "--state-dir", home_dir,
        "--publish", f"tls:{tls_port}"])
    home.wait_stdout(r"^published ", timeout=30, what="published ready line")
    line = next(l for l in home.stdout_lines if l.startswith("published "))
    expected = f"published https://home.{DOMAIN}/ -> 127.0.0.1:{tls_port} (tls passthrough)"
    if line != expected:
        raise Failure(f"ready line {line!r}, expected {expected!r}")

    out = curl_tls(f"home.{DOMAIN}", relay_port, cert, 60)
    if out.returncode != 0 or b"s_server" not in out.stdout:
        raise Failure(f"TLS through the relay: curl exit {out.returncode}: "
                      f"{out.stderr.decode(errors='replace')}\n{relay.describe()}\n"
                      f"{home.describe()}")
    print(f"https://home.{DOMAIN}:{relay_port}/ answered by home's own certificate")

    started = time.monotonic()
    out = curl_tls(f"nobody.{DOMAIN}", relay_port, cert, 10)
    if out.returncode == 0:
        raise Failure("an unknown name was answered with a certificate home signed")
    print(f"unknown name refused by TLS in {time.monotonic() - started:.2f} s "
          f"(curl exit {out.returncode})")
    home.check_running("at the end")
    relay.check_running("at the end")


if __name__ == "__main__":
    run(test)

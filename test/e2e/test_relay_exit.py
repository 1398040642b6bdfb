#!/usr/bin/env python3
"""The relay exits promptly on SIGTERM with everything live.

A relay that publishes (front door on), a home peer that serves and publishes http, a
`peer -L --force-relay` whose tunnel runs through the relay's TURN (an allocation with
a permission and a channel, bytes moving), and a visitor's kept-alive connection on the
front door whose tunnel from the relay to home is open. SIGTERM: the relay must exit 0
within a generous bound (10 s; the time is printed, not asserted tighter), and both
peers keep running.
"""
import os
import re
import signal
import subprocess
import time

from harness import Failure, connect, echo, run, scaled

DOMAIN = "share.test"
EXIT_BOUND_S = 10


def test(w):
    nf = w.natfwd
    target = w.target(echo)
    home_dir = nf.state_dir("home")
    home_id = nf.key_id(home_dir)
    nf.client_state_dir()
    relay, relay_addr = nf.relay(extra=["--allow-peer", "127.0.0.0/8",
                                        "--publish-domain", DOMAIN, "--publish-http",
                                        "127.0.0.1:0", "--allow-publisher", home_id])
    http_port = int(re.search(r"publish http 127\.0\.0\.1:(\d+)", relay.stdout_lines[0]).group(1))

    site = os.path.join(w.tmpdir, "site")
    os.makedirs(site)
    with open(os.path.join(site, "index.html"), "wb") as f:
        f.write(b"home page\n")
    _, web_port = w.serve_directory(site)
    home = w.group.start("peer --serve --publish", [
        nf.peer_bin, "--relay", relay_addr, "--name", "home", "--state-dir", home_dir,
        "--allow", nf.client_id, "--serve", target.addr, "--publish", f"http:{web_port}"])
    home.wait_stdout(r"^published ", timeout=30, what="published ready line")

    fwd, (laddr,) = nf.forward(relay_addr, "home", [f"0:{target.addr}"],
                               extra=["--force-relay"])
    tunnel = connect(laddr, timeout=scaled(60))
    tunnel.sendall(b"relayed\n")
    if tunnel.recv(64) != b"relayed\n":
        raise Failure("no echo through the relayed tunnel")
    fwd.wait_stdout(r"^path home: relayed via turn-", 30, what="the relayed path line")

    visitor = connect(f"127.0.0.1:{http_port}", timeout=scaled(60))
    visitor.sendall(f"GET /index.html HTTP/1.1\r\nHost: home.{DOMAIN}\r\n\r\n".encode())
    got = b""
    while b"home page\n" not in got:
        chunk = visitor.recv(65536)
        if not chunk:
            raise Failure(f"the visitor's connection closed early: {got!r}")
        got += chunk
    # Both held open: the visitor's connection (keep-alive) and the relayed stream.

    started = time.monotonic()
    relay.send_signal(signal.SIGTERM)
    try:
        code = relay.popen.wait(timeout=scaled(EXIT_BOUND_S))
    except subprocess.TimeoutExpired:
        code = None
    took = time.monotonic() - started
    if code is None:
        raise Failure(f"the relay did not exit within {scaled(EXIT_BOUND_S):.0f} s of SIGTERM "
                      f"with a TURN allocation, a relayed tunnel and a front-door visitor live"
                      f"\n{relay.describe()}")
    if code != 0:
        raise Failure(f"the relay exited {code} on SIGTERM, want 0\n{relay.describe()}")
    home.check_running("after the relay's exit")
    fwd.check_running("after the relay's exit")
    for s in (tunnel, visitor):
        s.close()
    print(f"relay exited 0 {took * 1000:.0f} ms after SIGTERM with a TURN allocation, a "
          "relayed tunnel and a front-door visitor live", flush=True)


if __name__ == "__main__":
    run(test)

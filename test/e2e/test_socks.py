#!/usr/bin/env python3
"""A real curl through `peer -D`: SOCKS5 with host names (--socks5-hostname), plain
SOCKS5 with an IP, SOCKS4 and SOCKS4a.

The test runs two HTTP servers of its own on 127.0.0.1:0; the serving peer serves
only the first (as 127.0.0.1:PORT and as localhost:PORT) plus a port where nothing
listens. curl must fetch the file through every SOCKS flavour, be refused with
"connection not allowed by ruleset" (SOCKS5 reply 2, SOCKS4 rejected) for the second
server, which must see no request at all, and get "connection refused" (reply 5) for
the served port where nothing listens.
"""
import functools
import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import threading

from harness import SKIP, Failure, run, scaled, split_hostport

SOCKS_RE = r"^listening on (\S+) -> home socks$"


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        self.server.hits += 1
        super().do_GET()


def http_server(directory):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(CountingHandler, directory=directory))
    server.hits = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def curl(flag, proxy, url):
    argv = ["curl", "-sS", "--max-time", str(int(scaled(60))), flag, proxy, url]
    try:
        return subprocess.run(argv, capture_output=True, timeout=scaled(90))
    except subprocess.TimeoutExpired:
        raise Failure(f"curl did not finish: {argv}") from None


def test(w):
    docroot = os.path.join(w.tmpdir, "www")
    os.mkdir(docroot)
    body = os.urandom(256 * 1024)
    with open(os.path.join(docroot, "file.bin"), "wb") as f:
        f.write(body)
    served = http_server(docroot)
    unserved = http_server(docroot)
    for server in (served, unserved):
        w.on_cleanup(server.shutdown)
    port, other = served.server_address[1], unserved.server_address[1]
    dead = closed_port()

    _, relay_addr = w.natfwd.relay()
    w.natfwd.serve(relay_addr, "home", [f"127.0.0.1:{port}", f"localhost:{port}",
                                        f"127.0.0.1:{dead}"])
    fwd, _ = w.natfwd.forward(relay_addr, "home", [], extra=["-D", "0"])
    proxy = fwd.wait_stdout(SOCKS_RE, 30, what="the -D ready line").group(1)

    fetches = [("--socks5-hostname", f"http://localhost:{port}/file.bin"),
               ("--socks5-hostname", f"http://127.0.0.1:{port}/file.bin"),
               ("--socks5", f"http://127.0.0.1:{port}/file.bin"),
               ("--socks4a", f"http://localhost:{port}/file.bin"),
               ("--socks4", f"http://127.0.0.1:{port}/file.bin")]
    for flag, url in fetches:
        r = curl(flag, proxy, url)
        if r.returncode != 0 or r.stdout != body:
            raise Failure(f"curl {flag} {url}: exit {r.returncode}, {len(r.stdout)} bytes "
                          f"(want {len(body)}), {r.stderr.decode(errors='replace')}\n{fwd.describe()}")
    if served.hits != len(fetches):
        raise Failure(f"the served HTTP server saw {served.hits} requests, want {len(fetches)}")

    refusals = [("--socks5-hostname", f"http://127.0.0.1:{other}/file.bin", r"SOCKS5.*\(2\)"),
                ("--socks5-hostname", f"http://localhost:{other}/file.bin", r"SOCKS5.*\(2\)"),
                ("--socks4a", f"http://localhost:{other}/file.bin", r"SOCKS4.*rejected"),
                ("--socks5-hostname", f"http://127.0.0.1:{dead}/", r"SOCKS5.*\(5\)")]
    for flag, url, pattern in refusals:
        r = curl(flag, proxy, url)
        err = r.stderr.decode(errors="replace")
        if r.returncode != 97 or r.stdout or not re.search(pattern, err):
            raise Failure(f"curl {flag} {url}: want exit 97 and /{pattern}/, got exit "
                          f"{r.returncode}, stdout {r.stdout[:100]!r}, stderr {err!r}")
    if unserved.hits:
        raise Failure(f"the unserved HTTP server got {unserved.hits} requests through -D")
    fwd.check_running("after the SOCKS refusals")

    # Local connections that never finish their handshake cannot shut the listener:
    # the oldest pending one makes room for a new client (before, 64 of them refused
    # every client until they timed out).
    idle = [socket.create_connection(split_hostport(proxy), timeout=10) for _ in range(100)]
    try:
        flag, url = fetches[0]
        r = curl(flag, proxy, url)
        if r.returncode != 0 or r.stdout != body:
            raise Failure(f"curl with 100 idle SOCKS connections open: exit {r.returncode}, "
                          f"{r.stderr.decode(errors='replace')}")
    finally:
        for s in idle:
            s.close()
    print(f"curl through -D: {len(fetches)} fetches (socks5 host name and IP, socks4, "
          f"socks4a) intact; unserved refused with reply 2, dead port with reply 5")


def main():
    if not shutil.which("curl"):
        print("SKIP: curl is not installed")
        sys.exit(SKIP)
    run(test)


if __name__ == "__main__":
    main()

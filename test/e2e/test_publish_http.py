#!/usr/bin/env python3
"""Publishing over HTTP: a visitor with only curl reaches a home web server through the
relay's front door, routed by Host NAME.DOMAIN.

- `python3 -m http.server` at home, `peer --publish http:PORT` prints exactly
  `published http://home.DOMAIN/ -> 127.0.0.1:PORT`, and curl (--resolve) loads a page
  over a direct path from the relay to home (the relay's path line);
- an unknown NAME gets a 404 page at once, a malformed request a 400 page;
- a peer whose key is not an allowed publisher is refused at registration: one relay
  log line names its key, and the peer exits with a clear error;
- with home's web server stopped, a visitor gets a 502 page, not a reset;
- two visitors at once, one that stops reading a large download, do not block each
  other: once home has sent the stalled one a whole stream window (peer status), the
  other page still loads (a tunnel-wide window the size of a stream's makes this
  fail), and the stalled one then completes byte for byte.
"""
import hashlib
import json
import os
import re
import socket
import subprocess
import time

from harness import Failure, recv_all, run, scaled, wait_until

DOMAIN = "share.test"
BIG_BYTES = 32 << 20  # well beyond the stream window and socket buffers
STREAM_WINDOW = 16 << 20  # peer/quic/quic_connection.h, stream_window


def curl(host, port, path, max_time=60):
    """curl as a visitor would, with the name resolved to the relay; (status, body)."""
    out = subprocess.run(
        ["curl", "-sS", "--max-time", str(scaled(max_time)), "--resolve",
         f"{host}:{port}:127.0.0.1", "-o", "-", "-w", "\n%{http_code}",
         f"http://{host}:{port}{path}"],
        capture_output=True, timeout=scaled(max_time) + 10)
    body, _, code = out.stdout.rpartition(b"\n")
    if out.returncode != 0:
        raise Failure(f"curl {host}{path} failed ({out.returncode}): {out.stderr.decode()}")
    return int(code), body


def test(w):
    nf = w.natfwd
    home_dir = nf.state_dir("home")
    home_id = nf.key_id(home_dir)
    relay, relay_addr = nf.relay(extra=["--publish-domain", DOMAIN, "--publish-http",
                                        "127.0.0.1:0", "--allow-publisher", home_id])
    m = re.search(r"publish http 127\.0\.0\.1:(\d+) https \*\.share\.test\)$",
                  relay.stdout_lines[0])
    if not m:
        raise Failure(f"relay ready line without the publish part: {relay.stdout_lines[0]!r}")
    http_port = int(m.group(1))

    site, page = w.site_with_page("published from home")
    big = os.urandom(BIG_BYTES)
    with open(os.path.join(site, "big.bin"), "wb") as f:
        f.write(big)
    web, web_port = w.serve_directory(site)

    home = w.group.start("peer --publish", [
        nf.peer_bin, "--relay", relay_addr, "--name", "home", "--state-dir", home_dir,
        "--publish", f"http:{web_port}"])
    home.wait_stdout(r"^published ", timeout=30, what="published ready line")
    full = next(l for l in home.stdout_lines if l.startswith("published "))
    expected = f"published http://home.{DOMAIN}/ -> 127.0.0.1:{web_port}"
    if full != expected:
        raise Failure(f"ready line {full!r}, expected {expected!r}")

    # The page loads.
    status, body = curl(f"home.{DOMAIN}", http_port, "/index.html")
    if status != 200 or body != page:
        raise Failure(f"page through the front door: HTTP {status}, {len(body)} bytes\n"
                      f"{relay.describe()}\n{home.describe()}")
    # The relay reached home as a peer does, and over a direct path (both are public
    # here): its tunnel prints the same path line as `peer -L`.
    path = relay.wait_stdout(r"^path home: (.*)$", timeout=10,
                             what="the front door's path line")
    if not path.group(1).startswith("direct udp"):
        raise Failure(f"the front door's tunnel is not direct: {path.group(0)!r}")
    print(f"page loaded through http://home.{DOMAIN}:{http_port}/ ({path.group(0)})")

    # Unknown NAME: 404 at once; garbage: 400 at once.
    started = time.monotonic()
    status, body = curl(f"nobody.{DOMAIN}", http_port, "/", max_time=10)
    if status != 404 or b"not published" not in body:
        raise Failure(f"unknown name: HTTP {status}: {body[:200]!r}")
    with socket.create_connection(("127.0.0.1", http_port), timeout=scaled(10)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    if not answer.startswith(b"HTTP/1.1 400 "):
        raise Failure(f"request without Host: {answer[:100]!r}")
    print(f"404 for an unknown name and 400 for no Host in {time.monotonic() - started:.2f} s")

    # Two visitors: one stalls a large download, the other still gets its page, then
    # the first completes.
    slow = socket.create_connection(("127.0.0.1", http_port), timeout=scaled(60))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    slow.sendall(f"GET /big.bin HTTP/1.1\r\nHost: home.{DOMAIN}\r\n\r\n".encode())
    first = slow.recv(1024)
    if not first.startswith(b"HTTP/1.0 200"):
        raise Failure(f"large download did not start: {first[:100]!r}")
    # Wait until home has sent a whole stream window to the stalled visitor: from then
    # on only flow control per stream (not per tunnel) lets a second visitor through.
    def home_sent():
        out = subprocess.run([nf.peer_bin, "status", "--state-dir", home_dir, "--json"],
                             capture_output=True, text=True, timeout=scaled(20))
        return sum(t["bytes_sent"] for t in json.loads(out.stdout)["tunnels"])
    wait_until(lambda: home_sent() >= STREAM_WINDOW, 30,
               "home to fill the stalled visitor's stream window")
    stalled_at = time.monotonic()
    status, body = curl(f"home.{DOMAIN}", http_port, "/index.html", max_time=30)
    if status != 200 or body != page:
        raise Failure(f"second visitor beside a stalled one: HTTP {status}")
    print(f"second visitor served in {time.monotonic() - stalled_at:.2f} s while the first "
          f"one read nothing and home had sent it {home_sent() >> 20} MiB")
    count, digest = recv_all(slow)
    slow.close()
    head_end = first.find(b"\r\n\r\n")  # the head and the start of the body
    if head_end < 0:
        raise Failure("the response head did not fit the first read")
    head_len = head_end + 4
    got = len(first) - head_len + count
    if got != BIG_BYTES:
        raise Failure(f"stalled download completed with {got} of {BIG_BYTES} bytes")
    # recv_all hashed only the rest: check the whole body from its parts.
    rest_hash = hashlib.sha256(big[len(first) - head_len:]).hexdigest()
    if digest != rest_hash or first[head_len:] != big[:len(first) - head_len]:
        raise Failure("stalled download's bytes differ from the file")
    print(f"stalled visitor then completed {BIG_BYTES} bytes intact")

    # A key that is not an allowed publisher: refused at registration, named in the log.
    stranger_dir = nf.state_dir("stranger")
    stranger_id = nf.key_id(stranger_dir)
    stranger = w.group.start("peer --publish (stranger)", [
        nf.peer_bin, "--relay", relay_addr, "--name", "stranger", "--state-dir", stranger_dir,
        "--publish", f"http:{web_port}"])
    code = stranger.wait_exit(timeout=scaled(30))
    if code != 3:  # a lasting refusal: the unit does not restart it
        raise Failure(f"refused publisher exited {code}, not 3\n{stranger.describe()}")
    if not any("may not publish" in l and stranger_id in l for l in stranger.stderr_lines):
        raise Failure(f"the refused peer did not say why\n{stranger.describe()}")
    relay.wait_stderr(rf"refused publisher {stranger_id} ", timeout=10,
                      what="the relay's refusal line")
    refusals = [l for l in relay.stderr_lines if "refused publisher" in l]
    if len(refusals) != 1:
        raise Failure(f"{len(refusals)} refusal lines, expected 1: {refusals}")
    status, _ = curl(f"stranger.{DOMAIN}", http_port, "/", max_time=10)
    if status != 404:
        raise Failure(f"a refused publisher's name answered HTTP {status}")
    print("a key that is not an allowed publisher was refused with one log line")

    # Home's web server gone: a 502 page at once, not a reset or a hang.
    web.stop()
    status, body = curl(f"home.{DOMAIN}", http_port, "/index.html", max_time=20)
    if status != 502 or b"did not answer" not in body:
        raise Failure(f"with home's server stopped: HTTP {status}: {body[:200]!r}")
    print("home's server stopped: 502 page")
    home.check_running("at the end")
    relay.check_running("at the end")


if __name__ == "__main__":
    run(test)

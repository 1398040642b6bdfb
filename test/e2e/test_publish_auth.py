#!/usr/bin/env python3
"""Basic auth of a published web server, checked at home (`--publish
http:PORT,auth=FILE`), with the home peer configured by a `[publish NAME]` group of
its --config file.

- curl with a right user and password (an apr1 and a SHA-512-crypt line of the file,
  made by `openssl passwd`) gets the page, and the target sees the request unchanged,
  Authorization included; two requests on one kept-alive connection both pass;
- a wrong password and no credentials get a 401 page with `WWW-Authenticate: Basic
  realm="home"`, and the target sees no request head;
- on one connection, an authorised request then one without credentials: the first
  answer arrives, then the connection ends without a second one;
- `peer status` lists the publish with its URL, "basic auth" and the visitors.
"""
import base64
import os
import re
import socket
import subprocess
import threading

from harness import Failure, connect, run, scaled
from test_publish_forwarded import DOMAIN, publishing_relay

HEADS = []
LOCK = threading.Lock()


def keepalive_web(conn, _index):
    """A keep-alive web server: answers each request head with a short page, and
    records the heads it saw."""
    data = b""
    while True:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        with LOCK:
            HEADS.append(head + b"\r\n\r\n")
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")


def passwd(*args):
    return subprocess.run(["openssl", "passwd", *args], capture_output=True, check=True,
                          text=True).stdout.strip()


def curl(url, port, *extra):
    return subprocess.run(
        ["curl", "-sS", "--max-time", str(scaled(30)), "--resolve",
         f"home.{DOMAIN}:{port}:127.0.0.1", "-D", "-", "-o", "-", "-w", "\n%{http_code}",
         *extra, url], capture_output=True, timeout=scaled(40))


def test(w):
    nf = w.natfwd
    relay, relay_addr, http_port, _, _ = publishing_relay(nf)
    web = w.target(keepalive_web)
    users = os.path.join(w.tmpdir, "users")
    with open(users, "w") as f:
        f.write("# test users\nalice:%s\nbob:%s\n" % (
            passwd("-apr1", "secret"), passwd("-6", "hunter2")))
    state_dir = nf.state_dir("home")
    conf = os.path.join(w.tmpdir, "peer.conf")
    with open(conf, "w") as f:
        f.write(f"[peer]\nrelay = {relay_addr}\nname = home\nstate-dir = {state_dir}\n"
                f"[publish web]\nkind = http\ntarget = {web.port}\nauth = {users}\n")
    home = w.group.start("peer --config ([publish web])", [nf.peer_bin, "--config", conf])
    home.wait_stdout(r"^published http://home\.share\.test/ -> ", timeout=30,
                     what="published line")
    url = f"http://home.{DOMAIN}:{http_port}/"

    out = curl(url, http_port, "-u", "alice:secret")
    if not out.stdout.endswith(b"\nhello\n200"):
        raise Failure(f"alice: {out.stdout[-300:]!r} {out.stderr!r}\n{home.describe()}")
    with LOCK:
        seen = list(HEADS)
    token = base64.b64encode(b"alice:secret")
    if len(seen) != 1 or b"Authorization: Basic " + token not in seen[0]:
        raise Failure(f"the target saw {seen!r}")
    out = curl(url, http_port, "-u", "bob:hunter2", url + "again")
    if out.stdout.count(b"hello") != 2 or not out.stdout.endswith(b"200"):
        raise Failure(f"bob, two requests: {out.stdout[-300:]!r}")
    print("right credentials: pages served, request unchanged, keep-alive works")

    with LOCK:
        before = len(HEADS)
    for label, extra in (("wrong password", ["-u", "alice:nope"]), ("no credentials", [])):
        out = curl(url, http_port, *extra)
        if not out.stdout.endswith(b"\n401") or \
                b'WWW-Authenticate: Basic realm="home"' not in out.stdout:
            raise Failure(f"{label}: {out.stdout[-400:]!r}")
    with LOCK:
        if len(HEADS) != before:
            raise Failure(f"a refused request reached the target: {HEADS[before:]!r}")
    print("wrong and missing credentials: 401 with the realm, nothing reached the target")

    good = (f"GET /one HTTP/1.1\r\nHost: home.{DOMAIN}\r\n"
            f"Authorization: Basic {token.decode()}\r\n\r\n").encode()
    bare = f"GET /two HTTP/1.1\r\nHost: home.{DOMAIN}\r\n\r\n".encode()
    with connect(f"127.0.0.1:{http_port}", timeout=30) as s:
        s.sendall(good + bare)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    if data.count(b"HTTP/1.1 200") != 1 or b"hello" not in data or b"401" in data:
        raise Failure(f"a second request without credentials on one connection: {data!r}")
    with LOCK:
        if any(b"/two" in head for head in HEADS):
            raise Failure("the unauthorised second request reached the target")
    print("keep-alive: the request without credentials ended the connection")

    status = subprocess.run([nf.peer_bin, "--state-dir", state_dir, "status"],
                            capture_output=True, text=True, timeout=scaled(20))
    line = [l for l in status.stdout.splitlines() if l.startswith("published ")]
    if not line or not re.match(
            rf"published http://home\.share\.test/ -> 127\.0\.0\.1:{web.port}, basic auth, "
            r"\d+ visitors?$", line[0]):
        raise Failure(f"peer status: {status.stdout!r} {status.stderr!r}")
    print(f"peer status: {line[0]}")
    home.check_running("at the end")


if __name__ == "__main__":
    run(test)

#!/usr/bin/env python3
"""allow-from: the relay's front door lets through only visitors whose address is in a
publish's ranges, before anything reaches home.

- peer "open" publishes http and tcp with ranges that hold 127.0.0.1: the page loads
  and 64 KiB echo back;
- peer "shut" publishes http, tcp and tls with ranges that do not: HTTP gets a 403
  page, the tcp port and the TLS name close the connection, and none of its three
  targets ever sees a connection.
"""
import socket
import subprocess

from harness import Failure, connect_to_refused, echo, run, scaled
from test_publish_forwarded import head_echo, publishing_relay
from test_publish_tcp import echo_check

DOMAIN = "share.test"


def curl(host, port, max_time=60, scheme="http", extra=()):
    return subprocess.run(
        ["curl", "-sS", "--max-time", str(scaled(max_time)), "--resolve",
         f"{host}:{port}:127.0.0.1", "-o", "-", "-w", "\n%{http_code}", *extra,
         f"{scheme}://{host}:{port}/"],
        capture_output=True, timeout=scaled(max_time) + 10)


def test(w):
    nf = w.natfwd
    relay, relay_addr, http_port, relay_port, base = publishing_relay(nf)

    open_web, open_echo = w.target(head_echo), w.target(echo)
    shut_web, shut_tcp, shut_tls = w.target(head_echo), w.target(echo), w.target(echo)
    open_peer = w.group.start("peer open", [
        nf.peer_bin, "--relay", relay_addr, "--name", "open", "--state-dir",
        nf.state_dir("open"),
        "--publish", f"http:{open_web.port},allow-from=10.0.0.0/8,allow-from=127.0.0.1",
        "--publish", f"tcp:{base}:{open_echo.port},allow-from=127.0.0.0/8"])
    shut_peer = w.group.start("peer shut", [
        nf.peer_bin, "--relay", relay_addr, "--name", "shut", "--state-dir",
        nf.state_dir("shut"),
        "--publish", f"http:{shut_web.port},allow-from=10.0.0.0/8,allow-from=::1",
        "--publish", f"tcp:{base + 1}:{shut_tcp.port},allow-from=192.0.2.0/24",
        "--publish", f"tls:{shut_tls.port},allow-from=128.0.0.0/1"])
    open_peer.wait_stdout(rf"^published tcp://\S+:{base} ", timeout=30, what="open's lines")
    shut_peer.wait_stdout(r"^published https://", timeout=30, what="shut's lines")

    out = curl(f"open.{DOMAIN}", http_port)
    if out.returncode != 0 or not out.stdout.endswith(b"\n200"):
        raise Failure(f"allowed visitor: curl exit {out.returncode}: {out.stdout[-200:]!r} "
                      f"{out.stderr.decode(errors='replace')}\n{relay.describe()}")
    echo_check(f"127.0.0.1:{base}", size=64 << 10)
    print("127.0.0.1 in allow-from: page loaded, tcp echoed")

    out = curl(f"shut.{DOMAIN}", http_port, max_time=10)
    if out.returncode != 0 or not out.stdout.endswith(b"\n403") \
            or b"does not take visitors" not in out.stdout:
        raise Failure(f"refused visitor over http: curl exit {out.returncode}: "
                      f"{out.stdout[-300:]!r}")
    s = connect_to_refused(f"127.0.0.1:{base + 1}", timeout=10)
    data = b""
    if s is not None:
        with s:
            try:
                s.sendall(b"knock")
                data = s.recv(16)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
    if data:
        raise Failure(f"refused visitor over tcp got {data!r}")
    out = curl(f"shut.{DOMAIN}", relay_port, max_time=10, scheme="https", extra=["-k"])
    if out.returncode == 0:
        raise Failure(f"refused visitor over tls was answered: {out.stdout[-200:]!r}")
    # Each refusal happened at the relay: home's targets saw nothing. The allowed ones
    # prove that a connection would have shown up by now.
    if shut_web.accepted or shut_tcp.accepted or shut_tls.accepted:
        raise Failure(f"a refused visitor reached home: http {shut_web.accepted}, "
                      f"tcp {shut_tcp.accepted}, tls {shut_tls.accepted}")
    print("127.0.0.1 outside allow-from: 403 over http, closed over tcp and tls, "
          "nothing reached home")
    for proc in (open_peer, shut_peer, relay):
        proc.check_running("at the end")


if __name__ == "__main__":
    run(test)

#!/usr/bin/env python3
"""Publishing raw TCP: like `ssh -g -R PUBLICPORT:HOST:PORT`, a port of the relay's
--publish-ports range carries connections to a target at home.

- `peer --publish tcp:PORT` gets any free port of the range and `--publish
  tcp:PUBLICPORT:PORT` the one asked for; each prints exactly
  `published tcp://RELAYHOST:PUBLICPORT -> HOST:PORT`;
- 1 MiB echoed back intact through each published port, half close included;
- a port of the range that nobody publishes closes a connection at once.
"""
import random
import socket

from harness import Failure, connect, answer_of_refused, echo, recv_all, run, send_stream, PatternStream

PORTS = 3


def free_port_range(count):
    """`count` consecutive ports free on loopback now (the relay binds them next)."""
    for _ in range(200):
        base = random.randrange(30000, 60000 - count)
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise Failure(f"no {count} consecutive free ports found")


def echo_check(addr, size=1 << 20):
    with connect(addr, timeout=60) as s:
        sent = send_stream(s, PatternStream(addr, size))
        s.shutdown(socket.SHUT_WR)
        count, received = recv_all(s, limit=size)
    if count != size or received != sent:
        raise Failure(f"echo through {addr}: {count} of {size} bytes, intact: {received == sent}")


def test(w):
    nf = w.natfwd
    base = free_port_range(PORTS)
    relay, relay_addr = nf.relay(extra=[
        "--publish-domain", "share.test", "--publish-http", "127.0.0.1:0",
        "--publish-ports", f"{base}-{base + PORTS - 1}", "--allow-publisher", "any"])
    if not relay.stdout_lines[0].endswith(f", tcp {base}-{base + PORTS - 1})"):
        raise Failure(f"relay ready line: {relay.stdout_lines[0]!r}")

    first, second = w.target(echo), w.target(echo)
    home = w.group.start("peer --publish tcp", [
        nf.peer_bin, "--relay", relay_addr, "--name", "home", "--state-dir",
        nf.state_dir("home"), "--publish", f"tcp:{first.port}",
        "--publish", f"tcp:{base + 2}:127.0.0.1:{second.port}"])
    home.wait_stdout(rf"^published tcp://\S+:{base + 2} ", timeout=30,
                     what="published ready lines")
    lines = [l for l in home.stdout_lines if l.startswith("published ")]
    expected = [f"published tcp://127.0.0.1:{base} -> 127.0.0.1:{first.port}",
                f"published tcp://127.0.0.1:{base + 2} -> 127.0.0.1:{second.port}"]
    if lines != expected:
        raise Failure(f"ready lines {lines}, expected {expected}")

    echo_check(f"127.0.0.1:{base}")
    echo_check(f"127.0.0.1:{base + 2}")
    print(f"1 MiB echoed through published ports {base} and {base + 2}")

    data = answer_of_refused(f"127.0.0.1:{base + 1}", timeout=10)
    if data:
        raise Failure(f"an unpublished port answered {data!r}")
    print(f"unpublished port {base + 1} closed at once")
    home.check_running("at the end")


if __name__ == "__main__":
    run(test)

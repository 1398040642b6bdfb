#!/usr/bin/env python3
"""A relayed tunnel outlives a relay crash: the open connection carries on.

Both peers are forced through the relay's TURN server (UDP). With a connection open
through the tunnel, the relay is killed (SIGKILL: its TURN allocations are gone) and
started again on the same address with the same state (same key). The -L peer notices
the silence, restarts the tunnel's ICE path through the relay once it is back (new
TURN allocations), and the QUIC connection moves over: the open connection's next
bytes come back intact, and new connections work. Prints the recovery time.
"""
import signal
import socket
import time

from harness import echo, Failure, connect, run, scaled


def echo_once(s: socket.socket, payload: bytes, timeout: float) -> None:
    s.settimeout(timeout)
    s.sendall(payload)
    got = b""
    try:
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                raise Failure(f"the connection closed after {len(got)} of {len(payload)} bytes")
            got += chunk
    except socket.timeout:
        raise Failure(f"no echo within {timeout:.0f} s ({len(got)} of {len(payload)} bytes)") \
            from None
    if got != payload:
        raise Failure("the echo differs from what was sent")


def test(w):
    target = w.target(echo)
    relay_state = w.natfwd.state_dir("relay")
    extra = ["--allow-peer", "127.0.0.0/8"]
    relay, relay_addr = w.natfwd.relay(extra=extra, state_dir=relay_state)
    forced = ["--force-relay", "--turn-transport", "udp"]
    serving = w.natfwd.serve(relay_addr, "home", [target.addr], extra=forced)
    fwd, (laddr,) = w.natfwd.forward(relay_addr, "home", [f"0:{target.addr}"], extra=forced)
    path = fwd.wait_stdout(r"^path home: (relayed via turn-udp .*)$", 30,
                           what="relayed path line").group(1)
    print(f"path home: {path}")
    with connect(laddr) as s:
        echo_once(s, b"before" * 1000, scaled(30))
        relay.stop(signal.SIGKILL)
        t0 = time.monotonic()
        relay, _ = w.natfwd.relay(listen=relay_addr, extra=extra, state_dir=relay_state)
        print(f"relay killed and started again on {relay_addr} in "
              f"{time.monotonic() - t0:.2f} s")
        # Well inside QUIC's 30 s idle timeout, the path must be back.
        echo_once(s, b"after" * 1000, scaled(25))
        recovery = time.monotonic() - t0
    fwd.wait_stderr(r"path restarted in", 10, what="the -L peer's path restart")
    print(f"the connection opened before the crash echoed again {recovery:.1f} s after it")
    with connect(laddr) as s:
        echo_once(s, b"fresh" * 1000, scaled(30))
    print("a new connection through the same tunnel works")
    for p in (serving, fwd):
        p.check_running("after the relay restart")


if __name__ == "__main__":
    run(test)

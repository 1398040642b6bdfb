#!/usr/bin/env python3
"""SIGTERM and SIGINT make relay and peer exit 0, also with a connection open."""
import signal

from harness import Failure, connect, echo, run


def test(w):
    target = w.target(echo)
    relay_addr, serving, fwd, (laddr,) = w.tunnel([target.addr], [f"0:{target.addr}"])
    relay = w.group.procs[0]
    with connect(laddr) as s:
        s.sendall(b"ping")
        if s.recv(4) != b"ping":
            raise Failure("no echo through the tunnel")
        # Stop everything while the connection is open.
        for p, sig in ((fwd, signal.SIGTERM), (serving, signal.SIGTERM), (relay, signal.SIGTERM)):
            p.send_signal(sig)
            code = p.wait_exit(15)
            if code != 0:
                raise Failure(f"{p.name} exited with {code} on {signal.Signals(sig).name}\n"
                              + p.describe())
            print(f"{p.name}: exit 0 on {signal.Signals(sig).name}")

    # SIGINT, idle.
    relay2, relay2_addr = w.natfwd.relay()
    peer2 = w.natfwd.serve(relay2_addr, "home", [target.addr])
    fwd2, _ = w.natfwd.forward(relay2_addr, "home", [f"0:{target.addr}"])
    for p in (fwd2, peer2, relay2):
        p.send_signal(signal.SIGINT)
        code = p.wait_exit(15)
        if code != 0:
            raise Failure(f"{p.name} exited with {code} on SIGINT\n" + p.describe())
        print(f"{p.name}: exit 0 on SIGINT")


if __name__ == "__main__":
    run(test)

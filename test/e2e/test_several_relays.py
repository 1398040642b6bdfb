#!/usr/bin/env python3
"""Several relays (`--relay A --relay B`): one relay down changes nothing visible.

1. The serving peer registers at both relays.
2. A connecting peer given an extra relay where the serving peer is NOT registered
   first (`--relay C --relay A`): its first attempt fails there and its waiting
   connection is carried over to the next relay, where it works.
3. Relay A is killed (SIGKILL): the open tunnel keeps working (it does not need the
   relay). That -L stops (running, it would carry the next one's connections), and a
   new `peer -L --relay A --relay B` connects through B.
4. A second peer claiming the name with another key (`--relay C --relay B`): B has
   the name bound to the first key and refuses it for good; the peer says so at error
   level and goes on with C instead of exiting (exit 3 is for every relay refusing).
5. The serving peer is still up and serving.
"""
import signal
import socket

from harness import echo, Failure, connect, recv_all, run, wait_until
from procs import peer_env


def roundtrip(laddr: str, payload: bytes, what: str, fwd) -> None:
    with connect(laddr) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        count, _ = recv_all(s)
    if count != len(payload):
        raise Failure(f"{what}: echoed {count} of {len(payload)} bytes\n{fwd.describe()}")


def test(w):
    target = w.target(echo)
    relay_a, addr_a = w.natfwd.relay()
    _, addr_b = w.natfwd.relay()
    _, addr_c = w.natfwd.relay()
    serving = w.natfwd.serve(addr_a, "home", [target.addr], extra=["--relay", addr_b])
    # The ready line names whichever relay answered first; the other logs "too".
    def registered_at(addr):
        return any(f"registered as home at {addr}" in line
                   for line in serving.stdout_lines + serving.stderr_lines)
    wait_until(lambda: registered_at(addr_a) and registered_at(addr_b), 30,
               "registration at both relays")
    print(f"serving peer registered at {addr_a} and {addr_b}")

    # C knows nobody called home: the attempt there fails, the next relay takes over.
    fwd1, (laddr1,) = w.natfwd.forward(addr_c, "home", [f"0:{target.addr}"],
                                       extra=["--relay", addr_a])
    roundtrip(laddr1, b"first" * 1000, "through the second relay after the first failed", fwd1)
    fwd1.wait_stderr(r"connecting to home via relay " + addr_a.replace(".", r"\."), 30,
                     what="the attempt through the second relay")
    print(f"no 'home' at {addr_c}: the connection went through {addr_a} instead")

    relay_a.stop(signal.SIGKILL)
    print(f"relay {addr_a} killed")
    roundtrip(laddr1, b"still" * 1000, "the open tunnel after its relay died", fwd1)
    print("the tunnel set up through the dead relay still carries new connections")
    # Running, it would carry the next -L's connections on its state dir (that is
    # test_second_forwarder.py); the next one must find its own way through B.
    fwd1.stop()

    fwd2, (laddr2,) = w.natfwd.forward(addr_a, "home", [f"0:{target.addr}"],
                                       extra=["--relay", addr_b])
    roundtrip(laddr2, b"other" * 1000, "a new -L peer with its first relay down", fwd2)
    fwd2.wait_stderr(r"connecting to home via relay " + addr_b.replace(".", r"\."), 30,
                     what="the attempt through relay B")
    print(f"a new -L peer with {addr_a} down connected through {addr_b}")
    other = w.natfwd.group.start(
        "peer --serve (home with another key)",
        [w.peer_bin, "--relay", addr_c, "--relay", addr_b, "--name", "home", "--state-dir",
         w.natfwd.state_dir("other-home"), "--serve", target.addr],
        env=peer_env())
    other.wait_stdout(r"registered as home at " + addr_c.replace(".", r"\."), 30,
                      what="the other home registering at C")
    m = other.wait_stderr(r"error: .*bound to another key.*going on without relay " +
                          addr_b.replace(".", r"\."), 30, what="B's refusal said")
    print(f"another key claiming home: {m.string.strip()}")
    for p in (serving, fwd2, other):
        p.check_running("at the end")


if __name__ == "__main__":
    run(test)

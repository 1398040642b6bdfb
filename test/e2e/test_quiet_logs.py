#!/usr/bin/env python3
"""Normal operation logs no warnings, so `journalctl -p warning` shows only what an
operator should act on.

A relay, a serving peer and a laptop go through an ordinary day: the laptop pairs with
an invite (its pairing tunnel closes when `pair` is done), then forwards and carries an
echo, then the laptop stops (SIGTERM) and the serving peer stops after it. Meanwhile a
TURN-over-TCP connection asks for an allocation, gets its 401 and goes silent, as a
peer's TURN bridge does when its tunnel went another way: the relay closes it after
its idle time, at debug level. Before, every
`pair` and every SIGTERM left `tunnel closed: peer shutting down` as a warning on one
side or the other; a deliberate close is now news (info) and no process prints a
warning line at all.
"""
import os
import socket
import subprocess

from harness import Failure, connect, echo, echo_roundtrip, run, scaled
import turn_wire


def warnings(lines):
    return [line for line in lines if ": warning: " in line]


def silent_turn_client(relay_addr: str) -> None:
    """An Allocate without credentials (answered 401), then silence until the relay
    closes the connection (its idle time for connections without an allocation)."""
    with connect(relay_addr, timeout=scaled(60)) as s:
        s.sendall(turn_wire.message(turn_wire.ALLOCATE, turn_wire.attribute(
            turn_wire.REQUESTED_TRANSPORT, bytes([17, 0, 0, 0])), os.urandom(12)))
        answer = s.recv(4096)
        if not answer:
            raise Failure("the relay closed a TURN-over-TCP connection without answering")
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
    print("a silent TURN-over-TCP connection was closed by the relay", flush=True)


def test(w):
    peer = w.natfwd.peer_bin
    target = w.target(echo)
    relay, relay_addr = w.natfwd.relay()
    home_dir = w.natfwd.state_dir("quiet-home")
    laptop_dir = w.natfwd.state_dir("quiet-laptop")
    home = w.natfwd.serve(relay_addr, "home", [target.addr], extra=["--state-dir", home_dir])

    code = subprocess.run([peer, "invite", "--state-dir", home_dir], capture_output=True,
                          text=True, timeout=scaled(20), check=True).stdout.strip()
    paired = subprocess.run([peer, "--relay", relay_addr, "--state-dir", laptop_dir, "pair",
                             code], capture_output=True, text=True, timeout=scaled(60))
    if paired.returncode != 0:
        raise Failure(f"pair: exit {paired.returncode}\n{paired.stderr}")
    pair_warnings = warnings(paired.stderr.splitlines())

    fwd, (laddr,) = w.natfwd.forward(relay_addr, "home", [f"0:{target.addr}"],
                                     extra=["--state-dir", laptop_dir])
    echo_roundtrip(laddr, b"an ordinary day")
    silent_turn_client(relay_addr)
    home.wait_stderr(r"paired: key", 30, what="the serving peer's pairing line")
    if fwd.stop() != 0:
        raise Failure("the laptop did not exit 0 on SIGTERM\n" + fwd.describe())
    home.wait_stderr(r"tunnel closed", 30, what="the serving peer noticing the laptop leave")
    if home.stop() != 0:
        raise Failure("the serving peer did not exit 0 on SIGTERM\n" + home.describe())
    relay.stop()

    found = {"pair": pair_warnings, "laptop": warnings(fwd.stderr_lines),
             "home": warnings(home.stderr_lines), "relay": warnings(relay.stderr_lines)}
    noisy = {who: lines for who, lines in found.items() if lines}
    if noisy:
        raise Failure("warnings in normal operation:\n" + "\n".join(
            f"  {who}: {line}" for who, lines in noisy.items() for line in lines))
    print("pair, forward, echo and SIGTERM on both sides: no warning line anywhere",
          flush=True)


if __name__ == "__main__":
    run(test)

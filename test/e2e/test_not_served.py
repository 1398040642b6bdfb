#!/usr/bin/env python3
"""A target the serving peer does not serve is refused, and the connecting side says why.

The -L peer forwards to three targets; the serving peer serves only the first. A
connection to the second is closed with no data (EOF or reset), the -L side logs the
line "home: TARGET refused: not served: home does not serve TARGET; it serves SERVED
(targets match by their exact text)", and `peer status` shows it under the tunnel
(text "last refused: ..." and JSON last_refusal). The third names the served target
as localhost instead of 127.0.0.1: refused the same way, the line naming both. `peer
nc` to the unserved target exits 1 with the same explanation. The first target still
works afterwards.
"""
import json
import re
import socket
import subprocess

from harness import Failure, connect, connect_to_refused, recv_all, run, scaled
from procs import peer_env


def echo(conn, _index):
    data = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        conn.sendall(chunk)
    return len(data)


def assert_closed_without_data(addr):
    s = connect_to_refused(addr)
    if s is None:
        return
    with s:
        try:
            s.sendall(b"is anyone there?")
            count, _ = recv_all(s)
        except (ConnectionResetError, BrokenPipeError):
            count = 0
        if count:
            raise Failure(f"a refused connection through {addr} received {count} bytes")


def test(w):
    served = w.target(echo)
    # A real listening socket that is not served: nothing may ever connect to it.
    unserved = w.target(echo)
    relay_addr, serving, fwd, (ok_addr, bad_addr, by_name_addr) = w.tunnel(
        [served.addr], [f"0:{served.addr}", f"0:{unserved.addr}", f"0:localhost:{served.port}"])

    with connect(bad_addr, timeout=60) as s:
        try:
            s.sendall(b"is anyone there?")
        except OSError:
            pass  # already reset: fine
        try:
            count, _ = recv_all(s)
        except ConnectionResetError:
            count = 0
        except socket.timeout:
            raise Failure("a connection to an unserved target was not closed within "
                          f"{scaled(60):.0f} s\n{fwd.describe()}") from None
        if count:
            raise Failure(f"a connection to an unserved target received {count} bytes")
    fwd.wait_stderr(r"not served", timeout=30, what="the -L side's reason for the refusal")
    explained = (f"home does not serve {unserved.addr}; it serves {served.addr} "
                 "(targets match by their exact text)")
    fwd.wait_stderr(re.escape(f"{unserved.addr} refused: not served: {explained}") + "$", 10,
                    what="the -L side's line saying what home serves")
    client_dir = w.natfwd.client_state_dir()
    r = subprocess.run([w.peer_bin, "status", "--state-dir", client_dir, "--json"],
                       capture_output=True, text=True, timeout=scaled(20))
    refusals = [t.get("last_refusal") for t in json.loads(r.stdout)["tunnels"]]
    if f"{unserved.addr}: not served: {explained}" not in refusals:
        raise Failure(f"peer status --json does not show the refusal: {refusals}")
    r = subprocess.run([w.peer_bin, "status", "--state-dir", client_dir],
                       capture_output=True, text=True, timeout=scaled(20))
    if f"  last refused: {unserved.addr}: not served: {explained}" not in r.stdout.splitlines():
        raise Failure(f"peer status does not show the refusal:\n{r.stdout}")

    assert_closed_without_data(by_name_addr)
    fwd.wait_stderr(re.escape(f"localhost:{served.port} refused: not served: home does not "
                              f"serve localhost:{served.port}; it serves {served.addr} (targets "
                              "match by their exact text)") + "$", 30,
                    what="the -L side's line for a name where an address is served")

    r = subprocess.run([w.peer_bin, "--relay", relay_addr, "--state-dir", client_dir, "nc",
                        "home", unserved.addr], capture_output=True, text=True,
                       timeout=scaled(60), env=peer_env(), stdin=subprocess.DEVNULL)
    if r.returncode != 1 or len(r.stderr.splitlines()) != 1 or explained not in r.stderr:
        raise Failure(f"nc to an unserved target: exit {r.returncode}, {r.stderr!r}")
    if unserved.accepted:
        raise Failure("the serving peer connected to a target it does not serve")

    serving.check_running("after the refusal")
    fwd.check_running("after the refusal")
    with connect(ok_addr) as s:
        s.sendall(b"x" * 100000)
        s.shutdown(socket.SHUT_WR)
        count, _ = recv_all(s)
    if count != 100000:
        raise Failure(f"the served target afterwards echoed {count} of 100000 bytes")
    print("unserved target refused with 'not served'; served target still works")


if __name__ == "__main__":
    run(test)

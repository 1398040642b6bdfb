#!/usr/bin/env python3
"""A target the serving peer does not serve is refused, and the -L side says why.

The -L peer forwards to two targets; the serving peer serves only the first. A
connection to the second is closed with no data (EOF or reset), the -L side logs a line
containing "not served", and the first target still works afterwards.
"""
import socket

from harness import Failure, connect, recv_all, run, scaled


def echo(conn, _index):
    data = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        conn.sendall(chunk)
    return len(data)


def test(w):
    served = w.target(echo)
    # A real listening socket that is not served: nothing may ever connect to it.
    unserved = w.target(echo)
    _, serving, fwd, (ok_addr, bad_addr) = w.tunnel(
        [served.addr], [f"0:{served.addr}", f"0:{unserved.addr}"])

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

#!/usr/bin/env python3
"""200 MB each way through one forwarded connection at the same time, SHA-256 identical.

The target (in this test) sends its own 200 MB while it reads the client's; both sides
hash what they send and what they receive, streaming, never holding the data.
E2E_BULK_BYTES overrides the size per direction.
"""
import os

from harness import Failure, both_ways, connect, run

SIZE = int(os.environ.get("E2E_BULK_BYTES", 200 * 1024 * 1024))


def test(w):
    target = w.target(lambda conn, _: both_ways(conn, "down", SIZE))
    _, _, fwd, (laddr,) = w.tunnel([target.addr], [f"0:{target.addr}"])
    with connect(laddr) as s:
        client = both_ways(s, "up", SIZE)
    target.wait_results(1, timeout=60)
    server = target.results[0]
    if client["count"] != SIZE or server["count"] != SIZE:
        raise Failure(f"byte counts: client received {client['count']}, target received "
                      f"{server['count']}, expected {SIZE} each")
    if server["received"] != client["sent"]:
        raise Failure("upstream data corrupted: target's SHA-256 differs from the client's")
    if client["received"] != server["sent"]:
        raise Failure("downstream data corrupted: client's SHA-256 differs from the target's")
    fwd.check_running("after the transfer")
    print(f"{SIZE} bytes each way, SHA-256 up {client['sent'][:16]}..., "
          f"down {server['sent'][:16]}...")


if __name__ == "__main__":
    run(test)

#!/usr/bin/env python3
"""Our peers relayed through coturn, with our relay doing the rendezvous only.

coturn runs on loopback with `use-auth-secret` and the same secret as our relay
(`--auth-secret-file`), so the REST credentials our relay hands out work at coturn. The
relay runs with --no-turn and --turn-server pointing at coturn; both peers use
--force-relay. 100 MB must cross intact and the path line must name coturn's address.
Skipped (exit 77) only when coturn is not installed after scripts/test tried to.
"""
import os
import shutil
import socket
import sys

from harness import (SKIP, Failure, PatternStream, connect, recv_all, run, scaled, send_stream,
                     write_private)
from turn_interop import SECRET, start_coturn

SIZE = int(os.environ.get("E2E_RELAYED_BYTES", 100 * 1024 * 1024))


def test(w):
    if shutil.which("turnserver") is None:
        print("SKIP: coturn (turnserver) is not installed", flush=True)
        sys.exit(SKIP)
    coturn_port = start_coturn(w)
    secret_file = os.path.join(w.tmpdir, "turn-secret")
    write_private(secret_file, SECRET + "\n")
    _, relay_addr = w.natfwd.relay(extra=["--no-turn", "--turn-server",
                                          f"127.0.0.1:{coturn_port}",
                                          "--auth-secret-file", secret_file])

    def sink(conn, _index):
        count, digest = recv_all(conn)
        conn.shutdown(socket.SHUT_WR)
        return {"count": count, "received": digest}

    target = w.target(sink)
    w.natfwd.serve(relay_addr, "home", [target.addr], extra=["--force-relay"])
    fwd, (laddr,) = w.natfwd.forward(relay_addr, "home", [f"0:{target.addr}"],
                                     extra=["--force-relay"])
    path = fwd.wait_stdout(r"^path home: (.*)$", 30, what="path line").group(1)
    if not path.startswith("relayed via turn-") or f":{coturn_port}" not in path:
        raise Failure(f"expected a path relayed through coturn (port {coturn_port}), got: {path}")
    with connect(laddr) as s:
        sent = send_stream(s, PatternStream("coturn", SIZE))
        s.shutdown(socket.SHUT_WR)
        recv_all(s)
    target.wait_results(1, timeout=scaled(60))
    result = target.results[0]
    if result["count"] != SIZE or result["received"] != sent:
        raise Failure(f"target received {result['count']} of {SIZE} bytes, or different bytes")
    print(f"{SIZE} bytes intact through coturn; path: {path}", flush=True)


if __name__ == "__main__":
    run(test)

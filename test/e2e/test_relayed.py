#!/usr/bin/env python3
"""Tunnels forced through the relay's own TURN server, over UDP, TCP and TLS in turn.

Each run: relay (TURN on, TLS port, relaying to loopback allowed), both peers with
--force-relay --turn-transport T; the -L peer's path line must say `relayed via turn-T`,
and 100 MB cross intact (SHA-256) while 1 MB comes back the other way; over UDP the
-L peer's datagrams come through its TURN bridge, or with NATFWD_TURN_UDP_BRIDGE=off
(the _libnice_turn variant) through libnice.
E2E_RELAYED_BYTES overrides the size.
"""
import os
import socket

from harness import Failure, PatternStream, connect, recv_all, run, send_stream

SIZE = int(os.environ.get("E2E_RELAYED_BYTES", 100 * 1024 * 1024))
REPLY = 1024 * 1024
PATH_RE = r"^path home: (.*)$"


def sink_then_reply(conn: socket.socket, _index: int) -> dict:
    count, digest = recv_all(conn)
    sent = send_stream(conn, PatternStream("reply", REPLY))
    conn.shutdown(socket.SHUT_WR)
    return {"count": count, "received": digest, "sent": sent}


def one_transport(w, transport: str) -> None:
    target = w.target(sink_then_reply)
    _, relay_addr = w.natfwd.relay(extra=["--allow-peer", "127.0.0.0/8",
                                          "--tls-listen", "127.0.0.1:0"])
    forced = ["--force-relay", "--turn-transport", transport]
    w.natfwd.serve(relay_addr, "home", [target.addr], extra=forced)
    # -v: the debug line that says the TURN bridge hands datagrams to the tunnel.
    fwd, (laddr,) = w.natfwd.forward(relay_addr, "home", [f"0:{target.addr}"],
                                     extra=forced + ["-v"])
    m = fwd.wait_stdout(PATH_RE, 30, what=f"path line ({transport})")
    path = m.group(1)
    if not path.startswith(f"relayed via turn-{transport} "):
        raise Failure(f"{transport}: expected 'relayed via turn-{transport} ...', got: {path}")
    with connect(laddr) as s:
        sent = send_stream(s, PatternStream(f"up-{transport}", SIZE))
        s.shutdown(socket.SHUT_WR)
        count, reply = recv_all(s)
    target.wait_results(1, timeout=60)
    result = target.results[0]
    if result["count"] != SIZE or result["received"] != sent:
        raise Failure(f"{transport}: target received {result['count']} bytes "
                      f"(expected {SIZE}) or different content")
    if count != REPLY or reply != result["sent"]:
        raise Failure(f"{transport}: reply corrupted or short ({count} of {REPLY} bytes)")
    # Over UDP the -L peer's share (the reply, ACKs) comes through the TURN bridge
    # (peer/ice/turn_udp_bridge.h) past libnice, unless NATFWD_TURN_UDP_BRIDGE=off.
    bridged = any("the tunnel's datagrams now skip libnice" in line for line in fwd.stderr_lines)
    expected = transport == "udp" and os.environ.get("NATFWD_TURN_UDP_BRIDGE") != "off"
    if bridged != expected:
        raise Failure(f"{transport}: the TURN bridge {'did not hand' if expected else 'handed'} "
                      "datagrams to the tunnel")
    print(f"turn-{transport}: {SIZE} bytes intact; path: {path}"
          f"{'; through the TURN bridge' if bridged else ''}", flush=True)
    w.group.stop_all()


def test(w):
    for transport in ("udp", "tcp", "tls"):
        one_transport(w, transport)


if __name__ == "__main__":
    run(test)

#!/usr/bin/env python3
"""Bulk-transfer and latency probes for scripts/bench (an iperf-like tool, stdlib only).

    xfer.py serve --listen HOST:0
        prints "listening on HOST:PORT", then serves every connection until SIGTERM:
        the first byte chooses the mode:
          'S' sink: reads until EOF, then answers with the byte count (8 bytes, BE);
          'E' echo: echoes everything back until EOF.
        For each connection it prints one JSON line: first-byte time (CLOCK_MONOTONIC, the
        same clock in every namespace of this machine), bytes, mode.

    xfer.py send --connect HOST:PORT --bytes N [--max-seconds T] [--cc cubic|bbr]
        connects (TCP HOST:PORT, or a unix socket path), sends N bytes (stops early after
        T seconds), shuts down its write side, reads the sink's count and prints JSON:
        {"bytes": received, "seconds": s, "mbps": MB/s, "capped": bool}.

    xfer.py probe --connect HOST:PORT [--count N] [--first-only] [--timeout S]
        N times: connect, send one byte in echo mode, read it back, close. Prints JSON with
        each round trip in ms, measured from just before connect(). With --first-only it
        retries until the first connection succeeds (for "first byte after start").
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import sys
import threading
import time

CHUNK = 1 << 20


def parse_addr(text: str):
    if "/" in text:
        return socket.AF_UNIX, text
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host, int(port))


def connect(text: str, timeout: float | None = None, cc: str | None = None) -> socket.socket:
    family, addr = parse_addr(text)
    s = socket.socket(family, socket.SOCK_STREAM)
    if cc:
        # Per-socket congestion control (needs CAP_NET_ADMIN unless cc is in
        # net.ipv4.tcp_allowed_congestion_control); no system setting is changed.
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    if timeout is not None:
        s.settimeout(timeout)
    s.connect(addr)
    if family != socket.AF_UNIX:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


# -- serve -----------------------------------------------------------------------------

def handle(conn: socket.socket, out_lock: threading.Lock) -> None:
    with conn:
        try:
            mode = conn.recv(1)
        except OSError:
            return
        first = time.monotonic()
        total = 0
        try:
            if mode == b"S":
                buf = bytearray(CHUNK)
                view = memoryview(buf)
                while True:
                    n = conn.recv_into(view)
                    if n == 0:
                        break
                    total += n
                conn.sendall(struct.pack(">Q", total))
            elif mode == b"E":
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    total += len(data)
                    conn.sendall(data)
        except OSError:
            pass
        with out_lock:
            print(json.dumps({"first_byte": first, "bytes": total,
                              "mode": mode.decode("ascii", "replace")}), flush=True)


def serve(args) -> int:
    family, addr = parse_addr(args.listen)
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(addr)
    srv.listen(128)
    host, port = srv.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    out_lock = threading.Lock()
    while True:
        try:
            conn, _ = srv.accept()
        except InterruptedError:
            continue
        except KeyboardInterrupt:
            return 0
        threading.Thread(target=handle, args=(conn, out_lock), daemon=True).start()


# -- send ------------------------------------------------------------------------------

def send(args) -> int:
    payload = os.urandom(CHUNK)  # incompressible, reused: the tunnel sees no pattern
    view = memoryview(payload)
    start = time.monotonic()
    s = connect(args.connect, cc=args.cc)
    s.sendall(b"S")
    sent = 0
    capped = False
    deadline = start + args.max_seconds if args.max_seconds else None
    while sent < args.bytes:
        n = min(CHUNK, args.bytes - sent)
        s.sendall(view[:n])
        sent += n
        if deadline and time.monotonic() > deadline:
            capped = True
            break
    s.shutdown(socket.SHUT_WR)
    received = struct.unpack(">Q", recv_exact(s, 8))[0]
    seconds = time.monotonic() - start
    s.close()
    print(json.dumps({"bytes": received, "sent": sent, "seconds": seconds,
                      "mbps": received / seconds / 1e6, "capped": capped}), flush=True)
    return 0 if received == sent else 1


# -- probe -----------------------------------------------------------------------------

def probe_once(addr: str, timeout: float) -> float:
    t0 = time.monotonic()
    s = connect(addr, timeout)
    with s:
        s.sendall(b"Ex")
        recv_exact(s, 1)
    return (time.monotonic() - t0) * 1000


def probe(args) -> int:
    results = []
    if args.first_only:
        deadline = time.monotonic() + args.timeout
        while True:
            try:
                results.append(probe_once(args.connect, args.timeout))
                break
            except (OSError, EOFError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
    else:
        for _ in range(args.count):
            results.append(probe_once(args.connect, args.timeout))
    results_sorted = sorted(results)
    print(json.dumps({"ms": results, "median_ms": results_sorted[len(results) // 2],
                      "done_at": time.monotonic()}), flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--listen", required=True)
    p = sub.add_parser("send")
    p.add_argument("--connect", required=True)
    p.add_argument("--bytes", type=int, default=1 << 30)
    p.add_argument("--max-seconds", type=float, default=0)
    p.add_argument("--cc", help="TCP congestion control of the sending socket (cubic, bbr)")
    p = sub.add_parser("probe")
    p.add_argument("--connect", required=True)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--first-only", action="store_true")
    p.add_argument("--timeout", type=float, default=30)
    args = ap.parse_args()
    return {"serve": serve, "send": send, "probe": probe}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A target service and a client that tell an intact stream from a truncated one.

    stream_check.py serve HOST:PORT
        prints "ready HOST:PORT"; each connection sends one request line
        "send N close|reset" and gets the first N bytes of the reference stream, then
        an orderly close (FIN) or a reset (SO_LINGER 0: RST); N=0 means "until the
        peer goes". One line per connection on stdout when it ends:
        "conn K sent B of N: done|error ERRNO-NAME".
    stream_check.py fetch HOST:PORT N close|reset [--timeout S] [--progress BYTES]
        asks for N bytes and checks every byte against the reference stream; prints
        "connected" once the request is sent, "got B" every --progress bytes and, at the end, one line
        "end eof|reset|timeout|corrupt bytes=B seconds=S" (exit 0 whatever the end:
        the caller judges).

The reference stream is 64 KiB chunks: an 8-byte big-endian chunk index then a fixed
pseudo-random pad, so a lost, repeated, reordered or altered chunk is caught at its
first differing byte. Stdlib only.
"""

from __future__ import annotations

import argparse
import errno
import random
import socket
import struct
import sys
import threading
import time

CHUNK = 64 * 1024
PAD = random.Random(6).randbytes(CHUNK - 8)


def chunk(index: int) -> bytes:
    return struct.pack(">Q", index) + PAD


def reference(offset: int, length: int) -> bytes:
    """Bytes [offset, offset + length) of the reference stream."""
    out = bytearray()
    index, skip = divmod(offset, CHUNK)
    while len(out) < length:
        c = chunk(index)[skip:]
        out += c[:length - len(out)]
        index, skip = index + 1, 0
    return bytes(out)


def split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def serve(listen: str) -> int:
    srv = socket.create_server(split_hostport(listen), backlog=128)
    host, port = srv.getsockname()[:2]
    print(f"ready {host}:{port}", flush=True)
    count = 0
    lock = threading.Lock()

    def one(conn: socket.socket, k: int) -> None:
        sent, want, result = 0, 0, "done"
        try:
            line = b""
            while not line.endswith(b"\n"):
                part = conn.recv(100)
                if not part:
                    raise ConnectionAbortedError(errno.ECONNABORTED, "no request")
                line += part
            fields = line.decode().split()
            want, how = int(fields[1]), fields[2]
            index = 0
            while want == 0 or sent < want:
                c = chunk(index)
                if want:
                    c = c[:want - sent]
                conn.sendall(c)
                sent += len(c)
                index += 1
            if how == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError as e:
            result = f"error {errno.errorcode.get(e.errno, str(e.errno))}"
        finally:
            conn.close()
        with lock:
            print(f"conn {k} sent {sent} of {want}: {result}", flush=True)

    while True:
        conn, _ = srv.accept()
        count += 1
        threading.Thread(target=one, args=(conn, count), daemon=True).start()


def fetch(target: str, want: int, how: str, timeout: float, progress: int) -> int:
    t0 = time.monotonic()
    got, end = 0, "eof"
    next_report = progress
    try:
        s = socket.create_connection(split_hostport(target), timeout=timeout)
        s.settimeout(timeout)  # per recv: a stall this long is a hang
        s.sendall(f"send {want} {how}\n".encode())
        print("connected", flush=True)
        while True:
            data = s.recv(1 << 16)
            if not data:
                break
            if data != reference(got, len(data)):
                end = "corrupt"
                break
            got += len(data)
            if progress and got >= next_report:
                print(f"got {got}", flush=True)
                next_report += progress
    except socket.timeout:
        end = "timeout"
    except ConnectionResetError:
        end = "reset"
    except OSError as e:
        end = f"error-{errno.errorcode.get(e.errno, e.errno)}"
    print(f"end {end} bytes={got} seconds={time.monotonic() - t0:.3f}", flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("serve")
    a.add_argument("listen")
    b = sub.add_parser("fetch")
    b.add_argument("target")
    b.add_argument("bytes", type=int)
    b.add_argument("how", choices=("close", "reset"))
    b.add_argument("--timeout", type=float, default=30)
    b.add_argument("--progress", type=int, default=0)
    args = ap.parse_args()
    if args.cmd == "serve":
        return serve(args.listen)
    return fetch(args.target, args.bytes, args.how, args.timeout, args.progress)


if __name__ == "__main__":
    sys.exit(main())

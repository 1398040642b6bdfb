#!/usr/bin/env python3
"""A quiet connection beside a bulk one in the same tunnel keeps being served.

One connection streams data to the target without pause (it never ends by itself);
meanwhile a second connection through the same tunnel does 50 one-byte echo round
trips, each of which must come back while the bulk stream keeps moving: neither
side's QUIC write loop nor the serving peer's batched QUIC -> TCP writes may leave a
quiet stream behind a busy one. No timing is asserted beyond each round trip's I/O
timeout; the round trips are printed (the queueing a bulk transfer adds to an
interactive session in the same tunnel).
"""
import statistics
import threading
import time

from harness import Failure, connect, run, wait_until

ROUND_TRIPS = 50
WARMUP_BYTES = 50 * 1024 * 1024  # the bulk stream runs at full speed before the echoes


def target_handler(conn, _index):
    mode = conn.recv(1)
    total = 0
    if mode == b"B":
        while True:
            data = conn.recv(1 << 20)
            if not data:
                return {"mode": "bulk", "bytes": total}
            total += len(data)
    while True:
        data = conn.recv(4096)
        if not data:
            return {"mode": "echo", "bytes": total}
        total += len(data)
        conn.sendall(data)


def test(w):
    target = w.target(target_handler)
    _, _, fwd, (laddr,) = w.tunnel([target.addr], [f"0:{target.addr}"])
    stop = threading.Event()
    sent = [0]
    errors: list[str] = []

    def bulk():
        chunk = b"\x5a" * (256 * 1024)
        try:
            with connect(laddr) as s:
                s.sendall(b"B")
                while not stop.is_set():
                    s.sendall(chunk)
                    sent[0] += len(chunk)
        except OSError as e:
            if not stop.is_set():
                errors.append(f"bulk connection: {e!r}")

    bulk_thread = threading.Thread(target=bulk, daemon=True)
    bulk_thread.start()
    try:
        wait_until(lambda: sent[0] >= WARMUP_BYTES or bool(errors), 60,
                   "the bulk connection to get going")
    except Failure as e:
        raise Failure(f"{e}: {sent[0]} bytes sent\n{fwd.describe()}") from None
    if errors:
        raise Failure(f"{errors}\n{fwd.describe()}")

    times = []
    bulk_before = sent[0]
    with connect(laddr) as s:
        s.sendall(b"E")
        for i in range(ROUND_TRIPS):
            t0 = time.monotonic()
            s.sendall(bytes([i]))
            try:
                echoed = s.recv(1)
            except OSError as e:
                raise Failure(f"echo {i} beside the bulk stream did not come back: {e!r} "
                              f"(bulk at {sent[0]} bytes)\n{fwd.describe()}") from None
            if echoed != bytes([i]):
                raise Failure(f"echo {i}: got {echoed!r}")
            times.append((time.monotonic() - t0) * 1000)
    bulk_during = sent[0] - bulk_before
    stop.set()
    bulk_thread.join(timeout=30)
    if errors:
        raise Failure("; ".join(errors))
    if bulk_during == 0:
        raise Failure("the bulk stream stood still during the echoes: nothing was tested")
    print(f"{ROUND_TRIPS} echoes beside a bulk stream ({bulk_during / 1e6:.0f} MB moved "
          f"meanwhile): round trip median {statistics.median(times):.1f} ms, "
          f"max {max(times):.1f} ms")


if __name__ == "__main__":
    run(test)

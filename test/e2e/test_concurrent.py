#!/usr/bin/env python3
"""64 concurrent connections through one tunnel, each moving 1 MB intact both ways.

Each connection sends its own 1 MB to the target while the target sends its own 1 MB
back (both at once, then FIN); every stream is checked by SHA-256 on both ends.
"""
import threading

from harness import Failure, both_ways, connect, run

CONNECTIONS = 64
SIZE = 1024 * 1024


def target_handler(conn, _index):
    # The client names its connection in the first 8 bytes so results can be matched.
    tag = b""
    while len(tag) < 8:
        more = conn.recv(8 - len(tag))
        if not more:
            raise Failure("connection closed before its tag")
        tag += more
    result = both_ways(conn, "down-" + tag.decode(), SIZE)
    result["tag"] = tag.decode()
    return result


def test(w):
    target = w.target(target_handler)
    _, _, fwd, (laddr,) = w.tunnel([target.addr], [f"0:{target.addr}"])
    client_results: dict[str, dict] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def client(i: int):
        tag = f"{i:08d}"
        try:
            with connect(laddr) as s:
                s.sendall(tag.encode())
                r = both_ways(s, "up-" + tag, SIZE)
            with lock:
                client_results[tag] = r
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(f"connection {i}: {e!r}")

    threads = [threading.Thread(target=client, args=(i,), daemon=True)
               for i in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise Failure(f"{len(errors)} of {CONNECTIONS} connections failed:\n"
                      + "\n".join(errors[:10]) + "\n" + fwd.describe())
    target.wait_results(CONNECTIONS, timeout=60)
    by_tag = {r["tag"]: r for r in target.results.values()}
    bad = []
    for tag, c in client_results.items():
        s = by_tag.get(tag)
        if s is None:
            bad.append(f"{tag}: the target never saw it")
        elif c["count"] != SIZE or s["count"] != SIZE:
            bad.append(f"{tag}: client got {c['count']} bytes, target got {s['count']}")
        elif s["received"] != c["sent"] or c["received"] != s["sent"]:
            bad.append(f"{tag}: SHA-256 mismatch")
    if bad:
        raise Failure(f"{len(bad)} connections not intact:\n" + "\n".join(bad[:10]))
    print(f"{CONNECTIONS} connections x {SIZE} bytes each way intact")


if __name__ == "__main__":
    run(test)

#!/usr/bin/env python3
"""Half close in both directions through the tunnel.

1. The client sends 3 MB and shuts its write side; the target reads until EOF, then
   replies with 1 MB derived from the SHA-256 of what it read, and closes; the client
   still reads the full reply.
2. The target sends a 1 MB greeting and shuts its write side first; the client reads it
   to EOF, then still sends 2 MB, which the target reads to EOF intact.
"""
import hashlib
import socket

from harness import Failure, PatternStream, connect, recv_all, run, send_stream

REQUEST = 3 * 1024 * 1024
REPLY = 1024 * 1024
GREETING = 1024 * 1024
LATE = 2 * 1024 * 1024


def reply_for(digest: str) -> PatternStream:
    return PatternStream("reply-" + digest, REPLY)


def target_handler(conn: socket.socket, _index: int):
    mode = conn.recv(1)
    if mode == b"1":
        count, digest = recv_all(conn)
        send_stream(conn, reply_for(digest))
        return {"mode": 1, "count": count, "digest": digest}
    if mode == b"2":
        greeting = send_stream(conn, PatternStream("greeting", GREETING))
        conn.shutdown(socket.SHUT_WR)
        count, digest = recv_all(conn)
        return {"mode": 2, "count": count, "digest": digest, "greeting": greeting}
    raise Failure(f"unexpected mode byte {mode!r}")


def test(w):
    target = w.target(target_handler)
    _, _, fwd, (laddr,) = w.tunnel([target.addr], [f"0:{target.addr}"])

    # 1: client half-closes first.
    with connect(laddr) as s:
        s.sendall(b"1")
        h = hashlib.sha256()
        for chunk in PatternStream("request", REQUEST):
            h.update(chunk)
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        count, got = recv_all(s, limit=REPLY)
    target.wait_results(1, timeout=60)
    r = target.results[0]
    if r["count"] != REQUEST or r["digest"] != h.hexdigest():
        raise Failure(f"case 1: target read {r['count']} bytes, expected {REQUEST} intact")
    expected = hashlib.sha256(b"".join(reply_for(r["digest"]))).hexdigest()
    if count != REPLY or got != expected:
        raise Failure(f"case 1: after shutdown(SHUT_WR) the client read {count} of {REPLY} "
                      "reply bytes" + (" (corrupted)" if count == REPLY else ""))

    # 2: target half-closes first; the client keeps sending after reading EOF.
    with connect(laddr) as s:
        s.sendall(b"2")
        count, got = recv_all(s, limit=GREETING)
        expected = hashlib.sha256(b"".join(PatternStream("greeting", GREETING))).hexdigest()
        if count != GREETING or got != expected:
            raise Failure(f"case 2: client read {count} of {GREETING} greeting bytes")
        late = send_stream(s, PatternStream("late", LATE))
        s.shutdown(socket.SHUT_WR)
        s.recv(1)  # EOF once the target has closed
    target.wait_results(2, timeout=60)
    r = target.results[1]
    if r["count"] != LATE or r["digest"] != late:
        raise Failure(f"case 2: after the target's FIN it read {r['count']} of {LATE} bytes "
                      "the client sent")
    fwd.check_running("after the half-close cases")
    print("half close works both ways")


if __name__ == "__main__":
    run(test)

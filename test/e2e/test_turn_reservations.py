#!/usr/bin/env python3
"""RTP/RTCP port pairs through the relay's TURN over UDP (RFC 8656 section 7.2).

A client allocates with EVEN-PORT R=1 and gets an even relayed port and a
RESERVATION-TOKEN; a second client socket (another 5-tuple, as uclient's RTCP leg)
allocates with the token and gets the odd port above it, and a peer's datagram to that
port reaches it as a Data indication. The token is good once (508 the second time).

With NATFWD_RELAY_THREADS=2 (meson: turn_reservations_threads_2) the kernel hashes the
two sockets of a pair to either data-plane thread: pairs are made until one token was
taken on the other thread than the one that reserved it (--metrics counts which), so
the reserved socket's hand-over between threads is exercised; with one thread none
may be counted as "other".
"""
import os
import re
import socket

from harness import Failure, run, scaled, write_private
from relay_metrics import URL_RE, scrape
from turn_wire import (DATA, DATA_INDICATION, EVEN_PORT, RESERVATION_TOKEN, TurnClient,
                       attribute, parse)

SECRET = "natfwd-reservation-secret"
MAX_PAIRS = 24  # with two threads, all on one side has odds 2^-24


def client(server: tuple[str, int], user: str) -> TurnClient:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(scaled(5))
    return TurnClient(sock, server, SECRET, user)


def check_data_reaches(rtcp: TurnClient, relayed: tuple[str, int]) -> None:
    """A peer's datagram to the relayed port comes to the client as a Data indication."""
    if rtcp.create_permission("127.0.0.1") != 0:
        raise Failure(f"CreatePermission on the reserved port: {rtcp.last}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        payload = os.urandom(32)
        peer.sendto(payload, relayed)
        kind, _, attrs = parse(rtcp.sock.recv(65536))
        if kind != DATA_INDICATION or attrs.get(DATA) != payload:
            raise Failure(f"expected a Data indication with the payload, got {kind:#x} {attrs}")


def test(w):
    threads = int(os.environ.get("NATFWD_RELAY_THREADS", "1"))
    secret_file = os.path.join(w.tmpdir, "turn-secret")
    write_private(secret_file, SECRET + "\n")
    relay, addr = w.natfwd.relay(extra=[
        "--allow-peer", "127.0.0.0/8", "--auth-secret-file", secret_file,
        "--metrics", "127.0.0.1:0", "--max-allocations-per-user", str(4 * MAX_PAIRS)])
    metrics = re.search(URL_RE, " ".join(relay.stdout_lines)).group(1)
    host, _, port = addr.rpartition(":")
    server = (host, int(port))

    pairs, samples = 0, {}
    while pairs < MAX_PAIRS:
        rtp, rtcp = client(server, "rtp"), client(server, "rtp")
        if rtp.allocate(attribute(EVEN_PORT, b"\x80")) != 0:
            raise Failure(f"EVEN-PORT R=1 refused: {rtp.last}")
        even_ip, even_port = rtp.relayed()
        token = rtp.last.get(RESERVATION_TOKEN, b"")
        if even_port % 2 != 0 or len(token) != 8:
            raise Failure(f"pair {pairs}: port {even_port}, token {token.hex()}")
        if rtcp.allocate(attribute(RESERVATION_TOKEN, token)) != 0:
            raise Failure(f"pair {pairs}: the token was refused: {rtcp.last}")
        odd = rtcp.relayed()
        if odd != (even_ip, even_port + 1):
            raise Failure(f"pair {pairs}: reserved {even_ip}:{even_port + 1}, got {odd}")
        pairs += 1
        if pairs == 1:
            check_data_reaches(rtcp, odd)
            again = client(server, "rtp")
            if again.allocate(attribute(RESERVATION_TOKEN, token)) != 508:
                raise Failure(f"a token used twice: {again.last}")
        samples = scrape(metrics)
        if threads == 1 or samples.get('turn_reservations_redeemed_total{shard="other"}', 0):
            break
    same = samples.get('turn_reservations_redeemed_total{shard="same"}', 0)
    other = samples.get('turn_reservations_redeemed_total{shard="other"}', 0)
    print(f"{threads} thread(s): {pairs} pairs, tokens taken on the same thread {same:.0f}, "
          f"on the other {other:.0f}", flush=True)
    if samples.get("turn_reservations_total") != pairs or same + other != pairs:
        raise Failure(f"metrics do not count {pairs} reservations: {samples}")
    if threads == 1 and other != 0:
        raise Failure("one thread, yet a token counted as taken on another")
    if threads > 1:
        if other == 0:
            raise Failure(f"{pairs} pairs, none taken on the other thread")
        # The hand-over carried a live socket: data reaches the last pair's odd port.
        check_data_reaches(rtcp, odd)


run(test)

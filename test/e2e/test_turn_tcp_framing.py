#!/usr/bin/env python3
"""TURN over TCP framing through the relay, whatever the reads cut (RFC 8656 section
12.5, RFC 8489 section 6.2.2).

The relay reads a TCP client in 64 KiB pieces and handles each whole message where it
was read, keeping an incomplete one for the next read. One client with a channel to a
UDP peer on loopback sends, in order:

- a Binding request one byte at a time (answered on the stream);
- ChannelData of 1 to 4 bytes and around a multiple of 4, each one byte at a time, so
  headers and padding are cut everywhere;
- a mix of 600 ChannelData messages of 1 to 60,000 bytes as one stream, written in
  pieces of prime sizes unrelated to the relay's reads, so messages straddle reads.

Every datagram must reach the peer once, whole and in order. The other way, the peer's
datagrams of odd sizes come back as padded ChannelData on the stream.
"""
import os
import random
import socket
import struct

from harness import Failure, run, scaled, write_private
from turn_wire import (BINDING, TurnClient, attribute, message, parse, xor_address)

SECRET = "natfwd-framing-secret"
CHANNEL_BIND, CHANNEL_NUMBER = 0x009, 0x000C
CHANNEL = 0x4001
BINDING_SUCCESS = 0x0101


def channel_data(payload: bytes) -> bytes:
    return struct.pack("!HH", CHANNEL, len(payload)) + payload + b"\0" * (-len(payload) % 4)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise Failure("the relay closed the TCP connection")
        out += chunk
    return out


def expect_at_peer(peer: socket.socket, payloads: list[bytes], what: str) -> None:
    for i, payload in enumerate(payloads):
        try:
            got = peer.recv(65536)
        except socket.timeout:
            raise Failure(f"{what}: datagram {i + 1} of {len(payloads)} did not arrive")
        if got != payload:
            raise Failure(f"{what}: datagram {i + 1} of {len(payloads)}: {len(got)} bytes, "
                          f"expected {len(payload)} (lost, cut or out of order)")


def test(w):
    secret_file = os.path.join(w.tmpdir, "turn-secret")
    write_private(secret_file, SECRET + "\n")
    _, addr = w.natfwd.relay(extra=["--allow-peer", "127.0.0.0/8",
                                    "--auth-secret-file", secret_file])
    host, _, port = addr.rpartition(":")
    server = (host, int(port))

    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(scaled(10))
    # Room for one piece's datagrams at the peer: the test waits for them after each.
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)

    stream = socket.create_connection(server, timeout=scaled(10))
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = TurnClient(stream, server, SECRET, "framing")
    if client.allocate() != 0:
        raise Failure(f"Allocate over TCP: {client.last}")
    relayed = client.relayed()
    bind = (attribute(CHANNEL_NUMBER, struct.pack("!HH", CHANNEL, 0)) +
            attribute(0x0012, xor_address("127.0.0.1", peer.getsockname()[1])))
    if client.request(CHANNEL_BIND, bind) != 0:
        raise Failure(f"ChannelBind over TCP: {client.last}")

    # A Binding request, one byte per write.
    txid = os.urandom(12)
    for b in message(BINDING, b"", txid):
        stream.sendall(bytes([b]))
    head = recv_exact(stream, 20)
    kind, got_txid, _ = parse(head + recv_exact(stream, struct.unpack("!H", head[2:4])[0]))
    if kind != BINDING_SUCCESS or got_txid != txid:
        raise Failure(f"Binding one byte at a time: answer {kind:#x}, expected 0x101")
    print("binding request in 20 one-byte writes: answered", flush=True)

    # Small ChannelData, one byte per write: every cut of header, data and padding.
    small = [os.urandom(n) for n in (1, 2, 3, 4, 5, 7, 8, 1299, 1300, 1301)]
    for payload in small:
        for b in channel_data(payload):
            stream.sendall(bytes([b]))
    expect_at_peer(peer, small, "one byte at a time")
    print(f"{len(small)} ChannelData in one-byte writes: all reached the peer", flush=True)

    # A stream of mixed sizes in pieces of prime lengths.
    rng = random.Random(5)
    sizes = [rng.choice((rng.randint(1, 64), rng.randint(1000, 1400), rng.randint(1, 9000)))
             for _ in range(590)] + [60000] * 10
    rng.shuffle(sizes)
    payloads = [rng.randbytes(n) for n in sizes]
    wire = b"".join(channel_data(p) for p in payloads)
    # Message i ends at ends[i] in `wire`: after each piece, the peer must have every
    # message that ended within it.
    ends, total = [], 0
    for p in payloads:
        total += 4 + len(p) + (-len(p) % 4)
        ends.append(total)
    sent, delivered, pieces = 0, 0, 0
    primes = (65521, 131071, 7919, 262139, 1, 65537, 104729, 3, 99991, 257)
    while sent < len(wire):
        piece = wire[sent:sent + primes[pieces % len(primes)]]
        stream.sendall(piece)
        sent += len(piece)
        pieces += 1
        done = delivered
        while done < len(ends) and ends[done] <= sent:
            done += 1
        expect_at_peer(peer, payloads[delivered:done], f"stream piece {pieces}")
        delivered = done
    print(f"{len(payloads)} ChannelData ({len(wire)} bytes) in {pieces} writes of prime "
          f"sizes: all reached the peer whole and in order", flush=True)

    # The other way: datagrams of odd sizes come back padded, in order.
    back = [os.urandom(n) for n in (1, 3, 5, 1301, 9001, 60001)]
    for payload in back:
        peer.sendto(payload, relayed)
    for payload in back:
        channel, length = struct.unpack("!HH", recv_exact(stream, 4))
        data = recv_exact(stream, length + (-length % 4))[:length]
        if channel != CHANNEL or data != payload:
            raise Failure(f"peer -> client: channel {channel:#x}, {length} bytes, expected "
                          f"{CHANNEL:#x} and {len(payload)}")
    print(f"{len(back)} datagrams from the peer came back as padded ChannelData", flush=True)
    stream.close()
    peer.close()


run(test)

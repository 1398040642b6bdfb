"""What a tcpdump capture carried, as the applications saw it: each TCP direction's
bytes reassembled in sequence order, and each UDP payload.

A search of the raw capture file for a string misses it when the string was split
between two TCP segments (one write of the sender in two packets, or two writes of
the sender that the kernel did not coalesce). For a check that a string is absent
(the relay never sees a page's plaintext) that miss would be a false pass; for a
check that it is present, a flaky failure. Searching the reassembled streams is
neither.

Reads classic pcap files as `tcpdump -w` writes them (either byte order, micro- or
nanosecond stamps) with Ethernet, raw IP, Linux cooked v1 (`-i any` on older
libpcap) or v2 link types; IPv4 and IPv6 without extension headers.
"""

from __future__ import annotations

import re
import secrets
import signal
import struct
from collections import defaultdict
from typing import Callable

from procs import Failure, Proc, wait_until

# Flags for `tcpdump -w` in a test whose check is only as good as the capture is whole:
# -U writes each packet out as it is read; -s 0 keeps whole packets (a GSO or GRO packet
# on a veth can be 64 KB); -B 32768 gives the kernel ring 32 MiB. Without --immediate-mode
# libpcap uses TPACKET_V3, which packs packets densely into blocks: in immediate mode
# (TPACKET_V2) each slot is sized for a 256 KiB snapshot, and the default 2 MiB ring
# held four packets, so a burst while tcpdump waited for a CPU lost packets (measured:
# 4 of 1200 kept). A block reaches the file when it fills or times out (about a
# second): finish() waits for a sentinel datagram to be in the file before stopping.
TCPDUMP_FLAGS = ("-U", "-s", "0", "-B", "32768")

_LINK_ETHERNET = 1
_LINK_RAW = 101
_LINK_LINUX_SLL = 113
_LINK_LINUX_SLL2 = 276
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_ETHERTYPE_VLAN = 0x8100
_PROTO_TCP = 6
_PROTO_UDP = 17


def _packets(data: bytes):
    """(link type, captured bytes) of each packet."""
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        order = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = ">"
    else:
        raise ValueError("not a classic pcap file (pcapng is not read here)")
    link = struct.unpack(order + "I", data[20:24])[0] & 0x0FFFFFFF
    pos = 24
    while pos + 16 <= len(data):
        captured = struct.unpack(order + "I", data[pos + 8:pos + 12])[0]
        pos += 16
        # A capture stopped mid-write ends in a partial record.
        if pos + captured > len(data):
            return
        yield link, data[pos:pos + captured]
        pos += captured


def _network_layer(link: int, frame: bytes):
    """(ethertype, bytes from the IP header on) or None."""
    if link == _LINK_ETHERNET:
        if len(frame) < 14:
            return None
        ethertype, offset = struct.unpack("!H", frame[12:14])[0], 14
        if ethertype == _ETHERTYPE_VLAN and len(frame) >= 18:
            ethertype, offset = struct.unpack("!H", frame[16:18])[0], 18
        return ethertype, frame[offset:]
    if link == _LINK_LINUX_SLL:
        return (struct.unpack("!H", frame[14:16])[0], frame[16:]) if len(frame) >= 16 else None
    if link == _LINK_LINUX_SLL2:
        return (struct.unpack("!H", frame[0:2])[0], frame[20:]) if len(frame) >= 20 else None
    if link == _LINK_RAW and frame:
        version = frame[0] >> 4
        return (_ETHERTYPE_IPV4 if version == 4 else _ETHERTYPE_IPV6), frame
    return None


def _transport(ethertype: int, ip: bytes):
    """(protocol, source ip bytes, destination ip bytes, transport segment) or None."""
    if ethertype == _ETHERTYPE_IPV4 and len(ip) >= 20:
        header = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        # Later fragments carry no transport header; a lab path never fragments.
        if struct.unpack("!H", ip[6:8])[0] & 0x1FFF:
            return None
        return ip[9], ip[12:16], ip[16:20], ip[header:max(header, min(total, len(ip)))]
    if ethertype == _ETHERTYPE_IPV6 and len(ip) >= 40:
        length = struct.unpack("!H", ip[4:6])[0]
        return ip[6], ip[8:24], ip[24:40], ip[40:40 + length]
    return None


def _seq_offset(seq: int, base: int) -> int:
    """seq relative to base, as a signed 32-bit difference (sequence numbers wrap)."""
    diff = (seq - base) & 0xFFFFFFFF
    return diff - (1 << 32) if diff >= 1 << 31 else diff


def streams(data: bytes) -> list[bytes]:
    """Each TCP direction's payload in sequence order (holes as zero bytes; a
    retransmission overwrites the same bytes), then each UDP datagram's payload."""
    tcp: dict[tuple, list[tuple[int, bytes]]] = defaultdict(list)
    udp: list[bytes] = []
    for link, frame in _packets(data):
        net = _network_layer(link, frame)
        seg = _transport(*net) if net else None
        if not seg:
            continue
        proto, src, dst, body = seg
        if proto == _PROTO_UDP and len(body) >= 8:
            udp.append(body[8:])
        elif proto == _PROTO_TCP and len(body) >= 20:
            sport, dport, seq = struct.unpack("!HHI", body[:8])
            payload = body[(body[12] >> 4) * 4:]
            if payload:
                tcp[(src, sport, dst, dport)].append((seq, payload))
    out = []
    for segments in tcp.values():
        base = segments[0][0]
        placed = [(_seq_offset(seq, base), payload) for seq, payload in segments]
        start = min(offset for offset, _ in placed)
        end = max(offset + len(payload) for offset, payload in placed)
        stream = bytearray(end - start)
        for offset, payload in placed:
            stream[offset - start:offset - start + len(payload)] = payload
        out.append(bytes(stream))
    return out + udp


def carried(data: bytes, needle: bytes) -> bool:
    """Whether any TCP stream or UDP payload of the capture holds `needle`."""
    return any(needle in s for s in streams(data))


def finish(proc: Proc, path: str, send_sentinel: Callable[[bytes], None],
           timeout: float = 20) -> bytes:
    """Ends a capture that `proc` (tcpdump TCPDUMP_FLAGS -w path) is writing, once all
    it saw before now is in the file: `send_sentinel(token)` sends one datagram holding
    the token where the capture sees it, and packets reach the file in order. Fails if
    the kernel dropped any packet, since a check that a capture lacks something means
    nothing when the capture lacks packets. Returns the file's bytes."""
    token = b"natfwd-capture-end-" + secrets.token_hex(8).encode()

    def written() -> bool:
        send_sentinel(token)
        with open(path, "rb") as f:
            return token in f.read()
    first_line = len(proc.stderr_lines)
    try:
        wait_until(written, timeout, "the capture to reach the sentinel", interval=0.1)
    finally:
        # SIGINT: tcpdump prints its counts on the way out.
        proc.stop(signal.SIGINT)
    counts = "\n".join(proc.stderr_lines[first_line:])
    dropped = re.search(r"(\d+) packets? dropped by kernel", counts)
    if not dropped:
        raise Failure(f"tcpdump printed no drop count on exit:\n{proc.describe(10)}")
    if int(dropped.group(1)):
        raise Failure(f"tcpdump's kernel ring dropped {dropped.group(1)} packets: the "
                      "capture is not whole, so what it lacks proves nothing")
    with open(path, "rb") as f:
        return f.read()

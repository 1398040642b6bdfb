#!/usr/bin/env python3
"""A home router's port-mapping service that misbehaves, for the NAT lab (run inside the
NAT box's namespace by lab_test.py port-mapping-bad-gateway):

    fake_gateway.py --listen GW_IP --mode garbage|lie [--claim 203.0.113.99]

On UDP port 5351 (PCP, RFC 6887, and NAT-PMP, RFC 6886, share it):
  garbage  answers every datagram with 1-60 random bytes that are neither protocol's
           answer (the first byte is never 0 or 2, the versions they use);
  lie      answers a PCP MAP request with success, mapping the client's port to
           CLAIM:same port, and a NAT-PMP request likewise, although the box forwards
           nothing: a gateway that lies about its external address, or maps a port it
           does not forward.
Prints `listening on GW_IP:5351`, then one line per request it answered.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import struct
import sys
import time

PCP_VERSION = 2
PCP_OP_MAP = 1
NATPMP_VERSION = 0
PORT = 5351


def pcp_map_answer(request: bytes, claim: str) -> bytes | None:
    """RFC 6887 sections 7.2 and 11.1: a success response echoing the request's nonce,
    protocol and internal port, with `claim` as the assigned external address."""
    if len(request) < 60 or request[0] != PCP_VERSION or request[1] & 0x7F != PCP_OP_MAP:
        return None
    lifetime = struct.unpack("!I", request[4:8])[0]
    nonce, protocol = request[24:36], request[36]
    internal_port = struct.unpack("!H", request[40:42])[0]
    external = ipaddress.IPv6Address("::ffff:" + claim).packed
    header = struct.pack("!BBBBII", PCP_VERSION, 0x80 | PCP_OP_MAP, 0, 0, lifetime,
                         int(time.monotonic())) + bytes(12)
    body = nonce + bytes([protocol]) + bytes(3) + struct.pack("!HH", internal_port,
                                                              internal_port) + external
    return header + body


def natpmp_answer(request: bytes, claim: str) -> bytes | None:
    """RFC 6886 sections 3.2 and 3.3: the external address, or a UDP/TCP mapping of the
    internal port to the same external port."""
    if len(request) < 2 or request[0] != NATPMP_VERSION:
        return None
    op, epoch = request[1], int(time.monotonic())
    if op == 0:
        return struct.pack("!BBHI", 0, 128, 0, epoch) + socket.inet_aton(claim)
    if op in (1, 2) and len(request) >= 12:
        internal, _, lifetime = struct.unpack("!HHI", request[4:12])
        return struct.pack("!BBHIHHI", 0, 128 + op, 0, epoch, internal, internal, lifetime)
    return None


def garbage() -> bytes:
    data = bytearray(os.urandom(1 + os.urandom(1)[0] % 60))
    while data[0] in (NATPMP_VERSION, PCP_VERSION):
        data[0] = os.urandom(1)[0]
    return bytes(data)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--mode", choices=("garbage", "lie"), required=True)
    ap.add_argument("--claim", default="203.0.113.99")
    args = ap.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.listen, PORT))
    print(f"listening on {args.listen}:{PORT}", flush=True)
    while True:
        request, sender = sock.recvfrom(2048)
        if args.mode == "garbage":
            answer, what = garbage(), "garbage"
        else:
            answer = pcp_map_answer(request, args.claim) or natpmp_answer(request, args.claim)
            what = f"a mapping to {args.claim}" if answer else "nothing (not a MAP request)"
        if answer:
            sock.sendto(answer, sender)
        kind = "PCP" if request[:1] == bytes([PCP_VERSION]) else "NAT-PMP" \
            if request[:1] == bytes([NATPMP_VERSION]) else "other"
        print(f"{kind} request from {sender[0]}:{sender[1]}, answered {what}", flush=True)


if __name__ == "__main__":
    sys.exit(main())

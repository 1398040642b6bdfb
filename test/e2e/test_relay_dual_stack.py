#!/usr/bin/env python3
"""relay --listen [::]:0 serves IPv4 and IPv6 on one port, every data-plane thread too:
STUN Binding answers carry each client's own address in its own family (IPv4 clients
as IPv4, not ::ffff:a.b.c.d), the rendezvous/TURN TCP port takes both, and TURN
allocates per RFC 8656 section 7.2: IPv4 by default for an IPv6 client, IPv6 when
asked (from --relay-address), 443 for a peer of the other family. On loopback;
skipped (77) when the host has no IPv6 loopback.
"""

import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import SKIP, Failure, run, scaled  # noqa: E402
from turn_interop import SECRET, start_relay  # noqa: E402
from turn_wire import (BINDING, REQUESTED_TRANSPORT, TurnClient, attribute,  # noqa: E402
                       decode_xor_address, message, parse)

XOR_MAPPED_ADDRESS, XOR_RELAYED_ADDRESS = 0x0020, 0x0016
REQUESTED_ADDRESS_FAMILY = 0x0017
SOCKETS_PER_FAMILY = 6  # spread over the SO_REUSEPORT group by source port


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def binding(family: int, host: str, port: int) -> None:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(scaled(5))
        s.bind((host, 0))
        txid = os.urandom(12)
        s.sendto(message(BINDING, b"", txid), (host, port))
        kind, got_txid, attrs = parse(s.recv(2048))
        own = s.getsockname()[:2]
    if kind != 0x0101 or got_txid != txid or XOR_MAPPED_ADDRESS not in attrs:
        raise Failure(f"Binding from {own}: answer type {kind:#x}, attributes {list(attrs)}")
    mapped = decode_xor_address(attrs[XOR_MAPPED_ADDRESS], txid)
    if mapped != own:
        raise Failure(f"Binding from {own}: XOR-MAPPED-ADDRESS says {mapped}")


def allocate(client: TurnClient, family_value: int = 0) -> tuple[int, tuple[str, int]]:
    attrs = attribute(REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))
    if family_value:
        attrs += attribute(REQUESTED_ADDRESS_FAMILY, bytes([family_value, 0, 0, 0]))
    code = client.request(0x003, attrs)
    if code:
        return code, ("", 0)
    return 0, decode_xor_address(client.last[XOR_RELAYED_ADDRESS], client.last_txid)


def test(w):
    if not has_ipv6_loopback():
        print("SKIP: no IPv6 loopback (::1) on this host", flush=True)
        sys.exit(SKIP)
    proc, host, port = start_relay(w, ["--listen", "[::]:0", "--threads", "2",
                                       "--relay-address", "127.0.0.1", "--relay-address", "::1",
                                       "--allow-peer", "::1/128"])
    if host != "[::]":
        raise Failure(f"ready line names {host}, not [::]")
    for _ in range(SOCKETS_PER_FAMILY):
        binding(socket.AF_INET, "127.0.0.1", port)
        binding(socket.AF_INET6, "::1", port)
    print(f"STUN: {SOCKETS_PER_FAMILY} Bindings per family answered with the client's own "
          "address", flush=True)
    for ip in ("127.0.0.1", "::1"):
        with socket.create_connection((ip, port), timeout=scaled(5)):
            pass
    print("TCP: connected over IPv4 and IPv6", flush=True)

    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.settimeout(scaled(5))
        v6_client = TurnClient(s, ("::1", port), SECRET, "dual-1")
        code, relayed = allocate(v6_client)
        if code or relayed[0] != "127.0.0.1":
            raise Failure(f"IPv6 client, default family: {code}, relayed {relayed}, "
                          "want IPv4 127.0.0.1")
        print(f"TURN: IPv6 client allocated IPv4 {relayed[0]}:{relayed[1]}", flush=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(scaled(5))
        v4_client = TurnClient(s, ("127.0.0.1", port), SECRET, "dual-2")
        code, relayed = allocate(v4_client, family_value=2)
        if code or relayed[0] != "::1":
            raise Failure(f"IPv4 client asking for IPv6: {code}, relayed {relayed}, want ::1")
        code = v4_client.create_permission("127.0.0.1")
        if code != 443:
            raise Failure(f"IPv4 peer on an IPv6 allocation: {code}, want 443")
        print(f"TURN: IPv4 client allocated IPv6 [{relayed[0]}]:{relayed[1]}; an IPv4 peer "
              "gets 443", flush=True)
    proc.check_running("relay")


run(test)

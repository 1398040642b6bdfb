"""A minimal STUN/TURN client for the relay's flood tests (RFC 8489, RFC 8656): long-term
credentials in the TURN REST API form, requests over UDP or TCP, error codes read back.
Stdlib only; just what the tests need (no FINGERPRINT, no retransmission)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import socket
import struct
import time

MAGIC = 0x2112A442
BINDING, ALLOCATE, REFRESH, CREATE_PERMISSION = 0x001, 0x003, 0x004, 0x008
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE = 0x0006, 0x0008, 0x0009
REALM, NONCE, XOR_PEER_ADDRESS, REQUESTED_TRANSPORT = 0x0014, 0x0015, 0x0012, 0x0019
XOR_RELAYED_ADDRESS, EVEN_PORT, RESERVATION_TOKEN = 0x0016, 0x0018, 0x0022
DATA_INDICATION, DATA = 0x0017, 0x0013


def rest_credentials(secret: str, user: str, lifetime: int = 3600) -> tuple[str, str]:
    """coturn's TURN REST API: ("EXPIRY:user", base64(HMAC-SHA1(secret, username)))."""
    username = f"{int(time.time()) + lifetime}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def xor_address(ip: str, port: int) -> bytes:
    """XOR-PEER-ADDRESS value of an IPv4 address (RFC 8489 section 14.2)."""
    raw = int(ipaddress.IPv4Address(ip))
    return struct.pack("!BBHI", 0, 1, port ^ (MAGIC >> 16), raw ^ MAGIC)


def decode_xor_address(value: bytes, txid: bytes) -> tuple[str, int]:
    """(ip, port) of an XOR-*-ADDRESS value, IPv4 or IPv6 (RFC 8489 section 14.2)."""
    family, port = value[1], struct.unpack("!H", value[2:4])[0] ^ (MAGIC >> 16)
    key = struct.pack("!I", MAGIC) + (txid if family == 2 else b"")
    raw = bytes(a ^ b for a, b in zip(value[4:], key))
    return str(ipaddress.ip_address(raw)), port


def message(method: int, attrs: bytes, txid: bytes, key: bytes | None = None) -> bytes:
    if key is None:
        return struct.pack("!HHI", method, len(attrs), MAGIC) + txid + attrs
    # MESSAGE-INTEGRITY covers the header with a length that already counts it.
    head = struct.pack("!HHI", method, len(attrs) + 24, MAGIC) + txid
    mac = hmac.new(key, head + attrs, hashlib.sha1).digest()
    return head + attrs + attribute(MESSAGE_INTEGRITY, mac)


def xor_address_of(value: bytes) -> tuple[str, int]:
    """(ip, port) of an IPv4 XOR-*-ADDRESS value."""
    _, _, port, raw = struct.unpack("!BBHI", value[:8])
    return str(ipaddress.IPv4Address(raw ^ MAGIC)), port ^ (MAGIC >> 16)


def parse(data: bytes) -> tuple[int, bytes, dict]:
    """(message type, transaction id, {attribute type: first value})."""
    kind, length, _ = struct.unpack("!HHI", data[:8])
    txid, attrs, offset = data[8:20], {}, 20
    while offset + 4 <= 20 + length:
        t, n = struct.unpack("!HH", data[offset:offset + 4])
        attrs.setdefault(t, data[offset + 4:offset + 4 + n])
        offset += 4 + n + (-n % 4)
    return kind, txid, attrs


def error_of(attrs: dict) -> int:
    """The ERROR-CODE of a response, 0 for none (success)."""
    value = attrs.get(ERROR_CODE)
    return value[2] * 100 + value[3] if value else 0


class TurnClient:
    """One TURN client on one socket (UDP, or a connected TCP stream)."""

    def __init__(self, sock: socket.socket, server: tuple[str, int], secret: str, user: str,
                 realm: str = "natfwd"):
        self.sock, self.server = sock, server
        self.tcp = sock.type == socket.SOCK_STREAM
        self.username, password = rest_credentials(secret, user)
        self.realm = realm
        self.key = hashlib.md5(f"{self.username}:{realm}:{password}".encode()).digest()
        self.nonce = b""
        # The last authenticated answer: its transaction id and attributes.
        self.last_txid, self.last = b"", {}

    def _exchange(self, data: bytes) -> bytes:
        if self.tcp:
            self.sock.sendall(data)
            head = self._recv_exact(20)
            return head + self._recv_exact(struct.unpack("!H", head[2:4])[0])
        self.sock.sendto(data, self.server)
        return self.sock.recv(65536)

    def _recv_exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed by the relay")
            out += chunk
        return out

    def request(self, method: int, attrs: bytes = b"") -> int:
        """Sends an authenticated request (learning the nonce first); returns the error
        code of the answer, 0 for success."""
        for _ in range(3):
            if not self.nonce:
                _, _, got = parse(self._exchange(message(method, b"", os.urandom(12))))
                self.nonce = got.get(NONCE, b"")
            creds = (attribute(USERNAME, self.username.encode()) +
                     attribute(REALM, self.realm.encode()) + attribute(NONCE, self.nonce))
            _, self.last_txid, got = parse(self._exchange(message(method, attrs + creds,
                                                                  os.urandom(12), self.key)))
            self.last = got
            code = error_of(got)
            if code != 438:
                return code
            self.nonce = got.get(NONCE, b"")
        return code

    def allocate(self, extra: bytes = b"") -> int:
        return self.request(ALLOCATE,
                            attribute(REQUESTED_TRANSPORT, bytes([17, 0, 0, 0])) + extra)

    def relayed(self) -> tuple[str, int]:
        """The XOR-RELAYED-ADDRESS of the last answer."""
        return xor_address_of(self.last[XOR_RELAYED_ADDRESS])

    def create_permission(self, ip: str) -> int:
        return self.request(CREATE_PERMISSION, attribute(XOR_PEER_ADDRESS, xor_address(ip, 9)))


def binding_rtt(server: tuple[str, int]) -> float:
    """Seconds for one STUN Binding request over UDP to be answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        started = time.monotonic()
        s.sendto(message(BINDING, b"", os.urandom(12)), server)
        s.recv(2048)
        return time.monotonic() - started

#!/usr/bin/env python3
"""A stranger who knows only a peer's public key gets nothing at the relay.

A public key is no secret: it travels in QUIC certificates and in IncomingSession. Before
rendezvous protocol 2 a connection that said Hello with the laptop's key and then
OpenSession to `home` received home's ICE credentials and candidates (its LAN addresses
among them), and home logged "wants a tunnel" as if the laptop had asked.

Against a real relay and a real serving peer that authorises the laptop's key, a raw
client (frames and protobuf encoded by hand here, as an attacker would) says Hello with
the laptop's key and:
1. sends OpenSession without proving the key: Error NOT_PROVEN, the connection closed,
   no AcceptSession or Candidate, and home's log holds no "wants a tunnel";
2. answers the Challenge with a Prove of garbage: Error BAD_SIGNATURE, no Welcome (so
   no TURN credentials), closed;
3. an old peer's Hello (protocol 1) gets Error VERSION saying to upgrade the peer.
The real laptop's tunnel works before and after.
"""
import os
import socket
import struct
import subprocess

from harness import Failure, echo, echo_roundtrip, run, scaled, split_hostport
from pbwire import encode, fields, frame

# Envelope fields and Error codes (proto/rendezvous.proto).
HELLO, WELCOME, OPEN_SESSION, ACCEPT_SESSION, CANDIDATE, ERROR, CHALLENGE, PROVE = (
    1, 2, 5, 7, 8, 12, 16, 17)
ERROR_VERSION, ERROR_BAD_SIGNATURE, ERROR_NOT_PROVEN = 6, 8, 10


def message(number: int, body: bytes) -> bytes:
    return encode([[number, 2, body]])


def top_fields(data: bytes) -> dict:
    return {number: value for number, _, value in fields(data)}


class RawClient:
    def __init__(self, relay_addr: str):
        host, port = split_hostport(relay_addr)
        self.sock = socket.create_connection((host, port), timeout=scaled(10))
        self.buffer = b""

    def send(self, envelope: bytes) -> None:
        self.sock.sendall(frame(envelope))

    def read_all(self) -> list:
        """Every Envelope until the relay closes the connection: [(field, body)]."""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise Failure("the relay neither answered nor closed the connection") from None
            if not chunk:
                break
            self.buffer += chunk
        out, data = [], self.buffer
        while len(data) >= 8:
            length = struct.unpack(">I", data[4:8])[0]
            out.extend(top_fields(data[8:8 + length]).items())
            data = data[8 + length:]
        return out

    def read_one(self):
        while len(self.buffer) < 8 or len(self.buffer) < 8 + struct.unpack(
                ">I", self.buffer[4:8])[0]:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Failure("the relay closed the connection before answering")
            self.buffer += chunk
        length = struct.unpack(">I", self.buffer[4:8])[0]
        envelope = top_fields(self.buffer[8:8 + length])
        self.buffer = self.buffer[8 + length:]
        return next(iter(envelope.items()))

    def close(self):
        self.sock.close()


def hello(key: bytes, version: int = 2) -> bytes:
    return message(HELLO, encode([[1, 0, version], [2, 2, key], [3, 2, b"attacker"]]))


def raw_public_key(state_dir: str) -> bytes:
    der = subprocess.run(["openssl", "pkey", "-in", os.path.join(state_dir, "identity.key"),
                          "-pubout", "-outform", "DER"], capture_output=True, check=True,
                         timeout=scaled(20)).stdout
    return der[-32:]


def error_code(messages) -> int:
    errors = [body for number, body in messages if number == ERROR]
    if not errors:
        raise Failure(f"no Error from the relay, got fields {[n for n, _ in messages]}")
    return top_fields(errors[0]).get(1, 0)


def test(w):
    target = w.target(echo)
    _, relay_addr = w.natfwd.relay()
    home = w.natfwd.serve(relay_addr, "home", [target.addr])
    laptop_key = raw_public_key(w.natfwd.client_state_dir())
    fwd, (laddr,) = w.natfwd.forward(relay_addr, "home", [f"0:{target.addr}"])
    echo_roundtrip(laddr, b"before the attack")
    wants_before = "\n".join(home.stderr_lines).count("wants a tunnel")

    # 1. OpenSession with the laptop's key, unproven.
    c = RawClient(relay_addr)
    c.send(hello(laptop_key))
    number, _ = c.read_one()
    if number != CHALLENGE:
        raise Failure(f"Hello was answered with field {number}, not a Challenge")
    ice = encode([[1, 2, b"ufrg"], [2, 2, b"p" * 24]])
    c.send(message(OPEN_SESSION, encode([[1, 0, 0x5EC12E7], [2, 2, b"home"], [3, 2, ice]])))
    messages = c.read_all()
    c.close()
    leaked = [n for n, _ in messages if n in (ACCEPT_SESSION, CANDIDATE, WELCOME)]
    if leaked or error_code(messages) != ERROR_NOT_PROVEN:
        raise Failure(f"unproven OpenSession: got fields {[n for n, _ in messages]} "
                      f"(leaked {leaked}), want only Error NOT_PROVEN")

    # 2. A Prove of garbage.
    c = RawClient(relay_addr)
    c.send(hello(laptop_key))
    c.read_one()
    c.send(message(PROVE, encode([[1, 2, os.urandom(64)]])))
    messages = c.read_all()
    c.close()
    if any(n == WELCOME for n, _ in messages) or error_code(messages) != ERROR_BAD_SIGNATURE:
        raise Failure(f"forged Prove: got fields {[n for n, _ in messages]}, want only Error "
                      "BAD_SIGNATURE and no Welcome")

    # 3. An old peer.
    c = RawClient(relay_addr)
    c.send(hello(laptop_key, version=1))
    messages = c.read_all()
    c.close()
    errors = [top_fields(body) for n, body in messages if n == ERROR]
    if not errors or errors[0].get(1) != ERROR_VERSION or b"upgrade the peer" not in errors[0].get(
            2, b""):
        raise Failure(f"protocol 1 Hello: got {errors or [n for n, _ in messages]}, want Error "
                      "VERSION saying to upgrade the peer")

    if "\n".join(home.stderr_lines).count("wants a tunnel") != wants_before:
        raise Failure("home logged a tunnel request for the impersonated key:\n" +
                      "\n".join(home.stderr_lines[-30:]))
    echo_roundtrip(laddr, b"after the attack")
    fwd.stop()
    print("impersonation: unproven OpenSession -> NOT_PROVEN, forged Prove -> BAD_SIGNATURE, "
          "protocol 1 -> VERSION (upgrade the peer); home saw nothing", flush=True)


if __name__ == "__main__":
    run(test)

"""The protobuf wire format, just what the tests that speak the rendezvous protocol by hand
need (a malicious relay's proxy, a raw attacker): varints and length-delimited fields,
and the frame around an Envelope (proto/frame.h)."""
import struct

FRAME_HEADER = b"\xc5F\x01\x00"  # magic, frame version 1, reserved


def varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        out.append(b | (0x80 if value else 0))
        if not value:
            return bytes(out)


def fields(data: bytes) -> list:
    out, i = [], 0
    while i < len(data):
        key, i = varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(data, i)
        elif wire == 2:
            length, i = varint(data, i)
            value, i = data[i:i + length], i + length
        else:
            raise ValueError(f"wire type {wire}")
        out.append([number, wire, value])
    return out


def encode(items: list) -> bytes:
    out = bytearray()
    for number, wire, value in items:
        out += put_varint(number << 3 | wire)
        out += put_varint(value) if wire == 0 else put_varint(len(value)) + value
    return bytes(out)


def frame(payload: bytes) -> bytes:
    return FRAME_HEADER + struct.pack(">I", len(payload)) + payload

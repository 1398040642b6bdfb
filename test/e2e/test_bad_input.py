#!/usr/bin/env python3
"""Bad input: wrong command lines exit 2 with one line; network garbage leaves the relay
serving everyone else.

1. Each wrong CLI spec makes `peer`/`relay` exit 2 with exactly one non-empty line on
   stderr (no relay at all: exit 2, and the line says so).
2. Random garbage, an oversized frame header and a half frame on the relay's TCP port,
   random datagrams on its UDP port. Afterwards the relay still answers a STUN Binding
   request, a pair of peers registered before still tunnels data, and a fresh pair does.
"""
import os
import random
import socket
import struct
import subprocess

from harness import Failure, connect, echo, recv_all, run, scaled, split_hostport

STUN_COOKIE = 0x2112A442


def expect_usage_error(w, label, argv, must_mention=None):
    env = dict(os.environ)
    env.pop("NATFWD_RELAY", None)
    try:
        r = subprocess.run(argv, capture_output=True, timeout=scaled(15), env=env,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Failure(f"{label}: did not exit within {scaled(15):.0f} s: {argv}") from None
    lines = [l for l in r.stderr.decode(errors="replace").splitlines() if l.strip()]
    problems = []
    if r.returncode != 2:
        problems.append(f"exit code {r.returncode}, expected 2")
    if len(lines) != 1:
        problems.append(f"{len(lines)} non-empty stderr lines, expected exactly 1")
    if must_mention and not any(must_mention in l.lower() for l in lines):
        problems.append(f"stderr does not mention {must_mention!r}")
    if problems:
        shown = "\n".join("    " + l for l in lines[:20]) or "    (nothing)"
        raise Failure(f"{label}: {'; '.join(problems)}\n  argv: {argv}\n  stderr:\n{shown}\n"
                      f"  stdout: {r.stdout[:500]!r}")
    return lines[0]


def cli_cases(w, relay_addr):
    peer, relay = w.peer_bin, w.relay_bin

    def sd():
        return ["--state-dir", w.natfwd.state_dir("cli")]

    cases = [
        ("-L port out of range", [peer, "--relay", relay_addr, *sd(), "-L", "99999:h:1", "home"]),
        ("-L without HOSTPORT", [peer, "--relay", relay_addr, *sd(), "-L", "2222:h", "home"]),
        ("-L without a peer name", [peer, "--relay", relay_addr, *sd(), "-L", "0:h:1"]),
        ("--serve with port 0", [peer, "--relay", relay_addr, *sd(), "--name", "home",
                                 "--serve", "h:0"]),
        ("--serve without a port", [peer, "--relay", relay_addr, *sd(), "--name", "home",
                                    "--serve", "h"]),
        ("--relay not HOST:PORT", [peer, "--relay", "x:y", *sd(), "-L", "0:h:1", "home"]),
        ("unknown peer flag", [peer, "--relay", relay_addr, *sd(), "--no-such-flag",
                               "-L", "0:h:1", "home"]),
        ("-D not a port", [peer, "--relay", relay_addr, *sd(), "-D", "x", "home"]),
        ("-D without a peer name", [peer, "--relay", relay_addr, *sd(), "-D", "0"]),
        ("nc without a target", [peer, "--relay", relay_addr, *sd(), "nc", "home"]),
        ("nc target not HOST:PORT", [peer, "--relay", relay_addr, *sd(), "nc", "home", "h"]),
        ("nc with -L", [peer, "--relay", relay_addr, *sd(), "-L", "0:h:1", "nc", "home", "h:1"]),
        ("status with a stray argument", [peer, "status", *sd(), "extra"]),
        ("relay --listen bogus", [relay, "--listen", "bogus", *sd()]),
        ("unknown relay flag", [relay, "--listen", "127.0.0.1:0", *sd(), "--no-such-flag"]),
        ("relay --alternate-address on a wildcard listen",
         [relay, "--listen", "0.0.0.0:0", *sd(), "--alternate-address", "127.0.0.2"]),
        ("relay --alternate-address not an IP",
         [relay, "--listen", "127.0.0.1:0", *sd(), "--alternate-address", "nope"]),
        ("relay --alternate-address of another family",
         [relay, "--listen", "127.0.0.1:0", *sd(), "--alternate-address", "::1"]),
        ("relay --alternate-port without an address",
         [relay, "--listen", "127.0.0.1:0", *sd(), "--alternate-port", "5000"]),
        ("relay --metrics bogus", [relay, "--listen", "127.0.0.1:0", *sd(), "--metrics", "x:y"]),
    ]
    for label, argv in cases:
        line = expect_usage_error(w, label, argv)
        print(f"  {label}: exit 2: {line}")
    line = expect_usage_error(w, "no relay configured",
                              [peer, *sd(), "-L", "0:127.0.0.1:1", "home"], must_mention="relay")
    print(f"  no relay configured: exit 2: {line}")


def stun_binding(relay_addr, attempts=5):
    """Sends a STUN Binding request; returns the XOR-MAPPED-ADDRESS as (host, port)."""
    host, port = split_hostport(relay_addr)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(scaled(2))
        for _ in range(attempts):
            txid = os.urandom(12)
            s.sendto(struct.pack(">HHI", 0x0001, 0, STUN_COOKIE) + txid, (host, port))
            try:
                while True:
                    data, _ = s.recvfrom(2048)
                    if len(data) >= 20 and data[8:20] == txid:
                        break
            except socket.timeout:
                continue
            mtype, length, cookie = struct.unpack(">HHI", data[:8])
            if mtype != 0x0101 or cookie != STUN_COOKIE or len(data) != 20 + length:
                raise Failure(f"bad STUN response: type {mtype:#06x}, length {length}, "
                              f"cookie {cookie:#x}")
            pos = 20
            while pos + 4 <= len(data):
                atype, alen = struct.unpack(">HH", data[pos:pos + 4])
                value = data[pos + 4:pos + 4 + alen]
                if atype == 0x0020 and alen >= 8 and value[1] == 0x01:
                    xport = struct.unpack(">H", value[2:4])[0] ^ (STUN_COOKIE >> 16)
                    xaddr = struct.unpack(">I", value[4:8])[0] ^ STUN_COOKIE
                    mapped = (socket.inet_ntoa(struct.pack(">I", xaddr)), xport)
                    if mapped != s.getsockname():
                        raise Failure(f"STUN says we are {mapped}, we are {s.getsockname()}")
                    return mapped
                pos += 4 + ((alen + 3) & ~3)
            raise Failure("STUN Binding response without an IPv4 XOR-MAPPED-ADDRESS")
    raise Failure(f"no STUN Binding response from {relay_addr} after {attempts} tries")


def expect_closed(sock, label, timeout=30):
    sock.settimeout(scaled(timeout))
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise Failure(f"{label}: the relay kept the connection open for "
                      f"{scaled(timeout):.0f} s") from None


def garbage(relay_addr):
    host, port = split_hostport(relay_addr)
    rng = random.Random(1234)
    for i in range(8):
        with socket.create_connection((host, port), timeout=scaled(30)) as s:
            try:
                s.sendall(rng.randbytes(rng.randint(1, 65536)))
            except OSError:
                pass  # the relay may have closed it already: that is fine
    # Oversized frame: valid magic and version, length 0x7fffffff.
    with socket.create_connection((host, port), timeout=scaled(30)) as s:
        s.sendall(bytes([0xC5, 0x46, 0x01, 0x00, 0x7F, 0xFF, 0xFF, 0xFF]) + b"\0" * 1000)
        expect_closed(s, "oversized frame")
    # Half a frame, then close.
    with socket.create_connection((host, port), timeout=scaled(30)) as s:
        s.sendall(bytes([0xC5, 0x46, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00]) + b"\x0a" * 10)
    # Datagrams: random, empty, and a truncated STUN header.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        for i in range(300):
            u.sendto(rng.randbytes(rng.randint(0, 1400)), (host, port))
        u.sendto(b"", (host, port))
        u.sendto(struct.pack(">HHI", 0x0001, 0, STUN_COOKIE), (host, port))
        u.sendto(struct.pack(">HHI", 0x0001, 400, STUN_COOKIE) + os.urandom(12), (host, port))


def check_echo(laddr, label, size=300000):
    payload = os.urandom(size)
    with connect(laddr) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    if data != payload:
        raise Failure(f"{label}: echoed {len(data)} of {size} bytes"
                      + (" (corrupted)" if len(data) == size else ""))


def test(w):
    relay, relay_addr = w.natfwd.relay()
    print("command lines:")
    cli_cases(w, relay_addr)

    target = w.target(echo)
    w.natfwd.serve(relay_addr, "home", [target.addr])
    fwd_a, (laddr_a,) = w.natfwd.forward(relay_addr, "home", [f"0:{target.addr}"])
    check_echo(laddr_a, "before the garbage")

    stun_binding(relay_addr)
    garbage(relay_addr)
    relay.check_running("after the garbage")
    mapped = stun_binding(relay_addr)
    print(f"garbage sent; the relay still answers STUN (we are {mapped[0]}:{mapped[1]})")

    check_echo(laddr_a, "the pair registered before the garbage")
    w.natfwd.serve(relay_addr, "home2", [target.addr])
    _, (laddr_b,) = w.natfwd.forward(relay_addr, "home2", [f"0:{target.addr}"])
    check_echo(laddr_b, "a fresh pair after the garbage")
    relay.check_running("at the end")
    print("both pairs tunnel data after the garbage")


if __name__ == "__main__":
    run(test)

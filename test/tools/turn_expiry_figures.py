#!/usr/bin/env python3
"""Figures for the relay's TURN state under a permission flood (not a test: it asserts
nothing). Starts the relay given as $RELAY (default build/relay/relay) on loopback and

1. asks one allocation for PERMS peer IPs (default 200000; CreatePermission requests of
   64 addresses each) and prints how many were granted and the relay's VmRSS before and
   after;
2. fills ADDRESSES source addresses (127.0.1.x, default 25) with 128 allocations of 64
   permissions each, waits for the permissions to expire (300 s, RFC 8656 section 9)
   while a STUN Binding request goes to the relay every 2 ms, and prints the slowest
   answers during the expiry.

    RELAY=build/relay/relay python3 test/tools/turn_expiry_figures.py

Run it against an older build to compare. Only loopback addresses are used.
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from turn_wire import (CREATE_PERMISSION, XOR_PEER_ADDRESS, TurnClient, attribute,  # noqa: E402
                       binding_rtt, xor_address)

SECRET = "natfwd-figures-secret"
PERMS = int(os.environ.get("PERMS", 200000))
ADDRESSES = int(os.environ.get("ADDRESSES", 25))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def peer_ip(n: int) -> str:
    return f"127.{100 + n // 62500}.{n // 250 % 250}.{n % 250 + 1}"


def permissions(client: TurnClient, first: int, count: int) -> int:
    """Asks for `count` peer IPs from `first` on, 64 per request; returns how many
    were granted."""
    granted = 0
    for start in range(first, first + count, 64):
        n = min(64, first + count - start)
        attrs = b"".join(attribute(XOR_PEER_ADDRESS, xor_address(peer_ip(i), 9))
                         for i in range(start, start + n))
        if client.request(CREATE_PERMISSION, attrs) == 0:
            granted += n
    return granted


def udp_client(server, source: str, user: str) -> TurnClient:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((source, 0))
    s.settimeout(10)
    return TurnClient(s, server, SECRET, user)


def main() -> None:
    relay_bin = os.environ.get("RELAY", "build/relay/relay")
    tmp = tempfile.mkdtemp(prefix="natfwd-figures-")
    secret_file = os.path.join(tmp, "secret")
    with os.fdopen(os.open(secret_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(SECRET + "\n")
    state = os.path.join(tmp, "state")
    os.mkdir(state, 0o700)
    relay = subprocess.Popen([relay_bin, "--listen", "127.0.0.1:0", "--state-dir", state,
                              "--allow-peer", "127.0.0.0/8", "--auth-secret-file", secret_file,
                              "--max-allocations-per-user", "100000"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        m = re.search(r"listening on (\S+):(\d+) ", relay.stdout.readline())
        server = (m.group(1), int(m.group(2)))
        before = rss_kib(relay.pid)
        one = udp_client(server, "127.0.0.2", "one")
        one.allocate()
        started = time.monotonic()
        granted = permissions(one, 0, PERMS)
        print(f"one allocation asked for {PERMS} permissions in "
              f"{time.monotonic() - started:.1f} s: {granted} granted; relay VmRSS "
              f"{before} -> {rss_kib(relay.pid)} KiB", flush=True)

        clients, total = [], 0
        for a in range(ADDRESSES):
            for k in range(128):
                c = udp_client(server, f"127.0.1.{a + 1}", f"u{a}-{k}")
                if c.allocate() != 0:
                    continue
                clients.append(c)
                total += permissions(c, len(clients) * 64, 64)
        print(f"{len(clients)} allocations from {ADDRESSES} addresses hold {total} more "
              f"permissions; relay VmRSS {rss_kib(relay.pid)} KiB", flush=True)
        made = time.monotonic()
        rtts: list[tuple[float, float]] = []
        stop = threading.Event()

        def probe():
            while not stop.is_set():
                rtts.append((time.monotonic(), binding_rtt(server)))
                time.sleep(0.002)

        # Every permission made above expires between started + 300 s and made + 300 s.
        time.sleep(max(0.0, started + 290 - time.monotonic()))
        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        time.sleep(max(0.0, made + 310 - time.monotonic()))
        stop.set()
        thread.join()
        worst = sorted(rtt for _, rtt in rtts)
        print(f"STUN Binding during the expiry of those permissions ({len(worst)} probes): "
              f"median {worst[len(worst) // 2] * 1000:.2f} ms, 99th percentile "
              f"{worst[int(len(worst) * 0.99)] * 1000:.2f} ms, slowest "
              f"{worst[-1] * 1000:.2f} ms", flush=True)
    finally:
        relay.terminate()
        relay.wait(10)


if __name__ == "__main__":
    main()

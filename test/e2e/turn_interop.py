"""Helpers for the TURN interop tests: coturn's turnutils_* programs against our relay.

Stdlib only. Every process is started through the harness's ProcGroup (stopped by PID).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import time

from harness import SKIP, Failure, World, scaled, write_private
from turn_wire import rest_credentials  # noqa: F401 - test_turn_uclient imports it from here

SECRET = "natfwd-interop-secret"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_coturn(w: World, extra: list[str] = (), attempts: int = 10) -> int:
    """coturn on loopback with SECRET (REST credentials), relaying to loopback. It cannot
    listen on port 0: pick a port the kernel says is free, start it, and wait for its
    'listener opened' lines; if it lost the race, try another. Returns its port."""
    for _ in range(attempts):
        port = free_udp_port()
        argv = ["turnserver", "-n", "--listening-ip", "127.0.0.1", "--listening-port", str(port),
                "--relay-ip", "127.0.0.1", "--use-auth-secret", "--static-auth-secret", SECRET,
                "--realm", "natfwd", "--allow-loopback-peers", "--no-tls", "--no-dtls",
                "--no-cli", "--no-rfc5780", "--no-stun-backward-compatibility",
                "--log-file", "stdout", "--simple-log", "--pidfile",
                os.path.join(w.tmpdir, f"turnserver-{port}.pid"), *extra]
        proc = w.group.start(f"coturn:{port}", argv)
        try:
            proc.wait_stdout(r"(IPv4\. TCP listener opened on|Total General servers)", 10,
                             what="coturn listening")
            if proc.running():
                return port
        except Failure:
            pass
        proc.stop()
    raise Failure("could not start coturn on a free loopback port")


def require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        print(f"SKIP: coturn tools missing: {', '.join(missing)} (apt-get install coturn)",
              flush=True)
        sys.exit(SKIP)


def start_relay(w: World, extra: list[str] = ()) -> tuple[object, str, int]:
    """Our relay on loopback, port 0, relaying to loopback; returns (proc, host, port)."""
    secret_file = os.path.join(w.tmpdir, "turn-secret")
    write_private(secret_file, SECRET + "\n")
    relay, addr = w.natfwd.relay(extra=["--allow-peer", "127.0.0.0/8",
                                        "--auth-secret-file", secret_file, *extra])
    host, _, port = addr.rpartition(":")
    return relay, host, int(port)


def run_echo_peer(w: World, attempts: int = 20) -> int:
    """turnutils_peer (a UDP echo server) on a free loopback port.

    It needs a fixed port: pick one the kernel says is free, start the peer, and prove
    it is the peer that answers on it (an echoed probe). If another program took the
    port in between, the peer exits or the probe fails: try another port.
    """
    for attempt in range(attempts):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        peer = w.group.start(f"turnutils_peer:{port}",
                             ["turnutils_peer", "-L", "127.0.0.1", "-p", str(port)])
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(0.2)
        try:
            deadline = time.monotonic() + scaled(3)
            while time.monotonic() < deadline and peer.running():
                token = os.urandom(8)
                client.sendto(token, ("127.0.0.1", port))
                try:
                    data, _ = client.recvfrom(64)
                except (socket.timeout, ConnectionRefusedError):
                    continue
                if data == token:
                    return port
        finally:
            client.close()
        peer.stop()
    raise Failure(f"could not start turnutils_peer on a free port in {attempts} attempts")


SUMMARY_SENT = re.compile(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")
SUMMARY_LOST = re.compile(r"Total lost packets (\d+)")
OWN_CHANNEL_CLASH = "channel bind: error 400 (Channel bound to another peer)"


def uclient_outcome(w: World, label: str, args: list[str], timeout: float = 40):
    """Runs turnutils_uclient to completion: (exit code, its output, the process)."""
    proc = w.group.start(f"turnutils_uclient {label}", ["turnutils_uclient", *args])
    try:
        code = proc.wait_exit(timeout)
    except Failure:
        raise Failure(f"uclient {label}: did not finish within {timeout} s\n" + proc.describe())
    return code, "\n".join(proc.stdout_lines + proc.stderr_lines), proc


def run_uclient(w: World, label: str, args: list[str], expected: int,
                timeout: float = 40) -> dict:
    """Runs turnutils_uclient to completion; checks its summary: every message sent came
    back through the relay and none was lost. Returns the numbers."""
    started = time.monotonic()
    code, output, proc = uclient_outcome(w, label, args, timeout)
    if code != 0 and OWN_CHANNEL_CLASH in output:
        # uclient binds its RTCP peer (the peer's port + 1) and then its peer to two
        # channel numbers drawn at random from 4096 (startuclient.c); one session in
        # 4096 draws the same number twice, which RFC 8656 section 12.2 makes the
        # server refuse (coturn refuses it too) and uclient then exits. One more run
        # tells that draw from a relay that refuses for a reason of its own.
        print(f"uclient {label}: drew one channel number for two peers; once more",
              flush=True)
        started = time.monotonic()
        code, output, proc = uclient_outcome(w, f"{label} (again)", args, timeout)
    sent = SUMMARY_SENT.findall(output)
    lost = SUMMARY_LOST.findall(output)
    if code != 0 or not sent or not lost:
        raise Failure(f"uclient {label}: exit {code}, no summary\n" + proc.describe(60))
    n_sent, n_recv = map(int, sent[-1])
    n_lost = int(lost[-1])
    result = {"sent": n_sent, "received": n_recv, "lost": n_lost,
              "seconds": round(time.monotonic() - started, 1)}
    print(f"uclient {label}: {result}", flush=True)
    if n_sent != expected or n_recv != expected or n_lost != 0:
        raise Failure(f"uclient {label}: expected {expected} sent and received, 0 lost; "
                      f"got {result}\n" + proc.describe(60))
    return result

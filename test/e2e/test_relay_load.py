#!/usr/bin/env python3
"""Load on the relay, on loopback: LOAD_PEERS registered peers (test/tools/relay_load,
default 5000), LOAD_SESSIONS concurrent sessions (default 200) of which LOAD_RELAYED
(default 50) are real `peer` pairs forced through the relay's TURN, each carrying
LOAD_BYTES (default 1 MB) each way, checked by SHA-256; the rest are rendezvous
sessions of the load client (offer, answer, one candidate each way).

Passes when every registration, session and transfer succeeds and the relay's file
descriptors return to their starting count once everything has closed (eventfds
aside: GLib makes one lazily, shortly after start). Prints the
relay's VmRSS (/proc/PID/status) and fd count (/proc/PID/fd) before, at the peak and
after, and the memory per registered peer.
"""
import os
import resource
import socket
import subprocess
import threading
import time

from harness import (Failure, PatternStream, connect, echo, recv_all, run, scaled,
                     rss_kib, send_stream, wait_until)

PEERS = int(os.environ.get("LOAD_PEERS", 5000))
SESSIONS = int(os.environ.get("LOAD_SESSIONS", 200))
RELAYED = int(os.environ.get("LOAD_RELAYED", 50))
BYTES = int(os.environ.get("LOAD_BYTES", 1000 * 1000))
SERVERS = max(1, (RELAYED + 9) // 10)   # serving peers, ten relayed sessions each


def find_relay_load() -> str:
    env = os.environ.get("RELAY_LOAD")
    if env:
        return env
    relay = os.environ.get("RELAY", "build/relay/relay")
    return os.path.join(os.path.dirname(os.path.dirname(relay)), "test", "tools", "relay_load")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def lasting_fds(pid: int) -> int:
    """fds other than eventfds: GLib makes its worker thread's eventfd lazily, some time
    after the ready line, so a count taken at start may or may not include it."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:[eventfd]"
        except OSError:
            pass
    return n


def fd_targets(pid: int) -> list[str]:
    out = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            out.append(f"{fd}:{os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except OSError:
            pass
    return out


def exchange(laddr: str, seed: str, errors: list) -> None:
    """BYTES to the echo target and back through one forwarded connection."""
    try:
        with connect(laddr) as s:
            got = {}

            def reader():
                got["r"] = recv_all(s)
            t = threading.Thread(target=reader)
            t.start()
            sent = send_stream(s, PatternStream(seed, BYTES))
            s.shutdown(socket.SHUT_WR)
            t.join(scaled(120))
            count, digest = got.get("r", (0, ""))
            if count != BYTES or digest != sent:
                errors.append(f"{seed}: {count} of {BYTES} bytes came back "
                              f"({'same' if digest == sent else 'different'} content)")
    except Exception as e:  # noqa: BLE001
        errors.append(f"{seed}: {e}")


def test(w):
    try:
        load_test(w)
    except Failure as e:
        relays = [p for p in w.group.procs if p.name == "relay"]
        raise Failure(str(e) + ("\n" + relays[0].describe(stderr_tail=10) if relays else "")) \
            from None


def load_test(w):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = PEERS + 4 * RELAYED + 1024
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    load_bin = find_relay_load()
    if not os.access(load_bin, os.X_OK):
        raise Failure(f"{load_bin} not built")
    limits = ["--max-peers-per-address", str(PEERS + 1000),
              "--max-registrations-per-minute", str(PEERS + 1000),
              "--max-new-names-per-hour", str(PEERS + 1000),
              "--max-sessions-per-minute", str(SESSIONS * 4),
              "--max-allocations-per-user", str(RELAYED * 4),
              "--max-allocations-per-address", str(RELAYED * 8),
              "--allow-peer", "127.0.0.0/8"]
    relay, relay_addr = w.natfwd.relay(extra=limits)
    pid = relay.pid
    before = (rss_kib(pid), fds(pid))
    before_targets = fd_targets(pid)
    before_lasting = lasting_fds(pid)
    print(f"relay before: VmRSS {before[0]} KiB, {before[1]} fds", flush=True)

    t0 = time.monotonic()
    load = w.group.start("relay_load", [load_bin, "--relay", relay_addr, "--peers", str(PEERS),
                                        "--sessions", str(SESSIONS - RELAYED)],
                         stdin=subprocess.PIPE)
    load.wait_stdout(r"^registered ", 320, what="registrations")
    registered = (rss_kib(pid), fds(pid))
    load.wait_stdout(r"^peak: ", 120, what="load sessions")
    for line in load.stdout_lines:
        print(f"relay_load: {line}", flush=True)
    per_peer = (registered[0] - before[0]) * 1024 / PEERS
    print(f"relay with {PEERS} registered: VmRSS {registered[0]} KiB, {registered[1]} fds; "
          f"{per_peer:.0f} bytes per registered peer", flush=True)

    # The relayed sessions: real peers, forced through the relay's TURN.
    target = w.target(echo)
    forced = ["--force-relay", "--turn-transport", "udp"]
    for k in range(SERVERS):
        w.natfwd.serve(relay_addr, f"home{k}", [target.addr], extra=forced)
    forwards = []
    for i in range(RELAYED):
        fwd, (laddr,) = w.natfwd.forward(relay_addr, f"home{i % SERVERS}",
                                         [f"0:{target.addr}"], extra=forced)
        forwards.append((fwd, laddr))
    for i, (fwd, _) in enumerate(forwards):
        m = fwd.wait_stdout(r"^path \S+: (.*)$", 60, what=f"relayed session {i} path")
        if not m.group(1).startswith("relayed via turn-udp "):
            raise Failure(f"session {i} is not relayed through our TURN: {m.group(1)}")
    t_setup = time.monotonic() - t0
    errors: list = []
    threads = [threading.Thread(target=exchange, args=(laddr, f"s{i}", errors))
               for i, (_, laddr) in enumerate(forwards)]
    t1 = time.monotonic()
    for t in threads:
        t.start()
    peak = (rss_kib(pid), fds(pid))
    for t in threads:
        t.join(scaled(180))
    t_xfer = time.monotonic() - t1
    peak = (max(peak[0], rss_kib(pid)), max(peak[1], fds(pid)))
    if errors:
        raise Failure(f"{len(errors)} of {RELAYED} relayed transfers failed: {errors[:5]}")
    print(f"{RELAYED} relayed sessions carried {BYTES} bytes each way intact in "
          f"{t_xfer:.1f} s ({2 * RELAYED * BYTES / 1e6 / t_xfer:.1f} MB/s through TURN)",
          flush=True)
    print(f"relay at peak ({PEERS + SERVERS + RELAYED} connected peers, {SESSIONS} sessions, "
          f"{RELAYED} relayed): VmRSS {peak[0]} KiB, {peak[1]} fds", flush=True)

    load.popen.stdin.write(b"close\n")
    load.popen.stdin.flush()
    load.wait_stdout(r"^closed$", 60, what="the load client closing")
    if load.wait_exit(30) != 0:
        raise Failure("relay_load failed\n" + load.describe())
    for p in reversed(w.group.procs):
        if p is not relay and p.name.startswith("peer"):
            p.stop()
    try:
        wait_until(lambda: lasting_fds(pid) <= before_lasting, 60,
                   f"the relay's fds (eventfds aside) to return to {before_lasting}")
    except Failure as e:
        raise Failure(f"{e}: before {before_targets}, now {fd_targets(pid)}") from None
    finally:
        after = (rss_kib(pid), fds(pid))
        print(f"relay after all closed: VmRSS {after[0]} KiB, {after[1]} fds "
              f"(before {before[1]}, peak {peak[1]}; eventfds aside: before "
              f"{before_lasting}, after {lasting_fds(pid)})", flush=True)
    relay.check_running("after the load")
    print(f"\n| relay | VmRSS KiB | fds |\n|---|---:|---:|\n| before | {before[0]} | "
          f"{before[1]} |\n| {PEERS} registered | {registered[0]} | {registered[1]} |\n"
          f"| peak | {peak[0]} | {peak[1]} |\n| after | {after[0]} | {after[1]} |\n"
          f"memory per registered peer: {per_peer:.0f} bytes; setup of everything "
          f"{t_setup:.1f} s", flush=True)


if __name__ == "__main__":
    run(test)

#!/usr/bin/env python3
"""Floods from one address against the relay's TURN and TLS, on loopback: each leaves a
legitimate tunnel from another address working, and the relay's state bounded.

The flooder is 127.0.0.2, the legitimate peers 127.0.0.1. Each part starts its own
relay (TURN relaying to loopback allowed, its own TURN secret so that the test can make
REST credentials as any number of throwaway keys would get them):

1. allocations: 300 throwaway users allocate over UDP from one address. At most
   --max-allocations-per-address (128) are granted, the rest get 486 and are counted
   in --metrics; with --max-allocations 200 a `--force-relay` tunnel still gets set up,
   and the unused flood allocations are given back without waiting for their lifetime.
2. TURN over TCP: 600 connections from one address send one byte of a STUN header and
   are held open (reopened as the relay closes them), under a relay fd limit of 400.
   The relay holds at most the per-address cap of them, closes the idle ones, and a
   `--force-relay --turn-transport tcp` tunnel gets set up meanwhile; the tunnel's own
   TURN connections, which have allocations, outlive the idle timeout.
3. permissions: one allocation asks for 2000 peer IPs; 64 are granted, the rest get
   508; the relay's permission gauge stays at 64 and STUN keeps answering.
4. TLS handshakes: 1100 connections from one address send one byte of a TLS record
   (0x16) and are held open (reopened as closed). The relay holds at most its
   per-address share of handshakes, and a TLS relay link and tunnel
   (`--force-relay --turn-transport tls`) get set up meanwhile; the stalled handshakes
   are dropped and the tunnel carries on.

Figures (setup time of the legitimate tunnel with and without the flood, the relay's
fds and RSS) are printed before anything is asserted, so that a run against an older
relay ($RELAY) shows them too; E2E_FLOOD_PARTS=tls,permissions runs only those parts.
"""
import os
import re
import resource
import select
import socket
import threading
import time

from harness import Failure, connect, echo, run, scaled, wait_until, write_private
from relay_metrics import URL_RE, scrape
from turn_wire import TurnClient, binding_rtt

SECRET = "natfwd-flood-secret"
PATH_RE = r"^path home: (.*)$"
FLOODER = "127.0.0.2"


def relay_with_metrics(w, extra: list[str]) -> tuple[object, str, str]:
    secret_file = os.path.join(w.tmpdir, "turn-secret")
    if not os.path.exists(secret_file):
        write_private(secret_file, SECRET + "\n")
    relay, addr = w.natfwd.relay(extra=["--allow-peer", "127.0.0.0/8", "--auth-secret-file",
                                        secret_file, "--metrics", "127.0.0.1:0", *extra])
    metrics = re.search(URL_RE, " ".join(relay.stdout_lines)).group(1)
    return relay, addr, metrics


def error_count(metrics: str, kind: str) -> float:
    return scrape(metrics).get(f'errors_total{{kind="{kind}"}}', 0)


def bounded_fds(share: int) -> int:
    """What the relay may hold beyond its start while one address floods it and a
    tunnel is up: the flood's `share` of TURN or TLS, its connections still in the
    rendezvous' first-byte stage (at most --max-peers-per-address, 64) and the tunnel's
    own sockets (fewer than 32)."""
    return share + 64 + 32


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def echo_through(laddr: str, what: str) -> None:
    with connect(laddr, timeout=30) as s:
        s.sendall(b"x" * 10000)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    if len(got) != 10000:
        raise Failure(f"echo through the {what} tunnel returned {len(got)} of 10000 bytes")


def tunnel(w, relay_addr: str, transport: str) -> tuple[float, str]:
    """A legitimate `--force-relay` tunnel over `transport` through the relay's TURN;
    checks its path and an echo through it; returns the seconds from starting the two
    peers to the path line, and the -L address."""
    target = w.target(echo)
    forced = ["--force-relay", "--turn-transport", transport]
    started = time.monotonic()
    w.natfwd.serve(relay_addr, "home", [target.addr], extra=forced, timeout=scaled(60))
    fwd, (laddr,) = w.natfwd.forward(relay_addr, "home", [f"0:{target.addr}"], extra=forced,
                                     timeout=scaled(60))
    path = fwd.wait_stdout(PATH_RE, scaled(60), what=f"path line ({transport})").group(1)
    took = time.monotonic() - started
    if not path.startswith(f"relayed via turn-{transport} "):
        raise Failure(f"expected a tunnel relayed via turn-{transport}, got: {path}")
    echo_through(laddr, transport)
    return took, laddr


class Flood:
    """Up to `count` TCP connections from FLOODER to `addr`, each having sent `first`
    and then nothing. A thread counts those the relay closes and opens new ones in
    their place (at most `refill` per 50 ms), so the flood stays held for as long as it
    runs; closing them all stops it."""

    def __init__(self, addr: str, count: int, first: bytes, refill: int = 25,
                 source: str = FLOODER):
        host, port = addr.rsplit(":", 1)
        self.target = (host, int(port))
        self.source = source
        self.count, self.first, self.refill = count, first, refill
        self.open: set[socket.socket] = set()
        self.opened = self.closed_by_relay = self.refused = 0
        self.done_opening = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _open_one(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((self.source, 0))
        s.settimeout(5)
        try:
            s.connect(self.target)
            s.sendall(self.first)
        except OSError:
            s.close()
            self.refused += 1
            return
        s.setblocking(False)
        with self._lock:
            self.open.add(s)
            self.opened += 1

    def _reap(self, timeout: float) -> int:
        with self._lock:
            sockets = list(self.open)
        if not sockets:
            return 0
        closed = 0
        poller = select.poll()
        by_fd = {s.fileno(): s for s in sockets}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        for fd, _ in poller.poll(int(timeout * 1000)):
            s = by_fd[fd]
            try:
                data = s.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                with self._lock:
                    self.open.discard(s)
                s.close()
                closed += 1
        self.closed_by_relay += closed
        return closed

    def _run(self) -> None:
        for _ in range(self.count):
            if self._stop.is_set():
                break
            self._open_one()
        self.done_opening.set()
        while not self._stop.is_set():
            self._reap(0.05)
            if self.refill:
                missing = self.count - len(self.open)
                for _ in range(min(missing, self.refill)):
                    self._open_one()

    def held(self) -> int:
        with self._lock:
            return len(self.open)

    def stop_refilling(self) -> None:
        self.refill = 0

    def wait_all_closed_by_relay(self, timeout: float, what: str) -> None:
        wait_until(lambda: self.held() == 0, timeout, what)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(scaled(30))
        with self._lock:
            for s in self.open:
                s.close()
            self.open.clear()


def flooded_tunnel(w, relay, relay_addr: str, count: int, first: bytes,
                   transport: str) -> tuple[Flood, int, int, float, str]:
    """Starts a Flood of `count` connections sending `first`, then a legitimate tunnel
    over `transport`; returns the flood (still running: the caller closes it), the
    relay's fds before the flood and with the tunnel up, the tunnel's setup time and
    its -L address."""
    base = fds(relay.pid)
    flood = Flood(relay_addr, count, first)
    w.on_cleanup(flood.close)
    flood.done_opening.wait(scaled(60))
    took, laddr = tunnel(w, relay_addr, transport)
    return flood, base, fds(relay.pid), took, laddr


def part_allocations(w) -> None:
    relay, relay_addr, metrics = relay_with_metrics(w, ["--max-allocations", "200"])
    host, port = relay_addr.rsplit(":", 1)
    granted, refused, sockets = 0, {}, []
    for i in range(300):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((FLOODER, 0))
        s.settimeout(scaled(5))
        sockets.append(s)
        code = TurnClient(s, (host, int(port)), SECRET, f"throwaway{i}").allocate()
        if code == 0:
            granted += 1
        else:
            refused[code] = refused.get(code, 0) + 1
    took, _ = tunnel(w, relay_addr, "udp")
    quota = error_count(metrics, "turn_quota_address")
    print(f"allocations: 300 users from {FLOODER}: {granted} granted, refused {refused}; "
          f"counted turn_quota_address {quota:.0f}; a --force-relay udp tunnel set up in "
          f"{took:.1f} s", flush=True)
    if granted != 128 or refused != {486: 172} or quota != 172:
        raise Failure(f"expected 128 allocations granted and 172 refused with 486 (counted), "
                      f"got {granted} and {refused} ({quota:.0f} counted)")
    # The flood installed no permission: its allocations go back early, the tunnel's stay.
    held = scrape(metrics)["turn_allocations"]
    wait_until(lambda: error_count(metrics, "turn_unused_allocation") >= 128, scaled(90),
               "the unused flood allocations to be given back")
    after = scrape(metrics)["turn_allocations"]
    print(f"allocations: {held:.0f} held with the tunnel up, {after:.0f} once the unused ones "
          f"were given back early", flush=True)
    if after > held - 128:
        raise Failure(f"{held:.0f} allocations before, {after:.0f} after the unused ones went")
    for s in sockets:
        s.close()
    w.group.stop_all()


def part_turn_tcp(w) -> None:
    relay, relay_addr, metrics = relay_with_metrics(w, [])
    # A realistic descriptor limit: the whole flood would not fit in it.
    resource.prlimit(relay.pid, resource.RLIMIT_NOFILE, (400, 400))
    flood, base, peak, took, laddr = flooded_tunnel(w, relay, relay_addr, 600, b"\x00", "tcp")
    made = scrape(metrics)["turn_allocations_total"]
    # A connection opened after the tunnel allocated: once the relay has closed it as
    # idle, the idle deadline of every TURN connection older than it has passed too.
    clock = Flood(relay_addr, 1, b"\x00", refill=0, source="127.0.0.3")
    w.on_cleanup(clock.close)
    try:
        print(f"turn over tcp: flood of 600 from {FLOODER} ({flood.opened} opened, "
              f"{flood.closed_by_relay} closed by the relay, {flood.held()} held now); relay "
              f"fds {base} -> {peak} (limit 400); a --force-relay tcp tunnel set up in "
              f"{took:.1f} s", flush=True)
        if peak > base + bounded_fds(128):
            raise Failure(f"the relay holds {peak - base} more fds under the flood, expected "
                          f"at most {bounded_fds(128)}")
        flood.stop_refilling()
        flood.wait_all_closed_by_relay(scaled(60), "the relay to close the idle flood")
        clock.wait_all_closed_by_relay(scaled(60), "the relay to close a later idle connection")
        # The tunnel's own TURN connections have allocations: no idle timeout for them,
        # so its peers had no path to restart (a restart allocates anew; the flood never
        # allocates).
        echo_through(laddr, "tcp (after the flood's idle timeout)")
        if scrape(metrics)["turn_allocations_total"] != made:
            raise Failure("the tunnel's TURN connections were closed as idle: its peers "
                          "allocated again")
        print(f"turn over tcp: every idle flood connection closed by the relay, the tunnel's "
              f"kept; counted "
              f"turn_streams_per_address {error_count(metrics, 'turn_streams_per_address'):.0f}, "
              f"turn_stream_idle {error_count(metrics, 'turn_stream_idle'):.0f}", flush=True)
    finally:
        flood.close()
        clock.close()
    w.group.stop_all()


def part_permissions(w) -> None:
    relay, relay_addr, metrics = relay_with_metrics(w, [])
    host, port = relay_addr.rsplit(":", 1)
    server = (host, int(port))
    rss_before = rss_kib(relay.pid)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((FLOODER, 0))
        s.settimeout(scaled(5))
        client = TurnClient(s, server, SECRET, "permissions")
        if client.allocate() != 0:
            raise Failure("the allocation for the permission flood was refused")
        answers = {}
        for i in range(2000):
            code = client.create_permission(f"127.{100 + i // 250}.{i % 250}.1")
            answers[code] = answers.get(code, 0) + 1
        rtts = sorted(binding_rtt(server) for _ in range(20))
        gauge = scrape(metrics)["turn_permissions"]
        print(f"permissions: 2000 asked on one allocation: answers {answers}; permissions "
              f"held {gauge:.0f}; relay VmRSS {rss_before} -> {rss_kib(relay.pid)} KiB; STUN "
              f"Binding answered in {rtts[10] * 1000:.2f} ms (median of 20)", flush=True)
        if answers != {0: 64, 508: 1936} or gauge != 64:
            raise Failure(f"expected 64 permissions granted and 1936 refused with 508, got "
                          f"{answers} ({gauge:.0f} held)")
    w.group.stop_all()


def part_tls(w) -> None:
    # The TLS port carries TURN over TLS; the main port, where the flood goes, the
    # peers' relay links. One handshake pool serves both.
    tls_port = ["--tls-listen", "127.0.0.1:0"]
    relay, relay_addr, metrics = relay_with_metrics(w, tls_port)
    unloaded, _ = tunnel(w, relay_addr, "tls")
    w.group.stop_all()
    relay, relay_addr, metrics = relay_with_metrics(w, tls_port)
    flood, base, peak, took, laddr = flooded_tunnel(w, relay, relay_addr, 1100, b"\x16", "tls")
    try:
        refused = error_count(metrics, "tls_handshakes_per_address")
        print(f"tls: flood of 1100 one-byte connections from {FLOODER} ({flood.opened} opened, "
              f"{flood.closed_by_relay} closed by the relay, {flood.held()} held now); relay fds "
              f"{base} -> {peak}; counted tls_handshakes_per_address {refused:.0f}; a "
              f"--force-relay tls tunnel set up in {took:.1f} s (unloaded: {unloaded:.1f} s)",
              flush=True)
        if peak > base + bounded_fds(32):
            raise Failure(f"the relay holds {peak - base} more fds under the flood, expected "
                          f"at most {bounded_fds(32)}")
        flood.stop_refilling()
        flood.wait_all_closed_by_relay(scaled(60), "the relay to drop the stalled handshakes")
        echo_through(laddr, "tls (after the stalled handshakes were dropped)")
        print(f"tls: every stalled handshake dropped by the relay; counted "
              f"tls_handshake_timeout {error_count(metrics, 'tls_handshake_timeout'):.0f}",
              flush=True)
    finally:
        flood.close()
    w.group.stop_all()


def test(w):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    parts = {"allocations": part_allocations, "turn_tcp": part_turn_tcp,
             "permissions": part_permissions, "tls": part_tls}
    for name in os.environ.get("E2E_FLOOD_PARTS", ",".join(parts)).split(","):
        parts[name](w)


if __name__ == "__main__":
    run(test)

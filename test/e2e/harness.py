"""Shared harness of natfwd's end-to-end tests (loopback, real relay and peer processes).

A test is a function taking a `World`; `run(test)` gives it a temp dir, starts nothing by
itself, and afterwards stops every process the test started (by PID) and removes the
temp dir. A `Failure` (or any exception) fails the test with its message; missing
binaries skip it (exit 77, meson's "skipped").

    def test(w):
        relay, addr = w.natfwd.relay()
        target = w.target(echo_handler)
        w.natfwd.serve(addr, "home", [f"127.0.0.1:{target.port}"])
        fwd, (laddr,) = w.natfwd.forward(addr, "home", [f"0:127.0.0.1:{target.port}"])
        ...
    run(test)

The binaries come from $RELAY and $PEER (meson sets them), else from $BUILD_DIR or build/.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from typing import Callable, Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))

from procs import (Failure, Natfwd, Proc, ProcGroup, find_binaries, scaled,  # noqa: E402
                   split_hostport, wait_until)

__all__ = ["Failure", "Natfwd", "Proc", "World", "TargetServer", "run", "run_with_ssh",
           "scaled", "echo",
           "both_ways", "assert_refused", "connect_to_refused", "answer_of_refused",
           "split_hostport", "wait_until", "PatternStream", "connect", "recv_all",
           "send_stream", "ssh_copy_check", "rss_kib", "SKIP"]

SKIP = 77


def rss_kib(pid: int) -> int:
    """A process's resident memory (VmRSS), KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise Failure(f"no VmRSS for {pid}")
IO_TIMEOUT = 120.0  # a socket operation that makes no progress for this long fails


class PatternStream:
    """Reproducible pseudo-random bytes, produced in chunks (never all in memory)."""

    def __init__(self, seed, total: int, chunk: int = 256 * 1024):
        self.rng = random.Random(seed)
        self.total = total
        self.chunk = chunk

    def __iter__(self):
        left = self.total
        while left > 0:
            n = min(self.chunk, left)
            yield self.rng.randbytes(n)
            left -= n


def echo(conn: socket.socket, _index: int) -> int:
    """A TargetServer handler that sends back what it reads until EOF; returns the count."""
    n = 0
    while chunk := conn.recv(65536):
        conn.sendall(chunk)
        n += len(chunk)
    return n


def both_ways(sock: socket.socket, seed: str, size: int) -> dict:
    """Sends `size` pattern bytes (then FIN) while reading until EOF; returns the hash
    of what was sent, the hash and count of what was received."""
    sent = {}

    def sender():
        try:
            sent["hash"] = send_stream(sock, PatternStream(seed, size))
            sock.shutdown(socket.SHUT_WR)
        except Exception as e:  # noqa: BLE001
            sent["error"] = repr(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    count, received = recv_all(sock, limit=size)
    t.join()
    if "error" in sent:
        raise Failure(f"sending ({seed}) failed: {sent['error']}")
    return {"sent": sent["hash"], "received": received, "count": count}


def bulk_both_ways(w: "World", size: int, name: str = "home"):
    """A tunnel to a target that sends `size` bytes while the client sends as many;
    checks both counts and SHA-256s. Returns the serving peer, the -L peer and both
    sides' both_ways results (client, target)."""
    target = w.target(lambda conn, _: both_ways(conn, "down", size))
    _, serving, fwd, (laddr,) = w.tunnel([target.addr], [f"0:{target.addr}"], name=name)
    with connect(laddr) as s:
        client = both_ways(s, "up", size)
    target.wait_results(1, timeout=60)
    server = target.results[0]
    if client["count"] != size or server["count"] != size:
        raise Failure(f"byte counts: client received {client['count']}, target received "
                      f"{server['count']}, expected {size} each")
    if server["received"] != client["sent"]:
        raise Failure("upstream data corrupted: target's SHA-256 differs from the client's")
    if client["received"] != server["sent"]:
        raise Failure("downstream data corrupted: client's SHA-256 differs from the target's")
    return serving, fwd, client, server


def connect_to_refused(addr: str, timeout: float = 60) -> Optional[socket.socket]:
    """Connects to a port whose connections are refused by a reset; None when the reset
    came before connect() returned (Python's connect with a timeout reads SO_ERROR after
    waiting, and on a loaded machine the refusal's RST may be there by then)."""
    try:
        return connect(addr, timeout=timeout)
    except ConnectionResetError:
        return None


def answer_of_refused(addr: str, timeout: float = 60, size: int = 16) -> bytes:
    """What a port that should refuse says before it closes: b"" when the connection is
    reset or closed without a byte, else the first bytes it sent."""
    s = connect_to_refused(addr, timeout=timeout)
    if s is None:
        return b""
    with s:
        try:
            return s.recv(size)
        except ConnectionResetError:
            return b""


def assert_refused(laddr: str, failure: str, probe: bytes = b"ping") -> None:
    """Connects to a -L port whose tunnel must be refused: the connection may be reset
    or closed, but no byte may come back (else Failure(failure + the bytes))."""
    s = connect_to_refused(laddr, timeout=scaled(60))
    if s is None:
        return
    with s:
        try:
            s.sendall(probe)
            data = s.recv(64)
        except (ConnectionResetError, BrokenPipeError):
            return
        if data:
            raise Failure(f"{failure}: {data!r}")


def ssh_copy_check(ssh: Callable[..., object], tmpdir: str, size: int,
                   evidence: Callable[[], str] = lambda: "") -> None:
    """Copies `size` random bytes with `ssh(command, stdin=file)` running
    `cat > dest && sha256sum dest` and checks the far side's file and checksum."""
    src = os.path.join(tmpdir, "file.bin")
    dest = os.path.join(tmpdir, "copied.bin")
    h = hashlib.sha256()
    with open(src, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    with open(src, "rb") as f:
        r = ssh(f"cat > '{dest}' && sha256sum '{dest}'", stdin=f)
    if r.returncode != 0:
        raise Failure(f"copy over ssh failed: exit {r.returncode}, "
                      f"{r.stderr.decode(errors='replace')}\n{evidence()}")
    remote_sum = r.stdout.split()[0].decode() if r.stdout.split() else ""
    with open(dest, "rb") as f:
        local_sum = hashlib.sha256(f.read()).hexdigest()
    if not (remote_sum == local_sum == h.hexdigest()):
        raise Failure(f"copied file differs: sent {h.hexdigest()}, sha256sum on the far side "
                      f"{remote_sum!r}, file {local_sum}")


def write_private(path: str, text: str) -> None:
    """Writes a secret as a careful admin would: mode 0600 from the start (the relay
    refuses a TURN secret that others can read)."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(text)


def echo_roundtrip(laddr: str, payload: bytes) -> None:
    """Sends `payload` to an echo target through `laddr`, half-closes, and checks that
    as many bytes come back."""
    with connect(laddr, timeout=scaled(30)) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        count, _ = recv_all(s)
    if count != len(payload):
        raise Failure(f"echo returned {count} of {len(payload)} bytes")


def connect(addr: str, timeout: float = IO_TIMEOUT) -> socket.socket:
    host, port = split_hostport(addr)
    s = socket.create_connection((host, port), timeout=scaled(timeout))
    s.settimeout(scaled(timeout))
    return s


def send_stream(sock: socket.socket, stream: PatternStream) -> str:
    """Sends the stream; returns the SHA-256 of what was sent."""
    h = hashlib.sha256()
    for chunk in stream:
        h.update(chunk)
        sock.sendall(chunk)
    return h.hexdigest()


def recv_all(sock: socket.socket, limit: Optional[int] = None) -> tuple[int, str]:
    """Reads until EOF; returns (byte count, SHA-256). Raises on more than `limit` bytes."""
    h = hashlib.sha256()
    total = 0
    while True:
        data = sock.recv(1 << 18)
        if not data:
            return total, h.hexdigest()
        total += len(data)
        h.update(data)
        if limit is not None and total > limit:
            raise Failure(f"received more than the expected {limit} bytes")


class TargetServer:
    """A TCP server on 127.0.0.1:0 run by the test: one thread per connection, each
    running handler(conn, index). Exceptions in handlers are kept and reported."""

    def __init__(self, handler: Callable[[socket.socket, int], None], host: str = "127.0.0.1"):
        self.handler = handler
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(256)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.addr = f"{host}:{self.port}"
        self.errors: list[str] = []
        self.results: dict[int, object] = {}
        self.accepted = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._cond = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                index = self.accepted
                self.accepted += 1
                self._cond.notify_all()
            t = threading.Thread(target=self._run, args=(conn, index), daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self, conn: socket.socket, index: int) -> None:
        conn.settimeout(scaled(IO_TIMEOUT))
        try:
            with conn:
                result = self.handler(conn, index)
            with self._lock:
                self.results[index] = result
                self._cond.notify_all()
        except Exception:  # noqa: BLE001 - reported by check()
            with self._lock:
                self.errors.append(f"target connection {index}: {traceback.format_exc()}")
                self._cond.notify_all()

    def wait_results(self, count: int, timeout: float) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.results) + len(self.errors) >= count,
                                     timeout=scaled(timeout))
        self.check()
        if not ok:
            raise Failure(f"target: {len(self.results)} of {count} connections finished "
                          f"within {scaled(timeout):.0f} s")

    def check(self) -> None:
        if self.errors:
            raise Failure("target server failed:\n" + "\n".join(self.errors))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()


class World:
    def __init__(self, tmpdir: str):
        self.tmpdir = tmpdir
        self.group = ProcGroup()
        self.relay_bin, self.peer_bin = find_binaries()
        self.natfwd = Natfwd(self.group, tmpdir, self.relay_bin, self.peer_bin)
        self.targets: list[TargetServer] = []
        self._cleanups: list[Callable[[], None]] = []

    def target(self, handler) -> TargetServer:
        t = TargetServer(handler)
        self.targets.append(t)
        return t

    def on_cleanup(self, fn: Callable[[], None]) -> None:
        self._cleanups.append(fn)

    def site_with_page(self, text: str) -> tuple[str, bytes]:
        """A new site directory whose index.html is a page saying `text` with a random
        marker (a capture or a response can then be searched for it); returns the
        directory and the page."""
        site = tempfile.mkdtemp(prefix="site-", dir=self.tmpdir)
        page = f"<html><body>{text} ".encode() + os.urandom(8).hex().encode() + b"</body></html>"
        with open(os.path.join(site, "index.html"), "wb") as f:
            f.write(page)
        return site, page

    def serve_directory(self, site: str) -> tuple[Proc, int]:
        """Starts `python3 -m http.server` on site, the web server a user publishes from
        home; returns it and its port once it says it is serving."""
        web = self.group.start("http.server", ["python3", "-u", "-m", "http.server", "--bind",
                                               "127.0.0.1", "--directory", site, "0"])
        return web, int(web.wait_stdout(r"Serving HTTP on \S+ port (\d+)", timeout=30,
                                        what="http.server ready line").group(1))

    def self_signed_cert(self, name: str, cn: str, days: int = 1,
                         dns: Optional[str] = None) -> tuple[str, str]:
        """Writes a self-signed P-256 certificate for cn (with dns as its subjectAltName when
        given) and its key to name.crt and name.key in the temp dir; returns their paths."""
        cert = os.path.join(self.tmpdir, f"{name}.crt")
        key = os.path.join(self.tmpdir, f"{name}.key")
        san = ["-addext", f"subjectAltName=DNS:{dns}"] if dns else []
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={cn}", *san,
                        "-days", str(days), "-keyout", key, "-out", cert], check=True,
                       capture_output=True, timeout=scaled(30))
        return cert, key

    def tunnel(self, serves: list[str], forwards: list[str], name: str = "home"):
        """relay + `peer --serve` + `peer -L`; returns (relay_addr, serving, fwd, addrs)."""
        _, relay_addr = self.natfwd.relay()
        serving = self.natfwd.serve(relay_addr, name, serves)
        fwd, addrs = self.natfwd.forward(relay_addr, name, forwards)
        return relay_addr, serving, fwd, addrs

    def close(self) -> None:
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception:  # noqa: BLE001
                traceback.print_exc()
        for t in self.targets:
            t.close()
        self.group.stop_all()

    def dump(self) -> None:
        """Prints every process's state and stderr tail (after a failure)."""
        for p in self.group.procs:
            print(p.describe(), file=sys.stderr)


def run(test: Callable[[World], None]) -> None:
    relay_bin, peer_bin = find_binaries()
    for path in (relay_bin, peer_bin):
        if not os.access(path, os.X_OK):
            print(f"SKIP: {path} is not built yet", flush=True)
            sys.exit(SKIP)
    tmpdir = tempfile.mkdtemp(prefix="natfwd-e2e-")
    world = World(tmpdir)
    code = 0
    try:
        test(world)
        print(f"PASS: {test.__module__ if test.__module__ != '__main__' else sys.argv[0]}",
              flush=True)
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
        code = 1
    except Exception:  # noqa: BLE001
        print("FAIL: unexpected exception:", file=sys.stderr)
        traceback.print_exc()
        print("\nprocesses at the time:", file=sys.stderr)
        world.dump()
        code = 1
    finally:
        world.close()
        if os.environ.get("NATFWD_E2E_KEEP") and code:
            print(f"kept {tmpdir}", file=sys.stderr)
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)
    sys.exit(code)


def start_sshd(w: "World", label: str = "sshd"):
    """A throwaway sshd (test/tools/sshd_inetd.py) in its own 0700 directory under the
    test's temp dir, stopped at cleanup; returns (sshd, port)."""
    from sshd_inetd import ThrowawaySshd
    directory = os.path.join(w.tmpdir, label)
    os.mkdir(directory, 0o700)
    sshd = ThrowawaySshd(directory)
    port = sshd.start()
    w.on_cleanup(sshd.stop)
    return sshd, port


def run_with_ssh(test: Callable[[World], None]) -> None:
    """run(test) for a test that needs a real sshd and ssh; skipped (exit 77) when
    openssh is not installed."""
    from sshd_inetd import have_ssh_tools
    if not have_ssh_tools():
        print("SKIP: sshd/ssh/ssh-keygen not installed (openssh-server, openssh-client)")
        sys.exit(SKIP)
    run(test)

"""Processes for natfwd's tests, demo and bench: start, wait for a line, stop by PID.

Nothing here sleeps to synchronise: a caller waits for a line a process prints (or for a
condition) with a timeout, and a timeout fails with the process's stderr in the message.
Every process is started by us, remembered by PID and stopped by PID.

Stdlib only (Python 3.9+).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Iterable, Optional, Sequence

# Multiply every timeout (slow machines, valgrind): NATFWD_TIMEOUT_SCALE=3.
TIMEOUT_SCALE = float(os.environ.get("NATFWD_TIMEOUT_SCALE", "1") or "1")
READY_TIMEOUT = 30.0


def scaled(seconds: float) -> float:
    return seconds * TIMEOUT_SCALE


class Failure(Exception):
    """A test or bench step went wrong; the message says what and shows the evidence."""


class Proc:
    """A child process whose stdout and stderr lines are collected by reader threads."""

    def __init__(self, name: str, argv: Sequence[str], *, env: Optional[dict] = None,
                 netns: Optional[str] = None, cwd: Optional[str] = None,
                 stdin=subprocess.DEVNULL, echo: Optional[Callable[[str, str], None]] = None):
        self.name = name
        self.argv = list(argv)
        if netns:
            # `ip netns exec` execs the program, so the PID stays the program's.
            self.argv = ["ip", "netns", "exec", netns] + self.argv
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._cond = threading.Condition()
        self._echo = echo
        self._closed = {"stdout": False, "stderr": False}
        self.started_at = time.monotonic()
        self.popen = subprocess.Popen(self.argv, stdin=stdin, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env=env, cwd=cwd,
                                      start_new_session=True)
        self.pid = self.popen.pid
        self.line_times: dict[int, float] = {}  # stdout line index -> monotonic time
        self._threads = [
            threading.Thread(target=self._reader, args=("stdout", self.popen.stdout),
                             daemon=True),
            threading.Thread(target=self._reader, args=("stderr", self.popen.stderr),
                             daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _reader(self, which: str, stream) -> None:
        lines = self.stdout_lines if which == "stdout" else self.stderr_lines
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._cond:
                if which == "stdout":
                    self.line_times[len(lines)] = time.monotonic()
                lines.append(line)
                self._cond.notify_all()
            if self._echo:
                self._echo(self.name, line)
        stream.close()
        with self._cond:
            self._closed[which] = True
            self._cond.notify_all()

    # -- waiting ---------------------------------------------------------------------

    def describe(self, stderr_tail: int = 40) -> str:
        code = self.popen.poll()
        state = "still running" if code is None else f"exited with {code}"
        out = "\n".join("    " + l for l in self.stdout_lines[-10:]) or "    (nothing)"
        err = "\n".join("    " + l for l in self.stderr_lines[-stderr_tail:]) or "    (nothing)"
        return (f"{self.name} (pid {self.pid}, {state}): {shlex.join(self.argv)}\n"
                f"  stdout (last lines):\n{out}\n  stderr (last lines):\n{err}")

    def _wait_line(self, which: str, pattern: str, timeout: float, start: int,
                   what: str) -> tuple[re.Match, int]:
        regex = re.compile(pattern)
        lines = self.stdout_lines if which == "stdout" else self.stderr_lines
        deadline = time.monotonic() + scaled(timeout)
        index = start
        with self._cond:
            while True:
                while index < len(lines):
                    m = regex.search(lines[index])
                    if m:
                        return m, index
                    index += 1
                if self._closed[which]:
                    raise Failure(f"{what}: {self.name} closed its {which} without a line "
                                  f"matching /{pattern}/\n" + self._describe_after_exit())
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure(f"{what}: no line matching /{pattern}/ on {self.name}'s "
                                  f"{which} within {scaled(timeout):.0f} s\n" + self.describe())
                self._cond.wait(min(left, 1.0))

    def _describe_after_exit(self) -> str:
        try:
            self.popen.wait(timeout=scaled(5))
        except subprocess.TimeoutExpired:
            pass
        for t in self._threads:
            t.join(timeout=scaled(2))
        return self.describe()

    def wait_stdout(self, pattern: str, timeout: float = READY_TIMEOUT, start: int = 0,
                    what: str = "waiting") -> re.Match:
        return self._wait_line("stdout", pattern, timeout, start, what)[0]

    def wait_stdout_at(self, pattern: str, timeout: float = READY_TIMEOUT, start: int = 0,
                       what: str = "waiting") -> tuple[re.Match, int]:
        return self._wait_line("stdout", pattern, timeout, start, what)

    def wait_stderr(self, pattern: str, timeout: float = READY_TIMEOUT, start: int = 0,
                    what: str = "waiting") -> re.Match:
        return self._wait_line("stderr", pattern, timeout, start, what)[0]

    def wait_exit(self, timeout: float = 10.0) -> int:
        try:
            code = self.popen.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            raise Failure(f"{self.name} did not exit within {scaled(timeout):.0f} s\n"
                          + self.describe()) from None
        for t in self._threads:
            t.join(timeout=scaled(5))
        return code

    def running(self) -> bool:
        return self.popen.poll() is None

    def check_running(self, what: str = "check") -> None:
        if not self.running():
            raise Failure(f"{what}: {self.name} exited unexpectedly\n"
                          + self._describe_after_exit())

    # -- stopping --------------------------------------------------------------------

    def send_signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> Optional[int]:
        """Signals the process (by PID), waits, and SIGKILLs it if it will not go.
        Returns its exit code; None when it had to be killed."""
        if self.popen.poll() is not None:
            self.wait_exit(5)
            return self.popen.returncode
        self.send_signal(sig)
        try:
            code = self.popen.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            self.send_signal(signal.SIGKILL)
            self.popen.wait()
            code = None
        for t in self._threads:
            t.join(timeout=scaled(5))
        return code


class ProcGroup:
    """Remembers the processes a test started and stops them all, newest first."""

    def __init__(self):
        self.procs: list[Proc] = []

    def start(self, *args, **kwargs) -> Proc:
        p = Proc(*args, **kwargs)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop_all()
        return False


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.02) -> None:
    """Polls `condition` until true; raises Failure after `timeout` seconds."""
    deadline = time.monotonic() + scaled(timeout)
    while not condition():
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {scaled(timeout):.0f} s waiting for {what}")
        time.sleep(interval)


# -- natfwd programs -----------------------------------------------------------------

LISTEN_RE = r"listening on (\S+) "
REGISTERED_RE = r"^registered as (\S+) at (\S+), serving (.*)$"
FORWARD_RE = r"^listening on (\S+) -> (\S+) (\S+)$"
PATH_RE = r"^path (\S+): (.*)$"


def split_hostport(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def find_binaries() -> tuple[str, str]:
    """RELAY and PEER from the environment (meson sets them), else from BUILD_DIR."""
    relay = os.environ.get("RELAY")
    peer = os.environ.get("PEER")
    if not relay or not peer:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        build = os.environ.get("BUILD_DIR", os.path.join(root, "build"))
        relay = relay or os.path.join(build, "relay", "relay")
        peer = peer or os.path.join(build, "peer", "peer")
    return relay, peer


def verbose_args() -> list[str]:
    return ["-v"] if os.environ.get("NATFWD_E2E_VERBOSE") else []


def peer_env(extra: Optional[dict] = None) -> dict:
    env = dict(os.environ)
    env.pop("NATFWD_RELAY", None)
    if extra:
        env.update(extra)
    return env


class Natfwd:
    """Starts relays and peers, each with its own state dir under `tmpdir`."""

    def __init__(self, group: ProcGroup, tmpdir: str, relay_bin: str, peer_bin: str,
                 netns: Optional[str] = None, echo=None):
        self.group = group
        self.tmpdir = tmpdir
        self.relay_bin = relay_bin
        self.peer_bin = peer_bin
        self.netns = netns
        self.echo = echo
        self._count = 0
        self._client_dir: Optional[str] = None
        self._serve_dirs: dict[str, str] = {}
        self.client_id = ""

    def client_state_dir(self) -> str:
        """The state dir every `forward()` uses unless told otherwise: one identity that
        every `serve()` authorises (--allow), as a paired laptop would be."""
        if self._client_dir is None:
            self._client_dir = self.state_dir("client")
            self.client_id = self.key_id(self._client_dir)
        return self._client_dir

    def key_id(self, state_dir: str) -> str:
        """`peer id`: creates the key if needed, returns its key id."""
        out = subprocess.run([self.peer_bin, "id", "--state-dir", state_dir],
                             capture_output=True, text=True, timeout=scaled(20), check=True)
        return out.stdout.split("\n")[0]

    def state_dir(self, label: str) -> str:
        self._count += 1
        path = os.path.join(self.tmpdir, f"state-{label}-{self._count}")
        os.makedirs(path, mode=0o700)
        return path

    def relay(self, listen: str = "127.0.0.1:0", extra: Iterable[str] = (),
              netns: Optional[str] = None, timeout: float = READY_TIMEOUT,
              state_dir: Optional[str] = None) -> tuple[Proc, str]:
        """A relay; give `state_dir` (and `listen`) of an earlier one to restart it
        with the same key, as the same relay."""
        # One data-plane thread unless NATFWD_RELAY_THREADS says (meson runs the TURN
        # interop tests again with 2); a --threads in `extra` comes later and wins.
        argv = [self.relay_bin, "--listen", listen,
                "--state-dir", state_dir or self.state_dir("relay"),
                "--threads", os.environ.get("NATFWD_RELAY_THREADS", "1"),
                *verbose_args(), *extra]
        p = self.group.start("relay", argv, netns=netns or self.netns, echo=self.echo,
                             env=peer_env())
        m = p.wait_stdout(LISTEN_RE, timeout, what="relay ready line")
        return p, m.group(1)

    def serve(self, relay_addr: str, name: str, serves: Sequence[str],
              extra: Iterable[str] = (), netns: Optional[str] = None,
              timeout: float = READY_TIMEOUT) -> Proc:
        self.client_state_dir()
        # One identity per name for the whole test, as a real home server keeps its
        # key: the shared client identity pins it (known_peers) on first use.
        if name not in self._serve_dirs:
            self._serve_dirs[name] = self.state_dir("serve-" + name)
        argv = [self.peer_bin, "--relay", relay_addr, "--name", name,
                "--state-dir", self._serve_dirs[name], *verbose_args(),
                "--allow", self.client_id]
        for s in serves:
            argv += ["--serve", s]
        argv += list(extra)
        p = self.group.start(f"peer --serve ({name})", argv, netns=netns or self.netns,
                             echo=self.echo, env=peer_env())
        p.wait_stdout(REGISTERED_RE, timeout, what="serving peer ready line")
        return p

    def forward(self, relay_addr: str, name: str, forwards: Sequence[str],
                extra: Iterable[str] = (), netns: Optional[str] = None,
                timeout: float = READY_TIMEOUT) -> tuple[Proc, list[str]]:
        """Starts `peer -L ... NAME`; returns it and the address of each -L, in order."""
        argv = [self.peer_bin, "--relay", relay_addr, "--state-dir",
                self.client_state_dir(), *verbose_args()]
        for f in forwards:
            argv += ["-L", f]
        argv += list(extra) + [name]
        p = self.group.start(f"peer -L ({name})", argv, netns=netns or self.netns,
                             echo=self.echo, env=peer_env())
        addrs = []
        index = 0
        for _ in forwards:
            m, index = p.wait_stdout_at(FORWARD_RE, timeout, start=index,
                                        what="-L peer ready line")
            addrs.append(m.group(1))
            index += 1
        return p, addrs


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)

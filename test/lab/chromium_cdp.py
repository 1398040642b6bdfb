"""Headless Chromium as a visitor's browser, driven over the DevTools protocol.

    browser = HeadlessChromium(netns, user_data_dir, {"home.share.test": "203.0.113.10"})
    page = browser.load("http://home.share.test/", timeout=30)   # -> (dom text, seconds)
    browser.close()

One browser for a whole test: starting Chromium costs seconds (tens on a loaded 2-core
machine), loading a page through it well under one. It talks over
`--remote-debugging-pipe` (CDP messages as JSON, each ended by a NUL byte, read from fd 3
and written to fd 4: no port to pick, nothing listening). Each load runs in a fresh
browser context (its own cookies, cache and connections), so one page cannot be served
from what an earlier one left behind. Names resolve only through
`--host-resolver-rules`, as `curl --resolve` does. Chromium on Linux trusts the roots
of the NSS database in $HOME/.pki/nssdb beside its own: `env` with a HOME whose
database holds a test CA's root (nss_home_trusting) makes that CA trusted. As root Chromium needs
`--no-sandbox`. The browser is ours: close() asks it to quit and kills it by PID if it
will not.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import threading
import time
from typing import Callable, Optional

from procs import Failure, scaled

# Quiet and quick: nothing a fresh profile would fetch or set up in the background
# (the lab has no route to it anyway, and each attempt costs time on a loaded machine).
QUIET_FLAGS = ("--no-first-run", "--no-default-browser-check", "--disable-extensions",
               "--disable-component-update", "--disable-background-networking",
               "--disable-sync", "--disable-default-apps", "--disable-gpu",
               "--disable-dev-shm-usage")


def nss_home_trusting(home: str, root_pem: str) -> str:
    """A HOME for Chromium whose NSS database trusts `root_pem` (and no other root of
    its own) to issue server certificates; returns `home`."""
    db = os.path.join(home, ".pki", "nssdb")
    os.makedirs(db, mode=0o700, exist_ok=True)
    for argv in (["certutil", "-N", "-d", f"sql:{db}", "--empty-password"],
                 ["certutil", "-A", "-d", f"sql:{db}", "-n", "test root", "-t", "C,,",
                  "-i", root_pem]):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=scaled(30))
        if r.returncode != 0:
            raise Failure(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return home


def high_fd(fd: int) -> int:
    """`fd` moved to a number above 9 (close-on-exec, as Python makes every fd)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class HeadlessChromium:
    def __init__(self, netns: str, user_data_dir: str, hosts: dict[str, str],
                 binary: str = "chromium", env: Optional[dict[str, str]] = None):
        rules = ", ".join(f"MAP {name} {ip}" for name, ip in hosts.items())
        argv = ["ip", "netns", "exec", netns, binary, "--headless=new", "--no-sandbox",
                f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe",
                f"--host-resolver-rules={rules}", *QUIET_FLAGS, "about:blank"]
        # Out of the way of fds 3 and 4, which the child's dup2 below overwrites.
        to_browser_r, self._to_browser, from_browser, from_browser_w = (
            high_fd(fd) for fd in (*os.pipe(), *os.pipe()))

        def child_fds() -> None:
            # fd 3: commands to the browser, fd 4: its answers (inheritable: dup2).
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.log_path = os.path.join(user_data_dir, "chromium.log")
        os.makedirs(user_data_dir, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=self._log, close_fds=False, env=env,
                                      preexec_fn=child_fds, start_new_session=True)
        self.pid = self.popen.pid
        self.started = time.monotonic()
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._reader_file = os.fdopen(from_browser, "rb", buffering=0)
        self._messages: list[dict] = []
        self._cond = threading.Condition()
        self._closed = False
        self._next_id = 0
        self._write_lock = threading.Lock()
        self._thread = threading.Thread(target=self._reader, daemon=True)
        self._thread.start()

    # -- the pipe ----------------------------------------------------------------------

    def _reader(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self._reader_file.read(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                with self._cond:
                    self._messages.append(msg)
                    self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _send(self, method: str, params: Optional[dict] = None,
              session: Optional[str] = None) -> int:
        with self._write_lock:
            self._next_id += 1
            msg = {"id": self._next_id, "method": method, "params": params or {}}
            if session:
                msg["sessionId"] = session
            os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
            return self._next_id

    def _wait(self, match: Callable[[dict], bool], timeout: float, what: str) -> dict:
        deadline = time.monotonic() + scaled(timeout)
        with self._cond:
            while True:
                for i, msg in enumerate(self._messages):
                    if match(msg):
                        return self._messages.pop(i)
                if self._closed:
                    raise Failure(f"Chromium closed its DevTools pipe while waiting for "
                                  f"{what}\n{self.log_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure(f"Chromium: no {what} within {scaled(timeout):.0f} s\n"
                                  f"{self.log_tail()}")
                self._cond.wait(min(left, 1.0))

    def call(self, method: str, params: Optional[dict] = None,
             session: Optional[str] = None, timeout: float = 30) -> dict:
        """One CDP command; its result, or Failure with the browser's error."""
        mid = self._send(method, params, session)
        msg = self._wait(lambda m: m.get("id") == mid, timeout, f"answer to {method}")
        if "error" in msg:
            raise Failure(f"Chromium {method}: {msg['error']}")
        return msg.get("result", {})

    # -- what a visitor does -----------------------------------------------------------

    def wait_ready(self, timeout: float = 120) -> float:
        """Waits until the browser answers; returns the seconds since it was started."""
        self.call("Browser.getVersion", timeout=timeout)
        return time.monotonic() - self.started

    def load(self, url: str, timeout: float = 30) -> tuple[str, float]:
        """Opens `url` in a fresh browser context and waits for its load event. Returns
        the document as the browser built it (outerHTML) and the seconds from navigation
        to the load event. Failure when the navigation fails (no page) or times out."""
        context = self.call("Target.createBrowserContext")["browserContextId"]
        try:
            target = self.call("Target.createTarget", {"url": "about:blank",
                                                       "browserContextId": context})["targetId"]
            session = self.call("Target.attachToTarget",
                                {"targetId": target, "flatten": True})["sessionId"]
            self.call("Page.enable", session=session)
            started = time.monotonic()
            nav = self.call("Page.navigate", {"url": url}, session=session, timeout=timeout)
            if nav.get("errorText"):
                raise Failure(f"Chromium could not load {url}: {nav['errorText']}")
            self._wait(lambda m: m.get("method") == "Page.loadEventFired" and
                       m.get("sessionId") == session, timeout, f"load event of {url}")
            elapsed = time.monotonic() - started
            dom = self.call("Runtime.evaluate",
                            {"expression": "document.documentElement.outerHTML",
                             "returnByValue": True}, session=session)
            return dom.get("result", {}).get("value", ""), elapsed
        finally:
            self.call("Target.disposeBrowserContext", {"browserContextId": context})

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                tail = [l for l in f.read().splitlines() if "dbus" not in l][-lines:]
        except OSError:
            tail = []
        return "chromium log (last lines, without D-Bus noise):\n" + "\n".join(
            "    " + l for l in tail)

    def close(self) -> None:
        if self.popen.poll() is None:
            try:
                self._send("Browser.close")
            except OSError:
                pass
            try:
                self.popen.wait(timeout=scaled(10))
            except subprocess.TimeoutExpired:
                self.popen.kill()  # by PID
                self.popen.wait()
        try:
            os.close(self._to_browser)
        except OSError:
            pass
        self._thread.join(timeout=5)
        self._reader_file.close()
        self._log.close()

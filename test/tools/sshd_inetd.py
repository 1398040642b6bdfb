#!/usr/bin/env python3
"""A throwaway sshd on a free port, race-free: `sshd -i` (inetd mode) per connection
behind a listening socket we own on port 0.

As a module: ThrowawaySshd(tmpdir).start() -> port; .ssh_argv(port, command...).
As a program (demo, bench; also inside a network namespace):

    sshd_inetd.py --dir DIR [--listen 127.0.0.1:0]     (a fixed port only in a netns of its own)

makes host and user keys in DIR (which must exist), prints
    listening on 127.0.0.1:PORT
    user root key DIR/user_key
and serves until SIGINT/SIGTERM, then stops the sshd processes it started (by PID).

Works as root (PermitRootLogin prohibit-password) and as a normal user (then sshd runs
without privilege separation and accepts only that user).
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading


def find_sshd() -> str | None:
    for candidate in ("/usr/sbin/sshd", shutil.which("sshd")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def have_ssh_tools() -> bool:
    return bool(find_sshd() and shutil.which("ssh") and shutil.which("ssh-keygen"))


class ThrowawaySshd:
    def __init__(self, directory: str, listen_host: str = "127.0.0.1", listen_port: int = 0):
        self.dir = directory
        self.listen_host = listen_host
        self.listen_port = listen_port  # 0: the kernel's choice (race-free)
        self.sshd = find_sshd()
        if not self.sshd:
            raise RuntimeError("sshd not found (Debian package openssh-server)")
        self.user = getpass.getuser()
        self.host_key = os.path.join(directory, "host_key")
        self.user_key = os.path.join(directory, "user_key")
        self.config = os.path.join(directory, "sshd_config")
        self.log = os.path.join(directory, "sshd.log")
        self._sock: socket.socket | None = None
        self._children: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.port = 0

    def prepare(self) -> None:
        for key in (self.host_key, self.user_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "natfwd-test",
                            "-f", key], check=True, stdin=subprocess.DEVNULL)
        authorized = os.path.join(self.dir, "authorized_keys")
        shutil.copyfile(self.user_key + ".pub", authorized)
        os.chmod(authorized, 0o600)
        lines = [
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {authorized}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            f"AllowUsers {self.user}",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "X11Forwarding no",
            "AllowTcpForwarding yes",
            "PidFile none",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            # The session's shell gets this directory as its home, not the invoking
            # user's: Debian's bash reads ~/.bashrc when started by sshd, and root's
            # .bashrc on our build machines runs `pyenv init` (2 s a session), whose
            # rehash takes a lock that waits up to 60 s: concurrent lab sessions queued
            # on it past the tests' 30 s.
            f"SetEnv HOME={self.dir} BASH_ENV=",
        ]
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
            # sshd's privilege-separation directory; Debian's sshd service makes it too.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    def start(self) -> int:
        self.prepare()
        family = socket.AF_INET6 if ":" in self.listen_host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.bind((self.listen_host, self.listen_port))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()
        return self.port

    def _accept_loop(self) -> None:
        assert self._sock is not None
        logf = open(self.log, "ab")
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                break
            with conn:
                with self._lock:
                    if self._stopping:
                        break
                    child = subprocess.Popen([self.sshd, "-i", "-e", "-f", self.config],
                                             stdin=conn.fileno(), stdout=conn.fileno(),
                                             stderr=logf, start_new_session=True)
                    self._children[child.pid] = child
                    # Forget children that are done (no zombies pile up).
                    for pid, c in list(self._children.items()):
                        if c.poll() is not None:
                            del self._children[pid]
        logf.close()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            children = list(self._children.values())
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        for c in children:
            if c.poll() is None:
                c.terminate()
        for c in children:
            try:
                c.wait(timeout=5)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
        if self._thread:
            self._thread.join(timeout=5)

    def ssh_argv(self, port: int, *command: str, host: str = "127.0.0.1",
                 extra: tuple[str, ...] = ()) -> list[str]:
        return ssh_argv(self.user_key, self.user, host, port, *command, extra=extra)

    def log_text(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""


def ssh_argv(key: str, user: str, host: str, port: int, *command: str,
             extra: tuple[str, ...] = ()) -> list[str]:
    return ["ssh", "-F", "/dev/null", "-p", str(port), "-i", key,
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=30", *extra, f"{user}@{host}", *command]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--listen", default="127.0.0.1:0",
                    help="HOST:PORT; PORT 0 (race-free) lets the kernel choose, a fixed one "
                         "only in a network namespace of the caller's own")
    args = ap.parse_args()
    host, _, port = args.listen.rpartition(":")
    sshd = ThrowawaySshd(args.dir, host.strip("[]") or "127.0.0.1", int(port or 0))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    port = sshd.start()
    print(f"listening on {host}:{port}", flush=True)
    print(f"user {sshd.user} key {sshd.user_key}", flush=True)
    stop.wait()
    sshd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

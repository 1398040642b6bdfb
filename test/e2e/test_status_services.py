#!/usr/bin/env python3
"""`peer status` finds the running peers of this machine, as on a home server with
services: natfwd-peer@NAME keeps its state in /var/lib/natfwd/peer-NAME, and root
runs plain `peer status` (or `--name NAME`, as the unit passes it) without knowing
the unit's flags.

The test mounts a tmpfs over /var/lib in a mount namespace of its own (nothing on
the machine is touched), starts two serving peers there with the units' state dirs,
and checks: `peer status` shows both, each under a line naming its state dir;
`--name home` shows home's alone; `--name nosuch` fails with one line; and a user who
may not ask (nobody, against root's peer) is told whose peer it is and the command
that works, instead of "no running peer (Permission denied)".
"""
import os
import shutil
import subprocess
import sys

from harness import SKIP, Failure, run, scaled


def test(w):
    holder = w.group.start("mount namespace", [
        "unshare", "--mount", "--propagation", "private", "sh", "-c",
        "mount -t tmpfs -o mode=0755 natfwd-test /var/lib && mkdir -m 0755 /var/lib/natfwd"
        " && echo ready && exec sleep 3600"])
    # As systemd's StateDirectory=natfwd/peer-NAME leaves them: /var/lib/natfwd 0755, and
    # peer-NAME 0700 (made by the peer).
    holder.wait_stdout(r"^ready$", 20, what="the mount namespace")
    inside = ["nsenter", f"--mount=/proc/{holder.pid}/ns/mnt", "--"]
    _, relay = w.natfwd.relay()
    for name in ("home", "office"):
        p = w.group.start(f"peer --serve ({name})", inside + [
            w.peer_bin, "--relay", relay, "--name", name, "--serve", "127.0.0.1:9",
            "--state-dir", f"/var/lib/natfwd/peer-{name}"])
        p.wait_stdout(r"^registered as " + name, 30, what=f"{name}'s ready line")

    def status(*args, user=None):
        argv = inside + ([] if user is None else
                         ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"])
        env = dict(os.environ, HOME="/nonexistent")
        return subprocess.run(argv + [w.peer_bin, "status", *args], capture_output=True,
                              text=True, timeout=scaled(20), env=env)

    r = status()
    for name in ("home", "office"):
        if r.returncode != 0 or f"== /var/lib/natfwd/peer-{name}" not in r.stdout:
            raise Failure(f"peer status as root: exit {r.returncode}, stdout {r.stdout!r}, "
                          f"stderr {r.stderr!r}; want both services under their state dirs")
    r = status("--name", "home")
    if r.returncode != 0 or "home" not in r.stdout or "office" in r.stdout or "==" in r.stdout:
        raise Failure(f"peer status --name home: exit {r.returncode}, {r.stdout!r}")
    r = status("--name", "nosuch")
    lines = r.stderr.strip().splitlines()
    if r.returncode != 1 or len(lines) != 1 or "/var/lib/natfwd/peer-nosuch" not in lines[0]:
        raise Failure(f"peer status --name nosuch: exit {r.returncode}, stderr {lines}")
    r = status("--state-dir", "/var/lib/natfwd/peer-home", user=65534)
    want = "sudo -u root peer status --state-dir /var/lib/natfwd/peer-home"
    lines = r.stderr.strip().splitlines()
    if r.returncode != 1 or len(lines) != 1 or want not in lines[0]:
        raise Failure(f"peer status as nobody: exit {r.returncode}, stderr {lines}; "
                      f"want one line with {want!r}")
    r = status(user=65534)
    if r.returncode != 1 or want.replace("peer-home", "peer-") not in r.stderr:
        raise Failure(f"plain peer status as nobody: exit {r.returncode}, {r.stderr!r}")
    print("peer status found both services; --name home alone; nobody told whose peer it "
          "is: " + lines[0], flush=True)


def main():
    for tool in ("unshare", "nsenter", "setpriv"):
        if not shutil.which(tool):
            print(f"SKIP: {tool} is not installed")
            sys.exit(SKIP)
    if os.geteuid() != 0:
        print("SKIP: needs root for its own mount namespace")
        sys.exit(SKIP)
    run(test)


if __name__ == "__main__":
    main()

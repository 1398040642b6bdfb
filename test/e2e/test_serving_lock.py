#!/usr/bin/env python3
"""One serving peer per state dir: a second one is refused with one line naming the first.

relay + `peer --name home --serve ...`. A second serving peer on the same state dir
(another name, even) exits 1 with the one line "another serving peer (pid N) already
runs with state dir DIR: ..." where N is the first one's pid; the first keeps its
control socket (`peer status` still answers with its name). Once the first has exited
(SIGTERM), the lock is gone with it and a new serving peer on that dir registers.
"""
import subprocess

from harness import Failure, run
from procs import peer_env, scaled

REGISTERED_RE = r"^registered as (\S+) at (\S+), serving (.*)$"


def test(w):
    _, relay_addr = w.natfwd.relay()
    first = w.natfwd.serve(relay_addr, "home", ["127.0.0.1:22"])
    state_dir = w.natfwd._serve_dirs["home"]
    second = [w.peer_bin, "--relay", relay_addr, "--name", "home2", "--serve", "127.0.0.1:22",
              "--state-dir", state_dir]
    r = subprocess.run(second, capture_output=True, text=True, timeout=scaled(20),
                       env=peer_env(), stdin=subprocess.DEVNULL)
    want = (f"peer: error: another serving peer (pid {first.pid}) already runs with "
            f"state dir {state_dir}: stop it first, or give this one its own --state-dir")
    lines = r.stderr.strip().splitlines()
    if r.returncode != 1 or lines != [want]:
        raise Failure(f"second serving peer: exit {r.returncode}, stderr {r.stderr!r}, "
                      f"want exit 1 and {want!r}")
    s = subprocess.run([w.peer_bin, "status", "--state-dir", state_dir], capture_output=True,
                       text=True, timeout=scaled(20))
    if s.returncode != 0 or "home" not in s.stdout or "home2" in s.stdout:
        raise Failure(f"the first peer's status after the refusal: {s.returncode} {s.stdout!r}")
    if first.stop() != 0:
        raise Failure("the first serving peer did not exit 0 on SIGTERM")
    again = w.group.start("peer --serve (home2)", second, env=peer_env())
    again.wait_stdout(REGISTERED_RE, 30, what="serving peer after the lock holder exited")


if __name__ == "__main__":
    run(test)

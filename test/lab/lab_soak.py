#!/usr/bin/env python3
"""Soak in the NAT lab (root): LAB_SOAK_MINUTES (default 10) of mixed connect, transfer
and disconnect, then a table; scripts/soak runs it, the lab suite runs a 1-minute one.

    lab_soak.py soak

An eim home (peer --serve, a stream_check target beside it) and an eim laptop. Two -L
peers live for the whole run (one direct, one --force-relay) and carry transfers of
random sizes one after another; LAB_SOAK_CHURN (default 3) more -L peers are started,
carry one to four transfers, and are stopped again, over and over, a third of them
relayed. Every transfer is checked byte for byte (test/tools/stream_check.py) and must
end with exactly the bytes asked for.

VmRSS (/proc/PID/status) and fd counts (/proc/PID/fd) of the relay, the serving peer
and the two long-lived -L peers are sampled after a warm-up round and at the end, with
the churning peers stopped. Fails when any transfer is not intact, or when a process
ends with more fds than it started with (+2 for the slack of a connection closing) or
with VmRSS grown by more than SOAK_RSS_BOUND_KIB (default 32768 KiB: the serving peer's
buffers for a handful of concurrent tunnels reach about 14 MB within the first minute
and stay there). Runs of three minutes or more also sample after the first minute, when
that high-water mark is reached, and fail when VmRSS grows by more than
SOAK_SETTLED_BOUND_KIB (default 4096) from there to the end: a slow leak.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lab_test  # noqa: E402
from lab import Failure, Lab, log, scaled  # noqa: E402
from lab_faults import END_RE, STREAM_CHECK, Rig  # noqa: E402
from procs import Proc  # noqa: E402

MINUTES = float(os.environ.get("LAB_SOAK_MINUTES", "10"))
CHURN = int(os.environ.get("LAB_SOAK_CHURN", "3"))
RSS_BOUND_KIB = int(os.environ.get("SOAK_RSS_BOUND_KIB", "32768"))
SETTLED_BOUND_KIB = int(os.environ.get("SOAK_SETTLED_BOUND_KIB", "4096"))
FD_SLACK = 2
MAX_BYTES = 8 * 1000 * 1000


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.transfers = 0
        self.bytes = 0
        self.sessions = 0
        self.relayed_sessions = 0
        self.bad: list[str] = []

    def add(self, ok: bool, nbytes: int, what: str) -> None:
        with self.lock:
            self.transfers += 1
            self.bytes += nbytes if ok else 0
            if not ok:
                self.bad.append(what)


class Soak:
    def __init__(self, lab: Lab, workdir: str):
        self.lab = lab
        self.rig = Rig(lab, workdir)
        nf = self.rig.t.natfwd
        # One identity per -L role, all authorised by the serving peer.
        self.states = [nf.state_dir(f"laptop{i}") for i in range(2 + CHURN)]
        self.allow = []
        for s in self.states:
            self.allow += ["--allow", nf.key_id(s)]
        self.stats = Stats()
        self.stop = threading.Event()

    def start_forward(self, index: int, relayed: bool) -> tuple[Proc, int]:
        rig = self.rig
        argv = [rig.t.natfwd.peer_bin, *rig.t.peer_relay_args(rig.ls), "-L",
                f"0:{rig.target}", "--state-dir", self.states[index]]
        argv += ["--force-relay"] if relayed else []
        argv += ["home"]
        p = self.lab.start(f"peer -L #{index}", argv, rig.laptop_ns,
                           env=lab_test.clean_env())
        try:
            m = p.wait_stdout(r"^listening on (\S+) -> home ", 30, what="-L ready line")
            p.wait_stdout(r"^path home: " + ("relayed" if relayed else ""), 60,
                          what="-L path line")
        except Failure:
            p.stop()
            self.lab.group.procs.remove(p)
            raise
        with self.stats.lock:
            self.stats.sessions += 1
            self.stats.relayed_sessions += relayed
        return p, int(m.group(1).rpartition(":")[2])

    def transfer(self, port: int, rng: random.Random, label: str) -> None:
        nbytes = rng.choice((1, rng.randint(2, 65536), rng.randint(65537, MAX_BYTES)))
        argv = ["python3", STREAM_CHECK, "fetch", f"127.0.0.1:{port}", str(nbytes), "close",
                "--timeout", str(scaled(60))]
        p = self.lab.start(f"fetch {label}", argv, self.rig.laptop_ns)
        try:
            m = p.wait_stdout(END_RE.pattern, 90, what="fetch end line")
            ok = m.group(1) == "eof" and int(m.group(2)) == nbytes
            what = f"{label}: asked {nbytes}, got {m.group(1)} after {m.group(2)}"
        except Failure as e:
            ok, what = False, f"{label}: {str(e).splitlines()[0]}"
        p.wait_exit(10)
        self.lab.group.procs.remove(p)
        self.stats.add(ok, nbytes, what)
        if not ok:
            log(f"soak: NOT INTACT {what}")

    def steady(self, port: int, label: str, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            self.transfer(port, rng, label)

    def churn(self, index: int, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            relayed = rng.random() < 1 / 3
            try:
                p, port = self.start_forward(index, relayed)
            except Failure as e:
                log(f"soak: churn #{index} failed:\n{e}")
                self.stats.add(False, 0, f"churn #{index}: {str(e).splitlines()[0]}")
                continue
            for _ in range(rng.randint(1, 4)):
                if self.stop.is_set():
                    break
                self.transfer(port, rng, f"churn #{index}{' relayed' if relayed else ''}")
            p.stop()
            self.lab.group.procs.remove(p)


def test_soak(lab: Lab, workdir: str, args) -> bool:
    del args
    s = Soak(lab, workdir)
    rig = s.rig
    rig.start_target()
    relay = rig.start_relay()
    serving = rig.start_serving(rig.target, extra=s.allow)
    direct, direct_port = s.start_forward(0, False)
    relayed, relayed_port = s.start_forward(1, True)
    watched = {"relay": relay, "peer --serve": serving, "-L direct": direct,
               "-L relayed": relayed}
    # Warm-up: one transfer through each long-lived tunnel, then the start sample.
    rng = random.Random(1)
    s.transfer(direct_port, rng, "warm-up direct")
    s.transfer(relayed_port, rng, "warm-up relayed")
    start = {k: (rss_kib(p.pid), fd_count(p.pid)) for k, p in watched.items()}
    t0 = time.monotonic()
    threads = [threading.Thread(target=s.steady, args=(direct_port, "direct", 2)),
               threading.Thread(target=s.steady, args=(relayed_port, "relayed", 3))]
    threads += [threading.Thread(target=s.churn, args=(2 + i, 10 + i)) for i in range(CHURN)]
    for t in threads:
        t.daemon = True
        t.start()
    end_at = t0 + MINUTES * 60
    settle_at = t0 + 60 if MINUTES >= 3 else None
    settled = None
    while time.monotonic() < end_at and all(p.running() for p in watched.values()):
        time.sleep(1)  # the run's clock, not synchronisation
        if settle_at and settled is None and time.monotonic() >= settle_at:
            settled = {k: rss_kib(p.pid) for k, p in watched.items()}
    s.stop.set()
    for t in threads:
        t.join(scaled(180))
    elapsed = time.monotonic() - t0
    for name, p in watched.items():
        p.check_running(f"soak: {name}")
    # The churning peers are gone: let the relay and serving peer finish closing.
    deadline = time.monotonic() + scaled(30)
    while time.monotonic() < deadline and any(
            fd_count(p.pid) > start[k][1] + FD_SLACK for k, p in watched.items()):
        time.sleep(0.2)
    end = {k: (rss_kib(p.pid), fd_count(p.pid)) for k, p in watched.items()}
    st = s.stats
    print(f"\nsoak: {elapsed / 60:.1f} min, {st.sessions} sessions ({st.relayed_sessions} "
          f"relayed), {st.transfers} transfers, {st.bytes / 1e6:.0f} MB intact, "
          f"{len(st.bad)} not intact")
    print("| process | VmRSS KiB start | after 1 min | end | growth | fds start | end | verdict |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    ok = not st.bad
    for k in watched:
        grow = end[k][0] - start[k][0]
        bad = grow > RSS_BOUND_KIB or end[k][1] > start[k][1] + FD_SLACK
        if settled is not None:
            bad = bad or end[k][0] - settled[k] > SETTLED_BOUND_KIB
        ok = ok and not bad
        mid = "-" if settled is None else str(settled[k])
        print(f"| {k} | {start[k][0]} | {mid} | {end[k][0]} | {grow:+d} | {start[k][1]} | "
              f"{end[k][1]} | {'GREW' if bad else 'ok'} |")
    print(f"bounds: VmRSS growth <= {RSS_BOUND_KIB} KiB"
          + (f" and <= {SETTLED_BOUND_KIB} KiB after the first minute" if settled else "")
          + f", fds <= start + {FD_SLACK}")
    for what in st.bad[:20]:
        print(f"  not intact: {what}")
    if st.bad:
        for p in (relay, serving):
            # Its warnings, without the routine session lines.
            lines = [l for l in p.stderr_lines if "warning" in l or "error" in l]
            log(f"{p.name} warnings:\n  " + "\n  ".join(lines[-40:]))
    if st.transfers < 10:
        print("too few transfers to mean anything")
        ok = False
    return ok


if __name__ == "__main__":
    sys.exit(lab_test.main({"soak": test_soak}))

#!/usr/bin/env python3
"""Hard-NAT punching in the NAT lab (meson test lab_hard_nat_punch, root only; see
test/lab/README.md).

    lab_punch.py punch   one relay with its RFC 5780 alternate address
                         (--alternate-address), which the peers' punch probe needs, and
                         two pairs, each with a fresh relay and peers:
      eim x symmetric    home behind `eim`, the laptop behind `symmetric` (a new port
                         per destination): ICE can only relay
      symmetric x eim    the roles the other way round
    In each, the tunnel comes up relayed and ssh runs over it at once; then both
    peers print `direct udp punched LOCAL <-> REMOTE` path lines (the birthday search of
    peer/punch/ won), `peer status --json` shows the punched path, and 20 MB go through
    ssh, sha256 checked. In the first pair the internet router then drops UDP between
    the two sites: the -L peer goes back to a relayed path (the punched path's silence
    limit, 3 s, or a path restart when the network changed lately) and the same ssh
    connection carries another command and the 20 MB copy once more. Then UDP comes
    back: 10 s after the loss the -L peer punches again, and the same ssh connection
    carries a command over the new punched path.

Prints a table: pair, the -L peer's first and punched path lines, the time from
`peer -L` start to each, MB/s through ssh after the move. Exit 0 passed, 1 failed,
77 cannot run here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lab as L  # noqa: E402
import lab_test  # noqa: E402
from lab import Failure, Lab, SiteSpec, log  # noqa: E402
from lab_test import PATH_TIMEOUT, Tunnels, pair_processes  # noqa: E402
from procs import scaled  # noqa: E402

# The punch starts once the tunnel is up: a probe of a few round trips to the relay,
# the offer exchange, then at most BirthdayPunch::Limits::give_up_after (10 s). A search
# that misses (about 1.7 % of them here) is tried again 10 s later: room for both.
PUNCH_TIMEOUT = 40.0
PUNCHED_RE = r"^path home: (direct udp punched \S+ <-> \S+), rtt \d+ ms$"
SERVING_PUNCHED_RE = r"^path .+?: (direct udp punched \S+ <-> \S+), rtt \d+ ms$"


@dataclass
class Row:
    pair: str
    first_path: str = ""
    punched_path: str = ""
    serving_path: str = ""
    relayed_ms: Optional[float] = None
    punched_ms: Optional[float] = None
    mbps: Optional[float] = None
    error: str = ""


def check_status(t: Tunnels, laptop: L.Site) -> None:
    """`peer status --json` of the -L peer shows the punched path."""
    r = subprocess.run(["ip", "netns", "exec", laptop.ns["laptop"], t.natfwd.peer_bin, "status",
                        "--state-dir", t.laptop_state, "--json"],
                       capture_output=True, text=True, timeout=scaled(20))
    try:
        tunnels = json.loads(r.stdout)["tunnels"]
    except (ValueError, KeyError) as e:
        raise Failure(f"peer status --json: {e}: {r.stdout!r} {r.stderr!r}") from None
    paths = [tn.get("path") or {} for tn in tunnels if tn.get("state") == "up"]
    if not any(p.get("kind") == "direct" and p.get("local_type") == "punched" for p in paths):
        raise Failure(f"peer status --json shows no punched path: {paths!r}")


def cut_direct_udp(lab: Lab, a: L.Site, b: L.Site) -> None:
    """The internet router drops UDP between the two sites' public addresses (the
    relay's paths stay)."""
    lab.nft(lab.router_ns, f"""
table ip punch_cut {{
  chain forward {{ type filter hook forward priority -10; policy accept;
    ip saddr {a.public_ip} ip daddr {b.public_ip} meta l4proto udp drop
    ip saddr {b.public_ip} ip daddr {a.public_ip} meta l4proto udp drop
  }}
}}
""")


def check_fallback(t: Tunnels, fwd, start: int, home: L.Site, laptop: L.Site, sshd, port: int,
                   control: str) -> None:
    cut_direct_udp(t.lab, home, laptop)
    t0 = time.monotonic()
    m = fwd.wait_stdout(r"^path home: (relayed .*)$", 10, start=start,
                        what="the -L peer's path line back on the relay")
    # The punched path's own silence check ("punched path lost"), or the path health
    # check when the network changed lately (a path restart), whichever comes first.
    how = [line.strip() for line in fwd.stderr_lines
           if "punched path lost" in line or "path restarted" in line]
    log(f"  punched path cut: back on {m.group(1)} after {time.monotonic() - t0:.1f} s "
        f"({how[-1] if how else 'no reason logged'})")
    t.check_command(laptop.ns["laptop"], sshd, port, control, home.ip["home"],
                    home.ip["buffalo"])
    # The same copy over the relay, for comparison with the punched path's.
    log(f"  the 20 MB copy over the relayed path again: "
        f"{t.copy(laptop.ns['laptop'], sshd, port, control):.1f} MB/s")
    # UDP between the sites comes back: the -L peer punches again (10 s after the loss)
    # and the same ssh connection moves back onto a punched path.
    L.sh(["nft", "delete", "table", "ip", "punch_cut"], netns=t.lab.router_ns)
    t0 = time.monotonic()
    m = fwd.wait_stdout(PUNCHED_RE, 10 + PUNCH_TIMEOUT, start=len(fwd.stdout_lines),
                        what="the -L peer's punched path line after UDP came back")
    log(f"  UDP back: punched again after {time.monotonic() - t0:.1f} s: {m.group(1)}")
    t.check_command(laptop.ns["laptop"], sshd, port, control, home.ip["home"],
                    home.ip["buffalo"])


def run_pair(t: Tunnels, home: L.Site, laptop: L.Site, sshd, row: Row,
             fallback: bool = False) -> None:
    buffalo = f"{home.ip['buffalo']}:{L.SSHD_PORT}"
    try:
        with pair_processes(t.lab):
            t.start_relay(extra=["--alternate-address", L.RELAY_IP2])
            serving = t.start_serving(home, buffalo)
            fwd, port = t.start_forward(laptop, buffalo)
            row.first_path, at, index = t.wait_path(fwd, "home", PATH_TIMEOUT)
            row.relayed_ms = (at - fwd.started_at) * 1000
            if not row.first_path.startswith("relayed "):
                raise Failure(f"the tunnel did not start relayed: {row.first_path!r}")
            # Data over the relayed path while the punch searches.
            netns = laptop.ns["laptop"]
            _, control = t.open_master(netns, sshd, port)
            t.check_command(netns, sshd, port, control, home.ip["home"], home.ip["buffalo"])
            m, punched_index = fwd.wait_stdout_at(PUNCHED_RE, PUNCH_TIMEOUT, start=index + 1,
                                                  what="the -L peer's punched path line")
            row.punched_path = m.group(1)
            row.punched_ms = (fwd.line_times.get(punched_index, time.monotonic())
                              - fwd.started_at) * 1000
            row.serving_path = serving.wait_stdout(
                SERVING_PUNCHED_RE, PUNCH_TIMEOUT, what="the serving peer's punched path line"
            ).group(1)
            # The punched path leads to the other site's public address.
            if f" <-> {home.public_ip}:" not in row.punched_path:
                raise Failure(f"the -L peer's punched path does not lead to home's public "
                              f"address {home.public_ip}: {row.punched_path!r}")
            if f" <-> {laptop.public_ip}:" not in row.serving_path:
                raise Failure(f"the serving peer's punched path does not lead to the laptop's "
                              f"public address {laptop.public_ip}: {row.serving_path!r}")
            check_status(t, laptop)
            # The ssh connection opened over the relay carries on, and the copy goes
            # over the punched path.
            t.check_command(netns, sshd, port, control, home.ip["home"], home.ip["buffalo"])
            row.mbps = t.copy(netns, sshd, port, control)
            later = [line for line in fwd.stdout_lines[punched_index + 1:]
                     if line.startswith("path home: ")]
            if later:
                raise Failure(f"the path changed again after the punch: {later!r}")
            if fallback:
                check_fallback(t, fwd, punched_index + 1, home, laptop, sshd, port, control)
    except Failure as e:
        row.error = str(e).split("\n")[0]
        log(f"FAIL {row.pair}:\n{e}")


def test_punch(lab: Lab, workdir: str, args) -> bool:
    del args
    lab.build([SiteSpec("a-eim", "eim", ("home", "buffalo")),
               SiteSpec("b-symmetric", "symmetric", ("laptop",)),
               SiteSpec("c-symmetric", "symmetric", ("home", "buffalo")),
               SiteSpec("d-eim", "eim", ("laptop",))])
    a, b, c, d = (lab.sites[n] for n in ("a-eim", "b-symmetric", "c-symmetric", "d-eim"))
    t = Tunnels(lab, workdir)
    rows = []
    for home, laptop, label, fallback in ((a, b, "eim x symmetric", True),
                                          (c, d, "symmetric x eim", False)):
        sshd = lab.start_sshd(home)
        row = Row(label)
        t0 = time.monotonic()
        run_pair(t, home, laptop, sshd, row, fallback)
        log(f"{'ok  ' if not row.error else 'FAIL'} {label}: {row.punched_path or row.error} "
            f"({time.monotonic() - t0:.1f} s)")
        rows.append(row)
    print("\n| home x laptop | first path (-L peer) | ms | punched path (-L peer) | ms | "
          "MB/s | result |")
    print("|---|---|---:|---|---:|---:|---|")
    for r in rows:
        def ms(x: Optional[float]) -> str:
            return "-" if x is None else f"{x:.0f}"
        mbps = "-" if r.mbps is None else f"{r.mbps:.1f}"
        print(f"| {r.pair} | {r.first_path or '-'} | {ms(r.relayed_ms)} | "
              f"{r.punched_path or '-'} | {ms(r.punched_ms)} | {mbps} | "
              f"{'ok' if not r.error else 'FAIL: ' + r.error} |")
    print("(ms: from `peer -L` start to the path line; "
          f"load average {os.getloadavg()[0]:.1f})")
    return all(not r.error for r in rows)


TESTS = {"punch": test_punch}

if __name__ == "__main__":
    sys.exit(lab_test.main(TESTS))

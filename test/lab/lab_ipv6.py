#!/usr/bin/env python3
"""IPv6 in the NAT lab (meson test lab_ipv6, root only; see test/lab/README.md).

    lab_ipv6.py ipv6    one dual-stack relay (--listen [::]:3478) on the internet and
                        two pairs, a fresh relay, ssh to buffalo and 20 MB each:
      dual x dual       both sites have global IPv6 behind a firewall that lets in only
                        replies, and IPv4 behind a symmetric NAT (relayed over IPv4):
                        direct over IPv6, host to host, both path lines in [..]
      v4only x v6only   home has only IPv4 (eim), the laptop only IPv6: relayed through
                        the relay's TURN, which the laptop reaches over IPv6 and which
                        relays from an IPv4 address (RFC 8656 section 7.2's default)

Prints a table: pair, the -L peer's path line, time from `peer -L` start to that line,
MB/s through ssh. Exit 0 passed, 1 failed, 77 cannot run here.
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lab as L  # noqa: E402
import lab_test  # noqa: E402
from lab import Failure, Lab, SiteSpec, log  # noqa: E402
from lab_test import PATH_TIMEOUT, Tunnels, pair_processes, wait_serving_path  # noqa: E402


class DualStackTunnels(Tunnels):
    """The lab's relay listening dual-stack; peers on IPv6-only sites reach it over IPv6."""

    relay_listen = f"[::]:{L.RELAY_PORT}"

    def peer_relay_args(self, site: L.Site) -> list[str]:
        if site.spec.ipv6 == "only":
            return ["--relay", f"[{L.RELAY_IP6}]:{L.RELAY_PORT}"]
        return super().peer_relay_args(site)


@dataclass
class Row:
    pair: str
    path: str = ""
    serving_path: str = ""
    setup_ms: Optional[float] = None
    mbps: Optional[float] = None
    error: str = ""


def run_pair(t: DualStackTunnels, home: L.Site, laptop: L.Site, sshd, row: Row, check) -> None:
    """Relay, serving peer on home, -L peer on laptop, ssh to buffalo; `check(row)`
    returns the problems with the path lines."""
    buffalo = f"{home.ip['buffalo']}:{L.SSHD_PORT}"
    try:
        with pair_processes(t.lab):
            t.start_relay()
            serving = t.start_serving(home, buffalo)
            fwd, port = t.start_forward(laptop, buffalo)
            row.path, at, _ = t.wait_path(fwd, "home", PATH_TIMEOUT)
            row.setup_ms = (at - fwd.started_at) * 1000
            row.serving_path = wait_serving_path(serving)
            problems = check(row)
            netns = laptop.ns["laptop"]
            _, control = t.open_master(netns, sshd, port)
            t.check_command(netns, sshd, port, control, home.ip["home"], home.ip["buffalo"])
            row.mbps = t.copy(netns, sshd, port, control)
            if problems:
                raise Failure("; ".join(problems))
    except Failure as e:
        row.error = str(e).split("\n")[0]
        log(f"FAIL {row.pair}:\n{e}")


def direct_over_ipv6(laptop: L.Site, home: L.Site):
    """Both path lines: direct from this side's IPv6 host address to the other's (which
    it may have learnt from the check itself: prflx)."""
    def check(row: Row) -> list[str]:
        problems = []
        for side, line, own, other in (("laptop", row.path, laptop.ip6["laptop"],
                                        home.ip6["home"]),
                                       ("home", row.serving_path, home.ip6["home"],
                                        laptop.ip6["laptop"])):
            want = (rf"^direct udp host \[{re.escape(own)}\]:\d+ <-> (host|prflx) "
                    rf"\[{re.escape(other)}\]:\d+, rtt \d+ ms$")
            if not re.match(want, line):
                problems.append(f"{side}'s path is not direct between the IPv6 host "
                                f"addresses {own} and {other}: {line!r}")
        return problems
    return check


def relayed_over_ipv6_turn(row: Row) -> list[str]:
    want = f"relayed via turn-udp [{L.RELAY_IP6}]:{L.RELAY_PORT}, "
    if not row.path.startswith(want):
        return [f"the IPv6-only laptop's path is not {want!r}...: {row.path!r}"]
    return []


def test_ipv6(lab: Lab, workdir: str, args) -> bool:
    del args
    lab.build([SiteSpec("a-dual", "symmetric", ("home", "buffalo"), ipv6="dual"),
               SiteSpec("b-dual", "symmetric", ("laptop",), ipv6="dual"),
               SiteSpec("c-v4", "eim", ("home", "buffalo")),
               SiteSpec("d-v6", "eim", ("laptop",), ipv6="only")])
    a, b, c, d = (lab.sites[n] for n in ("a-dual", "b-dual", "c-v4", "d-v6"))
    t = DualStackTunnels(lab, workdir)
    rows = []
    for home, laptop, label, check in (
            (a, b, "dual (v4 symmetric) x dual (v4 symmetric)", direct_over_ipv6(b, a)),
            (c, d, "v4 only (eim) x v6 only", relayed_over_ipv6_turn)):
        sshd = lab.start_sshd(home)
        row = Row(label)
        t0 = time.monotonic()
        run_pair(t, home, laptop, sshd, row, check)
        log(f"{'ok  ' if not row.error else 'FAIL'} {label}: {row.path or row.error} "
            f"({time.monotonic() - t0:.1f} s)")
        rows.append(row)
    print("\n| home x laptop | path (-L peer's line) | setup ms | MB/s | result |")
    print("|---|---|---:|---:|---|")
    for r in rows:
        setup = "-" if r.setup_ms is None else f"{r.setup_ms:.0f}"
        mbps = "-" if r.mbps is None else f"{r.mbps:.1f}"
        print(f"| {r.pair} | {r.path or '-'} | {setup} | {mbps} | "
              f"{'ok' if not r.error else 'FAIL: ' + r.error} |")
    print(f"(load average {os.getloadavg()[0]:.1f})")
    return all(not r.error for r in rows)


TESTS = {"ipv6": test_ipv6}

if __name__ == "__main__":
    sys.exit(lab_test.main(TESTS))

#!/usr/bin/env python3
"""coturn's turnutils_uclient in its default mode against our relay, on loopback.

Without -c, uclient asks for RTP/RTCP port pairs: each session allocates with EVEN-PORT
R=1 and then allocates its RTCP leg from another socket with the RESERVATION-TOKEN it
got (RFC 8656 section 7.2). Over UDP and over TCP every message must come back.

Quotas after uclient exits: uclient deletes (Refresh 0) only half of its allocations and
leaves the rest to expire, so back-to-back runs under one REST user add up. Under the
default --max-allocations-per-user 10, `uclient -c -m 2` (4 allocations a run, 2 left)
runs three times, and `uclient -c -m 4` (8 a run, 4 left) gets 486 on its second run:
the same at coturn 4.6 with --user-quota 10, which the test runs through the same
sequence (a uclient quirk, not a difference in quota handling). Run with
NATFWD_RELAY_THREADS=2 too (meson: turn_uclient_default_mode_threads_2), where a pair's
two legs may land on different data-plane threads. Skipped (77) when the coturn tools
are missing.

Each uclient run binds its own loopback address (-L). Its sockets take ephemeral ports,
and one that lands on the port of an earlier run's leftover allocation would present a
new REST username on that allocation's 5-tuple, which the relay must answer with 441
(RFC 8656 section 5), not the quota's 486.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Failure, run  # noqa: E402
from turn_interop import (SECRET, require_tools, run_echo_peer, run_uclient,  # noqa: E402
                          start_coturn, start_relay, uclient_outcome)

MESSAGES = 30
SESSIONS = 4


def local_addresses():
    """127.0.0.10, 127.0.0.11, ...: a client address per uclient run."""
    n = 10
    while True:
        yield ["-L", f"127.0.0.{n}"]
        n += 1


def test(w):
    require_tools("turnutils_uclient", "turnutils_peer")
    _, host, port = start_relay(w)  # the default quotas
    peer_port = run_echo_peer(w)
    common = ["-n", str(MESSAGES), "-z", "5", "-e", "127.0.0.1", "-r", str(peer_port),
              "-W", SECRET, "-p", str(port)]
    expected = MESSAGES * SESSIONS
    local = local_addresses()
    run_uclient(w, "udp default mode", ["-m", str(SESSIONS), "-u", "pairs-udp", *next(local),
                                        *common, host], expected)
    run_uclient(w, "tcp default mode", ["-t", "-m", str(SESSIONS), "-u", "pairs-tcp",
                                        *next(local), *common, host], expected)
    coturn_port = start_coturn(w, ["--user-quota", "10"])
    for server, server_port in (("natfwd", port), ("coturn", coturn_port)):
        args = ["-n", "5", "-z", "5", "-e", "127.0.0.1", "-r", str(peer_port), "-W", SECRET,
                "-p", str(server_port)]
        for i in range(3):
            run_uclient(w, f"{server} -c -m 2 run {i + 1} of 3",
                        ["-c", "-m", "2", "-u", "again", *next(local), *args, host], 5 * 2)
        outcomes = [uclient_outcome(w, f"{server} -c -m 4 run {i + 1} of 2",
                                    ["-c", "-m", "4", "-u", "more", *next(local), *args,
                                     host])
                    for i in range(2)]
        refused = ["486" in output for _, output, _ in outcomes]
        print(f"{server}: -c -m 4 twice under user quota 10: 486 in run 1 {refused[0]}, "
              f"in run 2 {refused[1]}", flush=True)
        if refused != [False, True]:
            raise Failure(f"{server}: expected 486 in the second -c -m 4 run only\n"
                          + "\n".join(proc.describe(40) for _, _, proc in outcomes))


run(test)

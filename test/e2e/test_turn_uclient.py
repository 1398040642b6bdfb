#!/usr/bin/env python3
"""coturn's turnutils_uclient against our relay's TURN server, on loopback:
UDP and TCP, with channels (ChannelBind + ChannelData) and without (-s: Send/Data
indications), REST API auth both as a secret (-W) and as a computed username and
password (-u/-w); and TLS (-S) on --tls-listen. Every message must come back: the
echo peer is coturn's turnutils_peer. Skipped (77) when the coturn tools are missing.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import run  # noqa: E402
from turn_interop import (SECRET, require_tools, rest_credentials, run_echo_peer,  # noqa: E402
                          run_uclient, start_relay)

MESSAGES = 30
SESSIONS = 4


def test(w):
    require_tools("turnutils_uclient", "turnutils_peer")
    # uclient leaves most allocations to expire rather than deleting them: give each
    # run its own user, and room for them.
    _, host, port = start_relay(w, ["--tls-listen", "127.0.0.1:0",
                                    "--max-allocations-per-user", "100"])
    relay_proc = w.group.procs[-1]
    tls_port = int(relay_proc.wait_stdout(r"tls \S+:(\d+)\)").group(1))
    peer_port = run_echo_peer(w)
    # -c: no RTCP port pairs (test_turn_uclient_pairs.py runs the default mode).
    common = ["-c", "-n", str(MESSAGES), "-m", str(SESSIONS), "-z", "5",
              "-e", "127.0.0.1", "-r", str(peer_port)]
    expected = MESSAGES * SESSIONS
    user1, password1 = rest_credentials(SECRET, "uclient-1")
    user2, password2 = rest_credentials(SECRET, "uclient-2")
    runs = [
        ("udp channels -W", ["-W", SECRET, "-u", "uclient-0", "-p", str(port)]),
        ("udp send-indications -u/-w", ["-s", "-u", user1, "-w", password1, "-p", str(port)]),
        ("tcp channels -u/-w", ["-t", "-u", user2, "-w", password2, "-p", str(port)]),
        ("tcp send-indications -W", ["-t", "-s", "-W", SECRET, "-u", "uclient-3",
                                     "-p", str(port)]),
        ("tls channels -W", ["-t", "-S", "-W", SECRET, "-u", "uclient-4",
                             "-p", str(tls_port)]),
    ]
    for label, args in runs:
        run_uclient(w, label, common + args + [host], expected)


run(test)

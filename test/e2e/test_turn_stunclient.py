#!/usr/bin/env python3
"""coturn's turnutils_stunclient against our relay: the Binding answer on the TURN port
carries the client's own address. Skipped (77) when the coturn tools are missing."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Failure, run  # noqa: E402
from turn_interop import require_tools, start_relay  # noqa: E402


def test(w):
    require_tools("turnutils_stunclient")
    _, host, port = start_relay(w)
    # -L fixes the client's address; its port is the kernel's, so check it is a real one.
    proc = w.group.start("turnutils_stunclient",
                         ["turnutils_stunclient", "-L", "127.0.0.1", "-p", str(port), host])
    code = proc.wait_exit(20)
    output = "\n".join(proc.stdout_lines + proc.stderr_lines)
    found = re.findall(r"UDP reflexive addr: (\S+):(\d+)", output)
    if code != 0 or not found:
        raise Failure(f"stunclient: exit {code}, no reflexive address\n" + proc.describe())
    ip, mapped_port = found[-1][0], int(found[-1][1])
    print(f"stunclient: reflexive {ip}:{mapped_port}", flush=True)
    if ip != "127.0.0.1" or not 1024 <= mapped_port <= 65535 or mapped_port == port:
        raise Failure(f"stunclient: wrong mapped address {ip}:{mapped_port}\n" + output)


run(test)

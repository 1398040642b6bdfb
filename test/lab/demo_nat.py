#!/usr/bin/env python3
"""The NAT demo: ssh from a laptop behind one NAT to a machine behind another.

    demo_nat.py [--home eim] [--laptop cgnat] [--build DIR]     (root)

Builds a small lab of network namespaces (test/lab/lab.py): a relay on the "internet"
(203.0.113.10), a home LAN behind a home router that masquerades (home runs
`peer --serve`, buffalo runs a real sshd), and a laptop on a mobile carrier behind a
carrier-grade NAT. Then it runs, printing each command as it goes:

    relay   relay --listen 203.0.113.10:3478
    home    peer --relay 203.0.113.10:3478 --name home --serve 2222:192.168.10.3:22
    laptop  peer --relay 203.0.113.10:3478 -L 2222:192.168.10.3:22 home
    laptop  ssh -p 2222 root@127.0.0.1 ...

shows the path the tunnel took, runs a command on buffalo, copies a file, shows
`peer status` on the laptop, and tears
everything down (also on Ctrl-C). Any two NAT types from test/lab/lab.py TYPES work;
pairs that need the relay's TURN (symmetric x eim, ...) only once issue 3 has landed.
Exit 0 when ssh went through, 1 otherwise, 77 when not root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lab as L  # noqa: E402
from lab import Failure, Lab, SiteSpec  # noqa: E402
import lab_test as T  # noqa: E402

DESCRIBE = {
    "none": "a public address, no NAT",
    "fullcone": "a full-cone NAT (any host may send to a mapped port)",
    "eim": "a home router: masquerade, port preserving, replies only",
    "cgnat": "a home router behind a carrier-grade NAT that rewrites ports",
    "symmetric": "a symmetric NAT (a new port for every destination)",
    "udpblock": "a NAT whose firewall drops all UDP",
    "proxyonly": "no route out, only an HTTP CONNECT proxy to port 443",
}


def say(text: str = "") -> None:
    print(text, flush=True)


def cmd(where: str, text: str) -> None:
    say(f"  {where:<8}$ {text}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", default="eim", choices=L.TYPES)
    ap.add_argument("--laptop", default="cgnat", choices=L.TYPES)
    ap.add_argument("--build", help="build directory with relay/relay and peer/peer")
    args = ap.parse_args()
    if args.build:
        os.environ["BUILD_DIR"] = os.path.abspath(args.build)
    why = L.lab_preflight()
    if why:
        say(f"demo skipped: {why}")
        return 77
    L.install_signal_handlers()
    workdir = tempfile.mkdtemp(prefix="natfwd-demo-")
    os.chmod(workdir, 0o755)
    lab = Lab(workdir, nfq_delay=L.find_nfq_delay())
    ok = False
    try:
        say("Building the lab: network namespaces, veth links, nftables NATs ...")
        lab.build([SiteSpec("home", args.home, ("home", "buffalo")),
                   SiteSpec("road", args.laptop, ("laptop",))])
        hs, ls = lab.sites["home"], lab.sites["road"]
        say(f"  relay    {L.RELAY_IP}            on the internet")
        say(f"  home     {hs.ip['home']:<20} behind {DESCRIBE[hs.nat]} ({hs.public_ip})")
        say(f"  buffalo  {hs.ip['buffalo']:<20} on the same home LAN, running sshd")
        say(f"  laptop   {ls.ip['laptop']:<20} behind {DESCRIBE[ls.nat]} ({ls.public_ip})")
        say()
        sshd = lab.start_sshd(hs)
        t = T.Tunnels(lab, workdir)
        target = f"{hs.ip['buffalo']}:{L.SSHD_PORT}"
        cmd("relay", f"relay --listen {L.RELAY_IP}:{L.RELAY_PORT}")
        t.start_relay()
        cmd("home", f"peer {' '.join(t.peer_relay_args(hs))} --name home --serve 2222:{target}"
                    " --allow LAPTOP-KEY-ID   (the laptop's `peer id`)")
        serving = t.start_serving(hs, target)
        say(f"           {serving.stdout_lines[0]}")
        cmd("laptop", f"peer {' '.join(t.peer_relay_args(ls))} -L 2222:{target} home")
        # Port 2222 is free: the laptop is a namespace of its own.
        fwd, port = t.start_forward(ls, target, port=2222)
        say(f"           {fwd.stdout_lines[0]}")
        path, at, _ = t.wait_path(fwd, "home", T.PATH_TIMEOUT)
        say(f"           path home: {path}")
        say(f"           (tunnel up {(at - fwd.started_at) * 1000:.0f} ms after start)")
        say()
        netns = ls.ns["laptop"]
        cmd("laptop", f"ssh -p {port} root@127.0.0.1 'echo $SSH_CONNECTION; uptime'")
        _, control = t.open_master(netns, sshd, port)
        r = t.ssh(netns, sshd, port, control, "echo $SSH_CONNECTION; uptime", timeout=30)
        for line in r.stdout.decode(errors="replace").splitlines():
            say(f"           {line}")
        if r.returncode != 0:
            raise Failure(f"ssh failed: {r.stderr.decode(errors='replace')}")
        say("           (SSH_CONNECTION: the client is home, the server is buffalo:22)")
        cmd("laptop", f"ssh -p {port} root@127.0.0.1 'cat > file' < 20MB-file")
        mbps = t.copy(netns, sshd, port, control)
        say(f"           20 MB copied intact (sha256 checked), {mbps:.1f} MB/s")
        cmd("laptop", "peer status")
        r = subprocess.run(["ip", "netns", "exec", netns, t.natfwd.peer_bin, "status",
                            "--state-dir", t.laptop_state], capture_output=True, text=True,
                           timeout=30)
        if r.returncode != 0:
            raise Failure(f"peer status failed: {r.stderr.strip()}")
        for line in r.stdout.splitlines():
            say(f"           {line}")
        say()
        say(f"ssh went from a laptop behind {ls.nat} to buffalo behind {hs.nat}: "
            f"{path.split(',')[0]}.")
        ok = True
    except Failure as e:
        say(f"demo failed: {e}")
    except KeyboardInterrupt:
        say("interrupted")
    finally:
        t0 = time.monotonic()
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)
        say(f"Lab torn down ({time.monotonic() - t0:.1f} s): namespaces, links and "
            f"processes removed.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

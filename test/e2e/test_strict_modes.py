#!/usr/bin/env python3
"""Files that decide who gets in are refused when someone else could change them, as
OpenSSH's StrictModes does, each with one line that names the path and the fix.

1. relay --state-dir DIR with DIR mode 0777: exit 1, "chmod go-w DIR".
2. relay --config FILE with FILE mode 0666 (it may say allow-peer = 0.0.0.0/0): exit 2.
3. peer --config FILE with FILE mode 0666 (it may say allow = KEYID): exit 2.
4. relay --auth-secret-file FILE with FILE mode 0644: exit 1, "chmod o-rwx FILE".
5. A state dir inside a world-writable directory without the sticky bit: exit 1.
6. The peer's state dir mode 0777 (another user could plant identity.key or
   authorized_peers, or a symlink for `peer invite` to follow): `peer id`,
   `peer invite` and `peer --serve` each exit 1 with the line.
The same files with safe modes start a relay (ready line).
"""
import os
import subprocess

from harness import Failure, run, scaled


def expect_one_line(label, argv, code, must_mention):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=scaled(20),
                       stdin=subprocess.DEVNULL)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    if r.returncode != code or len(lines) != 1 or must_mention not in lines[0]:
        raise Failure(f"{label}: exit {r.returncode} (want {code}), stderr {lines!r} "
                      f"(want one line with {must_mention!r})\n  argv: {argv}")
    return lines[0]


def test(w):
    relay = w.relay_bin
    base = w.natfwd.state_dir("strict")

    open_dir = os.path.join(base, "open-state")
    os.mkdir(open_dir)
    os.chmod(open_dir, 0o777)
    line = expect_one_line("world-writable state dir",
                           [relay, "--listen", "127.0.0.1:0", "--state-dir", open_dir], 1,
                           f"chmod go-w {open_dir}")

    conf = os.path.join(base, "relay.conf")
    with open(conf, "w") as f:
        f.write("[relay]\nallow-peer = 0.0.0.0/0\n")
    os.chmod(conf, 0o666)
    expect_one_line("world-writable relay.conf",
                    [relay, "--config", conf, "--listen", "127.0.0.1:0",
                     "--state-dir", w.natfwd.state_dir("relay")], 2,
                    "is writable by group or others")

    peer_conf = os.path.join(base, "peer.conf")
    with open(peer_conf, "w") as f:
        f.write("[peer]\nallow = aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n")
    os.chmod(peer_conf, 0o666)
    expect_one_line("world-writable peer.conf",
                    [w.peer_bin, "--config", peer_conf, "--relay", "127.0.0.1:9",
                     "--state-dir", w.natfwd.state_dir("peer"), "--name", "home",
                     "--serve", "127.0.0.1:22"], 2, "is writable by group or others")

    secret = os.path.join(base, "turn-secret")
    with open(secret, "w") as f:
        f.write("secret\n")
    os.chmod(secret, 0o644)
    expect_one_line("TURN secret readable by all",
                    [relay, "--listen", "127.0.0.1:0", "--auth-secret-file", secret,
                     "--state-dir", w.natfwd.state_dir("relay")], 1, f"chmod o-rwx {secret}")

    parent = os.path.join(base, "open-parent")
    os.mkdir(parent)
    os.chmod(parent, 0o777)
    inner = os.path.join(parent, "state")
    os.mkdir(inner, 0o700)
    expect_one_line("state dir under a world-writable directory",
                    [relay, "--listen", "127.0.0.1:0", "--state-dir", inner], 1,
                    f"{parent} is writable by group or others")

    peer_open = os.path.join(base, "open-peer")
    os.mkdir(peer_open)
    os.chmod(peer_open, 0o777)
    for label, argv in [
            ("peer id", [w.peer_bin, "id", "--state-dir", peer_open]),
            ("peer invite", [w.peer_bin, "invite", "--state-dir", peer_open]),
            ("peer --serve", [w.peer_bin, "--relay", "127.0.0.1:9", "--state-dir", peer_open,
                              "--name", "home", "--serve", "127.0.0.1:22"])]:
        expect_one_line(f"{label} in a world-writable state dir", argv, 1,
                        f"chmod go-w {peer_open}")
    if os.listdir(peer_open):
        raise Failure(f"the peer wrote into the refused state dir: {os.listdir(peer_open)}")

    # Fixed as the lines say: the relay starts.
    os.chmod(open_dir, 0o700)
    os.chmod(conf, 0o644)
    os.chmod(secret, 0o600)
    w.natfwd.relay(state_dir=open_dir, extra=["--config", conf, "--auth-secret-file", secret])
    print(f"strict modes: refused with one line each, e.g. {line!r}; fixed, the relay starts",
          flush=True)


if __name__ == "__main__":
    run(test)

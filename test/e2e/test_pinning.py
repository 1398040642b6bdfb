#!/usr/bin/env python3
"""Pinned serving-peer keys (known_peers, NAME@KEYID) and identity-key permissions.

1. The first tunnel to `home` records its key; a later `home` with another key (met
   through another relay, which cannot know better) is refused with both
   fingerprints, and its target is never connected.
2. `home@KEYID` with the wrong key id is refused; with the right one it works with no
   first-use trust.
3. An identity key readable by others makes the peer refuse to start.
"""
import os
import subprocess

from harness import Failure, assert_refused, echo, connect, run, scaled


def key_id(peer_bin: str, state_dir: str) -> tuple[str, str]:
    out = subprocess.run([peer_bin, "id", "--state-dir", state_dir], capture_output=True,
                         text=True, timeout=scaled(10), check=True).stdout.split("\n")
    return out[0], out[1]


def expect_echo(laddr: str) -> None:
    with connect(laddr, timeout=scaled(30)) as s:
        s.sendall(b"ping")
        if s.recv(4) != b"ping":
            raise Failure("no echo through the tunnel")


def test(w):
    peer = w.natfwd.peer_bin
    target = w.target(echo)
    home_a = w.natfwd.state_dir("home-a")
    home_b = w.natfwd.state_dir("home-b")
    laptop = w.natfwd.state_dir("laptop")
    id_a, fp_a = key_id(peer, home_a)
    id_b, fp_b = key_id(peer, home_b)
    fresh = w.natfwd.state_dir("laptop-fresh")
    allow = ["--allow", key_id(peer, laptop)[0], "--allow", key_id(peer, fresh)[0]]

    # 1. First use records home's key A.
    _, relay1 = w.natfwd.relay()
    serving_a = w.natfwd.serve(relay1, "home", [target.addr], extra=["--state-dir", home_a, *allow])
    fwd, (laddr,) = w.natfwd.forward(relay1, "home", [f"0:{target.addr}"],
                                     extra=["--state-dir", laptop])
    expect_echo(laddr)
    known = open(os.path.join(laptop, "known_peers")).read()
    if not known.startswith("home ed25519 "):
        raise Failure(f"known_peers was not written as expected: {known!r}")
    fwd.stop()
    serving_a.stop()
    served_before = target.accepted

    # A different key calls itself home at another relay: refused, loudly.
    _, relay2 = w.natfwd.relay()
    w.natfwd.serve(relay2, "home", [target.addr], extra=["--state-dir", home_b, *allow])
    fwd, (laddr,) = w.natfwd.forward(relay2, "home", [f"0:{target.addr}"],
                                     extra=["--state-dir", laptop])
    assert_refused(laddr, "data came back through a tunnel that should be refused")
    m = fwd.wait_stderr(r"KEY OF PEER 'home' CHANGED.*", 30, what="changed-key refusal")
    line = m.group(0)
    for needle in (fp_a, fp_b, id_a, id_b):
        if needle not in line:
            raise Failure(f"the refusal does not name {needle}: {line}")
    if target.accepted != served_before:
        raise Failure("the target was connected through a refused tunnel")
    print("changed key refused:", line, flush=True)
    fwd.stop()

    # 2. Explicit pins, from a laptop with no known_peers at all.
    fwd, (laddr,) = w.natfwd.forward(relay2, f"home@{id_a}", [f"0:{target.addr}"],
                                     extra=["--state-dir", fresh])
    assert_refused(laddr, "data came back through a tunnel that should be refused")
    fwd.wait_stderr(r"you asked for home@" + id_a, 30, what="wrong pin refusal")
    fwd.stop()
    fwd, (laddr,) = w.natfwd.forward(relay2, f"home@{id_b}", [f"0:{target.addr}"],
                                     extra=["--state-dir", fresh])
    expect_echo(laddr)
    print("home@KEYID: wrong id refused, right id works", flush=True)
    fwd.stop()

    # 3. A key file others can read is refused, as ssh refuses such keys.
    os.chmod(os.path.join(home_a, "identity.key"), 0o640)
    r = subprocess.run([peer, "--relay", relay2, "--name", "home", "--serve", target.addr,
                        "--state-dir", home_a], capture_output=True, text=True,
                       timeout=scaled(10))
    if r.returncode == 0 or "accessible by others" not in r.stderr:
        raise Failure(f"group-readable key: exit {r.returncode}, stderr {r.stderr!r}")
    print("group-readable key refused:", r.stderr.strip(), flush=True)


if __name__ == "__main__":
    run(test)

#!/usr/bin/env python3
"""Only authorised keys reach a serving peer's targets; pairing with one-time invites.

1. A connecting peer whose key is not authorised is refused at the rendezvous, before
   any ICE or target: the target sees no connection, the serving peer logs one line
   naming the key, the -L side says it is not authorised.
2. `peer invite` on the serving side + `peer pair CODE` on the other: the key is
   added to authorized_peers and the serving key pinned; then -L works.
3. The same code again: refused (single use). An expired code: refused. While an
   invite is pending, an unpaired peer that is not pairing is refused at the rendezvous
   as plainly as when none is (its OpenSession carries no proof of an invite).
"""
import os
import subprocess
import time

from harness import Failure, assert_refused, echo, connect, run, scaled


def test(w):
    peer = w.natfwd.peer_bin
    target = w.target(echo)
    _, relay = w.natfwd.relay()
    home = w.natfwd.state_dir("home")
    stranger = w.natfwd.state_dir("stranger")
    stranger_id = w.natfwd.key_id(stranger)
    serving = w.natfwd.serve(relay, "home", [target.addr], extra=["--state-dir", home])

    # 1. Not authorised: refused before anything is touched.
    fwd, (laddr,) = w.natfwd.forward(relay, "home", [f"0:{target.addr}"],
                                     extra=["--state-dir", stranger])
    assert_refused(laddr, "an unauthorised peer got data through")
    serving.wait_stderr(r"refused peer " + stranger_id + r" \(SHA256:", 30,
                        what="serving peer's refusal line")
    fwd.wait_stderr(r"not authorised", 30, what="-L side's refusal")
    if target.accepted:
        raise Failure("the target was connected for an unauthorised peer")
    fwd.stop()

    # 2. Pair with a one-time invite.
    def invite(minutes: int = 60) -> str:
        r = subprocess.run([peer, "invite", "--state-dir", home, "--expires", str(minutes)],
                           capture_output=True, text=True, timeout=scaled(20), check=True)
        return r.stdout.strip()

    def pair(code: str, state: str) -> subprocess.CompletedProcess:
        return subprocess.run([peer, "--relay", relay, "--state-dir", state, "pair", code],
                              capture_output=True, text=True, timeout=scaled(60))

    code = invite()
    if not code.startswith("home@") or "." not in code:
        raise Failure(f"unexpected invite code {code!r}")
    r = pair(code, stranger)
    if r.returncode != 0 or "paired with home" not in r.stdout:
        raise Failure(f"pairing failed: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    authorized = open(os.path.join(home, "authorized_peers")).read()
    if stranger_id not in authorized:
        raise Failure(f"authorized_peers lacks the paired key: {authorized!r}")
    if "home ed25519 " not in open(os.path.join(stranger, "known_peers")).read():
        raise Failure("pairing did not pin the serving peer's key")
    fwd, (laddr,) = w.natfwd.forward(relay, "home", [f"0:{target.addr}"],
                                     extra=["--state-dir", stranger])
    with connect(laddr, timeout=scaled(30)) as s:
        s.sendall(b"ping")
        if s.recv(4) != b"ping":
            raise Failure("a paired peer gets no echo")
    fwd.stop()
    print("unauthorised refused; paired with", code.split(".")[0], flush=True)

    # 3. Single use, expiry, and pairing-only tunnels.
    other = w.natfwd.state_dir("other")
    r = pair(code, other)
    # With no invite pending the session is refused at the rendezvous already.
    if r.returncode == 0 or not ("not authorised" in r.stderr or "used or expired" in r.stderr):
        raise Failure(f"a reused invite was accepted: exit {r.returncode}\n{r.stderr}")
    code3 = invite()  # pending, so the reused code is judged by the serving peer itself
    r = pair(code, other)
    if r.returncode == 0 or "used or expired" not in r.stderr:
        raise Failure(f"a reused invite was accepted: exit {r.returncode}\n{r.stderr}")
    code2 = invite()
    # While an invite is pending, an unpaired peer that is not pairing is refused at the
    # rendezvous exactly as when none is: no ICE, no tunnel that looks connected.
    fwd, (laddr,) = w.natfwd.forward(relay, "home", [f"0:{target.addr}"],
                                     extra=["--state-dir", other])
    accepted_before = target.accepted
    assert_refused(laddr, "an unpaired peer reached a target while an invite was pending")
    fwd.wait_stderr(r"not authorised", 30, what="-L side's refusal with an invite pending")
    serving.wait_stderr(r"refused peer " + w.natfwd.key_id(other), 30,
                        what="serving peer's refusal of an unpaired key with an invite pending")
    if any("connected" in line for line in fwd.stderr_lines):
        raise Failure("an unpaired peer looked connected while an invite was pending:\n"
                      + "\n".join(fwd.stderr_lines))
    if target.accepted != accepted_before:
        raise Failure("the target was connected for an unpaired peer")
    fwd.stop()
    # Expire the pending invite by rewriting its expiry into the past.
    invites = os.path.join(home, "invites")
    lines = [l.split()[0] + " " + str(int(time.time()) - 1) for l in open(invites) if l.strip()]
    with open(invites, "w") as f:
        f.write("\n".join(lines) + "\n")
    r = pair(code2, other)
    if r.returncode == 0:
        raise Failure("an expired invite was accepted")
    del code3
    print("reused and expired invites refused; pairing-only tunnel reaches no target",
          flush=True)


if __name__ == "__main__":
    run(test)

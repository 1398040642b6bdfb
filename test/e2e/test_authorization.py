#!/usr/bin/env python3
"""Only authorised keys reach a serving peer's targets; pairing with one-time invites.

1. A connecting peer whose key is not authorised is refused at the rendezvous, before
   any ICE or target: the target sees no connection, the serving peer logs one line
   naming the key, the -L side says it is not authorised.
2. `peer invite` on the serving side + `peer pair CODE` on the other: the key is
   added to authorized_peers and the serving key pinned; then -L works.
3. The same code again: refused with "invite already used (each code works once)".
   An expired code: "invite expired (make a new one: peer invite)". While an invite is
   pending, an unpaired peer that is not pairing is refused at the rendezvous as plainly
   as when none is (its OpenSession carries no proof of an invite).
4. `peer invite` hints `peer --relay RELAY pair CODE` with the relay the serving peer
   registered at. `peer invite --label laptop` labels the key it pairs; pairing the
   same key again adds no second line. `peer authorized list` prints "KEYID LABEL"
   lines; `peer authorized revoke laptop` removes that key, and its next connection,
   through a tunnel that was open before, is refused ("no longer authorised").
5. `peer invite --with-relay --qr` prints NAME@KEYID.SECRET+RELAY alone on its first
   line, then that very text as a QR code exactly as `qrencode -t UTF8 -m 2` draws it,
   and hints `peer pair CODE`; `peer pair` with that code and no --relay (nor
   NATFWD_RELAY) pairs.
"""
import os
import shutil
import subprocess
import time

from harness import Failure, assert_refused, echo, connect, run, scaled
from procs import peer_env


def forward_with_echo(w, relay, target, state_dir, who):
    """`peer -L` to home with `state_dir`; one echo through it must come back."""
    fwd, (laddr,) = w.natfwd.forward(relay, "home", [f"0:{target.addr}"],
                                     extra=["--state-dir", state_dir])
    with connect(laddr, timeout=scaled(30)) as s:
        s.sendall(b"ping")
        if s.recv(4) != b"ping":
            raise Failure(f"{who} gets no echo")
    return fwd, laddr


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
    def invite(minutes: int = 60, *extra) -> str:
        r = subprocess.run([peer, "invite", "--state-dir", home, "--expires", str(minutes),
                            *extra], capture_output=True, text=True, timeout=scaled(20),
                           check=True)
        hint = f"on the other machine: peer --relay {relay} pair CODE"
        if hint not in r.stderr:
            raise Failure(f"peer invite hint {r.stderr!r}, want {hint!r}")
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
    fwd, laddr = forward_with_echo(w, relay, target, stranger, "a paired peer")
    fwd.stop()
    print("unauthorised refused; paired with", code.split(".")[0], flush=True)

    # 3. Single use, expiry, and pairing-only tunnels.
    other = w.natfwd.state_dir("other")
    r = pair(code, other)
    # Refused at the rendezvous already: the code's proof names a used invite.
    if r.returncode == 0 or "invite already used (each code works once)" not in r.stderr:
        raise Failure(f"a reused invite was accepted: exit {r.returncode}\n{r.stderr}")
    code3 = invite()  # pending, so the reused code is judged by the serving peer itself
    r = pair(code, other)
    if r.returncode == 0 or "invite already used (each code works once)" not in r.stderr:
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
    pending = invite()  # so that the serving peer itself judges the expired code
    r = pair(code2, other)
    if r.returncode == 0 or "invite expired (make a new one: peer invite)" not in r.stderr:
        raise Failure(f"an expired invite: exit {r.returncode}\n{r.stderr}")
    del code3
    print("reused and expired invites refused, each said; an unpaired key refused while an "
          "invite is pending", flush=True)

    # 4. Labels, pairing twice, list and revoke.
    r = pair(pending, stranger)  # already authorised: no second line
    if r.returncode != 0:
        raise Failure(f"pairing again failed: exit {r.returncode}\n{r.stderr}")
    laptop = w.natfwd.state_dir("laptop")
    laptop_id = w.natfwd.key_id(laptop)
    r = pair(invite(60, "--label", "laptop"), laptop)
    if r.returncode != 0:
        raise Failure(f"pairing with a labelled code failed: {r.stderr}")
    listed = subprocess.run([peer, "--state-dir", home, "authorized", "list"],
                            capture_output=True, text=True, timeout=scaled(20))
    lines = listed.stdout.splitlines()
    if listed.returncode != 0 or lines != [f"{stranger_id} paired", f"{laptop_id} laptop"]:
        raise Failure(f"peer authorized list: exit {listed.returncode}, {lines}")
    fwd, laddr = forward_with_echo(w, relay, target, laptop, "the labelled key")
    r = subprocess.run([peer, "authorized", "revoke", "laptop", "--state-dir", home],
                       capture_output=True, text=True, timeout=scaled(20))
    if r.returncode != 0 or r.stdout.strip() != f"revoked {laptop_id} laptop":
        raise Failure(f"peer authorized revoke laptop: exit {r.returncode} {r.stdout!r} "
                      f"{r.stderr!r}")
    assert_refused(laddr, "a revoked key reached the target through its open tunnel")
    fwd.wait_stderr(r"no longer authorised", 30, what="the revoked key's refusal")
    fwd.stop()
    r = subprocess.run([peer, "authorized", "revoke", "laptop", "--state-dir", home],
                       capture_output=True, text=True, timeout=scaled(20))
    if r.returncode != 1 or "no key id or label 'laptop'" not in r.stderr:
        raise Failure(f"revoking twice: exit {r.returncode} {r.stderr!r}")
    print("invite hint names the relay; labels, list, revoke (open tunnel too); pairing "
          "twice adds no line", flush=True)

    # 5. A code that carries the relay, and its QR code.
    r = subprocess.run([peer, "invite", "--state-dir", home, "--with-relay", "--qr"],
                       capture_output=True, text=True, timeout=scaled(20))
    code, _, drawn = r.stdout.partition("\n")
    if r.returncode != 0 or not code.endswith("+" + relay) or \
            "on the other machine: peer pair CODE" not in r.stderr:
        raise Failure(f"invite --with-relay --qr: exit {r.returncode} {code!r} {r.stderr!r}")
    if not shutil.which("qrencode"):
        raise Failure("qrencode is not installed (Debian package qrencode; scripts/deps "
                      "installs it): it draws the reference for `peer invite --qr`")
    reference = subprocess.run(["qrencode", "-t", "UTF8", "-m", "2", code],
                               capture_output=True, text=True, timeout=scaled(20)).stdout
    if drawn != reference or not reference:
        raise Failure(f"peer invite --qr drew\n{drawn}\nqrencode -t UTF8 -m 2 draws\n{reference}")
    print(f"invite --qr: {len(drawn.splitlines())} lines, as qrencode draws {code!r}", flush=True)
    phone = w.natfwd.state_dir("phone")
    r = subprocess.run([peer, "--state-dir", phone, "pair", code], capture_output=True,
                       text=True, timeout=scaled(60), env=peer_env())
    if r.returncode != 0 or "paired with home" not in r.stdout:
        raise Failure(f"pair with a code that carries the relay: exit {r.returncode}\n"
                      f"{r.stdout}{r.stderr}")
    print("a code with +RELAY pairs without --relay", flush=True)


if __name__ == "__main__":
    run(test)

#!/usr/bin/env python3
"""One connecting peer process forwards to two serving peers at once, both carrying ssh.

A real relay; two serving peers, `home` and `office`, each in front of its own throwaway
sshd (its own host and user keys); one laptop process started as
`peer -L 0:HOME_SSHD home -L 0:OFFICE_SSHD office`. Checks: one ready line per -L naming
its peer; ssh through each forward runs a command and copies a 5 MB file intact (both
copies at the same time); each forward reaches its own sshd (the other sshd's user key
is refused there); a path line per peer; `peer status` (JSON and text) shows both peers
and a tunnel up to each; known_peers pins both names. Then the same laptop from a
peer.conf with `[forward ssh] peer = home` and `[forward office-ssh] peer = office`:
one ready line per group, naming its peer, and ssh through both. Skipped when openssh
is missing.
"""
import json
import os
import subprocess
import threading

from harness import Failure, run_with_ssh, scaled, ssh_copy_check, start_sshd
from procs import FORWARD_RE, verbose_args, peer_env


FILE_SIZE = 5 * 1024 * 1024
NAMES = ("home", "office")


def ssh(sshd, port, *command, stdin=None, timeout=120):
    argv = sshd.ssh_argv(port, *command)
    try:
        return subprocess.run(argv, stdin=stdin, capture_output=True, timeout=scaled(timeout))
    except subprocess.TimeoutExpired:
        raise Failure(f"ssh did not finish within {scaled(timeout):.0f} s: {argv}\n"
                      f"sshd log:\n{sshd.log_text()}") from None


def test(w):
    sshds = {}
    for name in NAMES:
        sshds[name], _ = start_sshd(w, f"sshd-{name}")

    _, relay_addr = w.natfwd.relay()
    for name in NAMES:
        w.natfwd.serve(relay_addr, name, [f"127.0.0.1:{sshds[name].port}"])

    client_dir = w.natfwd.client_state_dir()
    argv = [w.peer_bin, "--relay", relay_addr, "--state-dir", client_dir, *verbose_args()]
    for name in NAMES:
        argv += ["-L", f"0:127.0.0.1:{sshds[name].port}", name]
    laptop = w.group.start("peer -L home -L office", argv, env=peer_env())
    ports = {}
    index = 0
    for name in NAMES:
        m, index = laptop.wait_stdout_at(FORWARD_RE, scaled(30), start=index,
                                         what="-L ready line")
        if m.group(2) != name or m.group(3) != f"127.0.0.1:{sshds[name].port}":
            raise Failure(f"ready line {m.group(0)!r}: expected -> {name} "
                          f"127.0.0.1:{sshds[name].port}")
        ports[name] = int(m.group(1).rpartition(":")[2])
        index += 1

    for name in NAMES:
        r = ssh(sshds[name], ports[name], "echo", f"hello-{name}")
        if r.returncode != 0 or r.stdout.strip() != f"hello-{name}".encode():
            raise Failure(f"ssh to {name} through the tunnel: exit {r.returncode}, stdout "
                          f"{r.stdout!r}, stderr {r.stderr.decode(errors='replace')}\n"
                          f"{laptop.describe()}\nsshd log:\n{sshds[name].log_text()}")
    # Each forward reaches its own serving peer's sshd: the other one's key is refused.
    for name, other in (NAMES, tuple(reversed(NAMES))):
        r = ssh(sshds[other], ports[name], "echo", "crossed")
        if r.returncode == 0:
            raise Failure(f"the {name} forward accepted {other}'s ssh key: it does not reach "
                          f"{name}'s sshd")

    failures = []

    def copy(name):
        try:
            os.makedirs(os.path.join(w.tmpdir, name), exist_ok=True)
            ssh_copy_check(lambda command, stdin: ssh(sshds[name], ports[name], command,
                                                      stdin=stdin),
                           os.path.join(w.tmpdir, name), FILE_SIZE, laptop.describe)
        except Failure as e:
            failures.append(f"{name}: {e}")

    threads = [threading.Thread(target=copy, args=(name,)) for name in NAMES]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise Failure("; ".join(failures))

    for name in NAMES:
        laptop.wait_stdout(rf"^path {name}: ", scaled(10), what=f"path line of {name}")

    r = subprocess.run([w.peer_bin, "status", "--state-dir", client_dir, "--json"],
                       capture_output=True, text=True, timeout=scaled(20))
    doc = json.loads(r.stdout)
    if doc.get("remote_peers") != list(NAMES) or doc.get("remote_peer") != "home":
        raise Failure(f"status remote_peer(s): {doc.get('remote_peer')!r}, "
                      f"{doc.get('remote_peers')!r}")
    up = sorted(t["name"] for t in doc["tunnels"] if t["state"] == "up")
    if up != sorted(NAMES):
        raise Failure(f"status: tunnels up {up}, expected one to each of {NAMES}")
    peers = [(l["peer"], l["target"]) for l in doc["listeners"]]
    if peers != [(name, f"127.0.0.1:{sshds[name].port}") for name in NAMES]:
        raise Failure(f"status listeners: {peers}")
    text = subprocess.run([w.peer_bin, "status", "--state-dir", client_dir],
                          capture_output=True, text=True, timeout=scaled(20)).stdout
    for line in ("forwarding to home, office",
                 f"listening on 127.0.0.1:{ports['home']} -> home",
                 f"listening on 127.0.0.1:{ports['office']} -> office",
                 "tunnel home (outgoing", "tunnel office (outgoing"):
        if line not in text:
            raise Failure(f"status text lacks {line!r}:\n{text}")

    with open(os.path.join(client_dir, "known_peers")) as f:
        known = f.read()
    for name in NAMES:
        if not any(line.split()[:1] == [name] for line in known.splitlines()):
            raise Failure(f"known_peers does not pin {name}:\n{known}")
    laptop.stop()

    # The same from peer.conf: one [forward] group per peer.
    conf = os.path.join(w.tmpdir, "laptop.conf")
    with open(conf, "w") as f:
        f.write(f"[peer]\nrelay = {relay_addr}\nstate-dir = {client_dir}\n")
        for name in NAMES:
            f.write(f"[forward {name}-ssh]\npeer = {name}\nlisten = 0\n"
                    f"target = 127.0.0.1:{sshds[name].port}\n")
    from_file = w.group.start("peer --config (home, office)",
                              [w.peer_bin, "--config", conf, *verbose_args()], env=peer_env())
    index = 0
    for name in NAMES:
        m, index = from_file.wait_stdout_at(FORWARD_RE, scaled(30), start=index,
                                            what="-L ready line from peer.conf")
        if m.group(2) != name:
            raise Failure(f"peer.conf ready line {m.group(0)!r}: expected -> {name}")
        r = ssh(sshds[name], int(m.group(1).rpartition(":")[2]), "echo", f"conf-{name}")
        if r.returncode != 0 or r.stdout.strip() != f"conf-{name}".encode():
            raise Failure(f"ssh to {name} through the forward from peer.conf: exit "
                          f"{r.returncode}, {r.stderr.decode(errors='replace')}\n"
                          f"{from_file.describe()}")
        index += 1
    print(f"one laptop process, two serving peers: ssh to each, {FILE_SIZE} bytes copied "
          f"to both at once, status and known_peers list both; the same from peer.conf")


def main():
    run_with_ssh(test)


if __name__ == "__main__":
    main()

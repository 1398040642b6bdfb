#!/usr/bin/env python3
"""Subcommands are found wherever they stand among the flags, and each has its own --help.

relay + a serving peer. Checked: `peer --state-dir DIR status` and `peer --config F
status` (state-dir from F) answer from the running peer (exit 0, its registered name);
`peer --state-dir DIR invite` prints a code; `peer --relay R netcheck` with a default
peer.conf that has [forward] groups runs netcheck (its "nat mapping" line, exit 0) and
never forwards to a peer called "netcheck"; `peer --help` names the subcommands;
`peer status --help`, `peer pair --help`, `peer nc --help`, `peer invite --help`,
`peer netcheck --help` and `peer --state-dir DIR status --help` each print their own
usage line (not the main one) and exit 0; `peer --name status ...` still takes
"status" as the value of --name, not as a subcommand.
"""
import os
import subprocess

from harness import Failure, run
from procs import peer_env, scaled


def peer(w, args, env=None, timeout=30):
    return subprocess.run([w.peer_bin, *args], capture_output=True, text=True,
                          timeout=scaled(timeout), env=peer_env(env), stdin=subprocess.DEVNULL)


def expect(r, code, what, out=None):
    if r.returncode != code or (out is not None and out not in r.stdout):
        raise Failure(f"{what}: exit {r.returncode} (want {code}), want {out!r} in stdout\n"
                      f"stdout: {r.stdout}\nstderr: {r.stderr}")


def usage_line(w, args):
    r = peer(w, args)
    expect(r, 0, " ".join(args))
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].startswith("Usage:"):
        raise Failure(f"{args}: no usage line:\n{r.stdout}")
    return lines[1].strip()


def test(w):
    _, relay_addr = w.natfwd.relay()
    w.natfwd.serve(relay_addr, "home", ["127.0.0.1:22"])
    serve_dir = w.natfwd._serve_dirs["home"]

    r = peer(w, ["--state-dir", serve_dir, "status"])
    expect(r, 0, "peer --state-dir DIR status", "home")
    conf = os.path.join(w.tmpdir, "serve.conf")
    with open(conf, "w") as f:
        f.write(f"[peer]\nstate-dir = {serve_dir}\n")
    expect(peer(w, ["--config", conf, "status", "--json"]), 0, "peer --config F status", '"home"')
    r = peer(w, ["--state-dir", serve_dir, "invite"])
    expect(r, 0, "peer --state-dir DIR invite", "home@")

    # A laptop's default peer.conf with forwards: netcheck must still be netcheck.
    xdg = os.path.join(w.tmpdir, "xdg")
    os.makedirs(os.path.join(xdg, "natfwd"))
    with open(os.path.join(xdg, "natfwd", "peer.conf"), "w") as f:
        f.write(f"[peer]\nstate-dir = {w.natfwd.client_state_dir()}\n"
                "[forward ssh]\npeer = home\nlisten = 0\ntarget = 127.0.0.1:22\n")
    r = peer(w, ["--relay", relay_addr, "netcheck", "--timeout", "2"],
             env={"XDG_CONFIG_HOME": xdg})
    expect(r, 0, "peer --relay R netcheck with forwards in peer.conf", "nat mapping:")
    if "listening on" in r.stdout:
        raise Failure(f"netcheck forwarded instead:\n{r.stdout}")

    main_usage = usage_line(w, ["--help"])
    r = peer(w, ["--help"])
    for word in ("peer status", "peer netcheck", "peer authorized"):
        if word not in r.stdout:
            raise Failure(f"peer --help does not name {word!r}:\n{r.stdout}")
    for args, own in ((["status", "--help"], "show what the running peer is doing"),
                      (["--state-dir", serve_dir, "status", "--help"],
                       "show what the running peer is doing"),
                      (["pair", "--help"], "CODE - redeem"),
                      (["--relay", relay_addr, "pair", "--help"], "CODE - redeem"),
                      (["nc", "--help"], "NAME HOST:PORT - carry stdin/stdout"),
                      (["invite", "--help"], "one-time code"),
                      (["netcheck", "--help"], "what the Internet sees")):
        line = usage_line(w, args)
        if own not in line or line == main_usage:
            raise Failure(f"peer {' '.join(args)}: usage {line!r}, want its own ({own!r})")
    r = peer(w, ["nc", "--help"])
    if "--serve" in r.stdout or "--name" in r.stdout:
        raise Failure(f"peer nc --help lists serving flags:\n{r.stdout}")

    # A flag's value is no subcommand: --name status is a name (then refused for
    # having nothing to serve, as any name would be).
    r = peer(w, ["--relay", relay_addr, "--name", "status"])
    if r.returncode != 2 or "--name given but nothing to --serve" not in r.stderr:
        raise Failure(f"--name status: exit {r.returncode}: {r.stderr}")


if __name__ == "__main__":
    run(test)

#!/usr/bin/env python3
"""`peer nc` beside a running peer: the daemon's open tunnel carries the connection.

A laptop daemon (`peer -L ... home`) keeps a tunnel to home. `peer nc home TARGET` with
the same state dir then asks the daemon over its control socket to carry stdin/stdout
(as `tailscale nc` asks tailscaled): home sees no second tunnel, nc prints nothing on
stderr, and stdin's EOF half-closes as usual. An unserved target is refused through the
daemon with nc's one line; a peer the daemon keeps no tunnel to makes nc set up its
own; with the daemon gone nc sets up its own tunnel to home and still works. Timings
are printed, not asserted.
"""
import subprocess
import time

from harness import Failure, echo, run, scaled


def nc(w, relay_addr, state_dir, name, target, data):
    argv = [w.peer_bin, "--relay", relay_addr, "--state-dir", state_dir, "nc", name, target]
    started = time.monotonic()
    try:
        r = subprocess.run(argv, input=data, capture_output=True, timeout=scaled(60))
    except subprocess.TimeoutExpired:
        raise Failure(f"peer nc did not finish: {argv}") from None
    return r, time.monotonic() - started


def test(w):
    target = w.target(echo)
    _, relay_addr = w.natfwd.relay()
    home = w.natfwd.serve(relay_addr, "home", [target.addr])
    daemon, (laddr,) = w.natfwd.forward(relay_addr, "home", [f"0:{target.addr}"])
    client_dir = w.natfwd.client_state_dir()
    home.wait_stderr(r"wants a tunnel", 30, what="the daemon's tunnel")
    tunnels_before = sum("wants a tunnel" in line for line in home.stderr_lines)

    data = b"through the daemon's tunnel\n" * 1000
    r, carried = nc(w, relay_addr, client_dir, "home", target.addr, data)
    if r.returncode != 0 or r.stdout != data or r.stderr:
        raise Failure(f"nc through the daemon: exit {r.returncode}, {len(r.stdout)} of "
                      f"{len(data)} bytes back, stderr {r.stderr!r}")
    tunnels_after = sum("wants a tunnel" in line for line in home.stderr_lines)
    if tunnels_after != tunnels_before:
        raise Failure("nc set up a tunnel of its own although the daemon had one")

    unserved = "127.0.0.1:9"
    r, _ = nc(w, relay_addr, client_dir, "home", unserved, b"")
    err = r.stderr.decode(errors="replace").strip().splitlines()
    if r.returncode != 1 or r.stdout or len(err) != 1 or "not served there" not in err[0]:
        raise Failure(f"nc to an unserved target through the daemon: exit {r.returncode}, "
                      f"stderr {err}; want exit 1 and one 'not served there' line")

    # A peer the daemon keeps no tunnel to: nc tries itself (and says what it finds).
    r, _ = nc(w, relay_addr, client_dir, "office", target.addr, b"")
    err = r.stderr.decode(errors="replace")
    if r.returncode != 1 or "office" not in err:
        raise Failure(f"nc to a peer the daemon does not know: exit {r.returncode}, {err!r}")

    daemon.check_running("after the nc runs")
    daemon.stop()
    r, alone = nc(w, relay_addr, client_dir, "home", target.addr, data)
    if r.returncode != 0 or r.stdout != data:
        raise Failure(f"nc without the daemon: exit {r.returncode}, stderr {r.stderr!r}")
    print(f"nc carried by the daemon in {carried * 1000:.0f} ms; with its own tunnel "
          f"{alone * 1000:.0f} ms", flush=True)


if __name__ == "__main__":
    run(test)

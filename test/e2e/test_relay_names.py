#!/usr/bin/env python3
"""`relay names`: a reinstalled home with a new key is no dead end.

A serving peer registers `home`; it goes away and comes back with a new key (a
reinstall): the relay refuses the name and the peer's one line says how to free it.
`relay names` beside the running relay lists `home` with the old key id;
`relay names release home` frees it at once, and the new home registers without a
relay restart. `relay names release` of an unknown name exits 1 with one line.
"""
import subprocess

from harness import Failure, run, scaled


def relay_cmd(w, state_dir, *words):
    return subprocess.run([w.relay_bin, "names", *words, "--state-dir", state_dir],
                          capture_output=True, text=True, timeout=scaled(30))


def test(w):
    relay_dir = w.natfwd.state_dir("relay-names")
    _, relay = w.natfwd.relay(state_dir=relay_dir)
    first = w.natfwd.serve(relay, "home", ["127.0.0.1:9"])
    old_id = w.natfwd.key_id(w.natfwd._serve_dirs["home"])
    first.stop()

    listed = relay_cmd(w, relay_dir)
    if listed.returncode != 0 or not listed.stdout.startswith(f"home {old_id} last-used "):
        raise Failure(f"relay names: exit {listed.returncode}, stdout {listed.stdout!r}, "
                      f"stderr {listed.stderr!r}; want 'home {old_id} last-used DATE'")

    # The reinstall: a fresh state dir, so a new key, under the same name.
    w.natfwd._serve_dirs["home"] = w.natfwd.state_dir("home-reinstalled")
    refused = subprocess.run(
        [w.peer_bin, "--relay", relay, "--name", "home", "--state-dir",
         w.natfwd._serve_dirs["home"], "--serve", "127.0.0.1:9"],
        capture_output=True, text=True, timeout=scaled(30))
    # Exit 3: the unit's RestartPreventExitStatus stops systemd from retrying forever.
    if refused.returncode != 3 or "relay names release home" not in refused.stderr:
        raise Failure(f"new key for a bound name: exit {refused.returncode}, stderr "
                      f"{refused.stderr!r}; want exit 3 and a refusal that says how to free "
                      "the name")

    released = relay_cmd(w, relay_dir, "release", "home")
    if released.returncode != 0:
        raise Failure(f"relay names release home: exit {released.returncode}, "
                      f"{released.stderr!r}")
    w.natfwd.serve(relay, "home", ["127.0.0.1:9"])  # same relay process, new key

    unknown = relay_cmd(w, relay_dir, "release", "nosuch")
    lines = unknown.stderr.strip().splitlines()
    if unknown.returncode != 1 or len(lines) != 1 or "nosuch" not in lines[0]:
        raise Failure(f"release of an unknown name: exit {unknown.returncode}, "
                      f"stderr {unknown.stderr!r}")
    print(f"relay names: listed home {old_id[:12]}..., refused the new key with the fix in "
          "its line, released it, the new key registered without a relay restart", flush=True)


if __name__ == "__main__":
    run(test)

#!/usr/bin/env python3
"""`relay names` and `peer handover`: a reinstalled home with a new key is no dead end.

A serving peer registers `home`; it goes away and comes back with a new key (a
reinstall): the relay refuses the name, the peer exits 3 (so systemd stops restarting
it) and its one line names both ways out. `relay names` beside the running relay lists
`home` with the old key id. The old key's owner runs `peer handover home NEWKEYID`
with the old state dir: `relay names` shows the heir, and the new home registers. A
stranger's handover of `home` is refused (exit 3, one line). Once more reinstalled,
the relay's operator frees the name with `relay names release home`, and the newest
key registers without a relay restart. `relay names release` of an unknown name exits
1 with one line.
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
    first_dir = w.natfwd._serve_dirs["home"]
    old_id = w.natfwd.key_id(first_dir)
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

    # The old key hands the name to the new one.
    old_dir = first_dir
    new_id = w.natfwd.key_id(w.natfwd._serve_dirs["home"])
    if f"peer handover home {new_id}" not in refused.stderr:
        raise Failure(f"the refusal does not name `peer handover home {new_id}`: "
                      f"{refused.stderr!r}")
    handed = subprocess.run([w.peer_bin, "--relay", relay, "--state-dir", old_dir,
                             "handover", "home", new_id],
                            capture_output=True, text=True, timeout=scaled(30))
    want = f"handed 'home' over to key {new_id} at relay {relay}"
    if handed.returncode != 0 or want not in handed.stdout:
        raise Failure(f"peer handover: exit {handed.returncode}, stdout {handed.stdout!r}, "
                      f"stderr {handed.stderr!r}; want exit 0 and {want!r}")
    listed = relay_cmd(w, relay_dir)
    if f"handed-over-to {new_id}" not in listed.stdout:
        raise Failure(f"relay names after the handover: {listed.stdout!r}")
    heir = w.natfwd.serve(relay, "home", ["127.0.0.1:9"])  # the new key, same relay
    heir.stop()

    # A stranger cannot hand over what it does not hold.
    stranger = w.natfwd.state_dir("stranger")
    taken = subprocess.run([w.peer_bin, "--relay", relay, "--state-dir", stranger,
                            "handover", "home", w.natfwd.key_id(stranger)],
                           capture_output=True, text=True, timeout=scaled(30))
    lines = taken.stderr.strip().splitlines()
    if taken.returncode != 3 or "only its holder can hand it over" not in taken.stderr:
        raise Failure(f"a stranger's handover: exit {taken.returncode}, stderr {lines}")

    # Reinstalled again, old key lost: the relay's operator frees the name.
    w.natfwd._serve_dirs["home"] = w.natfwd.state_dir("home-reinstalled-again")
    released = relay_cmd(w, relay_dir, "release", "home")
    if released.returncode != 0:
        raise Failure(f"relay names release home: exit {released.returncode}, "
                      f"{released.stderr!r}")
    w.natfwd.serve(relay, "home", ["127.0.0.1:9"])  # same relay process, newest key

    unknown = relay_cmd(w, relay_dir, "release", "nosuch")
    lines = unknown.stderr.strip().splitlines()
    if unknown.returncode != 1 or len(lines) != 1 or "nosuch" not in lines[0]:
        raise Failure(f"release of an unknown name: exit {unknown.returncode}, "
                      f"stderr {unknown.stderr!r}")
    print(f"relay names: listed home {old_id[:12]}..., refused the new key (exit 3) with the "
          "fix in its line; the old key handed it over and the new key registered; a "
          "stranger's handover refused; released for the newest key without a relay restart",
          flush=True)


if __name__ == "__main__":
    run(test)

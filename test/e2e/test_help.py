#!/usr/bin/env python3
"""--help on every command lists every flag with its default, and every flag of relay
and peer is a key of its config file, documented in the shipped example.

Commands: relay, peer, peer id, peer invite, peer pair, peer nc, peer status, peer
authorized, peer netcheck. Each option line of --help
(but --help and --version themselves, which are actions) must say "default". Each
long flag of relay (peer) must appear as a key, set or commented out, in
dist/relay.conf.example (dist/peer.conf.example; -L as [forward NAME] groups in
dist/peer-laptop.conf.example), and a file setting it must not be refused as an
unknown key (the file ends in a syntax error, so that nothing ever starts).
"""
import os
import re
import subprocess

from harness import Failure, run, scaled

SOURCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OPTION_RE = re.compile(r"^\s+(?:-(\w), )?--([\w-]+)(?:=\S+)?\s+(.*)$")
ACTIONS = {"help", "version"}


def help_options(argv):
    r = subprocess.run(argv + ["--help"], capture_output=True, text=True, timeout=scaled(15))
    if r.returncode != 0:
        raise Failure(f"{argv} --help: exit {r.returncode}: {r.stderr.strip()}")
    options = {}
    for line in r.stdout.splitlines():
        m = OPTION_RE.match(line)
        if m:
            options[m.group(2)] = m.group(3)
    if len(options) < 2:
        raise Failure(f"{argv} --help lists no options:\n{r.stdout}")
    return options


def example_keys(name):
    with open(os.path.join(SOURCE_DIR, "dist", name)) as f:
        return {m.group(1) for m in re.finditer(r"^#?([\w-]+) = ", f.read(), re.M)}


def test(w):
    problems = []
    commands = {
        "relay": [w.relay_bin],
        "peer": [w.peer_bin],
        "peer id": [w.peer_bin, "id"],
        "peer invite": [w.peer_bin, "invite"],
        "peer pair": [w.peer_bin, "pair"],
        "peer nc": [w.peer_bin, "nc"],
        "peer status": [w.peer_bin, "status"],
        "peer authorized": [w.peer_bin, "authorized"],
        "peer netcheck": [w.peer_bin, "netcheck"],
    }
    options_of = {}
    for label, argv in commands.items():
        options_of[label] = help_options(argv)
        for flag, text in options_of[label].items():
            if flag not in ACTIONS and "default" not in text:
                problems.append(f"{label} --help: --{flag} shows no default: {text!r}")
    for label, example, extra in (("relay", "relay.conf.example", set()),
                                  ("peer", "peer.conf.example", {"local"})):
        keys = example_keys(example)
        for flag in options_of[label]:
            if flag not in ACTIONS | {"config"} | extra and flag not in keys:
                problems.append(f"--{flag} of {label} has no key in dist/{example}")
        group = "[relay]" if label == "relay" else "[peer]"
        for flag in options_of[label]:
            if flag in ACTIONS | {"config"} | extra:
                continue
            path = os.path.join(w.tmpdir, f"{label}-{flag}.conf")
            with open(path, "w") as f:
                f.write(f"{group}\n{flag} = x\n!!! end\n")
            r = subprocess.run(commands[label] + ["--config", path], capture_output=True,
                               text=True, timeout=scaled(15), stdin=subprocess.DEVNULL)
            # A known key: the syntax error of line 3 is what stops it.
            if r.returncode != 2 or f"{path}:3:" not in r.stderr:
                problems.append(f"{label}.conf refuses key {flag!r}: exit {r.returncode}, "
                                f"{r.stderr.strip()!r}")
    laptop = example_keys("peer-laptop.conf.example")
    if not {"peer", "listen", "target"} <= laptop:
        problems.append("dist/peer-laptop.conf.example does not show peer/listen/target")
    if problems:
        raise Failure("\n".join(problems))
    print(f"checked {sum(len(o) for o in options_of.values())} options of {len(commands)} "
          "commands")


if __name__ == "__main__":
    run(test)

#!/usr/bin/env python3
"""peer netcheck on loopback against a real relay with --alternate-address 127.0.0.2.

One-sided: the relay answers RFC 5780 on both addresses, so netcheck sees no NAT and
endpoint-independent filtering; --json is one object. Two-sided: a serving peer
measures itself when it registers, and answers `peer netcheck NAME` (through the
relay, signed by the caller's key) only for keys it authorises: the authorised caller
gets the path verdict (direct udp here), a stranger gets "does not authorise" and
exit 3, an unregistered name exit 3 too. Without --alternate-address the relay gives
the mapped address but no behaviour. The relay may come from peer.conf (--config; its
other keys ignored) or a comma list in NATFWD_RELAY, as for `peer`: the first is used,
and --relay on the command line wins over the file. Bad usage exits 2 with one line.
"""
import json
import os
import subprocess
import tempfile

from harness import Failure, run
from procs import peer_env, scaled


def netcheck(w, args, state_dir=None, env=None) -> subprocess.CompletedProcess:
    argv = [w.peer_bin, "netcheck", "--timeout", "5", *args]
    if state_dir:
        argv += ["--state-dir", state_dir]
    return subprocess.run(argv, capture_output=True, text=True, timeout=scaled(60),
                          env=peer_env(env))


def check_relay_sources(w, relay_addr: str) -> None:
    """peer.conf and NATFWD_RELAY lists name the relay; the first one is used."""
    dead = "127.0.0.1:9"
    with tempfile.TemporaryDirectory() as d:
        conf = os.path.join(d, "peer.conf")
        with open(conf, "w") as f:
            # force-relay and name mean nothing to netcheck: taken as read, not refused.
            f.write(f"[peer]\nrelay = {relay_addr};{dead}\nforce-relay = true\nname = home\n")
        for label, args, env, want in (
                ("peer.conf", ["--config", conf], None, relay_addr),
                ("NATFWD_RELAY list", [], {"NATFWD_RELAY": f"{relay_addr},{dead}"}, relay_addr),
                ("--relay over peer.conf", ["--config", conf, "--relay", dead, "--timeout", "1"],
                 None, dead)):
            r = netcheck(w, [*args, "--json"], env=env)
            try:
                j = json.loads(r.stdout)
            except ValueError:
                raise Failure(f"{label}: not JSON: exit {r.returncode} {r.stdout!r} "
                              f"{r.stderr!r}") from None
            if j.get("relay") != want:
                raise Failure(f"{label}: looked from {j.get('relay')}, want {want}")
            expect(r, 0 if want == relay_addr else 1, label)


def expect(r: subprocess.CompletedProcess, code: int, what: str) -> None:
    if r.returncode != code:
        raise Failure(f"{what}: exit {r.returncode}, want {code}\n{r.stdout}{r.stderr}")


def test(w):
    relay, relay_addr = w.natfwd.relay(extra=["--alternate-address", "127.0.0.2"])
    if "rfc5780 127.0.0.2:" not in " ".join(relay.stdout_lines):
        raise Failure(f"ready line: {relay.stdout_lines}")

    check_relay_sources(w, relay_addr)
    r = netcheck(w, ["--relay", relay_addr, "--json"])
    expect(r, 0, "one-sided --json")
    j = json.loads(r.stdout)
    want = {"udp": True, "rfc5780": True, "mapping": "no NAT",
            "filtering": "endpoint-independent", "tcp": True, "upnp": False, "natpmp": False}
    got = {k: j[k] for k in want}
    if got != want or j["mapped_address"] != j["local_address"]:
        raise Failure(f"one-sided: {j}")
    r = netcheck(w, ["--relay", relay_addr])
    expect(r, 0, "one-sided text")
    for line in ("nat mapping: no NAT", "nat filtering: endpoint-independent",
                 "port mapping: not probed (the relay is on loopback)"):
        if line not in r.stdout.splitlines():
            raise Failure(f"one-sided text lacks {line!r}:\n{r.stdout}")
    print(r.stdout)

    # Two-sided: the serving peer authorises the shared client identity.
    serving = w.natfwd.serve(relay_addr, "home", ["127.0.0.1:9"])
    serving.wait_stderr(r"netcheck: udp yes, mapping no NAT, filtering endpoint-independent",
                        30, what="the serving peer's own netcheck")
    client = w.natfwd.client_state_dir()
    r = netcheck(w, ["--relay", relay_addr, "home"], client)
    expect(r, 0, "two-sided")
    for line in ("peer home: udp yes, mapping no NAT, filtering endpoint-independent, tcp yes, "
                 "proxy no", "path home: direct udp"):
        if line not in r.stdout.splitlines():
            raise Failure(f"two-sided text lacks {line!r}:\n{r.stdout}")
    print(r.stdout)
    r = netcheck(w, ["--relay", relay_addr, "--json", "home"], client)
    expect(r, 0, "two-sided --json")
    peer = json.loads(r.stdout)["peer"]
    if peer["path"] != "direct udp" or peer["make_direct"] or peer["facts"]["mapping"] != "no NAT":
        raise Failure(f"two-sided --json: {peer}")

    stranger = w.natfwd.state_dir("stranger")
    r = netcheck(w, ["--relay", relay_addr, "home"], stranger)
    expect(r, 3, "a stranger")
    if "peer home: home does not authorise this peer's key" not in r.stdout or "path home" in r.stdout:
        raise Failure(f"a stranger got: {r.stdout}")
    r = netcheck(w, ["--relay", relay_addr, "nobody"], client)
    expect(r, 3, "an unregistered name")
    if "nobody is not registered at the relay" not in r.stdout:
        raise Failure(f"unregistered: {r.stdout}")
    serving.check_running("after the queries")

    # A relay without a second address: mapped address yes, behaviour unknown.
    _, plain_addr = w.natfwd.relay()
    r = netcheck(w, ["--relay", plain_addr, "--json"])
    expect(r, 0, "plain relay")
    j = json.loads(r.stdout)
    if not j["udp"] or j["rfc5780"] or j["mapping"] != "no NAT" or j["filtering"] != "unknown":
        raise Failure(f"plain relay: {j}")

    # Nothing listens: exit 1.
    r = netcheck(w, ["--relay", "127.0.0.1:9", "--timeout", "2"])
    expect(r, 1, "no relay")

    for args, text in ((["--relay", relay_addr, "Bad_Name!"], "not a valid peer name"),
                       (["--relay", relay_addr, "a", "b"], "unexpected argument"),
                       (["--relay", relay_addr, "--timeout", "0"], "--timeout"),
                       (["--relay", relay_addr, "--relay-key", "x"], "--relay-key"),
                       (["--bogus"], "Unknown option")):
        r = netcheck(w, args)
        lines = r.stderr.strip().splitlines()
        if r.returncode != 2 or len(lines) != 1 or text not in lines[0]:
            raise Failure(f"{args}: exit {r.returncode}, stderr {r.stderr!r}")
    r = subprocess.run([w.peer_bin, "netcheck"], capture_output=True, text=True,
                       env=peer_env())
    if r.returncode != 2 or "no relay configured" not in r.stderr:
        raise Failure(f"no relay: {r.returncode} {r.stderr!r}")


if __name__ == "__main__":
    run(test)

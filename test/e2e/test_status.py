#!/usr/bin/env python3
"""`peer status` and `peer status --json` against a live tunnel, on both sides, plus
the connection phases a person sees on stderr.

relay + `peer --serve` + `peer -L` to an echo target. Checked: the progress lines
in order (relay reached, peer found, gathering, checks, connected direct), status of
both peers as JSON (path direct udp, family ipv4, with addresses, the role, the key ids of each
other), one open stream while a connection is held open and bytes counted after
2 MB each way, then zero open streams; the text form; `peer status` with no peer
running (one line, exit 1); a second peer with the same state dir that must not take
the first one's control socket; a stale socket left by a killed peer being replaced;
a --force-relay tunnel shown as relayed with its TURN server; and an unknown peer
name and ICE without TURN (--force-relay, relay --no-turn) each giving the one
failure sentence.
"""
import json
import os
import re
import signal
import stat
import subprocess

from harness import (Failure, both_ways, connect, echo, run, scaled, wait_until)

SIZE = 2 * 1024 * 1024


def status(w, state_dir, *extra):
    r = subprocess.run([w.peer_bin, "status", "--state-dir", state_dir, *extra],
                       capture_output=True, text=True, timeout=scaled(20))
    return r


def status_json(w, state_dir):
    r = status(w, state_dir, "--json")
    if r.returncode != 0:
        raise Failure(f"peer status --json exit {r.returncode}: {r.stderr}")
    try:
        return json.loads(r.stdout)
    except ValueError as e:
        raise Failure(f"peer status --json printed no JSON ({e}): {r.stdout!r}") from None


def only_tunnel(doc, side):
    tunnels = [t for t in doc["tunnels"] if t["state"] == "up"]
    if len(tunnels) != 1:
        raise Failure(f"{side}: expected one tunnel up, status shows {doc['tunnels']}")
    return tunnels[0]


def check_progress(fwd):
    """Each phase exactly once, in this order."""
    phases = [r"home: relay reached", r"home: peer found \(key \w+\)", r"home: gathering candidates",
              r"home: connectivity checks", r"home: connected direct udp in \d+ ms"]
    fwd.wait_stderr(phases[-1], 30, what="the 'connected' progress line")
    where = []
    for phase in phases:
        hits = [i for i, line in enumerate(fwd.stderr_lines) if re.search(phase, line)]
        if len(hits) != 1:
            raise Failure(f"progress line /{phase}/ printed {len(hits)} times:\n{fwd.describe()}")
        where.append(hits[0])
    if where != sorted(where):
        raise Failure(f"progress lines out of order:\n{fwd.describe()}")


def test(w):
    target = w.target(echo)
    relay_addr, serving, fwd, (laddr,) = w.tunnel([f"127.0.0.1:{target.port}"],
                                                  [f"0:127.0.0.1:{target.port}"])
    client_dir = w.natfwd.client_state_dir()
    serve_dir = w.natfwd._serve_dirs["home"]
    check_progress(fwd)

    mode = stat.S_IMODE(os.stat(os.path.join(client_dir, "control")).st_mode)
    if mode != 0o600:
        raise Failure(f"control socket mode {oct(mode)}, want 0o600")

    # One connection held open: one stream on each side.
    held = connect(laddr)
    held.sendall(b"x")
    if held.recv(1) != b"x":
        raise Failure("echo through the tunnel did not answer")
    client = status_json(w, client_dir)
    server = status_json(w, serve_dir)
    if client["version"] != 1 or server["version"] != 1:
        raise Failure(f"status versions {client['version']}, {server['version']}")
    ct, st = only_tunnel(client, "client"), only_tunnel(server, "server")
    if ct["open_streams"] != 1 or st["open_streams"] != 1:
        raise Failure(f"one connection open, but open_streams {ct['open_streams']} (client), "
                      f"{st['open_streams']} (server)")
    if ct["role"] != "connecting" or st["role"] != "serving" or ct["name"] != "home":
        raise Failure(f"roles/names: client {ct['role']} {ct['name']}, server {st['role']}")
    if ct["key_id"] != server["key_id"] or st["key_id"] != client["key_id"]:
        raise Failure(f"key ids do not match: client sees {ct['key_id']}, server is "
                      f"{server['key_id']}; server sees {st['key_id']}, client is {client['key_id']}")
    for side, t in (("client", ct), ("server", st)):
        path = t["path"]
        if not path or path["kind"] != "direct" or path["transport"] != "udp" or \
                path.get("family") != "ipv4" or \
                not path["local_address"].startswith("127.0.0.1:") or \
                not path["remote_address"].startswith("127.0.0.1:"):
            raise Failure(f"{side}: path {path}, want direct udp on loopback")
        if t["rtt_ms"] <= 0:
            raise Failure(f"{side}: rtt_ms {t['rtt_ms']}")
    if ct["path"]["local_address"] != st["path"]["remote_address"]:
        raise Failure(f"the two sides disagree on the path: {ct['path']} vs {st['path']}")
    if not client["relay"]["up"] or server["relay"]["registered_name"] != "home":
        raise Failure(f"relay state: client {client['relay']}, server {server['relay']}")
    if server["serves"] != [f"127.0.0.1:{target.port}"]:
        raise Failure(f"server serves {server['serves']}")
    if [l["address"] for l in client["listeners"]] != [laddr]:
        raise Failure(f"client listeners {client['listeners']}, want {laddr}")
    held.close()

    # Bytes after a transfer of SIZE each way.
    with connect(laddr) as s:
        result = both_ways(s, "status", SIZE)
    if result["count"] != SIZE or result["received"] != result["sent"]:
        raise Failure(f"echo transfer: {result}")

    def settled():
        c = only_tunnel(status_json(w, client_dir), "client")
        s = only_tunnel(status_json(w, serve_dir), "server")
        return c["open_streams"] == 0 and s["open_streams"] == 0
    wait_until(settled, 30, "both sides to show 0 open streams after the connections closed")
    ct = only_tunnel(status_json(w, client_dir), "client")
    st = only_tunnel(status_json(w, serve_dir), "server")
    for side, t, sent, received in (("client", ct, "bytes_sent", "bytes_received"),
                                    ("server", st, "bytes_received", "bytes_sent")):
        # The client sent SIZE + 1 payload bytes plus stream headers; the echo sent them back.
        if not (SIZE + 1 <= t[sent] <= SIZE + 4096) or not (SIZE + 1 <= t[received] <= SIZE + 4096):
            raise Failure(f"{side}: {sent} {t[sent]}, {received} {t[received]}, want about {SIZE}")
        if t["datagram_bytes_sent"] < t["bytes_sent"]:
            raise Failure(f"{side}: fewer datagram bytes than stream bytes: {t}")

    text = status(w, client_dir)
    if text.returncode != 0 or "tunnel home (outgoing" not in text.stdout or \
            "path direct udp host 127.0.0.1:" not in text.stdout or "0 open streams" not in text.stdout:
        raise Failure(f"peer status (text): exit {text.returncode}:\n{text.stdout}{text.stderr}")

    # No peer running with that state dir: one line, exit 1.
    empty = w.natfwd.state_dir("empty")
    r = status(w, empty)
    if r.returncode != 1 or r.stdout or len(r.stderr.strip().splitlines()) != 1 or \
            "no running peer" not in r.stderr:
        raise Failure(f"status without a peer: exit {r.returncode}, stdout {r.stdout!r}, "
                      f"stderr {r.stderr!r}")

    # A second peer on the same state dir carries its connections through the running
    # one (test_second_forwarder.py) and must not take the live socket.
    second, _ = w.natfwd.forward(relay_addr, "home", [f"0:127.0.0.1:{target.port}"])
    second.wait_stderr(r"using the running peer's tunnel to home", 20,
                       what="the second peer using the running one")
    again = status_json(w, client_dir)
    if again["key_id"] != client["key_id"] or [l["address"] for l in again["listeners"]] != [laddr]:
        raise Failure(f"after a second peer started, status answers from {again['listeners']}")
    second.stop()

    # A stale socket from a killed peer is replaced.
    fwd.send_signal(signal.SIGKILL)
    fwd.wait_exit(10)
    if not os.path.exists(os.path.join(client_dir, "control")):
        raise Failure("the killed peer's socket is gone: the stale case is not tested")
    third, (laddr3,) = w.natfwd.forward(relay_addr, "home", [f"0:127.0.0.1:{target.port}"])
    doc = status_json(w, client_dir)
    if [l["address"] for l in doc["listeners"]] != [laddr3]:
        raise Failure(f"after a stale socket, status shows {doc['listeners']}, want {laddr3}")

    # A relayed tunnel shows it, with the TURN server, on the side that is relayed.
    third.stop()
    relayed, _ = w.natfwd.forward(relay_addr, "home", [f"0:127.0.0.1:{target.port}"],
                                  extra=["--force-relay"])
    relayed.wait_stderr(r"home: connected relayed \w+ via turn-\w+ \S+ in \d+ ms", 30,
                        what="the relayed 'connected' line")
    t = only_tunnel(status_json(w, client_dir), "client (relayed)")
    if t["path"]["kind"] != "relayed" or t["path"]["local_type"] != "relay" or \
            not t["path"].get("turn_server", "").startswith("turn-"):
        raise Failure(f"--force-relay: status path {t['path']}, want relayed with a TURN server")
    relayed.stop()

    # An unknown peer: one sentence naming the phase and the cause.
    lost, _ = w.natfwd.forward(relay_addr, "nosuch", [f"0:127.0.0.1:{target.port}"])
    lost.wait_stderr(r"connecting to nosuch failed while looking for the peer at the relay: "
                     r"peer nosuch is not registered at the relay", 30,
                     what="the failure sentence for an unknown peer")
    # ICE that cannot work: a relay without TURN and --force-relay on the connecting side.
    _, bare_relay = w.natfwd.relay(extra=["--no-turn"])
    serving.stop()  # one serving peer per state dir: home moves to the bare relay
    w.natfwd.serve(bare_relay, "home", [f"127.0.0.1:{target.port}"])
    stuck, _ = w.natfwd.forward(bare_relay, "home", [f"0:127.0.0.1:{target.port}"],
                                extra=["--force-relay"])
    stuck.wait_stderr(r"connecting to home failed during the connectivity checks: ICE checks "
                      r"failed: --force-relay allows only TURN, and this peer got no TURN "
                      r"allocation", 90, what="the failure sentence for ICE without TURN")
    print("peer status: both sides, json and text, streams and bytes, no peer, second peer, "
          "stale socket, relayed path, progress lines, unknown peer, ICE without TURN: ok")


if __name__ == "__main__":
    run(test)

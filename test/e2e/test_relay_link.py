#!/usr/bin/env python3
"""The relay link: TLS by default, pinned; and nothing readable on the wire.

1. By default a peer talks TLS to the relay and records its key in known_relays;
   --relay-key with another key is refused; with the recorded one it works;
   --insecure-relay works over plain TCP and says so. `relay id` on the relay's
   state dir prints exactly the key the peer recorded, the value --relay-key takes.
2. A capture (tcpdump on loopback) of the relay link, TURN and the tunnel during a
   transfer of random data carrying a marker, relayed through TURN so that the relay
   carries the bytes too, holds neither the marker nor the TURN password. Only the
   plaintext legs natfwd does not own (client -> -L port, serving peer -> target)
   are left out of the capture. Skipped if tcpdump cannot capture (not root).
"""
import base64
import hashlib
import hmac
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys

from harness import echo, echo_roundtrip, SKIP, Failure, run, scaled, write_private
import pcap_streams  # noqa: E402 - harness put test/tools on the path


def tls_checks(w, target) -> None:
    relay_dir = w.natfwd.state_dir("relay-pinned")
    _, relay = w.natfwd.relay(state_dir=relay_dir)
    w.natfwd.serve(relay, "home", [target.addr])
    home = w.natfwd._serve_dirs["home"]
    known = open(os.path.join(home, "known_relays")).read().split()
    if len(known) != 2 or not known[1].startswith("SHA256:"):
        raise Failure(f"known_relays not written as expected: {known}")
    pin = known[1]
    r = subprocess.run([w.natfwd.relay_bin, "id", "--state-dir", relay_dir],
                       capture_output=True, text=True, timeout=scaled(30))
    if r.returncode != 0 or r.stdout.strip() != pin:
        raise Failure(f"relay id printed {r.stdout.strip()!r} (exit {r.returncode}), "
                      f"the peer recorded {pin!r}: {r.stderr.strip()}")
    wrong = "SHA256:" + "A" * 43
    fwd, (laddr,) = w.natfwd.forward(relay, "home", [f"0:{target.addr}"],
                                     extra=["--relay-key", wrong])
    fwd.wait_stderr(r"not the --relay-key " + re.escape(wrong), 30, what="wrong relay key")
    fwd.stop()
    fwd, (laddr,) = w.natfwd.forward(relay, "home", [f"0:{target.addr}"],
                                     extra=["--relay-key", pin])
    echo_roundtrip(laddr, b"pinned relay key")
    fwd.stop()
    fwd, (laddr,) = w.natfwd.forward(relay, "home", [f"0:{target.addr}"],
                                     extra=["--insecure-relay"])
    fwd.wait_stderr(r"--insecure-relay: the rendezvous with .* is not encrypted", 10,
                    what="insecure relay warning")
    echo_roundtrip(laddr, b"plain relay link")
    fwd.stop()
    print(f"relay link: TLS by default (pinned {pin}, as `relay id` says), wrong --relay-key refused, "
          "--insecure-relay warns", flush=True)


def capture_check(w, target) -> None:
    if shutil.which("tcpdump") is None or os.geteuid() != 0:
        print("SKIP: capture needs root and tcpdump", flush=True)
        sys.exit(SKIP)
    secret_file = os.path.join(w.tmpdir, "turn-secret")
    turn_secret = "capture-" + secrets.token_hex(12)
    write_private(secret_file, turn_secret + "\n")
    pcap = os.path.join(w.tmpdir, "capture.pcap")
    # Capture everything on loopback from before the relay starts, so that every
    # registration, Welcome (with TURN credentials), session setup and handshake is in.
    dump = w.group.start("tcpdump", ["tcpdump", "-i", "lo", *pcap_streams.TCPDUMP_FLAGS,
                                     "-w", pcap])
    dump.wait_stderr(r"listening on lo", 10, what="tcpdump ready")
    _, relay = w.natfwd.relay(extra=["--allow-peer", "127.0.0.0/8",
                                     "--auth-secret-file", secret_file])
    relay_port = relay.rpartition(":")[2]
    w.natfwd.serve(relay, "home", [target.addr], extra=["--force-relay"])
    fwd, (laddr,) = w.natfwd.forward(relay, "home", [f"0:{target.addr}"],
                                     extra=["--force-relay"])
    fwd.wait_stdout(r"^path home: relayed via turn-", 30, what="relayed path")
    marker = b"NATFWD-MARKER-" + secrets.token_hex(8).encode()
    payload = b"".join(os.urandom(4000) + marker for _ in range(500))  # ~2 MB
    echo_roundtrip(laddr, payload)
    # A pairing while capturing: the invite secret must not be on the wire either.
    peer = w.natfwd.peer_bin
    code = subprocess.run([peer, "invite", "--state-dir", w.natfwd._serve_dirs["home"]],
                          capture_output=True, text=True, check=True,
                          timeout=scaled(20)).stdout.strip()
    invite_secret = code.rpartition(".")[2]
    r = subprocess.run([peer, "--relay", relay, "--state-dir", w.natfwd.state_dir("pairing"),
                        "pair", code], capture_output=True, text=True, timeout=scaled(60))
    if r.returncode != 0:
        raise Failure(f"pairing during the capture failed: {r.stderr}")
    sentinel_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        pcap_streams.finish(dump, pcap,
                            lambda token: sentinel_socket.sendto(token, ("127.0.0.1", 9)))
    finally:
        sentinel_socket.close()
    # Leave out the two plaintext legs natfwd does not own: the client's connection to
    # the -L port and the serving peer's connection to the target.
    lport = laddr.rpartition(":")[2]
    filtered = os.path.join(w.tmpdir, "natfwd-only.pcap")
    subprocess.run(["tcpdump", "-r", pcap, "-w", filtered,
                    f"not port {lport} and not port {target.port}"],
                   check=True, capture_output=True, timeout=scaled(60))
    pcap = filtered
    data = open(pcap, "rb").read()
    if len(data) < len(payload):
        raise Failure(f"the capture is too small ({len(data)} bytes) to have seen the transfer")
    # TURN usernames travel in clear by design (RFC 8489 USERNAME); the passwords the
    # relay derived for them must not (they only went inside the TLS rendezvous link).
    usernames = set(re.findall(rb"\d{10}:[a-z2-7]{32}", data))
    if not usernames:
        raise Failure("no TURN username in the capture: did the tunnel really use TURN?")
    needles = [(marker, "the marker"), (turn_secret.encode(), "the TURN secret"),
               (invite_secret.encode(), "the invite secret")]
    for username in usernames:
        digest = hmac.new(turn_secret.encode(), username, hashlib.sha1).digest()
        needles.append((base64.b64encode(digest), f"the TURN password of {username.decode()}"))
    # Also in what the TCP streams carried once reassembled: a secret split between two
    # segments is not in the file as one piece.
    carried = [data, *pcap_streams.streams(data)]
    for needle, what in needles:
        if any(needle in piece for piece in carried):
            raise Failure(f"{what} is readable in the capture {pcap}")
    print(f"capture of {len(data)} bytes (relay port {relay_port}, TURN, tunnel): no marker, "
          f"no TURN secret, no TURN password of {len(usernames)} usernames, no invite "
          "secret", flush=True)


def test(w):
    target = w.target(echo)
    tls_checks(w, target)
    w.group.stop_all()
    capture_check(w, target)


if __name__ == "__main__":
    run(test)

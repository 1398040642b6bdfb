#!/usr/bin/env python3
"""Relay trouble is said at once and plainly, without -v.

1. Refused: --relay at a port where nothing listens (a bound, non-listening socket of
   the test). `peer nc` exits 1 with "no relay can be reached: cannot reach relay
   ...: ... Connection refused" and a `peer -L` resets its incoming connection with
   "cannot reach home: no relay can be reached: ..." on stderr, both within 2 s (the
   old wait was 30 s); the -L peer keeps running for when the relay comes.
2. A changed relay key is fatal: a known_relays line with another key for the relay,
   and a wrong --relay-key, each end `peer -L` / `peer nc` with exit 3 (a lasting
   refusal, which systemd does not restart) and the key line on stderr, instead of
   retrying.
3. Not a relay: --relay at a real sshd (TLS and --insecure-relay), at an HTTP server
   and at a TLS server that is not ours: exit 3 with "this is not a natfwd relay (it
   answered like SSH ('SSH-2.0-...'))" / "HTTP (...)"; the TLS server's key is not
   recorded in known_relays.
4. A port that accepts and never answers: "accepted the connection but did not answer
   within 10 s", exit 1, well before the 30 s wait for a relay link.
5. `peer netcheck` at the sshd port says "not a natfwd relay" and exits 1 instead of
   concluding that UDP is blocked.
"""
import http.server
import os
import socket
import ssl
import subprocess
import threading
import time

from harness import Failure, answer_of_refused, run, scaled, start_sshd
from procs import peer_env

FORWARD_RE = r"^listening on (\S+) -> (\S+) (\S+)$"
REFUSE_BOUND = 2.0  # seconds: a refused relay is reported within this


def nc(w, relay, *extra, state_dir=None):
    """`peer [extra] --relay RELAY nc home 127.0.0.1:9`; returns (result, seconds)."""
    argv = [w.peer_bin, "--relay", relay, "--state-dir",
            state_dir or w.natfwd.client_state_dir(), *extra, "nc", "home", "127.0.0.1:9"]
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=scaled(40),
                       env=peer_env(), stdin=subprocess.DEVNULL)
    return r, time.monotonic() - t0


def expect_nc(r, elapsed, want, within, what, code=1):
    """`code` 3: a lasting refusal, which a service manager should not retry."""
    lines = r.stderr.strip().splitlines()
    if r.returncode != code or len(lines) != 1 or want not in lines[0]:
        raise Failure(f"{what}: exit {r.returncode}, stderr {r.stderr!r}; want exit {code} "
                      f"and one line with {want!r}")
    if elapsed > within:
        raise Failure(f"{what}: took {elapsed:.1f} s, want under {within} s")
    print(f"{what}: {elapsed:.2f} s: {lines[0]}")


def refused(w):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    w.on_cleanup(holder.close)
    relay = f"127.0.0.1:{holder.getsockname()[1]}"
    r, elapsed = nc(w, relay)
    expect_nc(r, elapsed, f"no relay can be reached: cannot reach relay {relay}: ",
              scaled(REFUSE_BOUND), "nc, relay refused")
    if "Connection refused" not in r.stderr:
        raise Failure(f"nc, relay refused: the line does not say so: {r.stderr!r}")

    fwd = w.group.start("peer -L (refused relay)",
                        [w.peer_bin, "--relay", relay, "--state-dir",
                         w.natfwd.client_state_dir(), "-L", "0:127.0.0.1:9", "home"],
                        env=peer_env())
    laddr = fwd.wait_stdout(FORWARD_RE, 20, what="-L ready line").group(1)
    fwd.wait_stderr(r"Connection refused; reconnecting", 10, what="the first refusal")
    t0 = time.monotonic()
    data = answer_of_refused(laddr, timeout=scaled(REFUSE_BOUND))
    elapsed = time.monotonic() - t0
    if data or elapsed > scaled(REFUSE_BOUND):
        raise Failure(f"-L, relay refused: got {data!r} after {elapsed:.1f} s")
    fwd.wait_stderr(r"cannot reach home: no relay can be reached: cannot reach relay "
                    + relay.replace(".", r"\."), 5, what="-L's line about the refused relay")
    fwd.check_running("after a refused relay")
    print(f"-L, relay refused: connection closed after {elapsed:.2f} s")
    fwd.stop()


def key_changed(w, relay_addr):
    state = w.natfwd.state_dir("changed-key")
    with open(os.path.join(state, "known_relays"), "w") as f:
        f.write(f"{relay_addr} SHA256:{'A' * 43}\n")
    fwd = w.group.start("peer -L (changed relay key)",
                        [w.peer_bin, "--relay", relay_addr, "--state-dir", state,
                         "-L", "0:127.0.0.1:9", "home"], env=peer_env())
    code = fwd.wait_exit(scaled(15))
    if code != 3 or not any("RELAY KEY CHANGED" in line and "error" in line
                            for line in fwd.stderr_lines):
        raise Failure(f"changed relay key: exit {code}\n{fwd.describe()}")
    r, elapsed = nc(w, relay_addr, "--relay-key", "SHA256:" + "B" * 43, state_dir=state)
    expect_nc(r, elapsed, f"not the --relay-key SHA256:{'B' * 43}", scaled(REFUSE_BOUND),
              "nc, wrong --relay-key", code=3)


class Answering400(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass


def http_server(w, tls_context=None):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answering400)
    if tls_context:
        server.socket = tls_context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    w.on_cleanup(server.shutdown)
    return f"127.0.0.1:{server.server_address[1]}"


def self_signed(w):
    cert, key = w.self_signed_cert("other", "other")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def not_a_relay(w):
    _, ssh_port = start_sshd(w)
    sshd = f"127.0.0.1:{ssh_port}"
    for extra in ([], ["--insecure-relay"]):
        r, elapsed = nc(w, sshd, *extra)
        expect_nc(r, elapsed, f"relay {sshd}: this is not a natfwd relay (it answered like "
                  "SSH ('SSH-2.0-", scaled(5), f"nc at sshd {extra}", code=3)
    plain_http = http_server(w)
    r, elapsed = nc(w, plain_http)
    expect_nc(r, elapsed, "this is not a natfwd relay (it answered like HTTP ('",
              scaled(5), "nc at an HTTP server", code=3)
    https = http_server(w, self_signed(w))
    https_state = w.natfwd.state_dir("https")
    r, elapsed = nc(w, https, state_dir=https_state)
    expect_nc(r, elapsed, "this is not a natfwd relay (it answered like HTTP ('",
              scaled(5), "nc at a TLS server that is not a relay", code=3)
    known = os.path.join(https_state, "known_relays")
    if os.path.exists(known) and https in open(known).read():
        raise Failure(f"the TLS server that is not a relay was pinned in known_relays: "
                      f"{open(known).read()!r}")

    t0 = time.monotonic()
    r = subprocess.run([w.peer_bin, "netcheck", "--relay", sshd, "--timeout", "3"],
                       capture_output=True, text=True, timeout=scaled(30), env=peer_env())
    want = f"not a natfwd relay: {sshd} it answered like SSH ('SSH-2.0-"
    if r.returncode != 1 or want not in r.stdout or "reachability" in r.stdout:
        raise Failure(f"netcheck at sshd: exit {r.returncode}, want 1 and {want!r}, no "
                      f"diagnosis:\n{r.stdout}{r.stderr}")
    print(f"netcheck at sshd: {time.monotonic() - t0:.1f} s: {r.stdout.splitlines()[-1]}")


def silent(w):
    quiet = socket.socket()
    quiet.bind(("127.0.0.1", 0))
    quiet.listen(8)  # the kernel accepts; nobody ever answers
    w.on_cleanup(quiet.close)
    relay = f"127.0.0.1:{quiet.getsockname()[1]}"
    r, elapsed = nc(w, relay)
    expect_nc(r, elapsed, f"relay {relay} accepted the connection but did not answer within "
              "10 s", scaled(20), "nc at a silent port")


def test(w):
    refused(w)
    _, relay_addr = w.natfwd.relay()
    key_changed(w, relay_addr)
    not_a_relay(w)
    silent(w)


if __name__ == "__main__":
    run(test)

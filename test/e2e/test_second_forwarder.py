#!/usr/bin/env python3
"""A second `peer -D` / `-L` beside a running peer: the running peer's tunnel carries it.

A laptop daemon (`peer -L ... home`) keeps a tunnel to home. A second `peer -D 0 -L 0:T
home` with the same state dir says in one line that it uses the running peer's tunnel
(and names its control socket), opens its own listeners, and carries each connection
through the daemon's control socket: SOCKS5 CONNECT and the -L connection reach the echo
target (a half close comes back as EOF after the echo), an unserved target gets SOCKS
reply 2 ("not allowed by ruleset"), home sees no second tunnel, the daemon's `peer
status --json` lists one tunnel, and the second peer warns about nothing. Stopped, it
exits 0 and the daemon keeps its tunnel. A third `-L` with `--force-relay` asks for a
path of its own: it sets up its own relayed tunnel rather than ride the daemon's direct
one.
"""
import json
import socket
import struct
import subprocess

from harness import Failure, connect, echo, run, scaled
from procs import peer_env

SOCKS_RE = r"^listening on (\S+) -> home socks$"
FORWARD_RE = r"^listening on (\S+) -> home (\S+)$"


def socks5_connect(proxy, host, port):
    """A SOCKS5 CONNECT by host name; returns (reply code, socket)."""
    s = connect(proxy, timeout=scaled(60))
    s.sendall(b"\x05\x01\x00")
    if s.recv(2) != b"\x05\x00":
        raise Failure("the SOCKS greeting was not answered with 'no authentication'")
    name = host.encode()
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", port))
    reply = b""
    while len(reply) < 10:
        chunk = s.recv(10 - len(reply))
        if not chunk:
            break
        reply += chunk
    if len(reply) < 2:
        raise Failure(f"no SOCKS reply for {host}:{port} (got {reply!r})")
    return reply[1], s


def echo_half_closed(s, data):
    """Sends `data`, half-closes, reads until EOF: the target's echo, then its FIN."""
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while chunk := s.recv(65536):
        got += chunk
    s.close()
    return got


def tunnel_count(w, state_dir):
    r = subprocess.run([w.peer_bin, "status", "--state-dir", state_dir, "--json"],
                       capture_output=True, text=True, timeout=scaled(20), env=peer_env())
    if r.returncode != 0:
        raise Failure(f"peer status of the daemon: exit {r.returncode}, {r.stderr}")
    return len(json.loads(r.stdout)["tunnels"])


def test(w):
    target = w.target(echo)
    host, port = target.addr.rsplit(":", 1)
    unserved = w.target(echo)
    _, relay_addr = w.natfwd.relay()
    home = w.natfwd.serve(relay_addr, "home", [target.addr])
    daemon, (daemon_laddr,) = w.natfwd.forward(relay_addr, "home", [f"0:{target.addr}"])
    client_dir = w.natfwd.client_state_dir()
    if echo_half_closed(connect(daemon_laddr, timeout=scaled(60)), b"up\n") != b"up\n":
        raise Failure("the daemon's own -L does not echo")
    tunnels_before = sum("wants a tunnel" in line for line in home.stderr_lines)

    second = w.group.start("second peer -D -L (home)", [
        w.peer_bin, "--relay", relay_addr, "--state-dir", client_dir,
        "-D", "0", "-L", f"0:{target.addr}", "home"], env=peer_env())
    m = second.wait_stderr(r"using the running peer's tunnel to home \(control socket (\S+)\)",
                           30, what="the second peer's line about the running peer")
    if m.group(1) != f"{client_dir}/control":
        raise Failure(f"the second peer names control socket {m.group(1)}, "
                      f"want {client_dir}/control")
    proxy = second.wait_stdout(SOCKS_RE, 30, what="the second peer's -D ready line").group(1)
    laddr = second.wait_stdout(FORWARD_RE, 30, what="the second peer's -L ready line").group(1)

    data = b"carried by the daemon's tunnel\n" * 2000
    code, s = socks5_connect(proxy, host, int(port))
    if code != 0:
        raise Failure(f"SOCKS5 CONNECT {target.addr} through the second peer: reply {code}\n"
                      f"{second.describe()}")
    if (got := echo_half_closed(s, data)) != data:
        raise Failure(f"through the second peer's -D: {len(got)} of {len(data)} bytes back")
    if (got := echo_half_closed(connect(laddr, timeout=scaled(60)), data)) != data:
        raise Failure(f"through the second peer's -L: {len(got)} of {len(data)} bytes back")

    code, s = socks5_connect(proxy, "127.0.0.1", int(unserved.addr.rsplit(":", 1)[1]))
    s.close()
    if code != 2:
        raise Failure(f"SOCKS5 CONNECT to an unserved target through the running peer: reply "
                      f"{code}, want 2 (not allowed by ruleset)")

    tunnels_after = sum("wants a tunnel" in line for line in home.stderr_lines)
    if tunnels_after != tunnels_before:
        raise Failure("the second peer set up a tunnel of its own although the daemon had one")
    if (count := tunnel_count(w, client_dir)) != 1:
        raise Failure(f"the daemon's peer status lists {count} tunnels, want 1")
    noise = [line for line in second.stderr_lines
             if "warn" in line or "error" in line or "control socket:" in line]
    if noise:
        raise Failure(f"the second peer warned: {noise}")

    if (code := second.stop()) != 0:
        raise Failure(f"the second peer exited {code} on SIGTERM, want 0")
    daemon.check_running("after the second peer stopped")
    if echo_half_closed(connect(daemon_laddr, timeout=scaled(60)), b"still\n") != b"still\n":
        raise Failure("the daemon's -L does not echo after the second peer stopped")
    print(f"second -D/-L carried by the running peer's tunnel; home saw {tunnels_after} "
          "tunnel(s) set up, the daemon lists 1")

    relayed, (relayed_laddr,) = w.natfwd.forward(relay_addr, "home", [f"0:{target.addr}"],
                                                 extra=["--force-relay"])
    if echo_half_closed(connect(relayed_laddr, timeout=scaled(60)), b"own\n") != b"own\n":
        raise Failure("the --force-relay -L does not echo")
    path = relayed.wait_stdout(r"^path home: (.*)$", 30, what="the --force-relay path line")
    if not path.group(1).startswith("relayed ") or any(
            "using the running peer's tunnel" in line for line in relayed.stderr_lines):
        raise Failure(f"--force-relay beside a running peer: path {path.group(1)!r}\n"
                      f"{relayed.describe()}")
    print(f"a --force-relay -L beside it set up its own tunnel: {path.group(1)}")


if __name__ == "__main__":
    run(test)

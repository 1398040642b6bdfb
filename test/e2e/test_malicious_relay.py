#!/usr/bin/env python3
"""A malicious relay cannot stand in the middle.

The "relay" the peers talk to is a proxy in front of the real one that rewrites the
rendezvous messages as a dishonest relay operator could (the peers use
--insecure-relay so the proxy can read and change every frame; with TLS the operator
holds the relay's key anyway). An attacker runs its own peers. In every scenario the
peers refuse and no byte reaches the target:

 A. OpenSession for "home" is sent to the attacker's peer "evil", whose key the relay
    announces as home's: the laptop has home's key pinned (known_peers) -> refused.
 B. The same against a laptop that pins with home@KEYID and never met home -> refused.
 C. The attacker's own -L peer calls home, and the relay announces the authorised
    laptop's key as the caller: home expects that key in the QUIC handshake -> refused.
 D. The relay routes to the real home but announces the attacker's key as home's to
    a first-use laptop: home's certificate does not carry that key -> refused.
"""
import socket
import threading

from harness import Failure, assert_refused, echo, connect, run, scaled

from pbwire import encode, fields

HELLO, REGISTER, OPEN, INCOMING, ACCEPT = 1, 3, 5, 6, 7


class Proxy:
    """Frames in, frames out; `tamper(kind, inner_fields, conn)` may rewrite them."""

    def __init__(self, relay_addr: str, tamper):
        host, _, port = relay_addr.rpartition(":")
        self.relay = (host, int(port))
        self.tamper = tamper
        self.keys_by_name: dict[str, bytes] = {}
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.relay)
            conn = {"key": b""}
            threading.Thread(target=self.pump, args=(client, upstream, "up", conn),
                             daemon=True).start()
            threading.Thread(target=self.pump, args=(upstream, client, "down", conn),
                             daemon=True).start()

    def pump(self, src, dst, direction, conn):
        buffer = b""
        try:
            while chunk := src.recv(65536):
                buffer += chunk
                while len(buffer) >= 8:
                    length = int.from_bytes(buffer[4:8], "big")
                    if len(buffer) < 8 + length:
                        break
                    header, payload = buffer[:4], buffer[8:8 + length]
                    buffer = buffer[8 + length:]
                    payload = self.rewrite(direction, payload, conn)
                    dst.sendall(header + len(payload).to_bytes(4, "big") + payload)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def rewrite(self, direction, payload, conn):
        (number, wire, inner), = fields(payload)
        inner_fields = fields(inner)
        if direction == "up" and number == HELLO:
            conn["key"] = next(v for n, w, v in inner_fields if n == 2)
        if direction == "up" and number == REGISTER:
            name = next(v for n, w, v in inner_fields if n == 1).decode()
            self.keys_by_name[name] = conn["key"]
        self.tamper(direction, number, inner_fields, conn)
        return encode([[number, wire, encode(inner_fields)]])

    def close(self):
        self.sock.close()


def set_field(items, number, value):
    for item in items:
        if item[0] == number:
            item[2] = value
            return
    items.append([number, 2, value])


TAMPERED = "data came back through a tunnel the relay tampered with"


def test(w):
    target = w.target(echo)
    _, real_relay = w.natfwd.relay()
    mode = {"name": None}

    def tamper(direction, number, items, conn):
        m = mode["name"]
        if m in ("A", "B") and direction == "up" and number == OPEN:
            set_field(items, 2, b"evil")  # route the session to the attacker's peer
        if m == "C" and direction == "down" and number == INCOMING:
            set_field(items, 2, proxy.keys_by_name["laptop-real"])  # "it's your laptop"
        if m == "D" and direction == "down" and number == ACCEPT:
            set_field(items, 3, proxy.keys_by_name["evil"])  # "home's key is evil's"

    proxy = Proxy(real_relay, tamper)
    w.on_cleanup(proxy.close)
    insecure = ["--insecure-relay"]
    laptop = w.natfwd.state_dir("laptop")
    attacker = w.natfwd.state_dir("attacker")
    home_dir = w.natfwd.state_dir("home")
    home_id = w.natfwd.key_id(home_dir)
    laptop_b = w.natfwd.state_dir("laptop-b")
    laptop_d = w.natfwd.state_dir("laptop-d")
    # Every laptop is authorised everywhere: the refusals below must come from the
    # keys the handshake proves, not from a missing --allow.
    allow_all = []
    for state in (laptop, laptop_b, laptop_d):
        allow_all += ["--allow", w.natfwd.key_id(state)]

    # The honest setup: home serves the target to the laptop; the laptop's first tunnel
    # pins home. "laptop-real" registers the laptop's key under a name so that the
    # proxy learns it (a relay sees every Hello anyway).
    w.natfwd.serve(proxy.addr, "home", [target.addr],
                   extra=["--state-dir", home_dir, *allow_all, *insecure])
    w.natfwd.serve(proxy.addr, "laptop-real", ["127.0.0.1:9"],
                   extra=["--state-dir", laptop, *insecure])
    fwd, (laddr,) = w.natfwd.forward(proxy.addr, "home", [f"0:{target.addr}"],
                                     extra=["--state-dir", laptop, *insecure])
    with connect(laddr, timeout=scaled(30)) as s:
        s.sendall(b"ping")
        if s.recv(4) != b"ping":
            raise Failure("the honest tunnel does not work")
    fwd.stop()
    honest = target.accepted
    # The attacker's peer, serving the same target to the laptop's key (it would
    # forward or read everything if the laptop accepted it).
    w.natfwd.serve(proxy.addr, "evil", [target.addr],
                   extra=["--state-dir", attacker, *allow_all, *insecure])

    def attempt(mode_name, state, name, expect):
        mode["name"] = mode_name
        fwd, (laddr,) = w.natfwd.forward(proxy.addr, name, [f"0:{target.addr}"],
                                         extra=["--state-dir", state, *insecure])
        assert_refused(laddr, TAMPERED, b"secret request")
        fwd.wait_stderr(expect, 30, what=f"scenario {mode_name} refusal")
        fwd.stop()
        if target.accepted != honest:
            raise Failure(f"scenario {mode_name}: the target was connected")
        print(f"scenario {mode_name}: refused ({expect})", flush=True)

    attempt("A", laptop, "home", r"KEY OF PEER 'home' CHANGED")
    attempt("B", laptop_b, f"home@{home_id}", r"you asked for home@")
    # C: the attacker's own -L peer, announced to home as the laptop.
    mode["name"] = "C"
    fwd, (laddr,) = w.natfwd.forward(proxy.addr, "home", [f"0:{target.addr}"],
                                     extra=["--state-dir", attacker, *insecure])
    assert_refused(laddr, TAMPERED, b"secret request")
    fwd.stop()
    if target.accepted != honest:
        raise Failure("scenario C: the target was connected")
    print("scenario C: refused (home saw another key in the handshake)", flush=True)
    attempt("D", laptop_d, "home", r"not the announced key")


if __name__ == "__main__":
    run(test)

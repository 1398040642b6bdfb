#!/usr/bin/env python3
"""Config files: relay.conf and peer.conf with real processes.

1. The shipped dist/relay.conf.example starts a real relay (with --listen and
   --state-dir on the command line), dist/peer.conf.example a serving peer (with
   --relay, --name and --state-dir); a written relay.conf's listen address shows in
   the ready line, and --listen on the command line wins over it.
2. A serving peer entirely from --config FILE ([serve NAME] groups): its ready line
   lists the file's targets; --serve on the command line replaces the file's list.
3. A connecting peer from the default file ($XDG_CONFIG_HOME/natfwd/peer.conf,
   [forward NAME] groups): its ready lines name the file's forwards and bytes go
   through both; -L on the command line replaces the file's forwards.
4. `peer id` takes state-dir from the default file, `peer invite` from --config,
   `peer pair` relay and state-dir from --config (ignoring its forwards).
5. Bad files (syntax, unknown group, unknown key, bad value, one peer pinned to two keys,
   missing --config FILE) exit 2 with one stderr line naming the file, line and key.
"""
import os
import socket
import subprocess

from harness import Failure, connect, echo, run, scaled

SOURCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
RELAY_RE = r"^relay listening on (\S+) "
REGISTERED_RE = r"^registered as (\S+) at (\S+), serving (.*)$"
FORWARD_RE = r"^listening on (\S+) -> (\S+) (\S+)$"


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def env_with(xdg_config_home):
    env = dict(os.environ)
    env.pop("NATFWD_RELAY", None)
    env["XDG_CONFIG_HOME"] = xdg_config_home
    return env


def echoes(addr, payload):
    with connect(addr, timeout=60) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    if got != payload:
        raise Failure(f"through {addr}: sent {payload!r}, got back {got!r}")


def relay_from_files(w):
    no_config = os.path.join(w.tmpdir, "no-xdg")
    example = os.path.join(SOURCE_DIR, "dist", "relay.conf.example")
    p = w.group.start("relay (example)", [w.relay_bin, "--config", example, "--listen",
                                          "127.0.0.1:0", "--state-dir", w.natfwd.state_dir("r")],
                      env=env_with(no_config))
    p.wait_stdout(RELAY_RE, what="relay ready line with the shipped example")
    p.stop()

    conf = write(os.path.join(w.tmpdir, "relay.conf"),
                 "[relay]\n# on 127.0.0.2, which the command line may override\n"
                 f"listen = 127.0.0.2:0\nstate-dir = {w.natfwd.state_dir('r')}\n"
                 "realm = config-test\n")
    p = w.group.start("relay (file)", [w.relay_bin, "--config", conf], env=env_with(no_config))
    addr = p.wait_stdout(RELAY_RE, what="relay ready line").group(1)
    if not addr.startswith("127.0.0.2:"):
        raise Failure(f"relay.conf says listen = 127.0.0.2:0, ready line says {addr}")
    p.stop()
    p = w.group.start("relay (file + flag)", [w.relay_bin, "--config", conf, "--listen",
                                              "127.0.0.1:0"], env=env_with(no_config))
    addr = p.wait_stdout(RELAY_RE, what="relay ready line").group(1)
    if not addr.startswith("127.0.0.1:"):
        raise Failure(f"--listen 127.0.0.1:0 should override relay.conf; ready line says {addr}")
    return addr


def peers_from_files(w, relay_addr):
    t1, t2, t3 = w.target(echo), w.target(echo), w.target(echo)
    client_dir = w.natfwd.state_dir("laptop")
    client_id = w.natfwd.key_id(client_dir)
    home_dir = w.natfwd.state_dir("home")
    home_conf = write(os.path.join(w.tmpdir, "home.conf"), f"""\
[peer]
relay = {relay_addr}
name = home
state-dir = {home_dir}
allow = {client_id}

[serve one]
target = {t1.addr}
port = 2222

[serve two]
target = {t2.addr}
""")
    no_config = os.path.join(w.tmpdir, "no-xdg")
    home = w.group.start("peer home (file)", [w.peer_bin, "--config", home_conf],
                         env=env_with(no_config))
    m = home.wait_stdout(REGISTERED_RE, what="serving peer ready line")
    if m.group(1) != "home" or t1.addr not in m.group(3) or t2.addr not in m.group(3):
        raise Failure(f"serving peer from home.conf: ready line {m.group(0)!r} should be home, "
                      f"serving {t1.addr} and {t2.addr}")

    # `peer invite` takes state-dir from home.conf; `peer pair` takes relay and
    # state-dir from another file (and ignores its forwards).
    r = subprocess.run([w.peer_bin, "invite", "--config", home_conf], capture_output=True,
                       text=True, timeout=scaled(20), env=env_with(no_config))
    code = r.stdout.strip()
    if r.returncode != 0 or not code.startswith("home@"):
        raise Failure(f"peer invite --config home.conf: exit {r.returncode}: {r.stdout!r} "
                      f"{r.stderr!r}")
    paired_dir = w.natfwd.state_dir("paired")
    paired_conf = write(os.path.join(w.tmpdir, "paired.conf"),
                        f"[peer]\nrelay = {relay_addr}\nstate-dir = {paired_dir}\n"
                        f"[forward x]\npeer = nas\nlisten = 0\ntarget = {t1.addr}\n")
    r = subprocess.run([w.peer_bin, "--config", paired_conf, "pair", code], capture_output=True,
                       text=True, timeout=scaled(30), env=env_with(no_config))
    if r.returncode != 0 or "paired with home" not in r.stdout:
        raise Failure(f"peer --config paired.conf pair CODE: exit {r.returncode}: {r.stdout!r} "
                      f"{r.stderr!r}")
    with open(os.path.join(home_dir, "authorized_peers")) as f:
        if w.natfwd.key_id(paired_dir) not in f.read():
            raise Failure("pairing with state-dir from paired.conf: key not authorised")

    # Its own state dir: home still serves from the file's (one serving peer per dir).
    other = w.group.start("peer home2 (file + --serve)",
                          [w.peer_bin, "--config", home_conf, "--name", "home2",
                           "--serve", t3.addr, "--state-dir", w.natfwd.state_dir("home2")],
                          env=env_with(no_config))
    m = other.wait_stdout(REGISTERED_RE, what="serving peer ready line")
    if m.group(1) != "home2" or m.group(3) != t3.addr:
        raise Failure(f"--name home2 --serve {t3.addr} should replace the file's; ready line "
                      f"{m.group(0)!r}")
    other.stop()

    # The shipped example of a serving peer, with the relay, name and state dir changed
    # (home is bound to another key at this relay by now).
    example = os.path.join(SOURCE_DIR, "dist", "peer.conf.example")
    shipped = w.group.start("peer (shipped example)",
                            [w.peer_bin, "--config", example, "--relay", relay_addr, "--name", "example",
                             "--state-dir", w.natfwd.state_dir("example")],
                            env=env_with(no_config))
    m = shipped.wait_stdout(REGISTERED_RE, what="ready line of the shipped peer.conf.example")
    if m.group(1) != "example" or "buffalo:22" not in m.group(3):
        raise Failure(f"dist/peer.conf.example should serve buffalo:22: {m.group(0)!r}")
    shipped.stop()

    xdg = os.path.join(w.tmpdir, "xdg")
    write(os.path.join(xdg, "natfwd", "peer.conf"), f"""\
[peer]
relay = {relay_addr}
state-dir = {client_dir}

[forward one]
peer = home
listen = 0
target = {t1.addr}

[forward two]
peer = home
listen = 127.0.0.1:0
target = {t2.addr}
""")
    laptop = w.group.start("peer laptop (default file)", [w.peer_bin], env=env_with(xdg))
    first, i = laptop.wait_stdout_at(FORWARD_RE, what="first -L ready line")
    second, _ = laptop.wait_stdout_at(FORWARD_RE, start=i + 1, what="second -L ready line")
    if (first.group(2), first.group(3), second.group(3)) != ("home", t1.addr, t2.addr):
        raise Failure(f"forwards from peer.conf: {first.group(0)!r}, {second.group(0)!r}")
    echoes(first.group(1), b"through the first forward of peer.conf")
    echoes(second.group(1), b"through the second forward of peer.conf")
    laptop.stop()

    laptop = w.group.start("peer laptop (default file + -L)", [w.peer_bin, "-L",
                                                              f"0:{t3.addr}", "home"],
                           env=env_with(xdg))
    m, _ = laptop.wait_stdout_at(FORWARD_RE, what="-L ready line")
    # The file's forwards would come first: the first line must be the command line's.
    if m.group(3) != t3.addr:
        raise Failure(f"-L on the command line should replace peer.conf's forwards; first "
                      f"ready line {m.group(0)!r}")
    laptop.stop()

    out = subprocess.run([w.peer_bin, "id"], capture_output=True, text=True,
                         timeout=scaled(20), env=env_with(xdg), check=True)
    if out.stdout.split("\n")[0] != client_id:
        raise Failure(f"`peer id` should read state-dir from peer.conf ({client_id}); it said "
                      f"{out.stdout!r}")


def expect_config_error(w, label, argv, xdg, must_contain):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=scaled(15),
                       env=env_with(xdg), stdin=subprocess.DEVNULL)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    if r.returncode != 2 or len(lines) != 1 or any(s not in lines[0] for s in must_contain):
        raise Failure(f"{label}: expected exit 2 and one line containing {must_contain}; got "
                      f"exit {r.returncode}, stderr {lines}")


def bad_files(w, relay_addr):
    xdg = os.path.join(w.tmpdir, "bad-xdg")
    cases = [
        ("relay", "bad value", "[relay]\nlisten = 127.0.0.1:0\n\nmax-allocations = lots\n",
         [":4:", "'max-allocations'", "lots"]),
        ("relay", "unknown key", "[relay]\n# comment\nlisten-on = 127.0.0.1:0\n",
         [":3:", "'listen-on'"]),
        ("relay", "unknown group", "[relay]\nlisten = 127.0.0.1:0\n[turn]\n", [":3:", "[turn]"]),
        ("relay", "syntax", "[relay]\nlisten 127.0.0.1:0\n", [":2:", "listen"]),
        ("relay", "bad switch", "[relay]\nno-turn = yes please\n", [":2:", "'no-turn'"]),
        ("peer", "bad name", f"[peer]\nrelay = {relay_addr}\nname = Home\n[serve a]\n"
         "target = h:22\n", [":3:", "'name'", "Home"]),
        ("peer", "bad serve target", f"[peer]\nrelay = {relay_addr}\nname = home\n[serve a]\n"
         "target = h:0\n", [":5:", "'target'"]),
        ("peer", "serve without a name", "[serve]\ntarget = h:22\n", [":1:", "[serve]"]),
        ("peer", "forward without target", "[forward a]\npeer = home\nlisten = 0\n",
         [":1:", "'target'"]),
        ("peer", "one peer pinned to two keys", f"[peer]\nrelay = {relay_addr}\n[forward a]\n"
         "peer = home@abcdefghijklmnopqrstuvwxyz234567\nlisten = 0\ntarget = h:22\n"
         "[forward b]\npeer = home@bbcdefghijklmnopqrstuvwxyz234567\nlisten = 0\n"
         "target = h:22\n", [":8:", "'peer'", "pins another key"]),
    ]
    for program, label, text, must in cases:
        path = write(os.path.join(w.tmpdir, f"bad-{label.replace(' ', '-')}.conf"), text)
        binary = w.relay_bin if program == "relay" else w.peer_bin
        expect_config_error(w, f"{program} --config ({label})", [binary, "--config", path], xdg,
                            [path + must[0], *must[1:]])
    # The same bad file found at the default place stops peer too.
    path = write(os.path.join(xdg, "natfwd", "peer.conf"), "[peer]\nrelay = x:y\n")
    expect_config_error(w, "default peer.conf with a bad relay", [w.peer_bin, "id"], xdg,
                        [path + ":2:", "'relay'"])
    missing = os.path.join(w.tmpdir, "missing.conf")
    for binary in (w.relay_bin, w.peer_bin):
        expect_config_error(w, f"{os.path.basename(binary)} --config missing",
                            [binary, "--config", missing], xdg, [missing])


def test(w):
    relay_addr = relay_from_files(w)
    peers_from_files(w, relay_addr)
    bad_files(w, relay_addr)


if __name__ == "__main__":
    run(test)

#!/usr/bin/env python3
"""`ssh -o ProxyCommand='peer --relay R nc home %h:%p'` against a real sshd, and the
one-line failures of `peer nc`.

The serving peer serves the test's throwaway sshd (sshd -i behind a socket on
127.0.0.1:0). Through ProxyCommand: `echo hello`, then a 20 MB random file copied
with `cat > dest`, compared by SHA-256; nothing on ssh's stderr from the proxy, and
`peer nc` given SIGHUP (as ssh does at the end) exits 0 in silence. Then `peer nc` directly: an exchange with an
echo target where stdin's EOF half-closes and the exit status is 0 with nothing on
stderr; an unserved target, an unknown peer name and an unauthorised client each
exit 1 with one line on stderr and nothing on stdout.
"""
import os
import shlex
import signal
import subprocess

from harness import Failure, echo, run_with_ssh, scaled, start_sshd, ssh_copy_check


FILE_SIZE = 20 * 1024 * 1024


def nc_argv(w, relay_addr, state_dir, name, target):
    return [w.peer_bin, "--relay", relay_addr, "--state-dir", state_dir, "nc", name, target]


def run_nc(w, argv, stdin_bytes, timeout=60):
    try:
        return subprocess.run(argv, input=stdin_bytes, capture_output=True,
                              timeout=scaled(timeout))
    except subprocess.TimeoutExpired:
        raise Failure(f"peer nc did not finish within {scaled(timeout):.0f} s: {argv}") from None


def expect_one_line_failure(r, what, pattern):
    err = r.stderr.decode(errors="replace").strip().splitlines()
    if r.returncode != 1 or r.stdout or len(err) != 1 or pattern not in err[0]:
        raise Failure(f"nc {what}: want exit 1, empty stdout and one stderr line with "
                      f"{pattern!r}; got exit {r.returncode}, stdout {r.stdout[:200]!r}, "
                      f"stderr {err}")


def test(w):
    sshd, sshd_port = start_sshd(w)
    target = w.target(echo)

    _, relay_addr = w.natfwd.relay()
    w.natfwd.serve(relay_addr, "home", [f"127.0.0.1:{sshd_port}", f"127.0.0.1:{target.port}"])
    client_dir = w.natfwd.client_state_dir()
    proxy = shlex.join(nc_argv(w, relay_addr, client_dir, "home", "x")[:-1]) + " %h:%p"

    def ssh(*command, stdin=None):
        argv = sshd.ssh_argv(sshd_port, *command, extra=("-o", f"ProxyCommand={proxy}"))
        try:
            return subprocess.run(argv, stdin=stdin, capture_output=True, timeout=scaled(180))
        except subprocess.TimeoutExpired:
            raise Failure(f"ssh did not finish: {argv}\nsshd log:\n{sshd.log_text()}") from None

    r = ssh("echo", "hello")
    if r.returncode != 0 or r.stdout.strip() != b"hello":
        raise Failure(f"ssh with ProxyCommand: exit {r.returncode}, stdout {r.stdout!r}, "
                      f"stderr {r.stderr.decode(errors='replace')}\nsshd log:\n{sshd.log_text()}")
    # ssh sends its ProxyCommand SIGHUP when the session is over; the proxy's stderr is
    # ssh's, so any line it prints then lands after every successful ssh.
    if b"peer:" in r.stderr:
        raise Failure(f"peer nc printed after a successful ssh: "
                      f"{r.stderr.decode(errors='replace')!r}")

    ssh_copy_check(ssh, w.tmpdir, FILE_SIZE, sshd.log_text)

    # SIGHUP (what ssh sends) while the stream is open: exit 0 and nothing on stderr.
    argv = nc_argv(w, relay_addr, client_dir, "home", f"127.0.0.1:{target.port}")
    nc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    try:
        nc.stdin.write(b"ping\n")
        nc.stdin.flush()
        got = nc.stdout.read(5)  # the echo: the stream is open end to end
        nc.send_signal(signal.SIGHUP)
        _, err = nc.communicate(timeout=scaled(30))
    finally:
        if nc.poll() is None:
            nc.kill()
            nc.wait()
    if got != b"ping\n" or nc.returncode != 0 or err:
        raise Failure(f"peer nc on SIGHUP: echo {got!r}, exit {nc.returncode}, "
                      f"stderr {err.decode(errors='replace')!r}; want exit 0 and silence")

    # nc alone: stdin's EOF half-closes, the echo's reply comes back whole, exit 0, quiet.
    payload = os.urandom(300 * 1024)
    r = run_nc(w, nc_argv(w, relay_addr, client_dir, "home", f"127.0.0.1:{target.port}"), payload)
    if r.returncode != 0 or r.stdout != payload or r.stderr:
        raise Failure(f"nc to the echo target: exit {r.returncode}, {len(r.stdout)} of "
                      f"{len(payload)} bytes back (equal: {r.stdout == payload}), stderr "
                      f"{r.stderr.decode(errors='replace')!r}")

    r = run_nc(w, nc_argv(w, relay_addr, client_dir, "home", "127.0.0.1:1"), b"hi")
    expect_one_line_failure(r, "to an unserved target", "not served there")
    r = run_nc(w, nc_argv(w, relay_addr, client_dir, "nosuch", "127.0.0.1:1"), b"hi")
    expect_one_line_failure(r, "to an unknown peer", "peer nosuch is not registered at the relay")
    stranger = w.natfwd.state_dir("stranger")
    r = run_nc(w, nc_argv(w, relay_addr, stranger, "home", f"127.0.0.1:{target.port}"), b"hi")
    expect_one_line_failure(r, "from an unauthorised peer", "home refused this peer")
    print(f"ssh via ProxyCommand peer nc: 'echo hello' ok, {FILE_SIZE} bytes copied intact; "
          "nc exit 0 on a clean exchange, one line and exit 1 for unserved, unknown, "
          "unauthorised")


def main():
    run_with_ssh(test)


if __name__ == "__main__":
    main()

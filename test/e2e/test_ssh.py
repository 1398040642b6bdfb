#!/usr/bin/env python3
"""A real sshd and a real ssh client through `peer -L`.

The test makes throwaway host and user keys, serves `sshd -i` (inetd mode, one sshd per
connection) behind a listening socket it owns on 127.0.0.1:0, and forwards to it. Through
the tunnel: `ssh ... echo hello`, then a 20 MB random file copied with `cat > dest`,
compared by SHA-256. Skipped when openssh is not installed.
"""
import subprocess

from harness import Failure, run_with_ssh, scaled, start_sshd, ssh_copy_check


FILE_SIZE = 20 * 1024 * 1024


def ssh(sshd, port, *command, stdin=None, timeout=120):
    argv = sshd.ssh_argv(port, *command)
    try:
        return subprocess.run(argv, stdin=stdin, capture_output=True,
                              timeout=scaled(timeout))
    except subprocess.TimeoutExpired:
        raise Failure(f"ssh did not finish within {scaled(timeout):.0f} s: {argv}\n"
                      f"sshd log:\n{sshd.log_text()}") from None


def test(w):
    sshd, sshd_port = start_sshd(w)
    target = f"127.0.0.1:{sshd_port}"

    # Sanity: the throwaway sshd works directly, so a failure below is the tunnel's.
    direct = ssh(sshd, sshd_port, "echo", "direct")
    if direct.returncode != 0 or direct.stdout.strip() != b"direct":
        raise Failure(f"the test's own sshd does not work directly (exit "
                      f"{direct.returncode}): {direct.stderr.decode(errors='replace')}\n"
                      f"sshd log:\n{sshd.log_text()}")

    _, _, fwd, (laddr,) = w.tunnel([target], [f"0:{target}"])
    port = int(laddr.rpartition(":")[2])

    r = ssh(sshd, port, "echo", "hello")
    if r.returncode != 0 or r.stdout.strip() != b"hello":
        raise Failure(f"ssh through the tunnel: exit {r.returncode}, stdout {r.stdout!r}, "
                      f"stderr {r.stderr.decode(errors='replace')}\n{fwd.describe()}\n"
                      f"sshd log:\n{sshd.log_text()}")

    ssh_copy_check(lambda command, stdin: ssh(sshd, port, command, stdin=stdin), w.tmpdir,
                   FILE_SIZE, fwd.describe)
    print(f"ssh through the tunnel: 'echo hello' ok, {FILE_SIZE} bytes copied intact")


def main():
    run_with_ssh(test)


if __name__ == "__main__":
    main()

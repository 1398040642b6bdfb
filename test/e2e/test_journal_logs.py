#!/usr/bin/env python3
"""Logs under journald: when $JOURNAL_STREAM names the process's stderr (as systemd
sets it for StandardError=journal), each line is "<N>message" with the sd-daemon
priority; when it names another file, the usual "relay: info: ..." lines stay.

The stderr is a pipe of the test's; JOURNAL_STREAM is set to its device:inode (or to
another one), a real relay starts, logs its first-run lines, and stops on SIGTERM.
"""
import os
import signal
import subprocess

from harness import Failure, run, scaled


def relay_stderr(w, journal_stream_of_stderr):
    read_end, write_end = os.pipe()
    status = os.fstat(write_end)
    stream = f"{status.st_dev}:{status.st_ino}"
    if not journal_stream_of_stderr:
        other = os.fstat(0 if os.isatty(0) else read_end)
        stream = f"{other.st_dev}:{other.st_ino + 1}"
    env = dict(os.environ, JOURNAL_STREAM=stream)
    p = subprocess.Popen([w.relay_bin, "--listen", "127.0.0.1:0", "--state-dir",
                          w.natfwd.state_dir("relay"), "--config", os.devnull],
                         stdout=subprocess.PIPE, stderr=write_end, env=env,
                         stdin=subprocess.DEVNULL, text=True)
    os.close(write_end)
    try:
        line = p.stdout.readline()
        if not line.startswith("relay listening on "):
            raise Failure(f"relay ready line: {line!r}")
        p.send_signal(signal.SIGTERM)
        if p.wait(timeout=scaled(10)) != 0:
            raise Failure(f"relay exited {p.returncode} on SIGTERM right after its ready line")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    with os.fdopen(read_end) as f:
        return [l for l in f.read().splitlines() if l]


def test(w):
    lines = relay_stderr(w, True)
    if not lines or not all(l[:3] in ("<3>", "<4>", "<6>", "<7>") for l in lines) \
            or "<6>stopping" not in lines:
        raise Failure(f"with JOURNAL_STREAM naming stderr, expected <N>-prefixed lines "
                      f"ending in <6>stopping: {lines}")
    lines = relay_stderr(w, False)
    if "relay: info: stopping" not in lines or any(l.startswith("<") for l in lines):
        raise Failure(f"with JOURNAL_STREAM naming another file, expected the usual lines: "
                      f"{lines}")


if __name__ == "__main__":
    run(test)

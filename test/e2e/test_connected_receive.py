#!/usr/bin/env python3
"""A direct UDP pair's datagrams are read on natfwd's own connected socket, not libnice's.

Both peers log the pair they read on a connected socket (NATFWD_DEBUG); the kernel shows
that socket connected to the other peer's candidate beside libnice's unconnected one on
the same port; 20 MB each way arrive intact; and when the tunnel ends, the serving peer's
count of datagrams read there covers the upload (every one of them came past libnice).
"""
import os
import subprocess

from harness import Failure, bulk_both_ways, run

SIZE = 20 * 1024 * 1024
READING = r"ice: reading pair (\S+) <- (\S+) on a connected socket"
CLOSED = r"ice: connected socket of pair (\S+) <- (\S+) closed after (\d+) datagram"


def established_udp() -> list[tuple[str, str]]:
    """(local, peer) of every connected UDP socket on this host's loopback."""
    out = subprocess.run(["ss", "-uanH", "state", "established"], capture_output=True,
                         text=True, check=True).stdout
    pairs = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            pairs.append((fields[-2], fields[-1]))
    return pairs


def test(w):
    os.environ["NATFWD_DEBUG"] = "1"
    serving, fwd, _, _ = bulk_both_ways(w, SIZE)

    serve_local, serve_remote = serving.wait_stderr(READING, timeout=10,
                                                    what="serving peer's connected socket").groups()
    fwd_local, fwd_remote = fwd.wait_stderr(READING, timeout=10,
                                            what="-L peer's connected socket").groups()
    if (serve_local, serve_remote) != (fwd_remote, fwd_local):
        raise Failure(f"the two peers read different pairs: {serve_local} <- {serve_remote} "
                      f"and {fwd_local} <- {fwd_remote}")
    connected = established_udp()
    for pair in ((serve_local, serve_remote), (fwd_local, fwd_remote)):
        if pair not in connected:
            raise Failure(f"no connected UDP socket {pair[0]} -> {pair[1]} in `ss`: {connected}")

    fwd.stop()
    m = serving.wait_stderr(CLOSED, timeout=30, what="serving peer closing its connected socket")
    datagrams = int(m.group(3))
    # 1200-1350 bytes of QUIC payload per datagram: at least SIZE / 1400 carried the upload.
    if (m.group(1), m.group(2)) != (serve_local, serve_remote) or datagrams < SIZE // 1400:
        raise Failure(f"serving peer's connected socket: {m.group(0)}; expected at least "
                      f"{SIZE // 1400} datagrams on {serve_local} <- {serve_remote}")
    serving.check_running("after the tunnel ended")
    print(f"{SIZE} bytes each way; {serve_local} <- {serve_remote} read {datagrams} datagrams "
          "on its connected socket")


if __name__ == "__main__":
    run(test)

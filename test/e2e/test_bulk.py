#!/usr/bin/env python3
"""200 MB each way through one forwarded connection at the same time, SHA-256 identical.

The target (in this test) sends its own 200 MB while it reads the client's; both sides
hash what they send and what they receive, streaming, never holding the data.
E2E_BULK_BYTES overrides the size per direction.
"""
import os

from harness import bulk_both_ways, run

SIZE = int(os.environ.get("E2E_BULK_BYTES", 200 * 1024 * 1024))


def test(w):
    _, fwd, client, server = bulk_both_ways(w, SIZE)
    fwd.check_running("after the transfer")
    print(f"{SIZE} bytes each way, SHA-256 up {client['sent'][:16]}..., "
          f"down {server['sent'][:16]}...")


if __name__ == "__main__":
    run(test)

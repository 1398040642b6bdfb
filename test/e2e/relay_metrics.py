"""The relay's --metrics endpoint as the e2e tests read it (stdlib only)."""

from __future__ import annotations

from harness import connect

# The relay's ready line names the endpoint: "..., metrics http://ADDR:PORT/metrics)".
URL_RE = r", metrics http://(\S+)/metrics\)"


def scrape(metrics: str) -> dict[str, float]:
    """{'name{labels}': value} of the relay's /metrics, without the natfwd_relay_ prefix."""
    with connect(metrics, timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    samples = {}
    for line in data.partition(b"\r\n\r\n")[2].decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name.removeprefix("natfwd_relay_")] = float(value)
    return samples

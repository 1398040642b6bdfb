#!/usr/bin/env python3
"""Visitor limits of the publishing front door: a bounded flood of visitors at one
published name meets the relay's per-publisher limit while the home owner's own `-L`
tunnel through the same relay keeps working.

- relay with --publish-max-visitors 4: four visitors held open on the published tcp
  port echo, the next 20 are closed without a byte from home, and an HTTP visitor gets a
  429 page; meanwhile `peer -L` to the same home echoes 256 KiB;
- --metrics counts 4 accepted, 21 refused by the limit and 4 open visitors; the
  refusals are logged rate-limited (a few lines, not one per visitor);
- once the four leave, their places are free again;
- --publish-bandwidth-cap paces a visitor: 512 KiB each way at 128 KiB/s takes
  more than 2 s (a burst of one second's worth, then the rate), and the bytes are counted.
"""
import re
import socket
import subprocess
import time

from harness import Failure, connect, connect_to_refused, echo, echo_roundtrip, run, scaled
from test_metrics import scrape
from test_publish_tcp import echo_check, free_port_range

DOMAIN = "share.test"
MAX_VISITORS = 4
FLOOD = 20
CAP = 128 * 1024


def limit_samples(samples, name, outcome=None):
    total = 0
    for (metric, labels), value in samples.items():
        labels = dict(labels)
        if metric == name and (outcome is None or labels.get("outcome") == outcome):
            total += value
    return total


def wait_metric(metrics, name, want, outcome=None, timeout=30):
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = limit_samples(scrape(metrics), name, outcome)
        if value == want:
            return
        if time.monotonic() > deadline:
            raise Failure(f"{name}{{outcome={outcome}}} is {value}, expected {want}")
        time.sleep(0.1)  # polling the relay's own counter, not waiting for time to pass


def refused_quietly(addr):
    s = connect_to_refused(addr, timeout=10)
    if s is None:
        return True
    with s:
        try:
            s.sendall(b"knock")
            return s.recv(16) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True


def start(w, extra):
    nf = w.natfwd
    base = free_port_range(1)
    relay, relay_addr = nf.relay(extra=[
        "--publish-domain", DOMAIN, "--publish-http", "127.0.0.1:0",
        "--publish-ports", f"{base}-{base}", "--allow-publisher", "any",
        "--metrics", "127.0.0.1:0", *extra])
    metrics = re.search(r"metrics http://(\S+)/metrics", relay.stdout_lines[0]).group(1)
    http_port = int(re.search(r"publish http 127\.0\.0\.1:(\d+) ",
                              relay.stdout_lines[0]).group(1))
    return relay, relay_addr, metrics, http_port, base


def flood(w):
    nf = w.natfwd
    relay, relay_addr, metrics, http_port, base = start(
        w, ["--publish-max-visitors", str(MAX_VISITORS)])
    own, published, web = w.target(echo), w.target(echo), w.target(echo)
    home = nf.serve(relay_addr, "home", [own.addr], extra=[
        "--publish", f"tcp:{base}:{published.port}", "--publish", f"http:{web.port}"])
    home.wait_stdout(rf"^published tcp://\S+:{base} ", timeout=30, what="published line")
    laptop, (laddr,) = nf.forward(relay_addr, "home", [f"0:{own.addr}"])
    echo_roundtrip(laddr, b"x" * 1024)

    held = []
    for i in range(MAX_VISITORS):
        s = connect(f"127.0.0.1:{base}", timeout=30)
        s.sendall(b"hello %d" % i)
        if s.recv(64) != b"hello %d" % i:
            raise Failure(f"visitor {i} within the limit got no echo")
        held.append(s)
    refused = sum(refused_quietly(f"127.0.0.1:{base}") for _ in range(FLOOD))
    if refused != FLOOD:
        raise Failure(f"{FLOOD - refused} of {FLOOD} visitors over the limit got bytes back")
    out = subprocess.run(
        ["curl", "-sS", "--max-time", str(scaled(20)), "--resolve",
         f"home.{DOMAIN}:{http_port}:127.0.0.1", "-o", "-", "-w", "\n%{http_code}",
         f"http://home.{DOMAIN}:{http_port}/"], capture_output=True, timeout=scaled(30))
    if not out.stdout.endswith(b"\n429") or b"too many visitors" not in out.stdout:
        raise Failure(f"HTTP visitor over the limit: {out.stdout[-300:]!r}")
    # The owner's own tunnel is no visitor: it goes on while the flood is refused.
    echo_roundtrip(laddr, b"y" * (256 << 10))
    print(f"{MAX_VISITORS} visitors held, {FLOOD} tcp and 1 http refused; -L still echoes")

    samples = scrape(metrics)
    got = {outcome: limit_samples(samples, "natfwd_relay_publish_visitors_total", outcome)
           for outcome in ("accepted", "limit", "allow_from")}
    if got != {"accepted": MAX_VISITORS, "limit": FLOOD + 1, "allow_from": 0}:
        raise Failure(f"visitor counters {got}")
    if limit_samples(samples, "natfwd_relay_publish_visitors") != MAX_VISITORS:
        raise Failure("open visitors gauge is not "
                      f"{MAX_VISITORS}: {limit_samples(samples, 'natfwd_relay_publish_visitors')}")
    lines = [l for l in relay.stderr_lines if "refused: too many visitors" in l]
    if not lines or len(lines) > 10:
        raise Failure(f"{len(lines)} log lines for {FLOOD + 1} refusals (want a few)")
    print(f"metrics: {got}; {len(lines)} log lines")

    for s in held:
        s.close()
    wait_metric(metrics, "natfwd_relay_publish_visitors", 0)
    echo_check(f"127.0.0.1:{base}", size=64 << 10)
    print("places given back once the visitors left")
    home.check_running("at the end")
    laptop.check_running("at the end")


def bandwidth(w):
    nf = w.natfwd
    relay, relay_addr, metrics, _, base = start(w, ["--publish-bandwidth-cap", str(CAP)])
    published = w.target(echo)
    home = w.group.start("peer --publish (capped)", [
        nf.peer_bin, "--relay", relay_addr, "--name", "capped", "--state-dir",
        nf.state_dir("capped"), "--publish", f"tcp:{base}:{published.port}"])
    home.wait_stdout(rf"^published tcp://\S+:{base} ", timeout=30, what="published line")
    size = 4 * CAP
    started = time.monotonic()
    echo_check(f"127.0.0.1:{base}", size=size)
    took = time.monotonic() - started
    # One second's burst, then CAP per second: at least 3 s for 4 CAP; 2 s allows for
    # the burst of the other direction's bucket overlapping.
    if took < 2.0:
        raise Failure(f"{size} bytes each way at a cap of {CAP} B/s took only {took:.2f} s")
    samples = scrape(metrics)
    for direction in ("to_home", "to_visitor"):
        counted = sum(v for (m, l), v in samples.items()
                      if m == "natfwd_relay_publish_bytes_total"
                      and dict(l).get("direction") == direction)
        if counted != size:
            raise Failure(f"bytes {direction}: {counted}, expected {size}")
    print(f"{size} bytes each way at {CAP} B/s took {took:.1f} s; counted both ways")


def test(w):
    flood(w)
    bandwidth(w)


if __name__ == "__main__":
    run(test)

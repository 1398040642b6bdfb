#!/usr/bin/env python3
"""relay --metrics: a real relay serves Prometheus text; a direct tunnel and a tunnel
forced through the relay's TURN move the numbers as they should (the relayed one's
datagrams handed between its two allocations inside the relay).

The relay's ready line names the endpoint (`..., metrics http://ADDR:PORT/metrics` followed by
`)` or, with publishing on, `, publish ...`).
Every scrape is parsed strictly (exposition format 0.0.4: # HELP and # TYPE once per
family and before its samples, metric and label names, quoted label values, numeric
values). Also: other paths get 404, a malformed request is closed without an answer,
and a relay started without --metrics says nothing of metrics.
"""
import re
import socket

from harness import Failure, both_ways, connect, echo, run

SIZE = 2 * 1024 * 1024
PATH_RE = r"^path (\S+): (.*)$"
URL_RE = r", metrics http://(\S+?)/metrics[,)]"

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
SAMPLE_RE = re.compile(rf"^({NAME})(?:\{{({LABEL}(?:,{LABEL})*)?\}})? (\S+)$")
HELP_RE = re.compile(rf"^# HELP ({NAME}) (.*)$")
TYPE_RE = re.compile(rf"^# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)$")


def http(addr: str, request: bytes) -> bytes:
    with connect(addr, timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def parse_exposition(text: str) -> dict:
    """{(name, frozenset(labels)): value}, or Failure on any deviation."""
    helps, types, samples = set(), {}, {}
    if not text.endswith("\n"):
        raise Failure("the exposition does not end with a newline")
    for n, line in enumerate(text.split("\n")[:-1], 1):
        if m := HELP_RE.match(line):
            if m.group(1) in helps:
                raise Failure(f"line {n}: second HELP for {m.group(1)}")
            helps.add(m.group(1))
        elif m := TYPE_RE.match(line):
            if m.group(1) in types:
                raise Failure(f"line {n}: second TYPE for {m.group(1)}")
            types[m.group(1)] = m.group(2)
        elif m := SAMPLE_RE.match(line):
            name, labels, value = m.groups()
            if name not in types or name not in helps:
                raise Failure(f"line {n}: sample of {name} before its HELP and TYPE")
            if types[name] == "counter" and not name.endswith("_total"):
                raise Failure(f"line {n}: counter {name} does not end in _total")
            try:
                number = float(value)
            except ValueError:
                raise Failure(f"line {n}: value {value!r} is not a number") from None
            key = (name, frozenset(re.findall(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"',
                                              labels or "")))
            if key in samples:
                raise Failure(f"line {n}: duplicate sample {line!r}")
            samples[key] = number
        else:
            raise Failure(f"line {n} is not exposition format: {line!r}")
    return samples


def scrape(addr: str) -> dict:
    reply = http(addr, b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    if lines[0] != "HTTP/1.1 200 OK":
        raise Failure(f"GET /metrics: {lines[0]!r}")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    if not headers.get("Content-Type", "").startswith("text/plain; version=0.0.4"):
        raise Failure(f"Content-Type {headers.get('Content-Type')!r}")
    if int(headers["Content-Length"]) != len(body):
        raise Failure("Content-Length does not match the body")
    return parse_exposition(body.decode())


def value(samples: dict, name: str, **labels) -> float:
    key = (name, frozenset(labels.items()))
    if key not in samples:
        raise Failure(f"no sample {name}{labels or ''}")
    return samples[key]


def tunnel(w, relay_addr: str, name: str, extra: list) -> str:
    target = w.target(echo)
    w.natfwd.serve(relay_addr, name, [target.addr], extra=extra)
    fwd, (laddr,) = w.natfwd.forward(relay_addr, name, [f"0:{target.addr}"], extra=extra)
    path = fwd.wait_stdout(PATH_RE, 30, what=f"path line ({name})").group(2)
    with connect(laddr) as s:
        r = both_ways(s, name, SIZE)
    if r["count"] != SIZE or r["received"] != r["sent"]:
        raise Failure(f"{name}: echo came back short or different ({r['count']} of {SIZE})")
    return path


def test(w):
    plain, _ = w.natfwd.relay()
    if "metrics" in " ".join(plain.stdout_lines):
        raise Failure(f"a relay without --metrics mentions metrics: {plain.stdout_lines}")
    plain.stop()

    # One data-plane thread: both relayed peers' allocations on it, so every datagram
    # between them is handed over inside the relay (with two, only when the kernel
    # puts both clients on one thread).
    relay, relay_addr = w.natfwd.relay(extra=["--metrics", "127.0.0.1:0",
                                              "--allow-peer", "127.0.0.0/8", "--threads", "1"])
    ready = " ".join(relay.stdout_lines)
    m = re.search(URL_RE, ready)
    if not m or not ready.startswith(f"relay listening on {relay_addr} (stun/udp, "):
        raise Failure(f"ready line without the metrics endpoint or changed: {ready!r}")
    metrics = m.group(1)

    before = scrape(metrics)
    for name in ("natfwd_relay_registered_peers", "natfwd_relay_sessions_total",
                 "natfwd_relay_turn_allocations_total", "natfwd_relay_open_sessions"):
        if value(before, name) != 0:
            raise Failure(f"{name} is {value(before, name)} before any peer came")
    if value(before, "natfwd_relay_build_info", version=value_label(before)) != 1:
        raise Failure("build_info is not 1")

    direct = tunnel(w, relay_addr, "home", [])
    relayed = tunnel(w, relay_addr, "office", ["--force-relay", "--turn-transport", "udp"])
    if not direct.startswith("direct ") or not relayed.startswith("relayed via turn-udp"):
        raise Failure(f"paths: home {direct!r}, office {relayed!r}")
    after = scrape(metrics)

    checks = [
        ("natfwd_relay_registered_peers", {}, lambda v: v == 2),
        ("natfwd_relay_registrations_total", {}, lambda v: v >= 2),
        ("natfwd_relay_sessions_total", {}, lambda v: v >= 2),
        ("natfwd_relay_open_sessions", {}, lambda v: v >= 0),
        ("natfwd_relay_rendezvous_connections", {}, lambda v: v == 4),
        ("natfwd_relay_stun_binding_requests_total", {}, lambda v: v >= 2),
        ("natfwd_relay_turn_allocations", {}, lambda v: v >= 1),
        ("natfwd_relay_turn_allocations_total", {}, lambda v: v >= 1),
        ("natfwd_relay_turn_permissions", {}, lambda v: v >= 1),
        # Both peers relay: the echo's 2 MB go through the relay in each direction,
        # into it from one allocation's client and out to the other's.
        ("natfwd_relay_relayed_bytes_total", {"direction": "to_peer"}, lambda v: v >= 2 * SIZE),
        ("natfwd_relay_relayed_bytes_total", {"direction": "to_client"}, lambda v: v >= 2 * SIZE),
        ("natfwd_relay_relayed_packets_total", {"direction": "to_peer"},
         lambda v: v >= 2 * SIZE / 1500),
        ("natfwd_relay_relayed_packets_total", {"direction": "to_client"},
         lambda v: v >= 2 * SIZE / 1500),
        # ... from one allocation to the other without leaving the relay.
        ("natfwd_relay_handed_over_packets_total", {}, lambda v: v >= 2 * SIZE / 1500),
        ("natfwd_relay_rate_limited_total", {"kind": "session"}, lambda v: v == 0),
    ]
    for name, labels, ok in checks:
        v = value(after, name, **labels)
        print(f"  {name}{labels or ''} {before.get((name, frozenset(labels.items())))} -> {v:g}")
        if not ok(v):
            raise Failure(f"{name}{labels or ''} is {v:g} after a direct and a relayed tunnel")
    if value(after, "natfwd_relay_uptime_seconds") <= value(before, "natfwd_relay_uptime_seconds"):
        raise Failure("uptime did not grow")

    # Errors by kind: a garbage datagram on the STUN port is counted.
    host, port = relay_addr.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.sendto(b"\x00\x01\x00\x00not stun at all", (host, int(port)))
    for _ in range(100):
        errors = scrape(metrics)
        if errors.get(("natfwd_relay_errors_total", frozenset({("kind", "stun_malformed")}))):
            break
    else:
        raise Failure("a malformed STUN datagram was not counted in errors_total")

    reply = http(metrics, b"GET / HTTP/1.1\r\n\r\n")
    if not reply.startswith(b"HTTP/1.1 404 "):
        raise Failure(f"GET / answered {reply[:40]!r}, want 404")
    reply = http(metrics, b"\x16\x03\x01 garbage\r\n\r\n")
    if reply:
        raise Failure(f"a malformed request got an answer: {reply[:40]!r}")
    relay.check_running("after the malformed request")
    scrape(metrics)

    # Idle connections that never send a request cannot keep the scraper out: the
    # oldest make room (before, 16 of them refused every scrape until they timed out).
    idle = [connect(metrics, timeout=10) for _ in range(40)]
    try:
        scrape(metrics)
    finally:
        for s in idle:
            s.close()
    relay.check_running("after the idle connections")
    sample = http(metrics, b"GET /metrics HTTP/1.0\r\n\r\n").decode()
    print("metrics ok; a scrape after the two tunnels:\n" + sample)


def value_label(samples: dict) -> str:
    for (name, labels), _ in samples.items():
        if name == "natfwd_relay_build_info":
            return dict(labels)["version"]
    raise Failure("no natfwd_relay_build_info")


if __name__ == "__main__":
    run(test)

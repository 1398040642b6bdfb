#!/usr/bin/env python3
"""Publishing tells the target who the visitor is.

- http: the home web server sees the visitor's address appended to the
  X-Forwarded-For the visitor sent, and X-Forwarded-Proto: http in place of the
  visitor's own claim;
- tcp and tls with `,proxy-protocol`: the target reads a PROXY protocol v2 header
  (haproxy's spec, section 2.2) naming the visitor's address and port and the relay's
  address and port, then the visitor's bytes as they came (echoed for tcp, the
  ClientHello's record type for tls);
- tcp without the option: the visitor's bytes come first, no header.
"""
import re
import socket
import struct
import subprocess

from harness import Failure, connect, recv_all, run, scaled
from test_publish_tcp import free_port_range

DOMAIN = "share.test"
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def recv_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise Failure(f"target: EOF after {len(data)} of {n} bytes")
        data += chunk
    return data


def read_proxy_v2(conn):
    """The PROXY v2 header at the start of `conn`: (src_ip, src_port, dst_ip, dst_port)."""
    head = recv_exact(conn, 16)
    if head[:12] != SIGNATURE:
        raise Failure(f"target: no PROXY v2 signature: {head!r}")
    if head[12] != 0x21:
        raise Failure(f"target: version/command {head[12]:#x}, not v2 PROXY")
    family, length = head[13], struct.unpack("!H", head[14:16])[0]
    block = recv_exact(conn, length)
    if family == 0x11 and length >= 12:
        src, dst = socket.inet_ntop(socket.AF_INET, block[0:4]), \
            socket.inet_ntop(socket.AF_INET, block[4:8])
        sport, dport = struct.unpack("!HH", block[8:12])
    elif family == 0x21 and length >= 36:
        src, dst = socket.inet_ntop(socket.AF_INET6, block[0:16]), \
            socket.inet_ntop(socket.AF_INET6, block[16:32])
        sport, dport = struct.unpack("!HH", block[32:36])
    else:
        raise Failure(f"target: family {family:#x} with {length} address bytes")
    return src, sport, dst, dport


def proxy_echo(conn, _index):
    """Reads the PROXY header, then echoes what follows; returns the header's fields."""
    fields = read_proxy_v2(conn)
    while chunk := conn.recv(65536):
        conn.sendall(chunk)
    return fields


def proxy_tls(conn, _index):
    """Reads the PROXY header and the first byte after it (a TLS record type)."""
    fields = read_proxy_v2(conn)
    return fields + (recv_exact(conn, 1),)


def plain_first(conn, _index):
    """Returns the first bytes the target sees (no header expected)."""
    return conn.recv(64)


def head_echo(conn, _index):
    """A web server that answers with the request head it received."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk:
            return b""
        head += chunk
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                 % len(head) + head)
    return head


def publishing_relay(nf):
    """A relay that lets any key publish, with two --publish-ports; returns (process,
    address, HTTP front door port, main (TLS) port, first publish port)."""
    base = free_port_range(2)
    relay, relay_addr = nf.relay(extra=[
        "--publish-domain", DOMAIN, "--publish-http", "127.0.0.1:0",
        "--publish-ports", f"{base}-{base + 1}", "--allow-publisher", "any"])
    http_port = int(re.search(r"publish http 127\.0\.0\.1:(\d+) ",
                              relay.stdout_lines[0]).group(1))
    return relay, relay_addr, http_port, int(relay_addr.rsplit(":", 1)[1]), base


def test(w):
    nf = w.natfwd
    relay, relay_addr, http_port, relay_port, base = publishing_relay(nf)

    web, proxied, tls, plain = (w.target(head_echo), w.target(proxy_echo),
                                w.target(proxy_tls), w.target(plain_first))
    home = w.group.start("peer --publish", [
        nf.peer_bin, "--relay", relay_addr, "--name", "home", "--state-dir",
        nf.state_dir("home"), "--publish", f"http:{web.port}",
        "--publish", f"tcp:{base}:127.0.0.1:{proxied.port},proxy-protocol",
        "--publish", f"tcp:{base + 1}:{plain.port}",
        "--publish", f"tls:{tls.port},proxy-protocol"])
    home.wait_stdout(r"^published https://", timeout=30, what="published ready lines")
    home.wait_stdout(rf"^published tcp://\S+:{base + 1} ", timeout=30, what="tcp ready lines")

    # http: the visitor's claims are extended (For) or replaced (Proto).
    out = subprocess.run(
        ["curl", "-sS", "--max-time", str(scaled(60)), "--resolve",
         f"home.{DOMAIN}:{http_port}:127.0.0.1", "-H", "X-Forwarded-For: 10.9.8.7",
         "-H", "X-Forwarded-Proto: https", f"http://home.{DOMAIN}:{http_port}/x"],
        capture_output=True, timeout=scaled(60) + 10)
    seen = out.stdout.decode(errors="replace")
    if out.returncode != 0 or "\r\nX-Forwarded-For: 10.9.8.7, 127.0.0.1\r\n" not in seen \
            or "\r\nX-Forwarded-Proto: http\r\n" not in seen or "https" in seen:
        raise Failure(f"the home web server saw (curl exit {out.returncode}):\n{seen}\n"
                      f"{out.stderr.decode(errors='replace')}\n{relay.describe()}")
    print("home saw X-Forwarded-For: 10.9.8.7, 127.0.0.1 and X-Forwarded-Proto: http")

    # tcp with proxy-protocol: the header names this visitor socket and the relay port.
    with connect(f"127.0.0.1:{base}", timeout=60) as s:
        visitor_port = s.getsockname()[1]
        s.sendall(b"hello through the relay")
        s.shutdown(socket.SHUT_WR)
        count, _ = recv_all(s, limit=1 << 10)
    proxied.wait_results(1, timeout=60)
    fields = proxied.results.get(0)
    if fields != ("127.0.0.1", visitor_port, "127.0.0.1", base) or count != 23:
        raise Failure(f"PROXY v2 header {fields}, expected visitor 127.0.0.1:{visitor_port} "
                      f"to 127.0.0.1:{base}; {count} bytes echoed; errors {proxied.errors}")
    print(f"tcp target read PROXY v2 127.0.0.1:{visitor_port} -> 127.0.0.1:{base}")

    # tcp without it: the visitor's own bytes first.
    with connect(f"127.0.0.1:{base + 1}", timeout=60) as s:
        s.sendall(b"plain")
        s.shutdown(socket.SHUT_WR)
        recv_all(s, limit=1 << 10)
    plain.wait_results(1, timeout=60)
    if plain.results.get(0) != b"plain":
        raise Failure(f"unmarked tcp publish: target saw {plain.results.get(0)!r} "
                      f"{plain.errors}")

    # tls with proxy-protocol: the header, then the ClientHello (record type 22).
    subprocess.run(["curl", "-sS", "-k", "--max-time", str(scaled(10)), "--resolve",
                    f"home.{DOMAIN}:{relay_port}:127.0.0.1",
                    f"https://home.{DOMAIN}:{relay_port}/"],
                   capture_output=True, timeout=scaled(10) + 10)
    tls.wait_results(1, timeout=60)
    got = tls.results.get(0)
    if not got or got[0] != "127.0.0.1" or got[2:] != ("127.0.0.1", relay_port, b"\x16"):
        raise Failure(f"tls target saw {got}, errors {tls.errors}")
    print(f"tls target read PROXY v2 then a ClientHello (relay port {relay_port})")
    home.check_running("at the end")
    relay.check_running("at the end")


if __name__ == "__main__":
    run(test)

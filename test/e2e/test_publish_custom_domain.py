#!/usr/bin/env python3
"""Publishing at a custom domain: `peer --publish https:www.custom.test=PORT,...` is
routed by the relay only after the relay's own DNS look-ups say the peer may have the
name. Root only (exit 77 otherwise): the test makes a network namespace whose
resolv.conf (`ip netns exec` bind-mounts /etc/netns/NS/resolv.conf) names a dnsmasq
the test starts on port 53 inside it, and runs everything there.

dnsmasq serves www.custom.test as a CNAME to relay.custom.test, whose A record is the
relay's --publish-address (an address of the namespace's loopback), and TXT
records for _natfwd.NAME.

- a correct claim: the home peer prints exactly `published https://www.custom.test/ ->
  127.0.0.1:PORT (certificate from FILE, expires DATE)`, curl trusting only the
  self-signed certificate loads the page from home by SNI www.custom.test, and the
  relay's --publish-http port answers http://www.custom.test/ with a 308 to https;
- a missing TXT record, a TXT record with another value and a name that resolves
  elsewhere each give one line (at the peer and in the relay's log) naming the record
  and the exact record text to add, and the peer asks again in 10 s: once the missing
  record is added, the waiting peer publishes the name without a restart;
- a second key claiming www.custom.test is refused although the DNS names it too:
  the name is held by the first key, also after the relay restarts, and `relay
  domains` lists the claim; once the first key runs `peer handover www.custom.test
  KEYID`, the second key's claim passes and it serves the name.
"""
import os
import re
import shutil
import subprocess
import sys

from harness import SKIP, Failure, run, scaled

DOMAIN = "share.test"
RELAY_PUBLIC = "198.18.0.1"   # the relay's --publish-address (RFC 2544 test range)
ELSEWHERE = "192.0.2.9"       # a name that resolves here does not point at the relay
HOST = "www.custom.test"


def in_namespace():
    """Runs this file again inside a namespace of its own with its own resolv.conf."""
    if os.geteuid() != 0:
        print("SKIP: needs root (a network namespace and a DNS server on port 53)")
        sys.exit(SKIP)
    ns = f"natfwd-dom-{os.getpid()}"
    etc = f"/etc/netns/{ns}"
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "-batch", "-"], check=True, text=True, input="\n".join([
            "link set lo up", f"addr add {RELAY_PUBLIC}/32 dev lo"]) + "\n")
        os.makedirs(etc)
        with open(f"{etc}/resolv.conf", "w") as f:
            f.write("nameserver 127.0.0.1\noptions timeout:2 attempts:2\n")
        code = subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__,
                               "--inside"]).returncode
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(etc, ignore_errors=True)
    sys.exit(code)


def refused_claim(w, relay, relay_addr, name, state_dir, domain, web_port, wanted):
    """A peer claiming `domain`, which the relay holds for another key, stops with exit 3
    and one line holding `wanted`, which the relay logs too."""
    nf = w.natfwd
    out = subprocess.run([nf.peer_bin, "--relay", relay_addr, "--name", name,
                          "--state-dir", state_dir, "--publish", f"tls:{domain}={web_port}"],
                         capture_output=True, text=True, timeout=scaled(60))
    lines = [l for l in out.stderr.splitlines() if wanted in l]
    if out.returncode != 3 or len(lines) != 1:
        raise Failure(f"claim of {domain}: exit {out.returncode}, expected 3 and one line "
                      f"with {wanted!r}:\n{out.stderr}")
    relay.wait_stderr(re.escape(wanted), timeout=30, what=f"relay log line for {domain}")
    print(f"{domain}: {lines[0].split(': ', 1)[-1]}")


def unbacked_claim(w, relay, relay_addr, name, state_dir, domain, web_port, wanted):
    """A peer claiming `domain`, which the DNS does not back, says so in one line holding
    `wanted` (the relay logs it too) and that it asks again in 10 s, and keeps running.
    Returns the peer."""
    nf = w.natfwd
    peer = w.group.start(f"peer claiming {domain}", [
        nf.peer_bin, "--relay", relay_addr, "--name", name, "--state-dir", state_dir,
        "--publish", f"tls:{domain}={web_port}"])
    peer.wait_stderr(re.escape(wanted) + r".*\(asking again in 10 s\)", timeout=30,
                     what=f"the refusal of {domain}")
    relay.wait_stderr(re.escape(wanted), timeout=30, what=f"relay log line for {domain}")
    peer.check_running(f"after the refusal of {domain}")
    line = next(l for l in peer.stderr_lines if wanted in l)
    print(f"{domain}: {line.split('relay refused us: ', 1)[-1]}")
    return peer


def held_by(nf, relay_dir, key_id):
    """`relay domains`' line for HOST, which must name `key_id`."""
    listed = subprocess.run([nf.relay_bin, "domains", "--state-dir", relay_dir],
                            capture_output=True, text=True, timeout=scaled(20))
    claim = [l for l in listed.stdout.splitlines() if l.startswith(f"{HOST} ")]
    if len(claim) != 1 or not claim[0].startswith(f"{HOST} {key_id} "):
        raise Failure(f"relay domains: {listed.stdout!r} {listed.stderr!r}, want {HOST} "
                      f"held by {key_id}")
    return claim[0]


def test(w):
    nf = w.natfwd
    home_dir, other_dir = nf.state_dir("home"), nf.state_dir("other")
    home_id, other_id = nf.key_id(home_dir), nf.key_id(other_dir)

    records = [
        f"--host-record=relay.custom.test,{RELAY_PUBLIC}",
        f"--cname={HOST},relay.custom.test",
        f"--txt-record=_natfwd.{HOST},{home_id}",
        # The second key is named too: only the relay's record of claims refuses it.
        f"--txt-record=_natfwd.{HOST},{other_id}",
        f"--host-record=notxt.custom.test,{RELAY_PUBLIC}",
        f"--host-record=wrongtxt.custom.test,{RELAY_PUBLIC}",
        "--txt-record=_natfwd.wrongtxt.custom.test,somebody-else",
        f"--host-record=elsewhere.custom.test,{ELSEWHERE}",
        f"--txt-record=_natfwd.elsewhere.custom.test,{other_id}",
    ]
    def start_dns(records):
        dns = w.group.start("dnsmasq", [
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", "--no-poll", "--pid-file=", "--listen-address=127.0.0.1",
            "--bind-interfaces", "--port=53", "--local=/test/", "--log-queries",
            "--log-facility=-", "--no-negcache", *records])
        dns.wait_stderr(r"started, version", timeout=30, what="dnsmasq start line")
        return dns
    dns = start_dns(records)

    relay_dir = nf.state_dir("relay")
    relay, relay_addr = nf.relay(state_dir=relay_dir, extra=[
        "--publish-domain", DOMAIN, "--publish-http", "127.0.0.1:0", "--allow-publisher",
        "any", "--publish-address", RELAY_PUBLIC])
    relay_port = int(relay_addr.rsplit(":", 1)[1])
    http_port = int(re.search(r"publish http 127\.0\.0\.1:(\d+) ",
                              relay.stdout_lines[0]).group(1))

    cert, key = w.self_signed_cert("custom", HOST, days=3, dns=HOST)
    site, page = w.site_with_page("custom domain at home")
    web, web_port = w.serve_directory(site)

    # A second site from the same home at home.DOMAIN, with its own certificate and
    # target: each https publish ends TLS with its own.
    own_host = f"home.{DOMAIN}"
    own_cert, own_key = w.self_signed_cert("own", own_host, days=3, dns=own_host)
    own_site, own_page = w.site_with_page("home's own name")
    _, own_port = w.serve_directory(own_site)

    home = w.group.start("peer --publish https:custom", [
        nf.peer_bin, "--relay", relay_addr, "--name", "home", "--state-dir", home_dir,
        "--publish", f"https:{HOST}={web_port},cert={cert},key={key}",
        "--publish", f"https:{own_port},cert={own_cert},key={own_key}"])
    _, at = home.wait_stdout_at(r"^published ", timeout=30, what="published ready line")
    home.wait_stdout(r"^published ", timeout=30, start=at + 1, what="second published line")
    lines = [l for l in home.stdout_lines if l.startswith("published ")]
    for host, port, pem in ((HOST, web_port, cert), (own_host, own_port, own_cert)):
        if not any(l.startswith(f"published https://{host}/ -> 127.0.0.1:{port} "
                                f"(certificate from {pem}, expires ") for l in lines):
            raise Failure(f"no ready line for https://{host}/ in {lines!r}")
    print("\n".join(lines))
    own = subprocess.run(
        ["curl", "-sS", "--max-time", str(scaled(30)), "--resolve",
         f"{own_host}:{relay_port}:127.0.0.1", "--cacert", own_cert,
         f"https://{own_host}:{relay_port}/"],
        capture_output=True, timeout=scaled(30) + 10)
    if own.returncode != 0 or own.stdout != own_page:
        raise Failure(f"https://{own_host}/: curl exit {own.returncode}, {own.stdout[:200]!r} "
                      f"{own.stderr!r}\n{home.describe()}\n{relay.describe()}")
    print(f"https://{own_host}/: its own page, its own certificate trusted")

    got = subprocess.run(
        ["curl", "-sS", "--max-time", str(scaled(30)), "--resolve",
         f"{HOST}:{relay_port}:127.0.0.1", "--cacert", cert, f"https://{HOST}:{relay_port}/"],
        capture_output=True, timeout=scaled(30) + 10)
    if got.returncode != 0 or got.stdout != page:
        raise Failure(f"https://{HOST}/: curl exit {got.returncode}, {got.stdout[:200]!r} "
                      f"{got.stderr!r}\n{home.describe()}\n{relay.describe()}")
    print(f"https://{HOST}/: the page from home, certificate trusted")
    redirect = subprocess.run(
        ["curl", "-sS", "--max-time", str(scaled(30)), "--resolve",
         f"{HOST}:{http_port}:127.0.0.1", "-o", "/dev/null", "-w",
         "%{http_code} %{redirect_url}", f"http://{HOST}:{http_port}/a?b=1"],
        capture_output=True, text=True, timeout=scaled(30) + 10)
    if redirect.stdout != f"308 https://{HOST}/a?b=1":
        raise Failure(f"plain http to the custom domain: {redirect.stdout!r} {redirect.stderr!r}")
    print(f"http://{HOST}/a?b=1 -> 308 https://{HOST}/a?b=1")

    a_dir = nf.state_dir("a")
    waiting = unbacked_claim(w, relay, relay_addr, "a", a_dir, "notxt.custom.test", web_port,
                             "there is no TXT record _natfwd.notxt.custom.test: add "
                             "`_natfwd.notxt.custom.test. TXT \"")
    for name, state_dir, domain, wanted in (
            ("b", nf.state_dir("b"), "wrongtxt.custom.test",
             "the TXT record _natfwd.wrongtxt.custom.test holds \"somebody-else\", not "
             "this peer's key id: make it `_natfwd.wrongtxt.custom.test. TXT \""),
            ("c", other_dir, "elsewhere.custom.test",
             f"elsewhere.custom.test resolves to {ELSEWHERE}, not to this relay: make it "
             f"`elsewhere.custom.test. CNAME c.{DOMAIN}.` (or `elsewhere.custom.test. "
             f"A {RELAY_PUBLIC}`)")):
        unbacked_claim(w, relay, relay_addr, name, state_dir, domain, web_port,
                       wanted).stop()
    # The user adds the missing record: the waiting peer's next ask passes.
    dns.stop()
    dns = start_dns(records + [f"--txt-record=_natfwd.notxt.custom.test,{nf.key_id(a_dir)}"])
    waiting.wait_stdout(r"^published https://notxt\.custom\.test/ ", timeout=40,
                        what="the claim once its TXT record is there")
    print("notxt.custom.test: published once its TXT record was added, without a restart")
    waiting.stop()
    refused_claim(w, relay, relay_addr, "other", other_dir, HOST, web_port,
                  f"custom domain {HOST} is held at this relay by key {home_id}")

    # The first claim still routes.
    again = subprocess.run(
        ["curl", "-sS", "--max-time", str(scaled(30)), "--resolve",
         f"{HOST}:{relay_port}:127.0.0.1", "--cacert", cert, f"https://{HOST}:{relay_port}/"],
        capture_output=True, timeout=scaled(30) + 10)
    if again.stdout != page:
        raise Failure(f"after the refusals: {again.stderr!r}")
    print(f"relay domains: {held_by(nf, relay_dir, home_id)}")
    home.check_running("at the end")
    relay.check_running("at the end")

    # The claim outlives the relay: after a restart the second key is still refused.
    home.stop()
    relay.stop()
    relay, relay_addr = nf.relay(state_dir=relay_dir, listen=relay_addr, extra=[
        "--publish-domain", DOMAIN, "--publish-http", "127.0.0.1:0", "--allow-publisher",
        "any", "--publish-address", RELAY_PUBLIC])
    refused_claim(w, relay, relay_addr, "other", other_dir, HOST, web_port,
                  f"custom domain {HOST} is held at this relay by key {home_id}")

    # The holder hands the name to the second key (a reinstall), which the DNS names
    # too: its claim now passes and it serves the name.
    handed = subprocess.run([nf.peer_bin, "--relay", relay_addr, "--state-dir", home_dir,
                             "handover", HOST, other_id],
                            capture_output=True, text=True, timeout=scaled(30))
    if handed.returncode != 0:
        raise Failure(f"peer handover {HOST}: exit {handed.returncode}: {handed.stderr!r}")
    heir = w.group.start("peer --publish https:custom (the heir)", [
        nf.peer_bin, "--relay", relay_addr, "--name", "other", "--state-dir", other_dir,
        "--publish", f"https:{HOST}={web_port},cert={cert},key={key}"])
    heir.wait_stdout(r"^published https://" + re.escape(HOST) + "/ ", timeout=30,
                     what="the heir's published ready line")
    print(f"handed over: relay domains: {held_by(nf, relay_dir, other_id)}")


if __name__ == "__main__":
    if "--inside" in sys.argv:
        run(test)
    else:
        in_namespace()

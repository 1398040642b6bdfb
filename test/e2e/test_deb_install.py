#!/usr/bin/env python3
"""The Debian packages, installed with dpkg on this machine and removed again.

1. `scripts/package` builds natfwd-relay and natfwd-peer (lintian clean, or it fails);
   $NATFWD_DEBS names a folder with both .debs to test those instead.
2. `dpkg -i` installs both: the binaries, man pages, units, sysusers.d entry and
   examples each in its package, the man pages naming the examples' folder; the
   installed units run /usr/bin/relay|peer; the system user natfwd exists (the
   postinst applied sysusers.d/natfwd.conf); the relay's unit is not enabled (no
   symlink to it under /etc/systemd/system, which is what `systemctl enable` makes, so
   this holds without a running systemd) and, where systemd runs, not started.
3. The installed programs work: a relay on 127.0.0.1:0 with a temp state dir reaches its
   ready line, `peer --help` and `peer id` work, and bytes go through a tunnel between
   two installed peers.
4. `dpkg --purge` removes both, also after a failure. Purge leaves the system user
   natfwd, as Debian packages do (files it owned elsewhere would otherwise pass to the
   next user given its uid); the test made it, so the test removes it, and checks
   that nothing else of the packages is left.

Root only (dpkg -i); as anyone else the test is skipped (exit 77).
"""
import gzip
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile

from harness import SKIP, Failure, Natfwd, TargetServer, connect, echo, recv_all, scaled
from procs import ProcGroup

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_ROOT = os.environ.get("BUILD_ROOT") or os.path.join(ROOT, "build")
PACKAGES = ("natfwd-relay", "natfwd-peer")
RELAY_EXAMPLE = "/usr/share/doc/natfwd-relay/examples/relay.conf.example"
PEER_EXAMPLE = "/usr/share/doc/natfwd-peer/examples/peer.conf.example"
# What each package must hold (man pages compressed by dh_compress).
CONTENTS = {
    "natfwd-relay": ["/usr/bin/relay", "/lib/systemd/system/natfwd-relay.service",
                     "/usr/share/man/man1/relay.1.gz",
                     "/usr/share/doc/natfwd-relay/copyright",
                     RELAY_EXAMPLE],
    "natfwd-peer": ["/usr/bin/peer", "/lib/systemd/system/natfwd-peer@.service",
                    "/usr/lib/sysusers.d/natfwd.conf", "/usr/share/man/man1/peer.1.gz",
                    "/usr/share/doc/natfwd-peer/copyright",
                    PEER_EXAMPLE,
                    "/usr/share/doc/natfwd-peer/examples/peer-laptop.conf.example"],
}
DPKG_ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")


def sh(argv, timeout=120, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=scaled(timeout),
                          env=DPKG_ENV, **kwargs)


def installed(pkg):
    r = sh(["dpkg-query", "-W", "-f=${Status}", pkg])
    return r.returncode == 0 and r.stdout.strip() != "" and "not-installed" not in r.stdout


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def build_debs():
    """The two .debs: from $NATFWD_DEBS, else built now by scripts/package into the
    build dir (a fixed path, so that ccache serves the next run)."""
    given = os.environ.get("NATFWD_DEBS")
    if given:
        debs = sorted(os.path.join(given, f) for f in os.listdir(given)
                      if f.endswith(".deb") and f.split("_")[0] in PACKAGES)
        if len(debs) != 2:
            raise Failure(f"NATFWD_DEBS={given} should hold one .deb of each of {PACKAGES}: "
                          f"{debs}")
        return debs
    out = os.path.join(BUILD_ROOT, "package-deb")
    r = sh([os.path.join(ROOT, "scripts", "package"), out], timeout=600)
    if r.returncode != 0:
        raise Failure(f"scripts/package exited {r.returncode}:\n{r.stderr[-4000:]}")
    debs = r.stdout.strip().split("\n")[-2:]
    for deb in debs:
        if not deb.endswith(".deb") or not os.path.isfile(deb):
            raise Failure(f"scripts/package's last lines should be the .debs: {r.stdout!r}")
    print(f"built {' '.join(debs)}", flush=True)
    return debs


def check_installed(problems):
    for pkg, paths in CONTENTS.items():
        listed = set(sh(["dpkg", "-L", pkg]).stdout.split("\n"))
        for path in paths:
            if path not in listed or not os.path.exists(path):
                problems.append(f"{pkg} should install {path}")
    for unit, binary in (("natfwd-relay.service", "/usr/bin/relay"),
                         ("natfwd-peer@.service", "/usr/bin/peer")):
        text = open(os.path.join("/lib/systemd/system", unit)).read()
        m = re.search(r"^ExecStart=(\S+)", text, re.M)
        if not m or m.group(1) != binary:
            problems.append(f"{unit}: ExecStart should run {binary}: {m and m.group(0)}")
    # Each man page names its package's example, where the package put it.
    for page, example in (("relay.1.gz", RELAY_EXAMPLE), ("peer.1.gz", PEER_EXAMPLE)):
        with gzip.open(os.path.join("/usr/share/man/man1", page), "rt") as f:
            text = f.read().replace("\\-", "-")
        if example not in text:
            problems.append(f"{page} should name {example}")
    try:
        home = pwd.getpwnam("natfwd").pw_dir
        if home != "/var/lib/natfwd":
            problems.append(f"user natfwd's home is {home}, sysusers.d says /var/lib/natfwd")
    except KeyError:
        problems.append("the postinst should have made the user natfwd (sysusers.d/natfwd.conf)")
    # `systemctl enable` links the unit from /etc/systemd/system/*.wants/.
    for dirpath, _dirs, files in os.walk("/etc/systemd/system"):
        for f in files:
            if f == "natfwd-relay.service":
                problems.append(f"natfwd-relay.service is enabled on install: "
                                f"{os.path.join(dirpath, f)}")
    if os.path.isdir("/run/systemd/system"):
        r = sh(["systemctl", "is-active", "natfwd-relay.service"])
        if r.stdout.strip() == "active":
            problems.append("natfwd-relay.service was started on install")


def check_programs(tmpdir, problems):
    r = sh(["/usr/bin/peer", "--help"], timeout=20)
    if r.returncode != 0 or "--relay" not in r.stdout + r.stderr:
        problems.append(f"installed peer --help exited {r.returncode}: {r.stderr[-500:]}")
    group = ProcGroup()
    try:
        natfwd = Natfwd(group, tmpdir, "/usr/bin/relay", "/usr/bin/peer")
        r = sh(["/usr/bin/peer", "id", "--state-dir", natfwd.state_dir("id")], timeout=20)
        # The key id (base32 of the key's hash) and the SHA256 fingerprint.
        if r.returncode != 0 or not re.fullmatch(r"[a-z2-7]{32}\nSHA256:[A-Za-z0-9+/]{43}\n",
                                                 r.stdout):
            problems.append(f"installed peer id exited {r.returncode} and printed "
                            f"{r.stdout!r}, not a key id and fingerprint")
        _, relay_addr = natfwd.relay()
        target = TargetServer(echo)
        try:
            natfwd.serve(relay_addr, "home", [target.addr])
            _, (laddr,) = natfwd.forward(relay_addr, "home", [f"0:{target.addr}"])
            with connect(laddr) as s:
                s.sendall(b"natfwd from the .debs")
                s.shutdown(1)
                n, _digest = recv_all(s)
            if n != len(b"natfwd from the .debs"):
                problems.append(f"tunnel between installed peers echoed {n} bytes, not 21")
        finally:
            target.close()
    finally:
        group.stop_all()


def purge(made_user, problems):
    r = sh(["dpkg", "--purge", *PACKAGES])
    if r.returncode != 0:
        problems.append(f"dpkg --purge exited {r.returncode}: {r.stderr[-2000:]}")
    for pkg in PACKAGES:
        if installed(pkg):
            problems.append(f"{pkg} is still installed after dpkg --purge")
    for path in [p for paths in CONTENTS.values() for p in paths]:
        if os.path.lexists(path):
            problems.append(f"{path} is left after dpkg --purge")
    if made_user and user_exists("natfwd"):
        subprocess.run(["userdel", "natfwd"], check=False)
        subprocess.run(["groupdel", "natfwd"], capture_output=True, check=False)
        if user_exists("natfwd"):
            problems.append("could not remove the user natfwd the install made")


def main():
    if os.geteuid() != 0:
        print("SKIP: installs .debs with dpkg -i: root only", flush=True)
        sys.exit(SKIP)
    if shutil.which("dpkg") is None:
        print("SKIP: no dpkg: not a Debian system", flush=True)
        sys.exit(SKIP)
    already = [p for p in PACKAGES if installed(p)]
    if already:
        # Purging them at the end would take away the admin's install.
        print(f"SKIP: {' '.join(already)} already installed on this machine", flush=True)
        sys.exit(SKIP)
    debs = build_debs()
    made_user = not user_exists("natfwd")
    tmpdir = tempfile.mkdtemp(prefix="natfwd-deb-")
    problems = []
    try:
        r = sh(["dpkg", "-i", *debs])
        if r.returncode != 0:
            raise Failure(f"dpkg -i exited {r.returncode}:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
        check_installed(problems)
        check_programs(tmpdir, problems)
    finally:
        purge(made_user, problems)
        shutil.rmtree(tmpdir, ignore_errors=True)
    if problems:
        raise Failure("\n  ".join(["the installed packages:"] + problems))
    print("PASS: test_deb_install.py", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
        sys.exit(1)

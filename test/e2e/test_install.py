#!/usr/bin/env python3
"""`meson install` layout, the systemd units and the man pages, from a real install.

1. `meson install --destdir TMP` puts the binaries in bindir, the units in systemd's
   unit dir (systemd.pc under our prefix, else PREFIX/lib/systemd/system), the
   sysusers.d entry, the man pages in mandir/man1 and the three example configs in
   datadir/doc/natfwd/examples; the installed binaries run.
2. Each unit's ExecStart names the installed binary (PREFIX/bindir/relay|peer), and
   `systemd-analyze verify` (on a copy whose binary path points into TMP, since
   nothing is installed on this machine) accepts it without a single remark; the
   sysusers.d entry makes the user natfwd (systemd-sysusers --dry-run, own root).
3. Each unit's ExecStart, as systemd would run it (instance "home", /etc and /var/lib
   paths moved into the temp dir): as the user nobody with no capability and
   no_new_privs (setpriv, when the test runs as root), with the installed example
   configs, a relay and a serving peer reach their ready lines.
4. The man pages format with `groff -man -ww` without a warning, `man -l` renders
   them, and every long flag `relay --help` / `peer --help` lists is in them.
"""
import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile

from harness import Failure, run, scaled

BUILD_ROOT = os.environ.get("BUILD_ROOT") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build")


def sh(argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=scaled(120), **kwargs)


def build_options():
    r = sh(["meson", "introspect", BUILD_ROOT, "--buildoptions"])
    if r.returncode != 0:
        raise Failure(f"meson introspect: {r.stderr}")
    return {o["name"]: o["value"] for o in json.loads(r.stdout)}


def pkg_config_dir(variable, define, prefix):
    if shutil.which("pkg-config") is None:
        return None
    r = sh(["pkg-config", f"--define-variable={define}={prefix}", f"--variable={variable}",
            "systemd"])
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def expected_layout(opts):
    prefix = opts["prefix"]

    def under(d):
        return d if os.path.isabs(d) else os.path.join(prefix, d)
    unitdir = (opts.get("systemdsystemunitdir") or
               pkg_config_dir("systemdsystemunitdir", "rootprefix", prefix) or
               os.path.join(prefix, "lib/systemd/system"))
    userunitdir = (opts.get("systemduserunitdir") or
                   pkg_config_dir("systemduserunitdir", "prefix", prefix) or
                   os.path.join(prefix, "lib/systemd/user"))
    sysusersdir = (opts.get("sysusersdir") or pkg_config_dir("sysusersdir", "prefix", prefix) or
                   os.path.join(prefix, "lib/sysusers.d"))
    bindir, mandir = under(opts["bindir"]), under(opts["mandir"])
    examples = os.path.join(under(opts["datadir"]), "doc", "natfwd", "examples")
    return {
        "relay": os.path.join(bindir, "relay"),
        "peer": os.path.join(bindir, "peer"),
        "natfwd-relay.service": os.path.join(unitdir, "natfwd-relay.service"),
        "natfwd-peer@.service": os.path.join(unitdir, "natfwd-peer@.service"),
        "natfwd-peer.service (user)": os.path.join(userunitdir, "natfwd-peer.service"),
        "sysusers": os.path.join(sysusersdir, "natfwd.conf"),
        "relay.1": os.path.join(mandir, "man1", "relay.1"),
        "peer.1": os.path.join(mandir, "man1", "peer.1"),
        "relay.conf.example": os.path.join(examples, "relay.conf.example"),
        "peer.conf.example": os.path.join(examples, "peer.conf.example"),
        "peer-laptop.conf.example": os.path.join(examples, "peer-laptop.conf.example"),
    }


def check_units(dest, layout, problems):
    bindir = os.path.dirname(layout["relay"])
    scratch = tempfile.mkdtemp(prefix="units-", dir=dest)
    for unit, program in (("natfwd-relay.service", "relay"), ("natfwd-peer@.service", "peer")):
        with open(dest + layout[unit]) as f:
            text = f.read()
        m = re.search(r"^ExecStart=(\S+)", text, re.M)
        if not m or m.group(1) != layout[program]:
            problems.append(f"{unit}: ExecStart runs {m.group(1) if m else None}, "
                            f"installed binary is {layout[program]}")
            continue
        copy = os.path.join(scratch, unit)
        with open(copy, "w") as f:
            f.write(text.replace(f"ExecStart={bindir}/", f"ExecStart={dest}{bindir}/"))
        name = unit.replace("@.", "@home.")
        r = sh(["systemd-analyze", "verify", "--man=no", os.path.join(scratch, name)])
        remarks = [l for l in (r.stdout + r.stderr).splitlines()
                   if "natfwd" in l or scratch in l]
        if r.returncode != 0 or remarks:
            problems.append(f"systemd-analyze verify {name}: exit {r.returncode}: {remarks}")
        for needed in ("ProtectSystem=strict", "NoNewPrivileges=yes", "ProtectHome=yes",
                       "PrivateTmp=yes", "StateDirectory=natfwd/", "Restart=on-failure",
                       "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
                       "CapabilityBoundingSet="):
            if needed not in text:
                problems.append(f"{unit}: no {needed}")


def check_user_unit(dest, layout, problems):
    """The laptop's user service: runs the installed peer with the user's peer.conf,
    verifies clean, and stops restarting on a usage error or a lasting refusal."""
    unit = "natfwd-peer.service (user)"
    with open(dest + layout[unit]) as f:
        text = f.read()
    m = re.search(r"^ExecStart=(\S+)$", text, re.M)
    if not m or m.group(1) != layout["peer"]:
        problems.append(f"{unit}: ExecStart runs {m.group(1) if m else None}, "
                        f"installed binary is {layout['peer']}")
        return
    for needed in ("RestartPreventExitStatus=2 3", "WantedBy=default.target"):
        if needed not in text:
            problems.append(f"{unit}: no {needed}")
    scratch = tempfile.mkdtemp(prefix="user-unit-", dir=dest)
    copy = os.path.join(scratch, "natfwd-peer.service")
    with open(copy, "w") as f:
        f.write(text.replace(f"ExecStart={layout['peer']}", f"ExecStart={dest}{layout['peer']}"))
    r = sh(["systemd-analyze", "verify", "--man=no", copy])
    remarks = [l for l in (r.stdout + r.stderr).splitlines() if "natfwd" in l or scratch in l]
    if r.returncode != 0 or remarks:
        problems.append(f"systemd-analyze verify {unit}: exit {r.returncode}: {remarks}")


def check_sysusers(dest, layout, problems):
    """The user natfwd-peer@.service runs as, made by systemd-sysusers into an empty
    root of our own, without writing (--dry-run)."""
    root = tempfile.mkdtemp(prefix="sysusers-root-", dir=dest)
    os.makedirs(os.path.join(root, "etc"))
    r = sh(["systemd-sysusers", f"--root={root}", "--dry-run", dest + layout["sysusers"]])
    if r.returncode != 0 or "Creating user 'natfwd'" not in r.stdout + r.stderr:
        problems.append(f"systemd-sysusers {layout['sysusers']}: exit {r.returncode}: "
                        f"{(r.stdout + r.stderr).strip()}")


def exec_start(dest, layout, unit, instance):
    with open(dest + layout[unit]) as f:
        line = re.search(r"^ExecStart=(.*)$", f.read(), re.M).group(1)
    return shlex.split(line.replace("%i", instance))


def run_as_the_units_would(w, dest, layout):
    as_root = os.geteuid() == 0
    nobody = pwd.getpwnam("nobody")
    # The unprivileged user must reach the installed binaries and the files below.
    os.chmod(w.tmpdir, 0o755)
    base = tempfile.mkdtemp(prefix="units-run-", dir=w.tmpdir)
    os.chmod(base, 0o755)

    def moved(path, directory):
        target = base + path
        os.makedirs(target if directory else os.path.dirname(target), mode=0o755,
                    exist_ok=True)
        if directory:
            os.chmod(target, 0o700)
            if as_root:
                os.chown(target, nobody.pw_uid, nobody.pw_gid)
        return target

    def as_service(argv, replacements):
        argv = [replacements.get(a, a) for a in argv]
        argv[0] = dest + argv[0]
        if not as_root:
            return argv
        return ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                "--clear-groups", "--no-new-privs", "--inh-caps=-all",
                "--bounding-set=-all"] + argv

    env = dict(os.environ, HOME="/nonexistent", XDG_CONFIG_HOME="/nonexistent")
    env.pop("NATFWD_RELAY", None)
    argv = exec_start(dest, layout, "natfwd-relay.service", "")
    state = [a for a in argv if a.startswith("/var/lib/")]
    relay_conf = moved("/etc/natfwd/relay.conf", False)
    shutil.copy(dest + layout["relay.conf.example"], relay_conf)
    relay = w.group.start("relay (as its unit runs it)",
                          as_service(argv, {p: moved(p, True) for p in state}) +
                          ["--config", relay_conf, "--listen", "127.0.0.1:0"], env=env)
    relay_addr = relay.wait_stdout(r"^relay listening on (\S+) ",
                                   what="ready line of the relay unit's ExecStart").group(1)

    argv = exec_start(dest, layout, "natfwd-peer@.service", "home")
    paths = {a: moved(a, True) for a in argv if a.startswith("/var/lib/")}
    for conf in (a for a in argv if a.startswith("/etc/")):
        paths[conf] = moved(conf, False)
        with open(dest + layout["peer.conf.example"]) as f:
            text = f.read()
        with open(paths[conf], "w") as f:
            f.write(re.sub(r"^relay = .*$", f"relay = {relay_addr}", text, flags=re.M))
    peer = w.group.start("peer@home (as its unit runs it)", as_service(argv, paths), env=env)
    m = peer.wait_stdout(r"^registered as (\S+) at (\S+), serving (.*)$",
                         what="ready line of natfwd-peer@home's ExecStart")
    if m.group(1) != "home" or "buffalo:22" not in m.group(3):
        raise Failure(f"natfwd-peer@home with the example config: {m.group(0)!r}")
    peer.stop()
    relay.stop()
    return "as nobody without capabilities" if as_root else "as this user"


def help_flags(binary):
    r = sh([binary, "--help"])
    return set(re.findall(r"^\s+(?:-\w, )?--([\w-]+)", r.stdout, re.M)) - {"help"}


def check_man_pages(dest, layout, problems):
    for page, program in (("relay.1", "relay"), ("peer.1", "peer")):
        path = dest + layout[page]
        r = sh(["groff", "-man", "-Tutf8", "-ww", "-z", path])
        if r.returncode != 0 or r.stderr.strip():
            problems.append(f"groff -man -ww {page}: exit {r.returncode}: {r.stderr.strip()}")
        r = sh(["man", "-l", path], env=dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING=""))
        if r.returncode != 0 or "EXIT STATUS" not in r.stdout:
            problems.append(f"man -l {page}: exit {r.returncode}, {len(r.stdout)} bytes")
        with open(path) as f:
            source = f.read().replace("\\-", "-")
        if re.search("@[A-Z]+" + "@", source):
            problems.append(f"{page}: placeholders left")
        for flag in help_flags(dest + layout[program]):
            if f"--{flag}" not in source:
                problems.append(f"{page} does not document --{flag}")


def test(w):
    dest = os.path.join(w.tmpdir, "destdir")
    r = sh(["meson", "install", "-C", BUILD_ROOT, "--no-rebuild", "--quiet", "--destdir", dest])
    if r.returncode != 0:
        raise Failure(f"meson install failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    layout = expected_layout(build_options())
    problems = [f"{what}: {dest + path} not installed" for what, path in layout.items()
                if not os.path.isfile(dest + path)]
    if problems:
        found = [os.path.join(d, f)[len(dest):] for d, _, fs in os.walk(dest) for f in fs]
        raise Failure("\n".join(problems) + "\ninstalled:\n  " + "\n  ".join(sorted(found)))
    for program in ("relay", "peer"):
        if sh([dest + layout[program], "--help"]).returncode != 0:
            problems.append(f"installed {program} --help fails")
    check_units(dest, layout, problems)
    check_user_unit(dest, layout, problems)
    check_sysusers(dest, layout, problems)
    check_man_pages(dest, layout, problems)
    if problems:
        raise Failure("\n".join(problems))
    how = run_as_the_units_would(w, dest, layout)
    print(f"installed and checked {len(layout)} files; ran both units' ExecStart {how}")


if __name__ == "__main__":
    run(test)

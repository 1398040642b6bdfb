#!/usr/bin/env python3
"""The README's quick start, walked literally from a fresh install (root: a netns).

1. `meson install --destdir TMP` (as the README's Install section says, into a
   temporary root); the installed `relay` and `peer` come first on PATH. Every package
   the README's Install section lists to build is installed here, and the libraries the
   installed binaries load (ldd) come from the packages its runtime lists name.
2. The first code block of README.md is read from README.md itself, one `MACHINE$
   COMMAND   # comment` a line, and each line runs as written with bash, as the user
   nobody with a home of its own per machine (vps, home, laptop: their default state
   dirs are apart), inside a network namespace of this test: `vps.example` and
   `buffalo` name its loopback (/etc/netns/NS/hosts), so the README's fixed ports
   (3478, 2222, 22) are free, and a throwaway sshd listens on buffalo:22.
   `export` sets the machine's environment; a `peer` subcommand (`invite`, `pair`)
   runs to its end and must exit 0 (the CODE `peer invite` prints is what `peer pair
   CODE` gets); anything else (`relay`, `peer ... &`, `peer -L`) is a program that
   serves, and must print its ready line and keep running.
3. The last line's comment, `then: ssh -p 2222 localhost`: ssh runs a command on the
   sshd behind buffalo:22 through the laptop's -L port.
"""
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

from harness import SKIP, Failure, run, scaled
from sshd_inetd import have_ssh_tools, ssh_argv

SOURCE_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
BUILD_ROOT = os.environ.get("BUILD_ROOT") or os.path.join(SOURCE_ROOT, "build")
SSHD_TOOL = os.path.join(SOURCE_ROOT, "test", "tools", "sshd_inetd.py")
LINE_RE = re.compile(r"^(\w+)\$\s+(.*?)\s*(?:#\s*(.*))?$")


def sh(argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=scaled(120), **kwargs)


def readme():
    with open(os.path.join(SOURCE_ROOT, "README.md")) as f:
        return f.read()


def quick_start(text):
    """(machine, command, comment) of each line of the README's first code block."""
    block = re.search(r"^```\n(.*?)^```", text, re.M | re.S).group(1)
    lines = []
    for line in block.splitlines():
        m = LINE_RE.match(line)
        if not m:
            raise Failure(f"README quick start: cannot read the line {line!r}")
        lines.append(m.groups())
    return lines


def install_section_packages(text):
    """The README's Install section: the packages of its `apt-get install` line, and
    its runtime sentence's packages per program."""
    section = re.search(r"^## Install\n(.*?)^## ", text, re.M | re.S).group(1)
    m = re.search(r"apt-get install --no-install-recommends (.*?)\nmeson setup", section, re.S)
    build = m.group(1).replace("\\\n", " ").split()
    m = re.search(r"To run, `relay` needs\s+(.*?);\s+`peer` needs\s+(.*?)\.\n", section, re.S)
    if not m:
        raise Failure("README Install: no sentence 'To run, `relay` needs ...; `peer` needs ...'")
    runtime = {prog: {word for span in re.findall(r"`([^`]*)`", m.group(i)) for word in span.split()}
               for prog, i in (("relay", 1), ("peer", 2))}
    return build, runtime


def package_of_files():
    """Installed file -> Debian package, from dpkg's own lists (dpkg -S per file is slow)."""
    owners = {}
    info = "/var/lib/dpkg/info"
    for name in os.listdir(info):
        if name.endswith(".list"):
            package = name[:-len(".list")].split(":")[0]
            with open(os.path.join(info, name), errors="replace") as f:
                for line in f:
                    owners[line.rstrip("\n")] = package
    return owners


def check_packages(text, dest, bindir, problems):
    build, runtime = install_section_packages(text)
    for package in build:
        r = sh(["dpkg-query", "-W", "-f=${Status}", package])
        if r.stdout != "install ok installed":
            problems.append(f"README Install: build package {package} is not installed here, "
                            "yet the build succeeded: is it the right name?")
    owners = package_of_files()
    for program, packages in runtime.items():
        binary = dest + os.path.join(bindir, program)
        needed = set(re.findall(r"NEEDED\s+(\S+)", sh(["objdump", "-p", binary]).stdout))
        # What the binary links itself (its NEEDED entries) must be in its list; what
        # those libraries pull in is theirs to name.
        for soname, path in re.findall(r"^\s*(\S+) => (/\S+)", sh(["ldd", binary]).stdout, re.M):
            if soname not in needed:
                continue
            package = owners.get(path) or owners.get(os.path.realpath(path)) or \
                owners.get(os.path.realpath(path).replace("/usr/lib/", "/lib/"), "?")
            if package in ("libc6", "libgcc-s1", "libstdc++6"):
                continue
            if package not in packages:
                problems.append(f"README Install: `{program}` links {soname} from {package}, "
                                f"which its runtime list ({' '.join(sorted(packages))}) does "
                                "not name")


def test(w):
    if os.geteuid() != 0:
        print("SKIP: the README walk needs root (a network namespace of its own)")
        sys.exit(SKIP)
    if not have_ssh_tools():
        print("SKIP: sshd/ssh/ssh-keygen not installed (openssh-server, openssh-client)")
        sys.exit(SKIP)
    text = readme()
    dest = os.path.join(w.tmpdir, "destdir")
    r = sh(["meson", "install", "-C", BUILD_ROOT, "--no-rebuild", "--quiet", "--destdir", dest])
    if r.returncode != 0:
        raise Failure(f"meson install failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    prefix_bindir = None
    for root, _, files in os.walk(dest):
        if "relay" in files and "peer" in files:
            prefix_bindir = root
    if not prefix_bindir:
        raise Failure(f"meson install put no relay and peer into one folder under {dest}")
    print(f"installed into {dest}; checking the README's package lists", flush=True)
    problems = []
    check_packages(text, dest, prefix_bindir[len(dest):], problems)
    if problems:
        raise Failure("\n".join(problems))

    nobody = pwd.getpwnam("nobody")
    os.chmod(w.tmpdir, 0o755)
    ns = f"natfwd-readme-{os.getpid()}"
    if sh(["ip", "netns", "add", ns]).returncode != 0:
        raise Failure(f"ip netns add {ns} failed")
    w.on_cleanup(lambda: sh(["ip", "netns", "del", ns]))
    sh(["ip", "-n", ns, "link", "set", "lo", "up"])
    # getaddrinfo's AI_ADDRCONFIG (GLib's resolver) finds no name while loopback is the
    # only address: one more, on a veth pair inside the namespace, as any machine has.
    for argv in (["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
                 ["addr", "add", "192.0.2.1/24", "dev", "eth0"],
                 ["link", "set", "eth0", "up"], ["link", "set", "eth1", "up"]):
        if (r := sh(["ip", "-n", ns, *argv])).returncode != 0:
            raise Failure(f"ip -n {ns} {' '.join(argv)}: {r.stderr.strip()}")
    etc = f"/etc/netns/{ns}"
    os.makedirs(etc)
    w.on_cleanup(lambda: shutil.rmtree(etc, ignore_errors=True))
    with open(os.path.join(etc, "hosts"), "w") as f:
        f.write("127.0.0.1 localhost vps.example buffalo\n::1 localhost\n")

    sshd_dir = tempfile.mkdtemp(prefix="sshd-", dir=w.tmpdir)
    sshd = w.group.start("sshd on buffalo:22", ["python3", SSHD_TOOL, "--dir", sshd_dir,
                                               "--listen", "127.0.0.1:22"], netns=ns)
    key = sshd.wait_stdout(r"^user \S+ key (\S+)$", 30, what="the throwaway sshd").group(1)

    envs = {}

    def machine_env(machine):
        if machine not in envs:
            home = os.path.join(w.tmpdir, f"home-of-{machine}")
            os.makedirs(home, mode=0o700)
            os.chown(home, nobody.pw_uid, nobody.pw_gid)
            envs[machine] = {"HOME": home, "PATH": prefix_bindir + ":/usr/bin:/bin",
                             "LANG": "C.UTF-8"}
        return envs[machine]

    def as_machine(machine, command):
        env = machine_env(machine)
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        return ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                "--clear-groups", "--no-new-privs", "env", "-i", *shlex.split(exports),
                "bash", "-c", "exec " + command]

    code = None
    walked = []
    for machine, command, comment in quick_start(text):
        env = machine_env(machine)
        if command.startswith("export "):
            name, _, value = command[len("export "):].partition("=")
            env[name] = value
            walked.append(f"{machine}$ {command}")
            continue
        if "CODE" in command.split():
            if code is None:
                raise Failure(f"README quick start: {command!r} before any `peer invite`")
            command = re.sub(r"\bCODE\b", code, command)
        command = command.rstrip("&").strip()
        words = command.split()
        ends_by_itself = words[0] == "peer" and any(
            word in ("invite", "pair", "id", "status") for word in words[1:])
        print(f"{machine}$ {command}", flush=True)
        p = w.group.start(f"{machine}$ {command}", as_machine(machine, command), netns=ns)
        if ends_by_itself:
            status = p.wait_exit(scaled(90))
            if status != 0:
                raise Failure(f"README quick start: `{command}` on {machine} exited {status}\n"
                              f"{p.describe()}")
            if words[1] == "invite":
                code = p.stdout_lines[0].strip()
        else:
            ready = p.wait_stdout(r".", 60, what=f"the ready line of `{command}` ({machine})")
            walked.append(f"{machine}$ {command}  ->  {ready.string}")
            p.check_running(f"`{command}` after its ready line")
            continue
        walked.append(f"{machine}$ {command}  ->  exit 0")

    m = re.search(r"ssh -p (\d+) (\S+)", comment or "")
    if not m:
        raise Failure(f"README quick start: the last comment {comment!r} names no ssh command")
    argv = ssh_argv(key, "root", m.group(2), int(m.group(1)), "echo", "walked")
    r = sh(["ip", "netns", "exec", ns, *argv])
    if r.returncode != 0 or r.stdout.strip() != "walked":
        raise Failure(f"`{' '.join(m.group(0).split())}` through the README's tunnel: exit "
                      f"{r.returncode}, {r.stdout!r} {r.stderr!r}\n" + "\n".join(p.describe() for p in w.group.procs) + "")
    walked.append(f"laptop$ {m.group(0)}  ->  ran a command")
    print("walked the README's quick start as written:\n  " + "\n  ".join(walked))


if __name__ == "__main__":
    run(test)

#!/usr/bin/env python3
"""`meson setup` on a machine without Catch2, as a VPS owner's (-Dtests).

Catch2 is hidden from meson: pkg-config sees every .pc file of this machine but
catch2's, and a native file names `false` as cmake, so neither finder meson uses
for dependency('catch2') can see it.

1. The default (-Dtests=auto) configures relay and peer, says in one line that the
   tests are left out, and registers no test.
2. -Dtests=disabled configures them without looking for Catch2.
3. -Dtests=enabled stops with an error that names the Debian package and the way out.
4. With Catch2 visible (when it is installed), auto registers the unit tests.
"""
import json
import os
import shutil
import subprocess
import sys

from harness import SKIP, Failure, run, scaled

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sh(argv, env=None):
    return subprocess.run(argv, capture_output=True, text=True, timeout=scaled(180),
                          env=env)


def hide_catch2(tmp):
    """A PKG_CONFIG_LIBDIR with this machine's .pc files less catch2's, and a native
    file without cmake."""
    pcdir = os.path.join(tmp, "pkgconfig")
    os.mkdir(pcdir)
    path = sh(["pkg-config", "--variable", "pc_path", "pkg-config"]).stdout.strip()
    for d in path.split(":"):
        if not os.path.isdir(d):
            continue
        for f in os.listdir(d):
            link = os.path.join(pcdir, f)
            if f.endswith(".pc") and not f.lower().startswith("catch2") \
                    and not os.path.exists(link):
                os.symlink(os.path.join(d, f), link)
    native = os.path.join(tmp, "no-cmake.ini")
    with open(native, "w") as f:
        f.write("[binaries]\ncmake = 'false'\n")
    return dict(os.environ, PKG_CONFIG_LIBDIR=pcdir), ["--native-file", native]


def setup(tmp, name, args, env):
    build = os.path.join(tmp, name)
    r = sh(["meson", "setup", build, ROOT, *args], env=env)
    return build, r, r.stdout + r.stderr


def introspect(build, what):
    r = sh(["meson", "introspect", build, what])
    if r.returncode != 0:
        raise Failure(f"meson introspect {what}: {r.stderr}")
    return json.loads(r.stdout)


def programs(build):
    return {t["name"] for t in introspect(build, "--targets") if t["type"] == "executable"}


def test(w):
    if shutil.which("meson") is None or shutil.which("pkg-config") is None:
        print("SKIP: meson and pkg-config are needed", flush=True)
        sys.exit(SKIP)
    tmp = w.tmpdir
    problems = []
    env, native = hide_catch2(tmp)

    build, r, out = setup(tmp, "auto", native, env)
    if r.returncode != 0:
        raise Failure(f"meson setup without Catch2 exited {r.returncode}:\n{out[-3000:]}")
    if "Catch2 2.x not found: building relay and peer without the tests" not in out:
        problems.append(f"auto without Catch2 should say the tests are left out:\n{out}")
    if introspect(build, "--tests"):
        problems.append("auto without Catch2 registered tests")
    if not {"relay", "peer"} <= programs(build):
        problems.append(f"auto without Catch2 should build relay and peer: {programs(build)}")

    build, r, out = setup(tmp, "disabled", [*native, "-Dtests=disabled"], env)
    if r.returncode != 0 or "dependency catch2" in out.lower():
        problems.append(f"-Dtests=disabled exited {r.returncode} or looked for Catch2:\n{out}")
    elif introspect(build, "--tests") or not {"relay", "peer"} <= programs(build):
        problems.append("-Dtests=disabled should register no test and build relay and peer")

    _, r, out = setup(tmp, "enabled", [*native, "-Dtests=enabled"], env)
    wanted = ("-Dtests=enabled needs Catch2 2.x (Debian package catch2); "
              "install it or use -Dtests=disabled")
    if r.returncode == 0 or wanted not in out:
        problems.append(f"-Dtests=enabled without Catch2 exited {r.returncode}; "
                        f"it should fail with {wanted!r}:\n{out[-2000:]}")

    if sh(["pkg-config", "--exists", "catch2"]).returncode == 0:
        build, r, out = setup(tmp, "with-catch2", [], None)
        units = [t for t in introspect(build, "--tests")
                 if any(suite.split(":")[-1] == "unit" for suite in t["suite"])]
        if r.returncode != 0 or not units:
            problems.append(f"auto with Catch2 installed should register the unit tests "
                            f"(exit {r.returncode}, {len(units)} unit tests)")
    if problems:
        raise Failure("\n  ".join(["meson setup and -Dtests:"] + problems))


if __name__ == "__main__":
    run(test)

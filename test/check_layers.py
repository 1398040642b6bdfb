#!/usr/bin/env python3
"""The include graph's rule (HACKING.md, "Layers"): relay/ and peer/ stand side by side
on the shared base (proto/, stun/, common/); neither includes the other, and the base
includes neither. One exception: the relay's publishing front door (relay/front_door/)
connects to home peers as a peer, with the peer's connecting library (CONNECT_LIBRARY,
meson's peer_connect); that library in turn includes nothing else of the peer, so the
relay never links the peer's serving side, forwarders or main.

Resolves every #include "..." the way the build's include paths do (the file's own
folder, its area's include directories, then the shared ones) and fails, naming each
file:line, when an include lands in a forbidden area.

    test/check_layers.py [SOURCE_ROOT]      exit 0 clean, 1 violations
"""
import os
import re
import sys

# Include directories per area, as the meson.build files set them (paths relative to
# the source root; "" is the root itself, which proto_dep and stun_dep put on the path).
AREA_DIRS = {
    "peer": ["peer", "peer/quic"],
    "relay": ["relay"],
    "common": ["common"],
    "stun": [],
    "proto": [],
}
SHARED_DIRS = ["", "proto", "common"]
FORBIDDEN = {
    "peer": {"relay"},
    "relay": {"peer"},
    "common": {"peer", "relay"},
    "stun": {"peer", "relay"},
    "proto": {"peer", "relay"},
}
# The peer's connecting library: folders (and single headers) both programs link.
CONNECT_LIBRARY = ["peer/config", "peer/control/peer_status.h", "peer/forward/forward_spec.h",
                   "peer/health", "peer/ice", "peer/outgoing", "peer/publish", "peer/quic",
                   "peer/relays", "peer/routing", "peer/signaling", "peer/transport",
                   "peer/portmap", "peer/punch", "peer/netcheck/nat_behaviour_probe.h",
                   "peer/trust", "peer/tunnel"]
# The only relay folder that may include it.
CONNECT_USERS = ["relay/front_door"]
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
SUFFIXES = (".h", ".hpp", ".cpp", ".cc")


def area_of(root, path):
    rel = os.path.relpath(path, root).split(os.sep)
    return rel[0] if rel[0] in FORBIDDEN else None


def in_any(root, path, prefixes):
    rel = os.path.relpath(path, root)
    return any(rel == p or rel.startswith(p + os.sep) for p in prefixes)


def resolve(root, source, name, area):
    """Where the compiler would find `name` from `source`, else where it could be found."""
    allowed = [os.path.dirname(source)] + [os.path.join(root, d) for d in AREA_DIRS[area]]
    if in_any(root, source, CONNECT_USERS):
        allowed += [os.path.join(root, d) for d in AREA_DIRS["peer"]]
    allowed += [os.path.join(root, d) for d in SHARED_DIRS]
    for directory in allowed:
        candidate = os.path.normpath(os.path.join(directory, name))
        if os.path.isfile(candidate):
            return candidate
    # Not on this area's path: the include only builds if someone adds another
    # program's folder to it, which is what this check is for.
    for other in FORBIDDEN[area]:
        for directory in AREA_DIRS[other]:
            candidate = os.path.normpath(os.path.join(root, directory, name))
            if os.path.isfile(candidate):
                return candidate
    return None  # generated (rendezvous.pb.h) or a system header in quotes


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(__file__), ".."))
    violations = []
    checked = 0
    for area in FORBIDDEN:
        for folder, _, files in os.walk(os.path.join(root, area)):
            for file in sorted(files):
                if not file.endswith(SUFFIXES):
                    continue
                source = os.path.join(folder, file)
                checked += 1
                with open(source, encoding="utf-8", errors="replace") as text:
                    for number, line in enumerate(text, 1):
                        match = INCLUDE.match(line)
                        if not match:
                            continue
                        target = resolve(root, source, match.group(1), area)
                        target_area = target and area_of(root, target)
                        if (target_area == "peer" and in_any(root, source, CONNECT_USERS)
                                and in_any(root, target, CONNECT_LIBRARY)):
                            continue
                        if (in_any(root, source, CONNECT_LIBRARY) and target_area == "peer"
                                and not in_any(root, target, CONNECT_LIBRARY)):
                            violations.append(
                                f"{os.path.relpath(source, root)}:{number}: the connecting "
                                f"library includes {os.path.relpath(target, root)}, which "
                                f"is not part of it (CONNECT_LIBRARY)")
                            continue
                        if target_area in FORBIDDEN[area]:
                            violations.append(
                                f"{os.path.relpath(source, root)}:{number}: {area}/ includes "
                                f"{os.path.relpath(target, root)} ({target_area}/ is off limits)")
    for violation in violations:
        print(violation)
    print(f"check_layers: {checked} files, {len(violations)} forbidden includes")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())

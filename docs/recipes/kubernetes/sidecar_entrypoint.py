#!/usr/bin/env python3
"""Entrypoint of the spikewatch sidecar: find the app container's process and cgroup, then sample it.

With ``shareProcessNamespace: true`` the sidecar sees the app's processes in
/proc, but its own /sys/fs/cgroup shows only the *sidecar's* cgroup (cgroup
namespaces). The app container's cgroup is reachable through the app's own
mount namespace: /proc/<pid>/root/<where the app sees its cgroup fs>. This
script

1. waits for a process whose command line matches ``--match`` (not itself),
2. reads /proc/<pid>/cgroup and /proc/<pid>/mountinfo (both shown relative to
   *our* cgroup namespace, so they can be compared) to find the memory cgroup
   mount the app sees and the app's path below it,
3. execs ``spikewatch sample --pid <pid> --cgroup <dir> ARGS...``.

When the app exits, the sampler ends, this container exits and the kubelet
restarts it, so a restarted app container (new pid, new cgroup) is found again.
Needs CAP_SYS_PTRACE (or the same user as the app) to follow /proc/<pid>/root.

    sidecar_entrypoint.py --match 'gunicorn: master' [--timeout 300] [--dry-run] -- [spikewatch sample options]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time


def find_pid(pattern: str, proc: str = "/proc") -> int | None:
    """The oldest process whose NUL-joined command line matches ``pattern`` (never this one)."""
    regex = re.compile(pattern)
    me = os.getpid()
    found = []
    for entry in os.listdir(proc):
        if not entry.isdigit() or int(entry) in (me, os.getppid()):
            continue
        try:
            with open(f"{proc}/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"{proc}/{entry}/stat", "rb") as f:
                start = int(f.read().rsplit(b")", 1)[1].split()[19])
        except (OSError, ValueError, IndexError):
            continue
        if cmdline and regex.search(cmdline) and "sidecar_entrypoint" not in cmdline:
            found.append((start, int(entry)))
    return min(found)[1] if found else None


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def cgroup_dir(pid: int, proc: str = "/proc") -> tuple[str, int, str]:
    """(directory holding the app's memory cgroup files, cgroup version, how it was found)."""
    with open(f"{proc}/{pid}/cgroup") as f:
        cg_lines = f.read().splitlines()
    v2_path = v1_path = None
    for line in cg_lines:
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hid == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    with open(f"{proc}/{pid}/mountinfo") as f:
        mounts = f.read().splitlines()
    candidates = []
    for line in mounts:
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields, tail = pre.split(), post.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, point, fstype = _unescape(fields[3]), _unescape(fields[4]), tail[0]
        if fstype == "cgroup" and "memory" in tail[2].split(",") and v1_path is not None:
            candidates.append((1, root, point, v1_path, "memory.usage_in_bytes"))
        elif fstype == "cgroup2" and v2_path is not None:
            candidates.append((2, root, point, v2_path, "memory.current"))
    # v2 first; then the mount of the narrowest root: the app container's own view.
    for version, root, point, path, probe in sorted(candidates, key=lambda c: (-c[0], -len(c[1]))):
        root_s = root.rstrip("/")
        if path != root and not path.startswith(root_s + "/"):
            continue  # this mount does not show the app's cgroup
        rel = path[len(root_s):].lstrip("/")
        directory = os.path.join(f"{proc}/{pid}/root", point.lstrip("/"), rel).rstrip("/")
        if os.path.exists(os.path.join(directory, probe)):
            why = f"/proc/{pid}/cgroup says {path!r}; the app mounts {root!r} at {point}"
            return directory, version, why
    raise LookupError(
        f"no memory cgroup of pid {pid} is reachable through {proc}/{pid}/root "
        f"(its /proc/{pid}/cgroup: {'; '.join(cg_lines)}). Is CAP_SYS_PTRACE granted and is "
        "the cgroup fs mounted in the app container?"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--match", required=True, help="regex on the app's command line")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the app (0: forever)")
    ap.add_argument("--proc", default="/proc", help=argparse.SUPPRESS)
    ap.add_argument("--spikewatch", default="spikewatch", help="the spikewatch command")
    ap.add_argument("--dry-run", action="store_true", help="print the command as JSON instead of running it")
    ap.add_argument("sample_args", nargs="*", help="options passed on to spikewatch sample (after --)")
    args = ap.parse_args(argv)

    deadline = time.monotonic() + args.timeout if args.timeout > 0 else float("inf")
    pid = find_pid(args.match, args.proc)
    while pid is None:
        if time.monotonic() > deadline:
            print(f"spikewatch sidecar: no process matches {args.match!r} after {args.timeout:.0f}s "
                  "(is shareProcessNamespace: true set on the pod?)", file=sys.stderr)
            return 2
        time.sleep(0.5)
        pid = find_pid(args.match, args.proc)
    try:
        directory, version, why = cgroup_dir(pid, args.proc)
    except (LookupError, OSError) as exc:
        print(f"spikewatch sidecar: {exc}", file=sys.stderr)
        return 2
    command = [args.spikewatch, "sample", "--pid", str(pid), "--cgroup", directory, *args.sample_args]
    print(f"spikewatch sidecar: app pid {pid}, cgroup v{version} at {directory} ({why})", file=sys.stderr)
    if args.dry_run:
        print(json.dumps({"pid": pid, "cgroup_dir": directory, "version": version, "command": command}))
        return 0
    sys.stderr.flush()
    os.execvp(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())

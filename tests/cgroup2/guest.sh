#!/bin/sh
# Runs inside the guest (as root, the host's files read-only under writable
# overlays): makes the memory controller usable on cgroup2 and runs the cgroup
# tests. The lane reads the results from stdout, the only way out.
#   guest.sh REPO PYTHON [PYTEST ARGS...]   (no argument may contain a space:
#   the command line crosses a shell; the marker expression is set here)
set -u
repo=$1 python=$2
shift 2
cg=/sys/fs/cgroup
if ! grep -q " $cg cgroup2 " /proc/mounts; then
    mount -t cgroup2 cgroup2 "$cg" || { echo "guest: cannot mount cgroup2 at $cg"; exit 90; }
fi
grep -qw memory "$cg/cgroup.controllers" || { echo "guest: no memory controller in $cg/cgroup.controllers"; exit 91; }
echo +memory > "$cg/cgroup.subtree_control" || { echo "guest: cannot enable +memory in $cg"; exit 92; }
up() { cut -d' ' -f1 /proc/uptime; }
avail() { awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo; }
echo "guest: kernel $(uname -r), cgroup2 controllers: $(cat "$cg/cgroup.subtree_control"), up $(up) s, $(avail) MiB available"
cd "$repo" || exit 93
# No bytecode or cache writes: they would only land in the overlay.
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 SPIKEWATCH_REQUIRE_CGROUPS=1 SPIKEWATCH_LANE_CGROUP2=1
# The emulated CPU is many times slower: deadlines for something to happen stretch.
export SPIKEWATCH_TEST_TIME_SCALE="${SPIKEWATCH_TEST_TIME_SCALE:-8}"
# Wide enough that pytest's one-line summary of a failure keeps its message.
export COLUMNS=240
# No cgroup test uses hypothesis's or locust's pytest plugins: not loading them
# saves the emulated guest ~10 s of imports over 9p. The slowest test takes under
# a minute in a busy guest: one that hangs is stopped (with its traceback) after
# 3 minutes rather than eating the guest's whole time limit. The container tests
# set their own limit (tests/cgroup2/test_containers_live.py).
"$python" -m pytest -p no:cacheprovider -p no:hypothesispytest -p no:locust \
    -m "cgroup or cgroup2" --timeout 180 "$@"
rc=$?
echo "guest: pytest exit $rc, up $(up) s, $(avail) MiB available"
exit $rc

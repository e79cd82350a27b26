#!/usr/bin/env bash
# The live cgroup v2 lane (make test-cgroup2): boots a small guest on each
# kernel (Debian 6.1 and 6.12) under qemu's emulation with virtme-ng, the
# guest sharing this checkout read-only, and runs the cgroup tests there on a
# real cgroup v2 memory controller. One summary line per kernel; exit 0 only
# when every kernel passed, or (with a "skipped:" line) when this machine
# cannot boot a guest at all.
#
# What runs where (the lane's budget is 10 minutes for both kernels, and every
# boot of the emulated guest costs ~1 min before the first test):
#   6.12: every test marked cgroup or cgroup2 (all files that hold one);
#   6.1:  only the tests whose behaviour depends on the kernel's version
#         (OLD_KERNEL_TESTS below: memory.peak without the per-fd reset and its
#         fallback, OOM kills and memory.events, the effective limit).
#
# Environment: CGROUP2_KERNELS (default: the newest installed 6.1 and 6.12
# images; "6.1" or "6.12" picks the newest of that version, or give image
# paths), CGROUP2_TIMEOUT (seconds per guest, default 360), CGROUP2_TESTS
# (test files or node ids for every kernel, instead of the sets above),
# PYTEST_ARGS (e.g. "-k peak").
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${VENV:-$repo/.venv}"
vng_venv="${VNG_VENV:-$repo/.venv-vng}"
timeout_s="${CGROUP2_TIMEOUT:-360}"

out=$(bash "$here/setup.sh")
rc=$?
if [ $rc = 3 ]; then
    echo "cgroup2 lane: $out"
    exit 0
elif [ $rc != 0 ]; then
    echo "cgroup2 lane: FAILED: installing qemu, the kernels or virtme-ng failed (see above)"
    exit 1
fi
[ -x "$venv/bin/python" ] || { echo "cgroup2 lane: FAILED: no $venv (run make setup)"; exit 1; }
export PATH="$vng_venv/bin:$PATH"

# qemu needs an x86 CPU it can emulate and some memory; /dev/kvm here cannot
# run stock kernels, so the guest never asks for it (--disable-kvm).
if [ "$(awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo)" -lt 2600 ]; then
    echo "cgroup2 lane: skipped: less than 2.6 GiB of memory available for a 2 GiB guest"
    exit 0
fi

newest_image() { ls /boot/vmlinuz-"$1".* 2>/dev/null | sort -V | tail -1; }
kernels=()
for k in ${CGROUP2_KERNELS:-6.1 6.12}; do
    case $k in
        /*) kernels+=("$k") ;;
        *) img=$(newest_image "$k")
           [ -n "$img" ] || { echo "cgroup2 lane: FAILED: no /boot/vmlinuz-$k.* image"; exit 1; }
           kernels+=("$img") ;;
    esac
done

# Not run on 6.12, though marked cgroup: what they check is the same on a v2
# controller as on the host's v1 (make test runs them there), and each costs the
# emulated guest 5-55 s (together ~3 of its minutes under load):
#   tests/analysis/test_analysis_trees.py: the report's headline for forking trees.
#     With --limit it is held against the journal's own cg_usage/cg_peak; without,
#     the sampler reads no cgroup at all (PSS only, the cgroup is the test's ruler),
#     and PSS sweeps are paced by their CPU cost, so on the emulated CPU they come
#     further apart than the prefork workers hold (it failed here for that reason:
#     the last sweep was before the workers' copy-on-write writes). The v2 side of
#     those trees (a fork joining through cgroup.procs, cg_usage, memory.peak) is
#     tests/sampler/test_sampler_trees.py, which runs here.
#   tests/console/test_console_sampler.py: the OOM banner, drawn from the sampler's
#     oom_kill event, which test_cgroup2_live.py, test_sampler_cgroups.py and
#     test_analysis_sampler.py check on v2.
#   test_auto_without_a_process_target_is_a_usage_error, test_auto_for_a_pid_that_
#     does_not_exist: refused before any cgroup is read.
NOT_ON_V2_FILES=(
    tests/analysis/test_analysis_trees.py
    tests/console/test_console_sampler.py
)
NOT_ON_V2_TESTS=(
    tests/sampler/test_sampler_cgroup_auto.py::test_auto_without_a_process_target_is_a_usage_error
    tests/sampler/test_sampler_cgroup_auto.py::test_auto_for_a_pid_that_does_not_exist
)
# Only the files that hold cgroup tests: collecting all of them takes the
# emulated guest over a minute.
mapfile -t all_files < <(cd "$repo" && grep -rlE 'mark\.cgroup|needs_cgroup' tests --include='test_*.py' | sort \
    | grep -vxF -f <(printf '%s\n' "${NOT_ON_V2_FILES[@]}"))
# On 6.1 (before the per-fd memory.peak reset): what differs by kernel version.
OLD_KERNEL_TESTS=(
    tests/cgroup2/test_cgroup2_live.py::test_oom_kill_is_an_event_after_every_sample_before_it
    tests/cgroup2/test_cgroup2_live.py::test_memory_events_high_then_max_oom_and_kill
    tests/cgroup2/test_cgroup2_live.py::test_spike_between_samples_found_through_memory_peak
    tests/cgroups/test_cgroups_live.py::test_oom_kill_counted_with_usage_at_limit_before
    tests/cgroups/test_cgroups_live.py::test_peak_records_a_spike_that_samples_missed_and_resets
    tests/cgroups/test_cgroups_live.py::test_peak_reset_of_a_watched_cgroup
    tests/cgroups/test_cgroups_live.py::test_watched_cgroup_peak_is_not_reset
    tests/cgroups/test_cgroups_effective_limit.py::test_unlimited_child_reports_the_parents_limit
    tests/sampler/test_sampler_trees.py::test_short_lived_children_are_caught_by_the_cgroup_peak
)
tests_for() {  # the tests to run on kernel image $1
    if [ -n "${CGROUP2_TESTS:-}" ]; then
        echo "$CGROUP2_TESTS"
    elif [[ "$1" == */vmlinuz-6.1.* ]]; then
        echo "${OLD_KERNEL_TESTS[*]}"
    else
        echo "${all_files[*]}" "${NOT_ON_V2_TESTS[@]/#/--deselect=}"
    fi
}
if [[ "$repo" == *" "* ]]; then
    echo "cgroup2 lane: FAILED: the checkout's path has a space ($repo); the guest's command line cannot carry it"
    exit 1
fi

# The guest cannot write bytecode next to the sources (read-only there): compile
# it here once, or every interpreter in the guest compiles the project again.
"$venv/bin/python" -m compileall -q "$repo/sampler" "$repo/driver" "$repo/analysis" "$repo/spikewatch" \
    "$repo/tests" >/dev/null || true

failed=0
summaries=()
for k in "${kernels[@]}"; do
    ver=${k#/boot/vmlinuz-}
    log="${TMPDIR:-/tmp}/spikewatch-cgroup2-$ver.log"
    echo "cgroup2 lane: booting $ver (emulated; log $log)"
    start=$(date +%s)
    cmd="sh $here/guest.sh $repo $venv/bin/python -q -rfEs --durations=8 ${PYTEST_ARGS:-} $(tests_for "$k")"
    timeout --kill-after=10 "$timeout_s" vng --disable-kvm --force-9p --run "$k" \
        --memory 2G --cpus 2 --exec "$cmd" </dev/null >"$log" 2>&1
    rc=$?
    took=$(( $(date +%s) - start ))
    # pytest's closing line, e.g. "40 passed, 1 skipped in 150.2s".
    result=$(grep -E '^=* ?[0-9]+ (passed|failed|error)' "$log" | tail -1 | sed -E 's/=+//g; s/^ +| +$//g')
    grep -E '^(FAILED|ERROR|SKIPPED) ' "$log" | sed "s/^/  [$ver] /"
    if [ $rc = 124 ] || [ $rc = 137 ]; then
        line="FAILED: no result within ${timeout_s} s (last lines of $log below)"
        tail -15 "$log" | sed "s/^/  [$ver] /"
        failed=1
    elif [ $rc != 0 ] || [ -z "$result" ]; then
        line="FAILED (exit $rc): ${result:-no pytest result}"
        [ -n "$result" ] || tail -15 "$log" | sed "s/^/  [$ver] /"
        failed=1
    else
        line="ok: $result"
    fi
    summaries+=("cgroup2 lane: kernel $ver: $line (guest ${took} s)")
    echo "${summaries[-1]}"
done
printf '%s\n' "${summaries[@]}"
exit $failed

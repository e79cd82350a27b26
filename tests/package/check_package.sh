#!/usr/bin/env bash
# The package as users get it: build the wheel and sdist, check their metadata,
# install the wheel with no extras into a fresh venv OUTSIDE the checkout (so
# nothing is imported from the source tree), and run the commands a new user
# runs first. Then a slim install (the sampler alone) that must sample, and
# must name what it lacks for everything else. `make test-package` runs this;
# budget: ~3 minutes (most of it pip installing the dependencies).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
py=${PYTHON:-python3}
work=$(mktemp -d /tmp/spikewatch-package.XXXXXX)
trap 'rm -rf "$work"' EXIT
say() { printf '== %s\n' "$*"; }

say "build wheel and sdist"
"$py" -m venv "$work/tools"
"$work/tools/bin/pip" install -q build twine
(cd "$here" && "$work/tools/bin/python" -m build -q --outdir "$work/dist" . >/dev/null)
"$work/tools/bin/twine" check --strict "$work"/dist/*
wheel=$(ls "$work"/dist/*.whl)

say "nothing but the spikewatch namespace in the wheel"
"$work/tools/bin/python" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
tops = {n.split("/")[0] for n in names}
bad = {t for t in tops if t != "spikewatch" and not (t.startswith("spikewatch-") and t.endswith(".dist-info"))}
assert not bad, f"the wheel puts more than spikewatch into site-packages: {sorted(bad)}"
for need in ("spikewatch/driver/scenarios/demo.toml", "spikewatch/driver/scenarios/quick.toml"):
    assert need in names, f"package data missing from the wheel: {need}"
print(f"ok: {len(names)} files, top level {sorted(tops)}")
PY

say "full install (no extras), from outside the checkout"
"$py" -m venv "$work/full"
"$work/full/bin/pip" install -q "$wheel"
cd "$work"
"$work/full/bin/spikewatch" --version | tee "$work/version.txt"
grep -q "wire protocol" "$work/version.txt"
"$work/full/bin/spikewatch" demo --quick --no-console --out "$work/demo" > "$work/demo.log" 2>&1 \
    || { tail -40 "$work/demo.log"; echo "FAIL: demo --quick"; exit 1; }
test -s "$work/demo/report.json" && test -s "$work/demo/report.html"
"$work/full/bin/spikewatch" report "$work/demo/recording" --json "$work/again.json" > /dev/null
"$work/full/bin/python" -c "import json,sys; r=json.load(open(sys.argv[1])); assert r['peak_bytes'] > 0, r" "$work/again.json"
# Imported from the venv, not from a checkout.
"$work/full/bin/python" -c "import spikewatch.sampler.daemon as d, sys; assert '/full/' in d.__file__, d.__file__"

say "slim install: the sampler alone"
"$py" -m venv "$work/slim"
"$work/slim/bin/pip" install -q --no-deps "$wheel"
"$work/slim/bin/pip" install -q psutil pyzmq msgpack click
"$work/slim/bin/spikewatch" sample --no-journal --duration 300ms -- sleep 1 2> "$work/slim-sample.log" \
    || { cat "$work/slim-sample.log"; echo "FAIL: slim sample"; exit 1; }
for cmd in "report $work/demo/recording" "drive x.toml" "console tcp://127.0.0.1:1" "demo --quick"; do
    set +e
    # shellcheck disable=SC2086
    "$work/slim/bin/spikewatch" $cmd > "$work/slim.out" 2> "$work/slim.err"
    rc=$?
    set -e
    if [ "$rc" -ne 2 ] || grep -q Traceback "$work/slim.err" || [ "$(wc -l < "$work/slim.err")" -gt 1 ]; then
        echo "FAIL: slim 'spikewatch $cmd' exited $rc:"; cat "$work/slim.err"; exit 1
    fi
    printf '  spikewatch %s -> exit 2: %s\n' "${cmd%% *}" "$(cat "$work/slim.err")"
done
du -sh "$work/slim" "$work/full" | sed 's/^/  weight: /'
say "package checks passed"

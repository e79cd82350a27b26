#!/usr/bin/env bash
# Installs what the live cgroup v2 lane needs, idempotently: qemu, podman and
# crun (Debian), Debian's generic 6.1 kernel (bookworm) and 6.12 kernel
# (bookworm-backports), and virtme-ng (PyPI) in its own venv. Each step is skipped when its result is
# already there, so a second run costs a few apt-cache look-ups.
#
# Prints "skipped: <why>" and exits 3 when this machine cannot be set up: not
# root, no apt, not x86_64, or what the guest needs cannot be installed (the
# archive or PyPI unreachable, no such kernel package); apt's or pip's last
# lines go to stderr. CI gates on the lane, so only a machine that can run it
# fails it.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
vng_venv="${VNG_VENV:-$repo/.venv-vng}"
# Other apt users (another job on this machine) hold dpkg's lock for minutes: wait.
apt=(apt-get -o DPkg::Lock::Timeout=900)
backports_file=/etc/apt/sources.list.d/spikewatch-bookworm-backports.sources
debian_file=/etc/apt/sources.list.d/debian.sources

log="${TMPDIR:-/tmp}/spikewatch-cgroup2-setup.log"
: > "$log"
# apt and dpkg talk a lot: keep it in a log, show its end only when a step fails.
quiet() {
    if ! "$@" >>"$log" 2>&1; then
        tail -20 "$log" >&2
        say "failed: $* (whole log: $log)"
        skip "cannot install what the guest needs here ($*: $(tail -1 "$log" | cut -c1-160))"
    fi
}
say() { echo "cgroup2-setup: $*" >&2; }
skip() { echo "skipped: $*"; exit 3; }

[ "$(uname -m)" = x86_64 ] || skip "the guest kernels are Debian amd64 images; this is $(uname -m)"

need_apt=()
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)
# virtme-ng builds the guest's initramfs with busybox when its own init is absent.
command -v busybox >/dev/null || need_apt+=(busybox-static)
# The container tests run podman with crun in the guest (the guest sees this
# machine's files, so they are installed here; they start no service here).
command -v podman >/dev/null || need_apt+=(podman)
command -v crun >/dev/null || need_apt+=(crun)
have_61=$(ls /boot/vmlinuz-6.1.* 2>/dev/null | head -1 || true)
have_612=$(ls /boot/vmlinuz-6.12.* 2>/dev/null | head -1 || true)

apt_updated=0
apt_update() {
    if [ $apt_updated = 0 ]; then
        say "apt-get update"
        quiet "${apt[@]}" update -qq
        apt_updated=1
    fi
}

if [ ${#need_apt[@]} -gt 0 ] || [ -z "$have_61" ] || [ -z "$have_612" ]; then
    [ "$(id -u)" = 0 ] || skip "needs root to install ${need_apt[*]} and the 6.1/6.12 kernels"
    command -v apt-get >/dev/null || skip "no apt-get to install qemu and Debian kernels"
fi

if [ -z "$have_612" ] && [ ! -f "$backports_file" ]; then
    # The backports suite is served from the same archive as bookworm itself:
    # copy that entry's URIs line rather than naming an archive here.
    [ -f "$debian_file" ] || skip "no $debian_file to take the Debian archive's URIs from"
    uris=$(awk '
        /^$/ { if (u != "" && s ~ /(^| )bookworm( |$)/) { print u; exit } u=""; s="" }
        /^URIs:/ { u=$0 }
        /^Suites:/ { s=$0; sub(/^Suites:[ \t]*/, "", s) }
        END { if (u != "" && s ~ /(^| )bookworm( |$)/) print u }' "$debian_file" | head -1)
    signed=$(grep -m1 '^Signed-By:' "$debian_file" || true)
    [ -n "$uris" ] || skip "$debian_file has no entry for the bookworm suite"
    say "adding bookworm-backports as $backports_file"
    printf 'Types: deb\n%s\nSuites: bookworm-backports\nComponents: main\n%s\n' \
        "$uris" "$signed" > "$backports_file"
    apt_updated=0
fi

newest() {  # newest package name matching a regex among those apt knows
    apt-cache search --names-only "$1" | awk '{print $1}' | sort -V | tail -1
}

if [ ${#need_apt[@]} -gt 0 ]; then
    apt_update
    say "apt-get install ${need_apt[*]}"
    quiet env DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# Versioned image packages, so both kernels stay installed side by side (the
# linux-image-amd64 meta package would replace one with the other).
if [ -z "$have_61" ]; then
    apt_update
    pkg=$(newest '^linux-image-6\.1\.0-[0-9]+-amd64$')
    [ -n "$pkg" ] || skip "no linux-image-6.1.0-*-amd64 package to install"
    say "apt-get install $pkg"
    quiet env DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends "$pkg"
fi
if [ -z "$have_612" ]; then
    apt_update
    # The image that bookworm-backports' linux-image-amd64 stands for (6.12).
    ver=$(apt-cache madison linux-image-amd64 | awk -F' *[|] *' '$3 ~ /bookworm-backports/ {print $2; exit}')
    pkg=$(apt-cache depends "linux-image-amd64=$ver" 2>/dev/null | awk '/Depends: linux-image-6\.12/ {print $2; exit}')
    [ -n "$pkg" ] || skip "no 6.12 linux-image-amd64 in bookworm-backports to install (found version '$ver')"
    say "apt-get install -t bookworm-backports $pkg"
    quiet env DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends \
        -t bookworm-backports "$pkg"
fi

if [ ! -x "$vng_venv/bin/vng" ]; then
    say "virtme-ng into $vng_venv"
    quiet python3 -m venv "$vng_venv"
    quiet "$vng_venv/bin/pip" install -q virtme-ng
fi
say "ready: $(ls /boot/vmlinuz-6.1.* /boot/vmlinuz-6.12.* | tr '\n' ' ')"

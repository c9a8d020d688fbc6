#!/usr/bin/env bash
# The package test: builds the .deb, the .rpm and the Windows .zip, lists what they
# hold and checks the essential paths, installs the .deb with dpkg on this machine,
# runs the installed `filesyncd --version` and `filesyncctl --help`, checks that nothing was enabled or
# started, and purges it. Needs root (dpkg); skips with a message otherwise. Every
# step that could hang is under `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "packaging/test.sh: skipped: installing a .deb needs root"
    exit 0
fi
if dpkg -s filesync >/dev/null 2>&1; then
    echo "packaging/test.sh: a filesync package is already installed here; not touching it" >&2
    exit 1
fi
if ! command -v rpm >/dev/null; then
    # The package lists may be missing or stale on a fresh machine.
    timeout 600 apt-get install -y -q rpm >/dev/null 2>&1 || {
        timeout 600 apt-get update -q >/dev/null
        timeout 600 apt-get install -y -q rpm >/dev/null
    }
fi

mapfile -t built < <(packaging/build.sh | tail -n 3)
deb="${built[0]}"
rpm_file="${built[1]}"
zip="${built[2]}"

want=(
    usr/bin/filesyncd
    usr/bin/filesyncctl
    usr/lib/systemd/system/filesyncd.service
    usr/lib/systemd/user/filesyncd.service
    usr/lib/systemd/system/filesyncd-gc.service
    usr/lib/systemd/system/filesyncd-gc.timer
    etc/filesync/filesyncd.toml
    usr/share/doc/filesync/examples/cluster-node.toml
    usr/share/bash-completion/completions/filesyncctl
    usr/share/man/man1/filesyncctl.1
    usr/share/man/man1/filesyncctl-status.1
    usr/share/man/man1/filesyncd.1
)
echo "== contents of $deb"
deb_list="$(dpkg-deb --contents "$deb")"
echo "$deb_list"
echo "== contents of $rpm_file"
rpm_list="$(rpm -qlp "$rpm_file")"
echo "$rpm_list"
for path in "${want[@]}"; do
    grep -q " \./$path\$" <<<"$deb_list" || { echo "FAIL: $path not in the .deb" >&2; exit 1; }
    grep -qx "/$path" <<<"$rpm_list" || { echo "FAIL: $path not in the .rpm" >&2; exit 1; }
done

echo "== contents of $zip"
zip_list="$(python3 -m zipfile -l "$zip")"
echo "$zip_list"
top="$(basename "$zip" .zip)"
for path in filesyncd.exe filesyncctl.exe README-windows.txt; do
    grep -q "^$top/$path " <<<"$zip_list" || { echo "FAIL: $path not in the .zip" >&2; exit 1; }
done

purge() { timeout 120 dpkg --purge filesync >/dev/null 2>&1 || true; }
trap purge EXIT
echo "== installing $deb"
timeout 300 dpkg -i "$deb"
/usr/bin/filesyncd --version
/usr/bin/filesyncctl --help >/dev/null
getent passwd filesync >/dev/null || { echo "FAIL: no filesync user" >&2; exit 1; }
if [ -e /etc/systemd/system/multi-user.target.wants/filesyncd.service ] \
    || pgrep -u filesync filesyncd >/dev/null; then
    echo "FAIL: installing enabled or started filesyncd" >&2
    exit 1
fi

echo "== purging"
timeout 120 dpkg --purge filesync
trap - EXIT
for path in usr/bin/filesyncd usr/bin/filesyncctl etc/filesync/filesyncd.toml \
    usr/lib/systemd/system/filesyncd.service; do
    if [ -e "/$path" ]; then
        echo "FAIL: /$path is left after purge" >&2
        exit 1
    fi
done
echo "packaging/test.sh: 1 passed, 0 failed"

#!/usr/bin/env bash
# The big-folder benchmark of issue 7: one client syncs a folder of many small files to
# a server on loopback; first sync time, no-change rescan time, resident memory and the
# index's size. Builds release binaries, runs bench/scale.py in a fresh temporary
# directory and removes it afterwards. `bench/scale.sh --help` lists the knobs.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: bench/scale.sh [--quick] [--no-build] [--keep]

  --quick     SCALE_FILES=10000 SCALE_DIRS=500 (any set in the environment wins)
  --no-build  use the release binaries already built
  --keep      keep the temporary directory (daemon logs, configs, trees)

Environment knobs (defaults are the issue's sizes):
  SCALE_FILES=100000   files in the folder
  SCALE_DIRS=5000      directories they are spread over
  SCALE_MAX_SIZE=4096  largest file in bytes (sizes are 0..SCALE_MAX_SIZE)
  SCALE_RESCANS=3      no-change rescans timed
  SCALE_TIMEOUT=1800   seconds any single wait may take
  SCALE_LOG=           FILESYNC_LOG for the daemons
  BENCH_TMP=$TMPDIR|/tmp  where the temporary directory goes
USAGE
}

cd "$(dirname "$0")/.."
build=1
keep=0
quick=0
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --quick) quick=1 ;;
        --no-build) build=0 ;;
        --keep) keep=1 ;;
        *) echo "bench/scale.sh: error: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$quick" = 1 ]; then
    : "${SCALE_FILES:=10000}" "${SCALE_DIRS:=500}"
fi
if [ "$build" = 1 ]; then
    cargo build --release --bins
fi
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target_dir/release"
for b in filesyncd filesyncctl; do
    [ -x "$bin/$b" ] || { echo "bench/scale.sh: error: $bin/$b is missing; run without --no-build" >&2; exit 1; }
done
tmp_base="${BENCH_TMP:-${TMPDIR:-/tmp}}"
mkdir -p "$tmp_base"
work="$(mktemp -d "$tmp_base/filesync-scale.XXXXXX")"
cleanup() {
    local rc=$?
    if [ "$keep" = 1 ] || [ "$rc" != 0 ]; then
        echo "bench/scale.sh: kept $work (daemon logs in */daemon.log)" >&2
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
# scale.py stops its daemons however it ends; they also get TERM if it dies.
python3 bench/scale.py --bin "$bin" --work "$work" \
    --files "${SCALE_FILES:-100000}" --dirs "${SCALE_DIRS:-5000}" \
    --max-size "${SCALE_MAX_SIZE:-4096}" --rescans "${SCALE_RESCANS:-3}" \
    --timeout "${SCALE_TIMEOUT:-1800}" --log "${SCALE_LOG:-}"

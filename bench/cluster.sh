#!/usr/bin/env bash
# The cluster backend's benchmark (issue 19): the 10,000-file initial sync and the
# fan-out latency through two cluster nodes (PostgreSQL 15 and Garage) next to the
# embedded server, in the same run. Builds release binaries, runs bench/cluster.py in a
# fresh temporary directory and removes it afterwards. `bench/cluster.sh --help` lists
# the knobs.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: bench/cluster.sh [--quick] [--no-build] [--keep]

Needs PostgreSQL 15 (apt-get install postgresql) and garage (cargo install --locked
garage@2.5.0); scripts/test-deps.sh installs both.

  --quick     CLUSTER_FILES=1000 CLUSTER_DIRS=50 CLUSTER_WRITES=20 (the environment wins)
  --no-build  use the release binaries already built
  --keep      keep the temporary directory (daemon logs, configs, trees)

Environment knobs (defaults are the issue's sizes):
  CLUSTER_FILES=10000   files of 1-16 KiB in the initial sync
  CLUSTER_DIRS=500      directories they are spread over
  CLUSTER_WRITES=50     4 KiB writes timed for the fan-out latency
  CLUSTER_TIMEOUT=1200  seconds any single wait may take
  CLUSTER_LOG=          FILESYNC_LOG for the daemons
  BENCH_OUT=            also write the Markdown results to this file
  BENCH_TMP=$TMPDIR|/tmp  where the temporary directory goes
USAGE
}

cd "$(dirname "$0")/.."
build=1
keep=0
quick=0
args=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --quick) quick=1 ;;
        --no-build) build=0 ;;
        --keep) keep=1 ;;
        *) echo "bench/cluster.sh: error: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$quick" = 1 ]; then
    : "${CLUSTER_FILES:=1000}" "${CLUSTER_DIRS:=50}" "${CLUSTER_WRITES:=20}"
fi
command="bench/cluster.sh"
for v in CLUSTER_FILES CLUSTER_DIRS CLUSTER_WRITES CLUSTER_TIMEOUT CLUSTER_LOG; do
    if [ -n "${!v:-}" ]; then command="$v=${!v} $command"; fi
done
if [ ${#args[@]} -gt 0 ]; then command="$command ${args[*]}"; fi
if [ "$build" = 1 ]; then
    cargo build --release --bins
fi
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target_dir/release"
for b in filesyncd filesyncctl; do
    [ -x "$bin/$b" ] || { echo "bench/cluster.sh: error: $bin/$b is missing; run without --no-build" >&2; exit 1; }
done
tmp_base="${BENCH_TMP:-${TMPDIR:-/tmp}}"
mkdir -p "$tmp_base"
work="$(mktemp -d "$tmp_base/filesync-cluster.XXXXXX")"
cleanup() {
    local rc=$?
    if [ "$keep" = 1 ] || [ "$rc" != 0 ]; then
        echo "bench/cluster.sh: kept $work (daemon logs in */daemon.log)" >&2
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
echo "bench/cluster.sh: uptime at the start: $(uptime)"
# cluster.py stops its daemons, Garage and PostgreSQL however it ends; the daemons and
# Garage also get TERM if it dies.
python3 bench/cluster.py --bin "$bin" --work "$work" \
    --files "${CLUSTER_FILES:-10000}" --dirs "${CLUSTER_DIRS:-500}" \
    --writes "${CLUSTER_WRITES:-50}" --timeout "${CLUSTER_TIMEOUT:-1200}" \
    --log "${CLUSTER_LOG:-}" ${BENCH_OUT:+--markdown "$BENCH_OUT"} --command "$command"
echo "bench/cluster.sh: uptime at the end: $(uptime)"

#!/usr/bin/env bash
# The benchmarks of issue 4 ("3/7 Chunked transfer"): filesync next to rsync, on loopback;
# with --syncthing those of issue 7, filesync next to Syncthing; with --many the 50-device
# load test of issue 7. Builds release binaries, installs rsync (and lsyncd, optional) or
# Syncthing from the machine's Debian packages if missing, then runs bench/bench.py
# (bench/stbench.py, bench/many.py) in a fresh temporary directory, which it removes
# afterwards. Run `bench/run.sh --help` for the knobs.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/run.sh [--syncthing | --many] [--quick] [--no-build] [--keep] [SCENARIO...]

Runs a filesync server and two clients on loopback, with a counting TCP relay on
client B's link, and an rsync daemon, and prints filesync's figures next to rsync's:
  1  1 MiB changed in the middle of a big file: bytes on the wire, seconds
  2  1 byte inserted at the start of a big file: bytes on the wire
  3  initial sync of 4 big files of random data: seconds, MB/s
  4  initial sync of 10,000 files of 1-16 KiB in 500 directories: seconds
  5  latency of a 4 KiB file from client A to client B over 50 writes: p50, p95
     (next to lsyncd pushing to the rsync daemon, when lsyncd can be installed)
SCENARIO numbers choose a subset (default: all), e.g. `bench/run.sh 1 2`.

With --syncthing: two Syncthing instances on loopback (B reaching A through the counting
relay) next to filesync's server and two clients, on the same data:
  1  initial sync of 10,000 files of 1-16 KiB: seconds (goal: 5x faster)
  2  latency of a 4 KiB write over 50 writes: p50, p95 (goal: p50 20x lower)
  3  1 MiB changed in the middle of a big file: seconds, bytes on the wire
  4  peak and steady RSS of each side holding a folder of 100,000 files (goal: < 1/5)
  5  CPU seconds of one no-change rescan of that folder (goal: less)

With --many: one server and 50 client daemons (10 devices of one account sharing a
folder, 40 other accounts): fan-out latency p50/p95 of a change on one shared device to
the 9 others, server peak RSS and CPU seconds. No SCENARIO arguments.

Options:
  --syncthing the comparison with Syncthing (issue 7)
  --many      the many-devices load test (issue 7)
  --quick     a small run: BENCH_SIZE_MB=16 BENCH_FILES=1000 BENCH_DIRS=50 BENCH_WRITES=20
              BENCH_BIG_FILES=10000 BENCH_SHARED=4 BENCH_ACCOUNTS=6 BENCH_ROUNDS=10
              (any of these set in the environment wins)
  --no-build  use the binaries already built (skip `cargo build --release --bins`)
  --keep      keep the temporary directory (daemon logs, configs, trees)

Environment knobs (defaults are the issue's sizes):
  BENCH_SIZE_MB=256        size of the big files of scenarios 1-3, in MiB (at least 4)
  BENCH_FILES=10000        number of small files in scenario 4
  BENCH_DIRS=500           number of directories they are spread over
  BENCH_WRITES=50          number of 4 KiB writes in scenario 5 (--syncthing: scenario 2)
  BENCH_BIG_FILES=100000   --syncthing: files of 0-1 KiB in the folder of scenarios 4 and 5
  BENCH_SHARED=10          --many: devices sharing one folder
  BENCH_ACCOUNTS=40        --many: other accounts, one device each
  BENCH_ROUNDS=20          --many: changes fanned out (one per round)
  BENCH_SCENARIOS=1,2,3,4,5  the same as SCENARIO arguments
  BENCH_LSYNCD=auto        auto: run lsyncd in scenario 5 (installed if missing and
                           possible); 0: do not
  BENCH_TMP=$TMPDIR|/tmp   where the temporary directory goes (needs ~27 x BENCH_SIZE_MB)
  BENCH_TIMEOUT=1200       seconds any single wait may take before the run fails
  BENCH_OUT=bench/results.md  where the Markdown results are written
  BENCH_LOG=               FILESYNC_LOG for the daemons (e.g. debug), in their logs
  BENCH_KEEP=1             the same as --keep
EOF
}

die() {
    echo "bench/run.sh: error: $*" >&2
    exit 1
}

cd "$(dirname "$0")/.."
root=$PWD
args=("$@")
quick=0
mode=rsync
build=1
keep="${BENCH_KEEP:-0}"
picked=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --quick) quick=1 ;;
        --syncthing) mode=syncthing ;;
        --many) mode=many ;;
        --no-build) build=0 ;;
        --keep) keep=1 ;;
        [1-5]) picked+=("$1") ;;
        *)
            echo "bench/run.sh: error: unknown argument: $1 (see --help)" >&2
            exit 2
            ;;
    esac
    shift
done
# The command as run, with the knobs that were set, for the record.
command="bench/run.sh"
for v in BENCH_SIZE_MB BENCH_FILES BENCH_DIRS BENCH_WRITES BENCH_BIG_FILES BENCH_SHARED BENCH_ACCOUNTS BENCH_ROUNDS BENCH_SCENARIOS BENCH_LSYNCD BENCH_TIMEOUT BENCH_LOG; do
    if [ -n "${!v:-}" ]; then command="$v=${!v} $command"; fi
done
if [ ${#args[@]} -gt 0 ]; then command="$command ${args[*]}"; fi

if [ "$quick" = 1 ]; then
    : "${BENCH_SIZE_MB:=16}" "${BENCH_FILES:=1000}" "${BENCH_DIRS:=50}" "${BENCH_WRITES:=20}"
    : "${BENCH_BIG_FILES:=10000}" "${BENCH_SHARED:=4}" "${BENCH_ACCOUNTS:=6}" "${BENCH_ROUNDS:=10}"
fi
big_files="${BENCH_BIG_FILES:-100000}"
shared="${BENCH_SHARED:-10}"
accounts="${BENCH_ACCOUNTS:-40}"
rounds="${BENCH_ROUNDS:-20}"
size_mb="${BENCH_SIZE_MB:-256}"
files="${BENCH_FILES:-10000}"
dirs="${BENCH_DIRS:-500}"
writes="${BENCH_WRITES:-50}"
timeout="${BENCH_TIMEOUT:-1200}"
lsyncd="${BENCH_LSYNCD:-auto}"
out="${BENCH_OUT:-$root/bench/results.md}"
if [ ${#picked[@]} -gt 0 ]; then
    scenarios="$(IFS=,; echo "${picked[*]}")"
else
    scenarios="${BENCH_SCENARIOS:-1,2,3,4,5}"
fi
for n in "$size_mb" "$files" "$dirs" "$writes" "$timeout" "$big_files" "$shared" "$accounts" "$rounds"; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "the BENCH_* sizes, counts and BENCH_TIMEOUT take whole numbers, not '$n'"
done
if [ "$mode" = many ] && [ ${#picked[@]} -gt 0 ]; then
    die "--many takes no SCENARIO arguments"
fi
[ "$size_mb" -ge 4 ] || die "BENCH_SIZE_MB must be at least 4"
case "$lsyncd" in auto | 1) lsyncd=auto ;; 0 | no) lsyncd=no ;; *) die "BENCH_LSYNCD is auto or 0, not '$lsyncd'" ;; esac

command -v python3 > /dev/null || die "python3 is needed (3.9 or later)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' || die "python3 is too old (3.9 or later is needed)"

# Packages from the machine's Debian repositories, as root or through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo > /dev/null; then
        sudo "$@"
    else
        echo "bench/run.sh: not root and no sudo to run: $*" >&2
        return 1
    fi
}
install_package() { # install_package NAME: true if it is installed afterwards
    command -v apt-get > /dev/null || return 1
    echo "bench/run.sh: installing $1 with apt-get" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" > /dev/null && return 0
    # A fresh machine may have no package lists yet.
    as_root apt-get update -q > /dev/null &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" > /dev/null
}
if [ "$mode" = syncthing ] && ! command -v syncthing > /dev/null; then
    install_package syncthing || die "syncthing is missing and could not be installed (apt-get install -y syncthing)"
fi
if [ "$mode" = rsync ] && ! command -v rsync > /dev/null; then
    install_package rsync || die "rsync is missing and could not be installed (apt-get install -y rsync)"
fi
if [ "$mode" = rsync ] && [ "$lsyncd" = auto ] && [[ ",$scenarios," == *,5,* ]] && ! command -v lsyncd > /dev/null; then
    install_package lsyncd || echo "bench/run.sh: lsyncd could not be installed; scenario 5 runs without it" >&2
fi

if [ "$build" = 1 ]; then
    command -v cargo > /dev/null || die "cargo is needed to build filesync"
    echo "bench/run.sh: cargo build --release --bins" >&2
    cargo build --release --bins
fi
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')" ||
    die "cannot find cargo's target directory"
bin="$target_dir/release"
for b in filesyncd filesyncctl; do
    [ -x "$bin/$b" ] || die "$bin/$b is missing; run without --no-build"
done

tmp_base="${BENCH_TMP:-${TMPDIR:-/tmp}}"
mkdir -p "$tmp_base"
case "$mode" in
    rsync) need_mb=$((size_mb * 27 + 1024)) ;;
    # The big file on five trees and in a temp file; the small files' 4 KiB blocks on five.
    syncthing) need_mb=$((size_mb * 8 + big_files * 20 / 1024 + files * 40 / 1024 + 1024)) ;;
    many) need_mb=1024 ;;
esac
avail_mb=$(($(df -Pk "$tmp_base" | awk 'NR == 2 { print $4 }') / 1024))
[ "$avail_mb" -ge "$need_mb" ] ||
    die "$tmp_base has $avail_mb MiB free; this run needs about $need_mb MiB (lower BENCH_SIZE_MB or set BENCH_TMP)"
work="$(mktemp -d "$tmp_base/filesync-bench.XXXXXX")"

pid=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$pid" ] && kill -0 "$pid" 2> /dev/null; then
        # bench.py stops its daemons, relays and rsync/lsyncd on TERM; they also get
        # TERM from the kernel if it dies (PR_SET_PDEATHSIG).
        kill -TERM "$pid" 2> /dev/null || true
        for _ in $(seq 300); do
            kill -0 "$pid" 2> /dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2> /dev/null || true
    fi
    wait 2> /dev/null || true
    # Whatever bench.py started and is still shutting down (daemons drain for up to 8 s)
    # is found by the work directory in its command line; it must be gone before the
    # directory is removed.
    local left
    for _ in $(seq 150); do
        left="$(pgrep -f -- "$work/" || true)"
        [ -z "$left" ] && break
        sleep 0.1
    done
    if [ -n "$left" ]; then
        echo "bench/run.sh: killing what is left: ${left//$'\n'/ }" >&2
        # shellcheck disable=SC2086 # one PID per word
        kill -KILL $left 2> /dev/null || true
    fi
    if [ "$keep" = 1 ] || [ "$rc" = 1 ]; then
        # A failed run keeps its directory: the daemon logs say what went wrong.
        echo "bench/run.sh: kept $work (daemon logs in */daemon.log)" >&2
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

echo "bench/run.sh: working in $work ($mode; scenarios $scenarios, ${size_mb} MiB files)" >&2
case "$mode" in
    rsync)
        python3 "$root/bench/bench.py" \
            --bin "$bin" --work "$work" --scenarios "$scenarios" \
            --size-mb "$size_mb" --files "$files" --dirs "$dirs" --writes "$writes" \
            --lsyncd "$lsyncd" --timeout "$timeout" --log "${BENCH_LOG:-}" \
            --markdown "$out" --command "$command" &
        ;;
    syncthing)
        python3 "$root/bench/stbench.py" \
            --bin "$bin" --work "$work" --scenarios "$scenarios" \
            --size-mb "$size_mb" --files "$files" --dirs "$dirs" --writes "$writes" \
            --big-files "$big_files" --timeout "$timeout" --log "${BENCH_LOG:-}" \
            --markdown "$out" --command "$command" &
        ;;
    many)
        python3 "$root/bench/many.py" \
            --bin "$bin" --work "$work" --shared "$shared" --accounts "$accounts" \
            --rounds "$rounds" --timeout "$timeout" --log "${BENCH_LOG:-}" \
            --markdown "$out" --command "$command" &
        ;;
esac
pid=$!
wait "$pid"

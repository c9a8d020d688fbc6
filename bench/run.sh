#!/usr/bin/env bash
# The benchmark of issue 17 ("3/6 Bulk throughput"): filesync next to rsync on the same
# data in the same run, with every work directory on tmpfs and then on the disk, each row
# with its goal and whether it is met; with --syncthing, issue 7's comparison with
# Syncthing; with --many, issue 7's 50-device load test; with --cluster, issue 19's cluster
# next to the embedded server. Builds release binaries, installs
# rsync (and lsyncd, optional) or Syncthing from the machine's Debian packages if missing,
# then runs bench/goals.py (bench/stbench.py, bench/many.py, bench/cluster.py) in fresh temporary
# directories, which it removes afterwards. Run `bench/run.sh --help` for the knobs.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/run.sh [--quick] [--on PLACES] [--no-build] [--keep] [ROW...]
       bench/run.sh --syncthing [--quick] [--no-build] [--keep] [SCENARIO...]
       bench/run.sh --many [--quick] [--no-build] [--keep]
       bench/run.sh --cluster [--quick] [--no-build] [--keep]

Runs a filesync server and two clients (A, B) on loopback, with a counting TCP relay on
client B's link, and an rsync daemon, and prints for each row filesync's figures next to
rsync's on the same data, the goal of issue 17 and whether it is met; every row once with
all work directories on tmpfs and once on the disk (fresh processes for each place):
  many     100,000 files of 1-4 KiB, A -> server -> B: seconds ≤ 2x rsync
  memory   RSS holding that folder: devices ≤ 60 MiB peak and ≤ 30 MiB steady,
           server ≤ 40 MiB
  small    10,000 files of 1-16 KiB: seconds ≤ 1.5x rsync; CPU seconds of A + server + B
           ≤ 2x those of rsync's client + daemon
  big      4 x 256 MiB: seconds ≤ 1.5x rsync
  change   1 MiB overwritten in 256 MiB: seconds ≤ 1.5x rsync; bytes on B's link ≤ 1.1x
  insert   1 byte inserted at the start of 256 MiB: seconds ≤ 1.5x rsync; bytes on B's
           link < 0.5 MB
  latency  a 4 KiB write A -> B, 50 writes: p50 ≤ 15 ms, p95 ≤ 30 ms (next to lsyncd
           pushing to the rsync daemon)
  append   a file appended every 10 ms for 10 s, B's copy sampled every 10 ms: B never
           more than 2.5 s behind A (behind: since A first held a newer version than B's)
ROW names choose a subset (default: all), e.g. `bench/run.sh small big latency`; they
run in the order above. `uptime` is printed at the start and at the end.

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

With --cluster (issue 19; needs PostgreSQL 15 and garage, which scripts/test-deps.sh
installs): two filesync server nodes with backend = "cluster" sharing a throwaway
PostgreSQL and a one-node Garage, next to the embedded server, in the same run:
  initial sync of BENCH_FILES files of 1-16 KiB, A's add until B has them all (A
  pushing to node 1, B fed by node 2); fan-out latency of BENCH_WRITES 4 KiB writes
  from A to B, p50/p95/max (goal across nodes: p95 < 200 ms). No SCENARIO arguments.

Options:
  --on PLACES  where the work directories go: tmpfs, disk, or tmpfs,disk (the default)
  --syncthing  the comparison with Syncthing (issue 7)
  --many       the many-devices load test (issue 7)
  --cluster    the cluster backend next to the embedded server (issue 19)
  --quick      a small run: BENCH_SIZE_MB=16 BENCH_FILES=1000 BENCH_DIRS=50
               BENCH_MANY=5000 BENCH_WRITES=20 BENCH_APPEND_SECS=5
               BENCH_BIG_FILES=10000 BENCH_SHARED=4 BENCH_ACCOUNTS=6 BENCH_ROUNDS=10
               (any of these set in the environment wins)
  --no-build   use the binaries already built (skip `cargo build --release --bins`)
  --keep       keep the temporary directories (daemon logs, configs, trees)

Environment knobs (defaults are the issues' sizes):
  BENCH_ON=tmpfs,disk      the same as --on
  BENCH_TMPFS=/dev/shm     a directory on a tmpfs for the tmpfs run; where there is none,
                           mount one as root: `mount -t tmpfs -o size=12g tmpfs DIR`
  BENCH_DISK=              a directory on the disk for the disk run; default: the first
                           of $TMPDIR, /var/tmp, /tmp that is not on a tmpfs
                           (each place needs about 27 x BENCH_SIZE_MB MiB + 2 GiB free)
  BENCH_ROWS=many,memory,small,big,change,insert,latency,append  the same as ROW arguments
  BENCH_SIZE_MB=256        size of the big files of rows big, change, insert (at least 4)
  BENCH_FILES=10000        number of files in row small
  BENCH_DIRS=500           number of directories they are spread over
  BENCH_MANY=100000        number of files in rows many and memory (100 per directory)
  BENCH_WRITES=50          number of 4 KiB writes in row latency (--syncthing: scenario 2)
  BENCH_APPEND_SECS=10     how long row append appends every 10 ms
  BENCH_LSYNCD=auto        auto: run lsyncd in row latency (installed if missing and
                           possible); 0: do not
  BENCH_TIMEOUT=1200       seconds any single wait may take before the run fails
  BENCH_OUT=bench/results.md  where the Markdown results are written
  BENCH_LOG=               FILESYNC_LOG for the daemons (e.g. debug), in their logs
  BENCH_PERF=              rows (e.g. small,big) during which `perf record -g` profiles
                           client A, the server and client B, into perf-ROW.data in each
                           place's work directory, which is then kept; build with symbols
                           first: CARGO_PROFILE_RELEASE_STRIP=false
                           CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build
                           --release --bins, then run with --no-build
  BENCH_KEEP=1             the same as --keep
 --syncthing, --many and --cluster only:
  BENCH_SCENARIOS=1,2,3,4,5  the same as SCENARIO arguments
  BENCH_BIG_FILES=100000   --syncthing: files of 0-1 KiB in the folder of scenarios 4, 5
  BENCH_SHARED=10          --many: devices sharing one folder
  BENCH_ACCOUNTS=40        --many: other accounts, one device each
  BENCH_ROUNDS=20          --many: changes fanned out (one per round)
  BENCH_TMP=$TMPDIR|/tmp   where their temporary directory goes
EOF
}

die() {
    echo "bench/run.sh: error: $*" >&2
    exit 1
}

rows_all=many,memory,small,big,change,insert,latency,append

cd "$(dirname "$0")/.."
root=$PWD
args=("$@")
quick=0
mode=rsync
build=1
keep="${BENCH_KEEP:-0}"
on="${BENCH_ON:-tmpfs,disk}"
picked=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --quick) quick=1 ;;
        --syncthing) mode=syncthing ;;
        --many) mode=many ;;
        --cluster) mode=cluster ;;
        --no-build) build=0 ;;
        --keep) keep=1 ;;
        --on)
            [ $# -gt 1 ] || die "--on takes tmpfs, disk or tmpfs,disk"
            on="$2"
            shift
            ;;
        --on=*) on="${1#--on=}" ;;
        -*)
            echo "bench/run.sh: error: unknown option: $1 (see --help)" >&2
            exit 2
            ;;
        *) picked+=("$1") ;;
    esac
    shift
done
# The command as run, with the knobs that were set, for the record.
command="bench/run.sh"
for v in BENCH_PERF BENCH_ON BENCH_TMPFS BENCH_DISK BENCH_ROWS BENCH_SIZE_MB BENCH_FILES BENCH_DIRS BENCH_MANY BENCH_WRITES BENCH_APPEND_SECS BENCH_BIG_FILES BENCH_SHARED BENCH_ACCOUNTS BENCH_ROUNDS BENCH_SCENARIOS BENCH_LSYNCD BENCH_TIMEOUT BENCH_LOG; do
    if [ -n "${!v:-}" ]; then command="$v=${!v} $command"; fi
done
if [ ${#args[@]} -gt 0 ]; then command="$command ${args[*]}"; fi

if [ "$quick" = 1 ]; then
    : "${BENCH_SIZE_MB:=16}" "${BENCH_FILES:=1000}" "${BENCH_DIRS:=50}" "${BENCH_MANY:=5000}"
    : "${BENCH_WRITES:=20}" "${BENCH_APPEND_SECS:=5}"
    : "${BENCH_BIG_FILES:=10000}" "${BENCH_SHARED:=4}" "${BENCH_ACCOUNTS:=6}" "${BENCH_ROUNDS:=10}"
fi
big_files="${BENCH_BIG_FILES:-100000}"
shared="${BENCH_SHARED:-10}"
accounts="${BENCH_ACCOUNTS:-40}"
rounds="${BENCH_ROUNDS:-20}"
size_mb="${BENCH_SIZE_MB:-256}"
files="${BENCH_FILES:-10000}"
dirs="${BENCH_DIRS:-500}"
many="${BENCH_MANY:-100000}"
writes="${BENCH_WRITES:-50}"
append_secs="${BENCH_APPEND_SECS:-10}"
timeout="${BENCH_TIMEOUT:-1200}"
lsyncd="${BENCH_LSYNCD:-auto}"
perf="${BENCH_PERF:-}"
out="${BENCH_OUT:-$root/bench/results.md}"
for n in "$size_mb" "$files" "$dirs" "$many" "$writes" "$append_secs" "$timeout" "$big_files" "$shared" "$accounts" "$rounds"; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "the BENCH_* sizes, counts and BENCH_TIMEOUT take whole numbers, not '$n'"
done
case "$mode" in
    rsync)
        if [ ${#picked[@]} -gt 0 ]; then
            rows="$(IFS=,; echo "${picked[*]}")"
        else
            rows="${BENCH_ROWS:-$rows_all}"
        fi
        for r in ${rows//,/ } ${perf//,/ }; do
            [[ ",$rows_all," == *",$r,"* ]] || die "unknown row '$r' (rows: $rows_all)"
        done
        # The profiles are in the work directories.
        if [ -n "$perf" ]; then keep=1; fi
        ;;
    syncthing)
        if [ ${#picked[@]} -gt 0 ]; then
            scenarios="$(IFS=,; echo "${picked[*]}")"
        else
            scenarios="${BENCH_SCENARIOS:-1,2,3,4,5}"
        fi
        [[ "$scenarios" =~ ^[1-5](,[1-5])*$ ]] || die "--syncthing takes scenarios 1-5, not '$scenarios'"
        ;;
    many) [ ${#picked[@]} -eq 0 ] || die "--many takes no SCENARIO arguments" ;;
    cluster) [ ${#picked[@]} -eq 0 ] || die "--cluster takes no SCENARIO arguments" ;;
esac
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
if [ "$mode" = rsync ] && [ "$lsyncd" = auto ] && [[ ",$rows," == *,latency,* ]] && ! command -v lsyncd > /dev/null; then
    install_package lsyncd || echo "bench/run.sh: lsyncd could not be installed; row latency runs without it" >&2
fi

if [ "$mode" = rsync ] && [ -n "$perf" ] && ! command -v perf > /dev/null; then
    install_package linux-perf || die "BENCH_PERF needs perf, which could not be installed (apt-get install -y linux-perf)"
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

fstype() { stat -f -c %T "$1"; }
fsname() { df --output=source,fstype "$1" | awk 'NR == 2 { print $1 " " $2 }'; }
# The places the work directories go: "PLACE=BASE" words.
places=()
case "$mode" in
    rsync)
        for place in ${on//,/ }; do
            case "$place" in
                tmpfs)
                    base="${BENCH_TMPFS:-/dev/shm}"
                    [ -d "$base" ] || die "BENCH_TMPFS=$base is not a directory"
                    [ "$(fstype "$base")" = tmpfs ] ||
                        die "$base is on $(fsname "$base"), not tmpfs; set BENCH_TMPFS to a tmpfs (as root: mount -t tmpfs -o size=12g tmpfs DIR)"
                    ;;
                disk)
                    base="${BENCH_DISK:-}"
                    if [ -z "$base" ]; then
                        for d in ${TMPDIR:-} /var/tmp /tmp; do
                            if [ -d "$d" ] && [ "$(fstype "$d")" != tmpfs ]; then
                                base="$d"
                                break
                            fi
                        done
                        [ -n "$base" ] || die "no directory on the disk among \$TMPDIR, /var/tmp, /tmp; set BENCH_DISK"
                    fi
                    [ -d "$base" ] || die "BENCH_DISK=$base is not a directory"
                    [ "$(fstype "$base")" != tmpfs ] || die "BENCH_DISK=$base is on a tmpfs; give a directory on the disk"
                    ;;
                *) die "--on takes tmpfs, disk or tmpfs,disk, not '$on'" ;;
            esac
            places+=("$place=$base")
        done
        [ ${#places[@]} -gt 0 ] || die "--on names no place"
        need_mb=$((size_mb * 27 + many * 20 / 1024 + files * 40 / 1024 + 2048))
        ;;
    # The big file on five trees and in a temp file; the small files' 4 KiB blocks on five.
    syncthing)
        places=("tmp=${BENCH_TMP:-${TMPDIR:-/tmp}}")
        need_mb=$((size_mb * 8 + big_files * 20 / 1024 + files * 40 / 1024 + 1024))
        ;;
    many)
        places=("tmp=${BENCH_TMP:-${TMPDIR:-/tmp}}")
        need_mb=1024
        ;;
    # The small files on two clients and as blocks in the bucket, twice (each side).
    cluster)
        places=("tmp=${BENCH_TMP:-${TMPDIR:-/tmp}}")
        need_mb=$((files * 100 / 1024 + 1024))
        ;;
esac

works=()
pid=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$pid" ] && kill -0 "$pid" 2> /dev/null; then
        # goals.py stops its daemons, relays and rsync/lsyncd on TERM; they also get
        # TERM from the kernel if it dies (PR_SET_PDEATHSIG).
        kill -TERM "$pid" 2> /dev/null || true
        for _ in $(seq 300); do
            kill -0 "$pid" 2> /dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2> /dev/null || true
    fi
    wait 2> /dev/null || true
    local work left
    for work in "${works[@]}"; do
        # Whatever the benchmark started and is still shutting down (daemons drain for up
        # to 8 s) is found by the work directory in its command line; it must be gone
        # before the directory is removed.
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
    done
    echo "bench/run.sh: uptime at the end: $(uptime)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

work_args=()
for p in "${places[@]}"; do
    place="${p%%=*}"
    base="${p#*=}"
    mkdir -p "$base"
    avail_mb=$(($(df -Pk "$base" | awk 'NR == 2 { print $4 }') / 1024))
    [ "$avail_mb" -ge "$need_mb" ] ||
        die "$base has $avail_mb MiB free; this run needs about $need_mb MiB (lower BENCH_SIZE_MB or choose another directory)"
    work="$(mktemp -d "$base/filesync-bench.XXXXXX")"
    works+=("$work")
    work_args+=(--work "$place=$work")
    echo "bench/run.sh: working in $work ($place: $(fsname "$base"))" >&2
done

echo "bench/run.sh: uptime at the start: $(uptime)"
case "$mode" in
    rsync)
        python3 "$root/bench/goals.py" \
            --bin "$bin" "${work_args[@]}" --rows "$rows" \
            --size-mb "$size_mb" --files "$files" --dirs "$dirs" --many "$many" \
            --writes "$writes" --append-secs "$append_secs" \
            --lsyncd "$lsyncd" --timeout "$timeout" --log "${BENCH_LOG:-}" --perf "$perf" \
            --markdown "$out" --command "$command" &
        ;;
    syncthing)
        python3 "$root/bench/stbench.py" \
            --bin "$bin" --work "${works[0]}" --scenarios "$scenarios" \
            --size-mb "$size_mb" --files "$files" --dirs "$dirs" --writes "$writes" \
            --big-files "$big_files" --timeout "$timeout" --log "${BENCH_LOG:-}" \
            --markdown "$out" --command "$command" &
        ;;
    many)
        python3 "$root/bench/many.py" \
            --bin "$bin" --work "${works[0]}" --shared "$shared" --accounts "$accounts" \
            --rounds "$rounds" --timeout "$timeout" --log "${BENCH_LOG:-}" \
            --markdown "$out" --command "$command" &
        ;;
    cluster)
        python3 "$root/bench/cluster.py" \
            --bin "$bin" --work "${works[0]}" --files "$files" --dirs "$dirs" \
            --writes "$writes" --timeout "$timeout" --log "${BENCH_LOG:-}" \
            --markdown "$out" --command "$command" &
        ;;
esac
pid=$!
wait "$pid"

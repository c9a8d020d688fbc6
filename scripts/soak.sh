#!/usr/bin/env bash
# Runs the chaos soak (tests/tests/e2e/soak.rs) for a long time: a server and three
# clients behind fault proxies, a random workload, random kills and network cuts, then
# heal, converge and check that nothing was lost.
#
#   scripts/soak.sh [MINUTES] [SEED]     (default 30 minutes, a random seed)
#
# Builds the workspace first (the test starts the built filesyncd and filesyncctl). The
# seed is printed at the start with the command that re-runs it, and the summary at the
# end (operations and faults by kind, conflict copies, files and bytes, result). The
# whole op log goes to $FILESYNC_SOAK_LOG (default: filesync-soak-SEED.log in $TMPDIR).
# The daemons log at info level unless FILESYNC_LOG says otherwise: debug logs of an
# hour fill a disk. FILESYNC_KEEP_TEST_DIRS=1 keeps the trees and daemon logs.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes="${1:-30}"
seed="${2:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}"
case "$minutes" in
  '' | *[!0-9]*) echo "usage: scripts/soak.sh [MINUTES] [SEED]" >&2; exit 2 ;;
esac

export FILESYNC_SOAK_SECS=$((minutes * 60))
export FILESYNC_SOAK_SEED="$seed"
export FILESYNC_SOAK_LOG="${FILESYNC_SOAK_LOG:-${TMPDIR:-/tmp}/filesync-soak-$seed.log}"
export FILESYNC_LOG="${FILESYNC_LOG:-info}"
echo "soak: $minutes min, seed $seed, op log in $FILESYNC_SOAK_LOG"
cargo build --workspace
exec cargo test -p filesync-tests --test e2e soak::chaos_soak -- --exact --nocapture

#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time each.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 60)
#
# Installs cargo-fuzz (cargo install --locked) if it is missing. cargo-fuzz needs
# nightly compiler flags (sanitizers, coverage instrumentation); on a stable toolchain
# RUSTC_BOOTSTRAP=1 lets the stable compiler accept them. New inputs the fuzzer finds go
# to fuzz/corpus/TARGET (not committed); the committed seeds are read from
# fuzz/seeds/TARGET. A crash stops the run, leaves its input in fuzz/artifacts/TARGET,
# and makes this script exit non-zero.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-60}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]" >&2; exit 2 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi

export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
for target in $targets; do
  # Every ignore-file input builds a matcher (regex compilation): long inputs would
  # leave the fuzzer a few dozen runs a second.
  max_len=65536
  if [ "$target" = ignore_parse ]; then max_len=512; fi
  mkdir -p "corpus/$target"
  echo "== fuzz target $target for ${seconds}s"
  cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 -timeout=10
done
echo "all fuzz targets ran ${seconds}s each without a crash"

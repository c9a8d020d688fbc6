#!/usr/bin/env bash
# Installs, when this machine can (root and apt-get) and it is missing, the one optional
# tool a test uses: libfaketime, for the device-with-a-skewed-clock test
# (tests/tests/e2e/clock.rs), which otherwise says it was skipped. `.ci/run` runs this
# before the test suite; nothing else in the suite needs more than the Rust toolchain.
set -euo pipefail

if ls /usr/lib/*/faketime/libfaketime.so.1 /usr/lib64/faketime/libfaketime.so.1 > /dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get > /dev/null; then
    echo "scripts/test-deps.sh: libfaketime missing; the skewed-clock test will be skipped" >&2
    exit 0
fi
echo "scripts/test-deps.sh: installing faketime with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
timeout 600 apt-get install -y -q faketime > /dev/null 2>&1 || {
    timeout 600 apt-get update -q > /dev/null 2>&1 &&
        timeout 600 apt-get install -y -q faketime > /dev/null 2>&1
} || echo "scripts/test-deps.sh: faketime could not be installed; its test will be skipped" >&2

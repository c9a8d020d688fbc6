#!/usr/bin/env bash
# The whole test suite: unit tests and the end-to-end tests that start real filesyncd
# processes on loopback. First installs, when this machine can (root and apt-get), the
# one optional tool a test uses: libfaketime, for the device-with-a-skewed-clock test
# (tests/tests/e2e/clock.rs), which otherwise says it was skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

faketime_lib() {
    ls /usr/lib/*/faketime/libfaketime.so.1 /usr/lib64/faketime/libfaketime.so.1 2>/dev/null | head -n 1
}

if [ -z "$(faketime_lib)" ] && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    echo "scripts/test.sh: installing faketime with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get install -y -q faketime > /dev/null 2>&1 || {
        timeout 600 apt-get update -q > /dev/null 2>&1 &&
            timeout 600 apt-get install -y -q faketime > /dev/null 2>&1
    } || echo "scripts/test.sh: faketime could not be installed; its test will be skipped" >&2
fi

cargo test --workspace "$@"

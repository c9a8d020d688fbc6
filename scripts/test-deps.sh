#!/usr/bin/env bash
# Installs, when this machine can (root and apt-get) and they are missing, the optional
# tools the checks use: libfaketime, for the device-with-a-skewed-clock test
# (tests/tests/e2e/clock.rs); Wine (64-bit), for the Windows device test
# (tests/tests/e2e/windows.rs), both of which otherwise say they were skipped; and for
# the Windows build (`.ci/run`) and that test's shim DLL, the mingw-w64 cross compiler
# and the rustup target x86_64-pc-windows-gnu; for the cluster backend's tests
# (tests/tests/e2e/scaleout.rs), PostgreSQL 15 (Debian's postgresql) and Garage, a real
# S3-compatible store, built once with cargo install and kept in cargo's bin directory,
# outside the clone, so later runs find it: only the SQLite metadata engine the tests
# use, at optimisation level 1, which takes about 8 minutes on 2 cores where the default
# build takes 20 (measured here); for the web page's tests (tests/tests/e2e/web.rs),
# Debian's chromium and its WebDriver, chromium-driver. `.ci/run` runs this before the
# test suite; nothing else in the suite needs more than the Rust toolchain.
set -euo pipefail

WINDOWS_TARGET=x86_64-pc-windows-gnu

have_faketime() {
    ls /usr/lib/*/faketime/libfaketime.so.1 /usr/lib64/faketime/libfaketime.so.1 > /dev/null 2>&1
}

# apt-get install of the Debian packages named, once the package lists are fresh if the
# first try fails; says what is missing and what it affects when it cannot.
apt_install() {
    local what="$1"
    shift
    if [ "$(id -u)" != 0 ] || ! command -v apt-get > /dev/null; then
        echo "scripts/test-deps.sh: $* missing and not installable here (needs root and apt-get); $what" >&2
        return 0
    fi
    echo "scripts/test-deps.sh: installing $* with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get install -y -q "$@" > /dev/null 2>&1 || {
        timeout 600 apt-get update -q > /dev/null 2>&1 &&
            timeout 600 apt-get install -y -q "$@" > /dev/null 2>&1
    } || echo "scripts/test-deps.sh: $* could not be installed; $what" >&2
}

if ! have_faketime; then
    apt_install "the skewed-clock test will be skipped" faketime
fi
if ! command -v wine > /dev/null || ! [ -x /usr/lib/wine/wine64 ]; then
    apt_install "the Windows device test will be skipped" wine wine64
fi
if ! command -v x86_64-w64-mingw32-gcc > /dev/null; then
    apt_install "the Windows build will fail" gcc-mingw-w64-x86-64
fi
if command -v rustup > /dev/null; then
    if ! rustup target list --installed | grep -qx "$WINDOWS_TARGET"; then
        echo "scripts/test-deps.sh: adding the rustup target $WINDOWS_TARGET" >&2
        timeout 600 rustup target add "$WINDOWS_TARGET" > /dev/null 2>&1 ||
            echo "scripts/test-deps.sh: rustup target $WINDOWS_TARGET could not be added; the Windows build will fail" >&2
    fi
else
    echo "scripts/test-deps.sh: no rustup; the Windows build needs the target $WINDOWS_TARGET" >&2
fi
if ! [ -x /usr/bin/chromium ] || ! [ -x /usr/bin/chromedriver ]; then
    apt_install "the web page's browser tests will be skipped" chromium chromium-driver
fi
if ! [ -x /usr/lib/postgresql/15/bin/initdb ]; then
    apt_install "the cluster tests will fail under .ci/run" postgresql
fi
GARAGE_VERSION=2.5.0
if ! command -v garage > /dev/null && ! [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/garage" ]; then
    echo "scripts/test-deps.sh: building garage $GARAGE_VERSION (once; about 8 minutes on 2 cores)" >&2
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 timeout 3600 cargo install --locked --quiet \
        --no-default-features --features bundled-libs,sqlite "garage@$GARAGE_VERSION" ||
        echo "scripts/test-deps.sh: garage could not be built; the cluster tests will fail under .ci/run" >&2
fi

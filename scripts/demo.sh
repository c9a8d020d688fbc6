#!/usr/bin/env bash
# Builds filesync and runs a server and two clients on loopback, syncing a demo folder,
# with configs in a fresh temporary directory. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bins
bin="${CARGO_TARGET_DIR:-$PWD/target}/release"
demo="$(mktemp -d "${TMPDIR:-/tmp}/filesync-demo.XXXXXX")"
port="${FILESYNC_DEMO_PORT:-7101}"
pids=()

stop() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "stopped; the demo's files are in $demo"
}
trap stop EXIT INT TERM

node() { # node NAME [EXTRA-TOML]: writes NAME's config and starts its daemon
    mkdir -p "$demo/$1"
    printf '[daemon]\nstate_dir = "%s"\ncontrol_socket = "%s"\n%s' \
        "$demo/$1/state" "$demo/$1/ctl.sock" "${2:-}" > "$demo/$1/filesyncd.toml"
    "$bin/filesyncd" --config "$demo/$1/filesyncd.toml" 2> "$demo/$1/daemon.log" &
    pids+=($!)
    for _ in $(seq 100); do
        "$bin/filesyncctl" --socket "$demo/$1/ctl.sock" status > /dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "the $1 daemon did not start; see $demo/$1/daemon.log" >&2
    exit 1
}

# Only the laptop serves the web page, on the default address; the others leave it off.
node server "$(printf 'web_listen = ""\n[server]\nlisten = "127.0.0.1:%s"\ndata_dir = "%s"\n' "$port" "$demo/server/data")"
# The server's admin invites the laptop into account alice; the laptop, once enrolled,
# invites the desktop into the same account.
token=$("$bin/filesyncctl" --socket "$demo/server/ctl.sock" server invite alice)
for c in alice-laptop alice-desktop; do
    if [ "$c" = alice-laptop ]; then node "$c"; else node "$c" 'web_listen = ""'; fi
    mkdir -p "$demo/$c/Docs"
    "$bin/filesyncctl" --socket "$demo/$c/ctl.sock" add "$demo/$c/Docs" --server "127.0.0.1:$port" --name docs --token "$token"
    token=$("$bin/filesyncctl" --socket "$demo/$c/ctl.sock" device invite --server "127.0.0.1:$port")
done

echo "Hello from the laptop, $(date)" > "$demo/alice-laptop/Docs/hello.txt"
"$bin/filesyncctl" --socket "$demo/alice-laptop/ctl.sock" wait --timeout 30s
for _ in $(seq 100); do [ -f "$demo/alice-desktop/Docs/hello.txt" ] && break; sleep 0.1; done
"$bin/filesyncctl" --socket "$demo/alice-desktop/ctl.sock" wait --timeout 30s
echo
echo "hello.txt, written on the laptop, is now on the desktop:"
cat "$demo/alice-desktop/Docs/hello.txt"
cat <<MSG

A server and two clients are running (Ctrl-C stops them):
  server copy:     $demo/server/data/alice/docs
  laptop folder:   $demo/alice-laptop/Docs
  desktop folder:  $demo/alice-desktop/Docs
Try, in another terminal:
  echo hi > $demo/alice-laptop/Docs/new.txt && ls $demo/alice-desktop/Docs
  $bin/filesyncctl --socket $demo/alice-desktop/ctl.sock status
  $bin/filesyncctl --socket $demo/server/ctl.sock status
The laptop's web page: $bin/filesyncctl --socket $demo/alice-laptop/ctl.sock web --open
Logs: $demo/*/daemon.log
MSG
wait

#!/usr/bin/env bash
# Builds the filesync packages: release binaries, shell completions and man pages (made
# by the binaries themselves), then a .deb with cargo-deb and an .rpm with
# cargo-generate-rpm, each installed with `cargo install --locked` when missing.
#
#   packaging/build.sh              # packages land in $CARGO_TARGET_DIR/packages/
#
# Prints the path of the .deb, then of the .rpm, on its last two lines.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"

for tool in deb generate-rpm; do
    if ! command -v "cargo-$tool" >/dev/null; then
        echo "packaging/build.sh: installing cargo-$tool" >&2
        cargo install --locked "cargo-$tool"
    fi
done

cargo build --release -p filesyncd -p filesyncctl

pkg="$target/release/pkg"
rm -rf "$pkg"
mkdir -p "$pkg/completions" "$pkg/man"
ctl="$target/release/filesyncctl"
"$ctl" completions bash > "$pkg/completions/filesyncctl.bash"
"$ctl" completions zsh > "$pkg/completions/_filesyncctl"
"$ctl" completions fish > "$pkg/completions/filesyncctl.fish"
"$ctl" man "$pkg/man"
"$target/release/filesyncd" --man-page > "$pkg/man/filesyncd.1"

out="$target/packages"
rm -rf "$out"
mkdir -p "$out"
cargo deb -p filesyncd --no-build --no-strip --output "$out/" >&2
cargo generate-rpm -p daemon --target-dir "$target" --output "$out/" >&2
echo "$out"/*.deb
echo "$out"/*.rpm

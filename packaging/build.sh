#!/usr/bin/env bash
# Builds the filesync packages: release binaries, shell completions and man pages (made
# by the binaries themselves), then a .deb with cargo-deb and an .rpm with
# cargo-generate-rpm, each installed with `cargo install --locked` when missing; and
# filesync-VERSION-windows-x86_64.zip with the release build of both binaries for
# x86_64-pc-windows-gnu (mingw and the rustup target: scripts/test-deps.sh) and
# packaging/windows/README-windows.txt, zipped by Python's zipfile module.
#
#   packaging/build.sh              # packages land in $CARGO_TARGET_DIR/packages/
#
# Prints the path of the .deb, then of the .rpm, then of the .zip on its last three lines.
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

windows=x86_64-pc-windows-gnu
cargo build --release --target "$windows" -p filesyncd -p filesyncctl >&2
version="$("$target/release/filesyncd" --version | awk '{print $2}')"
zip_dir="$target/$windows/release/filesync-$version-windows-x86_64"
rm -rf "$zip_dir"
mkdir -p "$zip_dir"
cp "$target/$windows/release/filesyncd.exe" "$target/$windows/release/filesyncctl.exe" \
    packaging/windows/README-windows.txt "$zip_dir/"
zip="$out/filesync-$version-windows-x86_64.zip"
(cd "$(dirname "$zip_dir")" && python3 -m zipfile -c "$zip" "$(basename "$zip_dir")")

echo "$out"/*.deb
echo "$out"/*.rpm
echo "$zip"

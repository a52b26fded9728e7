#!/usr/bin/env bash
# test-outside.sh PACKAGE_DIR WORK_DIR RUST_DIR - a crate outside the tree
# built, as a user's would be, from the packaged crates (make
# rust-test-outside runs it, bounded by timeout).
#
# PACKAGE_DIR holds llmlink-sys-X.crate and llmlink-X.crate (cargo package);
# they are unpacked under WORK_DIR/crates, and WORK_DIR/app depends on them:
# llmlink by path, llmlink-sys through [patch.crates-io] (the packaged
# llmlink names llmlink-sys by version only, as crates.io serves it). The
# app's binaries are the safe crate's examples prefill_server and
# decode_client (copied from RUST_DIR/llmlink/examples). Checks:
#   1. bindgen and clang-sys are not in the app's dependency tree (no
#      `bindgen` feature: the shipped bindings are used);
#   2. it builds with LIBCLANG_PATH=/nonexistent and its own target dir;
#   3. llmlink-sys compiled its own csrc/ (the build script's c_sources);
#   4. prefill_server and decode_client link on loopback, pull blocks and
#      decode_client checks every byte (exit 0 only then).
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 PACKAGE_DIR WORK_DIR RUST_DIR" >&2
    exit 2
fi
pkg=$(cd "$1" && pwd)
work=$2
rust=$(cd "$3" && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$rust/Cargo.toml" | head -1)
for c in llmlink-sys llmlink; do
    [ -f "$pkg/$c-$version.crate" ] || { echo "test-outside: no $pkg/$c-$version.crate (make rust-package)" >&2; exit 1; }
done

rm -rf "$work/crates" "$work/app"
mkdir -p "$work/crates" "$work/app/src/bin"
work=$(cd "$work" && pwd)
tar -xzf "$pkg/llmlink-sys-$version.crate" -C "$work/crates"
tar -xzf "$pkg/llmlink-$version.crate" -C "$work/crates"
cat >"$work/app/Cargo.toml" <<TOML
[package]
name = "llmlink-outside"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
llmlink = { path = "../crates/llmlink-$version" }

[patch.crates-io]
llmlink-sys = { path = "../crates/llmlink-sys-$version" }
TOML
cp "$rust/llmlink/examples/prefill_server.rs" "$rust/llmlink/examples/decode_client.rs" "$work/app/src/bin/"
cp -r "$rust/llmlink/examples/shared" "$work/app/src/bin/shared"
# The workspace's lock file: the same crate versions that `cargo test
# --locked` already fetched (cargo drops what the app does not use).
cp "$rust/Cargo.lock" "$work/app/Cargo.lock"

cd "$work/app"
export CARGO_TARGET_DIR="$work/target"
unset LLMLINK_SRC_DIR LLMLINK_SYS_USE_PKG_CONFIG
# libclang out of reach: were bindgen built, it could not load it.
export LIBCLANG_PATH=/nonexistent

tree=$(cargo tree -e normal,build --prefix none)
if grep -Eq '^(bindgen|clang-sys) ' <<<"$tree"; then
    echo "test-outside: FAILED: bindgen is in the dependency tree of a crate using llmlink:" >&2
    echo "$tree" >&2
    exit 1
fi
echo "test-outside: dependency tree without bindgen or clang-sys: $(sort -u <<<"$tree" | cut -d' ' -f1 | tr '\n' ' ')"

cargo build --bins
out=$(ls "$CARGO_TARGET_DIR"/debug/build/llmlink-sys-*/output)
src=$(sed -n 's/^cargo:c_sources=//p' $out | sort -u)
if [ "$src" != "$work/crates/llmlink-sys-$version/csrc" ]; then
    echo "test-outside: FAILED: llmlink-sys compiled '$src', not its own csrc/" >&2
    exit 1
fi
echo "test-outside: llmlink-sys compiled its own C sources: $src"
if ls -d "$CARGO_TARGET_DIR"/debug/build/bindgen-* >/dev/null 2>&1; then
    echo "test-outside: FAILED: bindgen was built" >&2
    exit 1
fi

bin=$CARGO_TARGET_DIR/debug
coproc server { exec "$bin/prefill_server" --transport tcp --serve-seconds 60; }
server_in=${server[1]}
read -r -t 20 line <&"${server[0]}" || { echo "test-outside: FAILED: prefill_server printed no line" >&2; exit 1; }
port=${line#PORT }
case $port in '' | *[!0-9]*) echo "test-outside: FAILED: prefill_server said '$line'" >&2; exit 1 ;; esac
rc=0
"$bin/decode_client" --connect "127.0.0.1:$port" --blocks 32 || rc=$?
exec {server_in}>&- # EOF: the server reports and exits
wait "$server_PID" || true
if [ "$rc" -ne 0 ]; then
    echo "test-outside: FAILED: decode_client exited $rc" >&2
    exit 1
fi
echo "test-outside: ok (a crate outside the tree, built from the packaged crates without libclang, linked and pulled every byte right)"

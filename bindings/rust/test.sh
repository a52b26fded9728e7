#!/usr/bin/env bash
# test.sh BUILD_DIR - the Rust binding's suite (make test-rust runs it).
#
#  1. cargo test         both crates: sys unit tests, the safe crate's
#                        integration tests (engines in this process, the
#                        example binaries as child processes), doc tests
#     then the `prometheus` feature's test (cargo test --features prometheus)
#  2. cargo clippy --all-targets --features llmlink/prometheus -- -D warnings
#  3. cargo doc --no-deps with RUSTDOCFLAGS=-D warnings (the safe crate has
#                        #![deny(missing_docs)])
#  4. the pkg-config path of llmlink-sys: `make install` into
#     BUILD_DIR/rust-prefix, build and test against it with
#     LLMLINK_SYS_USE_PKG_CONFIG=1, and check that a llmlink outside the
#     crate's version range is refused.
#
# Cargo's outputs go to BUILD_DIR/rust-target (the pkg-config steps share it:
# only llmlink-sys's build script and the two crates are redone), so the
# source tree stays clean. Crates come from crates.io at the versions in Cargo.lock (--locked).
# Every step runs even if an earlier one failed; the last line is
# "rust: N passed, M failed" (steps), and the exit status is 1 on a failure.
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 BUILD_DIR" >&2
    exit 2
fi
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
# BUILD as make knows it (relative to the repo root, or absolute), for the
# `make install` step; and its absolute form for cargo.
cd "$repo_root" || exit 2
build_arg=$1
mkdir -p "$build_arg"
build_dir=$(cd "$build_arg" && pwd)
cd "$here" || exit 2

if ! command -v cargo >/dev/null 2>&1; then
    echo "test-rust: FAILED: cargo is not installed (https://rustup.rs or apt-get install cargo)" >&2
    exit 1
fi

export CARGO_TARGET_DIR="$build_dir/rust-target"
passed=0
failed=0
failures=()

step() { # step NAME COMMAND...
    local name=$1
    shift
    echo "== rust: $name"
    local t0=$SECONDS
    if "$@"; then
        passed=$((passed + 1))
        echo "== rust: $name ok ($((SECONDS - t0)) s)"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "== rust: $name FAILED"
    fi
}

# Plain `cargo test` (not --all-targets): it builds the examples as the
# binaries tests/examples.rs runs, and runs the doc tests.
step "cargo test" cargo test --locked --workspace

# The optional `prometheus` feature (prometheus-client): its collector's test
# in tests/metrics.rs, which the plain run above compiles out, and the
# module's doc example.
prometheus_tests() {
    cargo test --locked -p llmlink --features prometheus --lib --test metrics &&
        cargo test --locked -p llmlink --features prometheus --doc prometheus
}
step "cargo test --features prometheus" prometheus_tests

if cargo clippy --version >/dev/null 2>&1; then
    step "cargo clippy" cargo clippy --locked --workspace --all-targets --features llmlink/prometheus -- -D warnings
else
    echo "test-rust: NOT RUN: cargo clippy is not installed (rustup component add clippy);" \
        "the clippy check was skipped" >&2
fi

step "cargo doc" env RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps

# --- the pkg-config path -----------------------------------------------------
prefix="$build_dir/rust-prefix"
pc_test() {
    "${MAKE:-make}" -C "$repo_root" --no-print-directory BUILD="$build_arg" PREFIX="$prefix" install \
        >/dev/null || return 1
    # The installed shared library is what pkg-config's -lllmlink finds.
    env LLMLINK_SYS_USE_PKG_CONFIG=1 PKG_CONFIG_PATH="$prefix/lib/pkgconfig" LD_LIBRARY_PATH="$prefix/lib" \
        cargo test --locked -p llmlink-sys -p llmlink --lib --test link --test cache
}
step "pkg-config: build and test against an installed llmlink" pc_test

pc_refuses_other_versions() {
    local fake="$build_dir/rust-fake-pc"
    mkdir -p "$fake"
    sed -e "s|^Version:.*|Version: 9.0.0|" -e "s|^prefix=.*|prefix=$prefix|" \
        "$prefix/lib/pkgconfig/llmlink.pc" >"$fake/llmlink.pc" || return 1
    local out
    out=$(env LLMLINK_SYS_USE_PKG_CONFIG=1 PKG_CONFIG_PATH="$fake" cargo build --locked -p llmlink-sys 2>&1)
    if [ $? -eq 0 ]; then
        echo "llmlink-sys built against llmlink 9.0.0, outside its version range" >&2
        return 1
    fi
    if ! grep -q "no installed llmlink >= " <<<"$out"; then
        echo "llmlink-sys failed for another reason than the version range:" >&2
        echo "$out" | tail -20 >&2
        return 1
    fi
    echo "refused as it should: $(grep -o 'no installed llmlink >= [^:]*' <<<"$out" | head -1)"
}
step "pkg-config: a version outside the range is refused" pc_refuses_other_versions

if [ "$failed" -ne 0 ]; then
    echo "rust: failed steps: ${failures[*]}"
fi
echo "rust: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# run-tests.sh BUILD_DIR - run the C test programs built into BUILD_DIR.
#
# Order: unit tests (tests/unit/test_*.c), integration tests
# (tests/integration/test_*.c), fuzz drivers (tests/fuzz/fuzz_*.c, each over
# tests/fuzz/corpus/<name>), then the export check of BUILD_DIR/libllmlink.so.
# The program list comes from the sources, so a source whose binary is
# missing counts as a failure, and a stale binary whose source is gone is
# not run.
#
# Each program runs under `timeout` (TEST_TIMEOUT seconds, default 600) with
# its output streamed. The last line printed is exactly "N passed, M failed";
# the exit status is 1 if anything failed.
#
# Environment given to the programs:
#   LLMLINK_BUILD   absolute BUILD_DIR
#   LLMLINK_NODE    absolute BUILD_DIR/tests/llmlink-node (integration tests)
#   LLMLINK_SANITIZER passed through (set by make asan / make tsan)
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 BUILD_DIR" >&2
    exit 2
fi

# Paths in the sources (tests/..., corpus dirs) are relative to the repo root.
repo_root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=$(cd "$1" 2>/dev/null && pwd) || {
    echo "run-tests: build directory '$1' does not exist (run make first)" >&2
    exit 2
}
cd "$repo_root"

export LLMLINK_BUILD="$build_dir"
export LLMLINK_NODE="$build_dir/tests/llmlink-node"

timeout_s=${TEST_TIMEOUT:-600}

# One test opens ~2000 sockets: raise the soft open-files limit to the hard one.
hard=$(ulimit -Hn)
if ! ulimit -n "$hard" 2>/dev/null; then
    # "unlimited" hard limits cannot be set verbatim on Linux; take fs.nr_open.
    nr_open=$(cat /proc/sys/fs/nr_open 2>/dev/null || echo 65536)
    ulimit -n "$nr_open" 2>/dev/null || true
fi

# Sanitizer runtimes (gcc 12's included) can fail on kernels with high mmap
# randomisation (vm.mmap_rnd_bits > 28): run them with ASLR off when the
# kernel lets us (setarch -R is refused under some container seccomp policies).
wrap=()
if [ -n "${LLMLINK_SANITIZER:-}" ] && command -v setarch >/dev/null 2>&1 &&
    setarch "$(uname -m)" -R true 2>/dev/null; then
    wrap=(setarch "$(uname -m)" -R)
fi

echo "run-tests: build=$build_dir open-files=$(ulimit -n) timeout=${timeout_s}s" \
    "${LLMLINK_SANITIZER:+sanitizer=$LLMLINK_SANITIZER}${wrap[*]+ (ASLR off)}"

names=()
results=()
times=()
passed=0
failed=0

# run_prog LABEL COMMAND... : run one program, record its result.
run_prog() {
    local label=$1
    shift
    echo
    echo "======== $label"
    local start end rc
    start=$(date +%s.%N)
    # timeout (not --foreground) signals the whole process group, so helper
    # processes an integration test started die with it; -k: SIGKILL 10 s later.
    timeout -k 10 "$timeout_s" "${wrap[@]+"${wrap[@]}"}" "$@"
    rc=$?
    end=$(date +%s.%N)
    local secs
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    local verdict
    if [ "$rc" -eq 0 ]; then
        verdict=PASS
        passed=$((passed + 1))
    else
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            verdict="FAIL (timeout after ${timeout_s}s, rc=$rc)"
        elif [ "$rc" -gt 128 ]; then
            verdict="FAIL (signal $((rc - 128)), rc=$rc)"
        else
            verdict="FAIL (rc=$rc)"
        fi
        failed=$((failed + 1))
    fi
    echo "======== $label: $verdict in ${secs}s"
    names+=("$label")
    results+=("$verdict")
    times+=("$secs")
}

# record_missing LABEL WHY : a program that should exist but does not.
record_missing() {
    echo
    echo "======== $1: FAIL ($2)"
    names+=("$1")
    results+=("FAIL ($2)")
    times+=("0.0")
    failed=$((failed + 1))
}

run_from_sources() { # run_from_sources GLOB : test programs of a source dir
    local src name bin
    for src in $1; do
        [ -f "$src" ] || continue # unmatched glob
        name=$(basename "$src" .c)
        bin="$build_dir/tests/$name"
        if [ -x "$bin" ]; then
            run_prog "$name" "$bin"
        else
            record_missing "$name" "not built: $bin"
        fi
    done
}

run_from_sources 'tests/unit/test_*.c'
run_from_sources 'tests/integration/test_*.c'

for src in tests/fuzz/fuzz_*.c; do
    [ -f "$src" ] || continue
    name=$(basename "$src" .c)
    bin="$build_dir/tests/$name"
    corpus="tests/fuzz/corpus/${name#fuzz_}"
    if [ -x "$bin" ]; then
        run_prog "$name" "$bin" "$corpus"
    else
        record_missing "$name" "not built: $bin"
    fi
done

# Binaries left from sources that no longer exist are not run, only noted.
for bin in "$build_dir"/tests/test_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin")
    if [ ! -f "tests/unit/$name.c" ] && [ ! -f "tests/integration/$name.c" ]; then
        echo "run-tests: note: skipping stale $bin (no tests/unit or tests/integration source)"
    fi
done

if [ -f "$build_dir/libllmlink.so" ]; then
    run_prog check_exports sh tests/abi/check_exports.sh "$build_dir/libllmlink.so"
fi
# Install, build a consumer through pkg-config, uninstall: plain builds only
# (a sanitized library would need the sanitizer runtime in the consumer).
if [ -f "$build_dir/libllmlink.so" ] && [ -z "${LLMLINK_SANITIZER:-}" ]; then
    run_prog check_install sh tests/abi/check_install.sh "$build_dir"
fi

# The user docs (docs/options.md, status-codes.md, migration.md) list exactly
# the option keys, statuses and Python names the code has.
run_prog check_docs python3 tests/docs/check_docs.py

# The build rebuilds what a newly installed (or removed) libibverbs-dev
# affects: its own throwaway build directory, plain builds only.
if [ -z "${LLMLINK_SANITIZER:-}" ]; then
    run_prog check_rebuild sh ci/check-rebuild.sh
fi

echo
echo "======== summary (${build_dir})"
for i in "${!names[@]}"; do
    printf '  %-40s %8ss  %s\n' "${names[$i]}" "${times[$i]}" "${results[$i]}"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

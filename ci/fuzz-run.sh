#!/usr/bin/env bash
# fuzz-run.sh FUZZ_BUILD SECONDS [TARGET...] - coverage-guided libFuzzer runs
# of the fuzz targets built into FUZZ_BUILD/tests (make fuzz-ci /
# fuzz-libfuzzer build them), SECONDS each, one after the other.
#
# Each target starts from its seeds (tests/fuzz/corpus/<name>, read only)
# and its working corpus FUZZ_BUILD/corpus/<name> (kept between runs, never
# in the repository). A crash, a sanitizer report, a leak, a timeout (10 s
# on one input) or an out-of-memory fails the target: its input is saved as
# FUZZ_BUILD/artifacts/<name>/crash-... (replay: FUZZ_BUILD/tests/fuzz_<name>
# that-file) and the log's tail is printed. Every target runs even after one
# failed; the exit status is 1 if any did.
#
# Prints per target the executions, libFuzzer's final coverage (cov: edges,
# ft: features) and corpus size, then the totals; full logs are in
# FUZZ_BUILD/logs/<name>.log. No TARGET: every tests/fuzz/fuzz_*.c.
# FUZZ_JOBS (default 1): parallel fuzzing jobs per target (libFuzzer -jobs/
# -workers), for long runs on more cores.
set -uo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 FUZZ_BUILD SECONDS [TARGET...]" >&2
    exit 2
fi
repo_root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$1" 2>/dev/null && pwd) || {
    echo "fuzz-run: $1 does not exist (make fuzz-ci builds it)" >&2
    exit 2
}
secs=$2
shift 2
jobs=${FUZZ_JOBS:-1}

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for src in "$repo_root"/tests/fuzz/fuzz_*.c; do
        n=$(basename "$src" .c)
        targets+=("${n#fuzz_}")
    done
fi

mkdir -p "$build/logs"
status=0
total_execs=0
summary=()
for name in "${targets[@]}"; do
    bin="$build/tests/fuzz_$name"
    work="$build/corpus/$name"
    art="$build/artifacts/$name"
    log="$build/logs/$name.log"
    mkdir -p "$work" "$art"
    seeds="$repo_root/tests/fuzz/corpus/$name"
    [ -d "$seeds" ] || seeds=
    if [ ! -x "$bin" ]; then
        echo "fuzz-run: fuzz_$name: FAIL (not built: $bin)"
        summary+=("$(printf '  %-18s FAIL (not built)' "fuzz_$name")")
        status=1
        continue
    fi
    echo "== fuzz_$name: libFuzzer for ${secs}s (${jobs} job(s)), log $log"
    par=()
    if [ "$jobs" -gt 1 ]; then
        par=(-jobs="$jobs" -workers="$jobs")
    fi
    # ASLR off where allowed, as run-tests.sh does for the sanitizers.
    wrap=()
    if command -v setarch >/dev/null 2>&1 && setarch "$(uname -m)" -R true 2>/dev/null; then
        wrap=(setarch "$(uname -m)" -R)
    fi
    start=$(date +%s)
    ( cd "$build" && timeout -k 10 $((secs + 120)) "${wrap[@]+"${wrap[@]}"}" "$bin" \
        -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$art/" "${par[@]+"${par[@]}"}" "$work" ${seeds:+"$seeds"} ) >"$log" 2>&1
    rc=$?
    end=$(date +%s)
    # With -jobs the stats are in fuzz-<n>.log files of the working directory.
    if [ "$jobs" -gt 1 ]; then
        cat "$build"/fuzz-*.log >>"$log" 2>/dev/null
        rm -f "$build"/fuzz-*.log
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | awk '{ s += $1 } END { print s + 0 }')
    last=$(grep -E '(DONE|INITED|pulse|NEW|REDUCE) +cov:' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
    crashes=$(find "$art" -type f | wc -l)
    total_execs=$((total_execs + execs))
    verdict=ok
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        verdict="FAIL (rc=$rc)"
        status=1
        echo "---- fuzz_$name failed; last lines of $log:"
        tail -40 "$log"
        echo "---- inputs saved in $art:"
        ls -l "$art"
    fi
    line=$(printf '  %-18s %12s execs in %4ss  cov %6s  ft %7s  corpus %6s  crashes %s  %s' \
        "fuzz_$name" "$execs" "$((end - start))" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes" \
        "$verdict")
    echo "$line"
    summary+=("$line")
done

echo
echo "======== fuzz summary ($build, ${secs}s per target)"
printf '%s\n' "${summary[@]}"
echo "  total: $total_execs executions"
exit $status

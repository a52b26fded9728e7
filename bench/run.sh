#!/usr/bin/env bash
# run.sh [BUILD_DIR] [options] - run the link, transfer and small-request
# benchmarks.
#
# Builds nothing: `make bench` builds $BUILD/bench/bench_link and
# $BUILD/bench/bench_xfer first, then calls this script. It runs
#   1. bench_link, teeing its table (stdout) to $BUILD/bench/results-link.md;
#   2. the references, where installed (bash ci/install-bench-deps.sh):
#      iperf3, one TCP stream on 127.0.0.1, and ucx_perftest ucp_get with
#      UCX_TLS=tcp on lo, 256 KiB messages;
#   3. bench_xfer, given those figures (it prints them and our ratios to
#      them), teeing its tables to $BUILD/bench/results-xfer.md;
#   4. bench_small (one-block pull latency), teeing its table to
#      $BUILD/bench/results-small.md, then bench_async (many one-block pulls
#      in flight) to results-async.md where it was built (it needs the task
#      API).
#   5. bench_notify (notification send and round trip between two
#      processes), teeing its table to $BUILD/bench/results-notify.md.
# Progress lines (stderr) go to the terminal only. A run that prints nothing
# (a usage error) leaves the previous results file alone.
#
# Options:
#   --quick            a smoke run of both (and 1 s / 200-message references)
#   --only a,b,...     bench_link sections only (a..e); alone, skips bench_xfer
#   --xfer-only a,...  bench_xfer sections only (a..d); alone, skips bench_link
#   --streams N        llmlink.StreamsPerLink for bench_xfer (1..8)
#   --skip LIST        skip some of: link, xfer, refs, small, notify (comma-separated)
#   --help
# Other arguments go to bench_link, as before.
#
# The build directory is, in order: a first argument that names a directory
# (what `make bench` passes), $BUILD, $LLMLINK_BUILD, else "build".
# Exit status: 0 when every benchmark that ran exited 0, else the first
# non-zero one (1: a section could not run, 2: a usage error). A reference
# that is missing or fails does not change it (its row says why).
set -uo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo_root"

build=${BUILD:-${LLMLINK_BUILD:-build}}
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ] && [ -d "$1" ]; then
    build=$1
    shift
fi

usage() {
    sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

quick=0
link_args=()
xfer_args=()
link_only=0
xfer_only=0
skip=","
while [ $# -gt 0 ]; do
    case $1 in
    --quick) quick=1; link_args+=(--quick); xfer_args+=(--quick) ;;
    --only) [ $# -ge 2 ] || { usage >&2; exit 2; }
        link_args+=(--only "$2"); link_only=1; shift ;;
    --only=*) link_args+=("$1"); link_only=1 ;;
    --xfer-only) [ $# -ge 2 ] || { usage >&2; exit 2; }
        xfer_args+=(--only "$2"); xfer_only=1; shift ;;
    --xfer-only=*) xfer_args+=(--only "${1#--xfer-only=}"); xfer_only=1 ;;
    --streams) [ $# -ge 2 ] || { usage >&2; exit 2; }
        xfer_args+=(--streams "$2"); shift ;;
    --streams=*) xfer_args+=("$1") ;;
    --skip) [ $# -ge 2 ] || { usage >&2; exit 2; }
        skip="$skip$2,"; shift ;;
    --skip=*) skip="$skip${1#--skip=}," ;;
    --help|-h) usage; exit 0 ;;
    *) link_args+=("$1") ;;
    esac
    shift
done
# One --only alone restricts the run to that benchmark.
if [ $link_only = 1 ] && [ $xfer_only = 0 ]; then skip="${skip}xfer,refs,small,notify,"; fi
if [ $xfer_only = 1 ] && [ $link_only = 0 ]; then skip="${skip}link,small,notify,"; fi
skipped() { case $skip in *",$1,"*) return 0 ;; esac; return 1; }

bins=()
skipped link || bins+=("$build/bench/bench_link")
skipped xfer || bins+=("$build/bench/bench_xfer")
skipped small || bins+=("$build/bench/bench_small")
skipped notify || bins+=("$build/bench/bench_notify")
for bin in "${bins[@]+"${bins[@]}"}"; do
    if [ ! -x "$bin" ]; then
        echo "bench/run.sh: $bin does not exist; build it with 'make bench-bins' (or 'make bench')" >&2
        exit 2
    fi
done

# bench_link raises the soft open-files limit itself; raise it here too so
# the limit is right even for a binary built from an older source.
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true

# run_teed OUT BIN ARGS...: run BIN, tee its stdout to OUT (written beside,
# then moved, so that a run that prints nothing keeps the previous OUT).
run_teed() {
    local out=$1
    shift
    echo "bench/run.sh: $*  (table -> $out)" >&2
    "$@" | tee "$out.tmp"
    local st=${PIPESTATUS[0]}
    if [ -s "$out.tmp" ]; then
        mv -f "$out.tmp" "$out"
    else
        rm -f "$out.tmp"
    fi
    return "$st"
}

# ---- references ------------------------------------------------------------
# The reference functions run in $(...) subshells: each stops the server it
# started before it returns (and `timeout` bounds it in any case).
tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/llmlink-bench.XXXXXX")
trap 'rm -rf "$tmpdir"' EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' \
        2>/dev/null || echo $((20000 + RANDOM % 20000))
}

# wait_listen PORT PID: until something listens on 127.0.0.1:PORT (5 s).
# Never connects (an iperf3 -1 server would take a probe for its one test).
wait_listen() {
    local i
    for i in $(seq 50); do
        kill -0 "$2" 2>/dev/null || return 1
        if command -v ss >/dev/null 2>&1; then
            ss -Hltn "sport = :$1" 2>/dev/null | grep -q . && return 0
        elif [ "$i" -ge 5 ]; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# stop_ref PID: give a reference server 5 s to exit on its own, then kill it.
stop_ref() {
    local i
    for i in $(seq 50); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}

# Each prints one line: GB/s (1e9 bytes/s), or why there is no figure.
ref_iperf3() {
    command -v iperf3 >/dev/null 2>&1 || { echo "iperf3 not installed (bash ci/install-bench-deps.sh)"; return; }
    local secs=5 port json gbps spid
    [ $quick = 1 ] && secs=1
    port=$(free_port)
    timeout $((secs + 30)) iperf3 -s -1 -p "$port" >"$tmpdir/iperf3-server.log" 2>&1 &
    spid=$!
    if ! wait_listen "$port" "$spid"; then
        kill "$spid" 2>/dev/null
        wait "$spid" 2>/dev/null
        echo "iperf3 server did not start: $(tail -n 1 "$tmpdir/iperf3-server.log" | tr -d '|')"
        return
    fi
    json=$(timeout $((secs + 20)) iperf3 -c 127.0.0.1 -p "$port" -t "$secs" -J 2>&1)
    stop_ref "$spid"
    # end.sum_received.bits_per_second: what the receiver got.
    gbps=$(printf '%s' "$json" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print("%.3f" % (d["end"]["sum_received"]["bits_per_second"] / 8e9))' 2>/dev/null)
    if [ -z "$gbps" ]; then
        gbps=$(printf '%s\n' "$json" | awk '
            /"sum_received"/ { in_sum = 1 }
            in_sum && /"bits_per_second"/ { gsub(/[^0-9.eE+-]/, "", $2); printf "%.3f\n", $2 / 8e9; exit }')
    fi
    if [ -n "$gbps" ]; then
        echo "$gbps"
    else
        echo "iperf3 failed: $(printf '%s' "$json" | tr -d '|\n' | cut -c1-150)"
    fi
}

ref_ucx() {
    command -v ucx_perftest >/dev/null 2>&1 || { echo "ucx_perftest not installed (bash ci/install-bench-deps.sh)"; return; }
    local n=2000 port out line spid
    [ $quick = 1 ] && n=200
    port=$(free_port)
    UCX_TLS=tcp UCX_NET_DEVICES=lo timeout 300 ucx_perftest -p "$port" \
        >"$tmpdir/ucx-server.log" 2>&1 &
    spid=$!
    if ! wait_listen "$port" "$spid"; then
        kill "$spid" 2>/dev/null
        wait "$spid" 2>/dev/null
        echo "ucx_perftest server did not start: $(tail -n 1 "$tmpdir/ucx-server.log" | tr -d '|')"
        return
    fi
    out=$(UCX_TLS=tcp UCX_NET_DEVICES=lo timeout 240 \
        ucx_perftest 127.0.0.1 -p "$port" -t ucp_get -s 262144 -n "$n" 2>&1)
    stop_ref "$spid"
    # "Final: iters lat-p50 lat-avg lat-overall bw-avg bw-overall rate-avg
    # rate-overall"; bandwidth in MB/s of 2^20 bytes.
    line=$(printf '%s\n' "$out" | grep '^Final:' | tail -n 1)
    if [ -n "$line" ]; then
        echo "$line" | awk '{ printf "%.3f\n", $7 * 1048576 / 1e9 }'
    else
        echo "ucx_perftest failed: $(printf '%s' "$out" | grep -v '^[+|]' | tr -d '|\n' | cut -c1-150)"
    fi
}

# ---- run ----------------------------------------------------------------------
status=0
note() { [ "$status" -ne 0 ] || status=$1; }

if ! skipped link; then
    run_teed "$build/bench/results-link.md" "$build/bench/bench_link" \
        "${link_args[@]+"${link_args[@]}"}"
    note $?
fi

if ! skipped xfer; then
    if ! skipped refs; then
        echo "bench/run.sh: reference: iperf3, 1 TCP stream on 127.0.0.1" >&2
        iperf=$(ref_iperf3)
        echo "bench/run.sh:   iperf3: $iperf" >&2
        echo "bench/run.sh: reference: ucx_perftest -t ucp_get -s 262144, UCX_TLS=tcp" >&2
        ucx=$(ref_ucx)
        echo "bench/run.sh:   ucp_get: $ucx" >&2
        xfer_args+=(--ref-iperf3 "$iperf" --ref-ucx "$ucx")
    fi
    skipped link || echo
    run_teed "$build/bench/results-xfer.md" "$build/bench/bench_xfer" \
        "${xfer_args[@]+"${xfer_args[@]}"}"
    note $?
fi

if ! skipped small; then
    small_args=()
    [ $quick = 1 ] && small_args+=(--quick)
    echo
    run_teed "$build/bench/results-small.md" "$build/bench/bench_small" \
        "${small_args[@]+"${small_args[@]}"}"
    note $?
    if [ -x "$build/bench/bench_async" ]; then
        echo
        run_teed "$build/bench/results-async.md" "$build/bench/bench_async" \
            "${small_args[@]+"${small_args[@]}"}"
        note $?
    fi
fi

if ! skipped notify; then
    notify_args=()
    [ $quick = 1 ] && notify_args+=(--quick)
    echo
    run_teed "$build/bench/results-notify.md" "$build/bench/bench_notify" \
        "${notify_args[@]+"${notify_args[@]}"}"
    note $?
fi
exit $status

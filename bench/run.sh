#!/usr/bin/env bash
# run.sh [BUILD_DIR] [bench_link options] - run the link benchmark.
#
# Builds nothing: `make bench` builds $BUILD/bench/bench_link first, then
# calls this script. Runs it with the options given (--quick, --only a,b,...)
# and tees its table (stdout) to $BUILD/bench/results-link.md; progress lines
# (stderr) go to the terminal only. A run that prints nothing (a usage
# error) leaves the previous results file alone.
#
# The build directory is, in order: a first argument that names a directory
# (what `make bench` passes), $BUILD, $LLMLINK_BUILD, else "build".
# Exit status: that of bench_link (1 when a section could not run).
set -uo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo_root"

build=${BUILD:-${LLMLINK_BUILD:-build}}
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ] && [ -d "$1" ]; then
    build=$1
    shift
fi

bin=$build/bench/bench_link
if [ ! -x "$bin" ]; then
    echo "bench/run.sh: $bin does not exist; build it with 'make bench-bins' (or 'make bench')" >&2
    exit 2
fi

# bench_link raises the soft open-files limit itself; raise it here too so
# the limit is right even for a binary built from an older source.
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true

out=$build/bench/results-link.md
echo "bench/run.sh: $bin $*  (table -> $out)" >&2
# Written beside, then moved: a run that prints nothing (a usage error)
# leaves the previous results in place.
"$bin" "$@" | tee "$out.tmp"
status=$?
if [ -s "$out.tmp" ]; then
    mv -f "$out.tmp" "$out"
else
    rm -f "$out.tmp"
fi
exit $status

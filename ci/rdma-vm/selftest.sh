#!/usr/bin/env bash
# selftest.sh BUILD_DIR - tests of ci/rdma-vm.sh itself, with stand-in
# programs (ci/rdma-vm/selftest/*.c) instead of the project's:
#   1. a build dir without test_rdma_* programs: exit 1, a clear message,
#      no VM booted;
#   2. four programs at once - envcheck (checks in the VM every variable
#      and file NOTES.md promises), fail (rc 3), hang (never ends), leak
#      (passes, leaves a child holding its stdout): exit 1, each one's
#      RDMA-TEST line with the right verdict and rc (143 for the timeout),
#      setup and smoke PASS, the summary pass=4 fail=2, the cross-device
#      probe reported;
#   3. the passing two alone: exit 0;
#   4. a kernel crash mid-run (sysrq c): exit non-zero, "no RDMA-SUMMARY";
#   5. a program outliving the host-side bound (LLMLINK_RDMA_VM_TIMEOUT):
#      QEMU killed, exit 1;
#   6. QEMU failing (a stand-in first in PATH): exit 1, its status and
#      message shown;
#   7. two guests (--two-guest): the cross-guest smoke step, each guest's
#      active MTUs, the two-guest environment, and killpeer (prints
#      "RDMA-CTL kill-peer": guest A must be gone within ~10 s).
# Needs BUILD_DIR/tests/llmlink-node (make BUILD=... build-all); its VM
# cache (BUILD_DIR/rdma-vm) is reused. Four VM boots: ~2-3 minutes.
set -euo pipefail

here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
harness=$here/../rdma-vm.sh

if [ $# -ne 1 ] || [ ! -d "$1" ]; then echo "usage: $0 BUILD_DIR" >&2; exit 2; fi
build=$(readlink -f "$1")
[ -x "$build/tests/llmlink-node" ] ||
    { echo "selftest: $build/tests/llmlink-node missing: make BUILD=$1 build-all" >&2; exit 2; }

bin=$build/rdma-vm-selftest
rm -rf "$bin"
mkdir -p "$bin/empty"
for p in envcheck fail hang leak killpeer; do
    ${CC:-cc} -std=c11 -D_GNU_SOURCE -O1 -Wall -Werror -o "$bin/test_rdma_$p" "$here/selftest/$p.c" -ldl
done

failed=0
out=$bin/out.txt
check() { # check WHAT GREP-E-PATTERN: the last run's output has a line matching
    if grep -qE -- "$2" "$out"; then
        echo "  ok   $1"
    else
        echo "  FAIL $1 (no line matching: $2)"
        failed=1
    fi
}
expect_rc() { # expect_rc WHAT WANT GOT ("nonzero" for any failure)
    if [ "$2" = nonzero ] && [ "$3" -ne 0 ] || [ "$2" = "$3" ]; then
        echo "  ok   $1: exit $3"
    else
        echo "  FAIL $1: exit $3, expected $2"
        failed=1
    fi
}
shown=0
dump() { # the harness's output, once, after the first failed check
    if [ $failed = 1 ] && [ $shown = 0 ]; then
        echo "--- harness output:"; cat "$out"; echo "---"
        shown=1
    fi
}
run() { # run ARGS...: the harness, output in $out, status in $rc
    rc=0
    LLMLINK_RDMA_TEST_TIMEOUT=8 bash "$harness" "$@" >"$out" 2>&1 || rc=$?
}

echo "selftest 1: no programs"
run "$bin/empty"
expect_rc "no programs" 1 "$rc"
check "says why" 'no RDMA test programs: .*test_rdma_\* matched nothing'
check "boots nothing" '^rdma-vm: ERROR' # and no "image ready" line:
if grep -q 'image ready' "$out"; then echo "  FAIL built an image"; failed=1; fi

echo "selftest 2: pass, fail, hang and leak in one VM"
run "$build" "$bin"/test_rdma_{envcheck,fail,hang,leak}
expect_rc "a run with failures" 1 "$rc"
check "setup" '^RDMA-TEST setup PASS \(rc=0\)'
check "smoke" '^RDMA-TEST smoke PASS \(rc=0\)'
check "envcheck (the promised environment)" '^RDMA-TEST test_rdma_envcheck PASS \(rc=0\)'
check "a failing program" '^RDMA-TEST test_rdma_fail FAIL \(rc=3\)'
check "its output" '^  \| failing on purpose'
check "a hanging program, timed out" '^RDMA-TEST test_rdma_hang FAIL \(rc=143\)'
check "a program leaving a child" '^RDMA-TEST test_rdma_leak PASS \(rc=0\)'
check "the summary" '^RDMA-SUMMARY pass=4 fail=2 total=6'
check "the cross-device probe" '^RDMA-INFO cross-device rxe1->rxe0 '
check "the GID indexes" '^RDMA-INFO gid rxe1 index=[0-9]+ 0000:0000:0000:0000:0000:ffff:0a0a:0101'
check "the verdict" '^rdma-vm: FAIL \(test\)'
dump

echo "selftest 3: passing programs only"
run "$build" "$bin"/test_rdma_{envcheck,leak}
expect_rc "all pass" 0 "$rc"
check "the summary" '^RDMA-SUMMARY pass=4 fail=0 total=4'
check "the verdict" '^rdma-vm: PASS \(test'
dump

echo "selftest 4: the kernel crashes"
run --exec 'echo c >/proc/sysrq-trigger' "$build"
expect_rc "a crash" nonzero "$rc"
check "no summary reported" 'no RDMA-SUMMARY on the console'
check "the log's tail shown" 'Kernel panic|sysrq'
dump

echo "selftest 5: the host-side bound"
rc=0
LLMLINK_RDMA_TEST_TIMEOUT=300 LLMLINK_RDMA_VM_TIMEOUT=40 bash "$harness" "$build" "$bin/test_rdma_hang" >"$out" 2>&1 || rc=$?
expect_rc "QEMU killed" 1 "$rc"
check "says so" 'QEMU ran past its 40s bound and was killed'
check "no summary reported" 'no RDMA-SUMMARY on the console'
dump

echo "selftest 6: QEMU itself fails"
mkdir -p "$bin/fakeqemu"
printf '#!/bin/sh\necho "qemu-system-x86_64: a stand-in that fails" >&2\nexit 1\n' >"$bin/fakeqemu/qemu-system-x86_64"
chmod +x "$bin/fakeqemu/qemu-system-x86_64"
rc=0
PATH="$bin/fakeqemu:$PATH" bash "$harness" --smoke "$build" >"$out" 2>&1 || rc=$?
expect_rc "QEMU's failure" 1 "$rc"
check "says so" 'QEMU exited with status 1'
check "shows its message" 'a stand-in that fails'
dump

echo "selftest 7: two guests, guest A killed on request"
rc=0
LLMLINK_RDMA_TEST_TIMEOUT=40 bash "$harness" --two-guest "$build" "$bin/test_rdma_killpeer" >"$out" 2>&1 || rc=$?
expect_rc "two guests" 0 "$rc"
check "smoke across the guests" '^RDMA-TEST smoke PASS \(rc=0\)'
check "A's rail 1 MTU" '^RDMA-INFO mtu a rxe1 4096'
check "B's rail 1 MTU" '^RDMA-INFO mtu b rxe1 2048'
check "killpeer" '^RDMA-TEST test_rdma_killpeer PASS \(rc=0\)'
check "the harness killed A" '^RDMA-INFO peer-killed [0-9.]+'
dump

if [ $failed = 0 ]; then echo "selftest: PASS"; else echo "selftest: FAIL"; exit 1; fi

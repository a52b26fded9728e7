#!/bin/sh
# check_exports.sh LIB.so - the shared library exports only llmlink_* symbols.
#
# Fails (exit 1) and lists the offenders if any defined dynamic symbol does
# not start with llmlink_, if nothing is exported at all, or if
# llmlink_create is missing. Prints "check_exports: N symbols, all llmlink_*".
set -u

lib=${1:-}
if [ -z "$lib" ] || [ ! -f "$lib" ]; then
    echo "check_exports: usage: $0 path/to/libllmlink.so (got '${lib}')" >&2
    exit 2
fi
if ! command -v nm >/dev/null 2>&1; then
    echo "check_exports: nm not found (install binutils)" >&2
    exit 2
fi

if ! out=$(nm -D --defined-only "$lib" 2>&1); then
    echo "check_exports: nm -D failed on $lib:" >&2
    echo "$out" >&2
    exit 1
fi

# nm -D lines are "ADDRESS TYPE NAME[@@VERSION]". Drop the version suffix.
# Type "A" entries named like the version node (LLMLINK_0, ...) are the
# version definitions the linker emits for --version-script, not code or data.
syms=$(printf '%s\n' "$out" | awk '
    NF >= 3 {
        name = $3; sub(/@.*/, "", name)
        if ($2 == "A" && name ~ /^LLMLINK_[0-9A-Za-z_.]*$/) next
        print name
    }' | sort -u)

bad=$(printf '%s\n' "$syms" | grep -v '^llmlink_' | grep -v '^$')
count=$(printf '%s\n' "$syms" | grep -c '^llmlink_')

status=0
if [ -n "$bad" ]; then
    echo "check_exports: FAIL: $lib exports symbols outside the llmlink_ namespace:" >&2
    printf '%s\n' "$bad" | sed 's/^/    /' >&2
    echo "  (give internal functions hidden visibility: no LLMLINK_EXTERN, or make them static)" >&2
    status=1
fi
if [ "$count" -eq 0 ]; then
    echo "check_exports: FAIL: $lib exports no llmlink_* symbol" >&2
    status=1
elif ! printf '%s\n' "$syms" | grep -qx 'llmlink_create'; then
    echo "check_exports: FAIL: $lib does not export llmlink_create" >&2
    status=1
fi

if [ "$status" -eq 0 ]; then
    echo "check_exports: $count symbols, all llmlink_*"
fi
exit $status

# deps-fuzz.sh - what the coverage-guided fuzz run (make fuzz-ci) needs:
# clang and its libFuzzer runtime (Debian ships libFuzzer in
# libclang-rt-NN-dev, not in clang). Sourced by ci/install-deps.sh inside
# its check function: one need_cmd / need_check line each.
#
# Only when asked (LLMLINK_FUZZ=1, as .ci/run sets it): a plain `make test`
# on a fresh machine runs the standalone drivers and needs no clang.
if [ "${LLMLINK_FUZZ:-0}" = 1 ]; then
    need_cmd clang clang
    # Probe by linking a trivial target, as the Makefile's fuzz rule does.
    need_check libclang-rt-14-dev "libFuzzer (clang -fsanitize=fuzzer)" \
        'printf "int LLVMFuzzerTestOneInput(const char *d, unsigned long n);\nint LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n" | clang -x c -fsanitize=fuzzer,address,undefined -o /dev/null -'
fi

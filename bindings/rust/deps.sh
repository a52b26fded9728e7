# Debian packages the Rust binding needs (sourced by ci/install-deps.sh inside
# its check function). cargo itself is preinstalled on CI, not a Debian package.
# bindgen (llmlink-sys's build.rs) loads libclang at build time; clang-sys
# looks for libclang.so under /usr/lib/llvm-*/lib, which libclang-dev provides
# (with clang's own stddef.h/stdbool.h that the header includes).
need_check libclang-dev "libclang (for bindgen)" 'ls /usr/lib/llvm-*/lib/libclang.so'

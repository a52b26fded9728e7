# Debian packages the Rust binding needs (sourced by ci/install-deps.sh inside
# its check function). cargo itself is preinstalled on CI, not a Debian package.
# Building the crates needs no libclang (the bindings are shipped in
# llmlink-sys/src/bindings.rs); make rust-bindings-check (part of make test)
# regenerates them with the `bindgen` feature, and bindgen loads libclang at
# build time: clang-sys
# looks for libclang.so under /usr/lib/llvm-*/lib, which libclang-dev provides
# (with clang's own stddef.h/stdbool.h that the header includes).
need_check libclang-dev "libclang (for bindgen)" 'ls /usr/lib/llvm-*/lib/libclang.so'

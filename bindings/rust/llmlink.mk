# bindings/rust/llmlink.mk - the Rust binding's suite, included by the top
# Makefile. `make test-rust` runs cargo test, clippy and doc in bindings/rust
# (outputs in $(BUILD)/rust-target), then checks llmlink-sys's pkg-config
# path against a `make install` into $(BUILD)/rust-prefix: see test.sh.
# Then the crates as crates.io would serve them:
#
#   make rust-vendor          copy core/ and ffi/ (the .c, .h and
#                             sources.list) into llmlink-sys/csrc/: what the
#                             published crate compiles. Generated, not
#                             committed (.gitignore): inside the repository
#                             build.rs compiles the repository itself, so a
#                             copy in git would only be a second source of
#                             truth to keep equal; every packaging step below
#                             writes it afresh.
#   make rust-bindings        regenerate llmlink-sys/src/bindings.rs (the
#                             shipped bindings; needs libclang)
#   make rust-bindings-check  regenerate into $(BUILD) and compare with it
#   make rust-package         rust-vendor, then cargo package and cargo
#                             publish --dry-run of both crates: the .crate
#                             files land in $(BUILD)/rust-target/package
#   make rust-test-outside    a crate outside the tree (under $(BUILD)) that
#                             depends on the unpacked .crate files, built with
#                             libclang out of reach and bindgen absent from its
#                             dependency tree; it runs a prefill server and a
#                             decode client that link on loopback, pull blocks
#                             and check every byte.
TEST_SUITES_EXTRA += test-rust rust-bindings-check rust-test-outside

RUST_ABS_BUILD := $(abspath $(BUILD))
RUST_TARGET    := $(RUST_ABS_BUILD)/rust-target
RUST_CSRC      := bindings/rust/llmlink-sys/csrc
# Every cargo run of these targets is bounded (a first build of the
# dependencies on 2 cores takes a few minutes at most).
RUST_TIMEOUT   ?= 900
RUST_CARGO     = cd bindings/rust && CARGO_TARGET_DIR=$(RUST_TARGET) timeout $(RUST_TIMEOUT) cargo

.PHONY: test-rust rust-vendor rust-bindings rust-bindings-check rust-package rust-test-outside
# The crates compile the C sources themselves (build.rs, cc crate); the
# pkg-config step runs `$(MAKE) install` with this BUILD (naming $(MAKE)
# here hands the jobserver on to it and to cargo).
test-rust:
	MAKE="$(MAKE)" bash bindings/rust/test.sh $(BUILD)

# Start from nothing, so that a file removed from the tree leaves no copy.
rust-vendor:
	$(say) VENDOR $(RUST_CSRC)
	$(Q)rm -rf $(RUST_CSRC) && mkdir -p $(RUST_CSRC)
	$(Q)find core ffi -type f \( -name '*.c' -o -name '*.h' \) -exec cp --parents -p {} $(RUST_CSRC)/ \;
	$(Q)cp -p core/sources.list $(RUST_CSRC)/core/sources.list
	$(Q)echo "rust-vendor: $$(find $(RUST_CSRC) -type f | wc -l) files in $(RUST_CSRC)"

# bindgen writes OUT_DIR/bindings.rs with the `bindgen` feature; cargo names
# OUT_DIR in its build-script-executed message (also when the build script
# is fresh and does not run again).
rust_bindings_gen = $(RUST_CARGO) build --locked -q -p llmlink-sys --features bindgen --message-format=json \
	    | grep '"reason":"build-script-executed"' | grep '/llmlink-sys' \
	    | sed -n 's/.*"out_dir":"\([^"]*\)".*/\1/p' | head -1
rust-bindings:
	$(say) BINDGEN bindings/rust/llmlink-sys/src/bindings.rs
	$(Q)out=$$($(rust_bindings_gen)) && test -f "$$out/bindings.rs" && \
	    cp "$$out/bindings.rs" bindings/rust/llmlink-sys/src/bindings.rs

# The shipped bindings are what bindgen makes of today's ffi/llmlink.h.
rust-bindings-check:
	$(say) CHECK bindings/rust/llmlink-sys/src/bindings.rs
	$(Q)out=$$($(rust_bindings_gen)) && test -f "$$out/bindings.rs" || { \
	    echo "rust-bindings-check: FAILED: no bindings generated (cargo build --features bindgen)" >&2; exit 1; }; \
	if ! diff -u bindings/rust/llmlink-sys/src/bindings.rs "$$out/bindings.rs"; then \
	    echo "rust-bindings-check: FAILED: src/bindings.rs is not what bindgen makes of ffi/llmlink.h: run 'make rust-bindings' and commit" >&2; \
	    exit 1; fi; \
	echo "rust-bindings-check: src/bindings.rs ($$(wc -l < bindings/rust/llmlink-sys/src/bindings.rs) lines) is what bindgen makes of ffi/llmlink.h"

# --workspace: llmlink depends on llmlink-sys 0.3.0, not yet on crates.io;
# cargo verifies both against each other's packaged copy. --allow-dirty:
# the package is made of the working tree (csrc/ is never committed).
rust-package: rust-vendor
	$(say) PACKAGE 'llmlink-sys, llmlink'
	$(Q)rm -f $(RUST_TARGET)/package/llmlink-*.crate
	$(Q)$(RUST_CARGO) package --locked --workspace --allow-dirty
	$(Q)$(RUST_CARGO) publish --dry-run --locked --workspace --allow-dirty
	$(Q)ls -l $(RUST_TARGET)/package/*.crate

RUST_OUTSIDE := $(RUST_ABS_BUILD)/rust-outside
rust-test-outside: rust-package
	$(say) TEST 'a crate outside the tree against the packaged crates'
	$(Q)timeout $(RUST_TIMEOUT) bash bindings/rust/test-outside.sh \
	    $(RUST_TARGET)/package $(RUST_OUTSIDE) bindings/rust

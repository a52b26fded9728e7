# bindings/rust/llmlink.mk - the Rust binding's suite, included by the top
# Makefile. `make test-rust` runs cargo test, clippy and doc in bindings/rust
# (outputs in $(BUILD)/rust-target), then checks llmlink-sys's pkg-config
# path against a `make install` into $(BUILD)/rust-prefix: see test.sh.
TEST_SUITES_EXTRA += test-rust

.PHONY: test-rust
# The crates compile the C sources themselves (build.rs, cc crate); the
# pkg-config step runs `$(MAKE) install` with this BUILD (naming $(MAKE)
# here hands the jobserver on to it and to cargo).
test-rust:
	MAKE="$(MAKE)" bash bindings/rust/test.sh $(BUILD)

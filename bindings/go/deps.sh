# bindings/go/deps.sh - what the Go binding's suite needs (sourced by
# ci/install-deps.sh inside its check function). cgo needs the C compiler
# and pkg-config the C build already asks for; the tag-llmlink_pkgconfig run
# needs pkg-config too. The default build compiles the C sources through cgo
# (only a C compiler). Go itself (>= 1.19) is preinstalled in CI; where it
# is not, Debian's golang-go provides it.
need_cmd go golang-go

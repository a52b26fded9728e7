//go:build cgo && llmlink_static

package llmlink

// -tags llmlink_static: the static library that `make` built in the source
// tree instead of the C sources compiled by cgo (zllk_cgo.go), found through
// -L so that a build directory other than build/ can come first on the
// search path (CGO_LDFLAGS="-L/abs/path/to/BUILD", which is what
// `make go-test-static` does); a -L directory that does not exist is no
// error. The system libraries of core/sources.list ("lib" lines: OpenSSL's
// libssl and libcrypto) follow it; -ldl because a static libcrypto.a needs
// it (its engine/provider loading), harmless with the shared ones.

/*
#cgo CFLAGS: -I${SRCDIR}/../../ffi
#cgo LDFLAGS: -L${SRCDIR}/../../build -l:libllmlink.a -lssl -lcrypto -ldl -lpthread -lm
*/
import "C"

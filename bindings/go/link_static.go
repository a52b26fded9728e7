//go:build cgo && !llmlink_pkgconfig

package llmlink

// Default: the static library of the source tree, found through -L so that
// a build directory other than build/ can come first on the search path
// (CGO_LDFLAGS="-L/abs/path/to/BUILD", which is what `make test-go` does);
// a -L directory that does not exist is no error.

/*
#cgo CFLAGS: -I${SRCDIR}/../../ffi
#cgo LDFLAGS: -L${SRCDIR}/../../build -l:libllmlink.a -lpthread -lm
*/
import "C"

//go:build cgo && llmlink_pkgconfig

package llmlink

// -tags llmlink_pkgconfig: the installed library (`make install`), found
// through pkg-config (PKG_CONFIG_PATH for a non-standard PREFIX).

/*
#cgo pkg-config: llmlink
*/
import "C"

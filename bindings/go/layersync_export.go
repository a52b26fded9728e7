//go:build cgo

package llmlink

// The Go function the C layer synchronizer trampoline calls. A file with
// //export may only declare things in its preamble, so the trampoline is
// in layersync.go.

/*
#include <stdint.h>
*/
import "C"

import "runtime/cgo"

//export gollkGoLayerSync
func gollkGoLayerSync(layer C.uint32_t, timeoutMs C.int32_t, h C.uintptr_t) C.int {
	if layerSync(cgo.Handle(h), uint32(layer), int32(timeoutMs)) {
		return 1
	}
	return 0
}

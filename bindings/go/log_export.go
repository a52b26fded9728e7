//go:build cgo

package llmlink

// The Go function the C log callback calls. A file with //export may only
// declare things in its preamble, so the C trampoline is in log.go.

/*
#include "llmlink.h"
*/
import "C"

import "unsafe"

//export gollkGoLog
func gollkGoLog(level C.llmlink_log_level_t, msg *C.char, _ unsafe.Pointer) {
	deliverLog(LogLevel(level), C.GoString(msg))
}

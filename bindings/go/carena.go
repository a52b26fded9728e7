//go:build cgo

package llmlink

/*
#include <stdlib.h>
*/
import "C"

import (
	"strings"
	"unsafe"
)

// cArena holds C memory for one call's arguments that contain pointers
// (option strings, cluster infos with their ip arrays). Go memory that
// holds Go pointers may not be handed to C, so these are built in C memory
// and freed together once the C call has returned (which, for a call a
// cancelled context abandoned, is later, on the goroutine running it).
type cArena struct {
	ptrs []unsafe.Pointer
}

// alloc returns n zeroed bytes of C memory (never nil; calloc failure is
// fatal, as for any Go allocation).
func (a *cArena) alloc(n uintptr) unsafe.Pointer {
	if n == 0 {
		n = 1
	}
	p := C.calloc(1, C.size_t(n))
	if p == nil {
		panic("llmlink: out of C memory")
	}
	a.ptrs = append(a.ptrs, p)
	return p
}

// cstring copies s into C memory; ok is false when s holds a NUL byte,
// which C would silently read as the end of the string.
func (a *cArena) cstring(s string) (p *C.char, ok bool) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, false
	}
	p = (*C.char)(a.alloc(uintptr(len(s)) + 1))
	copy(unsafe.Slice((*byte)(unsafe.Pointer(p)), len(s)), s)
	return p, true
}

func (a *cArena) free() {
	for _, p := range a.ptrs {
		C.free(p)
	}
	a.ptrs = nil
}

//go:build cgo

package llmlink

/*
// shim.h fails the build (#error) when llmlink.h is of another major
// version than LLMLINK_GO_MAJOR, the one this package was written for.
#include "shim.h"
*/
import "C"

// The version of llmlink.h this package was compiled against.
const (
	HeaderVersionMajor  = C.LLMLINK_VERSION_MAJOR
	HeaderVersionMinor  = C.LLMLINK_VERSION_MINOR
	HeaderVersionPatch  = C.LLMLINK_VERSION_PATCH
	HeaderVersionString = C.LLMLINK_VERSION_STRING
	packageMajor        = C.LLMLINK_GO_MAJOR
)

// LibraryVersion is the version of the C library actually linked (with
// -tags llmlink_pkgconfig, the installed shared library, which may differ
// from the header).
func LibraryVersion() string { return C.GoString(C.llmlink_version_string()) }

// LibraryVersionNumber is MAJOR*10000 + MINOR*100 + PATCH of the library.
func LibraryVersionNumber() uint32 { return uint32(C.llmlink_version_number()) }

// checkLibraryVersion refuses a library of another major version than the
// header: with a shared library the two can differ at run time.
func checkLibraryVersion(op string) error {
	if n := LibraryVersionNumber(); n/10000 != packageMajor {
		return newError(op, StatusVersionMismatch,
			"the llmlink library is version %s (major %d), this package needs major %d",
			LibraryVersion(), n/10000, packageMajor)
	}
	return nil
}

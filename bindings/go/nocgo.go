//go:build !cgo

package llmlink

// The llmlink package wraps the llmlink C library and cannot work without
// cgo. Every other file of the package needs cgo, so this is the only
// error such a build reports: the name of the missing identifier is the
// message.
var _ = llmlink_Go_binding_needs_cgo__build_with_CGO_ENABLED_1_and_a_C_compiler

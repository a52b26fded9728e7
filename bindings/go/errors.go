//go:build cgo

package llmlink

import "fmt"

// Error is a failed call: the status the C library returned, the message
// it gave (llmlink_last_error() of the failing call, read on the same OS
// thread) and the Go method that failed.
//
// Errors compare by status: errors.Is(err, ErrParamInvalid) and
// errors.Is(err, &Error{Status: StatusParamInvalid}) match any *Error with
// that status; errors.As(err, &e) gives the *Error itself.
type Error struct {
	Status Status
	Msg    string // the C side's message; may be empty
	Op     string // "LinkClusters", "PullBlocks", ...
}

func (e *Error) Error() string {
	s := "llmlink"
	if e.Op != "" {
		s += ": " + e.Op
	}
	s += ": " + e.Status.String()
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	return s
}

// Is reports whether target is an *Error with the same status.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t != nil && t.Status == e.Status
}

func sentinel(s Status) *Error { return &Error{Status: s} }

// newError is an error of the Go side itself (bad arguments caught before
// the C call, a closed engine), with the status the C side would give.
func newError(op string, s Status, format string, args ...any) *Error {
	return &Error{Status: s, Op: op, Msg: fmt.Sprintf(format, args...)}
}

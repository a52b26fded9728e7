//go:build cgo

package llmlink

/*
#include "shim.h"

extern void gollkGoLog(llmlink_log_level_t, char *, void *);

// llmlink_log_fn takes a const char *; the exported Go function's C
// prototype has char *.
static void gollk_log_trampoline(llmlink_log_level_t level, const char *msg, void *user)
{
    gollkGoLog(level, (char *)msg, user);
}

static inline void gollk_set_log(int on, llmlink_log_level_t max_level)
{
    llmlink_set_log_callback(on ? gollk_log_trampoline : NULL, NULL, max_level);
}
*/
import "C"

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// LogLevel is an llmlink_log_level_t.
type LogLevel uint32

const (
	LogNone  LogLevel = C.LLMLINK_LOG_NONE
	LogError LogLevel = C.LLMLINK_LOG_ERROR
	LogWarn  LogLevel = C.LLMLINK_LOG_WARN
	LogInfo  LogLevel = C.LLMLINK_LOG_INFO
	LogDebug LogLevel = C.LLMLINK_LOG_DEBUG
)

func (l LogLevel) String() string {
	switch l {
	case LogNone:
		return "none"
	case LogError:
		return "error"
	case LogWarn:
		return "warn"
	case LogInfo:
		return "info"
	case LogDebug:
		return "debug"
	}
	return fmt.Sprintf("LogLevel(%d)", uint32(l))
}

var (
	logMu sync.Mutex // orders SetLogCallback calls
	logFn atomic.Pointer[func(LogLevel, string)]
)

// SetLogCallback sends the library's log lines at or below maxLevel to fn,
// process-wide (llmlink_set_log_callback); nil stops them. fn may be called
// from any thread, the engines' internal ones included, with the library's
// log lock held: it must return quickly, must not block on anything a
// goroutine calling into llmlink may hold, and must not call
// SetLogCallback. A panic in fn is recovered and the line dropped (it
// cannot unwind into C). Once SetLogCallback returns, the previous fn is
// not called any more.
func SetLogCallback(fn func(level LogLevel, msg string), maxLevel LogLevel) {
	logMu.Lock()
	defer logMu.Unlock()
	if fn == nil {
		// The C side takes its log lock: no old callback runs after this.
		C.gollk_set_log(0, C.llmlink_log_level_t(maxLevel))
		logFn.Store(nil)
		return
	}
	// Store, then install under the C side's log lock: a line being
	// delivered holds that lock, so once this returns none is still on
	// its way to the old fn.
	logFn.Store(&fn)
	C.gollk_set_log(1, C.llmlink_log_level_t(maxLevel))
}

func deliverLog(level LogLevel, msg string) {
	f := logFn.Load()
	if f == nil {
		return
	}
	defer func() { _ = recover() }()
	(*f)(level, msg)
}

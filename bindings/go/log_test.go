//go:build cgo

package llmlink

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// logSink collects log lines; the callback runs on C threads.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (s *logSink) add(l LogLevel, m string) {
	s.mu.Lock()
	s.lines = append(s.lines, l.String()+" "+m)
	s.mu.Unlock()
}

func (s *logSink) has(needle ...string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		all := true
		for _, n := range needle {
			all = all && strings.Contains(l, n)
		}
		if all {
			return true
		}
	}
	return false
}

func (s *logSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.lines)
}

// startAndClose makes a PROMPT engine log "listening" and "finalized".
func startAndClose(t *testing.T, id uint64) {
	t.Helper()
	e, err := NewEngine(RolePrompt, id, map[string]string{"llm.listenIpInfo": "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
}

func TestLogCallback(t *testing.T) {
	defer SetLogCallback(nil, LogNone)
	var first, second logSink
	SetLogCallback(first.add, LogDebug)
	startAndClose(t, 601)
	if !first.has("info", "601", "finalized") {
		t.Fatalf("no finalize line: %q", first.lines)
	}
	// Replaced: the old callback gets nothing more.
	SetLogCallback(second.add, LogInfo)
	n := first.count()
	startAndClose(t, 602)
	if first.count() != n || !second.has("602", "finalized") {
		t.Fatalf("after replacing: first %d -> %d lines, second %q", n, first.count(), second.lines)
	}
	// The level filters: at warn, no info lines.
	var third logSink
	SetLogCallback(third.add, LogWarn)
	startAndClose(t, 603)
	if third.has("603") {
		t.Fatalf("info lines at warn level: %q", third.lines)
	}
	// Cleared: nothing.
	SetLogCallback(nil, LogNone)
	n = second.count()
	startAndClose(t, 604)
	if second.count() != n || third.has("604") {
		t.Fatal("lines after the callback was cleared")
	}
}

func TestLogCallbackPanicIsContained(t *testing.T) {
	defer SetLogCallback(nil, LogNone)
	var mu sync.Mutex
	seen := 0
	SetLogCallback(func(l LogLevel, m string) {
		mu.Lock()
		seen++
		mu.Unlock()
		panic(fmt.Sprintf("callback panics on purpose: %s", m))
	}, LogDebug)
	startAndClose(t, 611) // finalize logs on the closing thread itself
	mu.Lock()
	n := seen
	mu.Unlock()
	if n == 0 {
		t.Fatal("the callback was never called")
	}
	// The process and the library are fine.
	startAndClose(t, 612)
}

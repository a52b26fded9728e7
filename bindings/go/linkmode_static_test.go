//go:build cgo && !llmlink_pkgconfig

package llmlink

import (
	"os"
	"strings"
	"testing"
)

// The default build links the static library: no libllmlink.so is mapped.
func TestLinkedStatically(t *testing.T) {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Skip("no /proc/self/maps:", err)
	}
	if strings.Contains(string(maps), "libllmlink.so") {
		t.Fatal("the default build loaded libllmlink.so")
	}
}

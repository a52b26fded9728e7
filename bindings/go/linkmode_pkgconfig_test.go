//go:build cgo && llmlink_pkgconfig

package llmlink

import (
	"os"
	"strings"
	"testing"
)

// -tags llmlink_pkgconfig links what pkg-config names: the installed shared
// library, mapped into the process.
func TestLinkedThroughPkgConfig(t *testing.T) {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Skip("no /proc/self/maps:", err)
	}
	if !strings.Contains(string(maps), "libllmlink.so") {
		t.Fatal("the llmlink_pkgconfig build did not load libllmlink.so")
	}
}

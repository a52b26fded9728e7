//go:build cgo

package llmlink

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if id := os.Getenv(peerEnv); id != "" {
		os.Exit(runPeer(id))
	}
	os.Exit(m.Run())
}

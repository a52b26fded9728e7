//go:build cgo

package llmlink

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// keyFile writes 32 random bytes to a file of the given mode in dir.
func keyFile(t *testing.T, dir, name string, mode os.FileMode) string {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// The same key file on both sides (llmlink.AuthKeyFile): the decoder links
// to the prefill peer (another process) and pulls from it.
func TestAuthKeyFileLinks(t *testing.T) {
	key := keyFile(t, t.TempDir(), "key", 0o600)
	p := startPeer(t, 41, "llmlink.AuthKeyFile="+key)
	d := newDecoder(t, 1041, map[string]string{"llmlink.AuthKeyFile": key})
	linkAll(t, d, p)
	if st, err := d.CheckLinkStatus(p.id); err != nil || st != StatusSuccess {
		t.Fatalf("check after link: %v %v", st, err)
	}
}

// Another key on the decoder: the cluster's status is StatusAuthFailed,
// no link is left, and the status matches ErrAuthFailed with errors.Is.
func TestAuthWrongKeyFails(t *testing.T) {
	dir := t.TempDir()
	p := startPeer(t, 42, "llmlink.AuthKeyFile="+keyFile(t, dir, "a", 0o600))
	d := newDecoder(t, 1042, map[string]string{"llmlink.AuthKeyFile": keyFile(t, dir, "b", 0o600)})
	st, per, err := d.LinkClusters(context.Background(), []ClusterInfo{p.info()}, 3*time.Second)
	if err != nil || st != StatusLinkFailed || len(per) != 1 || per[0] != StatusAuthFailed {
		t.Fatalf("link with the wrong key: %v %v %v", st, per, err)
	}
	if !errors.Is(&Error{Status: per[0]}, ErrAuthFailed) || errors.Is(&Error{Status: per[0]}, ErrLinkFailed) {
		t.Fatal("errors.Is and StatusAuthFailed")
	}
	if per[0].String() != "LLMLINK_AUTH_FAILED" || !strings.Contains(per[0].Description(), "authentication") {
		t.Fatalf("%q: %q", per[0].String(), per[0].Description())
	}
	if st, _ := d.CheckLinkStatus(p.id); st != StatusNotYetLink {
		t.Fatalf("check after a failed link: %v", st)
	}
}

// A key file others can read is refused when the engine starts.
func TestAuthKeyFileModeRefused(t *testing.T) {
	path := keyFile(t, t.TempDir(), "open", 0o644)
	_, err := NewEngine(RoleDecoder, 1043, map[string]string{"llmlink.AuthKeyFile": path})
	if !errors.Is(err, ErrParamInvalid) || !strings.Contains(err.Error(), path) {
		t.Fatalf("a 0644 key file: %v", err)
	}
}

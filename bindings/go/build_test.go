//go:build cgo

package llmlink

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// goBuild runs `go build` of this package with extra environment and
// returns its output and whether it failed.
func goBuild(t *testing.T, env ...string) (string, bool) {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("no go command on PATH to build with")
	}
	cmd := exec.Command(gobin, "build", "-o", os.DevNull, ".")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err != nil
}

func TestBuildWithoutCgoFailsClearly(t *testing.T) {
	out, failed := goBuild(t, "CGO_ENABLED=0")
	if !failed {
		t.Fatal("a CGO_ENABLED=0 build succeeded")
	}
	if !strings.Contains(out, "needs_cgo__build_with_CGO_ENABLED_1") {
		t.Fatalf("the !cgo build does not say why:\n%s", out)
	}
}

// A header of another major version must not compile: the fake header
// comes first on the include path (CGO_CFLAGS precede the #cgo ones).
func TestBuildAgainstAnotherMajorFails(t *testing.T) {
	hdr, err := os.ReadFile(filepath.Join("..", "..", "ffi", "llmlink.h"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^#define LLMLINK_VERSION_MAJOR \d+`)
	if !re.Match(hdr) {
		t.Fatal("no LLMLINK_VERSION_MAJOR in llmlink.h")
	}
	dir := t.TempDir()
	fake := re.ReplaceAll(hdr, []byte("#define LLMLINK_VERSION_MAJOR 97"))
	if err := os.WriteFile(filepath.Join(dir, "llmlink.h"), fake, 0o644); err != nil {
		t.Fatal(err)
	}
	out, failed := goBuild(t, "CGO_CFLAGS=-I"+dir)
	if !failed {
		t.Fatal("the package compiled against a header of major version 97")
	}
	if !strings.Contains(out, "another LLMLINK_VERSION_MAJOR") {
		t.Fatalf("the build failed for another reason:\n%s", out)
	}
}

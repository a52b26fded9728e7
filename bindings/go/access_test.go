//go:build cgo

package llmlink

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
)

// peerWithAccess starts a prefill peer whose three caches are registered
// WithAccess(a).
func peerWithAccess(t *testing.T, id uint64, a Access) *peer {
	t.Helper()
	return startPeerEnv(t, id, []string{peerAccessEnv + "=" + strconv.FormatUint(uint64(a), 10)})
}

// A peer's caches registered AccessNone: every pull and push that names
// them, by every addressing mode, fails with StatusKVCacheNotExist, as for
// a cache that does not exist, and no byte moves either way.
func TestAccessNoneIsNotExist(t *testing.T) {
	p := peerWithAccess(t, 181, AccessNone)
	d := newDecoder(t, 1181, nil)
	linkAll(t, d, p)
	ctx := context.Background()
	dst, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = d.PullBlocks(ctx, NewBlocksCacheKey(p.id, 0), dst.ID, []uint64{0, 1}, []uint64{0, 1}, nil)
	if !errors.Is(err, ErrKVCacheNotExist) {
		t.Fatalf("pull blocks from an AccessNone cache: %v", err)
	}
	bdst, err := d.AllocateCache(batchDesc(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []CacheKey{NewCacheKey(p.id, 7, 0), NewCacheKeyByIDAndIndex(p.id, p.c, 1)} {
		if err := d.PullCache(ctx, k, bdst.ID, 0, -1, nil); !errors.Is(err, ErrKVCacheNotExist) {
			t.Fatalf("pull cache %+v from an AccessNone cache: %v", k, err)
		}
	}
	// Nothing arrived here.
	if bad := checkUnits(allTensors(dst), dst.Desc, 0, nil, nil, 0); bad != "" {
		t.Fatal(bad)
	}
	if bad := checkUnits(allTensors(bdst), bdst.Desc, 0, nil, nil, 0); bad != "" {
		t.Fatal(bad)
	}
	// A push is refused the same way, and the peer's B stays zero.
	src, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
	if err != nil {
		t.Fatal(err)
	}
	fillTensors(allTensors(src), src.Desc, 777)
	err = d.PushBlocks(ctx, NewBlocksCacheKey(p.id, 1), src.ID, []uint64{2}, []uint64{3}, nil)
	if !errors.Is(err, ErrKVCacheNotExist) {
		t.Fatalf("push into an AccessNone cache: %v", err)
	}
	if r := p.ask("verify B 0 - -"); r != "OK" {
		t.Fatalf("peer's B after a refused push: %s", r)
	}
}

// A read-only cache: a peer's pull works, a push is refused with
// StatusAccessDenied (ErrAccessDenied with errors.Is) and writes nothing.
func TestAccessReadOnlyRefusesPush(t *testing.T) {
	p := peerWithAccess(t, 182, AccessRead)
	d := newDecoder(t, 1182, nil)
	linkAll(t, d, p)
	ctx := context.Background()
	src, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
	if err != nil {
		t.Fatal(err)
	}
	fillTensors(allTensors(src), src.Desc, 778)
	err = d.PushBlocks(ctx, NewBlocksCacheKey(p.id, 1), src.ID, []uint64{1, 2}, []uint64{4, 5}, nil)
	var ee *Error
	if !errors.Is(err, ErrAccessDenied) || errors.Is(err, ErrKVCacheNotExist) || !errors.As(err, &ee) ||
		ee.Status != StatusAccessDenied {
		t.Fatalf("push into a read-only cache: %v", err)
	}
	if ee.Status.String() != "LLMLINK_ACCESS_DENIED" || !strings.Contains(strings.ToLower(ee.Status.Description()), "access") {
		t.Fatalf("%q: %q", ee.Status.String(), ee.Status.Description())
	}
	if r := p.ask("verify B 0 - -"); r != "OK" {
		t.Fatalf("peer's B after a refused push: %s", r)
	}
	// The direction it allows still works, and the link is kept.
	dst, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
	if err != nil {
		t.Fatal(err)
	}
	from, to := []uint64{6, 7}, []uint64{0, 1}
	if err := d.PullBlocks(ctx, NewBlocksCacheKey(p.id, 0), dst.ID, from, to, nil); err != nil {
		t.Fatalf("pull from a read-only cache: %v", err)
	}
	if bad := checkUnits(allTensors(dst), dst.Desc, peerBlocksSeed(p.id), from, to, 0); bad != "" {
		t.Fatal(bad)
	}
}

// A write-only cache: a peer's pull is refused with StatusAccessDenied and
// moves nothing; a push into it works.
func TestAccessWriteOnlyRefusesPull(t *testing.T) {
	p := peerWithAccess(t, 184, AccessWrite)
	d := newDecoder(t, 1184, nil)
	linkAll(t, d, p)
	ctx := context.Background()
	dst, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = d.PullBlocks(ctx, NewBlocksCacheKey(p.id, 0), dst.ID, []uint64{0}, []uint64{0}, nil)
	if !errors.Is(err, ErrAccessDenied) {
		t.Fatalf("pull from a write-only cache: %v", err)
	}
	if bad := checkUnits(allTensors(dst), dst.Desc, 0, nil, nil, 0); bad != "" {
		t.Fatal(bad)
	}
	src, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
	if err != nil {
		t.Fatal(err)
	}
	const seed = 779
	fillTensors(allTensors(src), src.Desc, seed)
	from, to := []uint64{3}, []uint64{9}
	if err := d.PushBlocks(ctx, NewBlocksCacheKey(p.id, 1), src.ID, from, to, nil); err != nil {
		t.Fatalf("push into a write-only cache: %v", err)
	}
	if r := p.ask("verify B %d %s %s", seed, listArg(from), listArg(to)); r != "OK" {
		t.Fatalf("peer: %s", r)
	}
}

// WithAccess with a value the library does not know fails the call with
// StatusParamInvalid; the named values print as words.
func TestAccessOptionChecked(t *testing.T) {
	d := newDecoder(t, 1183, nil)
	_, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil, WithAccess(Access(4)))
	if !errors.Is(err, ErrParamInvalid) || !strings.Contains(err.Error(), "access") {
		t.Fatalf("access 4: %v", err)
	}
	c, err := d.AllocateCache(batchDesc(1), nil, WithAccess(AccessWrite), nil)
	if err != nil {
		t.Fatalf("write-only, and a nil option skipped: %v", err)
	}
	if err := d.DeallocateCache(c); err != nil {
		t.Fatal(err)
	}
	want := map[Access]string{AccessNone: "none", AccessRead: "read", AccessWrite: "write",
		AccessReadWrite: "read-write", Access(9): "Access(9)"}
	for a, s := range want {
		if a.String() != s {
			t.Errorf("%d: %q, want %q", uint32(a), a.String(), s)
		}
	}
}

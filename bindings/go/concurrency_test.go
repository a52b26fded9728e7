//go:build cgo

package llmlink

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// 32 goroutines share one decoder linked to two prefills: each pulls its
// own blocks and checks every byte, while they all also read statuses and
// counters and make calls that fail with a message of their own, which
// must come back to the goroutine that failed (the thread-local C error
// is read on the failing call's thread).
func TestManyGoroutinesShareOneEngine(t *testing.T) {
	const goroutines, rounds = 32, 6
	p1, p2 := startPeer(t, 131), startPeer(t, 132)
	d := newDecoder(t, 1131, nil)
	linkAll(t, d, p1, p2)
	dst, err := d.AllocateBlocksCache(blocksDesc(goroutines), nil)
	if err != nil {
		t.Fatal(err)
	}
	peers := []*peer{p1, p2}
	ub := unitBytes(dst.Desc)

	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			errs <- func() error {
				for r := 0; r < rounds; r++ {
					p := peers[(g+r)%2]
					src := uint64((g + r) % testBlocks)
					// Each goroutine writes only its own block g.
					if err := d.PullBlocks(context.Background(), NewBlocksCacheKey(p.id, 0), dst.ID,
						[]uint64{src}, []uint64{uint64(g)}, nil); err != nil {
						return fmt.Errorf("goroutine %d round %d: %v", g, r, err)
					}
					want := make([]byte, ub)
					for ti := 0; ti < int(dst.Desc.NumTensors); ti++ {
						fillUnit(want, peerBlocksSeed(p.id), ti, int(src))
						if string(dst.Tensor(ti)[g*ub:(g+1)*ub]) != string(want) {
							return fmt.Errorf("goroutine %d round %d tensor %d: bytes differ", g, r, ti)
						}
					}
					if st, err := d.CheckLinkStatus(p.id); err != nil || st != StatusSuccess {
						return fmt.Errorf("check: %v %v", st, err)
					}
					if _, err := d.Stats(); err != nil {
						return err
					}
					// A failure whose message is this goroutine's own.
					token := fmt.Sprintf("llmlink.NoSuchKey%dx%d", g, r)
					_, err := NewEngine(RoleDecoder, uint64(5000+g), map[string]string{token: "1"})
					if le, ok := err.(*Error); !ok || !strings.Contains(le.Msg, token) {
						return fmt.Errorf("goroutine %d: got error %v, want one naming %s", g, err, token)
					}
					err = d.PullBlocks(context.Background(), NewBlocksCacheKey(p.id, uint64(100+g)), dst.ID,
						[]uint64{0}, []uint64{uint64(g)}, nil)
					if le, ok := err.(*Error); !ok || le.Status != StatusKVCacheNotExist {
						return fmt.Errorf("goroutine %d: unknown key: %v", g, err)
					}
				}
				return nil
			}()
		}(g)
	}
	// Links and unlinks of other clusters meanwhile: refused or failed,
	// never disturbing the pulls.
	dead := ClusterInfo{RemoteClusterID: 139, RemoteIPInfos: []IPInfo{{IP: "127.0.0.1", Port: deadPort(t)}}}
	for i := 0; i < 3; i++ {
		if st, per, err := d.LinkClusters(context.Background(), []ClusterInfo{dead}, time.Second); err != nil || st != StatusLinkFailed || per[0] != StatusLinkFailed {
			t.Errorf("dead link: %v %v %v", st, per, err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	xs, err := d.XferStats()
	if err != nil || xs.Transfers != goroutines*rounds || xs.RDMARequests != 0 {
		t.Fatalf("xfer stats %+v %v, want %d transfers and no RDMA (no device on a test host)",
			xs, err, goroutines*rounds)
	}
}

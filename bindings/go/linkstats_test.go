//go:build cgo

package llmlink

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// peerLinkStatsOf asks the peer process for its counters of the link with
// cluster id.
func peerLinkStatsOf(p *peer, id uint64) string { return p.ask("linkstats %d", id) }

// statsLine is LinkStats as one line (the peer's answer): the peer's bytes
// and fences, then the RDMA rails (count, up, failovers, repairs, bytes and
// MTU per rail).
func statsLine(s LinkStats) string {
	return fmt.Sprintf("STATS %s %d %d %d rails %d %d %d %d %v %v", s.RdmaProtection, s.PeerWriteBytes,
		s.PeerReadBytes, s.RequestsFenced, s.RDMARails, s.RDMARailsUp, s.RDMARailFailovers,
		s.RDMARailRepairs, s.RDMARailBytes, s.RDMARailMTU)
}

// noRails ends statsLine on a link without RDMA: no rail, every rail field
// 0, the per-rail slices empty.
const noRails = " rails 0 0 0 0 [] []"

// A new link counts nothing at either end; a cluster without a link is
// ErrNotYetLink, named in the message.
func TestLinkStatsNewLinkAndUnknownCluster(t *testing.T) {
	p := startPeer(t, 151)
	d := newDecoder(t, 1151, nil)
	linkAll(t, d, p)
	s, err := d.LinkStats(p.id)
	// No RDMA (tcp or shm between two local processes): the rail fields are
	// 0 and the per-rail slices nil.
	if err != nil || !reflect.DeepEqual(s, LinkStats{RdmaProtection: RdmaProtectionNone}) {
		t.Fatalf("decoder's link stats of a new link: %+v %v", s, err)
	}
	if s.RDMARailBytes != nil || s.RDMARailMTU != nil {
		t.Fatalf("per-rail slices of a link without RDMA: %#v %#v", s.RDMARailBytes, s.RDMARailMTU)
	}
	if got := peerLinkStatsOf(p, d.ClusterID()); got != "STATS none 0 0 0"+noRails {
		t.Fatalf("peer's link stats of a new link: %q", got)
	}
	_, err = d.LinkStats(77)
	var ee *Error
	if !errors.Is(err, ErrNotYetLink) || !errors.As(err, &ee) || ee.Op != "LinkStats" || !strings.Contains(ee.Msg, "77") {
		t.Fatalf("link stats of cluster 77 (no link): %v", err)
	}
	if got := peerLinkStatsOf(p, 77); !strings.HasPrefix(got, "ERR LLM_NOT_YET_LINK ") {
		t.Fatalf("peer's link stats of cluster 77: %q", got)
	}
	// Unlinked: the counters went with the link.
	if st, per, err := d.UnlinkClusters(context.Background(), []ClusterInfo{p.info()}, replyWait, false); err != nil || st != StatusSuccess {
		t.Fatalf("unlink: %v %v %v", st, per, err)
	}
	if _, err := d.LinkStats(p.id); !errors.Is(err, ErrNotYetLink) {
		t.Fatalf("link stats after unlink: %v", err)
	}
}

// The peer's link counts exactly the bytes the decoder read from and wrote
// into its caches; the decoder's link, whose memory the peer never
// touched, stays at zero. Over tcp and over shm (auto, between two
// processes of one host).
func TestLinkStatsCountPeerBytes(t *testing.T) {
	for _, transport := range []string{"auto", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			p := startPeer(t, 161, "llmlink.Transport="+transport)
			d := newDecoder(t, 1161, map[string]string{"llmlink.Transport": transport})
			linkAll(t, d, p)
			desc := blocksDesc(testBlocks)
			local, err := d.AllocateBlocksCache(desc, nil)
			if err != nil {
				t.Fatal(err)
			}
			unit := uint64(unitBytes(desc)) * uint64(desc.NumTensors) // one block of every tensor
			ctx := context.Background()
			// Pull 3 blocks of the peer's cache A: the peer's memory was read.
			if err := d.PullBlocks(ctx, NewBlocksCacheKey(p.id, 0), local.ID, []uint64{3, 4, 9}, []uint64{0, 1, 2}, nil); err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("STATS none 0 %d 0", 3*unit) + noRails
			if got := peerLinkStatsOf(p, d.ClusterID()); got != want {
				t.Fatalf("peer after a pull of 3 blocks: %q, want %q", got, want)
			}
			// Push 2 of them into the peer's cache B: its memory was written.
			if err := d.PushBlocks(ctx, NewBlocksCacheKey(p.id, 1), local.ID, []uint64{0, 1}, []uint64{5, 6}, nil); err != nil {
				t.Fatal(err)
			}
			if got := p.ask("verify B %d 3,4 5,6", peerBlocksSeed(p.id)); got != "OK" {
				t.Fatalf("pushed blocks: %s", got)
			}
			want = fmt.Sprintf("STATS none %d %d 0", 2*unit, 3*unit) + noRails
			if got := peerLinkStatsOf(p, d.ClusterID()); got != want {
				t.Fatalf("peer after a push of 2 blocks: %q, want %q", got, want)
			}
			// A refused push (block 16 of 16) counts nothing.
			if err := d.PushBlocks(ctx, NewBlocksCacheKey(p.id, 1), local.ID, []uint64{0}, []uint64{testBlocks}, nil); !errors.Is(err, ErrParamInvalid) {
				t.Fatalf("push past the last block: %v", err)
			}
			if got := peerLinkStatsOf(p, d.ClusterID()); got != want {
				t.Fatalf("peer after a refused push: %q, want %q", got, want)
			}
			if s, err := d.LinkStats(p.id); err != nil || statsLine(s) != "STATS none 0 0 0"+noRails {
				t.Fatalf("decoder's link stats (the peer touched none of its memory): %+v %v", s, err)
			}
		})
	}
}

func TestRdmaProtectionString(t *testing.T) {
	for p, want := range map[RdmaProtection]string{
		RdmaProtectionNone: "none", RdmaProtectionWindow: "window", RdmaProtectionLinkPD: "link_pd",
		RdmaProtectionRegion: "region", 9: "RdmaProtection(9)",
	} {
		if p.String() != want {
			t.Errorf("%d: %q, want %q", uint32(p), p.String(), want)
		}
	}
	// The C values, which are never renumbered.
	if RdmaProtectionNone != 0 || RdmaProtectionWindow != 1 || RdmaProtectionLinkPD != 2 || RdmaProtectionRegion != 3 {
		t.Fatal("RdmaProtection values differ from llmlink_rdma_protection_t")
	}
}

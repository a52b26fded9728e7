//go:build cgo

package llmlink

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Engine.Metrics and Engine.Links after a known sequence against a peer
// process over tcp: a link to a port where nothing listens (a "connect"
// failure), a link, 2 pulls that succeed and 1 the peer refuses (a block
// past the end of its cache), an unlink. Every counter has the exact
// expected value.
func TestMetricsAfterAKnownSequence(t *testing.T) {
	p := startPeer(t, 171, "llmlink.Transport=tcp")
	d := newDecoder(t, 1171, map[string]string{"llmlink.Transport": "tcp"})
	ctx := context.Background()
	dead := ClusterInfo{RemoteClusterID: 9, RemoteIPInfos: []IPInfo{{IP: "127.0.0.1", Port: deadPort(t)}}}
	if _, per, err := d.LinkClusters(ctx, []ClusterInfo{dead}, 5*time.Second); err != nil || per[0] == StatusSuccess {
		t.Fatalf("link to a dead port: %v %v", per, err)
	}
	linkAll(t, d, p)
	desc := blocksDesc(testBlocks)
	local, err := d.AllocateBlocksCache(desc, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := NewBlocksCacheKey(p.id, 0)
	for i := 0; i < 2; i++ {
		if err := d.PullBlocks(ctx, key, local.ID, []uint64{1, 2}, []uint64{3, 4}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.PullBlocks(ctx, key, local.ID, []uint64{testBlocks + 5}, []uint64{0}, nil); err == nil {
		t.Fatal("a pull of a block past the end of the peer's cache succeeded")
	}
	perPull := 2 * uint64(unitBytes(desc)) * uint64(desc.NumTensors)

	m, err := d.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if m.LinksUp != 1 || m.LinksEstablished["outbound"] != 1 || m.LinksEstablished["inbound"] != 0 {
		t.Fatalf("links: up %d, established %v", m.LinksUp, m.LinksEstablished)
	}
	if sum(m.LinkFailures) != 1 || m.LinkFailures["connect"] != 1 {
		t.Fatalf("link failures: %v", m.LinkFailures)
	}
	if len(m.Transfers) != 2*4*5 {
		t.Fatalf("%d transfer series, want every label value (40)", len(m.Transfers))
	}
	for k, v := range m.Transfers {
		want := uint64(0)
		switch k {
		case TransferKey{"pull", "tcp", "success"}:
			want = 2
		case TransferKey{"pull", "tcp", "refused"}:
			want = 1
		}
		if v != want {
			t.Errorf("transfers%v = %d, want %d", k, v, want)
		}
	}
	if got := m.Bytes[BytesKey{"pull", "tcp"}]; got != 2*perPull {
		t.Errorf("bytes pull tcp = %d, want %d", got, 2*perPull)
	}
	lat := m.Latency["pull"]
	if lat.Count != 3 || sumSlice(lat.Buckets) != 3 || lat.SumSeconds <= 0 || len(lat.Buckets) != 24 {
		t.Errorf("pull latency: %+v", lat)
	}
	if m.Latency["push"].Count != 0 {
		t.Errorf("push latency: %+v", m.Latency["push"])
	}

	links, err := d.Links()
	if err != nil || len(links) != 1 {
		t.Fatalf("links: %+v %v", links, err)
	}
	l := links[0]
	if l.Side != "outbound" || l.ClusterID != p.id || l.Transport != "tcp" ||
		l.Peer != fmt.Sprintf("127.0.0.1:%d", p.port) || l.BytesPulled != 2*perPull ||
		l.TransfersOK != 2 || l.TransfersFailed != 1 || l.Streams < 1 || l.UpSinceMs <= 0 {
		t.Errorf("link: %+v", l)
	}
	// A tcp link has no RDMA rail: the rail fields (link info version 2) are
	// 0 and the per-rail slices nil, as in LinkStats.
	if l.RDMARails != 0 || l.RDMARailsUp != 0 || l.RDMARailFailovers != 0 || l.RDMARailRepairs != 0 ||
		l.RDMARailBytes != nil || l.RDMARailMTU != nil {
		t.Errorf("rails of a tcp link: %+v", l)
	}

	if st, _, err := d.UnlinkClusters(ctx, []ClusterInfo{p.info()}, replyWait, false); err != nil || st != StatusSuccess {
		t.Fatalf("unlink: %v %v", st, err)
	}
	m, _ = d.Metrics()
	if m.LinksUp != 0 || m.LinksClosed["unlinked"] != 1 {
		t.Errorf("after unlink: up %d, closed %v", m.LinksUp, m.LinksClosed)
	}
	if links, err := d.Links(); err != nil || len(links) != 0 {
		t.Errorf("links after unlink: %+v %v", links, err)
	}
}

func TestMetricsLabelsAndBounds(t *testing.T) {
	if got := fmt.Sprint(MetricsLabels(LabelTransport)); got != "[none tcp shm rdma]" {
		t.Errorf("transports: %s", got)
	}
	if MetricsLabel(LabelDirection, 99) != "" {
		t.Error("a value the enum does not have has a label")
	}
	b := BucketBoundsSeconds()
	if len(b) != 24 || b[0] != 8e-6 || b[1] != 16e-6 {
		t.Errorf("bounds: %v", b)
	}
}

func sum(m map[string]uint64) (n uint64) {
	for _, v := range m {
		n += v
	}
	return n
}

func sumSlice(s []uint64) (n uint64) {
	for _, v := range s {
		n += v
	}
	return n
}

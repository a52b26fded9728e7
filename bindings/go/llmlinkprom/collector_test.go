//go:build cgo

package llmlinkprom

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	llmlink "github.com/llmlink/llmlink/bindings/go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

const promptID, decoderID = 601, 602

// sequence: a prompt and a decoder engine of this process over tcp on
// loopback; a link to a port where nothing listens, a link, 2 pulls that
// succeed and 1 the prompt engine refuses (a block past the end).
func sequence(t *testing.T) (d *llmlink.Engine, port uint16) {
	tcp := map[string]string{"llmlink.Transport": "tcp"}
	p, err := llmlink.NewEngine(llmlink.RolePrompt, promptID,
		map[string]string{"llm.listenIpInfo": "127.0.0.1:0", "llmlink.Transport": "tcp"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if port, err = p.ListenPort(0); err != nil {
		t.Fatal(err)
	}
	d, err = llmlink.NewEngine(llmlink.RoleDecoder, decoderID, tcp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ctx := context.Background()
	// a loopback port bound and closed: nothing listens there
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	dead := llmlink.ClusterInfo{RemoteClusterID: 9, RemoteIPInfos: []llmlink.IPInfo{{IP: "127.0.0.1", Port: deadPort}}}
	if _, per, err := d.LinkClusters(ctx, []llmlink.ClusterInfo{dead}, 5*time.Second); err != nil || per[0] == llmlink.StatusSuccess {
		t.Fatalf("link to a dead port: %v %v", per, err)
	}
	peer := llmlink.ClusterInfo{RemoteClusterID: promptID, RemoteIPInfos: []llmlink.IPInfo{{IP: "127.0.0.1", Port: port}}}
	if st, per, err := d.LinkClusters(ctx, []llmlink.ClusterInfo{peer}, 5*time.Second); err != nil || st != llmlink.StatusSuccess {
		t.Fatalf("link: %v %v %v", st, per, err)
	}
	desc := llmlink.CacheDesc{NumTensors: 2, DataType: llmlink.DTUint8, Shape: []int64{8, 64}}
	key := llmlink.NewBlocksCacheKey(promptID, 0)
	if _, err := p.AllocateBlocksCache(desc, &key); err != nil {
		t.Fatal(err)
	}
	local, err := d.AllocateBlocksCache(desc, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := d.PullBlocks(ctx, key, local.ID, []uint64{1, 2}, []uint64{3, 4}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.PullBlocks(ctx, key, local.ID, []uint64{13}, []uint64{0}, nil); err == nil {
		t.Fatal("a pull past the end succeeded")
	}
	return d, port
}

const perPull = 2 * 64 * 2 // 2 blocks of 64 bytes, 2 tensors

// samples gathers the registry: {name{sorted labels}: value}.
func samples(t *testing.T, reg *prometheus.Registry) (map[string]float64, []*dto.MetricFamily) {
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.Metric {
			var ls []string
			for _, l := range m.Label {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(ls)
			key := f.GetName() + "{" + strings.Join(ls, ",") + "}"
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[key+"_count"] = float64(m.Histogram.GetSampleCount())
				out[key+"_sum"] = m.Histogram.GetSampleSum()
				out[key+"_buckets"] = float64(len(m.Histogram.Bucket))
			}
		}
	}
	return out, fams
}

func want(t *testing.T, s map[string]float64, key string, v float64) {
	t.Helper()
	got, ok := s[key]
	if !ok {
		t.Errorf("no sample %s", key)
	} else if got != v {
		t.Errorf("%s = %v, want %v", key, got, v)
	}
}

func TestCollectorExactValues(t *testing.T) {
	d, port := sequence(t)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(d))
	s, _ := samples(t, reg)
	want(t, s, "llmlink_links_up{}", 1)
	want(t, s, `llmlink_links_established_total{side="outbound"}`, 1)
	want(t, s, `llmlink_links_established_total{side="inbound"}`, 0)
	want(t, s, `llmlink_link_failures_total{reason="connect"}`, 1)
	want(t, s, `llmlink_transfers_total{direction="pull",status="success",transport="tcp"}`, 2)
	want(t, s, `llmlink_transfers_total{direction="pull",status="refused",transport="tcp"}`, 1)
	want(t, s, `llmlink_transfers_total{direction="push",status="success",transport="tcp"}`, 0)
	want(t, s, `llmlink_transfer_bytes_total{direction="pull",transport="tcp"}`, 2*perPull)
	want(t, s, `llmlink_transfer_duration_seconds{direction="pull"}_count`, 3)
	want(t, s, `llmlink_transfer_duration_seconds{direction="pull"}_buckets`, 24)
	want(t, s, `llmlink_transfer_duration_seconds{direction="push"}_count`, 0)
	if s[`llmlink_transfer_duration_seconds{direction="pull"}_sum`] <= 0 {
		t.Error("pull duration sum is not positive")
	}
	ids := fmt.Sprintf(`cluster_id="%d",`, promptID)
	want(t, s, fmt.Sprintf(`llmlink_link_info{%speer="127.0.0.1:%d",side="outbound",transport="tcp"}`, ids, port), 1)
	want(t, s, `llmlink_link_transfer_bytes_total{`+ids+`direction="pull",side="outbound"}`, 2*perPull)
	want(t, s, `llmlink_link_transfers_total{`+ids+`side="outbound",status="success"}`, 2)
	want(t, s, `llmlink_link_transfers_total{`+ids+`side="outbound",status="failed"}`, 1)
	// no RDMA on a tcp link: its rail series are 0, and it has no per-rail one
	for _, name := range []string{"llmlink_link_rdma_rails", "llmlink_link_rdma_rails_up",
		"llmlink_link_rdma_rail_failovers_total", "llmlink_link_rdma_rail_repairs_total"} {
		want(t, s, name+`{`+ids+`side="outbound"}`, 0)
	}
	for key := range s {
		if strings.HasPrefix(key, "llmlink_link_rdma_rail_bytes_total{") || strings.HasPrefix(key, "llmlink_link_rdma_rail_mtu_bytes{") {
			t.Errorf("a per-rail series of a tcp link: %s", key)
		}
	}

	// le as `llmlink serve --metrics` writes it (prom.c: "%.9g"), in the
	// text format client_golang serves
	var text bytes.Buffer
	_, fams := samples(t, reg)
	for _, f := range fams {
		if f.GetName() == "llmlink_transfer_duration_seconds" {
			if _, err := expfmt.MetricFamilyToText(&text, f); err != nil {
				t.Fatal(err)
			}
		}
	}
	var les, wantLes []string
	for _, m := range regexp.MustCompile(`direction="pull",le="([^"]+)"`).FindAllStringSubmatch(text.String(), -1) {
		les = append(les, m[1])
	}
	for _, b := range llmlink.BucketBoundsSeconds() {
		wantLes = append(wantLes, fmt.Sprintf("%.9g", b))
	}
	if strings.Join(les, " ") != strings.Join(append(wantLes, "+Inf"), " ") {
		t.Errorf("le values %v, want %v and +Inf", les, wantLes)
	}

	// the same through testutil, by family
	if n := testutil.CollectAndCount(NewCollector(d), "llmlink_transfers_total"); n != 2*4*5 {
		t.Errorf("%d llmlink_transfers_total series, want every label value (40)", n)
	}
}

// railLink is a link of two RDMA rails, one down after a failover: the
// test host has no RDMA, so the rail samples of one are collected from its
// LinkInfo.
var railLink = llmlink.LinkInfo{Side: "inbound", ClusterID: 7, Transport: "rdma", RDMARails: 2,
	RDMARailsUp: 1, RDMARailFailovers: 1, RDMARailBytes: []uint64{4096, 512}, RDMARailMTU: []uint32{1024, 4096}}

// rails collects railLink's rail samples.
type rails struct{}

func (rails) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{linkRails, linkRailsUp, linkRailFailovers, linkRailRepairs, linkRailBytes, linkRailMTU} {
		ch <- d
	}
}

func (rails) Collect(ch chan<- prometheus.Metric) { collectRails(ch, []llmlink.LinkInfo{railLink}) }

func TestCollectorRailsOfAnRdmaLink(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(rails{})
	s, _ := samples(t, reg)
	ids := `cluster_id="7",`
	want(t, s, `llmlink_link_rdma_rails{`+ids+`side="inbound"}`, 2)
	want(t, s, `llmlink_link_rdma_rails_up{`+ids+`side="inbound"}`, 1)
	want(t, s, `llmlink_link_rdma_rail_failovers_total{`+ids+`side="inbound"}`, 1)
	want(t, s, `llmlink_link_rdma_rail_repairs_total{`+ids+`side="inbound"}`, 0)
	want(t, s, `llmlink_link_rdma_rail_bytes_total{`+ids+`rail="0",side="inbound"}`, 4096)
	want(t, s, `llmlink_link_rdma_rail_bytes_total{`+ids+`rail="1",side="inbound"}`, 512)
	want(t, s, `llmlink_link_rdma_rail_mtu_bytes{`+ids+`rail="0",side="inbound"}`, 1024)
	want(t, s, `llmlink_link_rdma_rail_mtu_bytes{`+ids+`rail="1",side="inbound"}`, 4096)
	if len(s) != 8 {
		t.Errorf("%d samples, want 8: %v", len(s), s)
	}
}

// Names follow Prometheus' conventions (promlint) and are the ones
// docs/metrics.md lists, which `llmlink serve --metrics` serves. The
// per-rail families have no sample on the test's tcp link: their names come
// from railLink's.
func TestCollectorNamesMatchTheDocs(t *testing.T) {
	d, _ := sequence(t)
	problems, err := testutil.CollectAndLint(NewCollector(d))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	if problems, err = testutil.CollectAndLint(rails{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(d))
	_, fams := samples(t, reg)
	seen := map[string]bool{}
	var got []string
	for _, f := range fams {
		seen[f.GetName()] = true
	}
	railReg := prometheus.NewPedanticRegistry()
	railReg.MustRegister(rails{})
	_, railFams := samples(t, railReg)
	for _, f := range railFams {
		if !seen[f.GetName()] {
			fams = append(fams, f)
		}
	}
	for _, f := range fams {
		got = append(got, f.GetName())
		if f.GetType() == dto.MetricType_COUNTER && !strings.HasSuffix(f.GetName(), "_total") {
			t.Errorf("counter %s does not end in _total", f.GetName())
		}
	}
	doc, err := os.ReadFile("../../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, m := range regexp.MustCompile("(?m)^\\| `(llmlink_[a-z_]+)[`{]").FindAllStringSubmatch(string(doc), -1) {
		documented = append(documented, m[1])
	}
	sort.Strings(got)
	sort.Strings(documented)
	if strings.Join(got, " ") != strings.Join(documented, " ") {
		t.Errorf("exported %v\ndocumented %v", got, documented)
	}
}

func TestClosedEngineYieldsNothing(t *testing.T) {
	e, err := llmlink.NewEngine(llmlink.RoleDecoder, 603, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	if n := testutil.CollectAndCount(NewCollector(e)); n != 0 {
		t.Errorf("a closed engine gave %d samples", n)
	}
}

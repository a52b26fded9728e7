//go:build cgo

package llmlink

import (
	"context"
	"math"
	"testing"
	"time"
)

func TestTimeoutMs(t *testing.T) {
	bg := context.Background()
	cases := []struct {
		in   time.Duration
		want int32
	}{
		{time.Second, 1000}, {1500 * time.Microsecond, 2}, {time.Nanosecond, 1},
		{0, 0}, {-5 * time.Millisecond, -5}, {math.MaxInt64, math.MaxInt32}, {math.MinInt64, math.MinInt32},
	}
	for _, c := range cases {
		if got, clamped := timeoutMs(bg, c.in); got != c.want || clamped {
			t.Errorf("timeoutMs(%v) = %d, %v; want %d, false", c.in, got, clamped, c.want)
		}
	}
	ctx, cancel := context.WithTimeout(bg, 200*time.Millisecond)
	defer cancel()
	if got, clamped := timeoutMs(ctx, time.Hour); !clamped || got > 200 || got < 1 {
		t.Errorf("a 200 ms deadline and a 1 h timeout: %d, %v", got, clamped)
	}
	if got, clamped := timeoutMs(ctx, 50*time.Millisecond); clamped || got != 50 {
		t.Errorf("a timeout before the deadline: %d, %v", got, clamped)
	}
	if got, clamped := timeoutMs(ctx, 0); clamped || got != 0 {
		t.Errorf("timeout 0 stays 0 for the C side to refuse: %d, %v", got, clamped)
	}
}

// Many goroutines link the same cluster at once: one links it, the others
// are told it is linked or being linked; none is an error.
func TestConcurrentLinksOfOneCluster(t *testing.T) {
	p := startPeer(t, 171)
	d := newDecoder(t, 1171, nil)
	const n = 8
	type result struct {
		st  Status
		per []Status
		err error
	}
	results := make(chan result, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		go func() {
			<-start
			st, per, err := d.LinkClusters(context.Background(), []ClusterInfo{p.info()}, 5*time.Second)
			results <- result{st, per, err}
		}()
	}
	close(start)
	linked := 0
	for i := 0; i < n; i++ {
		r := <-results
		switch {
		case r.err != nil:
			t.Fatalf("error: %v", r.err)
		case r.st == StatusSuccess && r.per[0] == StatusSuccess:
			linked++
		case r.st == StatusLinkFailed && (r.per[0] == StatusAlreadyLink || r.per[0] == StatusProcessingLink):
		default:
			t.Fatalf("unexpected outcome %v %v", r.st, r.per)
		}
	}
	if linked != 1 {
		t.Fatalf("%d calls linked the cluster, want 1", linked)
	}
	if s, _ := d.Stats(); s.OutboundLinks != 1 {
		t.Fatalf("stats: %+v", s)
	}
}

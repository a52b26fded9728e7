//go:build cgo

package llmlink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// recvNotes reads n notifications from e's channel within d.
func recvNotes(t *testing.T, e *Engine, n int, d time.Duration) []string {
	t.Helper()
	var got []string
	deadline := time.After(d)
	for len(got) < n {
		select {
		case m, ok := <-e.Notifications():
			if !ok {
				t.Fatal("Notifications closed")
			}
			got = append(got, fmt.Sprintf("%d:%s", m.ClusterID, m.Data))
		case <-deadline:
			t.Fatalf("%d of %d notifications within %v: %v", len(got), n, d, got)
		}
	}
	return got
}

func want(prefix string, id uint64, from, n int) []string {
	var w []string
	for i := from; i < from+n; i++ {
		w = append(w, fmt.Sprintf("%d:%s-%d", id, prefix, i))
	}
	return w
}

// Notifications both ways, in order per link, through the channel; the
// sizes the ABI allows and refuses.
func TestNotifyOrderAndChannel(t *testing.T) {
	p1, p2 := startPeer(t, 261), startPeer(t, 262)
	d := newDecoder(t, 1261, nil)
	linkAll(t, d, p1, p2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Decoder -> peer: 100 in order.
	for i := 0; i < 100; i++ {
		if err := d.Notify(ctx, p1.id, []byte(fmt.Sprintf("n-%d", i))); err != nil {
			t.Fatalf("notify %d: %v", i, err)
		}
	}
	if r := p1.ask("notes 100 10000"); r != "NOTES "+strings.Join(want("n", d.ClusterID(), 0, 100), " ") {
		t.Fatalf("peer got: %s", r)
	}
	// Peers -> decoder, both links at once: each link in order.
	if _, err := fmt.Fprintf(p1.stdin, "notify %d 50 a\n", d.ClusterID()); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(p2.stdin, "notify %d 50 b\n", d.ClusterID()); err != nil {
		t.Fatal(err)
	}
	got := recvNotes(t, d, 100, 10*time.Second)
	if r1, r2 := p1.reply(), p2.reply(); r1 != "OK" || r2 != "OK" {
		t.Fatalf("peers: %s / %s", r1, r2)
	}
	var from1, from2 []string
	for _, g := range got {
		if strings.HasPrefix(g, fmt.Sprintf("%d:", p1.id)) {
			from1 = append(from1, g)
		} else {
			from2 = append(from2, g)
		}
	}
	if strings.Join(from1, " ") != strings.Join(want("a", p1.id, 0, 50), " ") ||
		strings.Join(from2, " ") != strings.Join(want("b", p2.id, 0, 50), " ") {
		t.Fatalf("out of order: %v", got)
	}
	// Sizes: MaxNotifyBytes passes with every byte, 0 and more are refused.
	big := make([]byte, MaxNotifyBytes)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	if err := d.Notify(ctx, p1.id, nil); !errors.Is(err, ErrParamInvalid) {
		t.Fatalf("empty: %v", err)
	}
	if err := d.Notify(ctx, p1.id, append(big, 1)); !errors.Is(err, ErrParamInvalid) {
		t.Fatalf("too big: %v", err)
	}
	if err := d.Notify(ctx, 999, []byte("x")); !errors.Is(err, ErrNotYetLink) {
		t.Fatalf("no link: %v", err)
	}
	if err := d.Notify(nil, p1.id, []byte("x")); !errors.Is(err, ErrParamInvalid) { //nolint:staticcheck // nil ctx on purpose
		t.Fatalf("nil ctx: %v", err)
	}
	// The full-size one, both ways (the decoder checks the bytes).
	if err := d.Notify(ctx, p1.id, big); err != nil {
		t.Fatal(err)
	}
	if r := p1.ask("notes 1 5000"); r != fmt.Sprintf("NOTES %d:%s", d.ClusterID(), big) {
		t.Fatalf("peer got %d bytes back, want %d", len(r), len(big))
	}
}

// A peer whose application does not read: its queue (NotifyQueueDepth 4,
// the dispatcher not started) fills and the sender gets
// ErrNotifyQueueFull, nothing lost; once it reads, sending works again.
func TestNotifyQueueFull(t *testing.T) {
	p := startPeer(t, 271, "llmlink.NotifyQueueDepth=4")
	d := newDecoder(t, 1271, nil)
	linkAll(t, d, p)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sent := 0
	var err error
	for ; sent < 20; sent++ {
		if err = d.Notify(ctx, p.id, []byte(fmt.Sprintf("q-%d", sent))); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrNotifyQueueFull) {
		t.Fatalf("after %d: %v", sent, err)
	}
	if sent != 4 {
		t.Fatalf("the queue of depth 4 took %d", sent)
	}
	// The peer reads: the four, in order; Notifications now feeds its
	// channel (depth 4) as well, so the next four are queued.
	if r := p.ask("notes 4 5000"); r != "NOTES "+strings.Join(want("q", d.ClusterID(), 0, 4), " ") {
		t.Fatalf("peer: %s", r)
	}
	for i := 0; i < 4; i++ {
		if err := d.Notify(ctx, p.id, []byte(fmt.Sprintf("r-%d", i))); err != nil {
			t.Fatalf("after the peer read: %v", err)
		}
	}
	if r := p.ask("notes 4 5000"); r != "NOTES "+strings.Join(want("r", d.ClusterID(), 0, 4), " ") {
		t.Fatalf("peer: %s", r)
	}
}

// Our own channel full (depth 2) while the peer keeps sending: the
// notifications wait in the C queue (then the sender gets
// ErrNotifyQueueFull), transfers still complete meanwhile (the
// dispatcher's timed look), and reading the channel gives every one in
// order.
func TestNotifyHeldWhileTransfersComplete(t *testing.T) {
	p := startPeer(t, 281)
	d := newDecoder(t, 1281, map[string]string{"llmlink.NotifyQueueDepth": "2"})
	linkAll(t, d, p)
	dst, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = d.Notifications() // starts the dispatcher
	// Two fill our channel; then two wait in the C queue, the next is refused.
	if r := p.ask("notify %d 2 h", d.ClusterID()); r != "OK" {
		t.Fatalf("peer: %s", r)
	}
	if !waitFor(5*time.Second, func() bool { return len(d.async.notes) == 2 }) {
		t.Fatal("the dispatcher did not fill the channel")
	}
	if r := p.ask("notify %d 4 g", d.ClusterID()); !strings.HasPrefix(r, "ERR 2 LLMLINK_NOTIFY_QUEUE_FULL") {
		t.Fatalf("peer: %s (want 2 in the C queue, the 3rd refused)", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 20; i++ {
		tr, err := d.PullBlocksAsync(NewBlocksCacheKey(p.id, 0), dst.ID, []uint64{uint64(i % testBlocks)}, []uint64{uint64(i % testBlocks)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.Wait(ctx); err != nil {
			t.Fatalf("transfer %d with our notifications held: %v", i, err)
		}
		tr.Close()
	}
	if d.async.heldPolls.Load() == 0 {
		t.Fatal("no timed look while notifications were held")
	}
	if got := recvNotes(t, d, 4, 5*time.Second); strings.Join(got, " ") != strings.Join(append(want("h", p.id, 0, 2), want("g", p.id, 0, 2)...), " ") {
		t.Fatalf("got %v", got)
	}
	if r := p.ask("notify %d 2 i", d.ClusterID()); r != "OK" {
		t.Fatalf("peer after we read: %s", r)
	}
	if got := recvNotes(t, d, 2, 5*time.Second); strings.Join(got, " ") != strings.Join(want("i", p.id, 0, 2), " ") {
		t.Fatalf("got %v", got)
	}
}

// A dead peer: Notify fails with a status (no hang), within its limit.
func TestNotifyDeadPeer(t *testing.T) {
	p := startPeer(t, 291)
	d := newDecoder(t, 1291, nil)
	linkAll(t, d, p)
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.finished
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	var err error
	// The first may go out before the engine saw the link die.
	for i := 0; i < 3; i++ {
		if err = d.Notify(ctx, p.id, []byte("anyone?")); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrNotYetLink) && !errors.Is(err, ErrTimeout) && !errors.Is(err, ErrNetworkError) {
		t.Fatalf("notify a dead peer: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("took %v", took)
	}
}

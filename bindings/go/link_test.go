//go:build cgo

package llmlink

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

func TestLinkCheckUnlink(t *testing.T) {
	p := startPeer(t, 11)
	d := newDecoder(t, 1011, nil)
	ctx := context.Background()
	c := []ClusterInfo{p.info()}

	if st, err := d.CheckLinkStatus(p.id); err != nil || st != StatusNotYetLink {
		t.Fatalf("check before link: %v %v", st, err)
	}
	st, per, err := d.LinkClusters(ctx, c, 3*time.Second)
	if err != nil || st != StatusSuccess || len(per) != 1 || per[0] != StatusSuccess {
		t.Fatalf("link: %v %v %v", st, per, err)
	}
	if st, err := d.CheckLinkStatus(p.id); err != nil || st != StatusSuccess {
		t.Fatalf("check after link: %v %v", st, err)
	}
	if s, err := d.Stats(); err != nil || s.OutboundLinks != 1 || s.Links != 1 {
		t.Fatalf("stats: %+v %v", s, err)
	}
	// Linking again is a link outcome, not an error.
	st, per, err = d.LinkClusters(ctx, c, 3*time.Second)
	if err != nil || st != StatusLinkFailed || per[0] != StatusAlreadyLink {
		t.Fatalf("link again: %v %v %v", st, per, err)
	}
	st, per, err = d.UnlinkClusters(ctx, c, 3*time.Second, false)
	if err != nil || st != StatusSuccess || per[0] != StatusSuccess {
		t.Fatalf("unlink: %v %v %v", st, per, err)
	}
	if st, _ := d.CheckLinkStatus(p.id); st != StatusNotYetLink {
		t.Fatalf("check after unlink: %v", st)
	}
	st, per, err = d.UnlinkClusters(ctx, c, 3*time.Second, false)
	if err != nil || st != StatusUnlinkFailed || per[0] != StatusNotYetLink {
		t.Fatalf("unlink again: %v %v %v", st, per, err)
	}
	// force: the local end goes at once, and the same decoder links again.
	linkAll(t, d, p)
	st, per, err = d.UnlinkClusters(ctx, c, 3*time.Second, true)
	if err != nil || st != StatusSuccess || per[0] != StatusSuccess {
		t.Fatalf("force unlink: %v %v %v", st, per, err)
	}
	if st, _ := d.CheckLinkStatus(p.id); st != StatusNotYetLink {
		t.Fatalf("check after force unlink: %v", st)
	}
	linkAll(t, d, p)
}

// deadPort is a loopback port nobody listens on.
func deadPort(t *testing.T) uint16 {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return uint16(port)
}

// blackHole accepts connections and never answers: a link to it waits for
// the handshake until its timeout.
func blackHole(t *testing.T) uint16 {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

func TestLinkPerClusterStatusesWithUnreachable(t *testing.T) {
	p1, p2 := startPeer(t, 21), startPeer(t, 22)
	d := newDecoder(t, 1021, nil)
	dead := ClusterInfo{RemoteClusterID: 29, RemoteIPInfos: []IPInfo{{IP: "127.0.0.1", Port: deadPort(t)}}}
	st, per, err := d.LinkClusters(context.Background(), []ClusterInfo{p1.info(), dead, p2.info()}, 5*time.Second)
	if err != nil {
		t.Fatalf("a failed cluster is an outcome, not an error: %v", err)
	}
	if st != StatusLinkFailed || len(per) != 3 || per[0] != StatusSuccess || per[1] != StatusLinkFailed || per[2] != StatusSuccess {
		t.Fatalf("got %v %v", st, per)
	}
	for _, id := range []uint64{21, 22} {
		if st, _ := d.CheckLinkStatus(id); st != StatusSuccess {
			t.Fatalf("cluster %d: %v", id, st)
		}
	}
	if st, _ := d.CheckLinkStatus(29); st != StatusNotYetLink {
		t.Fatalf("dead cluster: %v", st)
	}
}

// wantRefused checks a refused link/unlink call: error with status want
// (errors.Is, errors.As, a message), overall status want, and every
// per-cluster status want.
func wantRefused(t *testing.T, what string, st Status, per []Status, n int, err error, want Status, needle string) {
	t.Helper()
	var le *Error
	if !errors.As(err, &le) || !errors.Is(err, sentinel(want)) || le.Status != want {
		t.Fatalf("%s: err %v, want %v", what, err, want)
	}
	if st != want || len(per) != n {
		t.Fatalf("%s: status %v, %d statuses (want %v, %d)", what, st, len(per), want, n)
	}
	for i, s := range per {
		if s != want {
			t.Fatalf("%s: status %d is %v", what, i, s)
		}
	}
	if !strings.Contains(le.Msg, needle) {
		t.Fatalf("%s: message %q does not name %q", what, le.Msg, needle)
	}
}

func TestLinkRefusedCalls(t *testing.T) {
	p := startPeer(t, 31)
	d := newDecoder(t, 1031, nil)
	ctx := context.Background()
	good := p.info()

	st, per, err := d.LinkClusters(ctx, nil, time.Second)
	wantRefused(t, "no clusters", st, per, 0, err, StatusParamInvalid, "")
	st, per, err = d.LinkClusters(ctx, []ClusterInfo{good, good}, 0)
	wantRefused(t, "timeout 0", st, per, 2, err, StatusParamInvalid, "timeout")
	st, per, err = d.LinkClusters(ctx, []ClusterInfo{good}, -time.Second)
	wantRefused(t, "negative timeout", st, per, 1, err, StatusParamInvalid, "timeout")
	st, per, err = d.LinkClusters(ctx, []ClusterInfo{good, good}, time.Second)
	wantRefused(t, "duplicate ids", st, per, 2, err, StatusParamInvalid, "31")
	bad := good
	bad.RemoteIPInfos = []IPInfo{{IP: "not-an-ip", Port: 1}}
	st, per, err = d.LinkClusters(ctx, []ClusterInfo{bad}, time.Second)
	wantRefused(t, "bad ip", st, per, 1, err, StatusParamInvalid, "not-an-ip")
	bad.RemoteIPInfos = []IPInfo{{IP: "127.0.0.1\x00", Port: 1}}
	st, per, err = d.LinkClusters(ctx, []ClusterInfo{bad}, time.Second)
	wantRefused(t, "NUL in ip", st, per, 1, err, StatusParamInvalid, "NUL")
	many := make([]ClusterInfo, MaxClustersPerCall+1)
	for i := range many {
		many[i] = ClusterInfo{RemoteClusterID: uint64(500 + i), RemoteIPInfos: good.RemoteIPInfos}
	}
	st, per, err = d.LinkClusters(ctx, many, time.Second)
	wantRefused(t, "17 clusters", st, per, len(many), err, StatusClusterNumExceedLimit, "")
	st, per, err = d.LinkClusters(nil, []ClusterInfo{good}, time.Second)
	if !errors.Is(err, ErrParamInvalid) || per != nil || st != StatusParamInvalid {
		t.Fatalf("nil context: %v %v %v", st, per, err)
	}

	st, per, err = d.UnlinkClusters(ctx, nil, time.Second, false)
	wantRefused(t, "unlink no clusters", st, per, 0, err, StatusParamInvalid, "")
	st, per, err = d.UnlinkClusters(ctx, []ClusterInfo{good}, 0, false)
	wantRefused(t, "unlink timeout 0", st, per, 1, err, StatusParamInvalid, "timeout")

	// Only the client links.
	pe, err := NewEngine(RolePrompt, 1032, map[string]string{"llm.listenIpInfo": "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer pe.Close()
	st, per, err = pe.LinkClusters(ctx, []ClusterInfo{good}, time.Second)
	wantRefused(t, "PROMPT links", st, per, 1, err, StatusRoleNotAllowed, "")

	// Nothing of the above linked anything.
	if st, _ := d.CheckLinkStatus(p.id); st != StatusNotYetLink {
		t.Fatalf("refused calls linked: %v", st)
	}
	if s, _ := d.Stats(); s.Links != 0 {
		t.Fatalf("refused calls linked: %+v", s)
	}
}

func TestLinkContextAlreadyDone(t *testing.T) {
	p := startPeer(t, 41)
	d := newDecoder(t, 1041, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	st, per, err := d.LinkClusters(ctx, []ClusterInfo{p.info()}, 3*time.Second)
	if !errors.Is(err, context.Canceled) || per != nil || st != StatusFailed {
		t.Fatalf("got %v %v %v", st, per, err)
	}
	if _, _, err := d.UnlinkClusters(ctx, []ClusterInfo{p.info()}, time.Second, false); !errors.Is(err, context.Canceled) {
		t.Fatalf("unlink: %v", err)
	}
	if s, _ := d.Stats(); s.Links != 0 || s.HandshakesCompleted != 0 {
		t.Fatalf("a done context still linked: %+v", s)
	}
}

// Cancelling mid-link returns at once; the link the call made in the
// meantime is undone once the C call returns.
func TestLinkContextCancelledMidLink(t *testing.T) {
	p := startPeer(t, 51)
	d := newDecoder(t, 1051, nil)
	hole := ClusterInfo{RemoteClusterID: 59, RemoteIPInfos: []IPInfo{{IP: "127.0.0.1", Port: blackHole(t)}}}
	const timeout = 2 * time.Second

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Cancel once the good cluster is linked: the call is then
		// waiting on the black hole only.
		waitFor(timeout, func() bool { st, _ := d.CheckLinkStatus(p.id); return st == StatusSuccess })
		cancel()
	}()
	start := time.Now()
	st, per, err := d.LinkClusters(ctx, []ClusterInfo{p.info(), hole}, timeout)
	took := time.Since(start)
	if !errors.Is(err, context.Canceled) || per != nil || st != StatusFailed {
		t.Fatalf("got %v %v %v", st, per, err)
	}
	if took >= timeout*3/4 {
		t.Fatalf("cancel took %v, the C timeout is %v", took, timeout)
	}
	if d.running() != 1 {
		t.Fatalf("%d calls running, want the abandoned link", d.running())
	}
	if !waitFor(timeout+5*time.Second, func() bool {
		st, _ := d.CheckLinkStatus(p.id)
		return st == StatusNotYetLink && d.running() == 0
	}) {
		t.Fatalf("the cancelled call's link to %d was not undone", p.id)
	}
	// The engine is usable afterwards.
	linkAll(t, d, p)
}

// A deadline before the timeout cuts the timeout: the call returns the
// clusters not linked in time as TIMEOUT, with no error.
func TestLinkContextDeadline(t *testing.T) {
	p := startPeer(t, 61)
	d := newDecoder(t, 1061, nil)
	hole := ClusterInfo{RemoteClusterID: 69, RemoteIPInfos: []IPInfo{{IP: "127.0.0.1", Port: blackHole(t)}}}
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	start := time.Now()
	st, per, err := d.LinkClusters(ctx, []ClusterInfo{p.info(), hole}, 30*time.Second)
	took := time.Since(start)
	if err != nil || st != StatusLinkFailed || len(per) != 2 || per[0] != StatusSuccess || per[1] != StatusTimeout {
		t.Fatalf("got %v %v %v", st, per, err)
	}
	if took > 10*time.Second {
		t.Fatalf("the 400 ms deadline did not cut the 30 s timeout: %v", took)
	}
	if st, _ := d.CheckLinkStatus(p.id); st != StatusSuccess {
		t.Fatalf("the cluster linked in time: %v", st)
	}
}

// Unlinking peers that cannot answer (frozen): a deadline cuts the wait for
// the acknowledgement and the outcome comes back; a cancel returns at once
// and the unlink completes in the background.
func TestUnlinkContextDeadlineAndCancel(t *testing.T) {
	pa, pb := startPeer(t, 151), startPeer(t, 152)
	d := newDecoder(t, 1151, map[string]string{"llmlink.LivenessIntervalMs": "600000"})
	linkAll(t, d, pa, pb)
	for _, p := range []*peer{pa, pb} {
		if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		defer p.cmd.Process.Signal(syscall.SIGCONT)
		pid := p.cmd.Process.Pid
		if !waitFor(5*time.Second, func() bool { return processStopped(pid) }) {
			t.Fatal("the peer did not stop")
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	st, per, err := d.UnlinkClusters(ctx, []ClusterInfo{pa.info()}, 30*time.Second, false)
	if err != nil || st != StatusUnlinkFailed || len(per) != 1 || per[0] != StatusNotifyPromptUnlinkFailed {
		t.Fatalf("deadline: %v %v %v", st, per, err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the deadline did not cut the 30 s timeout: %v", took)
	}
	if st, _ := d.CheckLinkStatus(pa.id); st != StatusNotYetLink {
		t.Fatalf("local end of %d not freed: %v", pa.id, st)
	}

	const timeout = 1500 * time.Millisecond
	cctx, ccancel := context.WithCancel(context.Background())
	time.AfterFunc(150*time.Millisecond, ccancel)
	start = time.Now()
	st, per, err = d.UnlinkClusters(cctx, []ClusterInfo{pb.info()}, timeout, false)
	if !errors.Is(err, context.Canceled) || per != nil || st != StatusFailed {
		t.Fatalf("cancel: %v %v %v", st, per, err)
	}
	if took := time.Since(start); took >= timeout*3/4 {
		t.Fatalf("cancel took %v", took)
	}
	if !waitFor(timeout+5*time.Second, func() bool {
		st, _ := d.CheckLinkStatus(pb.id)
		return st == StatusNotYetLink && d.running() == 0
	}) {
		t.Fatal("the cancelled unlink did not complete in the background")
	}
}

func TestUnregisterCacheContextDone(t *testing.T) {
	d := newDecoder(t, 1161, nil)
	mem, err := syscall.Mmap(-1, 0, int(blocksDesc(2).TensorBytes()*4), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(mem)
	tb := int(blocksDesc(2).TensorBytes())
	var addrs []uintptr
	for i := 0; i < 4; i++ {
		addrs = append(addrs, uintptr(unsafe.Pointer(&mem[i*tb])))
	}
	c, err := d.RegisterBlocksCache(blocksDesc(2), addrs, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.UnregisterCache(ctx, c.ID); !errors.Is(err, context.Canceled) {
		t.Fatalf("done context: %v", err)
	}
	// No C call was made: the cache is still there.
	if xs, _ := d.XferStats(); xs.Caches != 1 {
		t.Fatalf("caches: %d", xs.Caches)
	}
	if err := d.UnregisterCache(context.Background(), c.ID); err != nil {
		t.Fatal(err)
	}
	if xs, _ := d.XferStats(); xs.Caches != 0 {
		t.Fatalf("caches after unregister: %d", xs.Caches)
	}
}

//go:build cgo

package llmlink

// Prefill peers for the tests: the test binary started again as a child
// process (TestMain sees LLMLINK_GO_PEER) holding one PROMPT engine, so
// every test links and transfers across real processes and sockets.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	peerEnv     = "LLMLINK_GO_PEER"      // cluster id of the peer to be
	peerOptsEnv = "LLMLINK_GO_PEER_OPTS" // extra options, "k=v;k=v"
	// The Access (a number) of the peer's three caches; unset: the
	// default (no WithAccess, so AccessReadWrite).
	peerAccessEnv = "LLMLINK_GO_PEER_ACCESS"
	testBlocks    = 16               // blocks of every peer blocks cache (unless peerBlocksEnv)
	replyWait     = 20 * time.Second // bound on any peer reply
)

// blocksDesc is the geometry of every blocks cache in the tests: 2 layers
// (K, V) of n blocks of 64 x 16 float16 (2 KiB a block).
func blocksDesc(n int64) CacheDesc {
	return CacheDesc{NumTensors: 4, DataType: DTFloat16, Placement: PlacementHost, Shape: []int64{n, 64, 16}}
}

// batchDesc is the geometry of the batch caches: n entries of 2 KiB.
func batchDesc(n int64) CacheDesc { return blocksDesc(n) }

// unitBytes is the size of one block (or batch entry) of a desc.
func unitBytes(d CacheDesc) int { return int(d.TensorBytes() / d.Shape[0]) }

// patternWord is the content of word w of unit u of tensor t under seed:
// every word of every unit differs, so a misplaced block shows.
func patternWord(seed uint64, t, u, w int) uint64 {
	return seed<<40 ^ uint64(t)<<28 ^ uint64(u)<<16 ^ uint64(w) ^ 0x5a5a000000000000
}

func fillUnit(buf []byte, seed uint64, t, u int) {
	for w := 0; w < len(buf)/8; w++ {
		binary.LittleEndian.PutUint64(buf[w*8:], patternWord(seed, t, u, w))
	}
}

// fillTensors fills every unit of every tensor with the pattern of seed.
func fillTensors(tensors [][]byte, desc CacheDesc, seed uint64) {
	ub := unitBytes(desc)
	for t, buf := range tensors {
		for u := 0; u < int(desc.Shape[0]); u++ {
			fillUnit(buf[u*ub:(u+1)*ub], seed, t, u)
		}
	}
}

// checkUnits verifies that dst unit dstUnits[i] of every tensor in tensors
// (tensor number firstTensor, firstTensor+1, ...) holds unit srcUnits[i] of
// the pattern of seed, and that every other unit is all zero. It returns ""
// or what is wrong.
func checkUnits(tensors [][]byte, desc CacheDesc, seed uint64, srcUnits, dstUnits []uint64, firstTensor int) string {
	ub := unitBytes(desc)
	want := make([]byte, ub)
	src := map[int]int{}
	for i, d := range dstUnits {
		src[int(d)] = int(srcUnits[i])
	}
	for i, buf := range tensors {
		t := firstTensor + i
		for u := 0; u < int(desc.Shape[0]); u++ {
			got := buf[u*ub : (u+1)*ub]
			s, moved := src[u]
			if moved {
				fillUnit(want, seed, t, s)
			} else {
				for i := range want {
					want[i] = 0
				}
			}
			if string(got) != string(want) {
				return fmt.Sprintf("tensor %d unit %d: moved=%v src=%d: bytes differ", t, u, moved, s)
			}
		}
	}
	return ""
}

func allTensors(c *Cache) [][]byte {
	var out [][]byte
	for i := 0; i < int(c.Desc.NumTensors); i++ {
		out = append(out, c.Tensor(i))
	}
	return out
}

func parseList(s string) []uint64 {
	if s == "-" {
		return nil
	}
	var out []uint64
	for _, f := range strings.Split(s, ",") {
		v, _ := strconv.ParseUint(f, 10, 64)
		out = append(out, v)
	}
	return out
}

func listArg(v []uint64) string {
	if len(v) == 0 {
		return "-"
	}
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatUint(x, 10)
	}
	return strings.Join(s, ",")
}

// Seeds of the peer's caches, derived from its cluster id.
func peerBlocksSeed(id uint64) uint64 { return id }
func peerBatchSeed(id uint64) uint64  { return id + 100 }

// runPeer is the child process: a PROMPT engine with three allocated
// caches (of the access in peerAccessEnv, if set), then line commands on
// stdin until EOF.
//
//	blocks cache  "A" key BlocksCacheKey(id, 0), pattern peerBlocksSeed
//	blocks cache  "B" key BlocksCacheKey(id, 1), zero (push target)
//	batch cache   "C" 2 entries, keys CacheKey(id, 7, 0) and (id, 8, 0),
//	              pattern peerBatchSeed
//
// Prints "READY <port> <A id> <B id> <C id>", then answers
// "verify <A|B|C> <seed> <src units> <dst units>" with "OK" or "BAD ...",
// and "linkstats <cluster id>" with "STATS <rdma protection> <peer write
// bytes> <peer read bytes> <requests fenced> rails <rails> <up> <failovers>
// <repairs> <bytes per rail> <MTU per rail>" (statsLine) or "ERR <status>
// <message>".
func runPeer(idText string) int {
	id, err := strconv.ParseUint(idText, 10, 64)
	if err != nil {
		fmt.Println("ERR bad id")
		return 1
	}
	opts := map[string]string{"llm.listenIpInfo": "127.0.0.1:0", "llm.SyncKvCacheWaitTime": "5000"}
	if extra := os.Getenv(peerOptsEnv); extra != "" {
		for _, kv := range strings.Split(extra, ";") {
			k, v, _ := strings.Cut(kv, "=")
			opts[k] = v
		}
	}
	e, err := NewEngine(RolePrompt, id, opts)
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	defer e.Close()
	port, err := e.ListenPort(0)
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	var copts []CacheOption
	if a := os.Getenv(peerAccessEnv); a != "" {
		v, err := strconv.ParseUint(a, 10, 32)
		if err != nil {
			fmt.Println("ERR bad access")
			return 1
		}
		copts = append(copts, WithAccess(Access(v)))
	}
	ka, kb := NewBlocksCacheKey(id, 0), NewBlocksCacheKey(id, 1)
	a, err1 := e.AllocateBlocksCache(blocksDesc(peerBlocks()), &ka, copts...)
	b, err2 := e.AllocateBlocksCache(blocksDesc(peerBlocks()), &kb, copts...)
	c, err3 := e.AllocateCache(batchDesc(2), []CacheKey{NewCacheKey(id, 7, 0), NewCacheKey(id, 8, 0)}, copts...)
	for _, err := range []error{err1, err2, err3} {
		if err != nil {
			fmt.Println("ERR", err)
			return 1
		}
	}
	fillTensors(allTensors(a), a.Desc, peerBlocksSeed(id))
	fillTensors(allTensors(c), c.Desc, peerBatchSeed(id))
	caches := map[string]*Cache{"A": a, "B": b, "C": c}
	fmt.Printf("READY %d %d %d %d\n", port, a.ID, b.ID, c.ID)

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 5 && f[0] == "verify" && caches[f[1]] != nil {
			seed, _ := strconv.ParseUint(f[2], 10, 64)
			c := caches[f[1]]
			if bad := checkUnits(allTensors(c), c.Desc, seed, parseList(f[3]), parseList(f[4]), 0); bad != "" {
				fmt.Println("BAD", bad)
			} else {
				fmt.Println("OK")
			}
			continue
		}
		if len(f) == 2 && f[0] == "linkstats" {
			fmt.Println(peerLinkStats(e, f[1]))
			continue
		}
		if r, ok := peerAsyncCommand(e, caches, f); ok {
			fmt.Println(r)
			continue
		}
		fmt.Println("ERR unknown command")
	}
	return 0
}

// peerLinkStats is the peer's answer to "linkstats <cluster id>".
func peerLinkStats(e *Engine, idText string) string {
	id, err := strconv.ParseUint(idText, 10, 64)
	if err != nil {
		return "ERR bad cluster id"
	}
	s, err := e.LinkStats(id)
	if err != nil {
		var ee *Error
		if errors.As(err, &ee) {
			return fmt.Sprintf("ERR %s %s", ee.Status, ee.Msg)
		}
		return "ERR " + err.Error()
	}
	return statsLine(s)
}

// peer is a running prefill child process.
type peer struct {
	t        testing.TB
	id       uint64
	port     uint16
	a, b, c  int64 // cache ids in the peer
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	lines    chan string
	finished chan struct{}
}

func startPeer(t testing.TB, id uint64, opts ...string) *peer {
	t.Helper()
	return startPeerEnv(t, id, nil, opts...)
}

// startPeerEnv is startPeer with more environment for the child (e.g.
// peerAccessEnv).
func startPeerEnv(t testing.TB, id uint64, env []string, opts ...string) *peer {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), env...), peerEnv+"="+strconv.FormatUint(id, 10), peerOptsEnv+"="+strings.Join(opts, ";"),
		// A -race binary sleeps 1 s at exit by default; a peer need not.
		"GORACE=atexit_sleep_ms=0")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &peer{t: t, id: id, cmd: cmd, stdin: stdin, lines: make(chan string, 16), finished: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	go func() { _ = cmd.Wait(); close(p.finished) }()
	t.Cleanup(p.stop)
	ready := p.reply()
	var port uint16
	if _, err := fmt.Sscanf(ready, "READY %d %d %d %d", &port, &p.a, &p.b, &p.c); err != nil {
		t.Fatalf("peer %d: %q", id, ready)
	}
	p.port = port
	return p
}

func (p *peer) reply() string {
	select {
	case l, ok := <-p.lines:
		if !ok {
			p.t.Fatalf("peer %d exited", p.id)
		}
		return l
	case <-time.After(replyWait):
		p.t.Fatalf("peer %d: no reply within %v", p.id, replyWait)
	}
	return ""
}

func (p *peer) ask(format string, args ...any) string {
	if _, err := fmt.Fprintf(p.stdin, format+"\n", args...); err != nil {
		p.t.Fatalf("peer %d: %v", p.id, err)
	}
	return p.reply()
}

// stop ends the peer: EOF on stdin, then a kill if it does not exit soon.
func (p *peer) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGCONT) // a test may have frozen it
	_ = p.stdin.Close()
	select {
	case <-p.finished:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.finished
	}
}

func (p *peer) info() ClusterInfo {
	ip := IPInfo{IP: "127.0.0.1", Port: p.port}
	return ClusterInfo{RemoteClusterID: p.id, RemoteRole: RolePrompt, LocalIPInfos: []IPInfo{{IP: "127.0.0.1"}}, RemoteIPInfos: []IPInfo{ip}}
}

// newDecoder is a DECODER engine closed at the end of the test.
func newDecoder(t *testing.T, id uint64, opts map[string]string) *Engine {
	t.Helper()
	all := map[string]string{"llm.SyncKvCacheWaitTime": "5000"}
	for k, v := range opts {
		all[k] = v
	}
	e, err := NewEngine(RoleDecoder, id, all)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// linkAll links e to every peer and fails the test unless all succeed.
func linkAll(t *testing.T, e *Engine, peers ...*peer) {
	t.Helper()
	var cs []ClusterInfo
	for _, p := range peers {
		cs = append(cs, p.info())
	}
	st, per, err := e.LinkClusters(context.Background(), cs, 5*time.Second)
	if err != nil || st != StatusSuccess {
		t.Fatalf("link: %v %v %v", st, per, err)
	}
}

// waitFor polls cond every 20 ms for at most d.
func waitFor(d time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return cond()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true
}

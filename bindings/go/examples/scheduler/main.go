// Command scheduler is an example decode-side scheduler: one DECODER engine
// links to two prefill engines at once, pulls one request's KV blocks from
// each (in parallel, one goroutine per prefill), checks every byte, and
// reports the per-cluster link statuses and the bandwidth of each pull.
//
// The two prefill engines are this program again, started as child
// processes (SCHEDULER_PREFILL=<cluster id>): each listens on a port the
// kernel picks on 127.0.0.1, allocates its KV cache through the library,
// fills it with a pattern and prints its port.
//
//	go run ./examples/scheduler [-transport auto|tcp|shm] [-blocks 24]
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	llmlink "github.com/llmlink/llmlink/bindings/go"
)

const (
	prefillEnv = "SCHEDULER_PREFILL"
	decoderID  = 100
	modelID    = 0
	cacheBlks  = 64 // blocks in every cache
)

var prefillIDs = []uint64{1, 2}

// kvDesc: 8 layers x K/V, each tensor 64 blocks of 16 tokens x 8 heads x 64
// dims of fp16 (16 KiB a block).
func kvDesc() llmlink.CacheDesc {
	return llmlink.CacheDesc{NumTensors: 16, DataType: llmlink.DTFloat16, Placement: llmlink.PlacementHost,
		Shape: []int64{cacheBlks, 16, 8, 64}}
}

func blockBytes() int { return int(kvDesc().TensorBytes() / cacheBlks) }

func word(cluster uint64, tensor, block, w int) uint64 {
	return cluster<<48 ^ uint64(tensor)<<32 ^ uint64(block)<<20 ^ uint64(w)
}

func main() {
	if id := os.Getenv(prefillEnv); id != "" {
		os.Exit(runPrefill(id, os.Stdin, os.Stdout))
	}
	transport := flag.String("transport", "auto", "llmlink.Transport of every engine")
	blocks := flag.Int("blocks", 24, "blocks of the request on each prefill (1..32)")
	flag.Parse()
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "scheduler:", err)
		os.Exit(1)
	}
	if err := run(context.Background(), self, *transport, *blocks, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "scheduler:", err)
		os.Exit(1)
	}
}

// runPrefill is a prefill node: serve until stdin closes.
func runPrefill(idText string, in io.Reader, out io.Writer) int {
	id, err := strconv.ParseUint(idText, 10, 64)
	if err != nil {
		fmt.Fprintln(out, "ERR", err)
		return 1
	}
	e, err := llmlink.NewEngine(llmlink.RolePrompt, id, map[string]string{
		"llm.listenIpInfo":        "127.0.0.1:0",
		"llm.SyncKvCacheWaitTime": "10000",
		"llmlink.Transport":       os.Getenv("SCHEDULER_TRANSPORT"),
	})
	if err != nil {
		fmt.Fprintln(out, "ERR", err)
		return 1
	}
	defer e.Close()
	key := llmlink.NewBlocksCacheKey(id, modelID)
	cache, err := e.AllocateBlocksCache(kvDesc(), &key)
	if err != nil {
		fmt.Fprintln(out, "ERR", err)
		return 1
	}
	bb := blockBytes()
	for t := 0; t < int(cache.Desc.NumTensors); t++ {
		buf := cache.Tensor(t) // the library's memory itself
		for b := 0; b < cacheBlks; b++ {
			for w := 0; w < bb/8; w++ {
				binary.LittleEndian.PutUint64(buf[b*bb+w*8:], word(id, t, b, w))
			}
		}
	}
	port, err := e.ListenPort(0)
	if err != nil {
		fmt.Fprintln(out, "ERR", err)
		return 1
	}
	fmt.Fprintln(out, "PORT", port)
	_, _ = io.Copy(io.Discard, in) // until the scheduler closes our stdin
	return 0
}

type prefill struct {
	id   uint64
	port uint16
	cmd  *exec.Cmd
	in   io.WriteCloser
}

func startPrefill(self string, id uint64, transport string) (*prefill, error) {
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), prefillEnv+"="+strconv.FormatUint(id, 10), "SCHEDULER_TRANSPORT="+transport,
		"GORACE=atexit_sleep_ms=0") // no 1 s exit pause when built with -race (the test)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &prefill{id: id, cmd: cmd, in: in}
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(outPipe).ReadString('\n')
		line <- strings.TrimSpace(l)
	}()
	select {
	case l := <-line:
		if _, err := fmt.Sscanf(l, "PORT %d", &p.port); err != nil {
			p.stop()
			return nil, fmt.Errorf("prefill %d: %q", id, l)
		}
	case <-time.After(20 * time.Second):
		p.stop()
		return nil, fmt.Errorf("prefill %d did not start", id)
	}
	return p, nil
}

func (p *prefill) stop() {
	_ = p.in.Close()
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// run is the scheduler: self is the program to start the prefills with.
func run(ctx context.Context, self, transport string, nblocks int, out io.Writer) error {
	if nblocks < 1 || nblocks > cacheBlks/2 {
		return fmt.Errorf("-blocks %d: want 1..%d", nblocks, cacheBlks/2)
	}
	var prefills []*prefill
	defer func() {
		for _, p := range prefills {
			p.stop()
		}
	}()
	for _, id := range prefillIDs {
		p, err := startPrefill(self, id, transport)
		if err != nil {
			return err
		}
		prefills = append(prefills, p)
	}

	d, err := llmlink.NewEngine(llmlink.RoleDecoder, decoderID, map[string]string{
		"llm.SyncKvCacheWaitTime": "10000",
		"llmlink.Transport":       transport,
	})
	if err != nil {
		return err
	}
	defer d.Close()

	// Link to both prefills in one call.
	var clusters []llmlink.ClusterInfo
	for _, p := range prefills {
		ip := llmlink.IPInfo{IP: "127.0.0.1", Port: p.port}
		clusters = append(clusters, llmlink.ClusterInfo{RemoteClusterID: p.id, RemoteRole: llmlink.RolePrompt,
			LocalIPInfos: []llmlink.IPInfo{{IP: "127.0.0.1"}}, RemoteIPInfos: []llmlink.IPInfo{ip}})
	}
	start := time.Now()
	st, per, err := d.LinkClusters(ctx, clusters, 5*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "link_clusters: %v in %v\n", st, time.Since(start).Round(time.Microsecond))
	for i, c := range clusters {
		fmt.Fprintf(out, "  cluster %d at 127.0.0.1:%d: %v\n", c.RemoteClusterID, prefills[i].port, per[i])
	}
	if st != llmlink.StatusSuccess {
		return fmt.Errorf("not every prefill linked")
	}

	dst, err := d.AllocateBlocksCache(kvDesc(), nil)
	if err != nil {
		return err
	}
	// The request's blocks on each prefill (random, distinct) go to a
	// half of the decoder's cache of their own.
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	type pull struct {
		src, dst []uint64
		took     time.Duration
		err      error
	}
	pulls := make([]pull, len(prefills))
	for i := range prefills {
		perm := rng.Perm(cacheBlks)[:nblocks]
		for j, b := range perm {
			pulls[i].src = append(pulls[i].src, uint64(b))
			pulls[i].dst = append(pulls[i].dst, uint64(i*cacheBlks/2+j))
		}
	}
	// Twice: the first pull also pays for first touches of the pages and
	// the transport's setup, the second shows the steady state.
	bb := blockBytes()
	for _, label := range []string{"first", "again"} {
		// Wipe the destination so that each round's check proves its own pull.
		for t := 0; t < int(dst.Desc.NumTensors); t++ {
			buf := dst.Tensor(t)
			for j := range buf {
				buf[j] = 0
			}
		}
		var wg sync.WaitGroup
		for i, p := range prefills {
			wg.Add(1)
			go func(i int, p *prefill) {
				defer wg.Done()
				t0 := time.Now()
				pulls[i].err = d.PullBlocks(ctx, llmlink.NewBlocksCacheKey(p.id, modelID), dst.ID, pulls[i].src, pulls[i].dst, nil)
				pulls[i].took = time.Since(t0)
			}(i, p)
		}
		wg.Wait()
		for i, p := range prefills {
			if pulls[i].err != nil {
				return fmt.Errorf("pull from cluster %d: %w", p.id, pulls[i].err)
			}
			if err := verify(dst, p.id, pulls[i].src, pulls[i].dst); err != nil {
				return err
			}
			bytes := float64(nblocks * bb * int(dst.Desc.NumTensors))
			fmt.Fprintf(out, "pull_blocks from cluster %d (%s): %d blocks x %d tensors, %.1f MiB in %v: %.2f GiB/s, every byte checked\n",
				p.id, label, nblocks, dst.Desc.NumTensors, bytes/(1<<20), pulls[i].took.Round(time.Microsecond),
				bytes/pulls[i].took.Seconds()/(1<<30))
		}
	}
	xs, err := d.XferStats()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "transfers=%d bytes=%d tcp_requests=%d shm_requests=%d\n", xs.Transfers, xs.BytesRequested, xs.TCPRequests, xs.SHMRequests)

	st, per, err = d.UnlinkClusters(ctx, clusters, 5*time.Second, false)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "unlink_clusters: %v %v\n", st, per)
	if st != llmlink.StatusSuccess {
		return fmt.Errorf("unlink failed")
	}
	return nil
}

// verify checks that dst block dstBlocks[i] holds prefill id's block
// srcBlocks[i] in every tensor.
func verify(dst *llmlink.Cache, id uint64, srcBlocks, dstBlocks []uint64) error {
	bb := blockBytes()
	for t := 0; t < int(dst.Desc.NumTensors); t++ {
		buf := dst.Tensor(t)
		for i, b := range dstBlocks {
			blk := buf[int(b)*bb : (int(b)+1)*bb]
			for w := 0; w < bb/8; w++ {
				if got, want := binary.LittleEndian.Uint64(blk[w*8:]), word(id, t, int(srcBlocks[i]), w); got != want {
					return fmt.Errorf("cluster %d tensor %d: block %d -> %d word %d is %#x, want %#x",
						id, t, srcBlocks[i], b, w, got, want)
				}
			}
		}
	}
	return nil
}

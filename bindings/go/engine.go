//go:build cgo

package llmlink

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Role is an llmlink_role_t (llm_datadist's LLMRole).
type Role uint32

const (
	RolePrompt  Role = C.LLMLINK_ROLE_PROMPT  // prefill: the server, accepts links
	RoleDecoder Role = C.LLMLINK_ROLE_DECODER // decode: the client, initiates links
	RoleMix     Role = C.LLMLINK_ROLE_MIX     // both
)

func (r Role) String() string {
	switch r {
	case RolePrompt:
		return "PROMPT"
	case RoleDecoder:
		return "DECODER"
	case RoleMix:
		return "MIX"
	case 0:
		return "ANY"
	}
	return fmt.Sprintf("Role(%d)", uint32(r))
}

// Engine is one llmlink engine (llm_datadist's LLMDataDist). It is safe for
// many goroutines at once. Close it when done; an engine that is dropped
// unclosed is closed by a finalizer, which is late and unordered, so do not
// rely on it.
type Engine struct {
	role      Role
	clusterID uint64

	mu        sync.Mutex
	h         *C.llmlink_t // nil once destroyed
	closing   bool
	calls     sync.WaitGroup // C calls under way, background ones included
	inflight  atomic.Int64   // the same count, readable (tests)
	destroyed chan struct{}

	async  *asyncCore // transfers in flight, the dispatcher, notifications
	waitMs int32      // llm.SyncKvCacheWaitTime: Notify's limit without a ctx deadline
}

// NewEngine creates an engine and starts it with options (llmlink_create +
// llmlink_init). The keys are those of llmlink_init in ffi/llmlink.h
// ("llm.listenIpInfo", "llm.SyncKvCacheWaitTime", "llmlink.Transport", ...);
// keys this package does not know are passed on as they are, and the C
// side refuses unknown ones with StatusParamInvalid naming the key.
func NewEngine(role Role, clusterID uint64, options map[string]string) (*Engine, error) {
	const op = "NewEngine"
	if err := checkLibraryVersion(op); err != nil {
		return nil, err
	}
	var a cArena
	defer a.free()
	// Sorted, so the C side sees the same order on every run.
	keys := make([]string, 0, len(options))
	for k := range options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var copts *C.llmlink_option_t
	if len(keys) > 0 {
		copts = (*C.llmlink_option_t)(a.alloc(unsafe.Sizeof(C.llmlink_option_t{}) * uintptr(len(keys))))
		list := unsafe.Slice(copts, len(keys))
		for i, k := range keys {
			ck, ok1 := a.cstring(k)
			cv, ok2 := a.cstring(options[k])
			if !ok1 || !ok2 {
				return nil, newError(op, StatusParamInvalid, "option %q: key or value holds a NUL byte", k)
			}
			list[i].key, list[i].value = ck, cv
		}
	}

	var ce C.gollk_err_t
	var h *C.llmlink_t
	if C.gollk_create(&h, C.llmlink_role_t(role), C.uint64_t(clusterID), &ce) != C.LLMLINK_SUCCESS {
		return nil, cError(op, &ce)
	}
	if C.gollk_init(h, copts, C.size_t(len(keys)), &ce) != C.LLMLINK_SUCCESS {
		C.llmlink_destroy(h)
		return nil, cError(op, &ce)
	}
	e := &Engine{role: role, clusterID: clusterID, h: h, destroyed: make(chan struct{}),
		async:  newAsyncCore(h, optionInt(options, "llmlink.NotifyQueueDepth", defaultNotifyQueueDepth)),
		waitMs: int32(optionInt(options, "llm.SyncKvCacheWaitTime", defaultSyncWaitMs))}
	runtime.SetFinalizer(e, (*Engine).finalize)
	return e, nil
}

// The C defaults of the options the Go side reads (docs/options.md).
const (
	defaultNotifyQueueDepth = 1024
	defaultSyncWaitMs       = 1000
)

// optionInt reads an integer option as llmlink_init accepted it (it
// refuses values out of range, so only a missing key takes def).
func optionInt(options map[string]string, key string, def int) int {
	v, err := strconv.Atoi(strings.TrimSpace(options[key]))
	if err != nil || v < 1 {
		return def
	}
	return v
}

// cError turns the C side's status and message into an *Error.
func cError(op string, ce *C.gollk_err_t) *Error {
	return &Error{Status: Status(ce.status), Op: op, Msg: C.GoString(&ce.msg[0])}
}

// enter starts one C call: it fails once Close has begun, and otherwise
// counts the call so that Close waits for it. leave ends it.
func (e *Engine) enter(op string) (*C.llmlink_t, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closing {
		return nil, newError(op, StatusEngineFinalized, "the engine is closed")
	}
	e.calls.Add(1)
	e.inflight.Add(1)
	return e.h, nil
}

func (e *Engine) leave() {
	e.inflight.Add(-1)
	e.calls.Done()
}

// running counts the calls under way (tests).
func (e *Engine) running() int64 { return e.inflight.Load() }

// blocking runs a C call under ctx (see blockingCall): enter, the call, and
// leave plus the arena's release once the call has returned, wherever it
// runs. A context that is already done makes no C call.
func (e *Engine) blocking(ctx context.Context, op string, a *cArena, b blockingCall) error {
	if ctx == nil {
		a.free()
		return newError(op, StatusParamInvalid, "nil context")
	}
	if err := ctx.Err(); err != nil {
		a.free()
		return ctxError(op, err)
	}
	if _, err := e.enter(op); err != nil {
		a.free()
		return err
	}
	b.final = func() {
		a.free()
		e.leave()
	}
	if err := b.run(ctx); err != nil {
		return ctxError(op, err)
	}
	return nil
}

// Close stops the engine and frees it (llmlink_finalize + destroy): every
// link is closed, peers notice at once. Calls still running, including
// ones a cancelled context left in the background, are waited for first
// (each ends within its own timeout); calls made after Close fail with
// StatusEngineFinalized. Asynchronous transfers still in flight are
// cancelled (fenced) and released: their Wait returns their final status
// (ErrCancelled, ...). The Notifications channel is closed. Close is
// idempotent and safe to call from many
// goroutines; every caller returns once the engine is gone.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		<-e.destroyed
		return nil
	}
	e.closing = true
	e.mu.Unlock()
	runtime.SetFinalizer(e, nil)

	e.calls.Wait()
	// Transfers still in flight are cancelled (fenced) and released, as
	// llmlink_finalize would; their Transfers keep the final status. Then
	// the dispatcher stops, before the C engine it polls goes.
	e.async.releaseAll()
	e.async.stop()
	e.mu.Lock()
	h := e.h
	e.h = nil
	e.mu.Unlock()
	C.llmlink_destroy(h)
	close(e.destroyed)
	return nil
}

// finalizeHook, when set (tests), learns the cluster id of each engine
// the finalizer closes.
var finalizeHook atomic.Pointer[func(clusterID uint64)]

// finalize runs when an unclosed engine became unreachable. Nothing can be
// running on it then (a running call holds the engine), so Close does not
// wait here.
func (e *Engine) finalize() {
	_ = e.Close()
	if hook := finalizeHook.Load(); hook != nil {
		(*hook)(e.clusterID)
	}
}

// Role is the role the engine was created with.
func (e *Engine) Role() Role { return e.role }

// ClusterID is the id the engine was created with.
func (e *Engine) ClusterID() uint64 { return e.clusterID }

// ListenPort is the port of listen address number index (in the order of
// llm.listenIpInfo): the one the kernel chose when port 0 was asked for.
func (e *Engine) ListenPort(index int) (uint16, error) {
	const op = "ListenPort"
	if index < 0 {
		return 0, newError(op, StatusParamInvalid, "index %d is negative", index)
	}
	h, err := e.enter(op)
	if err != nil {
		return 0, err
	}
	defer e.leave()
	var port C.uint16_t
	var ce C.gollk_err_t
	if C.gollk_get_listen_port(h, C.size_t(index), &port, &ce) != C.LLMLINK_SUCCESS {
		return 0, cError(op, &ce)
	}
	return uint16(port), nil
}

// Stats are the link counters of an engine (llmlink_stats_t).
type Stats struct {
	Links, InboundLinks, OutboundLinks      uint32
	HandshakesInProgress, HandshakesPeak    uint32
	HandshakesAccepted, HandshakesCompleted uint64
	HandshakesRejected, HandshakesTimedOut  uint64
	ProtocolErrors, LinksLost               uint64
}

// Stats reads the engine's link counters.
func (e *Engine) Stats() (Stats, error) {
	const op = "Stats"
	h, err := e.enter(op)
	if err != nil {
		return Stats{}, err
	}
	defer e.leave()
	var s C.llmlink_stats_t
	var ce C.gollk_err_t
	if C.gollk_get_stats(h, &s, &ce) != C.LLMLINK_SUCCESS {
		return Stats{}, cError(op, &ce)
	}
	return Stats{
		Links: uint32(s.links), InboundLinks: uint32(s.inbound_links),
		OutboundLinks: uint32(s.outbound_links), HandshakesInProgress: uint32(s.handshakes_in_progress),
		HandshakesPeak: uint32(s.handshakes_peak), HandshakesAccepted: uint64(s.handshakes_accepted),
		HandshakesCompleted: uint64(s.handshakes_completed), HandshakesRejected: uint64(s.handshakes_rejected),
		HandshakesTimedOut: uint64(s.handshakes_timed_out), ProtocolErrors: uint64(s.protocol_errors),
		LinksLost: uint64(s.links_lost),
	}, nil
}

// XferStats are the transfer counters of an engine (llmlink_xfer_stats_t).
type XferStats struct {
	Caches                                                  uint32
	Transfers, TransfersFailed, TransfersTimedOut           uint64
	BytesRequested, BytesServed, RequestsServed             uint64
	RequestsRefused, TCPRequests, SHMRequests, SHMFallbacks uint64
	RDMARequests                                            uint64 // moved with RDMA READ / WRITE
}

// XferStats reads the engine's transfer counters.
func (e *Engine) XferStats() (XferStats, error) {
	const op = "XferStats"
	h, err := e.enter(op)
	if err != nil {
		return XferStats{}, err
	}
	defer e.leave()
	var s C.llmlink_xfer_stats_t
	var ce C.gollk_err_t
	if C.gollk_get_xfer_stats(h, &s, &ce) != C.LLMLINK_SUCCESS {
		return XferStats{}, cError(op, &ce)
	}
	return XferStats{
		Caches: uint32(s.caches), Transfers: uint64(s.transfers),
		TransfersFailed: uint64(s.transfers_failed), TransfersTimedOut: uint64(s.transfers_timed_out),
		BytesRequested: uint64(s.bytes_requested), BytesServed: uint64(s.bytes_served),
		RequestsServed: uint64(s.requests_served), RequestsRefused: uint64(s.requests_refused),
		TCPRequests: uint64(s.tcp_requests), SHMRequests: uint64(s.shm_requests),
		SHMFallbacks: uint64(s.shm_fallbacks), RDMARequests: uint64(s.rdma_requests),
	}, nil
}

// RdmaProtection is how the NIC enforces a link's RDMA grants
// (llmlink_rdma_protection_t). Values are never renumbered.
type RdmaProtection uint32

const (
	// RdmaProtectionNone: the link moves no byte over RDMA.
	RdmaProtectionNone RdmaProtection = C.LLMLINK_RDMA_PROTECTION_NONE
	// RdmaProtectionWindow: each grant is a type-2 memory window bound to
	// the link's QP, read-only for a pull, write-only for a push, covering
	// exactly the granted blocks, invalidated when the request ends.
	RdmaProtectionWindow RdmaProtection = C.LLMLINK_RDMA_PROTECTION_WINDOW
	// RdmaProtectionLinkPD: the device has no type-2 windows; the link has
	// its own protection domain, regions registered read-only or write-only.
	RdmaProtectionLinkPD RdmaProtection = C.LLMLINK_RDMA_PROTECTION_LINK_PD
	// RdmaProtectionRegion: a grant's rkey covers its whole tensor for
	// reading and writing until the cache is unregistered or the link
	// breaks (llmlink <= 0.3).
	RdmaProtectionRegion RdmaProtection = C.LLMLINK_RDMA_PROTECTION_REGION
)

func (p RdmaProtection) String() string {
	switch p {
	case RdmaProtectionNone:
		return "none"
	case RdmaProtectionWindow:
		return "window"
	case RdmaProtectionLinkPD:
		return "link_pd"
	case RdmaProtectionRegion:
		return "region"
	}
	// A value a newer library may add: shown, not hidden.
	return fmt.Sprintf("RdmaProtection(%d)", uint32(p))
}

// LinkStats are the counters of one link as this engine sees it: what the
// peer's requests did to this engine's memory (llmlink_link_stats_t). They
// start at 0 when the link is made and go with it.
type LinkStats struct {
	RdmaProtection RdmaProtection
	// Bytes the peer wrote into this engine's caches: received by tcp, or
	// granted for writing (shm, rdma: counted when granted, since the peer
	// then writes on its own).
	PeerWriteBytes uint64
	PeerReadBytes  uint64 // ... read from them, the same way
	// The peer's requests this engine had admitted that ended unfinished
	// (the link broke, a stall, a timeout): each was fenced.
	RequestsFenced uint64

	// The link's RDMA rails (all 0 / nil on a link without RDMA): how many
	// it has (at most MaxRDMARails), and how many are usable now (the
	// others failed and wait to be re-established).
	RDMARails   uint32
	RDMARailsUp uint32
	// Rails that failed under a transfer of this engine whose work went on
	// over the surviving rails (the call still succeeded).
	RDMARailFailovers uint64
	// Failed rails re-established (a fresh QP pair) without relinking.
	RDMARailRepairs uint64
	// Per rail, RDMARails of each: the bytes this engine's requests moved
	// over it (READ and WRITE payload, counted when the work completed),
	// and its path MTU in bytes (the smaller of both ends' active MTUs,
	// capped by llmlink.RdmaMtu).
	RDMARailBytes []uint64
	RDMARailMTU   []uint32
}

// MaxRDMARails is the most RDMA rails a link has (LLMLINK_MAX_RDMA_RAILS).
const MaxRDMARails = C.LLMLINK_MAX_RDMA_RAILS

// LinkStats reads the counters of the engine's link with cluster
// clusterID (either direction): StatusNotYetLink (ErrNotYetLink) when
// there is none or it is unusable.
func (e *Engine) LinkStats(clusterID uint64) (LinkStats, error) {
	const op = "LinkStats"
	h, err := e.enter(op)
	if err != nil {
		return LinkStats{}, err
	}
	defer e.leave()
	var s C.llmlink_link_stats_t
	var ce C.gollk_err_t
	if C.gollk_get_link_stats(h, C.uint64_t(clusterID), &s, &ce) != C.LLMLINK_SUCCESS {
		return LinkStats{}, cError(op, &ce)
	}
	ls := LinkStats{
		RdmaProtection: RdmaProtection(s.rdma_protection),
		PeerWriteBytes: uint64(s.peer_write_bytes), PeerReadBytes: uint64(s.peer_read_bytes),
		RequestsFenced: uint64(s.requests_fenced),
		RDMARailsUp:    uint32(s.rdma_rails_up), RDMARailFailovers: uint64(s.rdma_rail_failovers),
		RDMARailRepairs: uint64(s.rdma_rail_repairs),
	}
	ls.RDMARails, ls.RDMARailBytes, ls.RDMARailMTU = railSlices(s.rdma_rails, s.rdma_rail_bytes[:], s.rdma_rail_mtu[:])
	return ls, nil
}

// railSlices is a C struct's per-rail arrays as slices of n items (nil when
// n is 0). The library never reports more rails than the arrays hold; the
// bound keeps a bad count from indexing past them.
func railSlices(n C.uint32_t, bytes []C.uint64_t, mtu []C.uint32_t) (uint32, []uint64, []uint32) {
	k := int(n)
	if k > len(bytes) {
		k = len(bytes)
	}
	if k > len(mtu) {
		k = len(mtu)
	}
	var b []uint64
	var m []uint32
	for i := 0; i < k; i++ {
		b = append(b, uint64(bytes[i]))
		m = append(m, uint32(mtu[i]))
	}
	return uint32(k), b, m
}

//go:build cgo

package llmlink

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"runtime"
	"time"
	"unsafe"
)

// MaxClustersPerCall is how many clusters one LinkClusters or
// UnlinkClusters call takes at most.
const MaxClustersPerCall = C.LLMLINK_MAX_CLUSTERS_PER_CALL

// IPInfo is one address: an IPv4 or IPv6 literal and a port.
type IPInfo struct {
	IP   string
	Port uint16
}

// ClusterInfo names a remote cluster and where it listens (llm_datadist's
// LLMClusterInfo).
type ClusterInfo struct {
	RemoteClusterID uint64
	// RemoteRole is the role the remote engine must have; 0 accepts any.
	RemoteRole Role
	// LocalIPInfos are the local interfaces to use, one per NIC (may be
	// empty); their ports are advisory.
	LocalIPInfos []IPInfo
	// RemoteIPInfos are where the remote engine listens, tried in order.
	RemoteIPInfos []IPInfo
}

// cClusters builds the C form of clusters in a's memory (cluster infos
// point at ip arrays and strings, which Go memory may not do for C).
func cClusters(op string, a *cArena, clusters []ClusterInfo) (*C.llmlink_cluster_info_t, error) {
	if len(clusters) == 0 {
		return nil, nil
	}
	first := (*C.llmlink_cluster_info_t)(a.alloc(unsafe.Sizeof(C.llmlink_cluster_info_t{}) * uintptr(len(clusters))))
	list := unsafe.Slice(first, len(clusters))
	for i, c := range clusters {
		list[i].remote_cluster_id = C.uint64_t(c.RemoteClusterID)
		list[i].remote_role = C.llmlink_role_t(c.RemoteRole)
		var err error
		if list[i].local_ip_infos, err = cIPInfos(op, a, c.LocalIPInfos); err != nil {
			return nil, err
		}
		list[i].num_local_ip_infos = C.size_t(len(c.LocalIPInfos))
		if list[i].remote_ip_infos, err = cIPInfos(op, a, c.RemoteIPInfos); err != nil {
			return nil, err
		}
		list[i].num_remote_ip_infos = C.size_t(len(c.RemoteIPInfos))
	}
	return first, nil
}

func cIPInfos(op string, a *cArena, ips []IPInfo) (*C.llmlink_ip_info_t, error) {
	if len(ips) == 0 {
		return nil, nil
	}
	first := (*C.llmlink_ip_info_t)(a.alloc(unsafe.Sizeof(C.llmlink_ip_info_t{}) * uintptr(len(ips))))
	list := unsafe.Slice(first, len(ips))
	for i, ip := range ips {
		s, ok := a.cstring(ip.IP)
		if !ok {
			return nil, newError(op, StatusParamInvalid, "ip %q holds a NUL byte", ip.IP)
		}
		list[i].ip, list[i].port = s, C.uint16_t(ip.Port)
	}
	return first, nil
}

// statusSlice converts the C per-cluster statuses.
func statusSlice(cs []C.llmlink_status_t) []Status {
	out := make([]Status, len(cs))
	for i, s := range cs {
		out[i] = Status(s)
	}
	return out
}

// LinkClusters links this engine (DECODER or MIX) to up to 16 clusters in
// parallel within timeout (llmlink_link_clusters).
//
// The link outcome is the returned status (StatusSuccess when every
// cluster linked, StatusLinkFailed when some did not: those that did stay
// linked) and the per-cluster statuses, in the order of clusters; err is
// nil for both. err is non-nil only when the call itself was refused (bad
// arguments: StatusParamInvalid; more than 16 clusters:
// StatusClusterNumExceedLimit; a PROMPT engine: StatusRoleNotAllowed; a
// closed engine: StatusEngineFinalized), and the statuses are then all the
// refusal's status.
//
// ctx: a deadline earlier than timeout cuts the timeout to it (clusters not
// linked by then get StatusTimeout, as with a short timeout). Cancelling
// ctx returns ctx's error at once with no statuses; the C call finishes in
// the background, and every cluster it linked is then unlinked again, so a
// cancelled call leaves no link of its own behind (clusters that were
// already linked before it stay linked).
func (e *Engine) LinkClusters(ctx context.Context, clusters []ClusterInfo, timeout time.Duration) (Status, []Status, error) {
	const op = "LinkClusters"
	var a cArena
	cc, err := cClusters(op, &a, clusters)
	if err != nil {
		a.free()
		return StatusParamInvalid, fill(len(clusters), StatusParamInvalid), err
	}
	ms, clamped := timeoutMs(ctxOrBackground(ctx), timeout)
	statuses := make([]C.llmlink_status_t, len(clusters))
	var st C.llmlink_status_t
	var ce C.gollk_err_t
	var h *C.llmlink_t
	err = e.blocking(ctx, op, &a, blockingCall{
		call: func() {
			h = e.handle()
			st = C.gollk_link(h, cc, C.size_t(len(clusters)), C.int32_t(ms), statusPtr(statuses), &ce)
			runtime.KeepAlive(statuses)
		},
		abandoned: func() {
			// Nobody will see these links: undo them.
			unlinkLinked(h, &a, cc, statuses, ms)
		},
		waitOnDeadline: clamped,
	})
	if err != nil {
		return failedStatus(err), nil, err
	}
	out := statusSlice(statuses)
	if st == C.LLMLINK_SUCCESS || st == C.LLMLINK_LINK_FAILED {
		return Status(st), out, nil
	}
	return Status(st), out, cError(op, &ce)
}

// unlinkLinked unlinks (telling the peer) the clusters of cc whose status
// is SUCCESS: the ones a cancelled LinkClusters linked itself.
func unlinkLinked(h *C.llmlink_t, a *cArena, cc *C.llmlink_cluster_info_t, statuses []C.llmlink_status_t, ms int32) {
	if cc == nil {
		return
	}
	all := unsafe.Slice(cc, len(statuses))
	var linked []int
	for i, s := range statuses {
		if s == C.LLMLINK_SUCCESS {
			linked = append(linked, i)
		}
	}
	if len(linked) == 0 {
		return
	}
	first := (*C.llmlink_cluster_info_t)(a.alloc(unsafe.Sizeof(C.llmlink_cluster_info_t{}) * uintptr(len(linked))))
	sub := unsafe.Slice(first, len(linked))
	for j, i := range linked {
		sub[j] = all[i]
	}
	if ms <= 0 || ms > 5000 {
		ms = 5000
	}
	var ce C.gollk_err_t
	C.gollk_unlink(h, first, C.size_t(len(linked)), C.int32_t(ms), 0, nil, &ce)
}

// UnlinkClusters unlinks up to 16 clusters (llmlink_unlink_clusters).
// force=false tells each peer and waits (within timeout) for its answer, so
// both ends are freed; force=true frees the local end at once.
//
// The outcome is the status (StatusSuccess or StatusUnlinkFailed) and the
// per-cluster statuses (StatusSuccess, StatusNotYetLink,
// StatusProcessingLink, StatusNotifyPromptUnlinkFailed, StatusUnlinkFailed);
// err is non-nil only for a refused call, as for LinkClusters.
//
// ctx: a deadline cuts the timeout as for LinkClusters. Cancelling ctx
// returns ctx's error at once; the unlink still completes in the background
// (an unlink cannot be undone).
func (e *Engine) UnlinkClusters(ctx context.Context, clusters []ClusterInfo, timeout time.Duration, force bool) (Status, []Status, error) {
	const op = "UnlinkClusters"
	var a cArena
	cc, err := cClusters(op, &a, clusters)
	if err != nil {
		a.free()
		return StatusParamInvalid, fill(len(clusters), StatusParamInvalid), err
	}
	ms, clamped := timeoutMs(ctxOrBackground(ctx), timeout)
	cforce := C.int(0)
	if force {
		cforce = 1
	}
	statuses := make([]C.llmlink_status_t, len(clusters))
	var st C.llmlink_status_t
	var ce C.gollk_err_t
	err = e.blocking(ctx, op, &a, blockingCall{
		call: func() {
			st = C.gollk_unlink(e.handle(), cc, C.size_t(len(clusters)), C.int32_t(ms), cforce,
				statusPtr(statuses), &ce)
			runtime.KeepAlive(statuses)
		},
		waitOnDeadline: clamped,
	})
	if err != nil {
		return failedStatus(err), nil, err
	}
	out := statusSlice(statuses)
	if st == C.LLMLINK_SUCCESS || st == C.LLMLINK_UNLINK_FAILED {
		return Status(st), out, nil
	}
	return Status(st), out, cError(op, &ce)
}

// CheckLinkStatus reports whether a live link with remoteClusterID exists,
// in either direction: StatusSuccess, or StatusNotYetLink (err nil for
// both). err is non-nil when the engine cannot answer (closed:
// StatusEngineFinalized). It does not block.
func (e *Engine) CheckLinkStatus(remoteClusterID uint64) (Status, error) {
	const op = "CheckLinkStatus"
	h, err := e.enter(op)
	if err != nil {
		return StatusEngineFinalized, err
	}
	defer e.leave()
	var ce C.gollk_err_t
	st := C.gollk_check(h, C.uint64_t(remoteClusterID), &ce)
	if st == C.LLMLINK_SUCCESS || st == C.LLMLINK_NOT_YET_LINK {
		return Status(st), nil
	}
	return Status(st), cError(op, &ce)
}

// handle is the C engine of a call that entered: valid until it leaves.
func (e *Engine) handle() *C.llmlink_t {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.h
}

func statusPtr(s []C.llmlink_status_t) *C.llmlink_status_t {
	if len(s) == 0 {
		return nil
	}
	return &s[0]
}

func fill(n int, s Status) []Status {
	out := make([]Status, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// failedStatus is the status that goes with an error the Go side made.
func failedStatus(err error) Status {
	if e, ok := err.(*Error); ok {
		return e.Status
	}
	return StatusFailed
}

func ctxOrBackground(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	return ctx
}

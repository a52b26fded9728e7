//go:build cgo

package llmlink

/*
#include "shim.h"

static inline llmlink_status_t gollk_get_metrics(llmlink_t *dd, llmlink_metrics_t *m,
                                                 gollk_err_t *err)
{
    m->version = LLMLINK_METRICS_VERSION;
    return gollk_done(llmlink_get_metrics(dd, m), err);
}

static inline llmlink_status_t gollk_get_links(llmlink_t *dd, llmlink_link_info_t *out,
                                               size_t max, size_t *count, gollk_err_t *err)
{
    if (max)
        out[0].version = LLMLINK_LINK_INFO_VERSION;
    return gollk_done(llmlink_get_links(dd, out, max, count), err);
}

// C's 3-dimensional array, read element by element (cgo maps it, but
// indexing it from Go needs these sizes anyway).
static inline uint64_t gollk_metrics_transfers(const llmlink_metrics_t *m, unsigned d,
                                               unsigned t, unsigned r)
{
    return m->transfers[d][t][r];
}
*/
import "C"

// LabelKind names which enum a metrics label belongs to (llmlink_metrics_label_kind_t).
type LabelKind uint32

const (
	LabelDirection    LabelKind = C.LLMLINK_LABEL_DIR           // "pull", "push"
	LabelTransport    LabelKind = C.LLMLINK_LABEL_TRANSPORT     // "none", "tcp", "shm", "rdma"
	LabelResult       LabelKind = C.LLMLINK_LABEL_RESULT        // "success", "refused", "failed", ...
	LabelLinkSide     LabelKind = C.LLMLINK_LABEL_LINK_DIR      // "outbound", "inbound"
	LabelCloseReason  LabelKind = C.LLMLINK_LABEL_CLOSE_REASON  // "other", "unlinked", ...
	LabelRefuseReason LabelKind = C.LLMLINK_LABEL_REFUSE_REASON // "other", "auth", "access", ...
)

// MetricsLabel is the label text of value of kind ("" past the enum's last
// value): the text docs/metrics.md and the Prometheus renderings use.
func MetricsLabel(kind LabelKind, value uint32) string {
	p := C.llmlink_metrics_label(C.llmlink_metrics_label_kind_t(kind), C.uint32_t(value))
	if p == nil {
		return ""
	}
	return C.GoString(p)
}

// MetricsLabels lists kind's label texts in value order: values 0.. while
// the library names them, so a newer library's values appear unchanged.
func MetricsLabels(kind LabelKind) []string {
	var out []string
	for v := uint32(0); ; v++ {
		l := MetricsLabel(kind, v)
		if l == "" {
			return out
		}
		out = append(out, l)
	}
}

// BucketBoundsSeconds are the upper bounds of the latency buckets:
// 8 us x 2^i, i = 0..23.
func BucketBoundsSeconds() []float64 {
	out := make([]float64, C.LLMLINK_METRICS_BUCKETS)
	for i := range out {
		out[i] = float64(C.llmlink_metrics_bucket_bound_seconds(C.size_t(i)))
	}
	return out
}

// TransferKey selects a count of Metrics.Transfers (label texts).
type TransferKey struct{ Direction, Transport, Status string }

// BytesKey selects a count of Metrics.Bytes (label texts).
type BytesKey struct{ Direction, Transport string }

// Latency is one direction's duration histogram: Buckets per bound of
// BucketBoundsSeconds (NOT cumulative), Count every counted call (those
// over the last bound are only here), SumSeconds their total duration.
type Latency struct {
	Buckets    []uint64
	Count      uint64
	SumSeconds float64
}

// Metrics is one snapshot of an engine's operator counters
// (llmlink_metrics_t; docs/metrics.md says what each means). Every array of
// the C struct is a map keyed by label text, with every value the library
// names (zero or not).
type Metrics struct {
	LinksUp            uint32            // established links now (a gauge)
	LinksEstablished   map[string]uint64 // by side: "outbound", "inbound"
	LinksClosed        map[string]uint64 // by close reason
	HandshakesOK       uint64
	HandshakesRefused  map[string]uint64 // by refuse reason
	HandshakesTimedOut uint64
	LinkFailures       map[string]uint64 // by refuse reason
	Transfers          map[TransferKey]uint64
	Bytes              map[BytesKey]uint64
	Latency            map[string]Latency // by direction
	RequestsServed     uint64
	RequestsRefused    uint64
	TasksSubmitted     uint64
	TasksCancelled     uint64
	NotifiesSent       uint64
	NotifiesReceived   uint64
	NotifiesRefused    uint64 // notifies_refused_full
	ProtocolErrors     uint64
}

func byLabel(kind LabelKind, v []C.uint64_t) map[string]uint64 {
	out := map[string]uint64{}
	for i, l := range MetricsLabels(kind) {
		out[l] = uint64(v[i])
	}
	return out
}

// Metrics reads a snapshot of the engine's counters (llmlink_get_metrics).
func (e *Engine) Metrics() (Metrics, error) {
	const op = "Metrics"
	h, err := e.enter(op)
	if err != nil {
		return Metrics{}, err
	}
	defer e.leave()
	var m C.llmlink_metrics_t
	var ce C.gollk_err_t
	if C.gollk_get_metrics(h, &m, &ce) != C.LLMLINK_SUCCESS {
		return Metrics{}, cError(op, &ce)
	}
	out := Metrics{
		LinksUp:            uint32(m.links_up),
		LinksEstablished:   byLabel(LabelLinkSide, m.links_established[:]),
		LinksClosed:        byLabel(LabelCloseReason, m.links_closed[:]),
		HandshakesOK:       uint64(m.handshakes_ok),
		HandshakesRefused:  byLabel(LabelRefuseReason, m.handshakes_refused[:]),
		HandshakesTimedOut: uint64(m.handshakes_timed_out),
		LinkFailures:       byLabel(LabelRefuseReason, m.link_failures[:]),
		Transfers:          map[TransferKey]uint64{},
		Bytes:              map[BytesKey]uint64{},
		Latency:            map[string]Latency{},
		RequestsServed:     uint64(m.requests_served),
		RequestsRefused:    uint64(m.requests_refused),
		TasksSubmitted:     uint64(m.tasks_submitted),
		TasksCancelled:     uint64(m.tasks_cancelled),
		NotifiesSent:       uint64(m.notifies_sent),
		NotifiesReceived:   uint64(m.notifies_received),
		NotifiesRefused:    uint64(m.notifies_refused_full),
		ProtocolErrors:     uint64(m.protocol_errors),
	}
	results := MetricsLabels(LabelResult)
	transports := MetricsLabels(LabelTransport)
	for d, dl := range MetricsLabels(LabelDirection) {
		for t, tl := range transports {
			for r, rl := range results {
				out.Transfers[TransferKey{dl, tl, rl}] =
					uint64(C.gollk_metrics_transfers(&m, C.uint(d), C.uint(t), C.uint(r)))
			}
			out.Bytes[BytesKey{dl, tl}] = uint64(m.bytes[d][t])
		}
		lat := Latency{Count: uint64(m.latency_count[d]),
			SumSeconds: float64(m.latency_sum_ns[d]) / 1e9}
		for _, b := range m.latency_buckets[d] {
			lat.Buckets = append(lat.Buckets, uint64(b))
		}
		out.Latency[dl] = lat
	}
	return out, nil
}

// LinkInfo is one live link (llmlink_link_info_t).
type LinkInfo struct {
	Side            string // "outbound" (this engine linked) or "inbound"
	ClusterID       uint64 // the peer's
	Transport       string // what it moves bytes with now: "tcp", "shm", "rdma"
	Streams         uint32 // data streams this engine requests on
	UpSinceMs       int64  // when it was made: Unix time, milliseconds
	BytesPulled     uint64 // payload bytes of this engine's successful pulls over it
	BytesPushed     uint64 // ... and pushes
	TransfersOK     uint64 // this engine's successful calls over it
	TransfersFailed uint64 // its other counted calls
	RdmaProtection  RdmaProtection
	PeerWriteBytes  uint64 // what the peer's requests wrote into this engine's caches
	PeerReadBytes   uint64 // ... and read from them
	RequestsFenced  uint64
	Peer            string // "ip:port" or "[ip6]:port"
	// The link's RDMA rails, as in LinkStats (0 and nil without RDMA).
	RDMARails         uint32
	RDMARailsUp       uint32
	RDMARailFailovers uint64
	RDMARailRepairs   uint64
	RDMARailBytes     []uint64 // per rail, RDMARails items
	RDMARailMTU       []uint32 // per rail, in bytes
}

func labelOr(kind LabelKind, v C.uint32_t) string {
	if l := MetricsLabel(kind, uint32(v)); l != "" {
		return l
	}
	return "unknown"
}

// Links lists the live links (llmlink_get_links): outbound first, each
// side in cluster id order.
func (e *Engine) Links() ([]LinkInfo, error) {
	const op = "Links"
	h, err := e.enter(op)
	if err != nil {
		return nil, err
	}
	defer e.leave()
	// Links come and go between calls: grow to the count the last call
	// gave, a few times, then keep what the last call filled.
	n := 16
	for try := 0; ; try++ {
		buf := make([]C.llmlink_link_info_t, n)
		var count C.size_t
		var ce C.gollk_err_t
		if C.gollk_get_links(h, &buf[0], C.size_t(n), &count, &ce) != C.LLMLINK_SUCCESS {
			return nil, cError(op, &ce)
		}
		if int(count) <= n || try == 7 {
			if int(count) < n {
				n = int(count)
			}
			out := make([]LinkInfo, n)
			for i := range out {
				out[i] = linkInfo(&buf[i])
			}
			return out, nil
		}
		n = int(count) + 16
	}
}

func linkInfo(l *C.llmlink_link_info_t) LinkInfo {
	li := LinkInfo{
		Side: labelOr(LabelLinkSide, l.direction), ClusterID: uint64(l.cluster_id),
		Transport: labelOr(LabelTransport, l.transport), Streams: uint32(l.streams),
		UpSinceMs: int64(l.up_since_ms), BytesPulled: uint64(l.bytes_pulled),
		BytesPushed: uint64(l.bytes_pushed), TransfersOK: uint64(l.transfers_ok),
		TransfersFailed: uint64(l.transfers_failed),
		RdmaProtection:  RdmaProtection(l.rdma_protection),
		PeerWriteBytes:  uint64(l.peer_write_bytes), PeerReadBytes: uint64(l.peer_read_bytes),
		RequestsFenced: uint64(l.requests_fenced),
		Peer:           C.GoStringN(&l.peer[0], C.int(cStrLen(l.peer[:]))),
		RDMARailsUp:    uint32(l.rdma_rails_up), RDMARailFailovers: uint64(l.rdma_rail_failovers),
		RDMARailRepairs: uint64(l.rdma_rail_repairs),
	}
	li.RDMARails, li.RDMARailBytes, li.RDMARailMTU = railSlices(l.rdma_rails, l.rdma_rail_bytes[:], l.rdma_rail_mtu[:])
	return li
}

func cStrLen(s []C.char) int {
	for i, c := range s {
		if c == 0 {
			return i
		}
	}
	return len(s)
}

//go:build cgo

// Package llmlinkprom exports an llmlink engine's operator metrics to
// Prometheus: a prometheus.Collector for client_golang, in its own module so
// that the llmlink package itself keeps no dependency.
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(llmlinkprom.NewCollector(engine))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// Each scrape reads Engine.Metrics and Engine.Links once and yields the
// families of docs/metrics.md with the names, labels and units that
// `llmlink serve --metrics` serves: counters end in _total, bytes in
// _bytes_total, durations are a histogram in seconds with cumulative le
// buckets. Every label value the library names is exported, zero or not, so
// rate() sees a series from its first increment. A closed engine yields
// nothing.
package llmlinkprom

import (
	"strconv"

	llmlink "github.com/llmlink/llmlink/bindings/go"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector collects one engine's metrics.
type Collector struct {
	engine *llmlink.Engine
}

// NewCollector is a collector of engine's metrics.
func NewCollector(engine *llmlink.Engine) *Collector {
	return &Collector{engine: engine}
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var linkIDs = []string{"cluster_id", "side"}

var (
	linksUp            = desc("llmlink_links_up", "Established links now, both directions.")
	linksEstablished   = desc("llmlink_links_established_total", "Links made, by which end made them (side).", "side")
	linksClosed        = desc("llmlink_links_closed_total", "Links ended, by reason.", "reason")
	handshakesOK       = desc("llmlink_handshakes_ok_total", "Inbound handshakes that made a link.")
	handshakesRefused  = desc("llmlink_handshakes_refused_total", "Inbound handshakes and data-stream attaches refused, by reason.", "reason")
	handshakesTimedOut = desc("llmlink_handshakes_timed_out_total", "Inbound connections dropped before their handshake completed.")
	linkFailures       = desc("llmlink_link_failures_total", "Clusters of this engine's link calls that did not link, by reason.", "reason")
	protocolErrors     = desc("llmlink_protocol_errors_total", "Connections dropped for malformed frames.")
	transfers          = desc("llmlink_transfers_total", "This engine's transfer calls, by direction, transport and final status.", "direction", "transport", "status")
	transferBytes      = desc("llmlink_transfer_bytes_total", "Payload bytes of this engine's successful transfers.", "direction", "transport")
	duration           = desc("llmlink_transfer_duration_seconds", "Durations of this engine's transfer calls (any status).", "direction")
	requestsServed     = desc("llmlink_peer_requests_served_total", "Peers' transfer requests this engine served.")
	requestsRefused    = desc("llmlink_peer_requests_refused_total", "Peers' transfer requests this engine refused.")
	tasksSubmitted     = desc("llmlink_tasks_submitted_total", "Asynchronous transfer tasks submitted.")
	tasksCancelled     = desc("llmlink_tasks_cancelled_total", "Tasks that ended cancelled.")
	notifiesSent       = desc("llmlink_notifications_sent_total", "Notifications this engine sent that the peer queued.")
	notifiesReceived   = desc("llmlink_notifications_received_total", "Notifications received and queued here.")
	notifiesRefused    = desc("llmlink_notifications_refused_full_total", "Notifications refused because a queue was full.")

	linkInfo      = desc("llmlink_link_info", "One series per live link: its transport and peer.", append(linkIDs, "transport", "peer")...)
	linkUpSince   = desc("llmlink_link_up_since_seconds", "When each live link was made (Unix time).", linkIDs...)
	linkStreams   = desc("llmlink_link_streams", "Data streams this engine requests on, per link.", linkIDs...)
	linkBytes     = desc("llmlink_link_transfer_bytes_total", "Payload bytes of this engine's successful transfers over each link.", append(linkIDs, "direction")...)
	linkTransfers = desc("llmlink_link_transfers_total", "This engine's transfer calls over each link: success, or any other status (failed).", append(linkIDs, "status")...)
	linkPeerBytes = desc("llmlink_link_peer_bytes_total", "Bytes the peer's requests read from / wrote into this engine's caches.", append(linkIDs, "access")...)
	linkFenced    = desc("llmlink_link_requests_fenced_total", "The peer's admitted requests that ended unfinished (fenced), per link.", linkIDs...)

	// The link's RDMA rails: per link (0 without RDMA), and per rail.
	linkRails         = desc("llmlink_link_rdma_rails", "RDMA rails of each link (0: no RDMA).", linkIDs...)
	linkRailsUp       = desc("llmlink_link_rdma_rails_up", "RDMA rails of each link usable now (the others failed and wait to be re-established).", linkIDs...)
	linkRailFailovers = desc("llmlink_link_rdma_rail_failovers_total", "RDMA rails that failed under a transfer whose work went on over the other rails, per link.", linkIDs...)
	linkRailRepairs   = desc("llmlink_link_rdma_rail_repairs_total", "Failed RDMA rails re-established without relinking, per link.", linkIDs...)
	linkRailBytes     = desc("llmlink_link_rdma_rail_bytes_total", "Bytes this engine's requests moved over each RDMA rail of each link.", append(linkIDs, "rail")...)
	linkRailMTU       = desc("llmlink_link_rdma_rail_mtu_bytes", "Path MTU of each RDMA rail of each link, in bytes.", append(linkIDs, "rail")...)

	all = []*prometheus.Desc{linksUp, linksEstablished, linksClosed, handshakesOK,
		handshakesRefused, handshakesTimedOut, linkFailures, protocolErrors, transfers,
		transferBytes, duration, requestsServed, requestsRefused, tasksSubmitted,
		tasksCancelled, notifiesSent, notifiesReceived, notifiesRefused, linkInfo, linkUpSince,
		linkStreams, linkBytes, linkTransfers, linkPeerBytes, linkFenced, linkRails, linkRailsUp,
		linkRailFailovers, linkRailRepairs, linkRailBytes, linkRailMTU}
)

// Describe sends every family's descriptor.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range all {
		ch <- d
	}
}

// Collect reads the engine's metrics and links once and sends every sample.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	m, err := c.engine.Metrics()
	if err != nil {
		return
	}
	links, err := c.engine.Links()
	if err != nil {
		return
	}
	collectEngine(ch, &m)
	collectTransfers(ch, &m)
	collectLinks(ch, links)
	collectRails(ch, links)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

// byReason sends one sample per label value of kind, in the library's order.
func byReason(ch chan<- prometheus.Metric, d *prometheus.Desc, kind llmlink.LabelKind, v map[string]uint64) {
	for _, l := range llmlink.MetricsLabels(kind) {
		counter(ch, d, v[l], l)
	}
}

func collectEngine(ch chan<- prometheus.Metric, m *llmlink.Metrics) {
	gauge(ch, linksUp, float64(m.LinksUp))
	byReason(ch, linksEstablished, llmlink.LabelLinkSide, m.LinksEstablished)
	byReason(ch, linksClosed, llmlink.LabelCloseReason, m.LinksClosed)
	counter(ch, handshakesOK, m.HandshakesOK)
	byReason(ch, handshakesRefused, llmlink.LabelRefuseReason, m.HandshakesRefused)
	counter(ch, handshakesTimedOut, m.HandshakesTimedOut)
	byReason(ch, linkFailures, llmlink.LabelRefuseReason, m.LinkFailures)
	counter(ch, protocolErrors, m.ProtocolErrors)
	counter(ch, requestsServed, m.RequestsServed)
	counter(ch, requestsRefused, m.RequestsRefused)
	counter(ch, tasksSubmitted, m.TasksSubmitted)
	counter(ch, tasksCancelled, m.TasksCancelled)
	counter(ch, notifiesSent, m.NotifiesSent)
	counter(ch, notifiesReceived, m.NotifiesReceived)
	counter(ch, notifiesRefused, m.NotifiesRefused)
}

func collectTransfers(ch chan<- prometheus.Metric, m *llmlink.Metrics) {
	transports := llmlink.MetricsLabels(llmlink.LabelTransport)
	results := llmlink.MetricsLabels(llmlink.LabelResult)
	bounds := llmlink.BucketBoundsSeconds()
	for _, d := range llmlink.MetricsLabels(llmlink.LabelDirection) {
		for _, t := range transports {
			for _, r := range results {
				counter(ch, transfers, m.Transfers[llmlink.TransferKey{Direction: d, Transport: t, Status: r}], d, t, r)
			}
			counter(ch, transferBytes, m.Bytes[llmlink.BytesKey{Direction: d, Transport: t}], d, t)
		}
		// client_golang wants cumulative buckets; +Inf is the count
		lat := m.Latency[d]
		buckets := make(map[float64]uint64, len(bounds))
		var cum uint64
		for i, b := range bounds {
			if i < len(lat.Buckets) {
				cum += lat.Buckets[i]
			}
			buckets[b] = cum
		}
		ch <- prometheus.MustNewConstHistogram(duration, lat.Count, lat.SumSeconds, buckets, d)
	}
}

func collectLinks(ch chan<- prometheus.Metric, links []llmlink.LinkInfo) {
	for _, l := range links {
		id, side := strconv.FormatUint(l.ClusterID, 10), l.Side
		gauge(ch, linkInfo, 1, id, side, l.Transport, l.Peer)
		gauge(ch, linkUpSince, float64(l.UpSinceMs)/1000, id, side)
		gauge(ch, linkStreams, float64(l.Streams), id, side)
		counter(ch, linkBytes, l.BytesPulled, id, side, "pull")
		counter(ch, linkBytes, l.BytesPushed, id, side, "push")
		counter(ch, linkTransfers, l.TransfersOK, id, side, "success")
		counter(ch, linkTransfers, l.TransfersFailed, id, side, "failed")
		counter(ch, linkPeerBytes, l.PeerReadBytes, id, side, "read")
		counter(ch, linkPeerBytes, l.PeerWriteBytes, id, side, "write")
		counter(ch, linkFenced, l.RequestsFenced, id, side)
	}
}

// collectRails sends each link's RDMA rail samples: the per-link ones for
// every link (0 without RDMA), the per-rail ones (rail "0".."n-1") for each
// of its rails.
func collectRails(ch chan<- prometheus.Metric, links []llmlink.LinkInfo) {
	for _, l := range links {
		id, side := strconv.FormatUint(l.ClusterID, 10), l.Side
		gauge(ch, linkRails, float64(l.RDMARails), id, side)
		gauge(ch, linkRailsUp, float64(l.RDMARailsUp), id, side)
		counter(ch, linkRailFailovers, l.RDMARailFailovers, id, side)
		counter(ch, linkRailRepairs, l.RDMARailRepairs, id, side)
		for r, b := range l.RDMARailBytes {
			counter(ch, linkRailBytes, b, id, side, strconv.Itoa(r))
		}
		for r, m := range l.RDMARailMTU {
			gauge(ch, linkRailMTU, float64(m), id, side, strconv.Itoa(r))
		}
	}
}

//! A collector for the `prometheus-client` crate (feature `prometheus`).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use prometheus_client::registry::Registry;
//! # let engine = llmlink::DataDist::new(llmlink::Role::Prompt, 1)?;
//! let engine = Arc::new(engine);
//! let mut registry = Registry::default();
//! registry.register_collector(Box::new(llmlink::prometheus::Collector::new(engine.clone())));
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry)?;
//! # Ok(()) }
//! ```
//!
//! Each scrape reads `llmlink_get_metrics` / `llmlink_get_links` once and
//! encodes the families of `docs/metrics.md` with the names, labels and units
//! `llmlink serve --metrics` serves: counters end in `_total` (the crate
//! appends it), bytes in `_bytes_total`, durations are a histogram in
//! seconds with cumulative `le` buckets. Every value an enum has is exported,
//! zero or not. The crate writes `le` values in its own float format
//! (`0.000008` where the C endpoint writes `8e-06`): the same number to a
//! Prometheus parser. When the library cannot give the metrics (an error),
//! a scrape encodes nothing for this engine.

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::engine::DataDist;
use crate::metrics::{bucket_bounds_seconds, labels, LabelKind, LinkInfo, Metrics};

/// Encodes one engine's metrics on each scrape.
#[derive(Debug)]
pub struct Collector {
    engine: Arc<DataDist>,
}

impl Collector {
    /// A collector of `engine`'s metrics.
    pub fn new(engine: Arc<DataDist>) -> Collector {
        Collector { engine }
    }
}

type Labels = Vec<(&'static str, String)>;
/// Two samples of a link: (label key, label value, value) each.
type Pair = [(&'static str, &'static str, u64); 2];

fn counter(enc: &mut MetricEncoder, v: u64) -> fmt::Result {
    enc.encode_counter::<NoLabelSet, u64, u64>(&v, None)
}

/// A family of samples, each with its label set.
fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: &[(Labels, f64)],
) -> fmt::Result {
    let mut fam = enc.encode_descriptor(name, help, None, kind)?;
    let value = |m: &mut MetricEncoder, v: f64| match kind {
        MetricType::Counter => counter(m, v as u64),
        _ => m.encode_gauge(&v),
    };
    for (set, v) in samples {
        if set.is_empty() {
            // a sample without labels: no "{}" after its name
            value(&mut fam, *v)?;
        } else {
            value(&mut fam.encode_family(set)?, *v)?;
        }
    }
    Ok(())
}

fn by(kind: LabelKind, key: &'static str, values: &[u64]) -> Vec<(Labels, f64)> {
    labels(kind)
        .into_iter()
        .enumerate()
        .map(|(i, l)| (vec![(key, l.to_string())], values[i] as f64))
        .collect()
}

fn one(v: u64) -> Vec<(Labels, f64)> {
    vec![(Vec::new(), v as f64)]
}

fn links_and_handshakes(enc: &mut DescriptorEncoder, m: &Metrics) -> fmt::Result {
    let r = m.raw();
    use MetricType::{Counter, Gauge};
    family(
        enc,
        "llmlink_links_up",
        "Established links now, both directions.",
        Gauge,
        &one(r.links_up as u64),
    )?;
    family(
        enc,
        "llmlink_links_established",
        "Links made, by which end made them (side).",
        Counter,
        &by(LabelKind::LinkSide, "side", &r.links_established),
    )?;
    family(
        enc,
        "llmlink_links_closed",
        "Links ended, by reason.",
        Counter,
        &by(LabelKind::CloseReason, "reason", &r.links_closed),
    )?;
    family(
        enc,
        "llmlink_handshakes_ok",
        "Inbound handshakes that made a link.",
        Counter,
        &one(r.handshakes_ok),
    )?;
    family(
        enc,
        "llmlink_handshakes_refused",
        "Inbound handshakes and data-stream attaches refused, by reason.",
        Counter,
        &by(LabelKind::RefuseReason, "reason", &r.handshakes_refused),
    )?;
    family(
        enc,
        "llmlink_handshakes_timed_out",
        "Inbound connections dropped before their handshake completed.",
        Counter,
        &one(r.handshakes_timed_out),
    )?;
    family(
        enc,
        "llmlink_link_failures",
        "Clusters of this engine's link calls that did not link, by reason.",
        Counter,
        &by(LabelKind::RefuseReason, "reason", &r.link_failures),
    )?;
    family(
        enc,
        "llmlink_protocol_errors",
        "Connections dropped for malformed frames.",
        Counter,
        &one(r.protocol_errors),
    )
}

fn transfers(enc: &mut DescriptorEncoder, m: &Metrics) -> fmt::Result {
    let r = m.raw();
    let (dirs, transports, results) = (
        labels(LabelKind::Direction),
        labels(LabelKind::Transport),
        labels(LabelKind::Result),
    );
    let mut calls = Vec::new();
    let mut bytes = Vec::new();
    for (d, dl) in dirs.iter().enumerate() {
        for (t, tl) in transports.iter().enumerate() {
            for (s, sl) in results.iter().enumerate() {
                let set = vec![
                    ("direction", dl.to_string()),
                    ("transport", tl.to_string()),
                    ("status", sl.to_string()),
                ];
                calls.push((set, r.transfers[d][t][s] as f64));
            }
            let set = vec![("direction", dl.to_string()), ("transport", tl.to_string())];
            bytes.push((set, r.bytes[d][t] as f64));
        }
    }
    family(
        enc,
        "llmlink_transfers",
        "This engine's transfer calls, by direction, transport and final status.",
        MetricType::Counter,
        &calls,
    )?;
    family(
        enc,
        "llmlink_transfer_bytes",
        "Payload bytes of this engine's successful transfers.",
        MetricType::Counter,
        &bytes,
    )?;
    let mut fam = enc.encode_descriptor(
        "llmlink_transfer_duration_seconds",
        "Durations of this engine's transfer calls (any status).",
        None,
        MetricType::Histogram,
    )?;
    let bounds = bucket_bounds_seconds();
    for dl in dirs {
        let (per_bucket, count, sum) = m.latency_of(dl).unwrap_or_default();
        // the crate sums the buckets itself; f64::MAX is its +Inf bucket,
        // which holds the calls over the last bound (count - the buckets)
        let mut buckets: Vec<(f64, u64)> = bounds.iter().copied().zip(per_bucket).collect();
        let inside: u64 = buckets.iter().map(|b| b.1).sum();
        buckets.push((f64::MAX, count.saturating_sub(inside)));
        let set = vec![("direction", dl.to_string())];
        fam.encode_family(&set)?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

fn served_tasks_notifies(enc: &mut DescriptorEncoder, m: &Metrics) -> fmt::Result {
    let r = m.raw();
    for (name, v, help) in [
        (
            "llmlink_peer_requests_served",
            r.requests_served,
            "Peers' transfer requests this engine served.",
        ),
        (
            "llmlink_peer_requests_refused",
            r.requests_refused,
            "Peers' transfer requests this engine refused.",
        ),
        (
            "llmlink_tasks_submitted",
            r.tasks_submitted,
            "Asynchronous transfer tasks submitted.",
        ),
        (
            "llmlink_tasks_cancelled",
            r.tasks_cancelled,
            "Tasks that ended cancelled.",
        ),
        (
            "llmlink_notifications_sent",
            r.notifies_sent,
            "Notifications this engine sent that the peer queued.",
        ),
        (
            "llmlink_notifications_received",
            r.notifies_received,
            "Notifications received and queued here.",
        ),
        (
            "llmlink_notifications_refused_full",
            r.notifies_refused_full,
            "Notifications refused because a queue was full.",
        ),
    ] {
        family(enc, name, help, MetricType::Counter, &one(v))?;
    }
    Ok(())
}

fn ids(l: &LinkInfo) -> Labels {
    vec![
        ("cluster_id", l.cluster_id.to_string()),
        ("side", l.side.clone()),
    ]
}

fn with(l: &LinkInfo, key: &'static str, v: &str) -> Labels {
    let mut set = ids(l);
    set.push((key, v.to_string()));
    set
}

fn per_link(enc: &mut DescriptorEncoder, links: &[LinkInfo]) -> fmt::Result {
    use MetricType::{Counter, Gauge};
    let info: Vec<_> = links
        .iter()
        .map(|l| {
            let mut set = with(l, "transport", &l.transport);
            set.push(("peer", l.peer.clone()));
            (set, 1.0)
        })
        .collect();
    family(
        enc,
        "llmlink_link_info",
        "One series per live link: its transport and peer.",
        Gauge,
        &info,
    )?;
    let since: Vec<_> = links
        .iter()
        .map(|l| (ids(l), l.up_since_ms as f64 / 1000.0))
        .collect();
    family(
        enc,
        "llmlink_link_up_since_seconds",
        "When each live link was made (Unix time).",
        Gauge,
        &since,
    )?;
    let streams: Vec<_> = links.iter().map(|l| (ids(l), l.streams as f64)).collect();
    family(
        enc,
        "llmlink_link_streams",
        "Data streams this engine requests on, per link.",
        Gauge,
        &streams,
    )?;
    let pairs = |f: &dyn Fn(&LinkInfo) -> Pair| {
        links
            .iter()
            .flat_map(|l| f(l).map(|(k, v, n)| (with(l, k, v), n as f64)))
            .collect::<Vec<_>>()
    };
    family(
        enc,
        "llmlink_link_transfer_bytes",
        "Payload bytes of this engine's successful transfers over each link.",
        Counter,
        &pairs(&|l| {
            [
                ("direction", "pull", l.bytes_pulled),
                ("direction", "push", l.bytes_pushed),
            ]
        }),
    )?;
    family(
        enc,
        "llmlink_link_transfers",
        "This engine's transfer calls over each link: success, or any other status (failed).",
        Counter,
        &pairs(&|l| {
            [
                ("status", "success", l.transfers_ok),
                ("status", "failed", l.transfers_failed),
            ]
        }),
    )?;
    family(
        enc,
        "llmlink_link_peer_bytes",
        "Bytes the peer's requests read from / wrote into this engine's caches.",
        Counter,
        &pairs(&|l| {
            [
                ("access", "read", l.peer_read_bytes),
                ("access", "write", l.peer_write_bytes),
            ]
        }),
    )?;
    let fenced: Vec<_> = links
        .iter()
        .map(|l| (ids(l), l.requests_fenced as f64))
        .collect();
    family(
        enc,
        "llmlink_link_requests_fenced",
        "The peer's admitted requests that ended unfinished (fenced), per link.",
        Counter,
        &fenced,
    )
}

/// The RDMA rails of each link: the per-link families for every link (0
/// without RDMA), the per-rail ones (`rail` = "0".."n-1") for each of its
/// rails.
fn per_rail(enc: &mut DescriptorEncoder, links: &[LinkInfo]) -> fmt::Result {
    use MetricType::{Counter, Gauge};
    let each = |f: &dyn Fn(&LinkInfo) -> u64| {
        links
            .iter()
            .map(|l| (ids(l), f(l) as f64))
            .collect::<Vec<_>>()
    };
    let per_rail = |f: &dyn Fn(&LinkInfo) -> Vec<u64>| {
        links
            .iter()
            .flat_map(|l| {
                f(l).into_iter()
                    .enumerate()
                    .map(|(r, v)| (with(l, "rail", &r.to_string()), v as f64))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    family(
        enc,
        "llmlink_link_rdma_rails",
        "RDMA rails of each link (0: no RDMA).",
        Gauge,
        &each(&|l| l.rdma_rails as u64),
    )?;
    family(
        enc,
        "llmlink_link_rdma_rails_up",
        "RDMA rails of each link usable now (the others failed and wait to be re-established).",
        Gauge,
        &each(&|l| l.rdma_rails_up as u64),
    )?;
    family(
        enc,
        "llmlink_link_rdma_rail_failovers",
        "RDMA rails that failed under a transfer whose work went on over the other rails, per link.",
        Counter,
        &each(&|l| l.rdma_rail_failovers),
    )?;
    family(
        enc,
        "llmlink_link_rdma_rail_repairs",
        "Failed RDMA rails re-established without relinking, per link.",
        Counter,
        &each(&|l| l.rdma_rail_repairs),
    )?;
    family(
        enc,
        "llmlink_link_rdma_rail_bytes",
        "Bytes this engine's requests moved over each RDMA rail of each link.",
        Counter,
        &per_rail(&|l| l.rdma_rail_bytes.clone()),
    )?;
    family(
        enc,
        "llmlink_link_rdma_rail_mtu_bytes",
        "Path MTU of each RDMA rail of each link, in bytes.",
        Gauge,
        &per_rail(&|l| l.rdma_rail_mtu.iter().map(|m| *m as u64).collect()),
    )
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let (Ok(m), Ok(links)) = (self.engine.metrics(), self.engine.links()) else {
            return Ok(());
        };
        links_and_handshakes(&mut enc, &m)?;
        transfers(&mut enc, &m)?;
        served_tasks_notifies(&mut enc, &m)?;
        per_link(&mut enc, &links)?;
        per_rail(&mut enc, &links)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    /// Encodes per_rail of fixed links (the test host has no RDMA link).
    #[derive(Debug)]
    struct Rails(Vec<LinkInfo>);

    impl prometheus_client::collector::Collector for Rails {
        fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
            per_rail(&mut enc, &self.0)
        }
    }

    #[test]
    fn rails_of_an_rdma_link() {
        let link = LinkInfo {
            side: "inbound".to_string(),
            cluster_id: 7,
            transport: "rdma".to_string(),
            streams: 2,
            up_since_ms: 1,
            bytes_pulled: 0,
            bytes_pushed: 0,
            transfers_ok: 0,
            transfers_failed: 0,
            peer_write_bytes: 0,
            peer_read_bytes: 0,
            requests_fenced: 0,
            peer: "10.0.0.2:1".to_string(),
            rdma_rails: 2,
            rdma_rails_up: 1,
            rdma_rail_failovers: 1,
            rdma_rail_repairs: 0,
            rdma_rail_bytes: vec![4096, 512],
            rdma_rail_mtu: vec![1024, 4096],
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Rails(vec![link])));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let mut samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        samples.sort();
        let ids = "cluster_id=\"7\",side=\"inbound\"";
        // (the crate writes a gauge as a float, a counter as an integer)
        let mut want = [
            format!("llmlink_link_rdma_rails{{{ids}}} 2.0"),
            format!("llmlink_link_rdma_rails_up{{{ids}}} 1.0"),
            format!("llmlink_link_rdma_rail_failovers_total{{{ids}}} 1"),
            format!("llmlink_link_rdma_rail_repairs_total{{{ids}}} 0"),
            format!("llmlink_link_rdma_rail_bytes_total{{{ids},rail=\"0\"}} 4096"),
            format!("llmlink_link_rdma_rail_bytes_total{{{ids},rail=\"1\"}} 512"),
            format!("llmlink_link_rdma_rail_mtu_bytes{{{ids},rail=\"0\"}} 1024.0"),
            format!("llmlink_link_rdma_rail_mtu_bytes{{{ids},rail=\"1\"}} 4096.0"),
        ];
        want.sort();
        assert_eq!(
            samples,
            want.iter().map(String::as_str).collect::<Vec<_>>(),
            "{text}"
        );
    }
}

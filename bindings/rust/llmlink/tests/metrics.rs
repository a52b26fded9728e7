//! `DataDist::metrics` / `links` (and, with `--features prometheus`, the
//! `prometheus-client` collector): after a known sequence between two
//! engines of this process on loopback over tcp - a link to a port where
//! nothing listens, a link, 2 pulls that succeed, 1 the peer refuses (a
//! block past the end of its cache), an unlink - every counter has the
//! exact expected value, on the decoder and on the prompt engine.

mod common;

use common::*;
use llmlink::{labels, CacheDesc, CacheKey, DataDist, DataType, LabelKind, Options, Role};

const P_ID: u64 = 501;
const D_ID: u64 = 502;
/// 2 tensors, 8 blocks of 64 bytes.
const BLOCK: u64 = 64;
const TENSORS: u64 = 2;
const PER_PULL: u64 = 2 * BLOCK * TENSORS;

fn desc() -> CacheDesc {
    CacheDesc::new(TENSORS as u32, DataType::Uint8, vec![8, BLOCK as i64])
}

/// The sequence; returns (prompt, decoder, prompt port), still linked.
pub fn sequence() -> (DataDist, DataDist, u16) {
    let tcp = || Options::new().set("llmlink.Transport", "tcp");
    let (p, port) = prompt_with(P_ID, tcp());
    let d = DataDist::new(Role::Decoder, D_ID).unwrap();
    d.init(&tcp()).unwrap();
    let (_fd, dead) = dead_port();
    let (_, per) = d.link_clusters(&[cluster(9, dead)], LINK_TIMEOUT).unwrap();
    assert!(!per[0].is_success(), "{per:?}");
    let (st, per) = d
        .link_clusters(&[cluster(P_ID, port)], LINK_TIMEOUT)
        .unwrap();
    assert!(st.is_success(), "{st} {per:?}");
    let key = CacheKey::Blocks {
        prompt_cluster_id: P_ID,
        model_id: 0,
    };
    let held = p
        .cache_manager()
        .allocate_blocks_cache(&desc(), Some(&key))
        .unwrap();
    let mut local = d
        .cache_manager()
        .allocate_blocks_cache(&desc(), None)
        .unwrap();
    for _ in 0..2 {
        d.cache_manager()
            .pull_blocks(&key, &mut local, &[1, 2], &[3, 4], None)
            .unwrap();
    }
    d.cache_manager()
        .pull_blocks(&key, &mut local, &[13], &[0], None)
        .unwrap_err();
    // the caches borrow their engines: freed here, the counters stay
    drop(local);
    drop(held);
    (p, d, port)
}

#[test]
fn counters_after_a_known_sequence() {
    let (p, d, port) = sequence();
    let m = d.metrics().unwrap();
    assert_eq!(m.links_up(), 1);
    assert_eq!(m.links_established_of("outbound"), Some(1));
    assert_eq!(m.links_established_of("inbound"), Some(0));
    assert_eq!(m.link_failures_of("connect"), Some(1));
    assert_eq!(m.raw().link_failures.iter().sum::<u64>(), 1);
    for dir in labels(LabelKind::Direction) {
        for t in labels(LabelKind::Transport) {
            for s in labels(LabelKind::Result) {
                let want = match (dir, t, s) {
                    ("pull", "tcp", "success") => 2,
                    ("pull", "tcp", "refused") => 1,
                    _ => 0,
                };
                assert_eq!(m.transfers_of(dir, t, s), Some(want), "{dir} {t} {s}");
            }
        }
    }
    assert_eq!(m.transfers_of("pull", "tcp", "no such status"), None);
    assert_eq!(m.bytes_of("pull", "tcp"), Some(2 * PER_PULL));
    assert_eq!(m.bytes_of("push", "tcp"), Some(0));
    let (buckets, count, sum) = m.latency_of("pull").unwrap();
    assert_eq!((buckets.iter().sum::<u64>(), count), (3, 3));
    assert!(sum > 0.0);
    assert_eq!(m.latency_of("push").unwrap().1, 0);

    let links = d.links().unwrap();
    assert_eq!(links.len(), 1);
    let l = &links[0];
    assert_eq!((l.side.as_str(), l.cluster_id), ("outbound", P_ID));
    assert_eq!(l.transport, "tcp");
    assert_eq!(l.peer, format!("127.0.0.1:{port}"));
    assert_eq!((l.bytes_pulled, l.bytes_pushed), (2 * PER_PULL, 0));
    assert_eq!((l.transfers_ok, l.transfers_failed), (2, 1));
    assert!(l.streams >= 1 && l.up_since_ms > 0);
    // a tcp link has no RDMA rail: 0, and empty per-rail vectors
    assert_eq!((l.rdma_rails, l.rdma_rails_up), (0, 0));
    assert_eq!((l.rdma_rail_failovers, l.rdma_rail_repairs), (0, 0));
    assert!(l.rdma_rail_bytes.is_empty() && l.rdma_rail_mtu.is_empty());

    // the prompt side: one inbound link, one handshake, served and refused
    let pm = p.metrics().unwrap();
    assert_eq!(pm.links_established_of("inbound"), Some(1));
    assert_eq!(pm.raw().handshakes_ok, 1);
    assert!(pm.raw().requests_served >= 2 && pm.raw().requests_refused >= 1);
    let pl = p.links().unwrap();
    assert_eq!(
        (pl.len(), pl[0].side.as_str(), pl[0].cluster_id),
        (1, "inbound", D_ID)
    );
    assert_eq!(pl[0].peer_read_bytes, 2 * PER_PULL);

    let (st, _) = d
        .unlink_clusters(&[cluster(P_ID, port)], LINK_TIMEOUT, false)
        .unwrap();
    assert!(st.is_success());
    let m = d.metrics().unwrap();
    assert_eq!(m.links_up(), 0);
    assert_eq!(m.links_closed_of("unlinked"), Some(1));
    assert!(d.links().unwrap().is_empty());
}

#[test]
fn labels_and_bounds() {
    assert_eq!(labels(LabelKind::Direction), ["pull", "push"]);
    assert_eq!(labels(LabelKind::Transport), ["none", "tcp", "shm", "rdma"]);
    assert_eq!(labels(LabelKind::LinkSide), ["outbound", "inbound"]);
    assert_eq!(labels(LabelKind::Result)[0], "success");
    let b = llmlink::bucket_bounds_seconds();
    assert_eq!(b.len(), 24);
    assert!((b[0] - 8e-6).abs() < 1e-12 && (b[23] - 8e-6 * 8388608.0).abs() < 1e-6);
}

#[cfg(feature = "prometheus")]
mod prometheus {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    use prometheus_client::registry::Registry;

    /// {sample line without value: value} of the text the collector encoded.
    fn scrape(engine: Arc<DataDist>) -> (String, HashMap<String, f64>) {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(llmlink::prometheus::Collector::new(engine)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').unwrap();
                (canon(k), v.parse::<f64>().unwrap())
            })
            .collect();
        (text, samples)
    }

    /// `name{labels}` with its labels sorted (the crate writes a
    /// histogram's `le` first); no label value here has a comma.
    fn canon(key: &str) -> String {
        match key.split_once('{') {
            None => key.to_string(),
            Some((name, rest)) => {
                let mut labels: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
                labels.sort();
                format!("{name}{{{}}}", labels.join(","))
            }
        }
    }

    fn get(s: &HashMap<String, f64>, key: &str) -> f64 {
        *s.get(&canon(key))
            .unwrap_or_else(|| panic!("no sample {key}"))
    }

    #[test]
    fn collector_encodes_exact_values_and_the_documented_names() {
        let (_p, d, port) = sequence();
        let (text, s) = scrape(Arc::new(d));
        assert_eq!(get(&s, "llmlink_links_up"), 1.0);
        assert_eq!(
            get(&s, "llmlink_links_established_total{side=\"outbound\"}"),
            1.0
        );
        assert_eq!(
            get(&s, "llmlink_link_failures_total{reason=\"connect\"}"),
            1.0
        );
        assert_eq!(
            get(
                &s,
                "llmlink_transfers_total{direction=\"pull\",transport=\"tcp\",status=\"success\"}"
            ),
            2.0
        );
        assert_eq!(
            get(
                &s,
                "llmlink_transfers_total{direction=\"pull\",transport=\"tcp\",status=\"refused\"}"
            ),
            1.0
        );
        let transfers = s
            .keys()
            .filter(|k| k.starts_with("llmlink_transfers_total{"))
            .count();
        assert_eq!(transfers, 2 * 4 * 5); // every label value, zero or not
        assert_eq!(
            get(
                &s,
                "llmlink_transfer_bytes_total{direction=\"pull\",transport=\"tcp\"}"
            ),
            (2 * PER_PULL) as f64
        );
        let dur = "llmlink_transfer_duration_seconds";
        assert_eq!(get(&s, &format!("{dur}_count{{direction=\"pull\"}}")), 3.0);
        assert_eq!(
            get(
                &s,
                &format!("{dur}_bucket{{direction=\"pull\",le=\"+Inf\"}}")
            ),
            3.0
        );
        assert!(get(&s, &format!("{dur}_sum{{direction=\"pull\"}}")) > 0.0);
        let buckets = s
            .keys()
            .filter(|k| {
                k.starts_with(&format!("{dur}_bucket{{")) && k.contains("direction=\"pull\"")
            })
            .count();
        assert_eq!(buckets, 25);
        let ids = format!("cluster_id=\"{P_ID}\",side=\"outbound\"");
        assert_eq!(
            get(
                &s,
                &format!("llmlink_link_info{{{ids},transport=\"tcp\",peer=\"127.0.0.1:{port}\"}}")
            ),
            1.0
        );
        assert_eq!(
            get(
                &s,
                &format!("llmlink_link_transfers_total{{{ids},status=\"failed\"}}")
            ),
            1.0
        );
        assert_eq!(
            get(
                &s,
                &format!("llmlink_link_transfer_bytes_total{{{ids},direction=\"pull\"}}")
            ),
            (2 * PER_PULL) as f64
        );
        // no RDMA on a tcp link: its rail series are 0, no per-rail one
        for name in [
            "llmlink_link_rdma_rails",
            "llmlink_link_rdma_rails_up",
            "llmlink_link_rdma_rail_failovers_total",
            "llmlink_link_rdma_rail_repairs_total",
        ] {
            assert_eq!(get(&s, &format!("{name}{{{ids}}}")), 0.0, "{name}");
        }
        assert!(
            !s.keys()
                .any(|k| k.starts_with("llmlink_link_rdma_rail_bytes_total{")
                    || k.starts_with("llmlink_link_rdma_rail_mtu_bytes{")),
            "a per-rail series of a tcp link"
        );

        // names: the families docs/metrics.md lists, with the conventions
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../docs/metrics.md"
        ))
        .unwrap();
        let documented: std::collections::BTreeSet<String> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `llmlink_"))
            .map(|l| format!("llmlink_{}", l.split(['`', '{']).next().unwrap()))
            .collect();
        let mut exported = std::collections::BTreeSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut w = line.split(' ').skip(2);
            let (name, kind) = (w.next().unwrap(), w.next().unwrap());
            assert!(name.starts_with("llmlink_"), "{name}");
            match kind {
                "counter" => {
                    assert!(!name.ends_with("_total"), "{name}"); // the samples carry it
                                                                  // (a per-rail family has no sample on a tcp link)
                    assert!(
                        !text.contains(&format!("\n{name}{{"))
                            && !text.contains(&format!("\n{name} ")),
                        "{name}"
                    );
                    exported.insert(format!("{name}_total"));
                }
                "histogram" => {
                    assert!(name.ends_with("_seconds"), "{name}");
                    exported.insert(name.to_string());
                }
                "gauge" => {
                    exported.insert(name.to_string());
                }
                other => panic!("{name}: type {other}"),
            }
        }
        assert_eq!(exported, documented);
    }
}

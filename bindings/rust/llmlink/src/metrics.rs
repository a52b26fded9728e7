//! Operator metrics: [`DataDist::metrics`] (`llmlink_get_metrics`) and
//! [`DataDist::links`] (`llmlink_get_links`), with the label texts
//! (`llmlink_metrics_label`) that `docs/metrics.md` and every Prometheus
//! rendering use. With the `prometheus` feature,
//! [`prometheus::Collector`](crate::prometheus::Collector) exports them.

use std::ffi::CStr;

use llmlink_sys as sys;

use crate::engine::DataDist;
use crate::error::{Error, Result};
use crate::status::Status;

/// Which enum a label names ([`label`], [`labels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelKind {
    /// A transfer's direction: `pull`, `push` (`Metrics::transfers`' first index).
    Direction,
    /// The transport: `none`, `tcp`, `shm`, `rdma`.
    Transport,
    /// A transfer's final status class: `success`, `refused`, `failed`, ...
    Result,
    /// Which end made a link (`side`): `outbound`, `inbound`.
    LinkSide,
    /// Why a link ended: `other`, `unlinked`, `unlinked_by_peer`, ...
    CloseReason,
    /// Why a handshake or link attempt failed: `other`, `auth`, `access`, ...
    RefuseReason,
}

impl LabelKind {
    fn raw(self) -> sys::llmlink_metrics_label_kind_t {
        match self {
            LabelKind::Direction => sys::LLMLINK_LABEL_DIR,
            LabelKind::Transport => sys::LLMLINK_LABEL_TRANSPORT,
            LabelKind::Result => sys::LLMLINK_LABEL_RESULT,
            LabelKind::LinkSide => sys::LLMLINK_LABEL_LINK_DIR,
            LabelKind::CloseReason => sys::LLMLINK_LABEL_CLOSE_REASON,
            LabelKind::RefuseReason => sys::LLMLINK_LABEL_REFUSE_REASON,
        }
    }
}

/// The label text of `value` of `kind`, `None` past the enum's last value.
pub fn label(kind: LabelKind, value: u32) -> Option<&'static str> {
    // A static string of the library, or NULL.
    let p = unsafe { sys::llmlink_metrics_label(kind.raw(), value) };
    if p.is_null() {
        return None;
    }
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

/// Every label text of `kind`, in value order: values 0.. while the library
/// names them (so a newer library's values appear without a change here).
pub fn labels(kind: LabelKind) -> Vec<&'static str> {
    (0u32..).map_while(|v| label(kind, v)).collect()
}

/// Upper bounds (seconds) of the latency buckets: 8 us x 2^i, i = 0..23.
pub fn bucket_bounds_seconds() -> Vec<f64> {
    (0..sys::LLMLINK_METRICS_BUCKETS as usize)
        // SAFETY: a pure function of its argument.
        .map(|i| unsafe { sys::llmlink_metrics_bucket_bound_seconds(i) })
        .collect()
}

/// One snapshot of an engine's counters (`llmlink_metrics_t`; the meaning of
/// each is in `docs/metrics.md`). Arrays are indexed by the C enums' values;
/// [`labels`] names the indices, and the `*_of` methods look up by label.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    raw: sys::llmlink_metrics_t,
}

fn index(kind: LabelKind, text: &str) -> Option<usize> {
    labels(kind).iter().position(|l| *l == text)
}

impl Metrics {
    /// The C struct, for the fields this type has no accessor for.
    pub fn raw(&self) -> &sys::llmlink_metrics_t {
        &self.raw
    }
    /// Established links now, both sides (a gauge).
    pub fn links_up(&self) -> u32 {
        self.raw.links_up
    }
    /// Links made by `side` (`outbound` / `inbound`).
    pub fn links_established_of(&self, side: &str) -> Option<u64> {
        index(LabelKind::LinkSide, side).map(|i| self.raw.links_established[i])
    }
    /// Links ended for `reason` (a [`LabelKind::CloseReason`] text).
    pub fn links_closed_of(&self, reason: &str) -> Option<u64> {
        index(LabelKind::CloseReason, reason).map(|i| self.raw.links_closed[i])
    }
    /// Inbound handshakes refused for `reason` ([`LabelKind::RefuseReason`]).
    pub fn handshakes_refused_of(&self, reason: &str) -> Option<u64> {
        index(LabelKind::RefuseReason, reason).map(|i| self.raw.handshakes_refused[i])
    }
    /// Clusters of link calls that did not link, for `reason`.
    pub fn link_failures_of(&self, reason: &str) -> Option<u64> {
        index(LabelKind::RefuseReason, reason).map(|i| self.raw.link_failures[i])
    }
    /// Transfer calls by direction, transport and status (label texts).
    pub fn transfers_of(&self, direction: &str, transport: &str, status: &str) -> Option<u64> {
        let d = index(LabelKind::Direction, direction)?;
        let t = index(LabelKind::Transport, transport)?;
        let r = index(LabelKind::Result, status)?;
        Some(self.raw.transfers[d][t][r])
    }
    /// Payload bytes of the successful calls by direction and transport.
    pub fn bytes_of(&self, direction: &str, transport: &str) -> Option<u64> {
        let d = index(LabelKind::Direction, direction)?;
        let t = index(LabelKind::Transport, transport)?;
        Some(self.raw.bytes[d][t])
    }
    /// The duration histogram of `direction`: per-bucket counts (NOT
    /// cumulative; bounds from [`bucket_bounds_seconds`]), the count of
    /// every counted call and the sum of their durations in seconds.
    pub fn latency_of(&self, direction: &str) -> Option<(Vec<u64>, u64, f64)> {
        let d = index(LabelKind::Direction, direction)?;
        Some((
            self.raw.latency_buckets[d].to_vec(),
            self.raw.latency_count[d],
            self.raw.latency_sum_ns[d] as f64 / 1e9,
        ))
    }
}

/// One live link (`llmlink_link_info_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Which end made it: `outbound` or `inbound` (label text).
    pub side: String,
    /// The peer's cluster id.
    pub cluster_id: u64,
    /// The transport it moves bytes with now: `tcp`, `shm`, `rdma` (or `none`).
    pub transport: String,
    /// Data streams this engine requests on.
    pub streams: u32,
    /// When it was made: Unix time, milliseconds.
    pub up_since_ms: i64,
    /// Payload bytes of this engine's successful pulls over it.
    pub bytes_pulled: u64,
    /// Payload bytes of this engine's successful pushes over it.
    pub bytes_pushed: u64,
    /// This engine's successful transfer calls over it.
    pub transfers_ok: u64,
    /// This engine's other counted transfer calls over it.
    pub transfers_failed: u64,
    /// Bytes the peer's requests wrote into this engine's caches.
    pub peer_write_bytes: u64,
    /// Bytes the peer's requests read from this engine's caches.
    pub peer_read_bytes: u64,
    /// The peer's admitted requests that ended unfinished.
    pub requests_fenced: u64,
    /// The peer's address, `ip:port` or `[ip6]:port`.
    pub peer: String,
    /// The link's RDMA rails, as in [`LinkStats`](crate::LinkStats) (0
    /// without RDMA).
    pub rdma_rails: u32,
    /// Of them, those usable now.
    pub rdma_rails_up: u32,
    /// Rails that failed under a transfer whose work went on over the others.
    pub rdma_rail_failovers: u64,
    /// Failed rails re-established without relinking.
    pub rdma_rail_repairs: u64,
    /// Per rail (`rdma_rails` items): bytes this engine's requests moved over it.
    pub rdma_rail_bytes: Vec<u64>,
    /// Per rail (`rdma_rails` items): its path MTU in bytes.
    pub rdma_rail_mtu: Vec<u32>,
}

fn label_or_number(kind: LabelKind, v: u32) -> String {
    label(kind, v).map_or_else(|| v.to_string(), str::to_string)
}

impl LinkInfo {
    fn from_raw(l: &sys::llmlink_link_info_t) -> LinkInfo {
        let bytes: Vec<u8> = l
            .peer
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        // Never more rails than the arrays hold (the bound keeps a bad
        // count from slicing past them).
        let rails = (l.rdma_rails as usize).min(l.rdma_rail_bytes.len());
        LinkInfo {
            side: label_or_number(LabelKind::LinkSide, l.direction),
            cluster_id: l.cluster_id,
            transport: label_or_number(LabelKind::Transport, l.transport),
            streams: l.streams,
            up_since_ms: l.up_since_ms,
            bytes_pulled: l.bytes_pulled,
            bytes_pushed: l.bytes_pushed,
            transfers_ok: l.transfers_ok,
            transfers_failed: l.transfers_failed,
            peer_write_bytes: l.peer_write_bytes,
            peer_read_bytes: l.peer_read_bytes,
            requests_fenced: l.requests_fenced,
            peer: String::from_utf8_lossy(&bytes).into_owned(),
            rdma_rails: rails as u32,
            rdma_rails_up: l.rdma_rails_up,
            rdma_rail_failovers: l.rdma_rail_failovers,
            rdma_rail_repairs: l.rdma_rail_repairs,
            rdma_rail_bytes: l.rdma_rail_bytes[..rails].to_vec(),
            rdma_rail_mtu: l.rdma_rail_mtu[..rails].to_vec(),
        }
    }
}

impl DataDist {
    /// A snapshot of the engine's operator metrics (`llmlink_get_metrics`).
    pub fn metrics(&self) -> Result<Metrics> {
        let mut raw = sys::llmlink_metrics_t {
            version: sys::LLMLINK_METRICS_VERSION,
            ..Default::default()
        };
        // SAFETY: raw is a valid, versioned struct for the call to fill.
        Error::check(unsafe { sys::llmlink_get_metrics(self.as_raw(), &mut raw) })?;
        Ok(Metrics { raw })
    }

    /// The live links (`llmlink_get_links`): outbound first, each side in
    /// cluster id order.
    pub fn links(&self) -> Result<Vec<LinkInfo>> {
        let mut cap = 16usize;
        // Links come and go between calls: grow to the count the last call
        // gave, a few times, then keep what the last call filled.
        for _ in 0..8 {
            let mut buf = vec![sys::llmlink_link_info_t::default(); cap];
            buf[0].version = sys::LLMLINK_LINK_INFO_VERSION;
            let mut count = 0usize;
            // SAFETY: buf has cap elements of the stride the version sets.
            Error::check(unsafe {
                sys::llmlink_get_links(self.as_raw(), buf.as_mut_ptr(), cap, &mut count)
            })?;
            if count <= cap {
                return Ok(buf[..count].iter().map(LinkInfo::from_raw).collect());
            }
            cap = count + 16;
        }
        Err(Error::new(
            Status::FAILED,
            "llmlink_get_links: the number of links kept growing".to_string(),
        ))
    }
}

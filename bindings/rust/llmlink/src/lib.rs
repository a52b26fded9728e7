//! Safe Rust API for llmlink: link LLM decode clusters (DECODER, the
//! client) to prefill clusters (PROMPT, the server) and move the KV cache
//! between them, with the contract of Huawei's `llm_datadist`.
//!
//! ```
//! use std::time::Duration;
//! use llmlink::{ClusterInfo, DataDist, IpInfo, Options, Role, Status};
//!
//! # fn main() -> Result<(), llmlink::Error> {
//! let prompt = DataDist::new(Role::Prompt, 1)?;
//! prompt.init(&Options::new().set("llm.listenIpInfo", "127.0.0.1:0"))?;
//! let port = prompt.listen_port(0)?;
//!
//! let decoder = DataDist::new(Role::Decoder, 2)?;
//! decoder.init(&Options::new())?;
//! let cluster = ClusterInfo::new(1, IpInfo::new("127.0.0.1", port));
//! let (status, per_cluster) = decoder.link_clusters(&[cluster], Duration::from_secs(3))?;
//! assert_eq!(status, Status::SUCCESS, "{per_cluster:?}");
//! # Ok(()) }
//! ```
//!
//! The pieces: [`DataDist`] (an engine: init, link, unlink, check),
//! [`CacheManager`] (register or allocate KV cache memory, pull and push
//! blocks and caches; the `*_async` methods return a [`Transfer`] to wait
//! for, cancel or `.await`), [`Status`] and [`Error`] (every failure carries the C
//! side's message). Raw bindings are in [`llmlink_sys`].
#![deny(missing_docs)]

mod cache;
mod cache_manager;
mod cache_manager_async;
mod cluster;
mod engine;
mod error;
mod layer_sync;
mod log;
mod metrics;
mod notify;
mod options;
/// The `prometheus-client` collector (feature `prometheus`).
#[cfg(feature = "prometheus")]
pub mod prometheus;
mod status;
mod transfer;

pub use cache::{Access, CacheDesc, CacheId, CacheKey, DataType, LayerRange, Placement};
pub use cache_manager::{
    AllocatedCache, CacheManager, LocalCache, RawCache, RegisteredCache, UnregisterError,
};
pub use cache_manager_async::{PullDestination, TransferTarget};
pub use cluster::{ClusterInfo, IpInfo};
pub use engine::{DataDist, LinkStats, RdmaProtection, Role, Stats, XferStats};
pub use error::{last_error, Error, Result};
pub use layer_sync::LayerSynchronizer;
pub use log::{clear_log_callback, set_log_callback, LogLevel};
pub use metrics::{bucket_bounds_seconds, label, labels, LabelKind, LinkInfo, Metrics};
pub use notify::{EventFd, Notification, MAX_NOTIFY_BYTES};
pub use options::Options;
pub use status::Status;
pub use transfer::{Transfer, TransferOptions};

pub use llmlink_sys;

/// Most clusters one link or unlink call takes.
pub const MAX_CLUSTERS_PER_CALL: usize = llmlink_sys::LLMLINK_MAX_CLUSTERS_PER_CALL as usize;

/// Most RDMA rails a link has ([`LinkStats::rdma_rails`]).
pub const MAX_RDMA_RAILS: usize = llmlink_sys::LLMLINK_MAX_RDMA_RAILS as usize;

/// The version of the loaded C library, e.g. `"0.3.0"`.
pub fn version() -> &'static str {
    // A string literal of the library.
    unsafe { std::ffi::CStr::from_ptr(llmlink_sys::llmlink_version_string()) }
        .to_str()
        .unwrap_or("")
}

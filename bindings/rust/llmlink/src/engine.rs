//! [`DataDist`]: one llmlink engine (llm_datadist's `LLMDataDist`).

use std::ffi::CString;
use std::time::Duration;

use llmlink_sys as sys;

use crate::cluster::CClusters;
use crate::error::{c_string, timeout_ms, Error, Result};
use crate::{CacheManager, ClusterInfo, Options, Status};

/// The role of an engine (llm_datadist's `LLMRole`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Prefill: the server, accepts links.
    Prompt,
    /// Decode: the client, initiates links.
    Decoder,
    /// Both.
    Mix,
}

impl Role {
    pub(crate) fn raw(self) -> sys::llmlink_role_t {
        match self {
            Role::Prompt => sys::LLMLINK_ROLE_PROMPT,
            Role::Decoder => sys::LLMLINK_ROLE_DECODER,
            Role::Mix => sys::LLMLINK_ROLE_MIX,
        }
    }

    /// The role for a raw C value; `None` for a value this crate does not
    /// know (read as an integer, so never undefined behaviour).
    pub fn from_raw(raw: u32) -> Option<Role> {
        match raw {
            sys::LLMLINK_ROLE_PROMPT => Some(Role::Prompt),
            sys::LLMLINK_ROLE_DECODER => Some(Role::Decoder),
            sys::LLMLINK_ROLE_MIX => Some(Role::Mix),
            _ => None,
        }
    }
}

/// Link and handshake counters of one engine ([`DataDist::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Established links, both directions.
    pub links: u32,
    /// Links peers made to this engine.
    pub inbound_links: u32,
    /// Links this engine made.
    pub outbound_links: u32,
    /// Server-side handshakes in progress now.
    pub handshakes_in_progress: u32,
    /// Highest number of server-side handshakes at once.
    pub handshakes_peak: u32,
    /// Connections accepted for a handshake.
    pub handshakes_accepted: u64,
    /// Handshakes that made a link.
    pub handshakes_completed: u64,
    /// Handshakes refused (limit, version, cluster id).
    pub handshakes_rejected: u64,
    /// Half-open handshakes dropped by age-out.
    pub handshakes_timed_out: u64,
    /// Connections dropped for malformed frames.
    pub protocol_errors: u64,
    /// Links freed because the peer died.
    pub links_lost: u64,
}

/// Transfer counters of one engine ([`DataDist::xfer_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XferStats {
    /// Caches registered or allocated now.
    pub caches: u32,
    /// Pull/push calls that succeeded.
    pub transfers: u64,
    /// Pull/push calls that failed after their arguments passed.
    pub transfers_failed: u64,
    /// ... of which with `WAIT_PROCESS_TIMEOUT`.
    pub transfers_timed_out: u64,
    /// Bytes moved by this engine's calls (both ways).
    pub bytes_requested: u64,
    /// Bytes moved for peers' requests (both ways).
    pub bytes_served: u64,
    /// Peer requests completed.
    pub requests_served: u64,
    /// Peer requests refused (bad key, range, ...).
    pub requests_refused: u64,
    /// Requests this engine sent over tcp.
    pub tcp_requests: u64,
    /// Requests this engine moved with process_vm_readv/writev.
    pub shm_requests: u64,
    /// shm refused by the kernel, redone over tcp.
    pub shm_fallbacks: u64,
    /// Requests this engine moved with RDMA READ / WRITE.
    pub rdma_requests: u64,
}

/// How the NIC enforces a link's RDMA grants (`llmlink_rdma_protection_t`,
/// in [`LinkStats::rdma_protection`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RdmaProtection {
    /// The link moves no byte over RDMA.
    None,
    /// Each grant is a type-2 memory window bound to the link's QP, read-only
    /// for a pull, write-only for a push, covering exactly the granted
    /// blocks, invalidated when the request ends.
    Window,
    /// The device has no type-2 windows: the link has its own protection
    /// domain, and regions are registered read-only or write-only.
    LinkPd,
    /// A grant's rkey covers its whole tensor for reading and writing until
    /// the cache is unregistered or the link breaks (llmlink <= 0.3).
    Region,
}

impl RdmaProtection {
    /// The protection for a raw C value; `None` for a value this crate does
    /// not know (a newer library may add some: read as an integer, never
    /// undefined behaviour).
    pub fn from_raw(raw: u32) -> Option<RdmaProtection> {
        match raw {
            sys::LLMLINK_RDMA_PROTECTION_NONE => Some(RdmaProtection::None),
            sys::LLMLINK_RDMA_PROTECTION_WINDOW => Some(RdmaProtection::Window),
            sys::LLMLINK_RDMA_PROTECTION_LINK_PD => Some(RdmaProtection::LinkPd),
            sys::LLMLINK_RDMA_PROTECTION_REGION => Some(RdmaProtection::Region),
            _ => None,
        }
    }

    /// The C value.
    pub fn raw(self) -> u32 {
        match self {
            RdmaProtection::None => sys::LLMLINK_RDMA_PROTECTION_NONE,
            RdmaProtection::Window => sys::LLMLINK_RDMA_PROTECTION_WINDOW,
            RdmaProtection::LinkPd => sys::LLMLINK_RDMA_PROTECTION_LINK_PD,
            RdmaProtection::Region => sys::LLMLINK_RDMA_PROTECTION_REGION,
        }
    }
}

/// Counters of one link as this engine sees it: what the peer's requests
/// did to this engine's memory, and its RDMA rails
/// ([`DataDist::link_stats`]). They start at 0 when the link is made and go
/// with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStats {
    /// How the NIC enforces the link's RDMA grants.
    pub rdma_protection: RdmaProtection,
    /// Bytes the peer wrote into this engine's caches: received by tcp, or
    /// granted for writing (shm, rdma: counted when granted, since the peer
    /// then writes on its own).
    pub peer_write_bytes: u64,
    /// Bytes the peer read from this engine's caches, counted the same way.
    pub peer_read_bytes: u64,
    /// The peer's requests that this engine had admitted and that ended
    /// unfinished (the link broke, a stall, a timeout): each was fenced.
    pub requests_fenced: u64,
    /// The link's RDMA rails, at most [`MAX_RDMA_RAILS`](crate::MAX_RDMA_RAILS)
    /// (0 on a link without RDMA).
    pub rdma_rails: u32,
    /// Of them, those usable now (the others failed and wait to be
    /// re-established).
    pub rdma_rails_up: u32,
    /// Rails that failed under a transfer of this engine whose work went on
    /// over the surviving rails (the call still succeeded).
    pub rdma_rail_failovers: u64,
    /// Failed rails re-established (a fresh QP pair) without relinking.
    pub rdma_rail_repairs: u64,
    /// Per rail (`rdma_rails` items, empty without RDMA): the bytes this
    /// engine's requests moved over it (READ and WRITE payload, counted
    /// when the work completed).
    pub rdma_rail_bytes: Vec<u64>,
    /// Per rail (`rdma_rails` items): its path MTU in bytes (the smaller of
    /// both ends' active MTUs, capped by `llmlink.RdmaMtu`).
    pub rdma_rail_mtu: Vec<u32>,
}

/// One llmlink engine.
///
/// Dropping it closes every link (peers notice at once) and frees it. Every
/// cache handle borrows the engine, so the borrow checker makes sure no
/// cache outlives it.
pub struct DataDist {
    raw: *mut sys::llmlink_t,
}

// SAFETY: the handle is not tied to the thread that created it (no
// thread-local state is kept per engine; the last error is per calling
// thread, read by the thread that made the call), so it may move to another
// thread.
unsafe impl Send for DataDist {}
// SAFETY: ffi/llmlink.h: "One engine may be called from many threads at
// once". The two calls that must not race with others, finalize and
// destroy, take `&mut self` / `self` here, so no shared borrow can exist
// while they run.
unsafe impl Sync for DataDist {}

impl DataDist {
    /// Creates an engine with `role`; `cluster_id` identifies it to peers.
    ///
    /// Fails with `VERSION_MISMATCH` when the loaded library is not the
    /// version the bindings were generated for (major and minor).
    pub fn new(role: Role, cluster_id: u64) -> Result<DataDist> {
        check_library_version()?;
        let mut raw = std::ptr::null_mut();
        Error::check(unsafe { sys::llmlink_create(&mut raw, role.raw(), cluster_id) })?;
        Ok(DataDist { raw })
    }

    /// The raw handle, for calls into `llmlink_sys` the safe API lacks. It
    /// stays owned by `self`: do not finalize or destroy it.
    pub fn as_raw(&self) -> *mut sys::llmlink_t {
        self.raw
    }

    /// Applies `options` and starts the engine (PROMPT and MIX engines
    /// start listening on `llm.listenIpInfo`).
    pub fn init(&self, options: &Options) -> Result<()> {
        let mut strings: Vec<(CString, CString)> = Vec::with_capacity(options.len());
        for (k, v) in options.iter() {
            strings.push((
                c_string("option key", k)?,
                c_string(&format!("option {k}"), v)?,
            ));
        }
        let opts: Vec<sys::llmlink_option_t> = strings
            .iter()
            .map(|(k, v)| sys::llmlink_option_t {
                key: k.as_ptr(),
                value: v.as_ptr(),
            })
            .collect();
        let ptr = if opts.is_empty() {
            std::ptr::null()
        } else {
            opts.as_ptr()
        };
        // `strings` and `opts` outlive the call, which copies what it keeps.
        Error::check(unsafe { sys::llmlink_init(self.raw, ptr, opts.len()) })
    }

    /// Closes every link and stops the engine. Later link, unlink, check and
    /// init calls get `ENGINE_FINALIZED`; `role`, `cluster_id` and the
    /// stats keep answering. Idempotent.
    ///
    /// Takes `&mut self` because the C side must not run it alongside other
    /// calls on the engine.
    pub fn finalize(&mut self) {
        unsafe { sys::llmlink_finalize(self.raw) }
    }

    /// The engine's role.
    pub fn role(&self) -> Result<Role> {
        let mut raw: sys::llmlink_role_t = 0;
        Error::check(unsafe { sys::llmlink_get_role(self.raw, &mut raw) })?;
        Role::from_raw(raw).ok_or_else(|| {
            Error::new(
                Status::FAILED,
                format!("llmlink_get_role: unknown role value {raw}"),
            )
        })
    }

    /// The engine's cluster id.
    pub fn cluster_id(&self) -> Result<u64> {
        let mut id = 0u64;
        Error::check(unsafe { sys::llmlink_get_cluster_id(self.raw, &mut id) })?;
        Ok(id)
    }

    /// The port of listen address number `index` (in the order of
    /// `llm.listenIpInfo`): the chosen one when port 0 was asked for.
    pub fn listen_port(&self, index: usize) -> Result<u16> {
        let mut port = 0u16;
        Error::check(unsafe { sys::llmlink_get_listen_port(self.raw, index, &mut port) })?;
        Ok(port)
    }

    /// Link and handshake counters.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = sys::llmlink_stats_t {
            version: sys::LLMLINK_STATS_VERSION,
            ..Default::default()
        };
        Error::check(unsafe { sys::llmlink_get_stats(self.raw, &mut s) })?;
        Ok(Stats {
            links: s.links,
            inbound_links: s.inbound_links,
            outbound_links: s.outbound_links,
            handshakes_in_progress: s.handshakes_in_progress,
            handshakes_peak: s.handshakes_peak,
            handshakes_accepted: s.handshakes_accepted,
            handshakes_completed: s.handshakes_completed,
            handshakes_rejected: s.handshakes_rejected,
            handshakes_timed_out: s.handshakes_timed_out,
            protocol_errors: s.protocol_errors,
            links_lost: s.links_lost,
        })
    }

    /// Transfer counters.
    pub fn xfer_stats(&self) -> Result<XferStats> {
        let mut s = sys::llmlink_xfer_stats_t {
            version: sys::LLMLINK_XFER_STATS_VERSION,
            ..Default::default()
        };
        Error::check(unsafe { sys::llmlink_get_xfer_stats(self.raw, &mut s) })?;
        Ok(XferStats {
            caches: s.caches,
            transfers: s.transfers,
            transfers_failed: s.transfers_failed,
            transfers_timed_out: s.transfers_timed_out,
            bytes_requested: s.bytes_requested,
            bytes_served: s.bytes_served,
            requests_served: s.requests_served,
            requests_refused: s.requests_refused,
            tcp_requests: s.tcp_requests,
            shm_requests: s.shm_requests,
            shm_fallbacks: s.shm_fallbacks,
            rdma_requests: s.rdma_requests,
        })
    }

    /// The counters of this engine's link with cluster `cluster_id` (either
    /// direction): `Err` with `NOT_YET_LINK` when there is none or it is
    /// unusable, `ENGINE_FINALIZED` after [`finalize`](Self::finalize).
    pub fn link_stats(&self, cluster_id: u64) -> Result<LinkStats> {
        let mut s = sys::llmlink_link_stats_t {
            version: sys::LLMLINK_LINK_STATS_VERSION,
            ..Default::default()
        };
        Error::check(unsafe { sys::llmlink_get_link_stats(self.raw, cluster_id, &mut s) })?;
        let rdma_protection = RdmaProtection::from_raw(s.rdma_protection).ok_or_else(|| {
            Error::new(
                Status::FAILED,
                format!(
                    "llmlink_get_link_stats: unknown rdma_protection value {}",
                    s.rdma_protection
                ),
            )
        })?;
        // The library never reports more rails than the arrays hold; the
        // bound keeps a bad count from slicing past them.
        let rails = (s.rdma_rails as usize).min(s.rdma_rail_bytes.len());
        Ok(LinkStats {
            rdma_protection,
            peer_write_bytes: s.peer_write_bytes,
            peer_read_bytes: s.peer_read_bytes,
            requests_fenced: s.requests_fenced,
            rdma_rails: rails as u32,
            rdma_rails_up: s.rdma_rails_up,
            rdma_rail_failovers: s.rdma_rail_failovers,
            rdma_rail_repairs: s.rdma_rail_repairs,
            rdma_rail_bytes: s.rdma_rail_bytes[..rails].to_vec(),
            rdma_rail_mtu: s.rdma_rail_mtu[..rails].to_vec(),
        })
    }

    /// Links this engine (DECODER or MIX) to up to 16 clusters in parallel,
    /// all within `timeout`.
    ///
    /// Link outcomes are `Ok`: the overall status (`SUCCESS` when every
    /// cluster linked, `LINK_FAILED` when some did not; those that did stay
    /// linked) and one status per cluster, in order (`SUCCESS`,
    /// `ALREADY_LINK`, `PROCESSING_LINK`, `LINK_FAILED`, `TIMEOUT`,
    /// `VERSION_MISMATCH`, `CLUSTER_ID_MISMATCH`, ...). `Err` is for bad
    /// arguments (`PARAM_INVALID`, more than 16 clusters:
    /// `CLUSTER_NUM_EXCEED_LIMIT`), a PROMPT engine (`ROLE_NOT_ALLOWED`) and
    /// engine errors (`NOT_INITIALIZED`, `ENGINE_FINALIZED`, ...).
    pub fn link_clusters(
        &self,
        clusters: &[ClusterInfo],
        timeout: Duration,
    ) -> Result<(Status, Vec<Status>)> {
        let ms = timeout_ms("link_clusters", timeout)?;
        let c = CClusters::new(clusters)?;
        let mut statuses = vec![0u32; clusters.len()];
        let st = unsafe {
            sys::llmlink_link_clusters(
                self.raw,
                c.as_slice().as_ptr(),
                clusters.len(),
                ms,
                statuses.as_mut_ptr(),
            )
        };
        outcome(st, Status::LINK_FAILED, statuses)
    }

    /// Unlinks up to 16 clusters. `force == false` tells the peer and waits
    /// (within `timeout`) for its acknowledgement, so both ends are freed;
    /// `force == true` frees only the local end at once.
    ///
    /// Outcomes are `Ok`: overall `SUCCESS` or `UNLINK_FAILED`, and per
    /// cluster `SUCCESS`, `NOT_YET_LINK`, `PROCESSING_LINK`,
    /// `NOTIFY_PROMPT_UNLINK_FAILED` or `UNLINK_FAILED`. `Err` as for
    /// [`link_clusters`](Self::link_clusters).
    pub fn unlink_clusters(
        &self,
        clusters: &[ClusterInfo],
        timeout: Duration,
        force: bool,
    ) -> Result<(Status, Vec<Status>)> {
        let ms = timeout_ms("unlink_clusters", timeout)?;
        let c = CClusters::new(clusters)?;
        let mut statuses = vec![0u32; clusters.len()];
        let st = unsafe {
            sys::llmlink_unlink_clusters(
                self.raw,
                c.as_slice().as_ptr(),
                clusters.len(),
                ms,
                force,
                statuses.as_mut_ptr(),
            )
        };
        outcome(st, Status::UNLINK_FAILED, statuses)
    }

    /// `Ok(true)` when a live link with `remote_cluster_id` exists (either
    /// direction), `Ok(false)` when not (`NOT_YET_LINK`); `Err` for engine
    /// errors such as `ENGINE_FINALIZED`.
    pub fn check_link_status(&self, remote_cluster_id: u64) -> Result<bool> {
        let st = Status::from_raw(unsafe {
            sys::llmlink_check_link_status(self.raw, remote_cluster_id)
        });
        match st {
            Status::SUCCESS => Ok(true),
            Status::NOT_YET_LINK => {
                // Not a failure of the call: forget its message.
                unsafe { sys::llmlink_clear_error() };
                Ok(false)
            }
            _ => Err(Error::from_last(st)),
        }
    }

    /// The cache manager of this engine (register, allocate, transfer).
    pub fn cache_manager(&self) -> CacheManager<'_> {
        CacheManager::new(self)
    }
}

impl Drop for DataDist {
    fn drop(&mut self) {
        // `&mut self`: no other call on the engine can be running.
        unsafe { sys::llmlink_destroy(self.raw) }
    }
}

impl std::fmt::Debug for DataDist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDist")
            .field("role", &self.role().ok())
            .field("cluster_id", &self.cluster_id().ok())
            .finish()
    }
}

/// `Ok` for SUCCESS and for `partial` (a per-cluster outcome), else `Err`.
fn outcome(raw: u32, partial: Status, statuses: Vec<u32>) -> Result<(Status, Vec<Status>)> {
    let st = Status::from_raw(raw);
    if st.is_success() || st == partial {
        Ok((st, statuses.into_iter().map(Status::from_raw).collect()))
    } else {
        Err(Error::from_last(st))
    }
}

/// The header this crate was generated from and the library it loaded must
/// be compatible: same major, and same minor while the major is 0 (the
/// ABI of a 0.x release may change).
fn check_library_version() -> Result<()> {
    let loaded = unsafe { sys::llmlink_version_number() };
    let built = sys::LLMLINK_VERSION_NUMBER;
    // MAJOR * 10000 + MINOR * 100 + PATCH: compare major and minor while the
    // major is 0, the major alone after that.
    let unit = if built < 10000 { 100 } else { 10000 };
    if loaded / unit != built / unit {
        return Err(Error::new(
            Status::VERSION_MISMATCH,
            format!("llmlink library version {loaded} does not match the bindings' {built}"),
        ));
    }
    Ok(())
}

//! The `*_async` methods of [`CacheManager`]: the blocking transfers'
//! arguments and checks, returning a [`Transfer`] at once, and the
//! layer-wise push [`transfer_cache_async`](CacheManager::transfer_cache_async).
//!
//! A pull's destination stays borrowed while its transfer lives (the
//! library writes it meanwhile):
//!
//! ```compile_fail,E0502
//! # use llmlink::*;
//! # fn f(d: &DataDist, key: &CacheKey, desc: &CacheDesc) -> Result<()> {
//! let mut dst = d.cache_manager().allocate_blocks_cache(desc, None)?;
//! let t = d.cache_manager().pull_blocks_async(key, &mut dst, &[0], &[0], None, None)?;
//! println!("{}", dst.tensor(0)[0]); // error: dst is borrowed by the transfer
//! t.wait(None)?;
//! # Ok(()) }
//! ```
//!
//! A transfer is used by one thread at a time (`Send`, not `Sync`):
//!
//! ```compile_fail,E0277
//! fn sync<T: Sync>() {}
//! sync::<llmlink::Transfer<'static>>();
//! ```

use llmlink_sys as sys;

use crate::cache_manager::{ptr_or_null, size_arg};
use crate::error::{invalid, Result};
use crate::layer_sync::LayerSynchronizer;
use crate::transfer::Submission;
use crate::{
    CacheId, CacheKey, CacheManager, LayerRange, LocalCache, RawCache, Transfer, TransferOptions,
};

mod sealed {
    pub trait Sealed {}
}

/// Where an asynchronous pull may write: `&mut` of any local cache (the
/// transfer holds it exclusively, so no view of it can be read meanwhile),
/// or `&` of a [`RawCache`] (caller-managed memory the safe API shows no
/// view of, whose registration contract already lets the library write it
/// at any time): the way to have many pulls in flight into one cache.
/// Sealed: only those two.
pub trait PullDestination<'a>: sealed::Sealed {
    /// The cache's id.
    #[doc(hidden)]
    fn dst_id(&self) -> CacheId;
    /// The engine that holds it.
    #[doc(hidden)]
    fn dst_engine(&self) -> *const sys::llmlink_t;
}

impl<C: LocalCache + ?Sized> sealed::Sealed for &mut C {}
impl<'a, C: LocalCache + ?Sized> PullDestination<'a> for &'a mut C {
    fn dst_id(&self) -> CacheId {
        (**self).cache_id()
    }
    fn dst_engine(&self) -> *const sys::llmlink_t {
        (**self).engine()
    }
}

impl sealed::Sealed for &RawCache<'_> {}
impl<'a> PullDestination<'a> for &'a RawCache<'_> {
    fn dst_id(&self) -> CacheId {
        (**self).cache_id()
    }
    fn dst_engine(&self) -> *const sys::llmlink_t {
        (**self).engine()
    }
}

/// The same check as [`CacheManager::own`] for a pull destination.
fn own_dst<'a>(cm: &CacheManager<'_>, what: &str, dst: &impl PullDestination<'a>) -> Result<i64> {
    if !std::ptr::eq(dst.dst_engine(), cm.raw()) {
        return Err(invalid(format!(
            "{what}: cache {} belongs to another engine",
            dst.dst_id()
        )));
    }
    Ok(dst.dst_id().raw())
}

fn layers_ptr(l: &Option<sys::llmlink_layer_range_t>) -> *const sys::llmlink_layer_range_t {
    l.as_ref().map_or(std::ptr::null(), |l| l as *const _)
}

/// One destination of
/// [`transfer_cache_async`](CacheManager::transfer_cache_async)
/// (llm_datadist's `TransferConfig`): the remote cache and the layers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TransferTarget {
    /// The remote cache: [`CacheKey::Blocks`], [`CacheKey::IdAndIndex`] or
    /// [`CacheKey::Cache`]; its cluster id names the link.
    pub dst_key: CacheKey,
    /// Source layers `[start, end)`; `None`: every layer.
    pub src_layers: Option<std::ops::Range<i32>>,
    /// Destination layers (as many as the source's); `None`: every layer.
    pub dst_layers: Option<std::ops::Range<i32>>,
    /// A cache of batch entries: the local entry pushed.
    pub src_batch_index: u32,
}

impl TransferTarget {
    /// Every layer of the source into the same layers of `dst_key`.
    pub fn new(dst_key: CacheKey) -> TransferTarget {
        TransferTarget {
            dst_key,
            src_layers: None,
            dst_layers: None,
            src_batch_index: 0,
        }
    }

    fn to_c(&self) -> sys::llmlink_transfer_target_t {
        let (ss, se) = self
            .src_layers
            .clone()
            .map_or((-1, -1), |r| (r.start, r.end));
        let (ds, de) = self
            .dst_layers
            .clone()
            .map_or((-1, -1), |r| (r.start, r.end));
        sys::llmlink_transfer_target_t {
            dst_key: self.dst_key.to_c(),
            src_layer_start: ss,
            src_layer_end: se,
            dst_layer_start: ds,
            dst_layer_end: de,
            src_batch_index: self.src_batch_index,
        }
    }
}

impl<'e> CacheManager<'e> {
    /// [`pull_blocks`](Self::pull_blocks) without waiting: the arguments are
    /// checked as the blocking call does (an `Err` moves no byte), then the
    /// [`Transfer`] returns at once. It borrows `dst` until it is dropped:
    /// the library writes it meanwhile ([`PullDestination`]: `&mut` of any
    /// cache, or `&` of a [`RawCache`] for many pulls in flight into one
    /// cache).
    pub fn pull_blocks_async<'a>(
        &self,
        src_key: &CacheKey,
        dst: impl PullDestination<'a>,
        src_blocks: &[u64],
        dst_blocks: &[u64],
        layers: Option<&LayerRange>,
        opts: Option<&TransferOptions>,
    ) -> Result<Transfer<'a>>
    where
        'e: 'a,
    {
        let dst_id = own_dst(self, "pull_blocks_async", &dst)?;
        let key = src_key.to_c();
        let layers = layers.map(|l| l.to_c());
        let sub = Submission::new("pull_blocks_async", opts, None)?;
        let mut task = std::ptr::null_mut();
        let st = unsafe {
            sys::llmlink_pull_blocks_async(
                self.raw(),
                &key,
                dst_id,
                ptr_or_null(src_blocks),
                src_blocks.len(),
                ptr_or_null(dst_blocks),
                dst_blocks.len(),
                layers_ptr(&layers),
                sub.options(),
                &mut task,
            )
        };
        sub.finish(st, task, 1)
    }

    /// [`pull_cache`](Self::pull_cache) without waiting (see
    /// [`pull_blocks_async`](Self::pull_blocks_async)).
    pub fn pull_cache_async<'a>(
        &self,
        src_key: &CacheKey,
        dst: impl PullDestination<'a>,
        batch_index: u32,
        size: Option<u64>,
        layers: Option<&LayerRange>,
        opts: Option<&TransferOptions>,
    ) -> Result<Transfer<'a>>
    where
        'e: 'a,
    {
        let dst_id = own_dst(self, "pull_cache_async", &dst)?;
        let size = size_arg("pull_cache_async", size)?;
        let key = src_key.to_c();
        let layers = layers.map(|l| l.to_c());
        let sub = Submission::new("pull_cache_async", opts, None)?;
        let mut task = std::ptr::null_mut();
        let st = unsafe {
            sys::llmlink_pull_cache_async(
                self.raw(),
                &key,
                dst_id,
                batch_index,
                size,
                layers_ptr(&layers),
                sub.options(),
                &mut task,
            )
        };
        sub.finish(st, task, 1)
    }

    /// [`push_blocks`](Self::push_blocks) without waiting. It borrows `src`
    /// shared until it is dropped: the library reads it meanwhile.
    pub fn push_blocks_async<'a, C: LocalCache + ?Sized>(
        &self,
        dst_key: &CacheKey,
        src: &'a C,
        src_blocks: &[u64],
        dst_blocks: &[u64],
        layers: Option<&LayerRange>,
        opts: Option<&TransferOptions>,
    ) -> Result<Transfer<'a>>
    where
        'e: 'a,
    {
        let src_id = self.own("push_blocks_async", src)?;
        let key = dst_key.to_c();
        let layers = layers.map(|l| l.to_c());
        let sub = Submission::new("push_blocks_async", opts, None)?;
        let mut task = std::ptr::null_mut();
        let st = unsafe {
            sys::llmlink_push_blocks_async(
                self.raw(),
                &key,
                src_id,
                ptr_or_null(src_blocks),
                src_blocks.len(),
                ptr_or_null(dst_blocks),
                dst_blocks.len(),
                layers_ptr(&layers),
                sub.options(),
                &mut task,
            )
        };
        sub.finish(st, task, 1)
    }

    /// [`push_cache`](Self::push_cache) without waiting (see
    /// [`push_blocks_async`](Self::push_blocks_async)).
    pub fn push_cache_async<'a, C: LocalCache + ?Sized>(
        &self,
        dst_key: &CacheKey,
        src: &'a C,
        src_batch_index: u32,
        size: Option<u64>,
        layers: Option<&LayerRange>,
        opts: Option<&TransferOptions>,
    ) -> Result<Transfer<'a>>
    where
        'e: 'a,
    {
        let src_id = self.own("push_cache_async", src)?;
        let size = size_arg("push_cache_async", size)?;
        let key = dst_key.to_c();
        let layers = layers.map(|l| l.to_c());
        let sub = Submission::new("push_cache_async", opts, None)?;
        let mut task = std::ptr::null_mut();
        let st = unsafe {
            sys::llmlink_push_cache_async(
                self.raw(),
                &key,
                src_id,
                src_batch_index,
                size,
                layers_ptr(&layers),
                sub.options(),
                &mut task,
            )
        };
        sub.finish(st, task, 1)
    }

    /// Layer-wise push (llm_datadist's `CacheManager.transfer_cache_async`):
    /// the local cache `src` is pushed layer by layer to every target as
    /// soon as `sync` says that layer is computed; the pushes of layer `i`
    /// run while `sync` waits for layer `i + 1`. Blocks caches:
    /// `src_blocks[i]` into `dst_blocks[i]` for every target (both empty
    /// for a cache of batch entries). `tensors_per_layer`: 0 means 2 (K
    /// and V).
    ///
    /// The transfer's result is `Ok` when every target succeeded, else the
    /// first target failure; [`Transfer::results`] gives one result per
    /// target (llm_datadist's `CacheTask.get_results`).
    #[allow(clippy::too_many_arguments)] // llm_datadist's argument list
    pub fn transfer_cache_async<'a, C: LocalCache + ?Sized>(
        &self,
        src: &'a C,
        sync: impl LayerSynchronizer,
        targets: &[TransferTarget],
        src_blocks: &[u64],
        dst_blocks: &[u64],
        tensors_per_layer: u32,
        opts: Option<&TransferOptions>,
    ) -> Result<Transfer<'a>>
    where
        'e: 'a,
    {
        let src_id = self.own("transfer_cache_async", src)?;
        let c_targets: Vec<sys::llmlink_transfer_target_t> =
            targets.iter().map(TransferTarget::to_c).collect();
        let sub = Submission::new("transfer_cache_async", opts, Some(Box::new(sync)))?;
        let (sync_fn, sync_data) = sub.sync_fn();
        let mut task = std::ptr::null_mut();
        let st = unsafe {
            sys::llmlink_transfer_cache_async(
                self.raw(),
                src_id,
                sync_fn,
                sync_data,
                ptr_or_null(&c_targets),
                c_targets.len(),
                ptr_or_null(src_blocks),
                src_blocks.len(),
                ptr_or_null(dst_blocks),
                dst_blocks.len(),
                tensors_per_layer,
                sub.options(),
                &mut task,
            )
        };
        sub.finish(st, task, targets.len())
    }
}

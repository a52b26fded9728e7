//! [`CacheManager`]: register or allocate KV cache memory and move it
//! between linked engines (llm_datadist's `CacheManager`).
//!
//! # Who owns the memory
//!
//! The C library reads and writes cache memory for as long as the cache is
//! registered. So the safe API never lends it memory it could outlive:
//!  - [`allocate_cache`](CacheManager::allocate_cache) /
//!    [`allocate_blocks_cache`](CacheManager::allocate_blocks_cache): the
//!    library owns the memory; [`AllocatedCache`] shows it as `&[u8]` /
//!    `&mut [u8]` slices tied to a borrow of the handle, and dropping the
//!    handle deallocates it;
//!  - [`register_cache`](CacheManager::register_cache) /
//!    [`register_blocks_cache`](CacheManager::register_blocks_cache): the
//!    call takes ownership of the buffers; [`RegisteredCache`] gives them back
//!    from [`unregister`](RegisteredCache::unregister) once the library has
//!    forgotten them, and a drop that cannot unregister leaks them rather
//!    than free memory the library may still touch;
//!  - [`register_cache_raw`](CacheManager::register_cache_raw): `unsafe`,
//!    for memory the caller manages (pinned pools, mmap), with its contract.
//!
//! Every handle borrows the engine, so none outlives it. Local transfers
//! borrow the handle: a pull writes into `&mut` (no slice of it can be alive
//! meanwhile), a push reads from `&`.
//!
//! # Peers
//!
//! A linked peer can read (pull) or write (push) a cache of this engine
//! through the engine's owner thread whenever its own program decides, just
//! as another process can with shared memory. The slices here are exact for
//! this process's own calls; coordinating with peers (not writing a cache a
//! peer is pulling) is the serving protocol's job, as with llm_datadist.
//! The memory is plain bytes (`u8`), which no byte pattern can make invalid.
//!
//! # What the borrow checker refuses
//!
//! A slice of a cache cannot be held across a pull into it:
//!
//! ```compile_fail,E0502
//! # use llmlink::*;
//! # fn f(d: &DataDist, key: &CacheKey, desc: &CacheDesc) -> Result<()> {
//! let mut dst = d.cache_manager().allocate_blocks_cache(desc, None)?;
//! let view = dst.tensor(0);
//! d.cache_manager().pull_blocks(key, &mut dst, &[0], &[0], None)?; // error: dst is borrowed
//! println!("{}", view[0]);
//! # Ok(()) }
//! ```
//!
//! A cache cannot outlive its engine:
//!
//! ```compile_fail,E0505
//! # use llmlink::*;
//! # fn f(desc: &CacheDesc) -> Result<()> {
//! let d = DataDist::new(Role::Decoder, 1)?;
//! let cache = d.cache_manager().allocate_cache(desc, &[])?;
//! drop(d); // error: d is borrowed by cache
//! cache.tensor(0);
//! # Ok(()) }
//! ```
//!
//! A raw cache (caller memory of unknown thread affinity) is not `Send`:
//!
//! ```compile_fail,E0277
//! fn send<T: Send>() {}
//! send::<llmlink::RawCache<'static>>();
//! ```

use std::marker::PhantomData;
use std::ptr::NonNull;

use llmlink_sys as sys;

use crate::error::{invalid, Error, Result};
use crate::{Access, CacheDesc, CacheId, CacheKey, DataDist, LayerRange, Status};

/// The cache manager of one engine ([`DataDist::cache_manager`]).
#[derive(Clone, Copy, Debug)]
pub struct CacheManager<'e> {
    dd: &'e DataDist,
}

mod sealed {
    pub trait Sealed {}
}

/// A cache of this process that transfers can use: [`AllocatedCache`],
/// [`RegisteredCache`] or [`RawCache`]. Sealed: only those three.
pub trait LocalCache: sealed::Sealed {
    /// The cache's id on its engine.
    fn cache_id(&self) -> CacheId;
    /// The engine that holds it (to refuse a handle of another engine).
    #[doc(hidden)]
    fn engine(&self) -> *const sys::llmlink_t;
}

/// NULL for an empty slice: the C side wants NULL with a 0 count.
pub(crate) fn ptr_or_null<T>(v: &[T]) -> *const T {
    if v.is_empty() {
        std::ptr::null()
    } else {
        v.as_ptr()
    }
}

impl<'e> CacheManager<'e> {
    pub(crate) fn new(dd: &'e DataDist) -> CacheManager<'e> {
        CacheManager { dd }
    }

    pub(crate) fn raw(&self) -> *mut sys::llmlink_t {
        self.dd.as_raw()
    }

    pub(crate) fn own<C: LocalCache + ?Sized>(&self, what: &str, cache: &C) -> Result<i64> {
        if !std::ptr::eq(cache.engine(), self.raw()) {
            return Err(invalid(format!(
                "{what}: cache {} belongs to another engine",
                cache.cache_id()
            )));
        }
        Ok(cache.cache_id().0)
    }

    /// Allocates a cache of `desc.shape[0]` batch entries in library memory
    /// (page-aligned, zeroed); `keys` ([`CacheKey::Cache`]) name entries
    /// `0..keys.len()` for peers. Dropping the handle deallocates it.
    pub fn allocate_cache(
        &self,
        desc: &CacheDesc,
        keys: &[CacheKey],
    ) -> Result<AllocatedCache<'e>> {
        self.allocate_cache_with_access(desc, keys, Access::ReadWrite)
    }

    /// [`allocate_cache`](Self::allocate_cache) with what peers may do with
    /// the cache ([`Access`]).
    pub fn allocate_cache_with_access(
        &self,
        desc: &CacheDesc,
        keys: &[CacheKey],
        access: Access,
    ) -> Result<AllocatedCache<'e>> {
        let keys: Vec<sys::llmlink_cache_key_t> = keys.iter().map(|k| k.to_c()).collect();
        let opts = access.to_options();
        self.allocate(desc, |c, id, addrs| unsafe {
            sys::llmlink_allocate_cache_opts(
                self.raw(),
                c,
                ptr_or_null(&keys),
                keys.len(),
                &opts,
                id,
                addrs.as_mut_ptr(),
                addrs.len(),
            )
        })
    }

    /// Allocates a blocks cache (PagedAttention) of `desc.shape[0]` blocks
    /// per tensor in library memory; `blocks_key` ([`CacheKey::Blocks`])
    /// lets peers address it (`None`: it only receives, or is addressed by
    /// id).
    pub fn allocate_blocks_cache(
        &self,
        desc: &CacheDesc,
        blocks_key: Option<&CacheKey>,
    ) -> Result<AllocatedCache<'e>> {
        self.allocate_blocks_cache_with_access(desc, blocks_key, Access::ReadWrite)
    }

    /// [`allocate_blocks_cache`](Self::allocate_blocks_cache) with what peers
    /// may do with the cache ([`Access`]).
    pub fn allocate_blocks_cache_with_access(
        &self,
        desc: &CacheDesc,
        blocks_key: Option<&CacheKey>,
        access: Access,
    ) -> Result<AllocatedCache<'e>> {
        let key = blocks_key.map(|k| k.to_c());
        let opts = access.to_options();
        self.allocate(desc, |c, id, addrs| unsafe {
            sys::llmlink_allocate_blocks_cache_opts(
                self.raw(),
                c,
                key.as_ref().map_or(std::ptr::null(), |k| k as *const _),
                &opts,
                id,
                addrs.as_mut_ptr(),
                addrs.len(),
            )
        })
    }

    fn allocate(
        &self,
        desc: &CacheDesc,
        call: impl FnOnce(&sys::llmlink_cache_desc_t, &mut i64, &mut [u64]) -> u32,
    ) -> Result<AllocatedCache<'e>> {
        let c = desc.to_c()?;
        let mut addrs = vec![0u64; desc.num_tensors as usize];
        let mut id = 0i64;
        Error::check(call(&c, &mut id, &mut addrs))?;
        // Shape validated by the library, so the size is defined; the
        // library allocated exactly this many bytes per tensor.
        let tensor_bytes = desc.tensor_bytes().expect("a desc the library accepted");
        let tensors = addrs
            .iter()
            .map(|&a| NonNull::new(a as usize as *mut u8).expect("library tensor address"))
            .collect();
        Ok(AllocatedCache {
            dd: self.dd,
            id: CacheId(id),
            tensors,
            tensor_bytes,
        })
    }

    /// Registers `tensors` (one buffer per tensor, each exactly
    /// `desc.tensor_bytes()` long) as a cache of `desc.shape[0]` batch
    /// entries; `keys` ([`CacheKey::Cache`]) name entries `0..keys.len()`.
    /// The buffers belong to the handle until
    /// [`unregister`](RegisteredCache::unregister) gives them back.
    pub fn register_cache(
        &self,
        desc: &CacheDesc,
        tensors: Vec<Vec<u8>>,
        keys: &[CacheKey],
    ) -> Result<RegisteredCache<'e>> {
        self.register_cache_with_access(desc, tensors, keys, Access::ReadWrite)
    }

    /// [`register_cache`](Self::register_cache) with what peers may do with
    /// the cache ([`Access`]).
    pub fn register_cache_with_access(
        &self,
        desc: &CacheDesc,
        tensors: Vec<Vec<u8>>,
        keys: &[CacheKey],
        access: Access,
    ) -> Result<RegisteredCache<'e>> {
        let keys: Vec<sys::llmlink_cache_key_t> = keys.iter().map(|k| k.to_c()).collect();
        let opts = access.to_options();
        self.register_owned(desc, tensors, |c, addrs, id| unsafe {
            sys::llmlink_register_cache_opts(
                self.raw(),
                c,
                addrs.as_ptr(),
                addrs.len(),
                ptr_or_null(&keys),
                keys.len(),
                &opts,
                id,
            )
        })
    }

    /// Registers `tensors` as a blocks cache of `desc.shape[0]` blocks per
    /// tensor; `blocks_key` ([`CacheKey::Blocks`]) lets peers address it.
    pub fn register_blocks_cache(
        &self,
        desc: &CacheDesc,
        tensors: Vec<Vec<u8>>,
        blocks_key: Option<&CacheKey>,
    ) -> Result<RegisteredCache<'e>> {
        self.register_blocks_cache_with_access(desc, tensors, blocks_key, Access::ReadWrite)
    }

    /// [`register_blocks_cache`](Self::register_blocks_cache) with what
    /// peers may do with the cache ([`Access`]).
    pub fn register_blocks_cache_with_access(
        &self,
        desc: &CacheDesc,
        tensors: Vec<Vec<u8>>,
        blocks_key: Option<&CacheKey>,
        access: Access,
    ) -> Result<RegisteredCache<'e>> {
        let key = blocks_key.map(|k| k.to_c());
        let opts = access.to_options();
        self.register_owned(desc, tensors, |c, addrs, id| unsafe {
            sys::llmlink_register_blocks_cache_opts(
                self.raw(),
                c,
                addrs.as_ptr(),
                addrs.len(),
                key.as_ref().map_or(std::ptr::null(), |k| k as *const _),
                &opts,
                id,
            )
        })
    }

    fn register_owned(
        &self,
        desc: &CacheDesc,
        mut tensors: Vec<Vec<u8>>,
        call: impl FnOnce(&sys::llmlink_cache_desc_t, &[u64], &mut i64) -> u32,
    ) -> Result<RegisteredCache<'e>> {
        let c = desc.to_c()?;
        // The library cannot see a buffer's length: check it here, or it
        // would read or write past the end.
        if tensors.len() != desc.num_tensors as usize {
            return Err(invalid(format!(
                "register: {} tensor buffers for desc.num_tensors {}",
                tensors.len(),
                desc.num_tensors
            )));
        }
        let want = desc.tensor_bytes().ok_or_else(|| {
            invalid(format!(
                "register: desc.shape {:?} has no valid size",
                desc.shape
            ))
        })?;
        if let Some((i, t)) = tensors.iter().enumerate().find(|(_, t)| t.len() != want) {
            return Err(invalid(format!(
                "register: tensors[{i}] is {} bytes, desc says {want}",
                t.len()
            )));
        }
        let addrs: Vec<u64> = tensors
            .iter_mut()
            .map(|t| t.as_mut_ptr() as usize as u64)
            .collect();
        let mut id = 0i64;
        Error::check(call(&c, &addrs, &mut id))?;
        Ok(RegisteredCache {
            dd: self.dd,
            id: CacheId(id),
            tensors,
        })
    }

    /// Registers memory the caller manages as a cache (tensor `i` at
    /// `addrs[i]`); `keys` as in [`register_cache`](Self::register_cache).
    ///
    /// # Safety
    ///
    /// Each `addrs[i]` must point to `desc.tensor_bytes()` bytes that stay
    /// allocated, and that no Rust reference aliases mutably, from this call
    /// until the returned handle's [`unregister`](RawCache::unregister)
    /// returns `Ok` or the engine is dropped (dropping the handle tries to
    /// unregister but cannot report a failure). The library and linked peers
    /// read and write those bytes in that time.
    pub unsafe fn register_cache_raw(
        &self,
        desc: &CacheDesc,
        addrs: &[u64],
        keys: &[CacheKey],
    ) -> Result<RawCache<'e>> {
        self.register_cache_raw_with_access(desc, addrs, keys, Access::ReadWrite)
    }

    /// [`register_cache_raw`](Self::register_cache_raw) with what peers may
    /// do with the cache ([`Access`]).
    ///
    /// # Safety
    ///
    /// As [`register_cache_raw`](Self::register_cache_raw).
    pub unsafe fn register_cache_raw_with_access(
        &self,
        desc: &CacheDesc,
        addrs: &[u64],
        keys: &[CacheKey],
        access: Access,
    ) -> Result<RawCache<'e>> {
        let c = desc.to_c()?;
        let keys: Vec<sys::llmlink_cache_key_t> = keys.iter().map(|k| k.to_c()).collect();
        let opts = access.to_options();
        let mut id = 0i64;
        Error::check(sys::llmlink_register_cache_opts(
            self.raw(),
            &c,
            ptr_or_null(addrs),
            addrs.len(),
            ptr_or_null(&keys),
            keys.len(),
            &opts,
            &mut id,
        ))?;
        Ok(RawCache {
            dd: self.dd,
            id: CacheId(id),
            unregistered: false,
            _not_send: PhantomData,
        })
    }

    /// Registers memory the caller manages as a blocks cache.
    ///
    /// # Safety
    ///
    /// As [`register_cache_raw`](Self::register_cache_raw).
    pub unsafe fn register_blocks_cache_raw(
        &self,
        desc: &CacheDesc,
        addrs: &[u64],
        blocks_key: Option<&CacheKey>,
    ) -> Result<RawCache<'e>> {
        self.register_blocks_cache_raw_with_access(desc, addrs, blocks_key, Access::ReadWrite)
    }

    /// [`register_blocks_cache_raw`](Self::register_blocks_cache_raw) with
    /// what peers may do with the cache ([`Access`]).
    ///
    /// # Safety
    ///
    /// As [`register_cache_raw`](Self::register_cache_raw).
    pub unsafe fn register_blocks_cache_raw_with_access(
        &self,
        desc: &CacheDesc,
        addrs: &[u64],
        blocks_key: Option<&CacheKey>,
        access: Access,
    ) -> Result<RawCache<'e>> {
        let c = desc.to_c()?;
        let key = blocks_key.map(|k| k.to_c());
        let opts = access.to_options();
        let mut id = 0i64;
        Error::check(sys::llmlink_register_blocks_cache_opts(
            self.raw(),
            &c,
            ptr_or_null(addrs),
            addrs.len(),
            key.as_ref().map_or(std::ptr::null(), |k| k as *const _),
            &opts,
            &mut id,
        ))?;
        Ok(RawCache {
            dd: self.dd,
            id: CacheId(id),
            unregistered: false,
            _not_send: PhantomData,
        })
    }

    /// Removes one key ([`CacheKey::Cache`] or [`CacheKey::Blocks`]) from the
    /// local cache that has it: peers can no longer address it by that key.
    /// Unknown key: `KV_CACHE_NOT_EXIST`. The cache itself stays, held by its
    /// handle.
    pub fn remove_cache_key(&self, key: &CacheKey) -> Result<()> {
        let k = key.to_c();
        Error::check(unsafe { sys::llmlink_remove_cache_key(self.raw(), &k) })
    }

    /// Pulls blocks of the remote cache `src_key` into `dst`:
    /// `src_blocks[i]` into `dst_blocks[i]` for a [`CacheKey::Blocks`] key;
    /// for a [`CacheKey::Cache`] / [`CacheKey::IdAndIndex`] key, `src_blocks`
    /// is empty and that batch entry, seen as consecutive blocks of `dst`'s
    /// block size, fills `dst_blocks` in order. `layers: None` moves every
    /// tensor. Blocks until the bytes are in place.
    pub fn pull_blocks<C: LocalCache + ?Sized>(
        &self,
        src_key: &CacheKey,
        dst: &mut C,
        src_blocks: &[u64],
        dst_blocks: &[u64],
        layers: Option<&LayerRange>,
    ) -> Result<()> {
        let dst_id = self.own("pull_blocks", dst)?;
        let key = src_key.to_c();
        let layers = layers.map(|l| l.to_c());
        // `dst` is borrowed mutably for the whole call: no slice of it can
        // be read or written by this process while the library writes it.
        Error::check(unsafe {
            sys::llmlink_pull_blocks(
                self.raw(),
                &key,
                dst_id,
                ptr_or_null(src_blocks),
                src_blocks.len(),
                ptr_or_null(dst_blocks),
                dst_blocks.len(),
                layers.as_ref().map_or(std::ptr::null(), |l| l as *const _),
            )
        })
    }

    /// Pulls the remote batch entry `src_key` ([`CacheKey::Cache`] or
    /// [`CacheKey::IdAndIndex`]) into batch entry `batch_index` of `dst`.
    /// `size`: bytes per tensor to move (`None`: the whole entry, both
    /// entries of one size). Pulling by the `CacheKey` of a peer's allocated
    /// cache makes the peer drop that key afterwards.
    pub fn pull_cache<C: LocalCache + ?Sized>(
        &self,
        src_key: &CacheKey,
        dst: &mut C,
        batch_index: u32,
        size: Option<u64>,
        layers: Option<&LayerRange>,
    ) -> Result<()> {
        let dst_id = self.own("pull_cache", dst)?;
        let size = size_arg("pull_cache", size)?;
        let key = src_key.to_c();
        let layers = layers.map(|l| l.to_c());
        Error::check(unsafe {
            sys::llmlink_pull_cache(
                self.raw(),
                &key,
                dst_id,
                batch_index,
                size,
                layers.as_ref().map_or(std::ptr::null(), |l| l as *const _),
            )
        })
    }

    /// Pushes blocks of the local cache `src` into the remote blocks cache
    /// `dst_key` ([`CacheKey::Blocks`]): `src_blocks[i]` into
    /// `dst_blocks[i]`.
    pub fn push_blocks<C: LocalCache + ?Sized>(
        &self,
        dst_key: &CacheKey,
        src: &C,
        src_blocks: &[u64],
        dst_blocks: &[u64],
        layers: Option<&LayerRange>,
    ) -> Result<()> {
        let src_id = self.own("push_blocks", src)?;
        let key = dst_key.to_c();
        let layers = layers.map(|l| l.to_c());
        // `src` is borrowed shared: this process can only read it meanwhile.
        Error::check(unsafe {
            sys::llmlink_push_blocks(
                self.raw(),
                &key,
                src_id,
                ptr_or_null(src_blocks),
                src_blocks.len(),
                ptr_or_null(dst_blocks),
                dst_blocks.len(),
                layers.as_ref().map_or(std::ptr::null(), |l| l as *const _),
            )
        })
    }

    /// Pushes batch entry `src_batch_index` of the local cache `src` into
    /// the remote entry `dst_key` ([`CacheKey::IdAndIndex`] or
    /// [`CacheKey::Cache`]).
    pub fn push_cache<C: LocalCache + ?Sized>(
        &self,
        dst_key: &CacheKey,
        src: &C,
        src_batch_index: u32,
        size: Option<u64>,
        layers: Option<&LayerRange>,
    ) -> Result<()> {
        let src_id = self.own("push_cache", src)?;
        let size = size_arg("push_cache", size)?;
        let key = dst_key.to_c();
        let layers = layers.map(|l| l.to_c());
        Error::check(unsafe {
            sys::llmlink_push_cache(
                self.raw(),
                &key,
                src_id,
                src_batch_index,
                size,
                layers.as_ref().map_or(std::ptr::null(), |l| l as *const _),
            )
        })
    }
}

/// `None` -> -1 (the whole entry); a size past i64 cannot be asked for.
pub(crate) fn size_arg(what: &str, size: Option<u64>) -> Result<i64> {
    match size {
        None => Ok(-1),
        Some(n) => i64::try_from(n).map_err(|_| invalid(format!("{what}: size {n} is too large"))),
    }
}

/// A cache in memory the library owns ([`CacheManager::allocate_cache`]).
/// Dropping it deallocates it (the library frees the memory once running
/// transfers end and no key holds it any more).
pub struct AllocatedCache<'e> {
    dd: &'e DataDist,
    id: CacheId,
    tensors: Vec<NonNull<u8>>,
    tensor_bytes: usize,
}

// SAFETY: the tensors are heap memory of the library, not tied to a thread;
// the handle only adds a shared borrow of the engine, which is Sync. Moving
// the handle moves the right to deallocate, which any thread may do
// (deallocate never waits and the engine may be called from any thread).
unsafe impl Send for AllocatedCache<'_> {}
// SAFETY: `&AllocatedCache` only gives `&[u8]` views (reads), and its id to
// push from; writes need `&mut`. Concurrent pushes from one cache are allowed
// by the C contract (transfers from many threads at once).
unsafe impl Sync for AllocatedCache<'_> {}

impl<'e> AllocatedCache<'e> {
    /// The cache's id (peers address it with [`CacheKey::IdAndIndex`]).
    pub fn id(&self) -> CacheId {
        self.id
    }

    /// Number of tensors.
    pub fn num_tensors(&self) -> usize {
        self.tensors.len()
    }

    /// Bytes of each tensor.
    pub fn tensor_bytes(&self) -> usize {
        self.tensor_bytes
    }

    /// Tensor `i` (panics when out of range, as slice indexing does).
    pub fn tensor(&self, i: usize) -> &[u8] {
        // SAFETY: the library allocated tensor_bytes bytes at this address
        // and keeps them while the id is held (until drop); writes from this
        // process need &mut self, so none runs while this borrow lives.
        unsafe { std::slice::from_raw_parts(self.tensors[i].as_ptr(), self.tensor_bytes) }
    }

    /// Tensor `i`, writable (panics when out of range).
    pub fn tensor_mut(&mut self, i: usize) -> &mut [u8] {
        // SAFETY: as `tensor`, and &mut self excludes every other view and
        // every local transfer that uses this cache.
        unsafe { std::slice::from_raw_parts_mut(self.tensors[i].as_ptr(), self.tensor_bytes) }
    }

    /// The address of tensor `i`, for code that hands it to other native
    /// code. Reading or writing through it is the caller's `unsafe` business.
    pub fn tensor_addr(&self, i: usize) -> u64 {
        self.tensors[i].as_ptr() as usize as u64
    }

    /// Deallocates now and reports the outcome (dropping does the same and
    /// ignores it).
    pub fn deallocate(self) -> Result<()> {
        let this = std::mem::ManuallyDrop::new(self);
        Error::check(unsafe { sys::llmlink_deallocate_cache(this.dd.as_raw(), this.id.0) })
    }
}

impl Drop for AllocatedCache<'_> {
    fn drop(&mut self) {
        // Never waits; the library keeps the memory while transfers run.
        unsafe { sys::llmlink_deallocate_cache(self.dd.as_raw(), self.id.0) };
    }
}

impl std::fmt::Debug for AllocatedCache<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AllocatedCache")
            .field("id", &self.id)
            .field("num_tensors", &self.tensors.len())
            .field("tensor_bytes", &self.tensor_bytes)
            .finish()
    }
}

impl sealed::Sealed for AllocatedCache<'_> {}
impl LocalCache for AllocatedCache<'_> {
    fn cache_id(&self) -> CacheId {
        self.id
    }
    fn engine(&self) -> *const sys::llmlink_t {
        self.dd.as_raw()
    }
}

/// A cache in buffers the handle owns ([`CacheManager::register_cache`]).
pub struct RegisteredCache<'e> {
    dd: &'e DataDist,
    id: CacheId,
    // Never resized while registered: the library holds their addresses.
    tensors: Vec<Vec<u8>>,
}

// Send and Sync are the automatic ones (a shared engine borrow and owned
// Vecs): `&RegisteredCache` gives read-only views, writes need `&mut`.

/// A failed [`RegisteredCache::unregister`]: the error and the cache, still
/// registered (try again later, e.g. after `CACHE_IN_USE`).
pub struct UnregisterError<'e> {
    /// Why it failed.
    pub error: Error,
    /// The cache, still registered.
    pub cache: RegisteredCache<'e>,
}

impl std::fmt::Debug for UnregisterError<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnregisterError")
            .field("error", &self.error)
            .finish()
    }
}

impl<'e> RegisteredCache<'e> {
    /// The cache's id.
    pub fn id(&self) -> CacheId {
        self.id
    }

    /// Number of tensors.
    pub fn num_tensors(&self) -> usize {
        self.tensors.len()
    }

    /// Tensor `i` (panics when out of range).
    pub fn tensor(&self, i: usize) -> &[u8] {
        &self.tensors[i]
    }

    /// Tensor `i`, writable (panics when out of range). A slice, not the
    /// Vec: the buffer must not move while registered.
    pub fn tensor_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.tensors[i]
    }

    /// Unregisters (waiting for a transfer that uses the cache, up to
    /// `llm.SyncKvCacheWaitTime`) and gives the buffers back. On failure
    /// (`CACHE_IN_USE`, ...) the cache stays registered and is returned.
    pub fn unregister(self) -> std::result::Result<Vec<Vec<u8>>, Box<UnregisterError<'e>>> {
        match unregister(self.dd, self.id) {
            Ok(()) => {
                let mut this = std::mem::ManuallyDrop::new(self);
                Ok(std::mem::take(&mut this.tensors))
            }
            Err(error) => Err(Box::new(UnregisterError { error, cache: self })),
        }
    }
}

/// Unregisters `id`; "not known" counts as done (the library no longer
/// holds the memory).
fn unregister(dd: &DataDist, id: CacheId) -> Result<()> {
    match Error::check(unsafe { sys::llmlink_unregister_cache(dd.as_raw(), id.0) }) {
        Err(e) if e.status() == Status::KV_CACHE_NOT_EXIST => Ok(()),
        other => other,
    }
}

impl Drop for RegisteredCache<'_> {
    fn drop(&mut self) {
        if unregister(self.dd, self.id).is_err() {
            // The library may still read or write the buffers: leaking them
            // is the only sound choice left to a destructor.
            for t in std::mem::take(&mut self.tensors) {
                std::mem::forget(t);
            }
        }
    }
}

impl std::fmt::Debug for RegisteredCache<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredCache")
            .field("id", &self.id)
            .field("num_tensors", &self.tensors.len())
            .finish()
    }
}

impl sealed::Sealed for RegisteredCache<'_> {}
impl LocalCache for RegisteredCache<'_> {
    fn cache_id(&self) -> CacheId {
        self.id
    }
    fn engine(&self) -> *const sys::llmlink_t {
        self.dd.as_raw()
    }
}

/// A cache in memory the caller manages
/// ([`CacheManager::register_cache_raw`]). Dropping it tries to unregister.
pub struct RawCache<'e> {
    dd: &'e DataDist,
    id: CacheId,
    unregistered: bool,
    // Not Send/Sync by default: the caller's memory may be tied to a thread
    // we know nothing about.
    _not_send: PhantomData<*const u8>,
}

impl<'e> RawCache<'e> {
    /// The cache's id.
    pub fn id(&self) -> CacheId {
        self.id
    }

    /// Unregisters. After `Ok` the library no longer touches the memory.
    pub fn unregister(mut self) -> Result<()> {
        unregister(self.dd, self.id)?;
        self.unregistered = true;
        Ok(())
    }
}

impl Drop for RawCache<'_> {
    fn drop(&mut self) {
        if !self.unregistered {
            let _ = unregister(self.dd, self.id);
        }
    }
}

impl std::fmt::Debug for RawCache<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawCache").field("id", &self.id).finish()
    }
}

impl sealed::Sealed for RawCache<'_> {}
impl LocalCache for RawCache<'_> {
    fn cache_id(&self) -> CacheId {
        self.id
    }
    fn engine(&self) -> *const sys::llmlink_t {
        self.dd.as_raw()
    }
}

//! The synchronizer of
//! [`transfer_cache_async`](crate::CacheManager::transfer_cache_async): the
//! [`LayerSynchronizer`] trait and its `extern "C"` trampoline.
//!
//! # Why a registry and not a pointer
//!
//! The C side calls the synchronizer on the task's driver thread. A cancel
//! makes the task final without waiting for that thread: it may be inside
//! the synchronizer. `llmlink_task_release` does wait for a running call
//! and the synchronizer is never called after it returned (ffi/llmlink.h),
//! so a [`Transfer`](crate::Transfer)'s drop blocks until a synchronizer
//! call in progress returns. The user data is still not a pointer but an id
//! that is never reused, looked up in a process-wide table (belt and
//! braces: a call that found no entry answers `false` without touching
//! freed memory).
//! A call already running holds its own `Arc` of the synchronizer, which is
//! dropped when that call returns.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Says when a layer may be pushed
/// ([`CacheManager::transfer_cache_async`](crate::CacheManager::transfer_cache_async);
/// llm_datadist's `LayerSynchronizer`).
///
/// Called on an engine thread, once per layer in increasing order, while
/// the transfer runs; the pushes of layer `i` run while the call for layer
/// `i + 1` waits. Return `true` once the layer is computed, `false` to end
/// the transfer (targets not finished get [`Status::FAILED`](crate::Status::FAILED)).
/// A panic counts as `false`. It holds an engine thread while it waits:
/// keep waits bounded. After the transfer is cancelled or dropped it may
/// still be running (a cancel does not wait for it), but it is not called
/// again.
pub trait LayerSynchronizer: Send + 'static {
    /// Waits until layer `layer_index` is computed; `timeout` is the
    /// library's limit for the wait (`None`: none).
    fn synchronize_layer(&mut self, layer_index: u32, timeout: Option<Duration>) -> bool;
}

impl<F: FnMut(u32) -> bool + Send + 'static> LayerSynchronizer for F {
    fn synchronize_layer(&mut self, layer_index: u32, _timeout: Option<Duration>) -> bool {
        self(layer_index)
    }
}

type Entry = Arc<Mutex<Box<dyn LayerSynchronizer>>>;

fn table() -> &'static Mutex<HashMap<u64, Entry>> {
    static TABLE: OnceLock<Mutex<HashMap<u64, Entry>>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock_table() -> std::sync::MutexGuard<'static, HashMap<u64, Entry>> {
    // Only inserts and removes run under the lock: never poisoned in a way
    // that leaves the map inconsistent.
    table().lock().unwrap_or_else(|p| p.into_inner())
}

/// Ids start at 1 and are never reused (64 bits do not wrap in practice).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A synchronizer's entry in the table, removed on drop.
pub(crate) struct SyncRegistration {
    id: u64,
}

impl SyncRegistration {
    pub(crate) fn new(sync: Box<dyn LayerSynchronizer>) -> SyncRegistration {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        lock_table().insert(id, Arc::new(Mutex::new(sync)));
        SyncRegistration { id }
    }

    /// The trampoline and its user data (the id, not a pointer).
    pub(crate) fn c_fn(&self) -> (llmlink_sys::llmlink_layer_sync_fn, *mut c_void) {
        (Some(layer_sync), self.id as usize as *mut c_void)
    }
}

impl Drop for SyncRegistration {
    fn drop(&mut self) {
        // Outside the table's lock: dropping the synchronizer runs user code.
        let entry = lock_table().remove(&self.id);
        drop(entry);
    }
}

/// The `llmlink_layer_sync_fn` trampoline.
unsafe extern "C" fn layer_sync(layer_index: u32, timeout_ms: i32, user_data: *mut c_void) -> bool {
    let id = user_data as usize as u64;
    let Some(entry) = lock_table().get(&id).cloned() else {
        return false; // the transfer is gone: stop
    };
    let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
    // A panic must not unwind into C: it counts as false.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut s = entry.lock().unwrap_or_else(|p| p.into_inner());
        s.synchronize_layer(layer_index, timeout)
    }))
    .unwrap_or(false)
}

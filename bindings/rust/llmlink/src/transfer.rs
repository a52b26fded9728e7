//! [`Transfer`]: one pull or push submitted without waiting (a C
//! `llmlink_task_t`), with `wait`, `cancel`, `status` and
//! [`std::future::Future`].
//!
//! # How a transfer reaches its waker
//!
//! Every submission passes the C side an `on_done` callback (the
//! `extern "C"` trampoline [`on_done`]) whose user data is one reference of
//! an `Arc<Shared>`. The callback runs once when the status becomes final,
//! on an engine thread (or on the thread whose cancel or drop made it
//! final, inside that call): it stores the status, takes the stored
//! [`Waker`] and wakes it, then gives its reference back. The [`Transfer`]
//! holds another reference, so the shared state lives until the handle is
//! released *and* the callback has run, whichever comes last. Nothing here
//! polls, and no runtime is assumed: any executor's waker works.

use std::ffi::{c_void, CStr};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use llmlink_sys as sys;

use crate::error::{invalid, timeout_ms, Error, Result};
use crate::layer_sync::{LayerSynchronizer, SyncRegistration};
use crate::Status;

/// Options of one submission (`llmlink_task_options_t`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransferOptions {
    /// The transfer's own limit from submission (whole milliseconds);
    /// `None`: `llm.SyncKvCacheWaitTime`, as the blocking calls. A transfer
    /// past it ends with [`Status::WAIT_PROCESS_TIMEOUT`].
    pub timeout: Option<Duration>,
    /// A notification (1 to [`MAX_NOTIFY_BYTES`](crate::MAX_NOTIFY_BYTES)
    /// bytes, copied at submission) that the link's peer receives once
    /// every byte of the transfer is in place on both sides, never before.
    /// If the bytes moved but the peer refused it, the transfer ends with
    /// that status ([`Status::NOTIFY_QUEUE_FULL`], ...) and a message that
    /// says the bytes moved.
    pub notify: Option<Vec<u8>>,
}

impl TransferOptions {
    /// The defaults (no own timeout, no notification).
    pub fn new() -> TransferOptions {
        TransferOptions::default()
    }

    /// With a timeout of its own.
    pub fn timeout(mut self, timeout: Duration) -> TransferOptions {
        self.timeout = Some(timeout);
        self
    }

    /// With a notification sent once the bytes are in place.
    pub fn notify(mut self, data: impl Into<Vec<u8>>) -> TransferOptions {
        self.notify = Some(data.into());
        self
    }
}

/// What the C callbacks and the handle share.
pub(crate) struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    // The final status and message as the callback saw them: a thread it
    // wakes may run before the library marks the task done for other
    // threads (its status and message calls answer "pending" until then).
    done: Option<(Status, String)>,
    waker: Option<Waker>,
}

impl Shared {
    pub(crate) fn new() -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still has
        // consistent data (two plain fields).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `on_done` trampoline: `user_data` is a reference of an
/// `Arc<Shared>` given to C at submission; this call consumes it (the C
/// side calls it exactly once per task that was created).
unsafe extern "C" fn on_done(
    task: *mut sys::llmlink_task_t,
    status: sys::llmlink_status_t,
    user_data: *mut c_void,
) {
    // SAFETY: `user_data` came from Arc::into_raw in `Submission::new` and
    // is given back once, here.
    let shared = unsafe { Arc::from_raw(user_data as *const Shared) };
    let status = Status::from_raw(status);
    let message = if status.is_success() {
        String::new()
    } else {
        // The header allows this call in the callback, where the task is
        // alive and final for this thread.
        unsafe { CStr::from_ptr(sys::llmlink_task_error(task)) }
            .to_string_lossy()
            .into_owned()
    };
    let waker = {
        let mut st = shared.lock();
        st.done = Some((status, message));
        st.waker.take()
    };
    // After the lock: a waker may run the executor's code. A panic must not
    // unwind into C.
    if let Some(w) = waker {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake()));
    }
}

/// The C options of one submission and the references given to C, taken
/// back by [`Submission::finish`].
pub(crate) struct Submission {
    shared: Arc<Shared>,
    opts: sys::llmlink_task_options_t,
    // The notification's bytes, alive until the submit call returned (C
    // copies them).
    _notify: Option<Vec<u8>>,
    sync: Option<SyncRegistration>,
}

impl Submission {
    pub(crate) fn new(
        what: &str,
        opts: Option<&TransferOptions>,
        sync: Option<Box<dyn LayerSynchronizer>>,
    ) -> Result<Submission> {
        let timeout = match opts.and_then(|o| o.timeout) {
            None => 0,
            Some(d) if d.is_zero() => {
                return Err(invalid(format!(
                    "{what}: options.timeout is 0 (None: the engine's llm.SyncKvCacheWaitTime)"
                )))
            }
            Some(d) => timeout_ms(what, d)?.max(1),
        };
        let notify = opts.and_then(|o| o.notify.clone());
        let shared = Shared::new();
        let mut c = sys::llmlink_task_options_t {
            version: sys::LLMLINK_TASK_OPTIONS_VERSION,
            timeout_ms: timeout,
            on_done: Some(on_done),
            user_data: std::ptr::null_mut(),
            notify_data: std::ptr::null(),
            notify_len: 0,
        };
        if let Some(n) = &notify {
            // An empty one goes to C as such, which refuses it by name.
            c.notify_data = n.as_ptr() as *const c_void;
            c.notify_len = n.len();
        }
        // The reference is taken last: nothing above can fail after it.
        c.user_data = Arc::into_raw(Arc::clone(&shared)) as *mut c_void;
        Ok(Submission {
            shared,
            opts: c,
            _notify: notify,
            sync: sync.map(SyncRegistration::new),
        })
    }

    pub(crate) fn options(&self) -> &sys::llmlink_task_options_t {
        &self.opts
    }

    /// The synchronizer trampoline and its user data.
    pub(crate) fn sync_fn(&self) -> (sys::llmlink_layer_sync_fn, *mut c_void) {
        self.sync
            .as_ref()
            .map_or((None, std::ptr::null_mut()), SyncRegistration::c_fn)
    }

    /// The outcome of the submit call: a [`Transfer`], or the error (read
    /// first, while it is the thread's last message) with every reference
    /// given to C taken back (a failed submit creates no task, so no
    /// callback runs).
    pub(crate) fn finish<'a>(
        self,
        raw_status: u32,
        task: *mut sys::llmlink_task_t,
        num_results: usize,
    ) -> Result<Transfer<'a>> {
        let status = Status::from_raw(raw_status);
        let task = NonNull::new(task);
        match (status.is_success(), task) {
            (true, Some(raw)) => Ok(Transfer {
                raw,
                shared: self.shared,
                sync: self.sync,
                num_results,
                _borrow: PhantomData,
            }),
            (true, None) => {
                // Against the header: whether C kept the references is
                // unknown, so they are leaked rather than freed.
                std::mem::forget(self.shared);
                Err(Error::new(
                    Status::FAILED,
                    "the library returned SUCCESS and no task",
                ))
            }
            (false, _) => {
                let err = Error::from_last(status);
                // SAFETY: from Arc::into_raw in `new`, and C did not keep it
                // (no task was created). The synchronizer's registration
                // goes with `self`.
                unsafe { drop(Arc::from_raw(self.opts.user_data as *const Shared)) };
                Err(err)
            }
        }
    }
}

/// One pull or push in flight (a C `llmlink_task_t`), from the `*_async`
/// methods of [`CacheManager`](crate::CacheManager).
///
/// It borrows the engine and the local cache for its whole life: a pull's
/// destination mutably (the library writes it meanwhile), a push's source
/// shared. Its final result comes from [`wait`](Self::wait),
/// [`cancel`](Self::cancel) or `.await` (it is a [`Future`] whose waker
/// the library's completion callback wakes: no polling thread, any
/// runtime), and is `Ok(())` when every byte is in place, else the error
/// with the transfer's own message.
///
/// **Dropping it releases it; a transfer still running is cancelled first
/// (fenced, as [`cancel`](Self::cancel)), so dropping can block up to the
/// transport's fence time (tcp push: 1 s); a layer-wise transfer's drop
/// also waits for a synchronizer call in progress to return.** No byte of it lands after the
/// drop, so the borrows can end. A `std::mem::forget` skips that: the
/// transfer then runs to its end and the handle leaks (its bytes may land
/// later, as a linked peer's may).
pub struct Transfer<'a> {
    raw: NonNull<sys::llmlink_task_t>,
    shared: Arc<Shared>,
    // transfer_cache_async: the synchronizer's entry, removed after release
    // (see layer_sync.rs).
    sync: Option<SyncRegistration>,
    num_results: usize,
    // The borrows of the engine and the cache; `*const` makes it !Sync
    // (see below).
    _borrow: PhantomData<(&'a (), *const ())>,
}

// SAFETY: a task handle is not tied to the thread that submitted it (the
// library keeps no thread-local state per task; a failed call's message is
// read from the task itself). The shared state is Arc<Mutex<..>>, and the
// synchronizer's registration is an id. So the handle may move to another
// thread, e.g. with the future that awaits it.
unsafe impl Send for Transfer<'_> {}
// Not Sync: ffi/llmlink.h does not promise that two calls on one task may
// run at once (a wait on one thread while another cancels), so a Transfer
// is used by one thread at a time (`&self` methods included).

impl Transfer<'_> {
    /// The raw handle, for calls into `llmlink_sys` the safe API lacks. It
    /// stays owned by `self`: do not release it.
    pub fn as_raw(&self) -> *mut sys::llmlink_task_t {
        self.raw.as_ptr()
    }

    /// Non-blocking: [`Status::TASK_PENDING`] while running, else the final
    /// status.
    pub fn status(&self) -> Status {
        if let Some((st, _)) = &self.shared.lock().done {
            return *st;
        }
        let st = Status::from_raw(unsafe { sys::llmlink_task_status(self.raw.as_ptr()) });
        if !st.is_success() {
            // The call copies the task's message into this thread's last
            // error; it is not a failure of the call.
            unsafe { sys::llmlink_clear_error() };
        }
        st
    }

    /// True once the status is final.
    pub fn is_done(&self) -> bool {
        self.status() != Status::TASK_PENDING
    }

    /// Waits up to `timeout` (`None`: no limit; `Some(ZERO)`: only looks)
    /// for the final result. When the time runs out first: `Err` with
    /// [`Status::TASK_PENDING`], and the transfer goes on.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<()> {
        if let Some(r) = self.callback_outcome() {
            return r;
        }
        let ms = match timeout {
            None => -1,
            Some(d) => timeout_ms("Transfer::wait", d)?,
        };
        let st = Status::from_raw(unsafe { sys::llmlink_task_wait(self.raw.as_ptr(), ms) });
        if st == Status::TASK_PENDING {
            unsafe { sys::llmlink_clear_error() };
            // The callback may have run meanwhile, before the library marks
            // the task done for this thread.
            return self.callback_outcome().unwrap_or_else(|| {
                Err(Error::new(
                    st,
                    format!("Transfer::wait: still running after {timeout:?}"),
                ))
            });
        }
        self.outcome(st)
    }

    /// The final result as the completion callback saw it, if it ran.
    fn callback_outcome(&self) -> Option<Result<()>> {
        let st = self.shared.lock();
        let (status, msg) = st.done.as_ref()?;
        Some(if status.is_success() {
            Ok(())
        } else {
            Err(Error::new(*status, msg.clone()))
        })
    }

    /// Cancels the transfer and returns its final result. When it returns,
    /// no byte of the transfer lands in either side's memory any more (a
    /// pull's destination here, a push's on the peer). A transfer that had
    /// not started, or that its transport stopped between requests, ends
    /// [`Status::CANCELLED`] and its link stays usable; one its transport
    /// could only stop by closing the link ends
    /// [`Status::CANCELLED_LINK_CLOSED`]. A transfer that had finished
    /// keeps its result (`Ok(())` when it had succeeded). Bounded by the
    /// transport's fence time (tcp push: 1 s).
    pub fn cancel(&self) -> Result<()> {
        let st = Status::from_raw(unsafe { sys::llmlink_task_cancel(self.raw.as_ptr()) });
        self.outcome(st)
    }

    /// Per-target results of a
    /// [`transfer_cache_async`](crate::CacheManager::transfer_cache_async)
    /// transfer, in the order of its targets: each target's final status,
    /// or `None` for a target none of whose layers has been sent yet
    /// (llm_datadist's `None`). Any other transfer: one result, its status.
    pub fn results(&self) -> Result<Vec<Option<Status>>> {
        let mut raw = vec![0u32; self.num_results];
        Error::check(unsafe {
            sys::llmlink_task_results(self.raw.as_ptr(), raw.as_mut_ptr(), raw.len())
        })?;
        Ok(raw
            .into_iter()
            .map(Status::from_raw)
            .map(|s| (s != Status::TASK_PENDING).then_some(s))
            .collect())
    }

    /// `Ok` for SUCCESS, else the error with the task's message.
    fn outcome(&self, st: Status) -> Result<()> {
        if st.is_success() {
            return Ok(());
        }
        if let Some(r) = self.callback_outcome() {
            return r;
        }
        // Valid until release; never NULL (header).
        let msg = unsafe { CStr::from_ptr(sys::llmlink_task_error(self.raw.as_ptr())) }
            .to_string_lossy()
            .into_owned();
        Err(Error::new(st, msg))
    }
}

impl Future for Transfer<'_> {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let done = {
            let mut st = self.shared.lock();
            if st.done.is_none() {
                // The callback sets `done` under this lock before it takes
                // the waker, so a completion cannot slip between the check
                // and the store.
                match &st.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => st.waker = Some(cx.waker().clone()),
                }
            }
            st.done.clone()
        };
        match done {
            Some((s, _)) if s.is_success() => Poll::Ready(Ok(())),
            Some((s, msg)) => Poll::Ready(Err(Error::new(s, msg))),
            None => Poll::Pending,
        }
    }
}

impl Drop for Transfer<'_> {
    fn drop(&mut self) {
        // Cancels first when still running (fenced), then frees the handle.
        unsafe { sys::llmlink_task_release(self.raw.as_ptr()) };
        // Then the synchronizer's entry: a late call of the driver finds
        // none (layer_sync.rs).
        self.sync.take();
    }
}

impl std::fmt::Debug for Transfer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfer")
            .field("status", &self.status())
            .finish()
    }
}

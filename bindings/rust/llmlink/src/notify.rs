//! Notifications between linked engines and the engine's event descriptor
//! ([`DataDist::notify`], [`DataDist::get_notifies`],
//! [`DataDist::event_fd`], [`DataDist::poll_done`]).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use llmlink_sys as sys;

use crate::error::{timeout_ms, Error, Result};
use crate::DataDist;

/// Most bytes of one notification.
pub const MAX_NOTIFY_BYTES: usize = sys::LLMLINK_MAX_NOTIFY_BYTES as usize;

/// A received notification ([`DataDist::get_notifies`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Notification {
    /// The sender's cluster id.
    pub cluster_id: u64,
    /// What it sent (1 to [`MAX_NOTIFY_BYTES`] bytes).
    pub data: Vec<u8>,
}

/// The engine's event descriptor, borrowed from it ([`DataDist::event_fd`]):
/// for epoll / poll / mio / tokio's `AsyncFd`. Level-triggered: readable
/// exactly while a finished transfer has not been collected by
/// [`DataDist::poll_done`] or a received notification waits in
/// [`DataDist::get_notifies`]; it never needs to be read, and the engine
/// owns it (it is not closed on drop).
#[derive(Clone, Copy, Debug)]
pub struct EventFd<'e> {
    fd: BorrowedFd<'e>,
}

impl AsRawFd for EventFd<'_> {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for EventFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd
    }
}

/// Notifications fetched per C call: 16 x 4 KiB on the heap.
const FETCH_BATCH: usize = 16;

impl DataDist {
    /// Sends `data` (1 to [`MAX_NOTIFY_BYTES`] bytes) to the linked engine
    /// `cluster_id` and waits, up to `timeout`, for it to be queued there.
    /// Ordered per link. Errors: [`NOTIFY_QUEUE_FULL`](crate::Status::NOTIFY_QUEUE_FULL)
    /// (the peer's queue is full: nothing queued, try later),
    /// `NOT_YET_LINK` (no usable link, or it died before the answer),
    /// `TIMEOUT`, `PARAM_INVALID` (a size out of range).
    pub fn notify(&self, cluster_id: u64, data: &[u8], timeout: Duration) -> Result<()> {
        let ms = timeout_ms("notify", timeout)?;
        Error::check(unsafe {
            sys::llmlink_notify(
                self.as_raw(),
                cluster_id,
                data.as_ptr() as *const std::ffi::c_void,
                data.len(),
                ms,
            )
        })
    }

    /// Takes every received notification, oldest first (per link in the
    /// order sent); empty when none.
    pub fn get_notifies(&self) -> Result<Vec<Notification>> {
        let mut buf: Vec<sys::llmlink_notification_t> = vec![
            sys::llmlink_notification_t {
                cluster_id: 0,
                len: 0,
                data: [0u8; MAX_NOTIFY_BYTES],
            };
            FETCH_BATCH
        ];
        let mut out = Vec::new();
        loop {
            let mut count = 0usize;
            Error::check(unsafe {
                sys::llmlink_get_notifies(self.as_raw(), buf.as_mut_ptr(), buf.len(), &mut count)
            })?;
            // The library's answer is checked before use: a count or a
            // length past the buffer would read past it.
            for n in &buf[..count.min(buf.len())] {
                let len = (n.len as usize).min(MAX_NOTIFY_BYTES);
                out.push(Notification {
                    cluster_id: n.cluster_id,
                    data: n.data[..len].to_vec(),
                });
            }
            if count < buf.len() {
                return Ok(out);
            }
        }
    }

    /// The engine's event descriptor (after [`init`](Self::init); before:
    /// `NOT_INITIALIZED`), borrowed for the engine's life.
    pub fn event_fd(&self) -> Result<EventFd<'_>> {
        let mut fd: std::os::raw::c_int = -1;
        Error::check(unsafe { sys::llmlink_get_event_fd(self.as_raw(), &mut fd) })?;
        if fd < 0 {
            return Err(Error::new(
                crate::Status::FAILED,
                format!("llmlink_get_event_fd returned fd {fd}"),
            ));
        }
        // SAFETY: the engine owns the descriptor and keeps it open until
        // llmlink_destroy, which needs `self` by value (Drop): the borrow
        // ends before.
        Ok(EventFd {
            fd: unsafe { BorrowedFd::borrow_raw(fd) },
        })
    }

    /// Collects the transfers that finished since the last call (each
    /// once), which clears the event descriptor's "transfer finished"
    /// level; returns how many. The [`Transfer`](crate::Transfer) handles
    /// themselves stay where they are: ask them (`is_done`, `wait(ZERO)`,
    /// or their futures, woken by the library's callback anyway). A program
    /// that waits on [`event_fd`](Self::event_fd) calls this and
    /// [`get_notifies`](Self::get_notifies) each time it is readable.
    pub fn poll_done(&self) -> Result<usize> {
        let mut tasks = [std::ptr::null_mut::<sys::llmlink_task_t>(); 64];
        let mut total = 0;
        loop {
            let mut count = 0usize;
            Error::check(unsafe {
                sys::llmlink_task_poll_done(
                    self.as_raw(),
                    tasks.as_mut_ptr(),
                    tasks.len(),
                    &mut count,
                )
            })?;
            total += count.min(tasks.len());
            if count < tasks.len() {
                return Ok(total);
            }
        }
    }
}

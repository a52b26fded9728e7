//! [`Error`]: a failed call's status and the C side's message.

use std::ffi::CStr;
use std::fmt;

use llmlink_sys as sys;

use crate::Status;

/// A failed call: the status and the message that names the argument, peer
/// or errno behind it.
///
/// Built right after the failing C call, on the thread that made it, so the
/// message is that call's (the C side keeps one message per thread, valid
/// only until the thread's next llmlink call).
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with the calling thread's last message from the C library.
    /// Call it at once after the failing call.
    pub(crate) fn from_last(status: Status) -> Error {
        let message = unsafe { CStr::from_ptr(sys::llmlink_last_error()) }
            .to_string_lossy()
            .into_owned();
        Error { status, message }
    }

    /// An error found by the Rust side before calling C (a length that does
    /// not fit, a string with a NUL byte, ...).
    pub(crate) fn new(status: Status, message: impl Into<String>) -> Error {
        Error {
            status,
            message: message.into(),
        }
    }

    /// `Ok` for SUCCESS, else the error with the last message.
    pub(crate) fn check(raw: u32) -> Result<()> {
        let status = Status::from_raw(raw);
        if status.is_success() {
            Ok(())
        } else {
            Err(Error::from_last(status))
        }
    }

    /// The status of the failure.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The C side's message (or the Rust side's, for checks made before the
    /// call). May be empty when the library gave none.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}: {}", self.status, self.status.description())
        } else {
            write!(f, "{}: {}", self.status, self.message)
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("status", &self.status)
            .field("message", &self.message)
            .finish()
    }
}

impl std::error::Error for Error {}

/// A Rust-side PARAM_INVALID for an argument that cannot reach C.
pub(crate) fn invalid(message: impl Into<String>) -> Error {
    Error::new(Status::PARAM_INVALID, message)
}

/// A C string of `s`, or PARAM_INVALID naming `what` when it holds a NUL.
pub(crate) fn c_string(what: &str, s: &str) -> Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(|_| invalid(format!("{what} {s:?} contains a NUL byte")))
}

/// A timeout in whole milliseconds as the C calls take it. Zero is passed
/// on: the C side refuses it with a message of its own.
pub(crate) fn timeout_ms(what: &str, timeout: std::time::Duration) -> Result<i32> {
    i32::try_from(timeout.as_millis()).map_err(|_| {
        invalid(format!(
            "{what}: timeout {timeout:?} is more than {} ms",
            i32::MAX
        ))
    })
}

/// The calling thread's last failure message from the C library (`""` if
/// none). After [`link_clusters`](crate::DataDist::link_clusters) or
/// [`unlink_clusters`](crate::DataDist::unlink_clusters) returned `Ok` with a
/// failure status, it names the cluster that failed and why; read it before
/// the next llmlink call on this thread, which may replace it.
pub fn last_error() -> String {
    unsafe { CStr::from_ptr(sys::llmlink_last_error()) }
        .to_string_lossy()
        .into_owned()
}

//! The process-wide log callback.

use std::ffi::CStr;
use std::os::raw::{c_char, c_void};
use std::sync::Mutex;

use llmlink_sys as sys;

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Nothing (as a maximum: logging off).
    None,
    /// Errors.
    Error,
    /// Warnings.
    Warn,
    /// Informational lines.
    Info,
    /// Debug lines.
    Debug,
}

impl LogLevel {
    fn raw(self) -> sys::llmlink_log_level_t {
        match self {
            LogLevel::None => sys::LLMLINK_LOG_NONE,
            LogLevel::Error => sys::LLMLINK_LOG_ERROR,
            LogLevel::Warn => sys::LLMLINK_LOG_WARN,
            LogLevel::Info => sys::LLMLINK_LOG_INFO,
            LogLevel::Debug => sys::LLMLINK_LOG_DEBUG,
        }
    }

    fn from_raw(raw: sys::llmlink_log_level_t) -> LogLevel {
        match raw {
            sys::LLMLINK_LOG_ERROR => LogLevel::Error,
            sys::LLMLINK_LOG_WARN => LogLevel::Warn,
            sys::LLMLINK_LOG_INFO => LogLevel::Info,
            sys::LLMLINK_LOG_DEBUG => LogLevel::Debug,
            _ => LogLevel::None,
        }
    }
}

type Callback = Box<dyn Fn(LogLevel, &str) + Send + Sync + 'static>;

// The callback the C side points at. A Box inside a Box: the inner one is a
// fat pointer, the outer one gives C a thin, stable user_data pointer.
static CURRENT: Mutex<Option<Box<Callback>>> = Mutex::new(None);

unsafe extern "C" fn trampoline(
    level: sys::llmlink_log_level_t,
    msg: *const c_char,
    user: *mut c_void,
) {
    if user.is_null() || msg.is_null() {
        return;
    }
    // SAFETY: user is the Box<Callback> installed with this trampoline; the
    // C side calls it under the lock that set_log_callback takes to swap it,
    // so it is not freed while this runs.
    let cb = &*(user as *const Callback);
    let text = CStr::from_ptr(msg).to_string_lossy();
    // A panic must not unwind into C.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cb(LogLevel::from_raw(level), &text)
    }));
}

/// Sends the library's log lines at or below `max_level` to `callback`
/// (process-wide, every engine). The callback may run on any thread,
/// including the engines' internal ones, with a lock of the library held:
/// it must return quickly and must not call back into llmlink.
pub fn set_log_callback<F>(max_level: LogLevel, callback: F)
where
    F: Fn(LogLevel, &str) + Send + Sync + 'static,
{
    let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    let boxed: Box<Callback> = Box::new(Box::new(callback));
    let user = &*boxed as *const Callback as *mut c_void;
    unsafe { sys::llmlink_set_log_callback(Some(trampoline), user, max_level.raw()) };
    // The C side swapped under its lock: the old callback is no longer
    // reachable and can be freed.
    *current = Some(boxed);
}

/// Removes the log callback (the library then prints nothing, unless the
/// environment variable `LLMLINK_LOG` asks for stderr).
pub fn clear_log_callback() {
    let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    unsafe { sys::llmlink_set_log_callback(None, std::ptr::null_mut(), sys::LLMLINK_LOG_NONE) };
    *current = None;
}

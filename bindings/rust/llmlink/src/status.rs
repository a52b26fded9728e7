//! [`Status`]: the status codes of llm_datadist's `LLMStatusCode`, plus
//! llmlink's own.

use std::ffi::CStr;
use std::fmt;

use llmlink_sys as sys;

/// A status code as the C library returns it.
///
/// A newtype over the raw value rather than a Rust `enum`: a code this crate
/// does not know (from a newer library) is still a valid `Status`, shown as
/// `LLM_UNKNOWN_STATUS`, never undefined behaviour.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status(u32);

macro_rules! statuses {
    ($($(#[$doc:meta])* $name:ident = $c:ident;)*) => {
        impl Status {
            $($(#[$doc])* pub const $name: Status = Status(sys::$c);)*
        }
    };
}

statuses! {
    /// The call succeeded.
    SUCCESS = LLMLINK_SUCCESS;
    /// Unspecified failure.
    FAILED = LLMLINK_FAILED;
    /// A transfer did not finish within `llm.SyncKvCacheWaitTime`.
    WAIT_PROCESS_TIMEOUT = LLMLINK_WAIT_PROCESS_TIMEOUT;
    /// No cache has that key or id.
    KV_CACHE_NOT_EXIST = LLMLINK_KV_CACHE_NOT_EXIST;
    /// The request was made already.
    REPEAT_REQUEST = LLMLINK_REPEAT_REQUEST;
    /// The request is already complete.
    REQUEST_ALREADY_COMPLETED = LLMLINK_REQUEST_ALREADY_COMPLETED;
    /// An argument is invalid; the error message names it.
    PARAM_INVALID = LLMLINK_PARAM_INVALID;
    /// The engine was finalized.
    ENGINE_FINALIZED = LLMLINK_ENGINE_FINALIZED;
    /// No link with that cluster.
    NOT_YET_LINK = LLMLINK_NOT_YET_LINK;
    /// That cluster is linked already.
    ALREADY_LINK = LLMLINK_ALREADY_LINK;
    /// Linking failed (overall: some cluster did not link).
    LINK_FAILED = LLMLINK_LINK_FAILED;
    /// Unlinking failed.
    UNLINK_FAILED = LLMLINK_UNLINK_FAILED;
    /// The local end was freed but the peer was not told.
    NOTIFY_PROMPT_UNLINK_FAILED = LLMLINK_NOTIFY_PROMPT_UNLINK_FAILED;
    /// More clusters than one call or the engine allows.
    CLUSTER_NUM_EXCEED_LIMIT = LLMLINK_CLUSTER_NUM_EXCEED_LIMIT;
    /// Another call is linking or unlinking that cluster.
    PROCESSING_LINK = LLMLINK_PROCESSING_LINK;
    /// Device memory exhausted.
    DEVICE_OUT_OF_MEMORY = LLMLINK_DEVICE_OUT_OF_MEMORY;
    /// The prefix exists already.
    PREFIX_ALREADY_EXIST = LLMLINK_PREFIX_ALREADY_EXIST;
    /// No such prefix.
    PREFIX_NOT_EXIST = LLMLINK_PREFIX_NOT_EXIST;
    /// Sequence longer than allowed.
    SEQ_LEN_OVER_LIMIT = LLMLINK_SEQ_LEN_OVER_LIMIT;
    /// No free block.
    NO_FREE_BLOCK = LLMLINK_NO_FREE_BLOCK;
    /// Blocks memory exhausted.
    BLOCKS_OUT_OF_MEMORY = LLMLINK_BLOCKS_OUT_OF_MEMORY;
    /// A link exists.
    EXIST_LINK = LLMLINK_EXIST_LINK;
    /// The feature is not enabled or not supported here.
    FEATURE_NOT_ENABLED = LLMLINK_FEATURE_NOT_ENABLED;
    /// The call's timeout expired.
    TIMEOUT = LLMLINK_TIMEOUT;
    /// The link is busy.
    LINK_BUSY = LLMLINK_LINK_BUSY;
    /// Host memory exhausted.
    OUT_OF_MEMORY = LLMLINK_OUT_OF_MEMORY;
    /// The call needs `init` first.
    NOT_INITIALIZED = LLMLINK_NOT_INITIALIZED;
    /// `init` was called twice.
    ALREADY_INITIALIZED = LLMLINK_ALREADY_INITIALIZED;
    /// The peer (or the loaded library) speaks another version.
    VERSION_MISMATCH = LLMLINK_VERSION_MISMATCH;
    /// The peer sent a malformed frame.
    PROTOCOL_ERROR = LLMLINK_PROTOCOL_ERROR;
    /// The operation is not allowed for this engine's role.
    ROLE_NOT_ALLOWED = LLMLINK_ROLE_NOT_ALLOWED;
    /// The peer is not the cluster asked for.
    CLUSTER_ID_MISMATCH = LLMLINK_CLUSTER_ID_MISMATCH;
    /// Socket-level failure.
    NETWORK_ERROR = LLMLINK_NETWORK_ERROR;
    /// A registered cache already has that key.
    CACHE_KEY_ALREADY_EXIST = LLMLINK_CACHE_KEY_ALREADY_EXIST;
    /// The cache is still used by a transfer.
    CACHE_IN_USE = LLMLINK_CACHE_IN_USE;
    /// The peer failed authentication (`llmlink.AuthKey` /
    /// `llmlink.AuthKeyFile`: a wrong, missing or unexpected key).
    AUTH_FAILED = LLMLINK_AUTH_FAILED;
    /// Refused by access control: a peer's pull from a cache it may not
    /// read, or push into one it may not write ([`Access`](crate::Access)),
    /// or a link from a cluster id not in the server's
    /// `llmlink.AllowedClusters`.
    ACCESS_DENIED = LLMLINK_ACCESS_DENIED;
    /// A transfer is still running (the answer of a non-blocking status,
    /// or of a wait whose time ran out first; the transfer goes on).
    TASK_PENDING = LLMLINK_TASK_PENDING;
    /// The transfer was cancelled: no byte of it lands any more, and its
    /// link stays usable.
    CANCELLED = LLMLINK_CANCELLED;
    /// The transfer was cancelled and its transport could only stop it by
    /// closing the link (a tcp push with payload on the wire, RDMA work
    /// posted): no byte of it lands any more; link again.
    CANCELLED_LINK_CLOSED = LLMLINK_CANCELLED_LINK_CLOSED;
    /// The peer's queue of received notifications is full: nothing was
    /// queued, try later.
    NOTIFY_QUEUE_FULL = LLMLINK_NOTIFY_QUEUE_FULL;
}

impl Status {
    /// The status for a raw value from the C library.
    pub const fn from_raw(raw: u32) -> Status {
        Status(raw)
    }

    /// The raw value, as the C library uses it.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// True for [`Status::SUCCESS`].
    pub const fn is_success(self) -> bool {
        self.0 == sys::LLMLINK_SUCCESS
    }

    /// The `LLMStatusCode` name (`"LLM_SUCCESS"`, ...), `"LLMLINK_..."` for
    /// llmlink's own codes, or `"LLM_UNKNOWN_STATUS"`.
    pub fn name(self) -> &'static str {
        // Static strings of the library, never NULL (header contract).
        static_str(unsafe { sys::llmlink_status_name(self.0) })
    }

    /// One sentence that describes the status.
    pub fn description(self) -> &'static str {
        static_str(unsafe { sys::llmlink_strerror(self.0) })
    }
}

fn static_str(p: *const std::os::raw::c_char) -> &'static str {
    if p.is_null() {
        return "";
    }
    // The library returns string literals: 'static and ASCII.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("")
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status({} = {:#x})", self.name(), self.0)
    }
}

impl From<Status> for u32 {
    fn from(s: Status) -> u32 {
        s.0
    }
}

impl From<u32> for Status {
    fn from(raw: u32) -> Status {
        Status(raw)
    }
}

//go:build cgo

package llmlink

/*
#include "shim.h"
*/
import "C"

// Status is an llmlink_status_t: the values of llm_datadist's LLMStatusCode,
// and llmlink's own codes above 0x5010B100. The constants carry the C
// names (LLMLINK_PARAM_INVALID is StatusParamInvalid) and the C values.
type Status uint32

// The status codes of ffi/llmlink.h, same values. Never renumbered.
const (
	StatusSuccess                  Status = 0x00000000 // LLMLINK_SUCCESS
	StatusFailed                   Status = 0xFFFFFFFF // LLMLINK_FAILED
	StatusWaitProcessTimeout       Status = 0x5010B001 // LLMLINK_WAIT_PROCESS_TIMEOUT
	StatusKVCacheNotExist          Status = 0x5010B002 // LLMLINK_KV_CACHE_NOT_EXIST
	StatusRepeatRequest            Status = 0x5010B003 // LLMLINK_REPEAT_REQUEST
	StatusRequestAlreadyCompleted  Status = 0x5010B004 // LLMLINK_REQUEST_ALREADY_COMPLETED
	StatusParamInvalid             Status = 0x5010B005 // LLMLINK_PARAM_INVALID
	StatusEngineFinalized          Status = 0x5010B006 // LLMLINK_ENGINE_FINALIZED
	StatusNotYetLink               Status = 0x5010B007 // LLMLINK_NOT_YET_LINK
	StatusAlreadyLink              Status = 0x5010B008 // LLMLINK_ALREADY_LINK
	StatusLinkFailed               Status = 0x5010B009 // LLMLINK_LINK_FAILED
	StatusUnlinkFailed             Status = 0x5010B00A // LLMLINK_UNLINK_FAILED
	StatusNotifyPromptUnlinkFailed Status = 0x5010B00B // LLMLINK_NOTIFY_PROMPT_UNLINK_FAILED
	StatusClusterNumExceedLimit    Status = 0x5010B00C // LLMLINK_CLUSTER_NUM_EXCEED_LIMIT
	StatusProcessingLink           Status = 0x5010B00D // LLMLINK_PROCESSING_LINK
	StatusDeviceOutOfMemory        Status = 0x5010B00E // LLMLINK_DEVICE_OUT_OF_MEMORY
	StatusPrefixAlreadyExist       Status = 0x5010B00F // LLMLINK_PREFIX_ALREADY_EXIST
	StatusPrefixNotExist           Status = 0x5010B010 // LLMLINK_PREFIX_NOT_EXIST
	StatusSeqLenOverLimit          Status = 0x5010B011 // LLMLINK_SEQ_LEN_OVER_LIMIT
	StatusNoFreeBlock              Status = 0x5010B012 // LLMLINK_NO_FREE_BLOCK
	StatusBlocksOutOfMemory        Status = 0x5010B013 // LLMLINK_BLOCKS_OUT_OF_MEMORY
	StatusExistLink                Status = 0x5010B018 // LLMLINK_EXIST_LINK
	StatusFeatureNotEnabled        Status = 0x5010B019 // LLMLINK_FEATURE_NOT_ENABLED
	StatusTimeout                  Status = 0x5010B01A // LLMLINK_TIMEOUT
	StatusLinkBusy                 Status = 0x5010B01B // LLMLINK_LINK_BUSY
	StatusOutOfMemory              Status = 0x5010B01C // LLMLINK_OUT_OF_MEMORY

	// llmlink's own codes.
	StatusNotInitialized       Status = 0x5010B101 // LLMLINK_NOT_INITIALIZED
	StatusAlreadyInitialized   Status = 0x5010B102 // LLMLINK_ALREADY_INITIALIZED
	StatusVersionMismatch      Status = 0x5010B103 // LLMLINK_VERSION_MISMATCH
	StatusProtocolError        Status = 0x5010B104 // LLMLINK_PROTOCOL_ERROR
	StatusRoleNotAllowed       Status = 0x5010B105 // LLMLINK_ROLE_NOT_ALLOWED
	StatusClusterIDMismatch    Status = 0x5010B106 // LLMLINK_CLUSTER_ID_MISMATCH
	StatusNetworkError         Status = 0x5010B107 // LLMLINK_NETWORK_ERROR
	StatusCacheKeyAlreadyExist Status = 0x5010B108 // LLMLINK_CACHE_KEY_ALREADY_EXIST
	StatusCacheInUse           Status = 0x5010B109 // LLMLINK_CACHE_IN_USE
	StatusAuthFailed           Status = 0x5010B10A // LLMLINK_AUTH_FAILED
	StatusAccessDenied         Status = 0x5010B10B // LLMLINK_ACCESS_DENIED
	// Asynchronous transfers and notifications.
	StatusTaskPending         Status = 0x5010B10C // LLMLINK_TASK_PENDING: not finished yet
	StatusCancelled           Status = 0x5010B10D // LLMLINK_CANCELLED: fenced; the link stays usable
	StatusCancelledLinkClosed Status = 0x5010B10E // LLMLINK_CANCELLED_LINK_CLOSED: fenced by closing the link
	StatusNotifyQueueFull     Status = 0x5010B10F // LLMLINK_NOTIFY_QUEUE_FULL: the peer's queue is full
)

// allStatuses lists every constant above, for Err* sentinels and tests.
var allStatuses = []Status{
	StatusSuccess,
	StatusFailed,
	StatusWaitProcessTimeout,
	StatusKVCacheNotExist,
	StatusRepeatRequest,
	StatusRequestAlreadyCompleted,
	StatusParamInvalid,
	StatusEngineFinalized,
	StatusNotYetLink,
	StatusAlreadyLink,
	StatusLinkFailed,
	StatusUnlinkFailed,
	StatusNotifyPromptUnlinkFailed,
	StatusClusterNumExceedLimit,
	StatusProcessingLink,
	StatusDeviceOutOfMemory,
	StatusPrefixAlreadyExist,
	StatusPrefixNotExist,
	StatusSeqLenOverLimit,
	StatusNoFreeBlock,
	StatusBlocksOutOfMemory,
	StatusExistLink,
	StatusFeatureNotEnabled,
	StatusTimeout,
	StatusLinkBusy,
	StatusOutOfMemory,
	StatusNotInitialized,
	StatusAlreadyInitialized,
	StatusVersionMismatch,
	StatusProtocolError,
	StatusRoleNotAllowed,
	StatusClusterIDMismatch,
	StatusNetworkError,
	StatusCacheKeyAlreadyExist,
	StatusCacheInUse,
	StatusAuthFailed,
	StatusAccessDenied,
	StatusTaskPending,
	StatusCancelled,
	StatusCancelledLinkClosed,
	StatusNotifyQueueFull,
}

// String is the C library's name of the status: "LLM_SUCCESS",
// "LLM_PARAM_INVALID", "LLMLINK_NETWORK_ERROR", or "LLM_UNKNOWN_STATUS".
func (s Status) String() string {
	return C.GoString(C.llmlink_status_name(C.llmlink_status_t(s)))
}

// Description is the C library's one-sentence description of the status.
func (s Status) Description() string {
	return C.GoString(C.llmlink_strerror(C.llmlink_status_t(s)))
}

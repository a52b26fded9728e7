/* status.c - the name and the sentence of every status code. The table is
 * in core so that core code can name a status without the ABI layer;
 * ffi/api_status.c only forwards to it. */
#include "base/status.h"

#include <stddef.h>

typedef struct {
    llmlink_status_t code;
    const char *name;
    const char *text;
} status_entry_t;

/* Names are llm_datadist's LLMStatusCode names, so bindings can map them
 * one to one; our own codes carry the LLMLINK_ prefix. */
static const status_entry_t table[] = {
    {LLMLINK_SUCCESS, "LLM_SUCCESS", "Success."},
    {LLMLINK_FAILED, "LLM_FAILED", "General failure."},
    {LLMLINK_WAIT_PROCESS_TIMEOUT, "LLM_WAIT_PROCESS_TIMEOUT",
     "Processing timed out; after a transfer the link must be linked again."},
    {LLMLINK_KV_CACHE_NOT_EXIST, "LLM_KV_CACHE_NOT_EXIST", "The KV cache does not exist."},
    {LLMLINK_REPEAT_REQUEST, "LLM_REPEAT_REQUEST", "The request was repeated."},
    {LLMLINK_REQUEST_ALREADY_COMPLETED, "LLM_REQUEST_ALREADY_COMPLETED",
     "The request has already completed."},
    {LLMLINK_PARAM_INVALID, "LLM_PARAM_INVALID", "A parameter is invalid."},
    {LLMLINK_ENGINE_FINALIZED, "LLM_ENGINE_FINALIZED", "The engine has been finalized."},
    {LLMLINK_NOT_YET_LINK, "LLM_NOT_YET_LINK", "No link to the remote cluster exists."},
    {LLMLINK_ALREADY_LINK, "LLM_ALREADY_LINK", "A link to the remote cluster already exists."},
    {LLMLINK_LINK_FAILED, "LLM_LINK_FAILED", "Linking to the remote cluster failed."},
    {LLMLINK_UNLINK_FAILED, "LLM_UNLINK_FAILED", "Unlinking from the remote cluster failed."},
    {LLMLINK_NOTIFY_PROMPT_UNLINK_FAILED, "LLM_NOTIFY_PROMPT_UNLINK_FAILED",
     "The local end was unlinked but the prompt side could not be told."},
    {LLMLINK_CLUSTER_NUM_EXCEED_LIMIT, "LLM_CLUSTER_NUM_EXCEED_LIMIT",
     "The number of clusters or links exceeds the limit."},
    {LLMLINK_PROCESSING_LINK, "LLM_PROCESSING_LINK",
     "A link or unlink of this cluster is in progress; try again later."},
    {LLMLINK_DEVICE_OUT_OF_MEMORY, "LLM_DEVICE_OUT_OF_MEMORY", "Device memory is exhausted."},
    {LLMLINK_PREFIX_ALREADY_EXIST, "LLM_PREFIX_ALREADY_EXIST", "The prefix already exists."},
    {LLMLINK_PREFIX_NOT_EXIST, "LLM_PREFIX_NOT_EXIST", "The prefix does not exist."},
    {LLMLINK_SEQ_LEN_OVER_LIMIT, "LLM_SEQ_LEN_OVER_LIMIT", "The sequence length exceeds the limit."},
    {LLMLINK_NO_FREE_BLOCK, "LLM_NO_FREE_BLOCK", "No free block is left."},
    {LLMLINK_BLOCKS_OUT_OF_MEMORY, "LLM_BLOCKS_OUT_OF_MEMORY", "Block memory is exhausted."},
    {LLMLINK_EXIST_LINK, "LLM_EXIST_LINK", "Links still exist; unlink them first."},
    {LLMLINK_FEATURE_NOT_ENABLED, "LLM_FEATURE_NOT_ENABLED", "The feature is not enabled."},
    {LLMLINK_TIMEOUT, "LLM_TIMEOUT", "The operation timed out."},
    {LLMLINK_LINK_BUSY, "LLM_LINK_BUSY", "The link is busy with a conflicting operation."},
    {LLMLINK_OUT_OF_MEMORY, "LLM_OUT_OF_MEMORY", "Memory is exhausted."},
    {LLMLINK_NOT_INITIALIZED, "LLMLINK_NOT_INITIALIZED",
     "The engine is not initialized; call llmlink_init first."},
    {LLMLINK_ALREADY_INITIALIZED, "LLMLINK_ALREADY_INITIALIZED",
     "The engine is already initialized."},
    {LLMLINK_VERSION_MISMATCH, "LLMLINK_VERSION_MISMATCH",
     "The peer speaks another llmlink protocol version."},
    {LLMLINK_PROTOCOL_ERROR, "LLMLINK_PROTOCOL_ERROR", "The peer sent a malformed message."},
    {LLMLINK_ROLE_NOT_ALLOWED, "LLMLINK_ROLE_NOT_ALLOWED",
     "The operation is not allowed for this engine's role."},
    {LLMLINK_CLUSTER_ID_MISMATCH, "LLMLINK_CLUSTER_ID_MISMATCH",
     "The peer is not the cluster that was asked for."},
    {LLMLINK_NETWORK_ERROR, "LLMLINK_NETWORK_ERROR", "A network operation failed."},
    {LLMLINK_CACHE_KEY_ALREADY_EXIST, "LLMLINK_CACHE_KEY_ALREADY_EXIST",
     "A registered cache already has that key."},
    {LLMLINK_CACHE_IN_USE, "LLMLINK_CACHE_IN_USE",
     "The cache is still used by a transfer; try again later."},
    {LLMLINK_AUTH_FAILED, "LLMLINK_AUTH_FAILED",
     "The peer failed authentication (wrong, missing or unexpected key or certificate)."},
    {LLMLINK_ACCESS_DENIED, "LLMLINK_ACCESS_DENIED",
     "Access control refused it: the cluster may not link, or the cache refuses that way."},
    {LLMLINK_TASK_PENDING, "LLMLINK_TASK_PENDING", "The task has not finished yet."},
    {LLMLINK_CANCELLED, "LLMLINK_CANCELLED",
     "The task was cancelled; nothing of it lands later, and its link stays usable."},
    {LLMLINK_CANCELLED_LINK_CLOSED, "LLMLINK_CANCELLED_LINK_CLOSED",
     "The task was cancelled mid-request: the link was closed to stop it; link again."},
    {LLMLINK_NOTIFY_QUEUE_FULL, "LLMLINK_NOTIFY_QUEUE_FULL",
     "The peer's notification queue is full; nothing was queued, try later."},
};

static const status_entry_t *find(llmlink_status_t s)
{
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (table[i].code == s)
            return &table[i];
    return NULL;
}

const char *llk_status_name(llmlink_status_t s)
{
    const status_entry_t *e = find(s);
    return e ? e->name : "LLM_UNKNOWN_STATUS";
}

const char *llk_status_text(llmlink_status_t s)
{
    const status_entry_t *e = find(s);
    return e ? e->text : "Unknown status code.";
}

/* api_task.c - asynchronous transfers at the ABI: the *_async calls (the
 * blocking calls' own argument checks, ffi/xfer_args.h, then the task's
 * options), and the task calls. The engine side is core/xfer/task.c. */
#include "llmlink.h"

#include <stdio.h>
#include <string.h>

#include "base/err.h"
#include "link/engine.h"
#include "xfer/engine_caches.h"
#include "xfer/task.h"
#include "xfer_args.h"

LLMLINK_EXTERN llmlink_status_t llmlink_task_options_init(llmlink_task_options_t *opts, uint32_t version)
{
    static const char fn[] = "llmlink_task_options_init";
    if (!opts)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: opts is NULL", fn);
    if (version != LLMLINK_TASK_OPTIONS_VERSION)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: version is %u, expected LLMLINK_TASK_OPTIONS_VERSION (%u)", fn,
                       version, LLMLINK_TASK_OPTIONS_VERSION);
    const llmlink_task_options_t d = LLMLINK_TASK_OPTIONS_INIT;
    *opts = d;
    return LLMLINK_SUCCESS;
}

/* The options (NULL: defaults) and the out-parameter every submit has. */
static llmlink_status_t check_task_args(const char *fn, const llmlink_task_options_t *opts,
                                        llmlink_task_t **task)
{
    if (!task)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: task is NULL", fn);
    *task = NULL;
    if (!opts)
        return LLMLINK_SUCCESS;
    if (opts->version != LLMLINK_TASK_OPTIONS_VERSION)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: opts->version is %u, expected LLMLINK_TASK_OPTIONS_VERSION (%u)", fn,
                       opts->version, LLMLINK_TASK_OPTIONS_VERSION);
    if (opts->timeout_ms < 0)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: opts->timeout_ms is %d; give the task's limit in ms (>= 1) or 0 for "
                       "llm.SyncKvCacheWaitTime", fn, (int)opts->timeout_ms);
    if (opts->notify_len > LLMLINK_MAX_NOTIFY_BYTES)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: opts->notify_len is %zu, more than LLMLINK_MAX_NOTIFY_BYTES (%d)", fn,
                       opts->notify_len, LLMLINK_MAX_NOTIFY_BYTES);
    if (opts->notify_len && !opts->notify_data)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: opts->notify_data is NULL but "
                       "opts->notify_len is %zu", fn, opts->notify_len);
    return LLMLINK_SUCCESS;
}

static llmlink_status_t submit(llmlink_t *dd, const llk_xfer_req_t *req,
                               const llmlink_task_options_t *opts, llmlink_task_t **task)
{
    llmlink_status_t st = llk_engine_caches_ready(dd, req->fn);
    if (st != LLMLINK_SUCCESS)
        return st;
    return llk_task_submit(dd, req, opts, task);
}

LLMLINK_EXTERN llmlink_status_t llmlink_pull_blocks_async(llmlink_t *dd, const llmlink_cache_key_t *src_key,
                                           int64_t dst_cache_id, const uint64_t *src_blocks,
                                           size_t num_src_blocks, const uint64_t *dst_blocks,
                                           size_t num_dst_blocks,
                                           const llmlink_layer_range_t *layers,
                                           const llmlink_task_options_t *opts,
                                           llmlink_task_t **task)
{
    static const char fn[] = "llmlink_pull_blocks_async";
    llmlink_status_t st = check_task_args(fn, opts, task);
    if (st != LLMLINK_SUCCESS)
        return st;
    if (!dd)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: dd is NULL", fn);
    llk_xfer_req_t req;
    st = llk_args_pull_blocks(&req, fn, src_key, dst_cache_id, src_blocks, num_src_blocks,
                              dst_blocks, num_dst_blocks, layers);
    return st != LLMLINK_SUCCESS ? st : submit(dd, &req, opts, task);
}

LLMLINK_EXTERN llmlink_status_t llmlink_push_blocks_async(llmlink_t *dd, const llmlink_cache_key_t *dst_key,
                                           int64_t src_cache_id, const uint64_t *src_blocks,
                                           size_t num_src_blocks, const uint64_t *dst_blocks,
                                           size_t num_dst_blocks,
                                           const llmlink_layer_range_t *layers,
                                           const llmlink_task_options_t *opts,
                                           llmlink_task_t **task)
{
    static const char fn[] = "llmlink_push_blocks_async";
    llmlink_status_t st = check_task_args(fn, opts, task);
    if (st != LLMLINK_SUCCESS)
        return st;
    if (!dd)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: dd is NULL", fn);
    llk_xfer_req_t req;
    st = llk_args_push_blocks(&req, fn, dst_key, src_cache_id, src_blocks, num_src_blocks,
                              dst_blocks, num_dst_blocks, layers);
    return st != LLMLINK_SUCCESS ? st : submit(dd, &req, opts, task);
}

static llmlink_status_t cache_async(llmlink_t *dd, const char *fn, bool push,
                                    const char *key_arg, const llmlink_cache_key_t *key,
                                    const char *id_arg, int64_t local_id, uint32_t batch,
                                    int64_t size, const llmlink_layer_range_t *layers,
                                    const llmlink_task_options_t *opts, llmlink_task_t **task)
{
    llmlink_status_t st = check_task_args(fn, opts, task);
    if (st != LLMLINK_SUCCESS)
        return st;
    if (!dd)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: dd is NULL", fn);
    llk_xfer_req_t req;
    st = llk_args_cache(&req, fn, push, key_arg, key, id_arg, local_id, batch, size, layers);
    return st != LLMLINK_SUCCESS ? st : submit(dd, &req, opts, task);
}

LLMLINK_EXTERN llmlink_status_t llmlink_pull_cache_async(llmlink_t *dd, const llmlink_cache_key_t *src_key,
                                          int64_t dst_cache_id, uint32_t batch_index,
                                          int64_t size, const llmlink_layer_range_t *layers,
                                          const llmlink_task_options_t *opts,
                                          llmlink_task_t **task)
{
    return cache_async(dd, "llmlink_pull_cache_async", false, "src_key", src_key,
                       "dst_cache_id", dst_cache_id, batch_index, size, layers, opts, task);
}

LLMLINK_EXTERN llmlink_status_t llmlink_push_cache_async(llmlink_t *dd, const llmlink_cache_key_t *dst_key,
                                          int64_t src_cache_id, uint32_t src_batch_index,
                                          int64_t size, const llmlink_layer_range_t *layers,
                                          const llmlink_task_options_t *opts,
                                          llmlink_task_t **task)
{
    return cache_async(dd, "llmlink_push_cache_async", true, "dst_key", dst_key,
                       "src_cache_id", src_cache_id, src_batch_index, size, layers, opts, task);
}

/* ---- the task calls ----------------------------------------------------- */

LLMLINK_EXTERN llmlink_status_t llmlink_task_status(llmlink_task_t *task)
{
    if (!task)
        return llk_err(LLMLINK_PARAM_INVALID, "llmlink_task_status: task is NULL");
    return llk_task_status(task);
}

LLMLINK_EXTERN llmlink_status_t llmlink_task_wait(llmlink_task_t *task, int32_t timeout_ms)
{
    static const char fn[] = "llmlink_task_wait";
    if (!task)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: task is NULL", fn);
    if (timeout_ms < -1)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: timeout_ms is %d; give -1 (no limit), 0 (no wait) or the ms to wait",
                       fn, (int)timeout_ms);
    return llk_task_wait(task, timeout_ms);
}

LLMLINK_EXTERN llmlink_status_t llmlink_task_cancel(llmlink_task_t *task)
{
    if (!task)
        return llk_err(LLMLINK_PARAM_INVALID, "llmlink_task_cancel: task is NULL");
    return llk_task_cancel(task);
}

LLMLINK_EXTERN void llmlink_task_release(llmlink_task_t *task)
{
    if (task)
        llk_task_release(task);
}

LLMLINK_EXTERN const char *llmlink_task_error(llmlink_task_t *task)
{
    if (!task || !llk_task_is_final(task))
        return "";
    return task->msg;
}

LLMLINK_EXTERN void *llmlink_task_user_data(llmlink_task_t *task)
{
    return task ? task->user_data : NULL;
}

LLMLINK_EXTERN llmlink_status_t llmlink_get_event_fd(llmlink_t *dd, int *fd)
{
    static const char fn[] = "llmlink_get_event_fd";
    if (!dd || !fd)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: %s is NULL", fn, dd ? "fd" : "dd");
    /* Made at init, kept until llmlink_destroy (finalize leaves it). */
    if (dd->events.fd < 0 || !dd->tasks) {
        llmlink_status_t st = llk_engine_caches_ready(dd, fn);
        return st != LLMLINK_SUCCESS ? st
                                     : llk_err(LLMLINK_NOT_INITIALIZED, "%s: engine has no event "
                                               "descriptor", fn);
    }
    *fd = dd->events.fd;
    return LLMLINK_SUCCESS;
}

LLMLINK_EXTERN llmlink_status_t llmlink_task_poll_done(llmlink_t *dd, llmlink_task_t **tasks, size_t max,
                                        size_t *count)
{
    static const char fn[] = "llmlink_task_poll_done";
    if (!dd)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: dd is NULL", fn);
    if (!count)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: count is NULL", fn);
    *count = 0;
    if (!tasks && max)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: tasks is NULL but max is %zu", fn, max);
    if (!dd->tasks)
        return llk_engine_caches_ready(dd, fn);
    return llk_task_poll_done(dd, tasks, max, count);
}

/* ---- transfer_cache_async ----------------------------------------------- */

/* One target: a key of any type, ranges both -1 or 0 <= start < end with
 * equal counts, and block lists exactly when the key names a blocks cache. */
static llmlink_status_t check_target(const char *fn, size_t i,
                                     const llmlink_transfer_target_t *t, bool lists)
{
    char arg[48];
    snprintf(arg, sizeof arg, "targets[%zu].dst_key", i);
    llmlink_status_t st = llk_args_key(fn, arg, &t->dst_key);
    if (st != LLMLINK_SUCCESS)
        return st;
    bool blocks = t->dst_key.type == LLMLINK_KEY_BLOCKS;
    if (blocks != lists)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: targets[%zu].dst_key is %s, but src_blocks/dst_blocks %s: a "
                       "LLMLINK_KEY_BLOCKS target takes block lists, a batch-entry key none", fn,
                       i, blocks ? "LLMLINK_KEY_BLOCKS" : "a batch-entry key",
                       lists ? "are given" : "are NULL");
    bool src_every = t->src_layer_start == -1 && t->src_layer_end == -1;
    bool dst_every = t->dst_layer_start == -1 && t->dst_layer_end == -1;
    bool src_ok = src_every || (t->src_layer_start >= 0 && t->src_layer_end > t->src_layer_start);
    bool dst_ok = dst_every || (t->dst_layer_start >= 0 && t->dst_layer_end > t->dst_layer_start);
    if (!src_ok || !dst_ok || src_every != dst_every ||
        (!src_every &&
         t->src_layer_end - t->src_layer_start != t->dst_layer_end - t->dst_layer_start))
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: targets[%zu]: src layers [%d, %d) and dst layers [%d, %d): give "
                       "both ranges (0 <= start < end, the same count) or both -1, -1 (every "
                       "layer)", fn, i, (int)t->src_layer_start, (int)t->src_layer_end,
                       (int)t->dst_layer_start, (int)t->dst_layer_end);
    return LLMLINK_SUCCESS;
}

LLMLINK_EXTERN llmlink_status_t llmlink_transfer_cache_async(
    llmlink_t *dd, int64_t src_cache_id, llmlink_layer_sync_fn sync, void *sync_user_data,
    const llmlink_transfer_target_t *targets, size_t num_targets, const uint64_t *src_blocks,
    size_t num_src_blocks, const uint64_t *dst_blocks, size_t num_dst_blocks,
    uint32_t tensors_per_layer, const llmlink_task_options_t *opts, llmlink_task_t **task)
{
    static const char fn[] = "llmlink_transfer_cache_async";
    llmlink_status_t st = check_task_args(fn, opts, task);
    if (st != LLMLINK_SUCCESS)
        return st;
    if (!dd)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: dd is NULL", fn);
    if (src_cache_id <= 0)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: src_cache_id is %lld; cache ids are >= 1", fn,
                       (long long)src_cache_id);
    if (!sync)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: sync is NULL", fn);
    if (!targets || !num_targets)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: %s", fn,
                       targets ? "num_targets is 0" : "targets is NULL");
    if (num_targets > LLMLINK_MAX_KEYS)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: num_targets is %zu, more than %d", fn,
                       num_targets, LLMLINK_MAX_KEYS);
    if (opts && opts->notify_len)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: opts->notify_len is %zu: a layer-wise push "
                       "takes no attached notification (send one with llmlink_notify once "
                       "the task succeeded)", fn, opts->notify_len);
    if (tensors_per_layer > LLMLINK_MAX_TENSORS)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: tensors_per_layer is %u, more than "
                       "LLMLINK_MAX_TENSORS (%d)", fn, tensors_per_layer, LLMLINK_MAX_TENSORS);
    bool lists = src_blocks || num_src_blocks || dst_blocks || num_dst_blocks;
    if (lists) {
        st = llk_args_block_pairs(fn, src_blocks, num_src_blocks, dst_blocks, num_dst_blocks);
        if (st != LLMLINK_SUCCESS)
            return st;
    }
    for (size_t i = 0; i < num_targets; i++) {
        st = check_target(fn, i, &targets[i], lists);
        if (st != LLMLINK_SUCCESS)
            return st;
    }
    st = llk_engine_caches_ready(dd, fn);
    if (st != LLMLINK_SUCCESS)
        return st;
    return llk_layer_submit(dd, src_cache_id, sync, sync_user_data, targets, num_targets,
                            src_blocks, dst_blocks, num_dst_blocks, tensors_per_layer, opts,
                            task);
}

LLMLINK_EXTERN llmlink_status_t llmlink_task_results(llmlink_task_t *task, llmlink_status_t *results,
                                      size_t num_results)
{
    static const char fn[] = "llmlink_task_results";
    if (!task)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: task is NULL", fn);
    if (!results)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: results is NULL", fn);
    size_t want = task->layer ? llk_layer_num_targets(task) : 1;
    if (num_results != want)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: num_results is %zu; this task has %zu result(s) (%s)", fn,
                       num_results, want, task->layer ? "one per target" : "its status");
    if (task->layer)
        return llk_layer_results(task, results, num_results);
    llmlink_status_t st = llk_task_status(task);
    results[0] = st;
    llk_err_clear();
    return LLMLINK_SUCCESS;
}

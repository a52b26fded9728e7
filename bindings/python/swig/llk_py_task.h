/*
 * llk_py_task.h - the asynchronous half of the SWIG layer: conversions for
 * the *_async calls, transfer_cache_async's layer synchronizer trampoline,
 * and the few task / notification calls that hand Python objects back.
 * Conversions follow llk_py_convert.h (0, or -1 with a Python exception).
 */
#ifndef LLK_PY_TASK_H
#define LLK_PY_TASK_H

#include "llk_py_convert.h"

/* opts: (timeout_ms, notify) - timeout_ms an int32 >= 0 (0: the engine's
 * llm.SyncKvCacheWaitTime), notify None or bytes (1..4096). The notify
 * pointer borrows the bytes object, which the call's arguments keep alive
 * (bytes are immutable: no other thread can change them meanwhile). */
int llk_py_task_opts_from(llmlink_task_options_t *out, PyObject *obj);

/* bytes (1..LLMLINK_MAX_NOTIFY_BYTES), borrowed as above. */
int llk_py_notify_data_from(PyObject *obj, const void **data, size_t *len);

/* targets: a list or tuple of (key, src_start, src_end, dst_start,
 * dst_end, src_batch_index), key as llk_py_key_from takes it. */
typedef struct {
    llmlink_transfer_target_t *items;
    size_t count;
} llk_py_targets_t;
int llk_py_targets_from(llk_py_targets_t *out, PyObject *obj);
void llk_py_targets_free(llk_py_targets_t *conv);

/* The llmlink_layer_sync_fn handed to llmlink_transfer_cache_async, with
 * a Python callable as user_data: called on an engine thread, it takes the
 * GIL and returns callable(layer_index, timeout_ms) is true. An exception
 * (the package's wrapper already logs and swallows the synchronizer's own)
 * counts as false and goes to sys.unraisablehook. The callable is borrowed:
 * the package holds it until the task is released. */
bool llk_py_layer_sync(uint32_t layer_index, int32_t timeout_ms, void *user_data);

/* Each called with the GIL held; each releases it around its C call. */
/* [address of each finished task collected] (at most max). */
PyObject *llk_py_task_poll_done(llmlink_t *dd, size_t max);
/* [(cluster_id, bytes), ...] (at most max, oldest first). */
PyObject *llk_py_get_notifies(llmlink_t *dd, size_t max);
/* [LLMStatusCode per target] (n of them). */
PyObject *llk_py_task_results(llmlink_task_t *task, size_t n);

#endif /* LLK_PY_TASK_H */

/*
 * llmlink.i - SWIG interface over ffi/llmlink.h, for the Python package.
 *
 * The module (llmlink.capi) is the raw ABI with Python shapes at the edges;
 * the llm_datadist-style classes live in the pure-Python package around it.
 *
 *  - A failing llmlink_status_t raises llmlink.LLMException, carrying the
 *    status (as LLMStatusCode) and llmlink_last_error(). The message is read
 *    in the typemap right after the call returns, on the same thread, before
 *    any other llmlink call can overwrite it.
 *  - link/unlink never raise for an engine status: they return
 *    (LLMStatusCode, [LLMStatusCode per cluster]).
 *  - Built with -threads: every wrapped call releases the GIL while the C
 *    function runs (links and transfers block), except the few helpers
 *    marked %nothread below, which touch Python objects.
 *  - C structs come in as plain tuples (see each typemap), built by the
 *    package, so this layer never keeps a Python object past the call.
 */
%module(package="llmlink") capi

%{
#define SWIG_FILE_WITH_INIT
#include <stdlib.h>
#include <string.h>
#include "llmlink.h"
#include "llk_py_convert.h"
#include "llk_py_task.h"
%}

%include <stdint.i>

/* ------------------------------------------------------------------ */
/* Not wrapped as classes: the typemaps below convert them from tuples. */
/* ------------------------------------------------------------------ */
%ignore llmlink_option;
%ignore llmlink_option_t;
%ignore llmlink_ip_info;
%ignore llmlink_ip_info_t;
%ignore llmlink_cluster_info;
%ignore llmlink_cluster_info_t;
%ignore llmlink_cache_desc;
%ignore llmlink_cache_desc_t;
%ignore llmlink_cache_key;
%ignore llmlink_cache_key_t;
%ignore llmlink_layer_range;
%ignore llmlink_layer_range_t;
%ignore llmlink_stats;
%ignore llmlink_stats_t;
%ignore llmlink_xfer_stats;
%ignore llmlink_xfer_stats_t;
%ignore llmlink_link_stats;
%ignore llmlink_link_stats_t;
%ignore llmlink_register_options;
%ignore llmlink_register_options_t;
%ignore llmlink_register_options_init;
/* Metrics (SWIG cannot set their multi-dimensional arrays):
 * llk_py_get_metrics / llk_py_get_links below return them as dicts. */
%ignore llmlink_metrics;
%ignore llmlink_metrics_t;
%ignore llmlink_link_info;
%ignore llmlink_link_info_t;
%ignore llmlink_get_metrics;
%ignore llmlink_get_links;
/* The callback goes to Python's logging through llk_py_set_log_level. */
%ignore llmlink_set_log_callback;
%ignore llmlink_task_options;
%ignore llmlink_task_options_t;
%ignore llmlink_task_options_init;
%ignore llmlink_transfer_target;
%ignore llmlink_transfer_target_t;
%ignore llmlink_notification;
%ignore llmlink_notification_t;
/* These hand back arrays: llk_py_task_poll_done, llk_py_get_notifies and
 * llk_py_task_results below return lists. */
%ignore llmlink_task_poll_done;
%ignore llmlink_get_notifies;
%ignore llmlink_task_results;
/* The package keeps its own objects per task (on_done is not used: the
 * engine fd drives asyncio), so the task's user_data stays NULL. */
%ignore llmlink_task_user_data;

/* ------------------------------------------------------------------ */
/* Status: raise on failure (the default for every call)               */
/* ------------------------------------------------------------------ */
%typemap(out) llmlink_status_t {
    if ($1 != LLMLINK_SUCCESS) {
        llk_py_raise($1);
        SWIG_fail;
    }
    $result = SWIG_Py_Void();
}

/* Calls whose status is an answer, not an error: LLMStatusCode back. */
%typemap(out) llmlink_status_t llmlink_last_error_status {
    $result = llk_py_status($1);
    if (!$result) SWIG_fail;
}

/* ------------------------------------------------------------------ */
/* Handles and scalar outputs                                          */
/* ------------------------------------------------------------------ */
%typemap(in, numinputs=0) llmlink_t **out (llmlink_t *handle = NULL) { $1 = &handle; }
%typemap(argout) llmlink_t **out {
    $result = SWIG_Python_AppendOutput($result,
                                       SWIG_NewPointerObj(handle$argnum, $descriptor(llmlink_t *), 0));
}

%typemap(in, numinputs=0) llmlink_role_t *role (llmlink_role_t value = 0) { $1 = &value; }
%typemap(argout) llmlink_role_t *role {
    $result = SWIG_Python_AppendOutput($result, PyLong_FromLong((long)value$argnum));
}
%typemap(in, numinputs=0) uint64_t *cluster_id (uint64_t value = 0) { $1 = &value; }
%typemap(argout) uint64_t *cluster_id {
    $result = SWIG_Python_AppendOutput($result, PyLong_FromUnsignedLongLong(value$argnum));
}
%typemap(in, numinputs=0) uint16_t *port (uint16_t value = 0) { $1 = &value; }
%typemap(argout) uint16_t *port {
    $result = SWIG_Python_AppendOutput($result, PyLong_FromLong((long)value$argnum));
}
%typemap(in, numinputs=0) int64_t *cache_id (int64_t value = 0) { $1 = &value; }
%typemap(argout) int64_t *cache_id {
    $result = SWIG_Python_AppendOutput($result, PyLong_FromLongLong(value$argnum));
}

/* Counters come back as dicts; the version field is set here. */
%typemap(in, numinputs=0) llmlink_stats_t *stats (llmlink_stats_t value) {
    memset(&value, 0, sizeof value);
    value.version = LLMLINK_STATS_VERSION;
    $1 = &value;
}
%typemap(argout) llmlink_stats_t *stats {
    $result = SWIG_Python_AppendOutput($result, llk_py_stats_dict(&value$argnum));
}
%typemap(in, numinputs=0) llmlink_xfer_stats_t *stats (llmlink_xfer_stats_t value) {
    memset(&value, 0, sizeof value);
    value.version = LLMLINK_XFER_STATS_VERSION;
    $1 = &value;
}
%typemap(argout) llmlink_xfer_stats_t *stats {
    $result = SWIG_Python_AppendOutput($result, llk_py_xfer_stats_dict(&value$argnum));
}
%typemap(in, numinputs=0) llmlink_link_stats_t *stats (llmlink_link_stats_t value) {
    memset(&value, 0, sizeof value);
    value.version = LLMLINK_LINK_STATS_VERSION;
    $1 = &value;
}
/* rdma_protection stays an int here (an LLMLINK_RDMA_PROTECTION_* value);
 * LLMDataDist.link_stats(cluster_id) turns it into RdmaProtection. */
%typemap(argout) llmlink_link_stats_t *stats {
    $result = SWIG_Python_AppendOutput($result, llk_py_link_stats_dict(&value$argnum));
}

/* ------------------------------------------------------------------ */
/* Options: a dict {str: str}                                          */
/* ------------------------------------------------------------------ */
%typemap(in) (const llmlink_option_t *options, size_t num_options) (llk_py_options_t conv = LLK_PY_ZERO) {
    if (llk_py_options_from(&conv, $input) < 0) SWIG_fail;
    $1 = conv.items;
    $2 = conv.count;
}
%typemap(freearg) (const llmlink_option_t *options, size_t num_options) {
    llk_py_options_free(&conv$argnum);
}

/* ------------------------------------------------------------------ */
/* Links                                                               */
/* clusters: a sequence of (remote_cluster_id, remote_role,            */
/*           [(ip, port), ...] local, [(ip, port), ...] remote)        */
/* ------------------------------------------------------------------ */
%typemap(in) (const llmlink_cluster_info_t *clusters, size_t num_clusters) (llk_py_clusters_t conv = LLK_PY_ZERO) {
    if (llk_py_clusters_from(&conv, $input) < 0) SWIG_fail;
    $1 = conv.items;
    $2 = conv.count;
}
%typemap(freearg) (const llmlink_cluster_info_t *clusters, size_t num_clusters) {
    llk_py_clusters_free(&conv$argnum);
}

/* The per-cluster statuses: one per cluster passed. The count is the
 * num_clusters argument, which SWIG names arg3 in both link and unlink
 * (dd, clusters, num_clusters, ...); the array is filled by the C call. */
%typemap(in, numinputs=0) llmlink_status_t *cluster_statuses (llmlink_status_t *buf = NULL) {
    $1 = NULL;
}
%typemap(check) llmlink_status_t *cluster_statuses {
    buf$argnum = calloc(arg3 ? arg3 : 1, sizeof *buf$argnum);
    if (!buf$argnum) {
        PyErr_NoMemory();
        SWIG_fail;
    }
    $1 = buf$argnum;
}
%typemap(argout) llmlink_status_t *cluster_statuses {
    $result = llk_py_link_outcome($result, $1, arg3);
    if (!$result) SWIG_fail;
}
%typemap(freearg) llmlink_status_t *cluster_statuses {
    free(buf$argnum);
}
/* The overall status is the first element of the (ret, rets) tuple. */
%typemap(out) llmlink_status_t llmlink_link_clusters, llmlink_status_t llmlink_unlink_clusters {
    $result = llk_py_status($1);
    if (!$result) SWIG_fail;
}

/* ------------------------------------------------------------------ */
/* Caches                                                              */
/* desc: (num_tensors, data_type, placement, (d0, d1, ...))            */
/* key:  (type, cluster_id, req_id, model_id, prefix_id, cache_id,     */
/*        batch_index), or None where the C side takes NULL            */
/* layers: (src_start, src_end, dst_start, dst_end, tensors_per_layer) */
/*        or None                                                      */
/* address and block lists: sequences of ints, or None                 */
/* ------------------------------------------------------------------ */
%typemap(in) const llmlink_cache_desc_t *desc (llmlink_cache_desc_t value) {
    if (llk_py_desc_from(&value, $input) < 0) SWIG_fail;
    $1 = &value;
}

%typemap(in) const llmlink_cache_key_t * (llmlink_cache_key_t value) {
    $1 = NULL;
    if ($input != Py_None) {
        if (llk_py_key_from(&value, $input, "$1_name") < 0) SWIG_fail;
        $1 = &value;
    }
}

%typemap(in) (const llmlink_cache_key_t *keys, size_t num_keys) (llk_py_keys_t conv = LLK_PY_ZERO) {
    if (llk_py_keys_from(&conv, $input) < 0) SWIG_fail;
    $1 = conv.items;
    $2 = conv.count;
}
%typemap(freearg) (const llmlink_cache_key_t *keys, size_t num_keys) {
    llk_py_keys_free(&conv$argnum);
}

%typemap(in) (const uint64_t *addrs, size_t num_addrs) (llk_py_u64s_t conv = LLK_PY_ZERO),
             (const uint64_t *src_blocks, size_t num_src_blocks) (llk_py_u64s_t conv = LLK_PY_ZERO),
             (const uint64_t *dst_blocks, size_t num_dst_blocks) (llk_py_u64s_t conv = LLK_PY_ZERO) {
    if (llk_py_u64s_from(&conv, $input, "$1_name") < 0) SWIG_fail;
    $1 = conv.items;
    $2 = conv.count;
}
%typemap(freearg) (const uint64_t *addrs, size_t num_addrs),
                  (const uint64_t *src_blocks, size_t num_src_blocks),
                  (const uint64_t *dst_blocks, size_t num_dst_blocks) {
    llk_py_u64s_free(&conv$argnum);
}

%typemap(in) const llmlink_layer_range_t *layers (llmlink_layer_range_t value) {
    $1 = NULL;
    if ($input != Py_None) {
        if (llk_py_layers_from(&value, $input) < 0) SWIG_fail;
        $1 = &value;
    }
}

/* *_opts registration calls: the options are the access alone (an int,
 * llmlink_access_t), or None for the defaults; the version is this
 * header's. The library checks the value (PARAM_INVALID naming it). */
%typemap(in) const llmlink_register_options_t *opts (llmlink_register_options_t value) {
    $1 = NULL;
    if ($input != Py_None) {
        unsigned long access = PyLong_AsUnsignedLong($input);
        if (PyErr_Occurred()) SWIG_fail;
        if (access > UINT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "access does not fit 32 bits");
            SWIG_fail;
        }
        value.version = LLMLINK_REGISTER_OPTIONS_VERSION;
        value.access = (uint32_t)access;
        $1 = &value;
    }
}

/* allocate_*: the tensor addresses come back as a list, one per tensor
 * of desc (SWIG's arg2 in both allocate calls). */
%typemap(in, numinputs=0) (uint64_t *tensor_addrs, size_t num_tensor_addrs)
        (uint64_t addrs[LLMLINK_MAX_TENSORS]) {
    $1 = addrs;
    $2 = LLMLINK_MAX_TENSORS;
}
%typemap(argout) (uint64_t *tensor_addrs, size_t num_tensor_addrs) {
    $result = SWIG_Python_AppendOutput($result,
                                       llk_py_u64_list(addrs$argnum, arg2->num_tensors));
}

/* ------------------------------------------------------------------ */
/* Tasks (the *_async calls) and notifications                         */
/* opts: (timeout_ms, notify bytes or None) or None; the task handle   */
/* comes back as an llmlink_task_t pointer object, which the package   */
/* releases exactly once (llmlink_task_release).                       */
/* ------------------------------------------------------------------ */
%typemap(in) const llmlink_task_options_t *opts (llmlink_task_options_t value) {
    $1 = NULL;
    if ($input != Py_None) {
        if (llk_py_task_opts_from(&value, $input) < 0) SWIG_fail;
        $1 = &value;
    }
}

%typemap(in, numinputs=0) llmlink_task_t **task (llmlink_task_t *handle = NULL) { $1 = &handle; }
%typemap(argout) llmlink_task_t **task {
    $result = SWIG_Python_AppendOutput($result,
                                       SWIG_NewPointerObj(handle$argnum, $descriptor(llmlink_task_t *), 0));
}

/* A task's status is an answer (TASK_PENDING, or its final status), not
 * an error of the call: LLMStatusCode back, the message from
 * llmlink_task_error. */
%typemap(out) llmlink_status_t llmlink_task_status, llmlink_status_t llmlink_task_wait,
              llmlink_status_t llmlink_task_cancel {
    $result = llk_py_status($1);
    if (!$result) SWIG_fail;
}

%typemap(in, numinputs=0) int *fd (int value = -1) { $1 = &value; }
%typemap(argout) int *fd {
    $result = SWIG_Python_AppendOutput($result, PyLong_FromLong((long)value$argnum));
}

/* llmlink_notify's payload: bytes, borrowed for the call. */
%typemap(in) (const void *data, size_t len) (const void *buf = NULL, size_t n = 0) {
    if (llk_py_notify_data_from($input, &buf, &n) < 0) SWIG_fail;
    $1 = (void *)buf; /* SWIG drops the const; the call only reads it */
    $2 = n;
}

/* transfer_cache_async: the synchronizer is a Python callable
 * (layer_index, timeout_ms) -> bool, called through llk_py_layer_sync;
 * targets as llk_py_targets_from takes them. */
%typemap(in) (llmlink_layer_sync_fn sync, void *sync_user_data) {
    if (!PyCallable_Check($input)) {
        PyErr_SetString(PyExc_TypeError, "layer synchronizer must be callable");
        SWIG_fail;
    }
    $1 = llk_py_layer_sync;
    $2 = $input;
}
%typemap(in) (const llmlink_transfer_target_t *targets, size_t num_targets)
        (llk_py_targets_t conv = LLK_PY_ZERO) {
    if (llk_py_targets_from(&conv, $input) < 0) SWIG_fail;
    $1 = conv.items;
    $2 = conv.count;
}
%typemap(freearg) (const llmlink_transfer_target_t *targets, size_t num_targets) {
    llk_py_targets_free(&conv$argnum);
}

/* ------------------------------------------------------------------ */
/* Helpers that touch Python objects keep the GIL                      */
/* ------------------------------------------------------------------ */
%nothread llk_py_memoryview;
%nothread llk_py_set_log_level;
%nothread llk_py_status_of;
/* These release the GIL themselves around their C call. */
%nothread llk_py_task_poll_done;
%nothread llk_py_get_notifies;
%nothread llk_py_task_results;
%nothread llk_py_get_metrics;
%nothread llk_py_get_links;

%inline %{
/* A writable memoryview over nbytes at addr, without a copy. The memory
 * is the library's (allocate_*) or the caller's (register_*): the view is
 * valid as long as that memory is. */
PyObject *llk_py_memoryview(uint64_t addr, uint64_t nbytes);
/* Routes the library's log to Python's logging ("llmlink") up to level
 * (LLMLINK_LOG_NONE turns it off). */
PyObject *llk_py_set_log_level(int level);
/* LLMStatusCode(status), or the int where the enum lacks it. */
PyObject *llk_py_status_of(uint32_t status);
/* [address of each finished task], at most max (llmlink_task_poll_done). */
PyObject *llk_py_task_poll_done(llmlink_t *dd, size_t max);
/* [(cluster_id, bytes)], at most max (llmlink_get_notifies). */
PyObject *llk_py_get_notifies(llmlink_t *dd, size_t max);
/* [LLMStatusCode per target] (llmlink_task_results). */
PyObject *llk_py_task_results(llmlink_task_t *task, size_t n);
/* llmlink_get_metrics: a dict of the struct's fields (arrays as lists,
 * indexed as in C); llmlink_get_links: a list of dicts, one per link. */
PyObject *llk_py_get_metrics(llmlink_t *dd);
PyObject *llk_py_get_links(llmlink_t *dd);
%}

%include "llmlink.h"

/* llk_py_task.c - see llk_py_task.h. */
#include "llk_py_task.h"

#include <stdlib.h>
#include <string.h>

/* Notifications and results fetched per C call: a notification is 4 KiB,
 * so the buffer stays small; the package calls again for more. */
#define LLK_PY_NOTIFY_BATCH 64
#define LLK_PY_POLL_BATCH 256

int llk_py_notify_data_from(PyObject *obj, const void **data, size_t *len)
{
    if (!PyBytes_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "notify data must be bytes, not %.80s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(obj);
    if (n < 1 || n > LLMLINK_MAX_NOTIFY_BYTES) {
        PyErr_Format(PyExc_ValueError, "notify data is %zd bytes, must be 1..%d", n,
                     LLMLINK_MAX_NOTIFY_BYTES);
        return -1;
    }
    *data = PyBytes_AS_STRING(obj);
    *len = (size_t)n;
    return 0;
}

int llk_py_task_opts_from(llmlink_task_options_t *out, PyObject *obj)
{
    memset(out, 0, sizeof *out);
    out->version = LLMLINK_TASK_OPTIONS_VERSION;
    if (!PyTuple_Check(obj) || PyTuple_GET_SIZE(obj) != 2) {
        PyErr_SetString(PyExc_TypeError, "task options must be a tuple (timeout_ms, notify)");
        return -1;
    }
    if (llk_py_i32_from(PyTuple_GET_ITEM(obj, 0), &out->timeout_ms, "timeout_ms") < 0)
        return -1;
    if (out->timeout_ms < 0) {
        PyErr_Format(PyExc_ValueError, "timeout_ms is %d, must be >= 0 (0: llm.SyncKvCacheWaitTime)",
                     (int)out->timeout_ms);
        return -1;
    }
    PyObject *notify = PyTuple_GET_ITEM(obj, 1);
    if (notify != Py_None &&
        llk_py_notify_data_from(notify, &out->notify_data, &out->notify_len) < 0)
        return -1;
    return 0;
}

static int target_from(llmlink_transfer_target_t *t, PyObject *obj, size_t i)
{
    if (!PyTuple_Check(obj) || PyTuple_GET_SIZE(obj) != 6) {
        PyErr_Format(PyExc_TypeError, "transfer_configs[%zu] must be a tuple of 6 items", i);
        return -1;
    }
    PyObject **f = &PyTuple_GET_ITEM(obj, 0);
    if (llk_py_key_from(&t->dst_key, f[0], "cache_key") < 0 ||
        llk_py_i32_from(f[1], &t->src_layer_start, "src_layer_range start") < 0 ||
        llk_py_i32_from(f[2], &t->src_layer_end, "src_layer_range stop") < 0 ||
        llk_py_i32_from(f[3], &t->dst_layer_start, "dst_layer_range start") < 0 ||
        llk_py_i32_from(f[4], &t->dst_layer_end, "dst_layer_range stop") < 0 ||
        llk_py_u32_from(f[5], &t->src_batch_index, "src_batch_index") < 0)
        return -1;
    return 0;
}

int llk_py_targets_from(llk_py_targets_t *out, PyObject *obj)
{
    memset(out, 0, sizeof *out);
    if (!PyList_Check(obj) && !PyTuple_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "transfer_configs must be a list or tuple, not %.80s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *seq = PySequence_Fast(obj, "transfer_configs");
    if (!seq)
        return -1;
    size_t n = (size_t)PySequence_Fast_GET_SIZE(seq);
    out->items = calloc(n ? n : 1, sizeof *out->items);
    if (!out->items) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (target_from(&out->items[i], PySequence_Fast_GET_ITEM(seq, (Py_ssize_t)i), i) < 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    out->count = n;
    Py_DECREF(seq);
    return 0;
}

void llk_py_targets_free(llk_py_targets_t *conv)
{
    free(conv->items);
    conv->items = NULL;
    conv->count = 0;
}

/* The interpreter is shutting down: taking the GIL now could hang this
 * engine thread for ever, so the layer counts as not computed. */
static int finalizing(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}

bool llk_py_layer_sync(uint32_t layer_index, int32_t timeout_ms, void *user_data)
{
    if (finalizing())
        return false;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *fn = user_data;
    bool ok = false;
    PyObject *r = PyObject_CallFunction(fn, "Ii", (unsigned int)layer_index, (int)timeout_ms);
    if (r) {
        int t = PyObject_IsTrue(r);
        Py_DECREF(r);
        ok = t == 1;
        if (t < 0)
            PyErr_WriteUnraisable(fn);
    } else {
        PyErr_WriteUnraisable(fn);
    }
    PyGILState_Release(g);
    return ok;
}

PyObject *llk_py_task_poll_done(llmlink_t *dd, size_t max)
{
    llmlink_task_t *tasks[LLK_PY_POLL_BATCH];
    if (max > LLK_PY_POLL_BATCH)
        max = LLK_PY_POLL_BATCH;
    size_t count = 0;
    llmlink_status_t st;
    Py_BEGIN_ALLOW_THREADS
    st = llmlink_task_poll_done(dd, tasks, max, &count);
    Py_END_ALLOW_THREADS
    if (st != LLMLINK_SUCCESS) {
        llk_py_raise(st);
        return NULL;
    }
    PyObject *list = PyList_New((Py_ssize_t)count);
    if (!list)
        return NULL;
    for (size_t i = 0; i < count; i++) {
        PyObject *addr = PyLong_FromVoidPtr(tasks[i]);
        if (!addr) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, addr);
    }
    return list;
}

static PyObject *notifies_list(const llmlink_notification_t *n, size_t count)
{
    PyObject *list = PyList_New((Py_ssize_t)count);
    if (!list)
        return NULL;
    for (size_t i = 0; i < count; i++) {
        /* Never trust a length past the buffer, whatever the engine says. */
        size_t len = n[i].len <= LLMLINK_MAX_NOTIFY_BYTES ? n[i].len : LLMLINK_MAX_NOTIFY_BYTES;
        PyObject *item = Py_BuildValue("(Ky#)", (unsigned long long)n[i].cluster_id,
                                       (const char *)n[i].data, (Py_ssize_t)len);
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    return list;
}

PyObject *llk_py_get_notifies(llmlink_t *dd, size_t max)
{
    if (max > LLK_PY_NOTIFY_BATCH)
        max = LLK_PY_NOTIFY_BATCH;
    llmlink_notification_t *buf = malloc((max ? max : 1) * sizeof *buf);
    if (!buf)
        return PyErr_NoMemory();
    size_t count = 0;
    llmlink_status_t st;
    Py_BEGIN_ALLOW_THREADS
    st = llmlink_get_notifies(dd, buf, max, &count);
    Py_END_ALLOW_THREADS
    PyObject *list = NULL;
    if (st != LLMLINK_SUCCESS)
        llk_py_raise(st);
    else
        list = notifies_list(buf, count <= max ? count : max);
    free(buf);
    return list;
}

static PyObject *status_list(const llmlink_status_t *statuses, size_t n)
{
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *s = llk_py_status(statuses[i]);
        if (!s) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, s);
    }
    return list;
}

PyObject *llk_py_task_results(llmlink_task_t *task, size_t n)
{
    llmlink_status_t *results = calloc(n ? n : 1, sizeof *results);
    if (!results)
        return PyErr_NoMemory();
    llmlink_status_t st;
    Py_BEGIN_ALLOW_THREADS
    st = llmlink_task_results(task, results, n);
    Py_END_ALLOW_THREADS
    PyObject *list = NULL;
    if (st != LLMLINK_SUCCESS)
        llk_py_raise(st);
    else
        list = status_list(results, n);
    free(results);
    return list;
}

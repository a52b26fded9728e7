/* llk_py_convert.c - see llk_py_convert.h. */
#include "llk_py_convert.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Integers: ints (or objects with __index__, e.g. numpy integers), never
 * bools or floats; out of range is ValueError, as llm_datadist does.   */
/* ------------------------------------------------------------------ */
static PyObject *as_index(PyObject *obj, const char *what)
{
    if (PyBool_Check(obj) || !PyIndex_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.80s", what, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return PyNumber_Index(obj);
}

static int get_i64(PyObject *obj, int64_t lo, int64_t hi, int64_t *out, const char *what)
{
    PyObject *n = as_index(obj, what);
    if (!n)
        return -1;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(n, &overflow);
    Py_DECREF(n);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow || v < lo || v > hi) {
        PyErr_Format(PyExc_ValueError, "%s is out of range [%lld, %lld]", what, (long long)lo,
                     (long long)hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int get_u64(PyObject *obj, uint64_t *out, const char *what)
{
    PyObject *n = as_index(obj, what);
    if (!n)
        return -1;
    int overflow = 0;
    long long sv = PyLong_AsLongLongAndOverflow(n, &overflow);
    if (sv == -1 && PyErr_Occurred()) {
        Py_DECREF(n);
        return -1;
    }
    unsigned long long v = 0;
    int bad = overflow < 0 || (!overflow && sv < 0);
    if (!bad) {
        v = overflow ? PyLong_AsUnsignedLongLong(n) : (unsigned long long)sv;
        if (v == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            bad = 1;
        }
    }
    Py_DECREF(n);
    if (bad) {
        PyErr_Format(PyExc_ValueError, "%s is out of range [0, 2**64-1]", what);
        return -1;
    }
    *out = v;
    return 0;
}

static int get_u32(PyObject *obj, uint32_t *out, const char *what)
{
    int64_t v;
    if (get_i64(obj, 0, UINT32_MAX, &v, what) < 0)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int get_i32(PyObject *obj, int32_t *out, const char *what)
{
    int64_t v;
    if (get_i64(obj, INT32_MIN, INT32_MAX, &v, what) < 0)
        return -1;
    *out = (int32_t)v;
    return 0;
}

/* For the other conversion files (llk_py_task.c). */
int llk_py_i32_from(PyObject *obj, int32_t *out, const char *what)
{
    return get_i32(obj, out, what);
}

int llk_py_u32_from(PyObject *obj, uint32_t *out, const char *what)
{
    return get_u32(obj, out, what);
}

static char *dup_str(PyObject *obj, const char *what)
{
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a str, not %.80s", what, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(obj, &len);
    if (!s)
        return NULL;
    if ((Py_ssize_t)strlen(s) != len) {
        PyErr_Format(PyExc_ValueError, "%s contains a NUL character", what);
        return NULL;
    }
    char *copy = malloc((size_t)len + 1);
    if (!copy) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(copy, s, (size_t)len + 1);
    return copy;
}

/* A list or tuple (a fast sequence); new reference or NULL. */
static PyObject *as_seq(PyObject *obj, const char *what)
{
    if (!PyList_Check(obj) && !PyTuple_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a list or tuple, not %.80s", what,
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return PySequence_Fast(obj, what);
}

/* A tuple of exactly n items; borrowed items in *items. */
static int as_tuple(PyObject *obj, Py_ssize_t n, PyObject ***items, const char *what)
{
    if (!PyTuple_Check(obj) || PyTuple_GET_SIZE(obj) != n) {
        PyErr_Format(PyExc_TypeError, "%s must be a tuple of %zd items", what, n);
        return -1;
    }
    *items = &PyTuple_GET_ITEM(obj, 0);
    return 0;
}

static void *calloc_or_raise(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        PyErr_NoMemory();
    return p;
}

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */
int llk_py_options_from(llk_py_options_t *out, PyObject *obj)
{
    memset(out, 0, sizeof *out);
    if (!PyDict_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "options must be a dict, not %.80s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    size_t n = (size_t)PyDict_Size(obj);
    out->items = calloc_or_raise(n, sizeof *out->items);
    out->strings = calloc_or_raise(2 * n, sizeof *out->strings);
    if (!out->items || !out->strings)
        return -1;
    out->capacity = 2 * n;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(obj, &pos, &k, &v) && out->count < n) {
        char *key = dup_str(k, "option key");
        if (!key)
            return -1;
        out->strings[2 * out->count] = key;
        char *value = dup_str(v, "option value");
        if (!value)
            return -1;
        out->strings[2 * out->count + 1] = value;
        out->items[out->count].key = key;
        out->items[out->count].value = value;
        out->count++;
    }
    return 0;
}

void llk_py_options_free(llk_py_options_t *conv)
{
    if (conv->strings)
        for (size_t i = 0; i < conv->capacity; i++)
            free(conv->strings[i]);
    free(conv->strings);
    free(conv->items);
    memset(conv, 0, sizeof *conv);
}

/* ------------------------------------------------------------------ */
/* Clusters                                                            */
/* ------------------------------------------------------------------ */
static int ip_infos_from(llk_py_clusters_t *c, PyObject *list, const llmlink_ip_info_t **first,
                         size_t *count, const char *what)
{
    PyObject *seq = as_seq(list, what);
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    *first = c->ips + c->num_ips;
    *count = (size_t)n;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject **f;
        int64_t port;
        if (as_tuple(PySequence_Fast_GET_ITEM(seq, i), 2, &f, "ip info") < 0 ||
            get_i64(f[1], 0, 65535, &port, "port") < 0)
            goto fail;
        char *ip = dup_str(f[0], "ip");
        if (!ip)
            goto fail;
        c->strings[c->num_ips] = ip;
        c->ips[c->num_ips].ip = ip;
        c->ips[c->num_ips].port = (uint16_t)port;
        c->num_ips++;
    }
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    return -1;
}

/* Total ip infos first, so one block holds them all. */
static int count_ips(PyObject *seq, size_t *total)
{
    *total = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *t = PySequence_Fast_GET_ITEM(seq, i);
        PyObject **f;
        if (as_tuple(t, 4, &f, "cluster") < 0)
            return -1;
        for (int k = 2; k < 4; k++) {
            if (!PyList_Check(f[k]) && !PyTuple_Check(f[k])) {
                PyErr_SetString(PyExc_TypeError, "ip infos must be a list or tuple");
                return -1;
            }
            *total += (size_t)PySequence_Size(f[k]);
        }
    }
    return 0;
}

int llk_py_clusters_from(llk_py_clusters_t *out, PyObject *obj)
{
    memset(out, 0, sizeof *out);
    PyObject *seq = as_seq(obj, "clusters");
    if (!seq)
        return -1;
    size_t n = (size_t)PySequence_Fast_GET_SIZE(seq), total;
    if (count_ips(seq, &total) < 0)
        goto fail;
    out->items = calloc_or_raise(n, sizeof *out->items);
    out->ips = calloc_or_raise(total, sizeof *out->ips);
    out->strings = calloc_or_raise(total, sizeof *out->strings);
    if (!out->items || !out->ips || !out->strings)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        PyObject **f;
        int64_t role;
        llmlink_cluster_info_t *ci = &out->items[i];
        if (as_tuple(PySequence_Fast_GET_ITEM(seq, (Py_ssize_t)i), 4, &f, "cluster") < 0 ||
            get_u64(f[0], &ci->remote_cluster_id, "remote_cluster_id") < 0 ||
            get_i64(f[1], 0, 3, &role, "remote_role_type") < 0)
            goto fail;
        ci->remote_role = (llmlink_role_t)role;
        out->count = i + 1;
        if (ip_infos_from(out, f[2], &ci->local_ip_infos, &ci->num_local_ip_infos,
                          "local ip infos") < 0 ||
            ip_infos_from(out, f[3], &ci->remote_ip_infos, &ci->num_remote_ip_infos,
                          "remote ip infos") < 0)
            goto fail;
        if (!ci->num_local_ip_infos)
            ci->local_ip_infos = NULL;
        if (!ci->num_remote_ip_infos)
            ci->remote_ip_infos = NULL;
    }
    out->count = n;
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    return -1;
}

void llk_py_clusters_free(llk_py_clusters_t *conv)
{
    if (conv->strings)
        for (size_t i = 0; i < conv->num_ips; i++)
            free(conv->strings[i]);
    free(conv->strings);
    free(conv->ips);
    free(conv->items);
    memset(conv, 0, sizeof *conv);
}

/* ------------------------------------------------------------------ */
/* Caches                                                              */
/* ------------------------------------------------------------------ */
int llk_py_desc_from(llmlink_cache_desc_t *out, PyObject *obj)
{
    memset(out, 0, sizeof *out);
    PyObject **f;
    int64_t dtype, placement;
    if (as_tuple(obj, 4, &f, "cache desc") < 0 ||
        get_u32(f[0], &out->num_tensors, "num_tensors") < 0 ||
        get_i64(f[1], 0, INT32_MAX, &dtype, "data_type") < 0 ||
        get_i64(f[2], 0, INT32_MAX, &placement, "placement") < 0)
        return -1;
    out->data_type = (llmlink_data_type_t)dtype;
    out->placement = (llmlink_placement_t)placement;
    PyObject *seq = as_seq(f[3], "shape");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > LLMLINK_MAX_DIMS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "shape has %zd dimensions, at most %d", n, LLMLINK_MAX_DIMS);
        return -1;
    }
    out->num_dims = (uint32_t)n;
    for (Py_ssize_t i = 0; i < n; i++)
        if (get_i64(PySequence_Fast_GET_ITEM(seq, i), INT64_MIN, INT64_MAX, &out->shape[i],
                    "shape dimension") < 0) {
            Py_DECREF(seq);
            return -1;
        }
    Py_DECREF(seq);
    return 0;
}

int llk_py_key_from(llmlink_cache_key_t *out, PyObject *obj, const char *what)
{
    memset(out, 0, sizeof *out);
    PyObject **f;
    int64_t type;
    if (as_tuple(obj, 7, &f, what) < 0 || get_i64(f[0], 1, 3, &type, "key type") < 0 ||
        get_u64(f[1], &out->cluster_id, "cluster_id") < 0 ||
        get_u64(f[2], &out->req_id, "req_id") < 0 ||
        get_u64(f[3], &out->model_id, "model_id") < 0 ||
        get_i64(f[4], INT64_MIN, INT64_MAX, &out->prefix_id, "prefix_id") < 0 ||
        get_i64(f[5], INT64_MIN, INT64_MAX, &out->cache_id, "cache_id") < 0 ||
        get_u32(f[6], &out->batch_index, "batch_index") < 0)
        return -1;
    out->type = (llmlink_cache_key_type_t)type;
    return 0;
}

int llk_py_keys_from(llk_py_keys_t *out, PyObject *obj)
{
    memset(out, 0, sizeof *out);
    if (obj == Py_None)
        return 0;
    PyObject *seq = as_seq(obj, "cache keys");
    if (!seq)
        return -1;
    size_t n = (size_t)PySequence_Fast_GET_SIZE(seq);
    out->items = calloc_or_raise(n, sizeof *out->items);
    if (!out->items)
        goto fail;
    for (size_t i = 0; i < n; i++)
        if (llk_py_key_from(&out->items[i], PySequence_Fast_GET_ITEM(seq, (Py_ssize_t)i),
                            "cache key") < 0)
            goto fail;
    out->count = n;
    if (!n) {
        free(out->items);
        out->items = NULL;
    }
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    return -1;
}

void llk_py_keys_free(llk_py_keys_t *conv)
{
    free(conv->items);
    memset(conv, 0, sizeof *conv);
}

int llk_py_u64s_from(llk_py_u64s_t *out, PyObject *obj, const char *what)
{
    memset(out, 0, sizeof *out);
    if (obj == Py_None)
        return 0;
    PyObject *seq = as_seq(obj, what);
    if (!seq)
        return -1;
    size_t n = (size_t)PySequence_Fast_GET_SIZE(seq);
    if (n) {
        out->items = calloc_or_raise(n, sizeof *out->items);
        if (!out->items)
            goto fail;
    }
    for (size_t i = 0; i < n; i++)
        if (get_u64(PySequence_Fast_GET_ITEM(seq, (Py_ssize_t)i), &out->items[i], what) < 0)
            goto fail;
    out->count = n;
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    return -1;
}

void llk_py_u64s_free(llk_py_u64s_t *conv)
{
    free(conv->items);
    memset(conv, 0, sizeof *conv);
}

int llk_py_layers_from(llmlink_layer_range_t *out, PyObject *obj)
{
    memset(out, 0, sizeof *out);
    PyObject **f;
    if (as_tuple(obj, 5, &f, "layer range") < 0 ||
        get_i32(f[0], &out->src_start, "src layer start") < 0 ||
        get_i32(f[1], &out->src_end, "src layer end") < 0 ||
        get_i32(f[2], &out->dst_start, "dst layer start") < 0 ||
        get_i32(f[3], &out->dst_end, "dst layer end") < 0 ||
        get_u32(f[4], &out->tensors_per_layer, "tensor_num_per_layer") < 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Results                                                             */
/* ------------------------------------------------------------------ */
/* llmlink._status, imported once (the package imports it before capi). */
static PyObject *status_module(void)
{
    static PyObject *mod;
    if (!mod)
        mod = PyImport_ImportModule("llmlink._status");
    return mod;
}

PyObject *llk_py_status(llmlink_status_t status)
{
    PyObject *mod = status_module();
    if (!mod)
        return NULL;
    return PyObject_CallMethod(mod, "status_of", "k", (unsigned long)status);
}

PyObject *llk_py_status_of(uint32_t status) { return llk_py_status(status); }

void llk_py_raise(llmlink_status_t status)
{
    /* First, before anything can make another llmlink call on this thread. */
    const char *text = llmlink_last_error();
    PyObject *msg = PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "replace");
    if (!msg)
        return;
    PyObject *mod = status_module();
    PyObject *exc = mod ? PyObject_CallMethod(mod, "exception_of", "kO", (unsigned long)status, msg)
                        : NULL;
    Py_DECREF(msg);
    if (!exc)
        return;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
}

PyObject *llk_py_link_outcome(PyObject *overall, const llmlink_status_t *statuses, size_t n)
{
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list) {
        Py_DECREF(overall);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        PyObject *s = llk_py_status(statuses[i]);
        if (!s) {
            Py_DECREF(list);
            Py_DECREF(overall);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, s);
    }
    return Py_BuildValue("(NN)", overall, list);
}

PyObject *llk_py_u64_list(const uint64_t *values, size_t n)
{
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(values[i]);
        if (!v) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, v);
    }
    return list;
}

#define U(field) #field, (unsigned long long)s->field

PyObject *llk_py_stats_dict(const llmlink_stats_t *s)
{
    return Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsK}", U(links), U(inbound_links), U(outbound_links),
                         U(handshakes_in_progress), U(handshakes_peak), U(handshakes_accepted),
                         U(handshakes_completed), U(handshakes_rejected), U(handshakes_timed_out),
                         U(protocol_errors), U(links_lost));
}

PyObject *llk_py_xfer_stats_dict(const llmlink_xfer_stats_t *s)
{
    return Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsKsK}", U(caches), U(transfers), U(transfers_failed),
                         U(transfers_timed_out), U(bytes_requested), U(bytes_served),
                         U(requests_served), U(requests_refused), U(tcp_requests),
                         U(shm_requests), U(shm_fallbacks), U(rdma_requests));
}

/* Version 2's per-rail arrays as lists of rdma_rails items. The library
 * never reports more than LLMLINK_MAX_RDMA_RAILS; the bound keeps a bad
 * count from reading past the arrays, and rdma_rails is always the
 * lists' length. */
PyObject *llk_py_link_stats_dict(const llmlink_link_stats_t *s)
{
    size_t n = s->rdma_rails < LLMLINK_MAX_RDMA_RAILS ? s->rdma_rails : LLMLINK_MAX_RDMA_RAILS;
    uint64_t mtu[LLMLINK_MAX_RDMA_RAILS];
    for (size_t i = 0; i < n; i++)
        mtu[i] = s->rdma_rail_mtu[i];
    PyObject *bytes = llk_py_u64_list(s->rdma_rail_bytes, n);
    PyObject *mtus = bytes ? llk_py_u64_list(mtu, n) : NULL;
    if (!mtus) {
        Py_XDECREF(bytes);
        return NULL;
    }
    return Py_BuildValue("{sKsKsKsKsKsKsKsKsNsN}", U(rdma_protection), U(peer_write_bytes),
                         U(peer_read_bytes), U(requests_fenced), "rdma_rails",
                         (unsigned long long)n, U(rdma_rails_up), U(rdma_rail_failovers),
                         U(rdma_rail_repairs), "rdma_rail_bytes", bytes, "rdma_rail_mtu", mtus);
}

#undef U

/* ------------------------------------------------------------------ */
/* Buffers and logging                                                 */
/* ------------------------------------------------------------------ */
PyObject *llk_py_memoryview(uint64_t addr, uint64_t nbytes)
{
    if (!addr || nbytes > (uint64_t)PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_ValueError, "no memory at that address and size");
        return NULL;
    }
    return PyMemoryView_FromMemory((char *)(uintptr_t)addr, (Py_ssize_t)nbytes, PyBUF_WRITE);
}

/* The library calls this from any of its threads, under its log lock:
 * take the GIL, hand the line to logging, return. */
static void log_to_python(llmlink_log_level_t level, const char *message, void *user_data)
{
    static const int py_level[] = {0, 40, 30, 20, 10}; /* NONE ERROR WARN INFO DEBUG */
    PyObject *logger = user_data;
    PyGILState_STATE g = PyGILState_Ensure();
    int py = level <= LLMLINK_LOG_DEBUG ? py_level[level] : 10;
    PyObject *r = PyObject_CallMethod(logger, "log", "is", py, message);
    if (r)
        Py_DECREF(r);
    else
        PyErr_Clear();
    PyGILState_Release(g);
}

PyObject *llk_py_set_log_level(int level)
{
    static PyObject *logger;
    if (!logger) {
        PyObject *logging = PyImport_ImportModule("logging");
        if (!logging)
            return NULL;
        logger = PyObject_CallMethod(logging, "getLogger", "s", "llmlink");
        Py_DECREF(logging);
        if (!logger)
            return NULL;
    }
    /* Without the GIL: a library thread may be inside log_to_python,
     * holding the log lock and waiting for the GIL. */
    Py_BEGIN_ALLOW_THREADS
    if (level <= LLMLINK_LOG_NONE)
        llmlink_set_log_callback(NULL, NULL, LLMLINK_LOG_NONE);
    else
        llmlink_set_log_callback(log_to_python, logger, (llmlink_log_level_t)level);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

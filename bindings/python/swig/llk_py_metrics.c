/*
 * llk_py_metrics.c - llmlink_get_metrics and llmlink_get_links as Python
 * objects, for LLMDataDist.metrics() / links() and llmlink.prometheus.
 *
 * The C calls run without the GIL (the library's log callback takes the
 * GIL from the library's threads while they hold the library's locks:
 * holding the GIL across a call that takes an engine lock could deadlock);
 * the Python objects are built after, with it. Arrays come back as
 * (nested) lists of ints indexed like the C arrays, full size; the package
 * keys them by label text (llmlink_metrics_label).
 */
#include "llk_py_convert.h"

/* dict[key] = obj, stealing obj; -1 (exception set) when obj is NULL or
 * the insertion fails. */
static int put(PyObject *dict, const char *key, PyObject *obj)
{
    if (!obj)
        return -1;
    int rc = PyDict_SetItemString(dict, key, obj);
    Py_DECREF(obj);
    return rc;
}

/* A list of rows lists: v is rows x cols, row-major. */
static PyObject *u64_matrix(const uint64_t *v, size_t rows, size_t cols)
{
    PyObject *list = PyList_New((Py_ssize_t)rows);
    for (size_t r = 0; list && r < rows; r++) {
        PyObject *row = llk_py_u64_list(v + r * cols, cols);
        if (!row) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)r, row);
    }
    return list;
}

/* transfers[d][t][r]: per direction, a matrix transport x result. */
static PyObject *transfers_list(const llmlink_metrics_t *m)
{
    PyObject *list = PyList_New(LLMLINK_METRICS_MAX_DIRS);
    for (size_t d = 0; list && d < LLMLINK_METRICS_MAX_DIRS; d++) {
        PyObject *mat = u64_matrix(&m->transfers[d][0][0], LLMLINK_METRICS_MAX_TRANSPORTS,
                                   LLMLINK_METRICS_MAX_RESULTS);
        if (!mat) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)d, mat);
    }
    return list;
}

#define N(f) PyLong_FromUnsignedLongLong((unsigned long long)m->f)
#define L(f) llk_py_u64_list(m->f, sizeof m->f / sizeof m->f[0])
static int fill_metrics(PyObject *d, const llmlink_metrics_t *m)
{
    return put(d, "version", N(version)) || put(d, "links_up", N(links_up)) ||
           put(d, "links_established", L(links_established)) ||
           put(d, "links_closed", L(links_closed)) ||
           put(d, "handshakes_ok", N(handshakes_ok)) ||
           put(d, "handshakes_refused", L(handshakes_refused)) ||
           put(d, "handshakes_timed_out", N(handshakes_timed_out)) ||
           put(d, "link_failures", L(link_failures)) ||
           put(d, "transfers", transfers_list(m)) ||
           put(d, "bytes", u64_matrix(&m->bytes[0][0], LLMLINK_METRICS_MAX_DIRS,
                                      LLMLINK_METRICS_MAX_TRANSPORTS)) ||
           put(d, "latency_buckets", u64_matrix(&m->latency_buckets[0][0],
                                                LLMLINK_METRICS_MAX_DIRS,
                                                LLMLINK_METRICS_BUCKETS)) ||
           put(d, "latency_count", L(latency_count)) ||
           put(d, "latency_sum_ns", L(latency_sum_ns)) ||
           put(d, "requests_served", N(requests_served)) ||
           put(d, "requests_refused", N(requests_refused)) ||
           put(d, "tasks_submitted", N(tasks_submitted)) ||
           put(d, "tasks_cancelled", N(tasks_cancelled)) ||
           put(d, "notifies_sent", N(notifies_sent)) ||
           put(d, "notifies_received", N(notifies_received)) ||
           put(d, "notifies_refused_full", N(notifies_refused_full)) ||
           put(d, "protocol_errors", N(protocol_errors));
}
#undef N
#undef L

PyObject *llk_py_get_metrics(llmlink_t *dd)
{
    llmlink_metrics_t m;
    memset(&m, 0, sizeof m);
    m.version = LLMLINK_METRICS_VERSION;
    llmlink_status_t st;
    Py_BEGIN_ALLOW_THREADS
    st = llmlink_get_metrics(dd, &m);
    Py_END_ALLOW_THREADS
    if (st != LLMLINK_SUCCESS) {
        llk_py_raise(st);
        return NULL;
    }
    PyObject *d = PyDict_New();
    if (d && fill_metrics(d, &m) < 0)
        Py_CLEAR(d);
    return d;
}

#define N(f) PyLong_FromUnsignedLongLong((unsigned long long)l->f)
/* The link's RDMA rails (version 2) as in link_stats(cluster_id): the
 * per-rail lists have rdma_rails items (bounded by the arrays). */
static int put_rails(PyObject *d, const llmlink_link_info_t *l)
{
    size_t n = l->rdma_rails < LLMLINK_MAX_RDMA_RAILS ? l->rdma_rails : LLMLINK_MAX_RDMA_RAILS;
    uint64_t mtu[LLMLINK_MAX_RDMA_RAILS];
    for (size_t i = 0; i < n; i++)
        mtu[i] = l->rdma_rail_mtu[i];
    return put(d, "rdma_rails", PyLong_FromSize_t(n)) ||
           put(d, "rdma_rails_up", N(rdma_rails_up)) ||
           put(d, "rdma_rail_failovers", N(rdma_rail_failovers)) ||
           put(d, "rdma_rail_repairs", N(rdma_rail_repairs)) ||
           put(d, "rdma_rail_bytes", llk_py_u64_list(l->rdma_rail_bytes, n)) ||
           put(d, "rdma_rail_mtu", llk_py_u64_list(mtu, n));
}

static PyObject *link_dict(const llmlink_link_info_t *l)
{
    size_t plen = strnlen(l->peer, sizeof l->peer);
    PyObject *d = PyDict_New();
    if (d && (put(d, "direction", N(direction)) || put(d, "cluster_id", N(cluster_id)) ||
              put(d, "transport", N(transport)) || put(d, "streams", N(streams)) ||
              put(d, "up_since_ms", PyLong_FromLongLong((long long)l->up_since_ms)) ||
              put(d, "bytes_pulled", N(bytes_pulled)) ||
              put(d, "bytes_pushed", N(bytes_pushed)) ||
              put(d, "transfers_ok", N(transfers_ok)) ||
              put(d, "transfers_failed", N(transfers_failed)) ||
              put(d, "rdma_protection", N(rdma_protection)) ||
              put(d, "peer_write_bytes", N(peer_write_bytes)) ||
              put(d, "peer_read_bytes", N(peer_read_bytes)) ||
              put(d, "requests_fenced", N(requests_fenced)) ||
              put(d, "peer", PyUnicode_DecodeUTF8(l->peer, (Py_ssize_t)plen, "replace")) ||
              put_rails(d, l)))
        Py_CLEAR(d);
    return d;
}
#undef N

/* Links come and go between two calls: ask with room for the count the
 * last call gave (a few tries), and report what the last call filled.
 * *out is NULL only when memory ran out. */
static llmlink_status_t get_links(llmlink_t *dd, llmlink_link_info_t **out, size_t *n)
{
    size_t cap = 16, count = 0;
    llmlink_link_info_t *buf = NULL;
    llmlink_status_t st = LLMLINK_SUCCESS;
    for (int tries = 0; tries < 8; tries++) {
        llmlink_link_info_t *grown = realloc(buf, cap * sizeof *buf);
        if (!grown) {
            free(buf);
            *out = NULL;
            return LLMLINK_FAILED;
        }
        buf = grown;
        memset(buf, 0, cap * sizeof *buf);
        buf[0].version = LLMLINK_LINK_INFO_VERSION;
        st = llmlink_get_links(dd, buf, cap, &count);
        if (st != LLMLINK_SUCCESS || count <= cap)
            break;
        if (tries < 7)
            cap = count + 16;
    }
    *out = buf;
    *n = st != LLMLINK_SUCCESS ? 0 : count < cap ? count : cap;
    return st;
}

PyObject *llk_py_get_links(llmlink_t *dd)
{
    llmlink_link_info_t *buf = NULL;
    size_t n = 0;
    llmlink_status_t st;
    Py_BEGIN_ALLOW_THREADS
    st = get_links(dd, &buf, &n);
    Py_END_ALLOW_THREADS
    if (!buf)
        return PyErr_NoMemory();
    if (st != LLMLINK_SUCCESS) {
        free(buf);
        llk_py_raise(st);
        return NULL;
    }
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++) {
        PyObject *d = link_dict(&buf[i]);
        if (!d) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, d);
    }
    free(buf);
    return list;
}

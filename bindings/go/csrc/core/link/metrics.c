/* link/metrics.c - the engine's operator counters (metrics.h): status
 * classification, relaxed atomic recording, the snapshot. */
#include <math.h>
#include <string.h>
#include <time.h>

#include "link/engine.h"
#include "link/metrics.h"

#define RELAXED memory_order_relaxed

static void add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, RELAXED);
}

llmlink_metrics_result_t llk_metrics_result_of(llmlink_status_t st, bool link_failed)
{
    switch (st) {
    case LLMLINK_SUCCESS:
        return LLMLINK_METRICS_SUCCESS;
    case LLMLINK_CANCELLED:
    case LLMLINK_CANCELLED_LINK_CLOSED:
        return LLMLINK_METRICS_CANCELLED;
    case LLMLINK_WAIT_PROCESS_TIMEOUT:
        return LLMLINK_METRICS_TIMED_OUT;
    case LLMLINK_NETWORK_ERROR:
    case LLMLINK_PROTOCOL_ERROR:
    case LLMLINK_NOT_YET_LINK: /* the link broke under the call */
        return LLMLINK_METRICS_FAILED;
    default:
        /* Anything else the owner answered (unknown key, range, access,
         * cache in use) left the link as it was: a refusal. */
        return link_failed ? LLMLINK_METRICS_FAILED : LLMLINK_METRICS_REFUSED;
    }
}

llmlink_refuse_reason_t llk_metrics_refuse_reason(llmlink_status_t st)
{
    switch (st) {
    case LLMLINK_AUTH_FAILED:
        return LLMLINK_REFUSE_AUTH;
    case LLMLINK_ACCESS_DENIED:
    case LLMLINK_ROLE_NOT_ALLOWED:
        return LLMLINK_REFUSE_ACCESS;
    case LLMLINK_VERSION_MISMATCH:
        return LLMLINK_REFUSE_VERSION;
    case LLMLINK_CLUSTER_ID_MISMATCH:
    case LLMLINK_ALREADY_LINK:
        return LLMLINK_REFUSE_CLUSTER_ID;
    case LLMLINK_CLUSTER_NUM_EXCEED_LIMIT:
        return LLMLINK_REFUSE_LIMITS;
    case LLMLINK_PROTOCOL_ERROR:
        return LLMLINK_REFUSE_PROTOCOL;
    case LLMLINK_LINK_FAILED:
    case LLMLINK_NETWORK_ERROR:
        return LLMLINK_REFUSE_CONNECT;
    case LLMLINK_TIMEOUT:
        return LLMLINK_REFUSE_TIMEOUT;
    default:
        return LLMLINK_REFUSE_OTHER;
    }
}

/* Bound i is 8 us * 2^i: the bucket of ns is the smallest i with
 * ns <= 8000 << i. */
uint32_t llk_metrics_bucket_of(uint64_t ns)
{
    uint64_t bound = 8000;
    for (uint32_t i = 0; i < LLMLINK_METRICS_BUCKETS; i++, bound <<= 1)
        if (ns <= bound)
            return i;
    return LLMLINK_METRICS_BUCKETS;
}

int64_t llk_metrics_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

double llk_metrics_bound_seconds(size_t i)
{
    if (i >= LLMLINK_METRICS_BUCKETS)
        return INFINITY;
    return 8e-6 * (double)(UINT64_C(1) << i);
}

void llk_metrics_transfer(llk_metrics_t *m, bool push, llmlink_metrics_transport_t t,
                          llmlink_metrics_result_t res, uint64_t bytes, int64_t dur_ns)
{
    unsigned d = push ? LLMLINK_METRICS_PUSH : LLMLINK_METRICS_PULL;
    unsigned ti = (unsigned)t < LLMLINK_METRICS_MAX_TRANSPORTS ? (unsigned)t : 0;
    unsigned ri = (unsigned)res < LLMLINK_METRICS_MAX_RESULTS ? (unsigned)res : 0;
    uint64_t ns = dur_ns > 0 ? (uint64_t)dur_ns : 0;
    add(&m->transfers[d][ti][ri], 1);
    if (res == LLMLINK_METRICS_SUCCESS)
        add(&m->bytes[d][ti], bytes);
    uint32_t b = llk_metrics_bucket_of(ns);
    if (b < LLMLINK_METRICS_BUCKETS)
        add(&m->lat_buckets[d][b], 1);
    add(&m->lat_sum_ns[d], ns);
    add(&m->lat_count[d], 1);
}

void llk_metrics_link_up(llk_metrics_t *m, bool outbound)
{
    add(&m->links_established[outbound ? LLMLINK_LINK_OUTBOUND : LLMLINK_LINK_INBOUND], 1);
}

void llk_metrics_link_closed(llk_metrics_t *m, llmlink_close_reason_t why)
{
    add(&m->links_closed[(unsigned)why < LLMLINK_METRICS_MAX_REASONS ? (unsigned)why : 0], 1);
}

void llk_metrics_hs_refused(llk_metrics_t *m, llmlink_status_t st)
{
    /* The server refuses with LINK_FAILED only a data stream whose
     * transport the two ends cannot agree on (xfer/streams.c). */
    add(&m->hs_refused[st == LLMLINK_LINK_FAILED ? LLMLINK_REFUSE_TRANSPORT
                                                 : llk_metrics_refuse_reason(st)], 1);
}

void llk_metrics_link_result(llk_metrics_t *m, llmlink_status_t st)
{
    if (st == LLMLINK_SUCCESS || st == LLMLINK_ALREADY_LINK)
        return;
    add(&m->link_failures[llk_metrics_refuse_reason(st)], 1);
}

static void copy(uint64_t *dst, const _Atomic uint64_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = atomic_load_explicit(&src[i], RELAXED);
}

#define COPY(dst, src) copy((uint64_t *)(dst), (const _Atomic uint64_t *)(src), \
                            sizeof(dst) / sizeof(uint64_t))

void llk_metrics_snapshot(const llk_metrics_t *m, llmlink_metrics_t *out)
{
    _Static_assert(sizeof(m->transfers) == sizeof(out->transfers), "layout");
    _Static_assert(sizeof(m->lat_buckets) == sizeof(out->latency_buckets), "layout");
    COPY(out->links_established, m->links_established);
    COPY(out->links_closed, m->links_closed);
    COPY(out->handshakes_refused, m->hs_refused);
    COPY(out->link_failures, m->link_failures);
    COPY(out->transfers, m->transfers);
    COPY(out->bytes, m->bytes);
    COPY(out->latency_buckets, m->lat_buckets);
    COPY(out->latency_count, m->lat_count);
    COPY(out->latency_sum_ns, m->lat_sum_ns);
}

/* ---- label names (llmlink_metrics_label) ---- */

static const char *const dir_names[] = {"pull", "push"};
static const char *const transport_names[] = {"none", "tcp", "shm", "rdma"};
static const char *const result_names[] = {"success", "refused", "failed", "timed_out",
                                           "cancelled"};
static const char *const link_dir_names[] = {"outbound", "inbound"};
static const char *const close_names[] = {"other",          "unlinked", "unlinked_by_peer",
                                          "liveness",       "peer_closed", "transfer_failed",
                                          "finalize",       "protocol_error", "replaced"};
static const char *const refuse_names[] = {"other",    "auth",    "access",  "version",
                                           "cluster_id", "limits", "protocol", "connect",
                                           "timeout",  "transport"};

#define PICK(arr, v) ((v) < sizeof(arr) / sizeof(arr[0]) ? (arr)[v] : NULL)

const char *llk_metrics_label(llmlink_metrics_label_kind_t kind, uint32_t value)
{
    switch (kind) {
    case LLMLINK_LABEL_DIR:
        return PICK(dir_names, value);
    case LLMLINK_LABEL_TRANSPORT:
        return PICK(transport_names, value);
    case LLMLINK_LABEL_RESULT:
        return PICK(result_names, value);
    case LLMLINK_LABEL_LINK_DIR:
        return PICK(link_dir_names, value);
    case LLMLINK_LABEL_CLOSE_REASON:
        return PICK(close_names, value);
    case LLMLINK_LABEL_REFUSE_REASON:
        return PICK(refuse_names, value);
    }
    return NULL;
}

/* ---- the whole snapshot: counters kept here, the engine's handshake
 * counters (under e->mu, inside llk_engine_stats) and its xstats ---- */

void llk_engine_metrics(llmlink_t *e, llmlink_metrics_t *out)
{
    llmlink_stats_t s;
    memset(&s, 0, sizeof s);
    llk_engine_stats(e, &s);
    llk_metrics_snapshot(&e->metrics, out);
    out->links_up = s.links;
    out->handshakes_ok = s.handshakes_completed;
    out->handshakes_timed_out = s.handshakes_timed_out;
    out->protocol_errors = s.protocol_errors;
    const llk_xstats_t *x = &e->xstats;
    out->requests_served = atomic_load_explicit(&x->requests_served, RELAXED);
    out->requests_refused = atomic_load_explicit(&x->requests_refused, RELAXED);
    out->tasks_submitted = atomic_load_explicit(&x->tasks_submitted, RELAXED);
    out->tasks_cancelled = atomic_load_explicit(&x->tasks_cancelled, RELAXED);
    out->notifies_sent = atomic_load_explicit(&x->notifies_sent, RELAXED);
    out->notifies_received = atomic_load_explicit(&x->notifies_received, RELAXED);
    out->notifies_refused_full = atomic_load_explicit(&x->notifies_refused_full, RELAXED);
}

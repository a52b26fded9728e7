/* xfer/xfer_metrics.c - the transfer plane's part of the operator
 * counters: one finished call recorded (engine metrics and its link's
 * counters), and the live links listed for llmlink_get_links. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "link/engine.h"
#include "link/link_api.h"
#include "base/err.h"
#include "transport/rdma.h"

#define RELAXED memory_order_relaxed

/* LLK_XPORT_* -> llmlink_metrics_transport_t. */
static llmlink_metrics_transport_t abi_transport(int xport)
{
    switch (xport) {
    case LLK_XPORT_SHM:
        return LLMLINK_METRICS_TRANSPORT_SHM;
    case LLK_XPORT_RDMA:
        return LLMLINK_METRICS_TRANSPORT_RDMA;
    case LLK_XPORT_TCP:
        return LLMLINK_METRICS_TRANSPORT_TCP;
    default:
        return LLMLINK_METRICS_TRANSPORT_NONE;
    }
}

/* The transport that carried most of the call's requests; on a tie the
 * first in llk_transports[] (the preferred); -1 when none was sent. */
static int main_transport(const llk_xfer_ctx_t *ctx)
{
    int best = -1;
    uint64_t most = 0;
    for (int i = 0; i < LLK_NXPORTS; i++)
        if (ctx->requests[i] > most) {
            most = ctx->requests[i];
            best = i;
        }
    return best;
}

void llk_xfer_record(llmlink_t *e, const llk_xfer_ctx_t *ctx, llmlink_status_t st,
                     bool link_failed, uint64_t bytes, int64_t start_ns)
{
    llmlink_metrics_result_t res = llk_metrics_result_of(st, link_failed);
    llk_metrics_transfer(&e->metrics, ctx->push, abi_transport(main_transport(ctx)), res, bytes,
                         llk_metrics_now_ns() - start_ns);
    llk_xlink_t *xl = ctx->xl;
    if (res != LLMLINK_METRICS_SUCCESS) {
        atomic_fetch_add_explicit(&xl->calls_failed, 1, RELAXED);
        return;
    }
    atomic_fetch_add_explicit(&xl->calls_ok, 1, RELAXED);
    atomic_fetch_add_explicit(ctx->push ? &xl->bytes_pushed : &xl->bytes_pulled, bytes, RELAXED);
}

/* ---- llmlink_get_links ---- */

typedef struct {
    llk_xlink_t *xl;
    bool outbound;
    uint64_t id;
    char peer[72];
} link_ref_t;

typedef struct {
    link_ref_t *v;
    size_t n, cap;
    bool oom;
} link_list_t;

static void collect(void *arg, void *xfer_ctx, bool outbound, uint64_t remote_id,
                    const char *peer)
{
    link_list_t *l = arg;
    llk_xlink_t *xl = xfer_ctx;
    if (l->oom || llk_xlink_is_broken(xl))
        return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        link_ref_t *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            l->oom = true;
            return;
        }
        l->v = v;
        l->cap = cap;
    }
    link_ref_t *r = &l->v[l->n++];
    llk_xlink_ref(xl);
    r->xl = xl;
    r->outbound = outbound;
    r->id = remote_id;
    snprintf(r->peer, sizeof r->peer, "%s", peer);
}

/* Outbound first, then by cluster id. */
static int by_dir_and_id(const void *a, const void *b)
{
    const link_ref_t *x = a, *y = b;
    if (x->outbound != y->outbound)
        return x->outbound ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static uint32_t attached(llk_xlink_t *xl)
{
    uint32_t n = 0;
    pthread_mutex_lock(&xl->mu);
    for (int i = 0; i < LLK_MAX_STREAMS; i++)
        if (xl->req_fd[i] >= 0)
            n++;
    pthread_mutex_unlock(&xl->mu);
    return n;
}

/* The link's RDMA rails (version 2), read as llmlink_get_link_stats
 * reads them. */
static void fill_rails(llmlink_link_info_t *o, llk_xlink_t *xl)
{
    llmlink_link_stats_t s;
    memset(&s, 0, sizeof s);
    llk_rdma_xlink_rail_stats(xl, &s);
    o->rdma_rails = s.rdma_rails;
    o->rdma_rails_up = s.rdma_rails_up;
    o->rdma_rail_failovers = s.rdma_rail_failovers;
    o->rdma_rail_repairs = s.rdma_rail_repairs;
    _Static_assert(sizeof o->rdma_rail_bytes == sizeof s.rdma_rail_bytes, "layout");
    _Static_assert(sizeof o->rdma_rail_mtu == sizeof s.rdma_rail_mtu, "layout");
    memcpy(o->rdma_rail_bytes, s.rdma_rail_bytes, sizeof o->rdma_rail_bytes);
    memcpy(o->rdma_rail_mtu, s.rdma_rail_mtu, sizeof o->rdma_rail_mtu);
}

/* The whole (newest) struct; the caller copies its version's part. */
static void fill(llmlink_link_info_t *o, uint32_t version, const link_ref_t *r)
{
    llk_xlink_t *xl = r->xl;
    memset(o, 0, sizeof *o);
    o->version = version;
    o->direction = r->outbound ? LLMLINK_LINK_OUTBOUND : LLMLINK_LINK_INBOUND;
    o->cluster_id = r->id;
    o->transport = abi_transport(llk_transport_for_link(xl)->index);
    o->streams = attached(xl);
    o->up_since_ms = xl->up_since_ms;
    o->bytes_pulled = atomic_load_explicit(&xl->bytes_pulled, RELAXED);
    o->bytes_pushed = atomic_load_explicit(&xl->bytes_pushed, RELAXED);
    o->transfers_ok = atomic_load_explicit(&xl->calls_ok, RELAXED);
    o->transfers_failed = atomic_load_explicit(&xl->calls_failed, RELAXED);
    o->rdma_protection = llk_rdma_stats_protection(xl);
    o->peer_write_bytes = atomic_load(&xl->peer_write_bytes);
    o->peer_read_bytes = atomic_load(&xl->peer_read_bytes);
    o->requests_fenced = atomic_load(&xl->requests_fenced);
    snprintf(o->peer, sizeof o->peer, "%s", r->peer);
    if (version >= 2)
        fill_rails(o, xl);
}

llmlink_status_t llk_xfer_links(llmlink_t *e, llmlink_link_info_t *out, uint32_t version,
                                size_t stride, size_t max, size_t *count)
{
    link_list_t l = {0};
    llk_link_lock(e);
    llk_link_each_locked(e, collect, &l);
    llk_link_unlock(e);
    llmlink_status_t st = LLMLINK_SUCCESS;
    if (l.oom) {
        st = llk_err(LLMLINK_OUT_OF_MEMORY, "llmlink_get_links: out of memory");
    } else {
        if (l.n) /* qsort(NULL, 0, ...) is undefined */
            qsort(l.v, l.n, sizeof *l.v, by_dir_and_id);
        for (size_t i = 0; i < l.n && i < max; i++) {
            llmlink_link_info_t one;
            fill(&one, version, &l.v[i]);
            memcpy((char *)out + i * stride, &one, stride);
        }
        *count = l.n;
    }
    for (size_t i = 0; i < l.n; i++)
        llk_xlink_unref(l.v[i].xl);
    free(l.v);
    return st;
}

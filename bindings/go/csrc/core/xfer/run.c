/* xfer/run.c - one pull or push call: the local cache and the link are
 * resolved and held, the local side of the request is checked, the planner
 * lays it out, xfer/requester.c moves it; a stream failure kills the link. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "link/engine.h"
#include "base/err.h"
#include "base/log.h"

typedef struct {
    uint32_t l0, r0, n; /* local tensor l0 + k <-> remote tensor r0 + k */
    bool all;           /* every tensor of both caches */
} tensor_map_t;

/* The tensors a request covers, from the layer ranges (local = dst for a
 * pull, src for a push). */
static llmlink_status_t map_tensors(const llk_xfer_req_t *r, const llk_cache_t *lc,
                                    tensor_map_t *m)
{
    m->l0 = m->r0 = 0;
    m->n = lc->num_tensors;
    m->all = true;
    if (!r->has_layers)
        return LLMLINK_SUCCESS;
    const llmlink_layer_range_t *L = &r->layers;
    int32_t ls = r->push ? L->src_start : L->dst_start, le = r->push ? L->src_end : L->dst_end;
    int32_t rs = r->push ? L->dst_start : L->src_start;
    if (ls < 0) /* "every layer" on both sides (the ABI checks both or neither) */
        return LLMLINK_SUCCESS;
    uint64_t tpl = L->tensors_per_layer ? L->tensors_per_layer : 2;
    const char *which = r->push ? "src_layer_range" : "dst_layer_range";
    if ((uint64_t)le * tpl > lc->num_tensors)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: %s [%d, %d) with %llu tensors per layer needs %llu tensors; cache "
                       "%lld has %u", r->fn, which, ls, le, (unsigned long long)tpl,
                       (unsigned long long)((uint64_t)le * tpl), (long long)lc->id,
                       lc->num_tensors);
    m->all = false;
    m->l0 = (uint32_t)((uint64_t)ls * tpl);
    m->r0 = (uint32_t)((uint64_t)rs * tpl);
    m->n = (uint32_t)((uint64_t)(le - ls) * tpl);
    return LLMLINK_SUCCESS;
}

static llmlink_status_t check_local_kind(const llk_xfer_req_t *r, const llk_cache_t *lc)
{
    bool want_blocks = r->kind != LLK_XKIND_CACHE;
    if (want_blocks && !lc->blocks)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: cache %lld is not a blocks cache (register it "
                       "with llmlink_register_blocks_cache)", r->fn, (long long)lc->id);
    return LLMLINK_SUCCESS;
}

/* Block lists to byte runs (merging consecutive pairs). *runs is malloc'd. */
static llmlink_status_t block_runs(const llk_xfer_req_t *r, const llk_cache_t *lc,
                                   llk_byte_run_t **runs, size_t *nruns)
{
    const char *larg = r->push ? "src_blocks" : "dst_blocks";
    uint64_t unit = lc->unit_bytes;
    for (size_t i = 0; i < r->nblocks; i++)
        if (r->local_blocks[i] >= lc->num_units)
            return llk_err(LLMLINK_PARAM_INVALID, "%s: %s[%zu] = %llu is past the end of cache "
                           "%lld (%llu blocks)", r->fn, larg, i,
                           (unsigned long long)r->local_blocks[i], (long long)lc->id,
                           (unsigned long long)lc->num_units);
    uint64_t *implicit = NULL;
    const uint64_t *remote = r->remote_blocks;
    if (!remote) { /* CACHE_AS_BLOCKS: the remote entry's blocks 0, 1, ... */
        implicit = malloc(r->nblocks * sizeof *implicit);
        if (!implicit)
            return llk_err(LLMLINK_OUT_OF_MEMORY, "%s: out of memory", r->fn);
        for (size_t i = 0; i < r->nblocks; i++)
            implicit[i] = i;
        remote = implicit;
    }
    llk_block_run_t *br = malloc(r->nblocks * sizeof *br);
    llk_byte_run_t *out = malloc(r->nblocks * sizeof *out);
    if (!br || !out) {
        free(implicit);
        free(br);
        free(out);
        return llk_err(LLMLINK_OUT_OF_MEMORY, "%s: out of memory", r->fn);
    }
    size_t n = llk_plan_merge_blocks(r->local_blocks, remote, r->nblocks, br);
    llmlink_status_t st = LLMLINK_SUCCESS;
    for (size_t i = 0; i < n && st == LLMLINK_SUCCESS; i++) {
        if (br[i].remote_block + br[i].count > UINT64_MAX / unit)
            st = llk_err(LLMLINK_PARAM_INVALID, "%s: remote block %llu is out of range", r->fn,
                         (unsigned long long)br[i].remote_block);
        out[i].loff = br[i].local_block * unit;
        out[i].roff = br[i].remote_block * unit;
        out[i].len = br[i].count * unit;
    }
    free(implicit);
    free(br);
    if (st != LLMLINK_SUCCESS) {
        free(out);
        return st;
    }
    *runs = out;
    *nruns = n;
    return LLMLINK_SUCCESS;
}

/* A batch entry: one run per tensor. */
static llmlink_status_t entry_run(const llk_xfer_req_t *r, const llk_cache_t *lc,
                                  llk_byte_run_t **runs, size_t *nruns)
{
    const char *barg = r->push ? "src_batch_index" : "batch_index";
    if (r->local_batch >= lc->num_units)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: %s %u is past the end of cache %lld (%llu "
                       "entries)", r->fn, barg, r->local_batch, (long long)lc->id,
                       (unsigned long long)lc->num_units);
    uint64_t len = r->size < 0 ? lc->unit_bytes : (uint64_t)r->size;
    if (len > lc->unit_bytes)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: size %llu is past the end of the %llu-byte "
                       "entries of cache %lld", r->fn, (unsigned long long)len,
                       (unsigned long long)lc->unit_bytes, (long long)lc->id);
    llk_byte_run_t *out = malloc(sizeof *out);
    if (!out)
        return llk_err(LLMLINK_OUT_OF_MEMORY, "%s: out of memory", r->fn);
    out->loff = (uint64_t)r->local_batch * lc->unit_bytes;
    out->roff = 0;
    out->len = len;
    *runs = out;
    *nruns = 1;
    return LLMLINK_SUCCESS;
}

/* The streams a call spreads its plan over: every attached one, unless the
 * transport the link uses now moves the bytes off the streams (one stream
 * then carries the requests). */
static uint32_t attached_streams(llk_xlink_t *xl, const llk_transport_ops_t *t)
{
    uint32_t n = 0;
    pthread_mutex_lock(&xl->mu);
    for (int i = 0; i < LLK_MAX_STREAMS; i++)
        if (xl->req_fd[i] >= 0)
            n++;
    pthread_mutex_unlock(&xl->mu);
    if (t->one_stream || n == 0)
        return 1;
    return n;
}

static void count(llmlink_t *e, const llk_xfer_ctx_t *ctx, llmlink_status_t st, uint64_t bytes)
{
    llk_xstats_t *x = &e->xstats;
    for (int i = 0; i < LLK_NXPORTS; i++)
        llk_transports[i]->add_stats(x, ctx->requests[i], ctx->fallbacks[i]);
    /* A cancel is no failure of the link (tasks_cancelled is the task
     * engine's). */
    if (st == LLMLINK_CANCELLED || st == LLMLINK_CANCELLED_LINK_CLOSED)
        return;
    if (st == LLMLINK_SUCCESS) {
        atomic_fetch_add(&x->transfers, 1);
        atomic_fetch_add(&x->bytes_requested, bytes);
        return;
    }
    atomic_fetch_add(&x->transfers_failed, 1);
    if (st == LLMLINK_WAIT_PROCESS_TIMEOUT)
        atomic_fetch_add(&x->transfers_timed_out, 1);
}

/* The local half of a call: the request's own checks against the local
 * cache, its tensors and byte runs. Nothing here needs the network. */
static llmlink_status_t prepare_local(const llk_xfer_req_t *r, llk_cache_t *lc,
                                      llk_xfer_prep_t *p)
{
    tensor_map_t tm;
    llmlink_status_t st = check_local_kind(r, lc);
    if (st == LLMLINK_SUCCESS)
        st = map_tensors(r, lc, &tm);
    if (st == LLMLINK_SUCCESS)
        st = r->kind == LLK_XKIND_CACHE ? entry_run(r, lc, &p->runs, &p->nruns)
                                        : block_runs(r, lc, &p->runs, &p->nruns);
    if (st != LLMLINK_SUCCESS)
        return st;
    p->l0 = tm.l0;
    p->r0 = tm.r0;
    p->n = tm.n;
    p->all = tm.all;
    return LLMLINK_SUCCESS;
}

llmlink_status_t llk_xfer_prepare(llmlink_t *e, const llk_xfer_req_t *r, llk_xfer_prep_t *p)
{
    memset(p, 0, sizeof *p);
    if (!e->reg_ready)
        return llk_engine_check_running(e, r->fn);
    llk_cache_t *lc = NULL;
    llmlink_status_t st = llk_registry_acquire_id(&e->reg, r->fn, r->local_id, &lc);
    if (st != LLMLINK_SUCCESS)
        return st;
    llk_xlink_t *xl = llk_xfer_find_link(e, r->key.cluster_id, r->fn);
    if (!xl) {
        st = llk_err_status();
        llk_registry_release(&e->reg, lc, NULL);
        return st == LLMLINK_SUCCESS ? LLMLINK_NOT_YET_LINK : st;
    }
    p->lc = lc;
    p->xl = xl;
    st = prepare_local(r, lc, p);
    if (st != LLMLINK_SUCCESS) {
        llk_xfer_prep_free(e, p);
        return st;
    }
    /* The lists were turned into runs: the request's pointers may go. */
    p->req = *r;
    p->req.local_blocks = p->req.remote_blocks = NULL;
    return LLMLINK_SUCCESS;
}

void llk_xfer_prep_free(llmlink_t *e, llk_xfer_prep_t *p)
{
    free(p->runs);
    p->runs = NULL;
    if (p->xl)
        llk_xlink_unref(p->xl);
    if (p->lc)
        llk_registry_release(&e->reg, p->lc, NULL);
    p->xl = NULL;
    p->lc = NULL;
}

/* A task that never started: its deadline passed in the queue, or it was
 * cancelled before a worker took it. Nothing moved; the link is untouched. */
static llmlink_status_t not_started(llmlink_t *e, const llk_xfer_prep_t *p,
                                    llk_xfer_cancel_t *cx, int64_t deadline_ms)
{
    if (llk_cancel_requested(cx)) {
        llk_cancel_fenced_as(cx, LLMLINK_CANCELLED);
        return llk_err(LLMLINK_CANCELLED, "%s: cancelled before it started", p->req.fn);
    }
    if (deadline_ms >= 0 && llk_now_ms() >= deadline_ms) {
        atomic_fetch_add(&e->xstats.transfers_failed, 1);
        atomic_fetch_add(&e->xstats.transfers_timed_out, 1);
        return llk_err(LLMLINK_WAIT_PROCESS_TIMEOUT, "%s: the task's timeout ran out before a "
                       "transfer worker could start it (too many tasks queued?)", p->req.fn);
    }
    return LLMLINK_SUCCESS;
}

llmlink_status_t llk_xfer_exec(llmlink_t *e, llk_xfer_prep_t *p, llk_xfer_cancel_t *cx,
                               int64_t deadline_ms)
{
    const llk_xfer_req_t *r = &p->req;
    llk_cache_t *lc = p->lc;
    llk_xlink_t *xl = p->xl;
    llmlink_status_t st = not_started(e, p, cx, deadline_ms);
    if (st != LLMLINK_SUCCESS)
        return st;
    const llk_transport_ops_t *t = llk_transport_for_link(xl);
    uint32_t streams = attached_streams(xl, t);
    /* Every request of the transfer carries its whole extent, so that the
     * owner refuses all of them or none (no partial transfer). */
    uint64_t bound_end = 0;
    for (size_t i = 0; i < p->nruns; i++)
        if (p->runs[i].roff + p->runs[i].len > bound_end)
            bound_end = p->runs[i].roff + p->runs[i].len;
    llk_plan_t plan;
    memset(&plan, 0, sizeof plan);
    st = llk_plan_build(&plan, p->runs, p->nruns, p->l0, p->r0, p->n, lc->addrs,
                        lc->tensor_bytes, t->slice_bytes, streams);
    if (st != LLMLINK_SUCCESS)
        return st;

    llk_xfer_ctx_t ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.e = e;
    ctx.xl = xl;
    ctx.fn = r->fn;
    ctx.local_cache = lc;
    ctx.cancel = cx;
    ctx.push = r->push;
    ctx.hdr.kind = (uint8_t)r->kind;
    ctx.hdr.flags = (uint16_t)((r->kind == LLK_XKIND_CACHE && r->size < 0 ? LLK_XREQ_WHOLE : 0) |
                               (p->all ? LLK_XREQ_ALL_TENSORS : 0));
    ctx.hdr.bound_end = bound_end;
    ctx.hdr.key = r->key;
    ctx.hdr.unit_bytes = lc->unit_bytes;
    ctx.hdr.num_tensors_hint = p->r0 + p->n;
    ctx.plan = &plan;
    ctx.consume_key = !r->push && r->kind == LLK_XKIND_CACHE && r->key.type == LLMLINK_KEY_CACHE;
    /* A task's own deadline (from its submission) wins; a blocking call's
     * starts now. */
    ctx.deadline_ms = deadline_ms >= 0
                          ? deadline_ms
                          : llk_now_ms() + llk_xlink_wait_ms(xl, e->opts.sync_kv_wait_ms);
    int64_t start_ns = llk_metrics_now_ns();
    bool link_failed = false;
    st = llk_xfer_execute(&ctx, &link_failed);
    if (st == LLMLINK_CANCELLED_LINK_CLOSED)
        link_failed = false; /* its message says so already */
    if (link_failed) {
        /* As llm_datadist: a transfer that failed on the wire (or timed out)
         * leaves the link unusable; both ends free it, link again. The
         * requester killed it before it gave its streams back. */
        char why[LLK_ERR_MSG_MAX];
        snprintf(why, sizeof why, "%s", llk_err_message());
        llk_err(st, "%s; the link with cluster %llu was closed: link it again", why,
                (unsigned long long)xl->remote_id);
    }
    count(e, &ctx, st, plan.total_bytes);
    llk_xfer_record(e, &ctx, st, link_failed, plan.total_bytes, start_ns);
    llk_plan_free(&plan);
    return st;
}

llmlink_status_t llk_xfer_run(llmlink_t *e, const llk_xfer_req_t *r, llk_xfer_cancel_t *cx)
{
    llk_xfer_prep_t p;
    llmlink_status_t st = llk_xfer_prepare(e, r, &p);
    if (st != LLMLINK_SUCCESS)
        return st;
    st = llk_xfer_exec(e, &p, cx, -1);
    llk_xfer_prep_free(e, &p);
    return st;
}

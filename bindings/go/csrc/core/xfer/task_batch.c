/* xfer/task_batch.c - coalescing: a transfer worker that takes a task also
 * takes the queued tasks right behind it that can share one execution, and
 * runs them as one plan (one request per stream instead of one per task).
 * What a request costs besides its bytes (wake-ups, the worker hop) is then
 * paid once per batch. See task.h for the rules; bench/README.md "Small
 * requests" for what it gives.
 *
 * All-or-nothing per task holds: a batch that succeeded moved every byte of
 * every task; one that failed with the link still usable (a refusal, a
 * local failure) is re-run task by task, so that each gets its own status;
 * one that broke the link ends every task with its status (each would have
 * failed on that link); a cancel of one task stops the batch (fenced), ends
 * that task CANCELLED and puts the others back at the front of the queue.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "link/engine.h"
#include "xfer/task.h"

/* Bounds of one batch: a plan of this size is still one cheap build. */
#define BATCH_MAX_TASKS 256
#define BATCH_MAX_RUNS 1024
#define BATCH_MAX_BYTES ((uint64_t)64 << 20)
/* Fewer tasks run one by one, as without coalescing: a task in a batch
 * shares its fate with the others when one is cancelled on a stalled peer
 * (the cancel closes the link for all), a cost that a handful of requests
 * does not pay for; a queue backed up this far does (bench/README.md). */
#define BATCH_MIN_TASKS 8

static bool same_key(const llmlink_cache_key_t *a, const llmlink_cache_key_t *b)
{
    return a->type == b->type && a->cluster_id == b->cluster_id && a->req_id == b->req_id &&
           a->model_id == b->model_id && a->prefix_id == b->prefix_id &&
           a->cache_id == b->cache_id && a->batch_index == b->batch_index;
}

/* Same execution but for the runs: link, cache, direction, remote key and
 * tensor mapping; explicit block lists only (no consume step, no implicit
 * remote blocks); no layer-wise push (its driver tracks its own tasks). */
static bool compatible(const llmlink_task_t *a, const llmlink_task_t *b)
{
    const llk_xfer_prep_t *p = &a->prep, *r = &b->prep;
    return !b->internal && !b->layer && r->req.kind == LLK_XKIND_BLOCKS &&
           r->xl == p->xl && r->lc == p->lc && r->req.push == p->req.push &&
           same_key(&r->req.key, &p->req.key) && r->l0 == p->l0 && r->r0 == p->r0 &&
           r->n == p->n && r->all == p->all;
}

/* The bytes a task writes at its destination: a pull's local runs, a
 * push's remote runs (same tensors: the mapping is the batch's). */
static void dest_range(const llmlink_task_t *t, size_t i, uint64_t *off, uint64_t *len)
{
    const llk_byte_run_t *run = &t->prep.runs[i];
    *off = t->prep.req.push ? run->roff : run->loff;
    *len = run->len;
}

static bool overlaps(const llmlink_task_t *batch, const llmlink_task_t *c)
{
    for (const llmlink_task_t *m = batch; m; m = m->bnext)
        for (size_t i = 0; i < m->prep.nruns; i++) {
            uint64_t mo, ml;
            dest_range(m, i, &mo, &ml);
            for (size_t j = 0; j < c->prep.nruns; j++) {
                uint64_t co, cl;
                dest_range(c, j, &co, &cl);
                if (co < mo + ml && mo < co + cl)
                    return true;
            }
        }
    return false;
}

static uint64_t task_bytes(const llmlink_task_t *t)
{
    uint64_t b = 0;
    for (size_t i = 0; i < t->prep.nruns; i++)
        b += t->prep.runs[i].len;
    return b * t->prep.n;
}

bool llk_batch_take_locked(llk_tasks_t *q, llmlink_task_t *lead, llk_xfer_cancel_t *bcx)
{
    if (lead->internal || lead->layer || lead->prep.req.kind != LLK_XKIND_BLOCKS)
        return false;
    size_t ntasks = 1, nruns = lead->prep.nruns;
    uint64_t bytes = task_bytes(lead);
    llmlink_task_t *tail = lead, *c = q->qhead;
    /* Only the tasks right behind it: a task skipped over could touch the
     * same bytes as a later one, whose order must stay as submitted. They
     * are chained (bnext) while looked at, taken off the queue only once
     * the batch is big enough. */
    for (; c && ntasks < BATCH_MAX_TASKS; c = c->qnext) {
        uint64_t cb = task_bytes(c);
        if (!compatible(lead, c) || nruns + c->prep.nruns > BATCH_MAX_RUNS ||
            bytes + cb > BATCH_MAX_BYTES || overlaps(lead, c))
            break;
        tail->bnext = c;
        tail = c;
        ntasks++;
        nruns += c->prep.nruns;
        bytes += cb;
    }
    if (ntasks < BATCH_MIN_TASKS) {
        for (llmlink_task_t *m = lead, *next; m; m = next) {
            next = m->bnext;
            m->bnext = NULL;
        }
        return false;
    }
    q->qhead = c;
    if (!c)
        q->qtail = NULL;
    for (llmlink_task_t *m = lead; m; m = m->bnext) {
        m->qnext = NULL;
        m->state = LLK_TASK_RUNNING;
        m->bcx = bcx;
    }
    return true;
}

/* Makes bcx as new for the next batch (no canceller holds it: every task
 * of the batch had its bcx cleared under tq->mu). */
static void bcx_reset(llk_xfer_cancel_t *bcx)
{
    uint64_t v;
    if (atomic_exchange(&bcx->requested, false))
        while (read(bcx->wake_fd, &v, sizeof v) < 0 && errno == EINTR)
            ;
    pthread_mutex_lock(&bcx->mu);
    bcx->fenced = false;
    bcx->fenced_status = 0;
    pthread_mutex_unlock(&bcx->mu);
}

/* The batch's plan input: every task's runs, in order; the earliest
 * deadline. NULL: out of memory. */
static llk_byte_run_t *concat_runs(llmlink_task_t *lead, size_t *nruns, int64_t *deadline)
{
    size_t n = 0;
    for (llmlink_task_t *m = lead; m; m = m->bnext)
        n += m->prep.nruns;
    llk_byte_run_t *runs = malloc(n * sizeof *runs);
    if (!runs)
        return NULL;
    size_t k = 0;
    *deadline = lead->deadline_ms;
    for (llmlink_task_t *m = lead; m; m = m->bnext) {
        memcpy(runs + k, m->prep.runs, m->prep.nruns * sizeof *runs);
        k += m->prep.nruns;
        if (m->deadline_ms < *deadline)
            *deadline = m->deadline_ms;
    }
    *nruns = n;
    return runs;
}

/* Ends (or runs again) each task of the batch, in submission order. */
typedef enum { B_ALL, B_CANCEL, B_ALONE } outcome_t;

static void settle(llmlink_t *e, llmlink_task_t *lead, outcome_t how, llmlink_status_t st,
                   const char *msg)
{
    llk_tasks_t *q = e->tasks;
    llmlink_task_t *list = lead, *again = NULL, **again_tail = &again;
    llmlink_task_t *ended = NULL, **ended_tail = &ended;
    pthread_mutex_lock(&q->mu);
    for (llmlink_task_t *m = list, *next; m; m = next) {
        next = m->bnext;
        m->bnext = NULL;
        m->bcx = NULL; /* from here a cancel goes to the task's own cx */
        /* A cancelled batch: the cancelled tasks end with its status, the
         * others run again (put back at the front unless the engine stops). */
        bool back = how == B_CANCEL && !llk_cancel_requested(&m->cx) && !q->stop;
        llmlink_task_t ***tailp = back ? &again_tail : &ended_tail;
        **tailp = m;
        *tailp = &m->bnext;
    }
    llk_task_requeue_front_locked(q, again);
    pthread_mutex_unlock(&q->mu);
    for (llmlink_task_t *m = ended, *next; m; m = next) {
        next = m->bnext;
        m->bnext = NULL;
        if (how == B_ALONE)
            llk_task_run(m);
        else
            llk_task_complete(m, how == B_CANCEL && !llk_cancel_requested(&m->cx)
                                     ? LLMLINK_CANCELLED : st,
                              how == B_CANCEL && !llk_cancel_requested(&m->cx)
                                  ? "cancelled: the engine was finalized" : msg);
    }
}

/* count() in xfer/run.c counted the batch as one transfer: make it one per
 * task (its own bytes are already in bytes_requested, the runs being
 * disjoint), or none when each task runs again alone. */
static void recount(llmlink_t *e, outcome_t how, llmlink_status_t st, size_t n)
{
    llk_xstats_t *x = &e->xstats;
    bool timed_out = st == LLMLINK_WAIT_PROCESS_TIMEOUT;
    if (how == B_CANCEL)
        return;
    if (st == LLMLINK_SUCCESS) {
        atomic_fetch_add(&x->transfers, n - 1);
    } else if (how == B_ALL) {
        atomic_fetch_add(&x->transfers_failed, n - 1);
        if (timed_out)
            atomic_fetch_add(&x->transfers_timed_out, n - 1);
    } else {
        atomic_fetch_sub(&x->transfers_failed, 1);
        if (timed_out)
            atomic_fetch_sub(&x->transfers_timed_out, 1);
    }
}

void llk_batch_run(llmlink_t *e, llmlink_task_t *lead, llk_xfer_cancel_t *bcx)
{
    size_t n = 0;
    for (llmlink_task_t *m = lead; m; m = m->bnext)
        n++;
    llk_xfer_prep_t bp = lead->prep; /* borrowed link and cache; runs are the batch's */
    int64_t deadline = -1;
    bp.runs = concat_runs(lead, &bp.nruns, &deadline);
    llmlink_status_t st;
    if (!bp.runs) {
        st = llk_err(LLMLINK_OUT_OF_MEMORY, "%s: out of memory (batch)", lead->prep.req.fn);
        atomic_fetch_add(&e->xstats.transfers_failed, 1); /* recount takes it back */
    } else {
        llk_err_clear();
        st = llk_xfer_exec(e, &bp, bcx, deadline);
    }
    free(bp.runs);
    char msg[LLK_ERR_MSG_MAX];
    snprintf(msg, sizeof msg, "%s", st == LLMLINK_SUCCESS ? "" : llk_err_message());
    outcome_t how = B_ALL;
    if (st == LLMLINK_CANCELLED || st == LLMLINK_CANCELLED_LINK_CLOSED)
        how = B_CANCEL; /* the others run again: on a closed link they fail there */
    else if (st != LLMLINK_SUCCESS && !atomic_load(&lead->prep.xl->broken_now))
        how = B_ALONE;  /* refused, or failed before any traffic: each on its own */
    recount(e, how, st, n);
    settle(e, lead, how, st, msg);
    bcx_reset(bcx);
}

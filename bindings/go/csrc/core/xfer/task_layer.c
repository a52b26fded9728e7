/* xfer/task_layer.c - layer-wise push (llmlink_transfer_cache_async): a
 * driver thread per task calls the user's synchronizer layer by layer and
 * submits each released layer's push, per target, as an internal task on
 * the transfer workers, so that the pushes of layer i run while sync(i+1)
 * waits. A thread rather than a worker: it blocks in the user's sync. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "link/engine.h"
#include "xfer/task.h"

typedef struct layer_target {
    struct llk_layer_task *lt;
    llk_xfer_req_t req;     /* one layer's push, layers filled per submit */
    int32_t s0, s1, d0;     /* source layers [s0, s1) -> destination d0.. */
    /* under tq->mu */
    llmlink_status_t result; /* TASK_PENDING until final */
    uint32_t outstanding;
    bool all_submitted, failed;
    char msg[LLK_ERR_MSG_MAX]; /* the first failure's */
} layer_target_t;

struct llk_layer_task {
    llmlink_t *e;
    llmlink_task_t *task;
    llmlink_layer_sync_fn sync;
    void *sync_ud;
    layer_target_t *tg;
    size_t ntg;
    uint64_t *src_blocks, *dst_blocks; /* copies, NULL for batch entries */
    uint32_t tpl;
    int32_t push_ms;        /* each push's limit from its submission */
    pthread_t thread;
    /* under tq->mu */
    bool cancel, frozen;    /* frozen: results final */
    /* The driver will not call sync again: llmlink_task_release waits for
     * it, so that sync_user_data may be freed once release returns. */
    bool sync_over;
    llmlink_task_t **subs;  /* every push submitted, a reference each */
    size_t nsubs, cap;
};

void llk_layer_free(struct llk_layer_task *lt)
{
    for (size_t i = 0; i < lt->nsubs; i++)
        llk_task_unref(lt->subs[i]);
    free(lt->subs);
    free(lt->tg);
    free(lt->src_blocks);
    free(lt->dst_blocks);
    free(lt);
}

size_t llk_layer_num_targets(const llmlink_task_t *t)
{
    return t->layer->ntg;
}

/* ---- results (tq->mu held) -------------------------------------------- */

static void target_fail(layer_target_t *g, llmlink_status_t st, const char *msg)
{
    if (g->lt->frozen || g->failed || g->result != LLMLINK_TASK_PENDING)
        return;
    g->failed = true;
    g->result = st;
    snprintf(g->msg, sizeof g->msg, "%s", msg);
}

static void target_maybe_done(layer_target_t *g)
{
    if (!g->lt->frozen && !g->failed && g->all_submitted && g->outstanding == 0 &&
        g->result == LLMLINK_TASK_PENDING)
        g->result = LLMLINK_SUCCESS;
}

/* Freezes the results: unfinished targets get st/why; returns the task's
 * status (the first failed target's) with its message in msg. */
static llmlink_status_t freeze(struct llk_layer_task *lt, llmlink_status_t st, const char *why,
                               char *msg, size_t mlen)
{
    for (size_t i = 0; i < lt->ntg; i++)
        if (lt->tg[i].result == LLMLINK_TASK_PENDING)
            target_fail(&lt->tg[i], st, why);
    lt->frozen = true;
    msg[0] = '\0';
    for (size_t i = 0; i < lt->ntg; i++)
        if (lt->tg[i].result != LLMLINK_SUCCESS) {
            /* the target's message names the call already */
            int n = snprintf(msg, mlen, "target %zu: ", i);
            snprintf(msg + n, mlen - (size_t)n, "%.*s", (int)(mlen - (size_t)n - 1),
                     lt->tg[i].msg);
            return lt->tg[i].result;
        }
    return LLMLINK_SUCCESS;
}

llmlink_status_t llk_layer_results(llmlink_task_t *t, llmlink_status_t *results, size_t num)
{
    llk_tasks_t *q = t->e->tasks;
    pthread_mutex_lock(&q->mu);
    for (size_t i = 0; i < num; i++)
        results[i] = t->layer->tg[i].result;
    pthread_mutex_unlock(&q->mu);
    return LLMLINK_SUCCESS;
}

/* ---- the driver ------------------------------------------------------- */

static void sub_done(llmlink_task_t *sub, void *arg)
{
    layer_target_t *g = arg;
    llk_tasks_t *q = sub->e->tasks;
    pthread_mutex_lock(&q->mu);
    g->outstanding--;
    if (sub->status != LLMLINK_SUCCESS)
        target_fail(g, sub->status, sub->msg);
    target_maybe_done(g);
    pthread_mutex_unlock(&q->mu);
}

/* Under tq->mu, just before a push is queued: a cancel already taken
 * refuses it, else it joins lt->subs in the same critical section, so
 * that a cancel's snapshot of lt->subs never misses a queued push. */
static bool admit_push(void *arg, llmlink_task_t *sub)
{
    struct llk_layer_task *lt = arg;
    if (lt->cancel)
        return false;
    if (lt->nsubs == lt->cap) {
        size_t cap = lt->cap ? lt->cap * 2 : 16;
        llmlink_task_t **n = realloc(lt->subs, cap * sizeof *n);
        if (!n)
            return false;
        lt->subs = n;
        lt->cap = cap;
    }
    sub->refs++; /* lt->subs' reference, dropped by llk_layer_free */
    lt->subs[lt->nsubs++] = sub;
    return true;
}

/* Submits layer l's push to target g. false when the driver must stop. */
static bool submit_layer(struct llk_layer_task *lt, layer_target_t *g, int32_t l)
{
    llk_tasks_t *q = lt->e->tasks;
    llk_xfer_req_t r = g->req;
    r.has_layers = true;
    r.layers.src_start = l;
    r.layers.src_end = l + 1;
    r.layers.dst_start = g->d0 + (l - g->s0);
    r.layers.dst_end = r.layers.dst_start + 1;
    r.layers.tensors_per_layer = lt->tpl;
    llmlink_task_t *sub = NULL;
    pthread_mutex_lock(&q->mu);
    g->outstanding++;
    pthread_mutex_unlock(&q->mu);
    llmlink_status_t st = llk_task_submit_sub(lt->e, &r, llk_now_ms() + lt->push_ms, sub_done, g,
                                              admit_push, lt, &sub);
    if (st == LLMLINK_SUCCESS) {
        llk_task_unref(sub); /* the handle: lt->subs holds its own */
        return true;
    }
    pthread_mutex_lock(&q->mu);
    g->outstanding--;
    bool cancelled = lt->cancel;
    if (!cancelled)
        target_fail(g, st, llk_err_message());
    pthread_cond_broadcast(&q->done_cv);
    pthread_mutex_unlock(&q->mu);
    return !cancelled;
}

/* A failed target gets no further layers (its failure is under tq->mu:
 * a worker's sub_done or a canceller sets it). */
static bool target_failed(llk_tasks_t *q, layer_target_t *g)
{
    pthread_mutex_lock(&q->mu);
    bool f = g->failed;
    pthread_mutex_unlock(&q->mu);
    return f;
}

static bool driver_cancelled(struct llk_layer_task *lt)
{
    llk_tasks_t *q = lt->e->tasks;
    pthread_mutex_lock(&q->mu);
    bool c = lt->cancel;
    pthread_mutex_unlock(&q->mu);
    return c;
}

static void *driver_main(void *arg)
{
    struct llk_layer_task *lt = arg;
    llk_tasks_t *q = lt->e->tasks;
    int32_t lo = INT32_MAX, hi = 0;
    for (size_t i = 0; i < lt->ntg; i++) {
        lo = lt->tg[i].s0 < lo ? lt->tg[i].s0 : lo;
        hi = lt->tg[i].s1 > hi ? lt->tg[i].s1 : hi;
    }
    char why[160] = "";
    for (int32_t l = lo; l < hi && !why[0]; l++) {
        bool wanted = false;
        for (size_t i = 0; i < lt->ntg; i++)
            wanted |= l >= lt->tg[i].s0 && l < lt->tg[i].s1;
        if (!wanted)
            continue;
        if (driver_cancelled(lt))
            break;
        if (!lt->sync((uint32_t)l, -1, lt->sync_ud)) {
            snprintf(why, sizeof why, "layer synchronizer returned false for layer %d", l);
            break;
        }
        for (size_t i = 0; i < lt->ntg; i++) {
            layer_target_t *g = &lt->tg[i];
            if (l < g->s0 || l >= g->s1 || target_failed(q, g))
                continue;
            if (!submit_layer(lt, g, l))
                break;
            if (l == g->s1 - 1) {
                pthread_mutex_lock(&q->mu);
                g->all_submitted = true;
                target_maybe_done(g);
                pthread_mutex_unlock(&q->mu);
            }
        }
    }
    /* Every push submitted ends (each is bounded by its deadline). */
    pthread_mutex_lock(&q->mu);
    lt->sync_over = true;
    pthread_cond_broadcast(&q->done_cv);
    for (;;) {
        uint32_t left = 0;
        for (size_t i = 0; i < lt->ntg; i++)
            left += lt->tg[i].outstanding;
        if (!left)
            break;
        pthread_cond_wait(&q->done_cv, &q->mu);
    }
    char msg[LLK_ERR_MSG_MAX] = "";
    llmlink_status_t st = LLMLINK_SUCCESS;
    bool finish = !lt->frozen; /* else the canceller made the task final */
    if (finish)
        st = why[0] ? freeze(lt, LLMLINK_FAILED, why, msg, sizeof msg)
                    : freeze(lt, LLMLINK_CANCELLED, "cancelled before this target finished", msg,
                             sizeof msg);
    pthread_mutex_unlock(&q->mu);
    if (finish)
        llk_task_finish(lt->task, st, msg);
    llk_task_unref(lt->task); /* the driver's reference (lt may go with it) */
    /* Last: finalize waits for drivers == 0 and may free q right after. */
    pthread_mutex_lock(&q->mu);
    q->drivers--;
    pthread_cond_broadcast(&q->done_cv);
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* ---- cancel ----------------------------------------------------------- */

void llk_layer_wait_sync_over(llmlink_task_t *t)
{
    llk_tasks_t *q = t->e->tasks;
    pthread_mutex_lock(&q->mu);
    while (!t->layer->sync_over)
        pthread_cond_wait(&q->done_cv, &q->mu);
    pthread_mutex_unlock(&q->mu);
}

void llk_layer_cancel(llmlink_task_t *t)
{
    struct llk_layer_task *lt = t->layer;
    llk_tasks_t *q = t->e->tasks;
    pthread_mutex_lock(&q->mu);
    if (t->state == LLK_TASK_DONE || lt->cancel) {
        pthread_mutex_unlock(&q->mu);
        /* a second canceller waits for the first one's result */
        llk_task_wait(t, -1);
        return;
    }
    lt->cancel = true;
    size_t n = lt->nsubs;
    llmlink_task_t **subs = n ? malloc(n * sizeof *subs) : NULL;
    for (size_t i = 0; subs && i < n; i++) {
        subs[i] = lt->subs[i];
        subs[i]->refs++;
    }
    pthread_mutex_unlock(&q->mu);
    for (size_t i = 0; i < n; i++) {
        if (subs)
            llk_task_cancel(subs[i]);
        if (subs)
            llk_task_unref(subs[i]);
    }
    free(subs);
    /* The pushes are final (fenced): the task is final now, even while the
     * driver still waits in the user's sync (it stops when sync returns). */
    char msg[LLK_ERR_MSG_MAX];
    pthread_mutex_lock(&q->mu);
    if (lt->frozen) {
        pthread_mutex_unlock(&q->mu);
        llk_task_wait(t, -1);
        return;
    }
    llmlink_status_t st = freeze(lt, LLMLINK_CANCELLED, "cancelled before this target finished",
                                 msg, sizeof msg);
    pthread_mutex_unlock(&q->mu);
    if (st == LLMLINK_CANCELLED)
        atomic_fetch_add(&t->e->xstats.tasks_cancelled, 1);
    if (!llk_task_finish(t, st, msg))
        llk_task_wait(t, -1);
}

/* ---- submit ----------------------------------------------------------- */

/* One target's request (no layers yet) and its resolved ranges: a full
 * prepare checks the link, the local cache's kind, the block indexes and
 * the layer ranges against the tensors, and is dropped again. */
static llmlink_status_t target_init(struct llk_layer_task *lt, layer_target_t *g,
                                    const llmlink_transfer_target_t *tt, int64_t src_id,
                                    size_t nblocks)
{
    static const char fn[] = "llmlink_transfer_cache_async";
    memset(&g->req, 0, sizeof g->req);
    g->lt = lt;
    g->result = LLMLINK_TASK_PENDING;
    llk_xfer_req_t *r = &g->req;
    r->fn = fn;
    r->push = true;
    r->key = tt->dst_key;
    r->local_id = src_id;
    if (tt->dst_key.type == LLMLINK_KEY_BLOCKS) {
        r->kind = LLK_XKIND_BLOCKS;
        r->local_blocks = lt->src_blocks;
        r->remote_blocks = lt->dst_blocks;
        r->nblocks = nblocks;
    } else {
        r->kind = LLK_XKIND_CACHE;
        r->local_batch = tt->src_batch_index;
    }
    r->size = -1;
    llk_xfer_prep_t p;
    llmlink_status_t st = llk_xfer_prepare(lt->e, r, &p);
    if (st != LLMLINK_SUCCESS)
        return st;
    uint32_t layers = p.lc->num_tensors / lt->tpl;
    llk_xfer_prep_free(lt->e, &p);
    if (tt->src_layer_start < 0) {
        g->s0 = g->d0 = 0;
        g->s1 = (int32_t)layers;
    } else {
        g->s0 = tt->src_layer_start;
        g->s1 = tt->src_layer_end;
        g->d0 = tt->dst_layer_start;
    }
    if (g->s1 <= g->s0 || (uint32_t)g->s1 > layers)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: source layers [%d, %d) with %u tensors per layer: cache %lld has "
                       "%u layers", fn, g->s0, g->s1, lt->tpl, (long long)src_id, layers);
    /* A layer push must be checked against the destination range too:
     * prepare the last layer (the highest tensors on both sides). */
    r->has_layers = true;
    r->layers.src_start = g->s1 - 1;
    r->layers.src_end = g->s1;
    r->layers.dst_start = g->d0 + (g->s1 - 1 - g->s0);
    r->layers.dst_end = r->layers.dst_start + 1;
    r->layers.tensors_per_layer = lt->tpl;
    st = llk_xfer_prepare(lt->e, r, &p);
    if (st == LLMLINK_SUCCESS)
        llk_xfer_prep_free(lt->e, &p);
    r->has_layers = false;
    return st;
}

static uint64_t *dup_list(const uint64_t *v, size_t n)
{
    if (!v || !n)
        return NULL;
    uint64_t *c = malloc(n * sizeof *c);
    if (c)
        memcpy(c, v, n * sizeof *c);
    return c;
}

llmlink_status_t llk_layer_submit(llmlink_t *e, int64_t src_cache_id, llmlink_layer_sync_fn sync,
                                  void *sync_user_data, const llmlink_transfer_target_t *targets,
                                  size_t num_targets, const uint64_t *src_blocks,
                                  const uint64_t *dst_blocks, size_t num_blocks,
                                  uint32_t tensors_per_layer, const llmlink_task_options_t *opts,
                                  llmlink_task_t **out)
{
    static const char fn[] = "llmlink_transfer_cache_async";
    if (!e->tasks)
        return llk_engine_check_running(e, fn);
    struct llk_layer_task *lt = calloc(1, sizeof *lt);
    if (!lt)
        return llk_err(LLMLINK_OUT_OF_MEMORY, "%s: out of memory", fn);
    lt->e = e;
    lt->sync = sync;
    lt->sync_ud = sync_user_data;
    lt->ntg = num_targets;
    lt->tpl = tensors_per_layer ? tensors_per_layer : 2;
    lt->push_ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : e->opts.sync_kv_wait_ms;
    lt->tg = calloc(num_targets, sizeof *lt->tg);
    lt->src_blocks = dup_list(src_blocks, num_blocks);
    lt->dst_blocks = dup_list(dst_blocks, num_blocks);
    if (!lt->tg || (num_blocks && (!lt->src_blocks || !lt->dst_blocks))) {
        llk_layer_free(lt);
        return llk_err(LLMLINK_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    for (size_t i = 0; i < num_targets; i++) {
        llmlink_status_t st = target_init(lt, &lt->tg[i], &targets[i], src_cache_id, num_blocks);
        if (st != LLMLINK_SUCCESS) {
            char m[LLK_ERR_MSG_MAX];
            snprintf(m, sizeof m, "%s", llk_err_message());
            llk_layer_free(lt);
            return llk_err(st, "%s (targets[%zu])", m, i);
        }
    }
    llmlink_task_t *t = llk_task_alloc(e, opts);
    if (!t) {
        llk_layer_free(lt);
        return llk_err(LLMLINK_OUT_OF_MEMORY, "%s: out of memory (task)", fn);
    }
    t->layer = lt;
    lt->task = t;
    t->deadline_ms = llk_now_ms() + lt->push_ms;
    if (!llk_task_enqueue(e, t, false, fn)) {
        llmlink_status_t st = llk_err_status();
        llk_task_unref(t);
        return st;
    }
    llk_tasks_t *q = e->tasks;
    pthread_mutex_lock(&q->mu);
    t->refs++; /* the driver's */
    q->drivers++;
    t->state = LLK_TASK_RUNNING;
    pthread_mutex_unlock(&q->mu);
    int rc = pthread_create(&lt->thread, NULL, driver_main, lt);
    if (rc != 0) {
        pthread_mutex_lock(&q->mu);
        t->refs--;
        q->drivers--;
        pthread_mutex_unlock(&q->mu);
        char m[200];
        snprintf(m, sizeof m, "%s: cannot start the layer driver thread: %s", fn, strerror(rc));
        llk_task_finish(t, LLMLINK_FAILED, m);
        llk_task_unref(t);
        return llk_err(LLMLINK_FAILED, "%s", m);
    }
    pthread_detach(lt->thread);
    atomic_fetch_add(&e->xstats.tasks_submitted, 1);
    *out = t;
    return LLMLINK_SUCCESS;
}

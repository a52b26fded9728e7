/* xfer/task.c - tasks: submit, the transfer workers, completion, wait,
 * cancel, release, the done queue (task.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/events.h"
#include "base/log.h"
#include "link/engine.h"
#include "xfer/notify.h"
#include "xfer/task.h"

/* A cancel waits for the fence at most the task's deadline plus this: the
 * executor is bounded by the deadline, the slack covers a fence's own time
 * (tcp push: 1 s). */
#define CANCEL_SLACK_MS 2000

/* The task whose on_done runs on this thread: llmlink_task_status answers
 * its final status there, before waiters see it. */
static _Thread_local llmlink_task_t *in_callback;

/* ---- small helpers (tq->mu held) -------------------------------------- */

static void live_add(llk_tasks_t *q, llmlink_task_t *t)
{
    t->lprev = NULL;
    t->lnext = q->live;
    if (q->live)
        q->live->lprev = t;
    q->live = t;
}

static void live_del(llk_tasks_t *q, llmlink_task_t *t)
{
    if (t->lprev)
        t->lprev->lnext = t->lnext;
    else if (q->live == t)
        q->live = t->lnext;
    if (t->lnext)
        t->lnext->lprev = t->lprev;
    t->lnext = t->lprev = NULL;
}

static void done_push(llk_tasks_t *q, llmlink_task_t *t)
{
    t->dnext = NULL;
    t->dprev = q->dtail;
    if (q->dtail)
        q->dtail->dnext = t;
    else
        q->dhead = t;
    q->dtail = t;
    t->in_done = true;
}

static void done_del(llk_tasks_t *q, llmlink_task_t *t)
{
    if (t->dprev)
        t->dprev->dnext = t->dnext;
    else
        q->dhead = t->dnext;
    if (t->dnext)
        t->dnext->dprev = t->dprev;
    else
        q->dtail = t->dprev;
    t->dnext = t->dprev = NULL;
    t->in_done = false;
}

/* Takes t off the run queue; false when it is not there. */
static bool queue_del(llk_tasks_t *q, llmlink_task_t *t)
{
    llmlink_task_t *prev = NULL;
    for (llmlink_task_t *c = q->qhead; c; prev = c, c = c->qnext) {
        if (c != t)
            continue;
        if (prev)
            prev->qnext = c->qnext;
        else
            q->qhead = c->qnext;
        if (q->qtail == c)
            q->qtail = prev;
        c->qnext = NULL;
        return true;
    }
    return false;
}

static void task_free(llmlink_task_t *t)
{
    llk_xfer_prep_free(t->e, &t->prep);
    llk_cancel_free(&t->cx);
    free(t->notify);
    if (t->layer)
        llk_layer_free(t->layer);
    free(t);
}

/* ---- references ------------------------------------------------------- */

void llk_task_unref(llmlink_task_t *t)
{
    llk_tasks_t *q = t->e->tasks;
    pthread_mutex_lock(&q->mu);
    bool last = --t->refs == 0;
    pthread_mutex_unlock(&q->mu);
    if (last)
        task_free(t);
}

/* ---- completion ------------------------------------------------------- */

bool llk_task_finish(llmlink_task_t *t, llmlink_status_t st, const char *msg)
{
    llk_tasks_t *q = t->e->tasks;
    pthread_mutex_lock(&q->mu);
    bool mine = !t->claimed;
    t->claimed = true;
    pthread_mutex_unlock(&q->mu);
    if (!mine)
        return false;
    /* Final: a canceller waiting for the fence may go on (a queued task
     * the finalize took never started; a worker's task already fenced). */
    llk_cancel_fenced(&t->cx);
    pthread_mutex_lock(&q->mu);
    t->status = st;
    snprintf(t->msg, sizeof t->msg, "%s", st == LLMLINK_SUCCESS ? "" : (msg ? msg : ""));
    /* Final for llmlink_task_status / _error on any thread from here, so
     * that a thread the callback wakes sees the status (wait and the fd
     * still come after the callback). */
    t->published = true;
    pthread_mutex_unlock(&q->mu);
    /* The callback first (documented): when a waiter wakes or the fd
     * reports the task, its on_done has returned. */
    llmlink_task_t *outer = in_callback;
    in_callback = t;
    if (t->sub_done)
        t->sub_done(t, t->sub_arg);
    if (t->on_done)
        t->on_done(t, st, t->user_data);
    in_callback = outer;

    pthread_mutex_lock(&q->mu);
    t->state = LLK_TASK_DONE;
    live_del(q, t);
    if (!t->released && !t->internal) {
        done_push(q, t);
        llk_events_set(&t->e->events, LLK_EV_TASKS, true);
    }
    pthread_cond_broadcast(&q->done_cv);
    bool last = --t->refs == 0; /* the queue's reference */
    pthread_mutex_unlock(&q->mu);
    if (last)
        task_free(t);
    return true;
}

/* ---- the workers ------------------------------------------------------ */

/* The attached notification once the bytes are in place; a refusal is the
 * task's status, with a message that says the bytes moved. */
static llmlink_status_t send_notify(llmlink_task_t *t)
{
    const llk_xfer_req_t *r = &t->prep.req;
    llmlink_status_t st = llk_notify_send(t->e, r->key.cluster_id, t->notify, t->notify_len,
                                          t->deadline_ms, r->fn);
    if (st == LLMLINK_SUCCESS)
        return st;
    char why[LLK_ERR_MSG_MAX];
    snprintf(why, sizeof why, "%s", llk_err_message());
    return llk_err(st, "%s: every byte of the task moved, but its notification to cluster %llu "
                   "was refused: %s", r->fn, (unsigned long long)r->key.cluster_id, why);
}

void llk_task_complete(llmlink_task_t *t, llmlink_status_t st, const char *msg)
{
    /* The call returned: nothing of it lands anywhere any more. */
    llk_cancel_fenced(&t->cx);
    char buf[LLK_ERR_MSG_MAX];
    snprintf(buf, sizeof buf, "%s", st == LLMLINK_SUCCESS ? "" : (msg ? msg : ""));
    if (st == LLMLINK_SUCCESS && t->notify_len) {
        st = send_notify(t);
        if (st != LLMLINK_SUCCESS)
            snprintf(buf, sizeof buf, "%s", llk_err_message());
    }
    /* The cache and the link go back before anyone learns the task ended,
     * so that an unregister or unlink right after a wait does not find
     * them held. */
    llk_xfer_prep_free(t->e, &t->prep);
    llk_task_finish(t, st, buf);
}

void llk_task_run(llmlink_task_t *t)
{
    /* The worker's own reference: a cancel may make the task final at its
     * fence (llk_task_cancel) while this thread still drains a stream, and
     * the handle may be released meanwhile. */
    llk_tasks_t *q = t->e->tasks;
    pthread_mutex_lock(&q->mu);
    t->refs++;
    pthread_mutex_unlock(&q->mu);
    llk_err_clear();
    llmlink_status_t st = llk_xfer_exec(t->e, &t->prep, &t->cx, t->deadline_ms);
    llk_task_complete(t, st, st == LLMLINK_SUCCESS ? "" : llk_err_message());
    llk_task_unref(t);
}

void llk_task_requeue_front_locked(llk_tasks_t *q, llmlink_task_t *list)
{
    llmlink_task_t *head = NULL, *tail = NULL;
    for (llmlink_task_t *t = list, *next; t; t = next) {
        next = t->bnext;
        t->bnext = NULL;
        t->bcx = NULL;
        t->state = LLK_TASK_QUEUED;
        t->qnext = NULL;
        if (tail)
            tail->qnext = t;
        else
            head = t;
        tail = t;
    }
    if (!head)
        return;
    tail->qnext = q->qhead;
    q->qhead = head;
    if (!q->qtail)
        q->qtail = tail;
    pthread_cond_signal(&q->work_cv);
}

static void *worker_main(void *arg)
{
    llmlink_t *e = arg;
    llk_tasks_t *q = e->tasks;
    /* This worker's batch cancel (xfer/task_batch.c), reused batch after
     * batch; without it the worker runs every task alone. */
    llk_xfer_cancel_t bcx;
    bool can_batch = llk_cancel_init(&bcx) == 0;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (!q->qhead && !q->stop)
            pthread_cond_wait(&q->work_cv, &q->mu);
        llmlink_task_t *t = q->qhead;
        if (!t) { /* stop, and nothing left */
            pthread_mutex_unlock(&q->mu);
            if (can_batch)
                llk_cancel_free(&bcx);
            return NULL;
        }
        q->qhead = t->qnext;
        if (!q->qhead)
            q->qtail = NULL;
        t->qnext = NULL;
        t->state = LLK_TASK_RUNNING;
        bool batch = can_batch && !q->stop && llk_batch_take_locked(q, t, &bcx);
        pthread_mutex_unlock(&q->mu);
        if (batch)
            llk_batch_run(e, t, &bcx);
        else
            llk_task_run(t);
    }
}

llmlink_status_t llk_tasks_start(llmlink_t *e, uint32_t nthreads)
{
    llk_tasks_t *q = calloc(1, sizeof *q);
    if (!q)
        return llk_err(LLMLINK_OUT_OF_MEMORY, "llmlink_init: out of memory (tasks)");
    q->threads = calloc(nthreads, sizeof *q->threads);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->work_cv, NULL);
    pthread_cond_init(&q->done_cv, &ca);
    pthread_condattr_destroy(&ca);
    e->tasks = q;
    if (!q->threads) {
        llk_tasks_free(e);
        return llk_err(LLMLINK_OUT_OF_MEMORY, "llmlink_init: out of memory (tasks)");
    }
    for (uint32_t i = 0; i < nthreads; i++) {
        int rc = pthread_create(&q->threads[i], NULL, worker_main, e);
        if (rc != 0) {
            llk_tasks_stop_begin(e);
            llk_tasks_join(e);
            llk_tasks_free(e);
            return llk_err(LLMLINK_FAILED, "llmlink_init: cannot start transfer worker %u of %u "
                           "(llmlink.AsyncWorkers): %s", i + 1, nthreads, strerror(rc));
        }
        q->nthreads++;
    }
    return LLMLINK_SUCCESS;
}

void llk_tasks_stop_begin(llmlink_t *e)
{
    llk_tasks_t *q = e->tasks;
    if (!q)
        return;
    pthread_mutex_lock(&q->mu);
    q->stop = true;
    /* Queued ones end CANCELLED here; running ones are asked to stop (the
     * links break next, which ends their transfers in any case). */
    llmlink_task_t *queued = q->qhead;
    q->qhead = q->qtail = NULL;
    for (llmlink_task_t *t = q->live; t; t = t->lnext)
        if (t->state == LLK_TASK_RUNNING) {
            llk_cancel_request(&t->cx);
            if (t->bcx) /* in a batch: its execution watches the batch's cancel */
                llk_cancel_request(t->bcx);
        }
    pthread_cond_broadcast(&q->work_cv);
    pthread_mutex_unlock(&q->mu);
    while (queued) {
        llmlink_task_t *next = queued->qnext;
        queued->qnext = NULL;
        atomic_fetch_add(&e->xstats.tasks_cancelled, 1);
        llk_task_finish(queued, LLMLINK_CANCELLED, "cancelled before it started: the engine "
                        "was finalized");
        queued = next;
    }
    /* transfer_cache_async tasks: no more sync calls, pushes cancelled. */
    for (;;) {
        llmlink_task_t *lt = NULL;
        pthread_mutex_lock(&q->mu);
        for (llmlink_task_t *t = q->live; t; t = t->lnext)
            if (t->layer && !t->claimed) {
                lt = t;
                t->refs++;
                break;
            }
        pthread_mutex_unlock(&q->mu);
        if (!lt)
            break;
        llk_layer_cancel(lt);
        llk_task_unref(lt);
    }
}

void llk_tasks_join(llmlink_t *e)
{
    llk_tasks_t *q = e->tasks;
    if (!q)
        return;
    for (uint32_t i = 0; i < q->nthreads; i++)
        pthread_join(q->threads[i], NULL);
    q->nthreads = 0;
    /* Drivers end once their sync returns (they see the cancel). */
    pthread_mutex_lock(&q->mu);
    while (q->drivers)
        pthread_cond_wait(&q->done_cv, &q->mu);
    pthread_mutex_unlock(&q->mu);
}

void llk_tasks_free(llmlink_t *e)
{
    llk_tasks_t *q = e->tasks;
    if (!q)
        return;
    free(q->threads);
    pthread_cond_destroy(&q->work_cv);
    pthread_cond_destroy(&q->done_cv);
    pthread_mutex_destroy(&q->mu);
    free(q);
    e->tasks = NULL;
}

/* ---- submit ----------------------------------------------------------- */

llmlink_task_t *llk_task_alloc(llmlink_t *e, const llmlink_task_options_t *opts)
{
    llmlink_task_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    if (llk_cancel_init(&t->cx) != 0) {
        free(t);
        return NULL;
    }
    t->e = e;
    t->refs = 1;
    t->state = LLK_TASK_QUEUED;
    if (opts) {
        t->on_done = opts->on_done;
        t->user_data = opts->user_data;
    }
    if (opts && opts->notify_len) {
        t->notify = malloc(opts->notify_len);
        if (!t->notify) {
            llk_cancel_free(&t->cx);
            free(t);
            return NULL;
        }
        memcpy(t->notify, opts->notify_data, opts->notify_len);
        t->notify_len = opts->notify_len;
    }
    return t;
}

bool llk_task_enqueue(llmlink_t *e, llmlink_task_t *t, bool queue, const char *fn)
{
    return llk_task_enqueue_admit(e, t, queue, fn, NULL, NULL);
}

bool llk_task_enqueue_admit(llmlink_t *e, llmlink_task_t *t, bool queue, const char *fn,
                            bool (*admit)(void *, llmlink_task_t *), void *arg)
{
    llk_tasks_t *q = e->tasks;
    pthread_mutex_lock(&q->mu);
    if (q->stop) {
        pthread_mutex_unlock(&q->mu);
        llk_err(LLMLINK_ENGINE_FINALIZED, "%s: engine (cluster %llu) is finalized", fn,
                (unsigned long long)e->cluster_id);
        return false;
    }
    if (admit && !admit(arg, t)) {
        pthread_mutex_unlock(&q->mu);
        llk_err(LLMLINK_CANCELLED, "%s: cancelled before it started", fn);
        return false;
    }
    t->refs++;
    live_add(q, t);
    if (queue) {
        if (q->qtail)
            q->qtail->qnext = t;
        else
            q->qhead = t;
        q->qtail = t;
        pthread_cond_signal(&q->work_cv);
    }
    pthread_mutex_unlock(&q->mu);
    return true;
}

static llmlink_status_t submit(llmlink_t *e, const llk_xfer_req_t *req,
                               const llmlink_task_options_t *opts, int64_t deadline_ms,
                               llmlink_task_t **out)
{
    if (!e->tasks)
        return llk_engine_check_running(e, req->fn);
    llmlink_task_t *t = llk_task_alloc(e, opts);
    if (!t)
        return llk_err(LLMLINK_OUT_OF_MEMORY, "%s: out of memory (task)", req->fn);
    llmlink_status_t st = llk_xfer_prepare(e, req, &t->prep);
    if (st != LLMLINK_SUCCESS) {
        task_free(t);
        return st;
    }
    if (deadline_ms < 0) {
        int32_t ms = opts && opts->timeout_ms > 0
                         ? opts->timeout_ms
                         : llk_xlink_wait_ms(t->prep.xl, e->opts.sync_kv_wait_ms);
        deadline_ms = llk_now_ms() + ms;
    }
    t->deadline_ms = deadline_ms;
    *out = t;
    return LLMLINK_SUCCESS;
}

llmlink_status_t llk_task_submit(llmlink_t *e, const llk_xfer_req_t *req,
                                 const llmlink_task_options_t *opts, llmlink_task_t **out)
{
    llmlink_task_t *t = NULL;
    llmlink_status_t st = submit(e, req, opts, -1, &t);
    if (st != LLMLINK_SUCCESS)
        return st;
    if (!llk_task_enqueue(e, t, true, req->fn)) {
        st = llk_err_status();
        task_free(t);
        return st;
    }
    atomic_fetch_add(&e->xstats.tasks_submitted, 1);
    *out = t;
    return LLMLINK_SUCCESS;
}

llmlink_status_t llk_task_submit_sub(llmlink_t *e, const llk_xfer_req_t *req,
                                     int64_t deadline_ms,
                                     void (*sub_done)(llmlink_task_t *, void *), void *arg,
                                     bool (*admit)(void *, llmlink_task_t *), void *admit_arg,
                                     llmlink_task_t **out)
{
    llmlink_task_t *t = NULL;
    llmlink_status_t st = submit(e, req, NULL, deadline_ms, &t);
    if (st != LLMLINK_SUCCESS)
        return st;
    t->internal = true;
    t->sub_done = sub_done;
    t->sub_arg = arg;
    if (!llk_task_enqueue_admit(e, t, true, req->fn, admit, admit_arg)) {
        st = llk_err_status();
        task_free(t);
        return st;
    }
    *out = t;
    return LLMLINK_SUCCESS;
}

/* ---- status, wait ----------------------------------------------------- */

/* The final status, with this thread's last_error set to the task's
 * message when it failed; TASK_PENDING while not final. */
static llmlink_status_t final_or_pending(llmlink_task_t *t, bool done)
{
    if (!done)
        return LLMLINK_TASK_PENDING;
    if (t->status != LLMLINK_SUCCESS)
        llk_err(t->status, "%s", t->msg);
    return t->status;
}

bool llk_task_is_final(llmlink_task_t *t)
{
    if (in_callback == t)
        return true;
    llk_tasks_t *q = t->e->tasks;
    pthread_mutex_lock(&q->mu);
    bool done = t->state == LLK_TASK_DONE || t->published;
    pthread_mutex_unlock(&q->mu);
    return done;
}

llmlink_status_t llk_task_status(llmlink_task_t *t)
{
    if (in_callback == t)
        return final_or_pending(t, true);
    llk_tasks_t *q = t->e->tasks;
    pthread_mutex_lock(&q->mu);
    bool done = t->state == LLK_TASK_DONE || t->published;
    pthread_mutex_unlock(&q->mu);
    return final_or_pending(t, done);
}

/* Waits under q->mu until t is final or deadline_ms (-1: none). */
static bool wait_done_locked(llk_tasks_t *q, llmlink_task_t *t, int64_t deadline_ms)
{
    while (t->state != LLK_TASK_DONE) {
        if (deadline_ms < 0) {
            pthread_cond_wait(&q->done_cv, &q->mu);
            continue;
        }
        int64_t left = deadline_ms - llk_now_ms();
        if (left <= 0)
            return false;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += left / 1000;
        ts.tv_nsec += (left % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&q->done_cv, &q->mu, &ts);
    }
    return true;
}

llmlink_status_t llk_task_wait(llmlink_task_t *t, int32_t timeout_ms)
{
    if (in_callback == t)
        return final_or_pending(t, true);
    llk_tasks_t *q = t->e->tasks;
    int64_t deadline = timeout_ms < 0 ? -1 : llk_now_ms() + timeout_ms;
    pthread_mutex_lock(&q->mu);
    bool done = wait_done_locked(q, t, deadline);
    pthread_mutex_unlock(&q->mu);
    return final_or_pending(t, done);
}

/* ---- cancel, release -------------------------------------------------- */

static void count_cancel(llmlink_task_t *t, llmlink_status_t st)
{
    if (st == LLMLINK_CANCELLED || st == LLMLINK_CANCELLED_LINK_CLOSED)
        atomic_fetch_add(&t->e->xstats.tasks_cancelled, 1);
}

llmlink_status_t llk_task_cancel(llmlink_task_t *t)
{
    llk_tasks_t *q = t->e->tasks;
    if (t->layer) {
        llk_layer_cancel(t);
        return llk_task_status(t);
    }
    pthread_mutex_lock(&q->mu);
    if (t->state == LLK_TASK_DONE) {
        pthread_mutex_unlock(&q->mu);
        return final_or_pending(t, true);
    }
    if (t->state == LLK_TASK_QUEUED && queue_del(q, t)) {
        /* Never started: its link and cache were never touched. */
        pthread_mutex_unlock(&q->mu);
        llk_xfer_prep_free(t->e, &t->prep);
        char msg[LLK_ERR_MSG_MAX];
        snprintf(msg, sizeof msg, "%s: cancelled before it started", t->prep.req.fn);
        llk_task_finish(t, LLMLINK_CANCELLED, msg);
        count_cancel(t, LLMLINK_CANCELLED);
        return final_or_pending(t, true);
    }
    int64_t bound = t->deadline_ms + CANCEL_SLACK_MS;
    bool in_batch = t->bcx != NULL;
    const char *fn = t->prep.req.fn;
    if (t->bcx) {
        /* In a running batch: the task's own cancel marks it (the batch
         * worker reads that under this lock), the batch's stops the
         * execution; the others of the batch run again. Its fence is the
         * batch's return (llk_task_complete). */
        llk_cancel_request(&t->cx);
        llk_cancel_request(t->bcx);
    } /* (a batch's deadline is its earliest task's: within bound) */
    pthread_mutex_unlock(&q->mu);
    llk_cancel_request(&t->cx);
    llk_cancel_wait_fenced(&t->cx, bound);
    /* A transport that stopped the task and keeps the link (a tcp pull
     * switched to discarding, an shm copy stopped) says CANCELLED with
     * its fence: the task is final now, while its worker may still drain
     * the stream (bounded by the deadline; against a frozen peer that is
     * the whole deadline). A task in a batch is fenced by the batch's
     * return instead. */
    if (!in_batch && llk_cancel_fenced_status(&t->cx) == LLMLINK_CANCELLED) {
        char msg[LLK_ERR_MSG_MAX];
        snprintf(msg, sizeof msg, "%s: cancelled; nothing of it lands any more (what was in "
                 "flight is discarded) and the link stays usable", fn ? fn : "task");
        llk_task_finish(t, LLMLINK_CANCELLED, msg); /* no-op when it ended first */
    }
    /* The status is the executor's (CANCELLED, CANCELLED_LINK_CLOSED, or
     * what the transfer ended with when it finished first). */
    pthread_mutex_lock(&q->mu);
    bool done = wait_done_locked(q, t, bound);
    pthread_mutex_unlock(&q->mu);
    if (done)
        count_cancel(t, t->status);
    return final_or_pending(t, done);
}

void llk_task_release(llmlink_task_t *t)
{
    llk_tasks_t *q = t->e->tasks;
    pthread_mutex_lock(&q->mu);
    if (t->released) { /* a second release: ignored rather than a double free */
        pthread_mutex_unlock(&q->mu);
        return;
    }
    t->released = true;
    if (t->in_done) {
        done_del(q, t);
        if (!q->dhead)
            llk_events_set(&t->e->events, LLK_EV_TASKS, false);
    }
    bool running = t->state != LLK_TASK_DONE;
    pthread_mutex_unlock(&q->mu);
    if (running)
        (void)llk_task_cancel(t);
    /* A layer task's synchronizer is never called after release returned
     * (the caller may free sync_user_data then): a cancel does not wait
     * for a sync call that is running, release does. */
    if (t->layer)
        llk_layer_wait_sync_over(t);
    llk_task_unref(t);
}

llmlink_status_t llk_task_poll_done(llmlink_t *e, llmlink_task_t **tasks, size_t max,
                                    size_t *count)
{
    llk_tasks_t *q = e->tasks;
    size_t n = 0;
    pthread_mutex_lock(&q->mu);
    while (n < max && q->dhead) {
        llmlink_task_t *t = q->dhead;
        done_del(q, t);
        tasks[n++] = t;
    }
    if (!q->dhead)
        llk_events_set(&e->events, LLK_EV_TASKS, false);
    pthread_mutex_unlock(&q->mu);
    *count = n;
    return LLMLINK_SUCCESS;
}

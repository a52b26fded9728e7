/*
 * task.h - asynchronous transfers (llmlink.h, "Asynchronous transfers"):
 * the task object, the engine's FIFO queue and its transfer workers, the
 * done queue behind llmlink_task_poll_done and the engine fd.
 *
 * Data flow: ffi/api_task.c checks the arguments (ffi/xfer_args.h, the
 * blocking calls' own checks) -> llk_task_submit: llk_xfer_prepare (the
 * local cache and the link are resolved and held, local mistakes fail the
 * submit) -> queue -> a worker runs llk_xfer_exec with the task's cancel
 * and deadline -> the attached notification (xfer/notify.h) -> completion:
 * on_done, then waiters and the done queue (events: LLK_EV_TASKS). The
 * blocking calls run the same prepare + exec inline (llk_xfer_run).
 *
 * Layer-wise push (llmlink_transfer_cache_async) is xfer/task_layer.c: a
 * driver thread per task submits one internal push task per layer and
 * target onto the same queue.
 *
 * Locks: tq->mu guards every task's state, refs, the queues and the live
 * list; it is a leaf but for the events mutex (tq->mu -> ev->mu). No lock
 * is held while a task's bytes move or while a callback runs.
 */
#ifndef LLK_XFER_TASK_H
#define LLK_XFER_TASK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "llmlink.h"
#include "base/err.h"
#include "xfer/cancel.h"
#include "xfer/xfer.h"

typedef enum llk_task_state {
    LLK_TASK_QUEUED = 0,
    LLK_TASK_RUNNING,
    LLK_TASK_DONE
} llk_task_state_t;

struct llk_layer_task;

struct llmlink_task {
    llmlink_t *e;
    /* under tq->mu */
    uint32_t refs;          /* the handle (user or driver) + the queue/worker while not done */
    llk_task_state_t state;
    bool released;
    bool in_done;           /* on the done queue */
    bool claimed;           /* a thread is making it final (first one wins) */
    bool internal;          /* a layer push of a transfer_cache_async task: no done queue */
    bool published;         /* status and msg final (set before the callbacks) */
    struct llmlink_task *qnext;         /* run queue */
    struct llmlink_task *dnext, *dprev; /* done queue */
    struct llmlink_task *lnext, *lprev; /* live list (not yet done) */

    /* final once state is DONE (the worker writes them before) */
    llmlink_status_t status;
    char msg[LLK_ERR_MSG_MAX];

    llk_xfer_prep_t prep;   /* what exec runs (transfer tasks) */
    int64_t deadline_ms;    /* monotonic */
    llk_xfer_cancel_t cx;
    llmlink_task_done_fn on_done;
    void *user_data;
    uint8_t *notify;        /* copied at submit, NULL: none */
    size_t notify_len;
    /* internal tasks: called on the worker when final, before waiters */
    void (*sub_done)(struct llmlink_task *t, void *arg);
    void *sub_arg;
    struct llk_layer_task *layer; /* transfer_cache_async: the driver's state */
    /* Coalescing (xfer/task_batch.c), under tq->mu: the cancel of the batch
     * this task runs in (NULL: it runs alone), and the next task of it. */
    llk_xfer_cancel_t *bcx;
    struct llmlink_task *bnext;
};

typedef struct llk_tasks {
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* a task was queued, or stop */
    pthread_cond_t done_cv; /* CLOCK_MONOTONIC: some task became final; a driver ended */
    llmlink_task_t *qhead, *qtail;
    llmlink_task_t *dhead, *dtail;
    llmlink_task_t *live;
    bool stop;
    uint32_t drivers;       /* transfer_cache_async driver threads still running */
    uint32_t nthreads;
    pthread_t *threads;
} llk_tasks_t;

/* Engine lifecycle (core/link/engine.c): start the workers at init, begin
 * the stop at finalize (no more submits; queued tasks end CANCELLED, a
 * cancel is requested of running ones), join once the links are broken,
 * free with the engine. */
llmlink_status_t llk_tasks_start(llmlink_t *e, uint32_t nthreads);
void llk_tasks_stop_begin(llmlink_t *e);
void llk_tasks_join(llmlink_t *e);
void llk_tasks_free(llmlink_t *e);

/* A prepared task from a checked request: *out gets the handle. */
llmlink_status_t llk_task_submit(llmlink_t *e, const llk_xfer_req_t *req,
                                 const llmlink_task_options_t *opts, llmlink_task_t **out);
/* The same for the layer driver: an internal task (no done queue, no
 * tasks_submitted count) whose sub_done runs when final. admit (may be
 * NULL) runs under tq->mu just before the task is queued, so that the
 * driver records it atomically with a cancel's snapshot; false: not
 * queued, CANCELLED. */
llmlink_status_t llk_task_submit_sub(llmlink_t *e, const llk_xfer_req_t *req,
                                     int64_t deadline_ms,
                                     void (*sub_done)(llmlink_task_t *, void *), void *arg,
                                     bool (*admit)(void *, llmlink_task_t *), void *admit_arg,
                                     llmlink_task_t **out);

/* A new task object (refs 1: the handle), not queued. */
llmlink_task_t *llk_task_alloc(llmlink_t *e, const llmlink_task_options_t *opts);
/* Puts t on the live list (and the run queue unless a driver runs it),
 * taking the queue's reference. false: the engine stopped (llk_err set). */
bool llk_task_enqueue(llmlink_t *e, llmlink_task_t *t, bool queue, const char *fn);
/* llk_task_enqueue with an admit check under tq->mu (see submit_sub). */
bool llk_task_enqueue_admit(llmlink_t *e, llmlink_task_t *t, bool queue, const char *fn,
                            bool (*admit)(void *, llmlink_task_t *), void *arg);
/* Makes t final with st and msg: sub_done, on_done (this thread), then
 * waiters, the done queue and the fd; drops the queue's reference. false
 * (nothing done) when another thread already made it final. */
bool llk_task_finish(llmlink_task_t *t, llmlink_status_t st, const char *msg);
void llk_task_unref(llmlink_task_t *t);

llmlink_status_t llk_task_status(llmlink_task_t *t);
/* Final (or in its own on_done on this thread), without touching
 * last_error. */
bool llk_task_is_final(llmlink_task_t *t);
llmlink_status_t llk_task_wait(llmlink_task_t *t, int32_t timeout_ms);
llmlink_status_t llk_task_cancel(llmlink_task_t *t);
void llk_task_release(llmlink_task_t *t);
llmlink_status_t llk_task_poll_done(llmlink_t *e, llmlink_task_t **tasks, size_t max,
                                    size_t *count);

/* Runs t's prepared transfer alone with its own cancel and deadline, then
 * completes it (llk_task_complete). */
void llk_task_run(llmlink_task_t *t);
/* After t's bytes moved (or not): its fence, the attached notification on
 * success, the prepared request freed, then llk_task_finish. */
void llk_task_complete(llmlink_task_t *t, llmlink_status_t st, const char *msg);
/* Puts the tasks of a list (bnext) back at the front of the run queue in
 * their order, QUEUED again (tq->mu held). */
void llk_task_requeue_front_locked(llk_tasks_t *q, llmlink_task_t *list);

/* ---- xfer/task_batch.c: coalescing ------------------------------------- */

/* Under tq->mu, lead just taken off the queue: takes the queued tasks
 * right behind it that can share its execution (same link, direction,
 * remote key, local cache and layer mapping, BLOCKS kind, destinations
 * disjoint), marks them RUNNING and links them from lead->bnext, each with
 * bcx. false: lead runs alone. */
bool llk_batch_take_locked(llk_tasks_t *q, llmlink_task_t *lead, llk_xfer_cancel_t *bcx);
/* Runs a batch taken by llk_batch_take_locked as one plan and completes
 * (or re-runs, or requeues) each of its tasks. bcx is reset for reuse. */
void llk_batch_run(llmlink_t *e, llmlink_task_t *lead, llk_xfer_cancel_t *bcx);

/* ---- xfer/task_layer.c ------------------------------------------------- */

/* llmlink_transfer_cache_async after the ABI checks. */
llmlink_status_t llk_layer_submit(llmlink_t *e, int64_t src_cache_id, llmlink_layer_sync_fn sync,
                                  void *sync_user_data, const llmlink_transfer_target_t *targets,
                                  size_t num_targets, const uint64_t *src_blocks,
                                  const uint64_t *dst_blocks, size_t num_blocks,
                                  uint32_t tensors_per_layer, const llmlink_task_options_t *opts,
                                  llmlink_task_t **out);
/* Cancels a layer task: no more sync calls, its pushes cancelled. */
void llk_layer_cancel(llmlink_task_t *t);
/* Waits until the layer task's driver will not call sync any more (it
 * returned from its last call, or never calls it again). */
void llk_layer_wait_sync_over(llmlink_task_t *t);
/* Per-target results (num == num_targets checked by the caller). */
llmlink_status_t llk_layer_results(llmlink_task_t *t, llmlink_status_t *results, size_t num);
size_t llk_layer_num_targets(const llmlink_task_t *t);
void llk_layer_free(struct llk_layer_task *lt);

#endif /* LLK_XFER_TASK_H */

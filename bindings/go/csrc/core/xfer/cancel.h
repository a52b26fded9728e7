/*
 * cancel.h - how a task's cancel reaches the thread that runs its
 * transfer, and how that thread says the fence holds.
 *
 * The canceller (llmlink_task_cancel, any thread) calls llk_cancel_request
 * and then llk_cancel_wait_fenced. The executing thread (a transfer worker,
 * or the caller of a blocking call) looks at llk_cancel_requested at every
 * step it may stop at, and polls wake_fd with its sockets so that a cancel
 * wakes it at once; once it knows that no byte of the call will land in
 * either side's memory any more (it stopped copying, it switched a tcp pull
 * to discarding, the link is broken and fenced, or the call returned), it
 * calls llk_cancel_fenced. The call may go on after that (draining a tcp
 * stream so that it stays usable) - the task's status is final from the
 * fence on.
 */
#ifndef LLK_XFER_CANCEL_H
#define LLK_XFER_CANCEL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct llk_xfer_cancel {
    atomic_bool requested; /* set once, before wake_fd is written */
    int wake_fd;           /* eventfd (non-blocking): readable once requested */
    pthread_mutex_t mu;
    pthread_cond_t cv;     /* CLOCK_MONOTONIC */
    bool fenced;           /* under mu */
    /* Under mu: the status the executor gave with the fence
     * (llk_cancel_fenced_as), 0 when it gave none (then the call's own
     * return is the task's status). */
    uint32_t fenced_status;
} llk_xfer_cancel_t;

/* 0, or -1 with errno. */
int llk_cancel_init(llk_xfer_cancel_t *cx);
void llk_cancel_free(llk_xfer_cancel_t *cx);
/* Canceller: asks the executor to stop (idempotent). */
void llk_cancel_request(llk_xfer_cancel_t *cx);
/* Executor: has a cancel been asked for? (cx may be NULL: never). */
static inline bool llk_cancel_requested(llk_xfer_cancel_t *cx)
{
    return cx && atomic_load_explicit(&cx->requested, memory_order_acquire);
}
/* Executor: from now on nothing of the call lands anywhere (idempotent;
 * cx may be NULL). */
void llk_cancel_fenced(llk_xfer_cancel_t *cx);
/* The same, saying what the task's status is from the fence on
 * (LLMLINK_CANCELLED: the link stays; LLMLINK_CANCELLED_LINK_CLOSED), so
 * that the canceller need not wait for the call to return (a tcp pull may
 * still drain its stream). The first status given wins. */
void llk_cancel_fenced_as(llk_xfer_cancel_t *cx, uint32_t status);
/* What llk_cancel_fenced_as said, 0 if nothing (cx->mu not held). */
uint32_t llk_cancel_fenced_status(llk_xfer_cancel_t *cx);
/* Canceller: waits until the executor said the fence holds, or until
 * deadline_ms (monotonic; -1: no limit). true when fenced. */
bool llk_cancel_wait_fenced(llk_xfer_cancel_t *cx, int64_t deadline_ms);

#endif /* LLK_XFER_CANCEL_H */

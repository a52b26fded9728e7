/* xfer/cancel.c - a task's cancel request and fence signal (cancel.h). */
#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include "base/clock.h"
#include "xfer/cancel.h"

int llk_cancel_init(llk_xfer_cancel_t *cx)
{
    atomic_init(&cx->requested, false);
    cx->fenced = false;
    cx->fenced_status = 0;
    cx->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (cx->wake_fd < 0)
        return -1;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int err = pthread_mutex_init(&cx->mu, NULL);
    if (!err) {
        err = pthread_cond_init(&cx->cv, &ca);
        if (err)
            pthread_mutex_destroy(&cx->mu);
    }
    pthread_condattr_destroy(&ca);
    if (err) {
        close(cx->wake_fd);
        cx->wake_fd = -1;
        errno = err;
        return -1;
    }
    return 0;
}

void llk_cancel_free(llk_xfer_cancel_t *cx)
{
    if (cx->wake_fd < 0)
        return;
    close(cx->wake_fd);
    cx->wake_fd = -1;
    pthread_cond_destroy(&cx->cv);
    pthread_mutex_destroy(&cx->mu);
}

void llk_cancel_request(llk_xfer_cancel_t *cx)
{
    if (atomic_exchange_explicit(&cx->requested, true, memory_order_acq_rel))
        return;
    uint64_t one = 1;
    while (write(cx->wake_fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

void llk_cancel_fenced(llk_xfer_cancel_t *cx)
{
    llk_cancel_fenced_as(cx, 0);
}

uint32_t llk_cancel_fenced_status(llk_xfer_cancel_t *cx)
{
    pthread_mutex_lock(&cx->mu);
    uint32_t st = cx->fenced_status;
    pthread_mutex_unlock(&cx->mu);
    return st;
}

void llk_cancel_fenced_as(llk_xfer_cancel_t *cx, uint32_t status)
{
    if (!cx)
        return;
    pthread_mutex_lock(&cx->mu);
    if (!cx->fenced_status)
        cx->fenced_status = status;
    if (!cx->fenced) {
        cx->fenced = true;
        pthread_cond_broadcast(&cx->cv);
    }
    pthread_mutex_unlock(&cx->mu);
}

bool llk_cancel_wait_fenced(llk_xfer_cancel_t *cx, int64_t deadline_ms)
{
    pthread_mutex_lock(&cx->mu);
    while (!cx->fenced) {
        if (deadline_ms < 0) {
            pthread_cond_wait(&cx->cv, &cx->mu);
            continue;
        }
        int64_t left = deadline_ms - llk_now_ms();
        if (left <= 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += left / 1000;
        ts.tv_nsec += (left % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&cx->cv, &cx->mu, &ts);
    }
    bool f = cx->fenced;
    pthread_mutex_unlock(&cx->mu);
    return f;
}

/* xfer/notify.c - the API side of notifications (notify.h): a sender
 * queues its NOTIFY on the link's control connection under e->mu and
 * waits on the engine condition variable for the reactor to hand it the
 * peer's NOTIFY_ACK (link/notify_rx.c); API threads never touch a socket.
 * Fetching takes from the engine's received queue. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "link/engine.h"
#include "xfer/notify.h"

/* The live link with cluster_id that may carry a notification now. */
static llk_conn_t *find_link(llmlink_t *e, uint64_t cluster_id)
{
    llk_conn_t *c = llk_conn_find(e, cluster_id, true);
    if (!c || c->state != LLK_CONN_LINKED)
        c = llk_conn_find(e, cluster_id, false);
    return c && c->state == LLK_CONN_LINKED ? c : NULL;
}

/* Waits (e->mu held) until deadline_ms; false when it passed. */
static bool wait_until(llmlink_t *e, int64_t deadline_ms)
{
    if (llk_now_ms() >= deadline_ms)
        return false;
    struct timespec ts = llk_ms_timespec(deadline_ms);
    pthread_cond_timedwait(&e->cv, &e->mu, &ts);
    return true;
}

/* Finds the link and room in its bulk queue for n bytes, waiting for room
 * (the reactor drains it) until deadline_ms. */
static llmlink_status_t reserve(llmlink_t *e, uint64_t cluster_id, size_t n,
                                int64_t deadline_ms, const char *fn, llk_conn_t **out)
{
    for (;;) {
        llmlink_status_t st = llk_engine_check_running(e, fn);
        if (st != LLMLINK_SUCCESS)
            return st;
        llk_conn_t *c = find_link(e, cluster_id);
        if (!c)
            return llk_err(LLMLINK_NOT_YET_LINK, "%s: no link with cluster %llu", fn,
                           (unsigned long long)cluster_id);
        if (!c->peer_notify)
            return llk_err(LLMLINK_FEATURE_NOT_ENABLED,
                           "%s: cluster %llu runs an llmlink without notifications (it did "
                           "not announce them when linking)",
                           fn, (unsigned long long)cluster_id);
        if (c->ntx_len + n <= LLK_NOTIFY_TX_LIMIT) {
            *out = c;
            return LLMLINK_SUCCESS;
        }
        /* c may be freed while we wait: only its count is kept. */
        size_t queued = c->ntx_len;
        e->notify.room_waiters++;
        bool more = wait_until(e, deadline_ms);
        e->notify.room_waiters--;
        if (!more)
            return llk_err(LLMLINK_TIMEOUT, "%s: cluster %llu is not reading (%zu bytes of "
                           "notifications queued to it)", fn,
                           (unsigned long long)cluster_id, queued);
    }
}

static llmlink_status_t outcome(llmlink_t *e, const llk_notify_wait_t *w, uint64_t cluster_id,
                                const char *fn)
{
    switch (w->status) {
    case LLMLINK_SUCCESS:
        atomic_fetch_add(&e->xstats.notifies_sent, 1);
        return LLMLINK_SUCCESS;
    case LLMLINK_NOTIFY_QUEUE_FULL:
        atomic_fetch_add(&e->xstats.notifies_refused_full, 1);
        return llk_err(LLMLINK_NOTIFY_QUEUE_FULL, "%s: the notification queue of cluster %llu "
                       "is full (llmlink.NotifyQueueDepth); nothing queued, try later", fn,
                       (unsigned long long)cluster_id);
    default:
        return llk_err(LLMLINK_NOT_YET_LINK, "%s: the link with cluster %llu died before it "
                       "answered the notification", fn, (unsigned long long)cluster_id);
    }
}

llmlink_status_t llk_notify_send(llmlink_t *e, uint64_t cluster_id, const void *data, size_t len,
                                 int64_t deadline_ms, const char *fn)
{
    if (!data || len == 0 || len > LLK_NOTIFY_MAX_DATA)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: %zu bytes, want 1..%u", fn, len,
                       LLK_NOTIFY_MAX_DATA);
    uint8_t *f = malloc(LLK_WIRE_MAX_NOTIFY_FRAME);
    if (!f)
        return llk_err(LLMLINK_OUT_OF_MEMORY, "%s: out of memory", fn);
    pthread_mutex_lock(&e->mu);
    llk_conn_t *c = NULL;
    size_t n = LLK_WIRE_HEADER_SIZE + LLK_NOTIFY_HEAD + len;
    llmlink_status_t st = reserve(e, cluster_id, n, deadline_ms, fn, &c);
    if (st != LLMLINK_SUCCESS)
        goto out;
    llk_notify_wait_t w = {.c = c, .seq = c->notify_seq};
    n = llk_wire_encode_notify(f, LLK_WIRE_MAX_NOTIFY_FRAME, LLK_WIRE_VERSION, w.seq, data,
                               (uint32_t)len);
    if (!llk_conn_queue_bulk(c, f, n, LLK_NOTIFY_TX_LIMIT)) {
        st = llk_err(LLMLINK_OUT_OF_MEMORY, "%s: out of memory for the send queue", fn);
        goto out;
    }
    c->notify_seq++;
    w.next = e->notify.waits;
    if (w.next)
        w.next->prev = &w;
    e->notify.waits = &w;
    llk_reactor_wake(e);
    while (!w.done && wait_until(e, deadline_ms))
        ;
    if (w.done) {
        st = outcome(e, &w, cluster_id, fn);
    } else {
        /* Leave the list; a late ACK finds no waiter and is dropped. */
        if (w.prev)
            w.prev->next = w.next;
        else
            e->notify.waits = w.next;
        if (w.next)
            w.next->prev = w.prev;
        st = llk_err(LLMLINK_TIMEOUT, "%s: cluster %llu did not answer the notification in "
                     "time", fn, (unsigned long long)cluster_id);
    }
out:
    pthread_mutex_unlock(&e->mu);
    free(f);
    return st;
}

void llk_notify_take_locked(llmlink_t *e, llmlink_notification_t *out, size_t max,
                            size_t *count)
{
    llk_notify_state_t *ns = &e->notify;
    size_t n = 0;
    while (n < max && ns->head) {
        llk_notify_item_t *it = ns->head;
        ns->head = it->next;
        if (!ns->head)
            ns->tail = NULL;
        ns->count--;
        out[n].cluster_id = it->cluster_id;
        out[n].len = it->len;
        memcpy(out[n].data, it->data, it->len);
        free(it);
        n++;
    }
    if (n && !ns->head)
        llk_events_set(&e->events, LLK_EV_NOTIFY, false);
    *count = n;
}

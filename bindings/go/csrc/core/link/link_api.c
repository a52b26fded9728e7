/* link_api.c - the link plane's answers to the transfer plane (see
 * link_api.h). */
#include "link/link_api.h"

#include <sys/epoll.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "link/engine.h"

/* The two engine calls the transfer plane makes live here, not in
 * engine.c or reactor.c: those call into the transfer plane, and a call
 * back into them would close a loop between the planes' files. */

llmlink_status_t llk_engine_check_running(const llmlink_t *e, const char *fn)
{
    switch (e->state) {
    case LLK_ENGINE_RUNNING:
        return LLMLINK_SUCCESS;
    case LLK_ENGINE_CREATED:
        return llk_err(LLMLINK_NOT_INITIALIZED, "%s: engine (cluster %llu) is not initialized; "
                       "call llmlink_init first", fn, (unsigned long long)e->cluster_id);
    case LLK_ENGINE_FINALIZED:
    default:
        return llk_err(LLMLINK_ENGINE_FINALIZED, "%s: engine (cluster %llu) has been finalized",
                       fn, (unsigned long long)e->cluster_id);
    }
}

void llk_reactor_wake(llmlink_t *e)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: a wake is pending. */
    ssize_t r = write(e->wakefd, &one, sizeof one);
    (void)r;
}

void llk_link_lock(llmlink_t *e)
{
    pthread_mutex_lock(&e->mu);
}

void llk_link_unlock(llmlink_t *e)
{
    pthread_mutex_unlock(&e->mu);
}

llmlink_status_t llk_link_find_locked(llmlink_t *e, uint64_t remote_id, const char *fn,
                                      void **xfer_ctx, const char **peer)
{
    *xfer_ctx = NULL;
    *peer = NULL;
    llmlink_status_t st = llk_engine_check_running(e, fn);
    if (st != LLMLINK_SUCCESS)
        return st;
    llk_conn_t *c = e->role != LLMLINK_ROLE_PROMPT ? llk_conn_find(e, remote_id, true) : NULL;
    if (!c || c->state != LLK_CONN_LINKED)
        c = llk_conn_find(e, remote_id, false);
    if (c && c->state == LLK_CONN_LINKED) {
        *xfer_ctx = c->xfer_ctx;
        *peer = c->peer;
    }
    return LLMLINK_SUCCESS;
}

void llk_link_kill(llmlink_t *e, const void *xfer_ctx, const char *why)
{
    pthread_mutex_lock(&e->mu);
    for (llk_conn_t *c = e->conns; c; c = c->next)
        if (c->xfer_ctx == xfer_ctx && llk_conn_is_link(c)) {
            LLK_WARN("cluster %llu: link with cluster %llu (%s) closed: %s",
                     (unsigned long long)e->cluster_id, (unsigned long long)c->remote_id, c->peer,
                     why);
            if (c->waiter)
                llk_conn_complete(e, c, llk_conn_unlink_failure(c), "transfer failed: %s", why);
            e->links_lost++;
            c->close_reason = LLMLINK_CLOSE_TRANSFER_FAILED;
            llk_conn_set_state(e, c, LLK_CONN_DEAD);
        }
    if (e->state == LLK_ENGINE_RUNNING)
        llk_reactor_wake(e);
    pthread_mutex_unlock(&e->mu);
}

void llk_link_each_locked(llmlink_t *e, llk_link_each_fn *fn, void *arg)
{
    for (llk_conn_t *c = e->conns; c; c = c->next)
        if (c->state == LLK_CONN_LINKED && c->xfer_ctx)
            fn(arg, c->xfer_ctx, c->outbound, c->remote_id, c->peer);
}

void llk_link_stream_begin_locked(llmlink_t *e)
{
    /* The server counted c as a handshake when it accepted it; keep the
     * handshake counters about links only. */
    e->hs_accepted--;
}

void *llk_link_attach_target_locked(llmlink_t *e, uint64_t server_id,
                                    uint64_t server_incarnation, uint64_t client_id,
                                    uint64_t client_incarnation)
{
    llk_conn_t *lc = llk_conn_find(e, client_id, false);
    if (server_id != e->cluster_id || !lc || lc->state != LLK_CONN_LINKED ||
        lc->remote_incarnation != client_incarnation || server_incarnation != e->incarnation)
        return NULL;
    return lc->xfer_ctx;
}

void llk_link_stream_refuse_locked(llmlink_t *e, llk_conn_t *c, llmlink_status_t status,
                                   bool protocol_error, const char *msg)
{
    if (protocol_error)
        e->protocol_errors++;
    LLK_WARN("cluster %llu: refused data stream from %s: %s", (unsigned long long)e->cluster_id,
             c->peer, msg);
    llk_metrics_hs_refused(&e->metrics, status);
    llk_conn_queue_reject(c, status, "%s", msg);
    llk_conn_set_state(e, c, LLK_CONN_CLOSING);
    c->deadline_ms = 0;
}

int llk_link_stream_take_fd_locked(llmlink_t *e, llk_conn_t *c, const uint8_t *frame, size_t len)
{
    if (!llk_conn_queue(c, frame, len) || llk_conn_flush(e, c, llk_now_ms()) != 0 || c->tx_len) {
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
        return -1;
    }
    int fd = c->fd;
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL);
    c->fd = -1;
    c->want_out = false;
    llk_conn_set_state(e, c, LLK_CONN_DEAD);
    return fd;
}

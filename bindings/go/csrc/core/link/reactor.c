/* reactor.c - the engine's I/O thread: one epoll loop over the wake
 * eventfd, the listeners and every connection, plus a timer pass. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "base/clock.h"
#include "link/engine.h"
#include "base/log.h"

#define MAX_EVENTS 64

static void on_conn_event(llmlink_t *e, llk_conn_t *c, uint32_t ev, int64_t now)
{
    if (c->state == LLK_CONN_DEAD || c->fd < 0)
        return;
    if (c->state == LLK_CONN_CLI_CONNECTING) {
        llk_client_on_writable(e, c, now);
        return;
    }
    if (ev & EPOLLOUT) {
        if (llk_conn_flush(e, c, now) != 0) {
            llk_link_on_closed(e, c, errno);
            return;
        }
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        llk_conn_on_readable(e, c, now);
}

static void flush(llmlink_t *e, llk_conn_t *c, int64_t now)
{
    if (c->state == LLK_CONN_DEAD || c->state == LLK_CONN_CLI_PENDING ||
        (c->tx_len == 0 && c->ntx_len == 0))
        return;
    if (llk_conn_flush(e, c, now) != 0)
        llk_link_on_closed(e, c, errno);
}

/* Starts pending connects, flushes queued frames, runs every timer, frees
 * dead connections. Returns the epoll timeout until the next deadline. */
static int service(llmlink_t *e, int64_t now)
{
    int64_t next = 0;
    if (e->listen_retry_at_ms) {
        llk_server_arm_listeners(e, now);
        if (e->listen_retry_at_ms)
            next = e->listen_retry_at_ms;
    }
    llk_conn_t *c = e->conns;
    while (c) {
        llk_conn_t *nx = c->next;
        if (c->state == LLK_CONN_CLI_PENDING && c->retry_at_ms <= now)
            llk_client_start(e, c, now);
        /* Flush before the timers so a CLOSING connection whose last frame
         * just went out closes now, and after them so a heartbeat they
         * queued leaves in this pass. */
        flush(e, c, now);
        if (c->state != LLK_CONN_DEAD) {
            int64_t d = llk_link_on_timer(e, c, now);
            if (d && (!next || d < next))
                next = d;
        }
        flush(e, c, now);
        if (c->state == LLK_CONN_DEAD)
            llk_conn_destroy(e, c);
        c = nx;
    }
    /* After every timer: a slot they freed goes to a parked connection
     * before that one's own deadline is judged. */
    int64_t p = llk_park_expire(e, now);
    if (p && (!next || p < next))
        next = p;
    if (!next)
        return -1;
    int64_t ms = next - now;
    if (ms < 0)
        ms = 0;
    return ms > 60000 ? 60000 : (int)ms;
}

void *llk_reactor_main(void *arg)
{
    llmlink_t *e = arg;
    struct epoll_event evs[MAX_EVENTS];
    pthread_mutex_lock(&e->mu);
    while (!e->stop) {
        int timeout = service(e, llk_now_ms());
        pthread_mutex_unlock(&e->mu);
        int n = epoll_wait(e->epfd, evs, MAX_EVENTS, timeout);
        int err = errno;
        pthread_mutex_lock(&e->mu);
        if (n < 0) {
            if (err != EINTR)
                LLK_ERROR("cluster %llu: epoll_wait: %s", (unsigned long long)e->cluster_id,
                          strerror(err));
            continue;
        }
        int64_t now = llk_now_ms();
        for (int i = 0; i < n && !e->stop; i++) {
            llk_ev_kind_t *tag = evs[i].data.ptr;
            if (*tag == LLK_EV_WAKE) {
                uint64_t v;
                ssize_t r = read(e->wakefd, &v, sizeof v);
                (void)r;
            } else if (*tag == LLK_EV_LISTENER) {
                llk_server_on_listener(e, (llk_listener_t *)tag, now);
            } else {
                on_conn_event(e, (llk_conn_t *)tag, evs[i].events, now);
            }
        }
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

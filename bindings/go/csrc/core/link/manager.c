/* link/manager.c - established links (heartbeats, liveness, unlink) and
 * the API side of link / unlink / check / stats. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "link/engine.h"
#include "link/tls.h"
#include "base/err.h"
#include "base/log.h"

/* How long a CLOSING connection may take to flush its last frame. */
#define CLOSE_GRACE_MS 1000
/* An API call waits this much beyond its own deadline for the reactor to
 * report (it always does at the deadline; this only bounds a bug). */
#define WAIT_BACKSTOP_MS 2000

static void link_lost(llmlink_t *e, llk_conn_t *c, llmlink_close_reason_t reason,
                      const char *why)
{
    e->links_lost++;
    c->close_reason = (uint8_t)reason;
    LLK_WARN("cluster %llu: link %s cluster %llu (%s) lost: %s; link freed",
             (unsigned long long)e->cluster_id, c->outbound ? "to" : "from",
             (unsigned long long)c->remote_id, c->peer, why);
    llk_conn_set_state(e, c, LLK_CONN_DEAD);
}

void llk_link_on_frame(llmlink_t *e, llk_conn_t *c, const llk_frame_header_t *h,
                       const uint8_t *payload, int64_t now)
{
    const char *why = NULL;
    (void)now;
    switch (h->type) {
    case LLK_MSG_HEARTBEAT:
    case LLK_MSG_UNLINK_ACK:
    case LLK_MSG_UNLINK:
        if (llk_wire_decode_simple((llk_msg_type_t)h->type, payload, h->length, &why) != 0)
            break;
        if (h->type == LLK_MSG_HEARTBEAT)
            return;
        if (h->type == LLK_MSG_UNLINK_ACK) {
            if (c->state != LLK_CONN_UNLINKING) {
                why = "UNLINK_ACK without UNLINK";
                break;
            }
            llk_conn_complete(e, c, LLMLINK_SUCCESS, "unlinked");
            llk_conn_set_state(e, c, LLK_CONN_DEAD);
            return;
        }
        /* UNLINK: the peer frees its end; acknowledge, then close. When both
         * sides unlink at once, the peer's UNLINK answers ours too. */
        LLK_INFO("cluster %llu: cluster %llu (%s) unlinked", (unsigned long long)e->cluster_id,
                 (unsigned long long)c->remote_id, c->peer);
        llk_conn_complete(e, c, LLMLINK_SUCCESS, "unlinked (peer unlinked too)");
        llk_conn_queue_simple(c, LLK_MSG_UNLINK_ACK);
        c->close_reason = LLMLINK_CLOSE_UNLINKED_BY_PEER;
        llk_conn_set_state(e, c, LLK_CONN_CLOSING);
        c->deadline_ms = 0;
        return;
    case LLK_MSG_NOTIFY:
    case LLK_MSG_NOTIFY_ACK:
        if (llk_notify_on_frame(e, c, h, payload, &why) == 0)
            return;
        break;
    default:
        why = "unexpected message type on a link";
        break;
    }
    e->protocol_errors++;
    if (c->waiter)
        llk_conn_complete(e, c, llk_conn_unlink_failure(c),
                          "peer %s sent a bad frame: %s", c->peer, why);
    link_lost(e, c, LLMLINK_CLOSE_PROTOCOL_ERROR, why);
}

void llk_link_on_closed(llmlink_t *e, llk_conn_t *c, int err)
{
    char why[128];
    snprintf(why, sizeof why, "%s", err ? strerror(err) : "peer closed the connection");
    switch (c->state) {
    case LLK_CONN_CLI_HELLO_SENT: {
        /* TLS: the relay tells why it closed (a certificate refused). */
        char tw[224];
        bool auth = false;
        if (c->fd >= 0 && llk_tls_failure(c->fd, tw, sizeof tw, &auth))
            llk_conn_complete(e, c, auth ? LLMLINK_AUTH_FAILED : LLMLINK_LINK_FAILED,
                              "TLS with %s: %s", c->peer, tw);
        else
            llk_conn_complete(e, c, LLMLINK_LINK_FAILED, "%s during the handshake with %s", why,
                              c->peer);
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
        break;
    }
    case LLK_CONN_UNLINKING:
        llk_conn_complete(e, c, llk_conn_unlink_failure(c),
                          "%s before acknowledging the unlink (%s)", why, c->peer);
        link_lost(e, c, LLMLINK_CLOSE_PEER_CLOSED, why);
        break;
    case LLK_CONN_LINKED:
        link_lost(e, c, LLMLINK_CLOSE_PEER_CLOSED, why);
        break;
    default:
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
        break;
    }
}

static int64_t earliest(int64_t a, int64_t b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    return a < b ? a : b;
}

/* A third of the link's interval, but at least LLK_HEARTBEAT_MIN_GAP_MS
 * unless this side's own interval asks for less. */
static int64_t heartbeat_gap(const llmlink_t *e, const llk_conn_t *c)
{
    uint32_t gap = c->liveness_ms / 3, own = e->opts.liveness_interval_ms / 3;
    uint32_t floor = own < LLK_HEARTBEAT_MIN_GAP_MS ? own : LLK_HEARTBEAT_MIN_GAP_MS;
    return gap > floor ? gap : floor;
}

int64_t llk_link_on_timer(llmlink_t *e, llk_conn_t *c, int64_t now)
{
    if (c->state == LLK_CONN_CLOSING && c->deadline_ms == 0)
        c->deadline_ms = now + CLOSE_GRACE_MS;
    if (c->state == LLK_CONN_CLOSING && c->tx_len == 0) {
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
        return 0;
    }
    if (c->deadline_ms && now >= c->deadline_ms) {
        if (c->state == LLK_CONN_SRV_PARKED)
            return c->deadline_ms; /* llk_park_expire, after this pass */
        if (c->state == LLK_CONN_SRV_HANDSHAKE && c->fd >= 0) {
            /* A first frame that arrived in time but was not read yet (a
             * parked connection let in just now) is served, not cut. */
            llk_conn_on_readable(e, c, now);
            if (c->state != LLK_CONN_SRV_HANDSHAKE)
                return c->state == LLK_CONN_DEAD ? 0 : now; /* its timers next pass */
        }
        switch (c->state) {
        case LLK_CONN_SRV_HANDSHAKE:
            e->hs_timed_out++;
            e->hs_first_frame_timeouts++;
            llk_server_warn_limit(e, now,
                                  "dropped half-open handshake from %s: no complete first "
                                  "frame within %u ms (llmlink.FirstFrameTimeoutMs)",
                                  c->peer, llk_server_first_frame_ms(e));
            break;
        case LLK_CONN_CLI_PENDING:
        case LLK_CONN_CLI_CONNECTING:
        case LLK_CONN_CLI_HELLO_SENT:
            llk_conn_complete(e, c, LLMLINK_TIMEOUT, "no link to %s within the timeout (%s)",
                              c->peer, llk_conn_state_name(c->state));
            break;
        case LLK_CONN_UNLINKING:
            llk_conn_complete(e, c, llk_conn_unlink_failure(c),
                              "%s did not acknowledge the unlink within the timeout", c->peer);
            break;
        default:
            break;
        }
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
        return 0;
    }
    int64_t next = c->deadline_ms;
    llk_xlink_t *xl = llk_xlink_of(c);
    if (c->state == LLK_CONN_LINKED && xl && llk_xlink_is_broken(xl)) {
        /* A data stream failed (the owner thread broke the xlink): close
         * the whole link so that both ends free it. While UNLINKING the
         * streams end anyway (the peer closes them as it unlinks): the
         * acknowledgement or the closed connection decides then. */
        char why[232];
        pthread_mutex_lock(&xl->mu);
        snprintf(why, sizeof why, "data stream failed: %s", xl->why);
        pthread_mutex_unlock(&xl->mu);
        if (c->waiter)
            llk_conn_complete(e, c, llk_conn_unlink_failure(c), "%s", why);
        link_lost(e, c, LLMLINK_CLOSE_TRANSFER_FAILED, why);
        return 0;
    }
    if (llk_conn_is_link(c)) {
        if (now - c->last_rx_ms >= (int64_t)c->liveness_ms) {
            char why[96];
            snprintf(why, sizeof why, "nothing heard for %lld ms",
                     (long long)(now - c->last_rx_ms));
            if (c->waiter)
                llk_conn_complete(e, c, llk_conn_unlink_failure(c),
                                  "%s: %s", c->peer, why);
            link_lost(e, c, LLMLINK_CLOSE_LIVENESS, why);
            return 0;
        }
        /* Three heartbeats per interval: one lost or late still leaves the
         * peer two chances before it declares us dead; but none closer
         * than the floor a peer's interval cannot lower (wire.h). */
        int64_t gap = heartbeat_gap(e, c);
        int64_t beat = c->last_tx_ms + gap;
        if (now >= beat) {
            /* A heartbeat that does not fit means a queue full of frames
             * the peer never read: as in unlink, the peer is not reading. */
            if (!llk_conn_queue_simple(c, LLK_MSG_HEARTBEAT)) {
                link_lost(e, c, LLMLINK_CLOSE_LIVENESS, "peer stopped reading");
                return 0;
            }
            c->last_tx_ms = now; /* even if the send is still queued */
            beat = now + gap;
        }
        next = earliest(next, beat);
        next = earliest(next, c->last_rx_ms + c->liveness_ms);
    }
    if (c->state == LLK_CONN_CLI_PENDING)
        next = earliest(next, c->retry_at_ms);
    return next;
}

/* ---- API side ------------------------------------------------------------ */

static int64_t abs_deadline_ms(int32_t timeout_ms)
{
    return llk_now_ms() + timeout_ms;
}

/* Waits (holding e->mu) until every waiter is done or the backstop passes;
 * detaches and fails the stragglers so none points into a dead stack. */
static void wait_all(llmlink_t *e, llk_waiter_t *w, size_t n, int64_t deadline,
                     llmlink_status_t straggler_status)
{
    int64_t backstop = deadline + WAIT_BACKSTOP_MS;
    for (;;) {
        bool all = true;
        for (size_t i = 0; i < n; i++)
            if (!w[i].done)
                all = false;
        if (all)
            return;
        if (llk_now_ms() >= backstop)
            break;
        /* e->cv runs on CLOCK_MONOTONIC, the clock of llk_now_ms(). */
        struct timespec ts = llk_ms_timespec(backstop);
        pthread_cond_timedwait(&e->cv, &e->mu, &ts);
    }
    for (llk_conn_t *c = e->conns; c; c = c->next) {
        for (size_t i = 0; i < n; i++)
            if (c->waiter == &w[i]) {
                c->waiter = NULL;
                if (c->state != LLK_CONN_LINKED)
                    llk_conn_set_state(e, c, LLK_CONN_DEAD);
            }
    }
    for (size_t i = 0; i < n; i++)
        if (!w[i].done) {
            w[i].done = true;
            w[i].status = straggler_status;
            snprintf(w[i].detail, sizeof w[i].detail, "no answer from the I/O thread");
        }
}

/* Appends "id: status (detail); " for each failure to buf. */
static void summarize(char *buf, size_t len, const char *verb, const uint64_t *ids,
                      const llk_waiter_t *w, size_t n)
{
    size_t failed = 0, off;
    for (size_t i = 0; i < n; i++)
        if (w[i].status != LLMLINK_SUCCESS)
            failed++;
    off = (size_t)snprintf(buf, len, "%s: %zu of %zu clusters failed:", verb, failed, n);
    for (size_t i = 0; i < n && off < len; i++) {
        if (w[i].status == LLMLINK_SUCCESS)
            continue;
        off += (size_t)snprintf(buf + off, len - off, " cluster %llu: %s (%s);",
                                (unsigned long long)ids[i], llmlink_status_name(w[i].status),
                                w[i].detail);
    }
}

/* Reports a finished link or unlink call (e->mu not held): statuses and,
 * on failure, one message summing up every failed cluster. */
static llmlink_status_t report_call(const llk_waiter_t *w, size_t n, const uint64_t *ids,
                                    llmlink_status_t *statuses, const char *fn,
                                    llmlink_status_t failed)
{
    bool all_ok = true;
    for (size_t i = 0; i < n; i++) {
        if (statuses)
            statuses[i] = w[i].status;
        if (w[i].status != LLMLINK_SUCCESS)
            all_ok = false;
    }
    if (all_ok)
        return LLMLINK_SUCCESS;
    char msg[LLK_ERR_MSG_MAX];
    summarize(msg, sizeof msg, fn, ids, w, n);
    return llk_err(failed, "%s", msg);
}

/* The end of a link or unlink call, entered holding e->mu (released here):
 * wake the reactor if work was queued, wait for every waiter, report. */
static llmlink_status_t finish_call(llmlink_t *e, llk_waiter_t *w, size_t n, const uint64_t *ids,
                                    int64_t deadline, bool started, llmlink_status_t *statuses,
                                    llmlink_status_t straggler, const char *fn,
                                    llmlink_status_t failed)
{
    if (started)
        llk_reactor_wake(e);
    wait_all(e, w, n, deadline, straggler);
    pthread_mutex_unlock(&e->mu);
    return report_call(w, n, ids, statuses, fn, failed);
}

/* What attaching the data streams of one new link needs, copied under
 * e->mu so the streams can be opened without it. */
typedef struct {
    llk_xlink_t *xl; /* referenced */
    struct sockaddr_storage remote, local;
    socklen_t remote_len, local_len;
    uint64_t incarnation;
} attach_job_t;

static bool prepare_attach(llmlink_t *e, uint64_t id, attach_job_t *j)
{
    llk_conn_t *c = llk_conn_find(e, id, true);
    if (!c || c->state != LLK_CONN_LINKED || !llk_xlink_of(c))
        return false;
    j->xl = llk_xlink_of(c);
    llk_xlink_ref(j->xl);
    j->remote = c->remote[c->remote_idx];
    j->remote_len = c->remote_len[c->remote_idx];
    /* The streams leave from the address the control connection got. */
    j->local_len = sizeof j->local;
    if (c->fd < 0 || llk_tls_getsockname(c->fd, (struct sockaddr *)&j->local, &j->local_len) != 0)
        j->local_len = 0;
    j->incarnation = c->remote_incarnation;
    return true;
}

/* Opens the data streams of one cluster that just linked (e->mu not
 * held); if they cannot attach, the cluster is unlinked again and reported
 * as failed. */
static void attach_one(llmlink_t *e, llk_waiter_t *w, attach_job_t *j, int64_t deadline)
{
    char detail[sizeof w->detail];
    llmlink_status_t st = llk_xfer_attach_streams(e, j->xl, &j->remote, j->remote_len,
                                                  j->local_len ? &j->local : NULL, j->local_len,
                                                  j->incarnation, deadline, detail,
                                                  sizeof detail);
    if (st != LLMLINK_SUCCESS) {
        w->status = st;
        snprintf(w->detail, sizeof w->detail, "%s", detail);
        llk_xfer_kill_link(e, j->xl, detail);
    }
    llk_xlink_unref(j->xl);
}

/* Attaching the data streams of several clusters of one call concurrently.
 *
 * Attaching one cluster is a few round trips on its own sockets, most of
 * it waiting for the peer (llk_xfer_attach_streams blocks in poll). Done
 * one cluster after another on the calling thread, a 16-cluster call cost
 * as much as 16 one-cluster calls. Each cluster that links while another
 * is still linking or attaching gets a short-lived attach thread of its
 * own; the call joins them all before it returns. Threads rather than one
 * loop polling every cluster's streams, so llk_xfer_attach_streams (and
 * its transport choice, RDMA setup included) stays one straight-line
 * function per link, and threads rather than the reactor, so the reactor
 * never blocks on a peer. The last (or only) cluster is attached on the
 * calling thread: a one-cluster call starts no thread at all. A thread that
 * cannot start degrades to the same attach on the calling thread. */
typedef struct {
    llmlink_t *e;
    llk_waiter_t *w;
    attach_job_t job;
    int64_t deadline;
    bool running; /* under e->mu */
    pthread_t th;
} attach_task_t;

static void *attach_thread(void *arg)
{
    attach_task_t *t = arg;
    attach_one(t->e, t->w, &t->job, t->deadline);
    pthread_mutex_lock(&t->e->mu);
    t->running = false;
    pthread_cond_broadcast(&t->e->cv);
    pthread_mutex_unlock(&t->e->mu);
    return NULL;
}

/* Waits (holding e->mu) for the clusters of a link call, attaching each
 * one's data streams as soon as it links: a cluster that links fast must
 * not wait for a slow one to time out before its streams may open, and
 * the clusters that link together attach together (above). Returns when
 * every cluster is done and every attach finished. */
static void wait_and_attach(llmlink_t *e, llk_waiter_t *w, const uint64_t *ids, size_t n,
                            int64_t deadline)
{
    bool handled[LLMLINK_MAX_CLUSTERS_PER_CALL] = {false};
    attach_task_t tasks[LLMLINK_MAX_CLUSTERS_PER_CALL];
    size_t ntasks = 0;
    int64_t backstop = deadline + WAIT_BACKSTOP_MS;
    for (;;) {
        bool all = true, attaching = false;
        int ready = -1;
        for (size_t i = 0; i < n && ready < 0; i++) {
            if (!w[i].done)
                all = false;
            else if (!handled[i]) {
                handled[i] = true;
                if (w[i].status == LLMLINK_SUCCESS)
                    ready = (int)i;
            }
        }
        for (size_t k = 0; k < ntasks; k++)
            if (tasks[k].running)
                attaching = true;
        if (ready >= 0) {
            attach_job_t job;
            if (!prepare_attach(e, ids[ready], &job))
                continue;
            attach_task_t *t = &tasks[ntasks];
            *t = (attach_task_t){.e = e, .w = &w[ready], .job = job, .deadline = deadline};
            /* Is anything else still to come? Then this one goes to a
             * thread; otherwise the calling thread has nothing else to do. */
            bool others = attaching;
            for (size_t i = 0; i < n && !others; i++)
                if (!handled[i] && (!w[i].done || w[i].status == LLMLINK_SUCCESS))
                    others = true;
            if (others) {
                t->running = true;
                if (pthread_create(&t->th, NULL, attach_thread, t) == 0) {
                    ntasks++;
                    continue;
                }
                t->running = false;
            }
            pthread_mutex_unlock(&e->mu);
            attach_one(e, t->w, &t->job, deadline);
            pthread_mutex_lock(&e->mu);
            continue;
        }
        /* Attach threads end by the deadline (every wait in
         * llk_xfer_attach_streams is bounded by it): no backstop for them. */
        int64_t now = llk_now_ms();
        if ((all || now >= backstop) && !attaching)
            break;
        /* Past the backstop only attach threads are waited for: each
         * broadcasts as it ends, the timed wait only guards against a
         * lost wake-up without spinning. */
        struct timespec ts = llk_ms_timespec(now >= backstop ? now + 10 : backstop);
        pthread_cond_timedwait(&e->cv, &e->mu, &ts);
    }
    /* Every thread has finished (running == false); join them, outside
     * e->mu as a finished thread needs nothing more. */
    pthread_mutex_unlock(&e->mu);
    for (size_t k = 0; k < ntasks; k++)
        pthread_join(tasks[k].th, NULL);
    pthread_mutex_lock(&e->mu);
    /* Stragglers (a reactor bug) are detached and failed here. */
    wait_all(e, w, n, deadline, LLMLINK_TIMEOUT);
}

llmlink_status_t llk_engine_link(llmlink_t *e, const llk_link_req_t *reqs, size_t n,
                                 int32_t timeout_ms, llmlink_status_t *statuses)
{
    llk_waiter_t w[LLMLINK_MAX_CLUSTERS_PER_CALL];
    uint64_t ids[LLMLINK_MAX_CLUSTERS_PER_CALL];
    memset(w, 0, sizeof w);
    if (e->opts.link_total_time_ms > 0 && e->opts.link_total_time_ms < timeout_ms)
        timeout_ms = e->opts.link_total_time_ms;
    int64_t deadline = abs_deadline_ms(timeout_ms);

    pthread_mutex_lock(&e->mu);
    llmlink_status_t st = llk_engine_check_running(e, "llmlink_link_clusters");
    if (st != LLMLINK_SUCCESS) {
        pthread_mutex_unlock(&e->mu);
        return st;
    }
    uint32_t links = llk_conn_count_links(e, true);
    bool started = false;
    for (size_t i = 0; i < n; i++) {
        const llk_link_req_t *r = &reqs[i];
        ids[i] = r->remote_id;
        llk_conn_t *old = llk_conn_find(e, r->remote_id, true);
        if (old) {
            w[i].done = true;
            w[i].status = old->state == LLK_CONN_LINKED ? LLMLINK_ALREADY_LINK
                                                        : LLMLINK_PROCESSING_LINK;
            snprintf(w[i].detail, sizeof w[i].detail, "link to %s is %s", old->peer,
                     llk_conn_state_name(old->state));
            continue;
        }
        if (links >= e->opts.max_links) {
            w[i].done = true;
            w[i].status = LLMLINK_CLUSTER_NUM_EXCEED_LIMIT;
            snprintf(w[i].detail, sizeof w[i].detail,
                     "this engine holds %u links, the limit (llmlink.MaxLinks)", links);
            continue;
        }
        llk_conn_t *c = llk_conn_new(e, -1, true, LLK_CONN_CLI_PENDING);
        if (!c) {
            w[i].done = true;
            w[i].status = LLMLINK_OUT_OF_MEMORY;
            snprintf(w[i].detail, sizeof w[i].detail, "out of memory");
            continue;
        }
        links++;
        c->remote_id = r->remote_id;
        c->expected_role = r->remote_role;
        memcpy(c->remote, r->remote, sizeof c->remote);
        memcpy(c->remote_len, r->remote_len, sizeof c->remote_len);
        c->num_remote = r->num_remote;
        memcpy(c->local, r->local, sizeof c->local);
        memcpy(c->local_len, r->local_len, sizeof c->local_len);
        c->num_local = r->num_local;
        c->tries_left = e->opts.link_retry_count;
        c->deadline_ms = deadline;
        c->retry_at_ms = 0;
        c->waiter = &w[i];
        snprintf(c->peer, sizeof c->peer, "cluster %llu", (unsigned long long)r->remote_id);
        started = true;
    }
    if (started)
        llk_reactor_wake(e);
    wait_and_attach(e, w, ids, n, deadline);
    pthread_mutex_unlock(&e->mu);
    for (size_t i = 0; i < n; i++)
        llk_metrics_link_result(&e->metrics, w[i].status);
    return report_call(w, n, ids, statuses, "llmlink_link_clusters", LLMLINK_LINK_FAILED);
}

llmlink_status_t llk_engine_unlink(llmlink_t *e, const uint64_t *ids, size_t n,
                                   int32_t timeout_ms, bool force, llmlink_status_t *statuses)
{
    llk_waiter_t w[LLMLINK_MAX_CLUSTERS_PER_CALL];
    memset(w, 0, sizeof w);
    int64_t deadline = abs_deadline_ms(timeout_ms);

    pthread_mutex_lock(&e->mu);
    llmlink_status_t st = llk_engine_check_running(e, "llmlink_unlink_clusters");
    if (st != LLMLINK_SUCCESS) {
        pthread_mutex_unlock(&e->mu);
        return st;
    }
    bool started = false;
    for (size_t i = 0; i < n; i++) {
        /* A client unlinks what it linked; a server what was linked to it. */
        llk_conn_t *c = NULL;
        if (e->role != LLMLINK_ROLE_PROMPT)
            c = llk_conn_find(e, ids[i], true);
        if (!c && e->role != LLMLINK_ROLE_DECODER)
            c = llk_conn_find(e, ids[i], false);
        w[i].done = true;
        if (!c) {
            w[i].status = LLMLINK_NOT_YET_LINK;
            snprintf(w[i].detail, sizeof w[i].detail, "not linked");
            continue;
        }
        if (c->state != LLK_CONN_LINKED) {
            w[i].status = LLMLINK_PROCESSING_LINK;
            snprintf(w[i].detail, sizeof w[i].detail, "link is %s",
                     llk_conn_state_name(c->state));
            continue;
        }
        if (force) {
            LLK_INFO("cluster %llu: force-unlinked cluster %llu (%s)",
                     (unsigned long long)e->cluster_id, (unsigned long long)ids[i], c->peer);
            c->close_reason = LLMLINK_CLOSE_UNLINKED;
            llk_conn_set_state(e, c, LLK_CONN_DEAD);
            w[i].status = LLMLINK_SUCCESS;
            started = true;
            continue;
        }
        if (!llk_conn_queue_simple(c, LLK_MSG_UNLINK)) {
            w[i].status = llk_conn_unlink_failure(c);
            snprintf(w[i].detail, sizeof w[i].detail, "peer %s is not reading", c->peer);
            c->close_reason = LLMLINK_CLOSE_UNLINKED;
            llk_conn_set_state(e, c, LLK_CONN_DEAD);
            started = true;
            continue;
        }
        w[i].done = false;
        c->waiter = &w[i];
        c->deadline_ms = deadline;
        llk_conn_set_state(e, c, LLK_CONN_UNLINKING);
        started = true;
    }
    return finish_call(e, w, n, ids, deadline, started, statuses, LLMLINK_UNLINK_FAILED,
                       "llmlink_unlink_clusters", LLMLINK_UNLINK_FAILED);
}

llmlink_status_t llk_engine_check_link(llmlink_t *e, uint64_t remote_id)
{
    pthread_mutex_lock(&e->mu);
    llmlink_status_t st = llk_engine_check_running(e, "llmlink_check_link_status");
    if (st == LLMLINK_SUCCESS) {
        llk_conn_t *c = llk_conn_find(e, remote_id, true);
        if (!c || c->state != LLK_CONN_LINKED)
            c = llk_conn_find(e, remote_id, false);
        if (!c || c->state != LLK_CONN_LINKED)
            st = llk_err(LLMLINK_NOT_YET_LINK, "llmlink_check_link_status: no link with cluster %llu",
                         (unsigned long long)remote_id);
    }
    pthread_mutex_unlock(&e->mu);
    return st;
}

llmlink_status_t llk_engine_xfer_stats(llmlink_t *e, llmlink_xfer_stats_t *s)
{
    /* s->caches is the ABI layer's (it needs e->mu for the registry). */
    const llk_xstats_t *x = &e->xstats;
    s->transfers = atomic_load(&x->transfers);
    s->transfers_failed = atomic_load(&x->transfers_failed);
    s->transfers_timed_out = atomic_load(&x->transfers_timed_out);
    s->bytes_requested = atomic_load(&x->bytes_requested);
    s->bytes_served = atomic_load(&x->bytes_served);
    s->requests_served = atomic_load(&x->requests_served);
    s->requests_refused = atomic_load(&x->requests_refused);
    s->tcp_requests = atomic_load(&x->tcp_requests);
    s->shm_requests = atomic_load(&x->shm_requests);
    s->shm_fallbacks = atomic_load(&x->shm_fallbacks);
    s->rdma_requests = atomic_load(&x->rdma_requests);
    return LLMLINK_SUCCESS;
}

llmlink_status_t llk_engine_stats(llmlink_t *e, llmlink_stats_t *s)
{
    pthread_mutex_lock(&e->mu);
    uint32_t in = 0, out = 0;
    for (const llk_conn_t *c = e->conns; c; c = c->next)
        if (llk_conn_is_link(c)) {
            if (c->outbound)
                out++;
            else
                in++;
        }
    s->links = in + out;
    s->inbound_links = in;
    s->outbound_links = out;
    s->handshakes_in_progress = e->hs_in_progress;
    s->handshakes_peak = e->hs_peak;
    s->handshakes_accepted = e->hs_accepted;
    s->handshakes_completed = e->hs_completed;
    s->handshakes_rejected = e->hs_rejected;
    s->handshakes_timed_out = e->hs_timed_out;
    s->protocol_errors = e->protocol_errors;
    s->links_lost = e->links_lost;
    pthread_mutex_unlock(&e->mu);
    return LLMLINK_SUCCESS;
}

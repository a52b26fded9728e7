/* link/server.c - accepting connections and the server side of the
 * handshake, within the engine's handshake and link limits. */
#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/addr.h"
#include "base/clock.h"
#include "base/cluster_list.h"
#include "link/engine.h"
#include "link/tls.h"
#include "transport/transport_testing.h"
#include "base/log.h"

/* Listeners are armed while the engine runs: connections beyond the
 * handshake limits are parked (link/park.c), not left in the kernel's
 * accept queue, where a flood would keep honest clients behind it. Only
 * after EMFILE and the like do they pause. `now` = 0 means "not in a timer
 * pass". */
void llk_server_arm_listeners(llmlink_t *e, int64_t now)
{
    bool want = e->state == LLK_ENGINE_RUNNING;
    if (e->listen_retry_at_ms) {
        if (now == 0 || now < e->listen_retry_at_ms)
            want = false;
        else
            e->listen_retry_at_ms = 0;
    }
    for (size_t i = 0; i < e->num_listeners; i++) {
        llk_listener_t *l = &e->listeners[i];
        if (l->armed == want)
            continue;
        struct epoll_event ev = {.events = want ? EPOLLIN : 0, .data.ptr = l};
        if (epoll_ctl(e->epfd, EPOLL_CTL_MOD, l->fd, &ev) == 0)
            l->armed = want;
    }
}

uint32_t llk_server_first_frame_ms(const llmlink_t *e)
{
    uint32_t ff = e->opts.first_frame_timeout_ms, hs = e->opts.handshake_timeout_ms;
    return ff && ff < hs ? ff : hs;
}

void llk_server_warn_limit(llmlink_t *e, int64_t now, const char *fmt, ...)
{
    if (now < e->limit_warn_next_ms) {
        e->limit_warn_suppressed++;
        return;
    }
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    LLK_WARN("cluster %llu: %s (%llu more since the last such warning, not logged)",
             (unsigned long long)e->cluster_id, msg,
             (unsigned long long)e->limit_warn_suppressed);
    e->limit_warn_suppressed = 0;
    e->limit_warn_next_ms = now + 1000;
}

void llk_server_begin_handshake(llmlink_t *e, llk_conn_t *c, int64_t now)
{
    /* The server's side of a handshake is one frame (HELLO, or ATTACH for a
     * data stream), sent at once by an honest client: a connection that
     * idles or trickles loses its slot after the first-frame deadline. */
    c->deadline_ms = now + llk_server_first_frame_ms(e);
    c->last_rx_ms = c->last_tx_ms = now;
    e->hs_in_progress++;
    e->hs_accepted++;
    if (e->hs_in_progress > e->hs_peak)
        e->hs_peak = e->hs_in_progress;
}

/* Connections taken off one listener per event, so that a flood cannot
 * keep the reactor from its other sockets and timers; the listener stays
 * readable and the next pass takes more. */
#define LLK_ACCEPT_BATCH 256

void llk_server_on_listener(llmlink_t *e, llk_listener_t *l, int64_t now)
{
    for (int i = 0; i < LLK_ACCEPT_BATCH; i++) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof sa;
        int fd = accept4(l->fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            /* Out of descriptors or memory: pause accepting for a moment
             * rather than spin on a listener that stays readable. */
            LLK_ERROR("cluster %llu: accept on %s: %s; pausing accepts for 100 ms",
                      (unsigned long long)e->cluster_id, l->text, strerror(errno));
            e->listen_retry_at_ms = now + 100;
            llk_server_arm_listeners(e, 0);
            break;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        llk_conn_t *c = llk_conn_new(e, fd, false, LLK_CONN_SRV_PARKED);
        if (!c) {
            close(fd);
            LLK_ERROR("cluster %llu: out of memory accepting a connection",
                      (unsigned long long)e->cluster_id);
            break;
        }
        llk_addr_format((struct sockaddr *)&sa, c->peer, sizeof c->peer);
        llk_park_key((struct sockaddr *)&sa, c->src_key);
        /* Every connection is parked first and let in by the same rule,
         * so that arrival order holds between new and parked ones. */
        llk_park_add(e, c, now);
        LLK_DEBUG("cluster %llu: accepted %s (%u handshakes in progress, %u parked)",
                  (unsigned long long)e->cluster_id, c->peer, e->hs_in_progress, e->parked);
    }
    llk_park_promote(e, now);
}

static void reject(llmlink_t *e, llk_conn_t *c, llmlink_status_t st, const char *msg)
{
    LLK_WARN("cluster %llu: refused link from %s: %s (%s)", (unsigned long long)e->cluster_id,
             c->peer, msg, llmlink_status_name(st));
    e->hs_rejected++;
    llk_metrics_hs_refused(&e->metrics, st);
    llk_conn_queue_reject(c, st, "%s", msg);
    llk_conn_set_state(e, c, LLK_CONN_CLOSING);
    c->deadline_ms = 0;
}

/* reject() for refusals a peer can repeat at will: the WARN is rate-limited. */
static void reject_quietly(llmlink_t *e, llk_conn_t *c, llmlink_status_t st, const char *msg,
                           int64_t now)
{
    llk_server_warn_limit(e, now, "refused link from %s: %s (%s)", c->peer, msg,
                          llmlink_status_name(st));
    e->hs_rejected++;
    llk_metrics_hs_refused(&e->metrics, st);
    llk_conn_queue_reject(c, st, "%s", msg);
    llk_conn_set_state(e, c, LLK_CONN_CLOSING);
    c->deadline_ms = 0;
}

/* llmlink.AllowedClusters: false (and c refused) for a client not listed. */
static bool cluster_allowed(llmlink_t *e, llk_conn_t *c, uint64_t client_id, int64_t now)
{
    if (llk_cluster_list_allows(&e->opts.allowed_clusters, client_id))
        return true;
    char msg[96];
    snprintf(msg, sizeof msg, "cluster %llu is not in llmlink.AllowedClusters",
             (unsigned long long)client_id);
    e->hs_access_denied++;
    reject_quietly(e, c, LLMLINK_ACCESS_DENIED, msg, now);
    return false;
}

/*
 * A HELLO claims the cluster id of the link `old`. A live link is kept and
 * the newcomer refused (false): anyone who can reach the port could
 * otherwise take a decoder's place. Alive means a frame came from it within
 * its liveness interval: heartbeats go every third of it, so that is the
 * probe; the reactor never waits for an answer. The old link gets a
 * heartbeat at once, so a connection whose peer is gone fails (reset) now
 * rather than at its next beat. A dead (silent) link, or one this side is
 * unlinking, is replaced as before: a restarted decoder whose old
 * connection closed, or went silent, links again.
 */
static bool claim_allowed(llmlink_t *e, llk_conn_t *c, llk_conn_t *old, int64_t now)
{
    if (old->state != LLK_CONN_LINKED || now - old->last_rx_ms >= (int64_t)old->liveness_ms) {
        LLK_INFO("cluster %llu: cluster %llu linked again from %s; dropping its old link from %s "
                 "(%s)", (unsigned long long)e->cluster_id, (unsigned long long)old->remote_id,
                 c->peer, old->peer,
                 old->state == LLK_CONN_LINKED ? "silent past its liveness interval"
                                               : "being unlinked");
        if (old->waiter)
            llk_conn_complete(e, old, LLMLINK_UNLINK_FAILED, "peer linked again");
        old->close_reason = LLMLINK_CLOSE_REPLACED;
        llk_conn_set_state(e, old, LLK_CONN_DEAD);
        return true;
    }
    if (now - old->last_tx_ms >= 10 && llk_conn_queue_simple(old, LLK_MSG_HEARTBEAT))
        old->last_tx_ms = now;
    char msg[160];
    snprintf(msg, sizeof msg, "cluster %llu is linked already, from a peer heard %lld ms ago",
             (unsigned long long)old->remote_id, (long long)(now - old->last_rx_ms));
    e->hs_claimed_live++;
    reject_quietly(e, c, LLMLINK_ALREADY_LINK, msg, now);
    return false;
}

void llk_test_set_legacy_wait(llmlink_t *e, bool on)
{
    e->test_legacy_wait = on;
}

void llk_test_set_legacy_rails(llmlink_t *e, bool on)
{
    e->test_legacy_rails = on;
}

void llk_xlink_take_peer_wait(llmlink_t *e, llk_xlink_t *xl, const llk_ext_t *ext, uint16_t n)
{
    if (e->test_legacy_wait)
        return; /* as a 0.3 peer: the extension is unknown */
    uint32_t ms = 0;
    const char *why = "?";
    int rc = llk_wire_find_wait_time(ext, n, &ms, &why);
    if (rc < 0)
        LLK_WARN("cluster %llu: link with cluster %llu (%s): %s; ignored, requests on the link "
                 "use this side's llm.SyncKvCacheWaitTime (%d ms)",
                 (unsigned long long)e->cluster_id, (unsigned long long)xl->remote_id, xl->peer,
                 why, e->opts.sync_kv_wait_ms);
    if (rc > 0)
        atomic_store(&xl->peer_wait_ms, (int32_t)ms);
}

void llk_server_on_frame(llmlink_t *e, llk_conn_t *c, const llk_frame_header_t *h,
                         const uint8_t *payload, int64_t now)
{
    char msg[200];
    /* With a key, nothing below runs before the client proved it. */
    if (!llk_auth_server_gate(e, c, h, payload, now))
        return;
    if (h->type == LLK_MSG_ATTACH) {
        llk_xfer_on_attach(e, c, payload, h->length);
        return;
    }
    if (h->type != LLK_MSG_HELLO) {
        e->protocol_errors++;
        snprintf(msg, sizeof msg, "expected HELLO, got message type %u", h->type);
        reject(e, c, LLMLINK_PROTOCOL_ERROR, msg);
        return;
    }
    llk_msg_hello_t m;
    const char *why = NULL;
    if (llk_wire_decode_hello(payload, h->length, &m, &why) != 0) {
        e->protocol_errors++;
        reject(e, c, LLMLINK_PROTOCOL_ERROR, why);
        return;
    }
    int crit = llk_wire_find_unknown_critical(m.ext, m.num_ext);
    if (crit >= 0) {
        snprintf(msg, sizeof msg, "unsupported critical extension 0x%04x", m.ext[crit].type);
        reject(e, c, LLMLINK_PROTOCOL_ERROR, msg);
        return;
    }
    /* Access control first: a client that may not link learns nothing more. */
    if (!cluster_allowed(e, c, m.client_cluster_id, now))
        return;
    uint16_t streams = 0;
    if (llk_wire_find_stream_count(m.ext, m.num_ext, &streams, &why) < 0) {
        e->protocol_errors++;
        reject(e, c, LLMLINK_PROTOCOL_ERROR, why);
        return;
    }
    if (m.target_cluster_id != e->cluster_id) {
        snprintf(msg, sizeof msg, "this is cluster %llu, not cluster %llu",
                 (unsigned long long)e->cluster_id, (unsigned long long)m.target_cluster_id);
        reject(e, c, LLMLINK_CLUSTER_ID_MISMATCH, msg);
        return;
    }
    if (m.expected_server_role != 0 && m.expected_server_role != (uint32_t)e->role) {
        snprintf(msg, sizeof msg, "this engine has role %u, the client expects role %u",
                 (unsigned)e->role, m.expected_server_role);
        reject(e, c, LLMLINK_ROLE_NOT_ALLOWED, msg);
        return;
    }
    if (m.client_role == LLMLINK_ROLE_PROMPT) {
        reject(e, c, LLMLINK_ROLE_NOT_ALLOWED, "a PROMPT engine cannot initiate links");
        return;
    }
    /* The same decode cluster again: it restarted (or force-unlinked)
     * before this side noticed, or another peer claims its id. */
    llk_conn_t *old = llk_conn_find(e, m.client_cluster_id, false);
    if (old && old != c && !claim_allowed(e, c, old, now))
        return;
    uint32_t links = llk_conn_count_links(e, true);
    if (links >= e->opts.max_links) {
        snprintf(msg, sizeof msg, "cluster %llu holds %u links, the limit (llmlink.MaxLinks)",
                 (unsigned long long)e->cluster_id, links);
        reject(e, c, LLMLINK_CLUSTER_NUM_EXCEED_LIMIT, msg);
        return;
    }
    llk_msg_welcome_t w = {0};
    w.server_cluster_id = e->cluster_id;
    w.server_role = (uint32_t)e->role;
    w.liveness_ms = e->opts.liveness_interval_ms;
    w.incarnation = e->incarnation;
    w.num_ext = 1;
    w.ext[0].type = LLK_EXT_DATA_STREAMS;
    llk_xlink_t *xl = llk_xlink_install(c, m.client_cluster_id, false, 0, c->peer);
    if (!xl) {
        reject(e, c, LLMLINK_OUT_OF_MEMORY, "out of memory for the link");
        return;
    }
    if (!llk_auth_bind_link(e, c, xl)) {
        reject(e, c, LLMLINK_FAILED, "internal error (session key)");
        return;
    }
    llk_xlink_take_peer_wait(e, xl, m.ext, m.num_ext);
    /* ATTACH beyond what the client announced is refused (streams.c);
     * without the extension, an older client, the old cap. */
    xl->peer_streams = streams ? streams / 2u : LLK_MAX_STREAMS;
    uint8_t wait[4];
    if (!e->test_legacy_wait)
        llk_wire_ext_wait_time(&w.ext[w.num_ext++], wait, (uint32_t)e->opts.sync_kv_wait_ms);
    /* RDMA only for a client that offered it (an older one would not know
     * the setup message) */
    for (uint16_t i = 0; i < m.num_ext && llk_engine_offers_rdma(e); i++)
        if (m.ext[i].type == LLK_EXT_RDMA) {
            w.ext[w.num_ext++].type = LLK_EXT_RDMA;
            llk_xlink_set_rails(xl, NULL, true);
            /* the depth byte only to a client that reads it (not 0.3) */
            bool depth = !e->test_legacy_rails &&
                         llk_wire_has_ext(m.ext, m.num_ext, LLK_EXT_RDMA_READ_DEPTH);
            if (depth)
                w.ext[w.num_ext++].type = LLK_EXT_RDMA_READ_DEPTH;
            llk_xlink_set_peer_read_depth(xl, depth);
            /* rails paired by the data only with a client that pairs them */
            bool rails = !e->test_legacy_rails &&
                         llk_wire_has_ext(m.ext, m.num_ext, LLK_EXT_RDMA_RAILS);
            if (rails)
                w.ext[w.num_ext++].type = LLK_EXT_RDMA_RAILS;
            llk_xlink_set_peer_rails(xl, rails);
            break;
        }
    /* Notifications only with a client that takes them (wire.h). */
    c->peer_notify = !e->test_legacy_notify && llk_wire_has_ext(m.ext, m.num_ext, LLK_EXT_NOTIFY);
    if (c->peer_notify)
        w.ext[w.num_ext++].type = LLK_EXT_NOTIFY;
    uint8_t f[LLK_WIRE_HEADER_SIZE + 64];
    size_t n = llk_wire_encode_welcome(f, sizeof f, LLK_WIRE_VERSION, &w);
    if (!llk_conn_queue(c, f, n)) {
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
        return;
    }
    c->remote_id = m.client_cluster_id;
    c->remote_incarnation = m.incarnation;
    c->liveness_ms = m.liveness_ms < e->opts.liveness_interval_ms ? m.liveness_ms
                                                                   : e->opts.liveness_interval_ms;
    c->deadline_ms = 0;
    c->last_rx_ms = c->last_tx_ms = now;
    e->hs_completed++;
    llk_conn_set_state(e, c, LLK_CONN_LINKED);
    LLK_INFO("cluster %llu: linked with cluster %llu from %s (liveness %u ms)",
             (unsigned long long)e->cluster_id, (unsigned long long)c->remote_id, c->peer,
             c->liveness_ms);
}

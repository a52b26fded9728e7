/* conn.c - one connection: state, queued frames, reading whole frames. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "link/engine.h"
#include "base/log.h"

const char *llk_conn_state_name(llk_conn_state_t s)
{
    switch (s) {
    case LLK_CONN_SRV_HANDSHAKE: return "server-handshake";
    case LLK_CONN_SRV_PARKED: return "server-parked";
    case LLK_CONN_CLI_PENDING: return "pending";
    case LLK_CONN_CLI_CONNECTING: return "connecting";
    case LLK_CONN_CLI_HELLO_SENT: return "hello-sent";
    case LLK_CONN_LINKED: return "linked";
    case LLK_CONN_UNLINKING: return "unlinking";
    case LLK_CONN_CLOSING: return "closing";
    case LLK_CONN_DEAD: return "dead";
    }
    return "?";
}

llk_conn_t *llk_conn_new(llmlink_t *e, int fd, bool outbound, llk_conn_state_t state)
{
    /* rx/tx are only needed once a socket exists, but a pending attempt
     * becomes one within one reactor pass, so allocate all at once. */
    llk_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->kind = LLK_EV_CONN;
    c->fd = fd;
    c->outbound = outbound;
    c->state = state;
    c->next = e->conns;
    if (e->conns)
        e->conns->prev = c;
    e->conns = c;
    return c;
}

void llk_conn_set_xfer(llk_conn_t *c, void *ctx, const llk_conn_xfer_ops_t *ops)
{
    c->xfer_ctx = ctx;
    c->xfer_ops = ops;
}

/* Operator counters (link/metrics.h): a link made, or one that ends (an
 * unlink this side started that ends any way counts as unlinked). */
static void count_link_change(llmlink_t *e, const llk_conn_t *c, llk_conn_state_t s)
{
    if (s == LLK_CONN_LINKED && c->state != LLK_CONN_LINKED)
        llk_metrics_link_up(&e->metrics, c->outbound);
    else if (llk_conn_is_link(c) && (s == LLK_CONN_CLOSING || s == LLK_CONN_DEAD))
        llk_metrics_link_closed(&e->metrics,
                                c->close_reason ? (llmlink_close_reason_t)c->close_reason
                                : c->state == LLK_CONN_UNLINKING ? LLMLINK_CLOSE_UNLINKED
                                                                 : LLMLINK_CLOSE_OTHER);
}

void llk_conn_set_state(llmlink_t *e, llk_conn_t *c, llk_conn_state_t s)
{
    if (c->state == s)
        return;
    bool was_hs = c->state == LLK_CONN_SRV_HANDSHAKE;
    count_link_change(e, c, s);
    if (c->state == LLK_CONN_SRV_PARKED)
        llk_park_unlink(e, c);
    LLK_DEBUG("cluster %llu: conn %s (%s) %s -> %s", (unsigned long long)e->cluster_id, c->peer,
              c->outbound ? "out" : "in", llk_conn_state_name(c->state), llk_conn_state_name(s));
    c->state = s;
    /* A link that stops being one ends its transfers at once. Not on
     * UNLINKING: the peer must read our UNLINK before it sees the streams
     * end, or it would take the closed streams for a failure. */
    if (c->xfer_ops && (s == LLK_CONN_CLOSING || s == LLK_CONN_DEAD)) {
        char why[64];
        snprintf(why, sizeof why, "the link was closed (%s)", llk_conn_state_name(s));
        c->xfer_ops->broken(c->xfer_ctx, why);
    }
    if ((s == LLK_CONN_CLOSING || s == LLK_CONN_DEAD) && e->conn_handlers->on_link_down)
        e->conn_handlers->on_link_down(e, c);
    if (was_hs) {
        /* A handshake slot frees up: let the next waiting client in. */
        e->hs_in_progress--;
        e->conn_handlers->on_handshake_slot_free(e);
    }
}

llmlink_status_t llk_conn_unlink_failure(const llk_conn_t *c)
{
    /* llm_datadist's names: a decode node failed to tell the prompt side. */
    return c->outbound ? LLMLINK_NOTIFY_PROMPT_UNLINK_FAILED : LLMLINK_UNLINK_FAILED;
}

bool llk_conn_is_link(const llk_conn_t *c)
{
    return c->state == LLK_CONN_LINKED || c->state == LLK_CONN_UNLINKING;
}

llk_conn_t *llk_conn_find(llmlink_t *e, uint64_t remote_id, bool outbound)
{
    for (llk_conn_t *c = e->conns; c; c = c->next) {
        if (c->outbound != outbound || c->remote_id != remote_id)
            continue;
        if (c->state == LLK_CONN_CLOSING || c->state == LLK_CONN_DEAD ||
            c->state == LLK_CONN_SRV_HANDSHAKE || c->state == LLK_CONN_SRV_PARKED)
            continue;
        return c;
    }
    return NULL;
}

uint32_t llk_conn_count_links(const llmlink_t *e, bool include_pending)
{
    uint32_t n = 0;
    for (const llk_conn_t *c = e->conns; c; c = c->next) {
        if (llk_conn_is_link(c))
            n++;
        else if (include_pending && c->outbound &&
                 (c->state == LLK_CONN_CLI_PENDING || c->state == LLK_CONN_CLI_CONNECTING ||
                  c->state == LLK_CONN_CLI_HELLO_SENT))
            n++;
    }
    return n;
}

bool llk_conn_queue(llk_conn_t *c, const uint8_t *frame, size_t len)
{
    if (len == 0 || LLK_TX_CAP - c->tx_len < len)
        return false;
    memcpy(c->tx + c->tx_len, frame, len);
    c->tx_len += len;
    return true;
}

bool llk_conn_queue_bulk(llk_conn_t *c, const uint8_t *frame, size_t len, size_t limit)
{
    if (len == 0 || c->ntx_len + len > limit)
        return false;
    if (c->ntx_len + len > c->ntx_cap) {
        /* Grown on demand: most links never notify and pay nothing. */
        size_t cap = c->ntx_cap ? c->ntx_cap : 2 * LLK_WIRE_MAX_NOTIFY_FRAME;
        while (cap < c->ntx_len + len)
            cap *= 2;
        if (cap > limit)
            cap = limit;
        uint8_t *p = realloc(c->ntx, cap);
        if (!p)
            return false;
        c->ntx = p;
        c->ntx_cap = cap;
    }
    memcpy(c->ntx + c->ntx_len, frame, len);
    c->ntx_len += len;
    return true;
}

bool llk_conn_queue_simple(llk_conn_t *c, llk_msg_type_t type)
{
    uint8_t f[LLK_WIRE_HEADER_SIZE + 8];
    size_t n = llk_wire_encode_simple(f, sizeof f, LLK_WIRE_VERSION, type);
    return llk_conn_queue(c, f, n);
}

bool llk_conn_queue_reject(llk_conn_t *c, llmlink_status_t status, const char *fmt, ...)
{
    char msg[LLK_WIRE_MAX_REJECT_MSG + 1];
    uint8_t f[LLK_WIRE_HEADER_SIZE + 8 + LLK_WIRE_MAX_REJECT_MSG];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t n = llk_wire_encode_reject(f, sizeof f, LLK_WIRE_VERSION, status, msg);
    return llk_conn_queue(c, f, n);
}

void llk_conn_set_events(llmlink_t *e, llk_conn_t *c, bool want_out)
{
    if (c->fd < 0 || c->want_out == want_out)
        return;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (want_out ? EPOLLOUT : 0),
                             .data.ptr = c};
    if (epoll_ctl(e->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->want_out = want_out;
}

/* Sends up to len bytes of buf; *sent gets how many went. -1 (errno) on a
 * socket error; 0 when done or the socket is full. */
static int send_some(int fd, const uint8_t *buf, size_t len, size_t *sent)
{
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(fd, buf + off, len - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        *sent = off;
        return -1;
    }
    *sent = off;
    return 0;
}

/* n bytes of ntx went out: where does that leave us in its frames? ntx
 * holds whole frames we encoded, so their headers can be trusted. */
static void ntx_consume(llmlink_t *e, llk_conn_t *c, size_t n)
{
    if (!n)
        return;
    if (c->ntx_frame_left) {
        c->ntx_frame_left -= n; /* n <= ntx_frame_left: only that was sent */
    } else {
        size_t pos = 0;
        while (pos < n) {
            const uint8_t *h = c->ntx + pos;
            size_t fl = LLK_WIRE_HEADER_SIZE + ((size_t)h[8] << 24 | (size_t)h[9] << 16 |
                                                (size_t)h[10] << 8 | h[11]);
            if (pos + fl > n) {
                c->ntx_frame_left = pos + fl - n;
                break;
            }
            pos += fl;
        }
    }
    memmove(c->ntx, c->ntx + n, c->ntx_len - n);
    c->ntx_len -= n;
    if (e->notify.room_waiters)
        pthread_cond_broadcast(&e->cv); /* senders waiting for room */
}

int llk_conn_flush(llmlink_t *e, llk_conn_t *c, int64_t now)
{
    if (c->fd < 0 || c->state == LLK_CONN_CLI_CONNECTING)
        return 0;
    int rc = 0, err = 0;
    size_t sent = 0, total = 0;
    /* 1. the rest of a bulk frame partly written, 2. tx, 3. the bulk queue:
     * no frame is ever cut by another. */
    if (c->ntx_frame_left) {
        rc = send_some(c->fd, c->ntx, c->ntx_frame_left, &sent);
        err = errno;
        total += sent;
        ntx_consume(e, c, sent);
    }
    if (rc == 0 && !c->ntx_frame_left && c->tx_len) {
        rc = send_some(c->fd, c->tx, c->tx_len, &sent);
        err = errno;
        total += sent;
        memmove(c->tx, c->tx + sent, c->tx_len - sent);
        c->tx_len -= sent;
    }
    if (rc == 0 && !c->ntx_frame_left && !c->tx_len && c->ntx_len) {
        rc = send_some(c->fd, c->ntx, c->ntx_len, &sent);
        err = errno;
        total += sent;
        ntx_consume(e, c, sent);
    }
    if (total)
        c->last_tx_ms = now;
    if (rc != 0) {
        errno = err;
        return -1;
    }
    llk_conn_set_events(e, c, c->tx_len > 0 || c->ntx_len > 0);
    return 0;
}

void llk_conn_complete(llmlink_t *e, llk_conn_t *c, llmlink_status_t st, const char *fmt, ...)
{
    llk_waiter_t *w = c->waiter;
    if (!w)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->detail, sizeof w->detail, fmt, ap);
    va_end(ap);
    w->status = st;
    w->done = true;
    c->waiter = NULL;
    pthread_cond_broadcast(&e->cv);
}

void llk_conn_close_fd(llmlink_t *e, llk_conn_t *c)
{
    if (c->fd < 0)
        return;
    /* close() alone is not enough when a fork()ed child holds a copy of the
     * descriptor: the epoll registration (pointing at c) would outlive c,
     * and the peer would never see the connection end. Deregister
     * explicitly, and shutdown() the socket itself, not just our fd. */
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    shutdown(c->fd, SHUT_RDWR);
    close(c->fd);
    c->fd = -1;
    c->want_out = false;
}

void llk_conn_destroy(llmlink_t *e, llk_conn_t *c)
{
    if (c->waiter)
        llk_conn_complete(e, c, LLMLINK_LINK_FAILED, "connection closed");
    if (c->state == LLK_CONN_SRV_HANDSHAKE || c->state == LLK_CONN_SRV_PARKED)
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
    if (llk_conn_is_link(c)) /* only llk_engine_finalize frees a live link */
        llk_metrics_link_closed(&e->metrics, LLMLINK_CLOSE_FINALIZE);
    llk_conn_close_fd(e, c);
    if (c->xfer_ops) {
        c->xfer_ops->broken(c->xfer_ctx, "the link was freed");
        c->xfer_ops->release(c->xfer_ctx);
        c->xfer_ctx = NULL;
        c->xfer_ops = NULL;
    }
    if (e->conn_handlers->on_link_down)
        e->conn_handlers->on_link_down(e, c);
    free(c->ntx);
    if (c->prev)
        c->prev->next = c->next;
    else
        e->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

void llk_conn_dispatch(llmlink_t *e, llk_conn_t *c, const llk_frame_header_t *h,
                     const uint8_t *payload, int64_t now)
{
    /* No handler (CLOSING): whatever still arrives is dropped. */
    llk_conn_frame_fn *fn =
        (unsigned)c->state < LLK_CONN_NUM_STATES ? e->conn_handlers->on_frame[c->state] : NULL;
    if (fn)
        fn(e, c, h, payload, now);
}

/* A bad header: answer a version mismatch in a way any version can read,
 * drop the connection for anything else. */
static void on_bad_header(llmlink_t *e, llk_conn_t *c, const llk_frame_header_t *h,
                          llk_header_check_t chk)
{
    const char *why = llk_wire_header_check_str(chk);
    if (chk == LLK_HDR_BAD_VERSION) {
        if (c->state == LLK_CONN_SRV_HANDSHAKE) {
            LLK_WARN("cluster %llu: refused %s: protocol version %u, this side speaks %u",
                     (unsigned long long)e->cluster_id, c->peer, h->version, LLK_WIRE_VERSION);
            e->hs_rejected++;
            llk_metrics_hs_refused(&e->metrics, LLMLINK_VERSION_MISMATCH);
            llk_conn_queue_reject(c, LLMLINK_VERSION_MISMATCH,
                                  "protocol version %u not supported; server speaks %u",
                                  h->version, LLK_WIRE_VERSION);
            llk_conn_set_state(e, c, LLK_CONN_CLOSING);
            c->deadline_ms = 0; /* set by the timer pass */
            return;
        }
        if (c->state == LLK_CONN_CLI_HELLO_SENT) {
            llk_conn_complete(e, c, LLMLINK_VERSION_MISMATCH,
                              "peer %s speaks protocol version %u, this side %u", c->peer,
                              h->version, LLK_WIRE_VERSION);
            llk_conn_set_state(e, c, LLK_CONN_DEAD);
            return;
        }
    }
    e->protocol_errors++;
    LLK_WARN("cluster %llu: dropping %s (%s): %s", (unsigned long long)e->cluster_id, c->peer,
             llk_conn_state_name(c->state), why);
    if (c->state == LLK_CONN_CLI_HELLO_SENT)
        llk_conn_complete(e, c, LLMLINK_PROTOCOL_ERROR, "peer %s sent a bad frame: %s", c->peer,
                          why);
    else if (llk_conn_is_link(c)) {
        llk_conn_complete(e, c, llk_conn_unlink_failure(c),
                          "peer %s sent a bad frame: %s", c->peer, why);
        e->links_lost++;
        c->close_reason = LLMLINK_CLOSE_PROTOCOL_ERROR;
    }
    llk_conn_set_state(e, c, LLK_CONN_DEAD);
}

/* Handles every whole frame in rx; keeps a partial one. */
static void drain_frames(llmlink_t *e, llk_conn_t *c, int64_t now)
{
    size_t off = 0;
    while (c->rx_len - off >= LLK_WIRE_HEADER_SIZE && c->state != LLK_CONN_DEAD &&
           c->state != LLK_CONN_CLOSING) {
        llk_frame_header_t h;
        llk_wire_read_header(c->rx + off, &h);
        llk_header_check_t chk = llk_wire_check_header(&h);
        if (chk != LLK_HDR_OK) {
            on_bad_header(e, c, &h, chk);
            return;
        }
        if (c->rx_len - off < LLK_WIRE_HEADER_SIZE + h.length)
            break;
        c->last_rx_ms = now;
        llk_conn_dispatch(e, c, &h, c->rx + off + LLK_WIRE_HEADER_SIZE, now);
        off += LLK_WIRE_HEADER_SIZE + h.length;
    }
    if (off) {
        memmove(c->rx, c->rx + off, c->rx_len - off);
        c->rx_len -= off;
    }
}

void llk_conn_on_readable(llmlink_t *e, llk_conn_t *c, int64_t now)
{
    /* Bounded: one frame buffer per pass at most a few times, so a fast
     * sender cannot starve the other connections. */
    for (int round = 0; round < 16; round++) {
        if (c->state == LLK_CONN_DEAD || c->state == LLK_CONN_CLI_PENDING ||
            c->state == LLK_CONN_CLI_CONNECTING)
            return;
        if (c->state == LLK_CONN_CLOSING) {
            /* Drain and discard so the peer's close is seen. */
            c->rx_len = 0;
        }
        ssize_t r = recv(c->fd, c->rx + c->rx_len, sizeof c->rx - c->rx_len, 0);
        if (r > 0) {
            c->rx_len += (size_t)r;
            drain_frames(e, c, now);
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        e->conn_handlers->on_closed(e, c, r == 0 ? 0 : errno);
        return;
    }
}

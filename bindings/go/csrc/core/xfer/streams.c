/* xfer/streams.c - the transfer side of one link: its data streams, the
 * attach handshake that joins them to the link, borrowing, teardown. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/addr.h"
#include "base/clock.h"
#include "base/crypto.h"
#include "link/engine.h"
#include "link/link_api.h"
#include "link/tls.h"
#include "base/err.h"
#include "base/log.h"

/* ---- lifetime -------------------------------------------------------------- */

llk_xlink_t *llk_xlink_new(uint64_t remote_id, bool outbound, uint32_t nstreams, const char *peer)
{
    llk_xlink_t *xl = calloc(1, sizeof *xl);
    if (!xl)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_mutex_init(&xl->mu, NULL) != 0) {
        pthread_condattr_destroy(&ca);
        free(xl);
        return NULL;
    }
    if (pthread_cond_init(&xl->cv, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        pthread_mutex_destroy(&xl->mu);
        free(xl);
        return NULL;
    }
    pthread_condattr_destroy(&ca);
    xl->refs = 1;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    xl->up_since_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    xl->remote_id = remote_id;
    xl->outbound = outbound;
    xl->nstreams = nstreams > LLK_MAX_STREAMS ? LLK_MAX_STREAMS : nstreams;
    snprintf(xl->peer, sizeof xl->peer, "%s", peer ? peer : "?");
    for (int i = 0; i < LLK_MAX_STREAMS; i++)
        xl->req_fd[i] = xl->own_fd[i] = -1;
    if (llk_transport_link_new(&xl->xport) != 0) {
        pthread_cond_destroy(&xl->cv);
        pthread_mutex_destroy(&xl->mu);
        free(xl);
        return NULL;
    }
    return xl;
}

/* What the control connection calls (llk_conn_xfer_ops_t): a link that
 * dies breaks its transfers; a freed connection drops its reference. */
static void conn_broken(void *ctx, const char *why)
{
    llk_xlink_break(ctx, "%s", why);
}

static void conn_release(void *ctx)
{
    llk_xlink_unref(ctx);
}

static const llk_conn_xfer_ops_t conn_ops = {.broken = conn_broken, .release = conn_release};

llk_xlink_t *llk_xlink_install(llk_conn_t *c, uint64_t remote_id, bool outbound,
                               uint32_t nstreams, const char *peer)
{
    llk_xlink_t *xl = llk_xlink_new(remote_id, outbound, nstreams, peer);
    if (xl)
        llk_conn_set_xfer(c, xl, &conn_ops); /* the connection's reference */
    return xl;
}

llk_xlink_t *llk_xlink_of(const llk_conn_t *c)
{
    return c->xfer_ops == &conn_ops ? c->xfer_ctx : NULL;
}

void llk_xlink_ref(llk_xlink_t *xl)
{
    pthread_mutex_lock(&xl->mu);
    xl->refs++;
    pthread_mutex_unlock(&xl->mu);
}

void llk_xlink_unref(llk_xlink_t *xl)
{
    if (!xl)
        return;
    pthread_mutex_lock(&xl->mu);
    uint32_t left = --xl->refs;
    pthread_mutex_unlock(&xl->mu);
    if (left)
        return;
    /* Last reference: nobody borrows a requester stream any more, and the
     * owner thread dropped its references with its streams. */
    for (int i = 0; i < LLK_MAX_STREAMS; i++)
        if (xl->req_fd[i] >= 0)
            close(xl->req_fd[i]);
    /* No call and no owner stream uses the transports' link state any more. */
    llk_transport_link_free(&xl->xport);
    llk_crypto_wipe(xl->ks, sizeof xl->ks);
    pthread_cond_destroy(&xl->cv);
    pthread_mutex_destroy(&xl->mu);
    free(xl);
}

void llk_xlink_break(llk_xlink_t *xl, const char *fmt, ...)
{
    pthread_mutex_lock(&xl->mu);
    if (!xl->broken) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(xl->why, sizeof xl->why, fmt, ap);
        va_end(ap);
        xl->broken = true;
    }
    /* Before the fence: a thread that sees a stream end can tell why, and
     * the owner thread stops at its next step (xfer/owner.c). */
    atomic_store_explicit(&xl->broken_now, true, memory_order_release);
    /* Now, not at the last unref: no transport moves a further byte of a
     * call that gave up (tcp: the streams are shut down, so a borrower or
     * the owner thread inside a call on one sees EOF/EPIPE and lets go). */
    llk_transport_fence(xl);
    pthread_cond_broadcast(&xl->cv);
    pthread_mutex_unlock(&xl->mu);
}

bool llk_xlink_is_broken(llk_xlink_t *xl)
{
    pthread_mutex_lock(&xl->mu);
    bool b = xl->broken;
    pthread_mutex_unlock(&xl->mu);
    return b;
}

/* ---- borrowing requester streams ------------------------------------------- */

int llk_xlink_borrow(llk_xlink_t *xl, uint32_t want, int *idx, int64_t deadline_ms,
                     const char *fn)
{
    return llk_xlink_borrow_cx(xl, want, idx, deadline_ms, fn, NULL);
}

/* How often a borrower with a cancel looks at it while no stream is free
 * (the canceller cannot signal xl->cv: it knows no link). */
#define BORROW_CANCEL_MS 2

int llk_xlink_borrow_cx(llk_xlink_t *xl, uint32_t want, int *idx, int64_t deadline_ms,
                        const char *fn, llk_xfer_cancel_t *cx)
{
    pthread_mutex_lock(&xl->mu);
    for (;;) {
        if (llk_cancel_requested(cx)) {
            llk_err(LLMLINK_CANCELLED, "%s: cancelled while waiting for a free data stream of the "
                    "link with cluster %llu (%s): nothing was sent; the link stays usable", fn,
                    (unsigned long long)xl->remote_id, xl->peer);
            pthread_mutex_unlock(&xl->mu);
            return -1;
        }
        if (xl->broken) {
            llk_err(LLMLINK_NOT_YET_LINK, "%s: the link with cluster %llu (%s) is unusable: %s; "
                    "link it again", fn, (unsigned long long)xl->remote_id, xl->peer, xl->why);
            pthread_mutex_unlock(&xl->mu);
            return -1;
        }
        int n = 0;
        for (int i = 0; i < LLK_MAX_STREAMS && (uint32_t)n < want; i++)
            if (xl->req_fd[i] >= 0 && !xl->req_busy[i])
                idx[n++] = i;
        if (n > 0) {
            for (int k = 0; k < n; k++)
                xl->req_busy[idx[k]] = true;
            pthread_mutex_unlock(&xl->mu);
            return n;
        }
        int64_t now = llk_now_ms();
        if (now >= deadline_ms) {
            llk_err(LLMLINK_WAIT_PROCESS_TIMEOUT, "%s: no data stream of the link with cluster "
                    "%llu came free within llm.SyncKvCacheWaitTime", fn,
                    (unsigned long long)xl->remote_id);
            pthread_mutex_unlock(&xl->mu);
            return -1;
        }
        int64_t until = deadline_ms;
        if (cx && until > now + BORROW_CANCEL_MS)
            until = now + BORROW_CANCEL_MS;
        struct timespec ts = llk_ms_timespec(until);
        pthread_cond_timedwait(&xl->cv, &xl->mu, &ts);
    }
}

void llk_xlink_give_back(llk_xlink_t *xl, const int *idx, int n)
{
    pthread_mutex_lock(&xl->mu);
    for (int k = 0; k < n; k++)
        xl->req_busy[idx[k]] = false;
    pthread_cond_broadcast(&xl->cv);
    pthread_mutex_unlock(&xl->mu);
}

/* ---- client side: open and attach the data streams -------------------------- */

/* Waits for `events` on fd until the deadline: 1 ready, 0 timed out, -1
 * error (errno; ECONNABORTED when the link broke meanwhile). Polls in
 * short rounds so that a link that dies while its streams attach (peer
 * gone, unlinked, liveness) ends the wait at once. */
#define ATTACH_POLL_MS 100
static int wait_fd(llk_xlink_t *xl, int fd, short events, int64_t deadline_ms)
{
    for (;;) {
        if (llk_xlink_is_broken(xl)) {
            errno = ECONNABORTED;
            return -1;
        }
        int64_t left = deadline_ms - llk_now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, left > ATTACH_POLL_MS ? ATTACH_POLL_MS : (int)left);
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

typedef struct {
    int fd;
    uint8_t dir;
    uint16_t slot;
    uint8_t nc[32]; /* with a key: this stream's AUTH_HELLO nonce */
} pending_stream_t;

static int open_stream(const struct sockaddr_storage *remote, socklen_t remote_len,
                       const struct sockaddr_storage *local, socklen_t local_len)
{
    int fd = socket(remote->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (local && local_len) {
        struct sockaddr_storage la = *local;
        llk_addr_set_port((struct sockaddr *)&la, 0);
        if (bind(fd, (struct sockaddr *)&la, local_len) != 0) {
            int err = errno;
            close(fd);
            errno = err;
            return -1;
        }
    }
    if (connect(fd, (const struct sockaddr *)remote, remote_len) != 0 && errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

int llk_xlink_send_all(llk_xlink_t *xl, int fd, const uint8_t *buf, size_t len,
                       int64_t deadline_ms)
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
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        int r = wait_fd(xl, fd, POLLOUT, deadline_ms);
        if (r <= 0) {
            if (r == 0)
                errno = ETIMEDOUT;
            return -1;
        }
    }
    return 0;
}

int llk_xlink_recv_all(llk_xlink_t *xl, int fd, uint8_t *buf, size_t len, int64_t deadline_ms)
{
    size_t off = 0;
    while (off < len) {
        ssize_t r = recv(fd, buf + off, len - off, 0);
        if (r > 0) {
            off += (size_t)r;
            continue;
        }
        if (r == 0) {
            errno = ECONNRESET;
            return -1;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        int w = wait_fd(xl, fd, POLLIN, deadline_ms);
        if (w <= 0) {
            if (w == 0)
                errno = ETIMEDOUT;
            return -1;
        }
    }
    return 0;
}

/* Reads the server's answer to an ATTACH: SUCCESS with *ok filled, or the
 * status of a REJECT / failure with a message in detail. */
static llmlink_status_t read_attach_answer(llk_xlink_t *xl, int fd, int64_t deadline_ms,
                                           llk_msg_attach_ok_t *ok, char *detail, size_t dlen)
{
    uint8_t buf[LLK_WIRE_HEADER_SIZE + LLK_WIRE_MAX_REJECT_MSG + 8];
    if (llk_xlink_recv_all(xl, fd, buf, LLK_WIRE_HEADER_SIZE, deadline_ms) != 0) {
        snprintf(detail, dlen, "no answer to ATTACH: %s", strerror(errno));
        return errno == ETIMEDOUT ? LLMLINK_TIMEOUT : LLMLINK_LINK_FAILED;
    }
    llk_frame_header_t h;
    llk_wire_read_header(buf, &h);
    llk_header_check_t chk = llk_wire_check_header(&h);
    if (chk != LLK_HDR_OK || h.length > sizeof buf - LLK_WIRE_HEADER_SIZE ||
        (h.type != LLK_MSG_ATTACH_OK && h.type != LLK_MSG_REJECT)) {
        snprintf(detail, dlen, "bad answer to ATTACH (%s, type %u)",
                 llk_wire_header_check_str(chk), h.type);
        return LLMLINK_PROTOCOL_ERROR;
    }
    uint8_t *payload = buf + LLK_WIRE_HEADER_SIZE;
    if (llk_xlink_recv_all(xl, fd, payload, h.length, deadline_ms) != 0) {
        snprintf(detail, dlen, "truncated answer to ATTACH: %s", strerror(errno));
        return errno == ETIMEDOUT ? LLMLINK_TIMEOUT : LLMLINK_LINK_FAILED;
    }
    const char *why = NULL;
    if (h.type == LLK_MSG_REJECT) {
        llk_msg_reject_t rj;
        if (llk_wire_decode_reject(payload, h.length, &rj, &why) != 0) {
            snprintf(detail, dlen, "bad REJECT to ATTACH: %s", why);
            return LLMLINK_PROTOCOL_ERROR;
        }
        snprintf(detail, dlen, "data stream refused: %s (%s)", rj.message,
                 llmlink_status_name(rj.status));
        return rj.status == LLMLINK_AUTH_FAILED ? LLMLINK_AUTH_FAILED : LLMLINK_LINK_FAILED;
    }
    if (llk_wire_decode_attach_ok(payload, h.length, ok, &why) != 0) {
        snprintf(detail, dlen, "bad ATTACH_OK: %s", why);
        return LLMLINK_PROTOCOL_ERROR;
    }
    return LLMLINK_SUCCESS;
}

/* Gives an attached stream to its user: the requester pool (forward) or
 * the owner thread (reverse). Closes fd on failure. */
static llmlink_status_t install_stream(llmlink_t *e, llk_xlink_t *xl, const pending_stream_t *s,
                                       char *detail, size_t dlen)
{
    if (s->dir == 1) {
        llmlink_status_t st = llk_xserver_adopt(e, xl, s->slot, s->fd);
        if (st != LLMLINK_SUCCESS) {
            snprintf(detail, dlen, "owner thread: %s", llk_err_message());
            close(s->fd);
        }
        return st;
    }
    pthread_mutex_lock(&xl->mu);
    bool ok = !xl->broken && xl->req_fd[s->slot] < 0;
    if (ok)
        xl->req_fd[s->slot] = s->fd;
    pthread_cond_broadcast(&xl->cv);
    pthread_mutex_unlock(&xl->mu);
    if (!ok) {
        close(s->fd);
        snprintf(detail, dlen, "the link broke while its data streams attached");
        return LLMLINK_LINK_FAILED;
    }
    return LLMLINK_SUCCESS;
}

llmlink_status_t llk_xfer_attach_streams(llmlink_t *e, llk_xlink_t *xl,
                                         const struct sockaddr_storage *remote,
                                         socklen_t remote_len,
                                         const struct sockaddr_storage *local, socklen_t local_len,
                                         uint64_t remote_incarnation, int64_t deadline_ms,
                                         char *detail, size_t dlen)
{
    pending_stream_t ps[2 * LLK_MAX_STREAMS];
    uint32_t n = 2 * xl->nstreams, opened = 0;
    llmlink_status_t st = LLMLINK_SUCCESS;
    char addr[72];
    llk_addr_format((const struct sockaddr *)remote, addr, sizeof addr);

    /* Connect every stream first, so their handshakes overlap. */
    for (; opened < n; opened++) {
        ps[opened].dir = opened < xl->nstreams ? 0 : 1;
        ps[opened].slot = (uint16_t)(opened % xl->nstreams);
        ps[opened].fd = open_stream(remote, remote_len, local, local_len);
        if (ps[opened].fd < 0) {
            snprintf(detail, dlen, "data stream to %s: %s", addr, strerror(errno));
            st = LLMLINK_LINK_FAILED;
            break;
        }
    }
    llk_msg_attach_t m = {0};
    m.client_cluster_id = e->cluster_id;
    m.server_cluster_id = xl->remote_id;
    m.client_incarnation = e->incarnation;
    m.server_incarnation = remote_incarnation;
    m.transport = (uint8_t)e->opts.transport;
    memcpy(m.boot_id, e->host.boot_id, sizeof m.boot_id);
    m.pidns = e->host.pidns;
    m.pid = e->host.pid;
    for (uint32_t i = 0; i < opened && st == LLMLINK_SUCCESS; i++) {
        int r = wait_fd(xl, ps[i].fd, POLLOUT, deadline_ms);
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (r > 0)
            getsockopt(ps[i].fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (r <= 0 || soerr) {
            snprintf(detail, dlen, "data stream to %s: %s", addr,
                     r == 0 ? "connect timed out" : strerror(soerr ? soerr : errno));
            st = r == 0 ? LLMLINK_TIMEOUT : LLMLINK_LINK_FAILED;
            break;
        }
        /* TLS: the stream is the plaintext end of a relay from here on. */
        if (e->tls) {
            int64_t left = deadline_ms - llk_now_ms();
            ps[i].fd = llk_tls_wrap(e->tls, ps[i].fd, false, left > 0 ? (uint32_t)left : 1, addr);
            if (ps[i].fd < 0) {
                snprintf(detail, dlen, "data stream to %s: TLS relay: %s", addr, strerror(errno));
                st = LLMLINK_LINK_FAILED;
                break;
            }
        }
        if (e->auth) { /* the ATTACH follows the server's proof, below */
            st = llk_stream_auth_hello(e, xl, ps[i].fd, ps[i].nc, deadline_ms, detail, dlen);
            continue;
        }
        uint8_t f[LLK_WIRE_HEADER_SIZE + 80];
        m.stream_index = ps[i].slot;
        m.direction = ps[i].dir;
        size_t len = llk_wire_encode_attach(f, sizeof f, LLK_WIRE_VERSION, &m);
        if (!len || llk_xlink_send_all(xl, ps[i].fd, f, len, deadline_ms) != 0) {
            snprintf(detail, dlen, "ATTACH to %s: %s", addr, strerror(errno));
            st = errno == ETIMEDOUT ? LLMLINK_TIMEOUT : LLMLINK_LINK_FAILED;
        }
    }
    for (uint32_t i = 0; e->auth && i < opened && st == LLMLINK_SUCCESS; i++) {
        m.stream_index = ps[i].slot;
        m.direction = ps[i].dir;
        st = llk_stream_auth_attach(e, xl, ps[i].fd, ps[i].nc, &m, deadline_ms, detail, dlen);
    }
    uint32_t installed = 0;
    for (; installed < opened && st == LLMLINK_SUCCESS; installed++) {
        llk_msg_attach_ok_t ok;
        st = read_attach_answer(xl, ps[installed].fd, deadline_ms, &ok, detail, dlen);
        char tw[224];
        bool auth = false;
        if (st != LLMLINK_SUCCESS && llk_tls_failure(ps[installed].fd, tw, sizeof tw, &auth)) {
            snprintf(detail, dlen, "data stream to %s: %s", addr, tw);
            st = auth ? LLMLINK_AUTH_FAILED : LLMLINK_LINK_FAILED;
        }
        if (st != LLMLINK_SUCCESS)
            break;
        if (installed == 0) {
            llk_host_id_t rh = {.pidns = ok.pidns, .pid = ok.pid};
            memcpy(rh.boot_id, ok.boot_id, sizeof rh.boot_id);
            char cbuf[512];
            const char *conflict =
                llk_transport_conflict(e, xl, &rh, ok.transport, cbuf, sizeof cbuf);
            if (conflict) {
                snprintf(detail, dlen, "%s", conflict);
                st = LLMLINK_LINK_FAILED;
                break;
            }
            llk_transport_record(e, xl, &rh, ok.transport);
            /* Before the stream is handed out: nothing else reads it. */
            st = llk_transport_setup_client(e, xl, ps[0].fd, deadline_ms, detail, dlen);
            if (st != LLMLINK_SUCCESS)
                break;
        }
        st = install_stream(e, xl, &ps[installed], detail, dlen);
        if (st != LLMLINK_SUCCESS) {
            installed++; /* install_stream closed it */
            break;
        }
    }
    /* On failure close what was not handed over; the caller kills the link,
     * which ends the streams that were. */
    if (st != LLMLINK_SUCCESS)
        for (uint32_t i = installed; i < opened; i++)
            close(ps[i].fd);
    else
        LLK_DEBUG("cluster %llu: %u data streams attached to cluster %llu (%s, %s)",
                  (unsigned long long)e->cluster_id, n, (unsigned long long)xl->remote_id, addr,
                  llk_transport_for_link(xl)->name);
    return st;
}

/* ---- server side: an ATTACH on a fresh connection ----------------------------- */

/* A stream on that index and direction is attached now (owner streams:
 * direction 0). */
static bool stream_taken(llk_xlink_t *xl, uint8_t direction, uint32_t index)
{
    pthread_mutex_lock(&xl->mu);
    bool taken = direction == 0 ? xl->own_fd[index] >= 0 : xl->req_fd[index] >= 0;
    pthread_mutex_unlock(&xl->mu);
    return taken;
}

bool llk_xfer_on_attach(llmlink_t *e, llk_conn_t *c, const uint8_t *payload, size_t len)
{
    char msg[200];
    const char *why = NULL;
    llk_msg_attach_t m;
    llk_link_stream_begin_locked(e);
    if (llk_wire_decode_attach(payload, len, &m, &why) != 0) {
        llk_link_stream_refuse_locked(e, c, LLMLINK_PROTOCOL_ERROR, true, why);
        return false;
    }
    llk_xlink_t *xl = llk_link_attach_target_locked(e, m.server_cluster_id, m.server_incarnation,
                                                    m.client_cluster_id, m.client_incarnation);
    if (!xl) {
        snprintf(msg, sizeof msg, "no link from cluster %llu to cluster %llu to attach to",
                 (unsigned long long)m.client_cluster_id, (unsigned long long)m.server_cluster_id);
        llk_link_stream_refuse_locked(e, c, LLMLINK_NOT_YET_LINK, false, msg);
        return false;
    }
    /* Broken (a stream of it failed, a transfer gave up) but not yet closed
     * by the reactor's next timer pass: refused now, not answered ATTACH_OK
     * and then dropped by the slot claim below (found by fuzz_attach). */
    if (llk_xlink_is_broken(xl)) {
        snprintf(msg, sizeof msg, "the link from cluster %llu is broken; link again",
                 (unsigned long long)m.client_cluster_id);
        llk_link_stream_refuse_locked(e, c, LLMLINK_NOT_YET_LINK, false, msg);
        return false;
    }
    /* With a key: the stream proves it belongs to this authenticated link
     * (MAC under the link's session key over this connection's nonces). */
    if (e->auth && !llk_auth_attach_ok_locked(e, c, xl->has_ks ? xl->ks : NULL, payload, &m)) {
        llk_link_stream_refuse_locked(e, c, LLMLINK_AUTH_FAILED, false,
                                      "the ATTACH's MAC is missing or wrong");
        return false;
    }
    if (m.stream_index >= LLK_MAX_STREAMS) {
        snprintf(msg, sizeof msg, "stream index %u out of range", m.stream_index);
        llk_link_stream_refuse_locked(e, c, LLMLINK_PARAM_INVALID, false, msg);
        return false;
    }
    if (xl->peer_streams && m.stream_index >= xl->peer_streams) {
        /* A link has the streams its client announced, no more: more
         * would each hold a socket and an owner slot of this engine. */
        snprintf(msg, sizeof msg,
                 "data stream %u (direction %u) is beyond the %u per direction the client "
                 "announced in its HELLO",
                 m.stream_index, m.direction, xl->peer_streams);
        llk_link_stream_refuse_locked(e, c, LLMLINK_PROTOCOL_ERROR, true, msg);
        return false;
    }
    if (stream_taken(xl, m.direction, m.stream_index)) {
        /* Refused before ATTACH_OK, with the reason: a peer must not stack
         * streams on one index (the slot claim below would only drop it
         * after a misleading ATTACH_OK). */
        snprintf(msg, sizeof msg, "data stream %u (direction %u) is attached already",
                 m.stream_index, m.direction);
        llk_link_stream_refuse_locked(e, c, LLMLINK_PROTOCOL_ERROR, false, msg);
        return false;
    }
    llk_host_id_t rh = {.pidns = m.pidns, .pid = m.pid};
    memcpy(rh.boot_id, m.boot_id, sizeof rh.boot_id);
    char cbuf[512];
    const char *conflict = llk_transport_conflict(e, xl, &rh, m.transport, cbuf, sizeof cbuf);
    if (conflict) {
        llk_link_stream_refuse_locked(e, c, LLMLINK_LINK_FAILED, false, conflict);
        return false;
    }
    bool agrees = llk_transport_record(e, xl, &rh, m.transport);
    if (!agrees) {
        llk_link_stream_refuse_locked(
            e, c, LLMLINK_PROTOCOL_ERROR, false,
            "this stream names another host or transport than the link's first");
        return false;
    }
    llk_msg_attach_ok_t ok = {.transport = (uint8_t)e->opts.transport,
                              .pidns = e->host.pidns,
                              .pid = e->host.pid};
    memcpy(ok.boot_id, e->host.boot_id, sizeof ok.boot_id);
    uint8_t f[LLK_WIRE_HEADER_SIZE + 40];
    size_t n = llk_wire_encode_attach_ok(f, sizeof f, LLK_WIRE_VERSION, &ok);
    /* The socket is new and empty: a 48-byte answer goes out at once; then
     * the descriptor is taken away from the reactor. */
    int fd = llk_link_stream_take_fd_locked(e, c, f, n);
    if (fd < 0)
        return false;

    llmlink_status_t st;
    if (m.direction == 0) {
        st = llk_xserver_adopt(e, xl, m.stream_index, fd);
    } else {
        pthread_mutex_lock(&xl->mu);
        bool free_slot = xl->req_fd[m.stream_index] < 0 && !xl->broken;
        if (free_slot)
            xl->req_fd[m.stream_index] = fd;
        pthread_cond_broadcast(&xl->cv);
        pthread_mutex_unlock(&xl->mu);
        st = free_slot ? LLMLINK_SUCCESS : LLMLINK_PARAM_INVALID;
    }
    if (st != LLMLINK_SUCCESS) {
        LLK_WARN("cluster %llu: dropped data stream %u from cluster %llu: %s",
                 (unsigned long long)e->cluster_id, m.stream_index,
                 (unsigned long long)m.client_cluster_id,
                 m.direction == 0 ? llk_err_message() : "slot taken");
        shutdown(fd, SHUT_RDWR);
        close(fd);
        return false;
    }
    return true;
}

/* ---- finding and killing links ------------------------------------------------ */

llk_xlink_t *llk_xfer_find_link(llmlink_t *e, uint64_t remote_id, const char *fn)
{
    llk_link_lock(e);
    llk_xlink_t *xl = NULL;
    void *ctx;
    const char *peer;
    llmlink_status_t st = llk_link_find_locked(e, remote_id, fn, &ctx, &peer);
    if (st == LLMLINK_SUCCESS) {
        if (ctx && !llk_xlink_is_broken(ctx)) {
            xl = ctx;
            llk_xlink_ref(xl);
        } else if (peer && !ctx) {
            llk_err(LLMLINK_FEATURE_NOT_ENABLED, "%s: cluster %llu (%s) does not accept data "
                    "streams (an llmlink peer without transfers?)", fn,
                    (unsigned long long)remote_id, peer);
        } else {
            llk_err(LLMLINK_NOT_YET_LINK, "%s: no link with cluster %llu (the key's cluster id)",
                    fn, (unsigned long long)remote_id);
        }
    }
    llk_link_unlock(e);
    return xl;
}

void llk_xfer_kill_link(llmlink_t *e, llk_xlink_t *xl, const char *why)
{
    llk_xlink_break(xl, "%s", why);
    llk_link_kill(e, xl, why);
}

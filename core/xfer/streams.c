/* xfer/streams.c - the transfer side of one link: its data streams, the
 * attach handshake that joins them to the link, borrowing, teardown. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/addr.h"
#include "base/clock.h"
#include "link/engine.h"
#include "link/link_api.h"
#include "base/err.h"
#include "base/log.h"
#include "transport/rdma.h"
#include "transport/rdma_plan.h"

/* ---- host identity ------------------------------------------------------ */

void llk_host_id_self(llk_host_id_t *h)
{
    memset(h, 0, sizeof *h);
    h->pid = (uint32_t)getpid();
    /* boot_id is "xxxxxxxx-xxxx-...": 32 hex digits, dashes skipped. */
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char text[64] = {0};
        ssize_t n = read(fd, text, sizeof text - 1);
        close(fd);
        size_t o = 0;
        for (ssize_t i = 0; i + 1 < n && o < sizeof h->boot_id; i++) {
            if (text[i] == '-')
                continue;
            unsigned v;
            if (sscanf(text + i, "%2x", &v) != 1)
                break;
            h->boot_id[o++] = (uint8_t)v;
            i++;
        }
    }
    struct stat st;
    if (stat("/proc/self/ns/pid", &st) == 0)
        h->pidns = (uint64_t)st.st_ino;
}

bool llk_host_id_same_host(const llk_host_id_t *a, const llk_host_id_t *b)
{
    static const uint8_t zero[16];
    /* Without a boot id nothing proves the same kernel: say no. The pid
     * namespace must match too, or the pid would name another process. */
    if (!memcmp(a->boot_id, zero, sizeof zero))
        return false;
    return !memcmp(a->boot_id, b->boot_id, sizeof a->boot_id) && a->pidns == b->pidns &&
           a->pidns != 0;
}

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
    xl->remote_id = remote_id;
    xl->outbound = outbound;
    xl->nstreams = nstreams > LLK_MAX_STREAMS ? LLK_MAX_STREAMS : nstreams;
    snprintf(xl->peer, sizeof xl->peer, "%s", peer ? peer : "?");
    for (int i = 0; i < LLK_MAX_STREAMS; i++)
        xl->req_fd[i] = xl->own_fd[i] = -1;
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
    /* No call and no owner stream uses the rails any more. */
    llk_rdma_link_free(xl->rdma);
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
    /* RDMA: stop the QPs now, not at the last unref, so that no work
     * request of a call that gave up keeps moving bytes, and a peer's old
     * rkeys reach nothing over this link (rail locks are leaves). */
    llk_rdma_link_abort(xl->rdma);
    /* shutdown, not close: a borrower or the owner thread may be inside a
     * call on the descriptor; it sees EOF/EPIPE and lets go. */
    for (int i = 0; i < LLK_MAX_STREAMS; i++) {
        if (xl->req_fd[i] >= 0)
            shutdown(xl->req_fd[i], SHUT_RDWR);
        if (xl->own_fd[i] >= 0)
            shutdown(xl->own_fd[i], SHUT_RDWR);
    }
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

bool llk_xlink_peer_proven(llk_xlink_t *xl, int fd)
{
    pthread_mutex_lock(&xl->mu);
    int8_t proof = xl->peer_proof;
    uint32_t pid = xl->remote_host.pid;
    pthread_mutex_unlock(&xl->mu);
    if (proof != 0)
        return proof > 0;
    /* Outside the lock: it reads /proc (a few ms on a busy host). Two
     * threads may both try once; they reach the same answer. */
    proof = llk_peer_proof(fd, pid) ? 1 : -1;
    if (proof < 0)
        LLK_INFO("link with cluster %llu (%s): pid %u is not proven to hold the other end of "
                 "its data stream; no shm on this link", (unsigned long long)xl->remote_id,
                 xl->peer, pid);
    pthread_mutex_lock(&xl->mu);
    xl->peer_proof = proof;
    pthread_mutex_unlock(&xl->mu);
    return proof > 0;
}

void llk_xlink_set_rails(llk_xlink_t *xl, const llk_conn_t *c, bool peer_offers)
{
    pthread_mutex_lock(&xl->mu);
    xl->rdma_peer = peer_offers;
    xl->nrail_addrs = 0;
    if (c && c->num_local == 0) {
        socklen_t len = sizeof xl->rail_local[0];
        if (c->fd >= 0 &&
            getsockname(c->fd, (struct sockaddr *)&xl->rail_local[0], &len) == 0) {
            xl->rail_target[0] = c->remote[c->remote_idx];
            xl->nrail_addrs = 1;
        }
    } else if (c) {
        for (size_t i = 0; i < c->num_local && xl->nrail_addrs < LLK_XWIRE_MAX_RAILS; i++) {
            const struct sockaddr_storage *t =
                &c->remote[c->num_remote ? i % c->num_remote : 0];
            if (t->ss_family != c->local[i].ss_family)
                continue; /* a rail joins two addresses of one family */
            xl->rail_local[xl->nrail_addrs] = c->local[i];
            xl->rail_target[xl->nrail_addrs] = *t;
            xl->nrail_addrs++;
        }
    }
    pthread_mutex_unlock(&xl->mu);
}

/* ---- borrowing requester streams ------------------------------------------- */

int llk_xlink_borrow(llk_xlink_t *xl, uint32_t want, int *idx, int64_t deadline_ms,
                     const char *fn)
{
    pthread_mutex_lock(&xl->mu);
    for (;;) {
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
        struct timespec ts = llk_ms_timespec(deadline_ms);
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

/* Decides how this side's requests move, from the first stream that
 * attaches (xl->mu held). A later stream that names another host or
 * transport is refused (false): the transport of a link never changes
 * under a running transfer. */
static bool record_transport(llmlink_t *e, llk_xlink_t *xl, const llk_host_id_t *remote,
                             uint8_t remote_transport)
{
    if (xl->transport_set)
        return !memcmp(&xl->remote_host, remote, sizeof *remote) &&
               xl->remote_transport == remote_transport;
    xl->transport_set = true;
    xl->remote_transport = remote_transport;
    xl->remote_host = *remote;
    xl->same_host = llk_host_id_same_host(&e->host, remote);
    xl->rdma_forced =
        e->opts.transport == LLK_TRANSPORT_RDMA || remote_transport == LLK_TRANSPORT_RDMA;
    bool no_shm = e->opts.transport == LLK_TRANSPORT_TCP || remote_transport == LLK_TRANSPORT_TCP ||
                  xl->rdma_forced;
    xl->use_shm = xl->same_host && !no_shm;
    xl->shm_forced = e->opts.transport == LLK_TRANSPORT_SHM;
    return true;
}

/* Why this side cannot run transfers with a peer of that transport, or NULL
 * (text in buf, or a static string). */
static const char *transport_conflict(llmlink_t *e, llk_xlink_t *xl, const llk_host_id_t *remote,
                                      uint8_t remote_transport, char *buf, size_t cap)
{
    bool mine = e->opts.transport == LLK_TRANSPORT_RDMA;
    bool theirs = remote_transport == LLK_TRANSPORT_RDMA;
    if (mine || theirs) {
        uint8_t other = mine ? remote_transport : (uint8_t)e->opts.transport;
        if (other == LLK_TRANSPORT_TCP || other == LLK_TRANSPORT_SHM)
            return other == LLK_TRANSPORT_TCP ? "one side forces llmlink.Transport=rdma, the other tcp"
                                              : "one side forces llmlink.Transport=rdma, the other shm";
        pthread_mutex_lock(&xl->mu);
        bool peer = xl->rdma_peer;
        pthread_mutex_unlock(&xl->mu);
        if (!e->rdma) {
            snprintf(buf, cap, "%s, but RDMA cannot be used on cluster %llu: %s",
                     mine ? "llmlink.Transport=rdma" : "the peer forces llmlink.Transport=rdma",
                     (unsigned long long)e->cluster_id, e->rdma_why);
            return buf;
        }
        if (!peer) {
            snprintf(buf, cap, "%s, but cluster %llu has no usable RDMA device (or does not "
                     "offer RDMA)", mine ? "llmlink.Transport=rdma" : "the peer forces "
                     "llmlink.Transport=rdma", (unsigned long long)xl->remote_id);
            return buf;
        }
        return NULL;
    }
    bool same = llk_host_id_same_host(&e->host, remote);
    if ((e->opts.transport == LLK_TRANSPORT_SHM || remote_transport == LLK_TRANSPORT_SHM) && !same)
        return "llmlink.Transport=shm, but the two engines are not on the same host";
    if ((e->opts.transport == LLK_TRANSPORT_SHM && remote_transport == LLK_TRANSPORT_TCP) ||
        (e->opts.transport == LLK_TRANSPORT_TCP && remote_transport == LLK_TRANSPORT_SHM))
        return "one side forces llmlink.Transport=shm, the other tcp";
    return NULL;
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

/* Sends all of buf on a non-blocking socket before the deadline. */
static int send_all(llk_xlink_t *xl, int fd, const uint8_t *buf, size_t len, int64_t deadline_ms)
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

static int recv_all(llk_xlink_t *xl, int fd, uint8_t *buf, size_t len, int64_t deadline_ms)
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
    if (recv_all(xl, fd, buf, LLK_WIRE_HEADER_SIZE, deadline_ms) != 0) {
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
    if (recv_all(xl, fd, payload, h.length, deadline_ms) != 0) {
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
        return LLMLINK_LINK_FAILED;
    }
    if (llk_wire_decode_attach_ok(payload, h.length, ok, &why) != 0) {
        snprintf(detail, dlen, "bad ATTACH_OK: %s", why);
        return LLMLINK_PROTOCOL_ERROR;
    }
    return LLMLINK_SUCCESS;
}

/*
 * The RDMA rails of a new link, over forward stream fd (client side, the
 * stream not handed out yet): this side's QPs go in XRDMA_SETUP, the
 * owner thread of the server makes its own, moves them to RTS and answers
 * with them, then this side moves its QPs to RTS. A failure is the link's
 * only where a side forces llmlink.Transport=rdma; otherwise the link
 * moves data over tcp/shm (SUCCESS).
 */
static llmlink_status_t rdma_setup_client(llmlink_t *e, llk_xlink_t *xl, int fd,
                                          int64_t deadline_ms, char *detail, size_t dlen)
{
    char why[300] = "";
    llmlink_status_t st = LLMLINK_LINK_FAILED;
    llk_rdma_link_t *l = NULL;
    uint8_t *buf = NULL;
    pthread_mutex_lock(&xl->mu);
    uint16_t n = xl->nrail_addrs;
    struct sockaddr_storage local[LLK_XWIRE_MAX_RAILS], target[LLK_XWIRE_MAX_RAILS];
    memcpy(local, xl->rail_local, sizeof local);
    memcpy(target, xl->rail_target, sizeof target);
    bool forced = xl->rdma_forced;
    pthread_mutex_unlock(&xl->mu);
    if (n == 0) {
        snprintf(why, sizeof why, "no local address for a rail");
        goto out;
    }
    l = llk_rdma_link_create(e->rdma, local, n, e->opts.sync_kv_wait_ms, why, sizeof why);
    if (!l)
        goto out;
    llk_xrail_wire_t rails[LLK_XWIRE_MAX_RAILS];
    llk_rdma_link_local(l, rails);
    for (uint16_t i = 0; i < n; i++) {
        uint8_t gid[16];
        if (llk_rdma_ip_gid((const struct sockaddr *)&target[i], gid))
            memcpy(rails[i].target_ip, gid, 16);
    }
    uint8_t f[LLK_XWIRE_HEADER_SIZE + 2 + LLK_XWIRE_MAX_RAILS * LLK_XWIRE_RAIL_REQ_SIZE];
    uint64_t req_id = xl->req_next_id[0]++;
    size_t len = llk_xwire_encode_rdma_setup(f, sizeof f, req_id, rails, n);
    if (!len || send_all(xl, fd, f, len, deadline_ms) != 0) {
        snprintf(why, sizeof why, "sending XRDMA_SETUP: %s", strerror(errno));
        goto out;
    }
    uint8_t hb[LLK_XWIRE_HEADER_SIZE];
    llk_xframe_header_t h;
    const char *dwhy = NULL;
    if (recv_all(xl, fd, hb, sizeof hb, deadline_ms) != 0) {
        snprintf(why, sizeof why, "no answer to XRDMA_SETUP: %s", strerror(errno));
        st = errno == ETIMEDOUT ? LLMLINK_TIMEOUT : LLMLINK_LINK_FAILED;
        goto out;
    }
    if (llk_xwire_read_header(hb, &h, &dwhy) != 0 || h.type != LLK_XMSG_RDMA_SETUP_OK ||
        h.req_id != req_id) {
        snprintf(why, sizeof why, "bad answer to XRDMA_SETUP (%s)", dwhy ? dwhy : "type");
        st = LLMLINK_PROTOCOL_ERROR;
        goto out;
    }
    buf = malloc(h.length ? h.length : 1);
    llk_xrdma_setup_ok_t ok;
    if (!buf || recv_all(xl, fd, buf, h.length, deadline_ms) != 0 ||
        llk_xwire_decode_rdma_setup_ok(buf, h.length, &ok, &dwhy) != 0) {
        snprintf(why, sizeof why, "bad XRDMA_SETUP_OK: %s", buf ? (dwhy ? dwhy : strerror(errno))
                                                                : "out of memory");
        st = LLMLINK_PROTOCOL_ERROR;
        goto out;
    }
    if (ok.status != LLMLINK_SUCCESS) {
        snprintf(why, sizeof why, "cluster %llu refused the rails: %s",
                 (unsigned long long)xl->remote_id, ok.msg);
        /* LINK_FAILED: the server forces rdma itself */
        forced = forced || ok.status == LLMLINK_LINK_FAILED;
        goto out;
    }
    /* The server's rails are up: from here a failure leaves the two ends
     * disagreeing, so it is the link's in any case. */
    forced = true;
    if (llk_rdma_link_connect(l, ok.rail, ok.nrails, why, sizeof why) != 0)
        goto out;
    char desc[256];
    llk_rdma_link_describe(l, desc, sizeof desc);
    LLK_INFO("cluster %llu: link with cluster %llu moves data over RDMA (%u rail%s: %s)",
             (unsigned long long)e->cluster_id, (unsigned long long)xl->remote_id, n,
             n == 1 ? "" : "s", desc);
    pthread_mutex_lock(&xl->mu);
    xl->rdma = l;
    xl->use_rdma = true;
    if (xl->broken) /* broke while the rails came up: llk_xlink_break saw none */
        llk_rdma_link_abort(l);
    pthread_mutex_unlock(&xl->mu);
    free(buf);
    return LLMLINK_SUCCESS;
out:
    free(buf);
    llk_rdma_link_free(l);
    if (forced) {
        snprintf(detail, dlen, "%sthe RDMA rails to cluster %llu could not be set up: %s",
                 xl->rdma_forced ? "llmlink.Transport=rdma: " : "",
                 (unsigned long long)xl->remote_id, why);
        return st == LLMLINK_SUCCESS ? LLMLINK_LINK_FAILED : st;
    }
    /* A stream that broke the protocol is of no use for tcp either. */
    if (st == LLMLINK_PROTOCOL_ERROR || st == LLMLINK_TIMEOUT) {
        snprintf(detail, dlen, "RDMA setup with cluster %llu: %s",
                 (unsigned long long)xl->remote_id, why);
        return st;
    }
    LLK_INFO("cluster %llu: no RDMA with cluster %llu (%s): tcp/shm",
             (unsigned long long)e->cluster_id, (unsigned long long)xl->remote_id, why);
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
        uint8_t f[LLK_WIRE_HEADER_SIZE + 80];
        m.stream_index = ps[i].slot;
        m.direction = ps[i].dir;
        size_t len = llk_wire_encode_attach(f, sizeof f, LLK_WIRE_VERSION, &m);
        if (!len || send_all(xl, ps[i].fd, f, len, deadline_ms) != 0) {
            snprintf(detail, dlen, "ATTACH to %s: %s", addr, strerror(errno));
            st = errno == ETIMEDOUT ? LLMLINK_TIMEOUT : LLMLINK_LINK_FAILED;
        }
    }
    uint32_t installed = 0;
    for (; installed < opened && st == LLMLINK_SUCCESS; installed++) {
        llk_msg_attach_ok_t ok;
        st = read_attach_answer(xl, ps[installed].fd, deadline_ms, &ok, detail, dlen);
        if (st != LLMLINK_SUCCESS)
            break;
        if (installed == 0) {
            llk_host_id_t rh = {.pidns = ok.pidns, .pid = ok.pid};
            memcpy(rh.boot_id, ok.boot_id, sizeof rh.boot_id);
            char cbuf[512];
            const char *conflict = transport_conflict(e, xl, &rh, ok.transport, cbuf, sizeof cbuf);
            if (conflict) {
                snprintf(detail, dlen, "%s", conflict);
                st = LLMLINK_LINK_FAILED;
                break;
            }
            pthread_mutex_lock(&xl->mu);
            record_transport(e, xl, &rh, ok.transport);
            bool rdma = xl->rdma_peer;
            pthread_mutex_unlock(&xl->mu);
            /* Before the stream is handed out: nothing else reads it. */
            if (rdma) {
                st = rdma_setup_client(e, xl, ps[0].fd, deadline_ms, detail, dlen);
                if (st != LLMLINK_SUCCESS)
                    break;
            }
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
                  xl->use_shm ? "shm" : "tcp");
    return st;
}

/* ---- server side: an ATTACH on a fresh connection ----------------------------- */

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
    if (m.stream_index >= LLK_MAX_STREAMS) {
        snprintf(msg, sizeof msg, "stream index %u out of range", m.stream_index);
        llk_link_stream_refuse_locked(e, c, LLMLINK_PARAM_INVALID, false, msg);
        return false;
    }
    llk_host_id_t rh = {.pidns = m.pidns, .pid = m.pid};
    memcpy(rh.boot_id, m.boot_id, sizeof rh.boot_id);
    char cbuf[512];
    const char *conflict = transport_conflict(e, xl, &rh, m.transport, cbuf, sizeof cbuf);
    if (conflict) {
        llk_link_stream_refuse_locked(e, c, LLMLINK_LINK_FAILED, false, conflict);
        return false;
    }
    pthread_mutex_lock(&xl->mu);
    bool agrees = record_transport(e, xl, &rh, m.transport);
    pthread_mutex_unlock(&xl->mu);
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

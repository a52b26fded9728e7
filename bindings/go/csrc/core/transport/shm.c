/*
 * transport/shm.c - the same-host transport: the owner answers a request
 * with the addresses of its segments (an XRESP with iovecs), the requester
 * copies with process_vm_readv/writev, one call per batch of runs, then
 * says how it went (XDONE).
 *
 * Only between two engines of one host (boot id and pid namespace) whose
 * pid is proven to hold the other end of the data stream (peer_proof.c),
 * and only when neither side forces another transport. The kernel may
 * still say EPERM (ptrace scope, another user): the link then moves to tcp
 * for good, unless this side forces shm (llmlink.Transport=shm), and then
 * the call fails.
 *
 * Holds. Once the owner has sent a grant, the requester's process may
 * write into (or read) the granted memory on its own until it says XDONE;
 * no socket shutdown can stop a process_vm_writev already running. So the
 * owner keeps its hold on the cache until that XDONE or until the process
 * is gone, watched through a pidfd opened when the peer's pid is proven
 * (once per link, before the proof, so that a reused pid cannot stand in
 * for it): a stream that ends with a grant outstanding leaves a "lingering
 * hold" on the owner thread (owner.c), and unregister_cache answers
 * CACHE_IN_USE meanwhile. Without pidfd_open (Linux < 5.3, or no
 * descriptor left) this side never grants shm: it could not tell when the
 * hold may end, so the requester goes to tcp.
 *
 * The requester copies in batches of at most LLK_SHM_BATCH_BYTES and looks
 * at its deadline between them, and after it stops (done, failed, timed
 * out) always sends XDONE when the stream is still usable: that is its
 * word that it no longer touches the owner's memory.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <fcntl.h>

#include "base/clock.h"
#include "base/log.h"
#include "link/engine.h"
#include "transport/shm.h"
#include "transport/transport.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 /* the same number on every architecture */
#endif

/* Planned slices of 1 GiB; the copy itself goes in batches (shm.h). */
#define SHM_SLICE_BYTES (1ull << 30)
/* How long the requester waits for room to send its XDONE after a
 * timeout (the frame is 20 bytes on an idle stream: room is there). */
#define DONE_SEND_MS 100

/* Per link, under xl->mu. */
typedef struct shm_link {
    bool use;     /* same host and neither side forces another transport */
    bool forced;  /* this side set llmlink.Transport=shm: no fallback */
    bool refused; /* the kernel or the owner said no once: tcp from now on */
    int8_t proof; /* 0 not tried yet, 1 the peer's pid is proven, -1 not */
    int pidfd;    /* the proven peer process (pidfd_open), -1 when none */
} shm_link_t;

static shm_link_t *state(llk_xlink_t *xl)
{
    return xl->xport.state[LLK_XPORT_SHM];
}

static void *shm_link_new(void)
{
    shm_link_t *s = calloc(1, sizeof(shm_link_t));
    if (s)
        s->pidfd = -1;
    return s;
}

static void shm_link_free(void *p)
{
    shm_link_t *s = p;
    if (s && s->pidfd >= 0)
        close(s->pidfd);
    free(s);
}

static void shm_link_record(llmlink_t *e, llk_xlink_t *xl)
{
    shm_link_t *s = state(xl);
    bool same = llk_host_id_same_host(&e->host, &xl->xport.remote_host);
    s->use = same && llk_transport_allowed(e, xl, &llk_transport_shm);
    s->forced = e->opts.transport == LLK_TRANSPORT_SHM;
}

static const char *shm_link_conflict(llmlink_t *e, llk_xlink_t *xl, const llk_host_id_t *remote,
                                     uint8_t remote_transport, char *buf, size_t cap)
{
    (void)xl;
    (void)buf;
    (void)cap;
    bool same = llk_host_id_same_host(&e->host, remote);
    if ((e->opts.transport == LLK_TRANSPORT_SHM || remote_transport == LLK_TRANSPORT_SHM) && !same)
        return "llmlink.Transport=shm, but the two engines are not on the same host";
    if ((e->opts.transport == LLK_TRANSPORT_SHM && remote_transport == LLK_TRANSPORT_TCP) ||
        (e->opts.transport == LLK_TRANSPORT_TCP && remote_transport == LLK_TRANSPORT_SHM))
        return "one side forces llmlink.Transport=shm, the other tcp";
    return NULL;
}

/* A pidfd of pid (close-on-exec), or -1 with errno (ENOSYS before 5.3). */
static int pidfd_of(uint32_t pid)
{
    long fd = syscall(SYS_pidfd_open, (pid_t)pid, 0);
    if (fd < 0)
        return -1;
    /* pidfd_open sets O_CLOEXEC itself. */
    return (int)fd;
}

/* The process behind pidfd has exited (its pidfd is readable). */
static bool pidfd_exited(int pidfd)
{
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    return poll(&p, 1, 0) != 0;
}

/* Proves pid and, when proven, opens its pidfd first: if the process the
 * pidfd names is still alive after the proof, it is the one that held the
 * socket during the proof (a pid is not reused while its process lives).
 * *pidfd: -1 when pidfd_open is unavailable (then errno is in *err). */
static bool prove(int fd, uint32_t pid, int *pidfd, int *err)
{
    *pidfd = pid ? pidfd_of(pid) : -1;
    *err = *pidfd < 0 ? errno : 0;
    bool ok = llk_peer_proof(fd, pid);
    if (ok && *pidfd >= 0 && pidfd_exited(*pidfd))
        ok = false;
    if (!ok && *pidfd >= 0) {
        close(*pidfd);
        *pidfd = -1;
    }
    return ok;
}

/* The peer's pid holds the other end of stream fd: tried once per link and
 * remembered, with the pidfd that watches it. */
static bool peer_proven(llk_xlink_t *xl, int fd)
{
    shm_link_t *s = state(xl);
    pthread_mutex_lock(&xl->mu);
    int8_t proof = s->proof;
    uint32_t pid = xl->xport.remote_host.pid;
    pthread_mutex_unlock(&xl->mu);
    if (proof != 0)
        return proof > 0;
    /* Outside the lock: it reads /proc (a few ms on a busy host). Two
     * threads may both try once; they reach the same answer. */
    int pidfd, err;
    proof = prove(fd, pid, &pidfd, &err) ? 1 : -1;
    if (proof < 0)
        LLK_INFO("link with cluster %llu (%s): pid %u is not proven to hold the other end of "
                 "its data stream; no shm on this link", (unsigned long long)xl->remote_id,
                 xl->peer, pid);
    else if (pidfd < 0)
        LLK_INFO("link with cluster %llu (%s): pidfd_open of pid %u: %s; this side grants no "
                 "shm on this link (it could not tell when the peer stops copying)",
                 (unsigned long long)xl->remote_id, xl->peer, pid, strerror(err));
    pthread_mutex_lock(&xl->mu);
    s->proof = proof;
    if (s->pidfd < 0) {
        s->pidfd = pidfd;
        pidfd = -1;
    }
    pthread_mutex_unlock(&xl->mu);
    if (pidfd >= 0) /* the other thread's came first */
        close(pidfd);
    return proof > 0;
}

static bool shm_link_usable(llk_xlink_t *xl)
{
    shm_link_t *s = state(xl);
    pthread_mutex_lock(&xl->mu);
    bool use = s->use && !s->refused;
    pthread_mutex_unlock(&xl->mu);
    return use;
}

/* shm cannot be used with this peer (why): without llmlink.Transport=shm
 * the link moves to tcp for good (true: go on over tcp); with it the
 * transfer is refused (false, out->refusal). */
static bool refuse_or_fail(llk_xfer_ctx_t *ctx, const char *why, llk_xmove_out_t *out)
{
    llk_xlink_t *xl = ctx->xl;
    shm_link_t *s = state(xl);
    if (s->forced) { /* set before any stream is handed out */
        out->refusal = LLMLINK_FEATURE_NOT_ENABLED;
        snprintf(out->msg, sizeof out->msg, "%s: llmlink.Transport=shm, but "
                 "process_vm_readv/writev with pid %u of cluster %llu cannot be used: %s",
                 ctx->fn, xl->xport.remote_host.pid, (unsigned long long)xl->remote_id, why);
        return false;
    }
    pthread_mutex_lock(&xl->mu);
    bool first = !s->refused;
    s->refused = true;
    pthread_mutex_unlock(&xl->mu);
    if (first) {
        LLK_INFO("%s: no shm with cluster %llu: %s; tcp from now on", ctx->fn,
                 (unsigned long long)xl->remote_id, why);
        ctx->fallbacks[LLK_XPORT_SHM]++;
    }
    return true;
}

static llk_xuse_t shm_request_usable(llk_xfer_ctx_t *ctx, int fd, llk_xmove_out_t *out)
{
    if (!shm_link_usable(ctx->xl))
        return LLK_XUSE_NO;
    if (peer_proven(ctx->xl, fd))
        return LLK_XUSE_YES;
    return refuse_or_fail(ctx, "its pid could not be proven to hold the other end of the data "
                          "stream (another host, or no permission to see its descriptors)", out)
               ? LLK_XUSE_NO
               : LLK_XUSE_STOP;
}

static void shm_refused(llk_xfer_ctx_t *ctx, const char *msg, llk_xmove_out_t *out)
{
    /* The owner does not allow shm on this link: tcp, unless forced. */
    if (refuse_or_fail(ctx, msg, out))
        out->redo_on_stream = true;
}

size_t llk_shm_next_batch(const llk_shm_run_t *runs, size_t nruns, llk_shm_cursor_t *cur,
                          struct iovec *liov, struct iovec *riov, uint64_t *bytes)
{
    size_t n = 0;
    uint64_t want = 0;
    while (cur->run < nruns && n < LLK_SHM_BATCH_IOV && want < LLK_SHM_BATCH_BYTES) {
        const llk_shm_run_t *r = &runs[cur->run];
        uint64_t len = r->len - cur->off;
        if (len > LLK_SHM_BATCH_BYTES - want)
            len = LLK_SHM_BATCH_BYTES - want;
        if (len > 0) {
            liov[n].iov_base = (uint8_t *)r->local + cur->off;
            liov[n].iov_len = (size_t)len;
            riov[n].iov_base = (void *)(uintptr_t)(r->remote + cur->off);
            riov[n].iov_len = (size_t)len;
            n++;
            want += len;
            cur->off += len;
        }
        if (cur->off == r->len) {
            cur->run++;
            cur->off = 0;
        }
    }
    *bytes = want;
    return n;
}

/* The granted runs: local pointer, owner address, length. NULL out of memory. */
static llk_shm_run_t *runs_of(const llk_xmove_t *m)
{
    llk_shm_run_t *runs = malloc((m->nseg ? m->nseg : 1) * sizeof *runs);
    if (!runs)
        return NULL;
    for (size_t i = 0; i < m->nseg; i++) {
        uint64_t addr, len;
        llk_xwire_iov_at(m->resp->iovs, (uint32_t)i, &addr, &len);
        runs[i] = (llk_shm_run_t){.local = m->segs[i].lptr, .remote = addr, .len = len};
    }
    return runs;
}

/* The kernel moves the segments between this process and the owner's, with
 * the owner's addresses from its answer, a bounded batch at a time, the
 * call's deadline checked before each. Returns 0, or an errno (ETIMEDOUT
 * past the call's deadline). */
static int copy(const llk_xmove_t *m, pid_t pid)
{
    struct iovec liov[LLK_SHM_BATCH_IOV], riov[LLK_SHM_BATCH_IOV];
    llk_shm_run_t *runs = runs_of(m);
    if (!runs)
        return ENOMEM;
    llk_shm_cursor_t cur = {0, 0};
    int err = 0;
    for (;;) {
        uint64_t want;
        size_t n = llk_shm_next_batch(runs, m->nseg, &cur, liov, riov, &want);
        if (n == 0)
            break;
        if (llk_now_ms() >= m->ctx->deadline_ms) {
            err = ETIMEDOUT;
            break;
        }
        /* A task's cancel stops the copy between batches (xfer/cancel.h). */
        if (llk_cancel_requested(m->ctx->cancel)) {
            err = ECANCELED;
            break;
        }
        ssize_t got = m->op == LLK_XOP_SHM_READ
                          ? process_vm_readv(pid, liov, (unsigned long)n, riov, (unsigned long)n, 0)
                          : process_vm_writev(pid, liov, (unsigned long)n, riov, (unsigned long)n, 0);
        if (got < 0) {
            err = errno;
            break;
        }
        if ((uint64_t)got != want) {
            err = EFAULT; /* a partial copy: part of a region is not mapped */
            break;
        }
    }
    free(runs);
    return err;
}

/* The XDONE after a timed-out copy, sent here because the call fails (and
 * gives up its stream) right after: the owner may drop its hold now rather
 * than when this process exits. Best effort: a stream that cannot take 20
 * bytes at once is broken, and the owner's hold then waits for the pidfd. */
static void send_done_now(const llk_xmove_t *m, uint32_t status)
{
    uint8_t f[LLK_XWIRE_HEADER_SIZE + 12];
    size_t n = llk_xwire_encode_done(f, sizeof f, m->h->req_id, status);
    size_t off = 0;
    int64_t until = llk_now_ms() + DONE_SEND_MS;
    while (n > 0 && off < n) {
        ssize_t w = send(m->fd, f + off, n - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        int64_t left = until - llk_now_ms();
        if (w == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) || left <= 0)
            return;
        struct pollfd p = {.fd = m->fd, .events = POLLOUT};
        poll(&p, 1, (int)left);
    }
}

/* An answer with iovecs: check them against the request, then copy. */
static void shm_move(llk_xmove_t *m, llk_xmove_out_t *out)
{
    const llk_xresp_t *r = m->resp;
    /* A grant this side will not use still ends with XDONE (nothing was
     * touched), so that the owner drops its hold now. */
    if (r->niov != m->nseg || r->total_bytes != m->bytes) {
        send_done_now(m, LLMLINK_PROTOCOL_ERROR);
        out->failure = LLMLINK_PROTOCOL_ERROR;
        snprintf(out->msg, sizeof out->msg, "shm answer with %u regions for %zu segments",
                 r->niov, m->nseg);
        return;
    }
    for (uint32_t i = 0; i < r->niov; i++) {
        uint64_t addr, len;
        llk_xwire_iov_at(r->iovs, i, &addr, &len);
        if (len != m->segs[i].len) {
            send_done_now(m, LLMLINK_PROTOCOL_ERROR);
            out->failure = LLMLINK_PROTOCOL_ERROR;
            snprintf(out->msg, sizeof out->msg, "shm region %u has %llu bytes, asked %llu", i,
                     (unsigned long long)len, (unsigned long long)m->segs[i].len);
            return;
        }
    }
    llk_xlink_t *xl = m->ctx->xl;
    uint32_t pid = xl->xport.remote_host.pid;
    int err = copy(m, (pid_t)pid);
    if (err == 0) {
        out->send_done = true;
        out->done_status = LLMLINK_SUCCESS;
        return;
    }
    if (err == ECANCELED) {
        /* No further batch: the fence holds now. XDONE(CANCELLED) ends the
         * owner's hold; the stream stays usable. */
        llk_cancel_fenced_as(m->ctx->cancel, LLMLINK_CANCELLED);
        out->send_done = true;
        out->done_status = LLMLINK_CANCELLED;
        out->refusal = LLMLINK_CANCELLED;
        snprintf(out->msg, sizeof out->msg, "%s: cancelled: shm copy on data stream %d stopped "
                 "between batches (cluster %llu); the link stays usable", m->ctx->fn, m->slot,
                 (unsigned long long)xl->remote_id);
        return;
    }
    if (err == ETIMEDOUT) {
        send_done_now(m, LLMLINK_WAIT_PROCESS_TIMEOUT);
        out->failure = LLMLINK_WAIT_PROCESS_TIMEOUT;
        snprintf(out->msg, sizeof out->msg, "shm copy not done within llm.SyncKvCacheWaitTime");
        return;
    }
    const char *call = m->op == LLK_XOP_SHM_READ ? "process_vm_readv" : "process_vm_writev";
    out->send_done = true;
    if ((err == EPERM || err == ENOSYS) && !state(xl)->forced) {
        char why[128];
        snprintf(why, sizeof why, "%s of pid %u: %s", call, pid, strerror(err));
        refuse_or_fail(m->ctx, why, out);
        out->done_status = LLMLINK_FEATURE_NOT_ENABLED;
        out->redo_on_stream = true;
        return;
    }
    out->done_status = LLMLINK_FAILED;
    out->refusal = err == EPERM || err == ENOSYS ? LLMLINK_FEATURE_NOT_ENABLED : LLMLINK_FAILED;
    snprintf(out->msg, sizeof out->msg, "%s: %s of pid %u (cluster %llu): %s%s", m->ctx->fn, call,
             pid, (unsigned long long)xl->remote_id, strerror(err),
             err == EPERM ? " (llmlink.Transport=shm forbids the tcp fallback)" : "");
}

/* An SHM request gets this side's addresses: only for a peer of this host
 * whose pid is proven to hold the stream's other end (peer_proof.c), on a
 * link that chose shm. FEATURE_NOT_ENABLED sends the requester to tcp. */
static llmlink_status_t shm_serve_allowed(llk_xlink_t *xl, int fd, char *msg, size_t cap)
{
    pthread_mutex_lock(&xl->mu);
    bool use = state(xl)->use;
    pthread_mutex_unlock(&xl->mu);
    bool proven = use && peer_proven(xl, fd);
    pthread_mutex_lock(&xl->mu);
    bool watched = state(xl)->pidfd >= 0;
    pthread_mutex_unlock(&xl->mu);
    if (proven && watched)
        return LLMLINK_SUCCESS;
    snprintf(msg, cap, "%s",
             !use ? "shm is not in use on this link (llmlink.Transport, or another host)"
             : !proven ? "shm refused: the requester's pid is not proven to hold the other end "
                         "of this data stream"
                       : "shm refused: the owner cannot watch the requester's process "
                         "(pidfd_open failed), so it could not tell when a grant ends");
    return LLMLINK_FEATURE_NOT_ENABLED;
}

/* A descriptor (a dup of the link's pidfd) that becomes readable when the
 * requester's process is gone, or -1 with errno. */
static int shm_hold_watch(llk_xlink_t *xl)
{
    pthread_mutex_lock(&xl->mu);
    int fd = state(xl)->pidfd >= 0 ? fcntl(state(xl)->pidfd, F_DUPFD_CLOEXEC, 0) : -1;
    if (state(xl)->pidfd < 0)
        errno = ENOENT;
    pthread_mutex_unlock(&xl->mu);
    return fd;
}

/* The answer: the checked segments' addresses; the peer copies, then XDONE. */
static int shm_serve_grant(llk_xserve_t *q)
{
    size_t need = llk_xwire_resp_size(0, q->nseg);
    if (*q->tx_cap < need || !*q->tx) {
        uint8_t *p = realloc(*q->tx, need);
        if (!p) {
            snprintf(q->why, sizeof q->why, "out of memory for a %zu-byte answer", need);
            return -1;
        }
        *q->tx = p;
        *q->tx_cap = need;
    }
    q->tx_len = llk_xwire_encode_resp(*q->tx, *q->tx_cap, q->req_id, LLMLINK_SUCCESS, q->total,
                                      "", q->segv, q->nseg);
    if (q->tx_len == 0) {
        snprintf(q->why, sizeof q->why, "cannot encode a %zu-byte answer", need);
        return -1;
    }
    /* From now on the peer may move these bytes on its own: count the
     * whole extent (xfer.h). */
    if (q->op == LLK_XOP_SHM_WRITE)
        atomic_fetch_add(&q->xl->peer_write_bytes, q->total);
    else
        atomic_fetch_add(&q->xl->peer_read_bytes, q->total);
    return 0;
}

static void shm_add_stats(llk_xstats_t *x, uint64_t requests, uint64_t fallbacks)
{
    atomic_fetch_add(&x->shm_requests, requests);
    atomic_fetch_add(&x->shm_fallbacks, fallbacks);
}

const llk_transport_ops_t llk_transport_shm = {
    .name = "shm",
    .title = "shm",
    .index = LLK_XPORT_SHM,
    .id = LLK_TRANSPORT_SHM,
    .op_read = LLK_XOP_SHM_READ,
    .op_write = LLK_XOP_SHM_WRITE,
    .answer_type = LLK_XMSG_RESP,
    /* shm copies in the requester's thread, one batch after another:
     * one stream carries the requests. */
    .slice_bytes = SHM_SLICE_BYTES,
    .one_stream = true,
    .link_new = shm_link_new,
    .link_free = shm_link_free,
    .link_record = shm_link_record,
    .link_conflict = shm_link_conflict,
    /* No fence: the copy runs on the requester's thread (transport.h). */
    .link_usable = shm_link_usable,
    .request_usable = shm_request_usable,
    .refused = shm_refused,
    .move = shm_move,
    .serve_allowed = shm_serve_allowed,
    .serve_grant = shm_serve_grant,
    /* A grant holds the cache until XDONE or the requester's exit. */
    .hold_watch = shm_hold_watch,
    .add_stats = shm_add_stats,
};

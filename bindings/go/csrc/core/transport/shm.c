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
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "base/clock.h"
#include "base/log.h"
#include "link/engine.h"
#include "transport/transport.h"

/* process_vm_* take at most IOV_MAX iovecs and move at most ~2 GiB a call:
 * batches of VM_BATCH runs and VM_BATCH_BYTES, slices of 1 GiB. */
#define VM_BATCH 1024
#define VM_BATCH_BYTES (1ull << 30)
#define SHM_SLICE_BYTES (1ull << 30)

/* Per link, under xl->mu. */
typedef struct shm_link {
    bool use;     /* same host and neither side forces another transport */
    bool forced;  /* this side set llmlink.Transport=shm: no fallback */
    bool refused; /* the kernel or the owner said no once: tcp from now on */
    int8_t proof; /* 0 not tried yet, 1 the peer's pid is proven, -1 not */
} shm_link_t;

static shm_link_t *state(llk_xlink_t *xl)
{
    return xl->xport.state[LLK_XPORT_SHM];
}

static void *shm_link_new(void)
{
    return calloc(1, sizeof(shm_link_t));
}

static void shm_link_free(void *s)
{
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

/* The peer's pid holds the other end of stream fd: tried once per link and
 * remembered. */
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
    proof = llk_peer_proof(fd, pid) ? 1 : -1;
    if (proof < 0)
        LLK_INFO("link with cluster %llu (%s): pid %u is not proven to hold the other end of "
                 "its data stream; no shm on this link", (unsigned long long)xl->remote_id,
                 xl->peer, pid);
    pthread_mutex_lock(&xl->mu);
    s->proof = proof;
    pthread_mutex_unlock(&xl->mu);
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

/* The kernel moves the segments between this process and the owner's, with
 * the owner's addresses from its answer. Returns 0, or an errno
 * (ETIMEDOUT past the call's deadline). */
static int copy(const llk_xmove_t *m, pid_t pid)
{
    struct iovec liov[VM_BATCH], riov[VM_BATCH];
    size_t done = 0;
    while (done < m->nseg) {
        if (llk_now_ms() >= m->ctx->deadline_ms)
            return ETIMEDOUT;
        int n = 0;
        uint64_t want = 0;
        for (size_t i = done; i < m->nseg && n < VM_BATCH; i++, n++) {
            uint64_t addr, len;
            llk_xwire_iov_at(m->resp->iovs, (uint32_t)i, &addr, &len);
            if (n > 0 && want + len > VM_BATCH_BYTES)
                break;
            liov[n].iov_base = m->segs[i].lptr;
            liov[n].iov_len = (size_t)m->segs[i].len;
            riov[n].iov_base = (void *)(uintptr_t)addr;
            riov[n].iov_len = (size_t)len;
            want += len;
        }
        ssize_t got = m->op == LLK_XOP_SHM_READ
                          ? process_vm_readv(pid, liov, (unsigned long)n, riov, (unsigned long)n, 0)
                          : process_vm_writev(pid, liov, (unsigned long)n, riov, (unsigned long)n, 0);
        if (got < 0)
            return errno;
        if ((uint64_t)got != want)
            return EFAULT; /* a partial copy: part of a region is not mapped */
        done += (size_t)n;
    }
    return 0;
}

/* An answer with iovecs: check them against the request, then copy. */
static void shm_move(llk_xmove_t *m, llk_xmove_out_t *out)
{
    const llk_xresp_t *r = m->resp;
    if (r->niov != m->nseg || r->total_bytes != m->bytes) {
        out->failure = LLMLINK_PROTOCOL_ERROR;
        snprintf(out->msg, sizeof out->msg, "shm answer with %u regions for %zu segments",
                 r->niov, m->nseg);
        return;
    }
    for (uint32_t i = 0; i < r->niov; i++) {
        uint64_t addr, len;
        llk_xwire_iov_at(r->iovs, i, &addr, &len);
        if (len != m->segs[i].len) {
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
    if (err == ETIMEDOUT) {
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
    if (use && peer_proven(xl, fd))
        return LLMLINK_SUCCESS;
    snprintf(msg, cap, "%s",
             use ? "shm refused: the requester's pid is not proven to hold the other end "
                   "of this data stream"
                 : "shm is not in use on this link (llmlink.Transport, or another host)");
    return LLMLINK_FEATURE_NOT_ENABLED;
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
    .add_stats = shm_add_stats,
};

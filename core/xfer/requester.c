/* xfer/requester.c - the requester side of one plan: every borrowed data
 * stream carries its share of the plan's segments, all streams at once from
 * this thread (poll), over tcp (the bytes travel on the stream, straight
 * from and into the registered memory), shm (process_vm_readv/writev with
 * the addresses the owner answers, one call per batch of runs) or RDMA
 * (READ / WRITE work requests over the link's rails with the addresses and
 * rkeys the owner grants, see rdma.h). */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "transport/rdma.h"
#include "transport/rdma_plan.h"
#include "xfer/xfer.h"

/* Segments per request frame (a 330 KB frame at most). */
#define CHUNK_SEGS 16384u
/* iovecs per sendmsg/recvmsg; process_vm_* take at most IOV_MAX. */
#define IOV_BATCH 64
#define VM_BATCH 1024
#define VM_BATCH_BYTES (1ull << 30)
/* Bytes moved on one stream before looking at the others. */
#define PASS_BYTES (8u << 20)
/* SO_RCVLOWAT while receiving bytes (see set_lowat). */
#define LOWAT_BYTES (256u << 10)

typedef enum {
    PH_SEND,      /* sending tx (a request or a DONE) */
    PH_RESP,      /* reading a RESP frame */
    PH_DATA_IN,   /* READ: receiving the bytes */
    PH_DATA_OUT,  /* WRITE: sending the bytes */
    PH_FINISHED
} phase_t;

typedef struct stream_run {
    int slot, fd;
    size_t seg_next, seg_end; /* this stream's share of the plan still to start */
    size_t c0, c1;            /* the request in flight covers segs[c0, c1) */
    uint8_t op;               /* its op */
    bool final_resp;          /* WRITE: the RESP now awaited is the final one */
    bool redo_tcp;            /* after the DONE in tx: redo the request over tcp */
    bool consume;             /* this stream sends the CONSUME request */
    phase_t ph, after_send;
    uint64_t req_id;
    uint8_t *tx;
    size_t tx_len, tx_off, tx_cap;
    uint8_t hdr[LLK_XWIRE_HEADER_SIZE];
    size_t hdr_got;
    llk_xframe_header_t h;
    uint8_t *rx;
    size_t rx_got, rx_cap;
    size_t cur;        /* data cursor: segment and offset within it */
    uint64_t cur_off;
    llk_xseg_wire_t *wsegs; /* CHUNK_SEGS scratch for encoding */
    int lowat;              /* SO_RCVLOWAT now set (0: the default, 1) */
} stream_run_t;

typedef struct run_state {
    llk_xfer_ctx_t *ctx;
    stream_run_t *s;
    int n;
    llmlink_status_t refusal;  /* first refusal from the owner */
    llmlink_status_t failure;  /* first stream failure: the link is lost */
    char msg[LLK_ERR_MSG_MAX];
} run_state_t;

static void fail(run_state_t *rs, stream_run_t *s, llmlink_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(run_state_t *rs, stream_run_t *s, llmlink_status_t st, const char *fmt, ...)
{
    if (rs->failure == LLMLINK_SUCCESS) {
        char what[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        rs->failure = st;
        /* A stream this side shut down (unlink, liveness, finalize) reads
         * as "peer closed": say what really ended it. */
        llk_xlink_t *xl = rs->ctx->xl;
        char cause[224] = "";
        pthread_mutex_lock(&xl->mu);
        if (xl->broken)
            snprintf(cause, sizeof cause, " (the link was closed: %s)", xl->why);
        pthread_mutex_unlock(&xl->mu);
        snprintf(rs->msg, sizeof rs->msg, "%s: data stream %d to cluster %llu (%s): %s%s",
                 rs->ctx->fn, s ? s->slot : -1, (unsigned long long)xl->remote_id, xl->peer,
                 what, cause);
    }
    if (s)
        s->ph = PH_FINISHED;
}

static void refuse(run_state_t *rs, stream_run_t *s, uint32_t status, const char *text)
{
    if (rs->refusal == LLMLINK_SUCCESS && rs->failure == LLMLINK_SUCCESS) {
        rs->refusal = status;
        snprintf(rs->msg, sizeof rs->msg, "%s: cluster %llu refused the request: %s", rs->ctx->fn,
                 (unsigned long long)rs->ctx->xl->remote_id, text);
    }
    s->ph = PH_FINISHED;
}

static bool shm_now(const llk_xfer_ctx_t *ctx)
{
    llk_xlink_t *xl = ctx->xl;
    pthread_mutex_lock(&xl->mu);
    bool use = xl->use_shm && !xl->shm_refused;
    pthread_mutex_unlock(&xl->mu);
    return use;
}

static bool rdma_now(const llk_xfer_ctx_t *ctx)
{
    llk_xlink_t *xl = ctx->xl;
    pthread_mutex_lock(&xl->mu);
    bool use = xl->use_rdma && xl->rdma && ctx->rdma && ctx->local_cache;
    pthread_mutex_unlock(&xl->mu);
    return use;
}

static bool is_rdma(uint8_t op)
{
    return op == LLK_XOP_RDMA_READ || op == LLK_XOP_RDMA_WRITE;
}

static bool grow(uint8_t **buf, size_t *cap, size_t need)
{
    if (*cap >= need)
        return true;
    uint8_t *p = realloc(*buf, need);
    if (!p)
        return false;
    *buf = p;
    *cap = need;
    return true;
}

/* Puts the request for segs[c0, c1) in tx. */
static bool build_request(run_state_t *rs, stream_run_t *s, uint8_t op)
{
    const llk_plan_t *p = rs->ctx->plan;
    llk_xreq_t r = rs->ctx->hdr;
    r.op = op;
    r.nseg = (uint32_t)(s->c1 - s->c0);
    for (size_t i = s->c0; i < s->c1; i++) {
        s->wsegs[i - s->c0].tensor = p->segs[i].rtensor;
        s->wsegs[i - s->c0].offset = p->segs[i].roff;
        s->wsegs[i - s->c0].length = p->segs[i].len;
    }
    size_t need = llk_xwire_req_size(r.nseg);
    if (!grow(&s->tx, &s->tx_cap, need)) {
        fail(rs, s, LLMLINK_OUT_OF_MEMORY, "out of memory for a request");
        return false;
    }
    s->req_id = rs->ctx->xl->req_next_id[s->slot]++;
    s->tx_len = llk_xwire_encode_req(s->tx, s->tx_cap, s->req_id, &r, s->wsegs);
    if (!s->tx_len) {
        fail(rs, s, LLMLINK_FAILED, "cannot encode a request of %u segments", r.nseg);
        return false;
    }
    s->op = op;
    s->tx_off = 0;
    s->final_resp = false;
    s->ph = PH_SEND;
    s->after_send = PH_RESP;
    s->hdr_got = s->rx_got = 0;
    /* CONSUME (no segment) moves no data: neither transport's request. */
    bool shm = op == LLK_XOP_SHM_READ || op == LLK_XOP_SHM_WRITE;
    if (r.nseg && shm)
        rs->ctx->shm_requests++;
    else if (r.nseg && is_rdma(op))
        rs->ctx->rdma_requests++;
    else if (r.nseg)
        rs->ctx->tcp_requests++;
    return true;
}

/* shm cannot be used with this peer (why): without llmlink.Transport=shm
 * the link moves to tcp for good (true: go on over tcp); with it the
 * transfer fails (false). */
static bool shm_refuse_or_fail(run_state_t *rs, stream_run_t *s, const char *why)
{
    llk_xlink_t *xl = rs->ctx->xl;
    if (xl->shm_forced) {
        if (rs->refusal == LLMLINK_SUCCESS && rs->failure == LLMLINK_SUCCESS) {
            rs->refusal = LLMLINK_FEATURE_NOT_ENABLED;
            snprintf(rs->msg, sizeof rs->msg, "%s: llmlink.Transport=shm, but "
                     "process_vm_readv/writev with pid %u of cluster %llu cannot be used: %s",
                     rs->ctx->fn, xl->remote_host.pid, (unsigned long long)xl->remote_id, why);
        }
        s->ph = PH_FINISHED;
        return false;
    }
    pthread_mutex_lock(&xl->mu);
    bool first = !xl->shm_refused;
    xl->shm_refused = true;
    pthread_mutex_unlock(&xl->mu);
    if (first) {
        LLK_INFO("%s: no shm with cluster %llu: %s; tcp from now on", rs->ctx->fn,
                 (unsigned long long)xl->remote_id, why);
        rs->ctx->shm_fallbacks++;
    }
    return true;
}

/* Starts this stream's next request, or finishes it. */
static void next_request(run_state_t *rs, stream_run_t *s)
{
    if (rs->refusal != LLMLINK_SUCCESS || rs->failure != LLMLINK_SUCCESS) {
        s->ph = PH_FINISHED;
        return;
    }
    if (s->consume) {
        /* The CONSUME request: no segment, drops the CacheKey. */
        s->consume = false;
        s->c0 = s->c1 = 0;
        llk_xfer_ctx_t *ctx = rs->ctx;
        uint16_t keep = ctx->hdr.flags;
        ctx->hdr.flags = LLK_XREQ_CONSUME;
        build_request(rs, s, LLK_XOP_READ);
        ctx->hdr.flags = keep;
        return;
    }
    if (s->seg_next >= s->seg_end) {
        s->ph = PH_FINISHED;
        return;
    }
    s->c0 = s->seg_next;
    s->c1 = s->c0 + CHUNK_SEGS < s->seg_end ? s->c0 + CHUNK_SEGS : s->seg_end;
    s->seg_next = s->c1;
    uint8_t op = rs->ctx->op_tcp;
    if (shm_now(rs->ctx)) {
        if (llk_xlink_peer_proven(rs->ctx->xl, s->fd))
            op = op == LLK_XOP_READ ? LLK_XOP_SHM_READ : LLK_XOP_SHM_WRITE;
        else if (!shm_refuse_or_fail(rs, s, "its pid could not be proven to hold the other end "
                                     "of the data stream (another host, or no permission to "
                                     "see its descriptors)"))
            return;
    }
    if (op == rs->ctx->op_tcp && rdma_now(rs->ctx))
        op = op == LLK_XOP_READ ? LLK_XOP_RDMA_READ : LLK_XOP_RDMA_WRITE;
    build_request(rs, s, op);
}

/* The request for segs[c0, c1) again, over tcp (after the kernel refused shm). */
static void redo_over_tcp(run_state_t *rs, stream_run_t *s)
{
    s->redo_tcp = false;
    build_request(rs, s, rs->ctx->op_tcp);
}

/* XDONE, or for an RDMA grant XDONE with the grant's generation. */
static void queue_done_frame(run_state_t *rs, stream_run_t *s, uint32_t status, bool rdma,
                             uint64_t gen)
{
    if (!grow(&s->tx, &s->tx_cap, LLK_XWIRE_HEADER_SIZE + 12)) {
        fail(rs, s, LLMLINK_OUT_OF_MEMORY, "out of memory");
        return;
    }
    s->tx_len = rdma ? llk_xwire_encode_done_gen(s->tx, s->tx_cap, s->req_id, status, gen)
                     : llk_xwire_encode_done(s->tx, s->tx_cap, s->req_id, status);
    s->tx_off = 0;
    s->ph = PH_SEND;
    s->after_send = PH_FINISHED; /* decided in on_sent */
}

static void queue_done(run_state_t *rs, stream_run_t *s, uint32_t status)
{
    queue_done_frame(rs, s, status, false, 0);
}

static uint64_t chunk_bytes(const llk_plan_t *p, const stream_run_t *s);

static bool link_aborted(void *arg)
{
    return llk_xlink_is_broken(arg);
}

/* The owner's grant (XRESP_RDMA) for segs[c0, c1): check it against the
 * request, post the work requests, wait, then XDONE with the grant's
 * generation. The grant is used for this request only and forgotten. */
static void on_rdma_grant(run_state_t *rs, stream_run_t *s)
{
    llk_xfer_ctx_t *ctx = rs->ctx;
    const llk_plan_t *p = ctx->plan;
    const char *why = NULL;
    llk_xgrant_t g;
    if (llk_xwire_decode_grant(s->rx, s->h.length, &g, &why) != 0) {
        fail(rs, s, LLMLINK_PROTOCOL_ERROR, "bad RDMA grant: %s", why);
        return;
    }
    llk_rdma_link_t *l = ctx->xl->rdma; /* set before streams are handed out */
    uint16_t nrails = llk_rdma_link_nrails(l);
    size_t n = s->c1 - s->c0;
    if (g.niov != n || g.total_bytes != chunk_bytes(p, s) || g.nrails != nrails) {
        fail(rs, s, LLMLINK_PROTOCOL_ERROR, "RDMA grant of %u regions on %u rails for %zu "
             "segments on %u rails", g.niov, g.nrails, n, nrails);
        return;
    }
    char msg[512];
    const llk_rdma_mrs_t *m = llk_rdma_cache_mrs(ctx->rdma, ctx->local_cache, msg, sizeof msg);
    llk_rdma_sge_t *sg = m ? malloc(n * sizeof *sg) : NULL;
    if (!sg) {
        /* this side's failure: the owner hears of it, the link stays */
        queue_done_frame(rs, s, LLMLINK_FAILED, true, g.generation);
        if (rs->refusal == LLMLINK_SUCCESS && rs->failure == LLMLINK_SUCCESS) {
            rs->refusal = m ? LLMLINK_OUT_OF_MEMORY : LLMLINK_FAILED;
            snprintf(rs->msg, sizeof rs->msg, "%s: RDMA: %s", ctx->fn,
                     m ? "out of memory" : msg);
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const llk_xseg_t *seg = &p->segs[s->c0 + i];
        uint16_t rail = (uint16_t)llk_rdma_rail_of((uint32_t)i, nrails);
        uint64_t addr, len;
        uint32_t rkey, lkey = 0;
        llk_xwire_grant_at(&g, (uint32_t)i, rail, &addr, &len, &rkey);
        if (len != seg->len || !llk_rdma_lkey(m, l, rail, seg->lptr, len, &lkey)) {
            free(sg);
            fail(rs, s, len != seg->len ? LLMLINK_PROTOCOL_ERROR : LLMLINK_FAILED,
                 len != seg->len ? "RDMA region %zu has %llu bytes, asked %llu"
                                 : "RDMA: segment %zu (%llu bytes) is outside every local MR",
                 i, (unsigned long long)len, (unsigned long long)seg->len);
            return;
        }
        sg[i] = (llk_rdma_sge_t){.laddr = (uint64_t)(uintptr_t)seg->lptr, .raddr = addr,
                                 .len = len, .lkey = lkey, .rkey = rkey, .rail = rail};
    }
    /* Test hook: hold the grant before using it (an owner that revokes
     * meanwhile is then seen deterministically). */
    if (ctx->rdma_post_delay_ms > 0)
        for (int64_t until = llk_now_ms() + ctx->rdma_post_delay_ms;
             llk_now_ms() < until && llk_now_ms() < ctx->deadline_ms;) {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    llmlink_status_t st = llk_rdma_move(l, s->op == LLK_XOP_RDMA_WRITE, sg, n, ctx->deadline_ms,
                                        link_aborted, ctx->xl, msg, sizeof msg);
    free(sg);
    if (st == LLMLINK_SUCCESS) {
        queue_done_frame(rs, s, LLMLINK_SUCCESS, true, g.generation);
        return;
    }
    /* The rail is unusable after a completion error: the link goes (the
     * caller kills it), relink makes new QPs. */
    fail(rs, s, st == LLMLINK_NOT_YET_LINK ? LLMLINK_NETWORK_ERROR : st, "%s", msg);
}

/* Fills iov from the data cursor; returns the count. */
static int cursor_iov(const llk_plan_t *p, const stream_run_t *s, struct iovec *iov, int max)
{
    int n = 0;
    size_t i = s->cur;
    uint64_t off = s->cur_off;
    for (; i < s->c1 && n < max; i++, off = 0) {
        iov[n].iov_base = p->segs[i].lptr + off;
        iov[n].iov_len = (size_t)(p->segs[i].len - off);
        n++;
    }
    return n;
}

static bool cursor_advance(const llk_plan_t *p, stream_run_t *s, size_t bytes)
{
    while (bytes && s->cur < s->c1) {
        uint64_t left = p->segs[s->cur].len - s->cur_off;
        if (bytes < left) {
            s->cur_off += bytes;
            return false;
        }
        bytes -= (size_t)left;
        s->cur++;
        s->cur_off = 0;
    }
    return s->cur >= s->c1;
}

static uint64_t chunk_bytes(const llk_plan_t *p, const stream_run_t *s)
{
    uint64_t t = 0;
    for (size_t i = s->c0; i < s->c1; i++)
        t += p->segs[i].len;
    return t;
}

/* The kernel moves the chunk between this process and the owner's, with
 * the owner's addresses from its answer: one call per batch of at most
 * VM_BATCH runs and VM_BATCH_BYTES (the kernel moves at most ~2 GiB per
 * call; segments are sliced to 1 GiB). Returns 0, or an errno (ETIMEDOUT
 * past the call's deadline). */
static int shm_move(run_state_t *rs, stream_run_t *s, const llk_xresp_t *r)
{
    const llk_plan_t *p = rs->ctx->plan;
    pid_t pid = (pid_t)rs->ctx->xl->remote_host.pid;
    struct iovec liov[VM_BATCH], riov[VM_BATCH];
    size_t done = s->c0;
    while (done < s->c1) {
        if (llk_now_ms() >= rs->ctx->deadline_ms)
            return ETIMEDOUT;
        int n = 0;
        uint64_t want = 0;
        for (size_t i = done; i < s->c1 && n < VM_BATCH; i++, n++) {
            uint64_t addr, len;
            llk_xwire_iov_at(r->iovs, (uint32_t)(i - s->c0), &addr, &len);
            if (n > 0 && want + len > VM_BATCH_BYTES)
                break;
            liov[n].iov_base = p->segs[i].lptr;
            liov[n].iov_len = (size_t)p->segs[i].len;
            riov[n].iov_base = (void *)(uintptr_t)addr;
            riov[n].iov_len = (size_t)len;
            want += len;
        }
        ssize_t got = s->op == LLK_XOP_SHM_READ
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
static void on_shm_answer(run_state_t *rs, stream_run_t *s, const llk_xresp_t *r)
{
    const llk_plan_t *p = rs->ctx->plan;
    if (r->niov != s->c1 - s->c0 || r->total_bytes != chunk_bytes(p, s)) {
        fail(rs, s, LLMLINK_PROTOCOL_ERROR, "shm answer with %u regions for %zu segments",
             r->niov, s->c1 - s->c0);
        return;
    }
    for (uint32_t i = 0; i < r->niov; i++) {
        uint64_t addr, len;
        llk_xwire_iov_at(r->iovs, i, &addr, &len);
        if (len != p->segs[s->c0 + i].len) {
            fail(rs, s, LLMLINK_PROTOCOL_ERROR, "shm region %u has %llu bytes, asked %llu", i,
                 (unsigned long long)len, (unsigned long long)p->segs[s->c0 + i].len);
            return;
        }
    }
    int err = shm_move(rs, s, r);
    if (err == 0) {
        queue_done(rs, s, LLMLINK_SUCCESS);
        return;
    }
    if (err == ETIMEDOUT) {
        fail(rs, s, LLMLINK_WAIT_PROCESS_TIMEOUT, "shm copy not done within "
             "llm.SyncKvCacheWaitTime");
        return;
    }
    const char *call = s->op == LLK_XOP_SHM_READ ? "process_vm_readv" : "process_vm_writev";
    llk_xlink_t *xl = rs->ctx->xl;
    if ((err == EPERM || err == ENOSYS) && !xl->shm_forced) {
        char why[128];
        snprintf(why, sizeof why, "%s of pid %u: %s", call, xl->remote_host.pid, strerror(err));
        shm_refuse_or_fail(rs, s, why);
        queue_done(rs, s, LLMLINK_FEATURE_NOT_ENABLED);
        s->redo_tcp = true;
        return;
    }
    queue_done(rs, s, LLMLINK_FAILED);
    if (rs->refusal == LLMLINK_SUCCESS && rs->failure == LLMLINK_SUCCESS) {
        rs->refusal = err == EPERM || err == ENOSYS ? LLMLINK_FEATURE_NOT_ENABLED : LLMLINK_FAILED;
        snprintf(rs->msg, sizeof rs->msg, "%s: %s of pid %u (cluster %llu): %s%s", rs->ctx->fn,
                 call, xl->remote_host.pid, (unsigned long long)xl->remote_id, strerror(err),
                 err == EPERM ? " (llmlink.Transport=shm forbids the tcp fallback)" : "");
    }
}

/* A whole RESP frame is in hdr/rx. */
static void on_resp(run_state_t *rs, stream_run_t *s)
{
    const char *why = NULL;
    llk_xresp_t r;
    if (s->h.type == LLK_XMSG_RESP_RDMA && is_rdma(s->op) && s->h.req_id == s->req_id) {
        on_rdma_grant(rs, s);
        return;
    }
    if (s->h.type != LLK_XMSG_RESP || s->h.req_id != s->req_id) {
        fail(rs, s, LLMLINK_PROTOCOL_ERROR, "unexpected frame (type %u, request %llu)", s->h.type,
             (unsigned long long)s->h.req_id);
        return;
    }
    if (llk_xwire_decode_resp(s->rx, s->h.length, &r, &why) != 0) {
        fail(rs, s, LLMLINK_PROTOCOL_ERROR, "bad answer: %s", why);
        return;
    }
    bool shm = s->op == LLK_XOP_SHM_READ || s->op == LLK_XOP_SHM_WRITE;
    if (is_rdma(s->op) && r.status == LLMLINK_SUCCESS) {
        fail(rs, s, LLMLINK_PROTOCOL_ERROR, "an RDMA request answered without a grant");
        return;
    }
    if (shm && r.status == LLMLINK_FEATURE_NOT_ENABLED) {
        /* The owner does not allow shm on this link: tcp, unless forced. */
        if (shm_refuse_or_fail(rs, s, r.msg))
            redo_over_tcp(rs, s);
        return;
    }
    if (r.status != LLMLINK_SUCCESS) {
        refuse(rs, s, r.status, r.msg);
        return;
    }
    const llk_plan_t *p = rs->ctx->plan;
    if (shm) {
        on_shm_answer(rs, s, &r);
        return;
    }
    if (s->c0 == s->c1) { /* CONSUME answered */
        next_request(rs, s);
        return;
    }
    if (r.total_bytes != chunk_bytes(p, s) || r.niov) {
        fail(rs, s, LLMLINK_PROTOCOL_ERROR, "answer announces %llu bytes, asked %llu",
             (unsigned long long)r.total_bytes, (unsigned long long)chunk_bytes(p, s));
        return;
    }
    if (s->op == LLK_XOP_WRITE && s->final_resp) {
        next_request(rs, s);
        return;
    }
    s->cur = s->c0;
    s->cur_off = 0;
    s->ph = s->op == LLK_XOP_READ ? PH_DATA_IN : PH_DATA_OUT;
}

/* What follows a frame fully sent from tx. */
static void on_sent(run_state_t *rs, stream_run_t *s)
{
    if (s->after_send == PH_RESP) {
        s->ph = PH_RESP;
        s->hdr_got = s->rx_got = 0;
        return;
    }
    /* A DONE went out. */
    if (s->redo_tcp)
        redo_over_tcp(rs, s);
    else
        next_request(rs, s);
}

/* While bytes stream in, wake this thread only once a good share has
 * arrived (fewer wake-ups, larger copies); never above what is still due,
 * or poll would wait for bytes that never come. Back to 1 for frames. */
static void set_lowat(stream_run_t *s, uint64_t due)
{
    int want = due > LOWAT_BYTES ? (int)LOWAT_BYTES : (int)(due ? due : 1);
    if (s->ph != PH_DATA_IN)
        want = 1;
    if (want == (s->lowat ? s->lowat : 1))
        return;
    if (setsockopt(s->fd, SOL_SOCKET, SO_RCVLOWAT, &want, sizeof want) == 0)
        s->lowat = want;
}

static uint64_t bytes_due(const llk_plan_t *p, const stream_run_t *s)
{
    uint64_t due = 0;
    for (size_t i = s->cur; i < s->c1 && due < LOWAT_BYTES; i++)
        due += p->segs[i].len - (i == s->cur ? s->cur_off : 0);
    return due;
}

/* Moves what the socket takes now. Returns the poll events still wanted. */
static short step(run_state_t *rs, stream_run_t *s)
{
    const llk_plan_t *p = rs->ctx->plan;
    size_t moved = 0;
    for (int guard = 0; guard < 4096 && s->ph != PH_FINISHED && moved < PASS_BYTES; guard++) {
        ssize_t r;
        if (s->ph == PH_SEND) {
            r = send(s->fd, s->tx + s->tx_off, s->tx_len - s->tx_off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (r > 0) {
                s->tx_off += (size_t)r;
                if (s->tx_off == s->tx_len)
                    on_sent(rs, s);
                continue;
            }
        } else if (s->ph == PH_RESP) {
            if (s->hdr_got < LLK_XWIRE_HEADER_SIZE) {
                r = recv(s->fd, s->hdr + s->hdr_got, LLK_XWIRE_HEADER_SIZE - s->hdr_got,
                         MSG_DONTWAIT);
                if (r > 0) {
                    s->hdr_got += (size_t)r;
                    if (s->hdr_got < LLK_XWIRE_HEADER_SIZE)
                        continue;
                    const char *why = NULL;
                    if (llk_xwire_read_header(s->hdr, &s->h, &why) != 0) {
                        fail(rs, s, LLMLINK_PROTOCOL_ERROR, "bad frame header: %s", why);
                        break;
                    }
                    if (!grow(&s->rx, &s->rx_cap, s->h.length ? s->h.length : 1)) {
                        fail(rs, s, LLMLINK_OUT_OF_MEMORY, "out of memory for an answer");
                        break;
                    }
                    if (s->h.length == 0)
                        on_resp(rs, s);
                    continue;
                }
            } else {
                r = recv(s->fd, s->rx + s->rx_got, s->h.length - s->rx_got, MSG_DONTWAIT);
                if (r > 0) {
                    s->rx_got += (size_t)r;
                    if (s->rx_got == s->h.length)
                        on_resp(rs, s);
                    continue;
                }
            }
        } else {
            struct iovec iov[IOV_BATCH];
            struct msghdr mh = {.msg_iov = iov};
            mh.msg_iovlen = (size_t)cursor_iov(p, s, iov, IOV_BATCH);
            r = s->ph == PH_DATA_IN ? recvmsg(s->fd, &mh, MSG_DONTWAIT)
                                    : sendmsg(s->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (r > 0) {
                moved += (size_t)r;
                if (cursor_advance(p, s, (size_t)r)) {
                    if (s->ph == PH_DATA_IN) {
                        next_request(rs, s);
                    } else {
                        s->final_resp = true;
                        s->ph = PH_RESP;
                        s->hdr_got = s->rx_got = 0;
                    }
                }
                continue;
            }
        }
        if (r == 0) {
            fail(rs, s, LLMLINK_NETWORK_ERROR, "the peer closed the stream");
            break;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        fail(rs, s, LLMLINK_NETWORK_ERROR, "%s", strerror(errno));
        break;
    }
    if (s->ph == PH_FINISHED)
        return 0;
    set_lowat(s, s->ph == PH_DATA_IN ? bytes_due(p, s) : 1);
    return (s->ph == PH_SEND || s->ph == PH_DATA_OUT) ? POLLOUT : POLLIN;
}

/* Runs every stream until all are finished or the deadline passes. */
static void run_streams(run_state_t *rs)
{
    struct pollfd pf[LLK_MAX_STREAMS];
    int map[LLK_MAX_STREAMS];
    for (int round = 0; round < 100000000; round++) {
        int np = 0;
        for (int i = 0; i < rs->n; i++) {
            short ev = step(rs, &rs->s[i]);
            if (ev) {
                pf[np].fd = rs->s[i].fd;
                pf[np].events = ev;
                pf[np].revents = 0;
                map[np++] = i;
            }
        }
        if (np == 0)
            return;
        int64_t left = rs->ctx->deadline_ms - llk_now_ms();
        if (left <= 0) {
            for (int k = 0; k < np; k++)
                fail(rs, &rs->s[map[k]], LLMLINK_WAIT_PROCESS_TIMEOUT,
                     "not done within llm.SyncKvCacheWaitTime");
            return;
        }
        int r = poll(pf, (nfds_t)np, left > 1000 ? 1000 : (int)left);
        if (r < 0 && errno != EINTR) {
            fail(rs, NULL, LLMLINK_FAILED, "poll: %s", strerror(errno));
            for (int k = 0; k < np; k++)
                rs->s[map[k]].ph = PH_FINISHED;
            return;
        }
        for (int k = 0; k < np && r > 0; k++)
            if (pf[k].revents & (POLLERR | POLLNVAL)) {
                int soerr = 0;
                socklen_t sl = sizeof soerr;
                getsockopt(pf[k].fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
                fail(rs, &rs->s[map[k]], LLMLINK_NETWORK_ERROR, "%s",
                     soerr ? strerror(soerr) : "socket error");
            }
    }
}

static void free_runs(stream_run_t *s, int n)
{
    for (int i = 0; i < n; i++) {
        /* The next borrower waits for small frames. */
        if (s[i].lowat > 1 && s[i].fd >= 0) {
            int one = 1;
            setsockopt(s[i].fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
        }
        free(s[i].tx);
        free(s[i].rx);
        free(s[i].wsegs);
    }
}

llmlink_status_t llk_xfer_execute(llk_xfer_ctx_t *ctx, bool *link_failed)
{
    *link_failed = false;
    const llk_plan_t *p = ctx->plan;
    int idx[LLK_MAX_STREAMS];
    uint32_t want = p->ngroups ? p->ngroups : 1;
    stream_run_t s[LLK_MAX_STREAMS];
    memset(s, 0, sizeof s);
    /* Local memory first: running out of it is this call's failure, not
     * the link's. */
    for (uint32_t i = 0; i < want && i < LLK_MAX_STREAMS; i++) {
        s[i].wsegs = malloc(CHUNK_SEGS * sizeof *s[i].wsegs);
        if (!s[i].wsegs) {
            free_runs(s, (int)want);
            return llk_err(LLMLINK_OUT_OF_MEMORY, "%s: out of memory", ctx->fn);
        }
    }
    /* Waiting for a stream that other calls hold is no failure of the
     * link: a timeout here leaves it up (nothing went on the wire). */
    int n = llk_xlink_borrow(ctx->xl, want, idx, ctx->deadline_ms, ctx->fn);
    if (n < 0) {
        free_runs(s, (int)want);
        return llk_err_status();
    }
    run_state_t rs = {.ctx = ctx, .s = s, .n = n};
    /* Groups go to streams round robin; a stream with several runs them
     * one after another (its share is contiguous). */
    for (int i = 0; i < n; i++) {
        s[i].slot = idx[i];
        s[i].fd = ctx->xl->req_fd[idx[i]];
        uint32_t g0 = (uint32_t)((uint64_t)p->ngroups * (uint32_t)i / (uint32_t)n);
        uint32_t g1 = (uint32_t)((uint64_t)p->ngroups * (uint32_t)(i + 1) / (uint32_t)n);
        s[i].seg_next = p->group_start[g0];
        s[i].seg_end = p->group_start[g1];
    }
    for (int i = 0; i < n; i++)
        next_request(&rs, &s[i]);
    run_streams(&rs);
    /* A pull_cache by CacheKey drops the key once every byte arrived. */
    if (rs.failure == LLMLINK_SUCCESS && rs.refusal == LLMLINK_SUCCESS && ctx->consume_key) {
        s[0].consume = true;
        rs.n = 1;
        next_request(&rs, &s[0]);
        run_streams(&rs);
    }
    free_runs(s, (int)want);
    llk_xlink_give_back(ctx->xl, idx, n);
    if (rs.failure != LLMLINK_SUCCESS) {
        *link_failed = true;
        return llk_err(rs.failure, "%s", rs.msg);
    }
    if (rs.refusal != LLMLINK_SUCCESS)
        return llk_err(rs.refusal, "%s", rs.msg);
    return LLMLINK_SUCCESS;
}

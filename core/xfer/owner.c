/*
 * xfer/owner.c - the owner thread ("xserver") of one engine: it serves
 * the peers' requests on the owner streams of every link (xfer.h), in the
 * protocol of xfer_wire.h.
 *
 * One epoll loop over an eventfd and every owner stream. Each stream runs
 * one request at a time through a small state machine on a non-blocking
 * socket:
 *
 *   RX_HDR -> RX_BODY -> (XREQ checked against the registry)
 *     refused / consume ........ TX_RESP -> done
 *     READ ..................... TX_RESP -> TX_DATA -> done
 *     WRITE .................... TX_RESP(go) -> RX_DATA -> TX_RESP -> done
 *     another transport's op ... TX_RESP(its grant) -> RX_HDR -> RX_BODY(XDONE) -> done
 *   a transport's setup frame (once per link) .. TX_RESP(its answer) -> done
 *
 * READ and WRITE move the bytes on the stream (tcp); for any other op the
 * transport (transport.h) says whether the link may use it, and makes the
 * grant; the requester moves the bytes itself and ends with XDONE.
 *
 * A request is checked before any byte of cache memory is touched: first
 * the bounds of the whole transfer it belongs to (xfer_wire.h), so that a
 * transfer is refused all or nothing, then every one of its segments. The
 * cache stays acquired (so it cannot be removed) until the request is
 * done. A stream that breaks the protocol, fails, stalls or
 * ends in the middle of a request is closed and takes its link with it
 * (llk_xlink_break); one the peer closes between requests is just closed
 * (see end_stream); a refused request leaves the stream usable.
 *
 * Streams adopted by other threads go on a pending list (under s->mu); the
 * thread moves them to its own list, which only it touches, after every
 * epoll_wait. The thread never takes e->mu (lock order, see xfer.h).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "xfer/cache_registry.h"
#include "base/clock.h"
#include "link/engine.h"
#include "base/err.h"
#include "base/log.h"
#include "base/spin.h"
#include "xfer/owner_testing.h"
#include "xfer/xfer.h"
#include "xfer/xfer_wire.h"

/* As the reactor's: deep enough for our frames, small for many engines. */
#define XS_THREAD_STACK (256u * 1024u)
#define XS_MAX_EVENTS 64
/* Fairness: what one stream may move, and how many state changes it may
 * make, before the thread turns to the others. */
#define XS_PASS_BYTES ((size_t)8 << 20)
#define XS_PASS_STEPS 64
#define XS_MAX_IOV 64
#define XS_TIMEOUT_CAP_MS 1000
/* Buffers grown past this by one big request are freed when it ends, so
 * that thousands of idle streams stay small. */
#define XS_KEEP_BUF ((size_t)256 << 10)
#define XS_MIN_RX 64u

typedef enum xs_state {
    XS_RX_HDR,  /* reading a frame header: a request, or XDONE in PH_GRANTED */
    XS_RX_BODY, /* reading its payload */
    XS_TX_RESP, /* sending tx[] */
    XS_TX_DATA, /* READ: sending the segments' bytes */
    XS_RX_DATA  /* WRITE: receiving into the segments */
} xs_state_t;

typedef enum xs_phase {
    PH_IDLE,  /* no request */
    PH_LAST,  /* the answer in tx[] ends the request (refusal, consume, WRITE's final) */
    PH_READ,  /* XRESP, then the bytes go out */
    PH_WRITE, /* XRESP(go), then the bytes come in */
    PH_GRANTED /* the transport's grant, then the peer's XDONE */
} xs_phase_t;

typedef struct xstream {
    struct xstream *prev, *next;
    llk_xlink_t *xl; /* one reference, dropped when the stream ends */
    int slot, fd;
    uint32_t events; /* what epoll watches now */
    xs_state_t state;
    xs_phase_t phase;
    int64_t progress_ms; /* last time bytes moved (monotonic) */

    uint8_t hdr[LLK_XWIRE_HEADER_SIZE];
    size_t hdr_got;
    llk_xframe_header_t h;
    uint8_t *rx; /* payload of the frame being read */
    size_t rx_cap, rx_got;

    /* The request being served. req.segs points into rx, but is only read
     * while checking: the checked segments live in segv. */
    llk_xreq_t req;
    const llk_transport_ops_t *t; /* the transport its op names */
    uint64_t req_id;
    llk_cache_t *cache; /* held from acquire until the request is done */
    bool consume;       /* release with the key: a CacheKey pulled */

    /* Checked segments as (address, length) pairs: the I/O cursor reads
     * them, and grants carry them. */
    uint64_t *segv;
    size_t segv_cap; /* in pairs */
    uint32_t *segt;  /* the tensor of each checked segment (grants name it) */
    size_t segt_cap;
    uint64_t grant_gen; /* the generation granted, checked in XDONE */
    bool revocable;     /* this stream's hold on cache is a grant (registry) */
    bool cuttable;      /* this stream's hold is a tcp request: an unregister may cut it */
    /* The progress floor of a tcp request (check_progress): the window
     * that began at win_start_ms, when moved was win_moved. */
    int64_t win_start_ms;
    uint64_t win_moved;
    void *grant;        /* the transport's grant, ended exactly once (end_grant) */
    uint32_t nseg;
    uint32_t cur_seg; /* cursor: segment, and offset within it */
    uint64_t cur_off;
    uint64_t total, moved;

    uint8_t *tx;
    size_t tx_cap, tx_len, tx_off;

    bool quiet; /* the peer closed it between requests: the link is not broken */
    char why[224];
} xstream_t;

struct llk_xserver {
    llmlink_t *e;
    int epfd, wakefd;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu; /* pending, stop */
    bool stop;
    xstream_t *pending; /* adopted, not yet taken by the thread (singly linked) */
    xstream_t *streams; /* the thread's; after the join, stop's */
    int32_t stall_ms;
    /* Lingering holds (see linger_hold): their watch descriptors sit in
     * linger_epfd, itself in epfd (its event's data.ptr is &linger_epfd). */
    int linger_epfd;
    struct xs_linger *lingering;
    /* No stall deadline is earlier than this: deadlines only move later as
     * bytes move, and a stream that becomes busy lowers it. */
    int64_t next_check_ms;
    /* An unregister asks for the cuttable holds of the caches marked
     * cut_requested to be cut (llk_xserver_cut, any thread). */
    atomic_bool cut_pending;
    /* Test seam (llk_test_owner_request): told of every admission. */
    void (*test_admitted)(void *ctx, const llk_cache_t *c, const uint64_t *segv,
                          const uint32_t *segt, uint32_t nseg);
    void *test_ctx;
};

#define XS_FMT "cluster %llu: owner stream %d of the link with cluster %llu (%s)"
#define XS_ARGS(s, st)                                                                     \
    (unsigned long long)(s)->e->cluster_id, (st)->slot,                                    \
        (unsigned long long)(st)->xl->remote_id, (st)->xl->peer

/* ---- small helpers ------------------------------------------------------ */

/* Grows *buf to hold need bytes (contents kept). 0, or -1 out of memory. */
static int grow(void **buf, size_t *cap, size_t need, size_t elem)
{
    if (*cap >= need && *buf)
        return 0;
    void *p = realloc(*buf, need * elem);
    if (!p)
        return -1;
    *buf = p;
    *cap = need;
    return 0;
}

static void shrink(void **buf, size_t *cap, size_t elem)
{
    if (*cap * elem > XS_KEEP_BUF) {
        free(*buf);
        *buf = NULL;
        *cap = 0;
    }
}

/* Records why the stream must end; returns -1 for `return fail(...)`. */
static int fail(xstream_t *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(xstream_t *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->why, sizeof st->why, fmt, ap);
    va_end(ap);
    return -1;
}

/* Formats a refusal message; returns status for `return refuse(...)`. */
static llmlink_status_t refuse(char *msg, size_t cap, llmlink_status_t status, const char *fmt,
                               ...) __attribute__((format(printf, 4, 5)));
static llmlink_status_t refuse(char *msg, size_t cap, llmlink_status_t status, const char *fmt,
                               ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, cap, fmt, ap);
    va_end(ap);
    return status;
}

/* The wire wants printable ASCII; registry messages are, but make sure. */
static void printable(char *msg)
{
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
}

static void wake(struct llk_xserver *s)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: a wake is pending. */
    ssize_t r = write(s->wakefd, &one, sizeof one);
    (void)r;
}

/* How long the stream may go without progress. While a peer works with a
 * long grant (transport.h) nothing moves on the stream by design, however
 * large the transfer, and the peer's own deadline (its
 * llm.SyncKvCacheWaitTime) bounds it: give it four times ours and at least
 * a minute. Memory is not held hostage meanwhile: an unregister here waits
 * ours, then revokes the grant (llk_registry_remove), and a dead peer is
 * noticed by the link's liveness check. */
#define XS_LONG_GRANT_MIN_STALL_MS 60000
#define XS_ACK_GRACE_MS 1000
static int64_t stall_limit(const struct llk_xserver *s, const xstream_t *st)
{
    /* The smaller of the two ends' llm.SyncKvCacheWaitTime (HELLO/WELCOME). */
    int32_t wait_ms = llk_xlink_wait_ms(st->xl, s->stall_ms);
    /* A grant whose hold outlives the stream (shm): ending the stream
     * frees nothing, and the requester stops within one batch of its own
     * deadline (which started before ours) and then says XDONE; wait for
     * that word a little longer, so that the hold ends cleanly instead of
     * lingering until the requester's process exits. */
    if (st->phase == PH_GRANTED && st->t && st->t->hold_watch)
        return (int64_t)wait_ms + XS_ACK_GRACE_MS;
    bool long_grant = st->phase == PH_GRANTED && st->t && st->t->long_grant;
    if (!long_grant)
        return wait_ms;
    int64_t lim = 4 * (int64_t)wait_ms;
    return lim < XS_LONG_GRANT_MIN_STALL_MS ? XS_LONG_GRANT_MIN_STALL_MS : lim;
}

/* In the middle of a request: from its first header byte until done. */
static bool busy(const xstream_t *st)
{
    return st->phase != PH_IDLE || st->state != XS_RX_HDR || st->hdr_got > 0;
}

static bool sending(const xstream_t *st)
{
    return st->state == XS_TX_RESP || st->state == XS_TX_DATA;
}

/* ---- the segment cursor (send and receive) -------------------------------- */

static void cursor_reset(xstream_t *st)
{
    st->cur_seg = 0;
    st->cur_off = 0;
    st->moved = 0;
}

/* Up to XS_MAX_IOV iovecs over the rest of the segments, limit bytes at most. */
static int cursor_fill(const xstream_t *st, struct iovec *iov, size_t limit)
{
    int n = 0;
    uint64_t off = st->cur_off;
    for (uint32_t i = st->cur_seg; i < st->nseg && n < XS_MAX_IOV && limit > 0; i++, off = 0) {
        uint64_t len = st->segv[2 * i + 1] - off;
        if (len > limit)
            len = limit;
        if (len == 0)
            continue;
        iov[n].iov_base = (uint8_t *)(uintptr_t)st->segv[2 * i] + off;
        iov[n].iov_len = (size_t)len;
        limit -= (size_t)len;
        n++;
    }
    return n;
}

static void cursor_advance(xstream_t *st, size_t n)
{
    st->moved += n;
    while (n > 0 && st->cur_seg < st->nseg) {
        uint64_t left = st->segv[2 * st->cur_seg + 1] - st->cur_off;
        if (n < left) {
            st->cur_off += n;
            return;
        }
        n -= (size_t)left;
        st->cur_seg++;
        st->cur_off = 0;
    }
}

/* ---- checking a request ---------------------------------------------------- */

/* What can be checked before the key is resolved. */
static llmlink_status_t check_shape(const llk_xreq_t *q, char *msg, size_t cap)
{
    if (!llk_transport_by_op(q->op))
        return refuse(msg, cap, LLMLINK_PARAM_INVALID, "unknown operation %u", q->op);
    uint32_t kt = (uint32_t)q->key.type;
    if (q->kind == LLK_XKIND_BLOCKS) {
        if (kt != LLMLINK_KEY_BLOCKS)
            return refuse(msg, cap, LLMLINK_PARAM_INVALID,
                          "a blocks transfer needs a blocks key (got key type %u)", kt);
    } else if (q->kind == LLK_XKIND_CACHE || q->kind == LLK_XKIND_CACHE_AS_BLOCKS) {
        if (kt != LLMLINK_KEY_CACHE && kt != LLMLINK_KEY_ID_AND_INDEX)
            return refuse(msg, cap, LLMLINK_PARAM_INVALID,
                          "a cache transfer needs a cache key or an id-and-index key "
                          "(got key type %u)", kt);
    } else {
        return refuse(msg, cap, LLMLINK_PARAM_INVALID, "unknown transfer kind %u", q->kind);
    }
    if (q->flags & LLK_XREQ_CONSUME) {
        if (q->nseg != 0 || q->op != LLK_XOP_READ || q->kind == LLK_XKIND_BLOCKS)
            return refuse(msg, cap, LLMLINK_PARAM_INVALID,
                          "a consume request is a cache READ with no segments");
    } else if (q->nseg == 0) {
        return refuse(msg, cap, LLMLINK_PARAM_INVALID, "the request has no segments");
    }
    return LLMLINK_SUCCESS;
}

/* The refusals of a tensor, or of bytes, past the end of the cache: one
 * wording whether the transfer's bounds (check_bounds) or one segment
 * (check_segs) went past it. */
static llmlink_status_t refuse_tensor(const llk_cache_t *c, uint32_t tensor, char *msg,
                                      size_t cap)
{
    return refuse(msg, cap, LLMLINK_PARAM_INVALID,
                  "tensor %u is past the end of cache %lld (%u tensors)", tensor,
                  (long long)c->id, c->num_tensors);
}

#define NO_TENSOR UINT32_MAX /* refuse_end: the bounds of the whole transfer */

/* end (one past the last byte, >= 1) is past limit, the bytes of a blocks
 * tensor or of entry `unit`; tensor names the segment's, or is NO_TENSOR. */
static llmlink_status_t refuse_end(const llk_cache_t *c, bool blocks, uint64_t unit,
                                   uint64_t limit, uint64_t end, uint32_t tensor, char *msg,
                                   size_t cap)
{
    if (blocks)
        return refuse(msg, cap, LLMLINK_PARAM_INVALID,
                      "block %llu is past the end of cache %lld (%llu blocks)",
                      (unsigned long long)((end - 1) / c->unit_bytes), (long long)c->id,
                      (unsigned long long)c->num_units);
    char which[24] = "";
    if (tensor != NO_TENSOR)
        snprintf(which, sizeof which, ", tensor %u", tensor);
    return refuse(msg, cap, LLMLINK_PARAM_INVALID,
                  "size %llu is past the end of the %llu-byte entry (entry %llu of cache "
                  "%lld%s)", (unsigned long long)end, (unsigned long long)limit,
                  (unsigned long long)unit, (long long)c->id, which);
}

/*
 * Checks the bounds of the whole transfer the request belongs to (the
 * same in each of its requests, see xfer_wire.h) against the cache, so
 * that every request of a transfer is refused alike or none is. The
 * decoder made sure the request's own segments are within them. A request
 * without segments (CONSUME) has none.
 */
static llmlink_status_t check_bounds(const llk_xreq_t *q, const llk_cache_t *c, uint64_t unit,
                                     uint64_t limit, char *msg, size_t cap)
{
    if (q->nseg == 0)
        return LLMLINK_SUCCESS;
    if ((q->flags & LLK_XREQ_ALL_TENSORS) && q->num_tensors_hint != c->num_tensors)
        return refuse(msg, cap, LLMLINK_PARAM_INVALID,
                      "the caches have different tensor counts: the request covers %u "
                      "tensors, cache %lld has %u", q->num_tensors_hint, (long long)c->id,
                      c->num_tensors);
    if (q->num_tensors_hint > c->num_tensors)
        return refuse_tensor(c, q->num_tensors_hint - 1, msg, cap);
    if (q->bound_end > limit)
        return refuse_end(c, q->kind == LLK_XKIND_BLOCKS, unit, limit, q->bound_end, NO_TENSOR,
                          msg, cap);
    return LLMLINK_SUCCESS;
}

/* Checks the transfer's bounds, then (in defence) every segment against
 * [base, base + limit) of its tensor, and records its address. Touches no
 * cache memory. */
static llmlink_status_t check_segs(xstream_t *st, const llk_cache_t *c, uint64_t unit,
                                   uint64_t base, uint64_t limit, char *msg, size_t cap)
{
    const llk_xreq_t *q = &st->req;
    bool blocks = q->kind == LLK_XKIND_BLOCKS;
    llmlink_status_t rc = check_bounds(q, c, unit, limit, msg, cap);
    if (rc != LLMLINK_SUCCESS)
        return rc;
    if (grow((void **)&st->segv, &st->segv_cap, q->nseg ? q->nseg : 1, 2 * sizeof(uint64_t)) ||
        grow((void **)&st->segt, &st->segt_cap, q->nseg ? q->nseg : 1, sizeof(uint32_t)))
        return refuse(msg, cap, LLMLINK_OUT_OF_MEMORY, "out of memory for %u segments",
                      q->nseg);
    uint64_t total = 0;
    for (uint32_t i = 0; i < q->nseg; i++) {
        llk_xseg_wire_t sg;
        llk_xwire_seg_at(q->segs, i, &sg);
        if (sg.tensor >= c->num_tensors)
            return refuse_tensor(c, sg.tensor, msg, cap);
        if (sg.length > limit || sg.offset > limit - sg.length) {
            uint64_t end; /* one past the last byte, saturated */
            if (__builtin_add_overflow(sg.offset, sg.length, &end))
                end = UINT64_MAX;
            return refuse_end(c, blocks, unit, limit, end, sg.tensor, msg, cap);
        }
        st->segv[2 * i] = (uint64_t)(uintptr_t)(c->addrs[sg.tensor] + base + sg.offset);
        st->segv[2 * i + 1] = sg.length;
        st->segt[i] = sg.tensor;
        total += sg.length; /* <= 2^16 segments of <= 2^48 bytes: no overflow */
    }
    st->nseg = q->nseg;
    st->total = total; /* what the cursor will move, whatever the header said */
    return LLMLINK_SUCCESS;
}

/* The cache-dependent checks of one request. */
static llmlink_status_t check_cache(xstream_t *st, const llk_cache_t *c, uint64_t unit,
                                    char *msg, size_t cap)
{
    const llk_xreq_t *q = &st->req;
    if (c->unit_bytes == 0 || c->num_units == 0)
        return refuse(msg, cap, LLMLINK_PARAM_INVALID, "cache %lld is empty", (long long)c->id);
    if (q->kind == LLK_XKIND_BLOCKS) {
        if (!c->blocks)
            return refuse(msg, cap, LLMLINK_PARAM_INVALID, "cache %lld is not a blocks cache",
                          (long long)c->id);
        if (q->unit_bytes != c->unit_bytes)
            return refuse(msg, cap, LLMLINK_PARAM_INVALID,
                          "block size mismatch: the request uses %llu-byte blocks, cache %lld "
                          "has %llu-byte blocks", (unsigned long long)q->unit_bytes,
                          (long long)c->id, (unsigned long long)c->unit_bytes);
        return check_segs(st, c, 0, 0, c->tensor_bytes, msg, cap);
    }
    if (unit >= c->num_units)
        return refuse(msg, cap, LLMLINK_PARAM_INVALID,
                      "batch index %llu is past the end of cache %lld (%llu entries)",
                      (unsigned long long)unit, (long long)c->id,
                      (unsigned long long)c->num_units);
    if ((q->flags & LLK_XREQ_WHOLE) && q->unit_bytes != c->unit_bytes)
        return refuse(msg, cap, LLMLINK_PARAM_INVALID,
                      "entry sizes differ: the request's entry is %llu bytes, entry %llu of "
                      "cache %lld is %llu bytes", (unsigned long long)q->unit_bytes,
                      (unsigned long long)unit, (long long)c->id,
                      (unsigned long long)c->unit_bytes);
    return check_segs(st, c, unit, unit * c->unit_bytes, c->unit_bytes, msg, cap);
}

/* Resolves and checks the request in st->req. On SUCCESS st->cache is
 * held; on a refusal nothing is held and msg says why. */
static llmlink_status_t admit(struct llk_xserver *s, xstream_t *st, char *msg, size_t cap)
{
    llmlink_status_t rc = check_shape(&st->req, msg, cap);
    if (rc != LLMLINK_SUCCESS)
        return rc;
    llk_cache_t *c = NULL;
    uint64_t unit = 0;
    llk_err_clear(); /* the registry's message, not an older one, goes back */
    /* Access control before any hold: a peer's READ (pull, consume) needs
     * the cache's READ access, its WRITE (push) the WRITE access. */
    int need = st->req.op == st->t->op_write ? LLK_PEER_WRITE : LLK_PEER_READ;
    rc = llk_registry_acquire_peer(&s->e->reg, "remote request", &st->req.key, need, &c, &unit);
    if (rc != LLMLINK_SUCCESS) {
        const char *m = llk_err_message();
        return refuse(msg, cap, rc, "%s", m && *m ? m : "no cache has that key");
    }
    rc = check_cache(st, c, unit, msg, cap);
    if (rc != LLMLINK_SUCCESS) {
        st->nseg = 0;
        llk_registry_release(&s->e->reg, c, NULL);
        return rc;
    }
    st->cache = c;
    return LLMLINK_SUCCESS;
}

/* ---- answers and the end of a request ---------------------------------------- */

/* Encodes an XRESP into tx and moves to TX_RESP; `phase` says what
 * follows once it is sent. */
static int answer(xstream_t *st, xs_phase_t phase, uint32_t status, uint64_t total,
                  const char *msg)
{
    uint32_t niov = 0;
    size_t need = llk_xwire_resp_size(strnlen(msg, LLK_XWIRE_MAX_MSG), niov);
    if (grow((void **)&st->tx, &st->tx_cap, need, 1))
        return fail(st, "out of memory for a %zu-byte answer", need);
    size_t n = llk_xwire_encode_resp(st->tx, st->tx_cap, st->req_id, status, total, msg,
                                     NULL, niov);
    if (n == 0)
        return fail(st, "cannot encode a %zu-byte answer", need);
    st->tx_len = n;
    st->tx_off = 0;
    st->phase = phase;
    st->state = XS_TX_RESP;
    return 0;
}

/* Ends the use of the cache; a CacheKey pulled from an allocated cache is
 * dropped with it (llm_datadist). */
static void release_cache(struct llk_xserver *s, xstream_t *st)
{
    if (!st->cache)
        return;
    if (st->revocable) {
        llk_registry_set_revocable(&s->e->reg, st->cache, false);
        st->revocable = false;
    }
    if (st->cuttable) {
        llk_registry_set_cuttable(&s->e->reg, st->cache, false);
        st->cuttable = false;
    }
    llk_registry_release(&s->e->reg, st->cache, st->consume ? &st->req.key : NULL);
    st->cache = NULL;
    st->consume = false;
}

/*
 * Counters and the release come before the answer or byte that completes
 * the request for the peer: once its call returns, the owner's stats and
 * keys already say so (a test may read them at once, and its next call may
 * come over another stream). Only a READ's release has to wait for the
 * last byte (sendmsg reads the cache); its counters are taken ahead, see
 * step_tx_data. Granted requests are counted on XDONE, after the peer is done.
 */
static void count_served(struct llk_xserver *s, uint64_t bytes)
{
    atomic_fetch_add(&s->e->xstats.requests_served, 1);
    atomic_fetch_add(&s->e->xstats.bytes_served, bytes);
}

/* The transport's grant stops working (before the hold on the cache goes). */
static void end_grant(xstream_t *st, bool done_ok)
{
    if (st->grant && st->t && st->t->grant_end)
        st->t->grant_end(st->xl, st->grant, done_ok);
    st->grant = NULL;
}

/* The request is done: release the cache, wait for the next. */
static void finish_request(struct llk_xserver *s, xstream_t *st)
{
    release_cache(s, st);
    st->phase = PH_IDLE;
    st->state = XS_RX_HDR;
    st->hdr_got = 0;
    st->nseg = 0;
    st->total = 0;
    cursor_reset(st);
    shrink((void **)&st->rx, &st->rx_cap, 1);
    shrink((void **)&st->tx, &st->tx_cap, 1);
    shrink((void **)&st->segv, &st->segv_cap, 2 * sizeof(uint64_t));
    shrink((void **)&st->segt, &st->segt_cap, sizeof(uint32_t));
    st->grant_gen = 0;
}

/* What the transport needs to answer st's request or setup frame. */
static llk_xserve_t serve_args(struct llk_xserver *s, xstream_t *st)
{
    llk_xserve_t q;
    memset(&q, 0, offsetof(llk_xserve_t, msg));
    q.msg[0] = q.why[0] = '\0';
    q.e = s->e;
    q.xl = st->xl;
    q.slot = st->slot;
    q.fd = st->fd;
    q.req_id = st->req_id;
    q.op = st->req.op;
    q.cache = st->cache;
    q.segv = st->segv;
    q.segt = st->segt;
    q.nseg = st->nseg;
    q.total = st->total;
    q.type = st->h.type;
    q.rx = st->rx;
    q.rx_len = st->h.length;
    q.tx = &st->tx;
    q.tx_cap = &st->tx_cap;
    return q;
}

/* An admitted request of a transport that moves the bytes off the stream:
 * its grant, then the peer's XDONE. */
static int grant(struct llk_xserver *s, xstream_t *st)
{
    llk_xserve_t q = serve_args(s, st);
    int rc = st->t->serve_grant(&q);
    if (rc < 0)
        return fail(st, "%s", q.why);
    if (rc > 0) {
        release_cache(s, st);
        printable(q.msg);
        atomic_fetch_add(&s->e->xstats.requests_refused, 1);
        return answer(st, PH_LAST, q.refusal, 0, q.msg);
    }
    st->tx_len = q.tx_len;
    st->tx_off = 0;
    st->grant_gen = q.grant_gen;
    st->grant = q.grant;
    st->phase = PH_GRANTED; /* then the peer's XDONE */
    st->state = XS_TX_RESP;
    if (q.revocable) {
        /* From here the peer may touch the cache on its own: an unregister
         * that times out on this hold revokes the grant instead of failing. */
        llk_registry_set_revocable(&s->e->reg, st->cache, true);
        st->revocable = true;
    }
    return 0;
}

/* A transport's setup frame (t->setup_type) arrived in rx: its answer. */
static int on_setup(struct llk_xserver *s, xstream_t *st, const llk_transport_ops_t *t)
{
    st->req_id = st->h.req_id;
    llk_xserve_t q = serve_args(s, st);
    if (t->serve_setup(&q) < 0)
        return fail(st, "%s", q.why);
    st->tx_len = q.tx_len;
    st->tx_off = 0;
    st->phase = PH_LAST;
    st->state = XS_TX_RESP;
    return 0;
}

/* An XREQ arrived in rx: refuse it, or start serving it. */
static int on_request(struct llk_xserver *s, xstream_t *st)
{
    const char *why = "?";
    if (llk_xwire_decode_req(st->rx, st->h.length, &st->req, &why) != 0)
        return fail(st, "protocol error: bad request: %s", why);
    st->req_id = st->h.req_id;
    char msg[LLK_XWIRE_MAX_MSG + 1];
    msg[0] = '\0';
    /* NULL for an unknown op: check_shape refuses it. */
    st->t = llk_transport_by_op(st->req.op);
    llmlink_status_t rc = LLMLINK_SUCCESS;
    if (st->t && st->t->serve_allowed)
        rc = st->t->serve_allowed(st->xl, st->fd, msg, sizeof msg);
    if (rc == LLMLINK_SUCCESS)
        rc = admit(s, st, msg, sizeof msg);
    if (rc == LLMLINK_SUCCESS && s->test_admitted)
        s->test_admitted(s->test_ctx, st->cache, st->segv, st->segt, st->nseg);
    if (rc != LLMLINK_SUCCESS) {
        printable(msg);
        atomic_fetch_add(&s->e->xstats.requests_refused, 1);
        LLK_DEBUG(XS_FMT ": refused request %llu (0x%x): %s", XS_ARGS(s, st),
                  (unsigned long long)st->req_id, rc, msg);
        return answer(st, PH_LAST, rc, 0, msg);
    }
    if (st->req.flags & LLK_XREQ_CONSUME) {
        st->consume = st->req.key.type == LLMLINK_KEY_CACHE && st->cache->owned;
        release_cache(s, st);
        count_served(s, 0);
        return answer(st, PH_LAST, LLMLINK_SUCCESS, 0, "");
    }
    if (!st->t->on_stream) /* the peer moves the bytes itself, then says how it went */
        return grant(s, st);
    /* The bytes move on this stream, read and written by this thread
     * only: an unregister may ask it to cut the request, and the request
     * must keep up the progress floor from now on. */
    llk_registry_set_cuttable(&s->e->reg, st->cache, true);
    st->cuttable = true;
    st->win_start_ms = llk_now_ms();
    st->win_moved = 0;
    if (st->req.op == st->t->op_read)
        return answer(st, PH_READ, LLMLINK_SUCCESS, st->total, "");
    return answer(st, PH_WRITE, LLMLINK_SUCCESS, st->total, "go");
}

/* The XDONE of a granted request arrived in rx. */
static int on_done(struct llk_xserver *s, xstream_t *st)
{
    const char *why = "?";
    uint32_t status = 0;
    uint64_t gen = 0;
    bool has_gen = false;
    if (llk_xwire_decode_done_gen(st->rx, st->h.length, &status, &gen, &has_gen, &why) != 0)
        return fail(st, "protocol error: bad XDONE: %s", why);
    if (st->h.req_id != st->req_id)
        return fail(st, "protocol error: XDONE for request %llu while serving %llu",
                    (unsigned long long)st->h.req_id, (unsigned long long)st->req_id);
    /* A transport whose grants carry a generation ends with it: anything
     * else is a requester that used another registration's keys. */
    if (st->t->done_gen != has_gen || (has_gen && gen != st->grant_gen))
        return fail(st, "protocol error: XDONE of request %llu names generation %llu, the grant "
                    "was %llu", (unsigned long long)st->req_id, (unsigned long long)gen,
                    (unsigned long long)st->grant_gen);
    end_grant(st, status == LLMLINK_SUCCESS);
    if (status != LLMLINK_SUCCESS) {
        /* Its word that it stopped touching the memory: release all the same. */
        LLK_DEBUG(XS_FMT ": the peer's %s transfer of request %llu ended with 0x%x",
                  XS_ARGS(s, st), st->t->title, (unsigned long long)st->req_id, status);
        atomic_fetch_add(&st->xl->requests_fenced, 1);
    }
    release_cache(s, st);
    if (status == LLMLINK_SUCCESS)
        count_served(s, st->total);
    finish_request(s, st);
    return 0;
}

/* tx[] went out: what the phase says comes next. */
static void on_answer_sent(struct llk_xserver *s, xstream_t *st)
{
    cursor_reset(st);
    switch (st->phase) {
    case PH_READ:
        st->state = XS_TX_DATA;
        break;
    case PH_WRITE:
        st->state = XS_RX_DATA;
        break;
    case PH_GRANTED:
        st->state = XS_RX_HDR;
        st->hdr_got = 0;
        break;
    default:
        finish_request(s, st);
        break;
    }
}

/* ---- I/O steps: 0 = go on, 1 = would block, -1 = end the stream (st->why) ---- */

static int io_error(xstream_t *st, const char *what)
{
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 1;
    if (errno == EINTR)
        return 0;
    return fail(st, "%s: %s", what, strerror(errno));
}

static int eof(xstream_t *st)
{
    if (!busy(st)) {
        st->quiet = true;
        return fail(st, "peer closed the stream");
    }
    if (st->phase == PH_IDLE)
        return fail(st, "peer closed the stream in the middle of a frame");
    return fail(st, "peer closed the stream in the middle of request %llu",
                (unsigned long long)st->req_id);
}

static int step_rx_hdr(xstream_t *st, int64_t now)
{
    ssize_t r = recv(st->fd, st->hdr + st->hdr_got, sizeof st->hdr - st->hdr_got, MSG_DONTWAIT);
    if (r == 0)
        return eof(st);
    if (r < 0)
        return io_error(st, "recv");
    st->progress_ms = now;
    st->hdr_got += (size_t)r;
    if (st->hdr_got < sizeof st->hdr)
        return 0;
    const char *why = "?";
    if (llk_xwire_read_header(st->hdr, &st->h, &why) != 0)
        return fail(st, "protocol error: bad frame header: %s", why);
    uint16_t want = st->phase == PH_GRANTED ? LLK_XMSG_DONE : LLK_XMSG_REQ;
    bool setup = st->phase == PH_IDLE && llk_transport_by_setup(st->h.type);
    if (st->h.type != want && !setup)
        return fail(st, "protocol error: frame type %u where %s was due", st->h.type,
                    want == LLK_XMSG_REQ ? "a request" : "XDONE");
    if (st->h.length > LLK_XWIRE_MAX_PAYLOAD)
        return fail(st, "protocol error: %u-byte payload", st->h.length);
    size_t need = st->h.length < XS_MIN_RX ? XS_MIN_RX : st->h.length;
    if (grow((void **)&st->rx, &st->rx_cap, need, 1))
        return fail(st, "out of memory for a %u-byte frame", st->h.length);
    st->rx_got = 0;
    st->state = XS_RX_BODY;
    return 0;
}

static int step_rx_body(struct llk_xserver *s, xstream_t *st, int64_t now)
{
    if (st->rx_got < st->h.length) {
        ssize_t r = recv(st->fd, st->rx + st->rx_got, st->h.length - st->rx_got, MSG_DONTWAIT);
        if (r == 0)
            return eof(st);
        if (r < 0)
            return io_error(st, "recv");
        st->progress_ms = now;
        st->rx_got += (size_t)r;
        if (st->rx_got < st->h.length)
            return 0;
    }
    if (st->phase == PH_GRANTED)
        return on_done(s, st);
    const llk_transport_ops_t *setup = llk_transport_by_setup(st->h.type);
    return setup ? on_setup(s, st, setup) : on_request(s, st);
}

static int step_tx_resp(struct llk_xserver *s, xstream_t *st, int64_t now)
{
    while (st->tx_off < st->tx_len) {
        ssize_t w = send(st->fd, st->tx + st->tx_off, st->tx_len - st->tx_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            int rc = io_error(st, "send");
            if (rc != 0)
                return rc;
            continue;
        }
        st->progress_ms = now;
        st->tx_off += (size_t)w;
    }
    on_answer_sent(s, st);
    return 0;
}

/* READ's bytes, straight from the cache. A call that may send the last
 * byte counts the request first and takes back what it did not send, so
 * the counters are right by the time the peer has every byte. */
static int step_tx_data(struct llk_xserver *s, xstream_t *st, size_t *budget, int64_t now)
{
    if (st->moved < st->total) {
        struct iovec iov[XS_MAX_IOV];
        struct msghdr mh = {.msg_iov = iov};
        int n = cursor_fill(st, iov, *budget);
        uint64_t want = 0;
        for (int i = 0; i < n; i++)
            want += iov[i].iov_len;
        if (want == 0) /* cannot happen: total is the segments' sum */
            return fail(st, "internal error: nothing left to send");
        mh.msg_iovlen = (size_t)n;
        bool last = st->moved + want == st->total;
        if (last)
            count_served(s, st->total);
        /* The link's counter too is taken ahead (on loopback the peer may
         * have the bytes before sendmsg returns here), and what did not go
         * is given back. */
        atomic_fetch_add_explicit(&st->xl->peer_read_bytes, want, memory_order_relaxed);
        ssize_t w = sendmsg(st->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (last && (w < 0 || (uint64_t)w < want)) {
            atomic_fetch_sub(&s->e->xstats.requests_served, 1);
            atomic_fetch_sub(&s->e->xstats.bytes_served, st->total);
        }
        uint64_t sent = w < 0 ? 0 : (uint64_t)w;
        if (sent < want)
            atomic_fetch_sub_explicit(&st->xl->peer_read_bytes, want - sent, memory_order_relaxed);
        if (w < 0)
            return io_error(st, "sendmsg");
        st->progress_ms = now;
        cursor_advance(st, (size_t)w);
        *budget -= (size_t)w < *budget ? (size_t)w : *budget;
        if (st->moved < st->total)
            return 0;
    }
    finish_request(s, st);
    return 0;
}

/* WRITE's bytes, straight into the cache; then the final answer. serve()
 * has checked that the link is not broken right before this step: each
 * step makes one recvmsg. */
static int step_rx_data(struct llk_xserver *s, xstream_t *st, size_t *budget, int64_t now)
{
    if (st->moved < st->total) {
        struct iovec iov[XS_MAX_IOV];
        struct msghdr mh = {.msg_iov = iov};
        mh.msg_iovlen = (size_t)cursor_fill(st, iov, *budget);
        if (mh.msg_iovlen == 0) /* else recvmsg's 0 would read as EOF */
            return fail(st, "internal error: nothing left to receive");
        ssize_t r = recvmsg(st->fd, &mh, MSG_DONTWAIT);
        if (r == 0)
            return fail(st, "peer closed the stream after %llu of the %llu bytes of write "
                        "request %llu", (unsigned long long)st->moved,
                        (unsigned long long)st->total, (unsigned long long)st->req_id);
        if (r < 0)
            return io_error(st, "recvmsg");
        atomic_fetch_add_explicit(&st->xl->peer_write_bytes, (uint64_t)r, memory_order_relaxed);
        st->progress_ms = now;
        cursor_advance(st, (size_t)r);
        *budget -= (size_t)r < *budget ? (size_t)r : *budget;
        if (st->moved < st->total)
            return 0;
    }
    release_cache(s, st); /* no more bytes land in it */
    count_served(s, st->total);
    return answer(st, PH_LAST, LLMLINK_SUCCESS, st->total, "");
}

static int step(struct llk_xserver *s, xstream_t *st, size_t *budget, int64_t now)
{
    switch (st->state) {
    case XS_RX_HDR: return step_rx_hdr(st, now);
    case XS_RX_BODY: return step_rx_body(s, st, now);
    case XS_TX_RESP: return step_tx_resp(s, st, now);
    case XS_TX_DATA: return step_tx_data(s, st, budget, now);
    case XS_RX_DATA: return step_rx_data(s, st, budget, now);
    }
    return fail(st, "bad stream state %d", (int)st->state);
}

/* ---- streams ----------------------------------------------------------------- */

static void free_stream(xstream_t *st)
{
    free(st->rx);
    free(st->tx);
    free(st->segv);
    free(st->segt);
    free(st);
}

/* ---- lingering holds -------------------------------------------------------- */

/*
 * A stream that ends while its peer holds a grant it may still use on its
 * own (a transport with hold_watch: shm) cannot take the hold on the cache
 * with it: the peer's process may be inside process_vm_writev with the
 * granted addresses, and nothing on this side can stop that. The hold
 * becomes a lingering one, kept by this thread until the peer's process is
 * gone (its pidfd becomes readable); unregister_cache answers CACHE_IN_USE
 * meanwhile. When the engine stops first, see linger_stop.
 */
typedef struct xs_linger {
    struct xs_linger *next;
    llk_cache_t *cache;
    int fd;          /* readable when the process is gone; -1: none (held till stop) */
    uint32_t pid;    /* for messages */
    uint64_t remote_id;
} xs_linger_t;

static int linger_init(struct llk_xserver *s)
{
    s->linger_epfd = epoll_create1(EPOLL_CLOEXEC);
    if (s->linger_epfd < 0)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->linger_epfd};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->linger_epfd, &ev) != 0) {
        close(s->linger_epfd);
        s->linger_epfd = -1;
        return -1;
    }
    return 0;
}

/* The grant went out (in part at least): the peer may hold its addresses. */
static bool grant_sent(const xstream_t *st)
{
    return st->phase == PH_GRANTED && (st->state != XS_TX_RESP || st->tx_off > 0);
}

/* Called as st ends: a hold that must outlive the stream (a grant sent,
 * no XDONE yet) moves to the lingering list (st->cache then NULL), and the
 * request counts as fenced. */
static void linger_hold(struct llk_xserver *s, xstream_t *st)
{
    if (!st->cache || !grant_sent(st) || !st->t->hold_watch || st->revocable)
        return; /* end_stream releases (and counts) the hold */
    atomic_fetch_add(&st->xl->requests_fenced, 1);
    xs_linger_t *l = calloc(1, sizeof *l);
    if (!l) {
        /* Keep the hold rather than free memory a peer may write: the
         * stream's acquisition is simply never released (leaked). */
        LLK_ERROR(XS_FMT ": out of memory for a lingering hold; cache %lld stays in use",
                  XS_ARGS(s, st), (long long)st->cache->id);
        st->cache = NULL;
        return;
    }
    l->cache = st->cache;
    l->pid = st->xl->xport.remote_host.pid;
    l->remote_id = st->xl->remote_id;
    l->fd = st->t->hold_watch(st->xl);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = l};
    if (l->fd < 0 || epoll_ctl(s->linger_epfd, EPOLL_CTL_ADD, l->fd, &ev) != 0) {
        LLK_WARN(XS_FMT ": cannot watch pid %u (%s): cache %lld stays in use until the engine "
                 "stops", XS_ARGS(s, st), l->pid, strerror(errno), (long long)l->cache->id);
        if (l->fd >= 0)
            close(l->fd);
        l->fd = -1;
    }
    LLK_DEBUG(XS_FMT ": request %llu ended without XDONE; cache %lld stays held until pid %u "
              "exits", XS_ARGS(s, st), (unsigned long long)st->req_id, (long long)l->cache->id,
              l->pid);
    l->next = s->lingering;
    s->lingering = l;
    st->cache = NULL;
}

static void linger_free(struct llk_xserver *s, xs_linger_t *l)
{
    if (l->fd >= 0) {
        /* A dup of the link's pidfd: the description stays open, so epoll
         * would not forget it on close. */
        epoll_ctl(s->linger_epfd, EPOLL_CTL_DEL, l->fd, NULL);
        close(l->fd);
    }
    llk_registry_release(&s->e->reg, l->cache, NULL);
    free(l);
}

/* Releases the holds whose process is gone. */
static void linger_reap(struct llk_xserver *s)
{
    struct epoll_event evs[XS_MAX_EVENTS];
    int n = epoll_wait(s->linger_epfd, evs, XS_MAX_EVENTS, 0);
    for (int i = 0; i < n; i++) {
        xs_linger_t *gone = evs[i].data.ptr;
        for (xs_linger_t **pp = &s->lingering; *pp; pp = &(*pp)->next)
            if (*pp == gone) {
                *pp = gone->next;
                LLK_DEBUG("cluster %llu: pid %u (cluster %llu) exited: cache %lld released",
                          (unsigned long long)s->e->cluster_id, gone->pid,
                          (unsigned long long)gone->remote_id, (long long)gone->cache->id);
                linger_free(s, gone);
                break;
            }
    }
}

/*
 * The engine stops with holds still lingering: their processes live and
 * may still write into the caches' memory. The registry goes with the
 * engine, and memory the engine allocated is unmapped (a late write then
 * fails in the peer); memory the user registered outlives the engine and
 * is the user's to keep until those processes are gone. Nothing here can
 * wait for them, so each is logged as a warning that names the cache and
 * the pid.
 */
static void linger_stop(struct llk_xserver *s)
{
    linger_reap(s); /* those already gone need no warning */
    while (s->lingering) {
        xs_linger_t *l = s->lingering;
        s->lingering = l->next;
        LLK_WARN("cluster %llu: the engine stops while pid %u (cluster %llu) may still copy "
                 "into or out of cache %lld under an shm grant it did not end: do not reuse "
                 "that memory until the process exits", (unsigned long long)s->e->cluster_id,
                 l->pid, (unsigned long long)l->remote_id, (long long)l->cache->id);
        linger_free(s, l);
    }
    if (s->linger_epfd >= 0)
        close(s->linger_epfd);
    s->linger_epfd = -1;
}

/*
 * Ends a stream. reason NULL: the engine stops (the link is left to the
 * connection's teardown). Else the link breaks with it, except when the
 * peer closed the stream between requests (st->quiet): that is how a
 * graceful unlink or finalize looks from here, and breaking the link then
 * would make the reactor fail an unlink that is waiting for its
 * UNLINK_ACK. A peer that closes it for a failure kills the link itself,
 * and its control connection tells us.
 */
/*
 * llmlink.DebugFenceFill: a tcp WRITE fenced before its last byte came has
 * the range it never received filled with the option's byte, here, on the
 * owner thread, before the hold goes: a KV cache that a failed push left
 * half-written then shows it, and a test can check that the range keeps
 * exactly that byte afterwards (no late write). Only tcp knows what it did
 * not receive; an shm or rdma grant's peer writes on its own.
 */
static void fill_fenced(struct llk_xserver *s, xstream_t *st)
{
    int32_t fill = s->e->opts.debug_fence_fill;
    if (fill < 0 || !st->cache || st->phase != PH_WRITE || !st->t || !st->t->on_stream ||
        st->moved >= st->total)
        return;
    uint64_t off = st->cur_off, filled = 0;
    for (uint32_t i = st->cur_seg; i < st->nseg; i++, off = 0) {
        uint64_t len = st->segv[2 * i + 1] - off;
        memset((uint8_t *)(uintptr_t)st->segv[2 * i] + off, fill, (size_t)len);
        filled += len;
    }
    LLK_INFO(XS_FMT ": write request %llu fenced after %llu of %llu bytes: the %llu it never "
             "received are filled with 0x%02x (llmlink.DebugFenceFill)", XS_ARGS(s, st),
             (unsigned long long)st->req_id, (unsigned long long)st->moved,
             (unsigned long long)st->total, (unsigned long long)filled, (unsigned)fill);
}

static void end_stream(struct llk_xserver *s, xstream_t *st, const char *reason)
{
    llk_xlink_t *xl = st->xl;
    fill_fenced(s, st);
    /* The transport's grant first (rdma: its windows die), then the hold
     * (shm: it lingers while the peer's process may still copy). */
    end_grant(st, false);
    linger_hold(s, st);
    if (st->cache) {
        /* An admitted request that did not complete (a WRITE lets go of
         * the cache once its last byte is in, a READ after its last). */
        atomic_fetch_add_explicit(&xl->requests_fenced, 1, memory_order_relaxed);
        if (st->revocable)
            llk_registry_set_revocable(&s->e->reg, st->cache, false);
        st->revocable = false;
        if (st->cuttable)
            llk_registry_set_cuttable(&s->e->reg, st->cache, false);
        st->cuttable = false;
        llk_registry_release(&s->e->reg, st->cache, NULL);
        st->cache = NULL;
    }
    /* Forget the fd under xl->mu before closing it, so that a concurrent
     * llk_xlink_break cannot shut down a reused descriptor number. */
    pthread_mutex_lock(&xl->mu);
    if (xl->own_fd[st->slot] == st->fd)
        xl->own_fd[st->slot] = -1;
    bool was_broken = xl->broken;
    pthread_mutex_unlock(&xl->mu);
    /* As llk_conn_close_fd: deregister and shut down, not only close, in
     * case a fork()ed child holds a copy of the descriptor. */
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, st->fd, NULL);
    shutdown(st->fd, SHUT_RDWR);
    close(st->fd);
    if (reason) {
        if (st->quiet || was_broken)
            LLK_DEBUG(XS_FMT ": %s", XS_ARGS(s, st), reason);
        else
            LLK_WARN(XS_FMT ": %s", XS_ARGS(s, st), reason);
        if (!st->quiet) {
            llk_xlink_break(xl, "%s (owner stream %d)", reason, st->slot);
            llk_reactor_wake(s->e); /* it closes the link's control connection */
        }
    }
    if (st->prev)
        st->prev->next = st->next;
    else if (s->streams == st)
        s->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    llk_xlink_unref(xl);
    free_stream(st);
}

/* Ends a stream of a link that broke, reading nothing more from it: a
 * close with unread payload resets the connection, and the peer learns
 * from the stream's end that this side stopped (xfer/requester.c). */
/* The link broke while the peer held a grant that outlives the stream
 * (shm): an XDONE it sent before the break may be queued on the socket.
 * Reading it (a control frame: no cache byte is touched) ends the hold now
 * instead of when the peer's process exits. Bounded: a few steps, no
 * waiting. */
static void take_queued_done(struct llk_xserver *s, xstream_t *st)
{
    size_t budget = 0; /* header and XDONE steps move no payload */
    int64_t now = llk_now_ms();
    for (int i = 0; i < 4 && st->phase == PH_GRANTED && st->t->hold_watch &&
                    (st->state == XS_RX_HDR || st->state == XS_RX_BODY);
         i++)
        if (step(s, st, &budget, now) != 0)
            break;
}

static void end_broken(struct llk_xserver *s, xstream_t *st)
{
    take_queued_done(s, st);
    if (busy(st))
        fail(st, "the link broke during request %llu: its remaining payload is discarded",
             (unsigned long long)st->req_id);
    else
        fail(st, "the link broke");
    end_stream(s, st, st->why);
}

/* Makes epoll watch the direction the state needs: reading states wait for
 * input, sending states for room (armed only while it is the current
 * state, so an idle stream is not woken by a writable socket). */
static int set_events(struct llk_xserver *s, xstream_t *st)
{
    uint32_t want = EPOLLRDHUP | (sending(st) ? EPOLLOUT : EPOLLIN);
    if (want == st->events)
        return 0;
    struct epoll_event ev = {.events = want, .data.ptr = st};
    if (epoll_ctl(s->epfd, EPOLL_CTL_MOD, st->fd, &ev) != 0)
        return fail(st, "epoll_ctl: %s", strerror(errno));
    st->events = want;
    return 0;
}

/*
 * The progress floor of a tcp request (its bytes move on the stream):
 * from its admission, in windows of the link's wait (the smaller of both
 * ends' llm.SyncKvCacheWaitTime, the requester's own deadline), each
 * window must move LLK_XFER_FLOOR_BYTES_PER_S x the window, or finish the
 * request. A peer that trickles (a byte every 400 ms resets the stall
 * clock each time) holds the cache for one window at most; a request that
 * completes within its window is never judged; a large one is judged on
 * each window alone, so a fast start buys no slack later, and an honest
 * one over a busy link needs 1 MiB/s, far below what its requester's own
 * deadline asks. window_end: the current window's end, 0 when the floor
 * does not apply (no tcp request's bytes under way).
 */
#define LLK_XFER_FLOOR_BYTES_PER_S ((uint64_t)1 << 20)
static bool floor_applies(const xstream_t *st)
{
    return st->cuttable && st->cache && (st->phase == PH_READ || st->phase == PH_WRITE);
}

static int64_t window_end(const struct llk_xserver *s, const xstream_t *st)
{
    return floor_applies(st) ? st->win_start_ms + stall_limit(s, st) : 0;
}

/* 1: the window ended below the floor (st->why says so); 0: fine. */
static int check_progress(const struct llk_xserver *s, xstream_t *st, int64_t now)
{
    int64_t end = window_end(s, st);
    if (!end || now < end)
        return 0;
    int64_t win = stall_limit(s, st);
    uint64_t need = LLK_XFER_FLOOR_BYTES_PER_S * (uint64_t)win / 1000u;
    uint64_t got = st->moved - st->win_moved;
    if (got < need) {
        fail(st, "request %llu moved %llu bytes in %lld ms, below the floor of %llu bytes a "
             "second (%llu of %llu bytes done): cut", (unsigned long long)st->req_id,
             (unsigned long long)got, (long long)(now - st->win_start_ms),
             (unsigned long long)LLK_XFER_FLOOR_BYTES_PER_S, (unsigned long long)st->moved,
             (unsigned long long)st->total);
        return 1;
    }
    st->win_start_ms = now;
    st->win_moved = st->moved;
    return 0;
}

/* Runs the stream's state machine until it would block or used its share. */
static void serve(struct llk_xserver *s, xstream_t *st, int64_t now)
{
    size_t budget = XS_PASS_BYTES;
    int rc = 0;
    for (int i = 0; i < XS_PASS_STEPS && budget > 0 && rc == 0; i++) {
        /* Before every step, so before every recvmsg into a cache: once
         * the link broke, not one more byte of its payload is stored (what
         * the socket holds is dropped with it, see tcp.c). */
        if (llk_xlink_broken_now(st->xl)) {
            end_broken(s, st);
            return;
        }
        rc = step(s, st, &budget, now);
    }
    if (rc >= 0)
        rc = set_events(s, st);
    if (rc < 0) {
        end_stream(s, st, st->why);
        return;
    }
    if (busy(st) && st->progress_ms + stall_limit(s, st) < s->next_check_ms)
        s->next_check_ms = st->progress_ms + stall_limit(s, st);
    int64_t w = busy(st) ? window_end(s, st) : 0;
    if (w && w < s->next_check_ms)
        s->next_check_ms = w;
}

static void on_event(struct llk_xserver *s, xstream_t *st, uint32_t ev, int64_t now)
{
    /* A broken link's stream never serves again (a replacement link of the
     * same peer has its own streams). The fence's shutdown woke us. */
    if (llk_xlink_broken_now(st->xl)) {
        end_broken(s, st);
        return;
    }
    /* A sending stream does not read, so a hang-up would fire again and
     * again: end it now. A reading one finds EOF or the error by reading. */
    if (sending(st) && (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        int err = 0;
        socklen_t len = sizeof err;
        if ((ev & EPOLLERR) && getsockopt(st->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err)
            fail(st, "socket error: %s", strerror(err));
        else
            fail(st, "peer closed the stream in the middle of request %llu",
                 (unsigned long long)st->req_id);
        end_stream(s, st, st->why);
        return;
    }
    serve(s, st, now);
}

/* Ends the streams that made no progress for stall_ms during a request. */
static void check_stalls(struct llk_xserver *s, int64_t now)
{
    if (now < s->next_check_ms)
        return;
    s->next_check_ms = INT64_MAX;
    xstream_t *nx;
    for (xstream_t *st = s->streams; st; st = nx) {
        nx = st->next;
        if (!busy(st))
            continue;
        int64_t deadline = st->progress_ms + stall_limit(s, st);
        if (deadline <= now) {
            fail(st, "peer stalled for %lld ms", (long long)(now - st->progress_ms));
            end_stream(s, st, st->why);
            continue;
        }
        if (check_progress(s, st, now)) {
            end_stream(s, st, st->why);
            continue;
        }
        int64_t w = window_end(s, st);
        if (w && w < deadline)
            deadline = w;
        if (deadline < s->next_check_ms)
            s->next_check_ms = deadline;
    }
}

/* An unregister timed out on caches whose users are tcp requests of this
 * thread (llk_registry_remove): cut those requests, as a stall would. */
static void cut_requested(struct llk_xserver *s)
{
    if (!atomic_exchange(&s->cut_pending, false))
        return;
    xstream_t *nx;
    for (xstream_t *st = s->streams; st; st = nx) {
        nx = st->next;
        if (!st->cuttable || !st->cache || !llk_registry_cut_requested(&s->e->reg, st->cache))
            continue;
        fail(st, "request %llu cut by llmlink_unregister_cache of cache %lld (%llu of %llu "
             "bytes done)", (unsigned long long)st->req_id, (long long)st->cache->id,
             (unsigned long long)st->moved, (unsigned long long)st->total);
        end_stream(s, st, st->why);
    }
}

void llk_xserver_cut(void *ctx)
{
    llmlink_t *e = ctx;
    struct llk_xserver *s = e->xsrv;
    if (!s)
        return;
    atomic_store(&s->cut_pending, true);
    wake(s);
}

static int wait_timeout(const struct llk_xserver *s, int64_t now)
{
    if (s->next_check_ms == INT64_MAX)
        return XS_TIMEOUT_CAP_MS;
    int64_t ms = s->next_check_ms - now;
    if (ms < 0)
        ms = 0;
    return ms > XS_TIMEOUT_CAP_MS ? XS_TIMEOUT_CAP_MS : (int)ms;
}

/* Moves adopted streams onto the thread's list. Returns the stop flag. */
static bool take_pending(struct llk_xserver *s)
{
    pthread_mutex_lock(&s->mu);
    xstream_t *p = s->pending;
    s->pending = NULL;
    bool stop = s->stop;
    pthread_mutex_unlock(&s->mu);
    while (p) {
        xstream_t *nx = p->next;
        p->prev = NULL;
        p->next = s->streams;
        if (s->streams)
            s->streams->prev = p;
        s->streams = p;
        p = nx;
    }
    return stop;
}

/* epoll_wait, but right after activity (`busy`) first look without
 * sleeping for a short while (base/spin.h): a requester making small calls
 * one after another sends its next request within microseconds, and
 * waking this thread for it costs more than serving it. Bounded: then it
 * sleeps as before. */
static int epoll_spin(int epfd, struct epoll_event *evs, int timeout_ms, bool busy,
                      llk_spin_t *sp)
{
    /* One owner thread of the process (engines) spins at a time. */
    static atomic_int gate;
    int64_t budget = busy && timeout_ms != 0 ? llk_spin_budget(sp) : 0;
    if (budget > 0 && llk_spin_enter(&gate)) {
        int64_t until = llk_now_ns() + budget;
        int n = 0;
        do {
            n = epoll_wait(epfd, evs, XS_MAX_EVENTS, 0);
            if (n != 0)
                break;
            sched_yield(); /* the requester may be waiting for this CPU */
        } while (llk_now_ns() < until);
        llk_spin_leave(&gate);
        llk_spin_result(sp, n != 0);
        if (n != 0)
            return n;
    }
    return epoll_wait(epfd, evs, XS_MAX_EVENTS, timeout_ms);
}

static void *xserver_main(void *arg)
{
    struct llk_xserver *s = arg;
    struct epoll_event evs[XS_MAX_EVENTS];
    pthread_setname_np(pthread_self(), "xserver");
    llk_spin_t spin = {0, 0};
    int n = 0;
    while (!take_pending(s)) {
        n = epoll_spin(s->epfd, evs, wait_timeout(s, llk_now_ms()), n > 0, &spin);
        int err = errno;
        /* A stream epoll reports was added before it went on the pending
         * list (both under s->mu): take it before looking at the events. */
        if (take_pending(s))
            break;
        if (n < 0 && err != EINTR)
            LLK_ERROR("cluster %llu: owner thread: epoll_wait: %s",
                      (unsigned long long)s->e->cluster_id, strerror(err));
        int64_t now = llk_now_ms();
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                uint64_t v;
                ssize_t r = read(s->wakefd, &v, sizeof v);
                (void)r;
            } else if (evs[i].data.ptr == &s->linger_epfd) {
                linger_reap(s);
            } else {
                on_event(s, evs[i].data.ptr, evs[i].events, now);
            }
        }
        cut_requested(s);
        check_stalls(s, now);
    }
    return NULL;
}

/* ---- the API ------------------------------------------------------------------ */

llmlink_status_t llk_xserver_start(llmlink_t *e)
{
    if (e->xsrv)
        return llk_err(LLMLINK_FAILED, "cluster %llu: the owner thread is running already",
                       (unsigned long long)e->cluster_id);
    llmlink_status_t st;
    struct llk_xserver *s = calloc(1, sizeof *s);
    if (!s)
        return llk_err(LLMLINK_FAILED, "llmlink_init: out of memory for the owner thread");
    s->e = e;
    s->stall_ms = e->opts.sync_kv_wait_ms > 0 ? e->opts.sync_kv_wait_ms : 1000;
    s->next_check_ms = INT64_MAX;
    s->linger_epfd = -1;
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        st = llk_err(LLMLINK_FAILED, "llmlink_init: pthread_mutex_init failed");
        goto fail_mutex;
    }
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (s->epfd < 0) {
        st = llk_err(LLMLINK_FAILED, "llmlink_init: owner thread: epoll_create1: %s",
                     strerror(errno));
        goto fail_epoll;
    }
    s->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->wakefd < 0) {
        st = llk_err(LLMLINK_FAILED, "llmlink_init: owner thread: eventfd: %s", strerror(errno));
        goto fail_eventfd;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}; /* NULL: the wake fd */
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->wakefd, &ev) != 0 || linger_init(s) != 0) {
        st = llk_err(LLMLINK_FAILED, "llmlink_init: owner thread: epoll_ctl: %s",
                     strerror(errno));
        goto fail_thread;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, XS_THREAD_STACK);
    int rc = pthread_create(&s->thread, &attr, xserver_main, s);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        st = llk_err(LLMLINK_FAILED, "llmlink_init: cannot start the owner thread: %s",
                     strerror(rc));
        goto fail_thread;
    }
    s->started = true;
    e->xsrv = s;
    return LLMLINK_SUCCESS;

fail_thread:
    if (s->linger_epfd >= 0)
        close(s->linger_epfd);
    close(s->wakefd);
fail_eventfd:
    close(s->epfd);
fail_epoll:
    pthread_mutex_destroy(&s->mu);
fail_mutex:
    free(s);
    return st;
}

void llk_xserver_stop(llmlink_t *e)
{
    struct llk_xserver *s = e->xsrv;
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_mutex_unlock(&s->mu);
    wake(s);
    if (s->started)
        pthread_join(s->thread, NULL);
    s->started = false;
    /* The thread is gone: this one owns every stream now. */
    take_pending(s);
    while (s->streams)
        end_stream(s, s->streams, NULL);
    linger_stop(s);
    close(s->wakefd);
    close(s->epfd);
    pthread_mutex_destroy(&s->mu);
    free(s);
    e->xsrv = NULL;
}

/* Takes the slot for fd in xl unless the link broke. SUCCESS or the status. */
static llmlink_status_t claim_slot(llk_xlink_t *xl, int slot, int fd)
{
    llmlink_status_t rc = LLMLINK_SUCCESS;
    pthread_mutex_lock(&xl->mu);
    if (xl->broken)
        rc = llk_err(LLMLINK_NOT_YET_LINK, "the link with cluster %llu (%s) is broken: %s",
                     (unsigned long long)xl->remote_id, xl->peer, xl->why);
    else if (xl->own_fd[slot] >= 0)
        rc = llk_err(LLMLINK_PROTOCOL_ERROR, "the link with cluster %llu (%s) has owner "
                     "stream %d already", (unsigned long long)xl->remote_id, xl->peer, slot);
    else
        xl->own_fd[slot] = fd;
    pthread_mutex_unlock(&xl->mu);
    return rc;
}

static void unclaim_slot(llk_xlink_t *xl, int slot, int fd)
{
    pthread_mutex_lock(&xl->mu);
    if (xl->own_fd[slot] == fd)
        xl->own_fd[slot] = -1;
    pthread_mutex_unlock(&xl->mu);
}

llmlink_status_t llk_xserver_adopt(llmlink_t *e, llk_xlink_t *xl, int slot, int fd)
{
    struct llk_xserver *s = e->xsrv;
    if (!s)
        return llk_err(LLMLINK_FAILED, "cluster %llu: the owner thread is not running",
                       (unsigned long long)e->cluster_id);
    /* Any slot the peer attached: a server's xlink has no stream count of
     * its own (xl->nstreams is the client's). */
    if (slot < 0 || slot >= LLK_MAX_STREAMS || fd < 0)
        return llk_err(LLMLINK_PARAM_INVALID, "cluster %llu: bad owner stream %d (fd %d) for "
                       "the link with cluster %llu", (unsigned long long)e->cluster_id, slot,
                       fd, (unsigned long long)xl->remote_id);
    /* Requests and answers are small frames: do not let Nagle hold them. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    xstream_t *st = calloc(1, sizeof *st);
    if (!st)
        return llk_err(LLMLINK_OUT_OF_MEMORY, "cluster %llu: out of memory for an owner stream",
                       (unsigned long long)e->cluster_id);
    st->xl = xl;
    st->slot = slot;
    st->fd = fd;
    st->state = XS_RX_HDR;
    st->phase = PH_IDLE;
    st->events = EPOLLIN | EPOLLRDHUP;
    llmlink_status_t rc = claim_slot(xl, slot, fd);
    if (rc != LLMLINK_SUCCESS) {
        free(st);
        return rc;
    }
    llk_xlink_ref(xl);
    pthread_mutex_lock(&s->mu);
    if (s->stop) {
        rc = llk_err(LLMLINK_ENGINE_FINALIZED, "cluster %llu: the engine is stopping",
                     (unsigned long long)e->cluster_id);
    } else {
        /* Added under s->mu, before it goes on the pending list: see
         * xserver_main. */
        struct epoll_event ev = {.events = st->events, .data.ptr = st};
        if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
            rc = llk_err(LLMLINK_FAILED, "cluster %llu: owner stream: epoll_ctl: %s",
                         (unsigned long long)e->cluster_id, strerror(errno));
        else {
            st->next = s->pending;
            s->pending = st;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (rc != LLMLINK_SUCCESS) {
        unclaim_slot(xl, slot, fd);
        llk_xlink_unref(xl);
        free(st);
        return rc;
    }
    wake(s);
    LLK_DEBUG("cluster %llu: owner stream %d of the link with cluster %llu (%s) adopted",
              (unsigned long long)e->cluster_id, slot, (unsigned long long)xl->remote_id,
              xl->peer);
    return LLMLINK_SUCCESS;
}

/* ---- test seam (owner_testing.h) ------------------------------------------------ */

int llk_test_owner_request(llmlink_t *e, llk_xlink_t *xl, uint64_t req_id,
                           const uint8_t *payload, size_t len, llk_test_owner_seen_fn *seen,
                           void *ctx, uint8_t *answer, size_t answer_cap, size_t *answer_len)
{
    /* A server and a stream as the owner thread holds them, without the
     * thread or a socket: on_request is the production code, and what it
     * leaves in tx is the answer it would send. */
    struct llk_xserver s;
    memset(&s, 0, sizeof s);
    s.e = e;
    s.epfd = s.wakefd = s.linger_epfd = -1;
    s.stall_ms = 1000;
    s.next_check_ms = INT64_MAX;
    s.test_admitted = seen;
    s.test_ctx = ctx;
    xstream_t *st = calloc(1, sizeof *st);
    if (!st)
        return -1;
    st->xl = xl;
    st->fd = -1;
    st->state = XS_RX_BODY;
    st->phase = PH_IDLE;
    st->h.type = LLK_XMSG_REQ;
    st->h.length = (uint32_t)len;
    st->h.req_id = req_id;
    st->rx = malloc(len ? len : 1);
    if (!st->rx) {
        free(st);
        return -1;
    }
    if (len)
        memcpy(st->rx, payload, len);
    st->rx_cap = st->rx_got = len;
    int rc = on_request(&s, st);
    *answer_len = 0;
    if (rc == 0 && st->tx_len <= answer_cap) {
        memcpy(answer, st->tx, st->tx_len);
        *answer_len = st->tx_len;
    }
    /* The request ends here as on a stream that closes: the grant first,
     * then the hold. */
    end_grant(st, false);
    release_cache(&s, st);
    free_stream(st);
    return rc < 0 ? -1 : 0;
}

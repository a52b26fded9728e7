/* xfer/requester.c - the requester side of one plan: every borrowed data
 * stream carries its share of the plan's segments, all streams at once from
 * this thread (poll). Each request goes over the transport that
 * llk_transport_choose picks (transport.h): one whose bytes travel on the
 * stream itself is driven by the poll loop here, straight from and into the
 * registered memory; any other gets the owner's answer and moves the bytes
 * itself (its move hook), then this side sends XDONE. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/spin.h"
#include "link/engine.h"
#include "link/tls.h"
#include "xfer/xfer.h"

/* Segments per request frame (a 330 KB frame at most). */
#define CHUNK_SEGS 16384u
/* iovecs per sendmsg/recvmsg. */
#define IOV_BATCH 64
/* Bytes moved on one stream before looking at the others. */
#define PASS_BYTES (8u << 20)
/* SO_RCVLOWAT while receiving bytes (see set_lowat). */
#define LOWAT_BYTES (256u << 10)
/* Where a cancelled READ's remaining payload is received and dropped. */
#define DISCARD_BYTES (256u << 10)

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
    const llk_transport_ops_t *t; /* its transport */
    uint8_t op;               /* its op */
    bool final_resp;          /* WRITE: the RESP now awaited is the final one */
    bool redo;                /* after the DONE in tx: redo the request on the stream */
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
    llk_xseg_wire_t *wsegs; /* scratch for encoding: min(CHUNK_SEGS, plan segments) */
    int lowat;              /* SO_RCVLOWAT now set (0: the default, 1) */
    bool write_out;         /* WRITE payload went out and its final answer has not come */
} stream_run_t;

typedef struct run_state {
    llk_xfer_ctx_t *ctx;
    stream_run_t *s;
    int n;
    llmlink_status_t refusal;  /* first refusal from the owner */
    llmlink_status_t failure;  /* first stream failure: the link is lost */
    char msg[LLK_ERR_MSG_MAX];
    /* Cancel (xfer/cancel.h): seen while work was left; from then on no
     * request starts, READ payload goes to discard (never into the cache)
     * and no transport moves a byte. cancel_kill: a tcp WRITE had started,
     * which only the link's failure path can stop. */
    bool cancelled, cancel_kill, cancel_off;
    uint8_t *discard;
    char cancel_what[160];
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

/* Puts the request for segs[c0, c1) over transport t in tx. */
static bool build_request(run_state_t *rs, stream_run_t *s, const llk_transport_ops_t *t)
{
    uint8_t op = rs->ctx->push ? t->op_write : t->op_read;
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
    s->t = t;
    s->op = op;
    s->tx_off = 0;
    s->final_resp = false;
    s->ph = PH_SEND;
    s->after_send = PH_RESP;
    s->hdr_got = s->rx_got = 0;
    /* CONSUME (no segment) moves no data: no transport's request. */
    if (r.nseg)
        rs->ctx->requests[t->index]++;
    return true;
}

/* A transport refused the call (out): the first refusal is the call's. */
static void take_refusal(run_state_t *rs, const llk_xmove_out_t *out)
{
    if (rs->refusal == LLMLINK_SUCCESS && rs->failure == LLMLINK_SUCCESS) {
        rs->refusal = out->refusal;
        snprintf(rs->msg, sizeof rs->msg, "%s", out->msg);
    }
}

/* Starts this stream's next request, or finishes it. */
static void next_request(run_state_t *rs, stream_run_t *s)
{
    if (rs->refusal != LLMLINK_SUCCESS || rs->failure != LLMLINK_SUCCESS || rs->cancelled) {
        s->ph = PH_FINISHED;
        return;
    }
    if (s->consume) {
        /* The CONSUME request: no segment, drops the CacheKey. */
        s->consume = false;
        s->c0 = s->c1 = 0;
        llk_xfer_ctx_t *ctx = rs->ctx;
        uint16_t keep = ctx->hdr.flags;
        bool push = ctx->push;
        ctx->hdr.flags = LLK_XREQ_CONSUME;
        ctx->push = false; /* a READ on the stream */
        build_request(rs, s, LLK_TRANSPORT_ON_STREAM);
        ctx->hdr.flags = keep;
        ctx->push = push;
        return;
    }
    if (s->seg_next >= s->seg_end) {
        s->ph = PH_FINISHED;
        return;
    }
    s->c0 = s->seg_next;
    s->c1 = s->c0 + CHUNK_SEGS < s->seg_end ? s->c0 + CHUNK_SEGS : s->seg_end;
    s->seg_next = s->c1;
    llk_xmove_out_t out;
    out.refusal = LLMLINK_SUCCESS;
    const llk_transport_ops_t *t = llk_transport_choose(rs->ctx, s->fd, &out);
    if (!t) {
        take_refusal(rs, &out);
        s->ph = PH_FINISHED;
        return;
    }
    build_request(rs, s, t);
}

/* The request for segs[c0, c1) again, on the stream (after its transport
 * gave up on this link). */
static void redo_on_stream(run_state_t *rs, stream_run_t *s)
{
    s->redo = false;
    if (rs->cancelled) { /* a cancelled call starts no request */
        s->ph = PH_FINISHED;
        return;
    }
    build_request(rs, s, LLK_TRANSPORT_ON_STREAM);
}

/* XDONE, or XDONE with the generation of the grant it ends. */
static void queue_done_frame(run_state_t *rs, stream_run_t *s, uint32_t status, bool with_gen,
                             uint64_t gen)
{
    if (!grow(&s->tx, &s->tx_cap, LLK_XWIRE_HEADER_SIZE + 12)) {
        fail(rs, s, LLMLINK_OUT_OF_MEMORY, "out of memory");
        return;
    }
    s->tx_len = with_gen ? llk_xwire_encode_done_gen(s->tx, s->tx_cap, s->req_id, status, gen)
                     : llk_xwire_encode_done(s->tx, s->tx_cap, s->req_id, status);
    s->tx_off = 0;
    s->ph = PH_SEND;
    s->after_send = PH_FINISHED; /* decided in on_sent */
}

static uint64_t chunk_bytes(const llk_plan_t *p, const stream_run_t *s);

/* The owner granted the request (its answer in hdr/rx, r the decoded
 * XRESP or NULL for the transport's own answer type): the transport moves
 * the bytes; then XDONE, a redo on the stream, a refusal or a failure. */
static void transport_move(run_state_t *rs, stream_run_t *s, const llk_xresp_t *r)
{
    const llk_plan_t *p = rs->ctx->plan;
    llk_xmove_t m = {.ctx = rs->ctx, .slot = s->slot, .fd = s->fd, .op = s->op,
                     .segs = &p->segs[s->c0], .nseg = s->c1 - s->c0, .bytes = chunk_bytes(p, s),
                     .h = &s->h, .payload = s->rx, .resp = r};
    llk_xmove_out_t out;
    memset(&out, 0, offsetof(llk_xmove_out_t, msg));
    out.msg[0] = '\0';
    s->t->move(&m, &out);
    if (out.failure != LLMLINK_SUCCESS) {
        fail(rs, s, out.failure, "%s", out.msg);
        return;
    }
    if (out.send_done)
        queue_done_frame(rs, s, out.done_status, out.done_gen, out.gen);
    if (out.refusal != LLMLINK_SUCCESS)
        take_refusal(rs, &out);
    if (out.send_done) {
        s->redo = out.redo_on_stream;
        return;
    }
    if (out.redo_on_stream)
        redo_on_stream(rs, s);
    else if (out.refusal != LLMLINK_SUCCESS)
        s->ph = PH_FINISHED;
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

/* A whole RESP frame is in hdr/rx. */
static void on_resp(run_state_t *rs, stream_run_t *s)
{
    const char *why = NULL;
    llk_xresp_t r;
    const llk_transport_ops_t *t = s->t;
    /* A grant of the transport's own answer type. */
    bool own_answer = !t->on_stream && t->answer_type != LLK_XMSG_RESP;
    if (own_answer && s->h.type == t->answer_type && s->h.req_id == s->req_id) {
        transport_move(rs, s, NULL);
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
    if (own_answer && r.status == LLMLINK_SUCCESS) {
        fail(rs, s, LLMLINK_PROTOCOL_ERROR, "an %s request answered without a grant", t->title);
        return;
    }
    if (!t->on_stream && r.status == LLMLINK_FEATURE_NOT_ENABLED && t->refused) {
        /* The owner does not allow this transport on this link. */
        llk_xmove_out_t out;
        memset(&out, 0, offsetof(llk_xmove_out_t, msg));
        t->refused(rs->ctx, r.msg, &out);
        if (out.redo_on_stream) {
            redo_on_stream(rs, s);
        } else {
            take_refusal(rs, &out);
            s->ph = PH_FINISHED;
        }
        return;
    }
    if (r.status != LLMLINK_SUCCESS) {
        refuse(rs, s, r.status, r.msg);
        return;
    }
    const llk_plan_t *p = rs->ctx->plan;
    if (!t->on_stream) {
        transport_move(rs, s, &r);
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
    if (s->op == t->op_write && s->final_resp) {
        s->write_out = false; /* the owner stored it all */
        next_request(rs, s);
        return;
    }
    s->cur = s->c0;
    s->cur_off = 0;
    s->ph = s->op == t->op_read ? PH_DATA_IN : PH_DATA_OUT;
    s->write_out = s->ph == PH_DATA_OUT;
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
    if (s->redo)
        redo_on_stream(rs, s);
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

/* What a cancel does to stream s now (see on_cancel); NULL: nothing to say. */
static const char *cancel_stream(run_state_t *rs, stream_run_t *s)
{
    if (s->ph == PH_FINISHED)
        return NULL;
    if (s->ph == PH_SEND && s->after_send == PH_RESP && s->tx_off == 0) {
        s->ph = PH_FINISHED; /* not a byte of it went out: it never happened */
        return "its next request was not sent";
    }
    if (s->ph == PH_SEND && s->after_send != PH_RESP)
        return NULL; /* an XDONE going out: the owner drops its hold */
    if (!s->t->on_stream)
        return "no further copy, the grant is ended with XDONE"; /* its move checks the cancel */
    if (s->op == s->t->op_write) {
        /* The owner stores what it receives and cannot be told to stop:
         * only the failure path (kill the link, wait for the owner to end
         * the stream) fences it. */
        rs->cancel_kill = true;
        fail(rs, s, LLMLINK_CANCELLED_LINK_CLOSED,
             "cancelled with a tcp WRITE under way (its request or payload was on the wire)");
        return "a tcp WRITE was under way: the link was closed";
    }
    if (!rs->discard)
        rs->discard = malloc(DISCARD_BYTES);
    if (!rs->discard) {
        rs->cancel_kill = true;
        fail(rs, s, LLMLINK_CANCELLED_LINK_CLOSED, "cancelled, and out of memory to drain a READ");
        return "out of memory to drain a tcp READ: the link was closed";
    }
    return "the rest of its tcp READ payload is received and discarded";
}

/*
 * A cancel was asked for and the call still has work: from now on no
 * request starts and nothing more lands in either side's memory. A tcp
 * READ drains into discard (its stream comes back clean), an shm or RDMA
 * request ends its grant with XDONE(CANCELLED) without moving a byte, a
 * request not yet sent is dropped; all that is fenced at once. A tcp WRITE
 * already started is failed: the link is killed and the fence signalled
 * after the owner ended its streams (llk_xfer_execute).
 */
static void on_cancel(run_state_t *rs)
{
    rs->cancelled = true;
    for (int i = 0; i < rs->n; i++) {
        stream_run_t *s = &rs->s[i];
        const char *t = s->ph == PH_FINISHED ? NULL : s->t ? s->t->title : "tcp";
        int slot = s->slot;
        bool killed = rs->cancel_kill;
        const char *what = cancel_stream(rs, s);
        /* the first stream's story, or the first that closed the link */
        if (what && (!rs->cancel_what[0] || (rs->cancel_kill && !killed)))
            snprintf(rs->cancel_what, sizeof rs->cancel_what, "data stream %d (%s): %s", slot, t,
                     what);
    }
    if (!rs->cancel_what[0])
        snprintf(rs->cancel_what, sizeof rs->cancel_what, "between requests");
    if (!rs->cancel_kill)
        llk_cancel_fenced_as(rs->ctx->cancel, LLMLINK_CANCELLED);
}

/* Has a cancel come that this call has not acted on yet? */
static void poll_cancel(run_state_t *rs)
{
    if (!rs->cancelled && !rs->cancel_off && llk_cancel_requested(rs->ctx->cancel))
        on_cancel(rs);
}

/* Moves what the socket takes now. Returns the poll events still wanted. */
static short step(run_state_t *rs, stream_run_t *s)
{
    const llk_plan_t *p = rs->ctx->plan;
    size_t moved = 0;
    for (int guard = 0; guard < 4096 && s->ph != PH_FINISHED && moved < PASS_BYTES; guard++) {
        ssize_t r;
        poll_cancel(rs);
        if (s->ph == PH_FINISHED)
            break;
        if (s->ph == PH_DATA_IN && rs->cancelled) {
            /* Cancelled READ: exactly the rest of its payload, never into the cache. */
            uint64_t due = bytes_due(p, s);
            r = recv(s->fd, rs->discard, due < DISCARD_BYTES ? (size_t)due : DISCARD_BYTES,
                     MSG_DONTWAIT);
            if (r > 0) {
                if (cursor_advance(p, s, (size_t)r))
                    next_request(rs, s);
                continue;
            }
        } else if (s->ph == PH_SEND) {
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

/* This thread's spin state (base/spin.h): requesters are the callers'
 * threads, each with its own. */
static _Thread_local llk_spin_t g_spin;
/* One requester thread of the process spins at a time (base/spin.h). */
static atomic_int g_spin_gate;

/* poll, but first look without sleeping for a short while (base/spin.h:
 * a small request's answer usually comes within tens of microseconds, and
 * the wake-up costs more than the request). Bounded: then it sleeps. */
static int poll_spin(struct pollfd *pf, nfds_t np, int timeout_ms)
{
    int64_t budget = llk_spin_budget(&g_spin);
    if (budget > 0 && llk_spin_enter(&g_spin_gate)) {
        int64_t until = llk_now_ns() + budget;
        int r = 0;
        do {
            r = poll(pf, np, 0);
            if (r != 0)
                break;
            sched_yield(); /* the thread that answers may be waiting for this CPU */
        } while (llk_now_ns() < until);
        llk_spin_leave(&g_spin_gate);
        llk_spin_result(&g_spin, r != 0);
        if (r != 0)
            return r;
    }
    return poll(pf, np, timeout_ms);
}

/* Runs every stream until all are finished or the deadline passes. */
static void run_streams(run_state_t *rs)
{
    struct pollfd pf[LLK_MAX_STREAMS + 1];
    int map[LLK_MAX_STREAMS];
    for (int round = 0; round < 100000000; round++) {
        poll_cancel(rs);
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
        /* A cancel wakes this thread at once (its eventfd stays readable,
         * so it is watched only until the cancel is acted on). */
        nfds_t nw = (nfds_t)np;
        llk_xfer_cancel_t *cx = rs->ctx->cancel;
        if (cx && !rs->cancelled && !rs->cancel_off)
            pf[nw++] = (struct pollfd){.fd = cx->wake_fd, .events = POLLIN};
        int64_t left = rs->ctx->deadline_ms - llk_now_ms();
        if (left <= 0) {
            for (int k = 0; k < np; k++)
                fail(rs, &rs->s[map[k]], LLMLINK_WAIT_PROCESS_TIMEOUT,
                     "not done within llm.SyncKvCacheWaitTime");
            return;
        }
        int r = poll_spin(pf, nw, left > 1000 ? 1000 : (int)left);
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

/* How long a failed call waits for the owner to end its WRITE streams:
 * long enough for the control connection's close to reach the peer and
 * its owner thread to react, short enough not to hold the caller. */
static int fence_wait_ms(const llmlink_t *e)
{
    int ms = e->opts.sync_kv_wait_ms;
    return ms < 100 ? 100 : ms > 1000 ? 1000 : ms;
}

/* The owner has closed its end of fd (after this side's shutdown): its
 * FIN (TIME_WAIT, CLOSING) or RST (CLOSE) came. This side only shut its
 * own end, which leaves it in FIN_WAIT1/2; the owner's fence sends
 * nothing before its owner thread closes the stream (transport/tcp.c). */
static bool owner_ended(int fd)
{
    /* TLS: the relay saw the owner's end (llk_tls_peer_ended). */
    int tls = llk_tls_peer_ended(fd);
    if (tls >= 0)
        return tls == 1;
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
        return true; /* nothing left to wait on */
    return ti.tcpi_state != TCP_ESTABLISHED && ti.tcpi_state != TCP_FIN_WAIT1 &&
           ti.tcpi_state != TCP_FIN_WAIT2;
}

/*
 * The call failed with WRITE payload on its way (in this side's socket,
 * in flight, in the owner's receive queue): it must not return while the
 * owner may still store it. The link is broken already (so the control
 * connection closes and the owner breaks its side, and its owner thread
 * stops at its next step); wait, bounded, until the owner has closed each
 * such stream. Pulls need no wait: this thread stopped reading, so nothing
 * lands here after it returns.
 */
static void wait_owner_fenced(run_state_t *rs)
{
    llk_xfer_ctx_t *ctx = rs->ctx;
    int64_t until = llk_now_ms() + fence_wait_ms(ctx->e);
    for (int i = 0; i < rs->n; i++) {
        stream_run_t *s = &rs->s[i];
        if (!s->write_out || !s->t || !s->t->on_stream)
            continue;
        while (!owner_ended(s->fd) && llk_now_ms() < until)
            poll(NULL, 0, 1);
        if (!owner_ended(s->fd))
            LLK_WARN("%s: cluster %llu did not end data stream %d of the failed write within "
                     "%d ms (link %s): bytes of it may still land in its memory",
                     ctx->fn, (unsigned long long)ctx->xl->remote_id, s->slot,
                     fence_wait_ms(ctx->e), ctx->xl->peer);
    }
}

/* The status of a call that a cancel stopped, with what it did. */
static llmlink_status_t cancel_status(run_state_t *rs, bool link_closed)
{
    llk_xfer_ctx_t *ctx = rs->ctx;
    if (link_closed)
        return llk_err(LLMLINK_CANCELLED_LINK_CLOSED, "%s: cancelled: %s; the transport could not "
                       "stop it alone, so the link was closed and fenced (%s)", ctx->fn,
                       rs->cancel_what, rs->msg);
    return llk_err(LLMLINK_CANCELLED, "%s: cancelled: %s (cluster %llu, %s); the link stays "
                   "usable", ctx->fn, rs->cancel_what, (unsigned long long)ctx->xl->remote_id,
                   ctx->xl->peer);
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
     * the link's. A request never holds more segments than the plan has:
     * a small call takes a small buffer (CHUNK_SEGS of them is 384 KiB,
     * which costs more than the request itself). */
    size_t wcap = p->nsegs < CHUNK_SEGS ? (p->nsegs ? p->nsegs : 1) : CHUNK_SEGS;
    for (uint32_t i = 0; i < want && i < LLK_MAX_STREAMS; i++) {
        s[i].wsegs = malloc(wcap * sizeof *s[i].wsegs);
        if (!s[i].wsegs) {
            free_runs(s, (int)want);
            return llk_err(LLMLINK_OUT_OF_MEMORY, "%s: out of memory", ctx->fn);
        }
    }
    /* Waiting for a stream that other calls hold is no failure of the
     * link: a timeout here leaves it up (nothing went on the wire). */
    int n = llk_xlink_borrow_cx(ctx->xl, want, idx, ctx->deadline_ms, ctx->fn, ctx->cancel);
    if (n < 0) {
        free_runs(s, (int)want);
        llmlink_status_t st = llk_err_status();
        if (st == LLMLINK_CANCELLED)
            llk_cancel_fenced_as(ctx->cancel, LLMLINK_CANCELLED); /* nothing was touched */
        return st;
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
    if (rs.failure == LLMLINK_SUCCESS && rs.refusal == LLMLINK_SUCCESS && !rs.cancelled &&
        ctx->consume_key) {
        /* Every byte is in place: a cancel now changes nothing. */
        rs.cancel_off = true;
        s[0].consume = true;
        rs.n = 1;
        next_request(&rs, &s[0]);
        run_streams(&rs);
    }
    /* A transport that saw the cancel before this loop did (shm between
     * batches, RDMA with work posted) stopped the call itself. */
    if (!rs.cancelled && !rs.cancel_off && llk_cancel_requested(ctx->cancel) &&
        (rs.failure != LLMLINK_SUCCESS || rs.refusal != LLMLINK_SUCCESS)) {
        rs.cancelled = true;
        snprintf(rs.cancel_what, sizeof rs.cancel_what, "%s",
                 rs.failure != LLMLINK_SUCCESS ? "the transport stopped with the link"
                                               : "the transport stopped the request");
    }
    if (rs.failure != LLMLINK_SUCCESS) {
        /* Broken before any of these streams is given back: a call waiting
         * in llk_xlink_borrow gets NOT_YET_LINK, never a stream in the
         * middle of this call's payload. */
        *link_failed = true;
        llk_xfer_kill_link(ctx->e, ctx->xl, rs.msg);
        wait_owner_fenced(&rs);
    }
    /* Whatever ended the call, nothing of it lands any more. */
    if (rs.cancelled)
        llk_cancel_fenced_as(ctx->cancel, *link_failed ? LLMLINK_CANCELLED_LINK_CLOSED
                                                       : LLMLINK_CANCELLED);
    else if (llk_cancel_requested(ctx->cancel))
        llk_cancel_fenced(ctx->cancel);
    free_runs(s, (int)want);
    free(rs.discard);
    llk_xlink_give_back(ctx->xl, idx, n);
    if (rs.cancelled)
        return cancel_status(&rs, *link_failed);
    if (rs.failure != LLMLINK_SUCCESS)
        return llk_err(rs.failure, "%s", rs.msg);
    if (rs.refusal != LLMLINK_SUCCESS)
        return llk_err(rs.refusal, "%s", rs.msg);
    return LLMLINK_SUCCESS;
}

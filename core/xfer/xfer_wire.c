/* xfer_wire.c - data-stream frame and message codecs (see xfer_wire.h). */
#include "xfer/xfer_wire.h"

#include "base/bytes.h"
#include "xfer/xfer_wire_codec.h"

#define XREQ_KNOWN_FLAGS (LLK_XREQ_WHOLE | LLK_XREQ_CONSUME | LLK_XREQ_ALL_TENSORS)
#define XDONE_PAYLOAD    4u
#define XDONE_GEN_PAYLOAD 12u
/* XRDMA_RAIL_RESET: u16 rail + a setup rail record; _OK: status, rail,
 * message, at most one reply rail record. */
#define XRAIL_RESET_PAYLOAD (2u + LLK_XWIRE_RAIL_REQ_SIZE)
#define XRAIL_RESET_OK_MAX_PAYLOAD (4u + 2u + 2u + LLK_XWIRE_MAX_MSG + LLK_XWIRE_RAIL_ACK_SIZE)
#define XSETUP_MAX_PAYLOAD (2u + LLK_XWIRE_MAX_RAILS * LLK_XWIRE_RAIL_REQ_SIZE)
#define XSETUP_OK_MAX_PAYLOAD (4u + 2u + LLK_XWIRE_MAX_MSG + 2u + \
                               LLK_XWIRE_MAX_RAILS * LLK_XWIRE_RAIL_ACK_SIZE)
#define XGRANT_MAX_PAYLOAD (LLK_XWIRE_RDMA_FIXED + LLK_XWIRE_MAX_SEGS * \
                            LLK_XWIRE_GRANT_REC(LLK_XWIRE_MAX_RAILS))


/* ---- header ------------------------------------------------------------ */

int llk_xwire_read_header(const uint8_t buf[LLK_XWIRE_HEADER_SIZE], llk_xframe_header_t *h,
                          const char **why)
{
    rbuf_t r = {buf, LLK_XWIRE_HEADER_SIZE, 0, 0};
    h->magic = get_u32(&r);
    h->version = get_u16(&r);
    h->type = get_u16(&r);
    h->length = get_u32(&r);
    h->flags = get_u32(&r);
    h->req_id = get_u64(&r);

    if (h->magic != LLK_XWIRE_MAGIC) {
        *why = "bad magic (not an llmlink data stream)";
        return -1;
    }
    if (h->version != LLK_XWIRE_VERSION) {
        *why = "unsupported data-stream version";
        return -1;
    }
    if (h->type < LLK_XMSG_REQ || h->type > LLK_XMSG_RDMA_RAIL_RESET_OK) {
        *why = "unknown data message type";
        return -1;
    }
    if (h->flags != 0) {
        *why = "reserved data-frame flags set";
        return -1;
    }
    switch ((llk_xmsg_type_t)h->type) {
    case LLK_XMSG_RDMA_PROBE:
    case LLK_XMSG_RDMA_PROBE_OK:
        *why = "unknown data message type"; /* not implemented yet */
        return -1;
    case LLK_XMSG_RDMA_RAIL_RESET:
        if (h->length != XRAIL_RESET_PAYLOAD) {
            *why = "XRDMA_RAIL_RESET frame length is not 46";
            return -1;
        }
        break;
    case LLK_XMSG_RDMA_RAIL_RESET_OK:
        if (h->length > XRAIL_RESET_OK_MAX_PAYLOAD) {
            *why = "XRDMA_RAIL_RESET_OK frame larger than the maximum";
            return -1;
        }
        break;
    case LLK_XMSG_REQ:
        if (h->length > LLK_XWIRE_MAX_PAYLOAD) {
            *why = "XREQ frame larger than the maximum";
            return -1;
        }
        break;
    case LLK_XMSG_RESP:
        if (h->length > LLK_XWIRE_RESP_MAX_PAYLOAD) {
            *why = "XRESP frame larger than the maximum";
            return -1;
        }
        break;
    case LLK_XMSG_DONE:
        if (h->length != XDONE_PAYLOAD && h->length != XDONE_GEN_PAYLOAD) {
            *why = "XDONE frame length is not 4 or 12";
            return -1;
        }
        break;
    case LLK_XMSG_RDMA_SETUP:
        if (h->length > XSETUP_MAX_PAYLOAD) {
            *why = "XRDMA_SETUP frame larger than the maximum";
            return -1;
        }
        break;
    case LLK_XMSG_RDMA_SETUP_OK:
        if (h->length > XSETUP_OK_MAX_PAYLOAD) {
            *why = "XRDMA_SETUP_OK frame larger than the maximum";
            return -1;
        }
        break;
    case LLK_XMSG_RESP_RDMA:
        if (h->length > XGRANT_MAX_PAYLOAD) {
            *why = "XRESP_RDMA frame larger than the maximum";
            return -1;
        }
        break;
    }
    return 0;
}

void llk_xwire_put_header(wbuf_t *w, llk_xmsg_type_t type, uint32_t length, uint64_t req_id)
{
    put_u32(w, LLK_XWIRE_MAGIC);
    put_u16(w, LLK_XWIRE_VERSION);
    put_u16(w, (uint16_t)type);
    put_u32(w, length);
    put_u32(w, 0); /* flags */
    put_u64(w, req_id);
}

void llk_xwire_write_header(uint8_t buf[LLK_XWIRE_HEADER_SIZE], llk_xmsg_type_t type,
                            uint32_t length, uint64_t req_id)
{
    wbuf_t w = {buf, 0, LLK_XWIRE_HEADER_SIZE, 0};
    llk_xwire_put_header(&w, type, length, req_id);
}

/* ---- sizes ---------------------------------------------------------------- */

size_t llk_xwire_req_size(uint32_t nseg)
{
    if (nseg > LLK_XWIRE_MAX_SEGS)
        return 0;
    return LLK_XWIRE_HEADER_SIZE + LLK_XWIRE_REQ_FIXED + (size_t)nseg * LLK_XWIRE_SEG_SIZE;
}

size_t llk_xwire_resp_size(size_t msg_len, uint32_t niov)
{
    if (niov > LLK_XWIRE_MAX_SEGS)
        return 0;
    if (msg_len > LLK_XWIRE_MAX_MSG)
        msg_len = LLK_XWIRE_MAX_MSG; /* as encode_resp truncates */
    return LLK_XWIRE_HEADER_SIZE + LLK_XWIRE_RESP_FIXED + msg_len +
           (size_t)niov * LLK_XWIRE_IOV_SIZE;
}

/* ---- encoders --------------------------------------------------------------- */

/* The payload length is known up front, so the header is written first and
 * the result is either the whole frame or 0. */
size_t llk_xwire_end_frame(const wbuf_t *w, size_t want)
{
    if (w->overflow || w->len != want)
        return 0;
    return w->len;
}

size_t llk_xwire_encode_req(uint8_t *out, size_t cap, uint64_t req_id, const llk_xreq_t *r,
                            const llk_xseg_wire_t *segs)
{
    size_t size = llk_xwire_req_size(r->nseg);
    if (size == 0 || (r->nseg > 0 && segs == NULL) || cap < size)
        return 0;
    wbuf_t w = {out, 0, cap, 0};
    llk_xwire_put_header(&w, LLK_XMSG_REQ, (uint32_t)(size - LLK_XWIRE_HEADER_SIZE), req_id);
    put_u8(&w, r->op);
    put_u8(&w, r->kind);
    put_u16(&w, r->flags);
    put_u32(&w, (uint32_t)r->key.type);
    put_u64(&w, r->key.cluster_id);
    put_u64(&w, r->key.req_id);
    put_u64(&w, r->key.model_id);
    put_u64(&w, (uint64_t)r->key.prefix_id);
    put_u64(&w, (uint64_t)r->key.cache_id);
    put_u32(&w, r->key.batch_index);
    put_u64(&w, r->unit_bytes);
    put_u32(&w, r->num_tensors_hint);
    put_u64(&w, r->bound_end);
    put_u32(&w, r->nseg);
    for (uint32_t i = 0; i < r->nseg; i++) {
        put_u32(&w, segs[i].tensor);
        put_u64(&w, segs[i].offset);
        put_u64(&w, segs[i].length);
    }
    return llk_xwire_end_frame(&w, size);
}

size_t llk_xwire_encode_resp(uint8_t *out, size_t cap, uint64_t req_id, uint32_t status,
                             uint64_t total_bytes, const char *msg, const uint64_t *iov_pairs,
                             uint32_t niov)
{
    size_t n = msg ? strnlen(msg, LLK_XWIRE_MAX_MSG) : 0;
    size_t size = llk_xwire_resp_size(n, niov);
    if (size == 0 || (niov > 0 && iov_pairs == NULL) || cap < size)
        return 0;
    wbuf_t w = {out, 0, cap, 0};
    llk_xwire_put_header(&w, LLK_XMSG_RESP, (uint32_t)(size - LLK_XWIRE_HEADER_SIZE), req_id);
    put_u32(&w, status);
    put_u64(&w, total_bytes);
    put_u16(&w, (uint16_t)n);
    if (n)
        put_bytes(&w, msg, n);
    put_u32(&w, niov);
    for (uint32_t i = 0; i < niov; i++) {
        put_u64(&w, iov_pairs[2 * (size_t)i]);
        put_u64(&w, iov_pairs[2 * (size_t)i + 1]);
    }
    return llk_xwire_end_frame(&w, size);
}

size_t llk_xwire_encode_done(uint8_t *out, size_t cap, uint64_t req_id, uint32_t status)
{
    const size_t size = LLK_XWIRE_HEADER_SIZE + XDONE_PAYLOAD;
    if (cap < size)
        return 0;
    wbuf_t w = {out, 0, cap, 0};
    llk_xwire_put_header(&w, LLK_XMSG_DONE, XDONE_PAYLOAD, req_id);
    put_u32(&w, status);
    return llk_xwire_end_frame(&w, size);
}

/* ---- decoders --------------------------------------------------------------- */

/* Checks that exactly `count` records of `rec` bytes are what is left. */
int llk_xwire_records_fill_rest(const rbuf_t *r, uint32_t count, size_t rec,
                                const char *short_why, const char *long_why, const char **why)
{
    size_t left = r->len - r->pos;
    size_t want = (size_t)count * rec; /* count <= LLK_XWIRE_MAX_SEGS: no overflow */
    if (left < want) {
        *why = short_why;
        return -1;
    }
    if (left > want) {
        *why = long_why;
        return -1;
    }
    return 0;
}

int llk_xwire_decode_req(const uint8_t *payload, size_t len, llk_xreq_t *r, const char **why)
{
    rbuf_t b = {payload, len, 0, 0};
    memset(r, 0, sizeof *r);
    r->op = get_u8(&b);
    r->kind = get_u8(&b);
    r->flags = get_u16(&b);
    uint32_t key_type = get_u32(&b);
    r->key.cluster_id = get_u64(&b);
    r->key.req_id = get_u64(&b);
    r->key.model_id = get_u64(&b);
    r->key.prefix_id = (int64_t)get_u64(&b);
    r->key.cache_id = (int64_t)get_u64(&b);
    r->key.batch_index = get_u32(&b);
    r->unit_bytes = get_u64(&b);
    r->num_tensors_hint = get_u32(&b);
    r->bound_end = get_u64(&b);
    r->nseg = get_u32(&b);
    if (b.short_read) {
        *why = "truncated XREQ";
        return -1;
    }
    if (r->op < LLK_XOP_READ || r->op > LLK_XOP_LAST) {
        *why = "XREQ: op out of range";
        return -1;
    }
    if (r->kind < LLK_XKIND_BLOCKS || r->kind > LLK_XKIND_CACHE_AS_BLOCKS) {
        *why = "XREQ: kind out of range";
        return -1;
    }
    if (r->flags & ~XREQ_KNOWN_FLAGS) {
        *why = "XREQ: unknown flags set";
        return -1;
    }
    if (key_type < LLMLINK_KEY_CACHE || key_type > LLMLINK_KEY_BLOCKS) {
        *why = "XREQ: key type out of range";
        return -1;
    }
    r->key.type = (llmlink_cache_key_type_t)key_type;
    if (r->nseg > LLK_XWIRE_MAX_SEGS) {
        *why = "XREQ: too many segments";
        return -1;
    }
    if (llk_xwire_records_fill_rest(&b, r->nseg, LLK_XWIRE_SEG_SIZE, "XREQ: segments longer than the frame",
                          "trailing bytes after XREQ", why) != 0)
        return -1;
    if (r->nseg == 0) {
        if (!(r->flags & LLK_XREQ_CONSUME)) {
            *why = "XREQ: no segments";
            return -1;
        }
        if (r->op != LLK_XOP_READ) {
            *why = "XREQ: a request without segments must be a consuming READ";
            return -1;
        }
    } else if (r->num_tensors_hint == 0) {
        /* The transfer's bounds: only a request with segments has any. */
        *why = "XREQ: segments in a request that covers no tensor (num_tensors_hint 0)";
        return -1;
    }
    r->segs = payload + b.pos;
    uint64_t total = 0;
    for (uint32_t i = 0; i < r->nseg; i++) {
        llk_xseg_wire_t s;
        llk_xwire_seg_at(r->segs, i, &s);
        if (s.length == 0) {
            *why = "XREQ: empty segment";
            return -1;
        }
        if (s.offset > UINT64_MAX - s.length) {
            *why = "XREQ: segment end overflows";
            return -1;
        }
        if (s.tensor >= r->num_tensors_hint || s.offset + s.length > r->bound_end) {
            *why = "XREQ: segment outside the request's bounds";
            return -1;
        }
        if (total > UINT64_MAX - s.length) {
            *why = "XREQ: total length overflows";
            return -1;
        }
        total += s.length;
    }
    r->total_bytes = total;
    return 0;
}

int llk_xwire_decode_resp(const uint8_t *payload, size_t len, llk_xresp_t *r, const char **why)
{
    rbuf_t b = {payload, len, 0, 0};
    memset(r, 0, sizeof *r);
    r->status = get_u32(&b);
    r->total_bytes = get_u64(&b);
    static const text_why_t w = {"truncated XRESP", "XRESP: message too long",
                                 "XRESP: message longer than the frame"};
    if (get_text(&b, r->msg, LLK_XWIRE_MAX_MSG, &w, why) != 0)
        return -1;
    r->niov = get_u32(&b);
    if (b.short_read) {
        *why = "truncated XRESP";
        return -1;
    }
    if (r->niov > LLK_XWIRE_MAX_SEGS) {
        *why = "XRESP: too many iovecs";
        return -1;
    }
    if (llk_xwire_records_fill_rest(&b, r->niov, LLK_XWIRE_IOV_SIZE, "XRESP: iovecs longer than the frame",
                          "trailing bytes after XRESP", why) != 0)
        return -1;
    if (r->niov > 0 && r->status != LLMLINK_SUCCESS) {
        *why = "XRESP: iovecs in a refusal";
        return -1;
    }
    r->iovs = payload + b.pos;
    for (uint32_t i = 0; i < r->niov; i++) {
        uint64_t addr, ilen;
        llk_xwire_iov_at(r->iovs, i, &addr, &ilen);
        if (ilen == 0) {
            *why = "XRESP: empty iovec";
            return -1;
        }
        if (addr > UINT64_MAX - ilen) {
            *why = "XRESP: iovec end overflows";
            return -1;
        }
    }
    return 0;
}

/* ---- RDMA messages --------------------------------------------------------------- */

size_t llk_xwire_encode_done_gen(uint8_t *out, size_t cap, uint64_t req_id, uint32_t status,
                                 uint64_t generation)
{
    const size_t size = LLK_XWIRE_HEADER_SIZE + XDONE_GEN_PAYLOAD;
    if (cap < size)
        return 0;
    wbuf_t w = {out, 0, cap, 0};
    llk_xwire_put_header(&w, LLK_XMSG_DONE, XDONE_GEN_PAYLOAD, req_id);
    put_u32(&w, status);
    put_u64(&w, generation);
    return llk_xwire_end_frame(&w, size);
}

int llk_xwire_decode_done_gen(const uint8_t *payload, size_t len, uint32_t *status,
                              uint64_t *generation, bool *has_gen, const char **why)
{
    rbuf_t b = {payload, len, 0, 0};
    *generation = 0;
    *has_gen = false;
    *status = get_u32(&b);
    if (b.short_read) {
        *status = 0;
        *why = "truncated XDONE";
        return -1;
    }
    if (b.pos == b.len)
        return 0;
    *generation = get_u64(&b);
    if (b.short_read) {
        *generation = 0;
        *why = "truncated XDONE generation";
        return -1;
    }
    if (b.pos != b.len) {
        *why = "trailing bytes after XDONE";
        return -1;
    }
    *has_gen = true;
    return 0;
}

/* ---- records ------------------------------------------------------------------ */

void llk_xwire_seg_at(const uint8_t *segs, uint32_t i, llk_xseg_wire_t *out)
{
    const uint8_t *p = segs + (size_t)i * LLK_XWIRE_SEG_SIZE;
    out->tensor = load_u32(p);
    out->offset = load_u64(p + 4);
    out->length = load_u64(p + 12);
}

void llk_xwire_iov_at(const uint8_t *iovs, uint32_t i, uint64_t *addr, uint64_t *len)
{
    const uint8_t *p = iovs + (size_t)i * LLK_XWIRE_IOV_SIZE;
    *addr = load_u64(p);
    *len = load_u64(p + 8);
}

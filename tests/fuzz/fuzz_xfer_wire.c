/*
 * fuzz_xfer_wire.c - fuzz target for the data-stream frame codec
 * (core/xfer_wire.c).
 *
 * Each input is used twice:
 *  1. as one payload, handed to each of the payload decoders (XREQ,
 *     XRESP, XDONE in either form, and the RDMA messages), so random bytes
 *     reach the payload checks without first having to spell a valid
 *     header;
 *  2. as the byte stream of a data connection: while at least a header's
 *     worth of bytes is left, read and check a header, and hand the payload
 *     (min(length, bytes left), so truncated last frames are exercised too)
 *     to the decoder of its type. A header that fails the check ends the
 *     stream, as the receiver drops the connection then.
 *
 * Beyond "no crash, no sanitizer report", it checks properties, calling
 * abort() when one fails:
 *  - a header that passes is re-written byte-for-byte by
 *    llk_xwire_write_header, and its length is within its type's limit;
 *  - a payload that decodes satisfies what the decoder promises (counts and
 *    lengths in range, segment / iovec values valid and every segment
 *    within the request's bounds, total = sum, printable
 *    NUL-terminated message), and re-encodes to exactly the same bytes
 *    (an XRESP message byte that was not printable comes back as '?'),
 *    with a frame size equal to llk_xwire_req_size / resp_size; decoding
 *    the re-encoded payload gives the same fields again;
 *  - a refusal always comes with a reason.
 *
 * The RDMA messages (XRDMA_SETUP, XRDMA_SETUP_OK, XRESP_RDMA, XDONE with a
 * generation, XRDMA_RAIL_RESET and _OK) get the same treatment: decoded fields in range, re-encoded
 * to the same bytes.
 *
 * Built with tests/fuzz/standalone_main.c (make fuzz-bins) or with
 * libFuzzer (make fuzz-libfuzzer). Seeds: tests/fuzz/corpus/xfer_wire/.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "transport/rdma_wire.h"
#include "transport/transport.h"
#include "xfer/xfer_wire.h"

#define CHECK(cond)      \
    do {                 \
        if (!(cond))     \
            abort();     \
    } while (0)

#define REENCODE_CAP (LLK_XWIRE_HEADER_SIZE + LLK_XWIRE_MAX_PAYLOAD)

/* Static: the largest frames are over a megabyte. */
static uint8_t reencoded[REENCODE_CAP];
static uint8_t expected[REENCODE_CAP];
static llk_xseg_wire_t segs[LLK_XWIRE_MAX_SEGS];
static uint64_t iov_pairs[2 * LLK_XWIRE_MAX_SEGS];

/* Checks the header of a frame this target just encoded and returns its
 * payload. */
static const uint8_t *reencoded_payload(size_t n, llk_xmsg_type_t type, uint64_t req_id)
{
    llk_xframe_header_t h;
    const char *why = NULL;
    CHECK(n >= LLK_XWIRE_HEADER_SIZE && n <= sizeof reencoded);
    CHECK(llk_xwire_read_header(reencoded, &h, &why) == 0);
    CHECK(h.type == type);
    CHECK(h.length == n - LLK_XWIRE_HEADER_SIZE);
    CHECK(h.req_id == req_id);
    return reencoded + LLK_XWIRE_HEADER_SIZE;
}

static void check_key_equal(const llmlink_cache_key_t *a, const llmlink_cache_key_t *b)
{
    CHECK(a->type == b->type);
    CHECK(a->cluster_id == b->cluster_id);
    CHECK(a->req_id == b->req_id);
    CHECK(a->model_id == b->model_id);
    CHECK(a->prefix_id == b->prefix_id);
    CHECK(a->cache_id == b->cache_id);
    CHECK(a->batch_index == b->batch_index);
}

static void fuzz_req(const uint8_t *p, size_t len, uint64_t req_id)
{
    llk_xreq_t r, again;
    const char *why = NULL;
    if (llk_xwire_decode_req(p, len, &r, &why) != 0) {
        CHECK(why != NULL && why[0] != '\0');
        return;
    }
    CHECK(r.op >= LLK_XOP_READ && r.op <= LLK_XOP_RDMA_WRITE);
    CHECK(r.kind >= LLK_XKIND_BLOCKS && r.kind <= LLK_XKIND_CACHE_AS_BLOCKS);
    CHECK((r.flags & ~(LLK_XREQ_WHOLE | LLK_XREQ_CONSUME | LLK_XREQ_ALL_TENSORS)) == 0);
    CHECK(r.key.type >= LLMLINK_KEY_CACHE && r.key.type <= LLMLINK_KEY_BLOCKS);
    CHECK(r.nseg <= LLK_XWIRE_MAX_SEGS);
    CHECK(len == LLK_XWIRE_REQ_FIXED + (size_t)r.nseg * LLK_XWIRE_SEG_SIZE);
    CHECK(r.nseg > 0 || ((r.flags & LLK_XREQ_CONSUME) && r.op == LLK_XOP_READ));
    CHECK(r.segs == p + LLK_XWIRE_REQ_FIXED);
    CHECK(r.nseg == 0 || r.num_tensors_hint >= 1);
    uint64_t total = 0;
    for (uint32_t i = 0; i < r.nseg; i++) {
        llk_xwire_seg_at(r.segs, i, &segs[i]);
        CHECK(segs[i].length > 0);
        CHECK(segs[i].offset <= UINT64_MAX - segs[i].length);
        /* within the transfer's bounds */
        CHECK(segs[i].tensor < r.num_tensors_hint);
        CHECK(segs[i].offset + segs[i].length <= r.bound_end);
        CHECK(total <= UINT64_MAX - segs[i].length);
        total += segs[i].length;
    }
    CHECK(r.total_bytes == total);

    size_t n = llk_xwire_encode_req(reencoded, sizeof reencoded, req_id, &r, segs);
    CHECK(n == LLK_XWIRE_HEADER_SIZE + len);
    CHECK(n == llk_xwire_req_size(r.nseg));
    const uint8_t *q = reencoded_payload(n, LLK_XMSG_REQ, req_id);
    CHECK(memcmp(q, p, len) == 0);

    CHECK(llk_xwire_decode_req(q, len, &again, &why) == 0);
    CHECK(again.op == r.op && again.kind == r.kind && again.flags == r.flags);
    check_key_equal(&again.key, &r.key);
    CHECK(again.unit_bytes == r.unit_bytes);
    CHECK(again.num_tensors_hint == r.num_tensors_hint);
    CHECK(again.bound_end == r.bound_end);
    CHECK(again.nseg == r.nseg);
    CHECK(again.total_bytes == r.total_bytes);
}

static void fuzz_resp(const uint8_t *p, size_t len, uint64_t req_id)
{
    llk_xresp_t r, again;
    const char *why = NULL;
    if (llk_xwire_decode_resp(p, len, &r, &why) != 0) {
        CHECK(why != NULL && why[0] != '\0');
        return;
    }
    /* The message goes into llmlink_last_error(): printable and bounded.
     * Its length is what the frame said, so no byte became a NUL. */
    CHECK(len >= LLK_XWIRE_RESP_FIXED);
    size_t mlen = ((size_t)p[12] << 8) | p[13];
    CHECK(mlen <= LLK_XWIRE_MAX_MSG);
    CHECK(strlen(r.msg) == mlen);
    for (size_t i = 0; i < mlen; i++)
        CHECK(r.msg[i] >= 0x20 && r.msg[i] <= 0x7e);
    CHECK(r.niov <= LLK_XWIRE_MAX_SEGS);
    CHECK(len == LLK_XWIRE_RESP_FIXED + mlen + (size_t)r.niov * LLK_XWIRE_IOV_SIZE);
    CHECK(r.niov == 0 || r.status == LLMLINK_SUCCESS);
    CHECK(r.iovs == p + LLK_XWIRE_RESP_FIXED + mlen);
    for (uint32_t i = 0; i < r.niov; i++) {
        uint64_t *a = &iov_pairs[2 * (size_t)i];
        llk_xwire_iov_at(r.iovs, i, &a[0], &a[1]);
        CHECK(a[1] > 0);
        CHECK(a[0] <= UINT64_MAX - a[1]);
    }

    size_t n = llk_xwire_encode_resp(reencoded, sizeof reencoded, req_id, r.status,
                                     r.total_bytes, r.msg, iov_pairs, r.niov);
    CHECK(n == LLK_XWIRE_HEADER_SIZE + len);
    CHECK(n == llk_xwire_resp_size(mlen, r.niov));
    const uint8_t *q = reencoded_payload(n, LLK_XMSG_RESP, req_id);
    /* The same bytes, except message bytes that were not printable. */
    memcpy(expected, p, len);
    for (size_t i = 14; i < 14 + mlen; i++)
        if (expected[i] < 0x20 || expected[i] > 0x7e)
            expected[i] = '?';
    CHECK(memcmp(q, expected, len) == 0);

    CHECK(llk_xwire_decode_resp(q, len, &again, &why) == 0);
    CHECK(again.status == r.status);
    CHECK(again.total_bytes == r.total_bytes);
    CHECK(strcmp(again.msg, r.msg) == 0);
    CHECK(again.niov == r.niov);
}

static void fuzz_done_gen(const uint8_t *p, size_t len, uint64_t req_id)
{
    uint32_t status = 0, st2 = 0;
    uint64_t gen = 0, gen2 = 0;
    bool has = false, has2 = false;
    const char *why = NULL;
    if (llk_xwire_decode_done_gen(p, len, &status, &gen, &has, &why) != 0) {
        CHECK(why != NULL && why[0] != '\0');
        return;
    }
    CHECK(len == (has ? 12u : 4u));
    size_t n = has ? llk_xwire_encode_done_gen(reencoded, sizeof reencoded, req_id, status, gen)
                   : llk_xwire_encode_done(reencoded, sizeof reencoded, req_id, status);
    CHECK(n == LLK_XWIRE_HEADER_SIZE + len);
    const uint8_t *q = reencoded_payload(n, LLK_XMSG_DONE, req_id);
    CHECK(memcmp(q, p, len) == 0);
    CHECK(llk_xwire_decode_done_gen(q, len, &st2, &gen2, &has2, &why) == 0);
    CHECK(st2 == status && gen2 == gen && has2 == has);
}

static void check_rail(const llk_xrail_wire_t *r)
{
    CHECK(r->mtu >= 1 && r->mtu <= 5);
    CHECK(r->qpn >= 1 && r->qpn <= 0xFFFFFFu && r->psn <= 0xFFFFFFu);
}

static void fuzz_setup(const uint8_t *p, size_t len, uint64_t req_id)
{
    llk_xrail_wire_t rails[LLK_XWIRE_MAX_RAILS], again[LLK_XWIRE_MAX_RAILS];
    uint16_t n = 0, n2 = 0;
    const char *why = NULL;
    if (llk_xwire_decode_rdma_setup(p, len, rails, &n, &why) != 0) {
        CHECK(why != NULL && why[0] != '\0');
        return;
    }
    CHECK(n >= 1 && n <= LLK_XWIRE_MAX_RAILS);
    CHECK(len == 2u + n * LLK_XWIRE_RAIL_REQ_SIZE);
    for (uint16_t i = 0; i < n; i++)
        check_rail(&rails[i]);
    size_t m = llk_xwire_encode_rdma_setup(reencoded, sizeof reencoded, req_id, rails, n);
    CHECK(m == LLK_XWIRE_HEADER_SIZE + len);
    const uint8_t *q = reencoded_payload(m, LLK_XMSG_RDMA_SETUP, req_id);
    CHECK(memcmp(q, p, len) == 0);
    CHECK(llk_xwire_decode_rdma_setup(q, len, again, &n2, &why) == 0);
    CHECK(n2 == n && memcmp(again, rails, n * sizeof rails[0]) == 0);
}

static void fuzz_setup_ok(const uint8_t *p, size_t len, uint64_t req_id)
{
    static llk_xrdma_setup_ok_t m, again;
    const char *why = NULL;
    if (llk_xwire_decode_rdma_setup_ok(p, len, &m, &why) != 0) {
        CHECK(why != NULL && why[0] != '\0');
        return;
    }
    size_t mlen = strlen(m.msg);
    CHECK(mlen <= LLK_XWIRE_MAX_MSG);
    for (size_t i = 0; i < mlen; i++)
        CHECK(m.msg[i] >= 0x20 && m.msg[i] <= 0x7e);
    CHECK(m.nrails <= LLK_XWIRE_MAX_RAILS);
    CHECK((m.status == LLMLINK_SUCCESS) == (m.nrails > 0));
    CHECK(len == 8u + mlen + m.nrails * LLK_XWIRE_RAIL_ACK_SIZE);
    for (uint16_t i = 0; i < m.nrails; i++)
        check_rail(&m.rail[i]);
    size_t n = llk_xwire_encode_rdma_setup_ok(reencoded, sizeof reencoded, req_id, &m);
    CHECK(n == LLK_XWIRE_HEADER_SIZE + len);
    const uint8_t *q = reencoded_payload(n, LLK_XMSG_RDMA_SETUP_OK, req_id);
    memcpy(expected, p, len);
    for (size_t i = 6; i < 6 + mlen; i++)
        if (expected[i] < 0x20 || expected[i] > 0x7e)
            expected[i] = '?';
    CHECK(memcmp(q, expected, len) == 0);
    CHECK(llk_xwire_decode_rdma_setup_ok(q, len, &again, &why) == 0);
    CHECK(again.status == m.status && again.nrails == m.nrails && !strcmp(again.msg, m.msg));
}

static uint32_t grant_rkeys[LLK_XWIRE_MAX_SEGS * LLK_XWIRE_MAX_RAILS];

static void fuzz_grant(const uint8_t *p, size_t len, uint64_t req_id)
{
    llk_xgrant_t g, again;
    const char *why = NULL;
    if (llk_xwire_decode_grant(p, len, &g, &why) != 0) {
        CHECK(why != NULL && why[0] != '\0');
        return;
    }
    CHECK(g.nrails >= 1 && g.nrails <= LLK_XWIRE_MAX_RAILS);
    CHECK(g.niov >= 1 && g.niov <= LLK_XWIRE_MAX_SEGS);
    CHECK(g.generation != 0);
    CHECK(len == LLK_XWIRE_RDMA_FIXED + (size_t)g.niov * (16u + 4u * g.nrails));
    uint64_t sum = 0;
    for (uint32_t i = 0; i < g.niov; i++) {
        uint64_t *a = &iov_pairs[2 * (size_t)i];
        for (uint16_t k = 0; k < g.nrails; k++)
            llk_xwire_grant_at(&g, i, k, &a[0], &a[1], &grant_rkeys[(size_t)i * g.nrails + k]);
        CHECK(a[1] > 0 && a[0] <= UINT64_MAX - a[1]);
        sum += a[1];
    }
    CHECK(sum == g.total_bytes);
    size_t n = llk_xwire_encode_grant(reencoded, sizeof reencoded, req_id, g.total_bytes,
                                      g.generation, g.nrails, iov_pairs, grant_rkeys, g.niov);
    CHECK(n == LLK_XWIRE_HEADER_SIZE + len);
    CHECK(n == llk_xwire_grant_size(g.nrails, g.niov));
    const uint8_t *q = reencoded_payload(n, LLK_XMSG_RESP_RDMA, req_id);
    CHECK(memcmp(q, p, len) == 0);
    CHECK(llk_xwire_decode_grant(q, len, &again, &why) == 0);
    CHECK(again.niov == g.niov && again.nrails == g.nrails && again.total_bytes == g.total_bytes);
}

/* XRDMA_RAIL_RESET: a rail index in range and one valid record, the same
 * bytes again. */
static void fuzz_rail_reset(const uint8_t *p, size_t len, uint64_t req_id)
{
    llk_xrail_wire_t r, r2;
    uint16_t rail = 0, rail2 = 0;
    const char *why = NULL;
    if (llk_xwire_decode_rail_reset(p, len, &rail, &r, &why) != 0) {
        CHECK(why != NULL && why[0] != '\0');
        return;
    }
    CHECK(rail < LLK_XWIRE_MAX_RAILS && len == 2u + LLK_XWIRE_RAIL_REQ_SIZE);
    CHECK(r.mtu >= 1 && r.mtu <= 5 && r.qpn != 0 && r.qpn <= 0xFFFFFFu && r.psn <= 0xFFFFFFu);
    size_t n = llk_xwire_encode_rail_reset(reencoded, sizeof reencoded, req_id, rail, &r);
    CHECK(n == LLK_XWIRE_HEADER_SIZE + len);
    const uint8_t *q = reencoded_payload(n, LLK_XMSG_RDMA_RAIL_RESET, req_id);
    CHECK(memcmp(q, p, len) == 0);
    CHECK(llk_xwire_decode_rail_reset(q, len, &rail2, &r2, &why) == 0 && rail2 == rail);
}

/* XRDMA_RAIL_RESET_OK: a record exactly with SUCCESS, a printable message,
 * the same bytes again (non-printable message bytes as '?'). */
static void fuzz_rail_reset_ok(const uint8_t *p, size_t len, uint64_t req_id)
{
    llk_xrail_reset_ok_t m, again;
    const char *why = NULL;
    if (llk_xwire_decode_rail_reset_ok(p, len, &m, &why) != 0) {
        CHECK(why != NULL && why[0] != '\0');
        return;
    }
    size_t mlen = strlen(m.msg);
    bool ok = m.status == LLMLINK_SUCCESS;
    CHECK(m.rail < LLK_XWIRE_MAX_RAILS && mlen <= LLK_XWIRE_MAX_MSG);
    CHECK(len == 8u + mlen + (ok ? LLK_XWIRE_RAIL_ACK_SIZE : 0u));
    for (size_t i = 0; i < mlen; i++)
        CHECK(m.msg[i] >= 0x20 && m.msg[i] <= 0x7e);
    size_t n = llk_xwire_encode_rail_reset_ok(reencoded, sizeof reencoded, req_id, &m);
    CHECK(n == LLK_XWIRE_HEADER_SIZE + len);
    const uint8_t *q = reencoded_payload(n, LLK_XMSG_RDMA_RAIL_RESET_OK, req_id);
    memcpy(expected, p, len);
    for (size_t i = 8; i < 8 + mlen; i++)
        if (expected[i] < 0x20 || expected[i] > 0x7e)
            expected[i] = '?';
    CHECK(memcmp(q, expected, len) == 0);
    CHECK(llk_xwire_decode_rail_reset_ok(q, len, &again, &why) == 0);
    CHECK(again.status == m.status && again.rail == m.rail && !strcmp(again.msg, m.msg));
}

/* Runs fn on an exact-size copy of p[0..len): a decoder that reads one
 * byte too far hits the end of the allocation (ASan) instead of the next
 * frame. */
static void on_copy(void (*fn)(const uint8_t *, size_t, uint64_t), const uint8_t *p, size_t len,
                    uint64_t req_id)
{
    uint8_t *copy = malloc(len ? len : 1);
    CHECK(copy != NULL);
    copy[0] = 0; /* defined even when len is 0 */
    if (len)
        memcpy(copy, p, len);
    fn(copy, len, req_id);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* 1. the whole input as one payload of each type */
    on_copy(fuzz_req, data, size, 1);
    on_copy(fuzz_resp, data, size, 2);
    on_copy(fuzz_done_gen, data, size, 4);
    on_copy(fuzz_setup, data, size, 5);
    on_copy(fuzz_setup_ok, data, size, 6);
    on_copy(fuzz_grant, data, size, 7);
    on_copy(fuzz_rail_reset, data, size, 9);
    on_copy(fuzz_rail_reset_ok, data, size, 10);

    /* 2. the input as a stream of frames */
    size_t pos = 0;
    while (size - pos >= LLK_XWIRE_HEADER_SIZE) {
        llk_xframe_header_t h;
        const char *why = NULL;
        const uint8_t *hdr = data + pos;
        int rc = llk_xwire_read_header(hdr, &h, &why);
        pos += LLK_XWIRE_HEADER_SIZE;
        if (rc != 0) {
            CHECK(rc == -1 && why != NULL && why[0] != '\0');
            break;
        }
        uint8_t again[LLK_XWIRE_HEADER_SIZE];
        llk_xwire_write_header(again, (llk_xmsg_type_t)h.type, h.length, h.req_id);
        CHECK(memcmp(again, hdr, sizeof again) == 0);

        size_t len = size - pos < h.length ? size - pos : h.length;
        switch ((llk_xmsg_type_t)h.type) {
        case LLK_XMSG_REQ:
            CHECK(h.length <= LLK_XWIRE_MAX_PAYLOAD);
            on_copy(fuzz_req, data + pos, len, h.req_id);
            break;
        case LLK_XMSG_RESP:
            CHECK(h.length <= LLK_XWIRE_RESP_MAX_PAYLOAD);
            on_copy(fuzz_resp, data + pos, len, h.req_id);
            break;
        case LLK_XMSG_DONE:
            CHECK(h.length == 4 || h.length == 12);
            on_copy(fuzz_done_gen, data + pos, len, h.req_id);
            break;
        case LLK_XMSG_RDMA_SETUP:
            on_copy(fuzz_setup, data + pos, len, h.req_id);
            break;
        case LLK_XMSG_RDMA_SETUP_OK:
            on_copy(fuzz_setup_ok, data + pos, len, h.req_id);
            break;
        case LLK_XMSG_RESP_RDMA:
            on_copy(fuzz_grant, data + pos, len, h.req_id);
            break;
        case LLK_XMSG_RDMA_RAIL_RESET:
            CHECK(h.length == 2u + LLK_XWIRE_RAIL_REQ_SIZE);
            on_copy(fuzz_rail_reset, data + pos, len, h.req_id);
            break;
        case LLK_XMSG_RDMA_RAIL_RESET_OK:
            CHECK(h.length <= 8u + LLK_XWIRE_MAX_MSG + LLK_XWIRE_RAIL_ACK_SIZE);
            on_copy(fuzz_rail_reset_ok, data + pos, len, h.req_id);
            break;
        default: abort(); /* llk_xwire_read_header let an unknown type through */
        }
        pos += len;
    }
    return 0;
}

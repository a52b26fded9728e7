/*
 * test_xfer_wire_frame.c - unit tests of the frame layer of the data-stream
 * codec (core/xfer/xfer_wire.c): the header, the shared vectors, frame
 * sizes, truncated and trailing bytes for every message, and what the
 * encoders refuse.
 *
 * Decoders run on exact-size copies and layouts are checked against
 * hand-written frames: see tests/common/xfer_wire_fixture.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "llmlink.h"
#include "be_put.h"
#include "codec_check.h"
#include "xfer_wire_fixture.h"
#include "xfer_wire_vectors.h"

/* ---- header ----------------------------------------------------------------------- */

static int header_verdict(const uint8_t bytes[LLK_XWIRE_HEADER_SIZE], const char **why)
{
    llk_xframe_header_t h;
    *why = NULL;
    return llk_xwire_read_header(bytes, &h, why);
}

/* A hand-built header. */
static void build_header(uint8_t b[LLK_XWIRE_HEADER_SIZE], uint32_t magic, uint16_t version,
                         uint16_t type, uint32_t length, uint32_t flags, uint64_t req_id)
{
    put_be32(b, magic);
    put_be16(b + 4, version);
    put_be16(b + 6, type);
    put_be32(b + 8, length);
    put_be32(b + 12, flags);
    put_be64(b + 16, req_id);
}

static void test_header_layout_matches_vector(void **state)
{
    xw_fixture_t *fx = *state;
    size_t n = llk_xwire_encode_done(fx->frame, FRAME_CAP, VEC_XDONE_REQ_ID, VEC_XDONE_STATUS);
    assert_int_equal(n, sizeof vec_xdone);
    assert_memory_equal(fx->frame, vec_xdone, sizeof vec_xdone);
    /* The magic reads "LLMD" on the wire, i.e. it is stored big-endian. */
    assert_memory_equal(fx->frame, "LLMD", 4);

    uint8_t h[LLK_XWIRE_HEADER_SIZE];
    llk_xwire_write_header(h, LLK_XMSG_DONE, 4, VEC_XDONE_REQ_ID);
    assert_memory_equal(h, vec_xdone, sizeof h);
}

/* write_header writes exactly 24 bytes, every field at its offset. */
static void test_write_header(void **state)
{
    (void)state;
    uint8_t buf[LLK_XWIRE_HEADER_SIZE + 8];
    static const uint8_t want[LLK_XWIRE_HEADER_SIZE] = {
        'L', 'L', 'M', 'D', 0x00, 0x01, 0x00, 0x02, 0x00, 0x0A, 0x0B, 0x0C,
        0x00, 0x00, 0x00, 0x00, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    };
    memset(buf, 0xA5, sizeof buf);
    llk_xwire_write_header(buf, LLK_XMSG_RESP, 0x000A0B0C, 0xF1F2F3F4F5F6F7F8ull);
    assert_memory_equal(buf, want, sizeof want);
    for (size_t i = LLK_XWIRE_HEADER_SIZE; i < sizeof buf; i++)
        assert_int_equal(buf[i], 0xA5);

    llk_xframe_header_t h;
    const char *why = NULL;
    assert_int_equal(llk_xwire_read_header(buf, &h, &why), 0);
    assert_int_equal(h.magic, LLK_XWIRE_MAGIC);
    assert_int_equal(h.version, LLK_XWIRE_VERSION);
    assert_int_equal(h.type, LLK_XMSG_RESP);
    assert_int_equal(h.length, 0x000A0B0C);
    assert_int_equal(h.flags, 0);
    assert_int_equal(h.req_id, 0xF1F2F3F4F5F6F7F8ull);
}

/* Every field is read big-endian and from its documented offset. */
static void test_read_header_big_endian(void **state)
{
    (void)state;
    static const uint8_t bytes[LLK_XWIRE_HEADER_SIZE] = {
        0x4C, 0x4C, 0x4D, 0x44, 0x00, 0x01, 0x00, 0x01, 0x00, 0x01, 0x02, 0x03,
        0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
    };
    llk_xframe_header_t h;
    const char *why = NULL;
    assert_int_equal(llk_xwire_read_header(bytes, &h, &why), 0);
    assert_int_equal(h.magic, LLK_XWIRE_MAGIC);
    assert_int_equal(h.version, 1);
    assert_int_equal(h.type, LLK_XMSG_REQ);
    assert_int_equal(h.length, 0x00010203);
    assert_int_equal(h.flags, 0);
    assert_int_equal(h.req_id, 0x0102030405060708ull);
}

static void test_read_header_accepts_valid(void **state)
{
    (void)state;
    static const struct {
        uint16_t type;
        uint32_t length;
    } cases[] = {
        {LLK_XMSG_REQ, 0},   /* the payload decoder refuses it; the header is fine */
        {LLK_XMSG_REQ, LLK_XWIRE_REQ_FIXED},
        {LLK_XMSG_REQ, LLK_XWIRE_MAX_PAYLOAD},
        {LLK_XMSG_RESP, 0},
        {LLK_XMSG_RESP, LLK_XWIRE_RESP_FIXED},
        {LLK_XMSG_RESP, LLK_XWIRE_RESP_MAX_PAYLOAD},
        {LLK_XMSG_DONE, 4},
    };
    uint8_t b[LLK_XWIRE_HEADER_SIZE];
    const char *why;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        build_header(b, LLK_XWIRE_MAGIC, 1, cases[i].type, cases[i].length, 0, UINT64_MAX);
        if (header_verdict(b, &why) != 0)
            fail_msg("type %u length %u refused: %s", cases[i].type, cases[i].length, why);
    }
}

static void test_read_header_failures(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        uint32_t magic;
        uint16_t version, type;
        uint32_t length, flags;
    } cases[] = {
        {"magic 0", 0, 1, 1, 100, 0},
        {"magic off by one", LLK_XWIRE_MAGIC + 1, 1, 1, 100, 0},
        {"magic byte-swapped", 0x444D4C4Cu, 1, 1, 100, 0},
        {"control-plane magic", 0x4C4C4D4Bu, 1, 1, 100, 0},
        {"version 0", LLK_XWIRE_MAGIC, 0, 1, 100, 0},
        {"version 2", LLK_XWIRE_MAGIC, 2, 1, 100, 0},
        {"version little-endian", LLK_XWIRE_MAGIC, 0x0100, 1, 100, 0},
        {"version 0xFFFF", LLK_XWIRE_MAGIC, 0xFFFF, 1, 100, 0},
        {"type 0", LLK_XWIRE_MAGIC, 1, 0, 4, 0},
        {"type 11 (after the RDMA types 4..10)", LLK_XWIRE_MAGIC, 1, 11, 4, 0},
        {"XRDMA_PROBE length max+1 (32 addresses)", LLK_XWIRE_MAGIC, 1, 7,
         2 + 32 * LLK_XWIRE_PROBE_REC + 1, 0},
        {"XRDMA_PROBE_OK length max+1", LLK_XWIRE_MAGIC, 1, 8,
         4 + 2 + LLK_XWIRE_MAX_MSG + 2 + 32 * LLK_XWIRE_PROBE_REC + 1, 0},
        {"type little-endian REQ", LLK_XWIRE_MAGIC, 1, 0x0100, 100, 0},
        {"type 0xFFFF", LLK_XWIRE_MAGIC, 1, 0xFFFF, 4, 0},
        {"flags 1", LLK_XWIRE_MAGIC, 1, 1, 100, 1},
        {"flags top bit", LLK_XWIRE_MAGIC, 1, 2, 100, 0x80000000u},
        {"DONE flags", LLK_XWIRE_MAGIC, 1, 3, 4, 0xFFFFFFFFu},
        {"REQ length max+1", LLK_XWIRE_MAGIC, 1, 1, LLK_XWIRE_MAX_PAYLOAD + 1, 0},
        {"REQ length u32 max", LLK_XWIRE_MAGIC, 1, 1, UINT32_MAX, 0},
        {"RESP length max+1", LLK_XWIRE_MAGIC, 1, 2, LLK_XWIRE_RESP_MAX_PAYLOAD + 1, 0},
        {"RESP length u32 max", LLK_XWIRE_MAGIC, 1, 2, UINT32_MAX, 0},
        {"DONE length 0", LLK_XWIRE_MAGIC, 1, 3, 0, 0},
        {"DONE length 3", LLK_XWIRE_MAGIC, 1, 3, 3, 0},
        {"DONE length 5", LLK_XWIRE_MAGIC, 1, 3, 5, 0},
        {"DONE length u32 max", LLK_XWIRE_MAGIC, 1, 3, UINT32_MAX, 0},
    };
    uint8_t b[LLK_XWIRE_HEADER_SIZE];
    const char *why;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        build_header(b, cases[i].magic, cases[i].version, cases[i].type, cases[i].length,
                     cases[i].flags, 1);
        if (header_verdict(b, &why) != -1)
            fail_msg("%s: accepted", cases[i].what);
        if (why == NULL || why[0] == '\0')
            fail_msg("%s: refused without a reason", cases[i].what);
    }
}

/* Magic first, then version (the rest may mean something else in another
 * version), and each refusal has its own reason: they are what logs say. */
static void test_read_header_reasons(void **state)
{
    (void)state;
    uint8_t b[LLK_XWIRE_HEADER_SIZE];
    const char *r[5];
    build_header(b, 0, 2, 0, UINT32_MAX, 1, 0);
    assert_int_equal(header_verdict(b, &r[0]), -1);
    build_header(b, LLK_XWIRE_MAGIC, 2, 0, UINT32_MAX, 1, 0);
    assert_int_equal(header_verdict(b, &r[1]), -1);
    build_header(b, LLK_XWIRE_MAGIC, 1, 0, UINT32_MAX, 1, 0);
    assert_int_equal(header_verdict(b, &r[2]), -1);
    build_header(b, LLK_XWIRE_MAGIC, 1, 1, UINT32_MAX, 1, 0);
    assert_int_equal(header_verdict(b, &r[3]), -1);
    build_header(b, LLK_XWIRE_MAGIC, 1, 1, UINT32_MAX, 0, 0);
    assert_int_equal(header_verdict(b, &r[4]), -1);
    for (int i = 0; i < 5; i++) {
        assert_non_null(r[i]);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(r[i], r[j]);
    }
    assert_non_null(strstr(r[0], "magic"));
    assert_non_null(strstr(r[1], "version"));
}

/* The RESP limit is exactly the largest frame encode_resp can make, and
 * the REQ limit the largest encode_req can make. */
static void test_header_limits_match_encoders(void **state)
{
    (void)state;
    assert_int_equal(llk_xwire_req_size(LLK_XWIRE_MAX_SEGS),
                     LLK_XWIRE_HEADER_SIZE + LLK_XWIRE_MAX_PAYLOAD);
    assert_int_equal(llk_xwire_resp_size(LLK_XWIRE_MAX_MSG, LLK_XWIRE_MAX_SEGS),
                     LLK_XWIRE_HEADER_SIZE + LLK_XWIRE_RESP_MAX_PAYLOAD);
    assert_int_equal(LLK_XWIRE_RESP_MAX_PAYLOAD, 4 + 8 + 2 + LLK_XWIRE_MAX_MSG + 4 +
                                            LLK_XWIRE_MAX_SEGS * 16);
}

/* ---- exact encodings of the shared vectors ---------------------------------------- */

static void test_encode_matches_vectors(void **state)
{
    xw_fixture_t *fx = *state;
    size_t n;

    llk_xreq_t r = {0};
    r.op = LLK_XOP_READ;
    r.kind = LLK_XKIND_CACHE;
    r.flags = LLK_XREQ_WHOLE;
    r.key.type = LLMLINK_KEY_CACHE;
    r.key.cluster_id = VEC_XREQ_CLUSTER_ID;
    r.key.req_id = VEC_XREQ_KEY_REQ_ID;
    r.key.model_id = VEC_XREQ_MODEL_ID;
    r.key.prefix_id = VEC_XREQ_PREFIX_ID;
    r.key.cache_id = VEC_XREQ_CACHE_ID;
    r.key.batch_index = VEC_XREQ_BATCH_INDEX;
    r.unit_bytes = VEC_XREQ_UNIT_BYTES;
    r.num_tensors_hint = VEC_XREQ_HINT;
    r.bound_end = VEC_XREQ_BOUND_END;
    r.nseg = ARRAY_LEN(vec_xreq_segs);
    n = llk_xwire_encode_req(fx->frame, FRAME_CAP, VEC_XREQ_REQ_ID, &r, vec_xreq_segs);
    assert_int_equal(n, sizeof vec_xreq);
    assert_memory_equal(fx->frame, vec_xreq, sizeof vec_xreq);

    n = llk_xwire_encode_resp(fx->frame, FRAME_CAP, VEC_XRESP_REQ_ID, LLMLINK_SUCCESS,
                              VEC_XRESP_TOTAL, VEC_XRESP_MSG, vec_xresp_iovs, 2);
    assert_int_equal(n, sizeof vec_xresp);
    assert_memory_equal(fx->frame, vec_xresp, sizeof vec_xresp);

    n = llk_xwire_encode_resp(fx->frame, FRAME_CAP, VEC_XRESP_NO_REQ_ID, VEC_XRESP_NO_STATUS, 0,
                              VEC_XRESP_NO_MSG, NULL, 0);
    assert_int_equal(n, sizeof vec_xresp_refused);
    assert_memory_equal(fx->frame, vec_xresp_refused, sizeof vec_xresp_refused);

    n = llk_xwire_encode_done(fx->frame, FRAME_CAP, VEC_XDONE_REQ_ID, VEC_XDONE_STATUS);
    assert_int_equal(n, sizeof vec_xdone);
    assert_memory_equal(fx->frame, vec_xdone, sizeof vec_xdone);
}

static void test_decode_vectors(void **state)
{
    xw_fixture_t *fx = *state;
    const uint8_t *p;

    p = payload_of(vec_xreq, sizeof vec_xreq, LLK_XMSG_REQ, VEC_XREQ_REQ_ID);
    assert_int_equal(sizeof vec_xreq - LLK_XWIRE_HEADER_SIZE, VEC_XREQ_PAYLOAD_LEN);
    /* Decoded in place: segs must point into the buffer that was decoded. */
    assert_int_equal(llk_xwire_decode_req(p, VEC_XREQ_PAYLOAD_LEN, &fx->req_out, &fx->why), 0);
    const llk_xreq_t *r = &fx->req_out;
    assert_int_equal(r->op, LLK_XOP_READ);
    assert_int_equal(r->kind, LLK_XKIND_CACHE);
    assert_int_equal(r->flags, LLK_XREQ_WHOLE);
    assert_int_equal(r->key.type, LLMLINK_KEY_CACHE);
    assert_int_equal(r->key.cluster_id, VEC_XREQ_CLUSTER_ID);
    assert_int_equal(r->key.req_id, VEC_XREQ_KEY_REQ_ID);
    assert_int_equal(r->key.model_id, VEC_XREQ_MODEL_ID);
    assert_true(r->key.prefix_id == VEC_XREQ_PREFIX_ID);
    assert_int_equal(r->key.cache_id, VEC_XREQ_CACHE_ID);
    assert_int_equal(r->key.batch_index, VEC_XREQ_BATCH_INDEX);
    assert_int_equal(r->unit_bytes, VEC_XREQ_UNIT_BYTES);
    assert_int_equal(r->num_tensors_hint, VEC_XREQ_HINT);
    assert_int_equal(r->bound_end, VEC_XREQ_BOUND_END);
    assert_int_equal(r->nseg, 2);
    assert_ptr_equal(r->segs, p + OFF_SEGS);
    assert_int_equal(r->total_bytes, VEC_XREQ_TOTAL);
    for (uint32_t i = 0; i < 2; i++) {
        llk_xseg_wire_t s;
        llk_xwire_seg_at(r->segs, i, &s);
        assert_int_equal(s.tensor, vec_xreq_segs[i].tensor);
        assert_int_equal(s.offset, vec_xreq_segs[i].offset);
        assert_int_equal(s.length, vec_xreq_segs[i].length);
    }

    p = payload_of(vec_xresp, sizeof vec_xresp, LLK_XMSG_RESP, VEC_XRESP_REQ_ID);
    assert_int_equal(sizeof vec_xresp - LLK_XWIRE_HEADER_SIZE, VEC_XRESP_PAYLOAD_LEN);
    assert_int_equal(llk_xwire_decode_resp(p, VEC_XRESP_PAYLOAD_LEN, &fx->resp_out, &fx->why), 0);
    assert_int_equal(fx->resp_out.status, LLMLINK_SUCCESS);
    assert_int_equal(fx->resp_out.total_bytes, VEC_XRESP_TOTAL);
    assert_string_equal(fx->resp_out.msg, VEC_XRESP_MSG);
    assert_ptr_equal(fx->resp_out.iovs, p + OFF_MSG + 2 + 4);
    assert_iovs_equal(&fx->resp_out, vec_xresp_iovs, 2);

    p = payload_of(vec_xresp_refused, sizeof vec_xresp_refused, LLK_XMSG_RESP,
                   VEC_XRESP_NO_REQ_ID);
    assert_int_equal(sizeof vec_xresp_refused - LLK_XWIRE_HEADER_SIZE, VEC_XRESP_NO_PAYLOAD_LEN);
    assert_decodes(dec_resp, p, VEC_XRESP_NO_PAYLOAD_LEN, fx);
    assert_int_equal(fx->resp_out.status, VEC_XRESP_NO_STATUS);
    assert_int_equal(fx->resp_out.total_bytes, 0);
    assert_string_equal(fx->resp_out.msg, VEC_XRESP_NO_MSG);
    assert_int_equal(fx->resp_out.niov, 0);

    p = payload_of(vec_xdone, sizeof vec_xdone, LLK_XMSG_DONE, VEC_XDONE_REQ_ID);
    assert_decodes(dec_done, p, 4, fx);
    assert_int_equal(fx->done_out, VEC_XDONE_STATUS);
}

/* seg_at / iov_at read big-endian records at i * record size. */
static void test_record_readers(void **state)
{
    (void)state;
    static const uint8_t segs[2 * LLK_XWIRE_SEG_SIZE] = {
        0x01, 0x02, 0x03, 0x04, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
        0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28,
        0xF1, 0xF2, 0xF3, 0xF4, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88,
        0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98,
    };
    llk_xseg_wire_t s;
    llk_xwire_seg_at(segs, 0, &s);
    assert_int_equal(s.tensor, 0x01020304u);
    assert_int_equal(s.offset, 0x1112131415161718ull);
    assert_int_equal(s.length, 0x2122232425262728ull);
    llk_xwire_seg_at(segs, 1, &s);
    assert_int_equal(s.tensor, 0xF1F2F3F4u);
    assert_int_equal(s.offset, 0x8182838485868788ull);
    assert_int_equal(s.length, 0x9192939495969798ull);

    static const uint8_t iovs[2 * LLK_XWIRE_IOV_SIZE] = {
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
        0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8,
        0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    };
    uint64_t addr, len;
    llk_xwire_iov_at(iovs, 0, &addr, &len);
    assert_int_equal(addr, 0x0102030405060708ull);
    assert_int_equal(len, 0x1112131415161718ull);
    llk_xwire_iov_at(iovs, 1, &addr, &len);
    assert_int_equal(addr, 0xE1E2E3E4E5E6E7E8ull);
    assert_int_equal(len, 0xF1F2F3F4F5F6F7F8ull);
}

/* ---- sizes ------------------------------------------------------------------------ */

static void test_frame_sizes(void **state)
{
    (void)state;
    assert_int_equal(llk_xwire_req_size(0), LLK_XWIRE_HEADER_SIZE + LLK_XWIRE_REQ_FIXED);
    assert_int_equal(llk_xwire_req_size(2), sizeof vec_xreq);
    assert_int_equal(llk_xwire_req_size(LLK_XWIRE_MAX_SEGS), MAX_REQ_FRAME);
    /* Over the limit: no such frame. */
    assert_int_equal(llk_xwire_req_size(LLK_XWIRE_MAX_SEGS + 1), 0);
    assert_int_equal(llk_xwire_req_size(UINT32_MAX), 0);

    assert_int_equal(llk_xwire_resp_size(0, 0), LLK_XWIRE_HEADER_SIZE + LLK_XWIRE_RESP_FIXED);
    assert_int_equal(llk_xwire_resp_size(2, 2), sizeof vec_xresp);
    assert_int_equal(llk_xwire_resp_size(11, 0), sizeof vec_xresp_refused);
    assert_int_equal(llk_xwire_resp_size(LLK_XWIRE_MAX_MSG, LLK_XWIRE_MAX_SEGS), MAX_RESP_FRAME);
    /* A longer message is truncated by encode_resp, and counted so. */
    assert_int_equal(llk_xwire_resp_size(LLK_XWIRE_MAX_MSG + 1, 0),
                     llk_xwire_resp_size(LLK_XWIRE_MAX_MSG, 0));
    assert_int_equal(llk_xwire_resp_size(SIZE_MAX, 1), llk_xwire_resp_size(LLK_XWIRE_MAX_MSG, 1));
    assert_int_equal(llk_xwire_resp_size(0, LLK_XWIRE_MAX_SEGS + 1), 0);
    assert_int_equal(llk_xwire_resp_size(0, UINT32_MAX), 0);
}

/* ---- every message: truncated and trailing bytes ---------------------------------- */

/* Every proper prefix of a valid payload is refused. */
static void assert_every_truncation_refused(decode_fn fn, const uint8_t *p, size_t n,
                                            xw_fixture_t *fx)
{
    assert_decodes(fn, p, n, fx); /* control: the whole payload is fine */
    for (size_t len = 0; len < n; len++)
        assert_refused(fn, p, len, fx);
}

static void test_truncations_refused(void **state)
{
    xw_fixture_t *fx = *state;
    assert_every_truncation_refused(dec_req, vec_xreq + LLK_XWIRE_HEADER_SIZE,
                                    VEC_XREQ_PAYLOAD_LEN, fx);
    assert_every_truncation_refused(dec_resp, vec_xresp + LLK_XWIRE_HEADER_SIZE,
                                    VEC_XRESP_PAYLOAD_LEN, fx);
    assert_every_truncation_refused(dec_resp, vec_xresp_refused + LLK_XWIRE_HEADER_SIZE,
                                    VEC_XRESP_NO_PAYLOAD_LEN, fx);
    assert_every_truncation_refused(dec_done, vec_xdone + LLK_XWIRE_HEADER_SIZE, 4, fx);

    size_t n = valid_req_payload(fx);
    assert_every_truncation_refused(dec_req, fx->payload, n, fx);

    /* a CONSUME request: nothing but the fixed part */
    llk_xreq_t r = fx->req;
    r.flags = LLK_XREQ_CONSUME;
    r.nseg = 0;
    n = enc_req(fx, &r, NULL);
    assert_every_truncation_refused(dec_req, payload_of(fx->frame, n, LLK_XMSG_REQ, REQ_ID),
                                    n - LLK_XWIRE_HEADER_SIZE, fx);
}

/* A frame cut inside its fixed part says so (and not something about a
 * field read from bytes that are not there). */
static void test_truncated_fixed_part_reason(void **state)
{
    xw_fixture_t *fx = *state;
    for (size_t len = 0; len < LLK_XWIRE_REQ_FIXED; len++)
        assert_refused_for(dec_req, vec_xreq + LLK_XWIRE_HEADER_SIZE, len, fx, "truncated");
    for (size_t len = 0; len < OFF_MSG; len++)
        assert_refused_for(dec_resp, vec_xresp + LLK_XWIRE_HEADER_SIZE, len, fx, "truncated");
    /* cut inside the niov field after the message */
    for (size_t len = OFF_MSG + 2; len < OFF_MSG + 2 + 4; len++)
        assert_refused_for(dec_resp, vec_xresp + LLK_XWIRE_HEADER_SIZE, len, fx, "truncated");
}

static void test_trailing_bytes_refused(void **state)
{
    xw_fixture_t *fx = *state;
    static const struct {
        const uint8_t *frame;
        size_t size;
        decode_fn dec;
        size_t record; /* one more record's worth of bytes */
    } cases[] = {
        {vec_xreq, sizeof vec_xreq, dec_req, LLK_XWIRE_SEG_SIZE},
        {vec_xresp, sizeof vec_xresp, dec_resp, LLK_XWIRE_IOV_SIZE},
        {vec_xresp_refused, sizeof vec_xresp_refused, dec_resp, LLK_XWIRE_IOV_SIZE},
        {vec_xdone, sizeof vec_xdone, dec_done, 4},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        size_t n = cases[i].size - LLK_XWIRE_HEADER_SIZE;
        memcpy(fx->payload, cases[i].frame + LLK_XWIRE_HEADER_SIZE, n);
        assert_decodes(cases[i].dec, fx->payload, n, fx);
        /* one zero byte, a whole (valid-looking) record, a larger tail */
        memset(fx->payload + n, 0, 64);
        put_seg(fx->payload + n, 0, 0, 1);
        assert_refused(cases[i].dec, fx->payload, n + 1, fx);
        assert_refused(cases[i].dec, fx->payload, n + cases[i].record, fx);
        assert_refused(cases[i].dec, fx->payload, n + 64, fx);
    }
}

/* ---- encoders --------------------------------------------------------------------- */

static size_t enc_cap_req(uint8_t *out, size_t cap, void *ctx)
{
    const xw_fixture_t *fx = ctx;
    return llk_xwire_encode_req(out, cap, REQ_ID, &fx->req, fx->segs);
}

static size_t enc_cap_req_consume(uint8_t *out, size_t cap, void *ctx)
{
    const xw_fixture_t *fx = ctx;
    llk_xreq_t r = fx->req;
    r.flags = LLK_XREQ_CONSUME;
    r.nseg = 0;
    return llk_xwire_encode_req(out, cap, REQ_ID, &r, NULL);
}

static size_t enc_cap_resp(uint8_t *out, size_t cap, void *ctx)
{
    (void)ctx;
    return llk_xwire_encode_resp(out, cap, REQ_ID, LLMLINK_SUCCESS, 0x1020, "ok",
                                 vec_xresp_iovs, 2);
}

static size_t enc_cap_resp_bare(uint8_t *out, size_t cap, void *ctx)
{
    (void)ctx;
    return llk_xwire_encode_resp(out, cap, REQ_ID, LLMLINK_FAILED, 0, NULL, NULL, 0);
}

static size_t enc_cap_done(uint8_t *out, size_t cap, void *ctx)
{
    (void)ctx;
    return llk_xwire_encode_done(out, cap, REQ_ID, LLMLINK_SUCCESS);
}

#define CANARY 0xA5

/* For every capacity below the frame size the encoder returns 0 and writes
 * nothing at or past out[cap]; at exactly the frame size it succeeds. */
static void test_encoders_refuse_small_buffers(void **state)
{
    xw_fixture_t *fx = *state;
    static const struct {
        const char *what;
        codec_encode_fn enc;
    } cases[] = {
        {"XREQ", enc_cap_req},   {"XREQ consume", enc_cap_req_consume},
        {"XRESP", enc_cap_resp}, {"XRESP bare", enc_cap_resp_bare},
        {"XDONE", enc_cap_done},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        size_t full = codec_check_capacity(cases[i].what, cases[i].enc, fx, fx->frame, FRAME_CAP);
        assert_true(full >= LLK_XWIRE_HEADER_SIZE);
    }
}

/* The largest frames: exact fit and one byte short. */
static void test_encoders_exact_fit_at_maximum(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req;
    r.nseg = LLK_XWIRE_MAX_SEGS;
    for (uint32_t i = 0; i < r.nseg; i++)
        fx->segs[i] = (llk_xseg_wire_t){i, i, 1};
    memset(fx->frame, CANARY, FRAME_CAP);
    assert_int_equal(llk_xwire_encode_req(fx->frame, MAX_REQ_FRAME - 1, REQ_ID, &r, fx->segs), 0);
    assert_int_equal(fx->frame[MAX_REQ_FRAME - 1], CANARY);
    assert_int_equal(llk_xwire_encode_req(fx->frame, MAX_REQ_FRAME, REQ_ID, &r, fx->segs),
                     MAX_REQ_FRAME);
    assert_int_equal(fx->frame[MAX_REQ_FRAME], CANARY);

    char msg[LLK_XWIRE_MAX_MSG + 1];
    memset(msg, 'q', LLK_XWIRE_MAX_MSG);
    msg[LLK_XWIRE_MAX_MSG] = '\0';
    for (uint32_t i = 0; i < LLK_XWIRE_MAX_SEGS; i++) {
        fx->iovs[2 * i] = i;
        fx->iovs[2 * i + 1] = 1;
    }
    memset(fx->frame, CANARY, FRAME_CAP);
    assert_int_equal(llk_xwire_encode_resp(fx->frame, MAX_RESP_FRAME - 1, REQ_ID, 0, 0, msg,
                                           fx->iovs, LLK_XWIRE_MAX_SEGS),
                     0);
    assert_int_equal(fx->frame[MAX_RESP_FRAME - 1], CANARY);
    assert_int_equal(llk_xwire_encode_resp(fx->frame, MAX_RESP_FRAME, REQ_ID, 0, 0, msg, fx->iovs,
                                           LLK_XWIRE_MAX_SEGS),
                     MAX_RESP_FRAME);
    assert_int_equal(fx->frame[MAX_RESP_FRAME], CANARY);
}

/* Counts over the limit are refused however big the buffer: the peer
 * would refuse the frame. The arrays hold one valid record more, so an
 * encoder that trusted the count would succeed instead of reading garbage. */
static void test_encoders_refuse_counts_over_limit(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req;
    for (uint32_t i = 0; i <= LLK_XWIRE_MAX_SEGS; i++) {
        fx->segs[i] = (llk_xseg_wire_t){0, 0, 1};
        fx->iovs[2 * i] = 0x1000;
        fx->iovs[2 * i + 1] = 1;
    }
    uint8_t *big = test_malloc(FRAME_CAP + LLK_XWIRE_SEG_SIZE);
    r.nseg = LLK_XWIRE_MAX_SEGS + 1;
    assert_int_equal(llk_xwire_encode_req(big, FRAME_CAP + LLK_XWIRE_SEG_SIZE, REQ_ID, &r,
                                          fx->segs),
                     0);
    r.nseg = UINT32_MAX;
    assert_int_equal(llk_xwire_encode_req(big, FRAME_CAP, REQ_ID, &r, fx->segs), 0);
    assert_int_equal(llk_xwire_encode_resp(big, FRAME_CAP, REQ_ID, 0, 0, NULL, fx->iovs,
                                           LLK_XWIRE_MAX_SEGS + 1),
                     0);
    assert_int_equal(llk_xwire_encode_resp(big, FRAME_CAP, REQ_ID, 0, 0, NULL, fx->iovs,
                                           UINT32_MAX),
                     0);
    /* records promised but no array */
    r.nseg = 1;
    assert_int_equal(llk_xwire_encode_req(big, FRAME_CAP, REQ_ID, &r, NULL), 0);
    assert_int_equal(llk_xwire_encode_resp(big, FRAME_CAP, REQ_ID, 0, 0, NULL, NULL, 1), 0);
    test_free(big);
}

/* ---- main ------------------------------------------------------------------------ */

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_header_layout_matches_vector),
        T(test_write_header),
        T(test_read_header_big_endian),
        T(test_read_header_accepts_valid),
        T(test_read_header_failures),
        T(test_read_header_reasons),
        T(test_header_limits_match_encoders),
        T(test_encode_matches_vectors),
        T(test_decode_vectors),
        T(test_record_readers),
        T(test_frame_sizes),
        T(test_truncations_refused),
        T(test_truncated_fixed_part_reason),
        T(test_trailing_bytes_refused),
        T(test_encoders_refuse_small_buffers),
        T(test_encoders_exact_fit_at_maximum),
        T(test_encoders_refuse_counts_over_limit),
    };
    return cmocka_run_group_tests_name("xfer_wire_frame: headers, vectors, sizes, encoder limits",
                                       tests, NULL, NULL);
}

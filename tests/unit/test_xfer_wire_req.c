/*
 * test_xfer_wire_req.c - unit tests of XREQ, the request of the data-stream
 * codec (core/xfer/xfer_wire.c): round trips, field validation, and the
 * transfer's bounds that every segment must stay within.
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
#include "transport/transport.h" /* the shm and rdma op codes */
#include "xfer_wire_fixture.h"

/* ---- round trips ------------------------------------------------------------------ */

static void test_roundtrip_req(void **state)
{
    xw_fixture_t *fx = *state;
    assert_int_equal(req_through_wire(fx, &fx->req, fx->segs), 0);
    assert_req_equal(&fx->req_out, &fx->req, fx->segs);
    assert_int_equal(fx->req_out.total_bytes, 4096 + 4096 + 12288);
}

/* Extreme values in every field that the decoder does not range-check, and
 * the extremes of the bounds (tensor hint - 1, an end at bound_end). */
static void test_roundtrip_req_extremes(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req;
    llk_xseg_wire_t segs[3] = {
        {UINT32_MAX - 1, UINT64_MAX - 1, 1}, /* the last tensor, ends exactly at UINT64_MAX */
        {0, 0, UINT64_MAX / 2},
        {7, 1, 1},
    };
    r.op = LLK_XOP_SHM_WRITE;
    r.kind = LLK_XKIND_CACHE_AS_BLOCKS;
    r.flags = LLK_XREQ_WHOLE | LLK_XREQ_CONSUME | LLK_XREQ_ALL_TENSORS;
    r.key.type = LLMLINK_KEY_ID_AND_INDEX;
    r.key.cluster_id = UINT64_MAX;
    r.key.req_id = UINT64_MAX;
    r.key.model_id = 0;
    r.key.prefix_id = INT64_MIN;
    r.key.cache_id = INT64_MAX;
    r.key.batch_index = UINT32_MAX;
    r.unit_bytes = UINT64_MAX;
    r.num_tensors_hint = UINT32_MAX;
    r.bound_end = UINT64_MAX;
    r.nseg = 3;
    assert_int_equal(req_through_wire(fx, &r, segs), 0);
    assert_req_equal(&fx->req_out, &r, segs);

    /* the smallest bounds that hold segment {7, 1, 1} */
    r.key.prefix_id = -1;
    r.key.cache_id = -1;
    r.key.cluster_id = 0;
    r.unit_bytes = 0;
    r.num_tensors_hint = 8;
    r.bound_end = 2;
    r.nseg = 1;
    assert_int_equal(req_through_wire(fx, &r, segs + 2), 0);
    assert_req_equal(&fx->req_out, &r, segs + 2);
}

/* Every op, kind, key type and flag combination the protocol defines. */
static void test_roundtrip_req_enumerations(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req;
    for (uint8_t op = LLK_XOP_READ; op <= LLK_XOP_SHM_WRITE; op++)
        for (uint8_t kind = LLK_XKIND_BLOCKS; kind <= LLK_XKIND_CACHE_AS_BLOCKS; kind++)
            for (uint32_t kt = LLMLINK_KEY_CACHE; kt <= LLMLINK_KEY_BLOCKS; kt++)
                for (uint16_t flags = 0; flags <= 7; flags++) {
                    r.op = op;
                    r.kind = kind;
                    r.key.type = (llmlink_cache_key_type_t)kt;
                    r.flags = flags;
                    if (req_through_wire(fx, &r, fx->segs) != 0)
                        fail_msg("op %u kind %u key %u flags %u refused: %s", op, kind, kt,
                                 flags, fx->why);
                    assert_req_equal(&fx->req_out, &r, fx->segs);
                }
}

static void test_roundtrip_req_max_segments(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req;
    r.nseg = LLK_XWIRE_MAX_SEGS;
    r.num_tensors_hint = 80;
    r.bound_end = 0;
    for (uint32_t i = 0; i < r.nseg; i++) {
        fx->segs[i] = (llk_xseg_wire_t){i % 80, (uint64_t)i << 20, 1 + (i % 4096)};
        if (fx->segs[i].offset + fx->segs[i].length > r.bound_end)
            r.bound_end = fx->segs[i].offset + fx->segs[i].length;
    }
    size_t n = enc_req(fx, &r, fx->segs);
    assert_int_equal(n, MAX_REQ_FRAME);
    assert_decodes(dec_req, payload_of(fx->frame, n, LLK_XMSG_REQ, REQ_ID),
                   LLK_XWIRE_MAX_PAYLOAD, fx);
    assert_req_equal(&fx->req_out, &r, fx->segs);
}

/* req_id travels in the header, echoed untouched. */
static void test_req_id_in_header(void **state)
{
    xw_fixture_t *fx = *state;
    static const uint64_t ids[] = {0, 1, 0x8000000000000000ull, UINT64_MAX};
    for (size_t i = 0; i < ARRAY_LEN(ids); i++) {
        size_t n = llk_xwire_encode_req(fx->frame, FRAME_CAP, ids[i], &fx->req, fx->segs);
        (void)payload_of(fx->frame, n, LLK_XMSG_REQ, ids[i]);
        n = llk_xwire_encode_resp(fx->frame, FRAME_CAP, ids[i], 0, 0, NULL, NULL, 0);
        (void)payload_of(fx->frame, n, LLK_XMSG_RESP, ids[i]);
        n = llk_xwire_encode_done(fx->frame, FRAME_CAP, ids[i], 0);
        (void)payload_of(fx->frame, n, LLK_XMSG_DONE, ids[i]);
    }
}

/* ---- the decoder refuses malformed requests --------------------------------------- */

static void test_req_op_validated(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req;
    for (uint8_t op = LLK_XOP_READ; op <= LLK_XOP_RDMA_WRITE; op++) {
        r.op = op;
        assert_int_equal(req_through_wire(fx, &r, fx->segs), 0);
        assert_int_equal(fx->req_out.op, op);
    }
    static const uint8_t bad[] = {0, 7, 0x80, 0xFF};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        r.op = bad[i];
        assert_int_equal(req_through_wire(fx, &r, fx->segs), -1);
        assert_non_null(strstr(fx->why, "op"));
    }
}

static void test_req_kind_validated(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req;
    for (uint8_t k = LLK_XKIND_BLOCKS; k <= LLK_XKIND_CACHE_AS_BLOCKS; k++) {
        r.kind = k;
        assert_int_equal(req_through_wire(fx, &r, fx->segs), 0);
        assert_int_equal(fx->req_out.kind, k);
    }
    static const uint8_t bad[] = {0, 4, 0xFF};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        r.kind = bad[i];
        assert_int_equal(req_through_wire(fx, &r, fx->segs), -1);
        assert_non_null(strstr(fx->why, "kind"));
    }
}

/* Only WHOLE, CONSUME and ALL_TENSORS are defined; any other bit is
 * refused so that a later version can give it a meaning. */
static void test_req_flags_validated(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req;
    assert_int_equal(LLK_XREQ_WHOLE, 0x0001);
    assert_int_equal(LLK_XREQ_CONSUME, 0x0002);
    assert_int_equal(LLK_XREQ_ALL_TENSORS, 0x0004);
    static const uint16_t good[] = {0,
                                    LLK_XREQ_WHOLE,
                                    LLK_XREQ_CONSUME,
                                    LLK_XREQ_ALL_TENSORS,
                                    LLK_XREQ_WHOLE | LLK_XREQ_CONSUME,
                                    LLK_XREQ_WHOLE | LLK_XREQ_ALL_TENSORS,
                                    LLK_XREQ_CONSUME | LLK_XREQ_ALL_TENSORS,
                                    LLK_XREQ_WHOLE | LLK_XREQ_CONSUME | LLK_XREQ_ALL_TENSORS};
    for (size_t i = 0; i < ARRAY_LEN(good); i++) {
        r.flags = good[i];
        assert_int_equal(req_through_wire(fx, &r, fx->segs), 0);
        assert_int_equal(fx->req_out.flags, good[i]);
    }
    /* ALL_TENSORS is bit 2 of the u16 at offset 2 */
    size_t n = valid_req_payload(fx);
    put_be16(fx->payload + OFF_FLAGS, 0x0004);
    assert_decodes(dec_req, fx->payload, n, fx);
    assert_int_equal(fx->req_out.flags, LLK_XREQ_ALL_TENSORS);
    static const uint16_t bad[] = {0x0008, 0x000F, 0x0010, 0x0100, 0x8000, 0xFFFF};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        r.flags = bad[i];
        assert_int_equal(req_through_wire(fx, &r, fx->segs), -1);
        assert_non_null(strstr(fx->why, "flags"));
    }
}

static void test_req_key_type_validated(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req;
    for (uint32_t t = LLMLINK_KEY_CACHE; t <= LLMLINK_KEY_BLOCKS; t++) {
        r.key.type = (llmlink_cache_key_type_t)t;
        assert_int_equal(req_through_wire(fx, &r, fx->segs), 0);
        assert_int_equal(fx->req_out.key.type, t);
    }
    /* Written straight into the payload: no out-of-range enum values. */
    size_t n = valid_req_payload(fx);
    static const uint32_t bad[] = {0, 4, 0x100, 0x01000003u, UINT32_MAX};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        put_be32(fx->payload + OFF_KEY_TYPE, bad[i]);
        assert_refused_for(dec_req, fx->payload, n, fx, "key type");
    }
}

/* More segments than LLK_XWIRE_MAX_SEGS, with all their bytes present, so
 * that only the count check can refuse it. */
static void test_req_too_many_segments_refused(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req;
    r.nseg = LLK_XWIRE_MAX_SEGS;
    for (uint32_t i = 0; i < r.nseg; i++)
        fx->segs[i] = (llk_xseg_wire_t){0, 0, 1};
    size_t n = enc_req(fx, &r, fx->segs);
    assert_int_equal(n, MAX_REQ_FRAME);
    size_t len = n - LLK_XWIRE_HEADER_SIZE;
    memcpy(fx->payload, fx->frame + LLK_XWIRE_HEADER_SIZE, len);
    assert_decodes(dec_req, fx->payload, len, fx); /* control: the maximum */

    put_be32(fx->payload + OFF_NSEG, LLK_XWIRE_MAX_SEGS + 1);
    put_seg(fx->payload + len, 0, 0, 1);
    assert_refused_for(dec_req, fx->payload, len + LLK_XWIRE_SEG_SIZE, fx, "too many");

    /* an absurd count with nothing behind it */
    put_be32(fx->payload + OFF_NSEG, UINT32_MAX);
    assert_refused(dec_req, fx->payload, LLK_XWIRE_REQ_FIXED, fx);
    put_be32(fx->payload + OFF_NSEG, 0x80000000u);
    assert_refused(dec_req, fx->payload, len, fx);
}

/* The payload is exactly REQ_FIXED + nseg * 20 bytes. */
static void test_req_length_must_match_count(void **state)
{
    xw_fixture_t *fx = *state;
    size_t n = valid_req_payload(fx); /* 3 segments */
    assert_int_equal(n, LLK_XWIRE_REQ_FIXED + 3 * LLK_XWIRE_SEG_SIZE);
    put_seg(fx->payload + n, 0, 0, 1); /* a valid fourth record after it */

    /* counts that match neither 3 nor 4 records */
    static const uint32_t claims[] = {0, 1, 2, 5, 0x10000};
    for (size_t i = 0; i < ARRAY_LEN(claims); i++) {
        put_be32(fx->payload + OFF_NSEG, claims[i]);
        assert_refused(dec_req, fx->payload, n, fx);
        assert_refused(dec_req, fx->payload, n + LLK_XWIRE_SEG_SIZE, fx);
    }
    /* one record missing, one record too many */
    put_be32(fx->payload + OFF_NSEG, 4);
    assert_refused_for(dec_req, fx->payload, n, fx, "longer than the frame");
    put_be32(fx->payload + OFF_NSEG, 3);
    assert_refused_for(dec_req, fx->payload, n + LLK_XWIRE_SEG_SIZE, fx, "trailing");
    /* 4 with 4 records present is fine again */
    put_be32(fx->payload + OFF_NSEG, 4);
    assert_decodes(dec_req, fx->payload, n + LLK_XWIRE_SEG_SIZE, fx);
    assert_int_equal(fx->req_out.nseg, 4);
    /* and a partial record in either direction */
    put_be32(fx->payload + OFF_NSEG, 3);
    assert_refused(dec_req, fx->payload, n - 1, fx);
    assert_refused(dec_req, fx->payload, n + 19, fx);
}

static void test_req_empty_segment_refused(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req;
    llk_xseg_wire_t segs[3];
    for (uint32_t at = 0; at < 3; at++) {
        memcpy(segs, fx->segs, sizeof segs);
        segs[at].length = 0;
        assert_int_equal(req_through_wire(fx, &r, segs), -1);
        assert_non_null(strstr(fx->why, "empty"));
    }
    /* offset 0 and tensor 0 are fine, only the length must be > 0 */
    memcpy(segs, fx->segs, sizeof segs);
    segs[1] = (llk_xseg_wire_t){0, 0, 1};
    assert_int_equal(req_through_wire(fx, &r, segs), 0);
}

static void test_req_segment_end_overflow_refused(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req;
    r.nseg = 1;
    r.bound_end = UINT64_MAX; /* so that only the overflow check can refuse */
    static const struct {
        uint64_t offset, length;
        int want;
    } cases[] = {
        {UINT64_MAX - 4096, 4096, 0}, /* ends at UINT64_MAX */
        {UINT64_MAX - 4095, 4096, -1},
        {UINT64_MAX, 1, -1},
        {1, UINT64_MAX, -1},
        {0, UINT64_MAX, 0},
        {0x8000000000000000ull, 0x8000000000000000ull, -1},
        {0x8000000000000000ull, 0x7FFFFFFFFFFFFFFFull, 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        llk_xseg_wire_t s = {1, cases[i].offset, cases[i].length};
        int rc = req_through_wire(fx, &r, &s);
        if (rc != cases[i].want)
            fail_msg("case %zu: rc %d, want %d (%s)", i, rc, cases[i].want,
                     fx->why ? fx->why : "-");
        if (rc != 0)
            assert_non_null(strstr(fx->why, "overflow"));
    }
}

static void test_req_total_overflow_refused(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req;
    llk_xseg_wire_t segs[3];
    r.bound_end = UINT64_MAX; /* so that only the total check can refuse */

    /* control: the sum is exactly UINT64_MAX */
    segs[0] = (llk_xseg_wire_t){0, 0, 0x8000000000000000ull};
    segs[1] = (llk_xseg_wire_t){1, 0, 0x7FFFFFFFFFFFFFFFull};
    r.nseg = 2;
    assert_int_equal(req_through_wire(fx, &r, segs), 0);
    assert_int_equal(fx->req_out.total_bytes, UINT64_MAX);

    /* one more byte anywhere wraps to 0 */
    segs[1].length = 0x8000000000000000ull;
    assert_int_equal(req_through_wire(fx, &r, segs), -1);
    assert_non_null(strstr(fx->why, "total"));

    segs[0] = (llk_xseg_wire_t){0, 0, UINT64_MAX};
    segs[1] = (llk_xseg_wire_t){0, 0, 1};
    assert_int_equal(req_through_wire(fx, &r, segs), -1);
    assert_non_null(strstr(fx->why, "total"));

    /* wrapping to exactly the value of an earlier partial sum */
    segs[0] = (llk_xseg_wire_t){0, 0, 5};
    segs[1] = (llk_xseg_wire_t){0, 0, UINT64_MAX - 9};
    segs[2] = (llk_xseg_wire_t){0, 0, 10};
    r.nseg = 3;
    assert_int_equal(req_through_wire(fx, &r, segs), -1);
    assert_non_null(strstr(fx->why, "total"));
}

/* ---- the transfer's bounds: every segment within them ---------------------- */

/* tensor < num_tensors_hint, for a segment at any position. */
static void test_req_segment_tensor_bound(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req; /* hint 4; tensors 0, 1, 3 */
    llk_xseg_wire_t segs[3];
    for (uint32_t at = 0; at < 3; at++) {
        static const struct {
            uint32_t tensor;
            int want;
        } cases[] = {{3, 0}, {4, -1}, {5, -1}, {UINT32_MAX, -1}};
        for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
            memcpy(segs, fx->segs, sizeof segs);
            segs[at].tensor = cases[i].tensor;
            int rc = req_through_wire(fx, &r, segs);
            if (rc != cases[i].want)
                fail_msg("segment %u, tensor %u: rc %d, want %d (%s)", at, cases[i].tensor, rc,
                         cases[i].want, fx->why ? fx->why : "-");
            if (rc != 0)
                assert_non_null(strstr(fx->why, "outside the request's bounds"));
        }
    }
    /* the other way round: the hint just below the highest tensor + 1 */
    r.num_tensors_hint = 3;
    assert_int_equal(req_through_wire(fx, &r, fx->segs), -1);
    assert_non_null(strstr(fx->why, "outside the request's bounds"));
    /* a hint above what this request touches: another request of the
     * transfer may go further */
    r.num_tensors_hint = UINT32_MAX;
    assert_int_equal(req_through_wire(fx, &r, fx->segs), 0);
    assert_int_equal(fx->req_out.num_tensors_hint, UINT32_MAX);

    /* read from its offset: the hint of a valid payload lowered in place */
    size_t n = valid_req_payload(fx);
    put_be32(fx->payload + OFF_HINT, 4);
    assert_decodes(dec_req, fx->payload, n, fx);
    put_be32(fx->payload + OFF_HINT, 3);
    assert_refused_for(dec_req, fx->payload, n, fx, "outside the request's bounds");
}

/* offset + length <= bound_end, for a segment at any position. */
static void test_req_segment_end_bound(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req; /* bound_end 12288 = the end of segments 1 and 2 */
    llk_xseg_wire_t segs[3];
    for (uint32_t at = 0; at < 3; at++) {
        memcpy(segs, fx->segs, sizeof segs);
        segs[at].offset = r.bound_end - segs[at].length; /* ends at bound_end */
        assert_int_equal(req_through_wire(fx, &r, segs), 0);
        segs[at].offset++; /* one byte past it */
        assert_int_equal(req_through_wire(fx, &r, segs), -1);
        assert_non_null(strstr(fx->why, "outside the request's bounds"));
        segs[at].offset--;
        segs[at].length++; /* the same end by its length */
        assert_int_equal(req_through_wire(fx, &r, segs), -1);
        assert_non_null(strstr(fx->why, "outside the request's bounds"));
        segs[at] = (llk_xseg_wire_t){0, UINT64_MAX - 1, 1}; /* far past it */
        assert_int_equal(req_through_wire(fx, &r, segs), -1);
        assert_non_null(strstr(fx->why, "outside the request's bounds"));
    }
    /* the bound just below the furthest end */
    r.bound_end = 12287;
    assert_int_equal(req_through_wire(fx, &r, fx->segs), -1);
    assert_non_null(strstr(fx->why, "outside the request's bounds"));
    r.bound_end = 0;
    assert_int_equal(req_through_wire(fx, &r, fx->segs), -1);
    assert_non_null(strstr(fx->why, "outside the request's bounds"));
    /* a bound past what this request touches: another request of the
     * transfer may go further */
    r.bound_end = UINT64_MAX;
    assert_int_equal(req_through_wire(fx, &r, fx->segs), 0);
    assert_int_equal(fx->req_out.bound_end, UINT64_MAX);

    /* a segment whose end overflows says so, whatever the bound */
    segs[0] = (llk_xseg_wire_t){0, UINT64_MAX, 1};
    r.nseg = 1;
    r.bound_end = 12288;
    assert_int_equal(req_through_wire(fx, &r, segs), -1);
    assert_non_null(strstr(fx->why, "overflow"));

    /* read from its offset: all 8 bytes of a valid payload's bound_end */
    size_t n = valid_req_payload(fx);
    put_be64(fx->payload + OFF_BOUND_END, 12288);
    assert_decodes(dec_req, fx->payload, n, fx);
    put_be64(fx->payload + OFF_BOUND_END, 12287);
    assert_refused_for(dec_req, fx->payload, n, fx, "outside the request's bounds");
    put_be64(fx->payload + OFF_BOUND_END, 0x0100000000000000ull); /* only the top byte */
    assert_decodes(dec_req, fx->payload, n, fx);
    assert_int_equal(fx->req_out.bound_end, 0x0100000000000000ull);
}

/* A request with segments covers at least one tensor. */
static void test_req_hint_zero_with_segments(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req;
    llk_xseg_wire_t one = {0, 0, 1};
    r.nseg = 1;
    r.num_tensors_hint = 1;
    assert_int_equal(req_through_wire(fx, &r, &one), 0); /* control */
    r.num_tensors_hint = 0;
    assert_int_equal(req_through_wire(fx, &r, &one), -1);
    assert_non_null(strstr(fx->why, "num_tensors_hint"));
    r.bound_end = UINT64_MAX;
    assert_int_equal(req_through_wire(fx, &r, &one), -1);
    assert_non_null(strstr(fx->why, "num_tensors_hint"));
    /* the last READ of a pull_cache: CONSUME with segments has bounds too */
    r.kind = LLK_XKIND_CACHE;
    r.key.type = LLMLINK_KEY_CACHE;
    r.flags = LLK_XREQ_CONSUME;
    r.nseg = 3;
    assert_int_equal(req_through_wire(fx, &r, fx->segs), -1);
    assert_non_null(strstr(fx->why, "num_tensors_hint"));
}

/* ---- encoder ---------------------------------------------------------------------- */

/* The encoder ignores r->segs (it takes the array as an argument) and
 * r->total_bytes (the decoder computes it). */
static void test_encode_req_ignores_decode_fields(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req;
    size_t n = enc_req(fx, &r, fx->segs);
    uint8_t *first = test_malloc(n);
    memcpy(first, fx->frame, n);
    r.segs = (const uint8_t *)"garbage";
    r.total_bytes = 12345;
    assert_int_equal(enc_req(fx, &r, fx->segs), n);
    assert_memory_equal(fx->frame, first, n);
    test_free(first);
}

/* ---- main ------------------------------------------------------------------------ */

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_roundtrip_req),
        T(test_roundtrip_req_extremes),
        T(test_roundtrip_req_enumerations),
        T(test_roundtrip_req_max_segments),
        T(test_req_id_in_header),
        T(test_req_op_validated),
        T(test_req_kind_validated),
        T(test_req_flags_validated),
        T(test_req_key_type_validated),
        T(test_req_too_many_segments_refused),
        T(test_req_length_must_match_count),
        T(test_req_empty_segment_refused),
        T(test_req_segment_end_overflow_refused),
        T(test_req_total_overflow_refused),
        T(test_req_segment_tensor_bound),
        T(test_req_segment_end_bound),
        T(test_req_hint_zero_with_segments),
        T(test_encode_req_ignores_decode_fields),
    };
    return cmocka_run_group_tests_name("xfer_wire_req: requests", tests, NULL, NULL);
}

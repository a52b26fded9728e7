/*
 * test_xfer_wire_done.c - unit tests of the end of a transfer in the data-
 * stream codec (core/xfer/xfer_wire.c): XREQ with CONSUME (drop the CacheKey
 * after a pull_cache) and XDONE.
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
#include "transport/transport.h" /* the shm and rdma op codes */
#include "xfer_wire_fixture.h"

/* ---- CONSUME ---------------------------------------------------------------------- */

/* A CONSUME READ without segments: drop the key after pull_cache. */
static void test_roundtrip_req_consume(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req;
    r.kind = LLK_XKIND_CACHE;
    r.key.type = LLMLINK_KEY_CACHE;
    r.flags = LLK_XREQ_CONSUME;
    r.nseg = 0;
    assert_int_equal(enc_req(fx, &r, NULL), LLK_XWIRE_HEADER_SIZE + LLK_XWIRE_REQ_FIXED);
    assert_int_equal(req_through_wire(fx, &r, NULL), 0);
    assert_req_equal(&fx->req_out, &r, NULL);
    assert_int_equal(fx->req_out.total_bytes, 0);

    r.flags = LLK_XREQ_CONSUME | LLK_XREQ_WHOLE;
    assert_int_equal(req_through_wire(fx, &r, NULL), 0);
    assert_int_equal(fx->req_out.flags, LLK_XREQ_CONSUME | LLK_XREQ_WHOLE);
}

/* A CONSUME without segments moves nothing: its bounds are not checked,
 * and travel unchanged. */
static void test_req_consume_ignores_bounds(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req;
    r.kind = LLK_XKIND_CACHE;
    r.key.type = LLMLINK_KEY_CACHE;
    r.nseg = 0;
    static const struct {
        uint32_t hint;
        uint64_t bound_end;
    } cases[] = {{0, 0}, {0, UINT64_MAX}, {UINT32_MAX, 0}, {UINT32_MAX, UINT64_MAX}, {4, 12288}};
    static const uint16_t flags[] = {LLK_XREQ_CONSUME, LLK_XREQ_CONSUME | LLK_XREQ_ALL_TENSORS,
                                     LLK_XREQ_CONSUME | LLK_XREQ_WHOLE};
    for (size_t f = 0; f < ARRAY_LEN(flags); f++)
        for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
            r.flags = flags[f];
            r.num_tensors_hint = cases[i].hint;
            r.bound_end = cases[i].bound_end;
            if (req_through_wire(fx, &r, NULL) != 0)
                fail_msg("flags 0x%x, hint %u, bound_end %llu: refused: %s", flags[f],
                         cases[i].hint, (unsigned long long)cases[i].bound_end, fx->why);
            assert_req_equal(&fx->req_out, &r, NULL);
        }
}

/* nseg 0 is only a CONSUME READ. */
static void test_req_without_segments(void **state)
{
    xw_fixture_t *fx = *state;
    llk_xreq_t r = fx->req;
    r.nseg = 0;

    r.flags = 0;
    assert_int_equal(req_through_wire(fx, &r, NULL), -1);
    assert_non_null(strstr(fx->why, "segments"));
    r.flags = LLK_XREQ_WHOLE;
    assert_int_equal(req_through_wire(fx, &r, NULL), -1);

    r.flags = LLK_XREQ_CONSUME;
    for (uint8_t op = LLK_XOP_WRITE; op <= LLK_XOP_SHM_WRITE; op++) {
        r.op = op;
        assert_int_equal(req_through_wire(fx, &r, NULL), -1);
        assert_non_null(strstr(fx->why, "READ"));
    }
    r.op = LLK_XOP_READ;
    assert_int_equal(req_through_wire(fx, &r, NULL), 0);

    /* CONSUME with segments: the last READ of a pull_cache */
    r.nseg = 3;
    assert_int_equal(req_through_wire(fx, &r, fx->segs), 0);
    assert_int_equal(fx->req_out.flags, LLK_XREQ_CONSUME);
}

/* ---- XDONE ------------------------------------------------------------------------ */

static void test_roundtrip_done(void **state)
{
    xw_fixture_t *fx = *state;
    static const uint32_t statuses[] = {LLMLINK_SUCCESS, LLMLINK_FAILED, LLMLINK_NETWORK_ERROR, 1};
    for (size_t i = 0; i < ARRAY_LEN(statuses); i++) {
        size_t n = llk_xwire_encode_done(fx->frame, FRAME_CAP, REQ_ID, statuses[i]);
        assert_int_equal(n, LLK_XWIRE_HEADER_SIZE + 4);
        assert_decodes(dec_done, payload_of(fx->frame, n, LLK_XMSG_DONE, REQ_ID), 4, fx);
        assert_int_equal(fx->done_out, statuses[i]);
    }
}

static void test_done_length_validated(void **state)
{
    xw_fixture_t *fx = *state;
    static const uint8_t bytes[8] = {0x50, 0x10, 0xB0, 0x02, 0, 0, 0, 0};
    assert_decodes(dec_done, bytes, 4, fx);
    assert_int_equal(fx->done_out, LLMLINK_KV_CACHE_NOT_EXIST);
    for (size_t n = 0; n < 4; n++)
        assert_refused_for(dec_done, bytes, n, fx, "truncated");
    for (size_t n = 5; n <= 8; n++)
        assert_refused_for(dec_done, bytes, n, fx, "trailing");
}

/* ---- main ------------------------------------------------------------------------ */

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_roundtrip_req_consume),
        T(test_req_consume_ignores_bounds),
        T(test_req_without_segments),
        T(test_roundtrip_done),
        T(test_done_length_validated),
    };
    return cmocka_run_group_tests_name("xfer_wire_done: consume and done", tests, NULL, NULL);
}

/*
 * test_xfer_wire_resp.c - unit tests of XRESP, the answer of the data-stream
 * codec (core/xfer/xfer_wire.c): round trips, the message, the iovecs.
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
#include "xfer_wire_fixture.h"

/* ---- round trips ------------------------------------------------------------------ */

static void test_roundtrip_resp(void **state)
{
    xw_fixture_t *fx = *state;

    /* READ / WRITE answers: no iovecs */
    assert_int_equal(resp_through_wire(fx, LLMLINK_SUCCESS, 20480, NULL, NULL, 0), 0);
    assert_int_equal(fx->resp_out.status, LLMLINK_SUCCESS);
    assert_int_equal(fx->resp_out.total_bytes, 20480);
    assert_string_equal(fx->resp_out.msg, "");
    assert_int_equal(fx->resp_out.niov, 0);

    assert_int_equal(resp_through_wire(fx, LLMLINK_SUCCESS, UINT64_MAX, "", NULL, 0), 0);
    assert_int_equal(fx->resp_out.total_bytes, UINT64_MAX);
    assert_string_equal(fx->resp_out.msg, "");

    /* refusals: any status, a message */
    static const uint32_t statuses[] = {LLMLINK_FAILED, LLMLINK_KV_CACHE_NOT_EXIST,
                                        LLMLINK_PARAM_INVALID, 1};
    for (size_t i = 0; i < ARRAY_LEN(statuses); i++) {
        assert_int_equal(resp_through_wire(fx, statuses[i], 0, "segment 3 outside tensor 1",
                                           NULL, 0),
                         0);
        assert_int_equal(fx->resp_out.status, statuses[i]);
        assert_string_equal(fx->resp_out.msg, "segment 3 outside tensor 1");
    }

    /* SHM answer with iovecs, edge addresses */
    uint64_t iovs[] = {0, 1, UINT64_MAX - 1, 1, 0x7F0000000000ull, UINT64_MAX - 0x7F0000000000ull};
    assert_int_equal(resp_through_wire(fx, LLMLINK_SUCCESS, 42, "ok", iovs, 3), 0);
    assert_int_equal(fx->resp_out.total_bytes, 42);
    assert_string_equal(fx->resp_out.msg, "ok");
    assert_iovs_equal(&fx->resp_out, iovs, 3);
}

static void test_roundtrip_resp_max(void **state)
{
    xw_fixture_t *fx = *state;
    char msg[LLK_XWIRE_MAX_MSG + 1];
    for (size_t i = 0; i < LLK_XWIRE_MAX_MSG; i++)
        msg[i] = (char)(0x20 + i % 95); /* every printable byte */
    msg[LLK_XWIRE_MAX_MSG] = '\0';
    for (uint32_t i = 0; i < LLK_XWIRE_MAX_SEGS; i++) {
        fx->iovs[2 * i] = (uint64_t)i << 32;
        fx->iovs[2 * i + 1] = 1 + i;
    }
    size_t n = enc_resp(fx, LLMLINK_SUCCESS, 1, msg, fx->iovs, LLK_XWIRE_MAX_SEGS);
    assert_int_equal(n, MAX_RESP_FRAME);
    assert_decodes(dec_resp, payload_of(fx->frame, n, LLK_XMSG_RESP, REQ_ID),
                   LLK_XWIRE_RESP_MAX_PAYLOAD, fx);
    assert_string_equal(fx->resp_out.msg, msg);
    assert_iovs_equal(&fx->resp_out, fx->iovs, LLK_XWIRE_MAX_SEGS);
}

static void test_resp_overlong_message_truncated(void **state)
{
    xw_fixture_t *fx = *state;
    char msg[LLK_XWIRE_MAX_MSG + 100];
    memset(msg, 'x', sizeof msg - 1);
    msg[sizeof msg - 1] = '\0';
    msg[LLK_XWIRE_MAX_MSG - 1] = 'E'; /* last byte that survives */
    msg[LLK_XWIRE_MAX_MSG] = 'Z';     /* first byte that must not */
    size_t n = enc_resp(fx, LLMLINK_FAILED, 0, msg, NULL, 0);
    assert_int_equal(n, llk_xwire_resp_size(LLK_XWIRE_MAX_MSG, 0));
    const uint8_t *p = payload_of(fx->frame, n, LLK_XMSG_RESP, REQ_ID);
    assert_int_equal((p[OFF_MSG_LEN] << 8) | p[OFF_MSG_LEN + 1], LLK_XWIRE_MAX_MSG);
    assert_decodes(dec_resp, p, n - LLK_XWIRE_HEADER_SIZE, fx);
    assert_int_equal(strlen(fx->resp_out.msg), LLK_XWIRE_MAX_MSG);
    assert_memory_equal(fx->resp_out.msg, msg, LLK_XWIRE_MAX_MSG);
    assert_null(strchr(fx->resp_out.msg, 'Z'));
}

/* ---- the decoder refuses malformed answers ---------------------------------------- */

/* XRESP payload: status, total, u16 claimed, `present` message bytes of
 * fill, u32 niov, then `niov_present` iovecs (i+1 << 12, 4096). */
static size_t build_resp(uint8_t *out, uint32_t status, uint16_t claimed, size_t present,
                         uint8_t fill, uint32_t niov, uint32_t niov_present)
{
    put_be32(out + OFF_STATUS, status);
    put_be64(out + 4, 4096);
    put_be16(out + OFF_MSG_LEN, claimed);
    memset(out + OFF_MSG, fill, present);
    size_t n = OFF_MSG + present;
    put_be32(out + n, niov);
    n += 4;
    for (uint32_t i = 0; i < niov_present; i++) {
        put_be64(out + n, (uint64_t)(i + 1) << 12);
        put_be64(out + n + 8, 4096);
        n += LLK_XWIRE_IOV_SIZE;
    }
    return n;
}

static void test_resp_message_length_validated(void **state)
{
    xw_fixture_t *fx = *state;
    size_t n;

    n = build_resp(fx->payload, 0, LLK_XWIRE_MAX_MSG, LLK_XWIRE_MAX_MSG, 'm', 0, 0);
    assert_decodes(dec_resp, fx->payload, n, fx); /* control: at the limit */
    assert_int_equal(strlen(fx->resp_out.msg), LLK_XWIRE_MAX_MSG);

    /* over the limit even though the bytes are there */
    n = build_resp(fx->payload, 0, LLK_XWIRE_MAX_MSG + 1, LLK_XWIRE_MAX_MSG + 1, 'm', 0, 0);
    assert_refused_for(dec_resp, fx->payload, n, fx, "too long");
    n = build_resp(fx->payload, 0, 0xFFFF, 0xFFFF, 'm', 0, 0);
    assert_refused_for(dec_resp, fx->payload, n, fx, "too long");

    /* longer than the frame */
    n = build_resp(fx->payload, 0, 12, 11, 'm', 0, 0);
    assert_refused(dec_resp, fx->payload, n - 4, fx); /* without the niov field */
    n = build_resp(fx->payload, 0, 1, 0, 'm', 0, 0);
    assert_refused(dec_resp, fx->payload, OFF_MSG, fx);
    /* a claimed length that swallows the niov field */
    n = build_resp(fx->payload, 0, 4, 0, 'm', 0, 0);
    assert_int_equal(n, LLK_XWIRE_RESP_FIXED);
    assert_refused(dec_resp, fx->payload, n, fx);
}

/* The message ends up in llmlink_last_error(): no control characters, no
 * terminal escapes, no bytes that are not ASCII, no early NUL. */
static void test_resp_nonprintable_replaced(void **state)
{
    xw_fixture_t *fx = *state;
    static const uint8_t raw[] = {'A', 0x00, 0x01, 0x1F, 0x20, 0x7E, 0x7F, 0x80, 0xFF, 0x1B, 'z'};
    size_t n = build_resp(fx->payload, LLMLINK_FAILED, sizeof raw, 0, 0, 0, 0);
    memcpy(fx->payload + OFF_MSG, raw, sizeof raw);
    put_be32(fx->payload + OFF_MSG + sizeof raw, 0);
    n = OFF_MSG + sizeof raw + 4;
    assert_decodes(dec_resp, fx->payload, n, fx);
    assert_string_equal(fx->resp_out.msg, "A??? ~????z");

    /* the same through the encoder, which passes bytes through unchanged */
    assert_int_equal(resp_through_wire(fx, LLMLINK_FAILED, 0, "tab\there\x7f\xc3\xa9", NULL, 0),
                     0);
    assert_string_equal(fx->resp_out.msg, "tab?here???");
    const uint8_t *p = payload_of(fx->frame, llk_xwire_resp_size(11, 0), LLK_XMSG_RESP, REQ_ID);
    assert_memory_equal(p + OFF_MSG, "tab\there\x7f\xc3\xa9", 11);

    /* every byte value, at the limit */
    uint8_t all[LLK_XWIRE_MAX_MSG];
    for (size_t i = 0; i < sizeof all; i++)
        all[i] = (uint8_t)i;
    build_resp(fx->payload, LLMLINK_FAILED, sizeof all, 0, 0, 0, 0);
    memcpy(fx->payload + OFF_MSG, all, sizeof all);
    put_be32(fx->payload + OFF_MSG + sizeof all, 0);
    assert_decodes(dec_resp, fx->payload, OFF_MSG + sizeof all + 4, fx);
    assert_int_equal(strlen(fx->resp_out.msg), sizeof all);
    for (size_t i = 0; i < sizeof all; i++) {
        char want = (i >= 0x20 && i <= 0x7e) ? (char)i : '?';
        if (fx->resp_out.msg[i] != want)
            fail_msg("byte 0x%02zx became 0x%02x", i, (unsigned char)fx->resp_out.msg[i]);
    }
}

static void test_resp_too_many_iovecs_refused(void **state)
{
    xw_fixture_t *fx = *state;
    size_t n = build_resp(fx->payload, 0, 0, 0, 0, LLK_XWIRE_MAX_SEGS, LLK_XWIRE_MAX_SEGS);
    assert_decodes(dec_resp, fx->payload, n, fx); /* control: the maximum */
    assert_int_equal(fx->resp_out.niov, LLK_XWIRE_MAX_SEGS);

    n = build_resp(fx->payload, 0, 0, 0, 0, LLK_XWIRE_MAX_SEGS + 1, LLK_XWIRE_MAX_SEGS + 1);
    assert_refused_for(dec_resp, fx->payload, n, fx, "too many");

    n = build_resp(fx->payload, 0, 0, 0, 0, UINT32_MAX, 0);
    assert_refused(dec_resp, fx->payload, n, fx);
}

static void test_resp_length_must_match_count(void **state)
{
    xw_fixture_t *fx = *state;
    size_t n = build_resp(fx->payload, 0, 2, 2, 'k', 2, 3); /* 3 records, claims 2 */
    assert_refused(dec_resp, fx->payload, n, fx);
    assert_decodes(dec_resp, fx->payload, n - LLK_XWIRE_IOV_SIZE, fx); /* control */
    assert_refused(dec_resp, fx->payload, n - 2 * LLK_XWIRE_IOV_SIZE, fx);
    assert_refused(dec_resp, fx->payload, n - LLK_XWIRE_IOV_SIZE - 1, fx);
    assert_refused(dec_resp, fx->payload, n - LLK_XWIRE_IOV_SIZE + 1, fx);
    put_be32(fx->payload + OFF_MSG + 2, 3);
    assert_decodes(dec_resp, fx->payload, n, fx);
    put_be32(fx->payload + OFF_MSG + 2, 0);
    assert_refused(dec_resp, fx->payload, n, fx);
}

/* Only a SUCCESS answer hands out memory addresses. */
static void test_resp_iovecs_only_on_success(void **state)
{
    xw_fixture_t *fx = *state;
    uint64_t iov[2] = {0x10000, 4096};
    assert_int_equal(resp_through_wire(fx, LLMLINK_SUCCESS, 4096, NULL, iov, 1), 0);
    static const uint32_t refusals[] = {LLMLINK_FAILED, LLMLINK_PARAM_INVALID, 1};
    for (size_t i = 0; i < ARRAY_LEN(refusals); i++) {
        assert_int_equal(resp_through_wire(fx, refusals[i], 4096, "no", iov, 1), -1);
        assert_non_null(strstr(fx->why, "refusal"));
        assert_int_equal(resp_through_wire(fx, refusals[i], 4096, "no", NULL, 0), 0);
    }
}

static void test_resp_iovec_values_validated(void **state)
{
    xw_fixture_t *fx = *state;
    static const struct {
        uint64_t addr, len;
        int want;
        const char *why;
    } cases[] = {
        {0x1000, 0, -1, "empty"},
        {0, 0, -1, "empty"},
        {UINT64_MAX, 0, -1, "empty"},
        {UINT64_MAX - 4096, 4096, 0, NULL}, /* ends at UINT64_MAX */
        {UINT64_MAX - 4095, 4096, -1, "overflow"},
        {UINT64_MAX, 1, -1, "overflow"},
        {1, UINT64_MAX, -1, "overflow"},
        {0, UINT64_MAX, 0, NULL},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        /* the bad one in the middle of three good ones */
        uint64_t iov[6] = {0x1000, 1, cases[i].addr, cases[i].len, 0x2000, 1};
        int rc = resp_through_wire(fx, LLMLINK_SUCCESS, 0, NULL, iov, 3);
        if (rc != cases[i].want)
            fail_msg("case %zu: rc %d, want %d (%s)", i, rc, cases[i].want,
                     fx->why ? fx->why : "-");
        if (rc != 0)
            assert_non_null(strstr(fx->why, cases[i].why));
    }
}

/* ---- main ------------------------------------------------------------------------ */

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_roundtrip_resp),
        T(test_roundtrip_resp_max),
        T(test_resp_overlong_message_truncated),
        T(test_resp_message_length_validated),
        T(test_resp_nonprintable_replaced),
        T(test_resp_too_many_iovecs_refused),
        T(test_resp_length_must_match_count),
        T(test_resp_iovecs_only_on_success),
        T(test_resp_iovec_values_validated),
    };
    return cmocka_run_group_tests_name("xfer_wire_resp: answers", tests, NULL, NULL);
}

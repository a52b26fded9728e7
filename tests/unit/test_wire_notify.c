/*
 * test_wire_notify.c - unit tests of the NOTIFY / NOTIFY_ACK codec
 * (core/link/wire.c) and of the header rule that lets NOTIFY alone exceed
 * LLK_WIRE_MAX_PAYLOAD.
 *
 * Byte layouts are checked against frames built here by hand (be_put.h),
 * never against the encoder's own output; decoders run on exact-size heap
 * copies so that AddressSanitizer catches a read past the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "llmlink.h"
#include "link/wire.h"
#include "be_put.h"
#include "codec_check.h"

#define CAP (LLK_WIRE_MAX_NOTIFY_FRAME + 64)

typedef struct nfx {
    uint8_t frame[CAP];
    uint8_t payload[CAP];
    uint8_t data[LLK_NOTIFY_MAX_DATA + 1];
    const char *why;
} nfx_t;

static int setup(void **state)
{
    nfx_t *fx = test_calloc(1, sizeof *fx);
    assert_non_null(fx);
    for (size_t i = 0; i < sizeof fx->data; i++)
        fx->data[i] = (uint8_t)(i * 13 + 5);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    test_free(*state);
    return 0;
}

/* Decodes a NOTIFY payload from an exact-size heap copy. */
static int decode_notify(nfx_t *fx, const uint8_t *p, size_t len, uint64_t *seq, uint32_t *dlen,
                         uint8_t *out)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, p, len);
    const uint8_t *data = NULL;
    fx->why = NULL;
    int rc = llk_wire_decode_notify(copy, len, seq, &data, dlen, &fx->why);
    if (rc == 0) {
        assert_ptr_equal(data, copy + LLK_NOTIFY_HEAD);
        memcpy(out, data, *dlen);
    } else {
        assert_non_null(fx->why);
    }
    free(copy);
    return rc;
}

static int decode_ack(nfx_t *fx, const uint8_t *p, size_t len, uint64_t *seq, uint32_t *st)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, p, len);
    fx->why = NULL;
    int rc = llk_wire_decode_notify_ack(copy, len, seq, st, &fx->why);
    if (rc != 0)
        assert_non_null(fx->why);
    free(copy);
    return rc;
}

/* A hand-built NOTIFY payload: seq, len field, n data bytes. */
static size_t hand_notify(nfx_t *fx, uint64_t seq, uint32_t len_field, size_t n)
{
    put_be64(fx->payload, seq);
    put_be32(fx->payload + 8, len_field);
    memcpy(fx->payload + 12, fx->data, n);
    return 12 + n;
}

static void test_notify_layout(void **state)
{
    nfx_t *fx = *state;
    size_t n = llk_wire_encode_notify(fx->frame, CAP, LLK_WIRE_VERSION, 0x0102030405060708ull,
                                      fx->data, 3);
    assert_int_equal(n, 16 + 12 + 3);
    static const uint8_t want[] = {
        0x4C, 0x4C, 0x4D, 0x4B, 0x00, 0x01, 0x00, 13,   0, 0, 0, 15, 0, 0, 0, 0,
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0, 0, 0, 3,  5, 18, 31};
    assert_memory_equal(fx->frame, want, sizeof want);
    static const uint8_t ack[] = {0x4C, 0x4C, 0x4D, 0x4B, 0x00, 0x01, 0x00, 14, 0, 0, 0, 12,
                                  0,    0,    0,    0,    0,    0,    0,    0,  0, 0, 0, 9,
                                  0x50, 0x10, 0xB1, 0x0F};
    n = llk_wire_encode_notify_ack(fx->frame, CAP, LLK_WIRE_VERSION, 9,
                                   LLMLINK_NOTIFY_QUEUE_FULL);
    assert_int_equal(n, sizeof ack);
    assert_memory_equal(fx->frame, ack, sizeof ack);
}

static void test_notify_round_trip_sizes(void **state)
{
    nfx_t *fx = *state;
    static const uint32_t sizes[] = {1, 2, 1000, 4095, 4096};
    uint8_t *out = malloc(LLK_NOTIFY_MAX_DATA);
    assert_non_null(out);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = llk_wire_encode_notify(fx->frame, CAP, LLK_WIRE_VERSION, 100 + i, fx->data,
                                          sizes[i]);
        assert_int_equal(n, LLK_WIRE_HEADER_SIZE + LLK_NOTIFY_HEAD + sizes[i]);
        llk_frame_header_t h;
        llk_wire_read_header(fx->frame, &h);
        assert_int_equal(llk_wire_check_header(&h), LLK_HDR_OK);
        assert_int_equal(h.type, LLK_MSG_NOTIFY);
        uint64_t seq;
        uint32_t len;
        assert_int_equal(decode_notify(fx, fx->frame + 16, h.length, &seq, &len, out), 0);
        assert_int_equal(seq, 100 + i);
        assert_int_equal(len, sizes[i]);
        assert_memory_equal(out, fx->data, sizes[i]);
    }
    free(out);
}

static void test_notify_encoder_refuses(void **state)
{
    nfx_t *fx = *state;
    assert_int_equal(llk_wire_encode_notify(fx->frame, CAP, 1, 1, fx->data, 0), 0);
    assert_int_equal(llk_wire_encode_notify(fx->frame, CAP, 1, 1, fx->data, 4097), 0);
    assert_int_equal(llk_wire_encode_notify(fx->frame, CAP, 1, 1, NULL, 5), 0);
}

typedef struct enc_ctx {
    const uint8_t *data;
    uint32_t len;
    bool ack;
} enc_ctx_t;

static size_t enc(uint8_t *out, size_t cap, void *ctx)
{
    enc_ctx_t *c = ctx;
    if (c->ack)
        return llk_wire_encode_notify_ack(out, cap, 1, 7, LLMLINK_SUCCESS);
    return llk_wire_encode_notify(out, cap, 1, 7, c->data, c->len);
}

/* No byte written at or past cap for any cap too small (incl. 4096 bytes). */
static void test_notify_encoder_capacity(void **state)
{
    nfx_t *fx = *state;
    enc_ctx_t c = {fx->data, 4096, false};
    assert_int_equal(codec_check_capacity("NOTIFY 4096", enc, &c, fx->frame, CAP),
                     LLK_WIRE_MAX_NOTIFY_FRAME);
    c.len = 17;
    codec_check_capacity("NOTIFY 17", enc, &c, fx->frame, CAP);
    c.ack = true;
    assert_int_equal(codec_check_capacity("NOTIFY_ACK", enc, &c, fx->frame, CAP), 28);
}

static void test_notify_decoder_refuses(void **state)
{
    nfx_t *fx = *state;
    uint8_t out[LLK_NOTIFY_MAX_DATA + 1];
    uint64_t seq;
    uint32_t len;
    size_t n;
    /* truncated head: every length below 12 */
    n = hand_notify(fx, 1, 1, 1);
    for (size_t cut = 0; cut < 12; cut++)
        assert_int_equal(decode_notify(fx, fx->payload, cut, &seq, &len, out), -1);
    /* len 0 */
    n = hand_notify(fx, 1, 0, 0);
    assert_int_equal(decode_notify(fx, fx->payload, n, &seq, &len, out), -1);
    assert_non_null(strstr(fx->why, "empty"));
    /* len above 4096, with as many bytes as it says (4097) */
    n = hand_notify(fx, 1, 4097, 4097);
    assert_int_equal(decode_notify(fx, fx->payload, n, &seq, &len, out), -1);
    assert_non_null(strstr(fx->why, "4096"));
    /* len 5000 with fewer bytes, and 0xFFFFFFFF */
    n = hand_notify(fx, 1, 5000, 100);
    assert_int_equal(decode_notify(fx, fx->payload, n, &seq, &len, out), -1);
    n = hand_notify(fx, 1, 0xFFFFFFFFu, 100);
    assert_int_equal(decode_notify(fx, fx->payload, n, &seq, &len, out), -1);
    /* mismatch both ways */
    n = hand_notify(fx, 1, 10, 9);
    assert_int_equal(decode_notify(fx, fx->payload, n, &seq, &len, out), -1);
    assert_non_null(strstr(fx->why, "disagrees"));
    n = hand_notify(fx, 1, 10, 11);
    assert_int_equal(decode_notify(fx, fx->payload, n, &seq, &len, out), -1);
    assert_non_null(strstr(fx->why, "disagrees"));
    /* exact: accepted */
    n = hand_notify(fx, 42, 10, 10);
    assert_int_equal(decode_notify(fx, fx->payload, n, &seq, &len, out), 0);
    assert_int_equal(seq, 42);
    assert_int_equal(len, 10);
}

static void test_ack_decoder(void **state)
{
    nfx_t *fx = *state;
    uint64_t seq;
    uint32_t st;
    put_be64(fx->payload, 77);
    put_be32(fx->payload + 8, LLMLINK_SUCCESS);
    assert_int_equal(decode_ack(fx, fx->payload, 12, &seq, &st), 0);
    assert_int_equal(seq, 77);
    assert_int_equal(st, LLMLINK_SUCCESS);
    put_be32(fx->payload + 8, LLMLINK_NOTIFY_QUEUE_FULL);
    assert_int_equal(decode_ack(fx, fx->payload, 12, &seq, &st), 0);
    assert_int_equal(st, LLMLINK_NOTIFY_QUEUE_FULL);
    /* any other status */
    put_be32(fx->payload + 8, LLMLINK_FAILED);
    assert_int_equal(decode_ack(fx, fx->payload, 12, &seq, &st), -1);
    put_be32(fx->payload + 8, LLMLINK_SUCCESS);
    /* truncated and trailing */
    for (size_t cut = 0; cut < 12; cut++)
        assert_int_equal(decode_ack(fx, fx->payload, cut, &seq, &st), -1);
    assert_int_equal(decode_ack(fx, fx->payload, 13, &seq, &st), -1);
}

/* NOTIFY alone may carry LLK_WIRE_MAX_NOTIFY_PAYLOAD; every other type
 * keeps LLK_WIRE_MAX_PAYLOAD; 12 stays reserved, 15 is unknown. */
static void test_header_limits(void **state)
{
    (void)state;
    llk_frame_header_t h = {LLK_WIRE_MAGIC, LLK_WIRE_VERSION, LLK_MSG_NOTIFY,
                            LLK_WIRE_MAX_NOTIFY_PAYLOAD, 0};
    assert_int_equal(llk_wire_check_header(&h), LLK_HDR_OK);
    h.length++;
    assert_int_equal(llk_wire_check_header(&h), LLK_HDR_TOO_LARGE);
    h.length = 5000 + 12;
    assert_int_equal(llk_wire_check_header(&h), LLK_HDR_TOO_LARGE);
    h.type = LLK_MSG_NOTIFY_ACK;
    h.length = LLK_WIRE_MAX_PAYLOAD + 1;
    assert_int_equal(llk_wire_check_header(&h), LLK_HDR_TOO_LARGE);
    h.type = LLK_MSG_HEARTBEAT;
    assert_int_equal(llk_wire_check_header(&h), LLK_HDR_TOO_LARGE);
    h.length = 12;
    h.type = 12;
    assert_int_equal(llk_wire_check_header(&h), LLK_HDR_BAD_TYPE);
    h.type = 15;
    assert_int_equal(llk_wire_check_header(&h), LLK_HDR_BAD_TYPE);
    h.type = LLK_MSG_NOTIFY_ACK;
    assert_int_equal(llk_wire_check_header(&h), LLK_HDR_OK);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_notify_layout),          T(test_notify_round_trip_sizes),
        T(test_notify_encoder_refuses), T(test_notify_encoder_capacity),
        T(test_notify_decoder_refuses), T(test_ack_decoder),
        T(test_header_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

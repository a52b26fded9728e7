/*
 * test_wire.c - unit tests of the control-plane frame codec (core/wire.c).
 *
 * The codec is the first code that touches bytes from the network, so most
 * of these tests are about refusing bad input: every truncation, trailing
 * bytes, out-of-range fields, oversized counts and lengths. Decoders are
 * always run on an exact-size heap copy of the payload so that a read past
 * the end is caught by AddressSanitizer (make asan) instead of reading the
 * rest of a larger test buffer.
 *
 * Byte layout is checked against the hand-written frames in
 * tests/common/wire_vectors.h, never against the encoder's own output.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmlink.h"
#include "link/wire.h"
#include "be_put.h"
#include "codec_check.h"
#include "wire_vectors.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
/* Room for the largest legal frame plus slack for the canary checks. */
#define FRAME_CAP (LLK_WIRE_MAX_FRAME + 64)
/* Fixed part of each payload (before the extension list). */
#define HELLO_FIXED   36u
#define WELCOME_FIXED 24u
#define REJECT_FIXED  6u

/* ---- fixture ---------------------------------------------------------------- */

typedef struct wire_fixture {
    uint8_t frame[FRAME_CAP];  /* encoder output */
    uint8_t payload[FRAME_CAP]; /* hand-built payloads */
    uint8_t ext_blob[LLK_WIRE_MAX_PAYLOAD]; /* extension data */
    llk_msg_hello_t hello;     /* a valid HELLO with three extensions */
    llk_msg_welcome_t welcome; /* a valid WELCOME with two extensions */
    llk_msg_hello_t hello_out;
    llk_msg_welcome_t welcome_out;
    llk_msg_reject_t reject_out;
    llk_msg_attach_t attach_out;
    llk_msg_attach_ok_t attach_ok_out;
    const char *why;
} wire_fixture_t;

static int setup(void **state)
{
    wire_fixture_t *fx = test_calloc(1, sizeof *fx);
    assert_non_null(fx);
    for (size_t i = 0; i < sizeof fx->ext_blob; i++)
        fx->ext_blob[i] = (uint8_t)(i * 7 + 3);

    llk_msg_hello_t *h = &fx->hello;
    h->client_cluster_id = 0xDEADBEEFCAFEF00Dull;
    h->target_cluster_id = 42;
    h->client_role = LLMLINK_ROLE_DECODER;
    h->expected_server_role = LLMLINK_ROLE_PROMPT;
    h->incarnation = 0x0123456789ABCDEFull;
    h->liveness_ms = 3000;
    /* A plain extension, an empty critical one and one with binary data,
     * so round trips cover every extension shape. */
    h->num_ext = 3;
    h->ext[0] = (llk_ext_t){0x0001, 3, (const uint8_t *)"abc"};
    h->ext[1] = (llk_ext_t){0x8001, 0, NULL};
    h->ext[2] = (llk_ext_t){0x7FFF, 8, fx->ext_blob};

    llk_msg_welcome_t *w = &fx->welcome;
    w->server_cluster_id = 42;
    w->server_role = LLMLINK_ROLE_PROMPT;
    w->liveness_ms = LLK_LIVENESS_MAX_MS;
    w->incarnation = UINT64_MAX;
    w->num_ext = 2;
    w->ext[0] = (llk_ext_t){0x0002, 5, (const uint8_t *)"\x00\x01\x02\xfe\xff"};
    w->ext[1] = (llk_ext_t){0xFFFF, 16, fx->ext_blob + 100};

    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    test_free(*state);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------ */

/* Checks that frame[0..n) is one well-formed frame of the given type whose
 * header length matches the bytes that follow it; returns the payload. */
static const uint8_t *payload_of(const uint8_t *frame, size_t n, llk_msg_type_t type)
{
    llk_frame_header_t h;
    assert_true(n >= LLK_WIRE_HEADER_SIZE);
    llk_wire_read_header(frame, &h);
    assert_int_equal(llk_wire_check_header(&h), LLK_HDR_OK);
    assert_int_equal(h.magic, LLK_WIRE_MAGIC);
    assert_int_equal(h.version, LLK_WIRE_VERSION);
    assert_int_equal(h.type, type);
    assert_int_equal(h.flags, 0);
    assert_int_equal(h.length, n - LLK_WIRE_HEADER_SIZE);
    return frame + LLK_WIRE_HEADER_SIZE;
}

/* Every message kind behind one signature, so loops can cover all of them. */
typedef int (*decode_fn)(const uint8_t *p, size_t n, wire_fixture_t *fx);

static int dec_hello(const uint8_t *p, size_t n, wire_fixture_t *fx)
{
    return llk_wire_decode_hello(p, n, &fx->hello_out, &fx->why);
}
static int dec_welcome(const uint8_t *p, size_t n, wire_fixture_t *fx)
{
    return llk_wire_decode_welcome(p, n, &fx->welcome_out, &fx->why);
}
static int dec_reject(const uint8_t *p, size_t n, wire_fixture_t *fx)
{
    return llk_wire_decode_reject(p, n, &fx->reject_out, &fx->why);
}
static int dec_heartbeat(const uint8_t *p, size_t n, wire_fixture_t *fx)
{
    return llk_wire_decode_simple(LLK_MSG_HEARTBEAT, p, n, &fx->why);
}
static int dec_unlink(const uint8_t *p, size_t n, wire_fixture_t *fx)
{
    return llk_wire_decode_simple(LLK_MSG_UNLINK, p, n, &fx->why);
}
static int dec_unlink_ack(const uint8_t *p, size_t n, wire_fixture_t *fx)
{
    return llk_wire_decode_simple(LLK_MSG_UNLINK_ACK, p, n, &fx->why);
}

/* Runs a decoder on an exact-size heap copy of p[0..n) (see file comment). */
static int decode_exact(decode_fn fn, const uint8_t *p, size_t n, wire_fixture_t *fx)
{
    uint8_t *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    if (n)
        memcpy(copy, p, n);
    fx->why = NULL;
    int rc = fn(copy, n, fx);
    free(copy);
    return rc;
}

static void assert_decodes(decode_fn fn, const uint8_t *p, size_t n, wire_fixture_t *fx)
{
    int rc = decode_exact(fn, p, n, fx);
    if (rc != 0)
        fail_msg("decoder refused a valid %zu-byte payload: %s", n, fx->why ? fx->why : "?");
}

/* A refusal must come with a reason: it ends up in logs and last_error. */
static void assert_refused(decode_fn fn, const uint8_t *p, size_t n, wire_fixture_t *fx)
{
    int rc = decode_exact(fn, p, n, fx);
    if (rc != -1)
        fail_msg("decoder accepted (rc %d) a malformed %zu-byte payload", rc, n);
    assert_non_null(fx->why);
    assert_true(fx->why[0] != '\0');
}

static void assert_ext_equal(const llk_ext_t *a, const llk_ext_t *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->length, b->length);
    if (a->length)
        assert_memory_equal(a->data, b->data, a->length);
}

static void assert_hello_equal(const llk_msg_hello_t *a, const llk_msg_hello_t *b)
{
    assert_int_equal(a->client_cluster_id, b->client_cluster_id);
    assert_int_equal(a->target_cluster_id, b->target_cluster_id);
    assert_int_equal(a->client_role, b->client_role);
    assert_int_equal(a->expected_server_role, b->expected_server_role);
    assert_int_equal(a->incarnation, b->incarnation);
    assert_int_equal(a->liveness_ms, b->liveness_ms);
    assert_int_equal(a->num_ext, b->num_ext);
    for (uint16_t i = 0; i < a->num_ext; i++)
        assert_ext_equal(&a->ext[i], &b->ext[i]);
}

static void assert_welcome_equal(const llk_msg_welcome_t *a, const llk_msg_welcome_t *b)
{
    assert_int_equal(a->server_cluster_id, b->server_cluster_id);
    assert_int_equal(a->server_role, b->server_role);
    assert_int_equal(a->liveness_ms, b->liveness_ms);
    assert_int_equal(a->incarnation, b->incarnation);
    assert_int_equal(a->num_ext, b->num_ext);
    for (uint16_t i = 0; i < a->num_ext; i++)
        assert_ext_equal(&a->ext[i], &b->ext[i]);
}

static size_t enc_hello(wire_fixture_t *fx, const llk_msg_hello_t *m)
{
    return llk_wire_encode_hello(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, m);
}

static size_t enc_welcome(wire_fixture_t *fx, const llk_msg_welcome_t *m)
{
    return llk_wire_encode_welcome(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, m);
}

/* Encodes m, decodes it again and returns the decoder's verdict. Used to
 * probe field validation: the encoder writes whatever it is given. */
static int hello_through_wire(wire_fixture_t *fx, const llk_msg_hello_t *m)
{
    size_t n = enc_hello(fx, m);
    assert_true(n > LLK_WIRE_HEADER_SIZE);
    return decode_exact(dec_hello, payload_of(fx->frame, n, LLK_MSG_HELLO),
                        n - LLK_WIRE_HEADER_SIZE, fx);
}

static int welcome_through_wire(wire_fixture_t *fx, const llk_msg_welcome_t *m)
{
    size_t n = enc_welcome(fx, m);
    assert_true(n > LLK_WIRE_HEADER_SIZE);
    return decode_exact(dec_welcome, payload_of(fx->frame, n, LLK_MSG_WELCOME),
                        n - LLK_WIRE_HEADER_SIZE, fx);
}

/* ---- header ---------------------------------------------------------------- */

/* The header of an encoded frame is byte-for-byte the hand-written one. */
static void test_header_layout_matches_vector(void **state)
{
    wire_fixture_t *fx = *state;
    size_t n = llk_wire_encode_simple(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION,
                                      LLK_MSG_HEARTBEAT);
    assert_int_equal(n, sizeof vec_heartbeat);
    assert_memory_equal(fx->frame, vec_heartbeat, sizeof vec_heartbeat);
    /* The magic reads "LLMK" on the wire, i.e. it is stored big-endian. */
    assert_memory_equal(fx->frame, "LLMK", 4);
}

/* Every field is read big-endian and from its documented offset. */
static void test_read_header_big_endian(void **state)
{
    (void)state;
    static const uint8_t bytes[LLK_WIRE_HEADER_SIZE] = {
        0x4C, 0x4C, 0x4D, 0x4B, 0x01, 0x02, 0x03, 0x04,
        0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C,
    };
    llk_frame_header_t h;
    llk_wire_read_header(bytes, &h);
    assert_int_equal(h.magic, LLK_WIRE_MAGIC);
    assert_int_equal(h.version, 0x0102);
    assert_int_equal(h.type, 0x0304);
    assert_int_equal(h.length, 0x05060708);
    assert_int_equal(h.flags, 0x090A0B0C);
}

/* A little-endian peer (or a byte-swapping bug) must not pass as ours. */
static void test_check_header_rejects_byte_swapped(void **state)
{
    (void)state;
    llk_frame_header_t h;
    uint8_t bytes[LLK_WIRE_HEADER_SIZE];

    memcpy(bytes, vec_heartbeat, sizeof bytes);
    memcpy(bytes, "KMLL", 4);
    llk_wire_read_header(bytes, &h);
    assert_int_equal(llk_wire_check_header(&h), LLK_HDR_BAD_MAGIC);

    memcpy(bytes, vec_heartbeat, sizeof bytes);
    put_be16(bytes + 4, 0x0100); /* version 1 written little-endian */
    llk_wire_read_header(bytes, &h);
    assert_int_equal(llk_wire_check_header(&h), LLK_HDR_BAD_VERSION);
}

static void test_check_header_accepts_valid(void **state)
{
    (void)state;
    for (uint16_t t = LLK_MSG_HELLO; t <= LLK_MSG_UNLINK_ACK; t++) {
        llk_frame_header_t h = {LLK_WIRE_MAGIC, LLK_WIRE_VERSION, t, 0, 0};
        assert_int_equal(llk_wire_check_header(&h), LLK_HDR_OK);
        h.length = LLK_WIRE_MAX_PAYLOAD; /* the limit itself is allowed */
        assert_int_equal(llk_wire_check_header(&h), LLK_HDR_OK);
    }
}

static void test_check_header_failures(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        llk_frame_header_t h;
        llk_header_check_t want;
    } cases[] = {
        {"magic 0", {0, 1, 4, 0, 0}, LLK_HDR_BAD_MAGIC},
        {"magic off by one", {LLK_WIRE_MAGIC + 1, 1, 4, 0, 0}, LLK_HDR_BAD_MAGIC},
        {"magic byte-swapped", {0x4B4D4C4Cu, 1, 4, 0, 0}, LLK_HDR_BAD_MAGIC},
        {"version 0", {LLK_WIRE_MAGIC, 0, 4, 0, 0}, LLK_HDR_BAD_VERSION},
        {"version 2", {LLK_WIRE_MAGIC, 2, 4, 0, 0}, LLK_HDR_BAD_VERSION},
        {"version 0xFFFF", {LLK_WIRE_MAGIC, 0xFFFF, 4, 0, 0}, LLK_HDR_BAD_VERSION},
        {"length max+1", {LLK_WIRE_MAGIC, 1, 4, LLK_WIRE_MAX_PAYLOAD + 1, 0}, LLK_HDR_TOO_LARGE},
        {"length u32 max", {LLK_WIRE_MAGIC, 1, 1, UINT32_MAX, 0}, LLK_HDR_TOO_LARGE},
        {"type 0", {LLK_WIRE_MAGIC, 1, 0, 0, 0}, LLK_HDR_BAD_TYPE},
        {"type 12", {LLK_WIRE_MAGIC, 1, 12, 0, 0}, LLK_HDR_BAD_TYPE},
        {"type 0xFFFF", {LLK_WIRE_MAGIC, 1, 0xFFFF, 0, 0}, LLK_HDR_BAD_TYPE},
        {"flags 1", {LLK_WIRE_MAGIC, 1, 4, 0, 1}, LLK_HDR_BAD_FLAGS},
        {"flags top bit", {LLK_WIRE_MAGIC, 1, 4, 0, 0x80000000u}, LLK_HDR_BAD_FLAGS},
        /* wire.h: magic first (not our protocol at all), then version,
         * because the other fields may mean something else in another
         * version and the peer must get a VERSION_MISMATCH REJECT. */
        {"bad magic and version", {0, 2, 0, UINT32_MAX, 1}, LLK_HDR_BAD_MAGIC},
        {"bad version, huge length", {LLK_WIRE_MAGIC, 2, 0, UINT32_MAX, 1}, LLK_HDR_BAD_VERSION},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        llk_header_check_t got = llk_wire_check_header(&cases[i].h);
        if (got != cases[i].want)
            fail_msg("%s: got %d (%s), want %d", cases[i].what, (int)got,
                     llk_wire_header_check_str(got), (int)cases[i].want);
    }
}

/* Each result has its own text: they are what a log line says. */
static void test_header_check_strings(void **state)
{
    (void)state;
    const char *s[LLK_HDR_BAD_FLAGS + 1];
    for (int c = LLK_HDR_OK; c <= LLK_HDR_BAD_FLAGS; c++) {
        s[c] = llk_wire_header_check_str((llk_header_check_t)c);
        assert_non_null(s[c]);
        assert_true(s[c][0] != '\0');
        for (int d = 0; d < c; d++)
            assert_string_not_equal(s[c], s[d]);
    }
}

/* "version is written as given": tests speak other versions with it. */
static void test_encoder_writes_given_version(void **state)
{
    wire_fixture_t *fx = *state;
    size_t n = llk_wire_encode_hello(fx->frame, sizeof fx->frame, 2, &fx->hello);
    assert_true(n > LLK_WIRE_HEADER_SIZE);
    assert_int_equal(fx->frame[4], 0x00);
    assert_int_equal(fx->frame[5], 0x02);
    llk_frame_header_t h;
    llk_wire_read_header(fx->frame, &h);
    assert_int_equal(llk_wire_check_header(&h), LLK_HDR_BAD_VERSION);
}

/* ---- exact encodings of the shared vectors --------------------------------- */

static void test_encode_matches_vectors(void **state)
{
    wire_fixture_t *fx = *state;
    size_t n;

    llk_msg_hello_t h = {0};
    h.client_cluster_id = VEC_HELLO_CLIENT_ID;
    h.target_cluster_id = VEC_HELLO_TARGET_ID;
    h.client_role = VEC_HELLO_CLIENT_ROLE;
    h.expected_server_role = VEC_HELLO_EXPECTED_ROLE;
    h.incarnation = VEC_HELLO_INCARNATION;
    h.liveness_ms = VEC_HELLO_LIVENESS_MS;
    h.num_ext = 1;
    h.ext[0] = (llk_ext_t){VEC_HELLO_EXT0_TYPE, 3, (const uint8_t *)VEC_HELLO_EXT0_DATA};
    n = enc_hello(fx, &h);
    assert_int_equal(n, sizeof vec_hello);
    assert_memory_equal(fx->frame, vec_hello, sizeof vec_hello);

    llk_msg_welcome_t w = {0};
    w.server_cluster_id = VEC_WELCOME_SERVER_ID;
    w.server_role = VEC_WELCOME_SERVER_ROLE;
    w.liveness_ms = VEC_WELCOME_LIVENESS_MS;
    w.incarnation = VEC_WELCOME_INCARNATION;
    w.num_ext = 2;
    w.ext[0] = (llk_ext_t){VEC_WELCOME_EXT0_TYPE, 2, (const uint8_t *)VEC_WELCOME_EXT0_DATA};
    w.ext[1] = (llk_ext_t){VEC_WELCOME_EXT1_TYPE, 0, NULL};
    n = enc_welcome(fx, &w);
    assert_int_equal(n, sizeof vec_welcome);
    assert_memory_equal(fx->frame, vec_welcome, sizeof vec_welcome);

    n = llk_wire_encode_reject(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, VEC_REJECT_STATUS,
                               VEC_REJECT_MESSAGE);
    assert_int_equal(n, sizeof vec_reject);
    assert_memory_equal(fx->frame, vec_reject, sizeof vec_reject);

    n = llk_wire_encode_simple(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, LLK_MSG_UNLINK);
    assert_int_equal(n, sizeof vec_unlink);
    assert_memory_equal(fx->frame, vec_unlink, sizeof vec_unlink);

    n = llk_wire_encode_simple(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION,
                               LLK_MSG_UNLINK_ACK);
    assert_int_equal(n, sizeof vec_unlink_ack);
    assert_memory_equal(fx->frame, vec_unlink_ack, sizeof vec_unlink_ack);
}

static void test_decode_vectors(void **state)
{
    wire_fixture_t *fx = *state;
    const uint8_t *p;

    p = payload_of(vec_hello, sizeof vec_hello, LLK_MSG_HELLO);
    assert_int_equal(sizeof vec_hello - LLK_WIRE_HEADER_SIZE, VEC_HELLO_PAYLOAD_LEN);
    /* Decoded in place (not via decode_exact): ext.data must point into
     * the buffer that was decoded, as wire.h promises. */
    assert_int_equal(llk_wire_decode_hello(p, VEC_HELLO_PAYLOAD_LEN, &fx->hello_out, &fx->why), 0);
    const llk_msg_hello_t *h = &fx->hello_out;
    assert_int_equal(h->client_cluster_id, VEC_HELLO_CLIENT_ID);
    assert_int_equal(h->target_cluster_id, VEC_HELLO_TARGET_ID);
    assert_int_equal(h->client_role, VEC_HELLO_CLIENT_ROLE);
    assert_int_equal(h->expected_server_role, VEC_HELLO_EXPECTED_ROLE);
    assert_int_equal(h->incarnation, VEC_HELLO_INCARNATION);
    assert_int_equal(h->liveness_ms, VEC_HELLO_LIVENESS_MS);
    assert_int_equal(h->num_ext, 1);
    assert_int_equal(h->ext[0].type, VEC_HELLO_EXT0_TYPE);
    assert_int_equal(h->ext[0].length, 3);
    assert_ptr_equal(h->ext[0].data, p + HELLO_FIXED + 2 + 4);

    p = payload_of(vec_welcome, sizeof vec_welcome, LLK_MSG_WELCOME);
    assert_int_equal(sizeof vec_welcome - LLK_WIRE_HEADER_SIZE, VEC_WELCOME_PAYLOAD_LEN);
    assert_int_equal(
        llk_wire_decode_welcome(p, VEC_WELCOME_PAYLOAD_LEN, &fx->welcome_out, &fx->why), 0);
    const llk_msg_welcome_t *w = &fx->welcome_out;
    assert_int_equal(w->server_cluster_id, VEC_WELCOME_SERVER_ID);
    assert_int_equal(w->server_role, VEC_WELCOME_SERVER_ROLE);
    assert_int_equal(w->liveness_ms, VEC_WELCOME_LIVENESS_MS);
    assert_int_equal(w->incarnation, VEC_WELCOME_INCARNATION);
    assert_int_equal(w->num_ext, 2);
    assert_int_equal(w->ext[0].type, VEC_WELCOME_EXT0_TYPE);
    assert_int_equal(w->ext[0].length, 2);
    assert_memory_equal(w->ext[0].data, VEC_WELCOME_EXT0_DATA, 2);
    assert_int_equal(w->ext[1].type, VEC_WELCOME_EXT1_TYPE);
    assert_int_equal(w->ext[1].length, 0);

    p = payload_of(vec_reject, sizeof vec_reject, LLK_MSG_REJECT);
    assert_int_equal(sizeof vec_reject - LLK_WIRE_HEADER_SIZE, VEC_REJECT_PAYLOAD_LEN);
    assert_decodes(dec_reject, p, VEC_REJECT_PAYLOAD_LEN, fx);
    assert_int_equal(fx->reject_out.status, VEC_REJECT_STATUS);
    assert_string_equal(fx->reject_out.message, VEC_REJECT_MESSAGE);

    assert_decodes(dec_heartbeat, payload_of(vec_heartbeat, sizeof vec_heartbeat,
                                             LLK_MSG_HEARTBEAT), 0, fx);
    assert_decodes(dec_unlink, payload_of(vec_unlink, sizeof vec_unlink, LLK_MSG_UNLINK), 4, fx);
    assert_decodes(dec_unlink_ack, payload_of(vec_unlink_ack, sizeof vec_unlink_ack,
                                              LLK_MSG_UNLINK_ACK), 0, fx);
}

/* ---- round trips --------------------------------------------------------------- */

static void test_roundtrip_hello(void **state)
{
    wire_fixture_t *fx = *state;
    size_t n = enc_hello(fx, &fx->hello);
    assert_int_equal(n, LLK_WIRE_HEADER_SIZE + HELLO_FIXED + 2 + (4 + 3) + 4 + (4 + 8));
    assert_decodes(dec_hello, payload_of(fx->frame, n, LLK_MSG_HELLO),
                   n - LLK_WIRE_HEADER_SIZE, fx);
    assert_hello_equal(&fx->hello_out, &fx->hello);
}

/* Extreme field values, no extensions, "any" expected role. */
static void test_roundtrip_hello_extremes(void **state)
{
    wire_fixture_t *fx = *state;
    llk_msg_hello_t h = fx->hello;
    h.client_cluster_id = UINT64_MAX;
    h.target_cluster_id = 0;
    h.client_role = LLMLINK_ROLE_MIX;
    h.expected_server_role = 0;
    h.incarnation = 0;
    h.liveness_ms = LLK_LIVENESS_MIN_MS;
    h.num_ext = 0;
    size_t n = enc_hello(fx, &h);
    assert_int_equal(n, LLK_WIRE_HEADER_SIZE + HELLO_FIXED + 2);
    assert_decodes(dec_hello, payload_of(fx->frame, n, LLK_MSG_HELLO),
                   n - LLK_WIRE_HEADER_SIZE, fx);
    assert_hello_equal(&fx->hello_out, &h);
}

static void test_roundtrip_hello_max_extensions(void **state)
{
    wire_fixture_t *fx = *state;
    llk_msg_hello_t h = fx->hello;
    h.num_ext = LLK_WIRE_MAX_EXTENSIONS;
    for (uint16_t i = 0; i < h.num_ext; i++)
        h.ext[i] = (llk_ext_t){(uint16_t)(0x100 + i), (uint16_t)(i % 5), fx->ext_blob + i};
    size_t n = enc_hello(fx, &h);
    assert_true(n > 0);
    assert_decodes(dec_hello, payload_of(fx->frame, n, LLK_MSG_HELLO),
                   n - LLK_WIRE_HEADER_SIZE, fx);
    assert_hello_equal(&fx->hello_out, &h);
}

static void test_roundtrip_welcome(void **state)
{
    wire_fixture_t *fx = *state;
    size_t n = enc_welcome(fx, &fx->welcome);
    assert_int_equal(n, LLK_WIRE_HEADER_SIZE + WELCOME_FIXED + 2 + (4 + 5) + (4 + 16));
    assert_decodes(dec_welcome, payload_of(fx->frame, n, LLK_MSG_WELCOME),
                   n - LLK_WIRE_HEADER_SIZE, fx);
    assert_welcome_equal(&fx->welcome_out, &fx->welcome);

    /* and without extensions */
    llk_msg_welcome_t w = fx->welcome;
    w.num_ext = 0;
    w.server_role = LLMLINK_ROLE_MIX;
    n = enc_welcome(fx, &w);
    assert_int_equal(n, LLK_WIRE_HEADER_SIZE + WELCOME_FIXED + 2);
    assert_decodes(dec_welcome, payload_of(fx->frame, n, LLK_MSG_WELCOME),
                   n - LLK_WIRE_HEADER_SIZE, fx);
    assert_welcome_equal(&fx->welcome_out, &w);
}

/* Encodes a REJECT and returns the decoded message (in fx->reject_out). */
static void reject_roundtrip(wire_fixture_t *fx, uint32_t status, const char *msg,
                             size_t want_msg_len)
{
    size_t n = llk_wire_encode_reject(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, status, msg);
    assert_int_equal(n, LLK_WIRE_HEADER_SIZE + REJECT_FIXED + want_msg_len);
    const uint8_t *p = payload_of(fx->frame, n, LLK_MSG_REJECT);
    /* the u16 message length field */
    assert_int_equal((p[4] << 8) | p[5], want_msg_len);
    assert_decodes(dec_reject, p, n - LLK_WIRE_HEADER_SIZE, fx);
    assert_int_equal(fx->reject_out.status, status);
    assert_int_equal(strlen(fx->reject_out.message), want_msg_len);
}

static void test_roundtrip_reject(void **state)
{
    wire_fixture_t *fx = *state;
    reject_roundtrip(fx, LLMLINK_CLUSTER_NUM_EXCEED_LIMIT, "too many links", 14);
    assert_string_equal(fx->reject_out.message, "too many links");

    reject_roundtrip(fx, LLMLINK_FAILED, "", 0);
    assert_string_equal(fx->reject_out.message, "");

    /* wire.h: message may be NULL */
    reject_roundtrip(fx, LLMLINK_SUCCESS, NULL, 0);
    assert_string_equal(fx->reject_out.message, "");
}

static void test_roundtrip_reject_max_length(void **state)
{
    wire_fixture_t *fx = *state;
    char msg[LLK_WIRE_MAX_REJECT_MSG + 1];
    for (size_t i = 0; i < LLK_WIRE_MAX_REJECT_MSG; i++)
        msg[i] = (char)('a' + i % 26);
    msg[LLK_WIRE_MAX_REJECT_MSG] = '\0';
    reject_roundtrip(fx, LLMLINK_VERSION_MISMATCH, msg, LLK_WIRE_MAX_REJECT_MSG);
    assert_string_equal(fx->reject_out.message, msg);
}

static void test_reject_overlong_message_truncated(void **state)
{
    wire_fixture_t *fx = *state;
    char msg[LLK_WIRE_MAX_REJECT_MSG + 100];
    memset(msg, 'x', sizeof msg - 1);
    msg[sizeof msg - 1] = '\0';
    msg[LLK_WIRE_MAX_REJECT_MSG - 1] = 'E'; /* last byte that survives */
    msg[LLK_WIRE_MAX_REJECT_MSG] = 'Z';     /* first byte that must not */
    reject_roundtrip(fx, LLMLINK_PROTOCOL_ERROR, msg, LLK_WIRE_MAX_REJECT_MSG);
    assert_memory_equal(fx->reject_out.message, msg, LLK_WIRE_MAX_REJECT_MSG);
    assert_int_equal(fx->reject_out.message[LLK_WIRE_MAX_REJECT_MSG - 1], 'E');
    assert_null(strchr(fx->reject_out.message, 'Z'));
}

static void test_roundtrip_simple(void **state)
{
    wire_fixture_t *fx = *state;
    static const struct {
        llk_msg_type_t type;
        size_t payload;
        decode_fn dec;
    } cases[] = {
        {LLK_MSG_HEARTBEAT, 0, dec_heartbeat},
        {LLK_MSG_UNLINK, 4, dec_unlink},
        {LLK_MSG_UNLINK_ACK, 0, dec_unlink_ack},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        size_t n = llk_wire_encode_simple(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION,
                                          cases[i].type);
        assert_int_equal(n, LLK_WIRE_HEADER_SIZE + cases[i].payload);
        assert_decodes(cases[i].dec, payload_of(fx->frame, n, cases[i].type), cases[i].payload,
                       fx);
    }
}

/* ---- decoders refuse malformed input ------------------------------------------- */

/* Every proper prefix of a valid payload is refused. */
static void assert_every_truncation_refused(decode_fn fn, const uint8_t *p, size_t n,
                                            wire_fixture_t *fx)
{
    assert_decodes(fn, p, n, fx); /* control: the whole payload is fine */
    for (size_t len = 0; len < n; len++)
        assert_refused(fn, p, len, fx);
}

static void test_truncations_refused(void **state)
{
    wire_fixture_t *fx = *state;
    size_t n;

    /* HELLO and WELCOME with extensions, so that truncations inside the
     * extension count, an extension header and extension data all occur. */
    n = enc_hello(fx, &fx->hello);
    memcpy(fx->payload, payload_of(fx->frame, n, LLK_MSG_HELLO), n - LLK_WIRE_HEADER_SIZE);
    assert_every_truncation_refused(dec_hello, fx->payload, n - LLK_WIRE_HEADER_SIZE, fx);

    n = enc_welcome(fx, &fx->welcome);
    memcpy(fx->payload, payload_of(fx->frame, n, LLK_MSG_WELCOME), n - LLK_WIRE_HEADER_SIZE);
    assert_every_truncation_refused(dec_welcome, fx->payload, n - LLK_WIRE_HEADER_SIZE, fx);

    assert_every_truncation_refused(dec_reject, vec_reject + LLK_WIRE_HEADER_SIZE,
                                    VEC_REJECT_PAYLOAD_LEN, fx);
    assert_every_truncation_refused(dec_unlink, vec_unlink + LLK_WIRE_HEADER_SIZE, 4, fx);
    /* The vectors too: they end in a critical empty extension (WELCOME). */
    assert_every_truncation_refused(dec_hello, vec_hello + LLK_WIRE_HEADER_SIZE,
                                    VEC_HELLO_PAYLOAD_LEN, fx);
    assert_every_truncation_refused(dec_welcome, vec_welcome + LLK_WIRE_HEADER_SIZE,
                                    VEC_WELCOME_PAYLOAD_LEN, fx);
}

static void test_trailing_bytes_refused(void **state)
{
    wire_fixture_t *fx = *state;
    static const struct {
        const uint8_t *frame;
        size_t size;
        decode_fn dec;
    } cases[] = {
        {vec_hello, sizeof vec_hello, dec_hello},
        {vec_welcome, sizeof vec_welcome, dec_welcome},
        {vec_reject, sizeof vec_reject, dec_reject},
        {vec_heartbeat, sizeof vec_heartbeat, dec_heartbeat},
        {vec_unlink, sizeof vec_unlink, dec_unlink},
        {vec_unlink_ack, sizeof vec_unlink_ack, dec_unlink_ack},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        size_t n = cases[i].size - LLK_WIRE_HEADER_SIZE;
        memcpy(fx->payload, cases[i].frame + LLK_WIRE_HEADER_SIZE, n);
        assert_decodes(cases[i].dec, fx->payload, n, fx);
        /* one zero byte and a larger tail */
        memset(fx->payload + n, 0, 16);
        assert_refused(cases[i].dec, fx->payload, n + 1, fx);
        assert_refused(cases[i].dec, fx->payload, n + 16, fx);
    }
}

static void test_hello_roles_validated(void **state)
{
    wire_fixture_t *fx = *state;
    llk_msg_hello_t h = fx->hello;

    for (uint32_t r = LLMLINK_ROLE_PROMPT; r <= LLMLINK_ROLE_MIX; r++) {
        h.client_role = r;
        assert_int_equal(hello_through_wire(fx, &h), 0);
        assert_int_equal(fx->hello_out.client_role, r);
    }
    static const uint32_t bad_client[] = {0, 4, 0x100, UINT32_MAX};
    for (size_t i = 0; i < ARRAY_LEN(bad_client); i++) {
        h.client_role = bad_client[i];
        assert_int_equal(hello_through_wire(fx, &h), -1);
        assert_non_null(fx->why);
    }

    h.client_role = LLMLINK_ROLE_DECODER;
    /* 0 means "any server role" and is valid here, unlike client_role. */
    for (uint32_t r = 0; r <= LLMLINK_ROLE_MIX; r++) {
        h.expected_server_role = r;
        assert_int_equal(hello_through_wire(fx, &h), 0);
        assert_int_equal(fx->hello_out.expected_server_role, r);
    }
    static const uint32_t bad_expected[] = {4, 0x80000000u, UINT32_MAX};
    for (size_t i = 0; i < ARRAY_LEN(bad_expected); i++) {
        h.expected_server_role = bad_expected[i];
        assert_int_equal(hello_through_wire(fx, &h), -1);
        assert_non_null(fx->why);
    }
}

static void test_welcome_role_validated(void **state)
{
    wire_fixture_t *fx = *state;
    llk_msg_welcome_t w = fx->welcome;
    for (uint32_t r = LLMLINK_ROLE_PROMPT; r <= LLMLINK_ROLE_MIX; r++) {
        w.server_role = r;
        assert_int_equal(welcome_through_wire(fx, &w), 0);
        assert_int_equal(fx->welcome_out.server_role, r);
    }
    /* A server always has a concrete role: 0 ("any") is not one. */
    static const uint32_t bad[] = {0, 4, UINT32_MAX};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        w.server_role = bad[i];
        assert_int_equal(welcome_through_wire(fx, &w), -1);
        assert_non_null(fx->why);
    }
}

static void test_liveness_range_validated(void **state)
{
    wire_fixture_t *fx = *state;
    static const struct {
        uint32_t ms;
        int want;
    } cases[] = {
        {0, -1},
        {LLK_LIVENESS_MIN_MS - 1, -1},
        {LLK_LIVENESS_MIN_MS, 0},
        {LLK_LIVENESS_MAX_MS, 0},
        {LLK_LIVENESS_MAX_MS + 1, -1},
        {UINT32_MAX, -1},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        llk_msg_hello_t h = fx->hello;
        h.liveness_ms = cases[i].ms;
        if (hello_through_wire(fx, &h) != cases[i].want)
            fail_msg("HELLO liveness %u: want %d", cases[i].ms, cases[i].want);
        llk_msg_welcome_t w = fx->welcome;
        w.liveness_ms = cases[i].ms;
        if (welcome_through_wire(fx, &w) != cases[i].want)
            fail_msg("WELCOME liveness %u: want %d", cases[i].ms, cases[i].want);
    }
}

/* Builds a payload whose extension list claims `count` entries and holds
 * `present` empty ones: fixed part from `frame`/`fixed`, then the list. */
static size_t build_ext_list(uint8_t *out, const uint8_t *fixed_part, size_t fixed,
                             uint16_t count, uint16_t present)
{
    memcpy(out, fixed_part, fixed);
    put_be16(out + fixed, count);
    size_t n = fixed + 2;
    for (uint16_t i = 0; i < present; i++) {
        put_be16(out + n, (uint16_t)(0x10 + i)); /* type */
        put_be16(out + n + 2, 0);                /* length */
        n += 4;
    }
    return n;
}

static void test_too_many_extensions_refused(void **state)
{
    wire_fixture_t *fx = *state;
    const uint8_t *hello_fixed = vec_hello + LLK_WIRE_HEADER_SIZE;
    const uint8_t *welcome_fixed = vec_welcome + LLK_WIRE_HEADER_SIZE;
    size_t n;

    /* control: exactly the maximum is accepted */
    n = build_ext_list(fx->payload, hello_fixed, HELLO_FIXED, LLK_WIRE_MAX_EXTENSIONS,
                       LLK_WIRE_MAX_EXTENSIONS);
    assert_decodes(dec_hello, fx->payload, n, fx);
    assert_int_equal(fx->hello_out.num_ext, LLK_WIRE_MAX_EXTENSIONS);
    n = build_ext_list(fx->payload, welcome_fixed, WELCOME_FIXED, LLK_WIRE_MAX_EXTENSIONS,
                       LLK_WIRE_MAX_EXTENSIONS);
    assert_decodes(dec_welcome, fx->payload, n, fx);
    assert_int_equal(fx->welcome_out.num_ext, LLK_WIRE_MAX_EXTENSIONS);

    /* one more, with every entry present: refused by the count, and the
     * decoder must not write past ext[LLK_WIRE_MAX_EXTENSIONS - 1] */
    n = build_ext_list(fx->payload, hello_fixed, HELLO_FIXED, LLK_WIRE_MAX_EXTENSIONS + 1,
                       LLK_WIRE_MAX_EXTENSIONS + 1);
    assert_refused(dec_hello, fx->payload, n, fx);
    n = build_ext_list(fx->payload, welcome_fixed, WELCOME_FIXED, LLK_WIRE_MAX_EXTENSIONS + 1,
                       LLK_WIRE_MAX_EXTENSIONS + 1);
    assert_refused(dec_welcome, fx->payload, n, fx);

    /* an absurd count with nothing behind it */
    n = build_ext_list(fx->payload, hello_fixed, HELLO_FIXED, 0xFFFF, 0);
    assert_refused(dec_hello, fx->payload, n, fx);
    n = build_ext_list(fx->payload, welcome_fixed, WELCOME_FIXED, 0xFFFF, 0);
    assert_refused(dec_welcome, fx->payload, n, fx);
}

static void test_extension_longer_than_frame_refused(void **state)
{
    wire_fixture_t *fx = *state;
    const size_t n = VEC_HELLO_PAYLOAD_LEN;
    /* offset of the single extension's length field in the HELLO vector */
    const size_t len_off = HELLO_FIXED + 2 + 2;
    static const uint16_t bad_len[] = {4, 0x100, 0xFFFF};

    memcpy(fx->payload, vec_hello + LLK_WIRE_HEADER_SIZE, n);
    assert_decodes(dec_hello, fx->payload, n, fx); /* control: length 3 */
    for (size_t i = 0; i < ARRAY_LEN(bad_len); i++) {
        put_be16(fx->payload + len_off, bad_len[i]);
        assert_refused(dec_hello, fx->payload, n, fx);
    }
    /* and shorter than the data: the rest becomes trailing garbage */
    put_be16(fx->payload + len_off, 2);
    assert_refused(dec_hello, fx->payload, n, fx);

    /* WELCOME: the last (empty) extension claims one byte that is not there */
    memcpy(fx->payload, vec_welcome + LLK_WIRE_HEADER_SIZE, VEC_WELCOME_PAYLOAD_LEN);
    put_be16(fx->payload + VEC_WELCOME_PAYLOAD_LEN - 2, 1);
    assert_refused(dec_welcome, fx->payload, VEC_WELCOME_PAYLOAD_LEN, fx);
}

/* REJECT payload: status, u16 length, `present` bytes of message. */
static size_t build_reject(uint8_t *out, uint16_t claimed, size_t present, uint8_t fill)
{
    memcpy(out, "\x50\x10\xB1\x04", 4);
    put_be16(out + 4, claimed);
    memset(out + REJECT_FIXED, fill, present);
    return REJECT_FIXED + present;
}

static void test_reject_length_validated(void **state)
{
    wire_fixture_t *fx = *state;
    size_t n;

    n = build_reject(fx->payload, LLK_WIRE_MAX_REJECT_MSG, LLK_WIRE_MAX_REJECT_MSG, 'm');
    assert_decodes(dec_reject, fx->payload, n, fx); /* control: at the limit */
    assert_int_equal(strlen(fx->reject_out.message), LLK_WIRE_MAX_REJECT_MSG);

    /* over the limit even though the bytes are there */
    n = build_reject(fx->payload, LLK_WIRE_MAX_REJECT_MSG + 1, LLK_WIRE_MAX_REJECT_MSG + 1, 'm');
    assert_refused(dec_reject, fx->payload, n, fx);
    n = build_reject(fx->payload, 0xFFFF, 300, 'm');
    assert_refused(dec_reject, fx->payload, n, fx);

    /* longer than the frame */
    n = build_reject(fx->payload, 12, 11, 'm');
    assert_refused(dec_reject, fx->payload, n, fx);
    n = build_reject(fx->payload, 1, 0, 'm');
    assert_refused(dec_reject, fx->payload, n, fx);
}

/* The message ends up in llmlink_last_error(): no control characters, no
 * terminal escapes, no bytes that are not ASCII, no early NUL. */
static void test_reject_nonprintable_replaced(void **state)
{
    wire_fixture_t *fx = *state;
    static const uint8_t raw[] = {'A', 0x00, 0x01, 0x1F, 0x20, 0x7E, 0x7F, 0x80, 0xFF, 0x1B, 'z'};
    size_t n = build_reject(fx->payload, sizeof raw, 0, 0);
    memcpy(fx->payload + n, raw, sizeof raw);
    n += sizeof raw;
    assert_decodes(dec_reject, fx->payload, n, fx);
    assert_string_equal(fx->reject_out.message, "A??? ~????z");

    /* the same through the encoder, which passes bytes through unchanged */
    reject_roundtrip(fx, LLMLINK_FAILED, "tab\there\x7f\xc3\xa9", 11);
    assert_string_equal(fx->reject_out.message, "tab?here???");
}

static void test_simple_payloads_validated(void **state)
{
    wire_fixture_t *fx = *state;
    static const uint8_t zeros[8] = {0};
    static const uint8_t reserved_set[][4] = {
        {0, 0, 0, 1}, {0x80, 0, 0, 0}, {0xFF, 0xFF, 0xFF, 0xFF},
    };

    /* UNLINK: exactly four zero bytes; anything in the reserved field is an
     * error, so that version 2 can give it a meaning. */
    assert_decodes(dec_unlink, zeros, 4, fx);
    for (size_t i = 0; i < ARRAY_LEN(reserved_set); i++)
        assert_refused(dec_unlink, reserved_set[i], 4, fx);
    assert_refused(dec_unlink, zeros, 5, fx);
    assert_refused(dec_unlink, zeros, 8, fx);

    /* HEARTBEAT and UNLINK_ACK: empty */
    assert_decodes(dec_heartbeat, zeros, 0, fx);
    assert_decodes(dec_unlink_ack, zeros, 0, fx);
    assert_refused(dec_heartbeat, zeros, 4, fx);
    assert_refused(dec_unlink_ack, zeros, 4, fx);

    /* llk_wire_decode_simple is not a decoder for the other types */
    static const int not_simple[] = {0, LLK_MSG_HELLO, LLK_MSG_WELCOME, LLK_MSG_REJECT, 7};
    for (size_t i = 0; i < ARRAY_LEN(not_simple); i++) {
        fx->why = NULL;
        assert_int_equal(llk_wire_decode_simple((llk_msg_type_t)not_simple[i], zeros, 0, &fx->why),
                         -1);
        assert_non_null(fx->why);
    }
}

/* ---- encoders ------------------------------------------------------------------ */

static size_t enc_cap_hello(uint8_t *out, size_t cap, void *ctx)
{
    const wire_fixture_t *fx = ctx;
    return llk_wire_encode_hello(out, cap, LLK_WIRE_VERSION, &fx->hello);
}
static size_t enc_cap_welcome(uint8_t *out, size_t cap, void *ctx)
{
    const wire_fixture_t *fx = ctx;
    return llk_wire_encode_welcome(out, cap, LLK_WIRE_VERSION, &fx->welcome);
}
static size_t enc_cap_reject(uint8_t *out, size_t cap, void *ctx)
{
    (void)ctx;
    return llk_wire_encode_reject(out, cap, LLK_WIRE_VERSION, LLMLINK_LINK_BUSY, "busy, retry");
}
static size_t enc_cap_heartbeat(uint8_t *out, size_t cap, void *ctx)
{
    (void)ctx;
    return llk_wire_encode_simple(out, cap, LLK_WIRE_VERSION, LLK_MSG_HEARTBEAT);
}
static size_t enc_cap_unlink(uint8_t *out, size_t cap, void *ctx)
{
    (void)ctx;
    return llk_wire_encode_simple(out, cap, LLK_WIRE_VERSION, LLK_MSG_UNLINK);
}
static size_t enc_cap_unlink_ack(uint8_t *out, size_t cap, void *ctx)
{
    (void)ctx;
    return llk_wire_encode_simple(out, cap, LLK_WIRE_VERSION, LLK_MSG_UNLINK_ACK);
}

/* For every capacity below the frame size the encoder returns 0 and writes
 * nothing at or past out[cap]; at exactly the frame size it succeeds. */
static void test_encoders_refuse_small_buffers(void **state)
{
    wire_fixture_t *fx = *state;
    static const struct {
        const char *what;
        codec_encode_fn enc;
    } cases[] = {
        {"HELLO", enc_cap_hello},         {"WELCOME", enc_cap_welcome},
        {"REJECT", enc_cap_reject},       {"HEARTBEAT", enc_cap_heartbeat},
        {"UNLINK", enc_cap_unlink},       {"UNLINK_ACK", enc_cap_unlink_ack},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        size_t full = codec_check_capacity(cases[i].what, cases[i].enc, fx, fx->frame,
                                           sizeof fx->frame);
        assert_true(full >= LLK_WIRE_HEADER_SIZE);
    }
}

/* num_ext larger than the ext array is refused before ext[] is read. The
 * message sits in a wrapper whose next member is one more valid extension,
 * so an encoder that trusted num_ext would encode 33 extensions and return
 * non-zero instead of reading garbage (and ASan builds would catch it). */
static void test_encoder_refuses_too_many_extensions(void **state)
{
    wire_fixture_t *fx = *state;
    struct {
        llk_msg_hello_t m;
        llk_ext_t one_more;
    } hw;
    struct {
        llk_msg_welcome_t m;
        llk_ext_t one_more;
    } ww;
    assert_int_equal(offsetof(__typeof__(hw), one_more), sizeof hw.m);
    assert_int_equal(offsetof(__typeof__(ww), one_more), sizeof ww.m);

    hw.m = fx->hello;
    ww.m = fx->welcome;
    for (uint16_t i = 0; i < LLK_WIRE_MAX_EXTENSIONS; i++)
        hw.m.ext[i] = ww.m.ext[i] = (llk_ext_t){1, 0, NULL};
    hw.one_more = ww.one_more = (llk_ext_t){1, 0, NULL};

    hw.m.num_ext = ww.m.num_ext = LLK_WIRE_MAX_EXTENSIONS;
    assert_true(enc_hello(fx, &hw.m) > 0); /* control */
    assert_true(enc_welcome(fx, &ww.m) > 0);

    static const uint16_t too_many[] = {LLK_WIRE_MAX_EXTENSIONS + 1, 0xFFFF};
    for (size_t i = 0; i < ARRAY_LEN(too_many); i++) {
        hw.m.num_ext = ww.m.num_ext = too_many[i];
        assert_int_equal(enc_hello(fx, &hw.m), 0);
        assert_int_equal(enc_welcome(fx, &ww.m), 0);
    }
}

/* A frame never carries more than LLK_WIRE_MAX_PAYLOAD bytes, however big
 * the buffer: the peer would refuse it with LLK_HDR_TOO_LARGE. */
static void test_encoder_payload_limit(void **state)
{
    wire_fixture_t *fx = *state;
    llk_msg_hello_t h = fx->hello;
    static uint8_t big[LLK_WIRE_MAX_PAYLOAD * 2];
    uint8_t *out = test_malloc(sizeof big);
    const size_t room = LLK_WIRE_MAX_PAYLOAD - HELLO_FIXED - 2 - 4;

    h.num_ext = 1;
    h.ext[0] = (llk_ext_t){0x0042, (uint16_t)room, big};
    size_t n = llk_wire_encode_hello(out, sizeof big, LLK_WIRE_VERSION, &h);
    assert_int_equal(n, LLK_WIRE_MAX_FRAME); /* exactly at the limit */
    assert_decodes(dec_hello, payload_of(out, n, LLK_MSG_HELLO), LLK_WIRE_MAX_PAYLOAD, fx);

    h.ext[0].length = (uint16_t)(room + 1);
    assert_int_equal(llk_wire_encode_hello(out, sizeof big, LLK_WIRE_VERSION, &h), 0);
    h.ext[0].length = 4096;
    assert_int_equal(llk_wire_encode_hello(out, sizeof big, LLK_WIRE_VERSION, &h), 0);
    test_free(out);
}

static void test_encode_simple_refuses_other_types(void **state)
{
    wire_fixture_t *fx = *state;
    static const int types[] = {0, LLK_MSG_HELLO, LLK_MSG_WELCOME, LLK_MSG_REJECT, 7, 0xFFFF};
    for (size_t i = 0; i < ARRAY_LEN(types); i++)
        assert_int_equal(llk_wire_encode_simple(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION,
                                                (llk_msg_type_t)types[i]),
                         0);
}

/* ---- extensions --------------------------------------------------------------- */

static void test_find_unknown_critical(void **state)
{
    (void)state;
    llk_ext_t ext[4] = {
        {0x0001, 0, NULL},
        {0x7FFF, 0, NULL}, /* highest non-critical type */
        {0x8000, 0, NULL}, /* lowest critical type */
        {0xFFFF, 0, NULL},
    };
    assert_int_equal(llk_wire_find_unknown_critical(ext, 0), -1);
    assert_int_equal(llk_wire_find_unknown_critical(ext, 2), -1); /* skipped, not refused */
    assert_int_equal(llk_wire_find_unknown_critical(ext, 3), 2);
    assert_int_equal(llk_wire_find_unknown_critical(ext, 4), 2);   /* the first one */
    assert_int_equal(llk_wire_find_unknown_critical(ext + 3, 1), 0);
    assert_int_equal(llk_wire_find_unknown_critical(NULL, 0), -1);
}

/* The critical extension in the WELCOME vector is found after decoding. */
static void test_find_unknown_critical_in_decoded(void **state)
{
    wire_fixture_t *fx = *state;
    assert_decodes(dec_welcome, vec_welcome + LLK_WIRE_HEADER_SIZE, VEC_WELCOME_PAYLOAD_LEN, fx);
    assert_int_equal(
        llk_wire_find_unknown_critical(fx->welcome_out.ext, fx->welcome_out.num_ext), 1);
    assert_decodes(dec_hello, vec_hello + LLK_WIRE_HEADER_SIZE, VEC_HELLO_PAYLOAD_LEN, fx);
    assert_int_equal(llk_wire_find_unknown_critical(fx->hello_out.ext, fx->hello_out.num_ext),
                     -1);
}

/* ---- the wait-time extension (LLK_EXT_WAIT_TIME) --------------------------------- */

/* Its bytes, hand-written: type 0x0003, length 4, u32 big-endian ms. */
static void test_wait_time_ext_layout(void **state)
{
    wire_fixture_t *fx = *state;
    llk_msg_hello_t h = fx->hello;
    uint8_t buf[4];
    h.num_ext = 1;
    llk_wire_ext_wait_time(&h.ext[0], buf, 5000);
    size_t n = llk_wire_encode_hello(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &h);
    assert_int_equal(n, LLK_WIRE_HEADER_SIZE + HELLO_FIXED + 2 + 4 + 4);
    static const uint8_t want[] = {0x00, 0x01, 0x00, 0x03, 0x00, 0x04,
                                   0x00, 0x00, 0x13, 0x88}; /* count 1, type 3, len 4, 5000 */
    assert_memory_equal(fx->frame + LLK_WIRE_HEADER_SIZE + HELLO_FIXED, want, sizeof want);
}

/* Encoded in a HELLO and a WELCOME among other extensions, decoded back. */
static void test_wait_time_ext_roundtrip(void **state)
{
    wire_fixture_t *fx = *state;
    static const uint32_t values[] = {1, 50, 5000, 0x7FFFFFFFu};
    for (size_t i = 0; i < ARRAY_LEN(values); i++) {
        llk_msg_hello_t h = fx->hello; /* three other extensions first */
        uint8_t buf[4];
        llk_wire_ext_wait_time(&h.ext[h.num_ext++], buf, values[i]);
        size_t n = llk_wire_encode_hello(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &h);
        assert_true(n > 0);
        assert_int_equal(llk_wire_decode_hello(fx->frame + LLK_WIRE_HEADER_SIZE,
                                               n - LLK_WIRE_HEADER_SIZE, &fx->hello_out,
                                               &fx->why), 0);
        uint32_t ms = 0;
        assert_int_equal(llk_wire_find_wait_time(fx->hello_out.ext, fx->hello_out.num_ext, &ms,
                                                 &fx->why), 1);
        assert_int_equal(ms, values[i]);
        /* Not critical: a peer that does not know it skips it. */
        assert_int_equal(llk_wire_find_unknown_critical(&h.ext[h.num_ext - 1], 1), -1);

        llk_msg_welcome_t w = fx->welcome;
        llk_wire_ext_wait_time(&w.ext[w.num_ext++], buf, values[i]);
        n = llk_wire_encode_welcome(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &w);
        assert_true(n > 0);
        assert_int_equal(llk_wire_decode_welcome(fx->frame + LLK_WIRE_HEADER_SIZE,
                                                 n - LLK_WIRE_HEADER_SIZE, &fx->welcome_out,
                                                 &fx->why), 0);
        ms = 0;
        assert_int_equal(llk_wire_find_wait_time(fx->welcome_out.ext, fx->welcome_out.num_ext,
                                                 &ms, &fx->why), 1);
        assert_int_equal(ms, values[i]);
    }
}

/* Absent: 0 (the receiver uses its own). Bad length or value: -1 with a
 * reason, and *ms untouched. The first one counts. */
static void test_wait_time_ext_validated(void **state)
{
    wire_fixture_t *fx = *state;
    uint32_t ms = 77;
    assert_int_equal(llk_wire_find_wait_time(fx->hello.ext, fx->hello.num_ext, &ms, &fx->why),
                     0);
    assert_int_equal(llk_wire_find_wait_time(NULL, 0, &ms, &fx->why), 0);
    static const uint8_t zero[4] = {0, 0, 0, 0}, big[4] = {0x80, 0, 0, 0},
                         five[5] = {0, 0, 0x13, 0x88, 0}, ok[4] = {0, 0, 0, 50};
    const struct {
        llk_ext_t ext;
        const char *why;
    } bad[] = {
        {{LLK_EXT_WAIT_TIME, 4, zero}, "0 ms"},
        {{LLK_EXT_WAIT_TIME, 4, big}, "above INT32_MAX"},
        {{LLK_EXT_WAIT_TIME, 5, five}, "not 4 bytes"},
        {{LLK_EXT_WAIT_TIME, 3, five}, "not 4 bytes"},
        {{LLK_EXT_WAIT_TIME, 0, NULL}, "not 4 bytes"},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        fx->why = NULL;
        ms = 77;
        assert_int_equal(llk_wire_find_wait_time(&bad[i].ext, 1, &ms, &fx->why), -1);
        assert_non_null(fx->why);
        assert_non_null(strstr(fx->why, bad[i].why));
        assert_int_equal(ms, 77);
    }
    llk_ext_t two[2] = {{LLK_EXT_WAIT_TIME, 4, ok}, {LLK_EXT_WAIT_TIME, 4, zero}};
    assert_int_equal(llk_wire_find_wait_time(two, 2, &ms, &fx->why), 1);
    assert_int_equal(ms, 50);
    /* A bad length inside a whole frame: the frame still decodes (the
     * extension list is well formed), the value is refused. */
    llk_msg_hello_t h = fx->hello;
    h.num_ext = 1;
    h.ext[0] = (llk_ext_t){LLK_EXT_WAIT_TIME, 5, five};
    size_t n = llk_wire_encode_hello(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &h);
    assert_int_equal(llk_wire_decode_hello(fx->frame + LLK_WIRE_HEADER_SIZE,
                                           n - LLK_WIRE_HEADER_SIZE, &fx->hello_out, &fx->why),
                     0);
    assert_int_equal(llk_wire_find_wait_time(fx->hello_out.ext, fx->hello_out.num_ext, &ms,
                                             &fx->why), -1);
}

/* ---- ATTACH / ATTACH_OK (data-stream attach) ------------------------------------ */

#define ATTACH_PAYLOAD_LEN    64u
#define ATTACH_OK_PAYLOAD_LEN 32u
/* Payload offsets (wire.h). */
#define ATTACH_OFF_DIRECTION  34u
#define ATTACH_OFF_TRANSPORT  35u

/* Hand-written from the layout in wire.h, not produced by the encoder. */
static const uint8_t vec_attach[] = {
    'L', 'L', 'M', 'K', 0x00, 0x01, 0x00, 0x07,     /* magic, version 1, type 7 = ATTACH */
    0x00, 0x00, 0x00, 0x40,                         /* length 64 */
    0x00, 0x00, 0x00, 0x00,                         /* flags */
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* client_cluster_id */
    0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, /* server_cluster_id */
    0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, /* client_incarnation */
    0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, /* server_incarnation */
    0x00, 0x03,                                     /* stream_index 3 */
    0x01,                                           /* direction 1 (reverse) */
    0x02,                                           /* transport 2 (shm) */
    0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, /* boot id */
    0xA8, 0xA9, 0xAA, 0xAB, 0xAC, 0xAD, 0xAE, 0xAF,
    0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, /* pid namespace */
    0x00, 0x00, 0x12, 0x34,                         /* pid */
};

static const uint8_t vec_attach_ok[] = {
    'L', 'L', 'M', 'K', 0x00, 0x01, 0x00, 0x08,     /* magic, version 1, type 8 = ATTACH_OK */
    0x00, 0x00, 0x00, 0x20,                         /* length 32 */
    0x00, 0x00, 0x00, 0x00,                         /* flags */
    0x01,                                           /* transport 1 (tcp) */
    0x00, 0x00, 0x00,                               /* reserved */
    0xB0, 0xB1, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, /* boot id */
    0xB8, 0xB9, 0xBA, 0xBB, 0xBC, 0xBD, 0xBE, 0xBF,
    0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, /* pid namespace */
    0x00, 0x00, 0x56, 0x78,                         /* pid */
};

static void vec_attach_fields(llk_msg_attach_t *m)
{
    memset(m, 0, sizeof *m);
    m->client_cluster_id = 0x0102030405060708ull;
    m->server_cluster_id = 0x1112131415161718ull;
    m->client_incarnation = 0x2122232425262728ull;
    m->server_incarnation = 0x3132333435363738ull;
    m->stream_index = 3;
    m->direction = 1;
    m->transport = 2;
    for (int i = 0; i < 16; i++)
        m->boot_id[i] = (uint8_t)(0xA0 + i);
    m->pidns = 0x4142434445464748ull;
    m->pid = 0x1234;
}

static void vec_attach_ok_fields(llk_msg_attach_ok_t *m)
{
    memset(m, 0, sizeof *m);
    m->transport = 1;
    for (int i = 0; i < 16; i++)
        m->boot_id[i] = (uint8_t)(0xB0 + i);
    m->pidns = 0x5152535455565758ull;
    m->pid = 0x5678;
}

static int dec_attach(const uint8_t *p, size_t n, wire_fixture_t *fx)
{
    return llk_wire_decode_attach(p, n, &fx->attach_out, &fx->why);
}
static int dec_attach_ok(const uint8_t *p, size_t n, wire_fixture_t *fx)
{
    return llk_wire_decode_attach_ok(p, n, &fx->attach_ok_out, &fx->why);
}

static void assert_attach_equal(const llk_msg_attach_t *a, const llk_msg_attach_t *b)
{
    assert_int_equal(a->client_cluster_id, b->client_cluster_id);
    assert_int_equal(a->server_cluster_id, b->server_cluster_id);
    assert_int_equal(a->client_incarnation, b->client_incarnation);
    assert_int_equal(a->server_incarnation, b->server_incarnation);
    assert_int_equal(a->stream_index, b->stream_index);
    assert_int_equal(a->direction, b->direction);
    assert_int_equal(a->transport, b->transport);
    assert_memory_equal(a->boot_id, b->boot_id, sizeof a->boot_id);
    assert_int_equal(a->pidns, b->pidns);
    assert_int_equal(a->pid, b->pid);
}

static void assert_attach_ok_equal(const llk_msg_attach_ok_t *a, const llk_msg_attach_ok_t *b)
{
    assert_int_equal(a->transport, b->transport);
    assert_memory_equal(a->boot_id, b->boot_id, sizeof a->boot_id);
    assert_int_equal(a->pidns, b->pidns);
    assert_int_equal(a->pid, b->pid);
}

/* Encodes m, decodes it again and returns the decoder's verdict (the
 * encoder writes whatever it is given). */
static int attach_through_wire(wire_fixture_t *fx, const llk_msg_attach_t *m)
{
    size_t n = llk_wire_encode_attach(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, m);
    assert_int_equal(n, LLK_WIRE_HEADER_SIZE + ATTACH_PAYLOAD_LEN);
    return decode_exact(dec_attach, payload_of(fx->frame, n, LLK_MSG_ATTACH),
                        n - LLK_WIRE_HEADER_SIZE, fx);
}

static int attach_ok_through_wire(wire_fixture_t *fx, const llk_msg_attach_ok_t *m)
{
    size_t n = llk_wire_encode_attach_ok(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, m);
    assert_int_equal(n, LLK_WIRE_HEADER_SIZE + ATTACH_OK_PAYLOAD_LEN);
    return decode_exact(dec_attach_ok, payload_of(fx->frame, n, LLK_MSG_ATTACH_OK),
                        n - LLK_WIRE_HEADER_SIZE, fx);
}

/* The header check knows the two new types. */
static void test_check_header_accepts_attach_types(void **state)
{
    (void)state;
    for (uint16_t t = LLK_MSG_ATTACH; t <= LLK_MSG_ATTACH_OK; t++) {
        llk_frame_header_t h = {LLK_WIRE_MAGIC, LLK_WIRE_VERSION, t, 0, 0};
        assert_int_equal(llk_wire_check_header(&h), LLK_HDR_OK);
    }
    llk_frame_header_t h = {LLK_WIRE_MAGIC, LLK_WIRE_VERSION, LLK_MSG_LAST + 1, 0, 0};
    assert_int_equal(llk_wire_check_header(&h), LLK_HDR_BAD_TYPE);
}

static void test_attach_encode_matches_vectors(void **state)
{
    wire_fixture_t *fx = *state;
    llk_msg_attach_t a;
    llk_msg_attach_ok_t ok;
    vec_attach_fields(&a);
    vec_attach_ok_fields(&ok);

    size_t n = llk_wire_encode_attach(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &a);
    assert_int_equal(n, sizeof vec_attach);
    assert_memory_equal(fx->frame, vec_attach, sizeof vec_attach);

    n = llk_wire_encode_attach_ok(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &ok);
    assert_int_equal(n, sizeof vec_attach_ok);
    assert_memory_equal(fx->frame, vec_attach_ok, sizeof vec_attach_ok);

    /* "version is written as given" here too */
    n = llk_wire_encode_attach(fx->frame, sizeof fx->frame, 2, &a);
    assert_int_equal(n, sizeof vec_attach);
    llk_frame_header_t h;
    llk_wire_read_header(fx->frame, &h);
    assert_int_equal(llk_wire_check_header(&h), LLK_HDR_BAD_VERSION);
}

static void test_attach_decode_vectors(void **state)
{
    wire_fixture_t *fx = *state;
    llk_msg_attach_t a;
    llk_msg_attach_ok_t ok;
    vec_attach_fields(&a);
    vec_attach_ok_fields(&ok);

    assert_int_equal(sizeof vec_attach - LLK_WIRE_HEADER_SIZE, ATTACH_PAYLOAD_LEN);
    assert_decodes(dec_attach, payload_of(vec_attach, sizeof vec_attach, LLK_MSG_ATTACH),
                   ATTACH_PAYLOAD_LEN, fx);
    assert_attach_equal(&fx->attach_out, &a);

    assert_int_equal(sizeof vec_attach_ok - LLK_WIRE_HEADER_SIZE, ATTACH_OK_PAYLOAD_LEN);
    assert_decodes(dec_attach_ok,
                   payload_of(vec_attach_ok, sizeof vec_attach_ok, LLK_MSG_ATTACH_OK),
                   ATTACH_OK_PAYLOAD_LEN, fx);
    assert_attach_ok_equal(&fx->attach_ok_out, &ok);
}

static void test_roundtrip_attach(void **state)
{
    wire_fixture_t *fx = *state;
    llk_msg_attach_t a;

    /* every direction x transport */
    vec_attach_fields(&a);
    for (uint8_t d = 0; d <= 1; d++)
        for (uint8_t t = 0; t <= 3; t++) {
            a.direction = d;
            a.transport = t;
            assert_int_equal(attach_through_wire(fx, &a), 0);
            assert_attach_equal(&fx->attach_out, &a);
        }

    /* extremes */
    memset(&a, 0xFF, sizeof a);
    a.direction = 1;
    a.transport = 3;
    a.has_mac = false; /* no MAC extension: the 64 bytes of llmlink 0.3 */
    assert_int_equal(attach_through_wire(fx, &a), 0);
    assert_attach_equal(&fx->attach_out, &a);
    memset(&a, 0, sizeof a);
    assert_int_equal(attach_through_wire(fx, &a), 0);
    assert_attach_equal(&fx->attach_out, &a);
}

static void test_roundtrip_attach_ok(void **state)
{
    wire_fixture_t *fx = *state;
    llk_msg_attach_ok_t ok;
    vec_attach_ok_fields(&ok);
    for (uint8_t t = 0; t <= 3; t++) {
        ok.transport = t;
        assert_int_equal(attach_ok_through_wire(fx, &ok), 0);
        assert_attach_ok_equal(&fx->attach_ok_out, &ok);
    }
    memset(&ok, 0xFF, sizeof ok);
    ok.transport = 3;
    assert_int_equal(attach_ok_through_wire(fx, &ok), 0);
    assert_attach_ok_equal(&fx->attach_ok_out, &ok);
    memset(&ok, 0, sizeof ok);
    assert_int_equal(attach_ok_through_wire(fx, &ok), 0);
    assert_attach_ok_equal(&fx->attach_ok_out, &ok);
}

static void test_attach_truncations_refused(void **state)
{
    wire_fixture_t *fx = *state;
    assert_every_truncation_refused(dec_attach, vec_attach + LLK_WIRE_HEADER_SIZE,
                                    ATTACH_PAYLOAD_LEN, fx);
    assert_every_truncation_refused(dec_attach_ok, vec_attach_ok + LLK_WIRE_HEADER_SIZE,
                                    ATTACH_OK_PAYLOAD_LEN, fx);
}

static void test_attach_trailing_bytes_refused(void **state)
{
    wire_fixture_t *fx = *state;
    static const struct {
        const uint8_t *frame;
        size_t size;
        decode_fn dec;
    } cases[] = {
        {vec_attach, sizeof vec_attach, dec_attach},
        {vec_attach_ok, sizeof vec_attach_ok, dec_attach_ok},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        size_t n = cases[i].size - LLK_WIRE_HEADER_SIZE;
        memcpy(fx->payload, cases[i].frame + LLK_WIRE_HEADER_SIZE, n);
        assert_decodes(cases[i].dec, fx->payload, n, fx);
        memset(fx->payload + n, 0, 64);
        assert_refused(cases[i].dec, fx->payload, n + 1, fx);
        assert_refused(cases[i].dec, fx->payload, n + 4, fx);
        assert_refused(cases[i].dec, fx->payload, n + 64, fx);
    }
}

static void test_attach_direction_validated(void **state)
{
    wire_fixture_t *fx = *state;
    llk_msg_attach_t a;
    vec_attach_fields(&a);
    static const uint8_t bad[] = {2, 3, 0x80, 0xFF};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        a.direction = bad[i];
        assert_int_equal(attach_through_wire(fx, &a), -1);
        assert_non_null(fx->why);
        assert_non_null(strstr(fx->why, "direction"));
    }
    /* the same byte patched into the vector: the field sits where wire.h says */
    memcpy(fx->payload, vec_attach + LLK_WIRE_HEADER_SIZE, ATTACH_PAYLOAD_LEN);
    fx->payload[ATTACH_OFF_DIRECTION] = 2;
    assert_refused(dec_attach, fx->payload, ATTACH_PAYLOAD_LEN, fx);
    assert_non_null(strstr(fx->why, "direction"));
}

static void test_attach_transport_validated(void **state)
{
    wire_fixture_t *fx = *state;
    llk_msg_attach_t a;
    llk_msg_attach_ok_t ok;
    vec_attach_fields(&a);
    vec_attach_ok_fields(&ok);
    static const uint8_t bad[] = {4, 5, 0x80, 0xFF};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        a.transport = bad[i];
        assert_int_equal(attach_through_wire(fx, &a), -1);
        assert_non_null(fx->why);
        assert_non_null(strstr(fx->why, "transport"));
        ok.transport = bad[i];
        assert_int_equal(attach_ok_through_wire(fx, &ok), -1);
        assert_non_null(fx->why);
        assert_non_null(strstr(fx->why, "transport"));
    }
    memcpy(fx->payload, vec_attach + LLK_WIRE_HEADER_SIZE, ATTACH_PAYLOAD_LEN);
    fx->payload[ATTACH_OFF_TRANSPORT] = 4;
    assert_refused(dec_attach, fx->payload, ATTACH_PAYLOAD_LEN, fx);
    assert_non_null(strstr(fx->why, "transport"));
    memcpy(fx->payload, vec_attach_ok + LLK_WIRE_HEADER_SIZE, ATTACH_OK_PAYLOAD_LEN);
    fx->payload[0] = 4;
    assert_refused(dec_attach_ok, fx->payload, ATTACH_OK_PAYLOAD_LEN, fx);
    assert_non_null(strstr(fx->why, "transport"));
}

/* Each of the three reserved bytes after ATTACH_OK's transport must be 0,
 * so that a later version can give them a meaning. */
static void test_attach_ok_reserved_bytes_refused(void **state)
{
    wire_fixture_t *fx = *state;
    static const uint8_t values[] = {0x01, 0x80, 0xFF};
    for (size_t at = 1; at <= 3; at++)
        for (size_t v = 0; v < ARRAY_LEN(values); v++) {
            memcpy(fx->payload, vec_attach_ok + LLK_WIRE_HEADER_SIZE, ATTACH_OK_PAYLOAD_LEN);
            fx->payload[at] = values[v];
            assert_refused(dec_attach_ok, fx->payload, ATTACH_OK_PAYLOAD_LEN, fx);
            assert_non_null(strstr(fx->why, "reserved"));
        }
    /* and the encoder writes them as zeros whatever the struct holds */
    llk_msg_attach_ok_t ok;
    memset(&ok, 0xFF, sizeof ok);
    ok.transport = 0;
    size_t n = llk_wire_encode_attach_ok(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &ok);
    assert_int_equal(n, LLK_WIRE_HEADER_SIZE + ATTACH_OK_PAYLOAD_LEN);
    const uint8_t *p = payload_of(fx->frame, n, LLK_MSG_ATTACH_OK);
    assert_int_equal(p[1] | p[2] | p[3], 0);
}

static size_t enc_cap_attach(uint8_t *out, size_t cap, void *ctx)
{
    (void)ctx;
    llk_msg_attach_t a;
    vec_attach_fields(&a);
    return llk_wire_encode_attach(out, cap, LLK_WIRE_VERSION, &a);
}
static size_t enc_cap_attach_ok(uint8_t *out, size_t cap, void *ctx)
{
    (void)ctx;
    llk_msg_attach_ok_t ok;
    vec_attach_ok_fields(&ok);
    return llk_wire_encode_attach_ok(out, cap, LLK_WIRE_VERSION, &ok);
}

static void test_attach_encoders_refuse_small_buffers(void **state)
{
    wire_fixture_t *fx = *state;
    static const struct {
        const char *what;
        codec_encode_fn enc;
    } cases[] = {
        {"ATTACH", enc_cap_attach},
        {"ATTACH_OK", enc_cap_attach_ok},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        size_t full = codec_check_capacity(cases[i].what, cases[i].enc, fx, fx->frame,
                                           sizeof fx->frame);
        assert_true(full > LLK_WIRE_HEADER_SIZE);
    }
}

/* ---- the READ-depth extension (LLK_EXT_RDMA_READ_DEPTH) ------------------------- */

/* Its bytes, hand-written: type 0x0004, length 0; not critical (a 0.3
 * peer skips it); found in a decoded HELLO and WELCOME, and absent where it
 * was not sent. */
static void test_read_depth_ext(void **state)
{
    wire_fixture_t *fx = *state;
    assert_int_equal(LLK_EXT_RDMA_READ_DEPTH, 0x0004);
    assert_int_equal(LLK_EXT_RDMA_READ_DEPTH & LLK_WIRE_EXT_CRITICAL, 0);
    llk_msg_hello_t h = fx->hello;
    h.num_ext = 2;
    h.ext[0] = (llk_ext_t){LLK_EXT_RDMA, 0, NULL};
    h.ext[1] = (llk_ext_t){LLK_EXT_RDMA_READ_DEPTH, 0, NULL};
    size_t n = llk_wire_encode_hello(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &h);
    assert_int_equal(n, LLK_WIRE_HEADER_SIZE + HELLO_FIXED + 2 + 4 + 4);
    static const uint8_t want[] = {0x00, 0x02, 0x00, 0x02, 0x00, 0x00,
                                   0x00, 0x04, 0x00, 0x00}; /* count 2, RDMA, READ_DEPTH */
    assert_memory_equal(fx->frame + LLK_WIRE_HEADER_SIZE + HELLO_FIXED, want, sizeof want);
    assert_int_equal(llk_wire_decode_hello(fx->frame + LLK_WIRE_HEADER_SIZE,
                                           n - LLK_WIRE_HEADER_SIZE, &fx->hello_out, &fx->why),
                     0);
    assert_true(llk_wire_has_ext(fx->hello_out.ext, fx->hello_out.num_ext,
                                 LLK_EXT_RDMA_READ_DEPTH));
    assert_int_equal(llk_wire_find_unknown_critical(fx->hello_out.ext, fx->hello_out.num_ext),
                     -1);
    /* a WELCOME with it among others, and one without (a 0.3 server) */
    llk_msg_welcome_t w = fx->welcome;
    w.ext[w.num_ext++] = (llk_ext_t){LLK_EXT_RDMA_READ_DEPTH, 0, NULL};
    n = llk_wire_encode_welcome(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &w);
    assert_true(n > 0);
    assert_int_equal(llk_wire_decode_welcome(fx->frame + LLK_WIRE_HEADER_SIZE,
                                             n - LLK_WIRE_HEADER_SIZE, &fx->welcome_out,
                                             &fx->why), 0);
    assert_true(llk_wire_has_ext(fx->welcome_out.ext, fx->welcome_out.num_ext,
                                 LLK_EXT_RDMA_READ_DEPTH));
    w = fx->welcome;
    n = llk_wire_encode_welcome(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &w);
    assert_int_equal(llk_wire_decode_welcome(fx->frame + LLK_WIRE_HEADER_SIZE,
                                             n - LLK_WIRE_HEADER_SIZE, &fx->welcome_out,
                                             &fx->why), 0);
    assert_false(llk_wire_has_ext(fx->welcome_out.ext, fx->welcome_out.num_ext,
                                  LLK_EXT_RDMA_READ_DEPTH));
    assert_false(llk_wire_has_ext(NULL, 0, LLK_EXT_RDMA_READ_DEPTH));
}

/* ---- the rails extension (LLK_EXT_RDMA_RAILS) ----------------------------------- */

/* Its bytes, hand-written: type 0x0009, length 0, not critical (an older
 * peer skips it and pairs rails by position); found in a decoded HELLO
 * and WELCOME next to the other RDMA extensions, absent where not sent; a
 * length other than 0 still counts (a later version may add bytes). */
static void test_rails_ext(void **state)
{
    wire_fixture_t *fx = *state;
    assert_int_equal(LLK_EXT_RDMA_RAILS, 0x0009);
    assert_int_equal(LLK_EXT_RDMA_RAILS & LLK_WIRE_EXT_CRITICAL, 0);
    llk_msg_hello_t h = fx->hello;
    h.num_ext = 3;
    h.ext[0] = (llk_ext_t){LLK_EXT_RDMA, 0, NULL};
    h.ext[1] = (llk_ext_t){LLK_EXT_RDMA_READ_DEPTH, 0, NULL};
    h.ext[2] = (llk_ext_t){LLK_EXT_RDMA_RAILS, 0, NULL};
    size_t n = llk_wire_encode_hello(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &h);
    assert_int_equal(n, LLK_WIRE_HEADER_SIZE + HELLO_FIXED + 2 + 4 + 4 + 4);
    static const uint8_t want[] = {0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x04,
                                   0x00, 0x00, 0x00, 0x09, 0x00, 0x00};
    assert_memory_equal(fx->frame + LLK_WIRE_HEADER_SIZE + HELLO_FIXED, want, sizeof want);
    assert_int_equal(llk_wire_decode_hello(fx->frame + LLK_WIRE_HEADER_SIZE,
                                           n - LLK_WIRE_HEADER_SIZE, &fx->hello_out, &fx->why),
                     0);
    assert_true(llk_wire_has_ext(fx->hello_out.ext, fx->hello_out.num_ext, LLK_EXT_RDMA_RAILS));
    assert_int_equal(llk_wire_find_unknown_critical(fx->hello_out.ext, fx->hello_out.num_ext),
                     -1);
    /* with 2 bytes of a later version: still announced */
    static const uint8_t more[2] = {1, 2};
    h.ext[2] = (llk_ext_t){LLK_EXT_RDMA_RAILS, 2, more};
    n = llk_wire_encode_hello(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &h);
    assert_int_equal(llk_wire_decode_hello(fx->frame + LLK_WIRE_HEADER_SIZE,
                                           n - LLK_WIRE_HEADER_SIZE, &fx->hello_out, &fx->why),
                     0);
    assert_true(llk_wire_has_ext(fx->hello_out.ext, fx->hello_out.num_ext, LLK_EXT_RDMA_RAILS));
    /* a WELCOME with it, and one without (an older server) */
    llk_msg_welcome_t w = fx->welcome;
    w.ext[w.num_ext++] = (llk_ext_t){LLK_EXT_RDMA_RAILS, 0, NULL};
    n = llk_wire_encode_welcome(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &w);
    assert_true(n > 0);
    assert_int_equal(llk_wire_decode_welcome(fx->frame + LLK_WIRE_HEADER_SIZE,
                                             n - LLK_WIRE_HEADER_SIZE, &fx->welcome_out,
                                             &fx->why), 0);
    assert_true(llk_wire_has_ext(fx->welcome_out.ext, fx->welcome_out.num_ext,
                                 LLK_EXT_RDMA_RAILS));
    w = fx->welcome;
    n = llk_wire_encode_welcome(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &w);
    assert_int_equal(llk_wire_decode_welcome(fx->frame + LLK_WIRE_HEADER_SIZE,
                                             n - LLK_WIRE_HEADER_SIZE, &fx->welcome_out,
                                             &fx->why), 0);
    assert_false(llk_wire_has_ext(fx->welcome_out.ext, fx->welcome_out.num_ext,
                                  LLK_EXT_RDMA_RAILS));
}

/* ---- main ------------------------------------------------------------------------ */

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_header_layout_matches_vector),
        T(test_read_header_big_endian),
        T(test_check_header_rejects_byte_swapped),
        T(test_check_header_accepts_valid),
        T(test_check_header_failures),
        T(test_header_check_strings),
        T(test_encoder_writes_given_version),
        T(test_encode_matches_vectors),
        T(test_decode_vectors),
        T(test_roundtrip_hello),
        T(test_roundtrip_hello_extremes),
        T(test_roundtrip_hello_max_extensions),
        T(test_roundtrip_welcome),
        T(test_roundtrip_reject),
        T(test_roundtrip_reject_max_length),
        T(test_reject_overlong_message_truncated),
        T(test_roundtrip_simple),
        T(test_truncations_refused),
        T(test_trailing_bytes_refused),
        T(test_hello_roles_validated),
        T(test_welcome_role_validated),
        T(test_liveness_range_validated),
        T(test_too_many_extensions_refused),
        T(test_extension_longer_than_frame_refused),
        T(test_reject_length_validated),
        T(test_reject_nonprintable_replaced),
        T(test_simple_payloads_validated),
        T(test_encoders_refuse_small_buffers),
        T(test_encoder_refuses_too_many_extensions),
        T(test_encoder_payload_limit),
        T(test_encode_simple_refuses_other_types),
        T(test_find_unknown_critical),
        T(test_find_unknown_critical_in_decoded),
        T(test_wait_time_ext_layout),
        T(test_wait_time_ext_roundtrip),
        T(test_wait_time_ext_validated),
        T(test_read_depth_ext),
        T(test_rails_ext),
        T(test_check_header_accepts_attach_types),
        T(test_attach_encode_matches_vectors),
        T(test_attach_decode_vectors),
        T(test_roundtrip_attach),
        T(test_roundtrip_attach_ok),
        T(test_attach_truncations_refused),
        T(test_attach_trailing_bytes_refused),
        T(test_attach_direction_validated),
        T(test_attach_transport_validated),
        T(test_attach_ok_reserved_bytes_refused),
        T(test_attach_encoders_refuse_small_buffers),
    };
    return cmocka_run_group_tests_name("wire: control-plane frame codec", tests, NULL, NULL);
}

/*
 * test_xfer_wire.c - unit tests of the data-stream frame codec
 * (core/xfer_wire.c).
 *
 * Like the control-plane codec, this one reads bytes straight off the
 * network, and what it accepts decides which memory a peer may read or
 * write: most of these tests are about refusing bad input. Every check the
 * decoders make has a test here that would fail without it (each valid
 * control case next to the refused one differs only in the field checked).
 *
 * Decoders always run on an exact-size heap copy of the payload, so a read
 * past the end is caught by AddressSanitizer (make asan) instead of reading
 * the rest of a larger test buffer. The copy is kept until the next decode,
 * because decoded segment / iovec arrays point into it.
 *
 * Byte layout is checked against the hand-written frames below (the shared
 * vectors for this protocol), never against the encoder's own output.
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
#include "codec_check.h"
#include "xfer/xfer_wire.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* XRESP bytes besides the message and the iovecs: status, total, msg_len, niov. */
#define XRESP_FIXED 18u
#define XRESP_MAX_PAYLOAD (XRESP_FIXED + LLK_XWIRE_MAX_MSG + LLK_XWIRE_MAX_SEGS * LLK_XWIRE_IOV_SIZE)
#define MAX_REQ_FRAME  (LLK_XWIRE_HEADER_SIZE + LLK_XWIRE_MAX_PAYLOAD)
#define MAX_RESP_FRAME (LLK_XWIRE_HEADER_SIZE + XRESP_MAX_PAYLOAD)
/* Room for the largest legal frame, one record more, and canary slack. */
#define FRAME_CAP (MAX_REQ_FRAME + LLK_XWIRE_SEG_SIZE + 64)

/* XREQ payload offsets (xfer_wire.h). */
#define OFF_OP        0u
#define OFF_KIND      1u
#define OFF_FLAGS     2u
#define OFF_KEY_TYPE  4u
#define OFF_HINT      60u
#define OFF_BOUND_END 64u
#define OFF_NSEG      72u
#define OFF_SEGS      LLK_XWIRE_REQ_FIXED
/* XRESP payload offsets. */
#define OFF_STATUS    0u
#define OFF_MSG_LEN   12u
#define OFF_MSG       14u

#define REQ_ID 0x0F1E2D3C4B5A6978ull

/* ---- shared test vectors ---------------------------------------------------- */
/*
 * Written out field by field from the layout in core/xfer_wire.h, NOT
 * produced by the encoder. Another implementation of the data-stream
 * protocol can be checked against these bytes. All integers big-endian.
 * Header: "LLMD" | u16 version | u16 type | u32 length | u32 flags | u64 req_id
 */

/* XREQ: READ of a CacheKey's entry, WHOLE, two segments. */
#define VEC_XREQ_REQ_ID       0x0102030405060708ull
#define VEC_XREQ_CLUSTER_ID   0x1112131415161718ull
#define VEC_XREQ_KEY_REQ_ID   0x2122232425262728ull
#define VEC_XREQ_MODEL_ID     0x3132333435363738ull
#define VEC_XREQ_PREFIX_ID    (-1ll)
#define VEC_XREQ_CACHE_ID     0x4142434445464748ll
#define VEC_XREQ_BATCH_INDEX  0x51525354u
#define VEC_XREQ_UNIT_BYTES   0x10000ull
#define VEC_XREQ_HINT         3u
#define VEC_XREQ_BOUND_END    0x100000020ull
#define VEC_XREQ_TOTAL        0x1020ull
#define VEC_XREQ_PAYLOAD_LEN  116u

static const uint8_t vec_xreq[] = {
    'L', 'L', 'M', 'D', 0x00, 0x01, 0x00, 0x01,     /* magic, version 1, type 1 = REQ */
    0x00, 0x00, 0x00, 0x74,                         /* length 116 */
    0x00, 0x00, 0x00, 0x00,                         /* flags */
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* req_id */
    0x01,                                           /* op READ */
    0x02,                                           /* kind CACHE */
    0x00, 0x01,                                     /* flags WHOLE */
    0x00, 0x00, 0x00, 0x01,                         /* key type KEY_CACHE */
    0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, /* cluster_id */
    0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, /* req_id (of the key) */
    0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, /* model_id */
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, /* prefix_id -1 */
    0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, /* cache_id */
    0x51, 0x52, 0x53, 0x54,                         /* batch_index */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, /* unit_bytes 65536 */
    0x00, 0x00, 0x00, 0x03,                         /* num_tensors_hint 3 */
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x20, /* bound_end 0x100000020 */
    0x00, 0x00, 0x00, 0x02,                         /* nseg 2 */
    0x00, 0x00, 0x00, 0x00,                         /* seg 0: tensor 0 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*        offset 0 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, /*        length 0x1000 */
    0x00, 0x00, 0x00, 0x02,                         /* seg 1: tensor 2 */
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, /*        offset 0x100000000 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, /*        length 0x20 */
};
static const llk_xseg_wire_t vec_xreq_segs[] = {
    {0, 0, 0x1000},
    {2, 0x100000000ull, 0x20},
};

/* XRESP: SUCCESS answer to SHM_READ, message "ok", two iovecs. */
#define VEC_XRESP_REQ_ID      0x0102030405060708ull
#define VEC_XRESP_TOTAL       0x1020ull
#define VEC_XRESP_MSG         "ok"
#define VEC_XRESP_PAYLOAD_LEN 52u

static const uint8_t vec_xresp[] = {
    'L', 'L', 'M', 'D', 0x00, 0x01, 0x00, 0x02,     /* magic, version 1, type 2 = RESP */
    0x00, 0x00, 0x00, 0x34,                         /* length 52 */
    0x00, 0x00, 0x00, 0x00,                         /* flags */
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* req_id */
    0x00, 0x00, 0x00, 0x00,                         /* status SUCCESS */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x20, /* total_bytes 0x1020 */
    0x00, 0x02, 'o', 'k',                           /* msg_len 2, "ok" */
    0x00, 0x00, 0x00, 0x02,                         /* niov 2 */
    0x00, 0x00, 0x7F, 0x00, 0x00, 0x00, 0x10, 0x00, /* iov 0: addr 0x7f0000001000 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, /*        len 0x1000 */
    0x00, 0x00, 0x7F, 0x00, 0x00, 0x20, 0x00, 0x00, /* iov 1: addr 0x7f0000200000 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, /*        len 0x20 */
};
static const uint64_t vec_xresp_iovs[] = {0x7F0000001000ull, 0x1000, 0x7F0000200000ull, 0x20};

/* XRESP: a refusal, no iovecs. */
#define VEC_XRESP_NO_REQ_ID      0xFFFFFFFFFFFFFFFFull
#define VEC_XRESP_NO_STATUS      0x5010B002u /* LLMLINK_KV_CACHE_NOT_EXIST */
#define VEC_XRESP_NO_MSG         "no such key"
#define VEC_XRESP_NO_PAYLOAD_LEN 29u

static const uint8_t vec_xresp_refused[] = {
    'L', 'L', 'M', 'D', 0x00, 0x01, 0x00, 0x02,     /* magic, version 1, type 2 = RESP */
    0x00, 0x00, 0x00, 0x1D,                         /* length 29 */
    0x00, 0x00, 0x00, 0x00,                         /* flags */
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, /* req_id */
    0x50, 0x10, 0xB0, 0x02,                         /* status KV_CACHE_NOT_EXIST */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* total_bytes 0 */
    0x00, 0x0B, 'n', 'o', ' ', 's', 'u', 'c', 'h', ' ', 'k', 'e', 'y', /* msg */
    0x00, 0x00, 0x00, 0x00,                         /* niov 0 */
};

/* XDONE */
#define VEC_XDONE_REQ_ID      0x8877665544332211ull
#define VEC_XDONE_STATUS      0x5010B104u /* LLMLINK_PROTOCOL_ERROR */

static const uint8_t vec_xdone[] = {
    'L', 'L', 'M', 'D', 0x00, 0x01, 0x00, 0x03,     /* magic, version 1, type 3 = DONE */
    0x00, 0x00, 0x00, 0x04,                         /* length 4 */
    0x00, 0x00, 0x00, 0x00,                         /* flags */
    0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, /* req_id */
    0x50, 0x10, 0xB1, 0x04,                         /* status */
};

/* ---- fixture ---------------------------------------------------------------- */

typedef struct xw_fixture {
    uint8_t *frame;   /* encoder output, FRAME_CAP bytes */
    uint8_t *payload; /* hand-built payloads, FRAME_CAP bytes */
    llk_xseg_wire_t *segs; /* LLK_XWIRE_MAX_SEGS + 1 */
    uint64_t *iovs;        /* 2 * (LLK_XWIRE_MAX_SEGS + 1) */
    uint8_t *copy;    /* exact-size copy the last decode ran on */
    llk_xreq_t req;   /* a valid READ of three block segments */
    llk_xreq_t req_out;
    llk_xresp_t resp_out;
    uint32_t done_out;
    const char *why;
} xw_fixture_t;

static int setup(void **state)
{
    xw_fixture_t *fx = test_calloc(1, sizeof *fx);
    assert_non_null(fx);
    fx->frame = test_calloc(1, FRAME_CAP);
    fx->payload = test_calloc(1, FRAME_CAP);
    fx->segs = test_calloc(LLK_XWIRE_MAX_SEGS + 1, sizeof *fx->segs);
    fx->iovs = test_calloc(2 * (LLK_XWIRE_MAX_SEGS + 1), sizeof *fx->iovs);
    assert_non_null(fx->frame);
    assert_non_null(fx->payload);
    assert_non_null(fx->segs);
    assert_non_null(fx->iovs);

    fx->segs[0] = (llk_xseg_wire_t){0, 0, 4096};
    fx->segs[1] = (llk_xseg_wire_t){1, 8192, 4096};
    fx->segs[2] = (llk_xseg_wire_t){3, 0, 12288};

    llk_xreq_t *r = &fx->req;
    r->op = LLK_XOP_READ;
    r->kind = LLK_XKIND_BLOCKS;
    r->flags = 0;
    r->key.type = LLMLINK_KEY_BLOCKS;
    r->key.cluster_id = 0xDEADBEEFCAFEF00Dull;
    r->key.req_id = 0;
    r->key.model_id = 9;
    r->key.prefix_id = -1;
    r->key.cache_id = 0;
    r->key.batch_index = 0;
    r->unit_bytes = 4096;
    r->num_tensors_hint = 4;
    r->bound_end = 12288; /* segment 2's end */
    r->nseg = 3;

    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    xw_fixture_t *fx = *state;
    free(fx->copy);
    test_free(fx->frame);
    test_free(fx->payload);
    test_free(fx->segs);
    test_free(fx->iovs);
    test_free(fx);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------ */

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    put_be16(p, (uint16_t)(v >> 16));
    put_be16(p + 2, (uint16_t)v);
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

static void put_seg(uint8_t *p, uint32_t tensor, uint64_t offset, uint64_t length)
{
    put_be32(p, tensor);
    put_be64(p + 4, offset);
    put_be64(p + 12, length);
}

/* Checks that frame[0..n) is one well-formed frame of the given type and
 * request id whose header length matches the bytes after it; returns the
 * payload. */
static const uint8_t *payload_of(const uint8_t *frame, size_t n, llk_xmsg_type_t type,
                                 uint64_t req_id)
{
    llk_xframe_header_t h;
    const char *why = NULL;
    assert_true(n >= LLK_XWIRE_HEADER_SIZE);
    if (llk_xwire_read_header(frame, &h, &why) != 0)
        fail_msg("header refused: %s", why ? why : "?");
    assert_int_equal(h.magic, LLK_XWIRE_MAGIC);
    assert_int_equal(h.version, LLK_XWIRE_VERSION);
    assert_int_equal(h.type, type);
    assert_int_equal(h.flags, 0);
    assert_int_equal(h.length, n - LLK_XWIRE_HEADER_SIZE);
    assert_int_equal(h.req_id, req_id);
    return frame + LLK_XWIRE_HEADER_SIZE;
}

typedef int (*decode_fn)(const uint8_t *p, size_t n, xw_fixture_t *fx);

static int dec_req(const uint8_t *p, size_t n, xw_fixture_t *fx)
{
    return llk_xwire_decode_req(p, n, &fx->req_out, &fx->why);
}
static int dec_resp(const uint8_t *p, size_t n, xw_fixture_t *fx)
{
    return llk_xwire_decode_resp(p, n, &fx->resp_out, &fx->why);
}
static int dec_done(const uint8_t *p, size_t n, xw_fixture_t *fx)
{
    return llk_xwire_decode_done(p, n, &fx->done_out, &fx->why);
}

/* Runs a decoder on an exact-size heap copy of p[0..n) (see file comment). */
static int decode_exact(decode_fn fn, const uint8_t *p, size_t n, xw_fixture_t *fx)
{
    free(fx->copy);
    fx->copy = malloc(n ? n : 1);
    assert_non_null(fx->copy);
    if (n)
        memcpy(fx->copy, p, n);
    fx->why = NULL;
    return fn(fx->copy, n, fx);
}

static void assert_decodes(decode_fn fn, const uint8_t *p, size_t n, xw_fixture_t *fx)
{
    int rc = decode_exact(fn, p, n, fx);
    if (rc != 0)
        fail_msg("decoder refused a valid %zu-byte payload: %s", n, fx->why ? fx->why : "?");
}

/* A refusal must come with a reason: it ends up in logs and last_error. */
static void assert_refused(decode_fn fn, const uint8_t *p, size_t n, xw_fixture_t *fx)
{
    int rc = decode_exact(fn, p, n, fx);
    if (rc != -1)
        fail_msg("decoder accepted (rc %d) a malformed %zu-byte payload", rc, n);
    assert_non_null(fx->why);
    assert_true(fx->why[0] != '\0');
}

/* As assert_refused, and the reason contains `what` (so the refusal comes
 * from the check under test, not an earlier one). */
static void assert_refused_for(decode_fn fn, const uint8_t *p, size_t n, xw_fixture_t *fx,
                               const char *what)
{
    assert_refused(fn, p, n, fx);
    if (strstr(fx->why, what) == NULL)
        fail_msg("refused for \"%s\", expected a reason about \"%s\"", fx->why, what);
}

static void assert_key_equal(const llmlink_cache_key_t *a, const llmlink_cache_key_t *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->cluster_id, b->cluster_id);
    assert_int_equal(a->req_id, b->req_id);
    assert_int_equal(a->model_id, b->model_id);
    assert_int_equal(a->prefix_id, b->prefix_id);
    assert_int_equal(a->cache_id, b->cache_id);
    assert_int_equal(a->batch_index, b->batch_index);
}

/* Decoded req a equals what was encoded (r, segs); total is the sum. */
static void assert_req_equal(const llk_xreq_t *a, const llk_xreq_t *r, const llk_xseg_wire_t *segs)
{
    assert_int_equal(a->op, r->op);
    assert_int_equal(a->kind, r->kind);
    assert_int_equal(a->flags, r->flags);
    assert_key_equal(&a->key, &r->key);
    assert_int_equal(a->unit_bytes, r->unit_bytes);
    assert_int_equal(a->num_tensors_hint, r->num_tensors_hint);
    assert_int_equal(a->bound_end, r->bound_end);
    assert_int_equal(a->nseg, r->nseg);
    uint64_t total = 0;
    for (uint32_t i = 0; i < a->nseg; i++) {
        llk_xseg_wire_t s;
        llk_xwire_seg_at(a->segs, i, &s);
        if (s.tensor != segs[i].tensor || s.offset != segs[i].offset ||
            s.length != segs[i].length)
            fail_msg("segment %u differs", i);
        total += s.length;
    }
    assert_int_equal(a->total_bytes, total);
}

static size_t enc_req(xw_fixture_t *fx, const llk_xreq_t *r, const llk_xseg_wire_t *segs)
{
    return llk_xwire_encode_req(fx->frame, FRAME_CAP, REQ_ID, r, segs);
}

/* Encodes r, decodes it again and returns the decoder's verdict. Used to
 * probe field validation: the encoder writes whatever it is given. */
static int req_through_wire(xw_fixture_t *fx, const llk_xreq_t *r, const llk_xseg_wire_t *segs)
{
    size_t n = enc_req(fx, r, segs);
    assert_int_equal(n, llk_xwire_req_size(r->nseg));
    return decode_exact(dec_req, payload_of(fx->frame, n, LLK_XMSG_REQ, REQ_ID),
                        n - LLK_XWIRE_HEADER_SIZE, fx);
}

static size_t enc_resp(xw_fixture_t *fx, uint32_t status, uint64_t total, const char *msg,
                       const uint64_t *iovs, uint32_t niov)
{
    return llk_xwire_encode_resp(fx->frame, FRAME_CAP, REQ_ID, status, total, msg, iovs, niov);
}

static int resp_through_wire(xw_fixture_t *fx, uint32_t status, uint64_t total, const char *msg,
                             const uint64_t *iovs, uint32_t niov)
{
    size_t n = enc_resp(fx, status, total, msg, iovs, niov);
    assert_int_equal(n, llk_xwire_resp_size(msg ? strlen(msg) : 0, niov));
    return decode_exact(dec_resp, payload_of(fx->frame, n, LLK_XMSG_RESP, REQ_ID),
                        n - LLK_XWIRE_HEADER_SIZE, fx);
}

static void assert_iovs_equal(const llk_xresp_t *a, const uint64_t *pairs, uint32_t niov)
{
    assert_int_equal(a->niov, niov);
    for (uint32_t i = 0; i < niov; i++) {
        uint64_t addr, len;
        llk_xwire_iov_at(a->iovs, i, &addr, &len);
        if (addr != pairs[2 * i] || len != pairs[2 * i + 1])
            fail_msg("iovec %u differs", i);
    }
}

/* The valid request's payload, copied to fx->payload; returns its length. */
static size_t valid_req_payload(xw_fixture_t *fx)
{
    size_t n = enc_req(fx, &fx->req, fx->segs);
    assert_true(n > 0);
    memcpy(fx->payload, payload_of(fx->frame, n, LLK_XMSG_REQ, REQ_ID), n - LLK_XWIRE_HEADER_SIZE);
    return n - LLK_XWIRE_HEADER_SIZE;
}

/* ---- header ---------------------------------------------------------------- */

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
        {LLK_XMSG_RESP, XRESP_FIXED},
        {LLK_XMSG_RESP, XRESP_MAX_PAYLOAD},
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
        {"type 7 (after the RDMA types 4..6)", LLK_XWIRE_MAGIC, 1, 7, 4, 0},
        {"type little-endian REQ", LLK_XWIRE_MAGIC, 1, 0x0100, 100, 0},
        {"type 0xFFFF", LLK_XWIRE_MAGIC, 1, 0xFFFF, 4, 0},
        {"flags 1", LLK_XWIRE_MAGIC, 1, 1, 100, 1},
        {"flags top bit", LLK_XWIRE_MAGIC, 1, 2, 100, 0x80000000u},
        {"DONE flags", LLK_XWIRE_MAGIC, 1, 3, 4, 0xFFFFFFFFu},
        {"REQ length max+1", LLK_XWIRE_MAGIC, 1, 1, LLK_XWIRE_MAX_PAYLOAD + 1, 0},
        {"REQ length u32 max", LLK_XWIRE_MAGIC, 1, 1, UINT32_MAX, 0},
        {"RESP length max+1", LLK_XWIRE_MAGIC, 1, 2, XRESP_MAX_PAYLOAD + 1, 0},
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
                     LLK_XWIRE_HEADER_SIZE + XRESP_MAX_PAYLOAD);
    assert_int_equal(XRESP_MAX_PAYLOAD, 4 + 8 + 2 + LLK_XWIRE_MAX_MSG + 4 +
                                            LLK_XWIRE_MAX_SEGS * 16);
}

/* ---- exact encodings of the shared vectors --------------------------------- */

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

/* ---- sizes ------------------------------------------------------------------ */

static void test_frame_sizes(void **state)
{
    (void)state;
    assert_int_equal(llk_xwire_req_size(0), LLK_XWIRE_HEADER_SIZE + LLK_XWIRE_REQ_FIXED);
    assert_int_equal(llk_xwire_req_size(2), sizeof vec_xreq);
    assert_int_equal(llk_xwire_req_size(LLK_XWIRE_MAX_SEGS), MAX_REQ_FRAME);
    /* Over the limit: no such frame. */
    assert_int_equal(llk_xwire_req_size(LLK_XWIRE_MAX_SEGS + 1), 0);
    assert_int_equal(llk_xwire_req_size(UINT32_MAX), 0);

    assert_int_equal(llk_xwire_resp_size(0, 0), LLK_XWIRE_HEADER_SIZE + XRESP_FIXED);
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

/* ---- round trips --------------------------------------------------------------- */

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
    assert_decodes(dec_resp, payload_of(fx->frame, n, LLK_XMSG_RESP, REQ_ID), XRESP_MAX_PAYLOAD,
                   fx);
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

/* ---- decoders refuse malformed input ------------------------------------------- */

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
    assert_int_equal(n, XRESP_FIXED);
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

/* ---- encoders ------------------------------------------------------------------ */

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

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

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
        T(test_roundtrip_req),
        T(test_roundtrip_req_extremes),
        T(test_roundtrip_req_enumerations),
        T(test_roundtrip_req_max_segments),
        T(test_roundtrip_req_consume),
        T(test_req_id_in_header),
        T(test_roundtrip_resp),
        T(test_roundtrip_resp_max),
        T(test_resp_overlong_message_truncated),
        T(test_roundtrip_done),
        T(test_truncations_refused),
        T(test_truncated_fixed_part_reason),
        T(test_trailing_bytes_refused),
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
        T(test_req_consume_ignores_bounds),
        T(test_req_without_segments),
        T(test_resp_message_length_validated),
        T(test_resp_nonprintable_replaced),
        T(test_resp_too_many_iovecs_refused),
        T(test_resp_length_must_match_count),
        T(test_resp_iovecs_only_on_success),
        T(test_resp_iovec_values_validated),
        T(test_done_length_validated),
        T(test_encoders_refuse_small_buffers),
        T(test_encoders_exact_fit_at_maximum),
        T(test_encoders_refuse_counts_over_limit),
        T(test_encode_req_ignores_decode_fields),
    };
    return cmocka_run_group_tests_name("xfer_wire: data-stream frame codec", tests, NULL, NULL);
}

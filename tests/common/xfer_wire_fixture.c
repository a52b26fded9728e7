/*
 * xfer_wire_fixture.c - see xfer_wire_fixture.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "be_put.h"
#include "xfer_wire_fixture.h"
#include "xwire_decode_done.h"

int xw_setup(void **state)
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

int xw_teardown(void **state)
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

void put_seg(uint8_t *p, uint32_t tensor, uint64_t offset, uint64_t length)
{
    put_be32(p, tensor);
    put_be64(p + 4, offset);
    put_be64(p + 12, length);
}

/* Checks that frame[0..n) is one well-formed frame of the given type and
 * request id whose header length matches the bytes after it; returns the
 * payload. */
const uint8_t *payload_of(const uint8_t *frame, size_t n, llk_xmsg_type_t type, uint64_t req_id)
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

int dec_req(const uint8_t *p, size_t n, xw_fixture_t *fx)
{
    return llk_xwire_decode_req(p, n, &fx->req_out, &fx->why);
}
int dec_resp(const uint8_t *p, size_t n, xw_fixture_t *fx)
{
    return llk_xwire_decode_resp(p, n, &fx->resp_out, &fx->why);
}
int dec_done(const uint8_t *p, size_t n, xw_fixture_t *fx)
{
    return llk_xwire_decode_done(p, n, &fx->done_out, &fx->why);
}

/* Runs a decoder on an exact-size heap copy of p[0..n) (see xfer_wire_fixture.h). */
int decode_exact(decode_fn fn, const uint8_t *p, size_t n, xw_fixture_t *fx)
{
    free(fx->copy);
    fx->copy = malloc(n ? n : 1);
    assert_non_null(fx->copy);
    if (n)
        memcpy(fx->copy, p, n);
    fx->why = NULL;
    return fn(fx->copy, n, fx);
}

void assert_decodes(decode_fn fn, const uint8_t *p, size_t n, xw_fixture_t *fx)
{
    int rc = decode_exact(fn, p, n, fx);
    if (rc != 0)
        fail_msg("decoder refused a valid %zu-byte payload: %s", n, fx->why ? fx->why : "?");
}

/* A refusal must come with a reason: it ends up in logs and last_error. */
void assert_refused(decode_fn fn, const uint8_t *p, size_t n, xw_fixture_t *fx)
{
    int rc = decode_exact(fn, p, n, fx);
    if (rc != -1)
        fail_msg("decoder accepted (rc %d) a malformed %zu-byte payload", rc, n);
    assert_non_null(fx->why);
    assert_true(fx->why[0] != '\0');
}

/* As assert_refused, and the reason contains `what` (so the refusal comes
 * from the check under test, not an earlier one). */
void assert_refused_for(decode_fn fn, const uint8_t *p, size_t n, xw_fixture_t *fx,
                        const char *what)
{
    assert_refused(fn, p, n, fx);
    if (strstr(fx->why, what) == NULL)
        fail_msg("refused for \"%s\", expected a reason about \"%s\"", fx->why, what);
}

void assert_key_equal(const llmlink_cache_key_t *a, const llmlink_cache_key_t *b)
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
void assert_req_equal(const llk_xreq_t *a, const llk_xreq_t *r, const llk_xseg_wire_t *segs)
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

size_t enc_req(xw_fixture_t *fx, const llk_xreq_t *r, const llk_xseg_wire_t *segs)
{
    return llk_xwire_encode_req(fx->frame, FRAME_CAP, REQ_ID, r, segs);
}

/* Encodes r, decodes it again and returns the decoder's verdict. Used to
 * probe field validation: the encoder writes whatever it is given. */
int req_through_wire(xw_fixture_t *fx, const llk_xreq_t *r, const llk_xseg_wire_t *segs)
{
    size_t n = enc_req(fx, r, segs);
    assert_int_equal(n, llk_xwire_req_size(r->nseg));
    return decode_exact(dec_req, payload_of(fx->frame, n, LLK_XMSG_REQ, REQ_ID),
                        n - LLK_XWIRE_HEADER_SIZE, fx);
}

size_t enc_resp(xw_fixture_t *fx, uint32_t status, uint64_t total, const char *msg,
                const uint64_t *iovs, uint32_t niov)
{
    return llk_xwire_encode_resp(fx->frame, FRAME_CAP, REQ_ID, status, total, msg, iovs, niov);
}

int resp_through_wire(xw_fixture_t *fx, uint32_t status, uint64_t total, const char *msg,
                      const uint64_t *iovs, uint32_t niov)
{
    size_t n = enc_resp(fx, status, total, msg, iovs, niov);
    assert_int_equal(n, llk_xwire_resp_size(msg ? strlen(msg) : 0, niov));
    return decode_exact(dec_resp, payload_of(fx->frame, n, LLK_XMSG_RESP, REQ_ID),
                        n - LLK_XWIRE_HEADER_SIZE, fx);
}

void assert_iovs_equal(const llk_xresp_t *a, const uint64_t *pairs, uint32_t niov)
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
size_t valid_req_payload(xw_fixture_t *fx)
{
    size_t n = enc_req(fx, &fx->req, fx->segs);
    assert_true(n > 0);
    memcpy(fx->payload, payload_of(fx->frame, n, LLK_XMSG_REQ, REQ_ID), n - LLK_XWIRE_HEADER_SIZE);
    return n - LLK_XWIRE_HEADER_SIZE;
}

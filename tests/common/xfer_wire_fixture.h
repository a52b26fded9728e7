/*
 * xfer_wire_fixture.h - what the data-stream codec tests share
 * (tests/unit/test_xfer_wire_*.c, core/xfer/xfer_wire.c): a per-test
 * fixture holding a valid XREQ, and the decode / encode helpers.
 *
 * Like the control-plane codec, this one reads bytes straight off the
 * network, and what it accepts decides which memory a peer may read or
 * write: most of the tests are about refusing bad input. Every check the
 * decoders make has a test that would fail without it (each valid control
 * case next to the refused one differs only in the field checked).
 *
 * Decoders always run on an exact-size heap copy of the payload
 * (decode_exact), so a read past the end is caught by AddressSanitizer
 * (make asan) instead of reading the rest of a larger test buffer. The copy
 * is kept until the next decode, because decoded segment / iovec arrays
 * point into it.
 *
 * Byte layout is checked against the hand-written frames of
 * xfer_wire_vectors.h, never against the encoder's own output.
 *
 * Include after <cmocka.h> and its prerequisites. The helpers keep the
 * short names the tests were written with; only the test_xfer_wire_*
 * programs include this header.
 */
#ifndef XFER_WIRE_FIXTURE_H
#define XFER_WIRE_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "llmlink.h"
#include "xfer/xfer_wire.h"

#ifndef ARRAY_LEN
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#endif

#define MAX_REQ_FRAME  (LLK_XWIRE_HEADER_SIZE + LLK_XWIRE_MAX_PAYLOAD)
#define MAX_RESP_FRAME (LLK_XWIRE_HEADER_SIZE + LLK_XWIRE_RESP_MAX_PAYLOAD)
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

/* Per test: a fresh fixture (fx->req is a valid READ of three block
 * segments, fx->segs its segments). */
int xw_setup(void **state);
int xw_teardown(void **state);
#define T(f) cmocka_unit_test_setup_teardown(f, xw_setup, xw_teardown)

/* One record (XREQ segment) written by hand. */
void put_seg(uint8_t *p, uint32_t tensor, uint64_t offset, uint64_t length);
/* Checks that frame[0..n) is one well-formed frame of the given type and
 * request id whose header length matches the bytes after it; returns the
 * payload. */
const uint8_t *payload_of(const uint8_t *frame, size_t n, llk_xmsg_type_t type, uint64_t req_id);

/* ---- decoding ---- */
typedef int (*decode_fn)(const uint8_t *p, size_t n, xw_fixture_t *fx);
int dec_req(const uint8_t *p, size_t n, xw_fixture_t *fx);   /* into fx->req_out */
int dec_resp(const uint8_t *p, size_t n, xw_fixture_t *fx);  /* into fx->resp_out */
int dec_done(const uint8_t *p, size_t n, xw_fixture_t *fx);  /* into fx->done_out */
/* Runs a decoder on an exact-size heap copy of p[0..n). */
int decode_exact(decode_fn fn, const uint8_t *p, size_t n, xw_fixture_t *fx);
void assert_decodes(decode_fn fn, const uint8_t *p, size_t n, xw_fixture_t *fx);
/* A refusal must come with a reason: it ends up in logs and last_error. */
void assert_refused(decode_fn fn, const uint8_t *p, size_t n, xw_fixture_t *fx);
/* As assert_refused, and the reason contains `what` (so the refusal comes
 * from the check under test, not an earlier one). */
void assert_refused_for(decode_fn fn, const uint8_t *p, size_t n, xw_fixture_t *fx,
                        const char *what);
void assert_key_equal(const llmlink_cache_key_t *a, const llmlink_cache_key_t *b);
/* Decoded req a equals what was encoded (r, segs); total is the sum. */
void assert_req_equal(const llk_xreq_t *a, const llk_xreq_t *r, const llk_xseg_wire_t *segs);
void assert_iovs_equal(const llk_xresp_t *a, const uint64_t *pairs, uint32_t niov);

/* ---- encoding (into fx->frame, FRAME_CAP bytes, request id REQ_ID) ---- */
size_t enc_req(xw_fixture_t *fx, const llk_xreq_t *r, const llk_xseg_wire_t *segs);
/* Encodes r, decodes it again and returns the decoder's verdict. Used to
 * probe field validation: the encoder writes whatever it is given. */
int req_through_wire(xw_fixture_t *fx, const llk_xreq_t *r, const llk_xseg_wire_t *segs);
size_t enc_resp(xw_fixture_t *fx, uint32_t status, uint64_t total, const char *msg,
                const uint64_t *iovs, uint32_t niov);
int resp_through_wire(xw_fixture_t *fx, uint32_t status, uint64_t total, const char *msg,
                      const uint64_t *iovs, uint32_t niov);
/* The valid request's payload, copied to fx->payload; returns its length. */
size_t valid_req_payload(xw_fixture_t *fx);

#endif /* XFER_WIRE_FIXTURE_H */

/*
 * fuzz_xfer_wire.c - fuzz target for the data-stream frame codec
 * (core/xfer_wire.c).
 *
 * Each input is used twice:
 *  1. as one payload, handed to each of the three payload decoders (XREQ,
 *     XRESP, XDONE), so random bytes reach the payload checks without
 *     first having to spell a valid header;
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
 * Built with tests/fuzz/standalone_main.c (make fuzz-bins) or with
 * libFuzzer (make fuzz-libfuzzer). Seeds: tests/fuzz/corpus/xfer_wire/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "xfer_wire.h"

#define CHECK(cond)      \
    do {                 \
        if (!(cond))     \
            abort();     \
    } while (0)

#define XRESP_FIXED 18u
#define XRESP_MAX_PAYLOAD (XRESP_FIXED + LLK_XWIRE_MAX_MSG + LLK_XWIRE_MAX_SEGS * LLK_XWIRE_IOV_SIZE)
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
    CHECK(r.op >= LLK_XOP_READ && r.op <= LLK_XOP_SHM_WRITE);
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
    CHECK(len >= XRESP_FIXED);
    size_t mlen = ((size_t)p[12] << 8) | p[13];
    CHECK(mlen <= LLK_XWIRE_MAX_MSG);
    CHECK(strlen(r.msg) == mlen);
    for (size_t i = 0; i < mlen; i++)
        CHECK(r.msg[i] >= 0x20 && r.msg[i] <= 0x7e);
    CHECK(r.niov <= LLK_XWIRE_MAX_SEGS);
    CHECK(len == XRESP_FIXED + mlen + (size_t)r.niov * LLK_XWIRE_IOV_SIZE);
    CHECK(r.niov == 0 || r.status == LLMLINK_SUCCESS);
    CHECK(r.iovs == p + XRESP_FIXED + mlen);
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

static void fuzz_done(const uint8_t *p, size_t len, uint64_t req_id)
{
    uint32_t status = 0, again = 0;
    const char *why = NULL;
    if (llk_xwire_decode_done(p, len, &status, &why) != 0) {
        CHECK(why != NULL && why[0] != '\0');
        return;
    }
    CHECK(len == 4);
    size_t n = llk_xwire_encode_done(reencoded, sizeof reencoded, req_id, status);
    CHECK(n == LLK_XWIRE_HEADER_SIZE + len);
    const uint8_t *q = reencoded_payload(n, LLK_XMSG_DONE, req_id);
    CHECK(memcmp(q, p, len) == 0);
    CHECK(llk_xwire_decode_done(q, len, &again, &why) == 0);
    CHECK(again == status);
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
    on_copy(fuzz_done, data, size, 3);

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
            CHECK(h.length <= XRESP_MAX_PAYLOAD);
            on_copy(fuzz_resp, data + pos, len, h.req_id);
            break;
        case LLK_XMSG_DONE:
            CHECK(h.length == 4);
            on_copy(fuzz_done, data + pos, len, h.req_id);
            break;
        default: abort(); /* llk_xwire_read_header let an unknown type through */
        }
        pos += len;
    }
    return 0;
}

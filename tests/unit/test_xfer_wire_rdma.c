/*
 * test_xfer_wire_rdma.c - unit tests of the RDMA messages of the
 * data-stream codec (core/xfer_wire.c): XRDMA_SETUP, XRDMA_SETUP_OK,
 * XRESP_RDMA (the grant), XDONE with a generation, and the repair of a
 * rail (XRDMA_RAIL_RESET / _OK).
 *
 * What these decoders accept becomes QP numbers and remote addresses the
 * NIC acts on, so most tests refuse bad input; each refused case differs
 * from a valid one in the one field checked. Layouts are checked against
 * the hand-written frames below, not against the encoder's output.
 * Decoders run on exact-size heap copies (ASan catches reads past the end).
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
#include "transport/rdma_wire.h"
#include "transport/transport.h"
#include "xwire_decode_done.h"
#include "xfer/xfer_wire.h"

#define HDR LLK_XWIRE_HEADER_SIZE

/* XRDMA_SETUP, one rail: qpn 0x1234, psn 0xABCDEF, gid fe80::1, lid 7,
 * mtu 3 (1024), target ip 10.0.0.1 (IPv4-mapped). req_id 0x0102030405060708. */
static const uint8_t vec_setup[] = {
    0x4C, 0x4C, 0x4D, 0x44, 0x00, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00, 0x2E,
    0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
    0x00, 0x01,                                     /* nrails */
    0x00, 0x00, 0x12, 0x34, 0x00, 0xAB, 0xCD, 0xEF, /* qpn, psn */
    0xFE, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, /* gid */
    0x00, 0x07, 0x03, 0x00,                         /* lid, mtu, 0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x0A, 0x00, 0x00, 0x01, /* target */
};

/* XRDMA_SETUP_OK, SUCCESS, no message, one rail: qpn 0x5678, psn 0x112233,
 * gid ::ffff:10.0.0.2, lid 8, mtu 5 (4096). */
static const uint8_t vec_setup_ok[] = {
    0x4C, 0x4C, 0x4D, 0x44, 0x00, 0x01, 0x00, 0x05, 0x00, 0x00, 0x00, 0x24,
    0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, /* status, msg_len, nrails */
    0x00, 0x00, 0x56, 0x78, 0x00, 0x11, 0x22, 0x33,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x0A, 0x00, 0x00, 0x02,
    0x00, 0x08, 0x05, 0x00,
};

/* XRESP_RDMA: total 0x3000, generation 0x0000010000000002, two rails, one
 * region at 0x7F0000001000 of 0x3000 bytes, rkeys 0xAABBCCDD / 0x11223344. */
static const uint8_t vec_grant[] = {
    0x4C, 0x4C, 0x4D, 0x44, 0x00, 0x01, 0x00, 0x06, 0x00, 0x00, 0x00, 0x2E,
    0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
    0, 0, 0, 0, 0, 0, 0x30, 0x00,                   /* total */
    0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x02, /* generation */
    0x00, 0x02, 0x00, 0x00, 0x00, 0x01,             /* nrails, niov */
    0x00, 0x00, 0x7F, 0x00, 0x00, 0x00, 0x10, 0x00, /* addr */
    0, 0, 0, 0, 0, 0, 0x30, 0x00,                   /* len */
    0xAA, 0xBB, 0xCC, 0xDD, 0x11, 0x22, 0x33, 0x44, /* rkeys */
};

/* XDONE, SUCCESS, generation 0x0000010000000002. */
static const uint8_t vec_done_gen[] = {
    0x4C, 0x4C, 0x4D, 0x44, 0x00, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, 0x0C,
    0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x02,
};

#define REQ_ID 0x0102030405060708ull

static uint8_t *g_copy;

/* An exact-size copy of a vector's payload, after editing byte `at` to
 * `val` (at < 0: no edit); with `extra` bytes appended (0) or cut (<0). */
static const uint8_t *payload(const uint8_t *vec, size_t vec_len, long at, uint8_t val,
                              long extra, size_t *len)
{
    free(g_copy);
    size_t n = vec_len - HDR;
    size_t m = (size_t)((long)n + extra);
    g_copy = calloc(1, m ? m : 1);
    assert_non_null(g_copy);
    memcpy(g_copy, vec + HDR, m < n ? m : n);
    if (at >= 0 && (size_t)at < m)
        g_copy[at] = val;
    *len = m;
    return g_copy;
}

static void test_headers(void **state)
{
    (void)state;
    const uint8_t *vecs[] = {vec_setup, vec_setup_ok, vec_grant, vec_done_gen};
    const uint16_t types[] = {LLK_XMSG_RDMA_SETUP, LLK_XMSG_RDMA_SETUP_OK, LLK_XMSG_RESP_RDMA,
                              LLK_XMSG_DONE};
    for (int i = 0; i < 4; i++) {
        llk_xframe_header_t h;
        const char *why = NULL;
        assert_int_equal(llk_xwire_read_header(vecs[i], &h, &why), 0);
        assert_int_equal(h.type, types[i]);
        assert_int_equal(h.req_id, REQ_ID);
    }
    /* type 7 is not a message; XDONE of 8 bytes is neither form */
    uint8_t h7[HDR];
    memcpy(h7, vec_setup, HDR);
    h7[7] = 7;
    llk_xframe_header_t h;
    const char *why = NULL;
    assert_int_equal(llk_xwire_read_header(h7, &h, &why), -1);
    uint8_t d8[HDR];
    memcpy(d8, vec_done_gen, HDR);
    d8[11] = 8;
    assert_int_equal(llk_xwire_read_header(d8, &h, &why), -1);
    /* a setup larger than 4 rails cannot be announced */
    uint8_t big[HDR];
    memcpy(big, vec_setup, HDR);
    big[11] = (uint8_t)(2 + 5 * LLK_XWIRE_RAIL_REQ_SIZE);
    assert_int_equal(llk_xwire_read_header(big, &h, &why), -1);
}

static void test_setup_vector(void **state)
{
    (void)state;
    size_t len;
    const uint8_t *p = payload(vec_setup, sizeof vec_setup, -1, 0, 0, &len);
    llk_xrail_wire_t r[LLK_XWIRE_MAX_RAILS];
    uint16_t n = 0;
    const char *why = NULL;
    assert_int_equal(llk_xwire_decode_rdma_setup(p, len, r, &n, &why), 0);
    assert_int_equal(n, 1);
    assert_int_equal(r[0].qpn, 0x1234);
    assert_int_equal(r[0].psn, 0xABCDEF);
    assert_int_equal(r[0].gid[0], 0xFE);
    assert_int_equal(r[0].gid[15], 0x01);
    assert_int_equal(r[0].lid, 7);
    assert_int_equal(r[0].mtu, 3);
    assert_int_equal(r[0].target_ip[10], 0xFF);
    assert_int_equal(r[0].target_ip[12], 10);
    uint8_t out[sizeof vec_setup];
    assert_int_equal(llk_xwire_encode_rdma_setup(out, sizeof out, REQ_ID, r, 1), sizeof vec_setup);
    assert_memory_equal(out, vec_setup, sizeof vec_setup);
    /* one byte short of room: nothing */
    assert_int_equal(llk_xwire_encode_rdma_setup(out, sizeof out - 1, REQ_ID, r, 1), 0);
    assert_int_equal(llk_xwire_encode_rdma_setup(out, sizeof out, REQ_ID, r, 0), 0);
}

/* Payload offsets of the one-rail XRDMA_SETUP: nrails 0..1, qpn 2..5,
 * psn 6..9, gid 10..25, lid 26..27, mtu 28, READ depths 29, target 30..45. */
static void test_setup_refusals(void **state)
{
    (void)state;
    const struct {
        long at;
        uint8_t val;
        long extra;
        const char *what;
    } bad[] = {
        {1, 0, 0, "nrails 0"},
        {1, 5, 0, "nrails 5"},
        {1, 2, 0, "nrails 2 with one record"},
        {28, 0, 0, "mtu 0"},
        {28, 6, 0, "mtu 6"},
        {2, 0x01, 0, "qpn above 24 bits (0x01001234)"},
        {6, 0x01, 0, "psn above 24 bits (0x01ABCDEF)"},
        {-1, 0, -1, "truncated by one byte"},
        {-1, 0, 1, "one trailing byte"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len;
        const uint8_t *p = payload(vec_setup, sizeof vec_setup, bad[i].at, bad[i].val,
                                   bad[i].extra, &len);
        llk_xrail_wire_t r[LLK_XWIRE_MAX_RAILS];
        uint16_t n = 0;
        const char *why = NULL;
        if (llk_xwire_decode_rdma_setup(p, len, r, &n, &why) != -1)
            fail_msg("accepted: %s", bad[i].what);
        if (why == NULL || why[0] == '\0')
            fail_msg("refused without a reason: %s", bad[i].what);
    }
    /* qpn 0: bytes 2..5 all zero */
    size_t len;
    uint8_t *p = (uint8_t *)payload(vec_setup, sizeof vec_setup, 4, 0, 0, &len);
    p[5] = 0;
    llk_xrail_wire_t r[LLK_XWIRE_MAX_RAILS];
    uint16_t n;
    const char *why = NULL;
    assert_int_equal(llk_xwire_decode_rdma_setup(p, len, r, &n, &why), -1);
    /* the control: the unedited vector decodes */
    p = (uint8_t *)payload(vec_setup, sizeof vec_setup, -1, 0, 0, &len);
    assert_int_equal(llk_xwire_decode_rdma_setup(p, len, r, &n, &why), 0);
}

/* The byte after mtu (reserved, 0, before issue 13) carries the READ
 * depths: high nibble initiator, low nibble responder, v = 2^(v-1), 0 = not
 * advertised. An old peer's 0 decodes as "not advertised"; every value is
 * a depth; encoding rounds a depth down to a power of two. */
static void test_setup_read_depths(void **state)
{
    (void)state;
    size_t len;
    llk_xrail_wire_t r[LLK_XWIRE_MAX_RAILS];
    uint16_t n = 0;
    const char *why = NULL;
    /* an old peer's record: 0 */
    const uint8_t *p = payload(vec_setup, sizeof vec_setup, -1, 0, 0, &len);
    assert_int_equal(llk_xwire_decode_rdma_setup(p, len, r, &n, &why), 0);
    assert_int_equal(r[0].rd_init, 0);
    assert_int_equal(r[0].rd_dest, 0);
    /* 0x5 << 4 | 0x3: initiator 16, responder 4 */
    p = payload(vec_setup, sizeof vec_setup, 29, 0x53, 0, &len);
    assert_int_equal(llk_xwire_decode_rdma_setup(p, len, r, &n, &why), 0);
    assert_int_equal(r[0].rd_init, 16);
    assert_int_equal(r[0].rd_dest, 4);
    /* every value decodes: 0xFF is 2^14 both ways */
    p = payload(vec_setup, sizeof vec_setup, 29, 0xFF, 0, &len);
    assert_int_equal(llk_xwire_decode_rdma_setup(p, len, r, &n, &why), 0);
    assert_int_equal(r[0].rd_init, 16384);
    assert_int_equal(r[0].rd_dest, 16384);
    /* encoding: 16 and 4 give 0x53 at byte 29 of the payload; 12 rounds
     * down to 8 (never advertise more than is there) */
    r[0].rd_init = 16;
    r[0].rd_dest = 4;
    uint8_t out[sizeof vec_setup];
    assert_int_equal(llk_xwire_encode_rdma_setup(out, sizeof out, REQ_ID, r, 1), sizeof vec_setup);
    assert_int_equal(out[HDR + 29], 0x53);
    r[0].rd_init = 12;
    r[0].rd_dest = 1;
    assert_int_equal(llk_xwire_encode_rdma_setup(out, sizeof out, REQ_ID, r, 1), sizeof vec_setup);
    assert_int_equal(out[HDR + 29], 0x41);
    /* and back, through the XRDMA_SETUP_OK record too */
    llk_xrdma_setup_ok_t ok;
    memset(&ok, 0, sizeof ok);
    ok.nrails = 1;
    ok.rail[0] = r[0];
    ok.rail[0].rd_init = 2;
    ok.rail[0].rd_dest = 128;
    uint8_t buf[256];
    size_t sz = llk_xwire_encode_rdma_setup_ok(buf, sizeof buf, REQ_ID, &ok);
    assert_true(sz > HDR);
    llk_xrdma_setup_ok_t back;
    assert_int_equal(llk_xwire_decode_rdma_setup_ok(buf + HDR, sz - HDR, &back, &why), 0);
    assert_int_equal(back.rail[0].rd_init, 2);
    assert_int_equal(back.rail[0].rd_dest, 128);
}

/* Compatibility with llmlink 0.3 (issue 13): its decoder refuses a rail
 * record whose byte after mtu is set, so this side's rails go with the
 * byte 0 unless the peer announced LLK_EXT_RDMA_READ_DEPTH. Both cases,
 * through both records: without the announcement the frames are byte for
 * byte the 0.3 vectors (byte 0); with it the byte carries the depths. */
static void test_setup_read_depths_for_peer(void **state)
{
    (void)state;
    const char *why = NULL;
    uint16_t n = 0;
    llk_xrail_wire_t r[LLK_XWIRE_MAX_RAILS];
    const uint8_t *p;
    size_t len;
    p = payload(vec_setup, sizeof vec_setup, -1, 0, 0, &len);
    assert_int_equal(llk_xwire_decode_rdma_setup(p, len, r, &n, &why), 0);
    uint8_t out[sizeof vec_setup];
    /* a 0.3 peer: the depths are cleared, the frame is the 0.3 one */
    r[0].rd_init = 16;
    r[0].rd_dest = 4;
    llk_xwire_rails_for_peer(r, 1, false);
    assert_int_equal(r[0].rd_init, 0);
    assert_int_equal(r[0].rd_dest, 0);
    assert_int_equal(llk_xwire_encode_rdma_setup(out, sizeof out, REQ_ID, r, 1), sizeof vec_setup);
    assert_memory_equal(out, vec_setup, sizeof vec_setup);
    /* a peer that reads them: kept, and on the wire */
    r[0].rd_init = 16;
    r[0].rd_dest = 4;
    llk_xwire_rails_for_peer(r, 1, true);
    assert_int_equal(r[0].rd_init, 16);
    assert_int_equal(r[0].rd_dest, 4);
    assert_int_equal(llk_xwire_encode_rdma_setup(out, sizeof out, REQ_ID, r, 1), sizeof vec_setup);
    assert_int_equal(out[HDR + 29], 0x53);
    /* the answer's records alike, every rail */
    llk_xrdma_setup_ok_t ok;
    memset(&ok, 0, sizeof ok);
    p = payload(vec_setup_ok, sizeof vec_setup_ok, -1, 0, 0, &len);
    assert_int_equal(llk_xwire_decode_rdma_setup_ok(p, len, &ok, &why), 0);
    uint8_t buf[sizeof vec_setup_ok];
    ok.rail[0].rd_init = 8;
    ok.rail[0].rd_dest = 8;
    llk_xwire_rails_for_peer(ok.rail, ok.nrails, false);
    assert_int_equal(llk_xwire_encode_rdma_setup_ok(buf, sizeof buf, REQ_ID, &ok),
                     sizeof vec_setup_ok);
    assert_memory_equal(buf, vec_setup_ok, sizeof vec_setup_ok);
    llk_xrail_wire_t four[LLK_XWIRE_MAX_RAILS];
    for (uint16_t i = 0; i < LLK_XWIRE_MAX_RAILS; i++) {
        four[i] = r[0];
        four[i].rd_init = four[i].rd_dest = 32;
    }
    llk_xwire_rails_for_peer(four, LLK_XWIRE_MAX_RAILS, false);
    for (uint16_t i = 0; i < LLK_XWIRE_MAX_RAILS; i++) {
        assert_int_equal(four[i].rd_init, 0);
        assert_int_equal(four[i].rd_dest, 0);
    }
    ok.rail[0].rd_init = 8;
    ok.rail[0].rd_dest = 2;
    llk_xwire_rails_for_peer(ok.rail, ok.nrails, true);
    assert_int_equal(llk_xwire_encode_rdma_setup_ok(buf, sizeof buf, REQ_ID, &ok),
                     sizeof vec_setup_ok);
    assert_int_equal(buf[sizeof vec_setup_ok - 1], 0x42);
}

static void test_setup_ok(void **state)
{
    (void)state;
    size_t len;
    const uint8_t *p = payload(vec_setup_ok, sizeof vec_setup_ok, -1, 0, 0, &len);
    llk_xrdma_setup_ok_t m;
    const char *why = NULL;
    assert_int_equal(llk_xwire_decode_rdma_setup_ok(p, len, &m, &why), 0);
    assert_int_equal(m.status, 0);
    assert_string_equal(m.msg, "");
    assert_int_equal(m.nrails, 1);
    assert_int_equal(m.rail[0].qpn, 0x5678);
    assert_int_equal(m.rail[0].psn, 0x112233);
    assert_int_equal(m.rail[0].lid, 8);
    assert_int_equal(m.rail[0].mtu, 5);
    uint8_t out[sizeof vec_setup_ok];
    assert_int_equal(llk_xwire_encode_rdma_setup_ok(out, sizeof out, REQ_ID, &m),
                     sizeof vec_setup_ok);
    assert_memory_equal(out, vec_setup_ok, sizeof vec_setup_ok);

    /* a refusal carries its reason and no rail */
    llk_xrdma_setup_ok_t r = {.status = LLMLINK_LINK_FAILED, .nrails = 0};
    snprintf(r.msg, sizeof r.msg, "no device");
    uint8_t f[128];
    size_t n = llk_xwire_encode_rdma_setup_ok(f, sizeof f, 9, &r);
    assert_int_equal(n, HDR + 4 + 2 + 9 + 2);
    llk_xrdma_setup_ok_t back;
    assert_int_equal(llk_xwire_decode_rdma_setup_ok(f + HDR, n - HDR, &back, &why), 0);
    assert_int_equal(back.status, LLMLINK_LINK_FAILED);
    assert_string_equal(back.msg, "no device");
    /* neither a refusal with rails nor a success without is encoded or accepted */
    r.nrails = 1;
    assert_int_equal(llk_xwire_encode_rdma_setup_ok(f, sizeof f, 9, &r), 0);
    p = payload(vec_setup_ok, sizeof vec_setup_ok, 3, 9, 0, &len); /* status 9 with a rail */
    assert_int_equal(llk_xwire_decode_rdma_setup_ok(p, len, &m, &why), -1);
    p = payload(vec_setup_ok, sizeof vec_setup_ok, 7, 0, -LLK_XWIRE_RAIL_ACK_SIZE, &len);
    assert_int_equal(llk_xwire_decode_rdma_setup_ok(p, len, &m, &why), -1); /* success, 0 rails */
    p = payload(vec_setup_ok, sizeof vec_setup_ok, 7, 5, 0, &len); /* 5 rails */
    assert_int_equal(llk_xwire_decode_rdma_setup_ok(p, len, &m, &why), -1);
    p = payload(vec_setup_ok, sizeof vec_setup_ok, 5, 1, 0, &len); /* message longer than left */
    assert_int_equal(llk_xwire_decode_rdma_setup_ok(p, len, &m, &why), -1);
    p = payload(vec_setup_ok, sizeof vec_setup_ok, 8 + 26, 0, 0, &len); /* rail mtu 0 */
    assert_int_equal(llk_xwire_decode_rdma_setup_ok(p, len, &m, &why), -1);
}

static void test_grant(void **state)
{
    (void)state;
    size_t len;
    const uint8_t *p = payload(vec_grant, sizeof vec_grant, -1, 0, 0, &len);
    llk_xgrant_t g;
    const char *why = NULL;
    assert_int_equal(llk_xwire_decode_grant(p, len, &g, &why), 0);
    assert_int_equal(g.total_bytes, 0x3000);
    assert_int_equal(g.generation, 0x0000010000000002ull);
    assert_int_equal(g.nrails, 2);
    assert_int_equal(g.niov, 1);
    uint64_t addr, ilen;
    uint32_t rkey;
    llk_xwire_grant_at(&g, 0, 0, &addr, &ilen, &rkey);
    assert_int_equal(addr, 0x7F0000001000ull);
    assert_int_equal(ilen, 0x3000);
    assert_int_equal(rkey, 0xAABBCCDDu);
    llk_xwire_grant_at(&g, 0, 1, &addr, &ilen, &rkey);
    assert_int_equal(rkey, 0x11223344u);
    uint64_t al[2] = {0x7F0000001000ull, 0x3000};
    uint32_t keys[2] = {0xAABBCCDDu, 0x11223344u};
    uint8_t out[sizeof vec_grant];
    assert_int_equal(llk_xwire_grant_size(2, 1), sizeof vec_grant);
    assert_int_equal(llk_xwire_encode_grant(out, sizeof out, REQ_ID, 0x3000,
                                            0x0000010000000002ull, 2, al, keys, 1),
                     sizeof vec_grant);
    assert_memory_equal(out, vec_grant, sizeof vec_grant);

    struct {
        long at;
        uint8_t val;
        const char *what;
    } bad[] = {
        {7, 0x01, "total differs from the regions"},
        {15, 0x00, "generation 0 (with byte 13 zeroed below)"},
        {17, 0x00, "nrails 0"},
        {17, 0x05, "nrails 5"},
        {21, 0x00, "niov 0"},
        {21, 0x02, "niov 2 with one record"},
        {36, 0x00, "empty region (len 0 with total fixed below)"},
        {22, 0xFF, "region end overflows"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t *q = (uint8_t *)payload(vec_grant, sizeof vec_grant, bad[i].at, bad[i].val, 0,
                                        &len);
        if (bad[i].at == 15)
            q[10] = 0; /* generation bytes 8..15 all zero */
        if (bad[i].at == 36) {
            q[37] = 0;
            q[6] = 0; /* total 0 too, so only the empty region is wrong */
        }
        if (bad[i].at == 22)
            for (int k = 22; k < 30; k++)
                q[k] = 0xFF;
        if (llk_xwire_decode_grant(q, len, &g, &why) != -1)
            fail_msg("accepted: %s", bad[i].what);
        assert_non_null(why);
    }
    p = payload(vec_grant, sizeof vec_grant, -1, 0, 1, &len);
    assert_int_equal(llk_xwire_decode_grant(p, len, &g, &why), -1);
    p = payload(vec_grant, sizeof vec_grant, -1, 0, -1, &len);
    assert_int_equal(llk_xwire_decode_grant(p, len, &g, &why), -1);
}

static void test_done_gen(void **state)
{
    (void)state;
    size_t len;
    const uint8_t *p = payload(vec_done_gen, sizeof vec_done_gen, -1, 0, 0, &len);
    uint32_t status = 1;
    uint64_t gen = 0;
    bool has = false;
    const char *why = NULL;
    assert_int_equal(llk_xwire_decode_done_gen(p, len, &status, &gen, &has, &why), 0);
    assert_int_equal(status, 0);
    assert_true(has);
    assert_int_equal(gen, 0x0000010000000002ull);
    uint8_t out[sizeof vec_done_gen];
    assert_int_equal(llk_xwire_encode_done_gen(out, sizeof out, REQ_ID, 0, gen),
                     sizeof vec_done_gen);
    assert_memory_equal(out, vec_done_gen, sizeof vec_done_gen);
    /* the shm form (4 bytes) has no generation */
    p = payload(vec_done_gen, sizeof vec_done_gen, -1, 0, -8, &len);
    assert_int_equal(llk_xwire_decode_done_gen(p, len, &status, &gen, &has, &why), 0);
    assert_false(has);
    assert_int_equal(gen, 0);
    /* the plain decoder refuses a generation it does not expect */
    p = payload(vec_done_gen, sizeof vec_done_gen, -1, 0, 0, &len);
    assert_int_equal(llk_xwire_decode_done(p, len, &status, &why), -1);
    /* 8 bytes is neither */
    p = payload(vec_done_gen, sizeof vec_done_gen, -1, 0, -4, &len);
    assert_int_equal(llk_xwire_decode_done_gen(p, len, &status, &gen, &has, &why), -1);
}

/* RDMA ops are XREQ ops 5 and 6; 7 is not. */
static void test_rdma_ops(void **state)
{
    (void)state;
    llk_xreq_t r;
    memset(&r, 0, sizeof r);
    r.kind = LLK_XKIND_BLOCKS;
    r.key.type = LLMLINK_KEY_BLOCKS;
    r.unit_bytes = 64;
    r.num_tensors_hint = 1;
    r.bound_end = 64;
    r.nseg = 1;
    llk_xseg_wire_t seg = {0, 0, 64};
    uint8_t f[256];
    for (uint8_t op = LLK_XOP_RDMA_READ; op <= LLK_XOP_RDMA_WRITE + 1; op++) {
        r.op = op;
        size_t n = llk_xwire_encode_req(f, sizeof f, 1, &r, &seg);
        assert_true(n > HDR);
        llk_xreq_t back;
        const char *why = NULL;
        int rc = llk_xwire_decode_req(f + HDR, n - HDR, &back, &why);
        assert_int_equal(rc, op <= LLK_XOP_RDMA_WRITE ? 0 : -1);
    }
}

/* ---- encoders refuse small buffers ---------------------------------------- */

/* The messages of the vectors above, decoded once, for the encoders. */
typedef struct rdma_msgs {
    llk_xrail_wire_t rails[LLK_XWIRE_MAX_RAILS];
    uint16_t nrails;
    llk_xrdma_setup_ok_t ok;
    llk_xrdma_setup_ok_t refused;
} rdma_msgs_t;

static size_t enc_cap_setup(uint8_t *out, size_t cap, void *ctx)
{
    const rdma_msgs_t *m = ctx;
    return llk_xwire_encode_rdma_setup(out, cap, REQ_ID, m->rails, m->nrails);
}
static size_t enc_cap_setup_ok(uint8_t *out, size_t cap, void *ctx)
{
    const rdma_msgs_t *m = ctx;
    return llk_xwire_encode_rdma_setup_ok(out, cap, REQ_ID, &m->ok);
}
static size_t enc_cap_setup_refused(uint8_t *out, size_t cap, void *ctx)
{
    const rdma_msgs_t *m = ctx;
    return llk_xwire_encode_rdma_setup_ok(out, cap, REQ_ID, &m->refused);
}
static size_t enc_cap_grant(uint8_t *out, size_t cap, void *ctx)
{
    (void)ctx;
    static const uint64_t al[2] = {0x7F0000001000ull, 0x3000};
    static const uint32_t keys[2] = {0xAABBCCDDu, 0x11223344u};
    return llk_xwire_encode_grant(out, cap, REQ_ID, 0x3000, 0x0000010000000002ull, 2, al, keys,
                                  1);
}
static size_t enc_cap_done_gen(uint8_t *out, size_t cap, void *ctx)
{
    (void)ctx;
    return llk_xwire_encode_done_gen(out, cap, REQ_ID, 0, 0x0000010000000002ull);
}

/* Below its frame size every RDMA encoder returns 0 and writes nothing at or
 * past out[cap]; the sizes are the vectors'. */
static void test_rdma_encoders_refuse_small_buffers(void **state)
{
    (void)state;
    rdma_msgs_t m;
    memset(&m, 0, sizeof m);
    size_t len;
    const char *why = NULL;
    const uint8_t *p = payload(vec_setup, sizeof vec_setup, -1, 0, 0, &len);
    assert_int_equal(llk_xwire_decode_rdma_setup(p, len, m.rails, &m.nrails, &why), 0);
    p = payload(vec_setup_ok, sizeof vec_setup_ok, -1, 0, 0, &len);
    assert_int_equal(llk_xwire_decode_rdma_setup_ok(p, len, &m.ok, &why), 0);
    m.refused.status = LLMLINK_LINK_FAILED;
    snprintf(m.refused.msg, sizeof m.refused.msg, "no device");

    static const struct {
        const char *what;
        codec_encode_fn enc;
        size_t size;
    } cases[] = {
        {"XRDMA_SETUP", enc_cap_setup, sizeof vec_setup},
        {"XRDMA_SETUP_OK", enc_cap_setup_ok, sizeof vec_setup_ok},
        {"XRDMA_SETUP_OK refused", enc_cap_setup_refused, HDR + 4 + 2 + 9 + 2},
        {"XRESP_RDMA", enc_cap_grant, sizeof vec_grant},
        {"XDONE gen", enc_cap_done_gen, sizeof vec_done_gen},
    };
    uint8_t buf[256];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(codec_check_capacity(cases[i].what, cases[i].enc, &m, buf, sizeof buf),
                         cases[i].size);
}

/* XRDMA_RAIL_RESET: rail 1, the record of vec_setup (qpn 0x1234, psn
 * 0xABCDEF, gid fe80::1, lid 7, mtu 3, READ depths 0, target 10.0.0.1). */
static const uint8_t vec_rail_reset[] = {
    0x4C, 0x4C, 0x4D, 0x44, 0x00, 0x01, 0x00, 0x09, 0x00, 0x00, 0x00, 0x2E,
    0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
    0x00, 0x01,                                     /* rail */
    0x00, 0x00, 0x12, 0x34, 0x00, 0xAB, 0xCD, 0xEF, /* qpn, psn */
    0xFE, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
    0x00, 0x07, 0x03, 0x00,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x0A, 0x00, 0x00, 0x01,
};

/* XRDMA_RAIL_RESET_OK, SUCCESS, rail 1, message "ok", the record of
 * vec_setup_ok (qpn 0x5678, psn 0x112233, gid ::ffff:10.0.0.2, lid 8, mtu 5). */
static const uint8_t vec_rail_reset_ok[] = {
    0x4C, 0x4C, 0x4D, 0x44, 0x00, 0x01, 0x00, 0x0A, 0x00, 0x00, 0x00, 0x26,
    0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 'o', 'k', /* status, rail, msg */
    0x00, 0x00, 0x56, 0x78, 0x00, 0x11, 0x22, 0x33,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x0A, 0x00, 0x00, 0x02,
    0x00, 0x08, 0x05, 0x00,
};

static void test_rail_reset(void **state)
{
    (void)state;
    llk_xframe_header_t h;
    const char *why = NULL;
    assert_int_equal(llk_xwire_read_header(vec_rail_reset, &h, &why), 0);
    assert_int_equal(h.type, LLK_XMSG_RDMA_RAIL_RESET);
    size_t len;
    const uint8_t *p = payload(vec_rail_reset, sizeof vec_rail_reset, -1, 0, 0, &len);
    uint16_t rail = 99;
    llk_xrail_wire_t r;
    assert_int_equal(llk_xwire_decode_rail_reset(p, len, &rail, &r, &why), 0);
    assert_int_equal(rail, 1);
    assert_int_equal(r.qpn, 0x1234);
    assert_int_equal(r.psn, 0xABCDEF);
    static const uint8_t gid[16] = {0xFE, 0x80, [15] = 1};
    assert_memory_equal(r.gid, gid, 16);
    assert_int_equal(r.lid, 7);
    assert_int_equal(r.mtu, 3);
    assert_int_equal(r.rd_init, 0);
    assert_int_equal(r.rd_dest, 0);
    static const uint8_t tip[16] = {[10] = 0xFF, [11] = 0xFF, [12] = 10, [15] = 1};
    assert_memory_equal(r.target_ip, tip, 16);
    uint8_t out[sizeof vec_rail_reset];
    assert_int_equal(llk_xwire_encode_rail_reset(out, sizeof out, REQ_ID, 1, &r),
                     sizeof vec_rail_reset);
    assert_memory_equal(out, vec_rail_reset, sizeof vec_rail_reset);
    /* the encoder: a rail out of range, a buffer one byte short */
    assert_int_equal(llk_xwire_encode_rail_reset(out, sizeof out, REQ_ID, 4, &r), 0);
    assert_int_equal(llk_xwire_encode_rail_reset(out, sizeof out - 1, REQ_ID, 1, &r), 0);

    /* refusals, one field each */
    p = payload(vec_rail_reset, sizeof vec_rail_reset, 1, 4, 0, &len); /* rail 4 */
    assert_int_equal(llk_xwire_decode_rail_reset(p, len, &rail, &r, &why), -1);
    p = payload(vec_rail_reset, sizeof vec_rail_reset, 0, 1, 0, &len); /* rail 257 */
    assert_int_equal(llk_xwire_decode_rail_reset(p, len, &rail, &r, &why), -1);
    p = payload(vec_rail_reset, sizeof vec_rail_reset, -1, 0, -1, &len); /* truncated */
    assert_int_equal(llk_xwire_decode_rail_reset(p, len, &rail, &r, &why), -1);
    p = payload(vec_rail_reset, sizeof vec_rail_reset, -1, 0, 1, &len); /* trailing byte */
    assert_int_equal(llk_xwire_decode_rail_reset(p, len, &rail, &r, &why), -1);
    p = payload(vec_rail_reset, sizeof vec_rail_reset, 2 + 26, 0, 0, &len); /* mtu 0 */
    assert_int_equal(llk_xwire_decode_rail_reset(p, len, &rail, &r, &why), -1);
    p = payload(vec_rail_reset, sizeof vec_rail_reset, 2 + 26, 6, 0, &len); /* mtu 6 */
    assert_int_equal(llk_xwire_decode_rail_reset(p, len, &rail, &r, &why), -1);
    p = payload(vec_rail_reset, sizeof vec_rail_reset, 2 + 3, 0, 0, &len);
    uint8_t *q = g_copy;
    q[2 + 2] = 0; /* qpn 0 */
    assert_int_equal(llk_xwire_decode_rail_reset(p, len, &rail, &r, &why), -1);
    p = payload(vec_rail_reset, sizeof vec_rail_reset, 2, 1, 0, &len); /* qpn over 24 bits */
    assert_int_equal(llk_xwire_decode_rail_reset(p, len, &rail, &r, &why), -1);
    p = payload(vec_rail_reset, sizeof vec_rail_reset, 2 + 4, 1, 0, &len); /* psn over 24 bits */
    assert_int_equal(llk_xwire_decode_rail_reset(p, len, &rail, &r, &why), -1);
    /* the header: exactly 46 bytes */
    uint8_t hb[HDR];
    memcpy(hb, vec_rail_reset, HDR);
    hb[11] = 45;
    assert_int_equal(llk_xwire_read_header(hb, &h, &why), -1);
    hb[11] = 47;
    assert_int_equal(llk_xwire_read_header(hb, &h, &why), -1);
}

static void test_rail_reset_ok(void **state)
{
    (void)state;
    llk_xframe_header_t h;
    const char *why = NULL;
    assert_int_equal(llk_xwire_read_header(vec_rail_reset_ok, &h, &why), 0);
    assert_int_equal(h.type, LLK_XMSG_RDMA_RAIL_RESET_OK);
    size_t len;
    const uint8_t *p = payload(vec_rail_reset_ok, sizeof vec_rail_reset_ok, -1, 0, 0, &len);
    llk_xrail_reset_ok_t m;
    assert_int_equal(llk_xwire_decode_rail_reset_ok(p, len, &m, &why), 0);
    assert_int_equal(m.status, 0);
    assert_int_equal(m.rail, 1);
    assert_string_equal(m.msg, "ok");
    assert_int_equal(m.rec.qpn, 0x5678);
    assert_int_equal(m.rec.psn, 0x112233);
    static const uint8_t gid[16] = {[10] = 0xFF, [11] = 0xFF, [12] = 10, [15] = 2};
    assert_memory_equal(m.rec.gid, gid, 16);
    assert_int_equal(m.rec.lid, 8);
    assert_int_equal(m.rec.mtu, 5);
    uint8_t out[sizeof vec_rail_reset_ok];
    assert_int_equal(llk_xwire_encode_rail_reset_ok(out, sizeof out, REQ_ID, &m),
                     sizeof vec_rail_reset_ok);
    assert_memory_equal(out, vec_rail_reset_ok, sizeof vec_rail_reset_ok);
    assert_int_equal(llk_xwire_encode_rail_reset_ok(out, sizeof out - 1, REQ_ID, &m), 0);
    m.rail = 4;
    assert_int_equal(llk_xwire_encode_rail_reset_ok(out, sizeof out, REQ_ID, &m), 0);

    /* a refusal: its reason, no record */
    llk_xrail_reset_ok_t r = {.status = LLMLINK_LINK_FAILED, .rail = 2};
    snprintf(r.msg, sizeof r.msg, "port down");
    uint8_t f[128];
    size_t n = llk_xwire_encode_rail_reset_ok(f, sizeof f, 9, &r);
    assert_int_equal(n, HDR + 4 + 2 + 2 + 9);
    assert_int_equal(llk_xwire_read_header(f, &h, &why), 0);
    llk_xrail_reset_ok_t back;
    assert_int_equal(llk_xwire_decode_rail_reset_ok(f + HDR, n - HDR, &back, &why), 0);
    assert_int_equal(back.status, LLMLINK_LINK_FAILED);
    assert_int_equal(back.rail, 2);
    assert_string_equal(back.msg, "port down");
    assert_int_equal(back.rec.qpn, 0);

    /* refusals, one field each */
    p = payload(vec_rail_reset_ok, sizeof vec_rail_reset_ok, 3, 9, 0, &len); /* refusal + rail */
    assert_int_equal(llk_xwire_decode_rail_reset_ok(p, len, &m, &why), -1);
    p = payload(vec_rail_reset_ok, sizeof vec_rail_reset_ok, -1, 0, -LLK_XWIRE_RAIL_ACK_SIZE,
                &len); /* success without a record */
    assert_int_equal(llk_xwire_decode_rail_reset_ok(p, len, &m, &why), -1);
    p = payload(vec_rail_reset_ok, sizeof vec_rail_reset_ok, -1, 0, 1, &len); /* trailing */
    assert_int_equal(llk_xwire_decode_rail_reset_ok(p, len, &m, &why), -1);
    p = payload(vec_rail_reset_ok, sizeof vec_rail_reset_ok, 5, 4, 0, &len); /* rail 4 */
    assert_int_equal(llk_xwire_decode_rail_reset_ok(p, len, &m, &why), -1);
    p = payload(vec_rail_reset_ok, sizeof vec_rail_reset_ok, 7, 200, 0, &len); /* msg > frame */
    assert_int_equal(llk_xwire_decode_rail_reset_ok(p, len, &m, &why), -1);
    p = payload(vec_rail_reset_ok, sizeof vec_rail_reset_ok, 6, 1, 0, &len); /* msg > 256 */
    assert_int_equal(llk_xwire_decode_rail_reset_ok(p, len, &m, &why), -1);
    p = payload(vec_rail_reset_ok, sizeof vec_rail_reset_ok, 10 + 26, 0, 0, &len); /* mtu 0 */
    assert_int_equal(llk_xwire_decode_rail_reset_ok(p, len, &m, &why), -1);
    p = payload(vec_rail_reset_ok, sizeof vec_rail_reset_ok, -1, 0, -3, &len); /* truncated */
    assert_int_equal(llk_xwire_decode_rail_reset_ok(p, len, &m, &why), -1);
    /* the header: no more than status, rail, the longest message and a record */
    uint8_t hb[HDR];
    memcpy(hb, vec_rail_reset_ok, HDR);
    hb[10] = 0x01;
    hb[11] = (uint8_t)(4 + 2 + 2 + 256 + 28 - 256); /* 0x124: the maximum */
    assert_int_equal(llk_xwire_read_header(hb, &h, &why), 0);
    hb[11]++;
    assert_int_equal(llk_xwire_read_header(hb, &h, &why), -1);
}

static int teardown(void **state)
{
    (void)state;
    free(g_copy);
    g_copy = NULL;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers),
        cmocka_unit_test_teardown(test_setup_vector, teardown),
        cmocka_unit_test_teardown(test_setup_read_depths, teardown),
        cmocka_unit_test_teardown(test_setup_read_depths_for_peer, teardown),
        cmocka_unit_test_teardown(test_setup_refusals, teardown),
        cmocka_unit_test_teardown(test_setup_ok, teardown),
        cmocka_unit_test_teardown(test_grant, teardown),
        cmocka_unit_test_teardown(test_done_gen, teardown),
        cmocka_unit_test(test_rdma_ops),
        cmocka_unit_test_teardown(test_rdma_encoders_refuse_small_buffers, teardown),
        cmocka_unit_test_teardown(test_rail_reset, teardown),
        cmocka_unit_test_teardown(test_rail_reset_ok, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * fuzz_rdma_setup.c - fuzz target for the RDMA setup exchange as each side
 * takes it, without a device: the owner's reading of a client's
 * XRDMA_SETUP (llk_rdma_setup_read: decode + the 0.3 rule) and the local
 * address each rail then binds (llk_rdma_setup_targets), the client's
 * reading of XRDMA_SETUP_OK (llk_rdma_setup_ok_read), and what a rail
 * takes from the peer's record when it connects (rdma_plan.h: the path MTU
 * and the READ depth), i.e. everything rdma.c / rdma_verbs_link.c do with
 * the peer's bytes before a verbs call.
 *
 * The input: one configuration byte (which side, the 0.3 rule, this side's
 * MTU, READ depth and llmlink.RdmaMtu cap), then the payload, raw or built
 * from rails with fields from the input (so that valid setups are common).
 * Checked:
 *  - a setup that is read has 1..LLK_XWIRE_MAX_RAILS rails, each with a QP
 *    number in 1..2^24-1, a PSN below 2^24, an MTU 1..5, READ depths that
 *    are 0 or powers of two, none under the 0.3 rule; re-encoding it gives
 *    the same payload (nothing is taken that is not on the wire);
 *  - every rail binds an IPv4 or IPv6 address, the stream's own when the
 *    target is zero;
 *  - an XRDMA_SETUP_OK is read only with rails exactly when it says
 *    SUCCESS, and its message is printable;
 *  - the path MTU of a rail is 0 (refused) or at most both sides' and the
 *    cap; its initiator READ depth is at least 1, at most this side's and
 *    at most what the peer accepts (when it said).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "llmlink.h"
#include "transport/rdma_plan.h"
#include "transport/rdma_wire.h"
#include "xfer/xfer_wire.h"

#define CHECK(cond)      \
    do {                 \
        if (!(cond))     \
            abort();     \
    } while (0)

typedef struct in_s {
    const uint8_t *p;
    size_t n, pos;
} in_t;

static uint8_t u8(in_t *in)
{
    return in->pos < in->n ? in->p[in->pos++] : 0;
}

static uint32_t u32(in_t *in)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = v << 8 | u8(in);
    return v;
}

static uint8_t frame[LLK_XWIRE_HEADER_SIZE + 16 + LLK_XWIRE_MAX_MSG +
                     LLK_XWIRE_MAX_RAILS * LLK_XWIRE_RAIL_REQ_SIZE];
static uint8_t again[sizeof frame];

static bool pow2_or_0(uint32_t v)
{
    return (v & (v - 1)) == 0;
}

static void check_rail(const llk_xrail_wire_t *r, bool legacy)
{
    CHECK(r->qpn >= 1 && r->qpn <= 0xFFFFFFu);
    CHECK(r->psn <= 0xFFFFFFu);
    CHECK(r->mtu >= 1 && r->mtu <= 5);
    CHECK(pow2_or_0(r->rd_init) && pow2_or_0(r->rd_dest));
    if (legacy)
        CHECK(r->rd_init == 0 && r->rd_dest == 0);
}

/* What a rail of this side takes from the peer's record when it connects
 * (rdma_verbs_link.c rail_connect). */
static void check_connect(const llk_xrail_wire_t *rem, uint8_t local_mtu, uint32_t cap,
                          uint32_t ours)
{
    uint8_t mtu = llk_rdma_mtu_negotiate(local_mtu, rem->mtu, cap);
    if (mtu) {
        CHECK(mtu >= 1 && mtu <= 5 && mtu <= local_mtu && mtu <= rem->mtu);
        if (cap)
            CHECK(llk_rdma_mtu_bytes(mtu) <= cap || mtu == 1);
    }
    uint32_t rd = llk_rdma_rd_initiator(ours, rem->rd_dest);
    CHECK(rd >= 1);
    if (ours)
        CHECK(rd <= ours);
    if (rem->rd_dest)
        CHECK(rd <= rem->rd_dest);
}

/* A rail with fields from the input, usually valid. */
static void build_rail(in_t *in, llk_xrail_wire_t *r)
{
    memset(r, 0, sizeof *r);
    uint8_t f = u8(in);
    r->qpn = f & 0x80 ? u32(in) : 1u + u8(in);
    r->psn = f & 0x40 ? u32(in) : u8(in);
    r->mtu = f & 0x20 ? u8(in) : 1 + u8(in) % 5;
    r->lid = u8(in);
    r->rd_init = (uint16_t)(u8(in) % 20);
    r->rd_dest = (uint16_t)(u8(in) % 20);
    uint8_t t = u8(in) % 3; /* target: zero, IPv4, IPv6 */
    if (t == 1) {
        r->target_ip[10] = r->target_ip[11] = 0xff;
        r->target_ip[12] = 127;
        r->target_ip[15] = u8(in);
    } else if (t == 2) {
        r->target_ip[0] = 0xfd;
        r->target_ip[15] = u8(in);
    }
    r->gid[15] = u8(in);
}

static void server_side(in_t *in, bool legacy, uint8_t local_mtu, uint32_t cap, uint32_t ours)
{
    size_t len;
    const uint8_t *payload;
    if (u8(in) & 1) {
        len = in->n - in->pos;
        payload = in->p + in->pos;
    } else {
        llk_xrail_wire_t rails[LLK_XWIRE_MAX_RAILS];
        uint16_t n = 1 + u8(in) % LLK_XWIRE_MAX_RAILS;
        for (uint16_t i = 0; i < n; i++)
            build_rail(in, &rails[i]);
        len = llk_xwire_encode_rdma_setup(frame, sizeof frame, 1, rails, n);
        if (len == 0)
            return;
        len -= LLK_XWIRE_HEADER_SIZE;
        payload = frame + LLK_XWIRE_HEADER_SIZE;
    }
    /* exact-size copy: a read past the end is caught */
    uint8_t *p = malloc(len ? len : 1);
    CHECK(p != NULL);
    memcpy(p, payload, len);
    llk_xrail_wire_t rem[LLK_XWIRE_MAX_RAILS];
    uint16_t n = 0;
    const char *why = NULL;
    if (llk_rdma_setup_read(p, len, legacy, rem, &n, &why) != 0) {
        CHECK(why != NULL);
        if (getenv("FZ_TRACE"))
            fprintf(stderr, "fuzz trace: XRDMA_SETUP refused: %s\n", why);
        free(p);
        return;
    }
    CHECK(n >= 1 && n <= LLK_XWIRE_MAX_RAILS);
    if (getenv("FZ_TRACE"))
        fprintf(stderr, "fuzz trace: XRDMA_SETUP read, %u rails\n", n);
    for (uint16_t i = 0; i < n; i++)
        check_rail(&rem[i], legacy);
    /* Canonical: the depths travel as nibbles of powers of two, so the
     * decoded rails encode back to the same payload. */
    size_t m = llk_xwire_encode_rdma_setup(again, sizeof again, 1, rem, n);
    CHECK(m == LLK_XWIRE_HEADER_SIZE + len);
    CHECK(memcmp(again + LLK_XWIRE_HEADER_SIZE, p, len) == 0);

    struct sockaddr_storage local, ips[LLK_XWIRE_MAX_RAILS];
    memset(&local, 0, sizeof local);
    struct sockaddr_in *lin = (struct sockaddr_in *)&local;
    lin->sin_family = AF_INET;
    lin->sin_addr.s_addr = htonl(0x7f000001u);
    llk_rdma_setup_targets(rem, n, &local, ips);
    static const uint8_t zero[16];
    for (uint16_t i = 0; i < n; i++) {
        CHECK(ips[i].ss_family == AF_INET || ips[i].ss_family == AF_INET6);
        if (!memcmp(rem[i].target_ip, zero, 16))
            CHECK(!memcmp(&ips[i], &local, sizeof local));
        check_connect(&rem[i], local_mtu, cap, ours);
    }
    free(p);
}

static void client_side(in_t *in, bool legacy, uint8_t local_mtu, uint32_t cap, uint32_t ours)
{
    size_t len;
    const uint8_t *payload;
    if (u8(in) & 1) {
        len = in->n - in->pos;
        payload = in->p + in->pos;
    } else {
        llk_xrdma_setup_ok_t ok;
        memset(&ok, 0, sizeof ok);
        ok.status = u8(in) & 1 ? 0 : LLMLINK_FEATURE_NOT_ENABLED;
        ok.nrails = ok.status ? 0 : 1 + u8(in) % LLK_XWIRE_MAX_RAILS;
        for (uint16_t i = 0; i < ok.nrails; i++)
            build_rail(in, &ok.rail[i]);
        if (ok.status)
            snprintf(ok.msg, sizeof ok.msg, "refused %u", u8(in));
        len = llk_xwire_encode_rdma_setup_ok(frame, sizeof frame, 1, &ok);
        if (len == 0)
            return;
        len -= LLK_XWIRE_HEADER_SIZE;
        payload = frame + LLK_XWIRE_HEADER_SIZE;
    }
    uint8_t *p = malloc(len ? len : 1);
    CHECK(p != NULL);
    memcpy(p, payload, len);
    llk_xrdma_setup_ok_t ok;
    const char *why = NULL;
    if (llk_rdma_setup_ok_read(p, len, legacy, &ok, &why) != 0) {
        CHECK(why != NULL);
        if (getenv("FZ_TRACE"))
            fprintf(stderr, "fuzz trace: XRDMA_SETUP_OK refused: %s\n", why);
        free(p);
        return;
    }
    if (getenv("FZ_TRACE"))
        fprintf(stderr, "fuzz trace: XRDMA_SETUP_OK read, status 0x%x, %u rails\n", ok.status,
                ok.nrails);
    CHECK((ok.status == LLMLINK_SUCCESS) == (ok.nrails > 0));
    CHECK(ok.nrails <= LLK_XWIRE_MAX_RAILS);
    CHECK(strlen(ok.msg) <= LLK_XWIRE_MAX_MSG);
    for (const char *c = ok.msg; *c; c++)
        CHECK(*c >= 0x20 && *c <= 0x7e);
    for (uint16_t i = 0; i < ok.nrails; i++) {
        check_rail(&ok.rail[i], legacy);
        check_connect(&ok.rail[i], local_mtu, cap, ours);
    }
    free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    in_t in = {data, size, 0};
    uint8_t cfg = u8(&in), cfg2 = u8(&in);
    bool legacy = cfg & 2;
    uint8_t local_mtu = 1 + (cfg >> 2) % 5;
    static const uint32_t caps[] = {0, 256, 512, 1024, 2048, 4096, 1000, 100000};
    uint32_t cap = caps[(cfg >> 5) & 7];
    uint32_t ours = llk_rdma_rd_depth(cfg2 & 0xF);
    if (cfg & 1)
        client_side(&in, legacy, local_mtu, cap, ours);
    else
        server_side(&in, legacy, local_mtu, cap, ours);
    return 0;
}

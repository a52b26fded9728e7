/* transport/rdma_wire.c - the RDMA transport's own data-stream messages
 * (rdma_wire.h): XRDMA_SETUP / XRDMA_SETUP_OK and the XRESP_RDMA grant.
 * Frames and their limits are xfer_wire.h's. */
#include "transport/rdma_wire.h"

#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "base/bytes.h"
#include "transport/rdma_plan.h"
#include "xfer/xfer_wire_codec.h"

/* ibv_mtu: IBV_MTU_256 (1) .. IBV_MTU_4096 (5). */
#define XMTU_MIN 1u
#define XMTU_MAX 5u

/* ---- setup ------------------------------------------------------------------ */

static void put_rail(wbuf_t *w, const llk_xrail_wire_t *r, bool with_target)
{
    put_u32(w, r->qpn);
    put_u32(w, r->psn);
    put_bytes(w, r->gid, sizeof r->gid);
    put_u16(w, r->lid);
    put_u8(w, r->mtu);
    put_u8(w, (uint8_t)(llk_rdma_rd_nibble(r->rd_init) << 4 | llk_rdma_rd_nibble(r->rd_dest)));
    if (with_target)
        put_bytes(w, r->target_ip, sizeof r->target_ip);
}

static int get_rail(rbuf_t *b, llk_xrail_wire_t *r, bool with_target, const char **why)
{
    memset(r, 0, sizeof *r);
    r->qpn = get_u32(b);
    r->psn = get_u32(b);
    get_bytes(b, r->gid, sizeof r->gid);
    r->lid = get_u16(b);
    r->mtu = get_u8(b);
    uint8_t rd = get_u8(b);
    if (with_target)
        get_bytes(b, r->target_ip, sizeof r->target_ip);
    if (b->short_read) {
        *why = "truncated rail record";
        return -1;
    }
    if (r->mtu < XMTU_MIN || r->mtu > XMTU_MAX) {
        *why = "rail: mtu out of range";
        return -1;
    }
    /* every nibble value is a depth (0: not advertised) */
    r->rd_init = (uint16_t)llk_rdma_rd_depth(rd >> 4);
    r->rd_dest = (uint16_t)llk_rdma_rd_depth(rd & 0xF);
    /* A QP number is 24 bits, a PSN too. */
    if (r->qpn > 0xFFFFFFu || r->qpn == 0 || r->psn > 0xFFFFFFu) {
        *why = "rail: QP number or PSN out of range";
        return -1;
    }
    return 0;
}

void llk_xwire_rails_for_peer(llk_xrail_wire_t *rails, uint16_t n, bool peer_reads)
{
    if (peer_reads)
        return;
    for (uint16_t i = 0; i < n; i++)
        rails[i].rd_init = rails[i].rd_dest = 0;
}

size_t llk_xwire_encode_rdma_setup(uint8_t *out, size_t cap, uint64_t req_id,
                                   const llk_xrail_wire_t *rails, uint16_t nrails)
{
    if (nrails == 0 || nrails > LLK_XWIRE_MAX_RAILS)
        return 0;
    size_t size = LLK_XWIRE_HEADER_SIZE + 2u + (size_t)nrails * LLK_XWIRE_RAIL_REQ_SIZE;
    if (cap < size)
        return 0;
    wbuf_t w = {out, 0, cap, 0};
    llk_xwire_put_header(&w, LLK_XMSG_RDMA_SETUP, (uint32_t)(size - LLK_XWIRE_HEADER_SIZE), req_id);
    put_u16(&w, nrails);
    for (uint16_t i = 0; i < nrails; i++)
        put_rail(&w, &rails[i], true);
    return llk_xwire_end_frame(&w, size);
}

int llk_xwire_decode_rdma_setup(const uint8_t *payload, size_t len, llk_xrail_wire_t *rails,
                                uint16_t *nrails, const char **why)
{
    rbuf_t b = {payload, len, 0, 0};
    *nrails = get_u16(&b);
    if (b.short_read) {
        *why = "truncated XRDMA_SETUP";
        return -1;
    }
    if (*nrails == 0 || *nrails > LLK_XWIRE_MAX_RAILS) {
        *why = "XRDMA_SETUP: rail count out of range";
        return -1;
    }
    if (llk_xwire_records_fill_rest(&b, *nrails, LLK_XWIRE_RAIL_REQ_SIZE,
                          "XRDMA_SETUP: rails longer than the frame",
                          "trailing bytes after XRDMA_SETUP", why) != 0)
        return -1;
    for (uint16_t i = 0; i < *nrails; i++)
        if (get_rail(&b, &rails[i], true, why) != 0)
            return -1;
    return 0;
}

size_t llk_xwire_encode_rdma_setup_ok(uint8_t *out, size_t cap, uint64_t req_id,
                                      const llk_xrdma_setup_ok_t *m)
{
    size_t n = strnlen(m->msg, LLK_XWIRE_MAX_MSG);
    if (m->nrails > LLK_XWIRE_MAX_RAILS || (m->status == 0) != (m->nrails > 0))
        return 0;
    size_t size = LLK_XWIRE_HEADER_SIZE + 4u + 2u + n + 2u +
                  (size_t)m->nrails * LLK_XWIRE_RAIL_ACK_SIZE;
    if (cap < size)
        return 0;
    wbuf_t w = {out, 0, cap, 0};
    llk_xwire_put_header(&w, LLK_XMSG_RDMA_SETUP_OK, (uint32_t)(size - LLK_XWIRE_HEADER_SIZE), req_id);
    put_u32(&w, m->status);
    put_u16(&w, (uint16_t)n);
    if (n)
        put_bytes(&w, m->msg, n);
    put_u16(&w, m->nrails);
    for (uint16_t i = 0; i < m->nrails; i++)
        put_rail(&w, &m->rail[i], false);
    return llk_xwire_end_frame(&w, size);
}

int llk_xwire_decode_rdma_setup_ok(const uint8_t *payload, size_t len, llk_xrdma_setup_ok_t *m,
                                   const char **why)
{
    rbuf_t b = {payload, len, 0, 0};
    memset(m, 0, sizeof *m);
    m->status = get_u32(&b);
    static const text_why_t w = {"truncated XRDMA_SETUP_OK", "XRDMA_SETUP_OK: message too long",
                                 "XRDMA_SETUP_OK: message longer than the frame"};
    if (get_text(&b, m->msg, LLK_XWIRE_MAX_MSG, &w, why) != 0)
        return -1;
    m->nrails = get_u16(&b);
    if (b.short_read) {
        *why = "truncated XRDMA_SETUP_OK";
        return -1;
    }
    if (m->nrails > LLK_XWIRE_MAX_RAILS) {
        *why = "XRDMA_SETUP_OK: rail count out of range";
        return -1;
    }
    if ((m->status == LLMLINK_SUCCESS) != (m->nrails > 0)) {
        *why = "XRDMA_SETUP_OK: rails with a refusal, or none with success";
        return -1;
    }
    if (llk_xwire_records_fill_rest(&b, m->nrails, LLK_XWIRE_RAIL_ACK_SIZE,
                          "XRDMA_SETUP_OK: rails longer than the frame",
                          "trailing bytes after XRDMA_SETUP_OK", why) != 0)
        return -1;
    for (uint16_t i = 0; i < m->nrails; i++)
        if (get_rail(&b, &m->rail[i], false, why) != 0)
            return -1;
    return 0;
}

/* ---- the repair of a rail ------------------------------------------------------ */

size_t llk_xwire_encode_rail_reset(uint8_t *out, size_t cap, uint64_t req_id, uint16_t rail,
                                   const llk_xrail_wire_t *rec)
{
    size_t size = LLK_XWIRE_HEADER_SIZE + 2u + LLK_XWIRE_RAIL_REQ_SIZE;
    if (rail >= LLK_XWIRE_MAX_RAILS || cap < size)
        return 0;
    wbuf_t w = {out, 0, cap, 0};
    llk_xwire_put_header(&w, LLK_XMSG_RDMA_RAIL_RESET, (uint32_t)(size - LLK_XWIRE_HEADER_SIZE),
                         req_id);
    put_u16(&w, rail);
    put_rail(&w, rec, true);
    return llk_xwire_end_frame(&w, size);
}

int llk_xwire_decode_rail_reset(const uint8_t *payload, size_t len, uint16_t *rail,
                                llk_xrail_wire_t *rec, const char **why)
{
    if (len != 2u + LLK_XWIRE_RAIL_REQ_SIZE) {
        *why = len < 2u + LLK_XWIRE_RAIL_REQ_SIZE ? "truncated XRDMA_RAIL_RESET"
                                                  : "trailing bytes after XRDMA_RAIL_RESET";
        return -1;
    }
    rbuf_t b = {payload, len, 0, 0};
    *rail = get_u16(&b);
    if (*rail >= LLK_XWIRE_MAX_RAILS) {
        *why = "XRDMA_RAIL_RESET: rail out of range";
        return -1;
    }
    return get_rail(&b, rec, true, why);
}

size_t llk_xwire_encode_rail_reset_ok(uint8_t *out, size_t cap, uint64_t req_id,
                                      const llk_xrail_reset_ok_t *m)
{
    size_t n = strnlen(m->msg, LLK_XWIRE_MAX_MSG);
    bool ok = m->status == LLMLINK_SUCCESS;
    size_t size = LLK_XWIRE_HEADER_SIZE + 4u + 2u + 2u + n + (ok ? LLK_XWIRE_RAIL_ACK_SIZE : 0u);
    if (m->rail >= LLK_XWIRE_MAX_RAILS || cap < size)
        return 0;
    wbuf_t w = {out, 0, cap, 0};
    llk_xwire_put_header(&w, LLK_XMSG_RDMA_RAIL_RESET_OK,
                         (uint32_t)(size - LLK_XWIRE_HEADER_SIZE), req_id);
    put_u32(&w, m->status);
    put_u16(&w, m->rail);
    put_u16(&w, (uint16_t)n);
    if (n)
        put_bytes(&w, m->msg, n);
    if (ok)
        put_rail(&w, &m->rec, false);
    return llk_xwire_end_frame(&w, size);
}

int llk_xwire_decode_rail_reset_ok(const uint8_t *payload, size_t len, llk_xrail_reset_ok_t *m,
                                   const char **why)
{
    rbuf_t b = {payload, len, 0, 0};
    memset(m, 0, sizeof *m);
    m->status = get_u32(&b);
    m->rail = get_u16(&b);
    static const text_why_t w = {"truncated XRDMA_RAIL_RESET_OK",
                                 "XRDMA_RAIL_RESET_OK: message too long",
                                 "XRDMA_RAIL_RESET_OK: message longer than the frame"};
    if (get_text(&b, m->msg, LLK_XWIRE_MAX_MSG, &w, why) != 0)
        return -1;
    if (m->rail >= LLK_XWIRE_MAX_RAILS) {
        *why = "XRDMA_RAIL_RESET_OK: rail out of range";
        return -1;
    }
    uint32_t nrec = m->status == LLMLINK_SUCCESS ? 1u : 0u;
    if (llk_xwire_records_fill_rest(&b, nrec, LLK_XWIRE_RAIL_ACK_SIZE,
                                    "XRDMA_RAIL_RESET_OK: success without a rail record",
                                    "trailing bytes after XRDMA_RAIL_RESET_OK", why) != 0)
        return -1;
    return nrec ? get_rail(&b, &m->rec, false, why) : 0;
}

/* ---- grants ------------------------------------------------------------------ */

size_t llk_xwire_grant_size(uint16_t nrails, uint32_t niov)
{
    if (nrails == 0 || nrails > LLK_XWIRE_MAX_RAILS || niov > LLK_XWIRE_MAX_SEGS)
        return 0;
    return LLK_XWIRE_HEADER_SIZE + LLK_XWIRE_RDMA_FIXED + (size_t)niov * LLK_XWIRE_GRANT_REC(nrails);
}

size_t llk_xwire_encode_grant(uint8_t *out, size_t cap, uint64_t req_id, uint64_t total,
                              uint64_t generation, uint16_t nrails, const uint64_t *addr_len,
                              const uint32_t *rkeys, uint32_t niov)
{
    size_t size = llk_xwire_grant_size(nrails, niov);
    if (size == 0 || niov == 0 || !addr_len || !rkeys || cap < size)
        return 0;
    wbuf_t w = {out, 0, cap, 0};
    llk_xwire_put_header(&w, LLK_XMSG_RESP_RDMA, (uint32_t)(size - LLK_XWIRE_HEADER_SIZE), req_id);
    put_u64(&w, total);
    put_u64(&w, generation);
    put_u16(&w, nrails);
    put_u32(&w, niov);
    for (uint32_t i = 0; i < niov; i++) {
        put_u64(&w, addr_len[2 * (size_t)i]);
        put_u64(&w, addr_len[2 * (size_t)i + 1]);
        for (uint16_t k = 0; k < nrails; k++)
            put_u32(&w, rkeys[(size_t)i * nrails + k]);
    }
    return llk_xwire_end_frame(&w, size);
}

int llk_xwire_decode_grant(const uint8_t *payload, size_t len, llk_xgrant_t *g,
                           const char **why)
{
    rbuf_t b = {payload, len, 0, 0};
    memset(g, 0, sizeof *g);
    g->total_bytes = get_u64(&b);
    g->generation = get_u64(&b);
    g->nrails = get_u16(&b);
    g->niov = get_u32(&b);
    if (b.short_read) {
        *why = "truncated XRESP_RDMA";
        return -1;
    }
    if (g->nrails == 0 || g->nrails > LLK_XWIRE_MAX_RAILS) {
        *why = "XRESP_RDMA: rail count out of range";
        return -1;
    }
    if (g->niov == 0 || g->niov > LLK_XWIRE_MAX_SEGS) {
        *why = "XRESP_RDMA: region count out of range";
        return -1;
    }
    if (g->generation == 0) {
        *why = "XRESP_RDMA: generation 0";
        return -1;
    }
    if (llk_xwire_records_fill_rest(&b, g->niov, LLK_XWIRE_GRANT_REC(g->nrails),
                          "XRESP_RDMA: regions longer than the frame",
                          "trailing bytes after XRESP_RDMA", why) != 0)
        return -1;
    g->recs = payload + b.pos;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < g->niov; i++) {
        uint64_t addr, ilen;
        uint32_t rkey;
        llk_xwire_grant_at(g, i, 0, &addr, &ilen, &rkey);
        if (ilen == 0) {
            *why = "XRESP_RDMA: empty region";
            return -1;
        }
        if (addr > UINT64_MAX - ilen) {
            *why = "XRESP_RDMA: region end overflows";
            return -1;
        }
        if (sum > UINT64_MAX - ilen) {
            *why = "XRESP_RDMA: total length overflows";
            return -1;
        }
        sum += ilen;
    }
    if (sum != g->total_bytes) {
        *why = "XRESP_RDMA: regions do not add up to the total";
        return -1;
    }
    return 0;
}

void llk_xwire_grant_at(const llk_xgrant_t *g, uint32_t i, uint16_t rail, uint64_t *addr,
                        uint64_t *len, uint32_t *rkey)
{
    const uint8_t *p = g->recs + (size_t)i * LLK_XWIRE_GRANT_REC(g->nrails);
    *addr = load_u64(p);
    *len = load_u64(p + 8);
    *rkey = load_u32(p + 16 + 4u * rail);
}

/* ---- the setup exchange, as each side takes it --------------------------------- */

/* 0.3's decoder refused a rail record whose byte after mtu was set: -1
 * with *why where this side acts as 0.3 and a record carries a READ depth. */
static int legacy_rails_check(bool legacy, const llk_xrail_wire_t *r, uint16_t n,
                              const char **why)
{
    for (uint16_t i = 0; i < n && legacy; i++)
        if (r[i].rd_init || r[i].rd_dest) {
            *why = "rail: reserved byte set";
            return -1;
        }
    return 0;
}

int llk_rdma_setup_read(const uint8_t *payload, size_t len, bool legacy_rails,
                        llk_xrail_wire_t *rails, uint16_t *nrails, const char **why)
{
    if (llk_xwire_decode_rdma_setup(payload, len, rails, nrails, why) != 0)
        return -1;
    return legacy_rails_check(legacy_rails, rails, *nrails, why);
}

int llk_rdma_setup_ok_read(const uint8_t *payload, size_t len, bool legacy_rails,
                           llk_xrdma_setup_ok_t *ok, const char **why)
{
    if (llk_xwire_decode_rdma_setup_ok(payload, len, ok, why) != 0)
        return -1;
    return legacy_rails_check(legacy_rails, ok->rail, ok->nrails, why);
}

void llk_rdma_setup_targets(const llk_xrail_wire_t *rails, uint16_t n,
                            const struct sockaddr_storage *stream_local,
                            struct sockaddr_storage *ips)
{
    static const uint8_t zero[16];
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    for (uint16_t i = 0; i < n; i++) {
        memset(&ips[i], 0, sizeof ips[i]);
        if (!memcmp(rails[i].target_ip, zero, 16)) {
            ips[i] = *stream_local;
        } else if (!memcmp(rails[i].target_ip, v4mapped, 12)) {
            struct sockaddr_in *in = (struct sockaddr_in *)&ips[i];
            in->sin_family = AF_INET;
            memcpy(&in->sin_addr, rails[i].target_ip + 12, 4);
        } else {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ips[i];
            in6->sin6_family = AF_INET6;
            memcpy(&in6->sin6_addr, rails[i].target_ip, 16);
        }
    }
}

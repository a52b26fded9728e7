/*
 * rdma_wire.h - the RDMA transport's own data-stream messages (framed as
 * every message of xfer_wire.h, which lists their types and limits):
 * XRDMA_SETUP / XRDMA_SETUP_OK (the rails of a link, once, on its first
 * forward stream) and XRESP_RDMA (the grant of one request).
 */
#ifndef LLK_RDMA_WIRE_H
#define LLK_RDMA_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xfer/xfer_wire.h"

/* One rail of an RDMA setup (XRDMA_SETUP / XRDMA_SETUP_OK; target_ip only
 * in the former). */
typedef struct llk_xrail_wire {
    uint32_t qpn, psn;
    uint8_t gid[16];
    uint16_t lid;
    uint8_t mtu;
    /* Outstanding RDMA READs this side issues (initiator) and accepts
     * (responder); 0 = not advertised (a peer from before these fields).
     * On the wire: one byte, a nibble each (rdma_plan.h: powers of two up
     * to 16384, rounded down). */
    uint16_t rd_init, rd_dest;
    uint8_t target_ip[16];
} llk_xrail_wire_t;

typedef struct llk_xrdma_setup_ok {
    uint32_t status;
    char msg[LLK_XWIRE_MAX_MSG + 1];
    uint16_t nrails;
    llk_xrail_wire_t rail[LLK_XWIRE_MAX_RAILS];
} llk_xrdma_setup_ok_t;

/* A decoded XRESP_RDMA; records point into the buffer (llk_xwire_grant_at). */
typedef struct llk_xgrant {
    uint64_t total_bytes;
    uint64_t generation;
    uint16_t nrails;
    uint32_t niov;
    const uint8_t *recs;
} llk_xgrant_t;

/* XRDMA_RAIL_RESET_OK (xfer_wire.h); rail only when status is SUCCESS. */
typedef struct llk_xrail_reset_ok {
    uint32_t status;
    uint16_t rail;
    char msg[LLK_XWIRE_MAX_MSG + 1];
    llk_xrail_wire_t rec;
} llk_xrail_reset_ok_t;

/* The repair of one rail (rail < LLK_XWIRE_MAX_RAILS): the client's new
 * record (target_ip as in XRDMA_SETUP), the owner's answer. 0 = does not
 * fit / out of range. Decoders check every field as the setup's do. */
size_t llk_xwire_encode_rail_reset(uint8_t *out, size_t cap, uint64_t req_id, uint16_t rail,
                                   const llk_xrail_wire_t *rec);
int llk_xwire_decode_rail_reset(const uint8_t *payload, size_t len, uint16_t *rail,
                                llk_xrail_wire_t *rec, const char **why);
size_t llk_xwire_encode_rail_reset_ok(uint8_t *out, size_t cap, uint64_t req_id,
                                      const llk_xrail_reset_ok_t *m);
int llk_xwire_decode_rail_reset_ok(const uint8_t *payload, size_t len, llk_xrail_reset_ok_t *m,
                                   const char **why);

/* nrails 1..LLK_XWIRE_MAX_RAILS. */
size_t llk_xwire_encode_rdma_setup(uint8_t *out, size_t cap, uint64_t req_id,
                                   const llk_xrail_wire_t *rails, uint16_t nrails);
size_t llk_xwire_encode_rdma_setup_ok(uint8_t *out, size_t cap, uint64_t req_id,
                                      const llk_xrdma_setup_ok_t *m);
/* addr_len: niov (addr, len) pairs; rkeys: niov x nrails, record-major. */
size_t llk_xwire_encode_grant(uint8_t *out, size_t cap, uint64_t req_id, uint64_t total,
                              uint64_t generation, uint16_t nrails, const uint64_t *addr_len,
                              const uint32_t *rkeys, uint32_t niov);
size_t llk_xwire_grant_size(uint16_t nrails, uint32_t niov);

/* Clears the READ depths of rails[0..n) unless the peer reads them
 * (peer_reads: it sent LLK_EXT_RDMA_READ_DEPTH, link/wire.h), so that their
 * records go with the byte after mtu 0. Call it on this side's rails before
 * encoding them. */
void llk_xwire_rails_for_peer(llk_xrail_wire_t *rails, uint16_t n, bool peer_reads);

/* Rail counts 1..LLK_XWIRE_MAX_RAILS, mtu 1..5. The byte after mtu was
 * reserved (0) before it carried the READ depths: a record of an older
 * peer decodes with rd_init = rd_dest = 0 ("not advertised"). An llmlink
 * 0.3 peer refuses a record whose byte is set ("reserved byte set"), so a
 * side fills it only for a peer that announced LLK_EXT_RDMA_READ_DEPTH in
 * the link handshake (llk_xwire_rails_for_peer); a set byte from a peer
 * that did not announce it is still read (it does no harm). */
int llk_xwire_decode_rdma_setup(const uint8_t *payload, size_t len, llk_xrail_wire_t *rails,
                                uint16_t *nrails, const char **why);
int llk_xwire_decode_rdma_setup_ok(const uint8_t *payload, size_t len, llk_xrdma_setup_ok_t *m,
                                   const char **why);
/* Checks counts, non-empty records, no address overflow, that the lengths
 * sum to total_bytes. */
int llk_xwire_decode_grant(const uint8_t *payload, size_t len, llk_xgrant_t *g,
                           const char **why);
/* Record i of a decoded grant: address, length, the rkey of `rail`. */
void llk_xwire_grant_at(const llk_xgrant_t *g, uint32_t i, uint16_t rail, uint64_t *addr,
                        uint64_t *len, uint32_t *rkey);

/* ---- the setup exchange, as each side takes it (rdma.c) -------------------- */

/*
 * What the owner takes from an XRDMA_SETUP payload: the client's rails
 * (llk_xwire_decode_rdma_setup). legacy_rails: this side acts as llmlink
 * 0.3 (llk_test_set_legacy_rails) and refuses a record whose READ-depth
 * byte is set ("rail: reserved byte set"). 0, or -1 with *why.
 */
int llk_rdma_setup_read(const uint8_t *payload, size_t len, bool legacy_rails,
                        llk_xrail_wire_t *rails, uint16_t *nrails, const char **why);
/* What the client takes from the owner's XRDMA_SETUP_OK payload, with the
 * same legacy rule. 0, or -1 with *why. */
int llk_rdma_setup_ok_read(const uint8_t *payload, size_t len, bool legacy_rails,
                           llk_xrdma_setup_ok_t *ok, const char **why);
/* The local address each rail of a setup binds on the owner: its
 * target_ip as IPv4 (v4-mapped) or IPv6, or, when all zero, the address of
 * the data stream the setup came on (stream_local). */
struct sockaddr_storage;
void llk_rdma_setup_targets(const llk_xrail_wire_t *rails, uint16_t n,
                            const struct sockaddr_storage *stream_local,
                            struct sockaddr_storage *ips);

#endif /* LLK_RDMA_WIRE_H */

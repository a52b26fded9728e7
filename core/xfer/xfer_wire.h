/*
 * xfer_wire.h - the data-stream protocol: framing and message codecs.
 *
 * A data stream is a TCP connection the client (decode) side opens to the
 * server's listener and attaches to a link with the control messages
 * ATTACH / ATTACH_OK (wire.h). From then on it carries data frames: a
 * 24-byte header and `length` payload bytes, integers big-endian.
 *
 *   offset size field
 *   0      4    magic    "LLMD" (0x4C4C4D44)
 *   4      2    version  LLK_XWIRE_VERSION
 *   6      2    type     llk_xmsg_type_t
 *   8      4    length   payload bytes, <= LLK_XWIRE_MAX_PAYLOAD
 *   12     4    flags    0
 *   16     8    req_id   chosen by the requester, echoed in replies
 *
 * One side of a stream requests (the requester), the other owns the memory
 * addressed (the owner). One request at a time per stream:
 *
 *   READ      XREQ -> XRESP(status, total) [+ total raw bytes if SUCCESS]
 *   WRITE     XREQ -> XRESP(go) [requester sends total raw bytes] -> XRESP(final)
 *   SHM_READ  XREQ -> XRESP(status, total, iovecs) -> requester's
 *   SHM_WRITE        process_vm_readv/writev -> XDONE(status)
 *   RDMA_READ XREQ -> XRESP_RDMA(grant: addresses, rkeys, generation) ->
 *   RDMA_WRITE       requester's RDMA READs / WRITEs over the link's rails
 *                    -> XDONE(status, generation)   (refusal: XRESP)
 *   RDMA_SETUP XRDMA_SETUP -> XRDMA_SETUP_OK: once per link, on the first
 *                    forward stream, before any request (the rails' QPs)
 *
 * This file frames every message and codes those of the stream itself;
 * the op codes 3..6 and the RDMA messages' payloads belong to their
 * transports (transport/transport.h names them; the RDMA messages are
 * coded next to that transport).
 *
 * The raw bytes follow the request's segment order. A refused request
 * (XRESP status != SUCCESS) moves no byte and leaves the stream usable; a
 * malformed frame ends the stream (and the link).
 *
 * One transfer (a pull or a push) is split into several requests, one per
 * data stream, that the owner checks one by one. So that a transfer is
 * refused all or nothing, every request of it carries the bounds of the
 * whole transfer (num_tensors_hint, bound_end, LLK_XREQ_ALL_TENSORS), the
 * same in each; the owner checks them against its cache before the
 * request's own segments, so it refuses all of the transfer's requests
 * alike, or none. Each segment must lie within its request's bounds.
 *
 * Payloads:
 *   XREQ   u8 op, u8 kind, u16 flags, key (u32 type, u64 cluster_id,
 *          u64 req_id, u64 model_id, i64 prefix_id, i64 cache_id,
 *          u32 batch_index), u64 unit_bytes, u32 num_tensors_hint (the
 *          highest remote tensor index + 1 of the whole transfer),
 *          u64 bound_end (one past the furthest byte, offset + length, any
 *          segment of the whole transfer touches), u32 nseg,
 *          nseg x (u32 tensor, u64 offset, u64 length)
 *          (76 bytes before the segments)
 *   XRESP  u32 status, u64 total_bytes, u16 msg_len, msg (printable ASCII,
 *          <= LLK_XWIRE_MAX_MSG), u32 niov, niov x (u64 addr, u64 len)
 *          (niov is 0 except for a SUCCESS answer to SHM_*)
 *   XDONE  u32 status [, u64 generation (RDMA requests: the grant's)]
 *   XRESP_RDMA  u64 total_bytes, u64 generation, u16 nrails (1..LLK_XWIRE_MAX_RAILS),
 *          u32 niov, niov x (u64 addr, u64 len, nrails x u32 rkey): the
 *          owner's addresses of the request's segments, in order, and the
 *          rkey of each on every rail
 *   XRDMA_SETUP  u16 nrails, nrails x rail (u32 qpn, u32 psn, 16 bytes gid,
 *          u16 lid, u8 active mtu (ibv_mtu 1..5), u8 READ depths (high
 *          nibble: as initiator, low: as responder; 0 = not advertised,
 *          and always 0 to a peer that did not announce
 *          LLK_EXT_RDMA_READ_DEPTH: rdma_wire.h), 16 bytes target ip:
 *          the owner's address the rail is for, IPv6 or IPv4-mapped; all
 *          zero = the address of this stream)
 *   XRDMA_SETUP_OK  u32 status, u16 msg_len, msg, u16 nrails (0 unless
 *          SUCCESS, else as many as asked), nrails x rail (u32 qpn, u32 psn,
 *          16 bytes gid, u16 lid, u8 active mtu, u8 READ depths as in
 *          XRDMA_SETUP)
 *   XRDMA_RAIL_RESET  u16 rail (< LLK_XWIRE_MAX_RAILS), one rail record as
 *          in XRDMA_SETUP (44 bytes): the client's fresh QP for a rail of
 *          the link that failed, to be paired with a fresh one of the owner
 *          (only to a peer that announced LLK_EXT_RDMA_RAILS)
 *   XRDMA_RAIL_RESET_OK  u32 status, u16 rail (as asked), u16 msg_len, msg,
 *          then one rail record as in XRDMA_SETUP_OK (28 bytes) if and
 *          only if SUCCESS: the owner's fresh QP
 *
 * The RDMA messages and ops are used only on a link whose two ends
 * announced RDMA in their handshake (LLK_EXT_RDMA, wire.h), so a peer
 * without them still links (over tcp/shm).
 *
 * Decoders validate every field (enumerations, counts, lengths, that the
 * segment lengths are non-zero and sum without overflow, that a request
 * with segments has num_tensors_hint >= 1 and every segment within its
 * bounds: tensor < num_tensors_hint, offset + length <= bound_end; the two
 * are not checked in a request without segments, a CONSUME) and never read
 * past the buffer; they return 0 or -1 with a static reason in *why.
 * Segment and iovec arrays point into the decoded buffer (big-endian
 * records); read them with llk_xwire_seg_at / llk_xwire_iov_at.
 */
#ifndef LLK_XFER_WIRE_H
#define LLK_XFER_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmlink.h"

#define LLK_XWIRE_MAGIC       0x4C4C4D44u
#define LLK_XWIRE_VERSION     1u
#define LLK_XWIRE_HEADER_SIZE 24u
#define LLK_XWIRE_MAX_SEGS    65536u
#define LLK_XWIRE_SEG_SIZE    20u
#define LLK_XWIRE_IOV_SIZE    16u
#define LLK_XWIRE_MAX_MSG     256u
#define LLK_XWIRE_REQ_FIXED   76u  /* XREQ bytes before the segments */
#define LLK_XWIRE_MAX_PAYLOAD (LLK_XWIRE_REQ_FIXED + LLK_XWIRE_MAX_SEGS * LLK_XWIRE_SEG_SIZE)
/* XRESP bytes around the message and the iovecs: status, total, msg_len, niov. */
#define LLK_XWIRE_RESP_FIXED  (4u + 8u + 2u + 4u)
#define LLK_XWIRE_RESP_MAX_PAYLOAD \
    (LLK_XWIRE_RESP_FIXED + LLK_XWIRE_MAX_MSG + LLK_XWIRE_MAX_SEGS * LLK_XWIRE_IOV_SIZE)
#define LLK_XWIRE_MAX_RAILS   4u
#define LLK_XWIRE_RAIL_REQ_SIZE 44u /* an XRDMA_SETUP rail record */
#define LLK_XWIRE_RAIL_ACK_SIZE 28u /* an XRDMA_SETUP_OK rail record */
#define LLK_XWIRE_RDMA_FIXED  22u  /* XRESP_RDMA bytes before the records */
#define LLK_XWIRE_GRANT_REC(nrails) (16u + 4u * (uint32_t)(nrails)) /* an XRESP_RDMA record */

typedef enum llk_xmsg_type {
    LLK_XMSG_REQ = 1,
    LLK_XMSG_RESP = 2,
    LLK_XMSG_DONE = 3,
    LLK_XMSG_RDMA_SETUP = 4,
    LLK_XMSG_RDMA_SETUP_OK = 5,
    LLK_XMSG_RESP_RDMA = 6,
    /* LLK_EXT_RDMA_RAILS (link/wire.h): rails paired by the data, and a
     * failed rail re-established (transport/rdma_wire.h). */
    LLK_XMSG_RDMA_PROBE = 7,
    LLK_XMSG_RDMA_PROBE_OK = 8,
    LLK_XMSG_RDMA_RAIL_RESET = 9,
    LLK_XMSG_RDMA_RAIL_RESET_OK = 10
} llk_xmsg_type_t;

typedef enum llk_xop {
    LLK_XOP_READ = 1,      /* owner -> requester, on the stream */
    LLK_XOP_WRITE = 2,     /* requester -> owner, on the stream */
    /* 3..6: the ops of the transports that move bytes off the stream
     * (transport/transport.h names them) */
    LLK_XOP_LAST = 6
} llk_xop_t;

typedef enum llk_xkind {
    LLK_XKIND_BLOCKS = 1,          /* key: KEY_BLOCKS; offsets from the tensor base;
                                      unit_bytes must equal the owner's block size */
    LLK_XKIND_CACHE = 2,           /* key: KEY_CACHE / KEY_ID_AND_INDEX; offsets from
                                      the batch entry; within one entry */
    LLK_XKIND_CACHE_AS_BLOCKS = 3  /* as CACHE; unit_bytes is the requester's block size */
} llk_xkind_t;

/* XREQ flags */
#define LLK_XREQ_WHOLE 0x0001u   /* size -1: the entry sizes must be equal */
#define LLK_XREQ_CONSUME 0x0002u /* nseg 0: drop the CacheKey after a successful pull_cache */
#define LLK_XREQ_ALL_TENSORS 0x0004u /* the transfer covers every tensor of both caches: their
                                        counts must be equal */

typedef struct llk_xframe_header {
    uint32_t magic;
    uint16_t version;
    uint16_t type;
    uint32_t length;
    uint32_t flags;
    uint64_t req_id;
} llk_xframe_header_t;

typedef struct llk_xseg_wire {
    uint32_t tensor;
    uint64_t offset;
    uint64_t length;
} llk_xseg_wire_t;

typedef struct llk_xreq {
    uint8_t op;   /* llk_xop_t */
    uint8_t kind; /* llk_xkind_t */
    uint16_t flags;
    llmlink_cache_key_t key;
    uint64_t unit_bytes;
    uint32_t num_tensors_hint; /* highest remote tensor index + 1 of the whole transfer */
    uint64_t bound_end;        /* one past the furthest byte the whole transfer touches */
    uint32_t nseg;
    const uint8_t *segs; /* decode: nseg records in the buffer */
    uint64_t total_bytes; /* decode: sum of the segment lengths */
} llk_xreq_t;

typedef struct llk_xresp {
    uint32_t status;
    uint64_t total_bytes;
    char msg[LLK_XWIRE_MAX_MSG + 1]; /* NUL-terminated */
    uint32_t niov;
    const uint8_t *iovs; /* decode: niov records in the buffer */
} llk_xresp_t;

/* Reads and checks the 24 header bytes: 0, or -1 with *why (bad magic,
 * version, type, flags, or a length over the maximum for its type). */
int llk_xwire_read_header(const uint8_t buf[LLK_XWIRE_HEADER_SIZE], llk_xframe_header_t *h,
                          const char **why);
/* Writes a header. */
void llk_xwire_write_header(uint8_t buf[LLK_XWIRE_HEADER_SIZE], llk_xmsg_type_t type,
                            uint32_t length, uint64_t req_id);

/*
 * Encoders write a whole frame (header + payload) and return its size, or 0
 * if it does not fit in cap. encode_req takes the segments as an array of
 * structs; encode_resp takes iovecs as (addr, len) pairs (may be NULL with
 * niov 0) and truncates msg to LLK_XWIRE_MAX_MSG.
 */
size_t llk_xwire_encode_req(uint8_t *out, size_t cap, uint64_t req_id, const llk_xreq_t *r,
                            const llk_xseg_wire_t *segs);
size_t llk_xwire_encode_resp(uint8_t *out, size_t cap, uint64_t req_id, uint32_t status,
                             uint64_t total_bytes, const char *msg, const uint64_t *iov_pairs,
                             uint32_t niov);
size_t llk_xwire_encode_done(uint8_t *out, size_t cap, uint64_t req_id, uint32_t status);
/* XDONE of a request whose grant named a generation: with it. */
size_t llk_xwire_encode_done_gen(uint8_t *out, size_t cap, uint64_t req_id, uint32_t status,
                                 uint64_t generation);

/* Size of a frame before encoding (header included). */
size_t llk_xwire_req_size(uint32_t nseg);
size_t llk_xwire_resp_size(size_t msg_len, uint32_t niov);

int llk_xwire_decode_req(const uint8_t *payload, size_t len, llk_xreq_t *r, const char **why);
int llk_xwire_decode_resp(const uint8_t *payload, size_t len, llk_xresp_t *r, const char **why);
/* Either form of XDONE; *has_gen says which (generation 0 without). */
int llk_xwire_decode_done_gen(const uint8_t *payload, size_t len, uint32_t *status,
                              uint64_t *generation, bool *has_gen, const char **why);

/* Record i of a decoded segment / iovec array. */
void llk_xwire_seg_at(const uint8_t *segs, uint32_t i, llk_xseg_wire_t *out);
void llk_xwire_iov_at(const uint8_t *iovs, uint32_t i, uint64_t *addr, uint64_t *len);

#endif /* LLK_XFER_WIRE_H */

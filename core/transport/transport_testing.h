/*
 * transport_testing.h - seams for tests, out of the public ABI: not in
 * llmlink.h, not exported from the shared library (hidden visibility).
 * Test programs that link the static library reach them; nothing else
 * should call them.
 */
#ifndef LLK_TRANSPORT_TESTING_H
#define LLK_TRANSPORT_TESTING_H

#include <stdbool.h>
#include <stdint.h>

#include "llmlink.h"

/* Makes e's RDMA requester wait ms between receiving a grant and posting
 * its work requests (0: no wait, the default), so that an owner revoking
 * the grant meanwhile is seen deterministically. Call after llmlink_init;
 * no-op where e has no RDMA devices. */
void llk_test_set_rdma_post_delay_ms(llmlink_t *e, uint32_t ms);

/* Makes e link as llmlink 0.3 did: no llm.SyncKvCacheWaitTime in its HELLO
 * / WELCOME, and the peer's ignored, so each side bounds its calls by its
 * own wait (a requester that outlives the owner's wait: what an older or a
 * slow peer does). Call before e links. (core/link/server.c) */
void llk_test_set_legacy_wait(llmlink_t *e, bool on);

/* Makes e's RDMA rail records those of llmlink 0.3: it neither sends nor
 * reads LLK_EXT_RDMA_READ_DEPTH nor LLK_EXT_RDMA_RAILS (link/wire.h: no
 * XRDMA_PROBE, rails by position), and it refuses a peer's rail record
 * whose READ-depth byte is set ("reserved byte set"), as 0.3's decoder
 * does. Call before e links. (core/link/server.c) */
void llk_test_set_legacy_rails(llmlink_t *e, bool on);
/* Makes e, as a client whose rails are paired by the data, send an
 * XRDMA_SETUP whose pairs are crossed (rail i's target is rail i+1's),
 * when it has two or more: the owner must refuse it, naming the pair.
 * Call before e links. (core/transport/rdma_probe.c) */
void llk_test_set_rdma_cross_pairs(llmlink_t *e, bool on);

/* Pauses (on) or resumes e's RDMA rail mender (transport/rdma_mender.c):
 * while paused it repairs nothing, so only a request, before it sends,
 * brings a rail back. The round under way, if any, finishes. No-op where
 * e has no mender. */
void llk_test_set_rdma_mender_paused(llmlink_t *e, bool on);

/* The last RDMA grant an engine made as owner (its first
 * LLK_TEST_RDMA_GRANT_SEGS segments): addresses, lengths, the rkey of each
 * rail. seq counts grants (0: none yet). prot: llk_rdma_prot_t. */
#define LLK_TEST_RDMA_GRANT_SEGS 8
#define LLK_TEST_RDMA_MAX_RAILS 4
typedef struct llk_test_rdma_grant {
    uint64_t seq;
    bool write;
    int prot;
    uint32_t nseg;
    uint16_t nrails;
    uint64_t addr[LLK_TEST_RDMA_GRANT_SEGS], len[LLK_TEST_RDMA_GRANT_SEGS];
    uint32_t rkey[LLK_TEST_RDMA_GRANT_SEGS][LLK_TEST_RDMA_MAX_RAILS];
} llk_test_rdma_grant_t;
void llk_test_rdma_last_grant(llmlink_t *e, llk_test_rdma_grant_t *out);
/* Grants of e whose memory windows are bound now. */
unsigned llk_test_rdma_live_grants(llmlink_t *e);
/* The QP and CQ (struct ibv_qp *, struct ibv_cq *) of rail `rail` of e's
 * link with cluster `remote`: false without one. The link keeps using
 * them: a test posts on them only while no call runs on the link. */
bool llk_test_rdma_rail(llmlink_t *e, uint64_t remote, uint16_t rail, void **qp, void **cq);
/* lkey / rkey of e's MR of tensor `tensor` of cache `cache_id` on its first
 * device (made on the cache's first RDMA use): false if none yet. */
bool llk_test_rdma_mr_keys(llmlink_t *e, int64_t cache_id, uint32_t tensor, uint32_t *lkey,
                           uint32_t *rkey);
/* The lkey e's link with `remote` posts with for tensor `tensor` of cache
 * `cache_id` on rail 0 (mode MW: the device's MR; PD_PER_LINK: the local
 * MR in the link's PD, made now if need be): false without one. */
bool llk_test_rdma_lkey(llmlink_t *e, uint64_t remote, int64_t cache_id, uint32_t tensor,
                        uint32_t *lkey);
/* The protection mode name of e's link with `remote` ("unused" without). */
const char *llk_test_rdma_protection(llmlink_t *e, uint64_t remote);

/* The server's parked connections (core/link/park.c): parked now, ever
 * parked, closed because the pool was full, closed at their first-frame
 * deadline while parked, let into a handshake slot; and handshakes in
 * progress now. */
typedef struct llk_test_park_stats {
    uint32_t parked, in_handshake;
    uint64_t parked_total, dropped, timed_out, promoted;
} llk_test_park_stats_t;
void llk_test_park_stats(llmlink_t *e, llk_test_park_stats_t *s);

#endif /* LLK_TRANSPORT_TESTING_H */

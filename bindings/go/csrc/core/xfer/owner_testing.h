/*
 * owner_testing.h - a seam for tests and fuzz targets into the owner
 * thread's request admission (xfer/owner.c), out of the public ABI: not in
 * llmlink.h, not exported from the shared library (hidden visibility).
 */
#ifndef LLK_OWNER_TESTING_H
#define LLK_OWNER_TESTING_H

#include <stddef.h>
#include <stdint.h>

#include "llmlink.h"

struct llk_xlink;
struct llk_cache;

/* Called for every admitted request, before anything moves: the cache it
 * holds and its checked segments, (address, length) pairs in segv and the
 * tensor of each in segt. */
typedef void llk_test_owner_seen_fn(void *ctx, const struct llk_cache *c, const uint64_t *segv,
                                    const uint32_t *segt, uint32_t nseg);

/*
 * Serves one XREQ payload (payload, len, as it would follow a header with
 * req_id) as the owner thread does when it arrives on a stream of link xl,
 * against e's registry (e->reg, initialised by the caller): decoding,
 * the transport's serve_allowed, admission, and the answer the owner would
 * send (XRESP, or a grant), copied to answer (answer_len; 0 when it does
 * not fit answer_cap). The request then ends as on a stream that closes
 * (grant ended, hold released): nothing stays held. Returns 0, or -1 when
 * the payload broke the protocol (the owner would end the stream).
 */
int llk_test_owner_request(llmlink_t *e, struct llk_xlink *xl, uint64_t req_id,
                           const uint8_t *payload, size_t len, llk_test_owner_seen_fn *seen,
                           void *ctx, uint8_t *answer, size_t answer_cap, size_t *answer_len);

#endif /* LLK_OWNER_TESTING_H */

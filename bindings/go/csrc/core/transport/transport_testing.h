/*
 * transport_testing.h - seams for tests, out of the public ABI: not in
 * llmlink.h, not exported from the shared library (hidden visibility).
 * Test programs that link the static library reach them; nothing else
 * should call them.
 */
#ifndef LLK_TRANSPORT_TESTING_H
#define LLK_TRANSPORT_TESTING_H

#include <stdint.h>

#include "llmlink.h"

/* Makes e's RDMA requester wait ms between receiving a grant and posting
 * its work requests (0: no wait, the default), so that an owner revoking
 * the grant meanwhile is seen deterministically. Call after llmlink_init;
 * no-op where e has no RDMA devices. */
void llk_test_set_rdma_post_delay_ms(llmlink_t *e, uint32_t ms);

#endif /* LLK_TRANSPORT_TESTING_H */

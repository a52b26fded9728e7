/*
 * cancel_fx.h - the fixture of the cancel tests (test_xfer_cancel.c,
 * test_task_cancel.c): an owner PROMPT engine in a forked child whose
 * blocks cache lives in a MAP_SHARED region this process reads too, a
 * DECODER engine here with a cache of the same shape, linked to it over
 * llmlink.Transport `transport`.
 *
 * Both caches are NRANGES ranges of CFX_RANGE_BLOCKS blocks per tensor
 * (4 MiB per range) plus one probe block. A round transfers one range and
 * cancels it; once the cancel's fence holds, the destination range is put
 * in a window (cfx_watch): it must keep its checksum for CFX_QUIET_MS.
 * Every check looks at every range in its window, and a range is used
 * again only after its window, so a late byte of any earlier round shows.
 *
 * Include after <cmocka.h> and its prerequisites.
 */
#ifndef LLK_TEST_CANCEL_FX_H
#define LLK_TEST_CANCEL_FX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "llmlink.h"

#define CFX_PROMPT_ID 1u
#define CFX_DEC_ID 2u
#define CFX_IO_MS 10000
#define CFX_NT 2u
#define CFX_BS (64u * 1024u)
#define CFX_RANGE_BLOCKS 32u
#define CFX_NRANGES 8u
#define CFX_PROBE_BLOCK (CFX_NRANGES * CFX_RANGE_BLOCKS) /* one block after the ranges */
#define CFX_NB (CFX_PROBE_BLOCK + 1u)
#define CFX_TENSOR_BYTES ((size_t)CFX_NB * CFX_BS)
#define CFX_CACHE_BYTES (CFX_NT * CFX_TENSOR_BYTES)
#define CFX_QUIET_MS 200
#define CFX_MAX_DELAY_US 3000

typedef struct cfx_watch {
    bool on;
    uint64_t sum;
    int64_t until;
    int round;
} cfx_watch_t;

typedef struct cfx {
    const char *transport;
    const char *ip;       /* where the owner listens (127.0.0.1; rdma: the VM's) */
    uint8_t *rmem;        /* the child's cache (MAP_SHARED) */
    uint8_t *lmem;        /* this engine's cache */
    pid_t child;
    int port_rd, hold_wr; /* pipes to the child */
    uint16_t port;
    llmlink_t *d;
    int64_t cache;
    unsigned seed;        /* printed; LLK_CANCEL_SEED replays it */
    unsigned max_delay_us; /* cancels come 0..this after the submit (CFX_MAX_DELAY_US) */
    cfx_watch_t w[CFX_NRANGES];
} cfx_t;

/* Setup / teardown (cmocka): *state becomes the cfx_t. */
int cfx_setup(void **state, const char *transport);
/* The same with the owner listening on ip (rdma: a soft-RoCE address). */
int cfx_setup_at(void **state, const char *transport, const char *ip);
int cfx_teardown(void **state);

/* link_clusters once (its per-cluster status); cfx_relink retries,
 * bounded, until the old link is gone on the owner's side. */
llmlink_status_t cfx_link_once(cfx_t *fx);
void cfx_relink(cfx_t *fx);

uint8_t *cfx_range_at(uint8_t *mem, unsigned t, unsigned r);
uint64_t cfx_range_sum(uint8_t *mem, unsigned r);
void cfx_fill_range(uint8_t *mem, unsigned r, uint8_t v);
bool cfx_range_is(uint8_t *mem, unsigned r, uint8_t v);

/* Puts range r of dst in its window from `fenced` on, with checksum sum. */
void cfx_watch(cfx_t *fx, unsigned r, uint64_t sum, int64_t fenced, int round);
/* Every range in its window still has its checksum (fails the test). */
void cfx_check_watches(cfx_t *fx, bool push);
/* A range outside every window (waits and checks meanwhile). */
unsigned cfx_free_range(cfx_t *fx, bool push, unsigned hint);
/* Checks until every window has ended. */
void cfx_drain_watches(cfx_t *fx, bool push);

/* The random delay before a cancel, in µs (below max_delay_us): 0 one
 * round in eight. */
unsigned cfx_delay_us(cfx_t *fx);
/* Rounds per transport and direction: fewer under a sanitizer. */
int cfx_rounds(int full);

#endif /* LLK_TEST_CANCEL_FX_H */

/*
 * task_fx.h - what the asynchronous-transfer tests (tests/integration/
 * test_task_*.c) share: an in-process engine, a blocks or batch cache of
 * memory the test holds (filled with a kvfill.h pattern), links to
 * llmlink-node processes, and checks of destination blocks.
 */
#ifndef LLK_TEST_TASK_FX_H
#define LLK_TEST_TASK_FX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmlink.h"
#include "proc.h"

#define TFX_MAX_TENSORS 8

typedef struct tfx_cache {
    int64_t id;
    uint32_t ntensors;
    uint64_t units;      /* blocks, or batch entries */
    uint64_t unit_bytes; /* bytes of one block / entry of one tensor */
    uint64_t seed;
    uint8_t *mem[TFX_MAX_TENSORS];
} tfx_cache_t;

/* A started engine (role, cluster id, NULL-terminated "key=value" options
 * or NULL; listens on 127.0.0.1:0 unless a DECODER). NULL on failure, with
 * a message on stderr. */
llmlink_t *tfx_engine(llmlink_role_t role, uint64_t cluster_id, const char *const *opts);

/* Registers a cache of units x unit_bytes per tensor (fp32, unit_bytes a
 * multiple of 4), filled with seed's pattern; blocks: a blocks cache (key:
 * blocks_key or none), else a batch cache (keys[i] names entry i). 0 or -1. */
int tfx_cache(llmlink_t *e, tfx_cache_t *c, bool blocks, uint32_t ntensors, uint64_t units,
              uint64_t unit_bytes, uint64_t seed, const llmlink_cache_key_t *keys,
              size_t num_keys, void *(*alloc)(size_t));
void tfx_cache_free(llmlink_t *e, tfx_cache_t *c);

/* Links e to a node (its port and cluster id) within timeout_ms. */
llmlink_status_t tfx_link(llmlink_t *e, const proc_t *p, int timeout_ms);
llmlink_status_t tfx_link_port(llmlink_t *e, uint64_t id, uint16_t port, int timeout_ms);

/* Block dst of every tensor of c holds the pattern of (seed, tensor, src
 * block): true, or false with a message in why. */
bool tfx_block_holds(const tfx_cache_t *c, uint64_t dst, uint64_t seed, uint64_t src_block,
                     char *why, size_t wlen);

/* A blocks key / an id-and-index key. */
llmlink_cache_key_t tfx_blocks_key(uint64_t cluster, uint64_t model);
llmlink_cache_key_t tfx_idx_key(uint64_t cluster, int64_t cache_id, uint32_t batch);

/* poll(2) on fd for POLLIN within ms: true when readable. */
bool tfx_readable(int fd, int ms);

#endif /* LLK_TEST_TASK_FX_H */

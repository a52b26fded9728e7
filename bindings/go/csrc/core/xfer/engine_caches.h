/*
 * engine_caches.h - the engine's cache registry, as the ABI layer uses it:
 * ffi/ calls these instead of reaching into the engine (its mutex, its
 * registry, its options).
 *
 * Locks: each function takes e->mu only to check that the engine runs,
 * and releases it before the registry (whose mutex is a leaf) does the
 * work, so a removal that waits for a transfer to end holds no engine lock.
 */
#ifndef LLK_ENGINE_CACHES_H
#define LLK_ENGINE_CACHES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmlink.h"

/* SUCCESS when the engine runs and its registry is usable; else the status
 * to return, with llmlink_last_error set (fn names the API call). */
llmlink_status_t llk_engine_caches_ready(llmlink_t *e, const char *fn);

/* llk_registry_add_access on e's registry, once the engine is ready. */
llmlink_status_t llk_engine_cache_add(llmlink_t *e, const char *fn,
                                      const llmlink_cache_desc_t *desc, const uint64_t *addrs,
                                      size_t num_addrs, const llmlink_cache_key_t *keys,
                                      size_t num_keys, bool blocks, uint32_t access,
                                      int64_t *cache_id, uint64_t *out_addrs);
/* llk_registry_remove, waiting for transfers up to llm.SyncKvCacheWaitTime. */
llmlink_status_t llk_engine_cache_remove(llmlink_t *e, const char *fn, int64_t cache_id,
                                         bool owned);
llmlink_status_t llk_engine_cache_remove_key(llmlink_t *e, const char *fn,
                                             const llmlink_cache_key_t *key);
/* Registered caches; 0 before init. Answers on a finalized engine too:
 * caches stay registered until the engine is freed. */
size_t llk_engine_cache_count(llmlink_t *e);

#endif /* LLK_ENGINE_CACHES_H */

/* engine_caches.c - the engine's cache registry behind the ABI calls. */
#include "xfer/engine_caches.h"

#include "base/err.h"
#include "link/engine.h"
#include "xfer/cache_registry.h"

llmlink_status_t llk_engine_caches_ready(llmlink_t *e, const char *fn)
{
    pthread_mutex_lock(&e->mu);
    llmlink_status_t st = llk_engine_check_running(e, fn);
    if (st == LLMLINK_SUCCESS && !e->reg_ready)
        st = llk_err(LLMLINK_FAILED, "%s: engine (cluster %llu) has no cache registry", fn,
                     (unsigned long long)e->cluster_id);
    pthread_mutex_unlock(&e->mu);
    return st;
}

llmlink_status_t llk_engine_cache_add(llmlink_t *e, const char *fn,
                                      const llmlink_cache_desc_t *desc, const uint64_t *addrs,
                                      size_t num_addrs, const llmlink_cache_key_t *keys,
                                      size_t num_keys, bool blocks, uint32_t access,
                                      int64_t *cache_id, uint64_t *out_addrs)
{
    llmlink_status_t st = llk_engine_caches_ready(e, fn);
    if (st != LLMLINK_SUCCESS)
        return st;
    return llk_registry_add_access(&e->reg, fn, desc, addrs, num_addrs, keys, num_keys, blocks,
                                   access, cache_id, out_addrs);
}

llmlink_status_t llk_engine_cache_remove(llmlink_t *e, const char *fn, int64_t cache_id,
                                         bool owned)
{
    llmlink_status_t st = llk_engine_caches_ready(e, fn);
    if (st != LLMLINK_SUCCESS)
        return st;
    /* opts is fixed while the engine runs (set by init, before RUNNING). */
    return llk_registry_remove(&e->reg, fn, cache_id, owned, e->opts.sync_kv_wait_ms);
}

llmlink_status_t llk_engine_cache_remove_key(llmlink_t *e, const char *fn,
                                             const llmlink_cache_key_t *key)
{
    llmlink_status_t st = llk_engine_caches_ready(e, fn);
    if (st != LLMLINK_SUCCESS)
        return st;
    return llk_registry_remove_key(&e->reg, fn, key);
}

size_t llk_engine_cache_count(llmlink_t *e)
{
    pthread_mutex_lock(&e->mu);
    size_t n = e->reg_ready ? llk_registry_count(&e->reg) : 0;
    pthread_mutex_unlock(&e->mu);
    return n;
}

/* api_cache.c - KV caches and transfers at the ABI: registration,
 * allocation, key removal, pull/push and the transfer counters.
 *
 * Every argument the caller can get wrong without looking at a remote
 * engine is checked here, before the registry or the network is touched,
 * and the message names the argument. What depends on a registered cache
 * (descriptions, addresses, duplicate keys, ids) is checked by the
 * registry (core/cache_registry.c); what depends on the remote cache by the
 * side that holds it. The four transfer calls share one set of helpers. */
#include "llmlink.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "link/engine.h"
#include "xfer/engine_caches.h"
#include "base/err.h"
#include "xfer/xfer.h"
#include "xfer_args.h"

/* A block index at or above this is refused at once: no registrable cache
 * has that many blocks (a tensor is at most 2^48 bytes), and the bound
 * keeps the duplicate check and the planner's arithmetic simple. */
#define BLOCK_INDEX_LIMIT (1ull << 40)
/* Duplicate check: (index << 24 | position) fits 64 bits for indices below
 * 2^40 and lists of at most 2^24 entries. */
#define POS_BITS 24
_Static_assert(LLMLINK_MAX_BLOCKS_PER_CALL <= (1 << POS_BITS), "block list position bits");

#define KBIT(t) (1u << (unsigned)(t))

/* ---- engine and keys -------------------------------------------------- */

static const char *key_type_name(llmlink_cache_key_type_t t)
{
    switch (t) {
    case LLMLINK_KEY_CACHE:
        return "LLMLINK_KEY_CACHE";
    case LLMLINK_KEY_ID_AND_INDEX:
        return "LLMLINK_KEY_ID_AND_INDEX";
    case LLMLINK_KEY_BLOCKS:
        return "LLMLINK_KEY_BLOCKS";
    default:
        return "unknown";
    }
}

static bool key_type_valid(llmlink_cache_key_type_t t)
{
    return t == LLMLINK_KEY_CACHE || t == LLMLINK_KEY_ID_AND_INDEX || t == LLMLINK_KEY_BLOCKS;
}

/*
 * One key argument (arg: "src_key", "keys[3]", ...): its type is one of
 * `allowed` (KBIT of the types; `takes` says which in words), and a
 * CacheKeyByIdAndIndex names an id that can exist.
 */
static llmlink_status_t check_key(const char *fn, const char *arg, const llmlink_cache_key_t *key,
                                  unsigned allowed, const char *takes)
{
    if (!key)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: %s is NULL", fn, arg);
    if (!key_type_valid(key->type))
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: %s.type is %d, not LLMLINK_KEY_CACHE (1), LLMLINK_KEY_ID_AND_INDEX "
                       "(2) or LLMLINK_KEY_BLOCKS (3)", fn, arg, (int)key->type);
    if (!(allowed & KBIT(key->type)))
        return llk_err(LLMLINK_PARAM_INVALID, "%s: %s.type is %s (%d); this call takes %s", fn,
                       arg, key_type_name(key->type), (int)key->type, takes);
    if (key->type == LLMLINK_KEY_ID_AND_INDEX && key->cache_id <= 0)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: %s.cache_id is %lld; a LLMLINK_KEY_ID_AND_INDEX key names a cache "
                       "id >= 1", fn, arg, (long long)key->cache_id);
    return LLMLINK_SUCCESS;
}

static llmlink_status_t check_cache_id(const char *fn, const char *arg, int64_t id)
{
    if (id <= 0)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: %s is %lld; cache ids are >= 1", fn, arg,
                       (long long)id);
    return LLMLINK_SUCCESS;
}

/* ---- registration ----------------------------------------------------- */

/* What register_* and allocate_* share: desc, the cache_id out-parameter,
 * the key list (type `want` only). */
static llmlink_status_t check_registration(const char *fn, const llmlink_cache_desc_t *desc,
                                           const llmlink_cache_key_t *keys, size_t num_keys,
                                           llmlink_cache_key_type_t want, const char *keys_arg,
                                           int64_t *cache_id)
{
    if (!desc)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: desc is NULL", fn);
    if (!cache_id)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: cache_id is NULL", fn);
    if (num_keys > LLMLINK_MAX_KEYS)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: num_keys is %zu, more than LLMLINK_MAX_KEYS (%d)",
                       fn, num_keys, LLMLINK_MAX_KEYS);
    if (num_keys && !keys)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: keys is NULL but num_keys is %zu", fn, num_keys);
    const char *takes = want == LLMLINK_KEY_BLOCKS ? "a LLMLINK_KEY_BLOCKS key (or NULL)"
                                                   : "LLMLINK_KEY_CACHE keys only";
    for (size_t i = 0; i < num_keys; i++) {
        char arg[48];
        if (num_keys == 1 && want == LLMLINK_KEY_BLOCKS)
            snprintf(arg, sizeof arg, "%s", keys_arg);
        else
            snprintf(arg, sizeof arg, "%s[%zu]", keys_arg, i);
        llmlink_status_t st = check_key(fn, arg, &keys[i], KBIT(want), takes);
        if (st != LLMLINK_SUCCESS)
            return st;
    }
    *cache_id = 0;
    return LLMLINK_SUCCESS;
}

/* The registration options (NULL: the defaults) to the access they give. */
static llmlink_status_t check_opts(const char *fn, const llmlink_register_options_t *opts,
                                   uint32_t *access)
{
    *access = LLMLINK_ACCESS_READ_WRITE;
    if (!opts)
        return LLMLINK_SUCCESS;
    if (opts->version != LLMLINK_REGISTER_OPTIONS_VERSION)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: opts->version is %u, expected LLMLINK_REGISTER_OPTIONS_VERSION (%u)",
                       fn, opts->version, LLMLINK_REGISTER_OPTIONS_VERSION);
    if (opts->access > LLMLINK_ACCESS_READ_WRITE)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: opts->access is %u, not LLMLINK_ACCESS_NONE (0), LLMLINK_ACCESS_READ "
                       "(1), LLMLINK_ACCESS_WRITE (2) or LLMLINK_ACCESS_READ_WRITE (3)", fn,
                       opts->access);
    *access = opts->access;
    return LLMLINK_SUCCESS;
}

LLMLINK_EXTERN llmlink_status_t llmlink_register_options_init(llmlink_register_options_t *opts,
                                                              uint32_t version)
{
    static const char fn[] = "llmlink_register_options_init";
    if (!opts)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: opts is NULL", fn);
    if (version != LLMLINK_REGISTER_OPTIONS_VERSION)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: version is %u, expected LLMLINK_REGISTER_OPTIONS_VERSION (%u)", fn,
                       version, LLMLINK_REGISTER_OPTIONS_VERSION);
    const llmlink_register_options_t d = LLMLINK_REGISTER_OPTIONS_INIT;
    *opts = d;
    return LLMLINK_SUCCESS;
}

/* What the four registration calls share after their own arguments are
 * checked: the options, then the registry. addrs NULL: allocate (tensor
 * addresses to out_addrs). */
static llmlink_status_t add_cache(llmlink_t *dd, const char *fn, const llmlink_cache_desc_t *desc,
                                  const uint64_t *addrs, size_t num_addrs,
                                  const llmlink_cache_key_t *keys, size_t num_keys, bool blocks,
                                  const llmlink_register_options_t *opts, int64_t *cache_id,
                                  uint64_t *out_addrs)
{
    uint32_t access = 0;
    llmlink_status_t st = check_opts(fn, opts, &access);
    if (st != LLMLINK_SUCCESS)
        return st;
    return llk_engine_cache_add(dd, fn, desc, addrs, num_addrs, keys, num_keys, blocks, access,
                                cache_id, out_addrs);
}

static llmlink_status_t register_blocks(llmlink_t *dd, const char *fn,
                                        const llmlink_cache_desc_t *desc, const uint64_t *addrs,
                                        size_t num_addrs, const llmlink_cache_key_t *blocks_key,
                                        const llmlink_register_options_t *opts,
                                        int64_t *cache_id)
{
    if (!dd)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: dd is NULL", fn);
    size_t nkeys = blocks_key ? 1 : 0;
    llmlink_status_t st = check_registration(fn, desc, blocks_key, nkeys, LLMLINK_KEY_BLOCKS,
                                             "blocks_key", cache_id);
    if (st != LLMLINK_SUCCESS)
        return st;
    if (!addrs)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: addrs is NULL", fn);
    return add_cache(dd, fn, desc, addrs, num_addrs, blocks_key, nkeys, true, opts, cache_id,
                     NULL);
}

LLMLINK_EXTERN llmlink_status_t llmlink_register_blocks_cache(llmlink_t *dd,
                                                              const llmlink_cache_desc_t *desc,
                                                              const uint64_t *addrs, size_t num_addrs,
                                                              const llmlink_cache_key_t *blocks_key,
                                                              int64_t *cache_id)
{
    return register_blocks(dd, "llmlink_register_blocks_cache", desc, addrs, num_addrs,
                           blocks_key, NULL, cache_id);
}

LLMLINK_EXTERN llmlink_status_t llmlink_register_blocks_cache_opts(
    llmlink_t *dd, const llmlink_cache_desc_t *desc, const uint64_t *addrs, size_t num_addrs,
    const llmlink_cache_key_t *blocks_key, const llmlink_register_options_t *opts,
    int64_t *cache_id)
{
    return register_blocks(dd, "llmlink_register_blocks_cache_opts", desc, addrs, num_addrs,
                           blocks_key, opts, cache_id);
}

static llmlink_status_t register_batch(llmlink_t *dd, const char *fn,
                                       const llmlink_cache_desc_t *desc, const uint64_t *addrs,
                                       size_t num_addrs, const llmlink_cache_key_t *keys,
                                       size_t num_keys, const llmlink_register_options_t *opts,
                                       int64_t *cache_id)
{
    if (!dd)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: dd is NULL", fn);
    llmlink_status_t st = check_registration(fn, desc, keys, num_keys, LLMLINK_KEY_CACHE, "keys",
                                             cache_id);
    if (st != LLMLINK_SUCCESS)
        return st;
    if (!addrs)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: addrs is NULL", fn);
    return add_cache(dd, fn, desc, addrs, num_addrs, keys, num_keys, false, opts, cache_id, NULL);
}

LLMLINK_EXTERN llmlink_status_t llmlink_register_cache(llmlink_t *dd,
                                                       const llmlink_cache_desc_t *desc,
                                                       const uint64_t *addrs, size_t num_addrs,
                                                       const llmlink_cache_key_t *keys,
                                                       size_t num_keys, int64_t *cache_id)
{
    return register_batch(dd, "llmlink_register_cache", desc, addrs, num_addrs, keys, num_keys,
                          NULL, cache_id);
}

LLMLINK_EXTERN llmlink_status_t llmlink_register_cache_opts(
    llmlink_t *dd, const llmlink_cache_desc_t *desc, const uint64_t *addrs, size_t num_addrs,
    const llmlink_cache_key_t *keys, size_t num_keys, const llmlink_register_options_t *opts,
    int64_t *cache_id)
{
    return register_batch(dd, "llmlink_register_cache_opts", desc, addrs, num_addrs, keys,
                          num_keys, opts, cache_id);
}

static llmlink_status_t check_tensor_addrs(const char *fn, const llmlink_cache_desc_t *desc,
                                           const uint64_t *tensor_addrs, size_t n)
{
    if (!tensor_addrs)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: tensor_addrs is NULL", fn);
    if (n < desc->num_tensors)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: num_tensor_addrs is %zu, less than desc->num_tensors (%u)", fn, n,
                       desc->num_tensors);
    return LLMLINK_SUCCESS;
}

/* allocate_cache (blocks false: keys are CacheKeys) and
 * allocate_blocks_cache (blocks true: keys is the blocks key or NULL). */
static llmlink_status_t allocate(llmlink_t *dd, const char *fn, const llmlink_cache_desc_t *desc,
                                 const llmlink_cache_key_t *keys, size_t num_keys, bool blocks,
                                 const llmlink_register_options_t *opts, int64_t *cache_id,
                                 uint64_t *tensor_addrs, size_t num_tensor_addrs)
{
    if (!dd)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: dd is NULL", fn);
    llmlink_status_t st =
        blocks ? check_registration(fn, desc, keys, num_keys, LLMLINK_KEY_BLOCKS, "blocks_key",
                                    cache_id)
               : check_registration(fn, desc, keys, num_keys, LLMLINK_KEY_CACHE, "keys",
                                    cache_id);
    if (st == LLMLINK_SUCCESS)
        st = check_tensor_addrs(fn, desc, tensor_addrs, num_tensor_addrs);
    if (st != LLMLINK_SUCCESS)
        return st;
    return add_cache(dd, fn, desc, NULL, desc->num_tensors, keys, num_keys, blocks, opts,
                     cache_id, tensor_addrs);
}

LLMLINK_EXTERN llmlink_status_t llmlink_allocate_cache(llmlink_t *dd,
                                                       const llmlink_cache_desc_t *desc,
                                                       const llmlink_cache_key_t *keys,
                                                       size_t num_keys, int64_t *cache_id,
                                                       uint64_t *tensor_addrs,
                                                       size_t num_tensor_addrs)
{
    return allocate(dd, "llmlink_allocate_cache", desc, keys, num_keys, false, NULL, cache_id,
                    tensor_addrs, num_tensor_addrs);
}

LLMLINK_EXTERN llmlink_status_t llmlink_allocate_cache_opts(
    llmlink_t *dd, const llmlink_cache_desc_t *desc, const llmlink_cache_key_t *keys,
    size_t num_keys, const llmlink_register_options_t *opts, int64_t *cache_id,
    uint64_t *tensor_addrs, size_t num_tensor_addrs)
{
    return allocate(dd, "llmlink_allocate_cache_opts", desc, keys, num_keys, false, opts,
                    cache_id, tensor_addrs, num_tensor_addrs);
}

LLMLINK_EXTERN llmlink_status_t llmlink_allocate_blocks_cache(llmlink_t *dd,
                                                              const llmlink_cache_desc_t *desc,
                                                              const llmlink_cache_key_t *blocks_key,
                                                              int64_t *cache_id,
                                                              uint64_t *tensor_addrs,
                                                              size_t num_tensor_addrs)
{
    return allocate(dd, "llmlink_allocate_blocks_cache", desc, blocks_key, blocks_key ? 1 : 0,
                    true, NULL, cache_id, tensor_addrs, num_tensor_addrs);
}

LLMLINK_EXTERN llmlink_status_t llmlink_allocate_blocks_cache_opts(
    llmlink_t *dd, const llmlink_cache_desc_t *desc, const llmlink_cache_key_t *blocks_key,
    const llmlink_register_options_t *opts, int64_t *cache_id, uint64_t *tensor_addrs,
    size_t num_tensor_addrs)
{
    return allocate(dd, "llmlink_allocate_blocks_cache_opts", desc, blocks_key,
                    blocks_key ? 1 : 0, true, opts, cache_id, tensor_addrs, num_tensor_addrs);
}

static llmlink_status_t remove_cache(llmlink_t *dd, const char *fn, int64_t cache_id, bool owned)
{
    if (!dd)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: dd is NULL", fn);
    llmlink_status_t st = check_cache_id(fn, "cache_id", cache_id);
    if (st != LLMLINK_SUCCESS)
        return st;
    return llk_engine_cache_remove(dd, fn, cache_id, owned);
}

LLMLINK_EXTERN llmlink_status_t llmlink_unregister_cache(llmlink_t *dd, int64_t cache_id)
{
    return remove_cache(dd, "llmlink_unregister_cache", cache_id, false);
}

LLMLINK_EXTERN llmlink_status_t llmlink_deallocate_cache(llmlink_t *dd, int64_t cache_id)
{
    return remove_cache(dd, "llmlink_deallocate_cache", cache_id, true);
}

LLMLINK_EXTERN llmlink_status_t llmlink_remove_cache_key(llmlink_t *dd,
                                                         const llmlink_cache_key_t *key)
{
    static const char fn[] = "llmlink_remove_cache_key";
    if (!dd)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: dd is NULL", fn);
    llmlink_status_t st = check_key(fn, "key", key, KBIT(LLMLINK_KEY_CACHE) | KBIT(LLMLINK_KEY_BLOCKS),
                                    "LLMLINK_KEY_CACHE or LLMLINK_KEY_BLOCKS");
    if (st != LLMLINK_SUCCESS)
        return st;
    return llk_engine_cache_remove_key(dd, fn, key);
}

/* ---- transfers: block lists ------------------------------------------- */

/* A block list argument (arg: "src_blocks"): count, pointer, index bound. */
static llmlink_status_t check_block_list(const char *fn, const char *arg, const uint64_t *b,
                                         size_t n)
{
    if (n > LLMLINK_MAX_BLOCKS_PER_CALL)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: num_%s is %zu, more than LLMLINK_MAX_BLOCKS_PER_CALL (%d)", fn, arg, n,
                       LLMLINK_MAX_BLOCKS_PER_CALL);
    if (n && !b)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: %s is NULL but num_%s is %zu", fn, arg, arg, n);
    for (size_t i = 0; i < n; i++)
        if (b[i] >= BLOCK_INDEX_LIMIT)
            return llk_err(LLMLINK_PARAM_INVALID,
                           "%s: %s[%zu] (%llu) is not a block index (at most 2^40 - 1)", fn, arg,
                           i, (unsigned long long)b[i]);
    return LLMLINK_SUCCESS;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* No index appears twice in b (entries already < 2^40): sorts a copy of
 * (index, position) pairs, O(n log n), 8 bytes per entry. Reports the
 * first position (in list order) that repeats an earlier entry. */
static llmlink_status_t check_unique(const char *fn, const char *arg, const uint64_t *b, size_t n)
{
    if (n <= 32) { /* short lists: no allocation */
        for (size_t i = 1; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (b[i] == b[j])
                    return llk_err(LLMLINK_PARAM_INVALID,
                                   "%s: %s[%zu] (%llu) appears twice (also %s[%zu])", fn, arg, i,
                                   (unsigned long long)b[i], arg, j);
        return LLMLINK_SUCCESS;
    }
    uint64_t *v = malloc(n * sizeof *v);
    if (!v)
        return llk_err(LLMLINK_OUT_OF_MEMORY, "%s: out of memory checking %s (%zu entries)", fn,
                       arg, n);
    for (size_t i = 0; i < n; i++)
        v[i] = b[i] << POS_BITS | (uint64_t)i;
    qsort(v, n, sizeof *v, cmp_u64);
    const uint64_t mask = (1ull << POS_BITS) - 1;
    size_t dup = n, first = 0;
    for (size_t i = 1; i < n; i++) {
        /* within a run of equal indices positions ascend: v[i] repeats the
         * run's first entry v[i - 1] when it opens the run's duplicates */
        if (v[i] >> POS_BITS == v[i - 1] >> POS_BITS && (size_t)(v[i] & mask) < dup) {
            dup = (size_t)(v[i] & mask);
            first = (size_t)(v[i - 1] & mask);
        }
    }
    free(v);
    if (dup < n)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: %s[%zu] (%llu) appears twice (also %s[%zu])",
                       fn, arg, dup, (unsigned long long)b[dup], arg, first);
    return LLMLINK_SUCCESS;
}

/* ---- transfers: layers, sizes ----------------------------------------- */

static llmlink_status_t check_range(const char *fn, const char *which, int32_t start, int32_t end,
                                    uint32_t tpl, bool *every)
{
    *every = start == -1 && end == -1;
    if (*every)
        return LLMLINK_SUCCESS;
    if (start < 0 || end <= start)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: layers->%s_start/%s_end is [%d, %d); a range is -1, -1 (every "
                       "layer) or 0 <= start < end", fn, which, which, (int)start, (int)end);
    if ((uint64_t)end * tpl > LLMLINK_MAX_TENSORS)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: layers->%s_end (%d) x tensors_per_layer (%u) is past "
                       "LLMLINK_MAX_TENSORS (%d) tensors", fn, which, (int)end, tpl,
                       LLMLINK_MAX_TENSORS);
    return LLMLINK_SUCCESS;
}

/* layers may be NULL; on success *out is the normalised copy. */
static llmlink_status_t check_layers(const char *fn, const llmlink_layer_range_t *layers,
                                     bool *has, llmlink_layer_range_t *out)
{
    *has = layers != NULL;
    memset(out, 0, sizeof *out);
    if (!layers)
        return LLMLINK_SUCCESS;
    *out = *layers;
    if (out->tensors_per_layer == 0)
        out->tensors_per_layer = 2;
    uint32_t tpl = out->tensors_per_layer;
    if (tpl > LLMLINK_MAX_TENSORS)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: layers->tensors_per_layer is %u, more than LLMLINK_MAX_TENSORS (%d)",
                       fn, tpl, LLMLINK_MAX_TENSORS);
    bool src_every, dst_every;
    llmlink_status_t st = check_range(fn, "src", layers->src_start, layers->src_end, tpl,
                                      &src_every);
    if (st == LLMLINK_SUCCESS)
        st = check_range(fn, "dst", layers->dst_start, layers->dst_end, tpl, &dst_every);
    if (st != LLMLINK_SUCCESS)
        return st;
    if (src_every != dst_every)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: layers: src range [%d, %d) and dst range [%d, %d): give both ranges "
                       "or neither (-1, -1 for both means every layer)", fn,
                       (int)layers->src_start, (int)layers->src_end, (int)layers->dst_start,
                       (int)layers->dst_end);
    if (!src_every && layers->src_end - layers->src_start != layers->dst_end - layers->dst_start)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: layers: src range [%d, %d) covers %d layers, dst range [%d, %d) "
                       "%d; both ranges must cover the same number", fn, (int)layers->src_start,
                       (int)layers->src_end, (int)(layers->src_end - layers->src_start),
                       (int)layers->dst_start, (int)layers->dst_end,
                       (int)(layers->dst_end - layers->dst_start));
    return LLMLINK_SUCCESS;
}

static llmlink_status_t check_size(const char *fn, int64_t size)
{
    if (size == 0 || size < -1)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: size is %lld; give the bytes per tensor (>= 1) or -1 for the whole "
                       "entry", fn, (long long)size);
    return LLMLINK_SUCCESS;
}

/* ---- transfers: the four calls ---------------------------------------- */

/* The key, local id and layers every transfer has. */
static llmlink_status_t start_req(llk_xfer_req_t *req, const char *fn, bool push,
                                  const char *key_arg, const llmlink_cache_key_t *key,
                                  unsigned allowed, const char *takes, const char *id_arg,
                                  int64_t local_id, const llmlink_layer_range_t *layers)
{
    memset(req, 0, sizeof *req);
    req->fn = fn;
    req->push = push;
    llmlink_status_t st = check_key(fn, key_arg, key, allowed, takes);
    if (st == LLMLINK_SUCCESS)
        st = check_cache_id(fn, id_arg, local_id);
    if (st == LLMLINK_SUCCESS)
        st = check_layers(fn, layers, &req->has_layers, &req->layers);
    if (st != LLMLINK_SUCCESS)
        return st;
    req->key = *key;
    req->local_id = local_id;
    return LLMLINK_SUCCESS;
}

/* src_blocks[i] -> dst_blocks[i], equal counts >= 1; src_absent: a pull by
 * CacheKey, where the entry fills dst_blocks (no src list). Destination
 * blocks are unique: the remote ones for a push, the local ones for a pull;
 * a source block may be read twice. */
static llmlink_status_t check_block_pairs(const char *fn, const uint64_t *src, size_t nsrc,
                                          const uint64_t *dst, size_t ndst, bool src_absent)
{
    llmlink_status_t st = check_block_list(fn, "src_blocks", src, nsrc);
    if (st == LLMLINK_SUCCESS)
        st = check_block_list(fn, "dst_blocks", dst, ndst);
    if (st != LLMLINK_SUCCESS)
        return st;
    if (ndst == 0)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: num_dst_blocks is 0; name at least one block",
                       fn);
    if (!src_absent && nsrc != ndst)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: num_src_blocks (%zu) differs from num_dst_blocks (%zu); "
                       "src_blocks[i] goes to dst_blocks[i]", fn, nsrc, ndst);
    return check_unique(fn, "dst_blocks", dst, ndst);
}

static llmlink_status_t run(llmlink_t *dd, const llk_xfer_req_t *req)
{
    llmlink_status_t st = llk_engine_caches_ready(dd, req->fn);
    if (st != LLMLINK_SUCCESS)
        return st;
    return llk_xfer_run(dd, req, NULL);
}

/* The request builders the blocking calls and their *_async forms share
 * (ffi/xfer_args.h): every check that needs no cache and no network. */
llmlink_status_t llk_args_pull_blocks(llk_xfer_req_t *req, const char *fn,
                                      const llmlink_cache_key_t *src_key, int64_t dst_cache_id,
                                      const uint64_t *src_blocks, size_t num_src_blocks,
                                      const uint64_t *dst_blocks, size_t num_dst_blocks,
                                      const llmlink_layer_range_t *layers)
{
    llmlink_status_t st = start_req(
        req, fn, false, "src_key", src_key,
        KBIT(LLMLINK_KEY_BLOCKS) | KBIT(LLMLINK_KEY_CACHE) | KBIT(LLMLINK_KEY_ID_AND_INDEX),
        "LLMLINK_KEY_BLOCKS (with src_blocks), LLMLINK_KEY_CACHE or LLMLINK_KEY_ID_AND_INDEX "
        "(without)", "dst_cache_id", dst_cache_id, layers);
    if (st != LLMLINK_SUCCESS)
        return st;
    bool by_cache = src_key->type != LLMLINK_KEY_BLOCKS;
    if (by_cache && (src_blocks || num_src_blocks))
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: src_key is %s: src_blocks must be NULL and num_src_blocks 0 (the "
                       "batch entry fills dst_blocks in order), not %s and %zu", fn,
                       key_type_name(src_key->type), src_blocks ? "non-NULL" : "NULL",
                       num_src_blocks);
    st = check_block_pairs(fn, src_blocks, num_src_blocks, dst_blocks, num_dst_blocks, by_cache);
    if (st != LLMLINK_SUCCESS)
        return st;
    req->kind = by_cache ? LLK_XKIND_CACHE_AS_BLOCKS : LLK_XKIND_BLOCKS;
    req->local_blocks = dst_blocks;
    req->remote_blocks = by_cache ? NULL : src_blocks;
    req->nblocks = num_dst_blocks;
    req->size = -1;
    return LLMLINK_SUCCESS;
}

llmlink_status_t llk_args_push_blocks(llk_xfer_req_t *req, const char *fn,
                                      const llmlink_cache_key_t *dst_key, int64_t src_cache_id,
                                      const uint64_t *src_blocks, size_t num_src_blocks,
                                      const uint64_t *dst_blocks, size_t num_dst_blocks,
                                      const llmlink_layer_range_t *layers)
{
    llmlink_status_t st = start_req(req, fn, true, "dst_key", dst_key, KBIT(LLMLINK_KEY_BLOCKS),
                                    "LLMLINK_KEY_BLOCKS only", "src_cache_id", src_cache_id,
                                    layers);
    if (st == LLMLINK_SUCCESS)
        st = check_block_pairs(fn, src_blocks, num_src_blocks, dst_blocks, num_dst_blocks, false);
    if (st != LLMLINK_SUCCESS)
        return st;
    req->kind = LLK_XKIND_BLOCKS;
    req->local_blocks = src_blocks;
    req->remote_blocks = dst_blocks;
    req->nblocks = num_dst_blocks;
    req->size = -1;
    return LLMLINK_SUCCESS;
}

llmlink_status_t llk_args_cache(llk_xfer_req_t *req, const char *fn, bool push,
                                const char *key_arg, const llmlink_cache_key_t *key,
                                const char *id_arg, int64_t local_id, uint32_t local_batch,
                                int64_t size, const llmlink_layer_range_t *layers)
{
    llmlink_status_t st = start_req(req, fn, push, key_arg, key,
                                    KBIT(LLMLINK_KEY_CACHE) | KBIT(LLMLINK_KEY_ID_AND_INDEX),
                                    "LLMLINK_KEY_CACHE or LLMLINK_KEY_ID_AND_INDEX", id_arg,
                                    local_id, layers);
    if (st == LLMLINK_SUCCESS)
        st = check_size(fn, size);
    if (st != LLMLINK_SUCCESS)
        return st;
    req->kind = LLK_XKIND_CACHE;
    req->local_batch = local_batch;
    req->size = size;
    return LLMLINK_SUCCESS;
}

llmlink_status_t llk_args_layers(const char *fn, const llmlink_layer_range_t *layers)
{
    bool has;
    llmlink_layer_range_t norm;
    return check_layers(fn, layers, &has, &norm);
}

llmlink_status_t llk_args_key(const char *fn, const char *arg, const llmlink_cache_key_t *key)
{
    return check_key(fn, arg, key,
                     KBIT(LLMLINK_KEY_BLOCKS) | KBIT(LLMLINK_KEY_CACHE) |
                         KBIT(LLMLINK_KEY_ID_AND_INDEX),
                     "LLMLINK_KEY_BLOCKS, LLMLINK_KEY_CACHE or LLMLINK_KEY_ID_AND_INDEX");
}

llmlink_status_t llk_args_block_pairs(const char *fn, const uint64_t *src, size_t nsrc,
                                      const uint64_t *dst, size_t ndst)
{
    return check_block_pairs(fn, src, nsrc, dst, ndst, false);
}

LLMLINK_EXTERN llmlink_status_t llmlink_pull_blocks(llmlink_t *dd, const llmlink_cache_key_t *src_key,
                                                    int64_t dst_cache_id, const uint64_t *src_blocks,
                                                    size_t num_src_blocks, const uint64_t *dst_blocks,
                                                    size_t num_dst_blocks,
                                                    const llmlink_layer_range_t *layers)
{
    static const char fn[] = "llmlink_pull_blocks";
    if (!dd)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: dd is NULL", fn);
    llk_xfer_req_t req;
    llmlink_status_t st = llk_args_pull_blocks(&req, fn, src_key, dst_cache_id, src_blocks,
                                               num_src_blocks, dst_blocks, num_dst_blocks, layers);
    return st != LLMLINK_SUCCESS ? st : run(dd, &req);
}

LLMLINK_EXTERN llmlink_status_t llmlink_push_blocks(llmlink_t *dd, const llmlink_cache_key_t *dst_key,
                                                    int64_t src_cache_id, const uint64_t *src_blocks,
                                                    size_t num_src_blocks, const uint64_t *dst_blocks,
                                                    size_t num_dst_blocks,
                                                    const llmlink_layer_range_t *layers)
{
    static const char fn[] = "llmlink_push_blocks";
    if (!dd)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: dd is NULL", fn);
    llk_xfer_req_t req;
    llmlink_status_t st = llk_args_push_blocks(&req, fn, dst_key, src_cache_id, src_blocks,
                                               num_src_blocks, dst_blocks, num_dst_blocks, layers);
    return st != LLMLINK_SUCCESS ? st : run(dd, &req);
}

/* pull_cache / push_cache: one batch entry. */
static llmlink_status_t cache_call(llmlink_t *dd, const char *fn, bool push, const char *key_arg,
                                   const llmlink_cache_key_t *key, const char *id_arg,
                                   int64_t local_id, uint32_t local_batch, int64_t size,
                                   const llmlink_layer_range_t *layers)
{
    if (!dd)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: dd is NULL", fn);
    llk_xfer_req_t req;
    llmlink_status_t st = llk_args_cache(&req, fn, push, key_arg, key, id_arg, local_id,
                                         local_batch, size, layers);
    return st != LLMLINK_SUCCESS ? st : run(dd, &req);
}

LLMLINK_EXTERN llmlink_status_t llmlink_pull_cache(llmlink_t *dd, const llmlink_cache_key_t *src_key,
                                                   int64_t dst_cache_id, uint32_t batch_index,
                                                   int64_t size, const llmlink_layer_range_t *layers)
{
    return cache_call(dd, "llmlink_pull_cache", false, "src_key", src_key, "dst_cache_id",
                      dst_cache_id, batch_index, size, layers);
}

LLMLINK_EXTERN llmlink_status_t llmlink_push_cache(llmlink_t *dd, const llmlink_cache_key_t *dst_key,
                                                   int64_t src_cache_id, uint32_t src_batch_index,
                                                   int64_t size, const llmlink_layer_range_t *layers)
{
    return cache_call(dd, "llmlink_push_cache", true, "dst_key", dst_key, "src_cache_id",
                      src_cache_id, src_batch_index, size, layers);
}

/* ---- counters ----------------------------------------------------------- */

LLMLINK_EXTERN llmlink_status_t llmlink_get_xfer_stats(llmlink_t *dd, llmlink_xfer_stats_t *stats)
{
    static const char fn[] = "llmlink_get_xfer_stats";
    if (!dd || !stats)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: %s is NULL", fn, dd ? "stats" : "dd");
    uint32_t version = stats->version;
    if (version != 1 && version != LLMLINK_XFER_STATS_VERSION)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: stats->version is %u, expected LLMLINK_XFER_STATS_VERSION (%u) or 1",
                       fn, version, LLMLINK_XFER_STATS_VERSION);
    /* Filled whole here, then copied as far as the caller's version goes:
     * a version-1 caller's struct ends before rdma_requests. */
    llmlink_xfer_stats_t all;
    memset(&all, 0, sizeof all);
    /* Answers on a finalized engine too (as llmlink_get_stats). */
    llmlink_status_t st = llk_engine_xfer_stats(dd, &all);
    if (st != LLMLINK_SUCCESS)
        return st;
    size_t n = llk_engine_cache_count(dd);
    all.version = version;
    all.caches = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
    memcpy(stats, &all,
           version == 1 ? offsetof(llmlink_xfer_stats_t, rdma_requests) : sizeof all);
    return LLMLINK_SUCCESS;
}

LLMLINK_EXTERN llmlink_status_t llmlink_get_link_stats(llmlink_t *dd, uint64_t cluster_id,
                                                       llmlink_link_stats_t *stats)
{
    static const char fn[] = "llmlink_get_link_stats";
    if (!dd || !stats)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: %s is NULL", fn, dd ? "stats" : "dd");
    uint32_t version = stats->version;
    if (version < 1 || version > LLMLINK_LINK_STATS_VERSION)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: stats->version is %u, expected 1..LLMLINK_LINK_STATS_VERSION (%u)", fn,
                       version, LLMLINK_LINK_STATS_VERSION);
    llmlink_link_stats_t all;
    memset(&all, 0, sizeof all);
    llmlink_status_t st = llk_xfer_link_stats(dd, cluster_id, fn, &all);
    if (st != LLMLINK_SUCCESS)
        return st;
    all.version = version;
    /* A version-1 caller's struct ends before the rail fields. */
    memcpy(stats, &all, version == 1 ? offsetof(llmlink_link_stats_t, rdma_rails) : sizeof all);
    return LLMLINK_SUCCESS;
}

/*
 * cache_registry.c - the caches an engine registered or allocated, and their
 * keys (see cache_registry.h for the contract).
 *
 * One mutex (r->mu) guards the list and every entry's users, refs, dying,
 * id_dropped and key arrays; it is a leaf lock. Entries are freed (munmap,
 * free) after the mutex is dropped, so that unmapping a large cache never
 * stalls the owner thread's lookups.
 *
 * Keys of a request cache are kept sorted by identity (req_id, model_id,
 * prefix_id), with key_index[] saying which batch entry each one names: a
 * lookup is then a binary search per cache, and the duplicate check of a
 * register call with many keys stays O(n log n) instead of O(n^2).
 */
#include "xfer/cache_registry.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"

/* Owned tensors start on this boundary (or the page size, if larger). */
#define LLK_ALLOC_ALIGN 4096u

static const char *fname(const char *fn) { return fn != NULL ? fn : "llmlink"; }

/* ---- keys ------------------------------------------------------------------ */

/* A key spelled out for messages. Returned by value so that it can sit in a
 * printf argument list. */
typedef struct key_text {
    char s[192];
} key_text_t;

static key_text_t key_text(const llmlink_cache_key_t *k)
{
    key_text_t t;
    switch (k->type) {
    case LLMLINK_KEY_CACHE:
        snprintf(t.s, sizeof t.s,
                 "CacheKey(cluster_id %" PRIu64 ", req_id %" PRIu64 ", model_id %" PRIu64
                 ", prefix_id %" PRId64 ")",
                 k->cluster_id, k->req_id, k->model_id, k->prefix_id);
        break;
    case LLMLINK_KEY_BLOCKS:
        snprintf(t.s, sizeof t.s, "BlocksCacheKey(cluster_id %" PRIu64 ", model_id %" PRIu64 ")",
                 k->cluster_id, k->model_id);
        break;
    case LLMLINK_KEY_ID_AND_INDEX:
        snprintf(t.s, sizeof t.s,
                 "CacheKeyByIdAndIndex(cluster_id %" PRIu64 ", cache_id %" PRId64
                 ", batch_index %" PRIu32 ")",
                 k->cluster_id, k->cache_id, k->batch_index);
        break;
    default:
        snprintf(t.s, sizeof t.s, "key of unknown type %d", (int)k->type);
        break;
    }
    return t;
}

/* Identity of a CacheKey: cluster_id names the holder, not the entry, so it
 * takes no part. */
static int cache_key_cmp(const llmlink_cache_key_t *a, const llmlink_cache_key_t *b)
{
    if (a->req_id != b->req_id)
        return a->req_id < b->req_id ? -1 : 1;
    if (a->model_id != b->model_id)
        return a->model_id < b->model_id ? -1 : 1;
    if (a->prefix_id != b->prefix_id)
        return a->prefix_id < b->prefix_id ? -1 : 1;
    return 0;
}

/* Binary search of a CacheKey in a request cache's sorted keys. */
static bool find_cache_key(const llk_cache_t *c, const llmlink_cache_key_t *k, size_t *pos)
{
    size_t lo = 0, hi = c->num_keys;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int d = cache_key_cmp(&c->keys[mid], k);
        if (d == 0) {
            *pos = mid;
            return true;
        }
        if (d < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* Whether c holds key k (CACHE or BLOCKS); *pos is its slot in c->keys. */
static bool cache_has_key(const llk_cache_t *c, const llmlink_cache_key_t *k, size_t *pos)
{
    if (k->type == LLMLINK_KEY_BLOCKS) {
        if (!c->blocks || c->num_keys == 0 || c->keys[0].model_id != k->model_id)
            return false;
        *pos = 0;
        return true;
    }
    if (k->type == LLMLINK_KEY_CACHE && !c->blocks)
        return find_cache_key(c, k, pos);
    return false;
}

/* Takes slot pos out of c's key arrays, keeping them sorted. */
static void drop_key_slot(llk_cache_t *c, size_t pos)
{
    size_t tail = c->num_keys - pos - 1;
    memmove(&c->keys[pos], &c->keys[pos + 1], tail * sizeof c->keys[0]);
    memmove(&c->key_index[pos], &c->key_index[pos + 1], tail * sizeof c->key_index[0]);
    c->num_keys--;
}

/* ---- descriptions -------------------------------------------------------------- */

uint64_t llk_dtype_size(llmlink_data_type_t t)
{
    switch (t) {
    case LLMLINK_DT_INT8:
    case LLMLINK_DT_UINT8:
    case LLMLINK_DT_BOOL:
        return 1;
    case LLMLINK_DT_FLOAT16:
    case LLMLINK_DT_INT16:
    case LLMLINK_DT_UINT16:
    case LLMLINK_DT_BF16:
        return 2;
    case LLMLINK_DT_FLOAT:
    case LLMLINK_DT_INT32:
    case LLMLINK_DT_UINT32:
        return 4;
    case LLMLINK_DT_INT64:
    case LLMLINK_DT_UINT64:
    case LLMLINK_DT_DOUBLE:
        return 8;
    }
    return 0;
}

/* Multiplies the dimensions into *bytes, refusing anything past 2^48. Each
 * factor is checked against what is left of the limit, so the product never
 * overflows. */
static llmlink_status_t desc_bytes(const char *fn, const llmlink_cache_desc_t *desc,
                                   uint64_t elem, uint64_t *bytes)
{
    uint64_t b = elem;
    for (uint32_t i = 0; i < desc->num_dims; i++) {
        if (desc->shape[i] < 1)
            return llk_err(LLMLINK_PARAM_INVALID, "%s: desc->shape[%" PRIu32 "] is %" PRId64
                           ", every dimension must be >= 1", fn, i, desc->shape[i]);
        if ((uint64_t)desc->shape[i] > LLK_MAX_TENSOR_BYTES / b)
            return llk_err(LLMLINK_PARAM_INVALID,
                           "%s: desc->shape[%" PRIu32 "] (%" PRId64 ") makes a tensor larger "
                           "than 2^48 bytes", fn, i, desc->shape[i]);
        b *= (uint64_t)desc->shape[i];
    }
    *bytes = b;
    return LLMLINK_SUCCESS;
}

llmlink_status_t llk_registry_check_desc(const char *fn, const llmlink_cache_desc_t *desc,
                                         uint64_t *tensor_bytes, uint64_t *unit_bytes)
{
    fn = fname(fn);
    if (desc == NULL)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: desc is NULL", fn);
    if (desc->num_tensors < 1 || desc->num_tensors > LLMLINK_MAX_TENSORS)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: desc->num_tensors is %" PRIu32
                       ", must be 1..%d", fn, desc->num_tensors, LLMLINK_MAX_TENSORS);
    uint64_t elem = llk_dtype_size(desc->data_type);
    if (elem == 0)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: desc->data_type %d is not a known data type",
                       fn, (int)desc->data_type);
    if (desc->num_dims < 1 || desc->num_dims > LLMLINK_MAX_DIMS)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: desc->num_dims is %" PRIu32 ", must be 1..%d",
                       fn, desc->num_dims, LLMLINK_MAX_DIMS);
    uint64_t bytes = 0;
    llmlink_status_t st = desc_bytes(fn, desc, elem, &bytes);
    if (st != LLMLINK_SUCCESS)
        return st;
    if (desc->placement == LLMLINK_PLACEMENT_DEVICE)
        return llk_err(LLMLINK_FEATURE_NOT_ENABLED,
                       "%s: desc->placement is DEVICE: only host memory can be registered in "
                       "this version", fn);
    if (desc->placement != LLMLINK_PLACEMENT_HOST)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: desc->placement %d is not a placement", fn,
                       (int)desc->placement);
    if (tensor_bytes != NULL)
        *tensor_bytes = bytes;
    if (unit_bytes != NULL) /* exact: shape[0] is one of the factors */
        *unit_bytes = bytes / (uint64_t)desc->shape[0];
    return LLMLINK_SUCCESS;
}

/* ---- argument checks of add (no lock, no allocation) ------------------------------ */

static llmlink_status_t check_addrs(const char *fn, const llmlink_cache_desc_t *desc,
                                    const uint64_t *addrs, size_t num_addrs,
                                    uint64_t tensor_bytes)
{
    if (num_addrs != desc->num_tensors)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: num_addrs is %zu, desc->num_tensors is %" PRIu32,
                       fn, num_addrs, desc->num_tensors);
    for (size_t i = 0; i < num_addrs; i++) {
        if (addrs[i] == 0)
            return llk_err(LLMLINK_PARAM_INVALID, "%s: addrs[%zu] is 0", fn, i);
        if (addrs[i] > (uint64_t)UINTPTR_MAX - tensor_bytes)
            return llk_err(LLMLINK_PARAM_INVALID,
                           "%s: addrs[%zu] (0x%" PRIx64 ") + %" PRIu64 " bytes wraps around "
                           "the address space", fn, i, addrs[i], tensor_bytes);
    }
    return LLMLINK_SUCCESS;
}

static llmlink_status_t check_blocks_keys(const char *fn, const llmlink_cache_key_t *keys,
                                          size_t num_keys)
{
    if (num_keys > 1)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: a blocks cache has at most one key (blocks_key), num_keys is %zu", fn,
                       num_keys);
    if (num_keys == 1 && keys[0].type != LLMLINK_KEY_BLOCKS)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: blocks_key->type is %d, must be LLMLINK_KEY_BLOCKS (%d)", fn,
                       (int)keys[0].type, (int)LLMLINK_KEY_BLOCKS);
    return LLMLINK_SUCCESS;
}

static llmlink_status_t check_cache_keys(const char *fn, const llmlink_cache_desc_t *desc,
                                         const llmlink_cache_key_t *keys, size_t num_keys)
{
    if (num_keys > LLMLINK_MAX_KEYS)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: num_keys is %zu, at most %d per call", fn,
                       num_keys, LLMLINK_MAX_KEYS);
    if ((uint64_t)num_keys > (uint64_t)desc->shape[0])
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: num_keys is %zu, more than the %" PRId64 " batch entries of "
                       "desc->shape[0]", fn, num_keys, desc->shape[0]);
    for (size_t i = 0; i < num_keys; i++)
        if (keys[i].type != LLMLINK_KEY_CACHE)
            return llk_err(LLMLINK_PARAM_INVALID,
                           "%s: keys[%zu].type is %d, must be LLMLINK_KEY_CACHE (%d)", fn, i,
                           (int)keys[i].type, (int)LLMLINK_KEY_CACHE);
    return LLMLINK_SUCCESS;
}

static llmlink_status_t check_keys(const char *fn, const llmlink_cache_desc_t *desc,
                                   const llmlink_cache_key_t *keys, size_t num_keys, bool blocks)
{
    if (keys == NULL && num_keys > 0)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: %s is NULL with num_keys %zu", fn,
                       blocks ? "blocks_key" : "keys", num_keys);
    return blocks ? check_blocks_keys(fn, keys, num_keys)
                  : check_cache_keys(fn, desc, keys, num_keys);
}

/* ---- entries ------------------------------------------------------------------------ */

static void cache_free(llk_registry_t *r, llk_cache_t *c)
{
    if (c == NULL)
        return;
    /* The transport reads and clears c->xport under its own lock: the
     * registry never looks at it. */
    if (r != NULL && r->xport_free != NULL)
        r->xport_free(r->xport_ctx, c);
    if (c->mapping != NULL)
        munmap(c->mapping, c->mapping_len);
    free(c->addrs);
    free(c->keys);
    free(c->key_index);
    free(c);
}

/* A key with the batch entry it names, for sorting. */
typedef struct keyed {
    llmlink_cache_key_t key;
    uint64_t index;
} keyed_t;

static int keyed_cmp(const void *a, const void *b)
{
    const keyed_t *x = a, *y = b;
    int d = cache_key_cmp(&x->key, &y->key);
    if (d != 0)
        return d;
    return x->index < y->index ? -1 : (x->index > y->index);
}

/* Among equal neighbours of the sorted array, the pair whose later index is
 * lowest: the message then names the first repeated argument. */
static llmlink_status_t check_sorted_unique(const char *fn, const keyed_t *s, size_t n)
{
    size_t best = SIZE_MAX; /* position in s of the repeat to report */
    for (size_t i = 1; i < n; i++)
        if (cache_key_cmp(&s[i - 1].key, &s[i].key) == 0 &&
            (best == SIZE_MAX || s[i].index < s[best].index))
            best = i;
    if (best == SIZE_MAX)
        return LLMLINK_SUCCESS;
    /* equal keys are sorted by index, so s[best - 1] is the earlier use */
    return llk_err(LLMLINK_CACHE_KEY_ALREADY_EXIST, "%s: keys[%" PRIu64 "] %s repeats keys[%" PRIu64 "]",
                   fn, s[best].index, key_text(&s[best].key).s, s[best - 1].index);
}

/* Copies keys into c sorted by identity, refusing repeats within the call. */
static llmlink_status_t cache_set_keys(const char *fn, llk_cache_t *c,
                                       const llmlink_cache_key_t *keys, size_t num_keys)
{
    if (num_keys == 0)
        return LLMLINK_SUCCESS;
    keyed_t *s = malloc(num_keys * sizeof *s);
    c->keys = malloc(num_keys * sizeof *c->keys);
    c->key_index = malloc(num_keys * sizeof *c->key_index);
    if (s == NULL || c->keys == NULL || c->key_index == NULL) {
        free(s);
        return llk_err(LLMLINK_OUT_OF_MEMORY, "%s: no memory for %zu keys", fn, num_keys);
    }
    for (size_t i = 0; i < num_keys; i++)
        s[i] = (keyed_t){keys[i], i};
    if (!c->blocks)
        qsort(s, num_keys, sizeof *s, keyed_cmp);
    llmlink_status_t st = c->blocks ? LLMLINK_SUCCESS : check_sorted_unique(fn, s, num_keys);
    for (size_t i = 0; i < num_keys; i++) {
        c->keys[i] = s[i].key;
        c->key_index[i] = s[i].index;
    }
    c->num_keys = num_keys;
    free(s);
    return st;
}

/* One anonymous mapping for every tensor, each starting on an aligned
 * boundary (zeroed by the kernel). */
static llmlink_status_t cache_map(const char *fn, llk_cache_t *c)
{
    long page = sysconf(_SC_PAGESIZE);
    uint64_t align = page > (long)LLK_ALLOC_ALIGN ? (uint64_t)page : LLK_ALLOC_ALIGN;
    /* tensor_bytes <= 2^48 and num_tensors <= 4096: no overflow */
    uint64_t stride = (c->tensor_bytes + align - 1) / align * align;
    uint64_t len = stride * c->num_tensors;
    if (len > SIZE_MAX)
        return llk_err(LLMLINK_OUT_OF_MEMORY, "%s: %" PRIu64 " bytes do not fit in memory", fn, len);
    void *m = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return llk_err(LLMLINK_OUT_OF_MEMORY, "%s: cannot map %" PRIu64 " bytes for %" PRIu32
                       " tensors: %s", fn, len, c->num_tensors, strerror(errno));
    c->mapping = m;
    c->mapping_len = (size_t)len;
    for (uint32_t i = 0; i < c->num_tensors; i++)
        c->addrs[i] = (uint8_t *)m + (size_t)stride * i;
    return LLMLINK_SUCCESS;
}

/* Builds an entry (not yet in the registry): sizes, addresses or mapping,
 * sorted keys. Arguments are checked already. */
static llmlink_status_t cache_new(const char *fn, const llmlink_cache_desc_t *desc,
                                  uint64_t tensor_bytes, uint64_t unit_bytes,
                                  const uint64_t *addrs, const llmlink_cache_key_t *keys,
                                  size_t num_keys, bool blocks, llk_cache_t **out)
{
    llk_cache_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return llk_err(LLMLINK_OUT_OF_MEMORY, "%s: no memory for a cache entry", fn);
    c->blocks = blocks;
    c->owned = addrs == NULL;
    c->desc = *desc;
    c->num_tensors = desc->num_tensors;
    c->elem_bytes = llk_dtype_size(desc->data_type);
    c->tensor_bytes = tensor_bytes;
    c->num_units = (uint64_t)desc->shape[0];
    c->unit_bytes = unit_bytes;
    c->addrs = calloc(desc->num_tensors, sizeof *c->addrs);
    llmlink_status_t st = LLMLINK_SUCCESS;
    if (c->addrs == NULL)
        st = llk_err(LLMLINK_OUT_OF_MEMORY, "%s: no memory for %" PRIu32 " tensor addresses", fn,
                     desc->num_tensors);
    if (st == LLMLINK_SUCCESS)
        st = cache_set_keys(fn, c, keys, num_keys);
    if (st == LLMLINK_SUCCESS && c->owned)
        st = cache_map(fn, c);
    if (st != LLMLINK_SUCCESS) {
        cache_free(NULL, c);
        return st;
    }
    for (uint32_t i = 0; !c->owned && i < c->num_tensors; i++)
        c->addrs[i] = (uint8_t *)(uintptr_t)addrs[i];
    /* llm_datadist: an allocated cache is held by its id and each key */
    c->refs = c->owned ? (uint32_t)(1 + num_keys) : 0;
    *out = c;
    return LLMLINK_SUCCESS;
}

/* ---- the list (r->mu held) ------------------------------------------------------------ */

static void unlink_cache(llk_registry_t *r, llk_cache_t *c)
{
    for (llk_cache_t **pp = &r->head; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            c->next = NULL;
            r->count--;
            return;
        }
    }
}

/* An owned entry that nothing holds any more leaves the list; the caller
 * frees what this returns once the mutex is dropped. */
static llk_cache_t *unlink_if_unheld(llk_registry_t *r, llk_cache_t *c)
{
    if (!c->owned || c->refs != 0 || c->users != 0)
        return NULL;
    unlink_cache(r, c);
    return c;
}

/* The entry with this id, unless an owned entry's id was dropped. */
static llk_cache_t *find_id(llk_registry_t *r, int64_t id)
{
    for (llk_cache_t *c = r->head; c != NULL; c = c->next)
        if (c->id == id && !c->id_dropped)
            return c;
    return NULL;
}

/* The entry that holds key k (CACHE or BLOCKS); keys are unique. */
static llk_cache_t *find_key(llk_registry_t *r, const llmlink_cache_key_t *k, size_t *pos)
{
    for (llk_cache_t *c = r->head; c != NULL; c = c->next)
        if (cache_has_key(c, k, pos))
            return c;
    return NULL;
}

/* Lowest index of n's keys that live entry c has too (SIZE_MAX: none).
 * Searches the smaller key set in the larger one. */
static size_t first_shared_key(const llk_cache_t *c, const llk_cache_t *n)
{
    size_t best = SIZE_MAX, pos;
    if (c->blocks != n->blocks || c->num_keys == 0 || n->num_keys == 0)
        return SIZE_MAX;
    if (n->blocks)
        return c->keys[0].model_id == n->keys[0].model_id ? 0 : SIZE_MAX;
    if (c->num_keys < n->num_keys) {
        for (size_t j = 0; j < c->num_keys; j++)
            if (find_cache_key(n, &c->keys[j], &pos) && n->key_index[pos] < best)
                best = n->key_index[pos];
    } else {
        for (size_t i = 0; i < n->num_keys; i++)
            if (find_cache_key(c, &n->keys[i], &pos) && n->key_index[i] < best)
                best = n->key_index[i];
    }
    return best;
}

/* Refuses n when one of its keys is live already, or the registry is full. */
static llmlink_status_t check_room_and_keys(llk_registry_t *r, const char *fn,
                                            const llk_cache_t *n)
{
    for (const llk_cache_t *c = r->head; c != NULL; c = c->next) {
        size_t i = first_shared_key(c, n);
        if (i == SIZE_MAX)
            continue;
        const llmlink_cache_key_t *k = &n->keys[0];
        for (size_t j = 0; j < n->num_keys; j++)
            if (n->key_index[j] == i)
                k = &n->keys[j];
        if (n->blocks)
            return llk_err(LLMLINK_CACHE_KEY_ALREADY_EXIST,
                           "%s: blocks_key %s is already registered by cache %" PRId64, fn,
                           key_text(k).s, c->id);
        return llk_err(LLMLINK_CACHE_KEY_ALREADY_EXIST,
                       "%s: keys[%zu] %s is already registered by cache %" PRId64, fn, i,
                       key_text(k).s, c->id);
    }
    if (r->count >= r->max_caches)
        return llk_err(LLMLINK_OUT_OF_MEMORY,
                       "%s: %zu caches are registered, the limit llmlink.MaxCaches", fn, r->count);
    return LLMLINK_SUCCESS;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

int llk_registry_init(llk_registry_t *r, size_t max_caches)
{
    memset(r, 0, sizeof *r);
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return -1;
    /* remove's deadline must not move with the wall clock */
    int rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0)
        return -1;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        pthread_cond_destroy(&r->cv);
        return -1;
    }
    r->next_id = 1;
    r->max_caches = max_caches;
    return 0;
}

void llk_registry_destroy(llk_registry_t *r)
{
    llk_cache_t *c = r->head;
    r->head = NULL;
    r->count = 0;
    while (c != NULL) {
        llk_cache_t *next = c->next;
        cache_free(r, c);
        c = next;
    }
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
}

/* Entries in the list: an allocated cache whose last reference went while a
 * transfer still used it counts until that transfer releases it (its
 * memory is still held). */
size_t llk_registry_count(llk_registry_t *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->count;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* ---- add -------------------------------------------------------------------------------- */

llmlink_status_t llk_registry_add(llk_registry_t *r, const char *fn,
                                  const llmlink_cache_desc_t *desc, const uint64_t *addrs,
                                  size_t num_addrs, const llmlink_cache_key_t *keys,
                                  size_t num_keys, bool blocks, int64_t *id,
                                  uint64_t *out_addrs)
{
    return llk_registry_add_access(r, fn, desc, addrs, num_addrs, keys, num_keys, blocks,
                                   LLMLINK_ACCESS_READ_WRITE, id, out_addrs);
}

llmlink_status_t llk_registry_add_access(llk_registry_t *r, const char *fn,
                                         const llmlink_cache_desc_t *desc,
                                         const uint64_t *addrs, size_t num_addrs,
                                         const llmlink_cache_key_t *keys, size_t num_keys,
                                         bool blocks, uint32_t access, int64_t *id,
                                         uint64_t *out_addrs)
{
    fn = fname(fn);
    if (access > LLMLINK_ACCESS_READ_WRITE)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: opts->access is %" PRIu32 ", not LLMLINK_ACCESS_NONE (0), _READ (1), "
                       "_WRITE (2) or _READ_WRITE (3)", fn, access);
    uint64_t tensor_bytes = 0, unit_bytes = 0;
    llmlink_status_t st = llk_registry_check_desc(fn, desc, &tensor_bytes, &unit_bytes);
    if (st == LLMLINK_SUCCESS && addrs != NULL)
        st = check_addrs(fn, desc, addrs, num_addrs, tensor_bytes);
    if (st == LLMLINK_SUCCESS)
        st = check_keys(fn, desc, keys, num_keys, blocks);
    llk_cache_t *c = NULL;
    if (st == LLMLINK_SUCCESS)
        st = cache_new(fn, desc, tensor_bytes, unit_bytes, addrs, keys, num_keys, blocks, &c);
    if (st != LLMLINK_SUCCESS)
        return st;

    c->access = access; /* before it is listed: no peer ever sees another value */
    pthread_mutex_lock(&r->mu);
    st = check_room_and_keys(r, fn, c);
    if (st == LLMLINK_SUCCESS) {
        c->id = r->next_id++;
        c->next = r->head;
        r->head = c;
        r->count++;
        /* outputs under the lock: once listed, another thread may remove c */
        if (id != NULL)
            *id = c->id;
        for (uint32_t i = 0; c->owned && out_addrs != NULL && i < c->num_tensors; i++)
            out_addrs[i] = (uint64_t)(uintptr_t)c->addrs[i];
    }
    pthread_mutex_unlock(&r->mu);
    if (st != LLMLINK_SUCCESS)
        cache_free(NULL, c);
    return st;
}

/* ---- remove ----------------------------------------------------------------------------- */

static struct timespec deadline_after(int32_t ms)
{
    return llk_ms_timespec(llk_now_ms() + ms);
}

/* Waits (r->mu held) until c has no users, with c dying so that no new user
 * comes. On timeout c is as before and the status is CACHE_IN_USE. */
static llmlink_status_t wait_unused(llk_registry_t *r, const char *fn, llk_cache_t *c,
                                    int32_t wait_ms)
{
    if (c->users == 0)
        return LLMLINK_SUCCESS;
    if (wait_ms > 0) {
        struct timespec until = deadline_after(wait_ms);
        c->dying = true;
        /* ends at the deadline at the latest (or on a cond error) */
        while (c->users > 0 && pthread_cond_timedwait(&r->cv, &r->mu, &until) == 0) {
        }
        if (c->users == 0)
            return LLMLINK_SUCCESS;
        c->dying = false;
    }
    return llk_err(LLMLINK_CACHE_IN_USE,
                   "%s: cache %" PRId64 " is still used by %" PRIu32 " transfer(s) after %" PRId32
                   " ms", fn, c->id, c->users, wait_ms > 0 ? wait_ms : 0);
}

/* wait_unused timed out (status st) with r->mu held: when only cuttable
 * and revocable users hold c, asks for the cuttable ones to be cut and
 * waits, bounded, until only revocable ones are left. Returns SUCCESS when
 * no user is left, else st (the revocable ones are for the caller). */
static llmlink_status_t cut_holders(llk_registry_t *r, llk_cache_t *c, llmlink_status_t st)
{
    if (!r->cut || c->cuttable == 0 || c->users != c->cuttable + c->revocable)
        return st;
    c->dying = true; /* no new user meanwhile */
    c->cut_requested = true;
    pthread_mutex_unlock(&r->mu); /* r->mu is a leaf: the owner's lock is not taken under it */
    r->cut(r->cut_ctx);
    pthread_mutex_lock(&r->mu);
    struct timespec until = deadline_after(LLK_REGISTRY_CUT_WAIT_MS);
    while (c->users > c->revocable && pthread_cond_timedwait(&r->cv, &r->mu, &until) == 0) {
    }
    c->cut_requested = false;
    if (c->users == 0) {
        llk_err_clear();
        return LLMLINK_SUCCESS;
    }
    c->dying = false;
    return st;
}

llmlink_status_t llk_registry_remove(llk_registry_t *r, const char *fn, int64_t id, bool owned,
                                     int32_t wait_ms)
{
    fn = fname(fn);
    llk_cache_t *gone = NULL, *revoked = NULL;
    llmlink_status_t st = LLMLINK_SUCCESS;
    pthread_mutex_lock(&r->mu);
    llk_cache_t *c = find_id(r, id);
    if (c == NULL)
        st = llk_err(LLMLINK_KV_CACHE_NOT_EXIST, "%s: no cache with cache_id %" PRId64, fn, id);
    else if (c->owned != owned)
        st = llk_err(LLMLINK_PARAM_INVALID, "%s: cache_id %" PRId64 " was %s", fn, id,
                     c->owned ? "allocated: free it with llmlink_deallocate_cache"
                              : "registered: remove it with llmlink_unregister_cache");
    else if (c->dying)
        st = llk_err(LLMLINK_CACHE_IN_USE, "%s: cache_id %" PRId64 " is being removed by another call",
                     fn, id);
    else if (owned) {
        /* the memory is ours: it outlives the id while transfers or keys hold it */
        c->id_dropped = true;
        c->refs--;
        gone = unlink_if_unheld(r, c);
    } else {
        /* the memory is the caller's: no transfer may touch it after we return */
        st = wait_unused(r, fn, c, wait_ms);
        if (st != LLMLINK_SUCCESS)
            st = cut_holders(r, c, st);
        if (st == LLMLINK_SUCCESS) {
            unlink_cache(r, c);
            gone = c;
        } else if (c->users > 0 && c->users == c->revocable && r->xport_free) {
            /* Only peers' grants hold it: revoke them rather than keep the
             * memory pinned for a peer that may never finish. */
            unlink_cache(r, c);
            c->dying = true;
            c->detached = true;
            revoked = c;
            st = LLMLINK_SUCCESS;
            llk_err_clear();
        }
    }
    pthread_mutex_unlock(&r->mu);
    if (revoked)
        r->xport_free(r->xport_ctx, revoked); /* the memory is still valid here */
    cache_free(r, gone);
    return st;
}

static llmlink_status_t check_key_arg(const char *fn, const llmlink_cache_key_t *key)
{
    if (key == NULL)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: key is NULL", fn);
    return LLMLINK_SUCCESS;
}

llmlink_status_t llk_registry_remove_key(llk_registry_t *r, const char *fn,
                                         const llmlink_cache_key_t *key)
{
    fn = fname(fn);
    llmlink_status_t st = check_key_arg(fn, key);
    if (st != LLMLINK_SUCCESS)
        return st;
    if (key->type != LLMLINK_KEY_CACHE && key->type != LLMLINK_KEY_BLOCKS)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: key->type is %d, only LLMLINK_KEY_CACHE and LLMLINK_KEY_BLOCKS keys "
                       "can be removed", fn, (int)key->type);
    llk_cache_t *gone = NULL;
    size_t pos = 0;
    pthread_mutex_lock(&r->mu);
    llk_cache_t *c = find_key(r, key, &pos);
    if (c == NULL) {
        st = llk_err(LLMLINK_KV_CACHE_NOT_EXIST, "%s: no cache has key %s", fn, key_text(key).s);
    } else {
        drop_key_slot(c, pos);
        if (c->owned) {
            c->refs--;
            gone = unlink_if_unheld(r, c);
        }
    }
    pthread_mutex_unlock(&r->mu);
    cache_free(r, gone);
    return st;
}

/* ---- acquire / release --------------------------------------------------------------------- */

llmlink_status_t llk_registry_acquire_id(llk_registry_t *r, const char *fn, int64_t id,
                                         llk_cache_t **out)
{
    fn = fname(fn);
    llmlink_status_t st = LLMLINK_SUCCESS;
    pthread_mutex_lock(&r->mu);
    llk_cache_t *c = find_id(r, id);
    if (c == NULL)
        st = llk_err(LLMLINK_KV_CACHE_NOT_EXIST, "%s: no cache with cache_id %" PRId64, fn, id);
    else if (c->dying)
        st = llk_err(LLMLINK_KV_CACHE_NOT_EXIST, "%s: cache_id %" PRId64 " is being removed", fn, id);
    else {
        c->users++;
        *out = c;
    }
    pthread_mutex_unlock(&r->mu);
    return st;
}

/* A cache a peer may not see at all (LLMLINK_ACCESS_NONE) is looked up as
 * if it were not there: same status, same words, before any check that
 * would tell it exists (such as a batch index past its end). */
static bool hidden(const llk_cache_t *c, bool peer)
{
    return c == NULL || c->dying || (peer && c->access == LLMLINK_ACCESS_NONE);
}

/* Finds what key names (r->mu held): the entry and the unit it selects.
 * peer: the request comes from a peer (hidden caches are not found). */
static llmlink_status_t lookup_key(llk_registry_t *r, const char *fn,
                                   const llmlink_cache_key_t *key, bool peer,
                                   llk_cache_t **out, uint64_t *unit)
{
    size_t pos = 0;
    llk_cache_t *c = NULL;
    switch (key->type) {
    case LLMLINK_KEY_CACHE:
    case LLMLINK_KEY_BLOCKS:
        c = find_key(r, key, &pos);
        if (hidden(c, peer))
            return llk_err(LLMLINK_KV_CACHE_NOT_EXIST, "%s: no cache has key %s", fn,
                           key_text(key).s);
        *unit = key->type == LLMLINK_KEY_CACHE ? c->key_index[pos] : 0;
        break;
    case LLMLINK_KEY_ID_AND_INDEX:
        c = find_id(r, key->cache_id);
        if (hidden(c, peer))
            return llk_err(LLMLINK_KV_CACHE_NOT_EXIST, "%s: no cache with cache_id %" PRId64, fn,
                           key->cache_id);
        if (key->batch_index >= c->num_units)
            return llk_err(LLMLINK_PARAM_INVALID,
                           "%s: batch_index %" PRIu32 " is past the end of cache %" PRId64
                           " (%" PRIu64 " entries)", fn, key->batch_index, c->id, c->num_units);
        *unit = key->batch_index;
        break;
    default:
        return llk_err(LLMLINK_PARAM_INVALID, "%s: key->type %d is not a key type", fn,
                       (int)key->type);
    }
    *out = c;
    return LLMLINK_SUCCESS;
}

/* What a peer asked for against what the cache allows (after lookup). */
static llmlink_status_t check_access(const char *fn, const llk_cache_t *c, int need)
{
    if (need == LLK_PEER_ANY || (c->access & (uint32_t)need) != 0)
        return LLMLINK_SUCCESS;
    bool write = need == LLK_PEER_WRITE;
    return llk_err(LLMLINK_ACCESS_DENIED,
                   "%s: cache %" PRId64 " does not allow peers to %s it (registered with "
                   "access %s)", fn, c->id, write ? "write (push into)" : "read (pull from)",
                   (c->access & LLMLINK_ACCESS_READ) ? "READ" : "WRITE");
}

llmlink_status_t llk_registry_acquire_key(llk_registry_t *r, const char *fn,
                                          const llmlink_cache_key_t *key, llk_cache_t **out,
                                          uint64_t *unit)
{
    return llk_registry_acquire_peer(r, fn, key, LLK_PEER_ANY, out, unit);
}

llmlink_status_t llk_registry_acquire_peer(llk_registry_t *r, const char *fn,
                                           const llmlink_cache_key_t *key, int need,
                                           llk_cache_t **out, uint64_t *unit)
{
    fn = fname(fn);
    llmlink_status_t st = check_key_arg(fn, key);
    if (st != LLMLINK_SUCCESS)
        return st;
    llk_cache_t *c = NULL;
    uint64_t u = 0;
    pthread_mutex_lock(&r->mu);
    st = lookup_key(r, fn, key, need != LLK_PEER_ANY, &c, &u);
    if (st == LLMLINK_SUCCESS)
        st = check_access(fn, c, need);
    if (st == LLMLINK_SUCCESS) {
        c->users++;
        *out = c;
        if (unit != NULL)
            *unit = u;
    }
    pthread_mutex_unlock(&r->mu);
    return st;
}

void llk_registry_set_revocable(llk_registry_t *r, llk_cache_t *c, bool on)
{
    pthread_mutex_lock(&r->mu);
    if (on)
        c->revocable++;
    else if (c->revocable > 0)
        c->revocable--;
    pthread_mutex_unlock(&r->mu);
}

void llk_registry_set_cuttable(llk_registry_t *r, llk_cache_t *c, bool on)
{
    pthread_mutex_lock(&r->mu);
    if (on)
        c->cuttable++;
    else if (c->cuttable > 0)
        c->cuttable--;
    pthread_mutex_unlock(&r->mu);
}

bool llk_registry_cut_requested(llk_registry_t *r, const llk_cache_t *c)
{
    pthread_mutex_lock(&r->mu);
    bool on = c->cut_requested;
    pthread_mutex_unlock(&r->mu);
    return on;
}

void llk_registry_release(llk_registry_t *r, llk_cache_t *c, const llmlink_cache_key_t *consume_key)
{
    if (c == NULL)
        return;
    llk_cache_t *gone = NULL;
    size_t pos = 0;
    pthread_mutex_lock(&r->mu);
    if (c->users > 0)
        c->users--;
    /* llm_datadist: a pull by CacheKey of an allocated cache uses the key up */
    if (consume_key != NULL && c->owned && consume_key->type == LLMLINK_KEY_CACHE &&
        cache_has_key(c, consume_key, &pos)) {
        drop_key_slot(c, pos);
        c->refs--;
    }
    gone = c->detached ? (c->users == 0 ? c : NULL) : unlink_if_unheld(r, c);
    /* a remove may be waiting for this cache's last user */
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    cache_free(r, gone);
}

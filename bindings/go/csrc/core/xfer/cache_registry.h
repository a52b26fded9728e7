/*
 * cache_registry.h - the caches an engine registered or allocated, and
 * their keys. Knows nothing of sockets or links.
 *
 * Every function takes the registry's own mutex; none blocks on anything
 * but that mutex, except llk_registry_remove (which waits, bounded, for the
 * transfers that use a cache). A cache found by an acquire call stays valid,
 * and its fields unchanged, until the matching llk_registry_release: remove
 * waits for every user to release. Acquired fields may be read without the
 * lock; only `users`, `refs`, `dying` and the key lists change, under it.
 *
 * Validation of descriptions and keys happens here (so every entry point
 * gets it): dims >= 1, products that do not overflow, a tensor <= 2^48
 * bytes, no zero address, no address range that wraps, no duplicate key.
 * Messages go to llmlink_last_error() through llk_err().
 */
#ifndef LLK_CACHE_REGISTRY_H
#define LLK_CACHE_REGISTRY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmlink.h"

#define LLK_MAX_TENSOR_BYTES (1ull << 48)

typedef struct llk_cache {
    int64_t id;
    bool blocks;   /* a blocks cache: units are blocks */
    bool owned;    /* allocated by the library (munmap on free) */
    llmlink_cache_desc_t desc;
    uint32_t num_tensors;
    uint64_t elem_bytes;   /* size of one element of desc.data_type */
    uint64_t tensor_bytes; /* bytes of one tensor */
    uint64_t num_units;    /* desc.shape[0]: blocks or batch entries */
    uint64_t unit_bytes;   /* tensor_bytes / num_units */
    uint8_t **addrs;       /* num_tensors tensor base addresses */
    void *mapping;         /* owned: one mmap holding every tensor */
    size_t mapping_len;

    /* LLMLINK_KEY_CACHE keys: keys[i] names batch entry key_index[i] (the
     * arrays are sorted by key for lookups: use key_index, not i).
     * A blocks cache has at most one key (LLMLINK_KEY_BLOCKS). A removed
     * key is taken out of the arrays. */
    llmlink_cache_key_t *keys;
    uint64_t *key_index;
    size_t num_keys;

    /* llmlink_access_t: what peers may do with it (ffi/llmlink.h), set
     * before the entry is listed and never changed. */
    uint32_t access;

    uint32_t users; /* transfers holding it (acquire .. release) */
    bool dying;     /* being removed: no new acquire succeeds */
    /* Owned caches: 1 for the id (until deallocate) + one per key, as in
     * llm_datadist; the memory is freed when it reaches 0 (and users 0). */
    uint32_t refs;
    bool id_dropped;

    /* Transport state of the cache (the RDMA transport's MRs), made and
     * freed by the transport through the registry's xport hook; the
     * registry only hands it back before the entry is freed. */
    void *xport;
    /* Users that hold the cache only through a grant a peer may still use
     * (RDMA: it reads or writes with the grant's rkeys on its own). When an
     * unregister times out and every user is one of these, the entry is
     * detached instead (see llk_registry_remove). */
    uint32_t revocable;
    bool detached; /* out of the list, freed at its last release */
    /* Users that are peers' tcp requests on the owner thread, which it
     * can cut (end the stream, break and fence the link) when asked: an
     * unregister that times out with only these (and revocable ones) left
     * asks for it through r->cut (cut_requested set) and waits for their
     * release, bounded (llk_registry_remove). */
    uint32_t cuttable;
    bool cut_requested;

    struct llk_cache *next;
} llk_cache_t;

typedef struct llk_registry {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC; broadcast on every release */
    llk_cache_t *head;
    int64_t next_id;    /* starts at 1 */
    size_t count;
    size_t max_caches;  /* llmlink.MaxCaches */
    /* Called (without r->mu) before any entry is freed, while
     * its memory is still mapped, and when an unregister revokes it: the
     * transport releases what it made (after which no peer can reach the
     * memory through it). */
    void (*xport_free)(void *ctx, llk_cache_t *c);
    void *xport_ctx;
    /* Called (without r->mu) when an unregister asks the holders of the
     * cuttable users of a cache (c->cut_requested) to cut them; they
     * release as they do (the owner thread, xfer/owner.c). NULL: none. */
    void (*cut)(void *ctx);
    void *cut_ctx;
} llk_registry_t;

/* How long an unregister waits for cut users to release (r->cut). */
#define LLK_REGISTRY_CUT_WAIT_MS 1000

/* Returns 0, or -1 (pthread init failed). */
int llk_registry_init(llk_registry_t *r, size_t max_caches);
/* Frees every cache (owned memory too). No transfer may be running. */
void llk_registry_destroy(llk_registry_t *r);

/* Bytes of one element of a data type, 0 if the type is unknown. */
uint64_t llk_dtype_size(llmlink_data_type_t t);

/*
 * Checks desc (fn names the API call in messages) and computes the sizes.
 * PARAM_INVALID for a bad description, FEATURE_NOT_ENABLED for DEVICE.
 */
llmlink_status_t llk_registry_check_desc(const char *fn, const llmlink_cache_desc_t *desc,
                                         uint64_t *tensor_bytes, uint64_t *unit_bytes);

/*
 * Adds a cache of caller memory (addrs, num_addrs == desc->num_tensors) or,
 * when addrs is NULL, allocates it (owned; tensor addresses then written to
 * out_addrs, which has room for desc->num_tensors, may be NULL otherwise).
 * blocks: a blocks cache (keys: at most one, LLMLINK_KEY_BLOCKS), else keys
 * are LLMLINK_KEY_CACHE, keys[i] naming batch entry i (num_keys <= shape[0]).
 * Statuses: PARAM_INVALID, FEATURE_NOT_ENABLED, CACHE_KEY_ALREADY_EXIST,
 * OUT_OF_MEMORY (also when max_caches are registered already; the message
 * says which).
 */
llmlink_status_t llk_registry_add(llk_registry_t *r, const char *fn,
                                  const llmlink_cache_desc_t *desc, const uint64_t *addrs,
                                  size_t num_addrs, const llmlink_cache_key_t *keys,
                                  size_t num_keys, bool blocks, int64_t *id,
                                  uint64_t *out_addrs);

/* llk_registry_add with the peers' access (llmlink_access_t; the plain
 * call registers LLMLINK_ACCESS_READ_WRITE). PARAM_INVALID past READ_WRITE. */
llmlink_status_t llk_registry_add_access(llk_registry_t *r, const char *fn,
                                         const llmlink_cache_desc_t *desc,
                                         const uint64_t *addrs, size_t num_addrs,
                                         const llmlink_cache_key_t *keys, size_t num_keys,
                                         bool blocks, uint32_t access, int64_t *id,
                                         uint64_t *out_addrs);

/*
 * Removes cache `id`. owned says which call this is: unregister (false) on
 * an owned cache, or deallocate (true) on a registered one, is
 * PARAM_INVALID. Unknown id: KV_CACHE_NOT_EXIST. unregister waits up to
 * wait_ms for the cache's users to release (then CACHE_IN_USE and nothing
 * changes) and frees the entry. Except: when the wait ends and every user
 * left is revocable (llk_registry_set_revocable: a peer's RDMA grant), the
 * entry leaves the list, the transport's state is released through the
 * xport hook (the MRs: the peer's READ / WRITE then fails with a remote
 * access error) and SUCCESS is returned, so that a prefill can always free
 * its memory; the entry itself is freed at its last release. Before that,
 * when the users left are cuttable ones (peers' tcp requests) and
 * revocable ones only, the cuttable ones are cut (r->cut) and waited for,
 * at most LLK_REGISTRY_CUT_WAIT_MS more: their links break (fenced) and
 * the unregister succeeds. deallocate never waits: it drops the id's
 * reference; the entry stays, addressable by its keys only, and the memory
 * is freed at the last release once no key is left.
 */
llmlink_status_t llk_registry_remove(llk_registry_t *r, const char *fn, int64_t id, bool owned,
                                     int32_t wait_ms);

/* Removes one key (CACHE or BLOCKS). KV_CACHE_NOT_EXIST if no cache has it. */
llmlink_status_t llk_registry_remove_key(llk_registry_t *r, const char *fn,
                                         const llmlink_cache_key_t *key);

/* Acquires a cache by id for a local transfer (a dropped id is unknown).
 * KV_CACHE_NOT_EXIST if unknown or dying. */
llmlink_status_t llk_registry_acquire_id(llk_registry_t *r, const char *fn, int64_t id,
                                         llk_cache_t **out);

/*
 * Acquires the cache a peer's key names. *unit receives the batch entry the
 * key selects (KEY_CACHE: its entry; KEY_ID_AND_INDEX: batch_index, checked
 * against num_units; KEY_BLOCKS: 0). KEY_BLOCKS finds only blocks caches.
 * KV_CACHE_NOT_EXIST if nothing matches, PARAM_INVALID for a batch index
 * past the end.
 */
llmlink_status_t llk_registry_acquire_key(llk_registry_t *r, const char *fn,
                                          const llmlink_cache_key_t *key, llk_cache_t **out,
                                          uint64_t *unit);

/* What a peer's request needs of a cache (llk_registry_acquire_peer). */
#define LLK_PEER_ANY   0 /* no access check, hidden caches found (tests, tools) */
#define LLK_PEER_READ  1 /* a pull: LLMLINK_ACCESS_READ */
#define LLK_PEER_WRITE 2 /* a push: LLMLINK_ACCESS_WRITE */

/*
 * llk_registry_acquire_key for a peer's request that needs `need`
 * (LLK_PEER_READ or _WRITE): a cache registered LLMLINK_ACCESS_NONE is not
 * found (KV_CACHE_NOT_EXIST, the same words as for no cache, before any
 * other check); one found without the access needed is ACCESS_DENIED. On
 * a refusal nothing is held. (acquire_key is this with LLK_PEER_ANY.)
 */
llmlink_status_t llk_registry_acquire_peer(llk_registry_t *r, const char *fn,
                                           const llmlink_cache_key_t *key, int need,
                                           llk_cache_t **out, uint64_t *unit);

/* Ends a use. consume_key (a KEY_CACHE key that a successful pull_cache
 * used, on an owned cache) drops that key as llm_datadist does; the entry
 * is freed if that was its last reference. */
void llk_registry_release(llk_registry_t *r, llk_cache_t *c, const llmlink_cache_key_t *consume_key);

/* Marks one user of c (acquired) as revocable, or no longer (on = false). */
void llk_registry_set_revocable(llk_registry_t *r, llk_cache_t *c, bool on);
/* Marks one user of c (acquired) as cuttable, or no longer (on = false). */
void llk_registry_set_cuttable(llk_registry_t *r, llk_cache_t *c, bool on);
/* An unregister asks for c's cuttable users to be cut. */
bool llk_registry_cut_requested(llk_registry_t *r, const llk_cache_t *c);

/* Caches registered now. */
size_t llk_registry_count(llk_registry_t *r);

#endif /* LLK_CACHE_REGISTRY_H */

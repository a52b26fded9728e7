/*
 * test_xfer_args.c - the KV cache calls at the ABI (ffi/api_cache.c):
 * every argument refusal, engine state, and registry-level refusals seen
 * through the ABI.
 *
 * Every refusal checks the exact status, llmlink_last_error_status(), and
 * that llmlink_last_error() names the argument. A refused transfer must be
 * refused before anything moves: the tests end by checking that neither
 * engine counted a transfer, a request sent, or a request served.
 *
 * Also: calls on a NULL engine, before llmlink_init (NOT_INITIALIZED),
 * after llmlink_finalize (ENGINE_FINALIZED); register/unregister and
 * allocate/deallocate round trips; allocated memory (zeroed, writable,
 * page aligned, distinct tensors); duplicate keys; DEVICE placement;
 * unknown ids and keys; a valid transfer with no link to the key's cluster
 * (NOT_YET_LINK, at once, not after llm.SyncKvCacheWaitTime);
 * llmlink_get_xfer_stats (version check, the caches count).
 *
 * Single process, loopback only, ports from 127.0.0.1:0. Every wait is
 * bounded (llm.SyncKvCacheWaitTime 2000 ms on both engines).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llmlink.h"
#include "llk_test.h"
#include "rawpeer.h"

#define PROMPT_ID 1u
#define DECODER_ID 2u
#define UNLINKED_ID 77u /* a cluster nobody links to */
#define MODEL_ID 7u
#define SYNC_WAIT_MS 2000

/* The fixture's caches: 4 tensors (2 layers of K, V) of FLOAT16.
 * Blocks cache: 8 blocks of 64 elements (128 bytes a block, 1 KiB a tensor).
 * Batch cache: 2 entries of 256 elements (512 bytes an entry). */
#define NT 4
#define NBLOCKS 8
#define BLOCK_ELEMS 64
#define NBATCH 2
#define ENTRY_ELEMS 256
#define TENSOR_BYTES 1024

typedef struct fx {
    llmlink_t *prompt;
    uint16_t port;
    llmlink_t *dec;
    llmlink_t *extra[8];
    size_t nextra;

    /* caller memory for registrations */
    uint8_t dec_blk[NT][TENSOR_BYTES];
    uint8_t dec_batch[NT][TENSOR_BYTES];
    uint8_t p_blk[NT][TENSOR_BYTES];
    uint8_t p_batch[NT][TENSOR_BYTES];
    uint8_t scratch[NT][TENSOR_BYTES];
    uint64_t dec_blk_addrs[NT], dec_batch_addrs[NT], p_blk_addrs[NT], p_batch_addrs[NT];
    uint64_t scratch_addrs[NT];

    /* registered in setup */
    int64_t dec_blk_id, dec_batch_id, p_blk_id, p_batch_id;

    /* keys of the prompt's caches (cluster PROMPT_ID) */
    llmlink_cache_key_t rkey_blocks, rkey_cache, rkey_idx;
    /* keys of the decoder's caches, for pushes (cluster DECODER_ID) */
    llmlink_cache_key_t dkey_blocks, dkey_cache, dkey_idx;
} fx_t;

/* ---- helpers ---------------------------------------------------------- */

static llmlink_cache_desc_t blocks_desc(void)
{
    llmlink_cache_desc_t d;
    memset(&d, 0, sizeof d);
    d.num_tensors = NT;
    d.data_type = LLMLINK_DT_FLOAT16;
    d.placement = LLMLINK_PLACEMENT_HOST;
    d.num_dims = 2;
    d.shape[0] = NBLOCKS;
    d.shape[1] = BLOCK_ELEMS;
    return d;
}

static llmlink_cache_desc_t batch_desc(void)
{
    llmlink_cache_desc_t d = blocks_desc();
    d.shape[0] = NBATCH;
    d.shape[1] = ENTRY_ELEMS;
    return d;
}

/* A key of `type` for `cluster`: every other field 0, no prefix. */
static llmlink_cache_key_t key_of(llmlink_cache_key_type_t type, uint64_t cluster)
{
    llmlink_cache_key_t k;
    memset(&k, 0, sizeof k);
    k.type = type;
    k.cluster_id = cluster;
    k.prefix_id = -1;
    return k;
}

static llmlink_cache_key_t blocks_key(uint64_t cluster, uint64_t model)
{
    llmlink_cache_key_t k = key_of(LLMLINK_KEY_BLOCKS, cluster);
    k.model_id = model;
    return k;
}

static llmlink_cache_key_t cache_key(uint64_t cluster, uint64_t req, uint64_t model)
{
    llmlink_cache_key_t k = key_of(LLMLINK_KEY_CACHE, cluster);
    k.req_id = req;
    k.model_id = model;
    return k;
}

static llmlink_cache_key_t idx_key(uint64_t cluster, int64_t cache_id, uint32_t batch)
{
    llmlink_cache_key_t k = key_of(LLMLINK_KEY_ID_AND_INDEX, cluster);
    k.cache_id = cache_id;
    k.batch_index = batch;
    return k;
}

static void fill_addrs(uint64_t *addrs, uint8_t (*mem)[TENSOR_BYTES])
{
    for (size_t i = 0; i < NT; i++)
        addrs[i] = (uint64_t)(uintptr_t)mem[i];
}

/* A blocks cache over blk (key bk) and a batch cache over batch (key ck)
 * of engine e: both registered, with distinct valid ids. */
static void register_pair(llmlink_t *e, const uint64_t *blk, const uint64_t *batch,
                          const llmlink_cache_key_t *bk, const llmlink_cache_key_t *ck,
                          int64_t *blk_id, int64_t *batch_id)
{
    llmlink_cache_desc_t bd = blocks_desc(), cd = batch_desc();
    assert_status(llmlink_register_blocks_cache(e, &bd, blk, NT, bk, blk_id), LLMLINK_SUCCESS);
    assert_status(llmlink_register_cache(e, &cd, batch, NT, ck, 1, batch_id), LLMLINK_SUCCESS);
    assert_true(*blk_id >= 1 && *batch_id >= 1 && *blk_id != *batch_id);
}

/* A blocks cache with key bk (NULL: none) and a batch cache with the keys
 * ck[0..nck) register on e (over the scratch memory) and unregister. */
static void register_and_drop(fx_t *fx, llmlink_t *e, const llmlink_cache_key_t *bk,
                              const llmlink_cache_key_t *ck, size_t nck)
{
    llmlink_cache_desc_t bd = blocks_desc(), cd = batch_desc();
    int64_t id = 0;
    assert_status(llmlink_register_blocks_cache(e, &bd, fx->scratch_addrs, NT, bk, &id),
                  LLMLINK_SUCCESS);
    assert_status(llmlink_unregister_cache(e, id), LLMLINK_SUCCESS);
    assert_status(llmlink_register_cache(e, &cd, fx->scratch_addrs, NT, ck, nck, &id),
                  LLMLINK_SUCCESS);
    assert_status(llmlink_unregister_cache(e, id), LLMLINK_SUCCESS);
}

static llmlink_t *new_engine(fx_t *fx, llmlink_role_t role, uint64_t id)
{
    llmlink_t *e = NULL;
    assert_true(fx->nextra < sizeof fx->extra / sizeof fx->extra[0]);
    assert_int_equal(llmlink_create(&e, role, id), LLMLINK_SUCCESS);
    assert_non_null(e);
    fx->extra[fx->nextra++] = e;
    return e;
}

/* needle: one string, or alternatives separated by '|'. */
static bool contains_any(const char *hay, const char *needles)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", needles);
    for (char *save = NULL, *t = strtok_r(buf, "|", &save); t; t = strtok_r(NULL, "|", &save))
        if (strstr(hay, t))
            return true;
    return false;
}

static void check_status(const char *what, llmlink_status_t got, llmlink_status_t want,
                         const char *needle)
{
    const char *msg = llmlink_last_error();
    if (got != want)
        fail_msg("%s: returned %s (0x%08x), expected %s; last_error: %s", what,
                 llmlink_status_name(got), got, llmlink_status_name(want), msg);
    if (want == LLMLINK_SUCCESS)
        return;
    if (llmlink_last_error_status() != want)
        fail_msg("%s: llmlink_last_error_status() is %s, expected %s", what,
                 llmlink_status_name(llmlink_last_error_status()), llmlink_status_name(want));
    if (needle && !contains_any(msg, needle))
        fail_msg("%s: last_error \"%s\" does not name \"%s\"", what, msg, needle);
}

/* Runs `call` with a clear error first; checks status, last error status
 * and the message. */
#define EXPECT(what, call, want, needle)                                  \
    do {                                                                  \
        llmlink_clear_error();                                            \
        llmlink_status_t st_ = (call);                                    \
        check_status((what), st_, (want), (needle));                      \
    } while (0)

#define REFUSED(what, call, needle) EXPECT(what, call, LLMLINK_PARAM_INVALID, needle)

static llmlink_xfer_stats_t xstats_of(llmlink_t *e)
{
    llmlink_xfer_stats_t s;
    memset(&s, 0, sizeof s);
    s.version = LLMLINK_XFER_STATS_VERSION;
    assert_status(llmlink_get_xfer_stats(e, &s), LLMLINK_SUCCESS);
    assert_int_equal(s.version, LLMLINK_XFER_STATS_VERSION);
    return s;
}

/* Nothing was attempted on either engine: no transfer counted (ok or
 * failed), no request sent, none served or refused by the peer. */
static void assert_nothing_moved(fx_t *fx, const char *what)
{
    llmlink_t *both[2] = {fx->dec, fx->prompt};
    for (size_t i = 0; i < 2; i++) {
        llmlink_xfer_stats_t s = xstats_of(both[i]);
        if (s.transfers || s.transfers_failed || s.transfers_timed_out || s.bytes_requested ||
            s.bytes_served || s.requests_served || s.requests_refused || s.tcp_requests ||
            s.shm_requests || s.shm_fallbacks)
            fail_msg("%s: the %s engine counted transfer activity (transfers %llu, failed %llu, "
                     "served %llu, refused %llu, tcp %llu, shm %llu)", what,
                     i ? "PROMPT" : "DECODER", (unsigned long long)s.transfers,
                     (unsigned long long)s.transfers_failed,
                     (unsigned long long)s.requests_served,
                     (unsigned long long)s.requests_refused, (unsigned long long)s.tcp_requests,
                     (unsigned long long)s.shm_requests);
    }
}

/* ---- one transfer call, by number ------------------------------------- */

typedef enum { PULL_BLOCKS = 0, PULL_CACHE, PUSH_BLOCKS, PUSH_CACHE, NCALLS } xcall_t;

static const char *const call_name[NCALLS] = {"llmlink_pull_blocks", "llmlink_pull_cache",
                                              "llmlink_push_blocks", "llmlink_push_cache"};
/* the key argument and the local id argument of each call */
static const char *const key_arg[NCALLS] = {"src_key", "src_key", "dst_key", "dst_key"};
static const char *const id_arg[NCALLS] = {"dst_cache_id", "dst_cache_id", "src_cache_id",
                                           "src_cache_id"};

typedef struct xargs {
    const llmlink_cache_key_t *key;
    int64_t id;
    const uint64_t *src;
    size_t nsrc;
    const uint64_t *dst;
    size_t ndst;
    uint32_t batch;
    int64_t size;
    const llmlink_layer_range_t *layers;
} xargs_t;

static const uint64_t src3[3] = {0, 1, 2};
static const uint64_t dst3[3] = {3, 4, 5};

static llmlink_status_t xcall(llmlink_t *e, xcall_t c, const xargs_t *a)
{
    switch (c) {
    case PULL_BLOCKS:
        return llmlink_pull_blocks(e, a->key, a->id, a->src, a->nsrc, a->dst, a->ndst,
                                   a->layers);
    case PULL_CACHE:
        return llmlink_pull_cache(e, a->key, a->id, a->batch, a->size, a->layers);
    case PUSH_BLOCKS:
        return llmlink_push_blocks(e, a->key, a->id, a->src, a->nsrc, a->dst, a->ndst,
                                   a->layers);
    case PUSH_CACHE:
    default:
        return llmlink_push_cache(e, a->key, a->id, a->batch, a->size, a->layers);
    }
}

/* Valid arguments for call c made by the decoder: the key names one of the
 * prompt's caches, the id one of the decoder's. */
static xargs_t valid_args(const fx_t *fx, xcall_t c)
{
    xargs_t a;
    memset(&a, 0, sizeof a);
    a.size = -1;
    switch (c) {
    case PULL_BLOCKS:
    case PUSH_BLOCKS:
        a.key = &fx->rkey_blocks;
        a.id = fx->dec_blk_id;
        a.src = src3;
        a.nsrc = 3;
        a.dst = dst3;
        a.ndst = 3;
        break;
    case PULL_CACHE:
    case PUSH_CACHE:
    default:
        a.key = &fx->rkey_cache;
        a.id = fx->dec_batch_id;
        a.batch = 1;
        break;
    }
    return a;
}

/* pull_blocks by the prompt's CacheKey: the key names the source, so no
 * source block list. */
static xargs_t pull_by_cache_key(const fx_t *fx)
{
    xargs_t a = valid_args(fx, PULL_BLOCKS);
    a.key = &fx->rkey_cache;
    a.src = NULL;
    a.nsrc = 0;
    return a;
}

static void whatf(char *buf, size_t n, xcall_t c, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void whatf(char *buf, size_t n, xcall_t c, const char *fmt, ...)
{
    int k = snprintf(buf, n, "%s: ", call_name[c]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + k, n - (size_t)k, fmt, ap);
    va_end(ap);
}

/* ---- fixture ---------------------------------------------------------- */

static const llmlink_option_t prompt_opts[] = {
    {"llm.listenIpInfo", "127.0.0.1:0"},
    {"llm.SyncKvCacheWaitTime", "2000"},
};
static const llmlink_option_t dec_opts[] = {
    {"llm.SyncKvCacheWaitTime", "2000"},
};

static int setup(void **state)
{
    fx_t *fx = test_calloc(1, sizeof *fx);
    assert_non_null(fx);
    *state = fx;
    assert_status(llmlink_create(&fx->prompt, LLMLINK_ROLE_PROMPT, PROMPT_ID), LLMLINK_SUCCESS);
    assert_status(llmlink_init(fx->prompt, prompt_opts, 2), LLMLINK_SUCCESS);
    assert_status(llmlink_get_listen_port(fx->prompt, 0, &fx->port), LLMLINK_SUCCESS);
    assert_true(fx->port != 0);
    assert_status(llmlink_create(&fx->dec, LLMLINK_ROLE_DECODER, DECODER_ID), LLMLINK_SUCCESS);
    assert_status(llmlink_init(fx->dec, dec_opts, 1), LLMLINK_SUCCESS);

    fill_addrs(fx->dec_blk_addrs, fx->dec_blk);
    fill_addrs(fx->dec_batch_addrs, fx->dec_batch);
    fill_addrs(fx->p_blk_addrs, fx->p_blk);
    fill_addrs(fx->p_batch_addrs, fx->p_batch);
    fill_addrs(fx->scratch_addrs, fx->scratch);

    fx->rkey_blocks = blocks_key(PROMPT_ID, MODEL_ID);
    fx->rkey_cache = cache_key(PROMPT_ID, 11, MODEL_ID);
    fx->dkey_blocks = blocks_key(DECODER_ID, MODEL_ID);
    fx->dkey_cache = cache_key(DECODER_ID, 21, MODEL_ID);
    register_pair(fx->prompt, fx->p_blk_addrs, fx->p_batch_addrs, &fx->rkey_blocks,
                  &fx->rkey_cache, &fx->p_blk_id, &fx->p_batch_id);
    register_pair(fx->dec, fx->dec_blk_addrs, fx->dec_batch_addrs, &fx->dkey_blocks,
                  &fx->dkey_cache, &fx->dec_blk_id, &fx->dec_batch_id);
    fx->rkey_idx = idx_key(PROMPT_ID, fx->p_batch_id, 0);
    fx->dkey_idx = idx_key(DECODER_ID, fx->dec_batch_id, 0);
    llmlink_clear_error();
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    if (!fx)
        return 0;
    for (size_t i = 0; i < fx->nextra; i++)
        llmlink_destroy(fx->extra[i]);
    llmlink_destroy(fx->dec);
    llmlink_destroy(fx->prompt);
    test_free(fx);
    return 0;
}

/* ---- engine state ------------------------------------------------------ */

/* Every call but get_xfer_stats, with valid arguments, on engine e: each
 * returns want and names needle. */
static void every_call(fx_t *fx, llmlink_t *e, llmlink_status_t want, const char *needle)
{
    llmlink_cache_desc_t bd = blocks_desc(), cd = batch_desc();
    llmlink_cache_key_t bk = blocks_key(90, 90), ck = cache_key(90, 90, 90);
    int64_t id = 0;
    uint64_t taddrs[NT];
    EXPECT("register_blocks_cache",
           llmlink_register_blocks_cache(e, &bd, fx->scratch_addrs, NT, &bk, &id), want, needle);
    EXPECT("register_cache", llmlink_register_cache(e, &cd, fx->scratch_addrs, NT, &ck, 1, &id),
           want, needle);
    EXPECT("allocate_cache", llmlink_allocate_cache(e, &cd, &ck, 1, &id, taddrs, NT), want,
           needle);
    EXPECT("allocate_blocks_cache", llmlink_allocate_blocks_cache(e, &bd, &bk, &id, taddrs, NT),
           want, needle);
    EXPECT("unregister_cache", llmlink_unregister_cache(e, 1), want, needle);
    EXPECT("deallocate_cache", llmlink_deallocate_cache(e, 1), want, needle);
    EXPECT("remove_cache_key", llmlink_remove_cache_key(e, &ck), want, needle);
    for (int c = 0; c < NCALLS; c++) {
        xargs_t a = valid_args(fx, (xcall_t)c);
        EXPECT(call_name[c], xcall(e, (xcall_t)c, &a), want, needle);
    }
}

static void test_null_engine(void **state)
{
    fx_t *fx = *state;
    every_call(fx, NULL, LLMLINK_PARAM_INVALID, "dd is NULL");
    llmlink_xfer_stats_t s;
    memset(&s, 0, sizeof s);
    s.version = LLMLINK_XFER_STATS_VERSION;
    REFUSED("get_xfer_stats dd NULL", llmlink_get_xfer_stats(NULL, &s), "dd is NULL");
    /* NULL everywhere: dd is what is named */
    REFUSED("pull_blocks all NULL", llmlink_pull_blocks(NULL, NULL, 0, NULL, 0, NULL, 0, NULL),
            "dd is NULL");
    REFUSED("register_cache all NULL", llmlink_register_cache(NULL, NULL, NULL, 0, NULL, 0, NULL),
            "dd is NULL");
    assert_nothing_moved(fx, "NULL engine");
}

static void test_not_initialized(void **state)
{
    fx_t *fx = *state;
    llmlink_t *d = new_engine(fx, LLMLINK_ROLE_DECODER, 60);
    llmlink_t *p = new_engine(fx, LLMLINK_ROLE_PROMPT, 61);
    every_call(fx, d, LLMLINK_NOT_INITIALIZED, "not initialized");
    every_call(fx, p, LLMLINK_NOT_INITIALIZED, "llmlink_init");
    /* Bad arguments are still reported as bad arguments. */
    REFUSED("pull_blocks before init, key NULL",
            llmlink_pull_blocks(d, NULL, 1, src3, 3, dst3, 3, NULL), "src_key");
    REFUSED("unregister before init, id 0", llmlink_unregister_cache(d, 0), "cache_id");
    /* The counters answer at any time: no cache yet. */
    llmlink_xfer_stats_t s = xstats_of(d);
    assert_int_equal(s.caches, 0);
    assert_int_equal(s.transfers, 0);
}

static void test_finalized(void **state)
{
    fx_t *fx = *state;
    llmlink_t *d = new_engine(fx, LLMLINK_ROLE_DECODER, 70);
    llmlink_t *p = new_engine(fx, LLMLINK_ROLE_PROMPT, 71);
    static const llmlink_option_t popts[] = {{"llm.listenIpInfo", "127.0.0.1:0"}};
    assert_status(llmlink_init(d, dec_opts, 1), LLMLINK_SUCCESS);
    assert_status(llmlink_init(p, popts, 1), LLMLINK_SUCCESS);
    /* a cache registered before finalize */
    llmlink_cache_desc_t bd = blocks_desc();
    int64_t id = 0;
    assert_status(llmlink_register_blocks_cache(d, &bd, fx->scratch_addrs, NT, NULL, &id),
                  LLMLINK_SUCCESS);
    llmlink_finalize(d);
    llmlink_finalize(p);
    every_call(fx, d, LLMLINK_ENGINE_FINALIZED, "finalized");
    every_call(fx, p, LLMLINK_ENGINE_FINALIZED, "finalized");
    EXPECT("unregister after finalize", llmlink_unregister_cache(d, id),
           LLMLINK_ENGINE_FINALIZED, "finalized");
    /* The counters keep answering after shutdown (as llmlink_get_stats). */
    (void)xstats_of(d);
    (void)xstats_of(p);
    /* A finalized engine has no link to count. */
    llmlink_link_stats_t ls = {.version = LLMLINK_LINK_STATS_VERSION};
    EXPECT("get_link_stats after finalize", llmlink_get_link_stats(d, PROMPT_ID, &ls),
           LLMLINK_ENGINE_FINALIZED, "finalized");
}

/* ---- registration: argument refusals ----------------------------------- */

static void test_register_null_args(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->dec;
    llmlink_cache_desc_t bd = blocks_desc(), cd = batch_desc();
    llmlink_cache_key_t bk = blocks_key(DECODER_ID, 100), ck = cache_key(DECODER_ID, 100, 1);
    int64_t id = 12345;
    REFUSED("blocks: desc NULL",
            llmlink_register_blocks_cache(e, NULL, fx->scratch_addrs, NT, &bk, &id), "desc");
    REFUSED("blocks: cache_id NULL",
            llmlink_register_blocks_cache(e, &bd, fx->scratch_addrs, NT, &bk, NULL), "cache_id");
    REFUSED("blocks: addrs NULL", llmlink_register_blocks_cache(e, &bd, NULL, NT, &bk, &id),
            "addrs is NULL");
    REFUSED("cache: desc NULL",
            llmlink_register_cache(e, NULL, fx->scratch_addrs, NT, &ck, 1, &id), "desc");
    REFUSED("cache: cache_id NULL",
            llmlink_register_cache(e, &cd, fx->scratch_addrs, NT, &ck, 1, NULL), "cache_id");
    REFUSED("cache: addrs NULL", llmlink_register_cache(e, &cd, NULL, NT, &ck, 1, &id),
            "addrs is NULL");
    /* nothing was registered: the keys are still free */
    register_and_drop(fx, e, &bk, &ck, 1);
}

static void test_register_key_args(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->dec;
    llmlink_cache_desc_t bd = blocks_desc(), cd = batch_desc();
    int64_t id = 0;
    llmlink_cache_key_t keys[2] = {cache_key(DECODER_ID, 200, 1), cache_key(DECODER_ID, 201, 1)};

    REFUSED("cache: keys NULL, num_keys 2",
            llmlink_register_cache(e, &cd, fx->scratch_addrs, NT, NULL, 2, &id), "keys is NULL");
    REFUSED("cache: num_keys > LLMLINK_MAX_KEYS",
            llmlink_register_cache(e, &cd, fx->scratch_addrs, NT, keys,
                                   (size_t)LLMLINK_MAX_KEYS + 1, &id),
            "num_keys");
    keys[1].type = LLMLINK_KEY_BLOCKS;
    REFUSED("cache: keys[1] is a blocks key",
            llmlink_register_cache(e, &cd, fx->scratch_addrs, NT, keys, 2, &id), "keys[1].type");
    keys[1].type = LLMLINK_KEY_ID_AND_INDEX;
    keys[1].cache_id = 1;
    REFUSED("cache: keys[1] is an id-and-index key",
            llmlink_register_cache(e, &cd, fx->scratch_addrs, NT, keys, 2, &id), "keys[1].type");
    keys[1].type = (llmlink_cache_key_type_t)0;
    REFUSED("cache: keys[1].type 0",
            llmlink_register_cache(e, &cd, fx->scratch_addrs, NT, keys, 2, &id), "keys[1].type");
    keys[0].type = (llmlink_cache_key_type_t)4;
    REFUSED("cache: keys[0].type 4",
            llmlink_register_cache(e, &cd, fx->scratch_addrs, NT, keys, 2, &id), "keys[0].type");

    llmlink_cache_key_t k = cache_key(DECODER_ID, 202, 1);
    REFUSED("blocks: a CacheKey",
            llmlink_register_blocks_cache(e, &bd, fx->scratch_addrs, NT, &k, &id),
            "blocks_key.type");
    k = idx_key(DECODER_ID, 1, 0);
    REFUSED("blocks: an id-and-index key",
            llmlink_register_blocks_cache(e, &bd, fx->scratch_addrs, NT, &k, &id),
            "blocks_key.type");
    k.type = (llmlink_cache_key_type_t)-1;
    REFUSED("blocks: type -1",
            llmlink_register_blocks_cache(e, &bd, fx->scratch_addrs, NT, &k, &id),
            "blocks_key.type");

    /* keys NULL with 0 keys, and a blocks cache without key: fine */
    register_and_drop(fx, e, NULL, NULL, 0);
}

static void test_allocate_args(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->dec;
    llmlink_cache_desc_t bd = blocks_desc(), cd = batch_desc();
    int64_t id = 0;
    uint64_t ta[NT + 1];
    llmlink_cache_key_t keys[2] = {cache_key(DECODER_ID, 300, 1), cache_key(DECODER_ID, 301, 1)};
    llmlink_cache_key_t bk = blocks_key(DECODER_ID, 300);

    REFUSED("allocate: desc NULL", llmlink_allocate_cache(e, NULL, keys, 2, &id, ta, NT), "desc");
    REFUSED("allocate: cache_id NULL", llmlink_allocate_cache(e, &cd, keys, 2, NULL, ta, NT),
            "cache_id");
    REFUSED("allocate: tensor_addrs NULL", llmlink_allocate_cache(e, &cd, keys, 2, &id, NULL, NT),
            "tensor_addrs");
    REFUSED("allocate: num_tensor_addrs < num_tensors",
            llmlink_allocate_cache(e, &cd, keys, 2, &id, ta, NT - 1), "num_tensor_addrs");
    REFUSED("allocate: num_tensor_addrs 0", llmlink_allocate_cache(e, &cd, keys, 2, &id, ta, 0),
            "num_tensor_addrs");
    REFUSED("allocate: keys NULL, num_keys 1", llmlink_allocate_cache(e, &cd, NULL, 1, &id, ta, NT),
            "keys is NULL");
    REFUSED("allocate: num_keys > LLMLINK_MAX_KEYS",
            llmlink_allocate_cache(e, &cd, keys, (size_t)LLMLINK_MAX_KEYS + 1, &id, ta, NT),
            "num_keys");
    keys[1] = bk;
    REFUSED("allocate: keys[1] a blocks key", llmlink_allocate_cache(e, &cd, keys, 2, &id, ta, NT),
            "keys[1].type");

    REFUSED("allocate_blocks: desc NULL", llmlink_allocate_blocks_cache(e, NULL, &bk, &id, ta, NT),
            "desc");
    REFUSED("allocate_blocks: cache_id NULL",
            llmlink_allocate_blocks_cache(e, &bd, &bk, NULL, ta, NT), "cache_id");
    REFUSED("allocate_blocks: tensor_addrs NULL",
            llmlink_allocate_blocks_cache(e, &bd, &bk, &id, NULL, NT), "tensor_addrs");
    REFUSED("allocate_blocks: num_tensor_addrs 3",
            llmlink_allocate_blocks_cache(e, &bd, &bk, &id, ta, 3), "num_tensor_addrs");
    REFUSED("allocate_blocks: a CacheKey",
            llmlink_allocate_blocks_cache(e, &bd, &keys[0], &id, ta, NT), "blocks_key.type");
    llmlink_cache_key_t bad = bk;
    bad.type = (llmlink_cache_key_type_t)9;
    REFUSED("allocate_blocks: type 9", llmlink_allocate_blocks_cache(e, &bd, &bad, &id, ta, NT),
            "blocks_key.type");

    /* more room than needed is fine */
    assert_status(llmlink_allocate_blocks_cache(e, &bd, &bk, &id, ta, NT + 1), LLMLINK_SUCCESS);
    assert_status(llmlink_deallocate_cache(e, id), LLMLINK_SUCCESS);
}

static void test_remove_args(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->dec;
    REFUSED("unregister id 0", llmlink_unregister_cache(e, 0), "cache_id");
    REFUSED("unregister id -1", llmlink_unregister_cache(e, -1), "cache_id");
    REFUSED("unregister id INT64_MIN", llmlink_unregister_cache(e, INT64_MIN), "cache_id");
    REFUSED("deallocate id 0", llmlink_deallocate_cache(e, 0), "cache_id");
    REFUSED("deallocate id -7", llmlink_deallocate_cache(e, -7), "cache_id");
    REFUSED("remove_cache_key NULL", llmlink_remove_cache_key(e, NULL), "key is NULL");
    llmlink_cache_key_t k = idx_key(DECODER_ID, fx->dec_batch_id, 0);
    REFUSED("remove_cache_key id-and-index", llmlink_remove_cache_key(e, &k), "key.type");
    k.type = (llmlink_cache_key_type_t)0;
    REFUSED("remove_cache_key type 0", llmlink_remove_cache_key(e, &k), "key.type");
    k.type = (llmlink_cache_key_type_t)5;
    REFUSED("remove_cache_key type 5", llmlink_remove_cache_key(e, &k), "key.type");
    /* the fixture's caches are untouched */
    llmlink_xfer_stats_t s = xstats_of(e);
    assert_int_equal(s.caches, 2);
}

/* ---- registration through the ABI: round trips, registry refusals ------ */

static void test_register_round_trip(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->dec;
    uint32_t base = xstats_of(e).caches;
    assert_int_equal(base, 2);
    llmlink_cache_desc_t bd = blocks_desc(), cd = batch_desc();
    llmlink_cache_key_t bk = blocks_key(DECODER_ID, 400);
    llmlink_cache_key_t keys[2] = {cache_key(DECODER_ID, 400, 1), cache_key(DECODER_ID, 401, 1)};
    int64_t a = 0, b = 0;
    assert_status(llmlink_register_blocks_cache(e, &bd, fx->scratch_addrs, NT, &bk, &a),
                  LLMLINK_SUCCESS);
    assert_true(a >= 1);
    assert_int_equal(xstats_of(e).caches, base + 1);
    /* the same memory may back two caches */
    assert_status(llmlink_register_cache(e, &cd, fx->scratch_addrs, NT, keys, 2, &b),
                  LLMLINK_SUCCESS);
    assert_true(b >= 1 && b != a && b != fx->dec_blk_id && b != fx->dec_batch_id);
    assert_int_equal(xstats_of(e).caches, base + 2);
    assert_status(llmlink_unregister_cache(e, a), LLMLINK_SUCCESS);
    assert_int_equal(xstats_of(e).caches, base + 1);
    EXPECT("unregister twice", llmlink_unregister_cache(e, a), LLMLINK_KV_CACHE_NOT_EXIST,
           NULL);
    /* its key is free again */
    assert_status(llmlink_register_blocks_cache(e, &bd, fx->scratch_addrs, NT, &bk, &a),
                  LLMLINK_SUCCESS);
    assert_status(llmlink_unregister_cache(e, a), LLMLINK_SUCCESS);
    /* a key removed from a registered cache is free again too */
    assert_status(llmlink_remove_cache_key(e, &keys[1]), LLMLINK_SUCCESS);
    EXPECT("remove_cache_key twice", llmlink_remove_cache_key(e, &keys[1]),
           LLMLINK_KV_CACHE_NOT_EXIST, NULL);
    int64_t c = 0;
    assert_status(llmlink_register_cache(e, &cd, fx->scratch_addrs, NT, &keys[1], 1, &c),
                  LLMLINK_SUCCESS);
    assert_status(llmlink_unregister_cache(e, c), LLMLINK_SUCCESS);
    assert_status(llmlink_unregister_cache(e, b), LLMLINK_SUCCESS);
    assert_int_equal(xstats_of(e).caches, base);
    /* an engine's keys are its own: the prompt may use the same key */
    assert_status(llmlink_register_blocks_cache(fx->prompt, &bd, fx->scratch_addrs, NT, &bk, &a),
                  LLMLINK_SUCCESS);
    assert_status(llmlink_unregister_cache(fx->prompt, a), LLMLINK_SUCCESS);
}

static void test_registry_refusals(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->dec;
    uint32_t base = xstats_of(e).caches;
    llmlink_cache_desc_t bd = blocks_desc(), cd = batch_desc();
    int64_t id = 0;
    uint64_t addrs[NT];
    memcpy(addrs, fx->scratch_addrs, sizeof addrs);

    addrs[1] = 0;
    REFUSED("zero address", llmlink_register_blocks_cache(e, &bd, addrs, NT, NULL, &id), "addrs");
    REFUSED("zero address (cache)", llmlink_register_cache(e, &cd, addrs, NT, NULL, 0, &id),
            "addrs");
    REFUSED("num_addrs < num_tensors",
            llmlink_register_blocks_cache(e, &bd, fx->scratch_addrs, NT - 1, NULL, &id),
            "num_addrs");
    uint64_t more[NT + 1];
    memcpy(more, fx->scratch_addrs, sizeof fx->scratch_addrs);
    more[NT] = fx->scratch_addrs[0];
    REFUSED("num_addrs > num_tensors", llmlink_register_cache(e, &cd, more, NT + 1, NULL, 0, &id),
            "num_addrs");
    REFUSED("num_addrs 0", llmlink_register_cache(e, &cd, fx->scratch_addrs, 0, NULL, 0, &id),
            "num_addrs");

    /* duplicate keys: in one call, across calls, against the fixture's */
    llmlink_cache_key_t two[2] = {cache_key(DECODER_ID, 500, 1), cache_key(DECODER_ID, 500, 1)};
    EXPECT("same key twice in one call",
           llmlink_register_cache(e, &cd, fx->scratch_addrs, NT, two, 2, &id),
           LLMLINK_CACHE_KEY_ALREADY_EXIST, "llmlink_register_cache");
    EXPECT("CacheKey of the fixture's cache",
           llmlink_register_cache(e, &cd, fx->scratch_addrs, NT, &fx->dkey_cache, 1, &id),
           LLMLINK_CACHE_KEY_ALREADY_EXIST, "llmlink_register_cache");
    EXPECT("blocks key of the fixture's cache",
           llmlink_register_blocks_cache(e, &bd, fx->scratch_addrs, NT, &fx->dkey_blocks, &id),
           LLMLINK_CACHE_KEY_ALREADY_EXIST, "llmlink_register_blocks_cache");
    uint64_t ta[NT];
    EXPECT("allocate with a taken CacheKey",
           llmlink_allocate_cache(e, &cd, &fx->dkey_cache, 1, &id, ta, NT),
           LLMLINK_CACHE_KEY_ALREADY_EXIST, "llmlink_allocate_cache");
    EXPECT("allocate_blocks with a taken key",
           llmlink_allocate_blocks_cache(e, &bd, &fx->dkey_blocks, &id, ta, NT),
           LLMLINK_CACHE_KEY_ALREADY_EXIST, "llmlink_allocate_blocks_cache");
    /* more keys than batch entries */
    llmlink_cache_key_t three[3] = {cache_key(DECODER_ID, 510, 1), cache_key(DECODER_ID, 511, 1),
                                    cache_key(DECODER_ID, 512, 1)};
    REFUSED("3 keys for 2 entries",
            llmlink_register_cache(e, &cd, fx->scratch_addrs, NT, three, 3, &id), "key");

    /* DEVICE memory is not in this version */
    llmlink_cache_desc_t dev = blocks_desc();
    dev.placement = LLMLINK_PLACEMENT_DEVICE;
    EXPECT("DEVICE register", llmlink_register_blocks_cache(e, &dev, fx->scratch_addrs, NT, NULL,
                                                            &id),
           LLMLINK_FEATURE_NOT_ENABLED, "placement|DEVICE");
    EXPECT("DEVICE allocate", llmlink_allocate_blocks_cache(e, &dev, NULL, &id, ta, NT),
           LLMLINK_FEATURE_NOT_ENABLED, "placement|DEVICE");

    /* unknown ids and keys */
    EXPECT("unregister unknown id", llmlink_unregister_cache(e, 987654),
           LLMLINK_KV_CACHE_NOT_EXIST, "987654");
    EXPECT("deallocate unknown id", llmlink_deallocate_cache(e, 987654),
           LLMLINK_KV_CACHE_NOT_EXIST, "987654");
    llmlink_cache_key_t unknown = cache_key(DECODER_ID, 999, 999);
    EXPECT("remove unknown CacheKey", llmlink_remove_cache_key(e, &unknown),
           LLMLINK_KV_CACHE_NOT_EXIST, "llmlink_remove_cache_key");
    unknown = blocks_key(DECODER_ID, 999);
    EXPECT("remove unknown blocks key", llmlink_remove_cache_key(e, &unknown),
           LLMLINK_KV_CACHE_NOT_EXIST, "llmlink_remove_cache_key");

    /* the wrong removal call for the kind of cache */
    int64_t owned = 0;
    assert_status(llmlink_allocate_blocks_cache(e, &bd, NULL, &owned, ta, NT), LLMLINK_SUCCESS);
    REFUSED("unregister an allocated cache", llmlink_unregister_cache(e, owned),
            "llmlink_unregister_cache");
    REFUSED("deallocate a registered cache", llmlink_deallocate_cache(e, fx->dec_blk_id),
            "llmlink_deallocate_cache");
    /* neither changed anything */
    assert_int_equal(xstats_of(e).caches, base + 1);
    assert_status(llmlink_deallocate_cache(e, owned), LLMLINK_SUCCESS);
    assert_int_equal(xstats_of(e).caches, base);
    assert_nothing_moved(fx, "registry refusals");
}

static void check_allocated(const char *what, const uint64_t *ta, size_t n, size_t bytes)
{
    long page = sysconf(_SC_PAGESIZE);
    assert_true(page > 0);
    for (size_t i = 0; i < n; i++) {
        if (ta[i] == 0 || ta[i] % (uint64_t)page != 0)
            fail_msg("%s: tensor_addrs[%zu] = 0x%llx is not page aligned", what, i,
                     (unsigned long long)ta[i]);
        for (size_t j = 0; j < i; j++)
            if (ta[i] < ta[j] + bytes && ta[j] < ta[i] + bytes)
                fail_msg("%s: tensors %zu and %zu overlap (0x%llx, 0x%llx, %zu bytes)", what, j,
                         i, (unsigned long long)ta[j], (unsigned long long)ta[i], bytes);
        uint8_t *p = (uint8_t *)(uintptr_t)ta[i];
        for (size_t k = 0; k < bytes; k++)
            if (p[k] != 0)
                fail_msg("%s: tensor %zu byte %zu is %u, not zeroed", what, i, k, p[k]);
        memset(p, (int)(0x40 + i), bytes);
    }
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = (const uint8_t *)(uintptr_t)ta[i];
        assert_int_equal(p[0], 0x40 + i);
        assert_int_equal(p[bytes - 1], 0x40 + i);
    }
}

static void test_allocate_round_trip(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->dec;
    uint32_t base = xstats_of(e).caches;
    /* a larger shape than the fixture's: 3 batch entries of 1000 floats */
    llmlink_cache_desc_t cd = batch_desc();
    cd.data_type = LLMLINK_DT_FLOAT;
    cd.shape[0] = 3;
    cd.shape[1] = 1000;
    const size_t tbytes = 3 * 1000 * 4;
    uint64_t ta[NT + 2];
    for (size_t i = 0; i < NT + 2; i++)
        ta[i] = 0xDEADBEEFu;
    int64_t id = 0;
    assert_status(llmlink_allocate_cache(e, &cd, NULL, 0, &id, ta, NT + 2), LLMLINK_SUCCESS);
    assert_true(id >= 1);
    assert_int_equal(ta[NT], 0xDEADBEEFu); /* only num_tensors entries written */
    assert_int_equal(ta[NT + 1], 0xDEADBEEFu);
    check_allocated("allocate_cache", ta, NT, tbytes);
    assert_int_equal(xstats_of(e).caches, base + 1);
    assert_status(llmlink_deallocate_cache(e, id), LLMLINK_SUCCESS);
    assert_int_equal(xstats_of(e).caches, base);
    EXPECT("deallocate twice", llmlink_deallocate_cache(e, id), LLMLINK_KV_CACHE_NOT_EXIST, NULL);

    /* a blocks cache with a key */
    llmlink_cache_desc_t bd = blocks_desc();
    llmlink_cache_key_t bk = blocks_key(DECODER_ID, 600);
    assert_status(llmlink_allocate_blocks_cache(e, &bd, &bk, &id, ta, NT), LLMLINK_SUCCESS);
    check_allocated("allocate_blocks_cache", ta, NT, TENSOR_BYTES);
    int64_t other = 0;
    uint64_t ta2[NT];
    EXPECT("same blocks key again", llmlink_allocate_blocks_cache(e, &bd, &bk, &other, ta2, NT),
           LLMLINK_CACHE_KEY_ALREADY_EXIST, NULL);
    assert_status(llmlink_remove_cache_key(e, &bk), LLMLINK_SUCCESS);
    assert_status(llmlink_deallocate_cache(e, id), LLMLINK_SUCCESS);

    /* keys hold an allocated cache after its id is dropped */
    llmlink_cache_key_t keys[2] = {cache_key(DECODER_ID, 610, 1), cache_key(DECODER_ID, 611, 1)};
    cd = batch_desc();
    assert_status(llmlink_allocate_cache(e, &cd, keys, 2, &id, ta, NT), LLMLINK_SUCCESS);
    check_allocated("allocate_cache with keys", ta, NT, TENSOR_BYTES);
    assert_status(llmlink_deallocate_cache(e, id), LLMLINK_SUCCESS);
    EXPECT("dropped id", llmlink_deallocate_cache(e, id), LLMLINK_KV_CACHE_NOT_EXIST, NULL);
    EXPECT("key still held", llmlink_allocate_cache(e, &cd, &keys[0], 1, &other, ta2, NT),
           LLMLINK_CACHE_KEY_ALREADY_EXIST, NULL);
    assert_status(llmlink_remove_cache_key(e, &keys[0]), LLMLINK_SUCCESS);
    assert_status(llmlink_remove_cache_key(e, &keys[1]), LLMLINK_SUCCESS);
    EXPECT("key gone", llmlink_remove_cache_key(e, &keys[1]), LLMLINK_KV_CACHE_NOT_EXIST, NULL);
    assert_int_equal(xstats_of(e).caches, base);
}

/* ---- transfers: key and id --------------------------------------------- */

static void test_xfer_key_null_and_type(void **state)
{
    fx_t *fx = *state;
    char what[160], needle[64];
    for (int ci = 0; ci < NCALLS; ci++) {
        xcall_t c = (xcall_t)ci;
        xargs_t a = valid_args(fx, c);
        a.key = NULL;
        whatf(what, sizeof what, c, "key NULL");
        snprintf(needle, sizeof needle, "%s is NULL", key_arg[c]);
        REFUSED(what, xcall(fx->dec, c, &a), needle);

        static const int bad_types[] = {0, 4, -1, 1000};
        for (size_t t = 0; t < sizeof bad_types / sizeof bad_types[0]; t++) {
            llmlink_cache_key_t k = *valid_args(fx, c).key;
            k.type = (llmlink_cache_key_type_t)bad_types[t];
            a = valid_args(fx, c);
            a.key = &k;
            whatf(what, sizeof what, c, "key type %d", bad_types[t]);
            snprintf(needle, sizeof needle, "%s.type", key_arg[c]);
            REFUSED(what, xcall(fx->dec, c, &a), needle);
        }
    }
    assert_nothing_moved(fx, "key NULL / type out of range");
}

static void test_xfer_key_type_for_call(void **state)
{
    fx_t *fx = *state;
    xargs_t a;
    /* pull_cache / push_cache: no blocks key */
    a = valid_args(fx, PULL_CACHE);
    a.key = &fx->rkey_blocks;
    REFUSED("pull_cache with a blocks key", xcall(fx->dec, PULL_CACHE, &a), "src_key.type");
    a = valid_args(fx, PUSH_CACHE);
    a.key = &fx->rkey_blocks;
    REFUSED("push_cache with a blocks key", xcall(fx->dec, PUSH_CACHE, &a), "dst_key.type");
    /* push_blocks: blocks keys only */
    a = valid_args(fx, PUSH_BLOCKS);
    a.key = &fx->rkey_cache;
    REFUSED("push_blocks with a CacheKey", xcall(fx->dec, PUSH_BLOCKS, &a), "dst_key.type");
    a.key = &fx->rkey_idx;
    REFUSED("push_blocks with an id-and-index key", xcall(fx->dec, PUSH_BLOCKS, &a),
            "dst_key.type");
    /* pull_blocks by CacheKey / id-and-index: no source blocks */
    a = valid_args(fx, PULL_BLOCKS);
    a.key = &fx->rkey_cache;
    REFUSED("pull_blocks by CacheKey with src_blocks", xcall(fx->dec, PULL_BLOCKS, &a),
            "src_blocks");
    a.key = &fx->rkey_idx;
    REFUSED("pull_blocks by id-and-index with src_blocks", xcall(fx->dec, PULL_BLOCKS, &a),
            "src_blocks");
    a.src = NULL;
    a.nsrc = 3;
    REFUSED("pull_blocks by id-and-index, src_blocks NULL but num_src_blocks 3",
            xcall(fx->dec, PULL_BLOCKS, &a), "num_src_blocks");
    a.src = src3;
    a.nsrc = 0;
    REFUSED("pull_blocks by id-and-index, src_blocks set but num_src_blocks 0",
            xcall(fx->dec, PULL_BLOCKS, &a), "src_blocks");
    assert_nothing_moved(fx, "key type for the call");
}

static void test_xfer_id_and_index_cache_id(void **state)
{
    fx_t *fx = *state;
    static const int64_t bad_ids[] = {0, -1, INT64_MIN};
    char what[160], needle[64];
    for (int ci = 0; ci < NCALLS; ci++) {
        xcall_t c = (xcall_t)ci;
        if (c == PUSH_BLOCKS)
            continue; /* takes no id-and-index key at all */
        for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
            llmlink_cache_key_t k = fx->rkey_idx;
            k.cache_id = bad_ids[i];
            xargs_t a = valid_args(fx, c);
            a.key = &k;
            if (c == PULL_BLOCKS) {
                a.src = NULL;
                a.nsrc = 0;
            }
            whatf(what, sizeof what, c, "id-and-index key, cache_id %lld", (long long)bad_ids[i]);
            snprintf(needle, sizeof needle, "%s.cache_id", key_arg[c]);
            REFUSED(what, xcall(fx->dec, c, &a), needle);
        }
    }
    assert_nothing_moved(fx, "id-and-index cache_id");
}

static void test_xfer_local_cache_id(void **state)
{
    fx_t *fx = *state;
    static const int64_t bad_ids[] = {0, -1, -100, INT64_MIN};
    char what[160];
    for (int ci = 0; ci < NCALLS; ci++) {
        xcall_t c = (xcall_t)ci;
        for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
            xargs_t a = valid_args(fx, c);
            a.id = bad_ids[i];
            whatf(what, sizeof what, c, "%s %lld", id_arg[c], (long long)bad_ids[i]);
            REFUSED(what, xcall(fx->dec, c, &a), id_arg[c]);
        }
    }
    assert_nothing_moved(fx, "local cache id");
}

/* ---- transfers: block lists -------------------------------------------- */

static void test_xfer_block_list_null_and_counts(void **state)
{
    fx_t *fx = *state;
    const size_t too_many = (size_t)LLMLINK_MAX_BLOCKS_PER_CALL + 1;
    const xcall_t calls[2] = {PULL_BLOCKS, PUSH_BLOCKS};
    enum { KEEP = -1, TOO_MANY = -2 }; /* a count as valid_args has it, or too many */
    static const struct {
        const char *what;
        bool src_null, dst_null;
        int nsrc, ndst; /* a count, KEEP or TOO_MANY */
        const char *needle;
    } bad[] = {
        {"src_blocks NULL, num_src_blocks 3", true, false, KEEP, KEEP, "src_blocks is NULL"},
        {"dst_blocks NULL, num_dst_blocks 3", false, true, KEEP, KEEP, "dst_blocks is NULL"},
        /* counts are checked before the lists are read (the arrays are short) */
        {"num_src_blocks > LLMLINK_MAX_BLOCKS_PER_CALL", false, false, TOO_MANY, TOO_MANY,
         "num_src_blocks"},
        {"num_dst_blocks > LLMLINK_MAX_BLOCKS_PER_CALL", false, false, KEEP, TOO_MANY,
         "num_dst_blocks"},
        {"no blocks at all", true, true, 0, 0, "num_dst_blocks"},
        {"num_dst_blocks 0", false, false, KEEP, 0, "num_dst_blocks"},
        {"num_src_blocks 2, num_dst_blocks 3", false, false, 2, KEEP, "num_src_blocks"},
        {"num_src_blocks 3, num_dst_blocks 2", false, false, KEEP, 2, "num_dst_blocks"},
    };
    char what[160];
    for (size_t i = 0; i < 2; i++)
        for (size_t j = 0; j < sizeof bad / sizeof bad[0]; j++) {
            xcall_t c = calls[i];
            xargs_t a = valid_args(fx, c);
            if (bad[j].src_null)
                a.src = NULL;
            if (bad[j].dst_null)
                a.dst = NULL;
            if (bad[j].nsrc != KEEP)
                a.nsrc = bad[j].nsrc == TOO_MANY ? too_many : (size_t)bad[j].nsrc;
            if (bad[j].ndst != KEEP)
                a.ndst = bad[j].ndst == TOO_MANY ? too_many : (size_t)bad[j].ndst;
            whatf(what, sizeof what, c, "%s", bad[j].what);
            REFUSED(what, xcall(fx->dec, c, &a), bad[j].needle);
        }
    /* pull_blocks by CacheKey needs destination blocks too */
    xargs_t a = pull_by_cache_key(fx);
    a.ndst = 0;
    REFUSED("pull_blocks by CacheKey, num_dst_blocks 0", xcall(fx->dec, PULL_BLOCKS, &a),
            "num_dst_blocks");
    a.ndst = too_many;
    REFUSED("pull_blocks by CacheKey, too many dst blocks", xcall(fx->dec, PULL_BLOCKS, &a),
            "num_dst_blocks");
    a.dst = NULL;
    a.ndst = 2;
    REFUSED("pull_blocks by CacheKey, dst_blocks NULL", xcall(fx->dec, PULL_BLOCKS, &a),
            "dst_blocks is NULL");
    assert_nothing_moved(fx, "block list counts");
}

static void test_xfer_block_index_bound(void **state)
{
    fx_t *fx = *state;
    const xcall_t calls[2] = {PULL_BLOCKS, PUSH_BLOCKS};
    uint64_t big_src[3] = {0, 1ull << 40, 2};
    uint64_t big_dst[3] = {3, 4, UINT64_MAX};
    uint64_t edge[3] = {(1ull << 40) - 1, 6, 7}; /* the largest accepted index */
    char what[160];
    for (size_t i = 0; i < 2; i++) {
        xcall_t c = calls[i];
        xargs_t a = valid_args(fx, c);
        a.src = big_src;
        whatf(what, sizeof what, c, "src_blocks[1] = 2^40");
        REFUSED(what, xcall(fx->dec, c, &a), "src_blocks[1]");
        a = valid_args(fx, c);
        a.dst = big_dst;
        whatf(what, sizeof what, c, "dst_blocks[2] = 2^64 - 1");
        REFUSED(what, xcall(fx->dec, c, &a), "dst_blocks[2]");
        /* 2^40 - 1 in the remote list passes the ABI (the owner of the
         * cache would refuse it; here there is no link) */
        a = valid_args(fx, c);
        if (c == PULL_BLOCKS)
            a.src = edge;
        else
            a.dst = edge;
        whatf(what, sizeof what, c, "remote block 2^40 - 1");
        EXPECT(what, xcall(fx->dec, c, &a), LLMLINK_NOT_YET_LINK, NULL);
    }
    xargs_t a = pull_by_cache_key(fx);
    a.dst = big_dst;
    REFUSED("pull_blocks by CacheKey, dst_blocks[2] too big", xcall(fx->dec, PULL_BLOCKS, &a),
            "dst_blocks[2]");
}

static void test_xfer_duplicate_destination_blocks(void **state)
{
    fx_t *fx = *state;
    uint64_t src[4] = {0, 1, 2, 3};
    uint64_t dst[4] = {6, 7, 2, 7};
    xargs_t a = valid_args(fx, PULL_BLOCKS);
    a.src = src;
    a.dst = dst;
    a.nsrc = a.ndst = 4;
    REFUSED("pull_blocks: dst_blocks[3] repeats dst_blocks[1]", xcall(fx->dec, PULL_BLOCKS, &a),
            "dst_blocks[3] (7) appears twice");
    /* the first position that repeats an earlier entry is named */
    uint64_t dst2[4] = {9, 5, 9, 5};
    a.dst = dst2;
    REFUSED("pull_blocks: dst_blocks {9, 5, 9, 5}", xcall(fx->dec, PULL_BLOCKS, &a),
            "dst_blocks[2] (9) appears twice");
    /* push: the remote (destination) list must be unique */
    a = valid_args(fx, PUSH_BLOCKS);
    a.src = src;
    a.dst = dst;
    a.nsrc = a.ndst = 4;
    REFUSED("push_blocks: dst_blocks[3] repeats", xcall(fx->dec, PUSH_BLOCKS, &a),
            "dst_blocks[3] (7) appears twice");
    /* pull by CacheKey: the local destination list */
    a = pull_by_cache_key(fx);
    a.dst = dst;
    a.ndst = 4;
    REFUSED("pull_blocks by CacheKey: dst_blocks[3] repeats", xcall(fx->dec, PULL_BLOCKS, &a),
            "dst_blocks[3] (7) appears twice");

    /* long lists (the sorted path): two repeated values; the earlier
     * repeat (position 40000) is named, not the later (70000) */
    const size_t n = 100000;
    uint64_t *ls = malloc(n * sizeof *ls);
    uint64_t *ld = malloc(n * sizeof *ld);
    assert_non_null(ls);
    assert_non_null(ld);
    for (size_t i = 0; i < n; i++) {
        ls[i] = i;
        ld[i] = (uint64_t)(n - i) * 3; /* distinct, descending */
    }
    ld[70000] = ld[10];
    ld[40000] = ld[20];
    char needle[96];
    snprintf(needle, sizeof needle, "dst_blocks[40000] (%llu) appears twice",
             (unsigned long long)ld[20]);
    a = valid_args(fx, PULL_BLOCKS);
    a.src = ls;
    a.dst = ld;
    a.nsrc = a.ndst = n;
    REFUSED("pull_blocks: long dst list with repeats", xcall(fx->dec, PULL_BLOCKS, &a), needle);
    a = valid_args(fx, PUSH_BLOCKS);
    a.src = ls;
    a.dst = ld;
    a.nsrc = a.ndst = n;
    REFUSED("push_blocks: long dst list with repeats", xcall(fx->dec, PUSH_BLOCKS, &a), needle);
    /* a repeat of index 0 at the very end */
    for (size_t i = 0; i < n; i++)
        ld[i] = i;
    ld[n - 1] = 0;
    snprintf(needle, sizeof needle, "dst_blocks[%zu] (0) appears twice", n - 1);
    a = valid_args(fx, PULL_BLOCKS);
    a.src = ls;
    a.dst = ld;
    a.nsrc = a.ndst = n;
    REFUSED("pull_blocks: 0 repeated last", xcall(fx->dec, PULL_BLOCKS, &a), needle);
    free(ls);
    free(ld);
    assert_nothing_moved(fx, "duplicate destination blocks");
}

/* A source block may be read twice: not refused at the ABI (no link here,
 * so NOT_YET_LINK, see test_xfer_no_link). */
static void test_xfer_duplicate_source_blocks_pass(void **state)
{
    fx_t *fx = *state;
    uint64_t src[3] = {1, 1, 1};
    const xcall_t calls[2] = {PULL_BLOCKS, PUSH_BLOCKS};
    for (size_t i = 0; i < 2; i++) {
        xargs_t a = valid_args(fx, calls[i]);
        a.src = src;
        EXPECT(call_name[calls[i]], xcall(fx->dec, calls[i], &a), LLMLINK_NOT_YET_LINK, NULL);
    }
}

/* ---- transfers: size and layers ---------------------------------------- */

static void test_xfer_size(void **state)
{
    fx_t *fx = *state;
    static const int64_t bad[] = {0, -2, -1000, INT64_MIN};
    const xcall_t calls[2] = {PULL_CACHE, PUSH_CACHE};
    char what[160];
    for (size_t i = 0; i < 2; i++)
        for (size_t j = 0; j < sizeof bad / sizeof bad[0]; j++) {
            xargs_t a = valid_args(fx, calls[i]);
            a.size = bad[j];
            whatf(what, sizeof what, calls[i], "size %lld", (long long)bad[j]);
            REFUSED(what, xcall(fx->dec, calls[i], &a), "size");
        }
    assert_nothing_moved(fx, "size");
}

static llmlink_layer_range_t lr(int32_t ss, int32_t se, int32_t ds, int32_t de, uint32_t tpl)
{
    llmlink_layer_range_t r = {ss, se, ds, de, tpl};
    return r;
}

static void test_xfer_layers(void **state)
{
    fx_t *fx = *state;
    static const struct {
        const char *what;
        int32_t ss, se, ds, de;
        uint32_t tpl;
        const char *needle;
    } bad[] = {
        {"tensors_per_layer past LLMLINK_MAX_TENSORS", 0, 1, 0, 1, LLMLINK_MAX_TENSORS + 1,
         "tensors_per_layer"},
        {"tensors_per_layer UINT32_MAX", -1, -1, -1, -1, UINT32_MAX, "tensors_per_layer"},
        {"src start -1, end 3", -1, 3, 0, 4, 2, "src_start"},
        {"src start 2, end 2 (empty)", 2, 2, 0, 1, 2, "src_start"},
        {"src start 3, end 1", 3, 1, 0, 2, 2, "src_start"},
        {"src -2, -2", -2, -2, -1, -1, 2, "src_start"},
        {"src 0, -1", 0, -1, 0, 1, 2, "src_start"},
        {"dst start 5, end 4", 0, 1, 5, 4, 2, "dst_start"},
        {"dst start -3, end 1", 0, 1, -3, 1, 2, "dst_start"},
        {"src every layer, dst a range", -1, -1, 0, 2, 2, "both ranges or neither"},
        {"src a range, dst every layer", 0, 2, -1, -1, 0, "both ranges or neither"},
        {"ranges of 2 and 3 layers", 0, 2, 0, 3, 2, "same number"},
        {"ranges of 1 and 2 layers", 1, 2, 4, 6, 1, "same number"},
        {"src end past LLMLINK_MAX_TENSORS tensors", 0, 3000, 0, 3000, 2, "src_end"},
        {"dst end past LLMLINK_MAX_TENSORS tensors", 0, 1, INT32_MAX - 1, INT32_MAX, 2,
         "dst_end"},
    };
    char what[200];
    for (int ci = 0; ci < NCALLS; ci++)
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            llmlink_layer_range_t r = lr(bad[i].ss, bad[i].se, bad[i].ds, bad[i].de, bad[i].tpl);
            xargs_t a = valid_args(fx, (xcall_t)ci);
            a.layers = &r;
            whatf(what, sizeof what, (xcall_t)ci, "layers: %s", bad[i].what);
            REFUSED(what, xcall(fx->dec, (xcall_t)ci, &a), bad[i].needle);
        }
    assert_nothing_moved(fx, "layers");
}

/* ---- transfers that pass the ABI: no link ------------------------------- */

static void test_xfer_no_link(void **state)
{
    fx_t *fx = *state;
    /* valid layer ranges too: they pass the ABI */
    llmlink_layer_range_t every = lr(-1, -1, -1, -1, 0);
    llmlink_layer_range_t one = lr(0, 1, 1, 2, 2);
    llmlink_layer_range_t tensors = lr(1, 3, 0, 2, 1);
    const llmlink_layer_range_t *ranges[4] = {NULL, &every, &one, &tensors};
    for (int ci = 0; ci < NCALLS; ci++)
        for (size_t r = 0; r < 4; r++) {
            xargs_t a = valid_args(fx, (xcall_t)ci);
            a.layers = ranges[r];
            int64_t t0 = rawpeer_now_ms();
            EXPECT(call_name[ci], xcall(fx->dec, (xcall_t)ci, &a), LLMLINK_NOT_YET_LINK, NULL);
            int64_t took = rawpeer_now_ms() - t0;
            /* refused at once, not after llm.SyncKvCacheWaitTime */
            if (took >= SYNC_WAIT_MS / 2)
                fail_msg("%s: NOT_YET_LINK took %lld ms", call_name[ci], (long long)took);
        }
    /* the other key types and a size */
    xargs_t a = valid_args(fx, PULL_CACHE);
    a.key = &fx->rkey_idx;
    a.size = 128;
    EXPECT("pull_cache by id-and-index", xcall(fx->dec, PULL_CACHE, &a), LLMLINK_NOT_YET_LINK,
           NULL);
    a = valid_args(fx, PUSH_CACHE);
    a.key = &fx->rkey_idx;
    EXPECT("push_cache by id-and-index", xcall(fx->dec, PUSH_CACHE, &a), LLMLINK_NOT_YET_LINK,
           NULL);
    a = pull_by_cache_key(fx);
    EXPECT("pull_blocks by CacheKey", xcall(fx->dec, PULL_BLOCKS, &a), LLMLINK_NOT_YET_LINK,
           NULL);
    a.key = &fx->rkey_idx;
    EXPECT("pull_blocks by id-and-index", xcall(fx->dec, PULL_BLOCKS, &a), LLMLINK_NOT_YET_LINK,
           NULL);
    /* a PROMPT engine may call them as well (either direction of a link) */
    a = valid_args(fx, PUSH_BLOCKS);
    a.key = &fx->dkey_blocks;
    a.id = fx->p_blk_id;
    EXPECT("push_blocks from the PROMPT engine", xcall(fx->prompt, PUSH_BLOCKS, &a),
           LLMLINK_NOT_YET_LINK, NULL);
    a = valid_args(fx, PULL_CACHE);
    a.key = &fx->dkey_cache;
    a.id = fx->p_batch_id;
    EXPECT("pull_cache from the PROMPT engine", xcall(fx->prompt, PULL_CACHE, &a),
           LLMLINK_NOT_YET_LINK, NULL);
    /* no byte moved, no request reached the prompt engine */
    llmlink_xfer_stats_t p = xstats_of(fx->prompt);
    assert_int_equal(p.requests_served, 0);
    assert_int_equal(p.requests_refused, 0);
    assert_int_equal(p.bytes_served, 0);
    llmlink_xfer_stats_t d = xstats_of(fx->dec);
    assert_int_equal(d.transfers, 0);
    assert_int_equal(d.bytes_requested, 0);
    assert_int_equal(d.tcp_requests + d.shm_requests, 0);
}

/* Linked to the prompt engine, a key naming another cluster: NOT_YET_LINK. */
static void test_xfer_other_cluster_not_linked(void **state)
{
    fx_t *fx = *state;
    llmlink_ip_info_t ip = {"127.0.0.1", fx->port};
    llmlink_cluster_info_t c;
    memset(&c, 0, sizeof c);
    c.remote_cluster_id = PROMPT_ID;
    c.remote_role = LLMLINK_ROLE_PROMPT;
    c.remote_ip_infos = &ip;
    c.num_remote_ip_infos = 1;
    assert_status(llmlink_link_clusters(fx->dec, &c, 1, 5000, NULL), LLMLINK_SUCCESS);
    llmlink_cache_key_t k = fx->rkey_blocks;
    k.cluster_id = UNLINKED_ID;
    xargs_t a = valid_args(fx, PULL_BLOCKS);
    a.key = &k;
    EXPECT("pull_blocks from an unlinked cluster", xcall(fx->dec, PULL_BLOCKS, &a),
           LLMLINK_NOT_YET_LINK, NULL);
    k = fx->rkey_cache;
    k.cluster_id = UNLINKED_ID;
    a = valid_args(fx, PUSH_CACHE);
    a.key = &k;
    EXPECT("push_cache to an unlinked cluster", xcall(fx->dec, PUSH_CACHE, &a),
           LLMLINK_NOT_YET_LINK, NULL);
    /* the link itself is untouched */
    assert_status(llmlink_check_link_status(fx->dec, PROMPT_ID), LLMLINK_SUCCESS);
}

/* ---- counters ----------------------------------------------------------- */

static void test_xfer_stats(void **state)
{
    fx_t *fx = *state;
    llmlink_xfer_stats_t s;
    memset(&s, 0, sizeof s);
    s.version = LLMLINK_XFER_STATS_VERSION;
    REFUSED("stats NULL", llmlink_get_xfer_stats(fx->dec, NULL), "stats is NULL");
    REFUSED("dd NULL", llmlink_get_xfer_stats(NULL, &s), "dd is NULL");
    s.version = 0;
    REFUSED("version 0", llmlink_get_xfer_stats(fx->dec, &s), "version");
    s.version = LLMLINK_XFER_STATS_VERSION + 1;
    REFUSED("version + 1", llmlink_get_xfer_stats(fx->dec, &s), "version");
    /* the stats version is not the link stats' */
    s.version = 0xFFFFFFFFu;
    REFUSED("version ~0", llmlink_get_xfer_stats(fx->dec, &s), "LLMLINK_XFER_STATS_VERSION");

    /* Version 1 (llmlink 0.2: no rdma_requests) is still served, and
     * nothing past its end is written: the caller's struct ends there. */
    memset(&s, 0xA5, sizeof s);
    s.version = 1;
    assert_status(llmlink_get_xfer_stats(fx->dec, &s), LLMLINK_SUCCESS);
    assert_int_equal(s.version, 1);
    assert_int_equal(s.caches, 2);
    assert_int_equal(s.shm_fallbacks, 0);
    assert_int_equal(s.rdma_requests, 0xA5A5A5A5A5A5A5A5ull);
    memset(&s, 0xA5, sizeof s);
    s.version = LLMLINK_XFER_STATS_VERSION;
    assert_status(llmlink_get_xfer_stats(fx->dec, &s), LLMLINK_SUCCESS);
    assert_int_equal(s.version, 2);
    assert_int_equal(s.rdma_requests, 0); /* no RDMA on this host */

    s = xstats_of(fx->dec);
    assert_int_equal(s.caches, 2);
    assert_int_equal(xstats_of(fx->prompt).caches, 2);
    /* a refused registration does not count */
    llmlink_cache_desc_t bd = blocks_desc();
    int64_t id = 0;
    REFUSED("bad register", llmlink_register_blocks_cache(fx->dec, &bd, NULL, NT, NULL, &id),
            "addrs");
    assert_int_equal(xstats_of(fx->dec).caches, 2);
    assert_status(llmlink_register_blocks_cache(fx->dec, &bd, fx->scratch_addrs, NT, NULL, &id),
                  LLMLINK_SUCCESS);
    assert_int_equal(xstats_of(fx->dec).caches, 3);
    assert_int_equal(xstats_of(fx->prompt).caches, 2); /* per engine */
    assert_status(llmlink_unregister_cache(fx->dec, id), LLMLINK_SUCCESS);
    assert_status(llmlink_unregister_cache(fx->dec, fx->dec_blk_id), LLMLINK_SUCCESS);
    assert_int_equal(xstats_of(fx->dec).caches, 1);
    /* a fresh engine, not initialized: no cache */
    llmlink_t *e = new_engine(fx, LLMLINK_ROLE_MIX, 80);
    assert_int_equal(xstats_of(e).caches, 0);
    assert_nothing_moved(fx, "stats");
}

static void test_link_stats_args(void **state)
{
    fx_t *fx = *state;
    llmlink_link_stats_t s;
    memset(&s, 0, sizeof s);
    s.version = LLMLINK_LINK_STATS_VERSION;
    REFUSED("stats NULL", llmlink_get_link_stats(fx->dec, PROMPT_ID, NULL), "stats is NULL");
    REFUSED("dd NULL", llmlink_get_link_stats(NULL, PROMPT_ID, &s), "dd is NULL");
    s.version = 0;
    REFUSED("version 0", llmlink_get_link_stats(fx->dec, PROMPT_ID, &s),
            "1..LLMLINK_LINK_STATS_VERSION");
    s.version = LLMLINK_LINK_STATS_VERSION + 1;
    REFUSED("version + 1", llmlink_get_link_stats(fx->dec, PROMPT_ID, &s), "version");
    s.version = LLMLINK_LINK_STATS_VERSION;
    EXPECT("unlinked cluster", llmlink_get_link_stats(fx->dec, UNLINKED_ID, &s),
           LLMLINK_NOT_YET_LINK, "77");
    /* (test_xfer_single reads the counters of real links.) */
    /* not initialized */
    llmlink_t *e = new_engine(fx, LLMLINK_ROLE_MIX, 81);
    EXPECT("not initialized", llmlink_get_link_stats(e, PROMPT_ID, &s), LLMLINK_NOT_INITIALIZED,
           "init");
    assert_nothing_moved(fx, "link stats");
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_null_engine),
        T(test_not_initialized),
        T(test_finalized),
        T(test_register_null_args),
        T(test_register_key_args),
        T(test_allocate_args),
        T(test_remove_args),
        T(test_register_round_trip),
        T(test_registry_refusals),
        T(test_allocate_round_trip),
        T(test_xfer_key_null_and_type),
        T(test_xfer_key_type_for_call),
        T(test_xfer_id_and_index_cache_id),
        T(test_xfer_local_cache_id),
        T(test_xfer_block_list_null_and_counts),
        T(test_xfer_block_index_bound),
        T(test_xfer_duplicate_destination_blocks),
        T(test_xfer_duplicate_source_blocks_pass),
        T(test_xfer_size),
        T(test_xfer_layers),
        T(test_xfer_no_link),
        T(test_xfer_other_cluster_not_linked),
        T(test_xfer_stats),
        T(test_link_stats_args),
    };
#undef T
    return cmocka_run_group_tests_name("transfer arguments", tests, NULL, NULL);
}

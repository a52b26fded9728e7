/*
 * test_cache_registry.c - unit tests of the cache registry
 * (core/cache_registry.c).
 *
 * The registry is where every transfer, local or a peer's, finds the memory
 * it may touch; its checks are what keeps a request inside what was
 * registered. So each refusal is tested with its status and a message that
 * names the argument, and the lifetime rules (users, the id and key
 * references of allocated caches, unregister waiting for transfers) are
 * tested one by one, including across threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xfer/cache_registry.h"
#include "base/clock.h"
#include "base/err.h"
#include "llmlink.h"
#include "llk_test.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#define MAX_CACHES 8
#define MEM_TENSORS 4
#define MEM_BYTES 4096u

/* ---- fixture ------------------------------------------------------------------ */

typedef struct reg_fixture {
    llk_registry_t r;
    uint8_t *mem[MEM_TENSORS]; /* caller memory for registered caches */
    uint64_t addrs[MEM_TENSORS];
} reg_fixture_t;

static int setup(void **state)
{
    reg_fixture_t *fx = test_calloc(1, sizeof *fx);
    assert_non_null(fx);
    assert_int_equal(llk_registry_init(&fx->r, MAX_CACHES), 0);
    for (int i = 0; i < MEM_TENSORS; i++) {
        fx->mem[i] = test_malloc(MEM_BYTES);
        assert_non_null(fx->mem[i]);
        fx->addrs[i] = (uint64_t)(uintptr_t)fx->mem[i];
    }
    llmlink_clear_error();
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    reg_fixture_t *fx = *state;
    llk_registry_destroy(&fx->r);
    for (int i = 0; i < MEM_TENSORS; i++)
        test_free(fx->mem[i]);
    test_free(fx);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------ */

/* FLOAT16 tensors of shape {units, 16, 64}: 2048 bytes per unit. */
static llmlink_cache_desc_t desc_of(uint32_t ntensors, int64_t units)
{
    llmlink_cache_desc_t d;
    memset(&d, 0, sizeof d);
    d.num_tensors = ntensors;
    d.data_type = LLMLINK_DT_FLOAT16;
    d.placement = LLMLINK_PLACEMENT_HOST;
    d.num_dims = 3;
    d.shape[0] = units;
    d.shape[1] = 16;
    d.shape[2] = 64;
    return d;
}

/* INT8, one dimension: bytes == shape[0]. */
static llmlink_cache_desc_t desc_bytes(uint32_t ntensors, int64_t units)
{
    llmlink_cache_desc_t d = desc_of(ntensors, units);
    d.data_type = LLMLINK_DT_INT8;
    d.num_dims = 1;
    return d;
}

static llmlink_cache_key_t ckey(uint64_t req, uint64_t model, int64_t prefix)
{
    llmlink_cache_key_t k;
    memset(&k, 0, sizeof k);
    k.type = LLMLINK_KEY_CACHE;
    k.cluster_id = 1;
    k.req_id = req;
    k.model_id = model;
    k.prefix_id = prefix;
    return k;
}

static llmlink_cache_key_t bkey(uint64_t model)
{
    llmlink_cache_key_t k;
    memset(&k, 0, sizeof k);
    k.type = LLMLINK_KEY_BLOCKS;
    k.cluster_id = 1;
    k.model_id = model;
    return k;
}

static llmlink_cache_key_t idkey(int64_t id, uint32_t index)
{
    llmlink_cache_key_t k;
    memset(&k, 0, sizeof k);
    k.type = LLMLINK_KEY_ID_AND_INDEX;
    k.cluster_id = 1;
    k.cache_id = id;
    k.batch_index = index;
    return k;
}

static void assert_error_names(const char *what)
{
    if (strstr(llmlink_last_error(), what) == NULL)
        fail_msg("last_error \"%s\" does not name \"%s\"", llmlink_last_error(), what);
}

/* Refused with status want; the message starts with the API name and names
 * `what`. */
static void assert_refused(llmlink_status_t got, llmlink_status_t want, const char *what)
{
    assert_status(got, want);
    assert_int_equal(llmlink_last_error_status(), want);
    assert_error_names(what);
}

#define FN "llmlink_register_cache"

/* Registers the fixture's memory (ntensors tensors of `units` entries of
 * 1 byte: the memory is not touched by the registry). */
static int64_t reg_cache(reg_fixture_t *fx, uint32_t ntensors, int64_t units,
                         const llmlink_cache_key_t *keys, size_t nkeys)
{
    llmlink_cache_desc_t d = desc_bytes(ntensors, units);
    int64_t id = -1;
    assert_status(llk_registry_add(&fx->r, FN, &d, fx->addrs, ntensors, keys, nkeys, false, &id,
                                   NULL),
                  LLMLINK_SUCCESS);
    return id;
}

static int64_t alloc_cache(reg_fixture_t *fx, const llmlink_cache_desc_t *d,
                           const llmlink_cache_key_t *keys, size_t nkeys, bool blocks,
                           uint64_t *out_addrs)
{
    int64_t id = -1;
    assert_status(llk_registry_add(&fx->r, "llmlink_allocate_cache", d, NULL, 0, keys, nkeys,
                                   blocks, &id, out_addrs),
                  LLMLINK_SUCCESS);
    return id;
}

static llk_cache_t *acquire_id_ok(reg_fixture_t *fx, int64_t id)
{
    llk_cache_t *c = NULL;
    assert_status(llk_registry_acquire_id(&fx->r, "test", id, &c), LLMLINK_SUCCESS);
    assert_non_null(c);
    return c;
}

static llk_cache_t *acquire_key_ok(reg_fixture_t *fx, const llmlink_cache_key_t *k,
                                   uint64_t *unit)
{
    llk_cache_t *c = NULL;
    assert_status(llk_registry_acquire_key(&fx->r, "test", k, &c, unit), LLMLINK_SUCCESS);
    assert_non_null(c);
    return c;
}

static void assert_key_gone(reg_fixture_t *fx, const llmlink_cache_key_t *k)
{
    llk_cache_t *c = NULL;
    uint64_t unit = 0;
    assert_refused(llk_registry_acquire_key(&fx->r, "test", k, &c, &unit),
                   LLMLINK_KV_CACHE_NOT_EXIST, "test: ");
    assert_null(c);
}

static void assert_id_gone(reg_fixture_t *fx, int64_t id)
{
    llk_cache_t *c = NULL;
    assert_refused(llk_registry_acquire_id(&fx->r, "test", id, &c), LLMLINK_KV_CACHE_NOT_EXIST,
                   "test: ");
    assert_null(c);
}

/* Whether [p, p + len) lies in one mapping of this process, from
 * /proc/self/maps (probing with a syscall would upset valgrind). */
static bool is_mapped(uint64_t p, size_t len)
{
    FILE *f = fopen("/proc/self/maps", "r");
    assert_non_null(f);
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof line, f) != NULL) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2)
            found = p >= lo && p + len <= hi;
    }
    fclose(f);
    return found;
}

/* ---- data types and descriptions ---------------------------------------------- */

static void test_dtype_sizes(void **state)
{
    static const struct {
        int t;
        uint64_t size;
    } want[] = {
        {LLMLINK_DT_FLOAT, 4}, {LLMLINK_DT_FLOAT16, 2}, {LLMLINK_DT_INT8, 1},
        {LLMLINK_DT_INT32, 4}, {LLMLINK_DT_UINT8, 1},   {LLMLINK_DT_INT16, 2},
        {LLMLINK_DT_UINT16, 2}, {LLMLINK_DT_UINT32, 4}, {LLMLINK_DT_INT64, 8},
        {LLMLINK_DT_UINT64, 8}, {LLMLINK_DT_DOUBLE, 8}, {LLMLINK_DT_BOOL, 1},
        {LLMLINK_DT_BF16, 2},   {5, 0}, {13, 0}, {26, 0}, {28, 0}, {-1, 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(want); i++)
        if (llk_dtype_size((llmlink_data_type_t)want[i].t) != want[i].size)
            fail_msg("data type %d: size %" PRIu64 ", want %" PRIu64, want[i].t,
                     llk_dtype_size((llmlink_data_type_t)want[i].t), want[i].size);
}

static void test_check_desc_sizes(void **state)
{
    llmlink_cache_desc_t d = desc_of(2, 4);
    uint64_t tb = 0, ub = 0;
    assert_status(llk_registry_check_desc(FN, &d, &tb, &ub), LLMLINK_SUCCESS);
    assert_int_equal(tb, 4 * 16 * 64 * 2);
    assert_int_equal(ub, 16 * 64 * 2);

    d.data_type = LLMLINK_DT_DOUBLE;
    d.num_dims = 1;
    d.shape[0] = 3;
    assert_status(llk_registry_check_desc(FN, &d, &tb, &ub), LLMLINK_SUCCESS);
    assert_int_equal(tb, 24);
    assert_int_equal(ub, 8);

    /* exactly 2^48 bytes is allowed; outputs may be NULL */
    d = desc_bytes(1, 1);
    d.data_type = LLMLINK_DT_FLOAT;
    d.shape[0] = (int64_t)1 << 46;
    assert_status(llk_registry_check_desc(FN, &d, &tb, NULL), LLMLINK_SUCCESS);
    assert_int_equal(tb, LLK_MAX_TENSOR_BYTES);
    d.num_tensors = LLMLINK_MAX_TENSORS;
    d.num_dims = LLMLINK_MAX_DIMS;
    for (int i = 1; i < LLMLINK_MAX_DIMS; i++)
        d.shape[i] = 1;
    assert_status(llk_registry_check_desc(FN, &d, NULL, NULL), LLMLINK_SUCCESS);
}

static void test_check_desc_refusals(void **state)
{
    uint64_t tb, ub;
    assert_refused(llk_registry_check_desc(FN, NULL, &tb, &ub), LLMLINK_PARAM_INVALID,
                   FN ": desc");

    llmlink_cache_desc_t d = desc_of(0, 4);
    assert_refused(llk_registry_check_desc(FN, &d, &tb, &ub), LLMLINK_PARAM_INVALID, "num_tensors");
    d = desc_of(LLMLINK_MAX_TENSORS + 1, 4);
    assert_refused(llk_registry_check_desc(FN, &d, &tb, &ub), LLMLINK_PARAM_INVALID, "num_tensors");

    d = desc_of(1, 4);
    d.data_type = (llmlink_data_type_t)5;
    assert_refused(llk_registry_check_desc(FN, &d, &tb, &ub), LLMLINK_PARAM_INVALID, "data_type");

    d = desc_of(1, 4);
    d.num_dims = 0;
    assert_refused(llk_registry_check_desc(FN, &d, &tb, &ub), LLMLINK_PARAM_INVALID, "num_dims");
    d.num_dims = LLMLINK_MAX_DIMS + 1;
    assert_refused(llk_registry_check_desc(FN, &d, &tb, &ub), LLMLINK_PARAM_INVALID, "num_dims");

    d = desc_of(1, 4);
    d.shape[1] = 0;
    assert_refused(llk_registry_check_desc(FN, &d, &tb, &ub), LLMLINK_PARAM_INVALID, "shape[1]");
    d.shape[1] = -3;
    assert_refused(llk_registry_check_desc(FN, &d, &tb, &ub), LLMLINK_PARAM_INVALID, "shape[1]");
    d = desc_of(1, 0);
    assert_refused(llk_registry_check_desc(FN, &d, &tb, &ub), LLMLINK_PARAM_INVALID, "shape[0]");

    /* one byte past 2^48, and products that would overflow 64 bits */
    d = desc_bytes(1, ((int64_t)1 << 48) + 1);
    assert_refused(llk_registry_check_desc(FN, &d, &tb, &ub), LLMLINK_PARAM_INVALID, "2^48");
    d = desc_bytes(1, (int64_t)1 << 46);
    d.data_type = LLMLINK_DT_FLOAT;
    d.num_dims = 2;
    d.shape[1] = 2;
    assert_refused(llk_registry_check_desc(FN, &d, &tb, &ub), LLMLINK_PARAM_INVALID, "shape[1]");
    d = desc_bytes(1, (int64_t)1 << 62);
    d.num_dims = 2;
    d.shape[1] = (int64_t)1 << 62;
    assert_refused(llk_registry_check_desc(FN, &d, &tb, &ub), LLMLINK_PARAM_INVALID, "2^48");
    d = desc_bytes(1, INT64_MAX);
    d.data_type = LLMLINK_DT_DOUBLE;
    assert_refused(llk_registry_check_desc(FN, &d, &tb, &ub), LLMLINK_PARAM_INVALID, "shape[0]");

    d = desc_of(1, 4);
    d.placement = LLMLINK_PLACEMENT_DEVICE;
    assert_refused(llk_registry_check_desc(FN, &d, &tb, &ub), LLMLINK_FEATURE_NOT_ENABLED,
                   "only host memory");
    d.placement = (llmlink_placement_t)2;
    assert_refused(llk_registry_check_desc(FN, &d, &tb, &ub), LLMLINK_PARAM_INVALID, "placement");
}

/* ---- add: caller memory ------------------------------------------------------------- */

static void test_register_fills_the_entry_and_ids_increase(void **state)
{
    reg_fixture_t *fx = *state;
    llmlink_cache_desc_t d = desc_of(3, 2);
    int64_t id1 = 0, id2 = 0, id3 = 0;
    assert_status(llk_registry_add(&fx->r, FN, &d, fx->addrs, 3, NULL, 0, false, &id1, NULL),
                  LLMLINK_SUCCESS);
    assert_int_equal(id1, 1);
    assert_status(llk_registry_add(&fx->r, FN, &d, fx->addrs, 3, NULL, 0, true, &id2, NULL),
                  LLMLINK_SUCCESS);
    assert_int_equal(id2, 2);
    assert_int_equal(llk_registry_count(&fx->r), 2);

    llk_cache_t *c = acquire_id_ok(fx, id1);
    assert_int_equal(c->id, id1);
    assert_false(c->blocks);
    assert_false(c->owned);
    assert_int_equal(c->num_tensors, 3);
    assert_int_equal(c->elem_bytes, 2);
    assert_int_equal(c->tensor_bytes, 2 * 16 * 64 * 2);
    assert_int_equal(c->num_units, 2);
    assert_int_equal(c->unit_bytes, 16 * 64 * 2);
    assert_int_equal(c->desc.shape[2], 64);
    for (int i = 0; i < 3; i++)
        assert_ptr_equal(c->addrs[i], fx->mem[i]);
    assert_int_equal(c->users, 1);
    llk_registry_release(&fx->r, c, NULL);
    assert_int_equal(c->users, 0);
    c = acquire_id_ok(fx, id2);
    assert_true(c->blocks);
    llk_registry_release(&fx->r, c, NULL);

    /* ids are never reused */
    assert_status(llk_registry_remove(&fx->r, "llmlink_unregister_cache", id2, false, 0),
                  LLMLINK_SUCCESS);
    assert_status(llk_registry_add(&fx->r, FN, &d, fx->addrs, 3, NULL, 0, false, &id3, NULL),
                  LLMLINK_SUCCESS);
    assert_int_equal(id3, 3);
    assert_int_equal(llk_registry_count(&fx->r), 2);
}

static void test_register_address_refusals(void **state)
{
    reg_fixture_t *fx = *state;
    llmlink_cache_desc_t d = desc_bytes(4, 64);
    int64_t id = -1;
    assert_refused(llk_registry_add(&fx->r, FN, &d, fx->addrs, 3, NULL, 0, false, &id, NULL),
                   LLMLINK_PARAM_INVALID, FN ": num_addrs is 3");
    uint64_t a[4] = {fx->addrs[0], fx->addrs[1], fx->addrs[2], 0};
    assert_refused(llk_registry_add(&fx->r, FN, &d, a, 4, NULL, 0, false, &id, NULL),
                   LLMLINK_PARAM_INVALID, FN ": addrs[3] is 0");
    a[3] = fx->addrs[3];
    a[1] = UINT64_MAX - 10; /* + 64 bytes wraps */
    assert_refused(llk_registry_add(&fx->r, FN, &d, a, 4, NULL, 0, false, &id, NULL),
                   LLMLINK_PARAM_INVALID, FN ": addrs[1]");
    a[1] = UINT64_MAX - 64; /* ends exactly at the top: allowed */
    assert_status(llk_registry_add(&fx->r, FN, &d, a, 4, NULL, 0, false, &id, NULL),
                  LLMLINK_SUCCESS);
    /* refusals took no id and left nothing behind */
    assert_int_equal(id, 1);
    assert_int_equal(llk_registry_count(&fx->r), 1);

    d.placement = LLMLINK_PLACEMENT_DEVICE;
    assert_refused(llk_registry_add(&fx->r, FN, &d, fx->addrs, 4, NULL, 0, false, &id, NULL),
                   LLMLINK_FEATURE_NOT_ENABLED, "host memory");
}

static void test_register_key_refusals(void **state)
{
    reg_fixture_t *fx = *state;
    llmlink_cache_desc_t d = desc_bytes(2, 3);
    int64_t id = -1;
    llmlink_cache_key_t k[4] = {ckey(1, 1, -1), ckey(2, 1, -1), ckey(3, 1, -1), ckey(4, 1, -1)};

    assert_refused(llk_registry_add(&fx->r, FN, &d, fx->addrs, 2, NULL, 2, false, &id, NULL),
                   LLMLINK_PARAM_INVALID, FN ": keys is NULL");
    assert_refused(llk_registry_add(&fx->r, FN, &d, fx->addrs, 2, k, 4, false, &id, NULL),
                   LLMLINK_PARAM_INVALID, "num_keys is 4");
    k[1] = bkey(1);
    assert_refused(llk_registry_add(&fx->r, FN, &d, fx->addrs, 2, k, 3, false, &id, NULL),
                   LLMLINK_PARAM_INVALID, "keys[1].type");
    k[1] = idkey(1, 0);
    assert_refused(llk_registry_add(&fx->r, FN, &d, fx->addrs, 2, k, 3, false, &id, NULL),
                   LLMLINK_PARAM_INVALID, "keys[1].type");

    /* over the per-call key limit (the array is never read that far) */
    llmlink_cache_desc_t big = desc_bytes(2, (int64_t)LLMLINK_MAX_KEYS + 10);
    assert_refused(llk_registry_add(&fx->r, FN, &big, fx->addrs, 2, k, LLMLINK_MAX_KEYS + 1,
                                    false, &id, NULL),
                   LLMLINK_PARAM_INVALID, "num_keys");

    /* blocks caches: at most one key, and it is a BlocksCacheKey */
    const char *bfn = "llmlink_register_blocks_cache";
    llmlink_cache_key_t b[2] = {bkey(1), bkey(2)};
    assert_refused(llk_registry_add(&fx->r, bfn, &d, fx->addrs, 2, b, 2, true, &id, NULL),
                   LLMLINK_PARAM_INVALID, "num_keys is 2");
    llmlink_cache_key_t c1 = ckey(1, 1, -1);
    assert_refused(llk_registry_add(&fx->r, bfn, &d, fx->addrs, 2, &c1, 1, true, &id, NULL),
                   LLMLINK_PARAM_INVALID, "blocks_key->type");
    assert_refused(llk_registry_add(&fx->r, bfn, &d, fx->addrs, 2, NULL, 1, true, &id, NULL),
                   LLMLINK_PARAM_INVALID, "blocks_key is NULL");
    assert_int_equal(llk_registry_count(&fx->r), 0);

    /* num_keys == shape[0] is fine; fewer keys than entries too */
    k[1] = ckey(2, 1, -1);
    assert_int_equal(reg_cache(fx, 2, 3, k, 3), 1);
}

/* Keys within one call: any repeat (cluster_id does not count) is refused
 * and named; keys differing in any identity field are distinct. */
static void test_duplicate_keys_within_a_call(void **state)
{
    reg_fixture_t *fx = *state;
    llmlink_cache_desc_t d = desc_bytes(1, 8);
    int64_t id = -1;
    llmlink_cache_key_t k[4] = {ckey(7, 1, -1), ckey(8, 1, -1), ckey(7, 1, -1), ckey(9, 1, -1)};
    assert_refused(llk_registry_add(&fx->r, FN, &d, fx->addrs, 1, k, 4, false, &id, NULL),
                   LLMLINK_CACHE_KEY_ALREADY_EXIST, FN ": keys[2]");
    assert_error_names("keys[0]");
    assert_error_names("req_id 7");

    k[2].cluster_id = 99; /* another holder name, same entry */
    assert_refused(llk_registry_add(&fx->r, FN, &d, fx->addrs, 1, k, 4, false, &id, NULL),
                   LLMLINK_CACHE_KEY_ALREADY_EXIST, "keys[2]");

    /* the first repeat in argument order is the one named */
    llmlink_cache_key_t m[5] = {ckey(5, 1, -1), ckey(1, 1, -1), ckey(2, 1, -1), ckey(1, 1, -1),
                                ckey(5, 1, -1)};
    assert_refused(llk_registry_add(&fx->r, FN, &d, fx->addrs, 1, m, 5, false, &id, NULL),
                   LLMLINK_CACHE_KEY_ALREADY_EXIST, "keys[3]");
    assert_error_names("keys[1]");

    llmlink_cache_key_t u[4] = {ckey(7, 1, -1), ckey(7, 2, -1), ckey(7, 1, 0), ckey(8, 1, -1)};
    assert_int_equal(reg_cache(fx, 1, 8, u, 4), 1);
    assert_int_equal(llk_registry_count(&fx->r), 1);
}

static void test_duplicate_keys_across_calls(void **state)
{
    reg_fixture_t *fx = *state;
    llmlink_cache_key_t a[2] = {ckey(1, 1, -1), ckey(2, 1, -1)};
    assert_int_equal(reg_cache(fx, 1, 4, a, 2), 1);

    llmlink_cache_desc_t d = desc_bytes(1, 4);
    int64_t id = -1;
    llmlink_cache_key_t b[3] = {ckey(3, 1, -1), ckey(4, 1, -1), ckey(2, 1, -1)};
    b[2].cluster_id = 42;
    assert_refused(llk_registry_add(&fx->r, FN, &d, fx->addrs, 1, b, 3, false, &id, NULL),
                   LLMLINK_CACHE_KEY_ALREADY_EXIST, FN ": keys[2]");
    assert_error_names("cache 1");
    assert_int_equal(llk_registry_count(&fx->r), 1);

    /* blocks keys: model_id only, whatever the cluster */
    const char *bfn = "llmlink_register_blocks_cache";
    llmlink_cache_key_t bk = bkey(1);
    int64_t idb = -1;
    assert_status(llk_registry_add(&fx->r, bfn, &d, fx->addrs, 1, &bk, 1, true, &idb, NULL),
                  LLMLINK_SUCCESS);
    llmlink_cache_key_t bk2 = bkey(1);
    bk2.cluster_id = 77;
    assert_refused(llk_registry_add(&fx->r, bfn, &d, fx->addrs, 1, &bk2, 1, true, &id, NULL),
                   LLMLINK_CACHE_KEY_ALREADY_EXIST, bfn);
    assert_error_names("blocks_key");
    assert_error_names("model_id 1");
    /* a CacheKey and a BlocksCacheKey never collide */
    llmlink_cache_key_t ck = ckey(0, 1, -1);
    reg_cache(fx, 1, 4, &ck, 1);

    /* once removed (key, or the cache), the key can be registered again */
    assert_status(llk_registry_remove_key(&fx->r, "llmlink_remove_cache_key", &a[1]),
                  LLMLINK_SUCCESS);
    assert_status(llk_registry_add(&fx->r, FN, &d, fx->addrs, 1, b, 3, false, &id, NULL),
                  LLMLINK_SUCCESS);
    assert_status(llk_registry_remove(&fx->r, "llmlink_unregister_cache", idb, false, 0),
                  LLMLINK_SUCCESS);
    assert_status(llk_registry_add(&fx->r, bfn, &d, fx->addrs, 1, &bk2, 1, true, &id, NULL),
                  LLMLINK_SUCCESS);
}

/* Many keys per cache: the sorted lookups and the duplicate check against a
 * smaller and a larger live key set. */
static void test_many_keys(void **state)
{
    reg_fixture_t *fx = *state;
    enum { N = 1000 };
    llmlink_cache_key_t *k = test_malloc(N * sizeof *k);
    for (size_t i = 0; i < N; i++) /* not in sorted order */
        k[i] = ckey((i * 7919) % N, 3, (int64_t)(i % 3) - 1);
    int64_t id = reg_cache(fx, 1, N, k, N);
    for (size_t i = 0; i < N; i++) {
        uint64_t unit = UINT64_MAX;
        llk_cache_t *c = acquire_key_ok(fx, &k[i], &unit);
        assert_int_equal(c->id, id);
        assert_int_equal(unit, i);
        llk_registry_release(&fx->r, c, NULL);
    }
    llmlink_cache_desc_t d = desc_bytes(1, N + 10);
    int64_t id2 = -1;
    /* fewer keys than the live cache, the repeat last */
    llmlink_cache_key_t few[3] = {ckey(5000, 3, -1), ckey(5001, 3, -1), k[500]};
    assert_refused(llk_registry_add(&fx->r, FN, &d, fx->addrs, 1, few, 3, false, &id2, NULL),
                   LLMLINK_CACHE_KEY_ALREADY_EXIST, "keys[2]");
    /* more keys than the live cache: a small cache first, then a big one
     * that repeats two of its keys; the lowest index is named */
    llmlink_cache_key_t small[2] = {ckey(9001, 3, -1), ckey(9002, 3, -1)};
    reg_cache(fx, 1, 2, small, 2);
    llmlink_cache_key_t *many = test_malloc((N + 10) * sizeof *many);
    for (size_t i = 0; i < N + 10; i++)
        many[i] = ckey(20000 + i, 3, -1);
    many[900] = small[1];
    many[600] = small[0];
    assert_refused(llk_registry_add(&fx->r, FN, &d, fx->addrs, 1, many, N + 10, false, &id2, NULL),
                   LLMLINK_CACHE_KEY_ALREADY_EXIST, "keys[600]");
    test_free(many);
    test_free(k);
}

static void test_max_caches(void **state)
{
    reg_fixture_t *fx = *state;
    llmlink_cache_desc_t d = desc_bytes(1, 16);
    int64_t ids[MAX_CACHES];
    for (int i = 0; i < MAX_CACHES - 1; i++)
        ids[i] = reg_cache(fx, 1, 16, NULL, 0);
    ids[MAX_CACHES - 1] = alloc_cache(fx, &d, NULL, 0, false, NULL);
    assert_int_equal(llk_registry_count(&fx->r), MAX_CACHES);
    int64_t id = -1;
    assert_refused(llk_registry_add(&fx->r, FN, &d, fx->addrs, 1, NULL, 0, false, &id, NULL),
                   LLMLINK_OUT_OF_MEMORY, "llmlink.MaxCaches");
    assert_refused(llk_registry_add(&fx->r, "llmlink_allocate_cache", &d, NULL, 0, NULL, 0, false,
                                    &id, NULL),
                   LLMLINK_OUT_OF_MEMORY, "llmlink.MaxCaches");
    assert_int_equal(llk_registry_count(&fx->r), MAX_CACHES);
    assert_status(llk_registry_remove(&fx->r, "llmlink_unregister_cache", ids[0], false, 0),
                  LLMLINK_SUCCESS);
    assert_int_equal(reg_cache(fx, 1, 16, NULL, 0), MAX_CACHES + 1);
}

/* ---- add: library memory ------------------------------------------------------------ */

static void test_allocate_is_page_aligned_zeroed_writable(void **state)
{
    reg_fixture_t *fx = *state;
    /* 1000-byte tensors: not a multiple of a page, yet each starts on one */
    llmlink_cache_desc_t d = desc_bytes(5, 1000);
    uint64_t a[5] = {0};
    int64_t id = alloc_cache(fx, &d, NULL, 0, false, a);
    long page = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < 5; i++) {
        assert_int_not_equal(a[i], 0);
        assert_int_equal(a[i] % 4096, 0);
        assert_int_equal(a[i] % (uint64_t)page, 0);
        if (i > 0)
            assert_true(a[i] >= a[i - 1] + 1000);
        uint8_t *p = (uint8_t *)(uintptr_t)a[i];
        for (int b = 0; b < 1000; b++)
            assert_int_equal(p[b], 0);
        memset(p, 0xA0 + i, 1000);
    }
    for (int i = 0; i < 5; i++) /* tensors do not overlap */
        assert_int_equal(((uint8_t *)(uintptr_t)a[i])[999], 0xA0 + i);

    llk_cache_t *c = acquire_id_ok(fx, id);
    assert_true(c->owned);
    assert_false(c->blocks);
    assert_int_equal(c->refs, 1);
    for (int i = 0; i < 5; i++)
        assert_ptr_equal(c->addrs[i], (uint8_t *)(uintptr_t)a[i]);
    assert_int_equal(c->tensor_bytes, 1000);
    assert_int_equal(c->unit_bytes, 1);
    llk_registry_release(&fx->r, c, NULL);

    /* out_addrs may be NULL; a blocks cache with its key */
    llmlink_cache_key_t bk = bkey(9);
    int64_t idb = alloc_cache(fx, &d, &bk, 1, true, NULL);
    c = acquire_key_ok(fx, &bk, NULL);
    assert_int_equal(c->id, idb);
    assert_true(c->blocks && c->owned);
    assert_int_equal(c->refs, 2);
    assert_non_null(c->addrs[4]);
    llk_registry_release(&fx->r, c, NULL);
}

/* deallocate drops the id; the keys keep the memory; the last key frees it. */
static void test_allocated_refcounts_keys_outlive_id(void **state)
{
    reg_fixture_t *fx = *state;
    llmlink_cache_desc_t d = desc_bytes(2, 4);
    llmlink_cache_key_t k[2] = {ckey(1, 1, -1), ckey(2, 1, -1)};
    uint64_t a[2];
    int64_t id = alloc_cache(fx, &d, k, 2, false, a);
    llk_cache_t *c = acquire_id_ok(fx, id);
    assert_int_equal(c->refs, 3);
    llk_registry_release(&fx->r, c, NULL);

    assert_status(llk_registry_remove(&fx->r, "llmlink_deallocate_cache", id, true, 0),
                  LLMLINK_SUCCESS);
    assert_id_gone(fx, id);
    llmlink_cache_key_t byid = idkey(id, 0);
    assert_key_gone(fx, &byid);
    assert_refused(llk_registry_remove(&fx->r, "llmlink_deallocate_cache", id, true, 0),
                   LLMLINK_KV_CACHE_NOT_EXIST, "llmlink_deallocate_cache: ");
    assert_int_equal(llk_registry_count(&fx->r), 1);

    uint64_t unit = 99;
    c = acquire_key_ok(fx, &k[1], &unit);
    assert_int_equal(unit, 1);
    assert_int_equal(c->refs, 2);
    llk_registry_release(&fx->r, c, NULL);

    assert_status(llk_registry_remove_key(&fx->r, "llmlink_remove_cache_key", &k[0]),
                  LLMLINK_SUCCESS);
    assert_key_gone(fx, &k[0]);
    assert_int_equal(llk_registry_count(&fx->r), 1);
    assert_true(is_mapped(a[0], 4));
    assert_status(llk_registry_remove_key(&fx->r, "llmlink_remove_cache_key", &k[1]),
                  LLMLINK_SUCCESS);
    assert_int_equal(llk_registry_count(&fx->r), 0);
    assert_false(is_mapped(a[0], 4));
    assert_key_gone(fx, &k[1]);
}

/* The other order: keys first, then the id frees it. */
static void test_allocated_freed_by_id_after_keys(void **state)
{
    reg_fixture_t *fx = *state;
    llmlink_cache_desc_t d = desc_bytes(1, 4);
    llmlink_cache_key_t k = ckey(5, 5, 5);
    uint64_t a[1];
    int64_t id = alloc_cache(fx, &d, &k, 1, false, a);
    assert_status(llk_registry_remove_key(&fx->r, "llmlink_remove_cache_key", &k),
                  LLMLINK_SUCCESS);
    llk_registry_release(&fx->r, acquire_id_ok(fx, id), NULL); /* still held by its id */
    assert_true(is_mapped(a[0], 4));
    assert_status(llk_registry_remove(&fx->r, "llmlink_deallocate_cache", id, true, 0),
                  LLMLINK_SUCCESS);
    assert_int_equal(llk_registry_count(&fx->r), 0);
    assert_false(is_mapped(a[0], 4));
}

/* An allocated cache in use when its last reference goes stays mapped until
 * the transfer releases it. */
static void test_allocated_free_waits_for_last_user(void **state)
{
    reg_fixture_t *fx = *state;
    llmlink_cache_desc_t d = desc_bytes(1, 64);
    uint64_t a[1];
    int64_t id = alloc_cache(fx, &d, NULL, 0, false, a);
    llk_cache_t *c = acquire_id_ok(fx, id);
    assert_status(llk_registry_remove(&fx->r, "llmlink_deallocate_cache", id, true, 0),
                  LLMLINK_SUCCESS);
    assert_id_gone(fx, id);
    memset(c->addrs[0], 0x5A, 64); /* still ours to write */
    assert_int_equal(llk_registry_count(&fx->r), 1);
    llk_registry_release(&fx->r, c, NULL);
    assert_int_equal(llk_registry_count(&fx->r), 0);
    assert_false(is_mapped(a[0], 64));
}

/* A successful pull by CacheKey uses the key up (allocated caches only). */
static void test_release_consumes_key_of_allocated_cache(void **state)
{
    reg_fixture_t *fx = *state;
    llmlink_cache_desc_t d = desc_bytes(1, 4);
    llmlink_cache_key_t k[2] = {ckey(1, 2, 3), ckey(4, 5, 6)};
    uint64_t a[1];
    int64_t id = alloc_cache(fx, &d, k, 2, false, a);

    llk_cache_t *c = acquire_key_ok(fx, &k[0], NULL);
    llk_registry_release(&fx->r, c, &k[0]);
    assert_key_gone(fx, &k[0]);
    c = acquire_id_ok(fx, id);
    assert_int_equal(c->refs, 2);
    assert_int_equal(c->num_keys, 1);
    /* a key the cache does not hold, and a non-CacheKey, change nothing */
    llmlink_cache_key_t other = ckey(9, 9, 9), bk = bkey(2);
    llk_registry_release(&fx->r, c, &other);
    c = acquire_id_ok(fx, id);
    llk_registry_release(&fx->r, c, &bk);
    c = acquire_id_ok(fx, id);
    assert_int_equal(c->refs, 2);
    llk_registry_release(&fx->r, c, NULL);

    assert_status(llk_registry_remove(&fx->r, "llmlink_deallocate_cache", id, true, 0),
                  LLMLINK_SUCCESS);
    assert_int_equal(llk_registry_count(&fx->r), 1);
    c = acquire_key_ok(fx, &k[1], NULL);
    llk_registry_release(&fx->r, c, &k[1]);
    assert_int_equal(llk_registry_count(&fx->r), 0);
    assert_false(is_mapped(a[0], 4));
}

static void test_release_does_not_consume_registered_keys(void **state)
{
    reg_fixture_t *fx = *state;
    llmlink_cache_key_t k = ckey(1, 1, -1);
    int64_t id = reg_cache(fx, 1, 4, &k, 1);
    llk_cache_t *c = acquire_key_ok(fx, &k, NULL);
    llk_registry_release(&fx->r, c, &k);
    c = acquire_key_ok(fx, &k, NULL);
    assert_int_equal(c->id, id);
    assert_int_equal(c->num_keys, 1);
    llk_registry_release(&fx->r, c, NULL);
    /* a blocks cache that was allocated: its BlocksCacheKey is never consumed */
    llmlink_cache_desc_t d = desc_bytes(1, 4);
    llmlink_cache_key_t bk = bkey(3);
    alloc_cache(fx, &d, &bk, 1, true, NULL);
    c = acquire_key_ok(fx, &bk, NULL);
    llk_registry_release(&fx->r, c, &bk);
    llk_registry_release(&fx->r, acquire_key_ok(fx, &bk, NULL), NULL);
}

/* ---- remove / remove_key refusals --------------------------------------------------- */

static void test_remove_refusals(void **state)
{
    reg_fixture_t *fx = *state;
    int64_t reg = reg_cache(fx, 1, 4, NULL, 0);
    llmlink_cache_desc_t d = desc_bytes(1, 4);
    int64_t own = alloc_cache(fx, &d, NULL, 0, false, NULL);

    assert_refused(llk_registry_remove(&fx->r, "llmlink_unregister_cache", 77, false, 0),
                   LLMLINK_KV_CACHE_NOT_EXIST, "llmlink_unregister_cache: no cache with cache_id 77");
    assert_refused(llk_registry_remove(&fx->r, "llmlink_unregister_cache", 0, false, 0),
                   LLMLINK_KV_CACHE_NOT_EXIST, "cache_id 0");
    assert_refused(llk_registry_remove(&fx->r, "llmlink_unregister_cache", own, false, 0),
                   LLMLINK_PARAM_INVALID, "llmlink_deallocate_cache");
    assert_refused(llk_registry_remove(&fx->r, "llmlink_deallocate_cache", reg, true, 0),
                   LLMLINK_PARAM_INVALID, "llmlink_unregister_cache");
    assert_int_equal(llk_registry_count(&fx->r), 2);
    assert_status(llk_registry_remove(&fx->r, "llmlink_unregister_cache", reg, false, 0),
                  LLMLINK_SUCCESS);
    assert_refused(llk_registry_remove(&fx->r, "llmlink_unregister_cache", reg, false, 0),
                   LLMLINK_KV_CACHE_NOT_EXIST, "llmlink_unregister_cache: ");
    assert_id_gone(fx, reg);
}

static void test_remove_key_refusals_and_registered_keys(void **state)
{
    reg_fixture_t *fx = *state;
    const char *fn = "llmlink_remove_cache_key";
    llmlink_cache_key_t k[2] = {ckey(1, 1, -1), ckey(2, 1, -1)};
    int64_t id = reg_cache(fx, 1, 4, k, 2);
    assert_refused(llk_registry_remove_key(&fx->r, fn, NULL), LLMLINK_PARAM_INVALID, "key");
    llmlink_cache_key_t byid = idkey(id, 0);
    assert_refused(llk_registry_remove_key(&fx->r, fn, &byid), LLMLINK_PARAM_INVALID, "key->type");
    llmlink_cache_key_t unknown = ckey(3, 1, -1);
    assert_refused(llk_registry_remove_key(&fx->r, fn, &unknown), LLMLINK_KV_CACHE_NOT_EXIST,
                   "req_id 3");
    llmlink_cache_key_t bk = bkey(1);
    assert_refused(llk_registry_remove_key(&fx->r, fn, &bk), LLMLINK_KV_CACHE_NOT_EXIST,
                   "BlocksCacheKey");

    /* removing a key of a registered cache: the key goes, the cache stays */
    assert_status(llk_registry_remove_key(&fx->r, fn, &k[0]), LLMLINK_SUCCESS);
    assert_key_gone(fx, &k[0]);
    assert_refused(llk_registry_remove_key(&fx->r, fn, &k[0]), LLMLINK_KV_CACHE_NOT_EXIST, fn);
    uint64_t unit = 0;
    llk_registry_release(&fx->r, acquire_key_ok(fx, &k[1], &unit), NULL);
    assert_int_equal(unit, 1);
    llk_registry_release(&fx->r, acquire_id_ok(fx, id), NULL);
    assert_int_equal(llk_registry_count(&fx->r), 1);

    /* a blocks key */
    llmlink_cache_desc_t d = desc_bytes(1, 4);
    int64_t idb = -1;
    assert_status(llk_registry_add(&fx->r, "llmlink_register_blocks_cache", &d, fx->addrs, 1, &bk,
                                   1, true, &idb, NULL),
                  LLMLINK_SUCCESS);
    bk.cluster_id = 1234; /* not part of the identity */
    assert_status(llk_registry_remove_key(&fx->r, fn, &bk), LLMLINK_SUCCESS);
    assert_key_gone(fx, &bk);
    llk_registry_release(&fx->r, acquire_id_ok(fx, idb), NULL);
}

/* ---- acquire --------------------------------------------------------------------------- */

static void test_acquire_by_key_and_index(void **state)
{
    reg_fixture_t *fx = *state;
    /* keys given out of order: key i still names entry i */
    llmlink_cache_key_t k[3] = {ckey(9, 1, -1), ckey(3, 1, -1), ckey(7, 1, -1)};
    int64_t id = reg_cache(fx, 1, 5, k, 3);
    for (uint64_t i = 0; i < 3; i++) {
        uint64_t unit = 99;
        llk_cache_t *c = acquire_key_ok(fx, &k[i], &unit);
        assert_int_equal(unit, i);
        llk_registry_release(&fx->r, c, NULL);
    }
    llmlink_cache_key_t other_cluster = k[2];
    other_cluster.cluster_id = 555;
    uint64_t unit = 0;
    llk_registry_release(&fx->r, acquire_key_ok(fx, &other_cluster, &unit), NULL);
    assert_int_equal(unit, 2);

    llmlink_cache_key_t ix = idkey(id, 4);
    llk_cache_t *c = acquire_key_ok(fx, &ix, &unit);
    assert_int_equal(unit, 4);
    assert_int_equal(c->id, id);
    llk_registry_release(&fx->r, c, NULL);
    ix.batch_index = 5;
    c = NULL;
    assert_refused(llk_registry_acquire_key(&fx->r, "test", &ix, &c, &unit),
                   LLMLINK_PARAM_INVALID, "batch_index 5");
    assert_null(c);
    ix = idkey(id + 1, 0);
    assert_key_gone(fx, &ix);

    /* a BlocksCacheKey finds only blocks caches */
    llmlink_cache_key_t bk = bkey(1);
    assert_key_gone(fx, &bk);
    llmlink_cache_desc_t d = desc_bytes(1, 4);
    int64_t idb = -1;
    assert_status(llk_registry_add(&fx->r, "llmlink_register_blocks_cache", &d, fx->addrs, 1, &bk,
                                   1, true, &idb, NULL),
                  LLMLINK_SUCCESS);
    unit = 99;
    c = acquire_key_ok(fx, &bk, &unit);
    assert_int_equal(c->id, idb);
    assert_int_equal(unit, 0);
    llk_registry_release(&fx->r, c, NULL);
    llmlink_cache_key_t ck = ckey(0, 1, -1); /* model 1 as a CacheKey: not the blocks cache */
    assert_key_gone(fx, &ck);

    assert_refused(llk_registry_acquire_key(&fx->r, "test", NULL, &c, &unit),
                   LLMLINK_PARAM_INVALID, "test: key");
    llmlink_cache_key_t bad = ckey(1, 1, 1);
    bad.type = (llmlink_cache_key_type_t)9;
    assert_refused(llk_registry_acquire_key(&fx->r, "test", &bad, &c, &unit),
                   LLMLINK_PARAM_INVALID, "key->type");
    assert_id_gone(fx, 0);
    assert_id_gone(fx, -1);
    assert_id_gone(fx, 1000);
}

/* Users count up and down; a cache cannot be unregistered while used
 * without waiting. */
static void test_users_counted(void **state)
{
    reg_fixture_t *fx = *state;
    llmlink_cache_key_t k = ckey(1, 1, -1);
    int64_t id = reg_cache(fx, 1, 4, &k, 1);
    llk_cache_t *a = acquire_id_ok(fx, id);
    llk_cache_t *b = acquire_key_ok(fx, &k, NULL);
    assert_ptr_equal(a, b);
    assert_int_equal(a->users, 2);
    llk_registry_release(&fx->r, a, NULL);
    assert_int_equal(b->users, 1);
    int64_t t0 = llk_now_ms();
    assert_refused(llk_registry_remove(&fx->r, "llmlink_unregister_cache", id, false, 0),
                   LLMLINK_CACHE_IN_USE, "llmlink_unregister_cache: cache 1");
    assert_refused(llk_registry_remove(&fx->r, "llmlink_unregister_cache", id, false, -5),
                   LLMLINK_CACHE_IN_USE, "llmlink_unregister_cache");
    assert_true(llk_now_ms() - t0 < 1000); /* no wait (a bug would wait or hang) */
    llk_registry_release(&fx->r, b, NULL);
    llk_registry_release(&fx->r, NULL, NULL); /* no-op */
    assert_status(llk_registry_remove(&fx->r, "llmlink_unregister_cache", id, false, 0),
                  LLMLINK_SUCCESS);
}

/* ---- unregister waiting, across threads ------------------------------------------------ */

typedef struct waiter_ctx {
    llk_registry_t *r;
    llk_cache_t *held; /* released by the thread */
    int64_t id;
    llmlink_cache_key_t key;
    llmlink_status_t by_id, by_key, by_index; /* what acquires got while dying */
    int attempts;
} waiter_ctx_t;

/* Acquires and releases until the cache is dying (an unregister waits on
 * it), records what the acquires got then, and releases the held user. */
static void *dying_thread(void *arg)
{
    waiter_ctx_t *w = arg;
    llk_cache_t *c = NULL;
    w->by_id = LLMLINK_SUCCESS;
    for (w->attempts = 0; w->attempts < 5000; w->attempts++) {
        w->by_id = llk_registry_acquire_id(w->r, "thread", w->id, &c);
        if (w->by_id != LLMLINK_SUCCESS)
            break;
        llk_registry_release(w->r, c, NULL);
        usleep(1000);
    }
    uint64_t unit;
    w->by_key = llk_registry_acquire_key(w->r, "thread", &w->key, &c, &unit);
    if (w->by_key == LLMLINK_SUCCESS)
        llk_registry_release(w->r, c, NULL);
    llmlink_cache_key_t ix = idkey(w->id, 0);
    w->by_index = llk_registry_acquire_key(w->r, "thread", &ix, &c, &unit);
    if (w->by_index == LLMLINK_SUCCESS)
        llk_registry_release(w->r, c, NULL);
    usleep(20000); /* the remover keeps waiting meanwhile */
    llk_registry_release(w->r, w->held, NULL);
    return NULL;
}

static void test_unregister_waits_for_user_released_by_other_thread(void **state)
{
    reg_fixture_t *fx = *state;
    waiter_ctx_t w;
    memset(&w, 0, sizeof w);
    w.r = &fx->r;
    w.key = ckey(1, 1, -1);
    w.id = reg_cache(fx, 1, 4, &w.key, 1);
    w.held = acquire_id_ok(fx, w.id);

    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, dying_thread, &w), 0);
    int64_t t0 = llk_now_ms();
    llmlink_status_t st = llk_registry_remove(&fx->r, "llmlink_unregister_cache", w.id, false, 5000);
    int64_t waited = llk_now_ms() - t0;
    assert_int_equal(pthread_join(t, NULL), 0);

    assert_status(st, LLMLINK_SUCCESS);
    assert_true(waited >= 15);
    assert_true(waited < 5000);
    assert_true(w.attempts < 5000);
    assert_int_equal(w.by_id, LLMLINK_KV_CACHE_NOT_EXIST);
    assert_int_equal(w.by_key, LLMLINK_KV_CACHE_NOT_EXIST);
    assert_int_equal(w.by_index, LLMLINK_KV_CACHE_NOT_EXIST);
    assert_int_equal(llk_registry_count(&fx->r), 0);
    assert_id_gone(fx, w.id);
    assert_key_gone(fx, &w.key);
}

/* Not released within the wait: CACHE_IN_USE and the cache is as before. */
static void test_unregister_times_out_when_not_released(void **state)
{
    reg_fixture_t *fx = *state;
    llmlink_cache_key_t k = ckey(1, 1, -1);
    int64_t id = reg_cache(fx, 1, 4, &k, 1);
    llk_cache_t *c = acquire_id_ok(fx, id);
    int64_t t0 = llk_now_ms();
    assert_refused(llk_registry_remove(&fx->r, "llmlink_unregister_cache", id, false, 50),
                   LLMLINK_CACHE_IN_USE, "llmlink_unregister_cache: cache 1");
    assert_error_names("50 ms");
    int64_t waited = llk_now_ms() - t0;
    assert_true(waited >= 45);
    assert_true(waited < 2000);
    /* nothing changed: not dying, addressable by id and key */
    assert_false(c->dying);
    llk_registry_release(&fx->r, acquire_id_ok(fx, id), NULL);
    llk_registry_release(&fx->r, acquire_key_ok(fx, &k, NULL), NULL);
    assert_int_equal(llk_registry_count(&fx->r), 1);
    llk_registry_release(&fx->r, c, NULL);
    assert_status(llk_registry_remove(&fx->r, "llmlink_unregister_cache", id, false, 50),
                  LLMLINK_SUCCESS);
}

/* An unregister that times out with only cuttable users (peers' tcp
 * requests) left asks for them to be cut (r->cut) and succeeds once they
 * are released; with a local user too, it never asks. */
typedef struct cut_ctx {
    llk_registry_t *r;
    llk_cache_t *c;
    int calls;
    bool release; /* the hook releases c, as the owner thread would */
    bool requested;
} cut_ctx_t;

static void cut_hook(void *ctx)
{
    cut_ctx_t *k = ctx;
    k->calls++;
    k->requested = llk_registry_cut_requested(k->r, k->c);
    if (k->release) {
        llk_registry_set_cuttable(k->r, k->c, false);
        llk_registry_release(k->r, k->c, NULL);
    }
}

static void test_unregister_cuts_cuttable_users(void **state)
{
    reg_fixture_t *fx = *state;
    int64_t id = reg_cache(fx, 1, 4, NULL, 0);
    llk_cache_t *c = acquire_id_ok(fx, id);
    llk_registry_set_cuttable(&fx->r, c, true);
    cut_ctx_t k = {.r = &fx->r, .c = c, .release = true};
    fx->r.cut = cut_hook;
    fx->r.cut_ctx = &k;
    assert_status(llk_registry_remove(&fx->r, "llmlink_unregister_cache", id, false, 50),
                  LLMLINK_SUCCESS);
    assert_int_equal(k.calls, 1);
    assert_true(k.requested);
    assert_int_equal(llk_registry_count(&fx->r), 0);
    assert_id_gone(fx, id);
}

static void test_unregister_cut_not_released_times_out(void **state)
{
    reg_fixture_t *fx = *state;
    int64_t id = reg_cache(fx, 1, 4, NULL, 0);
    llk_cache_t *c = acquire_id_ok(fx, id);
    llk_registry_set_cuttable(&fx->r, c, true);
    cut_ctx_t k = {.r = &fx->r, .c = c, .release = false};
    fx->r.cut = cut_hook;
    fx->r.cut_ctx = &k;
    int64_t t0 = llk_now_ms();
    assert_refused(llk_registry_remove(&fx->r, "llmlink_unregister_cache", id, false, 50),
                   LLMLINK_CACHE_IN_USE, "llmlink_unregister_cache: cache 1");
    int64_t waited = llk_now_ms() - t0;
    assert_true(waited >= 50 + LLK_REGISTRY_CUT_WAIT_MS - 5); /* bounded, and then it gives up */
    assert_true(waited < 50 + LLK_REGISTRY_CUT_WAIT_MS + 2000);
    assert_int_equal(k.calls, 1);
    assert_false(c->dying);
    assert_false(llk_registry_cut_requested(&fx->r, c));
    /* A local user beside the cuttable one: no cut is asked for. */
    llk_cache_t *local = acquire_id_ok(fx, id);
    assert_refused(llk_registry_remove(&fx->r, "llmlink_unregister_cache", id, false, 50),
                   LLMLINK_CACHE_IN_USE, "llmlink_unregister_cache: cache 1");
    assert_int_equal(k.calls, 1);
    llk_registry_release(&fx->r, local, NULL);
    llk_registry_set_cuttable(&fx->r, c, false);
    llk_registry_release(&fx->r, c, NULL);
    fx->r.cut = NULL;
    assert_status(llk_registry_remove(&fx->r, "llmlink_unregister_cache", id, false, 50),
                  LLMLINK_SUCCESS);
}

/* While one unregister waits, a second one for the same cache is refused
 * at once rather than waiting too. */
typedef struct second_ctx {
    llk_registry_t *r;
    int64_t id;
    llmlink_status_t st;
} second_ctx_t;

static void *second_remover(void *arg)
{
    second_ctx_t *s = arg;
    s->st = llk_registry_remove(s->r, "llmlink_unregister_cache", s->id, false, 1000);
    return NULL;
}

static void test_second_unregister_while_waiting(void **state)
{
    reg_fixture_t *fx = *state;
    int64_t id = reg_cache(fx, 1, 4, NULL, 0);
    llk_cache_t *c = acquire_id_ok(fx, id);
    second_ctx_t s = {&fx->r, id, LLMLINK_SUCCESS};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, second_remover, &s), 0);
    /* wait until the thread's remove has marked the cache dying */
    llk_cache_t *probe = NULL;
    int i;
    for (i = 0; i < 2000; i++) {
        if (llk_registry_acquire_id(&fx->r, "test", id, &probe) != LLMLINK_SUCCESS)
            break;
        llk_registry_release(&fx->r, probe, NULL);
        usleep(500);
    }
    assert_true(i < 2000);
    assert_refused(llk_registry_remove(&fx->r, "llmlink_unregister_cache", id, false, 1000),
                   LLMLINK_CACHE_IN_USE, "being removed");
    llk_registry_release(&fx->r, c, NULL);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_status(s.st, LLMLINK_SUCCESS);
    assert_int_equal(llk_registry_count(&fx->r), 0);
}

/* ---- destroy ----------------------------------------------------------------------------- */

/* destroy frees registered and allocated caches (ASan's leak check and the
 * mapping test catch what is left). */
static void test_destroy_frees_everything(void **state)
{
    reg_fixture_t *fx = *state;
    llmlink_cache_key_t k[2] = {ckey(1, 1, -1), ckey(2, 1, -1)};
    reg_cache(fx, 2, 4, k, 1);
    llmlink_cache_desc_t d = desc_bytes(2, 8192);
    uint64_t a[2];
    alloc_cache(fx, &d, &k[1], 1, false, a);
    assert_true(is_mapped(a[1], 8192));
    llk_registry_destroy(&fx->r);
    assert_false(is_mapped(a[0], 8192));
    assert_false(is_mapped(a[1], 8192));
    /* the fixture's teardown destroys again: give it a fresh registry */
    assert_int_equal(llk_registry_init(&fx->r, MAX_CACHES), 0);
    assert_int_equal(llk_registry_count(&fx->r), 0);
}


/* ---- access control (llk_registry_acquire_peer) ------------------------------------ */

/* A peer's acquire: status, and the message when refused. */
static llmlink_status_t peer(reg_fixture_t *fx, const llmlink_cache_key_t *k, int need,
                             char *msg, size_t cap)
{
    llk_cache_t *c = NULL;
    uint64_t unit = 0;
    llk_err_clear();
    llmlink_status_t st = llk_registry_acquire_peer(&fx->r, "remote", k, need, &c, &unit);
    snprintf(msg, cap, "%s", llmlink_last_error());
    if (st == LLMLINK_SUCCESS)
        llk_registry_release(&fx->r, c, NULL);
    else
        assert_null(c);
    return st;
}

static void test_access_none_is_hidden_from_peers(void **state)
{
    reg_fixture_t *fx = *state;
    llmlink_cache_key_t k = ckey(5, 1, -1);
    llmlink_cache_desc_t d = desc_bytes(2, 4);
    int64_t id = -1;
    assert_status(llk_registry_add_access(&fx->r, FN, &d, fx->addrs, 2, &k, 1, false,
                                          LLMLINK_ACCESS_NONE, &id, NULL),
                  LLMLINK_SUCCESS);
    char m[256], ref[256];
    for (int need = LLK_PEER_READ; need <= LLK_PEER_WRITE; need++) {
        assert_status(peer(fx, &k, need, m, sizeof m), LLMLINK_KV_CACHE_NOT_EXIST);
        assert_non_null(strstr(m, "remote: no cache has key CacheKey("));
        /* by id, a batch index past the end too: as an id nobody has */
        llmlink_cache_key_t ik = idkey(id, 99), nk = idkey(id + 100, 99);
        assert_status(peer(fx, &ik, need, m, sizeof m), LLMLINK_KV_CACHE_NOT_EXIST);
        assert_status(peer(fx, &nk, need, ref, sizeof ref), LLMLINK_KV_CACHE_NOT_EXIST);
        char want[96];
        snprintf(want, sizeof want, "remote: no cache with cache_id %lld", (long long)id);
        assert_string_equal(m, want);
    }
    /* this engine's own use, and a lookup without access check, find it */
    llk_cache_t *c = acquire_id_ok(fx, id);
    llk_registry_release(&fx->r, c, NULL);
    uint64_t unit = 9;
    c = acquire_key_ok(fx, &k, &unit);
    assert_int_equal(c->access, LLMLINK_ACCESS_NONE);
    llk_registry_release(&fx->r, c, NULL);
    assert_int_equal(c->users, 0);
}

static void test_access_directions(void **state)
{
    reg_fixture_t *fx = *state;
    static const struct {
        uint32_t access;
        llmlink_status_t read, write;
    } cases[] = {
        {LLMLINK_ACCESS_READ, LLMLINK_SUCCESS, LLMLINK_ACCESS_DENIED},
        {LLMLINK_ACCESS_WRITE, LLMLINK_ACCESS_DENIED, LLMLINK_SUCCESS},
        {LLMLINK_ACCESS_READ_WRITE, LLMLINK_SUCCESS, LLMLINK_SUCCESS},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        llmlink_cache_key_t k = bkey(10 + i);
        llmlink_cache_desc_t d = desc_bytes(2, 4);
        int64_t id = -1;
        assert_status(llk_registry_add_access(&fx->r, FN, &d, fx->addrs, 2, &k, 1, true,
                                              cases[i].access, &id, NULL),
                      LLMLINK_SUCCESS);
        char m[256];
        assert_status(peer(fx, &k, LLK_PEER_READ, m, sizeof m), cases[i].read);
        if (cases[i].read == LLMLINK_ACCESS_DENIED)
            assert_non_null(strstr(m, "read"));
        assert_status(peer(fx, &k, LLK_PEER_WRITE, m, sizeof m), cases[i].write);
        if (cases[i].write == LLMLINK_ACCESS_DENIED)
            assert_non_null(strstr(m, "write"));
        llmlink_cache_key_t ik = idkey(id, 0);
        assert_status(peer(fx, &ik, LLK_PEER_WRITE, m, sizeof m), cases[i].write);
        assert_status(llk_registry_remove(&fx->r, FN, id, false, 0), LLMLINK_SUCCESS);
    }
    /* the plain add is READ_WRITE; an access past READ_WRITE is refused */
    int64_t id = reg_cache(fx, 2, 4, NULL, 0);
    llmlink_cache_key_t ik = idkey(id, 0);
    char m[256];
    assert_status(peer(fx, &ik, LLK_PEER_WRITE, m, sizeof m), LLMLINK_SUCCESS);
    assert_status(peer(fx, &ik, LLK_PEER_READ, m, sizeof m), LLMLINK_SUCCESS);
    llmlink_cache_desc_t d = desc_bytes(2, 4);
    assert_refused(llk_registry_add_access(&fx->r, FN, &d, fx->addrs, 2, NULL, 0, false, 4, &id,
                                           NULL),
                   LLMLINK_PARAM_INVALID, "access");
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_dtype_sizes),
        T(test_check_desc_sizes),
        T(test_check_desc_refusals),
        T(test_register_fills_the_entry_and_ids_increase),
        T(test_register_address_refusals),
        T(test_register_key_refusals),
        T(test_duplicate_keys_within_a_call),
        T(test_duplicate_keys_across_calls),
        T(test_many_keys),
        T(test_max_caches),
        T(test_allocate_is_page_aligned_zeroed_writable),
        T(test_allocated_refcounts_keys_outlive_id),
        T(test_allocated_freed_by_id_after_keys),
        T(test_allocated_free_waits_for_last_user),
        T(test_release_consumes_key_of_allocated_cache),
        T(test_release_does_not_consume_registered_keys),
        T(test_remove_refusals),
        T(test_remove_key_refusals_and_registered_keys),
        T(test_acquire_by_key_and_index),
        T(test_users_counted),
        T(test_unregister_waits_for_user_released_by_other_thread),
        T(test_unregister_times_out_when_not_released),
        T(test_unregister_cuts_cuttable_users),
        T(test_unregister_cut_not_released_times_out),
        T(test_second_unregister_while_waiting),
        T(test_destroy_frees_everything),
        T(test_access_none_is_hidden_from_peers),
        T(test_access_directions),
    };
#undef T
    return cmocka_run_group_tests_name("cache_registry: caches, keys, lifetimes", tests, NULL,
                                       NULL);
}

/*
 * fuzz_owner_admit.c - stateful fuzz target for the owner's request
 * admission (core/xfer/owner.c: on_request -> serve_allowed -> admit ->
 * the answer), through llk_test_owner_request (xfer/owner_testing.h),
 * which runs the owner thread's own on_request on a stream without a
 * socket, against a registry of real, small registered caches.
 *
 * Each input: a configuration of 1..3 caches (blocks or batch, 1..3
 * tensors, shapes and element types from the input; memory the harness
 * allocates and registers, or the library allocates (owned), with CACHE /
 * BLOCKS keys), then a series of requests, each either structured
 * (llk_xwire_encode_req with op, kind, flags, a key of a registered cache
 * or not, unit size, bounds and up to 4 segments from the input) or raw
 * payload bytes.
 *
 * The invariants, checked for every request:
 *  - every admitted request's segments lie inside one registered tensor of
 *    the cache it holds, as the harness registered it (its own record of
 *    the memory, not the registry's); a batch cache's segments inside the
 *    one entry the key selects;
 *  - every request that decodes gets an answer frame for its req_id, whose
 *    status is SUCCESS exactly when it was admitted, and a refusal carries
 *    a printable message;
 *  - nothing stays held after a request ends (every cache's users is 0).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_engine.h"
#include "xfer/cache_registry.h"
#include "xfer/owner_testing.h"
#include "xfer/xfer.h"
#include "xfer/xfer_wire.h"

#define MAX_CACHES 3
#define MAX_TENSORS 3
#define MAX_REQS 64
#define MAX_SEGS 4

/* What the harness registered: its own record of the memory. */
typedef struct hcache {
    int64_t id;
    bool blocks, owned;
    uint32_t ntensors;
    uint64_t tensor_bytes, units, unit_bytes;
    uint64_t addrs[MAX_TENSORS];
    void *mem[MAX_TENSORS]; /* registered (not owned) memory */
    llmlink_cache_key_t key; /* its key (CACHE or BLOCKS), type 0 when none */
} hcache_t;

static hcache_t caches[MAX_CACHES];
static size_t ncaches;

static const llmlink_data_type_t dtypes[] = {LLMLINK_DT_UINT8, LLMLINK_DT_FLOAT16,
                                             LLMLINK_DT_FLOAT, LLMLINK_DT_INT64};
static const uint64_t dsize[] = {1, 2, 4, 8};

/* The request being served, for the admission callback. */
static struct {
    uint32_t admitted;
    int64_t want_unit; /* the batch entry its key selects, -1 unknown */
} cur;

static uint8_t payload[LLK_XWIRE_HEADER_SIZE + 64 + 24 * MAX_SEGS + 4096];
static uint8_t answer[4096];

static void add_cache(llmlink_t *e, fz_in_t *in, size_t i)
{
    hcache_t *h = &caches[ncaches];
    memset(h, 0, sizeof *h);
    uint8_t f = fz_u8(in);
    h->blocks = f & 1;
    h->owned = f & 2;
    h->ntensors = 1 + (f >> 2) % MAX_TENSORS;
    uint8_t dt = (f >> 4) & 3;
    llmlink_cache_desc_t d;
    memset(&d, 0, sizeof d);
    d.num_tensors = h->ntensors;
    d.data_type = dtypes[dt];
    d.placement = LLMLINK_PLACEMENT_HOST;
    d.num_dims = 2;
    d.shape[0] = 1 + fz_u8(in) % 8;        /* blocks or batch entries */
    d.shape[1] = 1 + fz_u8(in) % 32;       /* elements per unit */
    h->units = (uint64_t)d.shape[0];
    h->unit_bytes = (uint64_t)d.shape[1] * dsize[dt];
    h->tensor_bytes = h->units * h->unit_bytes;
    llmlink_cache_key_t key;
    memset(&key, 0, sizeof key);
    key.cluster_id = FZ_SRV_ID;
    key.model_id = i; /* unique: a blocks key is its model id */
    key.prefix_id = -1;
    key.req_id = 1000 + i;
    key.type = h->blocks ? LLMLINK_KEY_BLOCKS : LLMLINK_KEY_CACHE;
    bool with_key = (f & 0x40) == 0;
    uint64_t addrs[MAX_TENSORS];
    if (!h->owned)
        for (uint32_t t = 0; t < h->ntensors; t++) {
            h->mem[t] = malloc(h->tensor_bytes);
            FZ_CHECK(h->mem[t] != NULL);
            addrs[t] = (uint64_t)(uintptr_t)h->mem[t];
        }
    llmlink_status_t st =
        llk_registry_add(&e->reg, "fuzz", &d, h->owned ? NULL : addrs, h->owned ? 0 : h->ntensors,
                         with_key ? &key : NULL, with_key ? 1 : 0, h->blocks, &h->id,
                         h->owned ? h->addrs : NULL);
    if (st != LLMLINK_SUCCESS)
        fprintf(stderr, "fuzz: registering cache %zu: %s\n", i, llmlink_last_error());
    FZ_CHECK(st == LLMLINK_SUCCESS);
    if (!h->owned)
        memcpy(h->addrs, addrs, sizeof addrs);
    if (with_key)
        h->key = key;
    ncaches++;
}

static const hcache_t *hcache_by_id(int64_t id)
{
    for (size_t i = 0; i < ncaches; i++)
        if (caches[i].id == id)
            return &caches[i];
    return NULL;
}

/* The admission callback: the invariant itself. */
static void on_admitted(void *ctx, const struct llk_cache *c, const uint64_t *segv,
                        const uint32_t *segt, uint32_t nseg)
{
    (void)ctx;
    cur.admitted++;
    FZ_CHECK(c != NULL);
    const hcache_t *h = hcache_by_id(c->id);
    FZ_CHECK(h != NULL); /* a registered cache */
    for (uint32_t i = 0; i < nseg; i++) {
        uint64_t addr = segv[2 * i], len = segv[2 * i + 1];
        FZ_CHECK(segt[i] < h->ntensors);
        uint64_t base = h->addrs[segt[i]];
        FZ_CHECK(addr >= base && len <= h->tensor_bytes && addr - base <= h->tensor_bytes - len);
        if (!h->blocks && len > 0) {
            /* one batch entry, the one the key names */
            uint64_t first = (addr - base) / h->unit_bytes;
            uint64_t last = (addr - base + len - 1) / h->unit_bytes;
            FZ_CHECK(first == last);
            if (cur.want_unit >= 0)
                FZ_CHECK(first == (uint64_t)cur.want_unit);
        }
    }
}

/* A key: one of a registered cache (right or with one field off), or any. */
static llmlink_cache_key_t pick_key(fz_in_t *in)
{
    llmlink_cache_key_t k;
    memset(&k, 0, sizeof k);
    uint8_t how = fz_u8(in);
    const hcache_t *h = &caches[how % ncaches];
    cur.want_unit = -1;
    unsigned kind = (how >> 2) % 4;
    if (kind == 0 && !h->key.type)
        kind = 1; /* no key: by id */
    switch (kind) {
    case 0:
        k = h->key;
        cur.want_unit = 0; /* a registered CACHE key names entry 0 */
        break;
    case 1:
        k.type = LLMLINK_KEY_ID_AND_INDEX;
        k.cluster_id = FZ_SRV_ID;
        k.cache_id = h->id + (how & 0x40 ? 1 : 0);
        k.batch_index = fz_u8(in) % 10;
        cur.want_unit = k.batch_index;
        break;
    case 2:
        k = h->key;
        k.type = (llmlink_cache_key_type_t)(1 + fz_u8(in) % 4);
        k.model_id ^= fz_u8(in) & 1;
        k.req_id += fz_u8(in) & 1;
        break;
    default:
        k.type = (llmlink_cache_key_type_t)fz_u8(in);
        k.req_id = fz_u64(in);
        k.model_id = fz_u8(in);
        k.prefix_id = (int8_t)fz_u8(in);
        k.cache_id = (int8_t)fz_u8(in);
        k.batch_index = fz_u32(in);
        break;
    }
    if (k.type == LLMLINK_KEY_BLOCKS || k.type == 0)
        cur.want_unit = -1;
    return k;
}

static size_t build_req(fz_in_t *in)
{
    llk_xreq_t q;
    memset(&q, 0, sizeof q);
    uint8_t a = fz_u8(in);
    q.op = a & 7;           /* 0 and 7: unknown operations */
    q.kind = (a >> 3) & 3;  /* 0: an unknown kind */
    q.flags = fz_u8(in) & 0x0F;
    q.key = pick_key(in);
    const hcache_t *h = &caches[fz_u8(in) % ncaches];
    q.unit_bytes = fz_u8(in) < 0xE0 ? h->unit_bytes : fz_u64(in);
    llk_xseg_wire_t segs[MAX_SEGS];
    uint32_t nseg = fz_u8(in) % (MAX_SEGS + 1);
    uint64_t end = 0;
    uint32_t ntens = 0;
    for (uint32_t i = 0; i < nseg; i++) {
        uint8_t b = fz_u8(in);
        segs[i].tensor = b % (MAX_TENSORS + 1);
        if (b & 0x80) {
            segs[i].offset = fz_u64(in);
            segs[i].length = fz_u64(in);
        } else {
            segs[i].offset = fz_u16(in) % (2 * h->tensor_bytes + 1);
            segs[i].length = 1 + fz_u16(in) % (h->tensor_bytes + 8);
        }
        uint64_t e;
        if (!__builtin_add_overflow(segs[i].offset, segs[i].length, &e) && e > end)
            end = e;
        if (segs[i].tensor + 1 > ntens)
            ntens = segs[i].tensor + 1;
    }
    q.nseg = nseg;
    uint8_t bnd = fz_u8(in);
    q.bound_end = bnd < 0xC0 ? end : fz_u64(in);
    q.num_tensors_hint = bnd & 1 ? ntens : fz_u8(in);
    return llk_xwire_encode_req(payload, sizeof payload, 1 + fz_u8(in), &q, segs);
}

/* Nothing stays held once a request ended. */
static void check_idle(llmlink_t *e)
{
    pthread_mutex_lock(&e->reg.mu);
    for (llk_cache_t *c = e->reg.head; c; c = c->next)
        FZ_CHECK(c->users == 0 && c->revocable == 0);
    pthread_mutex_unlock(&e->reg.mu);
}

static void serve(llmlink_t *e, llk_xlink_t *xl, const uint8_t *p, size_t n, uint64_t req_id)
{
    cur.admitted = 0;
    size_t alen = 0;
    int rc = llk_test_owner_request(e, xl, req_id, p, n, on_admitted, NULL, answer, sizeof answer,
                                    &alen);
    check_idle(e);
    if (rc != 0) {
        if (fz_trace())
            fprintf(stderr, "fuzz trace: request %llu: protocol error\n",
                    (unsigned long long)req_id);
        FZ_CHECK(cur.admitted == 0); /* broke the protocol: nothing admitted */
        return;
    }
    FZ_CHECK(cur.admitted <= 1);
    /* The answer: one XRESP for this request; SUCCESS iff admitted. */
    FZ_CHECK(alen >= LLK_XWIRE_HEADER_SIZE);
    llk_xframe_header_t h;
    const char *why = NULL;
    FZ_CHECK(llk_xwire_read_header(answer, &h, &why) == 0);
    FZ_CHECK(h.req_id == req_id && h.length == alen - LLK_XWIRE_HEADER_SIZE);
    FZ_CHECK(h.type == LLK_XMSG_RESP); /* no transport grants on this link */
    llk_xresp_t r;
    FZ_CHECK(llk_xwire_decode_resp(answer + LLK_XWIRE_HEADER_SIZE, h.length, &r, &why) == 0);
    if (fz_trace())
        fprintf(stderr, "fuzz trace: request %llu: status 0x%x %s\n", (unsigned long long)req_id,
                r.status, r.msg);
    FZ_CHECK((r.status == LLMLINK_SUCCESS) == (cur.admitted == 1));
    if (r.status != LLMLINK_SUCCESS) {
        FZ_CHECK(r.msg[0] != '\0');
        for (const char *c = r.msg; *c; c++)
            FZ_CHECK(*c >= 0x20 && *c <= 0x7e);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static llmlink_t *e;
    static llk_xlink_t *xl;
    if (!e) {
        e = fz_engine(LLMLINK_ROLE_PROMPT, FZ_SRV_ID, true);
        /* One link, not broken: as a stream's link when a request comes. */
        xl = llk_xlink_new(FZ_CLI_ID, false, 0, "fuzz-peer");
        FZ_CHECK(xl != NULL);
    }
    fz_in_t in = {data, size, 0};
    FZ_CHECK(llk_registry_init(&e->reg, 8) == 0);
    ncaches = 0;
    size_t want = 1 + fz_u8(&in) % MAX_CACHES;
    for (size_t i = 0; i < want; i++)
        add_cache(e, &in, i);
    for (int k = 0; k < MAX_REQS && fz_left(&in); k++) {
        uint8_t how = fz_u8(&in);
        if (how < 0xE0) {
            size_t n = build_req(&in);
            FZ_CHECK(n >= LLK_XWIRE_HEADER_SIZE);
            llk_xframe_header_t h;
            const char *why = NULL;
            FZ_CHECK(llk_xwire_read_header(payload, &h, &why) == 0);
            serve(e, xl, payload + LLK_XWIRE_HEADER_SIZE, n - LLK_XWIRE_HEADER_SIZE, h.req_id);
        } else {
            size_t n;
            const uint8_t *p = fz_take(&in, fz_u16(&in) % 2048, &n);
            serve(e, xl, p, n, 7);
        }
    }
    llk_registry_destroy(&e->reg);
    for (size_t i = 0; i < ncaches; i++)
        for (uint32_t t = 0; t < caches[i].ntensors; t++)
            free(caches[i].mem[t]);
    return 0;
}

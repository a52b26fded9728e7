/*
 * test_xfer_multiproc.c - the KV cache transfer contract across processes.
 *
 * Prefill (PROMPT, "P") and decode (DECODER, "D") engines run as separate
 * llmlink-node processes (tests/tools/llmlink-node.c, found through
 * $LLMLINK_NODE) on 127.0.0.1 with kernel-chosen ports. The nodes own
 * their KV memory, fill it with the pattern of tests/common/kvfill.h (byte
 * = f(seed, tensor, offset); seeds carry the cluster id), and verify every
 * byte after a transfer: each destination block holds what the source had
 * at the source position, and every other byte its own original pattern.
 *
 * Most cases run once per transport (llmlink.Transport = tcp, shm, auto,
 * set on both nodes); the test name says which. Shapes are realistic (32
 * layers x K/V = 64 tensors, blocks of 16 KiB .. 4 MiB) but bounded for a
 * 2-core CI machine; under LLMLINK_SANITIZER they shrink and nothing is
 * skipped. Random block maps use a seeded RNG: the seed is printed, and
 * LLMLINK_TEST_SEED=<n> repeats a run.
 *
 * Groups: data paths (random and merging block maps, whole caches by key
 * and by id+index, partial sizes, pushes, layer ranges, a cache entry seen
 * as blocks), refusals by the owner (status, message, destination
 * untouched, link still usable), four decoders at once, concurrency (8
 * threads on one engine, unregister while pulling), failures mid-pull
 * (SIGKILL of either side, SIGSTOP of the prefill), and the same-host path
 * (shm counters, EPERM fallback to tcp, forced shm refused).
 *
 * tests/rdma/test_rdma_matrix.c compiles this file again with
 * LLK_RDMA_MATRIX: the same cases with llmlink.Transport=rdma on a
 * soft-RoCE netdev's address ($LLMLINK_TEST_IP), inside the VM.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kvfill.h"
#include "llmlink.h"
#include "proc.h"
#include "tls_env.h"

#define MAX_PROCS 16
#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)

/* ------------------------------------------------------------------ */
/* Fixture                                                             */
/* ------------------------------------------------------------------ */

typedef struct fx {
    const char *transport; /* llmlink.Transport for every node */
    proc_t procs[MAX_PROCS];
    size_t nprocs;
    char opt_transport[64];
    char opt_wait[64];
} fx_t;

/* How long a command may take (transfers of up to 512 MiB included). */
static int reply_ms(void)
{
    return proc_sanitized() ? 120000 : 30000;
}

/* llm.SyncKvCacheWaitTime of the ordinary cases. */
static int wait_ms(void)
{
    return proc_sanitized() ? 60000 : 20000;
}

static int fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->transport = *state ? (const char *)*state : "auto";
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    fx_t *f = *state;
    /* EOF on every node's stdin first, so they quit in parallel. */
    int rc = proc_stop_all(f->procs, f->nprocs, proc_sanitized() ? 60000 : 20000);
    free(f);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Nodes and commands                                                  */
/* ------------------------------------------------------------------ */

/* Starts a node with llmlink.Transport=<transport> (NULL: the fixture's),
 * llm.SyncKvCacheWaitTime=<wait> (0: wait_ms()), the extra options and
 * the extra node arguments (both NULL-terminated or NULL). */
static proc_t *node_full(fx_t *f, const char *role, uint64_t id, const char *transport,
                         int wait, const char *const *more_opts, const char *const *args)
{
    char topt[64], wopt[64];
    snprintf(topt, sizeof topt, "llmlink.Transport=%s", transport ? transport : f->transport);
    snprintf(wopt, sizeof wopt, "llm.SyncKvCacheWaitTime=%d", wait ? wait : wait_ms());
    const char *opts[20];
    size_t n = 0;
    opts[n++] = topt;
    opts[n++] = wopt;
    /* LLMLINK_TEST_TLS=1: tcp nodes link over mutual TLS (tls_env.h); one
     * certificate of the test CA serves every node, either role. */
    char tls[3][200];
    if (llk_test_tls_on() && !strcmp(transport ? transport : f->transport, "tcp")) {
        snprintf(tls[0], sizeof tls[0], "llmlink.TlsCertFile=%s", llk_test_tls_path("server.pem"));
        snprintf(tls[1], sizeof tls[1], "llmlink.TlsKeyFile=%s", llk_test_tls_path("server.key"));
        snprintf(tls[2], sizeof tls[2], "llmlink.TlsCaFile=%s", llk_test_tls_path("ca.pem"));
        for (int i = 0; i < 3; i++)
            opts[n++] = tls[i];
    }
    for (size_t i = 0; more_opts && more_opts[i] && n < 19; i++)
        opts[n++] = more_opts[i];
    opts[n] = NULL;
    char lbuf[80];
    snprintf(lbuf, sizeof lbuf, "%s:0", proc_test_ip());
    const char *listen = strcmp(role, "decoder") ? lbuf : NULL;
    proc_t *p = proc_node_add(f->procs, &f->nprocs, MAX_PROCS, role, id, listen, opts, args,
                              NULL, reply_ms());
    if (!p)
        fail_msg("%s", proc_last_error());
    return p;
}

static proc_t *start_prompt(fx_t *f, uint64_t id)
{
    return node_full(f, "prompt", id, NULL, 0, NULL, NULL);
}

static proc_t *start_decoder(fx_t *f, uint64_t id)
{
    return node_full(f, "decoder", id, NULL, 0, NULL, NULL);
}

/* Sends a command and returns its reply (one of a ring of buffers). */
#define cmd(p, ...) proc_must_reply(proc_reply((p), reply_ms(), __VA_ARGS__))

/* The reply must be exactly want. */
#define expect(p, want, ...) ((void)proc_must(proc_expect((p), reply_ms(), (want), __VA_ARGS__)))

static bool contains_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return true;
    return false;
}

/*
 * A failed transfer's reply "<VERB> <status> | <message>": the status must
 * be want and the message non-empty; with hints ("a|b|c"), it must mention
 * one of them (case-insensitive).
 */
static void expect_failure(proc_t *p, const char *got, const char *verb, const char *want,
                           const char *hints)
{
    char head[128];
    snprintf(head, sizeof head, "%s %s | ", verb, want);
    if (strncmp(got, head, strlen(head)) != 0)
        fail_msg("%s: answered '%s'; expected '%s<message>'", p->label, got, head);
    const char *msg = got + strlen(head);
    if (!*msg)
        fail_msg("%s: %s without a message", p->label, want);
    if (hints) {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", hints);
        bool found = false;
        char *save = NULL;
        for (char *h = strtok_r(buf, "|", &save); h && !found; h = strtok_r(NULL, "|", &save))
            found = contains_ci(msg, h);
        if (!found)
            fail_msg("%s: %s message '%s' mentions none of '%s'", p->label, want, msg, hints);
    }
    print_message("  refused as expected: %s | %s\n", want, msg);
}

/* A failed transfer: any status but SUCCESS; returns the status name. */
static const char *expect_not_success(proc_t *p, const char *got, const char *verb)
{
    static char name[64];
    char head[32];
    snprintf(head, sizeof head, "%s ", verb);
    if (strncmp(got, head, strlen(head)) != 0 || !strncmp(got + strlen(head), "LLM_SUCCESS", 11))
        fail_msg("%s: answered '%s'; expected a failed %s", p->label, got, verb);
    sscanf(got + strlen(head), "%63s", name);
    return name;
}

/* "<id>@127.0.0.1:<port>" of a prompt node. */
static const char *ep(const proc_t *p) { return proc_endpoint(p); }

static void link_to(proc_t *d, proc_t *p)
{
    expect(d, "LINK LLM_SUCCESS LLM_SUCCESS", "link 10000 %s", ep(p));
}

/* Polls `check remote` until it answers want (bounded). */
static void wait_check(proc_t *p, uint64_t remote, const char *want, int max_ms)
{
    proc_must(proc_wait_check(p, remote, want, proc_now_ms(), max_ms, reply_ms()));
}

static proc_xstats_t xstats(proc_t *p)
{
    proc_xstats_t s;
    if (proc_node_xstats(p, &s, reply_ms()) != 0)
        fail_msg("%s: %s", p->label, proc_last_error());
    return s;
}

static void print_xstats(const char *what, const proc_xstats_t *s)
{
    print_message("  %s: caches=%u transfers=%llu failed=%llu timed_out=%llu bytes_req=%llu "
                  "bytes_served=%llu served=%llu refused=%llu tcp=%llu shm=%llu "
                  "shm_fallbacks=%llu\n",
                  what, s->caches, s->transfers, s->failed, s->timed_out, s->bytes_req,
                  s->bytes_served, s->served, s->refused, s->tcp, s->shm, s->shm_fallbacks);
}

/* Registers node memory: a blocks cache of ntensors x nblocks blocks of
 * block_bytes (fp16, [nblocks, block_bytes / 256, 128]) filled with seed;
 * model_key > 0 gives it the key blocks:<node's id>:<model_key>. */
static int64_t reg_blocks(proc_t *p, uint32_t ntensors, uint64_t nblocks, uint64_t block_bytes,
                          uint64_t model_key, uint64_t seed)
{
    assert_true(block_bytes % 256 == 0);
    char key[64] = "";
    if (model_key)
        snprintf(key, sizeof key, " key=blocks:%llu:%llu", (unsigned long long)p->cluster_id,
                 (unsigned long long)model_key);
    const char *got = cmd(p, "reg blocks %u fp16 %llu,%llu,128%s seed=%llu", ntensors,
                          (unsigned long long)nblocks, (unsigned long long)(block_bytes / 256),
                          key, (unsigned long long)seed);
    long long id;
    if (sscanf(got, "REG LLM_SUCCESS %lld", &id) != 1)
        fail_msg("%s: reg blocks answered '%s'", p->label, got);
    return id;
}

/* Registers node memory: a cache of ntensors x batch entries of
 * entry_bytes; req0 > 0 gives entry i the key cache:<id>:<req0 + i>:<model>
 * for i < nkeys. */
static int64_t reg_cache(proc_t *p, const char *verb, uint32_t ntensors, uint64_t batch,
                         uint64_t entry_bytes, uint64_t req0, uint64_t nkeys, uint64_t model,
                         uint64_t seed)
{
    assert_true(entry_bytes % 256 == 0);
    char keys[2048] = "";
    size_t off = 0;
    for (uint64_t i = 0; req0 && i < nkeys; i++)
        off += (size_t)snprintf(keys + off, sizeof keys - off, "%s%llu:%llu:%llu",
                                i ? ",cache:" : " key=cache:", (unsigned long long)p->cluster_id,
                                (unsigned long long)(req0 + i), (unsigned long long)model);
    const char *got = cmd(p, "%s cache %u fp16 %llu,%llu,128%s seed=%llu", verb, ntensors,
                          (unsigned long long)batch, (unsigned long long)(entry_bytes / 256),
                          keys, (unsigned long long)seed);
    char want[32];
    snprintf(want, sizeof want, "%s LLM_SUCCESS %%lld", !strcmp(verb, "reg") ? "REG" : "ALLOC");
    long long id;
    if (sscanf(got, want, &id) != 1)
        fail_msg("%s: %s cache answered '%s'", p->label, verb, got);
    return id;
}

/* "a-b,c,..." of v[0..n) (ascending runs compressed), in a ring buffer. */
static const char *list_str(const uint64_t *v, size_t n)
{
    static char ring[20][8192];
    static unsigned next;
    char *b = ring[next++ % 20];
    size_t off = 0;
    b[0] = '\0';
    for (size_t i = 0; i < n && off < sizeof ring[0] - 48;) {
        size_t j = i;
        while (j + 1 < n && v[j + 1] == v[j] + 1)
            j++;
        if (j > i)
            off += (size_t)snprintf(b + off, sizeof ring[0] - off, "%s%llu-%llu", i ? "," : "",
                                    (unsigned long long)v[i], (unsigned long long)v[j]);
        else
            off += (size_t)snprintf(b + off, sizeof ring[0] - off, "%s%llu", i ? "," : "",
                                    (unsigned long long)v[i]);
        i = j + 1;
    }
    assert_true(off < sizeof ring[0] - 48);
    return b;
}

/* Entries of a list "N,A-B,..." (ranges inclusive). */
static uint64_t list_count(const char *s)
{
    uint64_t n = 0;
    while (*s) {
        char *end;
        unsigned long long a = strtoull(s, &end, 10), b = a;
        if (*end == '-')
            b = strtoull(end + 1, &end, 10);
        n += b - a + 1;
        s = *end == ',' ? end + 1 : end;
        if (end == s && *s)
            fail_msg("list_count: bad list at '%s'", s);
    }
    return n;
}

static void expect_verify_ok(proc_t *p, const char *got)
{
    if (strcmp(got, "VERIFY OK") != 0)
        fail_msg("%s: %s", p->label, got);
}

static uint64_t test_seed(void)
{
    static uint64_t seed;
    if (!seed) {
        const char *s = getenv("LLMLINK_TEST_SEED");
        seed = s && *s ? strtoull(s, NULL, 0)
                       : ((uint64_t)time(NULL) << 16) ^ (uint64_t)getpid();
        if (!seed)
            seed = 1;
    }
    return seed;
}

static kvfill_rng_t rng_for(const char *test)
{
    uint64_t s = test_seed();
    for (const char *c = test; *c; c++)
        s = kvfill_mix64(s ^ (uint64_t)(unsigned char)*c);
    print_message("  RNG: LLMLINK_TEST_SEED=%llu\n", (unsigned long long)test_seed());
    kvfill_rng_t r = {s};
    return r;
}

/* Transport expectations after data moved: tcp never uses shm; shm (and
 * auto, both root processes on one host) do. */
static void expect_transport_used(fx_t *f, proc_t *requester)
{
    proc_xstats_t s = xstats(requester);
    print_xstats(requester->label, &s);
    if (!strcmp(f->transport, "tcp")) {
        assert_true(s.tcp > 0);
        assert_int_equal(s.shm, 0);
    } else if (!strcmp(f->transport, "rdma")) {
        /* every request over RDMA: none over the stream, none by process_vm_* */
        assert_true(s.rdma > 0);
        assert_int_equal(s.tcp, 0);
        assert_int_equal(s.shm, 0);
    } else {
        if (s.shm == 0)
            fail_msg("%s: Transport=%s on one host moved nothing with process_vm_*: %llu tcp "
                     "requests, %llu shm fallbacks", requester->label, f->transport, s.tcp,
                     s.shm_fallbacks);
        assert_int_equal(s.shm_fallbacks, 0);
    }
}

/* ------------------------------------------------------------------ */
/* Data paths                                                          */
/* ------------------------------------------------------------------ */

static void test_pull_blocks_random_maps(void **state)
{
    fx_t *f = *state;
    const uint32_t nt = proc_sanitized() ? 16 : 64; /* 32 layers x K, V */
    const uint64_t nb = proc_sanitized() ? 32 : 128, bs = 16 * KiB;
    proc_t *p = start_prompt(f, 1);
    proc_t *d = start_decoder(f, 101);
    uint64_t sp = kvfill_seed(1, 1);
    int64_t pc = reg_blocks(p, nt, nb, bs, 7, sp);
    int64_t dc = reg_blocks(d, nt, nb, bs, 0, kvfill_seed(101, 1));
    link_to(d, p);

    kvfill_rng_t rng = rng_for(__func__);
    uint64_t src[256], dst[256], total = 0;
    for (int round = 0; round < 3; round++) {
        uint64_t k = 1 + kvfill_rng_below(&rng, nb / 2);
        assert_int_equal(kvfill_rng_pick(&rng, nb, k, src), 0);
        assert_int_equal(kvfill_rng_pick(&rng, nb, k, dst), 0);
        uint64_t sd = kvfill_seed(101, 10 + (uint64_t)round);
        expect(d, "FILL OK", "fill %lld %llu", (long long)dc, (unsigned long long)sd);
        const char *sl = list_str(src, k), *dl = list_str(dst, k);
        print_message("  round %d: %llu blocks x %u tensors (%llu KiB)\n", round,
                      (unsigned long long)k, nt, (unsigned long long)(k * nt * bs / KiB));
        expect(d, "PULL LLM_SUCCESS", "pullblocks blocks:1:7 %lld %s %s", (long long)dc, sl, dl);
        expect_verify_ok(d, cmd(d, "verifyblocks %lld %llu %llu %s %s", (long long)dc,
                                (unsigned long long)sd, (unsigned long long)sp, sl, dl));
        total += k * nt * bs;
    }

    /* Maps whose consecutive pairs merge into runs (and some that break
     * runs by one block on either side). */
    uint64_t sd = kvfill_seed(101, 20);
    expect(d, "FILL OK", "fill %lld %llu", (long long)dc, (unsigned long long)sd);
    const char *ms = proc_sanitized() ? "0-9,20-23,12,13,5-6" : "10-41,0-7,60,61,63,62,100-119";
    const char *md = proc_sanitized() ? "20-29,0-3,4,5,30,31" : "50-81,100-107,0,1,2,3,20-39";
    uint64_t mk = list_count(ms);
    assert_int_equal(mk, list_count(md));
    expect(d, "PULL LLM_SUCCESS", "pullblocks blocks:1:7 %lld %s %s", (long long)dc, ms, md);
    expect_verify_ok(d, cmd(d, "verifyblocks %lld %llu %llu %s %s", (long long)dc,
                            (unsigned long long)sd, (unsigned long long)sp, ms, md));
    total += mk * nt * bs;

    /* The source is unchanged by being read. */
    expect_verify_ok(p, cmd(p, "verify %lld %llu", (long long)pc, (unsigned long long)sp));

    proc_xstats_t sdx = xstats(d), spx = xstats(p);
    print_xstats("prompt", &spx);
    assert_int_equal(sdx.transfers, 4);
    assert_int_equal(sdx.failed, 0);
    assert_int_equal(sdx.bytes_req, total);
    assert_int_equal(spx.refused, 0);
    assert_true(spx.served > 0);
    if (!strcmp(f->transport, "tcp"))
        assert_int_equal(spx.bytes_served, total);
    expect_transport_used(f, d);
}

static void test_pull_cache_whole_and_partial(void **state)
{
    fx_t *f = *state;
    const uint32_t nt = proc_sanitized() ? 8 : 32;
    const uint64_t eb = proc_sanitized() ? 64 * KiB : 256 * KiB; /* one batch entry of a tensor */
    proc_t *p = start_prompt(f, 1);
    proc_t *d = start_decoder(f, 101);
    uint64_t sp = kvfill_seed(1, 2);
    int64_t pc = reg_cache(p, "reg", nt, 4, eb, 100, 4, 7, sp); /* cache:1:100..103:7 */
    int64_t dc = reg_cache(d, "reg", nt, 4, eb, 0, 0, 0, kvfill_seed(101, 0));
    link_to(d, p);

    /* By CacheKey, whole entry: P's entry 2 -> D's entry 1. */
    uint64_t sd = kvfill_seed(101, 1);
    expect(d, "FILL OK", "fill %lld %llu", (long long)dc, (unsigned long long)sd);
    expect(d, "PULL LLM_SUCCESS", "pullcache cache:1:102:7 %lld 1 -1", (long long)dc);
    expect_verify_ok(d, cmd(d, "verifycache %lld %llu %llu 1 %llu -1", (long long)dc,
                            (unsigned long long)sd, (unsigned long long)sp,
                            (unsigned long long)(2 * eb)));

    /* By CacheKeyByIdAndIndex: P's entry 3 -> D's entry 2. */
    sd = kvfill_seed(101, 2);
    expect(d, "FILL OK", "fill %lld %llu", (long long)dc, (unsigned long long)sd);
    expect(d, "PULL LLM_SUCCESS", "pullcache idx:1:%lld:3 %lld 2 -1", (long long)pc,
           (long long)dc);
    expect_verify_ok(d, cmd(d, "verifycache %lld %llu %llu 2 %llu -1", (long long)dc,
                            (unsigned long long)sd, (unsigned long long)sp,
                            (unsigned long long)(3 * eb)));

    /* A smaller size: only the first bytes of each tensor's entry move. */
    uint64_t part = eb / 2 + 24;
    sd = kvfill_seed(101, 3);
    expect(d, "FILL OK", "fill %lld %llu", (long long)dc, (unsigned long long)sd);
    expect(d, "PULL LLM_SUCCESS", "pullcache cache:1:100:7 %lld 3 %llu", (long long)dc,
           (unsigned long long)part);
    expect_verify_ok(d, cmd(d, "verifycache %lld %llu %llu 3 0 %llu", (long long)dc,
                            (unsigned long long)sd, (unsigned long long)sp,
                            (unsigned long long)part));
    sd = kvfill_seed(101, 4);
    expect(d, "FILL OK", "fill %lld %llu", (long long)dc, (unsigned long long)sd);
    expect(d, "PULL LLM_SUCCESS", "pullcache idx:1:%lld:1 %lld 0 %llu", (long long)pc,
           (long long)dc, (unsigned long long)(eb - 8));
    expect_verify_ok(d, cmd(d, "verifycache %lld %llu %llu 0 %llu %llu", (long long)dc,
                            (unsigned long long)sd, (unsigned long long)sp,
                            (unsigned long long)eb, (unsigned long long)(eb - 8)));
    /* A registered (not allocated) cache keeps its key after a pull. */
    expect(d, "PULL LLM_SUCCESS", "pullcache cache:1:102:7 %lld 1 -1", (long long)dc);

    proc_xstats_t s = xstats(d);
    assert_int_equal(s.transfers, 5);
    assert_int_equal(s.bytes_req, (uint64_t)nt * (eb + eb + part + eb - 8 + eb));
    expect_transport_used(f, d);
}

static void test_push_blocks_and_cache(void **state)
{
    fx_t *f = *state;
    const uint32_t nt = proc_sanitized() ? 16 : 64;
    const uint64_t nb = proc_sanitized() ? 32 : 64, bs = 32 * KiB, eb = 128 * KiB;
    proc_t *p = start_prompt(f, 1);
    proc_t *d = start_decoder(f, 101);
    uint64_t sp = kvfill_seed(1, 3), spc = kvfill_seed(1, 4);
    uint64_t sd = kvfill_seed(101, 3), sdc = kvfill_seed(101, 4);
    int64_t pb = reg_blocks(p, nt, nb, bs, 0, sp);                 /* P's source */
    int64_t pcache = reg_cache(p, "reg", 8, 3, eb, 0, 0, 0, spc);  /* P's source entries */
    int64_t db = reg_blocks(d, nt, nb, bs, 9, sd);                 /* key blocks:101:9 */
    int64_t dcache = reg_cache(d, "reg", 8, 3, eb, 500, 1, 9, sdc); /* cache:101:500:9 = entry 0 */
    /* D links to P; P pushes over the link it holds (key cluster = D). */
    link_to(d, p);

    kvfill_rng_t rng = rng_for(__func__);
    uint64_t src[64], dst[64], k = nb / 2;
    assert_int_equal(kvfill_rng_pick(&rng, nb, k, src), 0);
    assert_int_equal(kvfill_rng_pick(&rng, nb, k, dst), 0);
    const char *sl = list_str(src, k), *dl = list_str(dst, k);
    expect(p, "PUSH LLM_SUCCESS", "pushblocks blocks:101:9 %lld %s %s", (long long)pb, sl, dl);
    expect_verify_ok(d, cmd(d, "verifyblocks %lld %llu %llu %s %s", (long long)db,
                            (unsigned long long)sd, (unsigned long long)sp, sl, dl));
    expect_verify_ok(p, cmd(p, "verify %lld %llu", (long long)pb, (unsigned long long)sp));

    /* push_cache by CacheKey: P's entry 1 -> D's entry 0 (the key's). */
    expect(p, "PUSH LLM_SUCCESS", "pushcache cache:101:500:9 %lld 1 -1", (long long)pcache);
    expect_verify_ok(d, cmd(d, "verifycache %lld %llu %llu 0 %llu -1", (long long)dcache,
                            (unsigned long long)sdc, (unsigned long long)spc,
                            (unsigned long long)eb));
    /* By id and index, part of the entry: P's entry 2 -> D's entry 2. */
    uint64_t sdc2 = kvfill_seed(101, 5);
    expect(d, "FILL OK", "fill %lld %llu", (long long)dcache, (unsigned long long)sdc2);
    expect(p, "PUSH LLM_SUCCESS", "pushcache idx:101:%lld:2 %lld 2 %llu", (long long)dcache,
           (long long)pcache, (unsigned long long)(eb / 4));
    expect_verify_ok(d, cmd(d, "verifycache %lld %llu %llu 2 %llu %llu", (long long)dcache,
                            (unsigned long long)sdc2, (unsigned long long)spc,
                            (unsigned long long)(2 * eb), (unsigned long long)(eb / 4)));

    proc_xstats_t sx = xstats(p), dx = xstats(d);
    print_xstats("decoder (owner)", &dx);
    assert_int_equal(sx.transfers, 3);
    assert_int_equal(sx.bytes_req, k * nt * bs + 8 * eb + 8 * (eb / 4));
    assert_true(dx.served > 0);
    expect_transport_used(f, p);
}

static void test_layer_ranges(void **state)
{
    fx_t *f = *state;
    const uint64_t nb = 16, bs = 16 * KiB, eb = 64 * KiB;
    proc_t *p = start_prompt(f, 1);
    proc_t *d = start_decoder(f, 101);
    uint64_t sp = kvfill_seed(1, 5), spc = kvfill_seed(1, 6);
    int64_t pc = reg_blocks(p, 10, nb, bs, 7, sp);              /* 5 layers of K, V */
    int64_t pcache = reg_cache(p, "reg", 10, 2, eb, 100, 2, 7, spc);
    int64_t dc = reg_blocks(d, 6, nb, bs, 0, kvfill_seed(101, 0)); /* 3 layers */
    int64_t dcache = reg_cache(d, "reg", 6, 2, eb, 0, 0, 0, kvfill_seed(101, 0));
    link_to(d, p);
    (void)pc;
    (void)pcache;

    static const char *const ranges[] = {
        "2:4:0:2:2", /* src layers 2, 3 -> dst 0, 1 (tensors 4..7 -> 0..3) */
        "2:4:0:2:1", /* one tensor per layer: tensors 2, 3 -> 0, 1 */
        "1:3:1:3:2", /* tensors 2..5 -> 2..5 */
        "4:5:2:3:0", /* 0 means 2: tensors 8, 9 -> 4, 5 */
        "3:6:3:6:1", /* tensors 3..5 -> 3..5 */
    };
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        uint64_t sd = kvfill_seed(101, 10 + i);
        expect(d, "FILL OK", "fill %lld %llu", (long long)dc, (unsigned long long)sd);
        expect(d, "PULL LLM_SUCCESS", "pullblocks blocks:1:7 %lld 3,4,5,15,0 9,2,3,0,15 layers=%s",
               (long long)dc, ranges[i]);
        expect_verify_ok(d, cmd(d, "verifyblocks %lld %llu %llu layers=%s 3,4,5,15,0 9,2,3,0,15",
                                (long long)dc, (unsigned long long)sd, (unsigned long long)sp,
                                ranges[i]));
        sd = kvfill_seed(101, 20 + i);
        expect(d, "FILL OK", "fill %lld %llu", (long long)dcache, (unsigned long long)sd);
        expect(d, "PULL LLM_SUCCESS", "pullcache cache:1:101:7 %lld 0 -1 layers=%s",
               (long long)dcache, ranges[i]);
        expect_verify_ok(d, cmd(d, "verifycache %lld %llu %llu 0 %llu -1 layers=%s",
                                (long long)dcache, (unsigned long long)sd,
                                (unsigned long long)spc, (unsigned long long)eb, ranges[i]));
    }
    /* Every layer of both, with equal tensor counts: a 10-tensor dst. */
    int64_t d10 = reg_blocks(d, 10, nb, bs, 0, kvfill_seed(101, 30));
    expect(d, "PULL LLM_SUCCESS", "pullblocks blocks:1:7 %lld 1 2 layers=-1:-1:-1:-1:2",
           (long long)d10);
    expect_verify_ok(d, cmd(d, "verifyblocks %lld %llu %llu 1 2", (long long)d10,
                            (unsigned long long)kvfill_seed(101, 30), (unsigned long long)sp));
    /* Ranges of different lengths, or past the end of either cache. */
    expect(d, "FILL OK", "fill %lld %llu", (long long)dc, (unsigned long long)kvfill_seed(101, 40));
    expect_failure(d, cmd(d, "pullblocks blocks:1:7 %lld 1 2 layers=0:2:0:3:2", (long long)dc),
                   "PULL", "LLM_PARAM_INVALID", "layer");
    expect_failure(d, cmd(d, "pullblocks blocks:1:7 %lld 1 2 layers=4:6:0:2:2", (long long)dc),
                   "PULL", "LLM_PARAM_INVALID", "layer|tensor");
    expect_verify_ok(d, cmd(d, "verify %lld %llu", (long long)dc,
                            (unsigned long long)kvfill_seed(101, 40)));
    expect_transport_used(f, d);
}

static void test_pull_blocks_from_cache_entry(void **state)
{
    fx_t *f = *state;
    const uint32_t nt = proc_sanitized() ? 8 : 32;
    const uint64_t bs = 16 * KiB, eb = 4 * bs; /* an entry is 4 of D's blocks */
    proc_t *p = start_prompt(f, 1);
    proc_t *d = start_decoder(f, 101);
    uint64_t sp = kvfill_seed(1, 7);
    int64_t pc = reg_cache(p, "reg", nt, 3, eb, 300, 3, 7, sp); /* cache:1:300..302:7 */
    int64_t dc = reg_blocks(d, nt, 32, bs, 0, kvfill_seed(101, 0));
    link_to(d, p);

    uint64_t sd = kvfill_seed(101, 1);
    expect(d, "FILL OK", "fill %lld %llu", (long long)dc, (unsigned long long)sd);
    expect(d, "PULL LLM_SUCCESS", "pullblocks cache:1:301:7 %lld - 7,3,12,9", (long long)dc);
    expect_verify_ok(d, cmd(d, "verifyblocks %lld %llu %llu srcoff=%llu - 7,3,12,9",
                            (long long)dc, (unsigned long long)sd, (unsigned long long)sp,
                            (unsigned long long)eb));

    sd = kvfill_seed(101, 2);
    expect(d, "FILL OK", "fill %lld %llu", (long long)dc, (unsigned long long)sd);
    expect(d, "PULL LLM_SUCCESS", "pullblocks idx:1:%lld:2 %lld - 20-23", (long long)pc,
           (long long)dc);
    expect_verify_ok(d, cmd(d, "verifyblocks %lld %llu %llu srcoff=%llu - 20-23", (long long)dc,
                            (unsigned long long)sd, (unsigned long long)sp,
                            (unsigned long long)(2 * eb)));
    /* Fewer dst blocks than the entry holds: its first blocks. */
    sd = kvfill_seed(101, 3);
    expect(d, "FILL OK", "fill %lld %llu", (long long)dc, (unsigned long long)sd);
    expect(d, "PULL LLM_SUCCESS", "pullblocks cache:1:300:7 %lld - 31,0", (long long)dc);
    expect_verify_ok(d, cmd(d, "verifyblocks %lld %llu %llu srcoff=0 - 31,0", (long long)dc,
                            (unsigned long long)sd, (unsigned long long)sp));
    /* More dst blocks than the entry holds: refused, nothing moved. */
    expect_failure(d, cmd(d, "pullblocks cache:1:300:7 %lld - 0-4", (long long)dc), "PULL",
                   "LLM_PARAM_INVALID", NULL);
    expect_verify_ok(d, cmd(d, "verifyblocks %lld %llu %llu srcoff=0 - 31,0", (long long)dc,
                            (unsigned long long)sd, (unsigned long long)sp));
    expect_transport_used(f, d);
}

/* ------------------------------------------------------------------ */
/* Refusals by the owner                                               */
/* ------------------------------------------------------------------ */

typedef struct refusal_env {
    proc_t *p, *d;
    int64_t db;       /* D blocks: 8 x 16 x 16 KiB */
    uint64_t db_seed;
    int64_t dcache;   /* D cache: 8 x 2 x 64 KiB */
    uint64_t dcache_seed;
} refusal_env_t;

/* After a refusal: D's memory untouched, and a good pull right after. */
static void after_refusal(refusal_env_t *r, uint64_t sp)
{
    proc_t *d = r->d;
    expect_verify_ok(d, cmd(d, "verify %lld %llu", (long long)r->db,
                            (unsigned long long)r->db_seed));
    expect_verify_ok(d, cmd(d, "verify %lld %llu", (long long)r->dcache,
                            (unsigned long long)r->dcache_seed));
    expect(d, "CHECK LLM_SUCCESS", "check 1");
    expect(d, "PULL LLM_SUCCESS", "pullblocks blocks:1:7 %lld 15,0 1,14", (long long)r->db);
    expect_verify_ok(d, cmd(d, "verifyblocks %lld %llu %llu 15,0 1,14", (long long)r->db,
                            (unsigned long long)r->db_seed, (unsigned long long)sp));
    r->db_seed++;
    expect(d, "FILL OK", "fill %lld %llu", (long long)r->db, (unsigned long long)r->db_seed);
}

static void test_refusals_by_owner(void **state)
{
    fx_t *f = *state;
    const uint64_t bs = 16 * KiB, eb = 64 * KiB;
    proc_t *p = start_prompt(f, 1);
    proc_t *d = start_decoder(f, 101);
    uint64_t sp = kvfill_seed(1, 8), sa = kvfill_seed(1, 9);
    reg_blocks(p, 8, 16, bs, 7, sp);                               /* blocks:1:7 */
    int64_t p32 = reg_blocks(p, 8, 16, 2 * bs, 8, sp);             /* blocks:1:8, 32 KiB blocks */
    int64_t pc = reg_cache(p, "reg", 8, 2, eb, 200, 2, 7, sp);     /* cache:1:200..201:7 */
    int64_t pa = reg_cache(p, "alloc", 8, 1, eb, 400, 1, 7, sa);   /* cache:1:400:7, allocated */
    refusal_env_t r = {.p = p, .d = d, .db_seed = kvfill_seed(101, 1),
                       .dcache_seed = kvfill_seed(101, 2)};
    r.db = reg_blocks(d, 8, 16, bs, 0, r.db_seed);
    r.dcache = reg_cache(d, "reg", 8, 2, eb, 0, 0, 0, r.dcache_seed);
    int64_t dsmall = reg_cache(d, "reg", 8, 2, eb / 2, 0, 0, 0, kvfill_seed(101, 3));
    int64_t dbig = reg_cache(d, "reg", 8, 2, 2 * eb, 0, 0, 0, kvfill_seed(101, 4));
    link_to(d, p);
    (void)p32;
    unsigned refusals = 0;

    /* A source block index past the end of P's 16 blocks. */
    expect_failure(d, cmd(d, "pullblocks blocks:1:7 %lld 3,16 0,1", (long long)r.db), "PULL",
                   "LLM_PARAM_INVALID", "block|16|range|past|end");
    refusals++;
    after_refusal(&r, sp);
    expect_failure(d, cmd(d, "pullblocks blocks:1:7 %lld 0-3,1000000 4-8", (long long)r.db),
                   "PULL", "LLM_PARAM_INVALID", "block|range|past|end");
    refusals++;
    after_refusal(&r, sp);

    /* A size past P's entry (64 KiB per tensor), within D's (128 KiB). */
    expect_failure(d, cmd(d, "pullcache cache:1:200:7 %lld 0 %llu", (long long)dbig,
                          (unsigned long long)(eb + 8)),
                   "PULL", "LLM_PARAM_INVALID", "size|entry|past|range");
    refusals++;
    expect_verify_ok(d, cmd(d, "verify %lld %llu", (long long)dbig,
                            (unsigned long long)kvfill_seed(101, 4)));
    after_refusal(&r, sp);

    /* Whole entries of different sizes (size -1): 64 KiB vs 32 KiB. */
    expect_failure(d, cmd(d, "pullcache cache:1:200:7 %lld 0 -1", (long long)dsmall), "PULL",
                   "LLM_PARAM_INVALID", "size|entry");
    refusals++;
    expect_verify_ok(d, cmd(d, "verify %lld %llu", (long long)dsmall,
                            (unsigned long long)kvfill_seed(101, 3)));
    after_refusal(&r, sp);

    /* Unknown keys and ids. */
    expect_failure(d, cmd(d, "pullblocks blocks:1:99 %lld 0 0", (long long)r.db), "PULL",
                   "LLM_KV_CACHE_NOT_EXIST", NULL);
    refusals++;
    after_refusal(&r, sp);
    expect_failure(d, cmd(d, "pullcache cache:1:999:7 %lld 0 -1", (long long)r.dcache), "PULL",
                   "LLM_KV_CACHE_NOT_EXIST", NULL);
    refusals++;
    after_refusal(&r, sp);
    expect_failure(d, cmd(d, "pullcache idx:1:%lld:0 %lld 0 -1", (long long)(pc + 1000),
                          (long long)r.dcache),
                   "PULL", "LLM_KV_CACHE_NOT_EXIST", NULL);
    refusals++;
    after_refusal(&r, sp);
    /* A batch index past the end of P's 2 entries. */
    expect_failure(d, cmd(d, "pullcache idx:1:%lld:2 %lld 0 -1", (long long)pc,
                          (long long)r.dcache),
                   "PULL", "LLM_PARAM_INVALID", "batch|index|entry|range");
    refusals++;
    after_refusal(&r, sp);

    /* Block sizes differ: D's 16 KiB blocks, P's 32 KiB ones. */
    expect_failure(d, cmd(d, "pullblocks blocks:1:8 %lld 0 0", (long long)r.db), "PULL",
                   "LLM_PARAM_INVALID", "size|block");
    refusals++;
    after_refusal(&r, sp);

    /* An allocated cache's CacheKey is dropped by its first pull. */
    uint64_t before = r.dcache_seed;
    expect(d, "PULL LLM_SUCCESS", "pullcache cache:1:400:7 %lld 1 -1", (long long)r.dcache);
    expect_verify_ok(d, cmd(d, "verifycache %lld %llu %llu 1 0 -1", (long long)r.dcache,
                            (unsigned long long)before, (unsigned long long)sa));
    expect_failure(d, cmd(d, "pullcache cache:1:400:7 %lld 0 -1", (long long)r.dcache), "PULL",
                   "LLM_KV_CACHE_NOT_EXIST", NULL);
    refusals++;
    expect_verify_ok(d, cmd(d, "verifycache %lld %llu %llu 1 0 -1", (long long)r.dcache,
                            (unsigned long long)before, (unsigned long long)sa));
    /* ... while its id still holds it on P: by id and index it is there. */
    expect(d, "FILL OK", "fill %lld %llu", (long long)r.dcache, (unsigned long long)before);
    expect(d, "PULL LLM_SUCCESS", "pullcache idx:1:%lld:0 %lld 0 -1", (long long)pa,
           (long long)r.dcache);
    expect_verify_ok(d, cmd(d, "verifycache %lld %llu %llu 0 0 -1", (long long)r.dcache,
                            (unsigned long long)before, (unsigned long long)sa));
    expect(d, "FILL OK", "fill %lld %llu", (long long)r.dcache, (unsigned long long)before);
    expect(p, "DEALLOC LLM_SUCCESS", "dealloc %lld", (long long)pa);
    expect_failure(d, cmd(d, "pullcache idx:1:%lld:0 %lld 0 -1", (long long)pa,
                          (long long)r.dcache),
                   "PULL", "LLM_KV_CACHE_NOT_EXIST", NULL);
    refusals++;
    after_refusal(&r, sp);

    /* A removed key. */
    expect(p, "RMKEY LLM_SUCCESS", "rmkey cache:1:201:7");
    expect_failure(d, cmd(d, "pullcache cache:1:201:7 %lld 0 -1", (long long)r.dcache), "PULL",
                   "LLM_KV_CACHE_NOT_EXIST", NULL);
    refusals++;
    after_refusal(&r, sp);
    expect_failure(p, cmd(p, "rmkey cache:1:201:7"), "RMKEY", "LLM_KV_CACHE_NOT_EXIST", NULL);

    proc_xstats_t px = xstats(p), dx = xstats(d);
    print_xstats("prompt", &px);
    print_xstats("decoder", &dx);
    assert_int_equal(px.refused, refusals);
    assert_int_equal(dx.failed, refusals);
    /* A refused request is no timeout and breaks nothing. */
    assert_int_equal(dx.timed_out, 0);
    expect(d, "CHECK LLM_SUCCESS", "check 1");
}

/* ------------------------------------------------------------------ */
/* Several decoders, several threads                                   */
/* ------------------------------------------------------------------ */

static void test_four_decoders_at_once(void **state)
{
    fx_t *f = *state;
    const uint32_t nt = proc_sanitized() ? 8 : 32;
    const uint64_t nb = 64, bs = proc_sanitized() ? 16 * KiB : 32 * KiB;
    proc_t *p = start_prompt(f, 1);
    uint64_t sp = kvfill_seed(1, 10);
    reg_blocks(p, nt, nb, bs, 7, sp);
    proc_t *d[4];
    int64_t dc[4];
    const char *sl[4], *dl[4];
    kvfill_rng_t rng = rng_for(__func__);
    for (int i = 0; i < 4; i++) {
        d[i] = start_decoder(f, 101 + (uint64_t)i);
        dc[i] = reg_blocks(d[i], nt, nb, bs, 0, kvfill_seed(101 + (uint64_t)i, 1));
        link_to(d[i], p);
        uint64_t src[64], dst[64];
        assert_int_equal(kvfill_rng_pick(&rng, nb, nb / 2, src), 0);
        assert_int_equal(kvfill_rng_pick(&rng, nb, nb / 2, dst), 0);
        sl[i] = list_str(src, nb / 2);
        dl[i] = list_str(dst, nb / 2);
    }
    for (int round = 0; round < 2; round++) {
        /* Every pull goes out before any reply is read. */
        for (int i = 0; i < 4; i++)
            if (proc_send(d[i], reply_ms(), "pullblocks blocks:1:7 %lld %s %s", (long long)dc[i],
                          sl[i], dl[i]) != 0)
                fail_msg("%s", proc_last_error());
        for (int i = 0; i < 4; i++) {
            char line[PROC_LINE_MAX];
            if (proc_read_line(d[i], line, sizeof line, reply_ms()) != 0)
                fail_msg("%s", proc_last_error());
            if (strcmp(line, "PULL LLM_SUCCESS") != 0)
                fail_msg("%s: round %d: %s", d[i]->label, round, line);
        }
        for (int i = 0; i < 4; i++)
            expect_verify_ok(d[i], cmd(d[i], "verifyblocks %lld %llu %llu %s %s",
                                       (long long)dc[i],
                                       (unsigned long long)kvfill_seed(101 + (uint64_t)i, 1),
                                       (unsigned long long)sp, sl[i], dl[i]));
    }
    proc_xstats_t px = xstats(p);
    print_xstats("prompt", &px);
    assert_int_equal(px.refused, 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(xstats(d[i]).transfers, 2);
}

/* Parses "LOOP ok=.. fail=.. maxms=.. per=a,b,.. [STATUS=n...] [| msg]";
 * rest is what follows per=. */
#define LOOP_MAX_THREADS 64
typedef struct loop_result {
    unsigned long long ok, fail;
    long long maxms;
    unsigned long long per[LOOP_MAX_THREADS]; /* successful calls per thread */
    unsigned nthreads;
    char rest[PROC_LINE_MAX];
} loop_result_t;

static loop_result_t parse_loop(proc_t *p, const char *line)
{
    loop_result_t r;
    memset(&r, 0, sizeof r);
    int used = 0;
    if (sscanf(line, "LOOP ok=%llu fail=%llu maxms=%lld per=%n", &r.ok, &r.fail, &r.maxms,
               &used) != 3 || used == 0)
        fail_msg("%s: expected a LOOP line, got '%s'", p->label, line);
    const char *c = line + used;
    for (;;) {
        char *end;
        unsigned long long v = strtoull(c, &end, 10);
        if (end == c || r.nthreads == LOOP_MAX_THREADS)
            fail_msg("%s: bad per= in '%s'", p->label, line);
        r.per[r.nthreads++] = v;
        c = end;
        if (*c != ',')
            break;
        c++;
    }
    snprintf(r.rest, sizeof r.rest, "%s", c);
    return r;
}

static void test_eight_threads_one_decoder(void **state)
{
    fx_t *f = *state;
    const uint32_t nt = proc_sanitized() ? 8 : 16;
    const uint64_t bs = 16 * KiB, per = 16;
    const unsigned threads = 8, count = proc_sanitized() ? 4 : 10;
    proc_t *p = start_prompt(f, 1);
    proc_t *d = start_decoder(f, 101);
    uint64_t sp = kvfill_seed(1, 11), sd = kvfill_seed(101, 1);
    reg_blocks(p, nt, 64, bs, 7, sp);
    int64_t dc = reg_blocks(d, nt, threads * per + 8, bs, 0, sd);
    link_to(d, p);
    kvfill_rng_t rng = rng_for(__func__);
    uint64_t src[16], dst[16];
    assert_int_equal(kvfill_rng_pick(&rng, 64, per, src), 0);
    for (uint64_t i = 0; i < per; i++)
        dst[i] = (per - 1 - i); /* reversed: no runs merge */
    const char *sl = list_str(src, per);
    const char *got = cmd(d, "pullloop %u %u dshift=%llu pullblocks blocks:1:7 %lld %s %s",
                          threads, count, (unsigned long long)per, (long long)dc, sl,
                          list_str(dst, per));
    loop_result_t r = parse_loop(d, got);
    print_message("  %s\n", got);
    if (r.ok != (unsigned long long)threads * count || r.fail != 0)
        fail_msg("%s: %s", d->label, got);
    /* Thread t wrote dst + t * per. */
    char pairs[PROC_CMD_MAX / 2];
    size_t off = 0;
    for (unsigned t = 0; t < threads; t++) {
        uint64_t sh[16];
        for (uint64_t i = 0; i < per; i++)
            sh[i] = dst[i] + t * per;
        off += (size_t)snprintf(pairs + off, sizeof pairs - off, " %s %s", sl,
                                list_str(sh, per));
    }
    expect_verify_ok(d, cmd(d, "verifyblocks %lld %llu %llu%s", (long long)dc,
                            (unsigned long long)sd, (unsigned long long)sp, pairs));
    proc_xstats_t dx = xstats(d);
    assert_int_equal(dx.transfers, (uint64_t)threads * count);
    assert_int_equal(dx.bytes_req, (uint64_t)threads * count * per * nt * bs);
    expect_transport_used(f, d);
}

static void test_unregister_while_pulling(void **state)
{
    fx_t *f = *state;
    const uint64_t bs = 16 * KiB;
    proc_t *p = node_full(f, "prompt", 1, NULL, 3000, NULL, NULL);
    proc_t *d = start_decoder(f, 101);
    uint64_t sp = kvfill_seed(1, 12), sd = kvfill_seed(101, 1);
    int64_t pc = reg_blocks(p, 8, 32, bs, 7, sp);
    int64_t dc = reg_blocks(d, 8, 32, bs, 0, sd);
    link_to(d, p);

    /* Two threads pull in a loop until their first failure (at most 15 s),
     * into disjoint blocks: thread 0 into 0-7, thread 1 into 8-15. */
    if (proc_send(d, reply_ms(), "pullloop 2 1000000 for=15000 dshift=8 pullblocks blocks:1:7 "
                  "%lld 16-23 0-7", (long long)dc) != 0)
        fail_msg("%s", proc_last_error());
    /* Let some pulls complete first. */
    int64_t t0 = proc_now_ms();
    while (xstats(p).served < 10 && proc_now_ms() - t0 < 5000)
        proc_sleep_ms(5);
    const char *u;
    int attempts = 0;
    for (;;) {
        attempts++;
        u = cmd(p, "unreg %lld", (long long)pc);
        if (!strcmp(u, "UNREG LLM_SUCCESS"))
            break;
        if (strncmp(u, "UNREG LLMLINK_CACHE_IN_USE | ", 29) != 0)
            fail_msg("%s: unreg answered '%s' (SUCCESS or CACHE_IN_USE expected)", p->label, u);
        if (attempts > 5)
            fail_msg("%s: cache still in use after %d unregister attempts", p->label, attempts);
    }
    print_message("  unregistered after %d attempt(s)\n", attempts);
    char line[PROC_LINE_MAX];
    if (proc_read_line(d, line, sizeof line, reply_ms()) != 0)
        fail_msg("%s: %s", d->label, proc_last_error());
    loop_result_t r = parse_loop(d, line);
    print_message("  %s\n", line);
    if (r.fail != 2 || strncmp(r.rest, " LLM_KV_CACHE_NOT_EXIST=2", 25) != 0)
        fail_msg("%s: both threads should end with KV_CACHE_NOT_EXIST: %s", d->label, line);
    expect_failure(d, cmd(d, "pullblocks blocks:1:7 %lld 0 0", (long long)dc), "PULL",
                   "LLM_KV_CACHE_NOT_EXIST", NULL);
    /* The pulls that succeeded wrote whole, correct blocks; a thread whose
     * first pull was already refused left its blocks untouched. */
    assert_int_equal(r.nthreads, 2);
    print_message("  successful pulls per thread: %llu, %llu\n", r.per[0], r.per[1]);
    const char *pairs = r.per[0] && r.per[1] ? " 16-23 0-7 16-23 8-15"
                        : r.per[0]           ? " 16-23 0-7"
                        : r.per[1]           ? " 16-23 8-15"
                                             : "";
    if (*pairs)
        expect_verify_ok(d, cmd(d, "verifyblocks %lld %llu %llu%s", (long long)dc,
                                (unsigned long long)sd, (unsigned long long)sp, pairs));
    else
        expect_verify_ok(d, cmd(d, "verify %lld %llu", (long long)dc, (unsigned long long)sd));
    /* The key is free again: a new cache (same pattern) may take it. */
    reg_blocks(p, 8, 32, bs, 7, sp);
    expect(d, "PULL LLM_SUCCESS", "pullblocks blocks:1:7 %lld 5 20", (long long)dc);
    expect_verify_ok(d, cmd(d, "verifyblocks %lld %llu %llu%s 5 20", (long long)dc,
                            (unsigned long long)sd, (unsigned long long)sp, pairs));
}

/* ------------------------------------------------------------------ */
/* Failures mid-pull                                                   */
/* ------------------------------------------------------------------ */

/* The big shape: 512 MiB per side in 4 MiB blocks (64 MiB sanitized). */
typedef struct big_shape {
    uint32_t nt;
    uint64_t nb, bs;
} big_shape_t;

static big_shape_t big_shape(void)
{
    big_shape_t s = {32, 4, 4 * MiB};
    if (proc_sanitized())
        s.nb = 1, s.nt = 16;
#ifdef LLK_RDMA_MATRIX
    /* soft-RoCE under TCG moves some MB/s: 8 MiB pulls, each within the
     * cases' 1.5..3 s waits, still many per second to interrupt */
    s.nb = 1, s.nt = 8, s.bs = 1 * MiB;
#endif
    return s;
}

/* Starts a pull loop on d (one thread) and returns once p served one. */
static void start_big_loop(proc_t *d, proc_t *p, int64_t dc, const big_shape_t *s)
{
    if (proc_send(d, reply_ms(), "pullloop 1 100000 for=60000 pullblocks blocks:%llu:7 %lld "
                  "0-%llu 0-%llu", (unsigned long long)p->cluster_id, (long long)dc,
                  (unsigned long long)(s->nb - 1), (unsigned long long)(s->nb - 1)) != 0)
        fail_msg("%s", proc_last_error());
    int64_t t0 = proc_now_ms();
    while (xstats(p).served < 1) {
        if (proc_now_ms() - t0 > 3000) {
            print_message("  (no request served after 3 s; interrupting anyway)\n");
            break;
        }
        proc_sleep_ms(5);
    }
    proc_sleep_ms(30); /* into the next pull */
}

/* A failure mid-pull: P (prompt 1, a blocks cache with key blocks:1:7 and
 * pattern sp) and D (decoder 101, a cache of the same shape, id dc),
 * linked, D pulling the whole cache in a loop (start_big_loop). */
typedef struct mid_pull {
    big_shape_t s;
    proc_t *p, *d;
    uint64_t sp;
    int64_t pc, dc;
} mid_pull_t;

static mid_pull_t mid_pull_start(fx_t *f, int wait, const char *const *opts)
{
    mid_pull_t m;
    m.s = big_shape();
    m.p = node_full(f, "prompt", 1, NULL, wait, opts, NULL);
    m.d = node_full(f, "decoder", 101, NULL, wait, opts, NULL);
    m.sp = kvfill_seed(1, 1);
    m.pc = reg_blocks(m.p, m.s.nt, m.s.nb, m.s.bs, 7, m.sp);
    m.dc = reg_blocks(m.d, m.s.nt, m.s.nb, m.s.bs, 0, kvfill_seed(101, 1));
    link_to(m.d, m.p);
    start_big_loop(m.d, m.p, m.dc, &m.s);
    return m;
}

/* Sends sig (named signame) to P and waits (bounded: wait and then some)
 * for the answer of D's loop, into line; *after (when not NULL): the ms
 * since the signal. */
static loop_result_t mid_pull_signal(mid_pull_t *m, int sig, const char *signame, int wait,
                                     char *line, size_t len, int64_t *after)
{
    int64_t t0 = proc_now_ms();
    assert_int_equal(proc_kill(m->p, sig), 0);
    if (proc_read_line(m->d, line, len, wait + (proc_sanitized() ? 30000 : 5000)) != 0)
        fail_msg("%s: no answer after %s of the prefill: %s", m->d->label, signame,
                 proc_last_error());
    int64_t ms = proc_now_ms() - t0;
    loop_result_t r = parse_loop(m->d, line);
    print_message("  %s (answered %lld ms after %s)\n", line, (long long)ms, signame);
    if (after)
        *after = ms;
    return r;
}

static void test_kill_prompt_mid_pull(void **state)
{
    fx_t *f = *state;
    const int wait = 3000;
    mid_pull_t m = mid_pull_start(f, wait, NULL);
    int64_t after;
    char line[PROC_LINE_MAX];
    loop_result_t r = mid_pull_signal(&m, SIGKILL, "SIGKILL", wait, line, sizeof line, &after);
    if (r.fail != 1 || strstr(r.rest, "LLM_SUCCESS"))
        fail_msg("%s: the pull during SIGKILL should fail: %s", m.d->label, line);
    assert_true(after <= wait + (proc_sanitized() ? 20000 : 2000));
    assert_int_equal(proc_wait(m.p, 10000), 0);
    wait_check(m.d, 1, "LLM_NOT_YET_LINK", 10000);
    expect_failure(m.d, cmd(m.d, "pullblocks blocks:1:7 %lld 0 0", (long long)m.dc), "PULL",
                   "LLM_NOT_YET_LINK", NULL);

    /* D is still usable: a fresh prefill, a good pull. */
    proc_t *p2 = node_full(f, "prompt", 2, NULL, wait, NULL, NULL);
    uint64_t sp2 = kvfill_seed(2, 1), sd = kvfill_seed(101, 2);
    reg_blocks(p2, m.s.nt, 1, m.s.bs, 7, sp2);
    expect(m.d, "FILL OK", "fill %lld %llu", (long long)m.dc, (unsigned long long)sd);
    link_to(m.d, p2);
    expect(m.d, "PULL LLM_SUCCESS", "pullblocks blocks:2:7 %lld 0 %llu", (long long)m.dc,
           (unsigned long long)(m.s.nb - 1));
    expect_verify_ok(m.d, cmd(m.d, "verifyblocks %lld %llu %llu 0 %llu", (long long)m.dc,
                              (unsigned long long)sd, (unsigned long long)sp2,
                              (unsigned long long)(m.s.nb - 1)));
    proc_xstats_t dx = xstats(m.d);
    print_xstats("decoder", &dx);
    assert_true(dx.failed >= 1);
}

static void test_kill_decoder_mid_pull(void **state)
{
    fx_t *f = *state;
    const int wait = 3000;
    mid_pull_t m = mid_pull_start(f, wait, NULL);
    assert_int_equal(proc_kill(m.d, SIGKILL), 0);
    assert_int_equal(proc_wait(m.d, 10000), 0);
    /* P survives, answers, notices. */
    proc_xstats_t px = xstats(m.p);
    print_xstats("prompt after the decoder died", &px);
    wait_check(m.p, 101, "LLM_NOT_YET_LINK", 10000);
    expect(m.p, "PONG", "ping");

    proc_t *d2 = node_full(f, "decoder", 102, NULL, wait, NULL, NULL);
    uint64_t sd2 = kvfill_seed(102, 1);
    int64_t dc2 = reg_blocks(d2, m.s.nt, 2, m.s.bs, 0, sd2);
    link_to(d2, m.p);
    expect(d2, "PULL LLM_SUCCESS", "pullblocks blocks:1:7 %lld %llu 1", (long long)dc2,
           (unsigned long long)(m.s.nb - 1));
    expect_verify_ok(d2, cmd(d2, "verifyblocks %lld %llu %llu %llu 1", (long long)dc2,
                             (unsigned long long)sd2, (unsigned long long)m.sp,
                             (unsigned long long)(m.s.nb - 1)));
    expect_verify_ok(m.p, cmd(m.p, "verify %lld %llu", (long long)m.pc, (unsigned long long)m.sp));
}

static void test_stop_prompt_mid_pull(void **state)
{
    fx_t *f = *state;
    /* Well below the liveness interval, so that the transfer timeout is
     * what fires, not the liveness check. */
    const int wait = proc_sanitized() ? 3000 : 1500;
    static const char *const slow_liveness[] = {"llmlink.LivenessIntervalMs=20000", NULL};
    mid_pull_t m = mid_pull_start(f, wait, slow_liveness);
    char line[PROC_LINE_MAX];
    loop_result_t r = mid_pull_signal(&m, SIGSTOP, "SIGSTOP", wait, line, sizeof line, NULL);
    if (r.fail != 1 || strncmp(r.rest, " LLM_WAIT_PROCESS_TIMEOUT=1", 27) != 0)
        fail_msg("%s: the pull should time out: %s", m.d->label, line);
    assert_true(r.maxms <= wait + (proc_sanitized() ? 20000 : 1000));
    /* The link is unusable until linked again. */
    expect(m.d, "CHECK LLM_NOT_YET_LINK", "check 1");
    expect_failure(m.d, cmd(m.d, "pullblocks blocks:1:7 %lld 0 0", (long long)m.dc), "PULL",
                   "LLM_NOT_YET_LINK", NULL);
    proc_xstats_t dx = xstats(m.d);
    print_xstats("decoder", &dx);
    assert_true(dx.timed_out >= 1);

    assert_int_equal(proc_kill(m.p, SIGCONT), 0);
    /* The prefill may need a moment to see the old link close. */
    int64_t t0 = proc_now_ms();
    for (int attempt = 1;; attempt++) {
        const char *got = cmd(m.d, "link 5000 %s", ep(m.p));
        if (!strcmp(got, "LINK LLM_SUCCESS LLM_SUCCESS")) {
            print_message("  relinked after %d attempt(s), %lld ms\n", attempt,
                          (long long)(proc_now_ms() - t0));
            break;
        }
        if (proc_now_ms() - t0 > 10000)
            fail_msg("%s: relink after SIGCONT: %s", m.d->label, got);
        proc_sleep_ms(100);
    }
    uint64_t sd = kvfill_seed(101, 2);
    expect(m.d, "FILL OK", "fill %lld %llu", (long long)m.dc, (unsigned long long)sd);
    expect(m.d, "PULL LLM_SUCCESS", "pullblocks blocks:1:7 %lld 0-%llu 0-%llu", (long long)m.dc,
           (unsigned long long)(m.s.nb - 1), (unsigned long long)(m.s.nb - 1));
    expect_verify_ok(m.d, cmd(m.d, "verifyblocks %lld %llu %llu 0-%llu 0-%llu", (long long)m.dc,
                              (unsigned long long)sd, (unsigned long long)m.sp,
                              (unsigned long long)(m.s.nb - 1), (unsigned long long)(m.s.nb - 1)));
}

/* ------------------------------------------------------------------ */
/* Same host: shm                                                      */
/* ------------------------------------------------------------------ */

static bool skip_unless_root(void)
{
    if (geteuid() == 0)
        return false;
    print_message("skipped: needs root (a root prefill and a decoder of uid 65534)\n");
    return true;
}

/* P (prompt 1, root) and D (decoder 101, uid 65534: process_vm_* on P is
 * refused with EPERM), llmlink.Transport=transport on both, each with a
 * blocks cache of 16 x 32 blocks of 16 KiB (P's: key blocks:1:7, pattern
 * sp; D's: pattern sd), linked. Returns D's cache id. */
static int64_t start_decoder_as_nobody(fx_t *f, const char *transport, uint64_t sp, uint64_t sd,
                                       proc_t **d)
{
    static const char *const nobody[] = {"--uid", "65534", NULL};
    proc_t *p = node_full(f, "prompt", 1, transport, 0, NULL, NULL);
    *d = node_full(f, "decoder", 101, transport, 0, NULL, nobody);
    reg_blocks(p, 16, 32, 16 * KiB, 7, sp);
    int64_t dc = reg_blocks(*d, 16, 32, 16 * KiB, 0, sd);
    link_to(*d, p);
    return dc;
}

static void test_shm_eperm_falls_back_to_tcp(void **state)
{
    fx_t *f = *state;
    if (skip_unless_root())
        skip();
    proc_t *d;
    uint64_t sp = kvfill_seed(1, 1), sd = kvfill_seed(101, 1);
    int64_t dc = start_decoder_as_nobody(f, "auto", sp, sd, &d);
    for (int i = 0; i < 2; i++) {
        expect(d, "PULL LLM_SUCCESS", "pullblocks blocks:1:7 %lld 0-7,20 %s", (long long)dc,
               i ? "9-16,31" : "0-7,30");
        expect_verify_ok(d, cmd(d, "verifyblocks %lld %llu %llu 0-7,20 %s", (long long)dc,
                                (unsigned long long)(i ? kvfill_seed(101, 2) : sd),
                                (unsigned long long)sp, i ? "9-16,31" : "0-7,30"));
        expect(d, "FILL OK", "fill %lld %llu", (long long)dc,
               (unsigned long long)kvfill_seed(101, 2));
    }
    proc_xstats_t dx = xstats(d);
    print_xstats("decoder (uid 65534)", &dx);
    assert_true(dx.shm_fallbacks > 0);
    assert_true(dx.tcp > 0);
    assert_int_equal(dx.transfers, 2);
}

static void test_shm_forced_eperm_fails(void **state)
{
    fx_t *f = *state;
    if (skip_unless_root())
        skip();
    proc_t *d;
    uint64_t sd = kvfill_seed(101, 1);
    int64_t dc = start_decoder_as_nobody(f, "shm", kvfill_seed(1, 1), sd, &d);
    const char *got = cmd(d, "pullblocks blocks:1:7 %lld 0-7 0-7", (long long)dc);
    const char *st = expect_not_success(d, got, "PULL");
    print_message("  forced shm as uid 65534: %s\n", got);
    const char *msg = strstr(got, " | ");
    if (!msg || !contains_ci(msg, "process_vm"))
        fail_msg("%s: %s: the message should name process_vm_readv: %s", d->label, st, got);
    /* EPERM moves nothing. */
    expect_verify_ok(d, cmd(d, "verify %lld %llu", (long long)dc, (unsigned long long)sd));
    proc_xstats_t dx = xstats(d);
    print_xstats("decoder (uid 65534, shm forced)", &dx);
    assert_int_equal(dx.transfers, 0);
    assert_true(dx.failed >= 1);
}

/* ------------------------------------------------------------------ */

#define ALL3(fn) \
    { #fn "/tcp", fn, fx_setup, fx_teardown, (void *)"tcp" }, \
    { #fn "/shm", fn, fx_setup, fx_teardown, (void *)"shm" }, \
    { #fn "/auto", fn, fx_setup, fx_teardown, (void *)"auto" }

#define TCP_SHM(fn) \
    { #fn "/tcp", fn, fx_setup, fx_teardown, (void *)"tcp" }, \
    { #fn "/shm", fn, fx_setup, fx_teardown, (void *)"shm" }

#ifndef LLK_RDMA_MATRIX
int main(void)
{
    const struct CMUnitTest tests[] = {
        ALL3(test_pull_blocks_random_maps),
        ALL3(test_pull_cache_whole_and_partial),
        ALL3(test_push_blocks_and_cache),
        ALL3(test_layer_ranges),
        ALL3(test_pull_blocks_from_cache_entry),
        ALL3(test_refusals_by_owner),
        TCP_SHM(test_four_decoders_at_once),
        TCP_SHM(test_eight_threads_one_decoder),
        TCP_SHM(test_unregister_while_pulling),
        TCP_SHM(test_kill_prompt_mid_pull),
        TCP_SHM(test_kill_decoder_mid_pull),
        ALL3(test_stop_prompt_mid_pull),
        {"test_shm_eperm_falls_back_to_tcp/auto", test_shm_eperm_falls_back_to_tcp, fx_setup,
         fx_teardown, (void *)"auto"},
        {"test_shm_forced_eperm_fails/shm", test_shm_forced_eperm_fails, fx_setup, fx_teardown,
         (void *)"shm"},
    };
    return cmocka_run_group_tests_name("xfer_multiproc", tests, NULL, NULL);
}
#endif /* LLK_RDMA_MATRIX */

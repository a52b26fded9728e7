/*
 * bench_xfer.c - how fast llmlink moves KV cache blocks between a prefill
 * (PROMPT) and a decode (DECODER) process, and what a transfer costs in
 * memory.
 *
 * P runs in a separate process: for every measured cell a fork()ed child
 * creates one PROMPT engine listening on 127.0.0.1:0, registers a blocks
 * cache (8 tensors, filled with a pattern), reports its port on a pipe,
 * then answers line requests on another pipe until told to quit:
 *     "rss"            -> "rss <VmRSS in KiB>"
 *     "xstats"         -> "xstats <llmlink_get_xfer_stats fields>"
 *     "verify SEED M"  -> "ok" or "bad <where>": checks that its cache
 *                         holds what D pushed (pattern SEED, block map M:
 *                         's' scattered, 'c' contiguous)
 *     "quit"           -> unregisters, destroys its engine, "bye", exit 0
 * D (this process) creates a DECODER engine, registers a cache of the
 * same geometry, links, and moves the whole cache:
 *   a  pull: llmlink_pull_blocks of every block of P's cache into D's
 *      (source blocks 0..n-1 -> destination blocks scattered, so that no
 *      two blocks merge into one run), tcp and shm, 16 KiB .. 4 MiB blocks
 *   b  push: llmlink_push_blocks of every block of D's cache into P's
 *      (push is symmetric: D's blocks go into P's cache), same cells
 *   c  pull at 256 KiB over tcp with llmlink.StreamsPerLink 1, 2, 4
 *   d  VmRSS of both processes before and after moving 1 GiB each way
 *   e  pull and push over RDMA (llmlink.Transport=rdma) on $LLMLINK_RDMA_IP0,
 *      64 KiB, 256 KiB and 1 MiB blocks on one rail, with work requests per
 *      second; 256 KiB blocks on two rails when $LLMLINK_RDMA_IP1 is set too:
 *      only with --only e or when LLMLINK_RDMA_IP0 is set (the soft-RoCE VM:
 *      ci/rdma-vm.sh --bench)
 *   r  ratios: shm / tcp, 16 KiB / 1 MiB, and (when run.sh measured them)
 *      tcp pull / iperf3 single stream and / ucx_perftest ucp_get
 * The first transfer of every cell is checked by content (a pattern that
 * depends on tensor, block and offset), so that no figure is reported for
 * wrong bytes; the engine's transfer counters confirm which transport ran.
 *
 * It measures and prints; it asserts no speed. The exit status is 1 when a
 * cell could not run (the table then has a FAILED row saying why), 2 for a
 * usage error.
 *
 * Usage: bench_xfer [--quick] [--only a,b,c,d,e] [--streams N]
 *                   [--ref-iperf3 GBPS|TEXT] [--ref-ucx GBPS|TEXT] [--help]
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench_common.h"
#include "llmlink.h"

/* llm.SyncKvCacheWaitTime on both engines: one pull of 256 MiB on a busy
 * 2-core machine must never hit the 1000 ms default. */
#define XFER_WAIT_MS "30000"
/* How long a request to a P child may take before it counts as dead (it
 * fills or checks up to 256 MiB for some requests). */
#define SERVER_REPLY_MS 30000
#define MAX_SERVERS 4

#define NTENSORS 8
#define KIB ((uint64_t)1024)
#define MIB ((uint64_t)1024 * 1024)
#define D_CLUSTER_ID 1
#define P_MODEL_ID 0

static const uint64_t BLOCK_SIZES[] = {16 * KIB, 64 * KIB, 256 * KIB, 1 * MIB, 4 * MIB};
#define NSIZES (sizeof BLOCK_SIZES / sizeof BLOCK_SIZES[0])
static const char *const TRANSPORTS[] = {"tcp", "shm"};
static const int STREAM_COUNTS[] = {1, 2, 4};
#define NSTREAMCASES (sizeof STREAM_COUNTS / sizeof STREAM_COUNTS[0])

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static const char *size_name(uint64_t bytes, char *buf, size_t len)
{
    if (bytes >= 1024 * MIB && bytes % (1024 * MIB) == 0)
        snprintf(buf, len, "%" PRIu64 " GiB", bytes / (1024 * MIB));
    else if (bytes >= MIB && bytes % MIB == 0)
        snprintf(buf, len, "%" PRIu64 " MiB", bytes / MIB);
    else if (bytes >= KIB && bytes % KIB == 0)
        snprintf(buf, len, "%" PRIu64 " KiB", bytes / KIB);
    else
        snprintf(buf, len, "%" PRIu64 " B", bytes);
    return buf;
}

/* "LLM_PARAM_INVALID (0x5010B005): <last error>" for call `fn`. */
static void api_error(char *err, size_t len, const char *fn, llmlink_status_t st)
{
    snprintf(err, len, "%s: %s (0x%08" PRIX32 "): %s", fn, llmlink_status_name(st), st,
             llmlink_last_error());
}

/* ------------------------------------------------------------------ */
/* KV memory and its pattern                                           */
/* ------------------------------------------------------------------ */

typedef struct kv {
    uint8_t *base; /* one mapping; tensor t at base + t * tensor_bytes */
    size_t bytes;
    uint32_t ntensors;
    uint64_t nblocks, block_bytes, tensor_bytes;
    uint64_t addrs[NTENSORS];
} kv_t;

static bool kv_alloc(kv_t *kv, uint32_t ntensors, uint64_t nblocks, uint64_t block_bytes)
{
    memset(kv, 0, sizeof *kv);
    kv->ntensors = ntensors;
    kv->nblocks = nblocks;
    kv->block_bytes = block_bytes;
    kv->tensor_bytes = nblocks * block_bytes;
    kv->bytes = (size_t)(kv->tensor_bytes * ntensors);
    void *p = mmap(NULL, kv->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        kv->base = NULL;
        return false;
    }
    kv->base = p;
    for (uint32_t t = 0; t < ntensors; t++)
        kv->addrs[t] = (uint64_t)(uintptr_t)(kv->base + t * kv->tensor_bytes);
    return true;
}

static void kv_free(kv_t *kv)
{
    if (kv->base)
        munmap(kv->base, kv->bytes);
    kv->base = NULL;
}

static uint8_t *kv_block(const kv_t *kv, uint32_t t, uint64_t b)
{
    return kv->base + t * kv->tensor_bytes + b * kv->block_bytes;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return x;
}

/* The 64-bit words of block b of tensor t under `seed`: distinct within a
 * block, different from block to block and tensor to tensor. */
static uint64_t pat_base(uint64_t seed, uint32_t t, uint64_t b)
{
    return mix64(seed ^ mix64(((uint64_t)t << 40) ^ (b + 1)));
}
#define PAT_STEP 0x9E3779B97F4A7C15ull

static void pat_fill(uint8_t *blk, uint64_t bytes, uint64_t base)
{
    uint64_t *w = (uint64_t *)(void *)blk, x = 0;
    for (uint64_t i = 0; i < bytes / 8; i++, x += PAT_STEP)
        w[i] = base ^ x;
}

/* Offset of the first wrong word, or -1. */
static int64_t pat_check(const uint8_t *blk, uint64_t bytes, uint64_t base)
{
    const uint64_t *w = (const uint64_t *)(const void *)blk;
    uint64_t x = 0;
    for (uint64_t i = 0; i < bytes / 8; i++, x += PAT_STEP)
        if (w[i] != (base ^ x))
            return (int64_t)(i * 8);
    return -1;
}

static void kv_fill(kv_t *kv, uint64_t seed)
{
    for (uint32_t t = 0; t < kv->ntensors; t++)
        for (uint64_t b = 0; b < kv->nblocks; b++)
            pat_fill(kv_block(kv, t, b), kv->block_bytes, pat_base(seed, t, b));
}

static uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t r = a % b;
        a = b;
        b = r;
    }
    return a;
}

/* Where source block i lands. 's' (scattered): i * s mod n with s coprime
 * to n and s != 1 mod n, so no destination follows the previous one and
 * every block is its own run; 'c' (contiguous): i, one run per tensor. */
static void block_map(char kind, uint64_t n, uint64_t *src, uint64_t *dst)
{
    uint64_t s = n / 2 + 1;
    while (n >= 3 && gcd64(s, n) != 1)
        s++;
    for (uint64_t i = 0; i < n; i++) {
        src[i] = i;
        if (kind == 'c' || n == 1)
            dst[i] = i;
        else if (n == 2)
            dst[i] = 1 - i;
        else
            dst[i] = (i * s) % n;
    }
}

/* Checks that block dst[i] of every tensor of kv holds pattern `seed` of
 * block src[i]. */
static bool kv_check_mapped(const kv_t *kv, uint64_t seed, const uint64_t *src,
                            const uint64_t *dst, uint64_t n, char *err, size_t len)
{
    for (uint32_t t = 0; t < kv->ntensors; t++)
        for (uint64_t i = 0; i < n; i++) {
            int64_t off = pat_check(kv_block(kv, t, dst[i]), kv->block_bytes,
                                    pat_base(seed, t, src[i]));
            if (off >= 0) {
                snprintf(err, len, "wrong bytes: tensor %u, block %" PRIu64 " (from block %" PRIu64
                         "), offset %" PRId64, t, dst[i], src[i], off);
                return false;
            }
        }
    return true;
}

static llmlink_cache_desc_t kv_desc(const kv_t *kv)
{
    llmlink_cache_desc_t d;
    memset(&d, 0, sizeof d);
    d.num_tensors = kv->ntensors;
    d.data_type = LLMLINK_DT_FLOAT16;
    d.placement = LLMLINK_PLACEMENT_HOST;
    d.num_dims = 2;
    d.shape[0] = (int64_t)kv->nblocks;
    d.shape[1] = (int64_t)(kv->block_bytes / 2);
    return d;
}

static llmlink_cache_key_t blocks_key(uint64_t cluster_id)
{
    llmlink_cache_key_t k;
    memset(&k, 0, sizeof k);
    k.type = LLMLINK_KEY_BLOCKS;
    k.cluster_id = cluster_id;
    k.model_id = P_MODEL_ID;
    k.prefix_id = -1;
    return k;
}

/* ------------------------------------------------------------------ */
/* Engine options                                                      */
/* ------------------------------------------------------------------ */

typedef struct eopts {
    llmlink_option_t o[4];
    size_t n;
    char streams[16];
    char listen[80];
} eopts_t;

/* Fills *eo in place (its options point into it: do not copy it). */
static void eopts_build(eopts_t *eo, bool listen, const char *transport, int streams)
{
    eo->n = 0;
    /* Two-rail RDMA cells: P listens on every address (LLMLINK_BENCH_LISTEN_IP
     * 0.0.0.0), D reaches it on both rails' addresses. */
    const char *lip = getenv("LLMLINK_BENCH_LISTEN_IP");
    snprintf(eo->listen, sizeof eo->listen, "%s:0", lip && *lip ? lip : bench_ip());
    if (listen)
        eo->o[eo->n++] = (llmlink_option_t){"llm.listenIpInfo", eo->listen};
    eo->o[eo->n++] = (llmlink_option_t){"llm.SyncKvCacheWaitTime", XFER_WAIT_MS};
    if (transport)
        eo->o[eo->n++] = (llmlink_option_t){"llmlink.Transport", transport};
    if (streams > 0) {
        snprintf(eo->streams, sizeof eo->streams, "%d", streams);
        eo->o[eo->n++] = (llmlink_option_t){"llmlink.StreamsPerLink", eo->streams};
    }
}

/* ------------------------------------------------------------------ */
/* P processes                                                         */
/* ------------------------------------------------------------------ */

typedef struct pconf {
    uint64_t cluster_id;
    const char *transport; /* "tcp", "shm" */
    int streams;           /* 0: the library's default */
    uint32_t ntensors;
    uint64_t nblocks, block_bytes;
    uint64_t seed; /* P's cache is filled with this pattern */
} pconf_t;

static void xstats_line(llmlink_t *e, char *out, size_t len)
{
    llmlink_xfer_stats_t s;
    memset(&s, 0, sizeof s);
    s.version = LLMLINK_XFER_STATS_VERSION;
    llmlink_status_t st = llmlink_get_xfer_stats(e, &s);
    if (st != LLMLINK_SUCCESS) {
        snprintf(out, len, "error llmlink_get_xfer_stats: %s: %s\n", llmlink_status_name(st),
                 llmlink_last_error());
        return;
    }
    snprintf(out, len,
             "xstats %u %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
             " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
             s.caches, s.transfers, s.transfers_failed, s.transfers_timed_out, s.bytes_requested,
             s.bytes_served, s.requests_served, s.requests_refused, s.tcp_requests,
             s.shm_requests, s.shm_fallbacks);
}

static bool parse_xstats(const char *line, llmlink_xfer_stats_t *s)
{
    memset(s, 0, sizeof *s);
    unsigned long long v[10];
    unsigned caches;
    if (sscanf(line, "xstats %u %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &caches,
               &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) != 11)
        return false;
    s->version = LLMLINK_XFER_STATS_VERSION;
    s->caches = caches;
    s->transfers = v[0];
    s->transfers_failed = v[1];
    s->transfers_timed_out = v[2];
    s->bytes_requested = v[3];
    s->bytes_served = v[4];
    s->requests_served = v[5];
    s->requests_refused = v[6];
    s->tcp_requests = v[7];
    s->shm_requests = v[8];
    s->shm_fallbacks = v[9];
    return true;
}

/* The child's state while it serves requests. */
typedef struct pchild {
    llmlink_t *e;
    kv_t kv;
    uint64_t *src, *dst;
} pchild_t;

static bool p_request(const char *line, char *out, size_t len, void *state)
{
    pchild_t *p = state;
    char err[400];
    unsigned long long seed;
    char map;
    if (strcmp(line, "xstats") == 0) {
        xstats_line(p->e, out, len);
    } else if (sscanf(line, "verify %llu %c", &seed, &map) == 2 && p->src && p->dst) {
        block_map(map, p->kv.nblocks, p->src, p->dst);
        if (kv_check_mapped(&p->kv, seed, p->src, p->dst, p->kv.nblocks, err, sizeof err))
            snprintf(out, len, "ok\n");
        else
            snprintf(out, len, "bad in P's cache: %s\n", err);
    } else {
        return false;
    }
    return true;
}

/* The child: a PROMPT engine listening on LOCALHOST:0 with a blocks cache
 * of pc's geometry, filled with pattern pc->seed. */
static void server_child(const bench_child_t *c, const void *arg)
{
    const pconf_t *pc = arg;
    char line[512], err[400];
    pchild_t p;
    memset(&p, 0, sizeof p);
    int64_t cache_id = 0;
    if (!kv_alloc(&p.kv, pc->ntensors, pc->nblocks, pc->block_bytes)) {
        snprintf(line, sizeof line, "error mmap of %" PRIu64 " bytes: %s\n",
                 pc->nblocks * pc->block_bytes * pc->ntensors, strerror(errno));
        bench_write_all(c->rsp_w, line);
        exit(1);
    }
    kv_fill(&p.kv, pc->seed);

    eopts_t eo;
    eopts_build(&eo, true, pc->transport, pc->streams);
    llmlink_status_t st = llmlink_create(&p.e, LLMLINK_ROLE_PROMPT, pc->cluster_id);
    if (st != LLMLINK_SUCCESS)
        api_error(err, sizeof err, "P llmlink_create", st);
    if (st == LLMLINK_SUCCESS && (st = llmlink_init(p.e, eo.o, eo.n)) != LLMLINK_SUCCESS)
        api_error(err, sizeof err, "P llmlink_init", st);
    uint16_t port = 0;
    if (st == LLMLINK_SUCCESS &&
        (st = llmlink_get_listen_port(p.e, 0, &port)) != LLMLINK_SUCCESS)
        api_error(err, sizeof err, "P llmlink_get_listen_port", st);
    if (st == LLMLINK_SUCCESS) {
        llmlink_cache_desc_t desc = kv_desc(&p.kv);
        llmlink_cache_key_t key = blocks_key(pc->cluster_id);
        st = llmlink_register_blocks_cache(p.e, &desc, p.kv.addrs, p.kv.ntensors, &key,
                                           &cache_id);
        if (st != LLMLINK_SUCCESS)
            api_error(err, sizeof err, "P llmlink_register_blocks_cache", st);
    }
    if (st != LLMLINK_SUCCESS) {
        snprintf(line, sizeof line, "error %s\n", err);
        bench_write_all(c->rsp_w, line);
        llmlink_destroy(p.e);
        kv_free(&p.kv);
        exit(1);
    }
    bench_child_ready(c, port);

    p.src = calloc(p.kv.nblocks, sizeof *p.src);
    p.dst = calloc(p.kv.nblocks, sizeof *p.dst);
    bench_child_serve(c, p_request, &p);
    free(p.src);
    free(p.dst);
    int status = 0;
    st = llmlink_unregister_cache(p.e, cache_id);
    if (st != LLMLINK_SUCCESS) {
        bench_progress("P llmlink_unregister_cache: %s: %s", llmlink_status_name(st),
                       llmlink_last_error());
        status = 1;
    }
    llmlink_destroy(p.e);
    kv_free(&p.kv);
    bench_child_exit(c, status);
}

/* Forks a P child. Call only while this process runs no engine (fork
 * copies only the calling thread) and holds no large buffer. */
static bool server_start(bench_server_t *s, const pconf_t *pc, char *err, size_t errlen)
{
    return bench_server_start(s, pc->cluster_id, server_child, pc, err, errlen);
}

static bool server_xstats(bench_server_t *s, llmlink_xfer_stats_t *st)
{
    char line[512];
    return bench_server_request(s, "xstats", line, sizeof line) && parse_xstats(line, st);
}

/* ------------------------------------------------------------------ */
/* A session: one P process, one D engine, linked, caches registered   */
/* ------------------------------------------------------------------ */

typedef struct session {
    pconf_t pc;
    bench_server_t srv;
    bool have_srv;
    llmlink_t *d;
    kv_t kv;
    int64_t cache_id;
    bool linked;
    llmlink_ip_info_t ip;
    llmlink_ip_info_t rails_remote[2], rails_local[2]; /* two-rail RDMA cells */
    llmlink_cluster_info_t ci;
    llmlink_cache_key_t pkey;
    char map; /* 's' or 'c' */
    uint64_t *src, *dst, n;
    uint64_t bytes; /* per transfer: every block of every tensor */
    uint64_t d_seed;
} session_t;

static uint64_t g_next_cluster = 1000;
/* Section e's two-rail cells: the second rail's address (LLMLINK_RDMA_IP1),
 * NULL for one rail. */
static const char *g_rail2_ip;

typedef struct config {
    bool quick;
    bool only[26];
    bool any_only;
    int streams;        /* --streams; 0: library default */
    uint64_t tensor_bytes; /* per tensor, so 8 x this per transfer */
    int reps;           /* transfers per run */
    int runs;           /* runs per cell (median) */
    int run_cap_ms;     /* a run stops after this, even short of reps */
    uint64_t rss_bytes; /* section d: bytes moved each way */
    const char *ref_iperf3, *ref_ucx;
} config_t;

/* Starts P, creates and links D, registers D's cache. D's cache holds
 * pattern d_seed when fill_d (push), else poison bytes (pull). */
static bool session_open(session_t *s, const config_t *cfg, const char *transport, int streams,
                         uint64_t block_bytes, char map, bool fill_d, char *err, size_t len)
{
    memset(s, 0, sizeof *s);
    s->map = map;
    s->pc.cluster_id = g_next_cluster++;
    s->pc.transport = transport;
    s->pc.streams = streams;
    s->pc.ntensors = NTENSORS;
    s->pc.block_bytes = block_bytes;
    s->pc.nblocks = cfg->tensor_bytes / block_bytes;
    s->pc.seed = 0x5EED0000ull + s->pc.cluster_id;
    s->d_seed = 0xD00D0000ull + s->pc.cluster_id;
    s->n = s->pc.nblocks;
    s->bytes = s->n * block_bytes * NTENSORS;
    if (s->n == 0) {
        snprintf(err, len, "tensor of %" PRIu64 " bytes is smaller than one block",
                 cfg->tensor_bytes);
        return false;
    }
    /* Fork first: this process holds no engine and no cache now. */
    if (!server_start(&s->srv, &s->pc, err, len))
        return false;
    s->have_srv = true;

    s->src = calloc(s->n, sizeof *s->src);
    s->dst = calloc(s->n, sizeof *s->dst);
    if (!s->src || !s->dst || !kv_alloc(&s->kv, NTENSORS, s->n, block_bytes)) {
        snprintf(err, len, "out of memory for D's cache (%" PRIu64 " bytes)", s->bytes);
        return false;
    }
    block_map(map, s->n, s->src, s->dst);
    if (fill_d)
        kv_fill(&s->kv, s->d_seed);
    else
        memset(s->kv.base, 0xA5, s->kv.bytes); /* and resident, as P's is */

    eopts_t eo;
    eopts_build(&eo, false, transport, streams);
    llmlink_status_t st = llmlink_create(&s->d, LLMLINK_ROLE_DECODER, D_CLUSTER_ID);
    if (st != LLMLINK_SUCCESS) {
        api_error(err, len, "llmlink_create", st);
        return false;
    }
    if ((st = llmlink_init(s->d, eo.o, eo.n)) != LLMLINK_SUCCESS) {
        api_error(err, len, "llmlink_init", st);
        return false;
    }
    llmlink_cache_desc_t desc = kv_desc(&s->kv);
    st = llmlink_register_blocks_cache(s->d, &desc, s->kv.addrs, NTENSORS, NULL, &s->cache_id);
    if (st != LLMLINK_SUCCESS) {
        api_error(err, len, "llmlink_register_blocks_cache", st);
        return false;
    }
    bench_server_target(&s->srv, &s->ip, &s->ci);
    if (g_rail2_ip) { /* rail k: D's address k to P's address k (same port: P listens on all) */
        s->rails_remote[0] = s->ip;
        s->rails_remote[1] = (llmlink_ip_info_t){g_rail2_ip, s->ip.port};
        s->rails_local[0] = (llmlink_ip_info_t){s->ip.ip, 0};
        s->rails_local[1] = (llmlink_ip_info_t){g_rail2_ip, 0};
        s->ci.remote_ip_infos = s->rails_remote;
        s->ci.num_remote_ip_infos = 2;
        s->ci.local_ip_infos = s->rails_local;
        s->ci.num_local_ip_infos = 2;
    }
    llmlink_status_t per = LLMLINK_FAILED;
    st = llmlink_link_clusters(s->d, &s->ci, 1, LINK_TIMEOUT_MS, &per);
    if (st != LLMLINK_SUCCESS) {
        api_error(err, len, "llmlink_link_clusters", st);
        size_t l = strlen(err);
        snprintf(err + l, len - l, " (per-cluster %s)", llmlink_status_name(per));
        return false;
    }
    s->linked = true;
    s->pkey = blocks_key(s->pc.cluster_id);
    return true;
}

/* One whole-cache transfer. */
static llmlink_status_t session_xfer(session_t *s, bool push)
{
    if (push)
        return llmlink_push_blocks(s->d, &s->pkey, s->cache_id, s->src, s->n, s->dst, s->n,
                                   NULL);
    return llmlink_pull_blocks(s->d, &s->pkey, s->cache_id, s->src, s->n, s->dst, s->n, NULL);
}

static bool d_xstats(session_t *s, llmlink_xfer_stats_t *st)
{
    memset(st, 0, sizeof *st);
    st->version = LLMLINK_XFER_STATS_VERSION;
    return llmlink_get_xfer_stats(s->d, st) == LLMLINK_SUCCESS;
}

/* Unlinks, unregisters, destroys D, stops P. Returns false (with err) when
 * a step failed or P did not exit cleanly. */
static bool session_close(session_t *s, char *err, size_t len)
{
    bool ok = true;
    if (s->linked) {
        llmlink_status_t per = LLMLINK_FAILED;
        llmlink_status_t st =
            llmlink_unlink_clusters(s->d, &s->ci, 1, UNLINK_TIMEOUT_MS, false, &per);
        if (st != LLMLINK_SUCCESS && ok) {
            api_error(err, len, "llmlink_unlink_clusters", st);
            ok = false;
        }
    }
    if (s->cache_id > 0) {
        llmlink_status_t st = llmlink_unregister_cache(s->d, s->cache_id);
        if (st != LLMLINK_SUCCESS && ok) {
            api_error(err, len, "llmlink_unregister_cache", st);
            ok = false;
        }
    }
    llmlink_destroy(s->d);
    s->d = NULL;
    kv_free(&s->kv);
    free(s->src);
    free(s->dst);
    s->src = s->dst = NULL;
    if (s->have_srv && !bench_server_stop(&s->srv) && ok) {
        snprintf(err, len, "P process did not exit cleanly (see stderr)");
        ok = false;
    }
    s->have_srv = false;
    return ok;
}

/* Checks the first transfer's bytes: D's cache after a pull, P's after a
 * push. */
static bool session_verify(session_t *s, bool push, char *err, size_t len)
{
    if (!push)
        return kv_check_mapped(&s->kv, s->pc.seed, s->src, s->dst, s->n, err, len);
    char req[64], line[512];
    snprintf(req, sizeof req, "verify %" PRIu64 " %c", s->d_seed, s->map);
    if (!bench_server_request(&s->srv, req, line, sizeof line)) {
        snprintf(err, len, "P did not answer \"verify\"");
        return false;
    }
    if (strcmp(line, "ok") != 0) {
        snprintf(err, len, "%.300s", line);
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------ */
/* One bandwidth cell                                                  */
/* ------------------------------------------------------------------ */

typedef struct cell_res {
    bool ok;
    double gbps; /* median of the runs */
} cell_res_t;

static cell_res_t run_cell(const config_t *cfg, char sec, bool push, const char *transport,
                           int streams, uint64_t block_bytes, char map, const char *figure)
{
    cell_res_t res = {false, 0};
    char err[400], err2[400], bs[32], d[360];
    size_name(block_bytes, bs, sizeof bs);
    const char *op = push ? "llmlink_push_blocks" : "llmlink_pull_blocks";
    session_t s;
    if (!session_open(&s, cfg, transport, streams, block_bytes, map, push, err, sizeof err)) {
        bench_failed(sec, figure, "%s", err);
        session_close(&s, err2, sizeof err2);
        return res;
    }
    llmlink_xfer_stats_t x0, x1;
    if (!d_xstats(&s, &x0)) {
        api_error(err, sizeof err, "llmlink_get_xfer_stats", llmlink_last_error_status());
        bench_failed(sec, figure, "%s", err);
        session_close(&s, err2, sizeof err2);
        return res;
    }

    /* The first transfer: checked by content, timed on its own. */
    int64_t t0 = bench_now_ns();
    llmlink_status_t st = session_xfer(&s, push);
    double first = (double)s.bytes / (double)(bench_now_ns() - t0);
    if (st != LLMLINK_SUCCESS) {
        api_error(err, sizeof err, op, st);
        bench_failed(sec, figure, "first transfer: %s", err);
        session_close(&s, err2, sizeof err2);
        return res;
    }
    if (!session_verify(&s, push, err, sizeof err)) {
        bench_failed(sec, figure, "first transfer moved wrong data: %s", err);
        session_close(&s, err2, sizeof err2);
        return res;
    }

    double runs[16];
    int nruns = cfg->runs < 16 ? cfg->runs : 16;
    int min_reps = cfg->reps;
    for (int r = 0; r < nruns; r++) {
        int64_t start = bench_now_ns();
        int k = 0;
        for (; k < cfg->reps; k++) {
            if (k > 0 && (bench_now_ns() - start) / 1000000 > cfg->run_cap_ms)
                break;
            st = session_xfer(&s, push);
            if (st != LLMLINK_SUCCESS)
                break;
        }
        if (st != LLMLINK_SUCCESS) {
            api_error(err, sizeof err, op, st);
            bench_failed(sec, figure, "run %d, transfer %d: %s", r + 1, k + 1, err);
            session_close(&s, err2, sizeof err2);
            return res;
        }
        if (k < min_reps)
            min_reps = k;
        runs[r] = (double)s.bytes * k / (double)(bench_now_ns() - start);
    }
    d_xstats(&s, &x1);
    uint64_t tcp = x1.tcp_requests - x0.tcp_requests;
    uint64_t shm = x1.shm_requests - x0.shm_requests;
    uint64_t fb = x1.shm_fallbacks - x0.shm_fallbacks;
    uint64_t rdma = x1.rdma_requests - x0.rdma_requests;
    bool closed = session_close(&s, err2, sizeof err2);

    double sorted[16];
    memcpy(sorted, runs, sizeof runs[0] * (size_t)nruns);
    double med = bench_median(sorted, (size_t)nruns);
    char runs_s[96] = "";
    for (int r = 0; r < nruns; r++) {
        size_t l = strlen(runs_s);
        snprintf(runs_s + l, sizeof runs_s - l, "%s%.2f", r ? " " : "", runs[r]);
    }
    char ts[48];
    snprintf(d, sizeof d,
             "median of %d runs (%s); %" PRIu64 " MiB per call = %u tensors x %" PRIu64
             " blocks (%s list), %d call%s per run; first call %.2f GB/s, verified; D sent %" PRIu64
             " tcp / %" PRIu64 " shm requests",
             nruns, runs_s, s.bytes / MIB, NTENSORS, s.n, map == 'c' ? "contiguous" : "scattered",
             min_reps, min_reps == 1 ? "" : "s", first, tcp, shm);
    if (fb)
        snprintf(ts, sizeof ts, ", %" PRIu64 " shm fallbacks", fb);
    else
        ts[0] = '\0';
    strncat(d, ts, sizeof d - strlen(d) - 1);
    bench_add_row(sec, figure, "GB/s", d, "%.2f", med);
    if (strcmp(transport, "rdma") == 0 && map == 's' && block_bytes <= MIB) {
        /* Scattered blocks never merge and none exceeds a 1 MiB slice: one
         * work request per block per tensor, so WR/s follows from the rate. */
        char wfig[128], wd[200];
        snprintf(wfig, sizeof wfig, "%s: work requests", figure);
        snprintf(wd, sizeof wd,
                 "derived from the GB/s row: one RDMA %s per %s block per tensor (%" PRIu64
                 " per call)",
                 push ? "WRITE" : "READ", bs, s.n * NTENSORS);
        bench_add_row(sec, wfig, "WR/s", wd, "%.0f", med * 1e9 / (double)block_bytes);
    }
    bench_progress("%c %s: %.2f GB/s (runs %s; first %.2f; verified)", sec, figure, med, runs_s,
                   first);

    /* The counters say which transport really ran. */
    bool want_shm = strcmp(transport, "shm") == 0;
    if (strcmp(transport, "rdma") == 0) {
        /* every request over RDMA: none on the stream, none by process_vm_* */
        if (tcp != 0 || shm != 0 || rdma == 0) {
            bench_failed(sec, figure,
                         "transport check: asked for rdma, D's counters say %" PRIu64
                         " tcp / %" PRIu64 " shm / %" PRIu64 " rdma requests",
                         tcp, shm, rdma);
            return res;
        }
    } else if ((want_shm && (shm == 0 || tcp != 0 || fb != 0)) ||
               (!want_shm && (tcp == 0 || shm != 0))) {
        bench_failed(sec, figure,
                     "transport check: asked for %s, D's counters say %" PRIu64 " tcp / %" PRIu64
                     " shm requests, %" PRIu64 " shm fallbacks (llmlink_get_xfer_stats)",
                     transport, tcp, shm, fb);
        return res;
    }
    /* The figure stands (its bytes were verified); a failed teardown is a
     * problem of its own. */
    res.ok = true;
    res.gbps = med;
    if (!closed) {
        char fig[128];
        snprintf(fig, sizeof fig, "%s: teardown", figure);
        bench_failed(sec, fig, "%s", err2);
    }
    return res;
}

/* ------------------------------------------------------------------ */
/* Sections                                                            */
/* ------------------------------------------------------------------ */

/* Figures kept for the summary and the ratios: [push][transport][size]. */
static double g_bw[2][2][NSIZES];
static double g_bw_contig[2]; /* pull, 16 KiB, contiguous list: [transport] */
static double g_bw_streams[NSTREAMCASES];

static bool size_in_run(const config_t *cfg, size_t i)
{
    if (BLOCK_SIZES[i] > cfg->tensor_bytes / 4)
        return false; /* fewer than 4 blocks per tensor: not a block list */
    /* --quick: 16 KiB, 256 KiB and 1 MiB (the ratios need them). */
    return !cfg->quick || BLOCK_SIZES[i] == 16 * KIB || BLOCK_SIZES[i] == 256 * KIB ||
           BLOCK_SIZES[i] == 1 * MIB;
}

static void section_bw(const config_t *cfg, bool push)
{
    char sec = push ? 'b' : 'a';
    bench_progress("section %c: %s bandwidth, tcp and shm, %" PRIu64 " MiB per call", sec,
                   push ? "push" : "pull", cfg->tensor_bytes * NTENSORS / MIB);
    for (size_t tr = 0; tr < 2; tr++)
        for (size_t i = 0; i < NSIZES; i++) {
            if (!size_in_run(cfg, i))
                continue;
            char fig[96], bs[32];
            snprintf(fig, sizeof fig, "%s, %s, %s blocks", push ? "push" : "pull", TRANSPORTS[tr],
                     size_name(BLOCK_SIZES[i], bs, sizeof bs));
            cell_res_t r =
                run_cell(cfg, sec, push, TRANSPORTS[tr], cfg->streams, BLOCK_SIZES[i], 's', fig);
            if (r.ok)
                g_bw[push][tr][i] = r.gbps;
        }
    if (push || cfg->quick)
        return;
    /* For contrast: a contiguous list merges into one run per tensor. */
    for (size_t tr = 0; tr < 2; tr++) {
        char fig[96];
        snprintf(fig, sizeof fig, "pull, %s, 16 KiB blocks, contiguous list (runs merge)",
                 TRANSPORTS[tr]);
        cell_res_t r = run_cell(cfg, sec, false, TRANSPORTS[tr], cfg->streams, 16 * KIB, 'c', fig);
        if (r.ok)
            g_bw_contig[tr] = r.gbps;
    }
}

/* RDMA: pull and push on a soft-RoCE (or real) netdev's address. */
static void section_e(const config_t *cfg)
{
    const char *ip = getenv("LLMLINK_RDMA_IP0");
    if (!ip || !*ip) {
        bench_failed('e', "rdma", "LLMLINK_RDMA_IP0 is not set (the address of an RDMA netdev)");
        return;
    }
    setenv("LLMLINK_BENCH_IP", ip, 1); /* P children inherit it */
    bench_progress("section e: pull and push over RDMA on %s", ip);
    static const uint64_t sizes[] = {64 * KIB, 256 * KIB, 1 * MIB};
    const size_t nsizes = sizeof sizes / sizeof sizes[0];
    for (int push = 0; push < 2; push++)
        for (size_t i = 0; i < nsizes; i++) {
            char fig[96], bs[32];
            snprintf(fig, sizeof fig, "%s, rdma, %s blocks, 1 rail", push ? "push" : "pull",
                     size_name(sizes[i], bs, sizeof bs));
            run_cell(cfg, 'e', push, "rdma", 0, sizes[i], 's', fig);
        }
    /* Two rails (one per local ip info) when a second RDMA address exists. */
    const char *ip1 = getenv("LLMLINK_RDMA_IP1");
    if (ip1 && *ip1) {
        g_rail2_ip = ip1;
        setenv("LLMLINK_BENCH_LISTEN_IP", "0.0.0.0", 1);
        for (int push = 0; push < 2; push++) {
            char fig[128];
            snprintf(fig, sizeof fig, "%s, rdma, 256 KiB blocks, 2 rails (%s + %s)",
                     push ? "push" : "pull", ip, ip1);
            run_cell(cfg, 'e', push, "rdma", 0, 256 * KIB, 's', fig);
        }
        unsetenv("LLMLINK_BENCH_LISTEN_IP");
        g_rail2_ip = NULL;
    }
    unsetenv("LLMLINK_BENCH_IP");
}

static void section_c(const config_t *cfg)
{
    bench_progress("section c: pull, tcp, 256 KiB blocks, llmlink.StreamsPerLink 1, 2, 4");
    for (size_t k = 0; k < NSTREAMCASES; k++) {
        char fig[96];
        snprintf(fig, sizeof fig, "pull, tcp, 256 KiB blocks, %d stream%s per link",
                 STREAM_COUNTS[k], STREAM_COUNTS[k] == 1 ? "" : "s");
        cell_res_t r = run_cell(cfg, 'c', false, "tcp", STREAM_COUNTS[k], 256 * KIB, 's', fig);
        if (r.ok)
            g_bw_streams[k] = r.gbps;
    }
}

/* d: VmRSS of P and D before and after moving rss_bytes each way, with
 * the caches resident from the start: what grows is the library's own
 * memory (a staging copy of the data would show as hundreds of MiB). */
static void section_d_one(const config_t *cfg, const char *tp)
{
    char err[400], err2[400], fig[96], d[360], ms[32];
    snprintf(fig, sizeof fig, "%s: RSS around pull + push", tp);
    session_t s;
    /* D's cache holds its own pattern (resident); the pull overwrites
     * it, and the push afterwards sends those bytes back to P. */
    if (!session_open(&s, cfg, tp, cfg->streams, 256 * KIB, 's', true, err, sizeof err)) {
        bench_failed('d', fig, "%s", err);
        session_close(&s, err2, sizeof err2);
        return;
    }
    bench_sleep_ms(100);
    long p0 = bench_server_rss_kib(&s.srv), d0 = bench_self_rss_kib();
    uint64_t calls = cfg->rss_bytes / s.bytes ? cfg->rss_bytes / s.bytes : 1;
    llmlink_status_t st = LLMLINK_SUCCESS;
    uint64_t k = 0;
    for (; k < calls && st == LLMLINK_SUCCESS; k++)
        st = session_xfer(&s, false);
    if (st != LLMLINK_SUCCESS) {
        api_error(err, sizeof err, "llmlink_pull_blocks", st);
        bench_failed('d', fig, "pull %" PRIu64 ": %s", k, err);
        session_close(&s, err2, sizeof err2);
        return;
    }
    if (!kv_check_mapped(&s.kv, s.pc.seed, s.src, s.dst, s.n, err, sizeof err)) {
        bench_failed('d', fig, "pull moved wrong data: %s", err);
        session_close(&s, err2, sizeof err2);
        return;
    }
    long p1 = bench_server_rss_kib(&s.srv), d1 = bench_self_rss_kib();
    for (k = 0; k < calls && st == LLMLINK_SUCCESS; k++)
        st = session_xfer(&s, true);
    if (st != LLMLINK_SUCCESS) {
        api_error(err, sizeof err, "llmlink_push_blocks", st);
        bench_failed('d', fig, "push %" PRIu64 ": %s", k, err);
        session_close(&s, err2, sizeof err2);
        return;
    }
    long p2 = bench_server_rss_kib(&s.srv), d2 = bench_self_rss_kib();
    llmlink_xfer_stats_t px;
    bool have_px = server_xstats(&s.srv, &px);
    uint64_t moved = calls * s.bytes;
    size_name(moved, ms, sizeof ms);
    if (p0 < 0 || p1 < 0 || p2 < 0 || d0 < 0 || d1 < 0 || d2 < 0) {
        bench_failed('d', fig, "could not read VmRSS");
    } else {
        snprintf(d, sizeof d, "P: %ld -> %ld KiB; each process holds a %" PRIu64
                 " MiB cache; %" PRIu64 " pulls of 256 KiB blocks", p0, p1, s.bytes / MIB, calls);
        snprintf(fig, sizeof fig, "%s: P RSS growth, pulling %s", tp, ms);
        bench_add_row('d', fig, "KiB", d, "%ld", p1 - p0);
        snprintf(d, sizeof d, "D: %ld -> %ld KiB", d0, d1);
        snprintf(fig, sizeof fig, "%s: D RSS growth, pulling %s", tp, ms);
        bench_add_row('d', fig, "KiB", d, "%ld", d1 - d0);
        snprintf(d, sizeof d, "P: %ld -> %ld KiB", p1, p2);
        if (have_px) {
            size_t l = strlen(d);
            snprintf(d + l, sizeof d - l, "; P served %.2f GiB in all",
                     (double)px.bytes_served / (double)(1ull << 30));
        }
        snprintf(fig, sizeof fig, "%s: P RSS growth, then pushing %s", tp, ms);
        bench_add_row('d', fig, "KiB", d, "%ld", p2 - p1);
        snprintf(d, sizeof d, "D: %ld -> %ld KiB", d1, d2);
        snprintf(fig, sizeof fig, "%s: D RSS growth, then pushing %s", tp, ms);
        bench_add_row('d', fig, "KiB", d, "%ld", d2 - d1);
        bench_progress("d %s: P %ld -> %ld -> %ld KiB, D %ld -> %ld -> %ld KiB", tp, p0, p1, p2, d0,
                       d1, d2);
    }
    if (!session_close(&s, err2, sizeof err2)) {
        snprintf(fig, sizeof fig, "%s: teardown", tp);
        bench_failed('d', fig, "%s", err2);
    }
}

static void section_d(const config_t *cfg)
{
    char ms[32];
    bench_progress("section d: VmRSS of P and D before and after moving %s each way",
                   size_name(cfg->rss_bytes, ms, sizeof ms));
    for (size_t tr = 0; tr < 2; tr++)
        section_d_one(cfg, TRANSPORTS[tr]);
}

/* A reference figure from run.sh: a number (GB/s) or a reason. */
static bool ref_value(const char *s, double *v)
{
    if (!s)
        return false;
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !(x > 0))
        return false;
    *v = x;
    return true;
}

static void ratio_row(const char *fig, double num, double den, const char *detail)
{
    if (num > 0 && den > 0)
        bench_add_row('r', fig, "x", detail, "%.2f", num / den);
    else
        bench_add_row('r', fig, "x", "a figure it needs is missing", "n/a");
}

static size_t size_index(uint64_t bytes)
{
    for (size_t i = 0; i < NSIZES; i++)
        if (BLOCK_SIZES[i] == bytes)
            return i;
    return 0;
}

static void section_r(const config_t *cfg)
{
    char d[360];
    size_t i16 = size_index(16 * KIB), i256 = size_index(256 * KIB), i1m = size_index(1 * MIB);
    double iperf = 0, ucx = 0;
    bool have_iperf = ref_value(cfg->ref_iperf3, &iperf);
    bool have_ucx = ref_value(cfg->ref_ucx, &ucx);
    if (cfg->ref_iperf3 && have_iperf)
        bench_add_row('r', "reference: iperf3, 1 TCP stream, 127.0.0.1", "GB/s",
                      "measured by bench/run.sh just before this run (receiver sum)", "%.2f",
                      iperf);
    else if (cfg->ref_iperf3)
        bench_add_row('r', "reference: iperf3, 1 TCP stream, 127.0.0.1", "GB/s", cfg->ref_iperf3,
                      "n/a");
    if (cfg->ref_ucx && have_ucx)
        bench_add_row('r', "reference: ucx_perftest ucp_get, UCX_TLS=tcp, 256 KiB", "GB/s",
                      "measured by bench/run.sh just before this run (UCX_NET_DEVICES=lo)", "%.2f",
                      ucx);
    else if (cfg->ref_ucx)
        bench_add_row('r', "reference: ucx_perftest ucp_get, UCX_TLS=tcp, 256 KiB", "GB/s",
                      cfg->ref_ucx, "n/a");
    double tcp256 = g_bw[0][0][i256];
    if (cfg->ref_iperf3 && cfg->only[0]) {
        snprintf(d, sizeof d, "%.2f GB/s / %s", tcp256, have_iperf ? "iperf3" : cfg->ref_iperf3);
        ratio_row("pull tcp 256 KiB / iperf3 single stream", tcp256, iperf, d);
    }
    if (cfg->ref_iperf3 && cfg->only[2]) {
        snprintf(d, sizeof d, "%.2f GB/s (section c) / %s", g_bw_streams[0],
                 have_iperf ? "iperf3" : cfg->ref_iperf3);
        ratio_row("pull tcp 256 KiB, 1 stream per link / iperf3 single stream", g_bw_streams[0],
                  iperf, d);
    }
    if (cfg->ref_ucx && cfg->only[0]) {
        snprintf(d, sizeof d, "%.2f GB/s / %s", tcp256, have_ucx ? "ucp_get" : cfg->ref_ucx);
        ratio_row("pull tcp 256 KiB / ucx_perftest ucp_get (tcp)", tcp256, ucx, d);
    }
    for (int push = 0; push < 2; push++) {
        if (!cfg->only[push])
            continue;
        char fig[96];
        const char *op = push ? "push" : "pull";
        snprintf(fig, sizeof fig, "%s shm / tcp, 256 KiB", op);
        snprintf(d, sizeof d, "%.2f / %.2f GB/s", g_bw[push][1][i256], g_bw[push][0][i256]);
        ratio_row(fig, g_bw[push][1][i256], g_bw[push][0][i256], d);
        for (size_t tr = 0; tr < 2; tr++) {
            snprintf(fig, sizeof fig, "%s %s 16 KiB / 1 MiB blocks", op, TRANSPORTS[tr]);
            snprintf(d, sizeof d, "%.2f / %.2f GB/s: the cost of small blocks",
                     g_bw[push][tr][i16], g_bw[push][tr][i1m]);
            ratio_row(fig, g_bw[push][tr][i16], g_bw[push][tr][i1m], d);
        }
    }
    if (!cfg->quick && cfg->only[0])
        for (size_t tr = 0; tr < 2; tr++) {
            char fig[96];
            snprintf(fig, sizeof fig, "pull %s 16 KiB, contiguous / scattered list",
                     TRANSPORTS[tr]);
            snprintf(d, sizeof d, "%.2f / %.2f GB/s: what merging blocks into runs saves",
                     g_bw_contig[tr], g_bw[0][tr][i16]);
            ratio_row(fig, g_bw_contig[tr], g_bw[0][tr][i16], d);
        }
    if (cfg->only[2]) {
        snprintf(d, sizeof d, "%.2f / %.2f GB/s", g_bw_streams[NSTREAMCASES - 1], g_bw_streams[0]);
        ratio_row("pull tcp 256 KiB, 4 streams / 1 stream", g_bw_streams[NSTREAMCASES - 1],
                  g_bw_streams[0], d);
    }
}

static void print_summary(const config_t *cfg)
{
    bool any = false;
    for (int p = 0; p < 2; p++)
        for (int t = 0; t < 2; t++)
            for (size_t i = 0; i < NSIZES; i++)
                any |= g_bw[p][t][i] > 0;
    if (!any)
        return;
    printf("\nGB/s (1e9 bytes/s), median of %d runs; P and D on one machine:\n\n", cfg->runs);
    printf("| block | pull tcp | pull shm | push tcp | push shm |\n");
    printf("|------:|---------:|---------:|---------:|---------:|\n");
    for (size_t i = 0; i < NSIZES; i++) {
        if (!size_in_run(cfg, i))
            continue;
        char bs[32];
        printf("| %s |", size_name(BLOCK_SIZES[i], bs, sizeof bs));
        for (int p = 0; p < 2; p++)
            for (int t = 0; t < 2; t++) {
                if (g_bw[p][t][i] > 0)
                    printf(" %.2f |", g_bw[p][t][i]);
                else
                    printf(" - |");
            }
        printf("\n");
    }
}

/* ------------------------------------------------------------------ */
/* Main                                                                */
/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_xfer [--quick] [--only a,b,c,d,e] [--streams N]\n"
            "                  [--ref-iperf3 GBPS|TEXT] [--ref-ucx GBPS|TEXT]\n"
            "  a  pull bandwidth, tcp and shm, 16 KiB .. 4 MiB blocks\n"
            "  b  push bandwidth, the same cells\n"
            "  c  pull at 256 KiB over tcp with 1, 2, 4 streams per link\n"
            "  d  VmRSS of P and D before and after moving 1 GiB each way\n"
            "  e  pull and push over rdma (llmlink.Transport=rdma) on $LLMLINK_RDMA_IP0,\n"
            "     64 KiB / 256 KiB / 1 MiB blocks, one rail, with work requests per second;\n"
            "     two rails when LLMLINK_RDMA_IP1 is set; by default only when\n"
            "     LLMLINK_RDMA_IP0 is set\n"
            "  (ratios, section r, follow from a, b and the references)\n"
            "  --quick        32 MiB per call, 16 KiB / 256 KiB / 1 MiB blocks (a smoke run)\n"
            "  --streams N    llmlink.StreamsPerLink (1..8) for a, b, d; default: the library's\n"
            "  --ref-iperf3, --ref-ucx  reference figures (GB/s) measured by bench/run.sh, or\n"
            "                 a reason why there is none; printed with our ratios to them\n");
}

/* bench_opt_value, with the message when the value is missing: 1 (with
 * *val), 0 (argv[*i] is another argument), -1 (the run is to exit 2). */
static int opt_value(int argc, char **argv, int *i, const char *name, const char **val)
{
    int got = bench_opt_value(argc, argv, i, name, val);
    if (got < 0) {
        fprintf(stderr, "bench_xfer: %s needs a value\n", name);
        usage(stderr);
    }
    return got;
}

int main(int argc, char **argv)
{
    static const bench_conf_t conf = {
        .name = "bench_xfer",
        .fail_as_cell = true,
        .server_label = "P",
        .max_servers = MAX_SERVERS,
        .server_reply_ms = SERVER_REPLY_MS,
        .server_stop_ms = 10000,
    };
    bench_init(&conf);
    config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        int got;
        if (strcmp(a, "--quick") == 0) {
            cfg.quick = true;
        } else if ((got = opt_value(argc, argv, &i, "--only", &val)) != 0) {
            int named = got > 0 ? bench_parse_only(val, 'e', cfg.only) : -1;
            if (named > 0)
                cfg.any_only = true;
            if (got < 0)
                return 2;
            if (named < 0 || !cfg.any_only) {
                usage(stderr);
                return 2;
            }
        } else if ((got = opt_value(argc, argv, &i, "--streams", &val)) != 0) {
            if (got < 0)
                return 2;
            char *end;
            long n = strtol(val, &end, 10);
            if (*val == '\0' || *end != '\0' || n < 1 || n > 8) {
                fprintf(stderr, "bench_xfer: --streams takes 1..8, not '%s'\n", val);
                return 2;
            }
            cfg.streams = (int)n;
        } else if ((got = opt_value(argc, argv, &i, "--ref-iperf3", &val)) != 0) {
            if (got < 0)
                return 2;
            cfg.ref_iperf3 = val;
        } else if ((got = opt_value(argc, argv, &i, "--ref-ucx", &val)) != 0) {
            if (got < 0)
                return 2;
            cfg.ref_ucx = val;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "bench_xfer: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!cfg.any_only) {
        for (int i = 0; i < 4; i++)
            cfg.only[i] = true;
        const char *rip = getenv("LLMLINK_RDMA_IP0");
        cfg.only[4] = rip && *rip; /* in the soft-RoCE VM */
    }
    cfg.tensor_bytes = cfg.quick ? 4 * MIB : 32 * MIB; /* 8 tensors: 32 / 256 MiB per call */
    cfg.reps = cfg.quick ? 2 : 4;                     /* 64 MiB / 1 GiB per run */
    cfg.runs = 3;
    cfg.run_cap_ms = cfg.quick ? 2000 : 5000;
    cfg.rss_bytes = cfg.quick ? 256 * MIB : 1024 * MIB;

    char streams[32];
    if (cfg.streams)
        snprintf(streams, sizeof streams, "%d", cfg.streams);
    else
        snprintf(streams, sizeof streams, "library default");

    char tail[64];
    snprintf(tail, sizeof tail, " | StreamsPerLink %s", streams);
    bench_print_header("llmlink transfer benchmark", " (P and D share them)", cfg.quick,
                       cfg.any_only, tail);

    int64_t t0 = bench_now_ms();
    if (cfg.only[0])
        section_bw(&cfg, false);
    if (cfg.only[1])
        section_bw(&cfg, true);
    if (cfg.only[2])
        section_c(&cfg);
    if (cfg.only[3])
        section_d(&cfg);
    if (cfg.only[4])
        section_e(&cfg);
    if (cfg.only[0] || cfg.only[1] || cfg.only[2])
        section_r(&cfg);
    bench_progress("done in %.1f s", (double)(bench_now_ms() - t0) / 1000.0);

    bench_print_table();
    print_summary(&cfg);
    fflush(stdout);
    bench_stop_all_servers();
    return bench_any_failed() ? 1 : 0;
}

/* small_session.c - one P process and one linked D engine with one-tensor
 * blocks caches (see small_session.h). */
#include "small_session.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define XFER_WAIT_MS "5000"
#define D_CLUSTER_ID 1

static uint64_t g_next_cluster = 3000;

void small_api_error(char *err, size_t len, const char *fn, llmlink_status_t st)
{
    snprintf(err, len, "%s: %s (0x%08" PRIX32 "): %s", fn, llmlink_status_name(st), st,
             llmlink_last_error());
}

/* The byte at offset i of block b under seed: differs per block and seed. */
static uint8_t pat(uint64_t seed, uint64_t b, uint64_t i)
{
    uint64_t x = (seed + b * 0x9E3779B97F4A7C15ull) ^ (i * 0xBF58476D1CE4E5B9ull);
    return (uint8_t)(x ^ (x >> 29) ^ (x >> 47));
}

static llmlink_cache_desc_t desc_of(uint64_t block_bytes, uint64_t nblocks)
{
    llmlink_cache_desc_t d;
    memset(&d, 0, sizeof d);
    d.num_tensors = 1;
    d.data_type = LLMLINK_DT_FLOAT16;
    d.placement = LLMLINK_PLACEMENT_HOST;
    d.num_dims = 2;
    d.shape[0] = (int64_t)nblocks;
    d.shape[1] = (int64_t)(block_bytes / 2);
    return d;
}

static llmlink_cache_key_t key_of(uint64_t cluster_id)
{
    llmlink_cache_key_t k;
    memset(&k, 0, sizeof k);
    k.type = LLMLINK_KEY_BLOCKS;
    k.cluster_id = cluster_id;
    k.prefix_id = -1;
    return k;
}

/* Options of both engines; listen only for P. o has room for 3. */
static size_t opts_build(llmlink_option_t *o, char *listen, size_t llen, bool srv,
                         const char *transport)
{
    size_t n = 0;
    snprintf(listen, llen, "%s:0", bench_ip());
    if (srv)
        o[n++] = (llmlink_option_t){"llm.listenIpInfo", listen};
    o[n++] = (llmlink_option_t){"llm.SyncKvCacheWaitTime", XFER_WAIT_MS};
    o[n++] = (llmlink_option_t){"llmlink.Transport", transport};
    return n;
}

/* P's engine and cache; "" in err when it is up. */
static llmlink_t *p_engine(const small_pconf_t *pc, uint8_t *mem, int64_t *cache_id,
                           uint16_t *port, char *err, size_t len)
{
    llmlink_option_t o[3];
    char listen[80];
    size_t n = opts_build(o, listen, sizeof listen, true, pc->transport);
    llmlink_t *e = NULL;
    llmlink_status_t st = llmlink_create(&e, LLMLINK_ROLE_PROMPT, pc->cluster_id);
    if (st != LLMLINK_SUCCESS)
        small_api_error(err, len, "P llmlink_create", st);
    if (st == LLMLINK_SUCCESS && (st = llmlink_init(e, o, n)) != LLMLINK_SUCCESS)
        small_api_error(err, len, "P llmlink_init", st);
    if (st == LLMLINK_SUCCESS && (st = llmlink_get_listen_port(e, 0, port)) != LLMLINK_SUCCESS)
        small_api_error(err, len, "P llmlink_get_listen_port", st);
    if (st == LLMLINK_SUCCESS) {
        llmlink_cache_desc_t desc = desc_of(pc->block_bytes, pc->nblocks);
        llmlink_cache_key_t key = key_of(pc->cluster_id);
        uint64_t addr = (uint64_t)(uintptr_t)mem;
        st = llmlink_register_blocks_cache(e, &desc, &addr, 1, &key, cache_id);
        if (st != LLMLINK_SUCCESS)
            small_api_error(err, len, "P llmlink_register_blocks_cache", st);
    }
    return e;
}

static void server_child(const bench_child_t *c, const void *arg)
{
    const small_pconf_t *pc = arg;
    char line[512], err[400] = "";
    size_t bytes = (size_t)(pc->block_bytes * pc->nblocks);
    uint8_t *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        snprintf(line, sizeof line, "error mmap: %s\n", strerror(errno));
        bench_write_all(c->rsp_w, line);
        exit(1);
    }
    for (uint64_t b = 0; b < pc->nblocks; b++)
        for (uint64_t i = 0; i < pc->block_bytes; i++)
            mem[b * pc->block_bytes + i] = pat(pc->seed, b, i);
    int64_t cache_id = 0;
    uint16_t port = 0;
    llmlink_t *e = p_engine(pc, mem, &cache_id, &port, err, sizeof err);
    if (err[0]) {
        snprintf(line, sizeof line, "error %s\n", err);
        bench_write_all(c->rsp_w, line);
        llmlink_destroy(e);
        exit(1);
    }
    bench_child_ready(c, port);
    bench_child_serve(c, NULL, NULL);
    int status = llmlink_unregister_cache(e, cache_id) == LLMLINK_SUCCESS ? 0 : 1;
    llmlink_destroy(e);
    munmap(mem, bytes);
    bench_child_exit(c, status);
}

/* D's engine, its cache and the link. */
static bool d_open(small_session_t *s, char *err, size_t len)
{
    llmlink_option_t o[3];
    char listen[80];
    size_t n = opts_build(o, listen, sizeof listen, false, s->pc.transport);
    llmlink_status_t st = llmlink_create(&s->d, LLMLINK_ROLE_DECODER, D_CLUSTER_ID);
    if (st != LLMLINK_SUCCESS) {
        small_api_error(err, len, "llmlink_create", st);
        return false;
    }
    if ((st = llmlink_init(s->d, o, n)) != LLMLINK_SUCCESS) {
        small_api_error(err, len, "llmlink_init", st);
        return false;
    }
    llmlink_cache_desc_t desc = desc_of(s->pc.block_bytes, s->pc.nblocks);
    uint64_t addr = (uint64_t)(uintptr_t)s->mem;
    st = llmlink_register_blocks_cache(s->d, &desc, &addr, 1, NULL, &s->cache_id);
    if (st != LLMLINK_SUCCESS) {
        small_api_error(err, len, "llmlink_register_blocks_cache", st);
        return false;
    }
    bench_server_target(&s->srv, &s->ip, &s->ci);
    llmlink_status_t per = LLMLINK_FAILED;
    st = llmlink_link_clusters(s->d, &s->ci, 1, LINK_TIMEOUT_MS, &per);
    if (st != LLMLINK_SUCCESS) {
        small_api_error(err, len, "llmlink_link_clusters", st);
        return false;
    }
    s->linked = true;
    s->key = key_of(s->pc.cluster_id);
    return true;
}

bool small_session_open(small_session_t *s, const char *transport, uint64_t block_bytes,
                        uint64_t nblocks, char *err, size_t len)
{
    memset(s, 0, sizeof *s);
    s->pc = (small_pconf_t){g_next_cluster++, block_bytes, nblocks, 0, transport};
    s->pc.seed = 0x5EED0000ull + s->pc.cluster_id;
    if (!bench_server_start(&s->srv, s->pc.cluster_id, server_child, &s->pc, err, len))
        return false;
    s->have_srv = true;
    s->bytes = (size_t)(block_bytes * nblocks);
    s->mem = mmap(NULL, s->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s->mem == MAP_FAILED) {
        s->mem = NULL;
        snprintf(err, len, "mmap of %zu bytes: %s", s->bytes, strerror(errno));
        return false;
    }
    memset(s->mem, 0xA5, s->bytes); /* resident, as P's is */
    return d_open(s, err, len);
}

llmlink_status_t small_session_pull(small_session_t *s, uint64_t src, uint64_t dst)
{
    return llmlink_pull_blocks(s->d, &s->key, s->cache_id, &src, 1, &dst, 1, NULL);
}

bool small_session_check(const small_session_t *s, uint64_t src, uint64_t dst, char *err,
                         size_t len)
{
    const uint8_t *b = s->mem + dst * s->pc.block_bytes;
    for (uint64_t i = 0; i < s->pc.block_bytes; i++)
        if (b[i] != pat(s->pc.seed, src, i)) {
            snprintf(err, len, "wrong byte at offset %" PRIu64 " of block %" PRIu64
                     " (pulled from block %" PRIu64 ")", i, dst, src);
            return false;
        }
    return true;
}

uint64_t small_session_requests(const small_session_t *s)
{
    llmlink_xfer_stats_t x;
    memset(&x, 0, sizeof x);
    x.version = LLMLINK_XFER_STATS_VERSION;
    if (llmlink_get_xfer_stats(s->d, &x) != LLMLINK_SUCCESS)
        return 0;
    return strcmp(s->pc.transport, "shm") == 0 ? x.shm_requests : x.tcp_requests;
}

bool small_session_close(small_session_t *s, char *err, size_t len)
{
    bool ok = true;
    if (s->linked) {
        llmlink_status_t per = LLMLINK_FAILED;
        llmlink_status_t st =
            llmlink_unlink_clusters(s->d, &s->ci, 1, UNLINK_TIMEOUT_MS, false, &per);
        if (st != LLMLINK_SUCCESS) {
            small_api_error(err, len, "llmlink_unlink_clusters", st);
            ok = false;
        }
    }
    if (s->cache_id > 0 && llmlink_unregister_cache(s->d, s->cache_id) != LLMLINK_SUCCESS &&
        ok) {
        small_api_error(err, len, "llmlink_unregister_cache", llmlink_last_error_status());
        ok = false;
    }
    llmlink_destroy(s->d);
    s->d = NULL;
    if (s->mem)
        munmap(s->mem, s->bytes);
    s->mem = NULL;
    if (s->have_srv && !bench_server_stop(&s->srv) && ok) {
        snprintf(err, len, "P process did not exit cleanly (see stderr)");
        ok = false;
    }
    s->have_srv = false;
    return ok;
}

/*
 * test_xfer_single.c - transfers between two engines of one process, for
 * what needs a look at both sides' memory at once:
 *
 *  - a refused transfer moves no byte, even when it is spread over several
 *    streams and only one block of it is out of range (every request of a
 *    transfer carries the transfer's bounds; pull and push);
 *  - caches of different tensor counts are refused without layer ranges,
 *    and move with them;
 *  - many threads pulling on one engine at once, every byte checked;
 *  - unregistering a local cache while a pull uses it waits for the pull;
 *  - engines destroyed with links and caches in place free everything
 *    (the sanitizer runs check the "free");
 *  - the proof shm needs before it believes a peer's claim to be on this
 *    host (llk_peer_proof: the claimed pid holds the stream's other end);
 *  - every byte a peer writes into or reads from an engine's caches is
 *    counted on the link it came over (llmlink_get_link_stats), and nothing
 *    else is.
 *
 * Each test runs over tcp (with 4 streams per link, so a transfer is cut
 * into several requests) and over shm; with LLMLINK_TEST_TLS=1 the tcp
 * runs go over mutual TLS (tests/common/tls_env.h). Single process, loopback only, ports
 * from 127.0.0.1:0, every wait bounded by llm.SyncKvCacheWaitTime.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "llmlink.h"
#include "llk_test.h"
#include "tls_env.h"
#include "xfer/xfer.h"

#define PROMPT_ID 1u
#define DECODER_ID 2u
#define NT 8           /* 4 layers of K, V */
#define NB 64          /* blocks per tensor */
#define BS 131072u     /* bytes per block: a tensor (8 MiB) spans several 1 MiB slices */
#define SENTINEL 0xEE

typedef struct fx {
    const char *transport;
    llmlink_t *p, *d;
    uint8_t *pmem[NT], *dmem[NT];
    int64_t pcache, dcache;
    llmlink_cache_key_t key;
} fx_t;

/* P's bytes: a 64-bit mix of tensor and word index, so a block that lands
 * at the wrong place (tensor, block or offset) is caught. */
static uint64_t pattern64(unsigned tensor, uint64_t word)
{
    uint64_t x = (word + 1) * 0x9E3779B97F4A7C15ull ^ ((uint64_t)tensor << 40);
    return x ^ (x >> 29);
}

static llmlink_cache_desc_t desc_of(uint32_t nt)
{
    llmlink_cache_desc_t d = {.num_tensors = nt, .data_type = LLMLINK_DT_FLOAT16,
                              .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                              .shape = {NB, BS / 2}};
    return d;
}

static uint8_t *tensor_alloc(void)
{
    void *p = mmap(NULL, (size_t)NB * BS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    assert_true(p != MAP_FAILED);
    return p;
}

static void fill_prompt(fx_t *fx)
{
    for (unsigned t = 0; t < NT; t++) {
        uint64_t *w = (uint64_t *)(void *)fx->pmem[t];
        for (uint64_t i = 0; i < (uint64_t)NB * BS / 8; i++)
            w[i] = pattern64(t, i);
    }
}

static void fill_sentinel(uint8_t **mem, unsigned nt)
{
    for (unsigned t = 0; t < nt; t++)
        memset(mem[t], SENTINEL, (size_t)NB * BS);
}

/* Every byte of nt tensors is the sentinel. */
static void assert_untouched(uint8_t **mem, unsigned nt, const char *what)
{
    static uint8_t sentinel[BS];
    memset(sentinel, SENTINEL, sizeof sentinel);
    for (unsigned t = 0; t < nt; t++)
        for (unsigned b = 0; b < NB; b++)
            if (memcmp(mem[t] + (size_t)b * BS, sentinel, BS))
                fail_msg("%s: tensor %u block %u changed", what, t, b);
}

/* D's block dst[i] of tensor t holds P's block src[i] of tensor t + dt
 * (P's memory holds pattern64 from fill_prompt). */
static void assert_blocks(const fx_t *fx, const uint64_t *src, const uint64_t *dst, size_t n,
                          unsigned t0, unsigned nt, unsigned dt)
{
    for (unsigned t = t0; t < t0 + nt; t++)
        for (size_t i = 0; i < n; i++)
            if (memcmp(fx->dmem[t] + dst[i] * BS, fx->pmem[t + dt] + src[i] * BS, BS))
                fail_msg("tensor %u, dst block %llu is not P's tensor %u block %llu", t,
                         (unsigned long long)dst[i], t + dt, (unsigned long long)src[i]);
}

static llmlink_xfer_stats_t xstats(llmlink_t *e)
{
    llmlink_xfer_stats_t s;
    memset(&s, 0, sizeof s);
    s.version = LLMLINK_XFER_STATS_VERSION;
    assert_status(llmlink_get_xfer_stats(e, &s), LLMLINK_SUCCESS);
    return s;
}

static llmlink_status_t link_p(fx_t *fx)
{
    uint16_t port;
    assert_status(llmlink_get_listen_port(fx->p, 0, &port), LLMLINK_SUCCESS);
    llmlink_ip_info_t ip = {"127.0.0.1", port};
    llmlink_cluster_info_t c = {PROMPT_ID, LLMLINK_ROLE_PROMPT, &ip, 1, &ip, 1};
    llmlink_status_t st[1];
    return llmlink_link_clusters(fx->d, &c, 1, 5000, st);
}

static int setup(void **state, const char *transport)
{
    fx_t *fx = calloc(1, sizeof *fx);
    fx->transport = transport;
    llmlink_option_t po[6] = {{"llm.listenIpInfo", "127.0.0.1:0"},
                              {"llmlink.Transport", transport},
                              {"llm.SyncKvCacheWaitTime", "10000"}};
    llmlink_option_t dopt[6] = {{"llmlink.Transport", transport},
                                {"llmlink.StreamsPerLink", "4"},
                                {"llm.SyncKvCacheWaitTime", "10000"}};
    /* LLMLINK_TEST_TLS=1: the tcp runs over mutual TLS (tls_env.h). */
    bool tls = strcmp(transport, "tcp") == 0;
    size_t np = tls ? llk_test_tls_options(po, 3, true) : 3;
    size_t nd = tls ? llk_test_tls_options(dopt, 3, false) : 3;
    if (llmlink_create(&fx->p, LLMLINK_ROLE_PROMPT, PROMPT_ID) ||
        llmlink_init(fx->p, po, np) || llmlink_create(&fx->d, LLMLINK_ROLE_DECODER, DECODER_ID) ||
        llmlink_init(fx->d, dopt, nd)) {
        fprintf(stderr, "setup: %s\n", llmlink_last_error());
        return -1;
    }
    if (link_p(fx) != LLMLINK_SUCCESS) {
        fprintf(stderr, "setup: link: %s\n", llmlink_last_error());
        return -1;
    }
    uint64_t pa[NT], da[NT];
    for (int t = 0; t < NT; t++) {
        fx->pmem[t] = tensor_alloc();
        fx->dmem[t] = tensor_alloc();
        pa[t] = (uint64_t)(uintptr_t)fx->pmem[t];
        da[t] = (uint64_t)(uintptr_t)fx->dmem[t];
    }
    fill_prompt(fx);
    fill_sentinel(fx->dmem, NT);
    fx->key = (llmlink_cache_key_t){.type = LLMLINK_KEY_BLOCKS, .cluster_id = PROMPT_ID};
    llmlink_cache_desc_t d = desc_of(NT);
    if (llmlink_register_blocks_cache(fx->p, &d, pa, NT, &fx->key, &fx->pcache) ||
        llmlink_register_blocks_cache(fx->d, &d, da, NT, NULL, &fx->dcache)) {
        fprintf(stderr, "setup: register: %s\n", llmlink_last_error());
        return -1;
    }
    *state = fx;
    return 0;
}

static int setup_tcp(void **state) { return setup(state, "tcp"); }
static int setup_shm(void **state) { return setup(state, "shm"); }

static int teardown(void **state)
{
    fx_t *fx = *state;
    /* Destroyed with the link up and both caches registered. */
    llmlink_destroy(fx->d);
    llmlink_destroy(fx->p);
    for (int t = 0; t < NT; t++) {
        munmap(fx->pmem[t], (size_t)NB * BS);
        munmap(fx->dmem[t], (size_t)NB * BS);
    }
    free(fx);
    return 0;
}

/* ---- refusals move nothing ------------------------------------------------ */

/* The last tensor only: one block list then spreads over the streams. */
static const llmlink_layer_range_t one_tensor = {.src_start = 7, .src_end = 8, .dst_start = 7,
                                                 .dst_end = 8, .tensors_per_layer = 1};

static void test_refused_pull_moves_nothing(void **state)
{
    fx_t *fx = *state;
    uint64_t src[NB], dst[NB];
    for (int i = 0; i < NB; i++) {
        src[i] = (uint64_t)(NB - 1 - i);
        dst[i] = (uint64_t)i;
    }
    /* One tensor (layer 7 of 1 tensor), its 64 blocks cut into 4 requests,
     * one per stream: only the last request holds the bad block. */
    src[NB - 1] = NB + 3;
    llmlink_xfer_stats_t before = xstats(fx->p);
    llmlink_status_t st =
        llmlink_pull_blocks(fx->d, &fx->key, fx->dcache, src, NB, dst, NB, &one_tensor);
    assert_status(st, LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "past the end"));
    assert_untouched(fx->dmem, NT, "refused pull");
    llmlink_xfer_stats_t after = xstats(fx->p);
    assert_int_equal(after.requests_served, before.requests_served);
    assert_true(after.requests_refused > before.requests_refused);
    /* The link still works. */
    src[NB - 1] = 0;
    assert_status(llmlink_pull_blocks(fx->d, &fx->key, fx->dcache, src, NB, dst, NB, NULL),
                  LLMLINK_SUCCESS);
    assert_blocks(fx, src, dst, NB, 0, NT, 0);
}

static void test_refused_push_moves_nothing(void **state)
{
    fx_t *fx = *state;
    fill_sentinel(fx->pmem, NT);
    memset(fx->dmem[7], 0x11, (size_t)NB * BS); /* what a push would write */
    uint64_t src[NB], dst[NB];
    for (int i = 0; i < NB; i++)
        src[i] = dst[i] = (uint64_t)i;
    dst[NB - 1] = 1000000;
    llmlink_status_t st =
        llmlink_push_blocks(fx->d, &fx->key, fx->dcache, src, NB, dst, NB, &one_tensor);
    assert_status(st, LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "past the end"));
    assert_untouched(fx->pmem, NT, "refused push");
}

/* ---- what each link's peer did, counted --------------------------------------- */

static llmlink_link_stats_t link_stats(llmlink_t *e, uint64_t peer)
{
    llmlink_link_stats_t s;
    memset(&s, 0xA5, sizeof s); /* every field must be written */
    s.version = LLMLINK_LINK_STATS_VERSION;
    assert_status(llmlink_get_link_stats(e, peer, &s), LLMLINK_SUCCESS);
    assert_int_equal(s.version, LLMLINK_LINK_STATS_VERSION);
    return s;
}

static void test_link_stats_count_peer_bytes(void **state)
{
    fx_t *fx = *state;
    llmlink_link_stats_t p0 = link_stats(fx->p, DECODER_ID), d0 = link_stats(fx->d, PROMPT_ID);
    assert_int_equal(p0.peer_write_bytes, 0);
    assert_int_equal(p0.peer_read_bytes, 0);
    assert_int_equal(p0.requests_fenced, 0);
    assert_int_equal(p0.rdma_protection, LLMLINK_RDMA_PROTECTION_NONE);
    /* No RDMA on this link: the rail fields (version 2) are written as 0. */
    assert_int_equal(p0.rdma_rails, 0);
    assert_int_equal(p0.rdma_rails_up, 0);
    assert_int_equal(p0.rdma_rail_failovers, 0);
    assert_int_equal(p0.rdma_rail_bytes[LLMLINK_MAX_RDMA_RAILS - 1], 0);
    assert_int_equal(d0.rdma_rail_mtu[0], 0);
    /* A version-1 caller's struct ends before the rail fields: nothing
     * past them is written. */
    llmlink_link_stats_t v1;
    memset(&v1, 0xAB, sizeof v1);
    v1.version = 1;
    assert_status(llmlink_get_link_stats(fx->p, DECODER_ID, &v1), LLMLINK_SUCCESS);
    assert_int_equal(v1.version, 1);
    assert_int_equal(v1.requests_fenced, 0);
    assert_int_equal(v1.rdma_rails, 0xABABABABu);
    assert_int_equal(v1.rdma_rail_mtu[LLMLINK_MAX_RDMA_RAILS - 1], 0xABABABABu);
    uint64_t src[5] = {3, 9, 10, 11, 40}, dst[5] = {0, 1, 2, 3, 63};
    /* A pull of 5 blocks of every tensor: P's memory was read, D's not. */
    assert_status(llmlink_pull_blocks(fx->d, &fx->key, fx->dcache, src, 5, dst, 5, NULL),
                  LLMLINK_SUCCESS);
    uint64_t moved = 5ull * BS * NT;
    llmlink_link_stats_t p1 = link_stats(fx->p, DECODER_ID), d1 = link_stats(fx->d, PROMPT_ID);
    assert_int_equal(p1.peer_read_bytes, moved);
    assert_int_equal(p1.peer_write_bytes, 0);
    assert_int_equal(d1.peer_read_bytes, d0.peer_read_bytes);
    assert_int_equal(d1.peer_write_bytes, d0.peer_write_bytes);
    /* A push of the last tensor's 5 blocks (layer 7): written into P. */
    assert_status(llmlink_push_blocks(fx->d, &fx->key, fx->dcache, dst, 5, src, 5, &one_tensor),
                  LLMLINK_SUCCESS);
    llmlink_link_stats_t p2 = link_stats(fx->p, DECODER_ID);
    assert_int_equal(p2.peer_write_bytes, 5ull * BS);
    assert_int_equal(p2.peer_read_bytes, moved);
    /* A refused request counts nothing. */
    uint64_t bad = NB + 1;
    assert_status(llmlink_push_blocks(fx->d, &fx->key, fx->dcache, dst, 1, &bad, 1, NULL),
                  LLMLINK_PARAM_INVALID);
    llmlink_link_stats_t p3 = link_stats(fx->p, DECODER_ID);
    assert_int_equal(p3.peer_write_bytes, p2.peer_write_bytes);
    assert_int_equal(p3.requests_fenced, 0);
    /* No link with that cluster. */
    llmlink_link_stats_t s = {.version = LLMLINK_LINK_STATS_VERSION};
    assert_status(llmlink_get_link_stats(fx->p, 77, &s), LLMLINK_NOT_YET_LINK);
}

/* ---- tensor counts --------------------------------------------------------- */

static void test_tensor_counts_differ(void **state)
{
    fx_t *fx = *state;
    /* A 6-tensor cache on D (its first 6 tensors), against P's 8. */
    uint64_t da[6];
    for (int t = 0; t < 6; t++)
        da[t] = (uint64_t)(uintptr_t)fx->dmem[t];
    assert_status(llmlink_unregister_cache(fx->d, fx->dcache), LLMLINK_SUCCESS);
    llmlink_cache_desc_t d6 = desc_of(6);
    int64_t c6;
    assert_status(llmlink_register_blocks_cache(fx->d, &d6, da, 6, NULL, &c6), LLMLINK_SUCCESS);
    uint64_t src[2] = {5, 6}, dst[2] = {0, 1};
    llmlink_status_t st = llmlink_pull_blocks(fx->d, &fx->key, c6, src, 2, dst, 2, NULL);
    assert_status(st, LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "different tensor counts"));
    assert_untouched(fx->dmem, 6, "refused pull of 6 tensors from 8");
    /* With layer ranges: P's layers 1..4 into D's layers 0..3. */
    llmlink_layer_range_t lr = {.src_start = 1, .src_end = 4, .dst_start = 0, .dst_end = 3,
                                .tensors_per_layer = 2};
    assert_status(llmlink_pull_blocks(fx->d, &fx->key, c6, src, 2, dst, 2, &lr), LLMLINK_SUCCESS);
    assert_blocks(fx, src, dst, 2, 0, 6, 2);
}

/* ---- threads ---------------------------------------------------------------- */

#define THREADS 8
#define ROUNDS 20

typedef struct {
    fx_t *fx;
    int index;
    llmlink_status_t st;
    char err[256];
} worker_t;

static void *puller(void *arg)
{
    worker_t *w = arg;
    /* Thread i owns D blocks [8i, 8i + 8): no two threads write one block. */
    uint64_t src[8], dst[8];
    for (int r = 0; r < ROUNDS && w->st == LLMLINK_SUCCESS; r++) {
        for (int k = 0; k < 8; k++) {
            src[k] = (uint64_t)((w->index * 11 + r * 7 + k * 5) % NB);
            dst[k] = (uint64_t)(w->index * 8 + k);
        }
        w->st = llmlink_pull_blocks(w->fx->d, &w->fx->key, w->fx->dcache, src, 8, dst, 8, NULL);
        if (w->st != LLMLINK_SUCCESS)
            snprintf(w->err, sizeof w->err, "%s", llmlink_last_error());
    }
    return NULL;
}

static void test_threads_pull_at_once(void **state)
{
    fx_t *fx = *state;
    pthread_t th[THREADS];
    worker_t w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker_t){.fx = fx, .index = i};
        assert_int_equal(pthread_create(&th[i], NULL, puller, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < THREADS; i++)
        if (w[i].st != LLMLINK_SUCCESS)
            fail_msg("thread %d: %s: %s", i, llmlink_status_name(w[i].st), w[i].err);
    /* Each thread's last round is what its blocks hold now. */
    for (int i = 0; i < THREADS; i++) {
        uint64_t src[8], dst[8];
        for (int k = 0; k < 8; k++) {
            src[k] = (uint64_t)((i * 11 + (ROUNDS - 1) * 7 + k * 5) % NB);
            dst[k] = (uint64_t)(i * 8 + k);
        }
        assert_blocks(fx, src, dst, 8, 0, NT, 0);
    }
    assert_int_equal(xstats(fx->d).transfers, THREADS * ROUNDS);
}

/* ---- unregister during a pull -------------------------------------------------- */

typedef struct {
    fx_t *fx;
    llmlink_status_t st;
    int rounds;
} looper_t;

static void *pull_loop(void *arg)
{
    looper_t *l = arg;
    uint64_t src[NB], dst[NB];
    for (int i = 0; i < NB; i++)
        src[i] = dst[i] = (uint64_t)i;
    for (l->rounds = 0; l->rounds < 200; l->rounds++) {
        l->st = llmlink_pull_blocks(l->fx->d, &l->fx->key, l->fx->dcache, src, NB, dst, NB, NULL);
        if (l->st != LLMLINK_SUCCESS)
            break;
    }
    return NULL;
}

static void test_unregister_waits_for_pull(void **state)
{
    fx_t *fx = *state;
    looper_t l = {.fx = fx};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, pull_loop, &l), 0);
    /* Wait (bounded) until the loop has moved something. */
    for (int i = 0; i < 2000 && xstats(fx->d).transfers == 0; i++)
        usleep(1000);
    llmlink_status_t st = llmlink_unregister_cache(fx->d, fx->dcache);
    pthread_join(th, NULL);
    /* The unregister waited for the pull in flight, then won: the loop ends
     * on a cache that no longer exists, never on a half-freed one. */
    assert_status(st, LLMLINK_SUCCESS);
    assert_status(l.st, LLMLINK_KV_CACHE_NOT_EXIST);
    assert_true(l.rounds >= 1);
}

/* ---- no descriptor outlives its link ----------------------------------------- */

static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    for (struct dirent *de; (de = readdir(d));)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void test_relinks_leak_no_descriptor(void **state)
{
    fx_t *fx = *state;
    uint64_t src[4] = {1, 2, 3, 4}, dst[4] = {9, 10, 11, 12};
    llmlink_ip_info_t ip = {"127.0.0.1", 0};
    assert_status(llmlink_get_listen_port(fx->p, 0, &ip.port), LLMLINK_SUCCESS);
    llmlink_cluster_info_t c = {PROMPT_ID, LLMLINK_ROLE_PROMPT, &ip, 1, &ip, 1};
    llmlink_status_t per[1];
    int before = count_fds();
    for (int round = 0; round < 40; round++) {
        assert_status(llmlink_pull_blocks(fx->d, &fx->key, fx->dcache, src, 4, dst, 4, NULL),
                      LLMLINK_SUCCESS);
        /* Alternately both ends told, and only the local end freed. */
        assert_status(llmlink_unlink_clusters(fx->d, &c, 1, 5000, round % 2 == 1, per),
                      LLMLINK_SUCCESS);
        /* A forced unlink leaves P to notice; link again once it has. */
        for (int i = 0; i < 500 && llmlink_check_link_status(fx->p, DECODER_ID) ==
                                       LLMLINK_SUCCESS; i++)
            usleep(2000);
        assert_status(link_p(fx), LLMLINK_SUCCESS);
    }
    assert_blocks(fx, src, dst, 4, 0, NT, 0);
    /* Both engines close their sides on their own threads: wait (bounded)
     * for the count to settle where it started. */
    int after = count_fds();
    for (int i = 0; i < 300 && after > before; i++) {
        usleep(10000);
        after = count_fds();
    }
    assert_int_equal(after, before);
}

/* ---- the proof that shm needs ---------------------------------------------- */

/* A connected loopback pair: *a connects to a listener, *b is accepted. */
static void tcp_pair(int *a, int *b)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &len), 0);
    *a = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(*a, (struct sockaddr *)&sa, sizeof sa), 0);
    *b = accept(l, NULL, NULL);
    assert_true(*b >= 0);
    close(l);
}

static void test_peer_proof(void **state)
{
    (void)state;
    /* A process that exists but holds neither end: started before the
     * sockets, so it inherits none. */
    pid_t other = fork();
    assert_true(other >= 0);
    if (other == 0) {
        pause();
        _exit(0);
    }
    int a, b;
    tcp_pair(&a, &b);
    /* This process holds the other end of a (b) and of b (a). */
    assert_true(llk_peer_proof(a, (uint32_t)getpid()));
    assert_true(llk_peer_proof(b, (uint32_t)getpid()));
    /* A claim naming another process, or no process, is not proven. */
    assert_false(llk_peer_proof(a, (uint32_t)other));
    assert_false(llk_peer_proof(a, 0));
    /* Once the other end is gone there is nothing to prove. */
    close(b);
    assert_false(llk_peer_proof(a, (uint32_t)getpid()));
    close(a);
    kill(other, SIGKILL);
    waitpid(other, NULL, 0);
}

int main(void)
{
    /* Every test over tcp (4 streams per link) and over shm. */
#define BOTH(f) {#f "/tcp", f, setup_tcp, teardown, NULL}, {#f "/shm", f, setup_shm, teardown, NULL}
    const struct CMUnitTest tests[] = {
        BOTH(test_refused_pull_moves_nothing), BOTH(test_refused_push_moves_nothing),
        BOTH(test_tensor_counts_differ),       BOTH(test_threads_pull_at_once),
        BOTH(test_unregister_waits_for_pull),  BOTH(test_relinks_leak_no_descriptor),
        BOTH(test_link_stats_count_peer_bytes),
        cmocka_unit_test(test_peer_proof),
    };
    return cmocka_run_group_tests_name("xfer_single", tests, NULL, NULL);
}

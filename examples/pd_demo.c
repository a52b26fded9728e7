/*
 * pd_demo.c - a prefill/decode run on loopback, P and D as two processes:
 * D links to P and pulls one request's KV cache blocks out of P's cache.
 *
 * The prefill process (PROMPT, the server) listens on 127.0.0.1 with a port
 * the kernel picks, registers its KV cache (32 layers x K/V = 64 tensors,
 * each 64 blocks of 64 KiB, filled with a pattern) as a blocks cache under
 * BlocksCacheKey(prompt cluster, model 0), and hands the port to the
 * decode process (DECODER, the client) over a pipe. The decode process
 * links to it the way the llm_datadist example does (same ip and port in
 * the local and remote ip infos), registers a cache of its own, pulls a
 * request's 24 blocks (random blocks of P's cache into other, random block
 * indices of its own), checks every byte (the pulled blocks hold P's
 * pattern, every other block is untouched), unlinks, and prints what it
 * measured. Exit status 0 means every step did what the contract says and
 * every byte was right.
 *
 * Usage: pd_demo [auto|tcp|shm]   (llmlink.Transport on both engines;
 *                                   default auto: shm on one host)
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llmlink.h"

#define PROMPT_ID 1
#define DECODER_ID 2
#define MODEL_ID 0

/* The KV cache: 32 layers, K and V each, 64 blocks of 16 tokens x 8 heads
 * x 256 dims of fp16 = 64 KiB per block, 4 MiB per tensor, 256 MiB. */
#define LAYERS 32
#define TENSORS (2 * LAYERS)
#define BLOCKS 64
#define BLOCK_TOKENS 16
#define HEADS 8
#define HEAD_DIM 256
#define BLOCK_BYTES ((uint64_t)BLOCK_TOKENS * HEADS * HEAD_DIM * 2)
#define TENSOR_BYTES (BLOCK_BYTES * BLOCKS)
#define CACHE_BYTES (TENSOR_BYTES * TENSORS)
/* One request: 24 blocks of P's cache -> 24 other blocks of D's. */
#define REQ_BLOCKS 24
#define D_POISON 0xEE

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int check(const char *what, llmlink_status_t got, llmlink_status_t want)
{
    printf("  %-48s %-20s %s\n", what, llmlink_status_name(got), got == want ? "ok" : "UNEXPECTED");
    if (got != want) {
        printf("    expected %s; detail: %s\n", llmlink_status_name(want), llmlink_last_error());
        return 1;
    }
    return 0;
}

static int check_true(const char *what, int ok, const char *detail)
{
    printf("  %-48s %-20s %s\n", what, ok ? "yes" : "no", ok ? "ok" : "UNEXPECTED");
    if (!ok && detail && *detail)
        printf("    %s\n", detail);
    return !ok;
}

/* The content of P's cache: 64-bit words that depend on tensor, block and
 * position, so a block moved to the wrong place or by the wrong offset
 * shows. */
static uint64_t pattern(uint32_t tensor, uint64_t block, uint64_t word)
{
    uint64_t x = ((uint64_t)tensor << 48) ^ (block << 32) ^ word;
    x ^= x >> 31;
    x *= 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    return x;
}

static uint8_t *cache_alloc(void)
{
    void *p = mmap(NULL, CACHE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static uint8_t *block_at(uint8_t *cache, uint32_t tensor, uint64_t block)
{
    return cache + tensor * TENSOR_BYTES + block * BLOCK_BYTES;
}

static void cache_addrs(uint8_t *cache, uint64_t *addrs)
{
    for (uint32_t t = 0; t < TENSORS; t++)
        addrs[t] = (uint64_t)(uintptr_t)(cache + t * TENSOR_BYTES);
}

static llmlink_cache_desc_t cache_desc(void)
{
    llmlink_cache_desc_t d;
    memset(&d, 0, sizeof d);
    d.num_tensors = TENSORS;
    d.data_type = LLMLINK_DT_FLOAT16;
    d.placement = LLMLINK_PLACEMENT_HOST;
    d.num_dims = 4;
    d.shape[0] = BLOCKS;
    d.shape[1] = BLOCK_TOKENS;
    d.shape[2] = HEADS;
    d.shape[3] = HEAD_DIM;
    return d;
}

static llmlink_cache_key_t prompt_blocks_key(void)
{
    llmlink_cache_key_t k;
    memset(&k, 0, sizeof k);
    k.type = LLMLINK_KEY_BLOCKS;
    k.cluster_id = PROMPT_ID;
    k.model_id = MODEL_ID;
    k.prefix_id = -1;
    return k;
}

/* xorshift64*: a fixed seed, so every run pulls the same request. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

/* n distinct block indices in [0, BLOCKS), in random order. */
static void pick_blocks(uint64_t *out, size_t n, uint64_t *seed)
{
    uint64_t all[BLOCKS];
    for (uint64_t i = 0; i < BLOCKS; i++)
        all[i] = i;
    for (size_t i = 0; i < n; i++) {
        size_t j = i + (size_t)(rnd(seed) % (BLOCKS - i));
        uint64_t t = all[i];
        all[i] = all[j];
        all[j] = t;
        out[i] = all[i];
    }
}

/* The prefill process: serve until the decode process says "q" (or closes
 * the pipe), answering "c" (check_link_status) requests. */
static int run_prompt(const char *transport, int port_w, int cmd_r, int ans_w, pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        return 1;
    llmlink_t *p = NULL;
    llmlink_option_t opts[] = {
        {"llm.listenIpInfo", "127.0.0.1:0"},
        {"llm.SyncKvCacheWaitTime", "10000"},
        {"llmlink.Transport", transport},
    };
    uint16_t port = 0;
    uint8_t *cache = cache_alloc();
    if (!cache) {
        fprintf(stderr, "prefill: mmap of %" PRIu64 " bytes: %s\n", CACHE_BYTES, strerror(errno));
        return 1;
    }
    for (uint32_t t = 0; t < TENSORS; t++)
        for (uint64_t b = 0; b < BLOCKS; b++) {
            uint64_t *w = (uint64_t *)(void *)block_at(cache, t, b);
            for (uint64_t i = 0; i < BLOCK_BYTES / 8; i++)
                w[i] = pattern(t, b, i);
        }
    uint64_t addrs[TENSORS];
    cache_addrs(cache, addrs);
    llmlink_cache_desc_t desc = cache_desc();
    llmlink_cache_key_t key = prompt_blocks_key();
    int64_t cache_id = 0;
    if (llmlink_create(&p, LLMLINK_ROLE_PROMPT, PROMPT_ID) != LLMLINK_SUCCESS ||
        llmlink_init(p, opts, sizeof opts / sizeof opts[0]) != LLMLINK_SUCCESS ||
        llmlink_get_listen_port(p, 0, &port) != LLMLINK_SUCCESS ||
        llmlink_register_blocks_cache(p, &desc, addrs, TENSORS, &key, &cache_id) !=
            LLMLINK_SUCCESS) {
        fprintf(stderr, "prefill: %s: %s\n", llmlink_status_name(llmlink_last_error_status()),
                llmlink_last_error());
        llmlink_destroy(p);
        return 1;
    }
    if (write(port_w, &port, sizeof port) != (ssize_t)sizeof port)
        return 1;
    char c;
    while (read(cmd_r, &c, 1) == 1 && c == 'c') {
        llmlink_status_t st = llmlink_check_link_status(p, DECODER_ID);
        if (write(ans_w, &st, sizeof st) != (ssize_t)sizeof st)
            break;
    }
    int rc = 0;
    if (llmlink_unregister_cache(p, cache_id) != LLMLINK_SUCCESS) {
        fprintf(stderr, "prefill: unregister_cache: %s\n", llmlink_last_error());
        rc = 1;
    }
    llmlink_destroy(p);
    munmap(cache, CACHE_BYTES);
    return rc;
}

static llmlink_status_t ask_prefill(int cmd_w, int ans_r)
{
    llmlink_status_t st = LLMLINK_FAILED;
    if (write(cmd_w, "c", 1) != 1 || read(ans_r, &st, sizeof st) != (ssize_t)sizeof st)
        return LLMLINK_FAILED;
    return st;
}

/* Checks D's cache: block dst[i] of every tensor holds P's block src[i],
 * every other block still holds the poison. Returns the bytes checked, or
 * 0 with *why set at the first wrong byte. */
static uint64_t verify(uint8_t *cache, const uint64_t *src, const uint64_t *dst, char *why,
                       size_t len)
{
    int64_t from[BLOCKS];
    for (size_t b = 0; b < BLOCKS; b++)
        from[b] = -1;
    for (size_t i = 0; i < REQ_BLOCKS; i++)
        from[dst[i]] = (int64_t)src[i];
    uint64_t checked = 0;
    for (uint32_t t = 0; t < TENSORS; t++)
        for (uint64_t b = 0; b < BLOCKS; b++) {
            uint8_t *blk = block_at(cache, t, b);
            if (from[b] < 0) {
                for (uint64_t i = 0; i < BLOCK_BYTES; i++)
                    if (blk[i] != D_POISON) {
                        snprintf(why, len, "tensor %u block %" PRIu64 " byte %" PRIu64
                                 " was written, but no pulled block goes there", t, b, i);
                        return 0;
                    }
            } else {
                const uint64_t *w = (const uint64_t *)(const void *)blk;
                for (uint64_t i = 0; i < BLOCK_BYTES / 8; i++)
                    if (w[i] != pattern(t, (uint64_t)from[b], i)) {
                        snprintf(why, len, "tensor %u block %" PRIu64 " (from P block %" PRId64
                                 ") wrong at byte %" PRIu64, t, b, from[b], i * 8);
                        return 0;
                    }
            }
            checked += BLOCK_BYTES;
        }
    return checked;
}

int main(int argc, char **argv)
{
    const char *transport = argc > 1 ? argv[1] : "auto";
    if (argc > 2 || (strcmp(transport, "auto") && strcmp(transport, "tcp") &&
                     strcmp(transport, "shm"))) {
        fprintf(stderr, "usage: pd_demo [auto|tcp|shm]\n");
        return 2;
    }
    int port_pipe[2], cmd_pipe[2], ans_pipe[2];
    if (pipe(port_pipe) || pipe(cmd_pipe) || pipe(ans_pipe)) {
        perror("pipe");
        return 1;
    }
    /* Fork first: this process holds no engine yet (fork copies only the
     * calling thread). */
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        close(port_pipe[0]);
        close(cmd_pipe[1]);
        close(ans_pipe[0]);
        _exit(run_prompt(transport, port_pipe[1], cmd_pipe[0], ans_pipe[1], parent));
    }
    close(port_pipe[1]);
    close(cmd_pipe[0]);
    close(ans_pipe[1]);

    int bad = 0;
    uint16_t port = 0;
    if (read(port_pipe[0], &port, sizeof port) != (ssize_t)sizeof port) {
        fprintf(stderr, "decode: the prefill process did not start\n");
        waitpid(pid, NULL, 0);
        return 1;
    }
    printf("llmlink %s P/D demo on loopback, llmlink.Transport=%s\n", llmlink_version_string(),
           transport);
    printf("  prefill (PROMPT, cluster %d) pid %d listens on 127.0.0.1:%u\n", PROMPT_ID, (int)pid,
           port);
    printf("  its KV cache: %d layers x K/V = %d tensors x %d blocks x %" PRIu64 " KiB = %" PRIu64
           " MiB, BlocksCacheKey(%d, model %d)\n",
           LAYERS, TENSORS, BLOCKS, BLOCK_BYTES / 1024, CACHE_BYTES >> 20, PROMPT_ID, MODEL_ID);

    llmlink_t *d = NULL;
    llmlink_option_t opts[] = {
        {"llm.SyncKvCacheWaitTime", "10000"},
        {"llmlink.Transport", transport},
    };
    bad |= check("decode: create", llmlink_create(&d, LLMLINK_ROLE_DECODER, DECODER_ID),
                 LLMLINK_SUCCESS);
    bad |= check("decode: init", llmlink_init(d, opts, sizeof opts / sizeof opts[0]),
                 LLMLINK_SUCCESS);

    /* As in the llm_datadist example: the same ip and port on both sides. */
    llmlink_ip_info_t ip = {"127.0.0.1", port};
    llmlink_cluster_info_t cluster = {PROMPT_ID, LLMLINK_ROLE_PROMPT, &ip, 1, &ip, 1};
    llmlink_status_t per[1];

    double t0 = now_ms();
    bad |= check("decode: link_clusters([prefill], 3000)",
                 llmlink_link_clusters(d, &cluster, 1, 3000, per), LLMLINK_SUCCESS);
    double link_ms = now_ms() - t0;
    bad |= check("  per-cluster status", per[0], LLMLINK_SUCCESS);
    bad |= check("decode: check_link_status(prefill)", llmlink_check_link_status(d, PROMPT_ID),
                 LLMLINK_SUCCESS);
    bad |= check("prefill: check_link_status(decode)", ask_prefill(cmd_pipe[1], ans_pipe[0]),
                 LLMLINK_SUCCESS);

    /* The decode side's cache: same layout, poisoned so that a byte
     * written where no block goes shows. */
    uint8_t *cache = cache_alloc();
    if (!cache) {
        fprintf(stderr, "decode: mmap of %" PRIu64 " bytes: %s\n", CACHE_BYTES, strerror(errno));
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return 1;
    }
    memset(cache, D_POISON, CACHE_BYTES);
    uint64_t addrs[TENSORS];
    cache_addrs(cache, addrs);
    llmlink_cache_desc_t desc = cache_desc();
    int64_t cache_id = 0;
    bad |= check("decode: register_blocks_cache",
                 llmlink_register_blocks_cache(d, &desc, addrs, TENSORS, NULL, &cache_id),
                 LLMLINK_SUCCESS);

    /* One request: 24 of P's blocks into 24 other block indices of D's. */
    uint64_t seed = 0x5EEDC0DEull, src[REQ_BLOCKS], dst[REQ_BLOCKS];
    pick_blocks(src, REQ_BLOCKS, &seed);
    pick_blocks(dst, REQ_BLOCKS, &seed);
    printf("  request: %d blocks, P -> D:", REQ_BLOCKS);
    for (int i = 0; i < REQ_BLOCKS; i++)
        printf("%s %" PRIu64 "->%" PRIu64, i ? "," : "", src[i], dst[i]);
    printf("\n");

    llmlink_cache_key_t key = prompt_blocks_key();
    llmlink_xfer_stats_t x0, x1;
    memset(&x0, 0, sizeof x0);
    memset(&x1, 0, sizeof x1);
    x0.version = x1.version = LLMLINK_XFER_STATS_VERSION;
    llmlink_get_xfer_stats(d, &x0);
    t0 = now_ms();
    llmlink_status_t pst = llmlink_pull_blocks(d, &key, cache_id, src, REQ_BLOCKS, dst,
                                               REQ_BLOCKS, NULL);
    double pull_ms = now_ms() - t0;
    bad |= check("decode: pull_blocks(24 blocks x 64 tensors)", pst, LLMLINK_SUCCESS);
    bad |= check("decode: get_xfer_stats", llmlink_get_xfer_stats(d, &x1), LLMLINK_SUCCESS);
    uint64_t pulled = (uint64_t)REQ_BLOCKS * TENSORS * BLOCK_BYTES;

    char why[200] = "";
    uint64_t checked = pst == LLMLINK_SUCCESS ? verify(cache, src, dst, why, sizeof why) : 0;
    bad |= check_true("decode: every byte of its cache is right", checked == CACHE_BYTES, why);

    t0 = now_ms();
    bad |= check("decode: unlink_clusters(force=false)",
                 llmlink_unlink_clusters(d, &cluster, 1, 3000, false, per), LLMLINK_SUCCESS);
    double unlink_ms = now_ms() - t0;
    bad |= check("prefill: check_link_status(decode)", ask_prefill(cmd_pipe[1], ans_pipe[0]),
                 LLMLINK_NOT_YET_LINK);
    bad |= check("decode: unregister_cache", llmlink_unregister_cache(d, cache_id),
                 LLMLINK_SUCCESS);
    llmlink_destroy(d);
    munmap(cache, CACHE_BYTES);

    /* The prefill process unregisters its cache and exits with 0. */
    if (write(cmd_pipe[1], "q", 1) != 1)
        bad = 1;
    int wst = 0;
    waitpid(pid, &wst, 0);
    bad |= check_true("prefill: exited cleanly", WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "");

    const char *used = x1.shm_requests > x0.shm_requests
                           ? (x1.tcp_requests > x0.tcp_requests ? "shm and tcp" : "shm")
                           : (x1.tcp_requests > x0.tcp_requests ? "tcp" : "?");
    printf("\n  link time (first link, incl. TCP connect)   %8.3f ms\n", link_ms);
    printf("  pulled                                      %8.1f MiB (%d blocks x %d tensors x "
           "%" PRIu64 " KiB), over %s\n",
           (double)pulled / (1 << 20), REQ_BLOCKS, TENSORS, BLOCK_BYTES / 1024, used);
    printf("  pull time                                   %8.3f ms\n", pull_ms);
    printf("  bandwidth                                   %8.2f GB/s\n",
           pull_ms > 0 ? (double)pulled / (pull_ms * 1e6) : 0.0);
    printf("  verified                                    %8.1f MiB (the whole cache)\n",
           (double)checked / (1 << 20));
    printf("  unlink time (both ends)                     %8.3f ms\n", unlink_ms);
    printf("\n%s\n", bad ? "demo FAILED"
                         : "demo passed: D linked to P, pulled a request's blocks, every byte "
                           "verified, unlinked");
    return bad ? 1 : 0;
}

/*
 * test_xfer_fence_tcp.c - tcp fences (issue 13): once a transfer call has
 * returned, whatever its status, no byte of it lands in either engine's
 * memory any more, and a link that broke is never served again.
 *
 *  - a second process (llmlink-node) pushes 256 MiB into this process's
 *    engine with a 20 ms llm.SyncKvCacheWaitTime: the push times out
 *    mid-payload (tried again, up to 5 times, when no byte had landed);
 *    from the moment the node says its call returned, the owner's memory
 *    is checksummed for 500 ms and never changes;
 *  - two threads share a one-stream link: the first times out mid-WRITE
 *    (the owner thread is parked meanwhile, so that it does on any
 *    machine), the second, waiting for the stream, gets NOT_YET_LINK (it
 *    never gets a stream in the middle of the first one's payload), nobody
 *    sees PROTOCOL_ERROR, the second call's target is untouched, and the
 *    first one's payload queued at the owner never lands;
 *  - a raw peer sends a WRITE and part of its payload while the owner
 *    thread is held off the CPU (a signal parks it, as a descheduled
 *    thread would be), then closes its control connection: the payload
 *    queued in the socket, and what it sends after the engine dropped the
 *    link, never lands; the engine stays usable;
 *  - a HELLO claiming the live raw link's cluster id while its payload is
 *    queued is refused (ALREADY_LINK): the old link and its WRITE go on
 *    (a live link is never replaced, issue 14);
 *  - an owner that never confirms (its thread parked through the call):
 *    the failed push still returns, with a WARN naming link and stream,
 *    and the owner, once it runs, stores nothing of the broken link;
 *  - the fence wakes the owner thread: a broken link's stream that waits
 *    for payload is closed at once, not when it would have stalled.
 * The owner's per-link counters (requests_fenced, peer_write_bytes) are
 * read through the xlink (llk_xfer_find_link, an internal function).
 *
 * Loopback only, ports from 127.0.0.1:0, every wait bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "llmlink.h"
#include "llk_test.h"
#include "proc.h"
#include "rawpeer.h"
#include "link/wire.h"
#include "xfer/xfer.h"
#include "xfer/xfer_wire.h"

#define PROMPT_ID 1u
#define NODE_ID 700u
#define DEC_ID 800u
#define RAW_ID 900u
#define RAW_INCARNATION 0x1122334455667788ull
/* The owner's cache: NT tensors of NB blocks of BS bytes (256 MiB). */
#define NT 4u
#define NB 64u
#define BS (1u << 20)
#define TENSOR_BYTES ((size_t)NB * BS)
#define CACHE_BYTES ((size_t)NT * TENSOR_BYTES)
#define IO_MS 5000
#define WATCH_MS 500

typedef struct fx {
    llmlink_t *p;   /* the owner: this process's PROMPT engine */
    uint16_t port;
    uint8_t *mem;   /* its cache, CACHE_BYTES, zeroed */
    int64_t cache;
    llmlink_cache_key_t key;
    llmlink_t *d;   /* an in-process requester (the two-thread test) */
    uint8_t *dmem;
    proc_t node;    /* the pushing process */
    int ctrl, data, ctrl2, data2; /* raw peer sockets */
    uint64_t server_incarnation;
    uint64_t next_req;
} fx_t;

/* llmlink.DebugFenceFill of the owner engine: NULL = the default (off). */
static int setup_with(void **state, const char *fill)
{
    fx_t *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    fx->ctrl = fx->data = fx->ctrl2 = fx->data2 = -1;
    const llmlink_option_t o[] = {{"llm.listenIpInfo", "127.0.0.1:0"},
                                  /* also the owner's stall limit */
                                  {"llm.SyncKvCacheWaitTime", "10000"},
                                  {"llmlink.Transport", "tcp"},
                                  {"llmlink.LivenessIntervalMs", "20000"},
                                  {"llmlink.DebugFenceFill", fill}};
    size_t no = fill ? 5 : 4;
    if (llmlink_create(&fx->p, LLMLINK_ROLE_PROMPT, PROMPT_ID) || llmlink_init(fx->p, o, no) ||
        llmlink_get_listen_port(fx->p, 0, &fx->port))
        return -1;
    fx->mem = mmap(NULL, CACHE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (fx->mem == MAP_FAILED)
        return -1;
    uint64_t addrs[NT];
    for (unsigned t = 0; t < NT; t++)
        addrs[t] = (uint64_t)(uintptr_t)(fx->mem + t * TENSOR_BYTES);
    llmlink_cache_desc_t d = {.num_tensors = NT, .data_type = LLMLINK_DT_UINT8,
                              .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                              .shape = {NB, BS}};
    fx->key = (llmlink_cache_key_t){.type = LLMLINK_KEY_BLOCKS, .cluster_id = PROMPT_ID};
    if (llmlink_register_blocks_cache(fx->p, &d, addrs, NT, &fx->key, &fx->cache))
        return -1;
    *state = fx;
    return 0;
}

static int setup(void **state) { return setup_with(state, NULL); }
static int setup_fill(void **state) { return setup_with(state, "213"); } /* 0xD5 */

static int teardown(void **state)
{
    fx_t *fx = *state;
    int rc = 0;
    if (fx->node.pid && proc_stop_all(&fx->node, 1, IO_MS) != 0)
        rc = -1;
    rawpeer_close(fx->data);
    rawpeer_close(fx->ctrl);
    rawpeer_close(fx->data2);
    rawpeer_close(fx->ctrl2);
    llmlink_set_log_callback(NULL, NULL, LLMLINK_LOG_NONE);
    if (fx->d)
        llmlink_destroy(fx->d);
    llmlink_destroy(fx->p);
    munmap(fx->mem, CACHE_BYTES);
    if (fx->dmem)
        munmap(fx->dmem, CACHE_BYTES);
    free(fx);
    return rc;
}

/* ---- watching the owner's memory -------------------------------------------- */

/* The readers of the owner's memory race, by design, with whatever a
 * broken engine would still write: the test is there to see such a write.
 * The order it relies on (the call returned, the owner closed its stream)
 * crosses processes and sockets, which ThreadSanitizer cannot see. */
#define RACY_READER __attribute__((no_sanitize("thread")))

RACY_READER static uint64_t checksum(const uint8_t *p, size_t len)
{
    const uint64_t *w = (const uint64_t *)p;
    uint64_t a = 0, b = 0;
    for (size_t i = 0; i < len / 8; i++) {
        a += w[i];
        b += a ^ (uint64_t)i;
    }
    return a ^ (b * 0x9E3779B97F4A7C15ull);
}

/* One word of every 4 KiB page: a pass over 256 MiB takes a few ms,
 * where the full checksum takes tens, so the first one is taken before a
 * late write (received a socket buffer at a time) can hide in it. */
RACY_READER static uint64_t sparse_checksum(const uint8_t *p, size_t len)
{
    uint64_t a = 0;
    for (size_t off = 0; off + 8 <= len; off += 4096) /* p is page-aligned */
        a = (a ^ *(const uint64_t *)(p + off)) * 0x100000001B3ull + off;
    return a;
}

typedef struct snap {
    uint64_t sparse, full;
} snap_t;

static snap_t snapshot(const uint8_t *p, size_t len)
{
    snap_t sn = {.sparse = sparse_checksum(p, len)};
    sn.full = checksum(p, len);
    return sn;
}

/* Checksums [p, p + len) again and again for WATCH_MS: every pass must
 * match `was`. Returns the number of passes. */
static unsigned assert_unchanged_since(const snap_t *was, const uint8_t *p, size_t len,
                                       const char *what)
{
    int64_t t0 = proc_now_ms();
    unsigned passes = 0;
    while (proc_now_ms() < t0 + WATCH_MS) {
        if (sparse_checksum(p, len) != was->sparse || checksum(p, len) != was->full)
            fail_msg("%s: the owner's memory changed (%lld ms into the watch, pass %u)", what,
                     (long long)(proc_now_ms() - t0), passes);
        passes++;
        proc_sleep_ms(2);
    }
    return passes;
}

/* The same from now (the first checksum is taken at once). */
static unsigned assert_unchanged(const uint8_t *p, size_t len, const char *what)
{
    snap_t now = snapshot(p, len);
    return assert_unchanged_since(&now, p, len, what);
}

RACY_READER static bool all_zero(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i])
            return false;
    return true;
}

RACY_READER static uint8_t byte_at(const uint8_t *p, size_t off)
{
    return p[off];
}

/* ---- parking the owner thread --------------------------------------------------- */

/* A signal handler holds the owner thread off the CPU, as the scheduler
 * may: bytes then queue in its sockets unread. Bounded: 10 s at most. */
static atomic_int parked, release_park;

static void park_handler(int sig)
{
    (void)sig;
    atomic_store(&parked, 1);
    struct timespec ms = {0, 1000000};
    for (int i = 0; i < 10000 && !atomic_load(&release_park); i++)
        nanosleep(&ms, NULL);
    atomic_store(&parked, 0);
}

/* The tid of the one thread named "xserver" (this process has one engine
 * when it is called), or -1. */
static pid_t find_owner_tid(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    pid_t tid = -1;
    int found = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[300], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(comm, sizeof comm, f) && strncmp(comm, "xserver", 7) == 0) {
            tid = (pid_t)atoi(de->d_name);
            found++;
        }
        fclose(f);
    }
    closedir(d);
    return found == 1 ? tid : -1;
}

/* The thread names itself once it runs: wait (bounded) for that. */
static pid_t owner_tid(void)
{
    pid_t tid = find_owner_tid();
    for (int64_t until = proc_now_ms() + IO_MS; tid < 0 && proc_now_ms() < until;) {
        proc_sleep_ms(1);
        tid = find_owner_tid();
    }
    return tid;
}

static void park_owner(pid_t tid)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = park_handler;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGUSR1, &sa, NULL), 0);
    atomic_store(&release_park, 0);
    assert_true(tid > 0);
    assert_int_equal(syscall(SYS_tgkill, getpid(), tid, SIGUSR1), 0);
    int64_t until = proc_now_ms() + IO_MS;
    while (!atomic_load(&parked) && proc_now_ms() < until)
        proc_sleep_ms(1);
    assert_true(atomic_load(&parked));
}

static void unpark_owner(void)
{
    atomic_store(&release_park, 1);
    int64_t until = proc_now_ms() + IO_MS;
    while (atomic_load(&parked) && proc_now_ms() < until)
        proc_sleep_ms(1);
    assert_false(atomic_load(&parked));
}

/* ---- 1: a second process pushes, and times out mid-payload ------------------ */

/* Links the node to the owner and pushes its whole cache; returns the
 * owner's side of the link (a reference) once the push has returned. */
static llk_xlink_t *node_push(fx_t *fx, long long src, char *reply, size_t cap)
{
    assert_int_equal(proc_cmd(&fx->node, reply, cap, IO_MS, "link 5000 %u@127.0.0.1:%u",
                              PROMPT_ID, fx->port), 0);
    assert_string_equal(reply, "LINK LLM_SUCCESS LLM_SUCCESS");
    llk_xlink_t *xl = llk_xfer_find_link(fx->p, NODE_ID, "test");
    assert_non_null(xl);
    /* The reply line comes once llmlink_push_blocks has returned. */
    assert_int_equal(proc_cmd(&fx->node, reply, cap, 10 * IO_MS,
                              "pushblocks blocks:%u:0 %lld 0-%u 0-%u", PROMPT_ID, src, NB - 1,
                              NB - 1), 0);
    return xl;
}

#define PUSH_TRIES 5

static void test_timed_out_push_from_another_process_lands_nothing_later(void **state)
{
    fx_t *fx = *state;
    static const char *const opts[] = {"llmlink.Transport=tcp", "llmlink.StreamsPerLink=2",
                                       "llm.SyncKvCacheWaitTime=20",
                                       "llmlink.LivenessIntervalMs=20000", NULL};
    char reply[PROC_LINE_MAX];
    assert_int_equal(proc_node_start(&fx->node, "decoder", NODE_ID, NULL, opts, NULL, IO_MS), 0);
    assert_int_equal(proc_cmd(&fx->node, reply, sizeof reply, IO_MS,
                              "reg blocks %u uint8 %u,%u seed=7", NT, NB, BS), 0);
    assert_true(strncmp(reply, "REG LLM_SUCCESS ", 16) == 0);
    long long src = atoll(reply + 16);
    /* On a loaded machine 20 ms may pass before the first byte: then the
     * push is tried again (a timed-out push closed the link: link again). */
    for (int attempt = 1;; attempt++) {
        llk_xlink_t *xl = node_push(fx, src, reply, sizeof reply);
        if (strncmp(reply, "PUSH LLM_WAIT_PROCESS_TIMEOUT", 29) != 0) {
            llk_xlink_unref(xl);
            fail_msg("the push did not time out: %s", reply);
        }
        unsigned passes = assert_unchanged(fx->mem, CACHE_BYTES, "push of 256 MiB");
        assert_true(passes >= 2);
        uint64_t landed = atomic_load(&xl->peer_write_bytes);
        uint64_t fenced = atomic_load(&xl->requests_fenced);
        llk_xlink_unref(xl);
        if (all_zero(fx->mem, CACHE_BYTES)) {
            assert_int_equal(landed, 0);
            if (attempt == PUSH_TRIES)
                fail_msg("%d pushes timed out before any byte landed", PUSH_TRIES);
            continue;
        }
        /* It timed out mid-payload: the owner counted what landed, and
         * the requests it cut short (one per stream). */
        assert_true(landed > 0 && landed < CACHE_BYTES);
        assert_true(fenced >= 1 && fenced <= 2);
        return;
    }
}

/* ---- 2: two calls share a one-stream link ------------------------------------- */

typedef struct push_arg {
    fx_t *fx;
    int64_t src; /* the requester's cache */
    const uint64_t *blocks;
    size_t n;
    llmlink_status_t st;
    char err[512];
} push_arg_t;

static void *push_thread(void *arg)
{
    push_arg_t *a = arg;
    llmlink_cache_key_t k = a->fx->key;
    a->st = llmlink_push_blocks(a->fx->d, &k, a->src, a->blocks, a->n, a->blocks, a->n, NULL);
    snprintf(a->err, sizeof a->err, "%s", llmlink_last_error());
    return NULL;
}

/* An in-process requester engine D (tcp, one stream per link, the given
 * llm.SyncKvCacheWaitTime) with a cache like the owner's, linked to it.
 * Returns D's cache id; *oxl is the owner's side of the link (a
 * reference). */
static int64_t make_requester(fx_t *fx, const char *wait_ms, llk_xlink_t **oxl)
{
    llmlink_option_t o[] = {{"llmlink.Transport", "tcp"}, {"llmlink.StreamsPerLink", "1"},
                            {"llm.SyncKvCacheWaitTime", wait_ms},
                            {"llmlink.LivenessIntervalMs", "20000"}};
    assert_status(llmlink_create(&fx->d, LLMLINK_ROLE_DECODER, DEC_ID), LLMLINK_SUCCESS);
    assert_status(llmlink_init(fx->d, o, 4), LLMLINK_SUCCESS);
    fx->dmem = mmap(NULL, CACHE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(fx->dmem != MAP_FAILED);
    memset(fx->dmem, 0xA5, CACHE_BYTES);
    uint64_t addrs[NT];
    for (unsigned t = 0; t < NT; t++)
        addrs[t] = (uint64_t)(uintptr_t)(fx->dmem + t * TENSOR_BYTES);
    llmlink_cache_desc_t d = {.num_tensors = NT, .data_type = LLMLINK_DT_UINT8,
                              .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                              .shape = {NB, BS}};
    int64_t id;
    assert_status(llmlink_register_blocks_cache(fx->d, &d, addrs, NT, NULL, &id),
                  LLMLINK_SUCCESS);
    llmlink_ip_info_t ip = {"127.0.0.1", fx->port};
    llmlink_cluster_info_t c = {PROMPT_ID, LLMLINK_ROLE_PROMPT, NULL, 0, &ip, 1};
    llmlink_status_t cst[1];
    assert_status(llmlink_link_clusters(fx->d, &c, 1, IO_MS, cst), LLMLINK_SUCCESS);
    *oxl = llk_xfer_find_link(fx->p, DEC_ID, "test");
    assert_non_null(*oxl);
    return id;
}

/* Waits (bounded) until the first byte of a push reached the owner's
 * first block: its payload flows. */
static void wait_first_byte(fx_t *fx)
{
    int64_t until = proc_now_ms() + IO_MS;
    while (byte_at(fx->mem, 0) == 0 && proc_now_ms() < until)
        proc_sleep_ms(1);
    assert_int_not_equal(byte_at(fx->mem, 0), 0);
}

static void test_waiter_of_a_timed_out_write_gets_not_yet_link(void **state)
{
    fx_t *fx = *state;
    pid_t otid = owner_tid(); /* the owner's, before the requester's thread exists */
    llk_xlink_t *oxl;
    int64_t id = make_requester(fx, "400", &oxl);

    /* A: blocks 0..NB-5 of every tensor (240 MiB); B: the last 4 blocks,
     * which A never touches. */
    static uint64_t ablocks[NB - 4], bblocks[4];
    for (unsigned i = 0; i < NB - 4; i++)
        ablocks[i] = i;
    for (unsigned i = 0; i < 4; i++)
        bblocks[i] = NB - 4 + i;
    push_arg_t a = {.fx = fx, .src = id, .blocks = ablocks, .n = NB - 4};
    push_arg_t b = {.fx = fx, .src = id, .blocks = bblocks, .n = 4};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, push_thread, &a), 0);
    /* Once A's payload flows (the owner's first block changes) the owner
     * thread is parked: A stalls mid-WRITE on any machine, and B, started
     * half a wait time later, waits for A's stream until A times out. */
    wait_first_byte(fx);
    park_owner(otid);
    proc_sleep_ms(200);
    assert_int_equal(pthread_create(&tb, NULL, push_thread, &b), 0);
    pthread_join(tb, NULL);
    /* A broke the link (B's answer says so); its payload queued at the
     * owner must never land, from here on. */
    snap_t before = snapshot(fx->mem, CACHE_BYTES);
    unpark_owner();
    pthread_join(ta, NULL);
    if (a.st != LLMLINK_WAIT_PROCESS_TIMEOUT)
        fail_msg("A: %s, expected a timeout mid-WRITE: %s", llmlink_status_name(a.st), a.err);
    if (b.st != LLMLINK_NOT_YET_LINK)
        fail_msg("B: %s, expected NOT_YET_LINK: %s", llmlink_status_name(b.st), b.err);
    for (unsigned t = 0; t < NT; t++)
        assert_true(all_zero(fx->mem + t * TENSOR_BYTES + (size_t)(NB - 4) * BS, 4 * (size_t)BS));
    assert_int_equal(stats_of(fx->p).protocol_errors, 0);
    assert_int_equal(stats_of(fx->d).protocol_errors, 0);
    assert_unchanged_since(&before, fx->mem, CACHE_BYTES, "A's payload queued at the owner");
    /* A's one request was cut short; what landed of it was counted. */
    uint64_t landed = atomic_load(&oxl->peer_write_bytes);
    assert_int_equal(atomic_load(&oxl->requests_fenced), 1);
    llk_xlink_unref(oxl);
    assert_true(landed > 0 && landed < (uint64_t)(NB - 4) * BS * NT);
}

/* ---- 3: an owner that does not confirm ---------------------------------------- */

static pthread_mutex_t warn_mu = PTHREAD_MUTEX_INITIALIZER;
static char warn_text[512];

static void capture_warn(llmlink_log_level_t level, const char *message, void *user_data)
{
    (void)level;
    (void)user_data;
    pthread_mutex_lock(&warn_mu);
    if (strstr(message, "did not end data stream"))
        snprintf(warn_text, sizeof warn_text, "%s", message);
    pthread_mutex_unlock(&warn_mu);
}

/* The owner thread stays parked through the whole call: the failed push
 * cannot hear the owner end its stream, yet it returns (the wait is
 * bounded by min(1000, max(100, llm.SyncKvCacheWaitTime)) ms) and says so
 * in a WARN naming the link and the stream; the owner, once it runs,
 * still stores nothing of the broken link. */
static void test_unconfirmed_fence_returns_with_a_warning(void **state)
{
    fx_t *fx = *state;
    pid_t otid = owner_tid();
    llk_xlink_t *oxl;
    int64_t id = make_requester(fx, "100", &oxl);
    warn_text[0] = '\0';
    llmlink_set_log_callback(capture_warn, NULL, LLMLINK_LOG_WARN);
    static uint64_t blocks[NB];
    for (unsigned i = 0; i < NB; i++)
        blocks[i] = i;
    push_arg_t a = {.fx = fx, .src = id, .blocks = blocks, .n = NB};
    pthread_t ta;
    assert_int_equal(pthread_create(&ta, NULL, push_thread, &a), 0);
    wait_first_byte(fx);
    park_owner(otid);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += IO_MS / 1000;
    int jr = pthread_timedjoin_np(ta, NULL, &ts);
    /* The owner's reactor broke its side of the link (the requester
     * closed the control connection): from now on nothing may land. */
    int64_t until = proc_now_ms() + IO_MS;
    while (!llk_xlink_is_broken(oxl) && proc_now_ms() < until)
        proc_sleep_ms(1);
    snap_t before = snapshot(fx->mem, CACHE_BYTES);
    unpark_owner();
    if (jr != 0) {
        pthread_join(ta, NULL);
        fail_msg("the push did not return within %d ms while the owner was parked", IO_MS);
    }
    llmlink_set_log_callback(NULL, NULL, LLMLINK_LOG_NONE);
    if (a.st != LLMLINK_WAIT_PROCESS_TIMEOUT)
        fail_msg("push: %s, expected a timeout mid-WRITE: %s", llmlink_status_name(a.st), a.err);
    pthread_mutex_lock(&warn_mu);
    char got[sizeof warn_text];
    snprintf(got, sizeof got, "%s", warn_text);
    pthread_mutex_unlock(&warn_mu);
    if (!strstr(got, "did not end data stream 0") || !strstr(got, "127.0.0.1"))
        fail_msg("no WARN naming the link and the stream (got \"%s\")", got);
    assert_true(llk_xlink_is_broken(oxl));
    assert_unchanged_since(&before, fx->mem, CACHE_BYTES, "an unconfirmed fence");
    assert_int_equal(atomic_load(&oxl->requests_fenced), 1);
    llk_xlink_unref(oxl);
}

/* ---- the raw peer ------------------------------------------------------------------- */

static int raw_hello(fx_t *fx, uint64_t incarnation)
{
    int fd = rawpeer_connect(fx->port, IO_MS);
    assert_true(fd >= 0);
    llk_msg_hello_t m = {.client_cluster_id = RAW_ID, .target_cluster_id = PROMPT_ID,
                         .client_role = LLMLINK_ROLE_DECODER, .incarnation = incarnation,
                         .liveness_ms = 20000};
    uint8_t f[LLK_WIRE_MAX_FRAME];
    size_t n = llk_wire_encode_hello(f, sizeof f, LLK_WIRE_VERSION, &m);
    assert_int_equal(rawpeer_send(fd, f, n, IO_MS), RAWPEER_OK);
    llk_frame_header_t h;
    assert_int_equal(rawpeer_recv_frame(fd, &h, f, sizeof f, IO_MS), RAWPEER_OK);
    assert_int_equal(h.type, LLK_MSG_WELCOME);
    llk_msg_welcome_t w;
    const char *why = NULL;
    assert_int_equal(llk_wire_decode_welcome(f, h.length, &w, &why), 0);
    fx->server_incarnation = w.incarnation;
    return fd;
}

/* A forward data stream of the raw link at `incarnation`. The answer
 * (ATTACH_OK) comes from the reactor, so this works while the owner
 * thread is parked. */
static int raw_attach(fx_t *fx, uint64_t incarnation)
{
    int fd = rawpeer_connect(fx->port, IO_MS);
    assert_true(fd >= 0);
    llk_host_id_t me;
    llk_host_id_self(&me);
    llk_msg_attach_t a = {.client_cluster_id = RAW_ID, .server_cluster_id = PROMPT_ID,
                          .client_incarnation = incarnation,
                          .server_incarnation = fx->server_incarnation, .stream_index = 0,
                          .direction = 0, .transport = 0, .pidns = me.pidns,
                          .pid = (uint32_t)getpid()};
    memcpy(a.boot_id, me.boot_id, sizeof a.boot_id);
    uint8_t f[LLK_WIRE_MAX_FRAME];
    size_t n = llk_wire_encode_attach(f, sizeof f, LLK_WIRE_VERSION, &a);
    assert_int_equal(rawpeer_send(fd, f, n, IO_MS), RAWPEER_OK);
    llk_frame_header_t h;
    assert_int_equal(rawpeer_recv_frame(fd, &h, f, sizeof f, IO_MS), RAWPEER_OK);
    assert_int_equal(h.type, LLK_MSG_ATTACH_OK);
    return fd;
}

/* A WRITE of `len` bytes at the start of tensor t, sent on fd. */
static void send_write(fx_t *fx, int fd, unsigned t, uint64_t len)
{
    llk_xseg_wire_t seg = {.tensor = t, .offset = 0, .length = len};
    llk_xreq_t r = {.op = LLK_XOP_WRITE, .kind = LLK_XKIND_BLOCKS, .key = fx->key,
                    .unit_bytes = BS, .num_tensors_hint = t + 1, .nseg = 1,
                    .bound_end = len};
    uint8_t f[LLK_XWIRE_HEADER_SIZE + 256];
    size_t n = llk_xwire_encode_req(f, sizeof f, ++fx->next_req, &r, &seg);
    assert_true(n > 0);
    assert_int_equal(rawpeer_send(fd, f, n, IO_MS), RAWPEER_OK);
}

/* Reads one XRESP on fd: its status. */
static uint32_t recv_resp(int fd)
{
    uint8_t hb[LLK_XWIRE_HEADER_SIZE], buf[1024];
    assert_int_equal(rawpeer_recv_exact(fd, hb, sizeof hb, IO_MS), RAWPEER_OK);
    llk_xframe_header_t h;
    const char *why = NULL;
    assert_int_equal(llk_xwire_read_header(hb, &h, &why), 0);
    assert_int_equal(h.type, LLK_XMSG_RESP);
    assert_true(h.length <= sizeof buf);
    assert_int_equal(rawpeer_recv_exact(fd, buf, h.length, IO_MS), RAWPEER_OK);
    llk_xresp_t r;
    assert_int_equal(llk_xwire_decode_resp(buf, h.length, &r, &why), 0);
    return r.status;
}

#define RAW_WRITE_BYTES ((uint64_t)4 * BS)
#define RAW_QUEUED (64u << 10) /* payload queued while the owner is parked */

/* Links, attaches, starts a WRITE into tensor 0 and gets its "go". The
 * returned xlink (a reference: llk_xlink_unref) shows the link's counters
 * after it broke. */
static llk_xlink_t *raw_write_started(fx_t *fx)
{
    fx->ctrl = raw_hello(fx, RAW_INCARNATION);
    fx->data = raw_attach(fx, RAW_INCARNATION);
    llk_xlink_t *xl = llk_xfer_find_link(fx->p, RAW_ID, "test");
    assert_non_null(xl);
    send_write(fx, fx->data, 0, RAW_WRITE_BYTES);
    assert_int_equal(recv_resp(fx->data), LLMLINK_SUCCESS); /* go */
    return xl;
}

static void send_payload(int fd, size_t len, uint8_t byte)
{
    static uint8_t buf[RAW_QUEUED];
    memset(buf, byte, sizeof buf);
    assert_true(len <= sizeof buf);
    assert_int_equal(rawpeer_send(fd, buf, len, IO_MS), RAWPEER_OK);
}

static void wait_unlinked(fx_t *fx)
{
    int64_t until = proc_now_ms() + IO_MS;
    while (llmlink_check_link_status(fx->p, RAW_ID) == LLMLINK_SUCCESS && proc_now_ms() < until)
        proc_sleep_ms(2);
    assert_status(llmlink_check_link_status(fx->p, RAW_ID), LLMLINK_NOT_YET_LINK);
}

/* The fenced request is counted; nothing of it was stored. */
static void assert_fenced(llk_xlink_t *xl)
{
    assert_int_equal(atomic_load(&xl->requests_fenced), 1);
    assert_int_equal(atomic_load(&xl->peer_write_bytes), 0);
    llk_xlink_unref(xl);
}

static void test_payload_queued_when_the_link_broke_never_lands(void **state)
{
    fx_t *fx = *state;
    llk_xlink_t *xl = raw_write_started(fx);
    park_owner(owner_tid());
    send_payload(fx->data, RAW_QUEUED, 0x5A);
    rawpeer_close(fx->ctrl); /* the reactor drops the link */
    fx->ctrl = -1;
    wait_unlinked(fx);
    unpark_owner();
    /* More payload after the engine dropped the link: refused or
     * discarded, never stored (a reset may end the send). */
    static uint8_t more[RAW_QUEUED];
    memset(more, 0x6B, sizeof more);
    (void)rawpeer_send(fx->data, more, sizeof more, 200);
    assert_int_equal(rawpeer_wait_closed(fx->data, IO_MS), RAWPEER_OK);
    assert_unchanged(fx->mem, TENSOR_BYTES, "raw WRITE of a dropped link");
    assert_true(all_zero(fx->mem, RAW_WRITE_BYTES));
    assert_fenced(xl);
    /* The engine stays usable: a new link's WRITE is served. */
    fx->ctrl2 = raw_hello(fx, RAW_INCARNATION + 1);
    fx->data2 = raw_attach(fx, RAW_INCARNATION + 1);
    send_write(fx, fx->data2, 1, RAW_QUEUED);
    assert_int_equal(recv_resp(fx->data2), LLMLINK_SUCCESS);
    send_payload(fx->data2, RAW_QUEUED, 0x77);
    assert_int_equal(recv_resp(fx->data2), LLMLINK_SUCCESS);
    assert_int_equal(byte_at(fx->mem, TENSOR_BYTES), 0x77);
    assert_int_equal(byte_at(fx->mem, TENSOR_BYTES + RAW_QUEUED - 1), 0x77);
}

/* A HELLO with the raw link's cluster id while that link is alive: the
 * server answers REJECT ALREADY_LINK (status), without a WELCOME. */
static uint32_t raw_hello_refused(fx_t *fx, uint64_t incarnation)
{
    int fd = rawpeer_connect(fx->port, IO_MS);
    assert_true(fd >= 0);
    llk_msg_hello_t m = {.client_cluster_id = RAW_ID, .target_cluster_id = PROMPT_ID,
                         .client_role = LLMLINK_ROLE_DECODER, .incarnation = incarnation,
                         .liveness_ms = 20000};
    uint8_t f[LLK_WIRE_MAX_FRAME];
    size_t n = llk_wire_encode_hello(f, sizeof f, LLK_WIRE_VERSION, &m);
    assert_int_equal(rawpeer_send(fd, f, n, IO_MS), RAWPEER_OK);
    llk_frame_header_t h;
    assert_int_equal(rawpeer_recv_frame(fd, &h, f, sizeof f, IO_MS), RAWPEER_OK);
    assert_int_equal(h.type, LLK_MSG_REJECT);
    llk_msg_reject_t r;
    const char *why = NULL;
    assert_int_equal(llk_wire_decode_reject(f, h.length, &r, &why), 0);
    rawpeer_close(fd);
    return r.status;
}

/* Another HELLO with the cluster id of a live link (issue 14: it used to
 * replace the link) is refused while the old link's WRITE is queued at a
 * parked owner: the old link stays, its WRITE completes and lands. */
static void test_hello_claiming_a_live_link_leaves_its_write_alone(void **state)
{
    fx_t *fx = *state;
    llk_xlink_t *xl = raw_write_started(fx);
    park_owner(owner_tid());
    send_payload(fx->data, RAW_QUEUED, 0x5A);
    assert_int_equal(raw_hello_refused(fx, RAW_INCARNATION + 1), LLMLINK_ALREADY_LINK);
    assert_status(llmlink_check_link_status(fx->p, RAW_ID), LLMLINK_SUCCESS);
    unpark_owner();
    for (uint64_t sent = RAW_QUEUED; sent < RAW_WRITE_BYTES; sent += RAW_QUEUED)
        send_payload(fx->data, RAW_QUEUED, 0x5A);
    assert_int_equal(recv_resp(fx->data), LLMLINK_SUCCESS);
    assert_int_equal(byte_at(fx->mem, 0), 0x5A);
    assert_int_equal(byte_at(fx->mem, RAW_WRITE_BYTES - 1), 0x5A);
    assert_int_equal(atomic_load(&xl->requests_fenced), 0);
    assert_int_equal(atomic_load(&xl->peer_write_bytes), RAW_WRITE_BYTES);
    assert_false(llk_xlink_is_broken(xl));
    llk_xlink_unref(xl);
}

/* llmlink.DebugFenceFill: a WRITE fenced after part of its payload keeps
 * what it received and has the rest filled with the option's byte, which
 * stays so (no late write), and past the request nothing is touched. */
static void test_debug_fence_fill_marks_the_unreceived_range(void **state)
{
    fx_t *fx = *state;
    llk_xlink_t *xl = raw_write_started(fx);
    send_payload(fx->data, RAW_QUEUED, 0x5A);
    /* Wait until the owner stored it (the counter moves after recvmsg). */
    int64_t until = proc_now_ms() + IO_MS;
    while (atomic_load(&xl->peer_write_bytes) < RAW_QUEUED && proc_now_ms() < until)
        proc_sleep_ms(2);
    assert_int_equal(atomic_load(&xl->peer_write_bytes), RAW_QUEUED);
    rawpeer_close(fx->ctrl); /* the reactor drops the link: the WRITE is fenced */
    fx->ctrl = -1;
    wait_unlinked(fx);
    assert_int_equal(rawpeer_wait_closed(fx->data, IO_MS), RAWPEER_OK);
    for (uint64_t i = 0; i < RAW_WRITE_BYTES; i += 4096)
        assert_int_equal(byte_at(fx->mem, i), i < RAW_QUEUED ? 0x5A : 0xD5);
    assert_int_equal(byte_at(fx->mem, RAW_QUEUED - 1), 0x5A);
    assert_int_equal(byte_at(fx->mem, RAW_QUEUED), 0xD5);
    assert_int_equal(byte_at(fx->mem, RAW_WRITE_BYTES - 1), 0xD5);
    assert_true(all_zero(fx->mem + RAW_WRITE_BYTES, TENSOR_BYTES - RAW_WRITE_BYTES));
    assert_unchanged(fx->mem, TENSOR_BYTES, "a fenced and filled WRITE");
    assert_int_equal(atomic_load(&xl->requests_fenced), 1);
    llk_xlink_unref(xl);
}

/* The fence's shutdown wakes the owner thread: a stream waiting for
 * payload that never comes is closed at once, not by the stall timer. */
static void test_broken_link_idle_owner_stream_ends_at_once(void **state)
{
    fx_t *fx = *state;
    llk_xlink_t *xl = raw_write_started(fx);
    rawpeer_close(fx->ctrl);
    fx->ctrl = -1;
    wait_unlinked(fx);
    /* Within IO_MS, half the owner's stall limit (its
     * llm.SyncKvCacheWaitTime, 10 s): the stall timer did not end it. */
    if (rawpeer_wait_closed(fx->data, IO_MS) != RAWPEER_OK)
        fail_msg("the owner stream of the broken link was not closed within %d ms", IO_MS);
    assert_fenced(xl);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_timed_out_push_from_another_process_lands_nothing_later),
        T(test_waiter_of_a_timed_out_write_gets_not_yet_link),
        T(test_unconfirmed_fence_returns_with_a_warning),
        T(test_payload_queued_when_the_link_broke_never_lands),
        T(test_hello_claiming_a_live_link_leaves_its_write_alone),
        T(test_broken_link_idle_owner_stream_ends_at_once),
        cmocka_unit_test_setup_teardown(test_debug_fence_fill_marks_the_unreceived_range,
                                        setup_fill, teardown),
    };
    return cmocka_run_group_tests_name("xfer_fence_tcp", tests, NULL, NULL);
}

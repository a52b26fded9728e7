/*
 * test_xfer_cancel.c - cancel with a fence, against the transfer plane
 * (llk_xfer_run with a cancel, xfer/cancel.h), over tcp and shm, pulls and
 * pushes (issue 15).
 *
 * The owner is a PROMPT engine in a forked child whose blocks cache lives
 * in a MAP_SHARED region this process reads too; the requester is a
 * DECODER engine here. Each round runs one transfer of a 4 MiB block range
 * on a thread and cancels it from the test thread after a random delay
 * (seeded: the seed is printed, LLK_CANCEL_SEED replays it). Once
 * llk_cancel_wait_fenced says the fence holds, the destination range (pull:
 * this engine's cache; push: the child's) is checksummed, and it must keep
 * that checksum for 200 ms: every later round checks every range still in
 * its window, and a range is used again only after its window. Rounds go
 * to ranges not in a window, so a late byte of any earlier round shows.
 *
 * Per outcome:
 *  - SUCCESS (the transfer finished before it saw the cancel): the range
 *    holds the source's bytes.
 *  - CANCELLED: the link stays usable: a probe pull of another block
 *    succeeds at once.
 *  - CANCELLED_LINK_CLOSED: the probe gets NOT_YET_LINK until the test
 *    links again, then succeeds.
 * The status given with the fence (llk_cancel_fenced_as) is the call's.
 * Every status is one of these; each kind of transfer must see at least
 * one cancel that stopped it. 250 rounds per transport and direction (50
 * under a sanitizer, LLMLINK_SANITIZER).
 *
 * Loopback only; every wait bounded; the child dies with the test
 * (PR_SET_PDEATHSIG) and is reaped in the teardown.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llmlink.h"
#include "llk_test.h"
#include "base/clock.h"
#include "link/engine.h"
#include "xfer/cancel.h"
#include "xfer/xfer.h"

#define PROMPT_ID 1u
#define DEC_ID 2u
#define IO_MS 10000
#define NT 2u
#define BS (64u * 1024u)
#define RANGE_BLOCKS 32u
#define NRANGES 8u
#define PROBE_BLOCK (NRANGES * RANGE_BLOCKS) /* one block after the ranges */
#define NB (PROBE_BLOCK + 1u)
#define TENSOR_BYTES ((size_t)NB * BS)
#define CACHE_BYTES (NT * TENSOR_BYTES)
#define QUIET_MS 200
#define ROUNDS 250
#define MAX_DELAY_US 3000

typedef struct watch {
    bool on;
    uint64_t sum;
    int64_t until;
    int round;
} watch_t;

typedef struct fx {
    const char *transport;
    uint8_t *rmem;    /* the child's cache (MAP_SHARED) */
    uint8_t *lmem;    /* this engine's cache */
    pid_t child;
    int port_rd, hold_wr; /* pipes to the child */
    uint16_t port;
    llmlink_t *d;
    int64_t cache;
    unsigned seed;
    watch_t w[NRANGES];
} fx_t;

/* ---- the owner process ---------------------------------------------------- */

static void child_main(const char *transport, uint8_t *rmem, int port_wr, int hold_rd)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    const llmlink_option_t o[] = {{"llm.listenIpInfo", "127.0.0.1:0"},
                                  {"llm.SyncKvCacheWaitTime", "5000"},
                                  {"llmlink.Transport", transport},
                                  {"llmlink.LivenessIntervalMs", "20000"}};
    llmlink_t *p = NULL;
    uint16_t port = 0;
    if (llmlink_create(&p, LLMLINK_ROLE_PROMPT, PROMPT_ID) || llmlink_init(p, o, 4) ||
        llmlink_get_listen_port(p, 0, &port))
        _exit(2);
    uint64_t addrs[NT];
    for (unsigned t = 0; t < NT; t++)
        addrs[t] = (uint64_t)(uintptr_t)(rmem + t * TENSOR_BYTES);
    llmlink_cache_desc_t d = {.num_tensors = NT, .data_type = LLMLINK_DT_UINT8,
                              .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                              .shape = {NB, BS}};
    llmlink_cache_key_t key = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = PROMPT_ID};
    int64_t id;
    if (llmlink_register_blocks_cache(p, &d, addrs, NT, &key, &id))
        _exit(3);
    if (write(port_wr, &port, sizeof port) != (ssize_t)sizeof port)
        _exit(4);
    char c;
    while (read(hold_rd, &c, 1) < 0 && errno == EINTR) /* until the test closes it */
        ;
    llmlink_destroy(p);
    _exit(0);
}

/* ---- fixture -------------------------------------------------------------- */

static llmlink_status_t link_once(fx_t *fx)
{
    llmlink_ip_info_t ip = {"127.0.0.1", fx->port};
    llmlink_cluster_info_t c = {PROMPT_ID, LLMLINK_ROLE_PROMPT, NULL, 0, &ip, 1};
    llmlink_status_t cst[1] = {0};
    llmlink_status_t st = llmlink_link_clusters(fx->d, &c, 1, IO_MS, cst);
    return st == LLMLINK_SUCCESS ? cst[0] : st;
}

/* Links again after the link was closed: the old one may take a moment
 * to go on the owner's side (bounded). */
static void relink(fx_t *fx)
{
    int64_t until = llk_now_ms() + IO_MS;
    llmlink_status_t st;
    while ((st = link_once(fx)) != LLMLINK_SUCCESS && llk_now_ms() < until)
        poll(NULL, 0, 5);
    assert_status(st, LLMLINK_SUCCESS);
}

static int setup_with(void **state, const char *transport)
{
    fx_t *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    fx->transport = transport;
    fx->rmem = mmap(NULL, CACHE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    fx->lmem = mmap(NULL, CACHE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (fx->rmem == MAP_FAILED || fx->lmem == MAP_FAILED)
        return -1;
    int pp[2], hp[2];
    if (pipe(pp) || pipe(hp))
        return -1;
    /* Before this process has an engine (no thread to lose in the fork). */
    fx->child = fork();
    if (fx->child < 0)
        return -1;
    if (fx->child == 0) {
        close(pp[0]);
        close(hp[1]);
        child_main(transport, fx->rmem, pp[1], hp[0]);
    }
    close(pp[1]);
    close(hp[0]);
    fx->port_rd = pp[0];
    fx->hold_wr = hp[1];
    struct pollfd pf = {.fd = fx->port_rd, .events = POLLIN};
    if (poll(&pf, 1, IO_MS) != 1 || read(fx->port_rd, &fx->port, sizeof fx->port) != 2)
        return -1;
    const llmlink_option_t o[] = {{"llmlink.Transport", transport},
                                  {"llmlink.StreamsPerLink", "2"},
                                  {"llm.SyncKvCacheWaitTime", "5000"},
                                  {"llmlink.LivenessIntervalMs", "20000"}};
    if (llmlink_create(&fx->d, LLMLINK_ROLE_DECODER, DEC_ID) || llmlink_init(fx->d, o, 4))
        return -1;
    uint64_t addrs[NT];
    for (unsigned t = 0; t < NT; t++)
        addrs[t] = (uint64_t)(uintptr_t)(fx->lmem + t * TENSOR_BYTES);
    llmlink_cache_desc_t d = {.num_tensors = NT, .data_type = LLMLINK_DT_UINT8,
                              .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                              .shape = {NB, BS}};
    if (llmlink_register_blocks_cache(fx->d, &d, addrs, NT, NULL, &fx->cache))
        return -1;
    if (link_once(fx) != LLMLINK_SUCCESS)
        return -1;
    const char *env = getenv("LLK_CANCEL_SEED");
    fx->seed = env ? (unsigned)strtoul(env, NULL, 0) : (unsigned)time(NULL) ^ (unsigned)getpid();
    print_message("test_xfer_cancel: %s seed %u (LLK_CANCEL_SEED replays it)\n", transport,
                  fx->seed);
    *state = fx;
    return 0;
}

static int setup_tcp(void **state) { return setup_with(state, "tcp"); }
static int setup_shm(void **state) { return setup_with(state, "shm"); }

static int teardown(void **state)
{
    fx_t *fx = *state;
    if (!fx)
        return 0;
    if (fx->d)
        llmlink_destroy(fx->d);
    int rc = 0;
    if (fx->child > 0) {
        close(fx->hold_wr); /* the child destroys its engine and exits */
        int st = 0;
        int64_t until = llk_now_ms() + IO_MS;
        pid_t r;
        while ((r = waitpid(fx->child, &st, WNOHANG)) == 0 && llk_now_ms() < until)
            poll(NULL, 0, 10);
        if (r == 0) {
            kill(fx->child, SIGKILL);
            waitpid(fx->child, &st, 0);
            rc = -1;
        }
        close(fx->port_rd);
    }
    munmap(fx->rmem, CACHE_BYTES);
    munmap(fx->lmem, CACHE_BYTES);
    free(fx);
    return rc;
}

/* ---- ranges and checksums --------------------------------------------------- */

static uint8_t *range_at(uint8_t *mem, unsigned t, unsigned r)
{
    return mem + t * TENSOR_BYTES + (size_t)r * RANGE_BLOCKS * BS;
}

static uint64_t range_sum(uint8_t *mem, unsigned r)
{
    uint64_t h = 1469598103934665603ull;
    for (unsigned t = 0; t < NT; t++) {
        const uint64_t *w = (const uint64_t *)(const void *)range_at(mem, t, r);
        for (size_t i = 0; i < RANGE_BLOCKS * BS / 8; i++)
            h = (h ^ w[i]) * 1099511628211ull + (i & 0xff);
    }
    return h;
}

static void fill_range(uint8_t *mem, unsigned r, uint8_t v)
{
    for (unsigned t = 0; t < NT; t++)
        memset(range_at(mem, t, r), v + (uint8_t)t, RANGE_BLOCKS * BS);
}

static bool range_is(uint8_t *mem, unsigned r, uint8_t v)
{
    for (unsigned t = 0; t < NT; t++) {
        const uint8_t *p = range_at(mem, t, r);
        for (size_t i = 0; i < RANGE_BLOCKS * BS; i++)
            if (p[i] != (uint8_t)(v + t))
                return false;
    }
    return true;
}

/* Every range in its window still has its checksum; windows past their end
 * are closed after a last look. */
static void check_watches(fx_t *fx, bool push)
{
    uint8_t *dst = push ? fx->rmem : fx->lmem;
    int64_t now = llk_now_ms();
    for (unsigned r = 0; r < NRANGES; r++) {
        watch_t *w = &fx->w[r];
        if (!w->on)
            continue;
        uint64_t h = range_sum(dst, r);
        if (h != w->sum)
            fail_msg("%s %s: range %u changed %lld ms after the cancel of round %d returned "
                     "(seed %u)", fx->transport, push ? "push" : "pull", r,
                     (long long)(now - (w->until - QUIET_MS)), w->round, fx->seed);
        if (now >= w->until)
            w->on = false;
    }
}

/* A range outside every window, waiting (and checking) until one is free. */
static unsigned free_range(fx_t *fx, bool push, unsigned hint)
{
    for (int guard = 0; guard < 10000; guard++) {
        for (unsigned k = 0; k < NRANGES; k++) {
            unsigned r = (hint + k) % NRANGES;
            if (!fx->w[r].on)
                return r;
        }
        poll(NULL, 0, 2);
        check_watches(fx, push);
    }
    fail_msg("no range came out of its window");
    return 0;
}

static void drain_watches(fx_t *fx, bool push)
{
    for (int guard = 0; guard < 10000; guard++) {
        check_watches(fx, push);
        bool any = false;
        for (unsigned r = 0; r < NRANGES; r++)
            any |= fx->w[r].on;
        if (!any)
            return;
        poll(NULL, 0, 5);
    }
    fail_msg("windows did not end");
}

/* ---- one transfer on a thread --------------------------------------------- */

typedef struct job {
    fx_t *fx;
    llk_xfer_req_t req;
    uint64_t blocks[RANGE_BLOCKS];
    llk_xfer_cancel_t cx;
    llmlink_status_t st;
    char msg[512];
} job_t;

static void make_req(job_t *j, fx_t *fx, bool push, uint64_t first, size_t n)
{
    for (size_t i = 0; i < n; i++)
        j->blocks[i] = first + i;
    j->req = (llk_xfer_req_t){.fn = push ? "push_blocks" : "pull_blocks",
                              .push = push,
                              .key = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = PROMPT_ID},
                              .local_id = fx->cache,
                              .kind = LLK_XKIND_BLOCKS,
                              .local_blocks = j->blocks,
                              .remote_blocks = j->blocks,
                              .nblocks = n};
}

static void *run_job(void *arg)
{
    job_t *j = arg;
    j->st = llk_xfer_run(j->fx->d, &j->req, &j->cx);
    snprintf(j->msg, sizeof j->msg, "%s", llmlink_last_error());
    /* As the task engine does: once the call returned, nothing of it lands. */
    llk_cancel_fenced(&j->cx);
    return NULL;
}

/* A one-block pull of the probe block (no cancel). */
static llmlink_status_t probe(fx_t *fx, char *msg, size_t cap)
{
    job_t j;
    memset(&j, 0, sizeof j);
    j.fx = fx;
    make_req(&j, fx, false, PROBE_BLOCK, 1);
    llmlink_status_t st = llk_xfer_run(fx->d, &j.req, NULL);
    snprintf(msg, cap, "%s", llmlink_last_error());
    return st;
}

typedef struct tally {
    unsigned ok, cancelled, closed;
} tally_t;

static void one_round(fx_t *fx, bool push, int round, unsigned *hint, tally_t *t)
{
    unsigned r = free_range(fx, push, *hint);
    *hint = r + 1;
    uint8_t *src = push ? fx->lmem : fx->rmem, *dst = push ? fx->rmem : fx->lmem;
    uint8_t sv = (uint8_t)(0x10 + (round % 64) * 2), dv = (uint8_t)(0x90 + (round % 32) * 2);
    fill_range(src, r, sv);
    fill_range(dst, r, dv);
    job_t *j = calloc(1, sizeof *j);
    assert_non_null(j);
    j->fx = fx;
    make_req(j, fx, push, (uint64_t)r * RANGE_BLOCKS, RANGE_BLOCKS);
    assert_int_equal(llk_cancel_init(&j->cx), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_job, j), 0);
    /* One round in eight cancels at once (before or as it starts). */
    unsigned us = rand_r(&fx->seed) % 8 == 0 ? 0 : rand_r(&fx->seed) % MAX_DELAY_US;
    if (us) {
        struct timespec ts = {0, (long)us * 1000};
        nanosleep(&ts, NULL);
    }
    llk_cancel_request(&j->cx);
    if (!llk_cancel_wait_fenced(&j->cx, llk_now_ms() + IO_MS))
        fail_msg("%s %s round %d: no fence within %d ms (seed %u)", fx->transport,
                 push ? "push" : "pull", round, IO_MS, fx->seed);
    int64_t fenced = llk_now_ms();
    uint64_t h = range_sum(dst, r);
    uint32_t fst = llk_cancel_fenced_status(&j->cx);
    /* The transfer may still run (draining a tcp pull): the range must not move. */
    fx->w[r] = (watch_t){.on = true, .sum = h, .until = fenced + QUIET_MS, .round = round};
    assert_int_equal(pthread_join(th, NULL), 0);
    check_watches(fx, push);
    /* The status given with the fence is the call's (a task is final at
     * its fence); none when the call finished first. */
    if (fst != (j->st == LLMLINK_SUCCESS ? 0u : (uint32_t)j->st))
        fail_msg("round %d: fenced as 0x%x, the call returned %s", round, fst,
                 llmlink_status_name(j->st));
    char pm[512];
    switch (j->st) {
    case LLMLINK_SUCCESS:
        t->ok++;
        if (!range_is(dst, r, sv))
            fail_msg("round %d: SUCCESS but the range does not hold the source", round);
        break;
    case LLMLINK_CANCELLED:
        t->cancelled++;
        assert_non_null(strstr(j->msg, "cancelled"));
        assert_status(probe(fx, pm, sizeof pm), LLMLINK_SUCCESS);
        break;
    case LLMLINK_CANCELLED_LINK_CLOSED:
        t->closed++;
        assert_non_null(strstr(j->msg, "link"));
        if (probe(fx, pm, sizeof pm) != LLMLINK_NOT_YET_LINK)
            fail_msg("round %d: after CANCELLED_LINK_CLOSED the probe got %s: %s", round,
                     llmlink_status_name(probe(fx, pm, sizeof pm)), pm);
        relink(fx);
        assert_status(probe(fx, pm, sizeof pm), LLMLINK_SUCCESS);
        break;
    default:
        fail_msg("%s %s round %d: %s (0x%x): %s (seed %u)", fx->transport,
                 push ? "push" : "pull", round, llmlink_status_name(j->st), j->st, j->msg,
                 fx->seed);
    }
    llk_cancel_free(&j->cx);
    free(j);
}

/* Rounds per transport and direction: fewer under a sanitizer (slower by
 * 5-15x; nothing is skipped). */
static int rounds(void)
{
    return getenv("LLMLINK_SANITIZER") ? ROUNDS / 5 : ROUNDS;
}

static void run_rounds(fx_t *fx, bool push)
{
    tally_t t = {0, 0, 0};
    const int n = rounds();
    unsigned hint = 0;
    uint64_t before = atomic_load(&fx->d->xstats.transfers_failed);
    for (int i = 0; i < n; i++)
        one_round(fx, push, i, &hint, &t);
    drain_watches(fx, push);
    uint64_t after = atomic_load(&fx->d->xstats.transfers_failed);
    print_message("test_xfer_cancel: %s %s: %u completed, %u CANCELLED, %u "
                  "CANCELLED_LINK_CLOSED\n", fx->transport, push ? "push" : "pull", t.ok,
                  t.cancelled, t.closed);
    /* A cancel is no failed transfer. */
    assert_int_equal(after, before);
    if (t.cancelled + t.closed == 0)
        fail_msg("%s %s: no cancel stopped a transfer in %d rounds (seed %u)", fx->transport,
                 push ? "push" : "pull", n, fx->seed);
    /* Pulls and shm stop per request: the link never closes. */
    if (!push || strcmp(fx->transport, "shm") == 0)
        assert_int_equal(t.closed, 0);
}

static void test_pull(void **state) { run_rounds(*state, false); }
static void test_push(void **state) { run_rounds(*state, true); }

/* A cancel asked before the call starts: CANCELLED, nothing sent, the link
 * usable, the destination untouched. */
static void test_cancel_before_start(void **state)
{
    fx_t *fx = *state;
    fill_range(fx->rmem, 0, 0x22);
    fill_range(fx->lmem, 0, 0x44);
    job_t j;
    memset(&j, 0, sizeof j);
    j.fx = fx;
    make_req(&j, fx, false, 0, RANGE_BLOCKS);
    assert_int_equal(llk_cancel_init(&j.cx), 0);
    llk_cancel_request(&j.cx);
    assert_status(llk_xfer_run(fx->d, &j.req, &j.cx), LLMLINK_CANCELLED);
    assert_true(llk_cancel_wait_fenced(&j.cx, 0));
    assert_true(range_is(fx->lmem, 0, 0x44));
    llk_cancel_free(&j.cx);
    char pm[512];
    assert_status(probe(fx, pm, sizeof pm), LLMLINK_SUCCESS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cancel_before_start, setup_tcp, teardown),
        cmocka_unit_test_setup_teardown(test_pull, setup_tcp, teardown),
        cmocka_unit_test_setup_teardown(test_push, setup_tcp, teardown),
        cmocka_unit_test_setup_teardown(test_pull, setup_shm, teardown),
        cmocka_unit_test_setup_teardown(test_push, setup_shm, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

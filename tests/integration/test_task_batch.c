/*
 * test_task_batch.c - coalescing (xfer/task_batch.c): one-block tasks
 * queued behind each other on one link run as one execution, and each
 * still ends as if it ran alone. The decode engine is this process (one
 * transfer worker, llmlink.AsyncWorkers=1), the prefill engine an
 * llmlink-node process; a first task held by a SIGSTOPped node makes the
 * others queue up behind it.
 *
 * Cases (tcp and shm): batches form (fewer requests than tasks, one
 * transfer counted per task) and every byte lands; a task with a bad
 * remote block fails alone while its batch neighbours succeed; tasks
 * writing the same destination block are never batched together and land
 * in submission order (batches of fewer than 8 tasks do not form); a cancel of one task in a running batch ends it
 * CANCELLED (its block never changes) while the others complete.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvfill.h"
#include "llmlink.h"
#include "proc.h"
#include "task_fx.h"

#define D_ID 7201
#define P_ID 7301
#define BLOCK (4 * 1024)
#define P_BLOCKS 256
#define D_BLOCKS 1024
#define NTENSORS 2
#define MAX_PROCS 2
#define N 64 /* tasks behind the first one */
#define P_SEED kvfill_seed(P_ID, 1)
#define D_SEED kvfill_seed(D_ID, 1)

typedef struct fx {
    const char *transport;
    proc_t procs[MAX_PROCS];
    size_t nprocs;
    llmlink_t *d;
    tfx_cache_t dblk;
} fx_t;

static int reply_ms(void)
{
    return proc_sanitized() ? 120000 : 30000;
}

static void start(fx_t *f)
{
    char topt[64];
    snprintf(topt, sizeof topt, "llmlink.Transport=%s", f->transport);
    const char *opts[] = {"llm.SyncKvCacheWaitTime=20000", topt, NULL};
    proc_t *p = proc_node_add(f->procs, &f->nprocs, MAX_PROCS, "prompt", P_ID, "127.0.0.1:0",
                              opts, NULL, NULL, reply_ms());
    if (!p)
        fail_msg("%s", proc_last_error());
    const char *r = proc_must_reply(proc_reply(p, reply_ms(), "reg blocks %d fp32 %d,%d "
                                               "key=blocks:%llu:1 seed=%llu", NTENSORS, P_BLOCKS,
                                               BLOCK / 4, (unsigned long long)P_ID,
                                               (unsigned long long)P_SEED));
    int64_t id;
    if (sscanf(r, "REG LLM_SUCCESS %lld", (long long *)&id) != 1)
        fail_msg("reg blocks: %s", r);
    const char *dopts[] = {"llm.SyncKvCacheWaitTime=20000", topt, "llmlink.AsyncWorkers=1", NULL};
    f->d = tfx_engine(LLMLINK_ROLE_DECODER, D_ID, dopts);
    assert_non_null(f->d);
    assert_int_equal(tfx_cache(f->d, &f->dblk, true, NTENSORS, D_BLOCKS, BLOCK, D_SEED, NULL, 0,
                               NULL), 0);
    assert_int_equal(tfx_link(f->d, &f->procs[0], reply_ms()), LLMLINK_SUCCESS);
}

static int fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->transport = (const char *)*state;
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    fx_t *f = *state;
    if (f->d) {
        llmlink_finalize(f->d);
        tfx_cache_free(f->d, &f->dblk);
        llmlink_destroy(f->d);
    }
    int rc = proc_stop_all(f->procs, f->nprocs, proc_sanitized() ? 60000 : 20000);
    free(f);
    return rc;
}

static llmlink_task_t *pull(fx_t *f, uint64_t src, uint64_t dst)
{
    llmlink_task_options_t o;
    assert_int_equal(llmlink_task_options_init(&o, LLMLINK_TASK_OPTIONS_VERSION),
                     LLMLINK_SUCCESS);
    llmlink_cache_key_t k = tfx_blocks_key(P_ID, 1);
    llmlink_task_t *t = NULL;
    llmlink_status_t st = llmlink_pull_blocks_async(f->d, &k, f->dblk.id, &src, 1, &dst, 1, NULL,
                                                    &o, &t);
    if (st != LLMLINK_SUCCESS)
        fail_msg("pull_blocks_async: %s: %s", llmlink_status_name(st), llmlink_last_error());
    return t;
}

static void holds(fx_t *f, uint64_t dst, uint64_t seed, uint64_t src, const char *what)
{
    char why[256];
    if (!tfx_block_holds(&f->dblk, dst, seed, src, why, sizeof why))
        fail_msg("%s: block %llu: %s", what, (unsigned long long)dst, why);
}

static uint64_t requests(fx_t *f, llmlink_xfer_stats_t *xs)
{
    xs->version = LLMLINK_XFER_STATS_VERSION;
    assert_int_equal(llmlink_get_xfer_stats(f->d, xs), LLMLINK_SUCCESS);
    return xs->tcp_requests + xs->shm_requests + xs->rdma_requests;
}

/* A first task that stays in flight (the node is stopped): what is
 * submitted next queues behind it. The caller sends SIGCONT. */
static llmlink_task_t *hold_worker(fx_t *f)
{
    proc_must(proc_kill(&f->procs[0], SIGSTOP));
    llmlink_task_t *t = pull(f, 0, 0);
    proc_sleep_ms(100);
    assert_int_equal(llmlink_task_status(t), LLMLINK_TASK_PENDING);
    return t;
}

static void test_batches(void **state)
{
    fx_t *f = *state;
    start(f);
    llmlink_xfer_stats_t x0, x1;
    uint64_t r0 = requests(f, &x0);
    llmlink_task_t *first = hold_worker(f);
    llmlink_task_t *t[N];
    for (int i = 0; i < N; i++)
        t[i] = pull(f, 1 + (uint64_t)i, 100 + 2 * (uint64_t)i); /* scattered destinations */
    proc_must(proc_kill(&f->procs[0], SIGCONT));
    assert_int_equal(llmlink_task_wait(first, reply_ms()), LLMLINK_SUCCESS);
    for (int i = 0; i < N; i++) {
        assert_int_equal(llmlink_task_wait(t[i], reply_ms()), LLMLINK_SUCCESS);
        holds(f, 100 + 2 * (uint64_t)i, P_SEED, 1 + (uint64_t)i, "batched pull");
        holds(f, 101 + 2 * (uint64_t)i, D_SEED, 101 + 2 * (uint64_t)i, "block between");
        llmlink_task_release(t[i]);
    }
    llmlink_task_release(first);
    uint64_t r1 = requests(f, &x1);
    print_message("  %d tasks: %llu requests\n", N + 1, (unsigned long long)(r1 - r0));
    /* One request per task without coalescing (one tensor run per block). */
    assert_true(r1 - r0 < N);
    assert_int_equal(x1.transfers - x0.transfers, N + 1);
    assert_int_equal(x1.transfers_failed - x0.transfers_failed, 0);
    assert_int_equal(x1.bytes_requested - x0.bytes_requested,
                     (uint64_t)(N + 1) * BLOCK * NTENSORS);
}

static void test_bad_task_alone(void **state)
{
    fx_t *f = *state;
    start(f);
    llmlink_xfer_stats_t x0, x1;
    (void)requests(f, &x0);
    llmlink_task_t *first = hold_worker(f);
    enum { M = 9, BAD = 4 };
    llmlink_task_t *t[M];
    for (int i = 0; i < M; i++) /* the node's cache has P_BLOCKS blocks */
        t[i] = pull(f, i == BAD ? P_BLOCKS + 7 : 20 + (uint64_t)i, 300 + (uint64_t)i);
    proc_must(proc_kill(&f->procs[0], SIGCONT));
    assert_int_equal(llmlink_task_wait(first, reply_ms()), LLMLINK_SUCCESS);
    for (int i = 0; i < M; i++) {
        llmlink_status_t st = llmlink_task_wait(t[i], reply_ms());
        if (i == BAD) {
            assert_int_not_equal(st, LLMLINK_SUCCESS);
            assert_int_not_equal(st, LLMLINK_TASK_PENDING);
            print_message("  bad task: %s: %s\n", llmlink_status_name(st),
                          llmlink_task_error(t[i]));
            holds(f, 300 + BAD, D_SEED, 300 + BAD, "failed task's block");
        } else {
            if (st != LLMLINK_SUCCESS)
                fail_msg("task %d: %s: %s", i, llmlink_status_name(st), llmlink_task_error(t[i]));
            holds(f, 300 + (uint64_t)i, P_SEED, 20 + (uint64_t)i, "neighbour of the bad task");
        }
        llmlink_task_release(t[i]);
    }
    llmlink_task_release(first);
    (void)requests(f, &x1);
    assert_int_equal(x1.transfers - x0.transfers, M); /* first + M - 1 good ones */
    assert_int_equal(x1.transfers_failed - x0.transfers_failed, 1);
}

static void test_overlap_in_order(void **state)
{
    fx_t *f = *state;
    start(f);
    llmlink_task_t *first = hold_worker(f);
    enum { PAIRS = 32 };
    llmlink_task_t *t[2 * PAIRS];
    /* Blocks 500 .. 500 + PAIRS written twice: the first round of tasks,
     * then the second (which wins). Batched together, the two writes of a
     * block would race on the streams. */
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < PAIRS; k++)
            t[r * PAIRS + k] = pull(f, (r ? 120 : 40) + (uint64_t)k, 500 + (uint64_t)k);
    proc_must(proc_kill(&f->procs[0], SIGCONT));
    assert_int_equal(llmlink_task_wait(first, reply_ms()), LLMLINK_SUCCESS);
    for (int i = 0; i < 2 * PAIRS; i++) {
        assert_int_equal(llmlink_task_wait(t[i], reply_ms()), LLMLINK_SUCCESS);
        llmlink_task_release(t[i]);
    }
    for (int k = 0; k < PAIRS; k++)
        holds(f, 500 + (uint64_t)k, P_SEED, 120 + (uint64_t)k, "last writer as submitted");
    llmlink_task_release(first);
}

/* Big blocks, so that a batch takes a while: a cancel lands in it. */
#define BIG (256 * 1024)
#define BIG_BLOCKS 24
#define ROUNDS 20

static void start_big(fx_t *f)
{
    char topt[64];
    snprintf(topt, sizeof topt, "llmlink.Transport=%s", f->transport);
    const char *opts[] = {"llm.SyncKvCacheWaitTime=20000", topt, NULL};
    proc_t *p = proc_node_add(f->procs, &f->nprocs, MAX_PROCS, "prompt", P_ID, "127.0.0.1:0",
                              opts, NULL, NULL, reply_ms());
    if (!p)
        fail_msg("%s", proc_last_error());
    const char *r = proc_must_reply(proc_reply(p, reply_ms(), "reg blocks %d fp32 %d,%d "
                                               "key=blocks:%llu:1 seed=%llu", NTENSORS,
                                               BIG_BLOCKS, BIG / 4, (unsigned long long)P_ID,
                                               (unsigned long long)P_SEED));
    int64_t id;
    if (sscanf(r, "REG LLM_SUCCESS %lld", (long long *)&id) != 1)
        fail_msg("reg blocks: %s", r);
    const char *dopts[] = {"llm.SyncKvCacheWaitTime=20000", topt, "llmlink.AsyncWorkers=1", NULL};
    f->d = tfx_engine(LLMLINK_ROLE_DECODER, D_ID, dopts);
    assert_non_null(f->d);
    assert_int_equal(tfx_cache(f->d, &f->dblk, true, NTENSORS, BIG_BLOCKS, BIG, D_SEED, NULL, 0,
                               NULL), 0);
    assert_int_equal(tfx_link(f->d, &f->procs[0], reply_ms()), LLMLINK_SUCCESS);
}

static uint64_t block_sum(const fx_t *f, uint64_t b)
{
    uint64_t h = 1469598103934665603ULL;
    for (uint32_t t = 0; t < NTENSORS; t++)
        for (size_t i = 0; i < BIG; i++)
            h = (h ^ f->dblk.mem[t][b * BIG + i]) * 1099511628211ULL;
    return h;
}

/* One round: a first task, then M behind it (one batch once the worker is
 * free); the victim is cancelled a random moment later. */
static void cancel_round(fx_t *f, int round, int *hits)
{
    enum { M = 16, VICTIM = 9 };
    llmlink_task_t *first = pull(f, 0, 0);
    llmlink_task_t *t[M];
    for (int i = 0; i < M; i++)
        t[i] = pull(f, 1 + (uint64_t)i, 1 + (uint64_t)i);
    proc_sleep_ms(rand() % 10);
    llmlink_status_t cst = llmlink_task_cancel(t[VICTIM]);
    assert_int_not_equal(cst, LLMLINK_TASK_PENDING);
    assert_int_equal(llmlink_task_status(t[VICTIM]), cst);
    if (cst != LLMLINK_SUCCESS && cst != LLMLINK_CANCELLED)
        fail_msg("round %d: victim: %s: %s", round, llmlink_status_name(cst),
                 llmlink_task_error(t[VICTIM]));
    /* The fence: from the cancel's return on, the victim's block never
     * changes (a pull cancelled mid-way may have written part of it). */
    uint64_t sum = block_sum(f, 1 + VICTIM);
    if (cst == LLMLINK_SUCCESS)
        holds(f, 1 + VICTIM, P_SEED, 1 + VICTIM, "finished victim");
    hits[cst == LLMLINK_CANCELLED]++;
    assert_int_equal(llmlink_task_wait(first, reply_ms()), LLMLINK_SUCCESS);
    for (int i = 0; i < M; i++) {
        if (i == VICTIM)
            continue;
        llmlink_status_t st = llmlink_task_wait(t[i], reply_ms());
        if (st != LLMLINK_SUCCESS)
            fail_msg("round %d: task %d: %s: %s", round, i, llmlink_status_name(st),
                     llmlink_task_error(t[i]));
        holds(f, 1 + (uint64_t)i, P_SEED, 1 + (uint64_t)i, "batch neighbour of the cancel");
    }
    for (int k = 0; k < 10; k++) {
        proc_sleep_ms(20);
        if (block_sum(f, 1 + VICTIM) != sum)
            fail_msg("round %d: the cancelled task's block changed after the cancel", round);
    }
    for (int i = 0; i < M; i++)
        llmlink_task_release(t[i]);
    llmlink_task_release(first);
}

static void test_cancel_one_in_batch(void **state)
{
    fx_t *f = *state;
    start_big(f);
    srand(1234);
    int hits[2] = {0, 0};
    llmlink_xfer_stats_t x0, x1;
    (void)requests(f, &x0);
    for (int r = 0; r < ROUNDS; r++)
        cancel_round(f, r, hits);
    (void)requests(f, &x1);
    print_message("  victim: %d cancelled, %d finished first\n", hits[1], hits[0]);
    /* The link stayed usable throughout (every neighbour succeeded). */
    assert_int_equal(x1.transfers_failed - x0.transfers_failed, 0);
}

#define CASE(fn, tp) cmocka_unit_test_prestate_setup_teardown(fn, fx_setup, fx_teardown, \
                                                              (void *)tp)

int main(void)
{
    proc_raise_nofile();
    const struct CMUnitTest tests[] = {
        CASE(test_batches, "tcp"),          CASE(test_batches, "shm"),
        CASE(test_bad_task_alone, "tcp"),   CASE(test_bad_task_alone, "shm"),
        CASE(test_overlap_in_order, "tcp"), CASE(test_overlap_in_order, "shm"),
        CASE(test_cancel_one_in_batch, "tcp"), CASE(test_cancel_one_in_batch, "shm"),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

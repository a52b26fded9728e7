/*
 * test_task_async.c - asynchronous transfers (llmlink.h, "Asynchronous
 * transfers") with real engines: the decode engine is this process, the
 * prefill engines are llmlink-node processes (tests/tools/llmlink-node.c)
 * holding KV memory filled with the kvfill.h pattern.
 *
 * Cases: hundreds of tasks (pull and push, blocks and batch entries) in
 * flight on three links from four threads, every byte checked on both
 * sides; the engine fd (quiet before anything finished, readable after,
 * quiet again once collected or released), poll_done once per task, the
 * callback once per task before wait returns; a wait that times out leaves
 * the task going; a queued task cancelled ends CANCELLED and its bytes
 * never land; release of a running task; finalize with tasks running and
 * queued. A prefill node is SIGSTOPped where a task must stay in flight.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvfill.h"
#include "llmlink.h"
#include "proc.h"
#include "task_fx.h"

#define D_ID 7001
#define NP 3
#define BLOCK (4 * 1024)     /* bytes per block and tensor */
#define P_BLOCKS 512         /* [0, 256): pulled from; [256, 512): pushed into */
#define P_ENTRIES 8
#define D_BLOCKS 1536        /* [0, 1024): pulled into; [1024, 1536): pushed from */
#define D_ENTRIES 64
#define NTENSORS 2
#define MAX_PROCS 4

typedef struct fx {
    const char *transport; /* llmlink.Transport of every engine */
    proc_t procs[MAX_PROCS];
    size_t nprocs;
    llmlink_t *d;
    tfx_cache_t dblk, dent;
    int64_t p_blk[NP], p_ent[NP]; /* cache ids on the nodes */
} fx_t;

static int reply_ms(void)
{
    return proc_sanitized() ? 120000 : 30000;
}

static uint64_t p_id(int i)
{
    return 7100 + (uint64_t)i;
}

static uint64_t p_seed(int i)
{
    return kvfill_seed(p_id(i), 1);
}

#define D_SEED kvfill_seed(D_ID, 1)
#define D_ENT_SEED kvfill_seed(D_ID, 2)
#define P_ENT_SEED(i) kvfill_seed(p_id(i), 2)

/* Starts n prefill nodes with their caches, the decode engine (options
 * extra, NULL-terminated) with its caches, and links them. */
static void start_all(fx_t *f, int n, const char *const *extra)
{
    char topt[64];
    snprintf(topt, sizeof topt, "llmlink.Transport=%s", f->transport);
    for (int i = 0; i < n; i++) {
        const char *opts[] = {"llm.SyncKvCacheWaitTime=20000", topt, NULL};
        proc_t *p = proc_node_add(f->procs, &f->nprocs, MAX_PROCS, "prompt", p_id(i),
                                  "127.0.0.1:0", opts, NULL, NULL, reply_ms());
        if (!p)
            fail_msg("%s", proc_last_error());
        const char *r = proc_must_reply(proc_reply(p, reply_ms(),
                                                   "reg blocks %d fp32 %d,%d key=blocks:%llu:1 "
                                                   "seed=%llu", NTENSORS, P_BLOCKS, BLOCK / 4,
                                                   (unsigned long long)p_id(i),
                                                   (unsigned long long)p_seed(i)));
        if (sscanf(r, "REG LLM_SUCCESS %lld", (long long *)&f->p_blk[i]) != 1)
            fail_msg("reg blocks: %s", r);
        r = proc_must_reply(proc_reply(p, reply_ms(), "reg cache %d fp32 %d,%d seed=%llu",
                                       NTENSORS, P_ENTRIES, BLOCK / 4,
                                       (unsigned long long)P_ENT_SEED(i)));
        if (sscanf(r, "REG LLM_SUCCESS %lld", (long long *)&f->p_ent[i]) != 1)
            fail_msg("reg cache: %s", r);
    }
    const char *dopts[12] = {"llm.SyncKvCacheWaitTime=20000", topt};
    size_t k = 2;
    for (size_t i = 0; extra && extra[i] && k < 11; i++)
        dopts[k++] = extra[i];
    dopts[k] = NULL;
    f->d = tfx_engine(LLMLINK_ROLE_DECODER, D_ID, dopts);
    assert_non_null(f->d);
    assert_int_equal(tfx_cache(f->d, &f->dblk, true, NTENSORS, D_BLOCKS, BLOCK, D_SEED, NULL, 0,
                               NULL), 0);
    assert_int_equal(tfx_cache(f->d, &f->dent, false, NTENSORS, D_ENTRIES, BLOCK, D_ENT_SEED,
                               NULL, 0, NULL), 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(tfx_link(f->d, &f->procs[i], reply_ms()), LLMLINK_SUCCESS);
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
    if (f->d) {
        llmlink_finalize(f->d);
        tfx_cache_free(f->d, &f->dblk);
        tfx_cache_free(f->d, &f->dent);
        llmlink_destroy(f->d);
    }
    int rc = proc_stop_all(f->procs, f->nprocs, proc_sanitized() ? 60000 : 20000);
    free(f);
    return rc;
}

/* ---- many in flight ----------------------------------------------------- */

#define THREADS 4
#define PER_THREAD 75

typedef enum { K_PULL_BLOCKS, K_PUSH_BLOCKS, K_PULL_CACHE, K_NKINDS } kind_t;

typedef struct job {
    kind_t kind;
    int p;
    uint64_t src[2], dst[2]; /* blocks; entries: src[0] -> dst[0] */
    llmlink_task_t *task;
    atomic_int callbacks;
    atomic_int cb_status;
} job_t;

typedef struct submitter {
    fx_t *f;
    job_t *jobs;
    size_t njobs;
    char err[512];
} submitter_t;

static void on_done_job(llmlink_task_t *t, llmlink_status_t st, void *ud)
{
    job_t *j = ud;
    (void)t;
    atomic_store(&j->cb_status, (int)st);
    atomic_fetch_add(&j->callbacks, 1);
}

static void *submit_thread(void *arg)
{
    submitter_t *s = arg;
    fx_t *f = s->f;
    for (size_t i = 0; i < s->njobs; i++) {
        job_t *j = &s->jobs[i];
        llmlink_task_options_t o = LLMLINK_TASK_OPTIONS_INIT;
        o.on_done = on_done_job;
        o.user_data = j;
        llmlink_cache_key_t bk = tfx_blocks_key(p_id(j->p), 1);
        llmlink_status_t st;
        switch (j->kind) {
        case K_PULL_BLOCKS:
            st = llmlink_pull_blocks_async(f->d, &bk, f->dblk.id, j->src, 2, j->dst, 2, NULL, &o,
                                           &j->task);
            break;
        case K_PUSH_BLOCKS:
            st = llmlink_push_blocks_async(f->d, &bk, f->dblk.id, j->src, 2, j->dst, 2, NULL, &o,
                                           &j->task);
            break;
        default: {
            llmlink_cache_key_t ik = tfx_idx_key(p_id(j->p), f->p_ent[j->p], (uint32_t)j->src[0]);
            st = llmlink_pull_cache_async(f->d, &ik, f->dent.id, (uint32_t)j->dst[0], -1, NULL,
                                          &o, &j->task);
        }
        }
        if (st != LLMLINK_SUCCESS) {
            snprintf(s->err, sizeof s->err, "job %zu: submit: %s: %s", i,
                     llmlink_status_name(st), llmlink_last_error());
            return NULL;
        }
    }
    return NULL;
}

static void test_many_in_flight(void **state)
{
    fx_t *f = *state;
    start_all(f, NP, NULL);
    static job_t jobs[THREADS][PER_THREAD];
    memset(jobs, 0, sizeof jobs);
    kvfill_rng_t rng = {.s = 0x7a5c};
    uint64_t push_next[NP] = {256, 256, 256};
    uint32_t entry_next = 0;
    /* Destinations never overlap: pulls into D blocks [0, 1024) and D
     * entries, pushes into each P's blocks [256, 512). */
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < PER_THREAD; i++) {
            job_t *j = &jobs[t][i];
            int n = t * PER_THREAD + i;
            j->p = n % NP;
            j->kind = (kind_t)((n / NP) % K_NKINDS);
            if (j->kind == K_PULL_CACHE && entry_next >= D_ENTRIES)
                j->kind = K_PULL_BLOCKS;
            if (j->kind == K_PULL_BLOCKS) {
                j->src[0] = kvfill_rng_below(&rng, 256);
                j->src[1] = kvfill_rng_below(&rng, 256);
                j->dst[0] = (uint64_t)n * 2 + 1; /* reversed: out of order within a task */
                j->dst[1] = (uint64_t)n * 2;
            } else if (j->kind == K_PUSH_BLOCKS) {
                j->src[0] = 1024 + kvfill_rng_below(&rng, 512);
                j->src[1] = 1024 + kvfill_rng_below(&rng, 512);
                j->dst[0] = push_next[j->p]++;
                j->dst[1] = push_next[j->p]++;
            } else {
                j->src[0] = kvfill_rng_below(&rng, P_ENTRIES);
                j->dst[0] = entry_next++;
            }
        }
    int fd = -1;
    assert_int_equal(llmlink_get_event_fd(f->d, &fd), LLMLINK_SUCCESS);
    pthread_t th[THREADS];
    submitter_t sub[THREADS];
    for (int t = 0; t < THREADS; t++) {
        sub[t] = (submitter_t){.f = f, .jobs = jobs[t], .njobs = PER_THREAD};
        assert_int_equal(pthread_create(&th[t], NULL, submit_thread, &sub[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        if (sub[t].err[0])
            fail_msg("%s", sub[t].err);
    }
    /* Collect through the fd and poll_done, as an event loop would. */
    size_t total = THREADS * PER_THREAD, got = 0;
    int64_t until = proc_now_ms() + reply_ms() * 2;
    bool seen_out_of_order = false;
    size_t last_n = 0;
    while (got < total) {
        if (proc_now_ms() > until)
            fail_msg("only %zu of %zu tasks reported by the fd in time", got, total);
        if (!tfx_readable(fd, 1000))
            continue;
        llmlink_task_t *done[64];
        size_t n = 0;
        assert_int_equal(llmlink_task_poll_done(f->d, done, 64, &n), LLMLINK_SUCCESS);
        for (size_t i = 0; i < n; i++) {
            job_t *j = llmlink_task_user_data(done[i]);
            assert_non_null(j);
            size_t idx = (size_t)(j - &jobs[0][0]);
            if (got && idx < last_n)
                seen_out_of_order = true;
            last_n = idx;
            llmlink_status_t st = llmlink_task_status(done[i]);
            if (st != LLMLINK_SUCCESS)
                fail_msg("task %zu: %s: %s", idx, llmlink_status_name(st),
                         llmlink_task_error(done[i]));
            assert_int_equal(atomic_load(&j->callbacks), 1);
            assert_int_equal(atomic_load(&j->cb_status), LLMLINK_SUCCESS);
            got++;
        }
    }
    print_message("  %s: %zu tasks; completion order %s submission order\n", f->transport, got,
                  seen_out_of_order ? "differs from" : "matched");
    llmlink_xfer_stats_t x0 = {.version = LLMLINK_XFER_STATS_VERSION};
    assert_int_equal(llmlink_get_xfer_stats(f->d, &x0), LLMLINK_SUCCESS);
    /* The transport asked for is the one that moved the bytes. */
    if (!strcmp(f->transport, "tcp"))
        assert_true(x0.tcp_requests > 0 && x0.shm_requests == 0);
    else
        assert_true(x0.shm_requests > 0);
    size_t n = 0;
    llmlink_task_t *extra;
    assert_int_equal(llmlink_task_poll_done(f->d, &extra, 1, &n), LLMLINK_SUCCESS);
    assert_int_equal(n, 0);
    assert_false(tfx_readable(fd, 0));

    /* Every byte: pulled blocks and entries here, pushed ones on the nodes. */
    char why[256];
    static char cmdbuf[3][16384];
    size_t clen[NP] = {0};
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < PER_THREAD; i++) {
            job_t *j = &jobs[t][i];
            if (j->kind == K_PULL_BLOCKS) {
                for (int b = 0; b < 2; b++)
                    if (!tfx_block_holds(&f->dblk, j->dst[b], p_seed(j->p), j->src[b], why,
                                         sizeof why))
                        fail_msg("pull %d/%d: %s", t, i, why);
            } else if (j->kind == K_PULL_CACHE) {
                for (uint32_t te = 0; te < NTENSORS; te++)
                    if (kvfill_check(f->dent.mem[te] + j->dst[0] * BLOCK, BLOCK,
                                     P_ENT_SEED(j->p), te, j->src[0] * BLOCK) != KVFILL_OK)
                        fail_msg("pull_cache %d/%d: entry %llu tensor %u wrong", t, i,
                                 (unsigned long long)j->dst[0], te);
            } else {
                clen[j->p] += (size_t)snprintf(cmdbuf[j->p] + clen[j->p],
                                               sizeof cmdbuf[j->p] - clen[j->p],
                                               " %llu,%llu %llu,%llu",
                                               (unsigned long long)j->src[0],
                                               (unsigned long long)j->src[1],
                                               (unsigned long long)j->dst[0],
                                               (unsigned long long)j->dst[1]);
            }
            llmlink_task_release(j->task);
        }
    for (int p = 0; p < NP; p++) {
        const char *r = proc_must_reply(proc_reply(&f->procs[p], reply_ms(),
                                                   "verifyblocks %lld %llu %llu%s",
                                                   (long long)f->p_blk[p],
                                                   (unsigned long long)p_seed(p),
                                                   (unsigned long long)D_SEED, cmdbuf[p]));
        if (strcmp(r, "VERIFY OK"))
            fail_msg("prefill %d after the pushes: %s", p, r);
    }
    /* Blocks no task wrote still hold their own pattern. */
    for (uint64_t b = THREADS * PER_THREAD * 2; b < D_BLOCKS; b++)
        if (!tfx_block_holds(&f->dblk, b, D_SEED, b, why, sizeof why))
            fail_msg("untouched block: %s", why);
    llmlink_xfer_stats_t xs = {.version = LLMLINK_XFER_STATS_VERSION};
    assert_int_equal(llmlink_get_xfer_stats(f->d, &xs), LLMLINK_SUCCESS);
    assert_true(xs.transfers >= total);
}

/* ---- the fd, the callback, wait ----------------------------------------- */

typedef struct cb_rec {
    atomic_int calls;
    atomic_int status;
    atomic_bool saw_final; /* llmlink_task_status inside the callback was final */
} cb_rec_t;

static void on_done_rec(llmlink_task_t *t, llmlink_status_t st, void *ud)
{
    cb_rec_t *r = ud;
    /* Give a waiter the chance to return early if the order were wrong. */
    proc_sleep_ms(50);
    atomic_store(&r->saw_final, llmlink_task_status(t) == st);
    atomic_store(&r->status, (int)st);
    atomic_fetch_add(&r->calls, 1);
}

static llmlink_task_t *pull_one(fx_t *f, int p, uint64_t src, uint64_t dst, cb_rec_t *rec,
                                int32_t timeout_ms)
{
    llmlink_task_options_t o;
    assert_int_equal(llmlink_task_options_init(&o, LLMLINK_TASK_OPTIONS_VERSION),
                     LLMLINK_SUCCESS);
    o.on_done = rec ? on_done_rec : NULL;
    o.user_data = rec;
    o.timeout_ms = timeout_ms;
    llmlink_cache_key_t k = tfx_blocks_key(p_id(p), 1);
    llmlink_task_t *t = NULL;
    llmlink_status_t st = llmlink_pull_blocks_async(f->d, &k, f->dblk.id, &src, 1, &dst, 1, NULL,
                                                    &o, &t);
    if (st != LLMLINK_SUCCESS)
        fail_msg("pull_blocks_async: %s: %s", llmlink_status_name(st), llmlink_last_error());
    assert_non_null(t);
    return t;
}

static void test_fd_callback_wait(void **state)
{
    fx_t *f = *state;
    start_all(f, 1, NULL);
    int fd = -1;
    assert_int_equal(llmlink_get_event_fd(f->d, &fd), LLMLINK_SUCCESS);
    assert_true(fd >= 0);
    assert_false(tfx_readable(fd, 0));

    /* The prefill stopped: the task stays in flight. */
    proc_must(proc_kill(&f->procs[0], SIGSTOP));
    cb_rec_t rec = {0};
    llmlink_task_t *t = pull_one(f, 0, 5, 900, &rec, 0);
    assert_int_equal(llmlink_task_status(t), LLMLINK_TASK_PENDING);
    assert_int_equal(llmlink_task_wait(t, 300), LLMLINK_TASK_PENDING);
    assert_int_equal(llmlink_task_wait(t, 0), LLMLINK_TASK_PENDING);
    assert_string_equal(llmlink_task_error(t), "");
    assert_false(tfx_readable(fd, 200));
    assert_int_equal(atomic_load(&rec.calls), 0);
    proc_must(proc_kill(&f->procs[0], SIGCONT));
    /* The wait ran out, the task went on. */
    assert_int_equal(llmlink_task_wait(t, reply_ms()), LLMLINK_SUCCESS);
    /* The callback returned before the wait did. */
    assert_int_equal(atomic_load(&rec.calls), 1);
    assert_int_equal(atomic_load(&rec.status), LLMLINK_SUCCESS);
    assert_true(atomic_load(&rec.saw_final));
    char why[256];
    if (!tfx_block_holds(&f->dblk, 900, p_seed(0), 5, why, sizeof why))
        fail_msg("%s", why);
    llmlink_status_t res = LLMLINK_FAILED;
    assert_int_equal(llmlink_task_results(t, &res, 1), LLMLINK_SUCCESS);
    assert_int_equal(res, LLMLINK_SUCCESS);
    assert_true(tfx_readable(fd, 0));
    llmlink_task_t *got[4];
    size_t n = 0;
    assert_int_equal(llmlink_task_poll_done(f->d, got, 4, &n), LLMLINK_SUCCESS);
    assert_int_equal(n, 1);
    assert_ptr_equal(got[0], t);
    assert_false(tfx_readable(fd, 0));
    assert_int_equal(llmlink_task_poll_done(f->d, got, 4, &n), LLMLINK_SUCCESS);
    assert_int_equal(n, 0); /* each task once */
    llmlink_task_release(t);

    /* Released before collection: it leaves the queue, the fd goes quiet. */
    llmlink_task_t *a = pull_one(f, 0, 6, 901, NULL, 0);
    llmlink_task_t *b = pull_one(f, 0, 7, 902, NULL, 0);
    assert_int_equal(llmlink_task_wait(a, reply_ms()), LLMLINK_SUCCESS);
    assert_int_equal(llmlink_task_wait(b, reply_ms()), LLMLINK_SUCCESS);
    assert_true(tfx_readable(fd, 0));
    llmlink_task_release(a);
    assert_true(tfx_readable(fd, 0)); /* b is still there */
    assert_int_equal(llmlink_task_poll_done(f->d, got, 4, &n), LLMLINK_SUCCESS);
    assert_int_equal(n, 1);
    assert_ptr_equal(got[0], b);
    assert_false(tfx_readable(fd, 0));
    llmlink_task_release(b);
    llmlink_task_t *c = pull_one(f, 0, 8, 903, NULL, 0);
    assert_int_equal(llmlink_task_wait(c, reply_ms()), LLMLINK_SUCCESS);
    assert_true(tfx_readable(fd, 0));
    llmlink_task_release(c);
    assert_false(tfx_readable(fd, 0));

    /* A failing task: the status, its message, the callback's status. */
    cb_rec_t rec2 = {0};
    llmlink_task_options_t o = LLMLINK_TASK_OPTIONS_INIT;
    o.on_done = on_done_rec;
    o.user_data = &rec2;
    llmlink_cache_key_t wrong = tfx_blocks_key(p_id(0), 99); /* no such model on the node */
    uint64_t s = 1, d = 904;
    llmlink_task_t *x = NULL;
    assert_int_equal(llmlink_pull_blocks_async(f->d, &wrong, f->dblk.id, &s, 1, &d, 1, NULL, &o,
                                               &x), LLMLINK_SUCCESS);
    llmlink_status_t st = llmlink_task_wait(x, reply_ms());
    assert_int_equal(st, LLMLINK_KV_CACHE_NOT_EXIST);
    assert_true(strlen(llmlink_task_error(x)) > 0);
    assert_string_equal(llmlink_last_error(), llmlink_task_error(x));
    assert_int_equal(atomic_load(&rec2.calls), 1);
    assert_int_equal(atomic_load(&rec2.status), LLMLINK_KV_CACHE_NOT_EXIST);
    llmlink_task_release(x);
    assert_false(tfx_readable(fd, 0));
    /* The blocking call is the same path: the same status. */
    assert_int_equal(llmlink_pull_blocks(f->d, &wrong, f->dblk.id, &s, 1, &d, 1, NULL),
                     LLMLINK_KV_CACHE_NOT_EXIST);
}

/* ---- cancel, release, finalize ----------------------------------------- */

static void test_cancel_queued(void **state)
{
    fx_t *f = *state;
    const char *one[] = {"llmlink.AsyncWorkers=1", NULL};
    start_all(f, 1, one);
    proc_must(proc_kill(&f->procs[0], SIGSTOP));
    llmlink_task_t *slow = pull_one(f, 0, 10, 910, NULL, 0);
    cb_rec_t rec = {0};
    llmlink_task_t *queued = pull_one(f, 0, 11, 911, &rec, 0);
    proc_sleep_ms(100);
    assert_int_equal(llmlink_task_status(queued), LLMLINK_TASK_PENDING);
    int64_t t0 = proc_now_ms();
    assert_int_equal(llmlink_task_cancel(queued), LLMLINK_CANCELLED);
    assert_true(proc_now_ms() - t0 < 1000); /* at once: it never started */
    assert_int_equal(llmlink_task_status(queued), LLMLINK_CANCELLED);
    assert_int_equal(atomic_load(&rec.calls), 1);
    assert_int_equal(atomic_load(&rec.status), LLMLINK_CANCELLED);
    assert_int_equal(llmlink_task_cancel(queued), LLMLINK_CANCELLED); /* final stays */
    proc_must(proc_kill(&f->procs[0], SIGCONT));
    assert_int_equal(llmlink_task_wait(slow, reply_ms()), LLMLINK_SUCCESS);
    proc_sleep_ms(200);
    char why[256];
    /* The cancelled task's destination block kept its own pattern. */
    if (!tfx_block_holds(&f->dblk, 911, D_SEED, 911, why, sizeof why))
        fail_msg("cancelled task's block changed: %s", why);
    /* The link is fine. */
    uint64_t s = 12, d = 912;
    llmlink_cache_key_t k = tfx_blocks_key(p_id(0), 1);
    assert_int_equal(llmlink_pull_blocks(f->d, &k, f->dblk.id, &s, 1, &d, 1, NULL),
                     LLMLINK_SUCCESS);
    /* A cancel of a finished task changes nothing. */
    assert_int_equal(llmlink_task_cancel(slow), LLMLINK_SUCCESS);
    llmlink_task_release(slow);
    llmlink_task_release(queued);
}

static void test_release_running(void **state)
{
    fx_t *f = *state;
    start_all(f, 1, NULL);
    proc_must(proc_kill(&f->procs[0], SIGSTOP));
    cb_rec_t rec = {0};
    llmlink_task_t *t = pull_one(f, 0, 20, 920, &rec, 1000);
    proc_sleep_ms(100);
    int64_t t0 = proc_now_ms();
    llmlink_task_release(t); /* cancels first; bounded by its timeout + the fence time */
    int64_t took = proc_now_ms() - t0;
    print_message("  release of a running task took %lld ms\n", (long long)took);
    assert_true(took < 1000 + 2000 + 1000);
    assert_int_equal(atomic_load(&rec.calls), 1);
    assert_int_not_equal(atomic_load(&rec.status), LLMLINK_SUCCESS);
    proc_must(proc_kill(&f->procs[0], SIGCONT));
    int fd = -1;
    assert_int_equal(llmlink_get_event_fd(f->d, &fd), LLMLINK_SUCCESS);
    assert_false(tfx_readable(fd, 0)); /* released: never reported */
}

static void test_finalize_with_tasks(void **state)
{
    fx_t *f = *state;
    const char *two[] = {"llmlink.AsyncWorkers=2", NULL};
    start_all(f, 1, two);
    proc_must(proc_kill(&f->procs[0], SIGSTOP));
    enum { N = 6 };
    llmlink_task_t *t[N];
    cb_rec_t rec[N];
    memset(rec, 0, sizeof rec);
    for (int i = 0; i < N; i++)
        t[i] = pull_one(f, 0, 30 + (uint64_t)i, 930 + (uint64_t)i, &rec[i], 0);
    proc_sleep_ms(100);
    int64_t t0 = proc_now_ms();
    llmlink_finalize(f->d);
    print_message("  finalize with %d tasks in flight took %lld ms\n", N,
                  (long long)(proc_now_ms() - t0));
    int cancelled = 0;
    for (int i = 0; i < N; i++) {
        llmlink_status_t st = llmlink_task_status(t[i]);
        assert_int_not_equal(st, LLMLINK_TASK_PENDING);
        assert_int_not_equal(st, LLMLINK_SUCCESS);
        assert_int_equal(atomic_load(&rec[i].calls), 1);
        cancelled += st == LLMLINK_CANCELLED;
    }
    assert_true(cancelled >= N - 2); /* the queued ones at least */
    /* After finalize: the fd still answers, the handles too. */
    int fd = -1;
    assert_int_equal(llmlink_get_event_fd(f->d, &fd), LLMLINK_SUCCESS);
    assert_true(tfx_readable(fd, 0));
    llmlink_task_t *got[N];
    size_t n = 0;
    assert_int_equal(llmlink_task_poll_done(f->d, got, N, &n), LLMLINK_SUCCESS);
    assert_int_equal(n, N);
    assert_false(tfx_readable(fd, 0));
    /* A submit after finalize fails and makes no task. */
    llmlink_task_t *late = (llmlink_task_t *)1;
    uint64_t s = 1, d = 1;
    llmlink_cache_key_t k = tfx_blocks_key(p_id(0), 1);
    assert_int_equal(llmlink_pull_blocks_async(f->d, &k, f->dblk.id, &s, 1, &d, 1, NULL, NULL,
                                               &late), LLMLINK_ENGINE_FINALIZED);
    assert_null(late);
    for (int i = 0; i < N; i++)
        llmlink_task_release(t[i]);
    llmlink_xfer_stats_t xs = {.version = LLMLINK_XFER_STATS_VERSION};
    assert_int_equal(llmlink_get_xfer_stats(f->d, &xs), LLMLINK_SUCCESS);
    proc_must(proc_kill(&f->procs[0], SIGCONT));
}

int main(void)
{
    proc_raise_nofile();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(test_many_in_flight, fx_setup, fx_teardown,
                                                 (void *)"tcp"),
        cmocka_unit_test_prestate_setup_teardown(test_many_in_flight, fx_setup, fx_teardown,
                                                 (void *)"shm"),
        cmocka_unit_test_setup_teardown(test_fd_callback_wait, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_queued, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_release_running, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_finalize_with_tasks, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

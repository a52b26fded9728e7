/*
 * test_task_layer.c - layer-wise push (llmlink_transfer_cache_async, as
 * llm_datadist's CacheManager.transfer_cache_async with a LayerSynchronizer)
 * between two processes: the prefill engine is this process and pushes; the
 * decode engine runs in a forked child whose KV memory is a MAP_SHARED
 * mapping made before the fork, so that the test's synchronizer can look
 * at what has landed on the decode side while the push is going on.
 *
 * Cases: a synchronizer that releases layers slowly sees, each time it is
 * called, every earlier layer arrive on the decode side (while it
 * "computes", the earlier pushes run) and no later one; the
 * results per target (PENDING before any layer, then SUCCESS); a target
 * whose key names nothing fails alone while the other succeeds; sync
 * returning false stops the task with FAILED naming the layer; a cancel
 * while sync waits is final at once and no later layer lands.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvfill.h"
#include "llmlink.h"
#include "proc.h"
#include "task_fx.h"

#define P_ID 8001
#define D_ID 8002
#define LAYERS 4
#define TPL 2
#define NT (LAYERS * TPL)
#define BLOCKS 16
#define BLOCK (4 * 1024)
#define NCACHES 2 /* on the decode side: models 1 and 2 */
#define TENSOR_BYTES ((size_t)BLOCKS * BLOCK)
#define SLOW_MS 150

typedef struct fx {
    uint8_t *shared;  /* NCACHES x NT tensors of the decode side */
    pid_t child;
    int to_child, from_child;
    llmlink_t *p;
    tfx_cache_t src;
} fx_t;

static int reply_ms(void)
{
    return proc_sanitized() ? 60000 : 20000;
}

static uint8_t *d_tensor(fx_t *f, int cache, int t)
{
    return f->shared + ((size_t)cache * NT + (size_t)t) * TENSOR_BYTES;
}

static uint64_t d_seed(int cache)
{
    return kvfill_seed(D_ID, 1 + (uint64_t)cache);
}

#define P_SEED kvfill_seed(P_ID, 1)

/* ---- the decode child -------------------------------------------------- */

static int child_main(fx_t *f, int in, int out)
{
    uint16_t port = 0;
    if (read(in, &port, sizeof port) != sizeof port)
        return 2;
    llmlink_t *d = tfx_engine(LLMLINK_ROLE_DECODER, D_ID, NULL);
    if (!d)
        return 3;
    for (int c = 0; c < NCACHES; c++) {
        uint64_t addrs[NT];
        for (int t = 0; t < NT; t++)
            addrs[t] = (uint64_t)(uintptr_t)d_tensor(f, c, t);
        llmlink_cache_desc_t desc = {.num_tensors = NT, .data_type = LLMLINK_DT_FLOAT,
                                     .num_dims = 2, .shape = {BLOCKS, BLOCK / 4}};
        llmlink_cache_key_t k = tfx_blocks_key(D_ID, 1 + (uint64_t)c);
        int64_t id = 0;
        if (llmlink_register_blocks_cache(d, &desc, addrs, NT, &k, &id) != LLMLINK_SUCCESS) {
            fprintf(stderr, "child: register: %s\n", llmlink_last_error());
            return 4;
        }
    }
    llmlink_status_t st = tfx_link_port(d, P_ID, port, reply_ms());
    char ok = st == LLMLINK_SUCCESS ? 'R' : 'F';
    if (ok == 'F')
        fprintf(stderr, "child: link: %s\n", llmlink_last_error());
    if (write(out, &ok, 1) != 1)
        return 5;
    char q;
    while (read(in, &q, 1) < 0 && errno == EINTR)
        ;
    llmlink_destroy(d);
    return 0;
}

static int fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    *state = f;
    size_t len = (size_t)NCACHES * NT * TENSOR_BYTES;
    f->shared = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (f->shared == MAP_FAILED)
        return -1;
    for (int c = 0; c < NCACHES; c++)
        for (int t = 0; t < NT; t++)
            kvfill_fill(d_tensor(f, c, t), TENSOR_BYTES, d_seed(c), (uint64_t)t, 0);
    int a[2], b[2];
    if (pipe(a) || pipe(b))
        return -1;
    /* Before any engine (thread) exists in this process. */
    f->child = fork();
    if (f->child < 0)
        return -1;
    if (f->child == 0) {
        close(a[1]);
        close(b[0]);
        _exit(child_main(f, a[0], b[1]));
    }
    close(a[0]);
    close(b[1]);
    f->to_child = a[1];
    f->from_child = b[0];
    f->p = tfx_engine(LLMLINK_ROLE_PROMPT, P_ID, NULL);
    if (!f->p)
        return -1;
    uint16_t port = 0;
    if (llmlink_get_listen_port(f->p, 0, &port) != LLMLINK_SUCCESS)
        return -1;
    if (tfx_cache(f->p, &f->src, true, NT, BLOCKS, BLOCK, P_SEED, NULL, 0, NULL))
        return -1;
    if (write(f->to_child, &port, sizeof port) != sizeof port)
        return -1;
    char ok = 0;
    if (read(f->from_child, &ok, 1) != 1 || ok != 'R') {
        fprintf(stderr, "the decode child did not link\n");
        return -1;
    }
    return 0;
}

static int fx_teardown(void **state)
{
    fx_t *f = *state;
    int rc = 0;
    if (f->child > 0) {
        close(f->to_child); /* EOF: the child destroys its engine and exits */
        int status = 0;
        int64_t until = proc_now_ms() + reply_ms();
        while (waitpid(f->child, &status, WNOHANG) == 0) {
            if (proc_now_ms() > until) {
                kill(f->child, SIGKILL);
                waitpid(f->child, &status, 0);
                rc = -1;
                break;
            }
            proc_sleep_ms(10);
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            rc = -1;
        close(f->from_child);
    }
    if (f->p) {
        llmlink_finalize(f->p);
        tfx_cache_free(f->p, &f->src);
        llmlink_destroy(f->p);
    }
    if (f->shared && f->shared != MAP_FAILED)
        munmap(f->shared, (size_t)NCACHES * NT * TENSOR_BYTES);
    free(f);
    return rc;
}

/* ---- what the synchronizer checks ------------------------------------- */

/* Pushes in these tests: src block i -> dst block BLOCKS - 1 - i for the
 * blocks of `src_list`. Target tg maps src layers [s0, s1) to dst d0... */
static const uint64_t src_list[] = {0, 3, 4, 9};
static const uint64_t dst_list[] = {15, 12, 11, 6};
#define NLIST 4

typedef struct tgt {
    int cache; /* decode cache (model cache + 1), -1: a bad key */
    int s0, s1, d0;
} tgt_t;

/* Layer l of target g (a source layer) holds the pushed bytes (want
 * true) or still its own pattern (false). */
static bool layer_is(fx_t *f, const tgt_t *g, int l, bool pushed, char *why, size_t wlen)
{
    int dl = g->d0 + (l - g->s0);
    for (int k = 0; k < TPL; k++) {
        int st = l * TPL + k, dt = dl * TPL + k;
        for (int i = 0; i < NLIST; i++) {
            const uint8_t *p = d_tensor(f, g->cache, dt) + dst_list[i] * BLOCK;
            size_t bad = pushed ? kvfill_check(p, BLOCK, P_SEED, (uint64_t)st,
                                               src_list[i] * BLOCK)
                                : kvfill_check(p, BLOCK, d_seed(g->cache), (uint64_t)dt,
                                               dst_list[i] * BLOCK);
            if (bad != KVFILL_OK) {
                snprintf(why, wlen, "cache %d dst layer %d (src %d) tensor %d block %llu: %s",
                         g->cache, dl, l, dt, (unsigned long long)dst_list[i],
                         pushed ? "not pushed yet" : "already written");
                return false;
            }
        }
    }
    return true;
}

typedef struct sync_ctx {
    fx_t *f;
    const tgt_t *tg;
    size_t ntg;
    _Atomic(llmlink_task_t *) task;
    atomic_int calls;
    atomic_int returned;  /* sync calls that have returned */
    int false_at;         /* return false for this layer, -1: never */
    atomic_bool in_sync;  /* set while sync sleeps (for the cancel case) */
    /* Set before the test cancels: an earlier layer's push may then have
     * been fenced mid-way (cancel with a fence), so it need not land. */
    atomic_bool cancelled;
    int slow_ms;
    char err[512];
    atomic_bool failed;
    uint32_t seen[LAYERS + 1];
} sync_ctx_t;

static bool layer_sync(uint32_t layer, int32_t timeout_ms, void *ud)
{
    sync_ctx_t *s = ud;
    int n = atomic_fetch_add(&s->calls, 1);
    if (timeout_ms != -1 && !atomic_load(&s->failed)) {
        snprintf(s->err, sizeof s->err, "sync called with timeout %d", (int)timeout_ms);
        atomic_store(&s->failed, true);
    }
    if (n < LAYERS + 1)
        s->seen[n] = layer;
    if (n == 0) {
        /* Before the first layer is released no target has started. */
        int64_t until = proc_now_ms() + 5000;
        while (!atomic_load(&s->task) && proc_now_ms() < until)
            proc_sleep_ms(1);
        llmlink_status_t r[4];
        if (llmlink_task_results(atomic_load(&s->task), r, s->ntg) != LLMLINK_SUCCESS)
            snprintf(s->err, sizeof s->err, "results in sync(0): %s", llmlink_last_error());
        for (size_t i = 0; i < s->ntg && !s->err[0]; i++)
            if (r[i] != LLMLINK_TASK_PENDING)
                snprintf(s->err, sizeof s->err, "target %zu's result before any layer: %s", i,
                         llmlink_status_name(r[i]));
        if (s->err[0])
            atomic_store(&s->failed, true);
    }
    /* "Computing" layer `layer`: the push of the layer before overlaps.
     * The synchronizer then releases the layer only once every earlier
     * one has landed on the decode side (bounded wait: no speed is
     * asserted), and checks that no later one has. */
    atomic_store(&s->in_sync, true);
    proc_sleep_ms(s->slow_ms);
    atomic_store(&s->in_sync, false);
    char why[256];
    int64_t until = proc_now_ms() + reply_ms();
    for (size_t i = 0; i < s->ntg && !atomic_load(&s->failed); i++) {
        const tgt_t *g = &s->tg[i];
        if (g->cache < 0)
            continue;
        for (int l = g->s0; l < g->s1 && !atomic_load(&s->failed); l++) {
            bool want = l < (int)layer;
            while (!layer_is(s->f, g, l, want, why, sizeof why)) {
                if (want && atomic_load(&s->cancelled))
                    break;
                if (!want || proc_now_ms() > until) {
                    snprintf(s->err, sizeof s->err, "in sync(%u): %s", layer, why);
                    atomic_store(&s->failed, true);
                    break;
                }
                proc_sleep_ms(2);
            }
        }
    }
    atomic_fetch_add(&s->returned, 1);
    return (int)layer != s->false_at;
}

static llmlink_task_t *start(fx_t *f, sync_ctx_t *s, const tgt_t *tg, size_t ntg)
{
    llmlink_transfer_target_t t[4];
    memset(t, 0, sizeof t);
    for (size_t i = 0; i < ntg; i++) {
        t[i].dst_key = tfx_blocks_key(D_ID, tg[i].cache < 0 ? 99 : 1 + (uint64_t)tg[i].cache);
        bool all = tg[i].s0 == 0 && tg[i].s1 == LAYERS && tg[i].d0 == 0;
        t[i].src_layer_start = all ? -1 : tg[i].s0;
        t[i].src_layer_end = all ? -1 : tg[i].s1;
        t[i].dst_layer_start = all ? -1 : tg[i].d0;
        t[i].dst_layer_end = all ? -1 : tg[i].d0 + (tg[i].s1 - tg[i].s0);
    }
    s->f = f;
    s->tg = tg;
    s->ntg = ntg;
    if (!s->slow_ms)
        s->slow_ms = SLOW_MS;
    llmlink_task_t *task = NULL;
    llmlink_status_t st = llmlink_transfer_cache_async(f->p, f->src.id, layer_sync, s, t, ntg,
                                                       src_list, NLIST, dst_list, NLIST, TPL,
                                                       NULL, &task);
    if (st != LLMLINK_SUCCESS)
        fail_msg("transfer_cache_async: %s: %s", llmlink_status_name(st), llmlink_last_error());
    atomic_store(&s->task, task);
    return task;
}

static void test_layers_land_in_order(void **state)
{
    fx_t *f = *state;
    /* target 0: every layer into model 1; target 1: layers [1, 3) into
     * model 2's layers [2, 4). */
    static const tgt_t tg[] = {{0, 0, LAYERS, 0}, {1, 1, 3, 2}};
    sync_ctx_t s = {.false_at = -1};
    llmlink_task_t *task = start(f, &s, tg, 2);
    assert_int_equal(llmlink_task_wait(task, reply_ms()), LLMLINK_SUCCESS);
    if (atomic_load(&s.failed))
        fail_msg("%s", s.err);
    assert_int_equal(atomic_load(&s.calls), LAYERS); /* once per layer of the union */
    for (uint32_t i = 0; i < LAYERS; i++)
        assert_int_equal(s.seen[i], i);
    llmlink_status_t r[2];
    assert_int_equal(llmlink_task_results(task, r, 2), LLMLINK_SUCCESS);
    assert_int_equal(r[0], LLMLINK_SUCCESS);
    assert_int_equal(r[1], LLMLINK_SUCCESS);
    char why[256];
    for (size_t i = 0; i < 2; i++)
        for (int l = tg[i].s0; l < tg[i].s1; l++)
            if (!layer_is(f, &tg[i], l, true, why, sizeof why))
                fail_msg("after the task: %s", why);
    /* Model 2's layers 0 and 1 were never a destination. */
    static const tgt_t untouched = {1, 0, 2, 0};
    for (int l = 0; l < 2; l++)
        if (!layer_is(f, &untouched, l, false, why, sizeof why))
            fail_msg("%s", why);
    assert_int_equal(llmlink_task_results(task, r, 1), LLMLINK_PARAM_INVALID);
    llmlink_task_release(task);
}

static void test_bad_target_fails_alone(void **state)
{
    fx_t *f = *state;
    static const tgt_t tg[] = {{-1, 0, LAYERS, 0}, {0, 0, LAYERS, 0}};
    sync_ctx_t s = {.false_at = -1};
    llmlink_task_t *task = start(f, &s, tg, 2);
    llmlink_status_t st = llmlink_task_wait(task, reply_ms());
    if (atomic_load(&s.failed))
        fail_msg("%s", s.err);
    llmlink_status_t r[2];
    assert_int_equal(llmlink_task_results(task, r, 2), LLMLINK_SUCCESS);
    print_message("  bad target: %s (%s)\n", llmlink_status_name(r[0]),
                  llmlink_task_error(task));
    assert_int_equal(r[0], LLMLINK_KV_CACHE_NOT_EXIST);
    assert_int_equal(r[1], LLMLINK_SUCCESS);
    assert_int_equal(st, r[0]); /* the task's status: the first failure */
    assert_non_null(strstr(llmlink_task_error(task), "target 0"));
    llmlink_task_release(task);
}

static void test_sync_false(void **state)
{
    fx_t *f = *state;
    static const tgt_t tg[] = {{0, 0, LAYERS, 0}};
    sync_ctx_t s = {.false_at = 2};
    llmlink_task_t *task = start(f, &s, tg, 1);
    assert_int_equal(llmlink_task_wait(task, reply_ms()), LLMLINK_FAILED);
    if (atomic_load(&s.failed))
        fail_msg("%s", s.err);
    assert_non_null(strstr(llmlink_task_error(task),
                           "layer synchronizer returned false for layer 2"));
    assert_int_equal(atomic_load(&s.calls), 3); /* never called again */
    llmlink_status_t r;
    assert_int_equal(llmlink_task_results(task, &r, 1), LLMLINK_SUCCESS);
    assert_int_equal(r, LLMLINK_FAILED);
    char why[256];
    for (int l = 0; l < LAYERS; l++)
        if (!layer_is(f, &tg[0], l, l < 2, why, sizeof why))
            fail_msg("%s", why);
    llmlink_task_release(task);
}

static void test_cancel_while_sync_waits(void **state)
{
    fx_t *f = *state;
    static const tgt_t tg[] = {{0, 0, LAYERS, 0}};
    sync_ctx_t s = {.false_at = -1, .slow_ms = 600};
    llmlink_task_t *task = start(f, &s, tg, 1);
    /* Wait until sync(1) is sleeping: layer 0 was released before. */
    int64_t until = proc_now_ms() + reply_ms();
    while (!(atomic_load(&s.calls) == 2 && atomic_load(&s.in_sync)) && proc_now_ms() < until)
        proc_sleep_ms(5);
    assert_int_equal(atomic_load(&s.calls), 2);
    int64_t t0 = proc_now_ms();
    atomic_store(&s.cancelled, true);
    llmlink_status_t st = llmlink_task_cancel(task);
    assert_true(st == LLMLINK_CANCELLED || st == LLMLINK_CANCELLED_LINK_CLOSED);
    assert_true(proc_now_ms() - t0 < 500); /* final without waiting for sync */
    assert_int_equal(llmlink_task_status(task), st);
    llmlink_status_t r;
    assert_int_equal(llmlink_task_results(task, &r, 1), LLMLINK_SUCCESS);
    assert_int_not_equal(r, LLMLINK_SUCCESS);
    assert_int_not_equal(r, LLMLINK_TASK_PENDING);
    /* sync(1) returns later; the driver stops: no later layer lands. */
    proc_sleep_ms(s.slow_ms + 400);
    assert_int_equal(atomic_load(&s.calls), 2);
    char why[256];
    for (int l = 1; l < LAYERS; l++)
        if (!layer_is(f, &tg[0], l, false, why, sizeof why))
            fail_msg("after the cancel: %s", why);
    llmlink_task_release(task);
}

/* Release, unlike cancel, waits for a sync call that is running: once it
 * returns the synchronizer is never called again (its user data may go). */
static void test_release_waits_for_sync(void **state)
{
    fx_t *f = *state;
    static const tgt_t tg[] = {{0, 0, LAYERS, 0}};
    sync_ctx_t s = {.false_at = -1, .slow_ms = 400};
    llmlink_task_t *task = start(f, &s, tg, 1);
    int64_t until = proc_now_ms() + reply_ms();
    while (!(atomic_load(&s.calls) == 2 && atomic_load(&s.in_sync)) && proc_now_ms() < until)
        proc_sleep_ms(5);
    assert_int_equal(atomic_load(&s.calls), 2);
    atomic_store(&s.cancelled, true);
    llmlink_task_release(task);
    int calls = atomic_load(&s.calls);
    assert_int_equal(atomic_load(&s.returned), calls); /* none running */
    proc_sleep_ms(s.slow_ms + 200);
    assert_int_equal(atomic_load(&s.calls), calls); /* none after */
}

static void test_args(void **state)
{
    fx_t *f = *state;
    llmlink_transfer_target_t t;
    memset(&t, 0, sizeof t);
    t.dst_key = tfx_blocks_key(D_ID, 1);
    t.src_layer_start = t.src_layer_end = t.dst_layer_start = t.dst_layer_end = -1;
    llmlink_task_t *task = (llmlink_task_t *)1;
#define TRY(needle, ...)                                                                       \
    do {                                                                                       \
        task = (llmlink_task_t *)1;                                                            \
        llmlink_status_t st_ = __VA_ARGS__;                                                    \
        if (st_ != LLMLINK_PARAM_INVALID || !strstr(llmlink_last_error(), needle))             \
            fail_msg("%s: got %s: %s", needle, llmlink_status_name(st_), llmlink_last_error()); \
        assert_null(task);                                                                     \
    } while (0)
    TRY("sync", llmlink_transfer_cache_async(f->p, f->src.id, NULL, NULL, &t, 1, src_list, NLIST,
                                             dst_list, NLIST, TPL, NULL, &task));
    TRY("targets", llmlink_transfer_cache_async(f->p, f->src.id, layer_sync, NULL, NULL, 1,
                                                src_list, NLIST, dst_list, NLIST, TPL, NULL,
                                                &task));
    TRY("num_targets", llmlink_transfer_cache_async(f->p, f->src.id, layer_sync, NULL, &t, 0,
                                                    src_list, NLIST, dst_list, NLIST, TPL, NULL,
                                                    &task));
    TRY("src_cache_id", llmlink_transfer_cache_async(f->p, 0, layer_sync, NULL, &t, 1, src_list,
                                                     NLIST, dst_list, NLIST, TPL, NULL, &task));
    TRY("src_blocks/dst_blocks", llmlink_transfer_cache_async(f->p, f->src.id, layer_sync, NULL,
                                                             &t, 1, NULL, 0, NULL, 0, TPL, NULL,
                                                             &task));
    llmlink_transfer_target_t bad = t;
    bad.src_layer_start = 0;
    bad.src_layer_end = 2;
    bad.dst_layer_start = 0;
    bad.dst_layer_end = 3;
    TRY("targets[0]", llmlink_transfer_cache_async(f->p, f->src.id, layer_sync, NULL, &bad, 1,
                                                   src_list, NLIST, dst_list, NLIST, TPL, NULL,
                                                   &task));
    bad.dst_layer_end = 2;
    bad.src_layer_end = LAYERS + 1;
    bad.dst_layer_end = LAYERS + 1;
    TRY("layers", llmlink_transfer_cache_async(f->p, f->src.id, layer_sync, NULL, &bad, 1,
                                               src_list, NLIST, dst_list, NLIST, TPL, NULL,
                                               &task));
    static const uint64_t past[] = {BLOCKS};
    TRY("past the end", llmlink_transfer_cache_async(f->p, f->src.id, layer_sync, NULL, &t, 1,
                                                     past, 1, dst_list, 1, TPL, NULL, &task));
    /* No link with that cluster: refused at submit, no task. */
    llmlink_transfer_target_t nolink = t;
    nolink.dst_key = tfx_blocks_key(4242, 1);
    task = (llmlink_task_t *)1;
    assert_int_equal(llmlink_transfer_cache_async(f->p, f->src.id, layer_sync, NULL, &nolink, 1,
                                                  src_list, NLIST, dst_list, NLIST, TPL, NULL,
                                                  &task),
                     LLMLINK_NOT_YET_LINK);
    assert_null(task);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_layers_land_in_order, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_bad_target_fails_alone, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sync_false, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_while_sync_waits, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_release_waits_for_sync, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_args, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

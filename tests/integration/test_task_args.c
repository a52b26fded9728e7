/*
 * test_task_args.c - the argument checks of the asynchronous-transfer calls
 * (llmlink.h, "Asynchronous transfers"): every bad argument is
 * PARAM_INVALID with a message naming it, creates no task (*task NULL) and
 * moves nothing; the blocking calls' checks apply to the *_async forms
 * unchanged, and a request the local cache refuses (block past its end,
 * layers past its tensors, wrong kind) fails the submit itself. One
 * prefill llmlink-node process, the decode engine in this process.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvfill.h"
#include "llmlink.h"
#include "proc.h"
#include "task_fx.h"

#define D_ID 9501
#define P_ID 9502
#define BLOCK 4096

typedef struct fx {
    proc_t procs[1];
    size_t nprocs;
    llmlink_t *d;
    tfx_cache_t blk, ent;
} fx_t;

static int reply_ms(void)
{
    return proc_sanitized() ? 120000 : 30000;
}

static int fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    *state = f;
    proc_t *p = proc_node_add(f->procs, &f->nprocs, 1, "prompt", P_ID, "127.0.0.1:0", NULL, NULL,
                              NULL, reply_ms());
    if (!p || !proc_reply(p, reply_ms(), "reg blocks 2 fp32 64,%d key=blocks:%d:1", BLOCK / 4,
                          P_ID))
        return -1;
    f->d = tfx_engine(LLMLINK_ROLE_DECODER, D_ID, NULL);
    if (!f->d || tfx_cache(f->d, &f->blk, true, 2, 64, BLOCK, 1, NULL, 0, NULL) ||
        tfx_cache(f->d, &f->ent, false, 2, 4, BLOCK, 2, NULL, 0, NULL))
        return -1;
    return tfx_link(f->d, p, reply_ms()) == LLMLINK_SUCCESS ? 0 : -1;
}

static int fx_teardown(void **state)
{
    fx_t *f = *state;
    if (f->d) {
        llmlink_finalize(f->d);
        tfx_cache_free(f->d, &f->blk);
        tfx_cache_free(f->d, &f->ent);
        llmlink_destroy(f->d);
    }
    int rc = proc_stop_all(f->procs, f->nprocs, 20000);
    free(f);
    return rc;
}

/* The call must fail with want, a message containing needle, no task. */
#define REFUSED(want, needle, call)                                                             \
    do {                                                                                        \
        task = (llmlink_task_t *)1;                                                             \
        llmlink_status_t st_ = (call);                                                          \
        if (st_ != (want) || !strstr(llmlink_last_error(), (needle)))                           \
            fail_msg("line %d: got %s '%s'; want %s naming '%s'", __LINE__,                     \
                     llmlink_status_name(st_), llmlink_last_error(), llmlink_status_name(want), \
                     needle);                                                                   \
        if (task != (llmlink_task_t *)1)                                                        \
            assert_null(task);                                                                  \
    } while (0)

static void test_submit_args(void **state)
{
    fx_t *f = *state;
    llmlink_task_t *task;
    llmlink_cache_key_t k = tfx_blocks_key(P_ID, 1);
    uint64_t s[2] = {1, 2}, d[2] = {3, 4}, dup[2] = {3, 3};
    llmlink_task_options_t o = LLMLINK_TASK_OPTIONS_INIT;

    REFUSED(LLMLINK_PARAM_INVALID, "task is NULL",
            llmlink_pull_blocks_async(f->d, &k, f->blk.id, s, 1, d, 1, NULL, NULL, NULL));
    REFUSED(LLMLINK_PARAM_INVALID, "dd is NULL",
            llmlink_pull_blocks_async(NULL, &k, f->blk.id, s, 1, d, 1, NULL, NULL, &task));
    REFUSED(LLMLINK_PARAM_INVALID, "src_key is NULL",
            llmlink_pull_blocks_async(f->d, NULL, f->blk.id, s, 1, d, 1, NULL, NULL, &task));
    REFUSED(LLMLINK_PARAM_INVALID, "dst_cache_id",
            llmlink_pull_blocks_async(f->d, &k, 0, s, 1, d, 1, NULL, NULL, &task));
    REFUSED(LLMLINK_PARAM_INVALID, "dst_blocks[1] (3) appears twice",
            llmlink_pull_blocks_async(f->d, &k, f->blk.id, s, 2, dup, 2, NULL, NULL, &task));
    REFUSED(LLMLINK_PARAM_INVALID, "num_src_blocks (1) differs",
            llmlink_push_blocks_async(f->d, &k, f->blk.id, s, 1, d, 2, NULL, NULL, &task));
    llmlink_cache_key_t ik = tfx_idx_key(P_ID, 1, 0);
    REFUSED(LLMLINK_PARAM_INVALID, "size is 0",
            llmlink_pull_cache_async(f->d, &ik, f->ent.id, 0, 0, NULL, NULL, &task));
    REFUSED(LLMLINK_PARAM_INVALID, "dst_key.type",
            llmlink_push_cache_async(f->d, &k, f->ent.id, 0, -1, NULL, NULL, &task));
    o.version = 7;
    REFUSED(LLMLINK_PARAM_INVALID, "opts->version is 7",
            llmlink_pull_blocks_async(f->d, &k, f->blk.id, s, 1, d, 1, NULL, &o, &task));
    o.version = LLMLINK_TASK_OPTIONS_VERSION;
    o.timeout_ms = -5;
    REFUSED(LLMLINK_PARAM_INVALID, "opts->timeout_ms is -5",
            llmlink_pull_blocks_async(f->d, &k, f->blk.id, s, 1, d, 1, NULL, &o, &task));
    o.timeout_ms = 0;
    static uint8_t big[LLMLINK_MAX_NOTIFY_BYTES + 1];
    o.notify_data = big;
    o.notify_len = sizeof big;
    REFUSED(LLMLINK_PARAM_INVALID, "opts->notify_len is 4097",
            llmlink_push_blocks_async(f->d, &k, f->blk.id, s, 1, d, 1, NULL, &o, &task));
    o.notify_data = NULL;
    o.notify_len = 3;
    REFUSED(LLMLINK_PARAM_INVALID, "opts->notify_data is NULL",
            llmlink_push_blocks_async(f->d, &k, f->blk.id, s, 1, d, 1, NULL, &o, &task));

    /* What only the local cache knows fails the submit too (no task). */
    uint64_t past = 64;
    REFUSED(LLMLINK_PARAM_INVALID, "dst_blocks[0] = 64 is past the end",
            llmlink_pull_blocks_async(f->d, &k, f->blk.id, s, 1, &past, 1, NULL, NULL, &task));
    llmlink_layer_range_t L = {0, 2, 0, 2, 2};
    REFUSED(LLMLINK_PARAM_INVALID, "dst_layer_range [0, 2)",
            llmlink_pull_blocks_async(f->d, &k, f->blk.id, s, 1, d, 1, &L, NULL, &task));
    REFUSED(LLMLINK_PARAM_INVALID, "is not a blocks cache",
            llmlink_pull_blocks_async(f->d, &k, f->ent.id, s, 1, d, 1, NULL, NULL, &task));
    REFUSED(LLMLINK_KV_CACHE_NOT_EXIST, "",
            llmlink_pull_blocks_async(f->d, &k, 999, s, 1, d, 1, NULL, NULL, &task));
    llmlink_cache_key_t nolink = tfx_blocks_key(4242, 1);
    REFUSED(LLMLINK_NOT_YET_LINK, "",
            llmlink_pull_blocks_async(f->d, &nolink, f->blk.id, s, 1, d, 1, NULL, NULL, &task));
    llmlink_xfer_stats_t xs = {.version = LLMLINK_XFER_STATS_VERSION};
    assert_int_equal(llmlink_get_xfer_stats(f->d, &xs), LLMLINK_SUCCESS);
    assert_int_equal(xs.transfers + xs.transfers_failed, 0); /* none ran */
}

static void test_task_call_args(void **state)
{
    fx_t *f = *state;
    assert_int_equal(llmlink_task_status(NULL), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "task is NULL"));
    assert_int_equal(llmlink_task_wait(NULL, 0), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "task is NULL"));
    assert_int_equal(llmlink_task_cancel(NULL), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "task is NULL"));
    llmlink_task_release(NULL);
    assert_string_equal(llmlink_task_error(NULL), "");
    assert_null(llmlink_task_user_data(NULL));
    llmlink_status_t r;
    assert_int_equal(llmlink_task_results(NULL, &r, 1), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "task is NULL"));
    assert_int_equal(llmlink_task_options_init(NULL, 1), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "opts is NULL"));
    llmlink_task_options_t o;
    assert_int_equal(llmlink_task_options_init(&o, 2), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "version is 2"));
    assert_int_equal(llmlink_task_options_init(&o, LLMLINK_TASK_OPTIONS_VERSION),
                     LLMLINK_SUCCESS);
    assert_int_equal(o.version, LLMLINK_TASK_OPTIONS_VERSION);
    assert_int_equal(o.timeout_ms, 0);
    assert_null(o.on_done);
    assert_int_equal(o.notify_len, 0);
    int fd;
    assert_int_equal(llmlink_get_event_fd(NULL, &fd), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "dd is NULL"));
    assert_int_equal(llmlink_get_event_fd(f->d, NULL), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "fd is NULL"));
    size_t n = 9;
    llmlink_task_t *tasks[1];
    assert_int_equal(llmlink_task_poll_done(NULL, tasks, 1, &n), LLMLINK_PARAM_INVALID);
    assert_int_equal(llmlink_task_poll_done(f->d, tasks, 1, NULL), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "count is NULL"));
    assert_int_equal(llmlink_task_poll_done(f->d, NULL, 1, &n), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "tasks is NULL"));
    assert_int_equal(llmlink_task_poll_done(f->d, NULL, 0, &n), LLMLINK_SUCCESS);
    assert_int_equal(n, 0);

    /* A real task: wait's timeout, results' count, the blocking path. */
    llmlink_cache_key_t k = tfx_blocks_key(P_ID, 1);
    uint64_t s = 5, d = 6;
    llmlink_task_t *t = NULL;
    assert_int_equal(llmlink_pull_blocks_async(f->d, &k, f->blk.id, &s, 1, &d, 1, NULL, NULL,
                                               &t), LLMLINK_SUCCESS);
    assert_int_equal(llmlink_task_wait(t, -2), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "timeout_ms is -2"));
    assert_int_equal(llmlink_task_wait(t, -1), LLMLINK_SUCCESS);
    assert_int_equal(llmlink_task_results(t, NULL, 1), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "results is NULL"));
    llmlink_status_t two[2];
    assert_int_equal(llmlink_task_results(t, two, 2), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "num_results is 2"));
    assert_string_equal(llmlink_task_error(t), "");
    char why[200];
    if (!tfx_block_holds(&f->blk, 6, kvfill_seed(0, 0), 5, why, sizeof why))
        fail_msg("%s", why);
    llmlink_task_release(t);
    llmlink_xfer_stats_t xs = {.version = LLMLINK_XFER_STATS_VERSION};
    assert_int_equal(llmlink_get_xfer_stats(f->d, &xs), LLMLINK_SUCCESS);
}

static void test_before_init(void **state)
{
    (void)state;
    llmlink_t *e = NULL;
    assert_int_equal(llmlink_create(&e, LLMLINK_ROLE_DECODER, 1), LLMLINK_SUCCESS);
    int fd = -1;
    assert_int_equal(llmlink_get_event_fd(e, &fd), LLMLINK_NOT_INITIALIZED);
    size_t n = 0;
    llmlink_task_t *t[1];
    assert_int_equal(llmlink_task_poll_done(e, t, 1, &n), LLMLINK_NOT_INITIALIZED);
    llmlink_cache_key_t k = tfx_blocks_key(2, 1);
    uint64_t s = 0, d = 0;
    llmlink_task_t *task = (llmlink_task_t *)1;
    assert_int_equal(llmlink_pull_blocks_async(e, &k, 1, &s, 1, &d, 1, NULL, NULL, &task),
                     LLMLINK_NOT_INITIALIZED);
    assert_null(task);
    llmlink_destroy(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_submit_args, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_task_call_args, fx_setup, fx_teardown),
        cmocka_unit_test(test_before_init),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

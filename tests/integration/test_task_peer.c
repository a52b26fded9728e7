/*
 * test_task_peer.c - a prefill engine killed (SIGKILL) with asynchronous
 * tasks in flight: every task on its link ends with an error within its
 * timeout, none hangs, the engine fd reports every one, and the tasks on
 * another link (a second prefill process) still succeed. The decode engine
 * is this process; the prefill engines are llmlink-node processes.
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

#define D_ID 9001
#define BLOCK (4 * 1024)
#define NTENSORS 2
#define PER_LINK 40
#define TASK_MS 3000

typedef struct fx {
    proc_t procs[2];
    size_t nprocs;
    llmlink_t *d;
    tfx_cache_t dblk;
} fx_t;

static int reply_ms(void)
{
    return proc_sanitized() ? 120000 : 30000;
}

static uint64_t p_id(int i)
{
    return 9100 + (uint64_t)i;
}

static int fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    *state = f;
    return f ? 0 : -1;
}

static int fx_teardown(void **state)
{
    fx_t *f = *state;
    if (f->d) {
        llmlink_finalize(f->d);
        tfx_cache_free(f->d, &f->dblk);
        llmlink_destroy(f->d);
    }
    proc_stop_all(f->procs, f->nprocs, proc_sanitized() ? 60000 : 20000);
    free(f);
    return 0; /* the killed node does not quit cleanly, by design */
}

static void test_peer_killed(void **state)
{
    fx_t *f = *state;
    for (int i = 0; i < 2; i++) {
        const char *opts[] = {"llm.SyncKvCacheWaitTime=20000", NULL};
        proc_t *p = proc_node_add(f->procs, &f->nprocs, 2, "prompt", p_id(i), "127.0.0.1:0",
                                  opts, NULL, NULL, reply_ms());
        if (!p)
            fail_msg("%s", proc_last_error());
        const char *r = proc_must_reply(proc_reply(p, reply_ms(),
                                                   "reg blocks %d fp32 256,%d key=blocks:%llu:1 "
                                                   "seed=%llu", NTENSORS, BLOCK / 4,
                                                   (unsigned long long)p_id(i),
                                                   (unsigned long long)kvfill_seed(p_id(i), 1)));
        if (strncmp(r, "REG LLM_SUCCESS", 15))
            fail_msg("%s", r);
    }
    const char *dopts[] = {"llm.SyncKvCacheWaitTime=20000", "llmlink.AsyncWorkers=4", NULL};
    f->d = tfx_engine(LLMLINK_ROLE_DECODER, D_ID, dopts);
    assert_non_null(f->d);
    assert_int_equal(tfx_cache(f->d, &f->dblk, true, NTENSORS, 2 * PER_LINK, BLOCK,
                               kvfill_seed(D_ID, 1), NULL, 0, NULL), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(tfx_link(f->d, &f->procs[i], reply_ms()), LLMLINK_SUCCESS);
    int fd = -1;
    assert_int_equal(llmlink_get_event_fd(f->d, &fd), LLMLINK_SUCCESS);

    /* Node 0 stopped: its tasks stay in flight (running or queued). */
    proc_must(proc_kill(&f->procs[0], SIGSTOP));
    llmlink_task_t *t[2][PER_LINK];
    int64_t t0 = proc_now_ms();
    for (int i = 0; i < PER_LINK; i++)
        for (int p = 0; p < 2; p++) {
            llmlink_task_options_t o = LLMLINK_TASK_OPTIONS_INIT;
            o.timeout_ms = TASK_MS;
            o.user_data = (void *)(intptr_t)(p * PER_LINK + i + 1);
            llmlink_cache_key_t k = tfx_blocks_key(p_id(p), 1);
            uint64_t s = (uint64_t)i, d = (uint64_t)(p * PER_LINK + i);
            llmlink_status_t st = llmlink_pull_blocks_async(f->d, &k, f->dblk.id, &s, 1, &d, 1,
                                                            NULL, &o, &t[p][i]);
            if (st != LLMLINK_SUCCESS)
                fail_msg("submit: %s", llmlink_last_error());
        }
    proc_sleep_ms(100);
    proc_must(proc_kill(&f->procs[0], SIGKILL));

    /* The fd reports all of them, each within its timeout. */
    bool seen[2 * PER_LINK + 1] = {false};
    size_t got = 0;
    while (got < 2 * PER_LINK) {
        if (proc_now_ms() - t0 > TASK_MS + 3000)
            fail_msg("only %zu of %d tasks ended within their timeout", got, 2 * PER_LINK);
        if (!tfx_readable(fd, 100))
            continue;
        llmlink_task_t *done[16];
        size_t n = 0;
        assert_int_equal(llmlink_task_poll_done(f->d, done, 16, &n), LLMLINK_SUCCESS);
        for (size_t i = 0; i < n; i++) {
            intptr_t id = (intptr_t)llmlink_task_user_data(done[i]);
            assert_true(id >= 1 && id <= 2 * PER_LINK);
            assert_false(seen[id]);
            seen[id] = true;
            got++;
        }
    }
    print_message("  %d tasks ended %lld ms after submission\n", 2 * PER_LINK,
                  (long long)(proc_now_ms() - t0));
    int failed_kinds[2] = {0, 0};
    for (int i = 0; i < PER_LINK; i++) {
        llmlink_status_t st = llmlink_task_status(t[0][i]);
        assert_int_not_equal(st, LLMLINK_SUCCESS);
        assert_int_not_equal(st, LLMLINK_TASK_PENDING);
        assert_true(strlen(llmlink_task_error(t[0][i])) > 0);
        failed_kinds[st == LLMLINK_NOT_YET_LINK]++;
        st = llmlink_task_status(t[1][i]);
        if (st != LLMLINK_SUCCESS)
            fail_msg("task %d on the live link: %s: %s", i, llmlink_status_name(st),
                     llmlink_task_error(t[1][i]));
        char why[200];
        if (!tfx_block_holds(&f->dblk, (uint64_t)(PER_LINK + i), kvfill_seed(p_id(1), 1),
                             (uint64_t)i, why, sizeof why))
            fail_msg("%s", why);
    }
    print_message("  dead link: %d NOT_YET_LINK, %d other errors; first: %s\n",
                  failed_kinds[1], failed_kinds[0], llmlink_task_error(t[0][0]));
    assert_false(tfx_readable(fd, 0));
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < PER_LINK; i++)
            llmlink_task_release(t[p][i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_peer_killed, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

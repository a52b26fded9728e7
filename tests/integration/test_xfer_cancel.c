/*
 * test_xfer_cancel.c - cancel with a fence, against the transfer plane
 * (llk_xfer_run with a cancel, xfer/cancel.h), over tcp and shm, pulls and
 * pushes (issue 15).
 *
 * The fixture is cancel_fx.h's (an owner engine in a forked child, its
 * cache in a region this process reads). Each round runs one transfer of a
 * 4 MiB block range on a thread and cancels it from the test thread after a
 * random delay (seeded: the seed is printed, LLK_CANCEL_SEED replays it).
 * Once llk_cancel_wait_fenced says the fence holds, the destination range
 * (pull: this engine's cache; push: the child's) is checksummed, and it
 * must keep that checksum for 200 ms (cfx_watch).
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

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llmlink.h"
#include "llk_test.h"
#include "cancel_fx.h"
#include "base/clock.h"
#include "link/engine.h"
#include "xfer/cancel.h"
#include "xfer/xfer.h"

#define ROUNDS 250

/* ---- one transfer on a thread --------------------------------------------- */

typedef struct job {
    cfx_t *fx;
    llk_xfer_req_t req;
    uint64_t blocks[CFX_RANGE_BLOCKS];
    llk_xfer_cancel_t cx;
    llmlink_status_t st;
    char msg[512];
} job_t;

static void make_req(job_t *j, cfx_t *fx, bool push, uint64_t first, size_t n)
{
    for (size_t i = 0; i < n; i++)
        j->blocks[i] = first + i;
    j->req = (llk_xfer_req_t){.fn = push ? "push_blocks" : "pull_blocks",
                              .push = push,
                              .key = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = CFX_PROMPT_ID},
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
static llmlink_status_t probe(cfx_t *fx, char *msg, size_t cap)
{
    job_t j;
    memset(&j, 0, sizeof j);
    j.fx = fx;
    make_req(&j, fx, false, CFX_PROBE_BLOCK, 1);
    llmlink_status_t st = llk_xfer_run(fx->d, &j.req, NULL);
    snprintf(msg, cap, "%s", llmlink_last_error());
    return st;
}

typedef struct tally {
    unsigned ok, cancelled, closed;
} tally_t;

static void one_round(cfx_t *fx, bool push, int round, unsigned *hint, tally_t *t)
{
    unsigned r = cfx_free_range(fx, push, *hint);
    *hint = r + 1;
    uint8_t *src = push ? fx->lmem : fx->rmem, *dst = push ? fx->rmem : fx->lmem;
    uint8_t sv = (uint8_t)(0x10 + (round % 64) * 2), dv = (uint8_t)(0x90 + (round % 32) * 2);
    cfx_fill_range(src, r, sv);
    cfx_fill_range(dst, r, dv);
    job_t *j = calloc(1, sizeof *j);
    assert_non_null(j);
    j->fx = fx;
    make_req(j, fx, push, (uint64_t)r * CFX_RANGE_BLOCKS, CFX_RANGE_BLOCKS);
    assert_int_equal(llk_cancel_init(&j->cx), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_job, j), 0);
    /* One round in eight cancels at once (before or as it starts). */
    unsigned us = cfx_delay_us(fx);
    if (us) {
        struct timespec ts = {0, (long)us * 1000};
        nanosleep(&ts, NULL);
    }
    llk_cancel_request(&j->cx);
    if (!llk_cancel_wait_fenced(&j->cx, llk_now_ms() + CFX_IO_MS))
        fail_msg("%s %s round %d: no fence within %d ms (seed %u)", fx->transport,
                 push ? "push" : "pull", round, CFX_IO_MS, fx->seed);
    int64_t fenced = llk_now_ms();
    uint64_t h = cfx_range_sum(dst, r);
    uint32_t fst = llk_cancel_fenced_status(&j->cx);
    /* The transfer may still run (draining a tcp pull): the range must not move. */
    cfx_watch(fx, r, h, fenced, round);
    assert_int_equal(pthread_join(th, NULL), 0);
    cfx_check_watches(fx, push);
    /* The status given with the fence is the call's (a task is final at
     * its fence); none when the call finished first. */
    if (fst != (j->st == LLMLINK_SUCCESS ? 0u : (uint32_t)j->st))
        fail_msg("round %d: fenced as 0x%x, the call returned %s", round, fst,
                 llmlink_status_name(j->st));
    char pm[512];
    switch (j->st) {
    case LLMLINK_SUCCESS:
        t->ok++;
        if (!cfx_range_is(dst, r, sv))
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
        cfx_relink(fx);
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

static void run_rounds(cfx_t *fx, bool push)
{
    tally_t t = {0, 0, 0};
    const int n = cfx_rounds(ROUNDS);
    unsigned hint = 0;
    uint64_t before = atomic_load(&fx->d->xstats.transfers_failed);
    for (int i = 0; i < n; i++)
        one_round(fx, push, i, &hint, &t);
    cfx_drain_watches(fx, push);
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

static int setup_tcp(void **state) { return cfx_setup(state, "tcp"); }
static int setup_shm(void **state) { return cfx_setup(state, "shm"); }

static void test_pull(void **state) { run_rounds(*state, false); }
static void test_push(void **state) { run_rounds(*state, true); }

/* A cancel asked before the call starts: CANCELLED, nothing sent, the link
 * usable, the destination untouched. */
static void test_cancel_before_start(void **state)
{
    cfx_t *fx = *state;
    cfx_fill_range(fx->rmem, 0, 0x22);
    cfx_fill_range(fx->lmem, 0, 0x44);
    job_t j;
    memset(&j, 0, sizeof j);
    j.fx = fx;
    make_req(&j, fx, false, 0, CFX_RANGE_BLOCKS);
    assert_int_equal(llk_cancel_init(&j.cx), 0);
    llk_cancel_request(&j.cx);
    assert_status(llk_xfer_run(fx->d, &j.req, &j.cx), LLMLINK_CANCELLED);
    assert_true(llk_cancel_wait_fenced(&j.cx, 0));
    assert_true(cfx_range_is(fx->lmem, 0, 0x44));
    llk_cancel_free(&j.cx);
    char pm[512];
    assert_status(probe(fx, pm, sizeof pm), LLMLINK_SUCCESS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cancel_before_start, setup_tcp, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_pull, setup_tcp, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_push, setup_tcp, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_pull, setup_shm, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_push, setup_shm, cfx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

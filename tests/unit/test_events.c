/*
 * test_events.c - the engine's level-triggered event descriptor
 * (core/base/events.c): readable exactly while a source has something to
 * collect, quiet as soon as every source is empty, whichever order the
 * sources change in, and from many threads at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <pthread.h>

#include "base/events.h"

static bool readable(const llk_events_t *ev)
{
    struct pollfd p = {.fd = ev->fd, .events = POLLIN};
    int r = poll(&p, 1, 0);
    assert_true(r >= 0);
    return r == 1 && (p.revents & POLLIN);
}

static int setup(void **state)
{
    static llk_events_t ev;
    if (llk_events_init(&ev) != 0)
        return -1;
    *state = &ev;
    return 0;
}

static int teardown(void **state)
{
    llk_events_free(*state);
    return 0;
}

static void test_quiet_until_a_source_has_something(void **state)
{
    llk_events_t *ev = *state;
    assert_false(readable(ev));
    llk_events_set(ev, LLK_EV_TASKS, false);
    assert_false(readable(ev));
    llk_events_set(ev, LLK_EV_TASKS, true);
    assert_true(readable(ev));
    /* Level, not edge: still readable when looked at again. */
    assert_true(readable(ev));
    llk_events_set(ev, LLK_EV_TASKS, true);
    assert_true(readable(ev));
    llk_events_set(ev, LLK_EV_TASKS, false);
    assert_false(readable(ev));
}

static void test_two_sources_any_order(void **state)
{
    llk_events_t *ev = *state;
    llk_events_set(ev, LLK_EV_TASKS, true);
    llk_events_set(ev, LLK_EV_NOTIFY, true);
    llk_events_set(ev, LLK_EV_TASKS, false);
    assert_true(readable(ev)); /* notifications still wait */
    llk_events_set(ev, LLK_EV_NOTIFY, false);
    assert_false(readable(ev));
    llk_events_set(ev, LLK_EV_NOTIFY, true);
    llk_events_set(ev, LLK_EV_NOTIFY, false);
    llk_events_set(ev, LLK_EV_TASKS, true);
    assert_true(readable(ev));
    llk_events_set(ev, LLK_EV_TASKS, false);
    assert_false(readable(ev));
}

static void *flip(void *arg)
{
    llk_events_t *ev = ((void **)arg)[0];
    uint32_t bit = (uint32_t)(uintptr_t)((void **)arg)[1];
    for (int i = 0; i < 20000; i++) {
        llk_events_set(ev, bit, true);
        llk_events_set(ev, bit, false);
    }
    return NULL;
}

static void test_threads_leave_it_quiet(void **state)
{
    llk_events_t *ev = *state;
    void *a0[2] = {ev, (void *)(uintptr_t)LLK_EV_TASKS};
    void *a1[2] = {ev, (void *)(uintptr_t)LLK_EV_NOTIFY};
    pthread_t t0, t1;
    assert_int_equal(pthread_create(&t0, NULL, flip, a0), 0);
    assert_int_equal(pthread_create(&t1, NULL, flip, a1), 0);
    pthread_join(t0, NULL);
    pthread_join(t1, NULL);
    assert_false(readable(ev));
    llk_events_set(ev, LLK_EV_TASKS, true);
    assert_true(readable(ev));
    llk_events_set(ev, LLK_EV_TASKS, false);
}

static void test_free_twice_and_unset_are_harmless(void **state)
{
    (void)state;
    llk_events_t ev;
    assert_int_equal(llk_events_init(&ev), 0);
    llk_events_free(&ev);
    llk_events_free(&ev);
    llk_events_set(&ev, LLK_EV_TASKS, true); /* fd -1: ignored */
    assert_int_equal(ev.fd, -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_quiet_until_a_source_has_something, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_sources_any_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_leave_it_quiet, setup, teardown),
        cmocka_unit_test(test_free_twice_and_unset_are_harmless),
    };
    return cmocka_run_group_tests_name("events", tests, NULL, NULL);
}

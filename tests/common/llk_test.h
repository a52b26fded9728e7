/*
 * llk_test.h - assertions shared by the cmocka test programs. Include after
 * <cmocka.h> (and its prerequisites) and "llmlink.h".
 */
#ifndef LLK_TEST_H
#define LLK_TEST_H

#include <string.h>

#include "llmlink.h"

/* Compares statuses and, on mismatch, names both and the thread's last error. */
#define assert_status(got, want)                                                            \
    do {                                                                                    \
        llmlink_status_t got_ = (got), want_ = (want);                                      \
        if (got_ != want_)                                                                  \
            fail_msg("%s is %s (0x%08x), expected %s; last_error: %s", #got,                \
                     llmlink_status_name(got_), got_, llmlink_status_name(want_),           \
                     llmlink_last_error());                                                 \
    } while (0)

/* An engine's counters (the call itself must succeed). */
static inline llmlink_stats_t stats_of(llmlink_t *e)
{
    llmlink_stats_t s;
    memset(&s, 0, sizeof s);
    s.version = LLMLINK_STATS_VERSION;
    assert_int_equal(llmlink_get_stats(e, &s), LLMLINK_SUCCESS);
    return s;
}

#endif /* LLK_TEST_H */

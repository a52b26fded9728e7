/* clock.h - monotonic milliseconds: all deadlines in llmlink use this. */
#ifndef LLK_CLOCK_H
#define LLK_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t llk_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Monotonic nanoseconds: for the short, bounded spins before a sleep. */
static inline int64_t llk_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A deadline in llk_now_ms() milliseconds as the timespec that
 * pthread_cond_timedwait takes (every condition variable of llmlink runs on
 * CLOCK_MONOTONIC). */
static inline struct timespec llk_ms_timespec(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    return ts;
}

#endif /* LLK_CLOCK_H */

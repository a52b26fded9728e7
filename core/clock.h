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

#endif /* LLK_CLOCK_H */

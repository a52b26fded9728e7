/* log.c - process-wide log sink. */
#include "base/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static llmlink_log_fn log_fn;
static void *log_user;
/* Read without the lock on the hot path; written under it. */
static int log_max = -1; /* -1: not yet decided (LLMLINK_LOG not read) */

static const char *level_name(llmlink_log_level_t l)
{
    switch (l) {
    case LLMLINK_LOG_ERROR: return "error";
    case LLMLINK_LOG_WARN: return "warn";
    case LLMLINK_LOG_INFO: return "info";
    case LLMLINK_LOG_DEBUG: return "debug";
    default: return "none";
    }
}

static void stderr_sink(llmlink_log_level_t level, const char *msg, void *user)
{
    (void)user;
    fprintf(stderr, "llmlink[%s]: %s\n", level_name(level), msg);
}

/* Called with log_mu held. */
static void decide_default(void)
{
    if (log_max >= 0)
        return;
    const char *env = getenv("LLMLINK_LOG");
    int lvl = LLMLINK_LOG_NONE;
    if (env) {
        for (int l = LLMLINK_LOG_ERROR; l <= LLMLINK_LOG_DEBUG; l++)
            if (strcmp(env, level_name((llmlink_log_level_t)l)) == 0)
                lvl = l;
    }
    if (lvl != LLMLINK_LOG_NONE && !log_fn)
        log_fn = stderr_sink;
    __atomic_store_n(&log_max, lvl, __ATOMIC_RELEASE);
}

int llk_log_enabled(llmlink_log_level_t level)
{
    int max = __atomic_load_n(&log_max, __ATOMIC_ACQUIRE);
    if (max < 0) {
        pthread_mutex_lock(&log_mu);
        decide_default();
        max = log_max;
        pthread_mutex_unlock(&log_mu);
    }
    return level != LLMLINK_LOG_NONE && (int)level <= max;
}

void llk_log(llmlink_log_level_t level, const char *fmt, ...)
{
    if (!llk_log_enabled(level))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* The lock keeps fn and user_data consistent with each other while a
     * caller swaps the callback. */
    pthread_mutex_lock(&log_mu);
    if (log_fn)
        log_fn(level, msg, log_user);
    pthread_mutex_unlock(&log_mu);
}

void llk_log_set(llmlink_log_fn fn, void *user, llmlink_log_level_t max_level)
{
    pthread_mutex_lock(&log_mu);
    log_fn = fn;
    log_user = user;
    int lvl = fn ? (int)max_level : LLMLINK_LOG_NONE;
    if (lvl < LLMLINK_LOG_NONE || lvl > LLMLINK_LOG_DEBUG)
        lvl = LLMLINK_LOG_DEBUG;
    __atomic_store_n(&log_max, lvl, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&log_mu);
}

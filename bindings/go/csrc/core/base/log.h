/*
 * log.h - the process-wide log sink behind llmlink_set_log_callback().
 */
#ifndef LLK_LOG_H
#define LLK_LOG_H

#include "llmlink.h"

void llk_log(llmlink_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* True when a message at this level would be delivered (skip formatting). */
int llk_log_enabled(llmlink_log_level_t level);
void llk_log_set(llmlink_log_fn fn, void *user, llmlink_log_level_t max_level);

#define LLK_ERROR(...) llk_log(LLMLINK_LOG_ERROR, __VA_ARGS__)
#define LLK_WARN(...)  llk_log(LLMLINK_LOG_WARN, __VA_ARGS__)
#define LLK_INFO(...)  llk_log(LLMLINK_LOG_INFO, __VA_ARGS__)
#define LLK_DEBUG(...) do { if (llk_log_enabled(LLMLINK_LOG_DEBUG)) llk_log(LLMLINK_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif /* LLK_LOG_H */

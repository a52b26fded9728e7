/*
 * err.h - the thread-local error detail behind llmlink_last_error().
 */
#ifndef LLK_ERR_H
#define LLK_ERR_H

#include "llmlink.h"

#define LLK_ERR_MSG_MAX 1024

/* Records status and a printf-style message for the calling thread and
 * returns status, so callers can write `return llk_err(...)`. */
llmlink_status_t llk_err(llmlink_status_t status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

const char *llk_err_message(void);
llmlink_status_t llk_err_status(void);
void llk_err_clear(void);

#endif /* LLK_ERR_H */

/* err.c - thread-local error detail. */
#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* One buffer per thread: messages never cross threads, and a binding reads
 * the message on the thread that made the failing call. */
static __thread char tls_msg[LLK_ERR_MSG_MAX];
static __thread llmlink_status_t tls_status;

llmlink_status_t llk_err(llmlink_status_t status, const char *fmt, ...)
{
    /* Format aside first: an argument may be llmlink_last_error() itself. */
    char msg[LLK_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(tls_msg, msg, sizeof msg);
    tls_status = status;
    return status;
}

const char *llk_err_message(void) { return tls_msg; }
llmlink_status_t llk_err_status(void) { return tls_status; }

void llk_err_clear(void)
{
    tls_msg[0] = '\0';
    tls_status = LLMLINK_SUCCESS;
}

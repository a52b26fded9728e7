/* api_status.c - version, status names and sentences (forwarded to
 * base/status.c), errors, logging. */
#include "llmlink.h"

#include "base/err.h"
#include "base/log.h"
#include "base/status.h"

LLMLINK_EXTERN uint32_t llmlink_version_number(void) { return LLMLINK_VERSION_NUMBER; }
LLMLINK_EXTERN const char *llmlink_version_string(void) { return LLMLINK_VERSION_STRING; }

LLMLINK_EXTERN const char *llmlink_status_name(llmlink_status_t status)
{
    return llk_status_name(status);
}

LLMLINK_EXTERN const char *llmlink_strerror(llmlink_status_t status)
{
    return llk_status_text(status);
}

LLMLINK_EXTERN const char *llmlink_last_error(void) { return llk_err_message(); }
LLMLINK_EXTERN llmlink_status_t llmlink_last_error_status(void) { return llk_err_status(); }
LLMLINK_EXTERN void llmlink_clear_error(void) { llk_err_clear(); }

LLMLINK_EXTERN void llmlink_set_log_callback(llmlink_log_fn fn, void *user_data,
                                             llmlink_log_level_t max_level)
{
    llk_log_set(fn, user_data, max_level);
}

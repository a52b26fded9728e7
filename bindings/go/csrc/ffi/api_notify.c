/* api_notify.c - notifications at the ABI (llmlink.h, "Notifications"):
 * every argument is checked here, before any traffic. */
#include "llmlink.h"

#include "base/clock.h"
#include "base/err.h"
#include "link/engine.h"
#include "xfer/notify.h"

LLMLINK_EXTERN llmlink_status_t llmlink_notify(llmlink_t *dd, uint64_t cluster_id,
                                               const void *data, size_t len,
                                               int32_t timeout_ms)
{
    static const char fn[] = "llmlink_notify";
    if (!dd)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: dd is NULL", fn);
    if (!data)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: data is NULL", fn);
    if (len == 0 || len > LLMLINK_MAX_NOTIFY_BYTES)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: len is %zu, must be 1..%d", fn, len,
                       LLMLINK_MAX_NOTIFY_BYTES);
    if (timeout_ms <= 0)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: timeout_ms is %d, must be > 0", fn,
                       (int)timeout_ms);
    llmlink_status_t st =
        llk_notify_send(dd, cluster_id, data, len, llk_now_ms() + timeout_ms, fn);
    if (st == LLMLINK_SUCCESS)
        llk_err_clear();
    return st;
}

LLMLINK_EXTERN llmlink_status_t llmlink_get_notifies(llmlink_t *dd,
                                                     llmlink_notification_t *out,
                                                     size_t max, size_t *count)
{
    static const char fn[] = "llmlink_get_notifies";
    if (count)
        *count = 0;
    if (!dd)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: dd is NULL", fn);
    if (!count)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: count is NULL", fn);
    if (!out && max > 0)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: out is NULL but max is %zu", fn, max);
    pthread_mutex_lock(&dd->mu);
    llmlink_status_t st = llk_engine_check_running(dd, fn);
    if (st == LLMLINK_SUCCESS)
        llk_notify_take_locked(dd, out, max, count);
    pthread_mutex_unlock(&dd->mu);
    if (st == LLMLINK_SUCCESS)
        llk_err_clear();
    return st;
}

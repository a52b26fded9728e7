/* xfer/notify.c - notifications (notify.h). TRANSIENT: the notification
 * engineer replaces this file; until then a send says it is not built. */
#include "base/err.h"
#include "xfer/notify.h"

llmlink_status_t llk_notify_send(llmlink_t *e, uint64_t cluster_id, const void *data, size_t len,
                                 int64_t deadline_ms, const char *fn)
{
    (void)e;
    (void)cluster_id;
    (void)data;
    (void)len;
    (void)deadline_ms;
    return llk_err(LLMLINK_FEATURE_NOT_ENABLED, "%s: notifications are not built yet", fn);
}

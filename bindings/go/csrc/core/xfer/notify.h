/*
 * notify.h - notifications between linked engines (llmlink_notify,
 * llmlink_get_notifies): small messages on the link's control connection,
 * ordered per link, queued by the receiver up to llmlink.NotifyQueueDepth.
 */
#ifndef LLK_XFER_NOTIFY_H
#define LLK_XFER_NOTIFY_H

#include <stddef.h>
#include <stdint.h>

#include "llmlink.h"

/* Sends data (1..LLMLINK_MAX_NOTIFY_BYTES) to the peer of the live link
 * with cluster_id and waits until deadline_ms (monotonic) for the peer to
 * queue it. SUCCESS, NOTIFY_QUEUE_FULL, NOT_YET_LINK, TIMEOUT, with
 * llk_err() set on failure (fn names the API call in messages). Any
 * thread; takes e->mu. Used by llmlink_notify and by a task's attached
 * notification (xfer/task.c) once the task's bytes are in place. */
llmlink_status_t llk_notify_send(llmlink_t *e, uint64_t cluster_id, const void *data, size_t len,
                                 int64_t deadline_ms, const char *fn);

#endif /* LLK_XFER_NOTIFY_H */

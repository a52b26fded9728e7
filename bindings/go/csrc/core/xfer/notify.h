/*
 * notify.h - notifications between linked engines (llmlink_notify,
 * llmlink_get_notifies): small messages on the link's control connection,
 * ordered per link, queued by the receiver up to llmlink.NotifyQueueDepth.
 */
#ifndef LLK_XFER_NOTIFY_H
#define LLK_XFER_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmlink.h"
#include "link/wire.h"

struct llk_conn;

/* One received notification, queued until llmlink_get_notifies. */
typedef struct llk_notify_item {
    struct llk_notify_item *next;
    uint64_t cluster_id;
    uint32_t len;
    uint8_t data[]; /* len bytes */
} llk_notify_item_t;

/* A sender waiting for the ACK of (c, seq); on its own stack, in
 * e->notify.waits while it waits. The reactor sets status and done. */
typedef struct llk_notify_wait {
    struct llk_notify_wait *prev, *next;
    struct llk_conn *c;
    uint64_t seq;
    bool done;
    llmlink_status_t status;
} llk_notify_wait_t;

/* An engine's notification state (struct llmlink.notify), under e->mu:
 * the received queue (oldest first, at most llmlink.NotifyQueueDepth),
 * the senders waiting for an ACK, and how many senders wait for room in
 * a connection's bulk queue (conn.c wakes them as it drains). */
typedef struct llk_notify_state {
    struct llk_notify_item *head, *tail;
    uint32_t count;
    struct llk_notify_wait *waits;
    uint32_t room_waiters;
} llk_notify_state_t;

/* A connection's bulk queue holds at most this much of NOTIFY frames (16
 * of the largest); ACKs may use LLK_NOTIFY_ACK_RESERVE beyond it, so that
 * answering never waits for our own sends. A peer that lets both fill
 * does not read: the link breaks. */
#define LLK_NOTIFY_TX_LIMIT (16u * LLK_WIRE_MAX_NOTIFY_FRAME)
#define LLK_NOTIFY_ACK_RESERVE (4096u * (LLK_WIRE_HEADER_SIZE + LLK_NOTIFY_ACK_PAYLOAD))

/* Sends data (1..LLMLINK_MAX_NOTIFY_BYTES) to the peer of the live link
 * with cluster_id and waits until deadline_ms (monotonic) for the peer to
 * queue it. SUCCESS, NOTIFY_QUEUE_FULL, NOT_YET_LINK, TIMEOUT, with
 * llk_err() set on failure (fn names the API call in messages). Any
 * thread; takes e->mu. Used by llmlink_notify and by a task's attached
 * notification (xfer/task.c) once the task's bytes are in place. */
llmlink_status_t llk_notify_send(llmlink_t *e, uint64_t cluster_id, const void *data, size_t len,
                                 int64_t deadline_ms, const char *fn);

/* Takes up to max received notifications, oldest first, into out;
 * *count gets how many. e->mu held. Clears LLK_EV_NOTIFY when the queue
 * empties. */
void llk_notify_take_locked(llmlink_t *e, llmlink_notification_t *out, size_t max,
                            size_t *count);
/* Frees what is still queued (llk_engine_free). */
void llk_notify_state_free(llk_notify_state_t *ns);

/* ---- the reactor's side (link/notify_rx.c), e->mu held ---- */
/* A NOTIFY or NOTIFY_ACK on link c (LINKED or UNLINKING). 0, or -1 with
 * *why: a protocol error (the caller breaks the link). */
int llk_notify_on_frame(llmlink_t *e, struct llk_conn *c, const llk_frame_header_t *h,
                        const uint8_t *payload, const char **why);
/* c stops being a link: its senders end with NOT_YET_LINK. */
void llk_notify_on_link_down(llmlink_t *e, struct llk_conn *c);

#endif /* LLK_XFER_NOTIFY_H */

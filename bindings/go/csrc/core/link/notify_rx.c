/* link/notify_rx.c - the reactor's side of notifications (xfer/notify.h):
 * a NOTIFY is queued (or refused when the queue is full) and answered with
 * NOTIFY_ACK; an ACK completes the sender waiting for it; a link going
 * down ends its senders. Everything here runs with e->mu held. */
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "link/engine.h"
#include "xfer/notify.h"
#include "xfer/notify_testing.h"

void llk_test_set_legacy_notify(llmlink_t *e, bool on)
{
    pthread_mutex_lock(&e->mu);
    e->test_legacy_notify = on;
    pthread_mutex_unlock(&e->mu);
}

static void unlink_wait(llk_notify_state_t *ns, llk_notify_wait_t *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        ns->waits = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

/* Queues the ACK behind any NOTIFY we are sending (same bulk queue, so
 * order and frame boundaries hold). false: the peer does not read. */
static bool queue_ack(llk_conn_t *c, uint64_t seq, llmlink_status_t st)
{
    uint8_t f[LLK_WIRE_HEADER_SIZE + LLK_NOTIFY_ACK_PAYLOAD];
    size_t n = llk_wire_encode_notify_ack(f, sizeof f, LLK_WIRE_VERSION, seq, (uint32_t)st);
    return llk_conn_queue_bulk(c, f, n, LLK_NOTIFY_TX_LIMIT + LLK_NOTIFY_ACK_RESERVE);
}

static int on_notify(llmlink_t *e, llk_conn_t *c, const uint8_t *payload, size_t plen,
                     const char **why)
{
    uint64_t seq;
    const uint8_t *data;
    uint32_t len;
    if (llk_wire_decode_notify(payload, plen, &seq, &data, &len, why) != 0)
        return -1;
    llk_notify_state_t *ns = &e->notify;
    llmlink_status_t st = LLMLINK_SUCCESS;
    llk_notify_item_t *it = NULL;
    if (ns->count >= e->opts.notify_queue_depth ||
        !(it = malloc(sizeof *it + len))) {
        /* Full (or no memory): nothing queued, the sender is told. */
        st = LLMLINK_NOTIFY_QUEUE_FULL;
        atomic_fetch_add(&e->xstats.notifies_refused_full, 1);
    } else {
        it->next = NULL;
        it->cluster_id = c->remote_id;
        it->len = len;
        memcpy(it->data, data, len);
        if (ns->tail)
            ns->tail->next = it;
        else
            ns->head = it;
        ns->tail = it;
        if (ns->count++ == 0)
            llk_events_set(&e->events, LLK_EV_NOTIFY, true);
        atomic_fetch_add(&e->xstats.notifies_received, 1);
    }
    if (!queue_ack(c, seq, st)) {
        *why = "peer does not read its notification acknowledgements";
        return -1;
    }
    return 0;
}

static int on_ack(llmlink_t *e, llk_conn_t *c, const uint8_t *payload, size_t plen,
                  const char **why)
{
    uint64_t seq;
    uint32_t status;
    if (llk_wire_decode_notify_ack(payload, plen, &seq, &status, why) != 0)
        return -1;
    /* The peer answers in the order it read, on one stream: the ACK due is
     * for the oldest NOTIFY not yet answered, and there must be one. */
    if (c->notify_ack_next >= c->notify_seq || seq != c->notify_ack_next) {
        *why = "NOTIFY_ACK for a notification not sent or already answered";
        return -1;
    }
    c->notify_ack_next++;
    for (llk_notify_wait_t *w = e->notify.waits; w; w = w->next)
        if (w->c == c && w->seq == seq) {
            w->status = (llmlink_status_t)status;
            w->done = true;
            unlink_wait(&e->notify, w);
            pthread_cond_broadcast(&e->cv);
            break;
        }
    /* No waiter: its sender timed out and left; the answer is dropped. */
    return 0;
}

int llk_notify_on_frame(llmlink_t *e, llk_conn_t *c, const llk_frame_header_t *h,
                        const uint8_t *payload, const char **why)
{
    if (h->type == LLK_MSG_NOTIFY)
        return on_notify(e, c, payload, h->length, why);
    return on_ack(e, c, payload, h->length, why);
}

void llk_notify_on_link_down(llmlink_t *e, llk_conn_t *c)
{
    bool any = false;
    llk_notify_wait_t *w = e->notify.waits;
    while (w) {
        llk_notify_wait_t *nx = w->next;
        if (w->c == c) {
            w->status = LLMLINK_NOT_YET_LINK;
            w->done = true;
            w->c = NULL;
            unlink_wait(&e->notify, w);
            any = true;
        }
        w = nx;
    }
    /* Senders waiting for room in c's bulk queue look again too (they
     * find no link and say so). */
    if (any || e->notify.room_waiters)
        pthread_cond_broadcast(&e->cv);
}

void llk_notify_state_free(llk_notify_state_t *ns)
{
    while (ns->head) {
        llk_notify_item_t *it = ns->head;
        ns->head = it->next;
        free(it);
    }
    ns->tail = NULL;
    ns->count = 0;
}

/*
 * events.h - the engine's event descriptor (llmlink_get_event_fd): an
 * eventfd that is readable exactly while some source has something to
 * collect (finished tasks not yet polled, notifications not yet fetched).
 *
 * Level-triggered on purpose: event loops (epoll, asyncio, Go's
 * netpoller, tokio) wait on it without reading it, and a reader that
 * collects everything sees it go quiet at once. Each source says when it
 * goes from empty to non-empty and back; the descriptor holds 1 while any
 * source is non-empty and 0 otherwise, changed under one mutex so that
 * two sources never race the counter.
 */
#ifndef LLK_EVENTS_H
#define LLK_EVENTS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define LLK_EV_TASKS 1u  /* finished tasks not yet collected (xfer/task.c) */
#define LLK_EV_NOTIFY 2u /* received notifications not yet fetched (xfer/notify.c) */

typedef struct llk_events {
    int fd; /* eventfd (non-blocking, close-on-exec); -1 before init */
    pthread_mutex_t mu;
    uint32_t pending; /* sources with something to collect */
} llk_events_t;

/* 0, or -1 with errno (the eventfd could not be made). */
int llk_events_init(llk_events_t *ev);
/* Closes the descriptor. Safe on an events object whose init failed or
 * never ran (fd -1). */
void llk_events_free(llk_events_t *ev);
/* Source `bit` now has (has) or no longer has something to collect. */
void llk_events_set(llk_events_t *ev, uint32_t bit, bool has);

#endif /* LLK_EVENTS_H */

/*
 * notify_fx.h - what the notification tests share (test_notify.c,
 * test_notify_multiproc.c): the messages (sizes 1..4096, content a function
 * of the sender and the index), a PROMPT engine on 127.0.0.1:0, and a
 * stream of notifications sent on a thread and received and checked in
 * order on another (waiting on the engine's event descriptor). Nothing here
 * calls cmocka: failures come back as codes and messages, so the helpers
 * run in forked children too. Every wait is bounded (NFX_DEADLINE_MS).
 */
#ifndef LLK_TEST_NOTIFY_FX_H
#define LLK_TEST_NOTIFY_FX_H

#include <stddef.h>
#include <stdint.h>

#include "llmlink.h"

/* Generous: sanitizer builds and a shared 2-core machine. */
#define NFX_DEADLINE_MS 240000

/* A sender of n messages (nfx_send_all) or of one (the tests' own). */
typedef struct nfx_sender {
    llmlink_t *e;
    uint64_t peer;
    int n;
    llmlink_status_t bad; /* 0 = every send succeeded */
    int bad_index;
    char why[256];
    int64_t elapsed_ms;
    int32_t timeout_ms;
    llmlink_status_t st;
} nfx_sender_t;

/* Message i from cluster `from`: its size (1..4096; 4096 and 1 every
 * 1000) and its bytes. */
uint32_t nfx_msg_size(uint64_t from, int i);
void nfx_msg_fill(uint64_t from, int i, uint8_t *buf, uint32_t len);
/* A PROMPT engine on 127.0.0.1:0 (llmlink.NotifyQueueDepth = depth unless
 * NULL); NULL on failure (llmlink_last_error says why). */
llmlink_t *nfx_prompt_engine(uint64_t id, const char *depth, uint16_t *port);
/* Thread body: sends s->n messages in order to s->peer (QUEUE_FULL is
 * retried); the first failure in s->bad / bad_index / why. */
void *nfx_send_all(void *arg);
/* Receives n messages from `from`, each checked in order: 0, or -1 with
 * why. */
int nfx_receive_all(llmlink_t *e, uint64_t from, int n, char *why, size_t cap);
/* Both at once: a sender thread to peer, this thread receives from it. */
int nfx_exchange(llmlink_t *e, uint64_t peer, int n, char *why, size_t cap);

#endif /* LLK_TEST_NOTIFY_FX_H */

/* notify_fx.c - see notify_fx.h. */
#include "notify_fx.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "link/engine.h"
#include "rawpeer.h"

/* ---- the messages: sizes 1..4096, content a function of the index ---- */

static uint32_t mix(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    return x ^ (x >> 16);
}

uint32_t nfx_msg_size(uint64_t from, int i)
{
    if (i % 1000 == 0)
        return LLMLINK_MAX_NOTIFY_BYTES;
    if (i % 1000 == 1)
        return 1;
    return 1 + mix((uint32_t)i * 2654435761u + (uint32_t)from) % LLMLINK_MAX_NOTIFY_BYTES;
}

void nfx_msg_fill(uint64_t from, int i, uint8_t *buf, uint32_t len)
{
    uint32_t s = mix((uint32_t)i ^ ((uint32_t)from << 24));
    for (uint32_t k = 0; k < len; k++)
        buf[k] = (uint8_t)(s + k * 31u + (k >> 8));
}

/* ---- engines ---- */

static llmlink_t *engine(llmlink_role_t role, uint64_t id, const llmlink_option_t *o, size_t n)
{
    llmlink_t *e = NULL;
    if (llmlink_create(&e, role, id) != LLMLINK_SUCCESS)
        return NULL;
    if (llmlink_init(e, o, n) != LLMLINK_SUCCESS) {
        llmlink_destroy(e);
        return NULL;
    }
    return e;
}

/* A PROMPT engine on 127.0.0.1:0 with the extra option (NULL: none). */
llmlink_t *nfx_prompt_engine(uint64_t id, const char *depth, uint16_t *port)
{
    llmlink_option_t o[2] = {{"llm.listenIpInfo", "127.0.0.1:0"},
                             {"llmlink.NotifyQueueDepth", depth}};
    llmlink_t *e = engine(LLMLINK_ROLE_PROMPT, id, o, depth ? 2 : 1);
    if (e && llmlink_get_listen_port(e, 0, port) != LLMLINK_SUCCESS) {
        llmlink_destroy(e);
        return NULL;
    }
    return e;
}
/* ---- sending and receiving a stream of notifications ---- */

/* Sends n messages in order; QUEUE_FULL is retried (the receiver drains). */
void *nfx_send_all(void *arg)
{
    nfx_sender_t *s = arg;
    uint8_t *buf = malloc(LLMLINK_MAX_NOTIFY_BYTES);
    int64_t deadline = rawpeer_now_ms() + NFX_DEADLINE_MS;
    for (int i = 0; buf && i < s->n; i++) {
        uint32_t len = nfx_msg_size(s->e->cluster_id, i);
        nfx_msg_fill(s->e->cluster_id, i, buf, len);
        for (;;) {
            llmlink_status_t st = llmlink_notify(s->e, s->peer, buf, len, 10000);
            if (st == LLMLINK_SUCCESS)
                break;
            if (st != LLMLINK_NOTIFY_QUEUE_FULL || rawpeer_now_ms() > deadline) {
                s->bad = st;
                s->bad_index = i;
                snprintf(s->why, sizeof s->why, "%s", llmlink_last_error());
                free(buf);
                return NULL;
            }
            rawpeer_sleep_ms(1);
        }
    }
    free(buf);
    return NULL;
}

/* Receives n messages from `from` and checks each in order; 0 or -1 with
 * why. Waits on the event descriptor between fetches. */
int nfx_receive_all(llmlink_t *e, uint64_t from, int n, char *why, size_t cap)
{
    enum { BATCH = 32 };
    llmlink_notification_t *out = malloc(BATCH * sizeof *out);
    uint8_t *want = malloc(LLMLINK_MAX_NOTIFY_BYTES);
    int64_t deadline = rawpeer_now_ms() + NFX_DEADLINE_MS;
    int next = 0, rc = -1;
    if (!out || !want) {
        snprintf(why, cap, "out of memory");
        goto done;
    }
    while (next < n) {
        if (rawpeer_now_ms() > deadline) {
            snprintf(why, cap, "only %d of %d notifications arrived in time", next, n);
            goto done;
        }
        size_t cnt = 99;
        llmlink_status_t st = llmlink_get_notifies(e, out, BATCH, &cnt);
        if (st != LLMLINK_SUCCESS) {
            snprintf(why, cap, "get_notifies: %s", llmlink_last_error());
            goto done;
        }
        for (size_t j = 0; j < cnt; j++, next++) {
            uint32_t len = nfx_msg_size(from, next);
            nfx_msg_fill(from, next, want, len);
            if (out[j].cluster_id != from || out[j].len != len ||
                memcmp(out[j].data, want, len) != 0) {
                snprintf(why, cap, "notification %d: cluster %llu, %u bytes (want %u), content "
                         "%s", next, (unsigned long long)out[j].cluster_id, out[j].len, len,
                         out[j].len == len ? "differs" : "-");
                goto done;
            }
        }
        if (cnt == 0) {
            struct pollfd p = {.fd = e->events.fd, .events = POLLIN};
            poll(&p, 1, 100);
        }
    }
    rc = 0;
done:
    free(out);
    free(want);
    return rc;
}

/* Both directions at once: a sender thread to `peer`, this thread
 * receives from it. 0 or -1 with why. */
int nfx_exchange(llmlink_t *e, uint64_t peer, int n, char *why, size_t cap)
{
    nfx_sender_t s = {.e = e, .peer = peer, .n = n};
    pthread_t th;
    if (pthread_create(&th, NULL, nfx_send_all, &s) != 0) {
        snprintf(why, cap, "pthread_create");
        return -1;
    }
    int rc = nfx_receive_all(e, peer, n, why, cap);
    pthread_join(th, NULL);
    if (rc == 0 && s.bad) {
        snprintf(why, cap, "send %d: %s: %s", s.bad_index, llmlink_status_name(s.bad), s.why);
        rc = -1;
    }
    return rc;
}


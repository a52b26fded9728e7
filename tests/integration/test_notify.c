/*
 * test_notify.c - notifications between engines (llmlink_notify,
 * llmlink_get_notifies): order, a full queue, a dead peer, the event
 * descriptor, an older peer without notifications, argument checks.
 *
 * The order and dead-peer cases run the PROMPT engine in a fork()ed child
 * process (its own engine, threads and sockets), the DECODER in the test:
 * a real peer on loopback that the test can stop and SIGKILL. The child
 * talks to the test over two pipes in lines ("PORT n", "go", "DONE OK",
 * "quit"); it has PR_SET_PDEATHSIG and an alarm() backstop, and the
 * teardown kills and reaps it. Every wait is bounded.
 *
 * The event descriptor is read as e->events.fd (link/engine.h) until
 * llmlink_get_event_fd is merged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llmlink.h"
#include "llk_test.h"
#include "link/engine.h"
#include "rawpeer.h"
#include "tls_env.h"
#include "xfer/notify_testing.h"

#define P_ID 1u
#define D_ID 2u
#define ORDER_COUNT 10000
/* Generous: sanitizer builds and a shared 2-core machine. */
#define ORDER_DEADLINE_MS 240000
#define CHILD_LIFE_S 300
#define SLACK_MS 1000

typedef struct sender {
    llmlink_t *e;
    uint64_t peer;
    int n;
    llmlink_status_t bad; /* 0 = every send succeeded */
    int bad_index;
    char why[256];
    int64_t elapsed_ms;
    int32_t timeout_ms;
    llmlink_status_t st;
} sender_t;

typedef struct fx {
    llmlink_t *eng[4];
    size_t neng;
    pid_t child;
    int to_child, from_child;
    pthread_t th;
    bool th_started;
    sender_t snd;
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fx->to_child = fx->from_child = -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    if (fx->child > 0) {
        kill(fx->child, SIGKILL);
        waitpid(fx->child, NULL, 0);
    }
    if (fx->th_started)
        pthread_join(fx->th, NULL); /* every send is bounded by its timeout */
    for (size_t i = 0; i < fx->neng; i++)
        if (fx->eng[i])
            llmlink_destroy(fx->eng[i]);
    if (fx->to_child >= 0)
        close(fx->to_child);
    if (fx->from_child >= 0)
        close(fx->from_child);
    free(fx);
    return 0;
}

/* ---- the messages: sizes 1..4096, content a function of the index ---- */

static uint32_t mix(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    return x ^ (x >> 16);
}

static uint32_t msg_size(uint64_t from, int i)
{
    if (i % 1000 == 0)
        return LLMLINK_MAX_NOTIFY_BYTES;
    if (i % 1000 == 1)
        return 1;
    return 1 + mix((uint32_t)i * 2654435761u + (uint32_t)from) % LLMLINK_MAX_NOTIFY_BYTES;
}

static void msg_fill(uint64_t from, int i, uint8_t *buf, uint32_t len)
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
static llmlink_t *prompt_engine(uint64_t id, const char *depth, uint16_t *port)
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

static llmlink_t *fx_prompt(fx_t *fx, uint64_t id, const char *depth, uint16_t *port)
{
    llmlink_t *e = prompt_engine(id, depth, port);
    assert_non_null(e);
    fx->eng[fx->neng++] = e;
    return e;
}

static llmlink_t *fx_decoder(fx_t *fx, uint64_t id, bool legacy)
{
    llmlink_t *e = NULL;
    assert_status(llmlink_create(&e, LLMLINK_ROLE_DECODER, id), LLMLINK_SUCCESS);
    fx->eng[fx->neng++] = e;
    if (legacy)
        llk_test_set_legacy_notify(e, true);
    assert_status(llmlink_init(e, NULL, 0), LLMLINK_SUCCESS);
    return e;
}

static void link_to(llmlink_t *d, uint64_t id, uint16_t port)
{
    llmlink_ip_info_t ip = {.ip = "127.0.0.1", .port = port};
    llmlink_cluster_info_t c;
    memset(&c, 0, sizeof c);
    c.remote_cluster_id = id;
    c.remote_ip_infos = &ip;
    c.num_remote_ip_infos = 1;
    llmlink_status_t st = 0;
    assert_status(llmlink_link_clusters(d, &c, 1, 10000, &st), LLMLINK_SUCCESS);
    assert_status(st, LLMLINK_SUCCESS);
}

/* ---- sending and receiving a stream of notifications ---- */

/* Sends n messages in order; QUEUE_FULL is retried (the receiver drains). */
static void *send_all(void *arg)
{
    sender_t *s = arg;
    uint8_t *buf = malloc(LLMLINK_MAX_NOTIFY_BYTES);
    int64_t deadline = rawpeer_now_ms() + ORDER_DEADLINE_MS;
    for (int i = 0; buf && i < s->n; i++) {
        uint32_t len = msg_size(s->e->cluster_id, i);
        msg_fill(s->e->cluster_id, i, buf, len);
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
static int receive_all(llmlink_t *e, uint64_t from, int n, char *why, size_t cap)
{
    enum { BATCH = 32 };
    llmlink_notification_t *out = malloc(BATCH * sizeof *out);
    uint8_t *want = malloc(LLMLINK_MAX_NOTIFY_BYTES);
    int64_t deadline = rawpeer_now_ms() + ORDER_DEADLINE_MS;
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
            uint32_t len = msg_size(from, next);
            msg_fill(from, next, want, len);
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
static int exchange(llmlink_t *e, uint64_t peer, int n, char *why, size_t cap)
{
    sender_t s = {.e = e, .peer = peer, .n = n};
    pthread_t th;
    if (pthread_create(&th, NULL, send_all, &s) != 0) {
        snprintf(why, cap, "pthread_create");
        return -1;
    }
    int rc = receive_all(e, peer, n, why, cap);
    pthread_join(th, NULL);
    if (rc == 0 && s.bad) {
        snprintf(why, cap, "send %d: %s: %s", s.bad_index, llmlink_status_name(s.bad), s.why);
        rc = -1;
    }
    return rc;
}

/* ---- the child process (the PROMPT side) ---- */

static int read_line(int fd, char *buf, size_t cap, int timeout_ms)
{
    size_t n = 0;
    int64_t deadline = rawpeer_now_ms() + timeout_ms;
    while (n + 1 < cap) {
        int64_t left = deadline - rawpeer_now_ms();
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        ssize_t r = read(fd, buf + n, 1);
        if (r <= 0)
            return -1;
        if (buf[n] == '\n') {
            buf[n] = 0;
            return 0;
        }
        n++;
    }
    return -1;
}

static void write_line(int fd, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || n > (int)sizeof buf - 2)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    ssize_t w = write(fd, buf, (size_t)n);
    (void)w;
}

/* What the child does once told "go". */
typedef enum { CHILD_IDLE, CHILD_EXCHANGE } child_job_t;

static void child_main(int in, int out, child_job_t job)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(CHILD_LIFE_S);
    uint16_t port = 0;
    llmlink_t *e = prompt_engine(P_ID, NULL, &port);
    if (!e) {
        write_line(out, "FAIL init: %s", llmlink_last_error());
        _exit(2);
    }
    write_line(out, "PORT %u", port);
    char line[128];
    if (read_line(in, line, sizeof line, 60000) != 0 || strcmp(line, "go") != 0)
        _exit(3);
    if (job == CHILD_EXCHANGE) {
        char why[512];
        if (exchange(e, D_ID, ORDER_COUNT, why, sizeof why) == 0)
            write_line(out, "DONE OK");
        else
            write_line(out, "DONE FAIL %s", why);
    } else {
        write_line(out, "DONE OK");
    }
    /* Until told to quit (or killed). */
    while (read_line(in, line, sizeof line, 1000) != 0 || strcmp(line, "quit") != 0)
        ;
    llmlink_destroy(e);
    _exit(0);
}

/* Starts the child; returns the port its PROMPT engine listens on. */
static uint16_t start_child(fx_t *fx, child_job_t job)
{
    int a[2], b[2];
    assert_int_equal(pipe(a), 0);
    assert_int_equal(pipe(b), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(a[1]);
        close(b[0]);
        child_main(a[0], b[1], job);
        _exit(1);
    }
    close(a[0]);
    close(b[1]);
    fx->child = pid;
    fx->to_child = a[1];
    fx->from_child = b[0];
    char line[256];
    unsigned port = 0;
    assert_int_equal(read_line(fx->from_child, line, sizeof line, 30000), 0);
    if (sscanf(line, "PORT %u", &port) != 1)
        fail_msg("child: %s", line);
    return (uint16_t)port;
}

/* ---- tests ---- */

/* 10 000 notifications of 1..4096 bytes each way at once, between two
 * processes: every one arrives, in order, with its content. */
static void test_order_both_directions(void **state)
{
    fx_t *fx = *state;
    uint16_t port = start_child(fx, CHILD_EXCHANGE);
    llmlink_t *d = fx_decoder(fx, D_ID, false);
    link_to(d, P_ID, port);
    write_line(fx->to_child, "go");
    char why[512];
    int rc = exchange(d, P_ID, ORDER_COUNT, why, sizeof why);
    if (rc != 0)
        fail_msg("decoder side: %s", why);
    char line[600];
    assert_int_equal(read_line(fx->from_child, line, sizeof line, ORDER_DEADLINE_MS), 0);
    if (strcmp(line, "DONE OK") != 0)
        fail_msg("prompt side: %s", line);
    assert_int_equal(atomic_load(&d->xstats.notifies_received), ORDER_COUNT);
    assert_true(atomic_load(&d->xstats.notifies_sent) == ORDER_COUNT);
    write_line(fx->to_child, "quit");
    int ws = 0;
    assert_int_equal(waitpid(fx->child, &ws, 0), fx->child);
    fx->child = 0;
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
}

static void *notify_bg(void *arg)
{
    sender_t *s = arg;
    static const char msg[] = "request 7: blocks read";
    int64_t t0 = rawpeer_now_ms();
    s->st = llmlink_notify(s->e, s->peer, msg, sizeof msg, s->timeout_ms);
    s->elapsed_ms = rawpeer_now_ms() - t0;
    snprintf(s->why, sizeof s->why, "%s", llmlink_last_error());
    return NULL;
}

/* A peer that stops answering: TIMEOUT within the timeout. Then SIGKILL
 * while a notify waits: NOT_YET_LINK long before its timeout. After:
 * NOT_YET_LINK at once. Never a hang. */
static void test_dead_peer(void **state)
{
    fx_t *fx = *state;
    uint16_t port = start_child(fx, CHILD_IDLE);
    llmlink_t *d = fx_decoder(fx, D_ID, false);
    link_to(d, P_ID, port);
    write_line(fx->to_child, "go");
    static const char hi[] = "hello";
    assert_status(llmlink_notify(d, P_ID, hi, sizeof hi, 5000), LLMLINK_SUCCESS);

    assert_int_equal(kill(fx->child, SIGSTOP), 0);
    int64_t t0 = rawpeer_now_ms();
    assert_status(llmlink_notify(d, P_ID, hi, sizeof hi, 300), LLMLINK_TIMEOUT);
    int64_t el = rawpeer_now_ms() - t0;
    assert_true(el >= 300 && el < 300 + SLACK_MS);

    fx->snd = (sender_t){.e = d, .peer = P_ID, .timeout_ms = 20000};
    assert_int_equal(pthread_create(&fx->th, NULL, notify_bg, &fx->snd), 0);
    fx->th_started = true;
    rawpeer_sleep_ms(200); /* it waits for the ACK now */
    assert_int_equal(kill(fx->child, SIGKILL), 0);
    assert_int_equal(waitpid(fx->child, NULL, 0), fx->child);
    fx->child = 0;
    pthread_join(fx->th, NULL);
    fx->th_started = false;
    if (fx->snd.st != LLMLINK_NOT_YET_LINK)
        fail_msg("notify during the kill: %s: %s", llmlink_status_name(fx->snd.st), fx->snd.why);
    assert_true(fx->snd.elapsed_ms < 10000);
    assert_non_null(strstr(fx->snd.why, "died"));

    t0 = rawpeer_now_ms();
    assert_status(llmlink_notify(d, P_ID, hi, sizeof hi, 5000), LLMLINK_NOT_YET_LINK);
    assert_true(rawpeer_now_ms() - t0 < SLACK_MS);
}

/* NotifyQueueDepth 4: the 5th gets NOTIFY_QUEUE_FULL and is not queued;
 * fetch one and the next send succeeds; order kept; counters on both. */
static void test_full_queue(void **state)
{
    fx_t *fx = *state;
    uint16_t port;
    llmlink_t *p = fx_prompt(fx, P_ID, "4", &port);
    llmlink_t *d = fx_decoder(fx, D_ID, false);
    link_to(d, P_ID, port);
    char m[16];
    for (int i = 0; i < 4; i++) {
        snprintf(m, sizeof m, "n%d", i);
        assert_status(llmlink_notify(d, P_ID, m, strlen(m), 5000), LLMLINK_SUCCESS);
    }
    assert_status(llmlink_notify(d, P_ID, "n4", 2, 5000), LLMLINK_NOTIFY_QUEUE_FULL);
    assert_non_null(strstr(llmlink_last_error(), "full"));
    llmlink_notification_t out[8];
    size_t cnt = 0;
    assert_status(llmlink_get_notifies(p, out, 1, &cnt), LLMLINK_SUCCESS);
    assert_int_equal(cnt, 1);
    assert_memory_equal(out[0].data, "n0", 2);
    assert_status(llmlink_notify(d, P_ID, "n5", 2, 5000), LLMLINK_SUCCESS);
    assert_status(llmlink_get_notifies(p, out, 8, &cnt), LLMLINK_SUCCESS);
    assert_int_equal(cnt, 4);
    static const char *want[] = {"n1", "n2", "n3", "n5"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(out[i].len, 2);
        assert_int_equal(out[i].cluster_id, D_ID);
        assert_memory_equal(out[i].data, want[i], 2);
    }
    assert_int_equal(atomic_load(&p->xstats.notifies_received), 5);
    assert_int_equal(atomic_load(&p->xstats.notifies_refused_full), 1);
    assert_int_equal(atomic_load(&d->xstats.notifies_sent), 5);
    assert_int_equal(atomic_load(&d->xstats.notifies_refused_full), 1);
}

static bool readable(const llmlink_t *e)
{
    struct pollfd p = {.fd = e->events.fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

/* The event descriptor is readable exactly while notifications wait, on
 * each side of the link (prompt -> decoder too). */
static void test_event_fd(void **state)
{
    fx_t *fx = *state;
    uint16_t port;
    llmlink_t *p = fx_prompt(fx, P_ID, NULL, &port);
    llmlink_t *d = fx_decoder(fx, D_ID, false);
    link_to(d, P_ID, port);
    assert_true(p->events.fd >= 0);
    assert_false(readable(p));
    assert_false(readable(d));
    assert_status(llmlink_notify(p, D_ID, "a", 1, 5000), LLMLINK_SUCCESS);
    assert_status(llmlink_notify(p, D_ID, "b", 1, 5000), LLMLINK_SUCCESS);
    /* SUCCESS means queued: readable already, and stays so when read. */
    assert_true(readable(d));
    assert_false(readable(p));
    llmlink_notification_t out[2];
    size_t cnt = 0;
    assert_status(llmlink_get_notifies(d, out, 1, &cnt), LLMLINK_SUCCESS);
    assert_int_equal(cnt, 1);
    assert_int_equal(out[0].cluster_id, P_ID);
    assert_true(readable(d));
    assert_status(llmlink_get_notifies(d, out, 2, &cnt), LLMLINK_SUCCESS);
    assert_int_equal(cnt, 1);
    assert_memory_equal(out[0].data, "b", 1);
    assert_false(readable(d));
    /* Nothing left: SUCCESS with 0; max 0 with out NULL is allowed. */
    assert_status(llmlink_get_notifies(d, out, 2, &cnt), LLMLINK_SUCCESS);
    assert_int_equal(cnt, 0);
    assert_status(llmlink_get_notifies(d, NULL, 0, &cnt), LLMLINK_SUCCESS);
    assert_false(readable(d));
}

/* A peer that did not announce notifications (an older llmlink): the send
 * is refused here, FEATURE_NOT_ENABLED, and the link stays up. */
static void test_peer_without_notifications(void **state)
{
    fx_t *fx = *state;
    uint16_t port;
    llmlink_t *p = fx_prompt(fx, P_ID, NULL, &port);
    llmlink_t *d = fx_decoder(fx, D_ID, true);
    link_to(d, P_ID, port);
    assert_status(llmlink_notify(d, P_ID, "x", 1, 2000), LLMLINK_FEATURE_NOT_ENABLED);
    assert_status(llmlink_notify(p, D_ID, "x", 1, 2000), LLMLINK_FEATURE_NOT_ENABLED);
    assert_non_null(strstr(llmlink_last_error(), "without notifications"));
    assert_status(llmlink_check_link_status(d, P_ID), LLMLINK_SUCCESS);
    assert_int_equal(stats_of(p).protocol_errors, 0);
}

static void test_arguments(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = NULL;
    assert_status(llmlink_create(&e, LLMLINK_ROLE_DECODER, D_ID), LLMLINK_SUCCESS);
    fx->eng[fx->neng++] = e;
    llmlink_notification_t out[1];
    size_t cnt = 7;
    uint8_t big[LLMLINK_MAX_NOTIFY_BYTES + 1] = {0};
    assert_status(llmlink_notify(e, P_ID, "x", 1, 100), LLMLINK_NOT_INITIALIZED);
    assert_status(llmlink_get_notifies(e, out, 1, &cnt), LLMLINK_NOT_INITIALIZED);
    assert_int_equal(cnt, 0);
    assert_status(llmlink_init(e, NULL, 0), LLMLINK_SUCCESS);
    const struct {
        llmlink_t *dd;
        const void *data;
        size_t len;
        int32_t timeout;
        const char *names;
    } bad[] = {
        {NULL, "x", 1, 100, "dd"},
        {(llmlink_t *)1, NULL, 1, 100, "data"},
        {(llmlink_t *)1, "x", 0, 100, "len"},
        {(llmlink_t *)1, big, LLMLINK_MAX_NOTIFY_BYTES + 1, 100, "len"},
        {(llmlink_t *)1, "x", 1, 0, "timeout_ms"},
        {(llmlink_t *)1, "x", 1, -1, "timeout_ms"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        llmlink_t *dd = bad[i].dd ? e : NULL;
        assert_status(llmlink_notify(dd, P_ID, bad[i].data, bad[i].len, bad[i].timeout),
                      LLMLINK_PARAM_INVALID);
        if (!strstr(llmlink_last_error(), bad[i].names))
            fail_msg("case %zu: \"%s\" does not name %s", i, llmlink_last_error(),
                     bad[i].names);
    }
    assert_status(llmlink_get_notifies(NULL, out, 1, &cnt), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "dd"));
    assert_status(llmlink_get_notifies(e, NULL, 1, &cnt), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "out"));
    assert_status(llmlink_get_notifies(e, out, 1, NULL), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "count"));
    /* No link: NOT_YET_LINK at once. */
    assert_status(llmlink_notify(e, P_ID, "x", 1, 5000), LLMLINK_NOT_YET_LINK);
    assert_non_null(strstr(llmlink_last_error(), "no link"));
    llmlink_finalize(e);
    assert_status(llmlink_notify(e, P_ID, "x", 1, 100), LLMLINK_ENGINE_FINALIZED);
}

/* Over mutual TLS the control connection is wrapped by the relays: 500
 * notifications of 1..4096 bytes each way at once arrive whole and in
 * order (frames above the old 4096-byte limit cross the relay too). */
static void test_tls(void **state)
{
    fx_t *fx = *state;
    llmlink_option_t po[] = {{"llm.listenIpInfo", "127.0.0.1:0"},
                             {"llmlink.TlsCertFile", llk_test_tls_path("server.pem")},
                             {"llmlink.TlsKeyFile", llk_test_tls_path("server.key")},
                             {"llmlink.TlsCaFile", llk_test_tls_path("ca.pem")}};
    llmlink_option_t dop[] = {{"llmlink.TlsCertFile", llk_test_tls_path("client.pem")},
                              {"llmlink.TlsKeyFile", llk_test_tls_path("client.key")},
                              {"llmlink.TlsCaFile", llk_test_tls_path("ca.pem")}};
    llmlink_t *p = NULL, *d = NULL;
    assert_status(llmlink_create(&p, LLMLINK_ROLE_PROMPT, P_ID), LLMLINK_SUCCESS);
    fx->eng[fx->neng++] = p;
    assert_status(llmlink_init(p, po, 4), LLMLINK_SUCCESS);
    assert_status(llmlink_create(&d, LLMLINK_ROLE_DECODER, D_ID), LLMLINK_SUCCESS);
    fx->eng[fx->neng++] = d;
    assert_status(llmlink_init(d, dop, 3), LLMLINK_SUCCESS);
    uint16_t port = 0;
    assert_status(llmlink_get_listen_port(p, 0, &port), LLMLINK_SUCCESS);
    link_to(d, P_ID, port);
    fx->snd = (sender_t){.e = p, .peer = D_ID, .n = 500};
    assert_int_equal(pthread_create(&fx->th, NULL, send_all, &fx->snd), 0);
    fx->th_started = true;
    char why[512];
    if (exchange(d, P_ID, 500, why, sizeof why) != 0)
        fail_msg("decoder side: %s", why);
    if (receive_all(p, D_ID, 500, why, sizeof why) != 0)
        fail_msg("prompt side: %s", why);
    pthread_join(fx->th, NULL);
    fx->th_started = false;
    if (fx->snd.bad)
        fail_msg("prompt send %d: %s: %s", fx->snd.bad_index, llmlink_status_name(fx->snd.bad),
                 fx->snd.why);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        T(test_arguments),       T(test_full_queue),
        T(test_event_fd),        T(test_peer_without_notifications),
        T(test_dead_peer),       T(test_order_both_directions),
        T(test_tls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

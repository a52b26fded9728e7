/*
 * test_notify_multiproc.c - notifications between two processes: the
 * order of 10 000 notifications of 1..4096 bytes in both directions at
 * once, and a peer that stops answering and is then SIGKILLed.
 *
 * The PROMPT engine runs in a fork()ed child process (its own engine,
 * threads and sockets), the DECODER in the test: a real peer on loopback
 * that the test can stop and kill. The child talks to the test over two
 * pipes in lines ("PORT n", "go", "DONE OK", "quit"); it has
 * PR_SET_PDEATHSIG and an alarm() backstop, and the teardown kills and
 * reaps it. Every wait is bounded.
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
#include "notify_fx.h"
#include "rawpeer.h"

#define P_ID 1u
#define D_ID 2u
#define ORDER_COUNT 10000
#define CHILD_LIFE_S 300
#define SLACK_MS 1000

typedef struct fx {
    llmlink_t *eng[4];
    size_t neng;
    pid_t child;
    int to_child, from_child;
    pthread_t th;
    bool th_started;
    nfx_sender_t snd;
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

static llmlink_t *fx_decoder(fx_t *fx, uint64_t id)
{
    llmlink_t *e = NULL;
    assert_status(llmlink_create(&e, LLMLINK_ROLE_DECODER, id), LLMLINK_SUCCESS);
    fx->eng[fx->neng++] = e;
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
    llmlink_t *e = nfx_prompt_engine(P_ID, NULL, &port);
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
        if (nfx_exchange(e, D_ID, ORDER_COUNT, why, sizeof why) == 0)
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
    llmlink_t *d = fx_decoder(fx, D_ID);
    link_to(d, P_ID, port);
    write_line(fx->to_child, "go");
    char why[512];
    int rc = nfx_exchange(d, P_ID, ORDER_COUNT, why, sizeof why);
    if (rc != 0)
        fail_msg("decoder side: %s", why);
    char line[600];
    assert_int_equal(read_line(fx->from_child, line, sizeof line, NFX_DEADLINE_MS), 0);
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
    nfx_sender_t *s = arg;
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
    llmlink_t *d = fx_decoder(fx, D_ID);
    link_to(d, P_ID, port);
    write_line(fx->to_child, "go");
    static const char hi[] = "hello";
    assert_status(llmlink_notify(d, P_ID, hi, sizeof hi, 5000), LLMLINK_SUCCESS);

    assert_int_equal(kill(fx->child, SIGSTOP), 0);
    /* kill() returns before the child has stopped: a notify sent at once
     * could still be answered. WUNTRACED returns once every thread of it
     * has stopped. */
    int sws = 0;
    assert_int_equal(waitpid(fx->child, &sws, WUNTRACED), fx->child);
    assert_true(WIFSTOPPED(sws));
    int64_t t0 = rawpeer_now_ms();
    assert_status(llmlink_notify(d, P_ID, hi, sizeof hi, 300), LLMLINK_TIMEOUT);
    int64_t el = rawpeer_now_ms() - t0;
    assert_true(el >= 300 && el < 300 + SLACK_MS);

    fx->snd = (nfx_sender_t){.e = d, .peer = P_ID, .timeout_ms = 20000};
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

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        T(test_dead_peer),
        T(test_order_both_directions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

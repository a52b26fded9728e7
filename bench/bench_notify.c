/*
 * bench_notify.c - how long a notification takes between two processes on
 * loopback (llmlink_notify, llmlink_get_notifies).
 *
 * The prefill side (a PROMPT engine) runs in a fork()ed child
 * (bench_common.h's server children); a thread there waits on the engine's
 * event descriptor, takes what arrived, and sends back every notification
 * whose first byte is 'E' (echo). The decode side (a DECODER engine) runs
 * here. Figures, median and p99 over many sends, one at a time:
 *   a  send: llmlink_notify until the peer's ACK says it was queued
 *      (16 B, 1 KiB, 4 KiB)
 *   b  round trip: a notification to the peer and its echo back, received
 *      here through the event descriptor and llmlink_get_notifies
 *      (16 B, 4 KiB)
 *
 * It measures and prints; it asserts no speed. The exit status is 1 only
 * when a section could not run.
 *
 * The event descriptor is read as the engine's internal e->events.fd
 * (link/engine.h) until llmlink_get_event_fd is merged.
 *
 * Usage: bench_notify [--quick] [--only a,b] [--help]
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "link/engine.h"
#include "llmlink.h"

#define P_ID 1u
#define D_ID 2u
#define SERVER_REPLY_MS 10000
#define NOTIFY_TIMEOUT_MS 5000
/* A round trip waits this long for its echo before the section fails. */
#define ECHO_WAIT_MS 5000

static int event_fd(llmlink_t *e)
{
    return e->events.fd;
}

/* ---- the child: PROMPT engine and its echo thread ---- */

typedef struct echo {
    llmlink_t *e;
    atomic_bool stop;
} echo_t;

static void *echo_main(void *arg)
{
    echo_t *x = arg;
    llmlink_notification_t *out = malloc(16 * sizeof *out);
    while (out && !atomic_load(&x->stop)) {
        struct pollfd p = {.fd = event_fd(x->e), .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        size_t n = 0;
        if (llmlink_get_notifies(x->e, out, 16, &n) != LLMLINK_SUCCESS)
            break;
        for (size_t i = 0; i < n; i++)
            if (out[i].data[0] == 'E')
                llmlink_notify(x->e, out[i].cluster_id, out[i].data, out[i].len,
                               NOTIFY_TIMEOUT_MS);
    }
    free(out);
    return NULL;
}

static void server_child(const bench_child_t *c, const void *arg)
{
    (void)arg;
    char line[512];
    llmlink_t *e = NULL;
    llmlink_status_t st = llmlink_create(&e, LLMLINK_ROLE_PROMPT, c->cluster_id);
    const llmlink_option_t opts[] = {{"llm.listenIpInfo", LOCALHOST ":0"}};
    if (st == LLMLINK_SUCCESS)
        st = llmlink_init(e, opts, 1);
    uint16_t port = 0;
    if (st == LLMLINK_SUCCESS)
        st = llmlink_get_listen_port(e, 0, &port);
    if (st != LLMLINK_SUCCESS) {
        snprintf(line, sizeof line, "error %s: %s\n", llmlink_status_name(st),
                 llmlink_last_error());
        bench_write_all(c->rsp_w, line);
        llmlink_destroy(e);
        exit(1);
    }
    echo_t x = {.e = e};
    pthread_t th;
    bool started = pthread_create(&th, NULL, echo_main, &x) == 0;
    bench_child_ready(c, port);
    bench_child_serve(c, NULL, NULL);
    atomic_store(&x.stop, true);
    if (started)
        pthread_join(th, NULL);
    llmlink_destroy(e);
    bench_child_exit(c, 0);
}

/* ---- the decode side ---- */

typedef struct config {
    bool quick;
    bool only[26];
    size_t rounds;
} config_t;

static void fill(uint8_t *buf, size_t len, char first)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(i * 7 + 1);
    buf[0] = (uint8_t)first;
}

static void add_latency_rows(char sec, const char *what, size_t size, double *us, size_t n)
{
    char fig[96], detail[96];
    snprintf(detail, sizeof detail, "%zu sends, one at a time", n);
    double p99 = bench_percentile(us, n, 99.0);
    double med = bench_median(us, n);
    snprintf(fig, sizeof fig, "%s %zu B, median", what, size);
    bench_add_row(sec, fig, "us", detail, "%.1f", med);
    snprintf(fig, sizeof fig, "%s %zu B, p99", what, size);
    bench_add_row(sec, fig, "us", detail, "%.1f", p99);
}

/* a: llmlink_notify until the ACK, for one size. */
static bool section_a(llmlink_t *d, size_t size, size_t rounds)
{
    uint8_t *buf = malloc(size);
    double *us = malloc(rounds * sizeof *us);
    bool ok = buf && us;
    if (ok)
        fill(buf, size, 'D'); /* dropped by the peer's echo thread */
    for (size_t i = 0; ok && i < rounds; i++) {
        int64_t t0 = bench_now_ns();
        llmlink_status_t st = llmlink_notify(d, P_ID, buf, size, NOTIFY_TIMEOUT_MS);
        us[i] = (double)(bench_now_ns() - t0) / 1e3;
        if (st == LLMLINK_NOTIFY_QUEUE_FULL) {
            bench_sleep_ms(1); /* the peer drains; try again */
            i--;
            continue;
        }
        if (st != LLMLINK_SUCCESS) {
            bench_failed('a', "send", "%s: %s", llmlink_status_name(st), llmlink_last_error());
            ok = false;
        }
    }
    if (ok)
        add_latency_rows('a', "send", size, us, rounds);
    free(buf);
    free(us);
    return ok;
}

/* Waits for one notification here (the echo) through the event fd. */
static bool wait_echo(llmlink_t *d, llmlink_notification_t *out, size_t size)
{
    int64_t deadline = bench_now_ms() + ECHO_WAIT_MS;
    for (;;) {
        size_t n = 0;
        if (llmlink_get_notifies(d, out, 1, &n) != LLMLINK_SUCCESS)
            return false;
        if (n == 1)
            return out->len == size && out->cluster_id == P_ID;
        int64_t left = deadline - bench_now_ms();
        if (left <= 0)
            return false;
        struct pollfd p = {.fd = event_fd(d), .events = POLLIN};
        poll(&p, 1, (int)left);
    }
}

/* b: a notification there and its echo back. */
static bool section_b(llmlink_t *d, size_t size, size_t rounds)
{
    uint8_t *buf = malloc(size);
    double *us = malloc(rounds * sizeof *us);
    llmlink_notification_t *out = malloc(sizeof *out);
    bool ok = buf && us && out;
    if (ok)
        fill(buf, size, 'E');
    for (size_t i = 0; ok && i < rounds; i++) {
        int64_t t0 = bench_now_ns();
        llmlink_status_t st = llmlink_notify(d, P_ID, buf, size, NOTIFY_TIMEOUT_MS);
        if (st != LLMLINK_SUCCESS) {
            bench_failed('b', "round trip", "%s: %s", llmlink_status_name(st),
                         llmlink_last_error());
            ok = false;
        } else if (!wait_echo(d, out, size)) {
            bench_failed('b', "round trip", "no echo within %d ms", ECHO_WAIT_MS);
            ok = false;
        }
        us[i] = (double)(bench_now_ns() - t0) / 1e3;
    }
    if (ok)
        add_latency_rows('b', "round trip", size, us, rounds);
    free(buf);
    free(us);
    free(out);
    return ok;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_notify [--quick] [--only a,b] [--help]\n"
               "  a  send (until the peer queued it): 16 B, 1 KiB, 4 KiB\n"
               "  b  round trip (there and echoed back): 16 B, 4 KiB\n");
}

static int run(const config_t *cfg)
{
    char err[256];
    bench_server_t srv;
    if (!bench_server_start(&srv, P_ID, server_child, NULL, err, sizeof err)) {
        bench_failed('a', "server", "%s", err);
        return 1;
    }
    llmlink_t *d = NULL;
    llmlink_status_t st = llmlink_create(&d, LLMLINK_ROLE_DECODER, D_ID);
    if (st == LLMLINK_SUCCESS)
        st = llmlink_init(d, NULL, 0);
    llmlink_ip_info_t ip;
    llmlink_cluster_info_t ci;
    bench_server_target(&srv, &ip, &ci);
    if (st == LLMLINK_SUCCESS)
        st = llmlink_link_clusters(d, &ci, 1, LINK_TIMEOUT_MS, NULL);
    if (st != LLMLINK_SUCCESS) {
        bench_failed('a', "link", "%s: %s", llmlink_status_name(st), llmlink_last_error());
        llmlink_destroy(d);
        bench_server_stop(&srv);
        return 1;
    }
    static const size_t sizes_a[] = {16, 1024, 4096};
    static const size_t sizes_b[] = {16, 4096};
    for (size_t i = 0; cfg->only[0] && i < 3; i++) {
        bench_progress("a: send %zu B x %zu", sizes_a[i], cfg->rounds);
        section_a(d, sizes_a[i], cfg->rounds);
    }
    for (size_t i = 0; cfg->only[1] && i < 2; i++) {
        bench_progress("b: round trip %zu B x %zu", sizes_b[i], cfg->rounds);
        section_b(d, sizes_b[i], cfg->rounds);
    }
    llmlink_destroy(d);
    bench_server_stop(&srv);
    return 0;
}

int main(int argc, char **argv)
{
    static const bench_conf_t conf = {
        .name = "bench_notify",
        .server_label = "P",
        .max_servers = 1,
        .server_reply_ms = SERVER_REPLY_MS,
        .server_stop_ms = 5000,
    };
    bench_init(&conf);
    config_t cfg = {0};
    bool any_only = false;
    for (int i = 1; i < argc; i++) {
        const char *list = NULL;
        int got;
        if (strcmp(argv[i], "--quick") == 0) {
            cfg.quick = true;
        } else if ((got = bench_opt_value(argc, argv, &i, "--only", &list)) != 0) {
            int named = got > 0 && *list ? bench_parse_only(list, 'b', cfg.only) : -1;
            if (named < 0) {
                usage(stderr);
                return 2;
            }
            any_only = any_only || named > 0;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "bench_notify: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!any_only)
        cfg.only[0] = cfg.only[1] = true;
    cfg.rounds = cfg.quick ? 1000 : 20000;
    bench_print_header("llmlink notification benchmark (bench_notify)", "", cfg.quick, any_only,
                       "");
    int rc = run(&cfg);
    bench_print_table();
    return rc || bench_any_failed() ? 1 : 0;
}

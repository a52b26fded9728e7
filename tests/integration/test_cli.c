/*
 * test_cli.c - the `llmlink` command (tools/llmlink/, docs/cli.md), run as
 * separate processes on loopback, as an operator runs it:
 *
 *  - every subcommand answers --help (exit 0, its usage on stdout); bad
 *    arguments print the usage on stderr and exit 2; so do a missing or
 *    unknown command;
 *  - `link` to a port where nothing listens exits 1, and the table and
 *    stderr name the cause (LINK_FAILED, "Connection refused");
 *  - end to end: `serve --metrics` + `link` + `pull --verify` (auto and tcp)
 *    + `push --verify` + `stats`: each exits 0 and says what moved, with
 *    which transport; the metrics endpoint, scraped with a real HTTP client
 *    and parsed by prometheus_client's text parser (tests/tools/
 *    scrape_metrics.py, from `make cli-venv`), follows the naming
 *    conventions and counts exactly the 4 links made and unlinked by the
 *    peers; SIGTERM stops serve with exit 0;
 *  - `stats --pid` finds the endpoint from serve's command line;
 *  - `bench --json` prints one well-formed record per point;
 *  - `doctor` on this host: its RDMA finding matches /sys/class/infiniband,
 *    it prints this process's real `ulimit -l`, a listen address in use is
 *    a FAIL (exit 1); on a fake sysfs tree (--root) with one ACTIVE RoCE
 *    port (a v2 GID, netdev MTU 1500) and one DOWN port: the GID is listed,
 *    the MTU is a WARN, the DOWN port a FAIL, exit 1.
 *
 * Every child is bounded in time (killed past it); loopback only.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proc.h"

#define RUN_MS 60000
#define OUT_MAX (256 * 1024)

static char cli_path[PATH_MAX], py_path[PATH_MAX];

typedef struct result {
    int rc; /* exit status, or -1: killed / did not run */
    char out[OUT_MAX], err[OUT_MAX];
} result_t;

static result_t R; /* one command at a time */

static void slurp(const char *path, char *buf, size_t cap)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* Runs argv (NULL-terminated) with stdout and stderr to files, within
 * RUN_MS (killed past it); fills R. */
static int run(const char *const *argv)
{
    char tmpl[] = "/tmp/llk_cli_XXXXXX";
    char *dir = mkdtemp(tmpl);
    assert_non_null(dir);
    char outp[64], errp[64];
    snprintf(outp, sizeof outp, "%s/out", dir);
    snprintf(errp, sizeof errp, "%s/err", dir);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
            _exit(126);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    int64_t t0 = proc_now_ms();
    pid_t w;
    while ((w = waitpid(pid, &status, WNOHANG)) == 0 && proc_now_ms() - t0 < RUN_MS)
        proc_sleep_ms(5);
    if (w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    slurp(outp, R.out, sizeof R.out);
    slurp(errp, R.err, sizeof R.err);
    unlink(outp);
    unlink(errp);
    rmdir(dir);
    R.rc = w != 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return R.rc;
}

#define assert_contains(hay, needle)                                                        \
    do {                                                                                    \
        if (!strstr((hay), (needle)))                                                       \
            fail_msg("'%s' not in output:\n%s\n(stderr:\n%s)", (needle), (hay), R.err);     \
    } while (0)

#define assert_rc(want)                                                                     \
    do {                                                                                    \
        if (R.rc != (want))                                                                 \
            fail_msg("exit status %d, expected %d\nstdout:\n%s\nstderr:\n%s", R.rc, (want), \
                     R.out, R.err);                                                         \
    } while (0)

/* ---- group setup: where the command and the scraper's python are ---- */

static int group_setup(void **state)
{
    (void)state;
    const char *b = getenv("LLMLINK_BUILD");
    char dir[PATH_MAX - 64];
    if (b && *b) {
        snprintf(dir, sizeof dir, "%s", b);
    } else {
        ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
        if (n <= 0)
            return -1;
        dir[n] = '\0';
        *strrchr(dir, '/') = '\0'; /* BUILD/tests */
        *strrchr(dir, '/') = '\0'; /* BUILD */
    }
    snprintf(cli_path, sizeof cli_path, "%s/bin/llmlink", dir);
    snprintf(py_path, sizeof py_path, "%s/cli-venv/bin/python", dir);
    if (access(cli_path, X_OK) != 0) {
        fprintf(stderr, "test_cli: %s is missing (make cli)\n", cli_path);
        return -1;
    }
    return 0;
}

/* ---- usage and help ---- */

static void test_help_and_usage(void **state)
{
    (void)state;
    static const char *subs[] = {"serve", "link", "pull", "push", "bench", "stats", "doctor"};
    const char *a0[] = {cli_path, "--help", NULL};
    run(a0);
    assert_rc(0);
    assert_contains(R.out, "usage: llmlink");
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        assert_contains(R.out, subs[i]);
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "usage: llmlink %s", subs[i]);
        const char *help[] = {cli_path, subs[i], "--help", NULL};
        run(help);
        assert_rc(0);
        assert_contains(R.out, want);
        const char *bad[] = {cli_path, subs[i], "--no-such-option", NULL};
        run(bad);
        assert_rc(2);
        assert_contains(R.err, want);
        assert_contains(R.err, "bad option '--no-such-option'");
    }
    const char *none[] = {cli_path, NULL};
    run(none);
    assert_rc(2);
    assert_contains(R.err, "usage: llmlink");
    const char *unknown[] = {cli_path, "frobnicate", NULL};
    run(unknown);
    assert_rc(2);
    assert_contains(R.err, "unknown command 'frobnicate'");
    const char *noaddr[] = {cli_path, "pull", NULL};
    run(noaddr);
    assert_rc(2);
    assert_contains(R.err, "no address given");
    const char *badaddr[] = {cli_path, "link", "localhost", NULL};
    run(badaddr);
    assert_rc(2);
    assert_contains(R.err, "'localhost' is not [ID@]IP:PORT");
    const char *badsize[] = {cli_path, "serve", "--block-size", "0", NULL};
    run(badsize);
    assert_rc(2);
    assert_contains(R.err, "--block-size");
}

/* ---- link to nothing ---- */

static void test_link_nothing_listens(void **state)
{
    (void)state;
    char addr[64];
    snprintf(addr, sizeof addr, "7@127.0.0.1:%u", proc_unused_port("127.0.0.1"));
    const char *a[] = {cli_path, "link", "--timeout-ms", "3000", addr, NULL};
    run(a);
    assert_rc(1);
    assert_contains(R.out, "LLM_LINK_FAILED");
    assert_contains(R.out, "0 linked, 1 failed");
    assert_contains(R.err, "Connection refused");
    assert_contains(R.err, "cluster 7");
}

/* ---- serve + link + pull + push + stats + metrics ---- */

typedef struct served {
    proc_t p;
    uint16_t port, mport;
    char addr[64], url[PROC_LINE_MAX];
} served_t;

static void serve_start(served_t *s, const char *metrics)
{
    const char *argv[] = {cli_path, "serve", "--cache-bytes", "1M", "--block-size", "4K,16K",
                          "--metrics", metrics, NULL};
    assert_int_equal(proc_spawn(&s->p, (char *const *)argv), 0);
    char line[PROC_LINE_MAX];
    bool ready = false;
    while (!ready && proc_read_line(&s->p, line, sizeof line, RUN_MS) == 0) {
        unsigned v;
        if (sscanf(line, "port=%u", &v) == 1)
            s->port = (uint16_t)v;
        if (!strncmp(line, "metrics=", 8))
            snprintf(s->url, sizeof s->url, "%s", line + 8);
        ready = !strcmp(line, "ready");
    }
    if (!ready)
        fail_msg("serve did not get ready: %s", proc_last_error());
    assert_true(s->port != 0);
    assert_non_null(strstr(s->url, "/metrics"));
    snprintf(s->addr, sizeof s->addr, "127.0.0.1:%u", s->port);
}

/* SIGTERM: serve unlinks, prints "stopped", exits 0. */
static void serve_stop(served_t *s)
{
    assert_int_equal(proc_kill(&s->p, SIGTERM), 0);
    char line[PROC_LINE_MAX];
    bool stopped = false;
    while (!stopped && proc_read_line(&s->p, line, sizeof line, RUN_MS) == 0)
        stopped = !strcmp(line, "stopped");
    assert_true(stopped);
    assert_int_equal(proc_wait(&s->p, RUN_MS), 0);
    assert_true(WIFEXITED(s->p.status) && WEXITSTATUS(s->p.status) == 0);
    proc_reap(&s->p);
}

static void scrape(const served_t *s, const char *const *expect)
{
    if (access(py_path, X_OK) != 0)
        fail_msg("%s is missing: `make cli-venv` makes it (pip install prometheus_client)",
                 py_path);
    const char *argv[24] = {py_path, "tests/tools/scrape_metrics.py", s->url};
    size_t n = 3;
    for (; expect[n - 3] && n < 23; n++)
        argv[n] = expect[n - 3];
    argv[n] = NULL;
    run(argv);
    assert_rc(0);
    assert_contains(R.out, "conventions hold");
}

static void test_end_to_end(void **state)
{
    (void)state;
    served_t s;
    memset(&s, 0, sizeof s);
    serve_start(&s, "127.0.0.1:0");

    const char *link[] = {cli_path, "link", s.addr, NULL};
    run(link);
    assert_rc(0);
    assert_contains(R.out, "LLM_SUCCESS");
    assert_contains(R.out, "1 linked, 0 failed");

    const char *pull[] = {cli_path, "pull", "--cache-bytes", "1M", "--block-size", "16K",
                          "--verify", s.addr, NULL};
    run(pull);
    assert_rc(0);
    assert_contains(R.out, "pull: 1048576 bytes");
    assert_contains(R.out, "verify: ok (1048576 bytes, seed 1)");
    assert_contains(R.out, "GB/s, transport ");

    const char *pull_tcp[] = {cli_path, "pull", "--cache-bytes", "1M", "--block-size", "4K",
                              "--blocks", "10", "--transport", "tcp", "--verify", s.addr, NULL};
    run(pull_tcp);
    assert_rc(0);
    assert_contains(R.out, "10 blocks of 4096 bytes x 2 tensors");
    assert_contains(R.out, "transport tcp");
    assert_contains(R.out, "verify: ok");

    const char *push[] = {cli_path, "push", "--cache-bytes", "1M", "--block-size", "4K",
                          "--blocks", "8", "--verify", s.addr, NULL};
    run(push);
    assert_rc(0);
    assert_contains(R.out, "push: 65536 bytes");
    assert_contains(R.out, "verify: ok (65536 bytes, seed 1000)");

    /* A pull of a block size serve has no cache of: refused, named. */
    const char *missing[] = {cli_path, "pull", "--cache-bytes", "1M", "--block-size", "8K",
                             s.addr, NULL};
    run(missing);
    assert_rc(1);
    assert_contains(R.err, "LLM_KV_CACHE_NOT_EXIST");

    const char *stats[] = {cli_path, "stats", s.url, NULL};
    run(stats);
    assert_rc(0);
    assert_contains(R.out, "llmlink_links_established_total{side=\"inbound\"}");
    assert_contains(R.out, "llmlink_peer_requests_served_total");
    const char *raw[] = {cli_path, "stats", "--raw", s.url, NULL};
    run(raw);
    assert_rc(0);
    assert_contains(R.out, "# TYPE llmlink_transfer_duration_seconds histogram");
    /* The per-link RDMA rail families (link info version 2) are there
     * with no RDMA link too, as every family is. */
    assert_contains(R.out, "# TYPE llmlink_link_rdma_rails gauge");
    assert_contains(R.out, "# TYPE llmlink_link_rdma_rails_up gauge");
    assert_contains(R.out, "# TYPE llmlink_link_rdma_rail_failovers_total counter");
    assert_contains(R.out, "# TYPE llmlink_link_rdma_rail_repairs_total counter");
    assert_contains(R.out, "# TYPE llmlink_link_rdma_rail_bytes_total counter");
    assert_contains(R.out, "# TYPE llmlink_link_rdma_rail_mtu_bytes gauge");

    /* 5 clients linked and unlinked; the server made no transfer itself;
     * the refused pull was a peer request refused here. */
    const char *expect[] = {"llmlink_links_up=0",
                            "llmlink_links_established_total{side=\"inbound\"}=5",
                            "llmlink_links_established_total{side=\"outbound\"}=0",
                            "llmlink_links_closed_total{reason=\"unlinked_by_peer\"}=5",
                            "llmlink_links_closed_total{reason=\"peer_closed\"}=0",
                            "llmlink_handshakes_ok_total=5",
                            "llmlink_handshakes_refused_total{reason=\"auth\"}=0",
                            "llmlink_transfer_duration_seconds_count{direction=\"pull\"}=0",
                            "llmlink_peer_requests_refused_total=1",
                            NULL};
    scrape(&s, expect);
    serve_stop(&s);
}

static void test_stats_pid(void **state)
{
    (void)state;
    served_t s;
    memset(&s, 0, sizeof s);
    char maddr[64];
    snprintf(maddr, sizeof maddr, "127.0.0.1:%u", proc_unused_port("127.0.0.1"));
    serve_start(&s, maddr);
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)s.p.pid);
    const char *a[] = {cli_path, "stats", "--raw", "--pid", pid, NULL};
    run(a);
    assert_rc(0);
    assert_contains(R.out, "llmlink_handshakes_ok_total 0");
    char self[32];
    snprintf(self, sizeof self, "%d", (int)getpid());
    const char *notserve[] = {cli_path, "stats", "--pid", self, NULL};
    run(notserve);
    assert_rc(1);
    assert_contains(R.err, "not an `llmlink serve --metrics ADDR` process");
    serve_stop(&s);
}

static void test_bench_json(void **state)
{
    (void)state;
    served_t s;
    memset(&s, 0, sizeof s);
    serve_start(&s, "127.0.0.1:0");
    const char *a[] = {cli_path, "bench", "--json", "--cache-bytes", "1M", "--sizes", "4K,16K",
                       "--total", "2M", "--transports", "tcp", "--direction", "both", s.addr,
                       NULL};
    run(a);
    assert_rc(0);
    int lines = 0;
    char *save = NULL;
    for (char *l = strtok_r(R.out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        lines++;
        assert_true(l[0] == '{' && l[strlen(l) - 1] == '}');
        assert_contains(l, "\"schema\": 1");
        assert_contains(l, "\"transport\": \"tcp\"");
        assert_contains(l, "\"transport_used\": \"tcp\"");
        assert_contains(l, "\"ok\": true");
        assert_contains(l, "\"gbps\": ");
        unsigned long long bytes = 0;
        const char *b = strstr(l, "\"bytes\": ");
        assert_non_null(b);
        bytes = strtoull(b + 9, NULL, 10);
        assert_true(bytes >= 2ull << 20);
    }
    assert_int_equal(lines, 4); /* 2 sizes x 2 directions */
    serve_stop(&s);
}

/* ---- doctor ---- */

static void test_doctor_host(void **state)
{
    (void)state;
    const char *a[] = {cli_path, "doctor", "--cache-bytes", "1G", "--listen", "127.0.0.1:0", NULL};
    run(a);
    struct stat st;
    bool rdma = stat("/sys/class/infiniband", &st) == 0;
    if (!rdma)
        assert_contains(R.out, "WARN  rdma      no RDMA device");
    struct rlimit r;
    getrlimit(RLIMIT_MEMLOCK, &r);
    char want[64];
    if (r.rlim_cur == RLIM_INFINITY)
        snprintf(want, sizeof want, "ulimit -l: unlimited");
    else
        snprintf(want, sizeof want, "ulimit -l: %llu KiB",
                 (unsigned long long)(r.rlim_cur / 1024));
    assert_contains(R.out, want);
    assert_contains(R.out, "OK    listen    127.0.0.1:0");
    bool any_fail = strstr(R.out, "\nFAIL ") || !strncmp(R.out, "FAIL ", 5);
    assert_int_equal(R.rc, any_fail ? 1 : 0);

    /* A port that is listened on already. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 1), 0);
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    char busy[64];
    snprintf(busy, sizeof busy, "127.0.0.1:%u", ntohs(sa.sin_port));
    const char *b[] = {cli_path, "doctor", "--listen", busy, NULL};
    run(b);
    close(fd);
    assert_rc(1);
    assert_contains(R.out, "FAIL  listen");
    assert_contains(R.out, "Address already in use");
    assert_contains(R.out, "fix: another process listens there");
}

static void put(const char *root, const char *rel, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0700);
            *p = '/';
        }
    FILE *f = fopen(path, "we");
    assert_non_null(f);
    fprintf(f, "%s\n", text);
    fclose(f);
}

static void test_doctor_fake_rxe(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/llk_doctor_XXXXXX";
    char *root = mkdtemp(tmpl);
    assert_non_null(root);
    const char *p = "sys/class/infiniband/rxe0/ports/1/";
    char rel[256];
#define PUT(suffix, text)                                   \
    do {                                                    \
        snprintf(rel, sizeof rel, "%s%s", p, suffix);       \
        put(root, rel, text);                               \
    } while (0)
    PUT("state", "4: ACTIVE");
    PUT("link_layer", "Ethernet");
    PUT("gids/0", "fe80:0000:0000:0000:5054:00ff:fe12:3456");
    PUT("gid_attrs/types/0", "IB/RoCE v1");
    PUT("gids/1", "0000:0000:0000:0000:0000:ffff:0a00:0002");
    PUT("gid_attrs/types/1", "RoCE v2");
    PUT("gid_attrs/ndevs/1", "eth9");
    PUT("gids/2", "0000:0000:0000:0000:0000:0000:0000:0000");
    p = "sys/class/infiniband/rxe1/ports/1/";
    PUT("state", "1: DOWN");
    PUT("link_layer", "Ethernet");
    put(root, "sys/class/net/eth9/mtu", "1500");
    put(root, "proc/sys/kernel/yama/ptrace_scope", "1");
    put(root, "proc/sys/net/ipv4/tcp_available_ulp", "mptcp tls");
    put(root, "sys/devices/system/clocksource/clocksource0/current_clocksource", "hpet");
#undef PUT
    const char *a[] = {cli_path, "doctor", "--root", root, NULL};
    run(a);
    assert_rc(1);
    assert_contains(R.out, "rxe0 port 1 gid 1 0000:0000:0000:0000:0000:ffff:0a00:0002 (RoCE v2, eth9)");
    assert_contains(R.out, "WARN  rdma      rxe0 port 1: 4: ACTIVE, RoCE, 1 v2 GID(s), netdev eth9 "
                           "MTU 1500: RDMA MTU at most 1024");
    assert_contains(R.out, "FAIL  rdma      rxe1 port 1: state 1: DOWN (Ethernet)");
    assert_contains(R.out, "fix: bring the link up");
    assert_contains(R.out, "OK    ktls");
    assert_contains(R.out, "WARN  clock     clock source hpet");
    if (geteuid() != 0)
        assert_contains(R.out, "WARN  shm       ptrace_scope 1");
    else
        assert_contains(R.out, "OK    shm       ptrace_scope 1, user root");
    assert_contains(R.out, "SKIP  listen");
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help_and_usage),   cmocka_unit_test(test_link_nothing_listens),
        cmocka_unit_test(test_end_to_end),       cmocka_unit_test(test_stats_pid),
        cmocka_unit_test(test_bench_json),       cmocka_unit_test(test_doctor_host),
        cmocka_unit_test(test_doctor_fake_rxe),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}

/*
 * bench_link.c - how fast llmlink links clusters, and what a link costs.
 *
 * The prefill side (PROMPT engines) runs in separate processes: each server
 * is a fork()ed child that creates one PROMPT engine listening on
 * 127.0.0.1:0, reports its port on a pipe, then answers line requests on
 * another pipe until told to quit:
 *     "rss"   -> "rss <VmRSS in KiB>"
 *     "stats" -> "stats <llmlink_get_stats fields>"
 *     "quit"  -> destroys its engine, answers "bye", exits 0
 * The decode side (DECODER engines) runs in this process. Figures:
 *   a  link 1 cluster: one DECODER to one PROMPT, link + unlink rounds
 *   b  link 16 clusters (16 server processes) in one llmlink_link_clusters
 *   c  link 512 clusters: 512 DECODER engines to one server, sequential
 *      calls and 8 threads in parallel
 *   d  handshakes per second: N threads, each with its own DECODER engine,
 *      link/unlink in a loop against one server
 *   e  server RSS: before any link, holding 512 idle links, after unlinking
 *
 * It measures and prints; it asserts no speed. The exit status is 1 only
 * when a section could not run (a server did not start, links failed).
 *
 * Usage: bench_link [--quick] [--only a,b,c,d,e] [--help]
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llmlink.h"

#define LOCALHOST "127.0.0.1"
#define LINK_TIMEOUT_MS 5000
#define UNLINK_TIMEOUT_MS 5000
/* Server-side llmlink.MaxLinks: headroom over the 512 links sections c and
 * e hold, so no figure depends on the default landing exactly on 512. */
#define SERVER_MAX_LINKS "1024"
/* How long a request to a server child may take before it counts as dead. */
#define SERVER_REPLY_MS 10000
/* A server child gives up on its own after this long (bounded even if the
 * parent hangs without dying). */
#define SERVER_MAX_LIFE_MS (2LL * 3600 * 1000)
#define MAX_SERVERS 32

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t now_ms(void) { return now_ns() / 1000000; }

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void progress(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_link: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of v[0..n) (sorts v). */
static double percentile(double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

static long self_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* ------------------------------------------------------------------ */
/* Results table                                                       */
/* ------------------------------------------------------------------ */

typedef struct row {
    char sec;
    char figure[80];
    char value[24];
    char unit[16];
    char detail[240];
} row_t;

static row_t g_rows[128];
static size_t g_nrows;
static bool g_failed;

static void add_row(char sec, const char *figure, const char *unit, const char *detail,
                    const char *vfmt, ...) __attribute__((format(printf, 5, 6)));
static void add_row(char sec, const char *figure, const char *unit, const char *detail,
                    const char *vfmt, ...)
{
    if (g_nrows == sizeof g_rows / sizeof g_rows[0])
        return;
    row_t *r = &g_rows[g_nrows++];
    r->sec = sec;
    snprintf(r->figure, sizeof r->figure, "%s", figure);
    snprintf(r->unit, sizeof r->unit, "%s", unit);
    snprintf(r->detail, sizeof r->detail, "%s", detail ? detail : "");
    va_list ap;
    va_start(ap, vfmt);
    vsnprintf(r->value, sizeof r->value, vfmt, ap);
    va_end(ap);
}

static void section_failed(char sec, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void section_failed(char sec, const char *what, const char *fmt, ...)
{
    char detail[240];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    progress("section %c: %s FAILED: %s", sec, what, detail);
    add_row(sec, what, "", detail, "FAILED");
    g_failed = true;
}

/* ------------------------------------------------------------------ */
/* Server processes                                                    */
/* ------------------------------------------------------------------ */

typedef struct server {
    pid_t pid;
    int cmd_w;  /* parent -> child requests */
    int rsp_r;  /* child -> parent replies */
    uint16_t port;
    uint64_t cluster_id;
} server_t;

/* Every live child, so that any exit path can reap it. */
static server_t *g_servers[MAX_SERVERS];
static bool g_is_child;

typedef struct server_stats {
    unsigned links, inbound, outbound, hs_in_progress, hs_peak;
    unsigned long long accepted, completed, rejected, timed_out, protocol_errors, links_lost;
} server_stats_t;

/* Reads one '\n'-terminated line from fd within timeout_ms (-1: forever).
 * Returns its length, 0 on EOF, -1 on error or timeout. */
static int read_line(int fd, char *buf, size_t len, int timeout_ms)
{
    size_t n = 0;
    int64_t deadline = timeout_ms < 0 ? 0 : now_ms() + timeout_ms;
    while (n + 1 < len) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int wait = -1;
        if (timeout_ms >= 0) {
            int64_t left = deadline - now_ms();
            if (left <= 0)
                return -1;
            wait = (int)left;
        }
        int r = poll(&p, 1, wait);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        char ch;
        ssize_t got = read(fd, &ch, 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return -1;
        if (got == 0)
            return n ? -1 : 0;
        if (ch == '\n') {
            buf[n] = '\0';
            return (int)n;
        }
        buf[n++] = ch;
    }
    return -1;
}

static bool write_all(int fd, const char *s)
{
    size_t len = strlen(s), off = 0;
    while (off < len) {
        ssize_t w = write(fd, s + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        off += (size_t)w;
    }
    return true;
}

/* In the child: close every inherited descriptor except stdio and ours, so
 * that no pipe of another child stays open here (each child must see EOF
 * when the parent goes away). */
static void close_inherited_fds(int keep1, int keep2)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    int fds[4096];
    size_t n = 0;
    struct dirent *de;
    int self = dirfd(d);
    while ((de = readdir(d)) != NULL && n < sizeof fds / sizeof fds[0]) {
        if (!isdigit((unsigned char)de->d_name[0]))
            continue;
        int fd = atoi(de->d_name);
        if (fd > 2 && fd != keep1 && fd != keep2 && fd != self)
            fds[n++] = fd;
    }
    closedir(d);
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

static void server_child(int cmd_r, int rsp_w, uint64_t cluster_id, pid_t parent)
{
    g_is_child = true;
    memset(g_servers, 0, sizeof g_servers);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    close_inherited_fds(cmd_r, rsp_w);

    char line[512];
    llmlink_t *e = NULL;
    llmlink_status_t st = llmlink_create(&e, LLMLINK_ROLE_PROMPT, cluster_id);
    if (st == LLMLINK_SUCCESS) {
        const llmlink_option_t opts[] = {
            {"llm.listenIpInfo", LOCALHOST ":0"},
            {"llmlink.MaxLinks", SERVER_MAX_LINKS},
        };
        st = llmlink_init(e, opts, sizeof opts / sizeof opts[0]);
    }
    uint16_t port = 0;
    if (st == LLMLINK_SUCCESS)
        st = llmlink_get_listen_port(e, 0, &port);
    if (st != LLMLINK_SUCCESS) {
        snprintf(line, sizeof line, "error %s: %s\n", llmlink_status_name(st),
                 llmlink_last_error());
        write_all(rsp_w, line);
        llmlink_destroy(e);
        exit(1);
    }
    snprintf(line, sizeof line, "port %u\n", (unsigned)port);
    write_all(rsp_w, line);

    int64_t give_up = now_ms() + SERVER_MAX_LIFE_MS;
    while (now_ms() < give_up) {
        int n = read_line(cmd_r, line, sizeof line, 1000);
        if (n < 0) {
            if (getppid() != parent)
                break; /* orphaned (PDEATHSIG should have come first) */
            continue; /* timeout: poll again */
        }
        if (n == 0 || strcmp(line, "quit") == 0)
            break;
        char out[512];
        if (strcmp(line, "rss") == 0) {
            snprintf(out, sizeof out, "rss %ld\n", self_rss_kib());
        } else if (strcmp(line, "stats") == 0) {
            llmlink_stats_t s = {.version = LLMLINK_STATS_VERSION};
            if (llmlink_get_stats(e, &s) != LLMLINK_SUCCESS)
                snprintf(out, sizeof out, "error %s\n", llmlink_last_error());
            else
                snprintf(out, sizeof out,
                         "stats %u %u %u %u %u %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
                         " %" PRIu64 " %" PRIu64 "\n",
                         s.links, s.inbound_links, s.outbound_links, s.handshakes_in_progress,
                         s.handshakes_peak, s.handshakes_accepted, s.handshakes_completed,
                         s.handshakes_rejected, s.handshakes_timed_out, s.protocol_errors,
                         s.links_lost);
        } else {
            snprintf(out, sizeof out, "error unknown request \"%.64s\"\n", line);
        }
        if (!write_all(rsp_w, out))
            break;
    }
    llmlink_destroy(e);
    write_all(rsp_w, "bye\n");
    close(cmd_r);
    close(rsp_w);
    exit(0); /* exit(), not _exit(): LeakSanitizer checks the child too */
}

static void server_forget(server_t *s)
{
    for (size_t i = 0; i < MAX_SERVERS; i++)
        if (g_servers[i] == s)
            g_servers[i] = NULL;
}

/* Stops a child: "quit", then up to 5 s for it to exit, then SIGKILL.
 * Returns false when it did not exit cleanly (status != 0). */
static bool server_stop(server_t *s)
{
    if (s->pid <= 0)
        return true;
    bool clean = true;
    if (s->cmd_w >= 0) {
        write_all(s->cmd_w, "quit\n");
        close(s->cmd_w);
        s->cmd_w = -1;
    }
    int status = 0;
    pid_t r = 0;
    for (int i = 0; i < 500; i++) {
        r = waitpid(s->pid, &status, WNOHANG);
        if (r != 0)
            break;
        sleep_ms(10);
    }
    if (r == 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &status, 0);
        clean = false;
        progress("server %" PRIu64 " (pid %d) did not exit within 5 s; killed",
                 s->cluster_id, (int)s->pid);
    } else if (r > 0 && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
        clean = false;
        if (WIFEXITED(status))
            progress("server %" PRIu64 " (pid %d) exited with status %d", s->cluster_id,
                     (int)s->pid, WEXITSTATUS(status));
        else
            progress("server %" PRIu64 " (pid %d) died of signal %d", s->cluster_id,
                     (int)s->pid, WTERMSIG(status));
    }
    if (s->rsp_r >= 0)
        close(s->rsp_r);
    s->rsp_r = -1;
    s->pid = 0;
    server_forget(s);
    return clean;
}

/* Forks a server child for cluster_id. Call only while this process runs
 * no other threads (no live engine): fork copies only the calling thread. */
static bool server_start(server_t *s, uint64_t cluster_id, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->cmd_w = s->rsp_r = -1;
    s->cluster_id = cluster_id;
    size_t slot = MAX_SERVERS;
    for (size_t i = 0; i < MAX_SERVERS; i++)
        if (!g_servers[i]) {
            slot = i;
            break;
        }
    if (slot == MAX_SERVERS) {
        snprintf(err, errlen, "more than %d server processes", MAX_SERVERS);
        return false;
    }
    int cmd[2], rsp[2];
    if (pipe2(cmd, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return false;
    }
    if (pipe2(rsp, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        close(cmd[0]);
        close(cmd[1]);
        return false;
    }
    pid_t parent = getpid();
    fflush(NULL); /* or the child's exit() flushes our buffers a second time */
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(cmd[0]);
        close(cmd[1]);
        close(rsp[0]);
        close(rsp[1]);
        return false;
    }
    if (pid == 0) {
        close(cmd[1]);
        close(rsp[0]);
        server_child(cmd[0], rsp[1], cluster_id, parent);
        _exit(1); /* not reached */
    }
    close(cmd[0]);
    close(rsp[1]);
    s->pid = pid;
    s->cmd_w = cmd[1];
    s->rsp_r = rsp[0];
    g_servers[slot] = s;

    char line[512];
    int n = read_line(s->rsp_r, line, sizeof line, SERVER_REPLY_MS);
    unsigned port = 0;
    if (n > 0 && sscanf(line, "port %u", &port) == 1 && port > 0 && port < 65536) {
        s->port = (uint16_t)port;
        return true;
    }
    snprintf(err, errlen, "server %" PRIu64 " did not start: %.200s", cluster_id,
             n > 0 ? line : n == 0 ? "it exited" : "no answer");
    server_stop(s);
    return false;
}

static bool server_request(server_t *s, const char *req, char *reply, size_t len)
{
    char msg[64];
    snprintf(msg, sizeof msg, "%s\n", req);
    if (s->pid <= 0 || !write_all(s->cmd_w, msg))
        return false;
    return read_line(s->rsp_r, reply, len, SERVER_REPLY_MS) > 0;
}

static long server_rss_kib(server_t *s)
{
    char line[512];
    long kib = -1;
    if (!server_request(s, "rss", line, sizeof line) || sscanf(line, "rss %ld", &kib) != 1)
        return -1;
    return kib;
}

static bool server_stats(server_t *s, server_stats_t *st)
{
    char line[512];
    memset(st, 0, sizeof *st);
    return server_request(s, "stats", line, sizeof line) &&
           sscanf(line, "stats %u %u %u %u %u %llu %llu %llu %llu %llu %llu", &st->links,
                  &st->inbound, &st->outbound, &st->hs_in_progress, &st->hs_peak, &st->accepted,
                  &st->completed, &st->rejected, &st->timed_out, &st->protocol_errors,
                  &st->links_lost) == 11;
}

/* Polls until the server holds `links` links and no handshake is in
 * progress, or timeout_ms passes. */
static bool server_wait_links(server_t *s, unsigned links, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    server_stats_t st;
    for (;;) {
        if (server_stats(s, &st) && st.links == links && st.hs_in_progress == 0)
            return true;
        if (now_ms() >= deadline)
            return false;
        sleep_ms(5);
    }
}

static void stop_all_servers(void)
{
    if (g_is_child)
        return;
    for (size_t i = 0; i < MAX_SERVERS; i++)
        if (g_servers[i])
            server_stop(g_servers[i]);
}

/* ------------------------------------------------------------------ */
/* Decoder engines and links                                           */
/* ------------------------------------------------------------------ */

typedef struct target {
    llmlink_ip_info_t ip;
    llmlink_cluster_info_t ci;
} target_t;

static void target_for(target_t *t, const server_t *s)
{
    memset(t, 0, sizeof *t);
    t->ip.ip = LOCALHOST;
    t->ip.port = s->port;
    t->ci.remote_cluster_id = s->cluster_id;
    t->ci.remote_role = LLMLINK_ROLE_PROMPT;
    t->ci.remote_ip_infos = &t->ip;
    t->ci.num_remote_ip_infos = 1;
}

static llmlink_t *decoder_new(uint64_t cluster_id, char *err, size_t errlen)
{
    llmlink_t *e = NULL;
    llmlink_status_t st = llmlink_create(&e, LLMLINK_ROLE_DECODER, cluster_id);
    if (st == LLMLINK_SUCCESS)
        st = llmlink_init(e, NULL, 0);
    if (st != LLMLINK_SUCCESS) {
        snprintf(err, errlen, "decoder %" PRIu64 ": %s: %s", cluster_id,
                 llmlink_status_name(st), llmlink_last_error());
        llmlink_destroy(e);
        return NULL;
    }
    return e;
}

static void destroy_all(llmlink_t **e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        llmlink_destroy(e[i]);
        e[i] = NULL;
    }
}

static llmlink_status_t do_link(llmlink_t *e, const target_t *t)
{
    return llmlink_link_clusters(e, &t->ci, 1, LINK_TIMEOUT_MS, NULL);
}

static llmlink_status_t do_unlink(llmlink_t *e, const target_t *t)
{
    return llmlink_unlink_clusters(e, &t->ci, 1, UNLINK_TIMEOUT_MS, false, NULL);
}

/* Records the first failure of a run (thread-safe). */
typedef struct failures {
    pthread_mutex_t mu;
    unsigned long count;
    char first[200];
} failures_t;

static void failures_init(failures_t *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
}

static void failures_add(failures_t *f, const char *op, llmlink_status_t st)
{
    pthread_mutex_lock(&f->mu);
    if (f->count++ == 0)
        snprintf(f->first, sizeof f->first, "%s: %s: %s", op, llmlink_status_name(st),
                 llmlink_last_error());
    pthread_mutex_unlock(&f->mu);
}

static void failures_fini(failures_t *f) { pthread_mutex_destroy(&f->mu); }

/* Link (or unlink) engines[i] for every i, from `nthreads` threads, each
 * taking every nthreads-th engine. Returns the wall time in ns. */
typedef struct par_job {
    llmlink_t **engines;
    size_t n, nthreads, start;
    const target_t *t;
    bool unlink;
    pthread_barrier_t *go;
    failures_t *fail;
} par_job_t;

static void *par_worker(void *arg)
{
    par_job_t *j = arg;
    pthread_barrier_wait(j->go);
    for (size_t i = j->start; i < j->n; i += j->nthreads) {
        llmlink_status_t st = j->unlink ? do_unlink(j->engines[i], j->t)
                                        : do_link(j->engines[i], j->t);
        if (st != LLMLINK_SUCCESS)
            failures_add(j->fail, j->unlink ? "unlink" : "link", st);
    }
    return NULL;
}

/* With nthreads <= 1 the calls run on this thread, and each call's time
 * (us) lands in per_call[i] when per_call is not NULL. */
static int64_t run_parallel(llmlink_t **engines, size_t n, size_t nthreads, const target_t *t,
                            bool unlink, failures_t *fail, double *per_call)
{
    if (nthreads <= 1) {
        int64_t t0 = now_ns(), prev = t0;
        for (size_t i = 0; i < n; i++) {
            llmlink_status_t st = unlink ? do_unlink(engines[i], t) : do_link(engines[i], t);
            if (st != LLMLINK_SUCCESS)
                failures_add(fail, unlink ? "unlink" : "link", st);
            int64_t now = now_ns();
            if (per_call)
                per_call[i] = (double)(now - prev) / 1e3;
            prev = now;
        }
        return now_ns() - t0;
    }
    pthread_t th[64];
    par_job_t jobs[64];
    pthread_barrier_t go;
    if (nthreads > 64)
        nthreads = 64;
    pthread_barrier_init(&go, NULL, (unsigned)nthreads + 1);
    size_t started = 0;
    for (size_t k = 0; k < nthreads; k++) {
        jobs[k] = (par_job_t){engines, n, nthreads, k, t, unlink, &go, fail};
        if (pthread_create(&th[k], NULL, par_worker, &jobs[k]) != 0)
            break;
        started++;
    }
    if (started < nthreads) {
        /* Cannot happen in practice; the barrier would never open. */
        fprintf(stderr, "bench_link: pthread_create failed; aborting\n");
        stop_all_servers();
        abort();
    }
    int64_t t0 = now_ns();
    pthread_barrier_wait(&go);
    for (size_t k = 0; k < started; k++)
        pthread_join(th[k], NULL);
    int64_t dt = now_ns() - t0;
    pthread_barrier_destroy(&go);
    return dt;
}

/* ------------------------------------------------------------------ */
/* Configuration                                                       */
/* ------------------------------------------------------------------ */

typedef struct config {
    bool quick;
    bool only[26];
    int rounds_a;
    int rounds_b;
    int engines_ce;       /* 512: the figure is defined for 512 links */
    int par_threads;      /* 8 */
    int hs_duration_ms;   /* per N in section d */
    int section_limit_ms; /* a section's timed loops stop after this */
} config_t;

static const int HS_THREADS[] = {1, 4, 16, 64};

/* ------------------------------------------------------------------ */
/* a. link 1 cluster                                                   */
/* ------------------------------------------------------------------ */

static void section_a(const config_t *cfg)
{
    char err[256], d[160];
    progress("section a: link 1 cluster, %d link+unlink rounds", cfg->rounds_a);
    server_t srv;
    if (!server_start(&srv, 1000, err, sizeof err)) {
        section_failed('a', "link 1 cluster", "%s", err);
        return;
    }
    llmlink_t *e = decoder_new(1, err, sizeof err);
    if (!e) {
        section_failed('a', "link 1 cluster", "%s", err);
        server_stop(&srv);
        return;
    }
    target_t t;
    target_for(&t, &srv);
    double *lk = calloc((size_t)cfg->rounds_a, sizeof *lk);
    double *ul = calloc((size_t)cfg->rounds_a, sizeof *ul);
    failures_t fail;
    failures_init(&fail);
    /* Warm-up: first connection, first allocations on both sides. */
    for (int i = 0; i < 5; i++)
        if (do_link(e, &t) == LLMLINK_SUCCESS)
            do_unlink(e, &t);
    int n = 0;
    int64_t limit = now_ms() + cfg->section_limit_ms;
    for (int i = 0; i < cfg->rounds_a && now_ms() < limit; i++) {
        int64_t t0 = now_ns();
        llmlink_status_t st = do_link(e, &t);
        int64_t t1 = now_ns();
        if (st != LLMLINK_SUCCESS) {
            failures_add(&fail, "link", st);
            continue;
        }
        st = do_unlink(e, &t);
        int64_t t2 = now_ns();
        if (st != LLMLINK_SUCCESS)
            failures_add(&fail, "unlink", st);
        lk[n] = (double)(t1 - t0) / 1e3;
        ul[n] = (double)(t2 - t1) / 1e3;
        n++;
    }
    snprintf(d, sizeof d, "%d rounds, 1 DECODER -> 1 PROMPT process; link+unlink per round", n);
    if (n > 0) {
        add_row('a', "link 1 cluster, median", "us", d, "%.1f", percentile(lk, (size_t)n, 50));
        add_row('a', "link 1 cluster, p99", "us", d, "%.1f", percentile(lk, (size_t)n, 99));
        add_row('a', "unlink 1 cluster (non-force), median", "us", d, "%.1f",
                percentile(ul, (size_t)n, 50));
        add_row('a', "unlink 1 cluster (non-force), p99", "us", d, "%.1f",
                percentile(ul, (size_t)n, 99));
    }
    if (fail.count)
        section_failed('a', "link 1 cluster", "%lu failed calls; first: %s", fail.count,
                       fail.first);
    failures_fini(&fail);
    free(lk);
    free(ul);
    llmlink_destroy(e);
    if (!server_stop(&srv))
        section_failed('a', "server exit", "server process did not exit cleanly");
}

/* ------------------------------------------------------------------ */
/* b. link 16 clusters in one call                                     */
/* ------------------------------------------------------------------ */

#define B_CLUSTERS LLMLINK_MAX_CLUSTERS_PER_CALL

static void section_b(const config_t *cfg)
{
    char err[256], d[160];
    progress("section b: link %d clusters (%d server processes) in one call, %d rounds",
             B_CLUSTERS, B_CLUSTERS, cfg->rounds_b);
    server_t srv[B_CLUSTERS];
    target_t t[B_CLUSTERS];
    llmlink_cluster_info_t ci[B_CLUSTERS];
    int started = 0;
    for (; started < B_CLUSTERS; started++) {
        if (!server_start(&srv[started], 2000 + (uint64_t)started, err, sizeof err))
            break;
        target_for(&t[started], &srv[started]);
        ci[started] = t[started].ci;
    }
    /* ci[i] points into t[i].ip, which stays put. */
    llmlink_t *e = NULL;
    if (started < B_CLUSTERS) {
        section_failed('b', "link 16 clusters", "%s", err);
        goto out;
    }
    e = decoder_new(2, err, sizeof err);
    if (!e) {
        section_failed('b', "link 16 clusters", "%s", err);
        goto out;
    }
    double *one = calloc((size_t)cfg->rounds_b, sizeof *one);
    double *seq = calloc((size_t)cfg->rounds_b, sizeof *seq);
    double *ul = calloc((size_t)cfg->rounds_b, sizeof *ul);
    failures_t fail;
    failures_init(&fail);
    llmlink_status_t cs[B_CLUSTERS];
    for (int i = 0; i < 3; i++) /* warm-up */
        if (llmlink_link_clusters(e, ci, B_CLUSTERS, LINK_TIMEOUT_MS, cs) == LLMLINK_SUCCESS)
            llmlink_unlink_clusters(e, ci, B_CLUSTERS, UNLINK_TIMEOUT_MS, false, cs);
    int n = 0;
    int64_t limit = now_ms() + cfg->section_limit_ms;
    for (int r = 0; r < cfg->rounds_b && now_ms() < limit; r++) {
        /* One call for all 16. */
        int64_t t0 = now_ns();
        llmlink_status_t st = llmlink_link_clusters(e, ci, B_CLUSTERS, LINK_TIMEOUT_MS, cs);
        int64_t t1 = now_ns();
        if (st != LLMLINK_SUCCESS) {
            failures_add(&fail, "link 16", st);
            llmlink_unlink_clusters(e, ci, B_CLUSTERS, UNLINK_TIMEOUT_MS, false, cs);
            continue;
        }
        st = llmlink_unlink_clusters(e, ci, B_CLUSTERS, UNLINK_TIMEOUT_MS, false, cs);
        int64_t t2 = now_ns();
        if (st != LLMLINK_SUCCESS)
            failures_add(&fail, "unlink 16", st);
        /* For comparison: the same 16 links as 16 one-cluster calls. */
        int64_t t3 = now_ns();
        for (int i = 0; i < B_CLUSTERS; i++) {
            st = do_link(e, &t[i]);
            if (st != LLMLINK_SUCCESS)
                failures_add(&fail, "link 1 of 16", st);
        }
        int64_t t4 = now_ns();
        st = llmlink_unlink_clusters(e, ci, B_CLUSTERS, UNLINK_TIMEOUT_MS, false, cs);
        if (st != LLMLINK_SUCCESS)
            failures_add(&fail, "unlink 16", st);
        one[n] = (double)(t1 - t0) / 1e3;
        ul[n] = (double)(t2 - t1) / 1e3;
        seq[n] = (double)(t4 - t3) / 1e3;
        n++;
    }
    snprintf(d, sizeof d, "%d rounds; 16 PROMPT processes, distinct cluster ids", n);
    if (n > 0) {
        add_row('b', "link 16 clusters in 1 call, median", "us", d, "%.1f",
                percentile(one, (size_t)n, 50));
        add_row('b', "link 16 clusters in 1 call, p99", "us", d, "%.1f",
                percentile(one, (size_t)n, 99));
        add_row('b', "unlink 16 clusters in 1 call, median", "us", d, "%.1f",
                percentile(ul, (size_t)n, 50));
        add_row('b', "for comparison: 16 sequential 1-cluster calls, median", "us", d, "%.1f",
                percentile(seq, (size_t)n, 50));
    }
    if (fail.count)
        section_failed('b', "link 16 clusters", "%lu failed calls; first: %s", fail.count,
                       fail.first);
    failures_fini(&fail);
    free(one);
    free(seq);
    free(ul);
out:
    llmlink_destroy(e);
    bool clean = true;
    for (int i = 0; i < started; i++)
        clean = server_stop(&srv[i]) && clean;
    if (!clean)
        section_failed('b', "server exit", "a server process did not exit cleanly");
}

/* ------------------------------------------------------------------ */
/* c. link 512 clusters                                                */
/* ------------------------------------------------------------------ */

static bool create_decoders(llmlink_t **e, size_t n, uint64_t first_id, char *err, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        e[i] = decoder_new(first_id + i, err, len);
        if (!e[i]) {
            destroy_all(e, i);
            return false;
        }
    }
    return true;
}

static void section_c(const config_t *cfg)
{
    char err[256], d[160];
    size_t n = (size_t)cfg->engines_ce;
    progress("section c: link %zu clusters (%zu DECODER engines -> 1 server), sequential and "
             "%d threads", n, n, cfg->par_threads);
    server_t srv;
    if (!server_start(&srv, 3000, err, sizeof err)) {
        section_failed('c', "link 512 clusters", "%s", err);
        return;
    }
    target_t t;
    target_for(&t, &srv);
    llmlink_t **e = calloc(n, sizeof *e);
    int64_t t0 = now_ns();
    if (!create_decoders(e, n, 100000, err, sizeof err)) {
        section_failed('c', "link 512 clusters", "%s", err);
        goto out;
    }
    double create_ms = (double)(now_ns() - t0) / 1e6;
    snprintf(d, sizeof d, "llmlink_create + llmlink_init of %zu DECODER engines (not in the "
             "figures below)", n);
    add_row('c', "create 512 engines", "ms", d, "%.1f", create_ms);

    for (int pass = 0; pass < 2; pass++) {
        size_t threads = pass == 0 ? 1 : (size_t)cfg->par_threads;
        failures_t fail;
        failures_init(&fail);
        double *per = threads == 1 ? calloc(n, sizeof *per) : NULL;
        int64_t lk = run_parallel(e, n, threads, &t, false, &fail, per);
        server_stats_t ss;
        bool held = server_wait_links(&srv, (unsigned)n, 5000);
        server_stats(&srv, &ss);
        int64_t ul = run_parallel(e, n, threads, &t, true, &fail, NULL);
        bool freed = server_wait_links(&srv, 0, 10000);
        char fig[80];
        if (threads == 1)
            snprintf(d, sizeof d, "%zu sequential 1-cluster calls; %.1f us per link, %.0f "
                     "links/s", n, (double)lk / 1e3 / (double)n, (double)n * 1e9 / (double)lk);
        else
            snprintf(d, sizeof d, "%zu threads x %zu calls; %.0f links/s", threads, n / threads,
                     (double)n * 1e9 / (double)lk);
        snprintf(fig, sizeof fig, "link 512 clusters, %s, total",
                 threads == 1 ? "sequential" : "parallel");
        add_row('c', fig, "ms", d, "%.1f", (double)lk / 1e6);
        if (per && n >= 128) {
            /* Does a link cost more when the server already holds many? */
            double first = percentile(per, 64, 50);
            double last = percentile(per + n - 64, 64, 50);
            add_row('c', "link 512 clusters, sequential, links 1-64: median", "us",
                    "server holds 0-63 links when each call starts", "%.1f", first);
            snprintf(d, sizeof d, "server holds %zu-%zu links when each call starts", n - 64,
                     n - 1);
            add_row('c', "link 512 clusters, sequential, links 449-512: median", "us", d,
                    "%.1f", last);
        }
        free(per);
        snprintf(fig, sizeof fig, "unlink 512 clusters, %s, total",
                 threads == 1 ? "sequential" : "parallel");
        snprintf(d, sizeof d, "non-force; server links after: %s", freed ? "0" : "NOT 0");
        add_row('c', fig, "ms", d, "%.1f", (double)ul / 1e6);
        if (!held)
            section_failed('c', "link 512 clusters", "server reports %u links, expected %zu",
                           ss.links, n);
        if (fail.count)
            section_failed('c', "link 512 clusters", "%lu failed calls; first: %s", fail.count,
                           fail.first);
        failures_fini(&fail);
    }
out:
    destroy_all(e, n);
    free(e);
    if (!server_stop(&srv))
        section_failed('c', "server exit", "server process did not exit cleanly");
}

/* ------------------------------------------------------------------ */
/* d. handshakes per second                                            */
/* ------------------------------------------------------------------ */

typedef struct hs_job {
    llmlink_t *e;
    const target_t *t;
    pthread_barrier_t *go;
    const volatile int64_t *stop_at_ms; /* set before the barrier opens */
    unsigned long handshakes;
    failures_t *fail;
} hs_job_t;

static void *hs_worker(void *arg)
{
    hs_job_t *j = arg;
    pthread_barrier_wait(j->go);
    int64_t stop_at = *j->stop_at_ms;
    /* Bounded by time and by a count no loop can reach in the time. */
    for (unsigned long it = 0; it < 100000000ul && now_ms() < stop_at; it++) {
        llmlink_status_t st = do_link(j->e, j->t);
        if (st != LLMLINK_SUCCESS) {
            failures_add(j->fail, "link", st);
            continue;
        }
        j->handshakes++;
        st = do_unlink(j->e, j->t);
        if (st != LLMLINK_SUCCESS)
            failures_add(j->fail, "unlink", st);
    }
    return NULL;
}

static void section_d(const config_t *cfg)
{
    char err[256], d[160], fig[80];
    progress("section d: handshakes/s with 1, 4, 16, 64 concurrent clients, %.2f s each",
             cfg->hs_duration_ms / 1000.0);
    for (size_t k = 0; k < sizeof HS_THREADS / sizeof HS_THREADS[0]; k++) {
        size_t nt = (size_t)HS_THREADS[k];
        progress("section d: %zu client(s)", nt);
        snprintf(fig, sizeof fig, "handshakes/s, %zu client%s", nt, nt == 1 ? "" : "s");
        /* A fresh server per N: its handshake peak is this run's. */
        server_t srv;
        if (!server_start(&srv, 4000 + k, err, sizeof err)) {
            section_failed('d', fig, "%s", err);
            break;
        }
        target_t t;
        target_for(&t, &srv);
        llmlink_t *e[64];
        if (!create_decoders(e, nt, 200000 + 1000 * k, err, sizeof err)) {
            section_failed('d', fig, "%s", err);
            server_stop(&srv);
            break;
        }
        failures_t fail;
        failures_init(&fail);
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, (unsigned)nt + 1);
        pthread_t th[64];
        hs_job_t jobs[64];
        volatile int64_t stop_at = 0;
        size_t started = 0;
        for (size_t i = 0; i < nt; i++) {
            jobs[i] = (hs_job_t){e[i], &t, &go, &stop_at, 0, &fail};
            if (pthread_create(&th[i], NULL, hs_worker, &jobs[i]) != 0)
                break;
            started++;
        }
        if (started < nt) {
            fprintf(stderr, "bench_link: pthread_create failed; aborting\n");
            stop_all_servers();
            abort();
        }
        stop_at = now_ms() + cfg->hs_duration_ms;
        int64_t t0 = now_ns();
        pthread_barrier_wait(&go);
        for (size_t i = 0; i < nt; i++)
            pthread_join(th[i], NULL);
        int64_t dt = now_ns() - t0;
        pthread_barrier_destroy(&go);
        unsigned long total = 0;
        for (size_t i = 0; i < nt; i++)
            total += jobs[i].handshakes;
        bool freed = server_wait_links(&srv, 0, 10000);
        server_stats_t ss;
        server_stats(&srv, &ss);
        snprintf(d, sizeof d, "%lu handshakes in %.2f s (link+unlink loop); server: %u "
                 "handshakes at once at most, %llu rejected", total, (double)dt / 1e9,
                 ss.hs_peak, ss.rejected);
        add_row('d', fig, "1/s", d, "%.0f", (double)total * 1e9 / (double)dt);
        if (fail.count)
            section_failed('d', fig, "%lu failed calls; first: %s", fail.count, fail.first);
        if (!freed)
            section_failed('d', fig, "server still holds links after the run");
        failures_fini(&fail);
        destroy_all(e, nt);
        if (!server_stop(&srv))
            section_failed('d', "server exit", "server process did not exit cleanly");
    }
}

/* ------------------------------------------------------------------ */
/* e. server memory for 512 idle links                                 */
/* ------------------------------------------------------------------ */

/* The server is started by main() before any other section runs, so that
 * its baseline is a fresh fork of a small process rather than a copy of a
 * parent that has already run hundreds of engines. */
static bool section_e_server(server_t *srv)
{
    char err[256];
    if (server_start(srv, 5000, err, sizeof err))
        return true;
    section_failed('e', "server RSS", "%s", err);
    return false;
}

static void section_e(const config_t *cfg, server_t *srv)
{
    char err[256], d[160];
    size_t n = (size_t)cfg->engines_ce;
    progress("section e: server RSS holding %zu idle links", n);
    target_t t;
    target_for(&t, srv);
    llmlink_t **e = calloc(n, sizeof *e);
    failures_t fail;
    failures_init(&fail);
    sleep_ms(200); /* let the server's I/O thread settle */
    long rss0 = server_rss_kib(srv);
    long self0 = self_rss_kib();
    if (!create_decoders(e, n, 300000, err, sizeof err)) {
        section_failed('e', "server RSS", "%s", err);
        goto out;
    }
    long self1 = self_rss_kib();
    run_parallel(e, n, (size_t)cfg->par_threads, &t, false, &fail, NULL);
    bool held = server_wait_links(srv, (unsigned)n, 5000);
    /* Idle: a few heartbeat periods (default liveness 3000 ms, a beat
     * every 1000 ms) so every link has sent and received traffic. */
    sleep_ms(cfg->quick ? 1200 : 2500);
    server_stats_t ss;
    server_stats(srv, &ss);
    long rss1 = server_rss_kib(srv);
    long self2 = self_rss_kib();
    run_parallel(e, n, (size_t)cfg->par_threads, &t, true, &fail, NULL);
    bool freed = server_wait_links(srv, 0, 10000);
    sleep_ms(500);
    long rss2 = server_rss_kib(srv);

    if (rss0 < 0 || rss1 < 0 || rss2 < 0) {
        section_failed('e', "server RSS", "could not read the server's VmRSS");
        goto out;
    }
    add_row('e', "server RSS, before any link", "KiB", "PROMPT engine listening, idle", "%ld",
            rss0);
    snprintf(d, sizeof d, "server reports %u links, %llu lost", ss.links, ss.links_lost);
    add_row('e', "server RSS, holding 512 idle links", "KiB", d, "%ld", rss1);
    add_row('e', "server RSS growth per link", "KiB",
            "(holding - before) / 512; project goal: < 64 KiB per link", "%.1f",
            (double)(rss1 - rss0) / (double)n);
    snprintf(d, sizeof d, "non-force unlink of all; server links after: %s",
             freed ? "0" : "NOT 0");
    add_row('e', "server RSS, after unlinking all", "KiB", d, "%ld", rss2);
    if (self0 >= 0 && self1 >= 0 && self2 >= 0) {
        add_row('e', "for comparison: client RSS per DECODER engine", "KiB",
                "this process, (after create+init - before) / 512, no link", "%.1f",
                (double)(self1 - self0) / (double)n);
        add_row('e', "for comparison: client RSS per outbound link", "KiB",
                "this process, (linked - engines only) / 512", "%.1f",
                (double)(self2 - self1) / (double)n);
    }
    if (!held)
        section_failed('e', "server RSS", "server reports %u links, expected %zu", ss.links, n);
    if (fail.count)
        section_failed('e', "server RSS", "%lu failed calls; first: %s", fail.count, fail.first);
out:
    failures_fini(&fail);
    destroy_all(e, n);
    free(e);
    if (!server_stop(srv))
        section_failed('e', "server exit", "server process did not exit cleanly");
}

/* ------------------------------------------------------------------ */
/* Main                                                                */
/* ------------------------------------------------------------------ */

static void cpu_model(char *buf, size_t len)
{
    snprintf(buf, len, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0)
            continue;
        char *p = strchr(line, ':');
        if (!p)
            continue;
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        p[strcspn(p, "\n")] = '\0';
        snprintf(buf, len, "%s", p);
        break;
    }
    fclose(f);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_link [--quick] [--only a,b,c,d,e]\n"
            "  a  link 1 cluster (median, p99 over link+unlink rounds)\n"
            "  b  link 16 clusters (16 server processes) in one call\n"
            "  c  link 512 clusters: 512 DECODER engines, sequential and 8 threads\n"
            "  d  handshakes/s with 1, 4, 16, 64 concurrent clients\n"
            "  e  server RSS before, holding 512 idle links, after unlinking\n"
            "  --quick  fewer rounds and shorter runs (a smoke test)\n");
}

int main(int argc, char **argv)
{
    config_t cfg = {0};
    bool any_only = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            cfg.quick = true;
        } else if (strcmp(argv[i], "--only") == 0 || strncmp(argv[i], "--only=", 7) == 0) {
            const char *list = argv[i][6] == '=' ? argv[i] + 7 : (i + 1 < argc ? argv[++i] : NULL);
            if (!list || !*list) {
                usage(stderr);
                return 2;
            }
            for (const char *p = list; *p; p++) {
                if (*p == ',' || *p == ' ')
                    continue;
                char c = (char)tolower((unsigned char)*p);
                if (c < 'a' || c > 'e') {
                    fprintf(stderr, "bench_link: unknown section '%c'\n", *p);
                    usage(stderr);
                    return 2;
                }
                cfg.only[c - 'a'] = true;
                any_only = true;
            }
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "bench_link: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!any_only)
        for (int i = 0; i < 5; i++)
            cfg.only[i] = true;
    cfg.rounds_a = cfg.quick ? 20 : 200;
    cfg.rounds_b = cfg.quick ? 5 : 50;
    cfg.engines_ce = 512;
    cfg.par_threads = 8;
    cfg.hs_duration_ms = cfg.quick ? 250 : 2000;
    cfg.section_limit_ms = cfg.quick ? 60000 : 120000;

    signal(SIGPIPE, SIG_IGN);
    atexit(stop_all_servers);

    /* 512 engines here hold ~3 descriptors each, the server 512 sockets. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            progress("setrlimit(RLIMIT_NOFILE): %s", strerror(errno));
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < 2200)
        progress("warning: open-files limit %llu is low; sections c and e need ~2100",
                 (unsigned long long)rl.rlim_cur);

    char date[64], cpu[256];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S %Z", &tm);
    struct utsname un;
    if (uname(&un) != 0)
        snprintf(un.release, sizeof un.release, "unknown");
    cpu_model(cpu, sizeof cpu);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);

    printf("# llmlink link benchmark\n\n");
    printf("date %s | kernel %s | cpu %s | %ld cores | llmlink %s | %s run%s\n\n", date,
           un.release, cpu, cores, llmlink_version_string(), cfg.quick ? "quick" : "full",
           any_only ? " (--only)" : "");
    fflush(stdout);

    server_t srv_e;
    bool have_e = cfg.only[4] && section_e_server(&srv_e);
    int64_t t0 = now_ms();
    if (cfg.only[0])
        section_a(&cfg);
    if (cfg.only[1])
        section_b(&cfg);
    if (cfg.only[2])
        section_c(&cfg);
    if (cfg.only[3])
        section_d(&cfg);
    if (have_e)
        section_e(&cfg, &srv_e);
    progress("done in %.1f s", (double)(now_ms() - t0) / 1000.0);

    printf("| # | figure | value | unit | detail |\n");
    printf("|---|--------|------:|------|--------|\n");
    for (size_t i = 0; i < g_nrows; i++)
        printf("| %c | %s | %s | %s | %s |\n", g_rows[i].sec, g_rows[i].figure, g_rows[i].value,
               g_rows[i].unit, g_rows[i].detail);
    fflush(stdout);
    stop_all_servers();
    return g_failed ? 1 : 0;
}

/* bench_common.c - what the benchmarks in bench/ share (see bench_common.h). */
#include "bench_common.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static bench_conf_t g_conf = {
    .name = "bench",
    .server_label = "server",
    .max_servers = BENCH_MAX_SERVERS,
    .server_reply_ms = 10000,
    .server_stop_ms = 5000,
};

void bench_init(const bench_conf_t *conf)
{
    g_conf = *conf;
    if (g_conf.max_servers == 0 || g_conf.max_servers > BENCH_MAX_SERVERS)
        g_conf.max_servers = BENCH_MAX_SERVERS;
    signal(SIGPIPE, SIG_IGN);
    atexit(bench_stop_all_servers);
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t bench_now_ms(void) { return bench_now_ns() / 1000000; }

void bench_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void bench_progress(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", g_conf.name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_percentile(double *v, size_t n, double p)
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

double bench_median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

long bench_self_rss_kib(void)
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
    char figure[96];
    char value[24];
    char unit[16];
    char detail[360];
} row_t;

static row_t g_rows[160];
static size_t g_nrows;
static bool g_failed;

void bench_add_row(char sec, const char *figure, const char *unit, const char *detail,
                   const char *vfmt, ...)
{
    if (g_nrows == sizeof g_rows / sizeof g_rows[0])
        return;
    row_t *r = &g_rows[g_nrows++];
    r->sec = sec;
    snprintf(r->figure, sizeof r->figure, "%s", figure);
    snprintf(r->unit, sizeof r->unit, "%s", unit);
    snprintf(r->detail, sizeof r->detail, "%s", detail ? detail : "");
    /* A '|' in a message would break the markdown table. */
    for (char *p = r->detail; *p; p++)
        if (*p == '|' || *p == '\n')
            *p = '/';
    va_list ap;
    va_start(ap, vfmt);
    vsnprintf(r->value, sizeof r->value, vfmt, ap);
    va_end(ap);
}

void bench_failed(char sec, const char *what, const char *fmt, ...)
{
    char detail[360];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (g_conf.fail_as_cell)
        bench_progress("%c %s: FAILED: %s", sec, what, detail);
    else
        bench_progress("section %c: %s FAILED: %s", sec, what, detail);
    bench_add_row(sec, what, "", detail, "FAILED");
    g_failed = true;
}

bool bench_any_failed(void) { return g_failed; }

void bench_print_table(void)
{
    printf("| # | figure | value | unit | detail |\n");
    printf("|---|--------|------:|------|--------|\n");
    for (size_t i = 0; i < g_nrows; i++)
        printf("| %c | %s | %s | %s | %s |\n", g_rows[i].sec, g_rows[i].figure, g_rows[i].value,
               g_rows[i].unit, g_rows[i].detail);
}

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

void bench_print_header(const char *title, const char *cores_note, bool quick, bool any_only,
                        const char *tail)
{
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

    printf("# %s\n\n", title);
    printf("date %s | kernel %s | cpu %s | %ld cores%s | llmlink %s | %s run%s%s\n\n", date,
           un.release, cpu, cores, cores_note, llmlink_version_string(),
           quick ? "quick" : "full", any_only ? " (--only)" : "", tail);
    fflush(stdout);
}

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

int bench_opt_value(int argc, char **argv, int *i, const char *name, const char **val)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    if (*i + 1 >= argc)
        return -1;
    *val = argv[++*i];
    return 1;
}

int bench_parse_only(const char *list, char last, bool only[26])
{
    int named = 0;
    for (const char *p = list; *p; p++) {
        if (*p == ',' || *p == ' ')
            continue;
        char c = (char)tolower((unsigned char)*p);
        if (c < 'a' || c > last) {
            fprintf(stderr, "%s: unknown section '%c'\n", g_conf.name, *p);
            return -1;
        }
        only[c - 'a'] = true;
        named++;
    }
    return named;
}

/* ------------------------------------------------------------------ */
/* Server children                                                     */
/* ------------------------------------------------------------------ */

/* Every live child, so that any exit path can reap it. */
static bench_server_t *g_servers[BENCH_MAX_SERVERS];
static bool g_is_child;

/* Reads one '\n'-terminated line from fd within timeout_ms (-1: forever).
 * Returns its length, 0 on EOF, -1 on error or timeout. */
static int read_line(int fd, char *buf, size_t len, int timeout_ms)
{
    size_t n = 0;
    int64_t deadline = timeout_ms < 0 ? 0 : bench_now_ms() + timeout_ms;
    while (n + 1 < len) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int wait = -1;
        if (timeout_ms >= 0) {
            int64_t left = deadline - bench_now_ms();
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

bool bench_write_all(int fd, const char *s)
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

void bench_child_ready(const bench_child_t *c, uint16_t port)
{
    char line[32];
    snprintf(line, sizeof line, "port %u\n", (unsigned)port);
    bench_write_all(c->rsp_w, line);
}

void bench_child_serve(const bench_child_t *c, bench_request_fn handle, void *state)
{
    char line[512], out[512];
    int64_t give_up = bench_now_ms() + SERVER_MAX_LIFE_MS;
    while (bench_now_ms() < give_up) {
        int n = read_line(c->cmd_r, line, sizeof line, 1000);
        if (n < 0) {
            if (getppid() != c->parent)
                break; /* orphaned (PDEATHSIG should have come first) */
            continue;  /* timeout: poll again */
        }
        if (n == 0 || strcmp(line, "quit") == 0)
            break;
        if (strcmp(line, "rss") == 0)
            snprintf(out, sizeof out, "rss %ld\n", bench_self_rss_kib());
        else if (!handle || !handle(line, out, sizeof out, state))
            snprintf(out, sizeof out, "error unknown request \"%.64s\"\n", line);
        if (!bench_write_all(c->rsp_w, out))
            break;
    }
}

void bench_child_exit(const bench_child_t *c, int status)
{
    bench_write_all(c->rsp_w, "bye\n");
    close(c->cmd_r);
    close(c->rsp_w);
    exit(status);
}

static void server_forget(bench_server_t *s)
{
    for (size_t i = 0; i < BENCH_MAX_SERVERS; i++)
        if (g_servers[i] == s)
            g_servers[i] = NULL;
}

bool bench_server_stop(bench_server_t *s)
{
    if (s->pid <= 0)
        return true;
    bool clean = true;
    if (s->cmd_w >= 0) {
        bench_write_all(s->cmd_w, "quit\n");
        close(s->cmd_w);
        s->cmd_w = -1;
    }
    int status = 0;
    pid_t r = 0;
    for (int i = 0; i < g_conf.server_stop_ms / 10; i++) {
        r = waitpid(s->pid, &status, WNOHANG);
        if (r != 0)
            break;
        bench_sleep_ms(10);
    }
    const char *who = g_conf.server_label;
    if (r == 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &status, 0);
        clean = false;
        bench_progress("%s %" PRIu64 " (pid %d) did not exit within %d s; killed", who,
                       s->cluster_id, (int)s->pid, g_conf.server_stop_ms / 1000);
    } else if (r > 0 && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
        clean = false;
        if (WIFEXITED(status))
            bench_progress("%s %" PRIu64 " (pid %d) exited with status %d", who, s->cluster_id,
                           (int)s->pid, WEXITSTATUS(status));
        else
            bench_progress("%s %" PRIu64 " (pid %d) died of signal %d", who, s->cluster_id,
                           (int)s->pid, WTERMSIG(status));
    }
    if (s->rsp_r >= 0)
        close(s->rsp_r);
    s->rsp_r = -1;
    s->pid = 0;
    server_forget(s);
    return clean;
}

bool bench_server_start(bench_server_t *s, uint64_t cluster_id, bench_child_fn fn,
                        const void *arg, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->cmd_w = s->rsp_r = -1;
    s->cluster_id = cluster_id;
    size_t slot = g_conf.max_servers;
    for (size_t i = 0; i < g_conf.max_servers; i++)
        if (!g_servers[i]) {
            slot = i;
            break;
        }
    if (slot == g_conf.max_servers) {
        snprintf(err, errlen, "more than %zu %s processes", g_conf.max_servers,
                 g_conf.server_label);
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
        g_is_child = true;
        memset(g_servers, 0, sizeof g_servers);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        close_inherited_fds(cmd[0], rsp[1]);
        bench_child_t c = {cmd[0], rsp[1], parent, cluster_id};
        fn(&c, arg);
        _exit(1); /* not reached */
    }
    close(cmd[0]);
    close(rsp[1]);
    s->pid = pid;
    s->cmd_w = cmd[1];
    s->rsp_r = rsp[0];
    g_servers[slot] = s;

    char line[512];
    int n = read_line(s->rsp_r, line, sizeof line, g_conf.server_reply_ms);
    unsigned port = 0;
    if (n > 0 && sscanf(line, "port %u", &port) == 1 && port > 0 && port < 65536) {
        s->port = (uint16_t)port;
        return true;
    }
    snprintf(err, errlen, "%s %" PRIu64 " did not start: %.300s", g_conf.server_label,
             cluster_id, n > 0 ? line : n == 0 ? "it exited" : "no answer");
    bench_server_stop(s);
    return false;
}

bool bench_server_request(bench_server_t *s, const char *req, char *reply, size_t len)
{
    char msg[96];
    snprintf(msg, sizeof msg, "%s\n", req);
    if (s->pid <= 0 || !bench_write_all(s->cmd_w, msg))
        return false;
    return read_line(s->rsp_r, reply, len, g_conf.server_reply_ms) > 0;
}

long bench_server_rss_kib(bench_server_t *s)
{
    char line[512];
    long kib = -1;
    if (!bench_server_request(s, "rss", line, sizeof line) || sscanf(line, "rss %ld", &kib) != 1)
        return -1;
    return kib;
}

void bench_stop_all_servers(void)
{
    if (g_is_child)
        return;
    for (size_t i = 0; i < BENCH_MAX_SERVERS; i++)
        if (g_servers[i])
            bench_server_stop(g_servers[i]);
}

const char *bench_ip(void)
{
    const char *s = getenv("LLMLINK_BENCH_IP");
    return s && *s ? s : LOCALHOST;
}

void bench_server_target(const bench_server_t *s, llmlink_ip_info_t *ip,
                         llmlink_cluster_info_t *ci)
{
    memset(ip, 0, sizeof *ip);
    memset(ci, 0, sizeof *ci);
    ip->ip = bench_ip();
    ip->port = s->port;
    ci->remote_cluster_id = s->cluster_id;
    ci->remote_role = LLMLINK_ROLE_PROMPT;
    ci->remote_ip_infos = ip;
    ci->num_remote_ip_infos = 1;
}

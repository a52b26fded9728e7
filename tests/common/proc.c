/* proc.c - child processes for the multi-process tests (see proc.h). */
#include "proc.h"
#include "proc_agent.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char last_err[512];

int proc_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_err, sizeof last_err, fmt, ap);
    va_end(ap);
    return -1;
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_err, sizeof last_err, fmt, ap);
    va_end(ap);
    return -1;
}

const char *proc_last_error(void)
{
    return last_err;
}

int64_t proc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void proc_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Next to the running binary, as dir/name; NULL if not executable. */
static const char *beside_self(char *path, size_t len, const char *name)
{
    ssize_t n = readlink("/proc/self/exe", path, len - 1);
    if (n <= 0)
        return NULL;
    path[n] = '\0';
    char *slash = strrchr(path, '/');
    if (!slash || (size_t)(slash - path) + 2 + strlen(name) > len)
        return NULL;
    strcpy(slash + 1, name);
    return access(path, X_OK) == 0 ? path : NULL;
}

const char *proc_node_path(void)
{
    static char path[PATH_MAX];
    static bool warned;
    const char *env = getenv("LLMLINK_NODE");
    if (env && *env && access(env, X_OK) == 0)
        return env;
    /* The build names tools after their source (llmlink_node.c); accept
     * both spellings next to the test binary. */
    const char *p = beside_self(path, sizeof path, "llmlink-node");
    if (!p)
        p = beside_self(path, sizeof path, "llmlink_node");
    if (p && env && *env && !warned) {
        warned = true;
        fprintf(stderr, "proc: LLMLINK_NODE=%s is not executable; using %s\n", env, p);
    }
    if (p)
        return p;
    return env && *env ? env : "llmlink-node";
}

bool proc_running(const proc_t *p)
{
    return p->pid > 0 && !p->exited;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* The child's stdin: for a remote one (a socket) EOF is a shutdown. */
static void close_in(proc_t *p)
{
    if (p->remote && p->in_fd >= 0)
        shutdown(p->in_fd, SHUT_WR);
    close_fd(&p->in_fd);
}

static void close_other_fds(void)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3u, ~0u, 0u) == 0)
        return;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 1 << 20)
        max = 1 << 20;
    for (long fd = 3; fd < max; fd++)
        close((int)fd);
}

int proc_spawn(proc_t *p, char *const argv[])
{
    int in[2], out[2];
    memset(p, 0, sizeof *p);
    p->in_fd = p->out_fd = -1;
    snprintf(p->label, sizeof p->label, "%s", argv[0]);
    /* A child that died must not kill us with SIGPIPE when we write to it. */
    signal(SIGPIPE, SIG_IGN);
    if (pipe2(in, O_CLOEXEC) != 0)
        return fail("pipe2: %s", strerror(errno));
    if (pipe2(out, O_CLOEXEC) != 0) {
        int err = errno;
        close(in[0]);
        close(in[1]);
        return fail("pipe2: %s", strerror(err));
    }
    pid_t parent = getpid();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        int err = errno;
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        return fail("fork: %s", strerror(err));
    }
    if (pid == 0) {
        /* Child: only async-signal-safe calls until exec. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(126);
        if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0)
            _exit(126);
        close_other_fds();
        signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(argv[0], argv);
        static const char msg[] = "proc_spawn: exec failed\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    p->pid = pid;
    p->in_fd = in[1];
    p->out_fd = out[0];
    fcntl(p->in_fd, F_SETFL, fcntl(p->in_fd, F_GETFL) | O_NONBLOCK);
    fcntl(p->out_fd, F_SETFL, fcntl(p->out_fd, F_GETFL) | O_NONBLOCK);
    return 0;
}

int proc_node_start(proc_t *p, const char *role, uint64_t cluster_id, const char *listen,
                    const char *const *opts, const char *netns, int timeout_ms)
{
    return proc_node_start_args(p, role, cluster_id, listen, opts, NULL, netns, timeout_ms);
}

static int node_start(proc_t *p, const char *role, uint64_t cluster_id, const char *listen,
                      const char *const *opts, const char *const *extra_args, const char *netns,
                      bool remote, int timeout_ms);

int proc_node_start_args(proc_t *p, const char *role, uint64_t cluster_id, const char *listen,
                         const char *const *opts, const char *const *extra_args,
                         const char *netns, int timeout_ms)
{
    /* The two-guest VM: every P in guest A (proc.h). */
    bool remote = !netns && proc_agent_on() && !strcmp(role, "prompt");
    return node_start(p, role, cluster_id, listen, opts, extra_args, netns, remote, timeout_ms);
}

int proc_node_start_remote(proc_t *p, const char *role, uint64_t cluster_id, const char *listen,
                           const char *const *opts, const char *const *extra_args,
                           int timeout_ms)
{
    if (!proc_agent_on())
        return fail("proc_node_start_remote: no agent (LLMLINK_RDMA_AGENT unset)");
    return node_start(p, role, cluster_id, listen, opts, extra_args, NULL, true, timeout_ms);
}

static int node_start(proc_t *p, const char *role, uint64_t cluster_id, const char *listen,
                      const char *const *opts, const char *const *extra_args, const char *netns,
                      bool remote, int timeout_ms)
{
    char *argv[96];
    char idbuf[32];
    int n = 0;
    snprintf(idbuf, sizeof idbuf, "%llu", (unsigned long long)cluster_id);
    if (netns) {
        argv[n++] = (char *)"/usr/sbin/ip";
        if (access(argv[0], X_OK) != 0)
            argv[0] = (char *)"/sbin/ip";
        argv[n++] = (char *)"netns";
        argv[n++] = (char *)"exec";
        argv[n++] = (char *)netns;
    }
    argv[n++] = (char *)proc_node_path();
    argv[n++] = (char *)"--role";
    argv[n++] = (char *)role;
    argv[n++] = (char *)"--cluster-id";
    argv[n++] = idbuf;
    if (listen) {
        argv[n++] = (char *)"--listen";
        argv[n++] = (char *)listen;
    }
    for (size_t i = 0; extra_args && extra_args[i]; i++) {
        if (n + 2 > (int)(sizeof argv / sizeof argv[0]))
            return fail("proc_node_start: too many arguments");
        argv[n++] = (char *)extra_args[i];
    }
    for (size_t i = 0; opts && opts[i]; i++) {
        if (n + 3 > (int)(sizeof argv / sizeof argv[0]))
            return fail("proc_node_start: too many options");
        argv[n++] = (char *)"--opt";
        argv[n++] = (char *)opts[i];
    }
    argv[n] = NULL;
    if (access(argv[netns ? 4 : 0], X_OK) != 0)
        return fail("proc_node_start: %s is not executable (set LLMLINK_NODE): %s",
                    argv[netns ? 4 : 0], strerror(errno));
    if (remote ? proc_agent_spawn(p, argv, timeout_ms) != 0 : proc_spawn(p, argv) != 0)
        return -1;
    p->cluster_id = cluster_id;
    snprintf(p->label, sizeof p->label, "%s %llu (pid %d%s)", role, (unsigned long long)cluster_id,
             (int)p->pid, remote ? " in guest A" : "");
    char line[PROC_LINE_MAX];
    if (proc_read_line(p, line, sizeof line, timeout_ms) != 0)
        return fail("%s: no READY line: %s", p->label, proc_last_error());
    unsigned port;
    if (sscanf(line, "READY port=%u", &port) != 1 || port > 65535)
        return fail("%s: expected READY, got \"%s\"", p->label, line);
    p->port = (uint16_t)port;
    return 0;
}

static int write_line(proc_t *p, int timeout_ms, const char *buf, int n);

static int vsend(proc_t *p, int timeout_ms, const char *fmt, va_list ap)
{
    char small[PROC_LINE_MAX + 1];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small - 1, fmt, ap);
    if (n >= 0 && n < (int)sizeof small - 1) {
        va_end(ap2);
        small[n++] = '\n';
        return write_line(p, timeout_ms, small, n);
    }
    /* A long command (block lists): up to PROC_CMD_MAX on the heap. */
    if (n < 0 || n >= PROC_CMD_MAX) {
        va_end(ap2);
        return fail("%s: command too long (%d bytes, at most %d)", p->label, n, PROC_CMD_MAX - 1);
    }
    char *big = malloc((size_t)n + 2);
    if (!big) {
        va_end(ap2);
        return fail("%s: out of memory for a %d-byte command", p->label, n);
    }
    vsnprintf(big, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    big[n++] = '\n';
    int r = write_line(p, timeout_ms, big, n);
    free(big);
    return r;
}

static int write_line(proc_t *p, int timeout_ms, const char *buf, int n)
{
    if (p->in_fd < 0)
        return fail("%s: stdin already closed", p->label);
    int64_t deadline = proc_now_ms() + timeout_ms;
    size_t off = 0;
    while (off < (size_t)n) {
        ssize_t w = write(p->in_fd, buf + off, (size_t)n - off);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno != EAGAIN)
            return fail("%s: write: %s", p->label, strerror(errno));
        int64_t left = deadline - proc_now_ms();
        if (left <= 0)
            return fail("%s: stdin full for %d ms", p->label, timeout_ms);
        struct pollfd pfd = {.fd = p->in_fd, .events = POLLOUT};
        poll(&pfd, 1, (int)left);
    }
    return 0;
}

int proc_send(proc_t *p, int timeout_ms, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vsend(p, timeout_ms, fmt, ap);
    va_end(ap);
    return r;
}

int proc_read_line(proc_t *p, char *line, size_t len, int timeout_ms)
{
    int64_t deadline = proc_now_ms() + timeout_ms;
    for (;;) {
        char *nl = memchr(p->rbuf, '\n', p->rlen);
        if (nl) {
            size_t l = (size_t)(nl - p->rbuf);
            if (len) {
                size_t c = l < len - 1 ? l : len - 1;
                memcpy(line, p->rbuf, c);
                line[c] = '\0';
            }
            memmove(p->rbuf, nl + 1, p->rlen - l - 1);
            p->rlen -= l + 1;
            return 0;
        }
        if (p->rlen == sizeof p->rbuf)
            return fail("%s: reply line longer than %zu bytes", p->label, sizeof p->rbuf);
        if (p->out_fd < 0)
            return fail("%s: stdout closed", p->label);
        ssize_t r = read(p->out_fd, p->rbuf + p->rlen, sizeof p->rbuf - p->rlen);
        if (r > 0) {
            p->rlen += (size_t)r;
            continue;
        }
        if (r == 0)
            return fail("%s: EOF on stdout (the process exited?)", p->label);
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            return fail("%s: read: %s", p->label, strerror(errno));
        int64_t left = deadline - proc_now_ms();
        if (left <= 0)
            return fail("%s: no reply line within %d ms", p->label, timeout_ms);
        struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
        poll(&pfd, 1, (int)left);
    }
}

int proc_cmd(proc_t *p, char *reply, size_t len, int timeout_ms, const char *fmt, ...)
{
    int64_t start = proc_now_ms();
    va_list ap;
    va_start(ap, fmt);
    int r = vsend(p, timeout_ms, fmt, ap);
    va_end(ap);
    if (r != 0)
        return r;
    int64_t left = timeout_ms - (proc_now_ms() - start);
    return proc_read_line(p, reply, len, left > 0 ? (int)left : 0);
}

/* 0 once /proc/<pid>/stat shows the process stopped ('T'), -1 after
 * timeout_ms. */
static int wait_stopped(pid_t pid, int timeout_ms)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int64_t deadline = proc_now_ms() + timeout_ms;
    for (;;) {
        char buf[512];
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f)
            fclose(f);
        buf[n] = '\0';
        /* "pid (comm) S ...": comm may hold ')' and spaces, so take the last ')'. */
        const char *rp = strrchr(buf, ')');
        if (rp && rp[1] == ' ' && (rp[2] == 'T' || rp[2] == 't'))
            return 0;
        if (proc_now_ms() >= deadline)
            return -1;
        proc_sleep_ms(1);
    }
}

int proc_kill(proc_t *p, int sig)
{
    if (!proc_running(p))
        return fail("%s: not running", p->label);
    if (p->remote) {
        /* The agent answers a SIGSTOP once the process is stopped. */
        if (proc_agent_kill(p, sig) != 0)
            return -1;
    } else if (kill(p->pid, sig) != 0) {
        return fail("%s: kill(%d): %s", p->label, sig, strerror(errno));
    }
    if (sig == SIGSTOP && p->remote) {
        p->stopped = true;
    } else if (sig == SIGSTOP) {
        /* kill() only queues the signal: a loaded machine may let the
         * target run (and answer a peer) for a while after it returns.
         * Tests mean "frozen from now on", so wait until it is. */
        if (wait_stopped(p->pid, 2000) != 0)
            return fail("%s: not stopped 2000 ms after SIGSTOP", p->label);
        p->stopped = true;
    } else if (sig == SIGCONT || sig == SIGKILL) {
        p->stopped = false;
    }
    return 0;
}

int proc_wait(proc_t *p, int timeout_ms)
{
    if (p->pid <= 0)
        return fail("proc_wait: no process");
    if (p->exited)
        return 0;
    if (p->remote)
        return proc_agent_wait(p, timeout_ms);
    int64_t deadline = proc_now_ms() + timeout_ms;
    int sleep_ms = 1;
    for (;;) {
        int st;
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            p->status = st;
            p->exited = true;
            p->stopped = false;
            return 0;
        }
        if (r < 0 && errno != EINTR)
            return fail("%s: waitpid: %s", p->label, strerror(errno));
        if (proc_now_ms() >= deadline)
            return fail("%s: still running after %d ms", p->label, timeout_ms);
        proc_sleep_ms(sleep_ms);
        if (sleep_ms < 20)
            sleep_ms *= 2;
    }
}

int proc_stop(proc_t *p, int timeout_ms)
{
    if (p->pid <= 0)
        return 0;
    if (!p->exited) {
        if (p->stopped)
            proc_kill(p, SIGCONT);
        close_in(p);
        if (proc_wait(p, timeout_ms) != 0) {
            char why[sizeof last_err];
            memcpy(why, last_err, sizeof why);
            proc_reap(p);
            return fail("%.400s (killed)", why);
        }
    }
    close_fd(&p->in_fd);
    close_fd(&p->out_fd);
    if (!WIFEXITED(p->status) || WEXITSTATUS(p->status) != 0) {
        if (WIFSIGNALED(p->status))
            return fail("%s: killed by signal %d", p->label, WTERMSIG(p->status));
        return fail("%s: exit status %d", p->label, WEXITSTATUS(p->status));
    }
    return 0;
}

void proc_reap(proc_t *p)
{
    if (p->pid > 0 && !p->exited && p->remote) {
        proc_agent_kill(p, SIGCONT);
        proc_agent_kill(p, SIGKILL);
        if (proc_wait(p, 10000) != 0)
            fprintf(stderr, "proc_reap: %s\n", proc_last_error());
    } else if (p->pid > 0 && !p->exited) {
        kill(p->pid, SIGCONT);
        kill(p->pid, SIGKILL);
        if (proc_wait(p, 10000) != 0)
            fprintf(stderr, "proc_reap: %s\n", proc_last_error());
    }
    close_fd(&p->in_fd);
    close_fd(&p->out_fd);
    p->stopped = false;
}

/* Sends cmd and scans its reply with fmt: 0 when all `fields` were read. */
static int node_scan(proc_t *p, int timeout_ms, const char *cmd, const char *what, int fields,
                     const char *fmt, ...) __attribute__((format(scanf, 6, 7)));
static int node_scan(proc_t *p, int timeout_ms, const char *cmd, const char *what, int fields,
                     const char *fmt, ...)
{
    char line[PROC_LINE_MAX];
    if (proc_cmd(p, line, sizeof line, timeout_ms, "%s", cmd) != 0)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    int n = vsscanf(line, fmt, ap);
    va_end(ap);
    if (n != fields)
        return fail("%s: bad %s line \"%s\"", p->label, what, line);
    return 0;
}

int proc_node_stats(proc_t *p, proc_stats_t *s, int timeout_ms)
{
    memset(s, 0, sizeof *s);
    return node_scan(p, timeout_ms, "stats", "STATS", 11,
                     "STATS links=%u in=%u out=%u hs_now=%u hs_peak=%u accepted=%llu "
                     "completed=%llu rejected=%llu timed_out=%llu proto_err=%llu lost=%llu",
                     &s->links, &s->in, &s->out, &s->hs_now, &s->hs_peak, &s->accepted,
                     &s->completed, &s->rejected, &s->timed_out, &s->proto_err, &s->lost);
}

uint16_t proc_unused_port(const char *ip)
{
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        len = sizeof *s4;
    } else if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        len = sizeof *s6;
    } else {
        fail("proc_unused_port: bad ip %s", ip);
        return 0;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fail("socket: %s", strerror(errno));
        return 0;
    }
    uint16_t port = 0;
    if (bind(fd, (struct sockaddr *)&ss, len) == 0 &&
        getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
        port = ntohs(ss.ss_family == AF_INET ? s4->sin_port : s6->sin6_port);
    else
        fail("bind %s:0: %s", ip, strerror(errno));
    close(fd);
    return port;
}

long proc_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = rl;
        want.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &want) != 0) {
            /* An "unlimited" hard limit cannot be set verbatim; try nr_open. */
            want.rlim_cur = 1 << 20;
            if (setrlimit(RLIMIT_NOFILE, &want) != 0)
                want.rlim_cur = rl.rlim_cur;
        }
        rl.rlim_cur = want.rlim_cur;
    }
    return (long)rl.rlim_cur;
}

int proc_node_xstats(proc_t *p, proc_xstats_t *s, int timeout_ms)
{
    memset(s, 0, sizeof *s);
    return node_scan(p, timeout_ms, "xstats", "XSTATS", 12,
                     "XSTATS caches=%u transfers=%llu failed=%llu timed_out=%llu bytes_req=%llu "
                     "bytes_served=%llu served=%llu refused=%llu tcp=%llu shm=%llu "
                     "shm_fallbacks=%llu rdma=%llu",
                     &s->caches, &s->transfers, &s->failed, &s->timed_out, &s->bytes_req,
                     &s->bytes_served, &s->served, &s->refused, &s->tcp, &s->shm,
                     &s->shm_fallbacks, &s->rdma);
}

/* ---- what the multi-process tests share ---------------------------------- */

const char *proc_test_ip(void)
{
    const char *s = getenv("LLMLINK_TEST_IP");
    return s && *s ? s : "127.0.0.1";
}

bool proc_sanitized(void)
{
    const char *s = getenv("LLMLINK_SANITIZER");
    return s && *s;
}

proc_t *proc_node_add(proc_t *procs, size_t *n, size_t max, const char *role,
                      uint64_t cluster_id, const char *listen, const char *const *opts,
                      const char *const *extra_args, const char *netns, int timeout_ms)
{
    if (*n >= max) {
        fail("starting %s %llu: all %zu process slots of the test are taken", role,
             (unsigned long long)cluster_id, max);
        return NULL;
    }
    proc_t *p = &procs[(*n)++];
    if (proc_node_start_args(p, role, cluster_id, listen, opts, extra_args, netns,
                             timeout_ms) != 0) {
        char why[sizeof last_err];
        memcpy(why, last_err, sizeof why);
        fail("starting %s %llu: %.400s", role, (unsigned long long)cluster_id, why);
        return NULL;
    }
    return p;
}

int proc_stop_all(proc_t *procs, size_t n, int timeout_ms)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        proc_t *p = &procs[i];
        if (!proc_running(p))
            continue;
        if (p->stopped)
            proc_kill(p, SIGCONT);
        close_in(p);
    }
    for (size_t i = 0; i < n; i++) {
        proc_t *p = &procs[i];
        if (proc_running(p) && proc_stop(p, timeout_ms) != 0) {
            fprintf(stderr, "teardown: %s did not quit cleanly: %s\n", p->label,
                    proc_last_error());
            rc = -1;
        }
        proc_reap(p);
    }
    return rc;
}

const char *proc_endpoint(const proc_t *p)
{
    static _Thread_local char ring[8][64];
    static _Thread_local unsigned next;
    char *b = ring[next++ % 8];
    snprintf(b, sizeof ring[0], "%llu@%s:%u", (unsigned long long)p->cluster_id, proc_test_ip(),
             (unsigned)p->port);
    return b;
}

/* The command of fmt, on the heap (the caller frees it); NULL on failure. */
static char *format_cmd(proc_t *p, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0 || n >= PROC_CMD_MAX) {
        fail("%s: command too long (%d bytes, at most %d)", p->label, n, PROC_CMD_MAX - 1);
        return NULL;
    }
    char *c = malloc((size_t)n + 1);
    if (!c) {
        fail("%s: out of memory for a %d-byte command", p->label, n);
        return NULL;
    }
    vsnprintf(c, (size_t)n + 1, fmt, ap);
    return c;
}

/* proc_vreply that also hands the command back (the caller frees *cmd). */
static const char *reply_to(proc_t *p, int timeout_ms, char **cmd, const char *fmt, va_list ap)
{
    static _Thread_local char ring[8][PROC_LINE_MAX];
    static _Thread_local unsigned next;
    char *out = ring[next++ % 8];
    *cmd = format_cmd(p, fmt, ap);
    if (!*cmd)
        return NULL;
    if (proc_cmd(p, out, PROC_LINE_MAX, timeout_ms, "%s", *cmd) != 0) {
        char why[sizeof last_err];
        memcpy(why, last_err, sizeof why);
        fail("%s: '%.160s': %.300s", p->label, *cmd, why);
        return NULL;
    }
    return out;
}

const char *proc_vreply(proc_t *p, int timeout_ms, const char *fmt, va_list ap)
{
    char *cmd = NULL;
    const char *got = reply_to(p, timeout_ms, &cmd, fmt, ap);
    free(cmd);
    return got;
}

const char *proc_reply(proc_t *p, int timeout_ms, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *got = proc_vreply(p, timeout_ms, fmt, ap);
    va_end(ap);
    return got;
}

int64_t proc_expect(proc_t *p, int timeout_ms, const char *want, const char *fmt, ...)
{
    char *cmd = NULL;
    int64_t t0 = proc_now_ms();
    va_list ap;
    va_start(ap, fmt);
    const char *got = reply_to(p, timeout_ms, &cmd, fmt, ap);
    va_end(ap);
    int64_t ms = proc_now_ms() - t0;
    if (got && strcmp(got, want) != 0) {
        fail("%s: '%.160s' answered '%.400s' after %lld ms; expected '%.200s'", p->label, cmd,
             got, (long long)ms, want);
        got = NULL;
    }
    free(cmd);
    return got ? ms : -1;
}

int64_t proc_wait_check(proc_t *p, uint64_t remote, const char *want, int64_t since_ms,
                        int max_ms, int timeout_ms)
{
    char wanted[128];
    snprintf(wanted, sizeof wanted, "CHECK %s", want);
    for (int round = 0; round < 10000; round++) {
        const char *got = proc_reply(p, timeout_ms, "check %llu", (unsigned long long)remote);
        if (!got)
            return -1;
        int64_t ms = proc_now_ms() - since_ms;
        if (!strcmp(got, wanted))
            return ms;
        if (ms > max_ms) {
            fail("%s: check %llu still '%.200s' after %lld ms (expected '%s' within %d ms)",
                 p->label, (unsigned long long)remote, got, (long long)ms, wanted, max_ms);
            return -1;
        }
        proc_sleep_ms(50);
    }
    fail("%s: wait_check: too many rounds", p->label);
    return -1;
}

/*
 * vm_agent.c - llmlink-vm-agent: the remote-process agent of the two-guest
 * soft-RoCE VM (ci/rdma-vm.sh --two-guest). Test-only: guest A's /init
 * starts it, it exists only inside the VM, and the programs in guest B use
 * it (tests/common/proc.c) to run P nodes and shell commands in guest A.
 *
 * Usage: llmlink-vm-agent ADDR PORT LIFETIME_SECS
 *        llmlink-vm-agent --call ADDR:PORT TIMEOUT_SECS REQUEST-LINE
 * The second form is the shell's client (guest B's /init): sends the line,
 * then relays its stdin to the connection (EOF: a shutdown of the write
 * side) and the answer to its stdout until the agent closes; exits 1 when
 * it cannot connect or TIMEOUT_SECS pass, else 0 (for SH: the RC's value).
 *
 * One TCP connection per request; its first line (read within 10 s) is:
 *   EXEC <argv0> <arg>...   -> "PID <n>\n", then the connection IS the
 *                              child's stdin and stdout; its stderr goes to
 *                              the agent's stderr (A's console), each line
 *                              prefixed "[pid n] ". Closing the connection
 *                              does not kill the child: it sees EOF.
 *   KILL <pid> <signal>     -> "OK\n" or "ERR <why>\n" (SIGSTOP: OK once
 *                              the child is stopped, within 2 s)
 *   WAIT <pid> <timeout ms> -> "EXIT <status>" / "SIGNAL <n>" / "TIMEOUT"
 *   SH <command line>       -> the command's stdout+stderr, then
 *                              "RC <n>\n" (killed after 60 s: RC 137)
 * KILL and WAIT accept only pids the agent started (never init nor itself).
 * Everything is bounded: the whole agent exits after LIFETIME_SECS (it
 * never outlives the VM's own run), each request's first line has 10 s,
 * a WAIT at most 10 minutes, a SH command 60 s.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_ 8192
#define MAX_ARGS 128
#define MAX_CHILDREN 1024
#define SH_LIMIT_MS 60000
#define WAIT_LIMIT_MS 600000

/* The children the agent started, and the status of those it reaped (a
 * second WAIT answers the same). */
static struct child {
    pid_t pid;
    bool reaped;
    int status;
} children[MAX_CHILDREN];
static size_t nchildren;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void reply(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(int fd, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof buf)
        n = sizeof buf - 1;
    for (int off = 0; off < n;) {
        ssize_t w = send(fd, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
        if (w <= 0 && errno != EINTR)
            return;
        if (w > 0)
            off += (int)w;
    }
}

static struct child *find_child(pid_t pid)
{
    for (size_t i = 0; i < nchildren; i++)
        if (children[i].pid == pid)
            return &children[i];
    return NULL;
}

static bool add_child(pid_t pid)
{
    pthread_mutex_lock(&mu);
    bool ok = nchildren < MAX_CHILDREN;
    if (ok)
        children[nchildren++] = (struct child){.pid = pid};
    pthread_mutex_unlock(&mu);
    return ok;
}

/* Reads the first line (without '\n') within 10 s; -1 on failure. Only the
 * line is consumed: for EXEC what follows belongs to the child. */
static int read_first_line(int fd, char *line, size_t cap)
{
    size_t n = 0;
    int64_t deadline = now_ms() + 10000;
    while (n + 1 < cap) {
        int left = (int)(deadline - now_ms());
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, left) <= 0)
            return -1;
        char c;
        ssize_t r = recv(fd, &c, 1, 0); /* byte by byte: nothing past the line */
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        if (c == '\n') {
            line[n] = '\0';
            return 0;
        }
        line[n++] = c;
    }
    return -1;
}

static void close_from(int lowfd)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)lowfd, ~0u, 0u) == 0)
        return;
#endif
    for (int fd = lowfd; fd < 4096; fd++)
        close(fd);
}

/* stderr relay of one EXEC child: each line to our stderr, "[pid n] " first. */
struct relay {
    int fd;
    pid_t pid;
};

static void *relay_main(void *arg)
{
    struct relay r = *(struct relay *)arg;
    free(arg);
    FILE *in = fdopen(r.fd, "r");
    if (!in) {
        close(r.fd);
        return NULL;
    }
    char line[LINE_MAX_];
    while (fgets(line, sizeof line, in))
        fprintf(stderr, "[pid %d] %s%s", (int)r.pid, line,
                strchr(line, '\n') ? "" : "\n");
    fclose(in);
    return NULL;
}

/* The decimal of v into buf (async-signal-safe); its length. */
static int fmt_pid_line(char *buf, long v)
{
    char tmp[24];
    int n = 0, len = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) > 0);
    memcpy(buf, "PID ", 4);
    len = 4;
    while (n > 0)
        buf[len++] = tmp[--n];
    buf[len++] = '\n';
    return len;
}

static void do_exec(int fd, char *args)
{
    char *argv[MAX_ARGS + 1];
    int n = 0;
    char *save = NULL;
    for (char *a = strtok_r(args, " ", &save); a; a = strtok_r(NULL, " ", &save)) {
        if (n == MAX_ARGS) {
            reply(fd, "ERR more than %d arguments\n", MAX_ARGS);
            return;
        }
        argv[n++] = a;
    }
    argv[n] = NULL;
    if (n == 0 || argv[0][0] != '/') {
        reply(fd, "ERR EXEC needs an absolute program path\n");
        return;
    }
    if (access(argv[0], X_OK) != 0) {
        reply(fd, "ERR %s: %s\n", argv[0], strerror(errno));
        return;
    }
    int err[2];
    if (pipe2(err, O_CLOEXEC) != 0) {
        reply(fd, "ERR pipe: %s\n", strerror(errno));
        return;
    }
    pid_t pid = fork();
    if (pid < 0) {
        reply(fd, "ERR fork: %s\n", strerror(errno));
        close(err[0]);
        close(err[1]);
        return;
    }
    if (pid == 0) {
        /* Child: async-signal-safe only. Its PID line goes out first, so
         * that nothing it prints can come before it. */
        char pl[32];
        int len = fmt_pid_line(pl, (long)getpid());
        if (write(fd, pl, (size_t)len) != len)
            _exit(126);
        if (dup2(fd, 0) < 0 || dup2(fd, 1) < 0 || dup2(err[1], 2) < 0)
            _exit(126);
        close_from(3);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        execv(argv[0], argv);
        _exit(127);
    }
    close(err[1]);
    if (!add_child(pid)) {
        fprintf(stderr, "vm-agent: more than %d children: pid %d not tracked\n", MAX_CHILDREN,
                (int)pid);
    }
    struct relay *r = malloc(sizeof *r);
    pthread_t th;
    if (r) {
        r->fd = err[0];
        r->pid = pid;
        if (pthread_create(&th, NULL, relay_main, r) == 0) {
            pthread_detach(th);
            return;
        }
        free(r);
    }
    close(err[0]); /* the child's stderr then fails (EPIPE): its output is lost */
}

/* Reaps pid if it ended (WNOHANG); records the status. Under mu. */
static bool try_reap(struct child *c)
{
    if (c->reaped)
        return true;
    int st;
    pid_t r = waitpid(c->pid, &st, WNOHANG);
    if (r == c->pid) {
        c->reaped = true;
        c->status = st;
    }
    return c->reaped;
}

static bool is_stopped(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' && (rp[2] == 'T' || rp[2] == 't');
}

static void do_kill(int fd, const char *args)
{
    int pid, sig;
    if (sscanf(args, "%d %d", &pid, &sig) != 2 || pid <= 1 || sig < 0 || sig > 64) {
        reply(fd, "ERR usage: KILL <pid> <signal number>\n");
        return;
    }
    pthread_mutex_lock(&mu);
    struct child *c = find_child(pid);
    bool reaped = c && try_reap(c);
    pthread_mutex_unlock(&mu);
    if (!c) {
        reply(fd, "ERR %d is not a child of the agent\n", pid);
        return;
    }
    if (reaped) {
        reply(fd, "ERR %d has exited\n", pid);
        return;
    }
    if (kill(pid, sig) != 0) {
        reply(fd, "ERR kill(%d, %d): %s\n", pid, sig, strerror(errno));
        return;
    }
    if (sig == SIGSTOP) {
        /* kill() only queues it: answer once the child is frozen. */
        int64_t deadline = now_ms() + 2000;
        while (!is_stopped(pid)) {
            if (now_ms() > deadline) {
                reply(fd, "ERR %d not stopped 2000 ms after SIGSTOP\n", pid);
                return;
            }
            sleep_ms(1);
        }
    }
    reply(fd, "OK\n");
}

static void do_wait(int fd, const char *args)
{
    int pid, ms;
    if (sscanf(args, "%d %d", &pid, &ms) != 2 || ms < 0) {
        reply(fd, "ERR usage: WAIT <pid> <timeout ms>\n");
        return;
    }
    if (ms > WAIT_LIMIT_MS)
        ms = WAIT_LIMIT_MS;
    int64_t deadline = now_ms() + ms;
    for (int sleep = 1;; sleep = sleep < 20 ? sleep * 2 : 20) {
        pthread_mutex_lock(&mu);
        struct child *c = find_child(pid);
        bool done = c && try_reap(c);
        int st = c ? c->status : 0;
        pthread_mutex_unlock(&mu);
        if (!c) {
            reply(fd, "ERR %d is not a child of the agent\n", pid);
            return;
        }
        if (done) {
            if (WIFSIGNALED(st))
                reply(fd, "SIGNAL %d\n", WTERMSIG(st));
            else
                reply(fd, "EXIT %d\n", WEXITSTATUS(st));
            return;
        }
        if (now_ms() >= deadline) {
            reply(fd, "TIMEOUT\n");
            return;
        }
        sleep_ms(sleep);
    }
}

static void do_sh(int fd, const char *cmd)
{
    pid_t pid = fork();
    if (pid < 0) {
        reply(fd, "fork: %s\nRC -1\n", strerror(errno));
        return;
    }
    if (pid == 0) {
        setpgid(0, 0); /* its own group: killed whole at the bound */
        int nul = open("/dev/null", O_RDONLY);
        if (nul < 0 || dup2(nul, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(126);
        close_from(3);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    int64_t deadline = now_ms() + SH_LIMIT_MS;
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            break;
        if (now_ms() >= deadline) {
            kill(-pid, SIGKILL);
            waitpid(pid, &st, 0);
            break;
        }
        sleep_ms(5);
    }
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    reply(fd, "RC %d\n", rc);
}

static void *conn_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char line[LINE_MAX_];
    if (read_first_line(fd, line, sizeof line) == 0) {
        if (!strncmp(line, "EXEC ", 5))
            do_exec(fd, line + 5);
        else if (!strncmp(line, "KILL ", 5))
            do_kill(fd, line + 5);
        else if (!strncmp(line, "WAIT ", 5))
            do_wait(fd, line + 5);
        else if (!strncmp(line, "SH ", 3))
            do_sh(fd, line + 3);
        else
            reply(fd, "ERR unknown request (EXEC, KILL, WAIT, SH)\n");
    }
    close(fd);
    return NULL;
}

/* --call: the client of the shell scripts (see the header). */
static int call_main(const char *addr, int secs, const char *line)
{
    char host[64];
    unsigned port;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (sscanf(addr, "%63[0-9.]:%u", host, &port) != 2 || port == 0 || port > 65535 ||
        inet_pton(AF_INET, host, &sa.sin_addr) != 1 || secs <= 0) {
        fprintf(stderr, "vm-agent --call: bad ADDR:PORT %s or TIMEOUT %d\n", addr, secs);
        return 1;
    }
    sa.sin_port = htons((uint16_t)port);
    alarm((unsigned)secs); /* the bound on all of it */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "vm-agent --call %s: %s\n", addr, strerror(errno));
        return 1;
    }
    reply(fd, "%s\n", line);
    bool in_open = true;
    static char buf[65536];
    char last[64] = "";
    size_t lastn = 0;
    for (;;) {
        struct pollfd pfd[2] = {{.fd = fd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
        if (poll(pfd, in_open ? 2 : 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        if (in_open && pfd[1].revents) {
            ssize_t r = read(0, buf, sizeof buf);
            if (r <= 0) {
                in_open = false;
                shutdown(fd, SHUT_WR);
            } else {
                for (ssize_t off = 0; off < r;) {
                    ssize_t w = send(fd, buf + off, (size_t)(r - off), MSG_NOSIGNAL);
                    if (w <= 0)
                        return 1;
                    off += w;
                }
            }
        }
        if (pfd[0].revents) {
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r <= 0)
                break;
            if (write(1, buf, (size_t)r) != r)
                return 1;
            /* Keep the tail, for "RC <n>" at the end. */
            for (ssize_t i = 0; i < r; i++) {
                if (lastn && last[lastn - 1] == '\n')
                    lastn = 0; /* a new line starts */
                if (lastn + 1 < sizeof last)
                    last[lastn++] = buf[i];
            }
            last[lastn] = '\0';
        }
    }
    int rc;
    if (!strncmp(line, "SH ", 3) && sscanf(last, "RC %d", &rc) == 1)
        return rc & 0xff;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "--call"))
        return call_main(argv[2], atoi(argv[3]), argv[4]);
    if (argc != 4) {
        fprintf(stderr, "usage: %s ADDR PORT LIFETIME_SECS\n", argv[0]);
        return 2;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int port = atoi(argv[2]), life = atoi(argv[3]);
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1 || port <= 0 || port > 65535 ||
        life <= 0) {
        fprintf(stderr, "vm-agent: bad ADDR %s, PORT %s or LIFETIME %s\n", argv[1], argv[2],
                argv[3]);
        return 2;
    }
    sa.sin_port = htons((uint16_t)port);
    signal(SIGPIPE, SIG_IGN);
    /* The bound on the whole agent: SIGALRM's default action ends it. */
    alarm((unsigned)life);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (ls < 0 || setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(ls, 64) != 0) {
        fprintf(stderr, "vm-agent: listen on %s:%d: %s\n", argv[1], port, strerror(errno));
        return 1;
    }
    fprintf(stderr, "vm-agent: listening on %s:%d for %d s\n", argv[1], port, life);
    for (;;) {
        int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE)
                continue;
            fprintf(stderr, "vm-agent: accept: %s\n", strerror(errno));
            return 1;
        }
        pthread_t th;
        if (pthread_create(&th, NULL, conn_main, (void *)(intptr_t)fd) != 0) {
            close(fd);
            continue;
        }
        pthread_detach(th);
    }
}

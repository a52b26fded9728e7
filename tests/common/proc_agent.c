/* proc_agent.c - P nodes and shell commands in guest A of the two-guest
 * soft-RoCE VM, through its agent (tests/rdma/vm_agent.c; protocol in its
 * header comment). One TCP connection per request, every step bounded. */
#include "proc_agent.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

bool proc_agent_on(void)
{
    const char *a = getenv("LLMLINK_RDMA_AGENT");
    return a && *a;
}

/* A connected, non-blocking socket to the agent within timeout_ms; -1. */
static int agent_connect(int timeout_ms)
{
    const char *a = getenv("LLMLINK_RDMA_AGENT");
    char host[64];
    unsigned port;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (!a || sscanf(a, "%63[0-9.]:%u", host, &port) != 2 || port == 0 || port > 65535 ||
        inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return proc_fail("LLMLINK_RDMA_AGENT=%s: expected ip:port", a ? a : "(unset)");
    sa.sin_port = htons((uint16_t)port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return proc_fail("socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        return proc_fail("agent %s: connect: %s", a, strerror(err));
    }
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    int err = 0;
    socklen_t len = sizeof err;
    if (poll(&pfd, 1, timeout_ms) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
        err != 0) {
        close(fd);
        return proc_fail("agent %s: no connection within %d ms%s%s", a, timeout_ms,
                         err ? ": " : "", err ? strerror(err) : "");
    }
    return fd;
}

/* Sends all of buf within timeout_ms. */
static int send_all(int fd, const char *buf, size_t n, int timeout_ms)
{
    int64_t deadline = proc_now_ms() + timeout_ms;
    for (size_t off = 0; off < n;) {
        ssize_t w = send(fd, buf + off, n - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return proc_fail("agent: send: %s", strerror(errno));
        int left = (int)(deadline - proc_now_ms());
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        if (left <= 0 || poll(&pfd, 1, left) < 0)
            return proc_fail("agent: send blocked for %d ms", timeout_ms);
    }
    return 0;
}

/* Reads until EOF (or cap-1 bytes) within timeout_ms into buf (NUL-ended);
 * its length, or -1. */
static ssize_t read_all(int fd, char *buf, size_t cap, int timeout_ms)
{
    int64_t deadline = proc_now_ms() + timeout_ms;
    size_t n = 0;
    for (;;) {
        if (n + 1 >= cap)
            break;
        ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r > 0) {
            n += (size_t)r;
            continue;
        }
        if (r == 0)
            break;
        if (errno != EAGAIN && errno != EINTR) {
            buf[n] = '\0';
            return proc_fail("agent: recv: %s", strerror(errno));
        }
        int left = (int)(deadline - proc_now_ms());
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, left) < 0) {
            buf[n] = '\0';
            return proc_fail("agent: no complete answer within %d ms (got '%.200s')", timeout_ms,
                             buf);
        }
    }
    buf[n] = '\0';
    return (ssize_t)n;
}

/* One request whose whole answer (until the agent closes) goes to out. */
static ssize_t agent_call(const char *line, char *out, size_t cap, int timeout_ms)
{
    int64_t t0 = proc_now_ms();
    int fd = agent_connect(timeout_ms);
    if (fd < 0)
        return -1;
    char req[1024];
    int n = snprintf(req, sizeof req, "%s\n", line);
    ssize_t r = -1;
    if (n > 0 && (size_t)n < sizeof req && send_all(fd, req, (size_t)n, timeout_ms) == 0) {
        int left = timeout_ms - (int)(proc_now_ms() - t0);
        r = read_all(fd, out, cap, left > 0 ? left : 1);
    } else if (n <= 0 || (size_t)n >= sizeof req) {
        proc_fail("agent: request too long (%d bytes)", n);
    }
    close(fd);
    return r;
}

int proc_agent_spawn(proc_t *p, char *const argv[], int timeout_ms)
{
    memset(p, 0, sizeof *p);
    p->in_fd = p->out_fd = -1;
    snprintf(p->label, sizeof p->label, "%s (guest A)", argv[0]);
    char req[4096];
    size_t n = (size_t)snprintf(req, sizeof req, "EXEC");
    for (size_t i = 0; argv[i]; i++) {
        if (!argv[i][0] || strpbrk(argv[i], " \t\n"))
            return proc_fail("agent EXEC: argument '%s' is empty or has a space", argv[i]);
        int w = snprintf(req + n, sizeof req - n, " %s", argv[i]);
        if (w < 0 || (size_t)w >= sizeof req - n - 1)
            return proc_fail("agent EXEC: command line longer than %zu bytes", sizeof req);
        n += (size_t)w;
    }
    req[n++] = '\n';
    int fd = agent_connect(timeout_ms);
    if (fd < 0)
        return -1;
    if (send_all(fd, req, n, timeout_ms) != 0) {
        close(fd);
        return -1;
    }
    p->in_fd = fd;
    p->out_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (p->out_fd < 0) {
        close(fd);
        p->in_fd = -1;
        return proc_fail("dup: %s", strerror(errno));
    }
    p->remote = true;
    char line[PROC_LINE_MAX] = "";
    int pid;
    if (proc_read_line(p, line, sizeof line, timeout_ms) != 0 || sscanf(line, "PID %d", &pid) != 1 ||
        pid <= 1) {
        char why[300];
        snprintf(why, sizeof why, "%s", proc_last_error());
        close(p->in_fd);
        close(p->out_fd);
        p->in_fd = p->out_fd = -1;
        return proc_fail("agent EXEC %s: %s", argv[0], strncmp(line, "ERR", 3) ? why : line);
    }
    p->pid = pid;
    return 0;
}

int proc_agent_kill(proc_t *p, int sig)
{
    char req[64], out[512];
    snprintf(req, sizeof req, "KILL %d %d", (int)p->pid, sig);
    if (agent_call(req, out, sizeof out, 5000) < 0)
        return proc_fail("%s: %s", p->label, proc_last_error());
    if (strcmp(out, "OK\n") != 0)
        return proc_fail("%s: agent KILL %d: %.300s", p->label, sig, out);
    return 0;
}

int proc_agent_wait(proc_t *p, int timeout_ms)
{
    char req[64], out[512];
    snprintf(req, sizeof req, "WAIT %d %d", (int)p->pid, timeout_ms);
    if (agent_call(req, out, sizeof out, timeout_ms + 5000) < 0)
        return proc_fail("%s: %s", p->label, proc_last_error());
    int v;
    if (sscanf(out, "EXIT %d", &v) == 1 && v >= 0 && v < 256) {
        p->status = v << 8; /* as waitpid's: WIFEXITED, WEXITSTATUS */
    } else if (sscanf(out, "SIGNAL %d", &v) == 1 && v > 0 && v < 128) {
        p->status = v; /* WIFSIGNALED, WTERMSIG */
    } else if (!strcmp(out, "TIMEOUT\n")) {
        return proc_fail("%s: still running after %d ms", p->label, timeout_ms);
    } else {
        return proc_fail("%s: agent WAIT: %.300s", p->label, out);
    }
    p->exited = true;
    p->stopped = false;
    return 0;
}

int proc_agent_sh(const char *cmd, char *out, size_t cap, int timeout_ms)
{
    if (strchr(cmd, '\n'))
        return proc_fail("proc_agent_sh: a newline in the command");
    size_t bufcap = 64 * 1024;
    if (out && cap)
        out[0] = '\0';
    char *buf = malloc(bufcap);
    if (!buf)
        return proc_fail("proc_agent_sh: out of memory");
    char req[1024];
    snprintf(req, sizeof req, "SH %s", cmd);
    int rc = -1;
    if (strlen(cmd) + 4 >= sizeof req) {
        proc_fail("proc_agent_sh: command longer than %zu bytes", sizeof req - 5);
    } else if (agent_call(req, buf, bufcap, timeout_ms) >= 0) {
        /* The last line is "RC <n>": everything before it is the output. */
        size_t len = strlen(buf);
        if (len && buf[len - 1] == '\n')
            buf[--len] = '\0';
        char *last = strrchr(buf, '\n');
        char *rcl = last ? last + 1 : buf;
        if (sscanf(rcl, "RC %d", &rc) != 1) {
            rc = -1;
            proc_fail("proc_agent_sh '%.200s': no RC line (got '%.200s')", cmd, rcl);
        }
        *rcl = '\0';
        if (out && cap) {
            snprintf(out, cap, "%s", buf);
        }
    }
    free(buf);
    return rc;
}

/*
 * stats.c - `llmlink stats ADDR` / `llmlink stats --pid PID`: the counters
 * of a running `llmlink serve`, read from its metrics endpoint (serve
 * --metrics ADDR): an HTTP GET of /metrics over a plain socket, then the
 * non-zero samples as a table (--raw: the Prometheus text as served).
 * --pid finds ADDR in that process's command line (/proc/PID/cmdline), so
 * no file or socket is published besides the endpoint itself.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli.h"

static const char usage_text[] =
    "usage: llmlink stats [OPTIONS] IP:PORT\n"
    "       llmlink stats [OPTIONS] --pid PID\n"
    "  Reads the metrics endpoint of a running `llmlink serve --metrics IP:PORT`\n"
    "  and prints its non-zero counters (name, labels, value).\n"
    "  -p, --pid PID             the serve process: its --metrics address is used\n"
    "  -r, --raw                 print the Prometheus text as served\n"
    "  -w, --timeout-ms N        give up after N ms (default 5000)\n"
    "  -h, --help                this text\n";

#define MAX_BODY (16u << 20)

/* The --metrics value in /proc/pid/cmdline of an `llmlink serve`. */
static int addr_of_pid(const char *pidtext, char *out, size_t cap)
{
    uint64_t pid;
    if (!cli_parse_u64(pidtext, &pid) || pid == 0)
        return cli_usage_error("stats", usage_text, "--pid: '%s' is not a process id", pidtext);
    char path[64], buf[8192];
    snprintf(path, sizeof path, "/proc/%llu/cmdline", (unsigned long long)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cli_fail("stats", "--pid %s: %s: %s", pidtext, path, strerror(errno));
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return cli_fail("stats", "--pid %s: cannot read its command line", pidtext);
    buf[n] = '\0';
    bool serve = false;
    const char *prev = "";
    for (char *a = buf; a < buf + n; a += strlen(a) + 1) {
        if (!strcmp(a, "serve"))
            serve = true;
        const char *v = NULL;
        if (!strcmp(prev, "--metrics") || !strcmp(prev, "-m"))
            v = a;
        else if (!strncmp(a, "--metrics=", 10))
            v = a + 10;
        if (v && serve) {
            snprintf(out, cap, "%s", v);
            if (strlen(v) > 2 && !strcmp(v + strlen(v) - 2, ":0"))
                return cli_fail("stats", "--pid %s: serve was started with --metrics %s (a port "
                                "the kernel chose): use `llmlink stats ADDR` with the port it "
                                "printed", pidtext, v);
            return CLI_OK;
        }
        prev = a;
    }
    return cli_fail("stats", "--pid %s: not an `llmlink serve --metrics ADDR` process", pidtext);
}

static int wait_fd(int fd, short ev, int ms)
{
    struct pollfd p = {.fd = fd, .events = ev};
    int r = poll(&p, 1, ms);
    return r == 1 ? 0 : -1;
}

/* GET /metrics from ip:port within timeout_ms; *body malloc'd. */
static int fetch(const char *ip, uint16_t port, int timeout_ms, char **body)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        len = sizeof *a4;
    } else {
        inet_pton(AF_INET6, ip, &a6->sin6_addr);
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        len = sizeof *a6;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return cli_fail("stats", "socket: %s", strerror(errno));
    int rc = CLI_FAIL;
    char *buf = NULL;
    if (connect(fd, (struct sockaddr *)&ss, len) != 0 && errno != EINPROGRESS) {
        cli_fail("stats", "cannot connect to %s port %u: %s (is `llmlink serve --metrics` "
                 "running there?)", ip, port, strerror(errno));
        goto out;
    }
    int err = 0;
    socklen_t elen = sizeof err;
    if (wait_fd(fd, POLLOUT, timeout_ms) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err) {
        cli_fail("stats", "cannot connect to %s port %u: %s (is `llmlink serve --metrics` "
                 "running there?)", ip, port, err ? strerror(err) : "timed out");
        goto out;
    }
    char req[256];
    int n = snprintf(req, sizeof req, "GET /metrics HTTP/1.0\r\nHost: %s\r\nAccept: text/plain\r\n"
                     "Connection: close\r\n\r\n", ip);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        cli_fail("stats", "sending the request to %s port %u failed", ip, port);
        goto out;
    }
    buf = malloc(MAX_BODY + 1);
    size_t got = 0;
    while (buf && got < MAX_BODY) {
        if (wait_fd(fd, POLLIN, timeout_ms) != 0) {
            cli_fail("stats", "%s port %u did not answer within %d ms", ip, port, timeout_ms);
            goto out;
        }
        ssize_t r = recv(fd, buf + got, MAX_BODY - got, 0);
        if (r == 0)
            break;
        if (r < 0 && errno != EAGAIN && errno != EINTR) {
            cli_fail("stats", "reading from %s port %u: %s", ip, port, strerror(errno));
            goto out;
        }
        if (r > 0)
            got += (size_t)r;
    }
    if (!buf) {
        cli_fail("stats", "out of memory");
        goto out;
    }
    buf[got] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (strncmp(buf, "HTTP/1.", 7) || !sep || strncmp(buf + 8, " 200", 4)) {
        char *eol = strpbrk(buf, "\r\n");
        if (eol)
            *eol = '\0';
        cli_fail("stats", "%s port %u answered '%.80s', not 200 with metrics", ip, port, buf);
        goto out;
    }
    memmove(buf, sep + 4, strlen(sep + 4) + 1);
    *body = buf;
    buf = NULL;
    rc = CLI_OK;
out:
    free(buf);
    close(fd);
    return rc;
}

/* The samples of the text whose value is not 0, aligned. */
static void table(char *body)
{
    char *save = NULL;
    printf("%-100s %s\n", "METRIC", "VALUE");
    for (char *line = strtok_r(body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#' || !line[0])
            continue;
        char *sp = strrchr(line, ' ');
        if (!sp)
            continue;
        *sp = '\0';
        const char *v = sp + 1;
        if (strtod(v, NULL) == 0.0)
            continue;
        printf("%-100s %s\n", line, v);
    }
}

int cli_stats(int argc, char **argv)
{
    static const struct option lo[] = {{"pid", required_argument, NULL, 'p'},
                                       {"raw", no_argument, NULL, 'r'},
                                       {"timeout-ms", required_argument, NULL, 'w'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    const char *pid = NULL;
    bool raw = false;
    uint64_t timeout = 5000;
    int ch;
    optind = 1;
    opterr = 0; /* our message, with the usage */
    while ((ch = getopt_long(argc, argv, "p:rw:h", lo, NULL)) != -1) {
        switch (ch) {
        case 'p':
            pid = optarg;
            break;
        case 'r':
            raw = true;
            break;
        case 'w':
            if (!cli_parse_u64(optarg, &timeout) || !timeout || timeout > 600000)
                return cli_usage_error("stats", usage_text, "--timeout-ms: '%s' is not 1..600000", optarg);
            break;
        case 'h':
            fputs(usage_text, stdout);
            return CLI_OK;
        default:
            return cli_usage_error("stats", usage_text, "bad option '%s'", argv[optind - 1]);
        }
    }
    char addr[128];
    if (pid) {
        if (optind != argc)
            return cli_usage_error("stats", usage_text, "--pid and an address: give one");
        int rc = addr_of_pid(pid, addr, sizeof addr);
        if (rc)
            return rc;
    } else {
        if (argc - optind != 1)
            return cli_usage_error("stats", usage_text, argc - optind ? "one address only"
                                                                      : "no address given");
        const char *a = argv[optind];
        if (!strncmp(a, "http://", 7)) /* the URL serve printed */
            a += 7;
        snprintf(addr, sizeof addr, "%s", a);
        char *slash = strchr(addr, '/');
        if (slash)
            *slash = '\0';
    }
    char ip[64];
    uint16_t port;
    if (!cli_parse_hostport(addr, ip, sizeof ip, &port) || !port)
        return cli_usage_error("stats", usage_text, "'%s' is not IP:PORT", addr);
    char *body = NULL;
    int rc = fetch(ip, port, (int)timeout, &body);
    if (rc)
        return rc;
    if (raw)
        fputs(body, stdout);
    else
        table(body);
    free(body);
    return CLI_OK;
}

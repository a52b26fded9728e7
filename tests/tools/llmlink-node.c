/*
 * llmlink-node - one llmlink engine in its own process, driven by line
 * commands on stdin, for the multi-process integration tests.
 *
 *   llmlink-node --role prompt|decoder|mix --cluster-id N
 *                [--listen ip:port] [--opt key=value]...
 *
 * On start it prints "READY port=<listen port, or 0>" (or "ERR <message>"
 * and exits 1). Then one reply line per command, flushed at once:
 *
 *   link <timeout_ms> <id>@<ip>:<port>[,<ip>:<port>...] ...
 *                         -> LINK <overall status> <per-cluster statuses...>
 *   unlink <timeout_ms> <force 0|1> <id>...
 *                         -> UNLINK <overall status> <per-cluster statuses...>
 *   check <id>            -> CHECK <status>
 *   stats                 -> STATS links=.. in=.. out=.. hs_now=.. hs_peak=..
 *                            accepted=.. completed=.. rejected=.. timed_out=..
 *                            proto_err=.. lost=..
 *   ping                  -> PONG
 *   quit                  -> BYE, then exit 0 after llmlink_destroy
 *
 * Statuses are printed by name (llmlink_status_name). IPv6 addresses are
 * written "[::1]:port". EOF on stdin is quit (without the BYE line). A bad
 * command answers "ERR <message>"; a line longer than LINE_MAX_LEN is
 * discarded with an ERR. On a failed link/unlink/check the library's
 * llmlink_last_error() goes to stderr, so test logs show the reason.
 *
 * Only the public header is used: this is what an application sees.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmlink.h"

#define LINE_MAX_LEN 4096
#define MAX_OPTS 32
#define MAX_ARGS 64

static llmlink_t *g_engine;
static uint64_t g_cluster_id;

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        /* Nobody is listening any more: leave cleanly. */
        llmlink_destroy(g_engine);
        exit(0);
    }
}

static void log_failure(const char *what)
{
    fprintf(stderr, "llmlink-node %" PRIu64 ": %s: %s\n", g_cluster_id, what,
            llmlink_last_error());
}

/* Unsigned decimal, whole string, no sign, no overflow. */
static bool parse_u64(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* Signed decimal in int32 range (non-positive values pass through: the
 * library is the one that must refuse them). */
static bool parse_i32(const char *s, int32_t *out)
{
    if (!s || !*s)
        return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < INT32_MIN || v > INT32_MAX)
        return false;
    *out = (int32_t)v;
    return true;
}

static llmlink_role_t parse_role(const char *s)
{
    if (!s)
        return 0;
    if (!strcmp(s, "prompt"))
        return LLMLINK_ROLE_PROMPT;
    if (!strcmp(s, "decoder"))
        return LLMLINK_ROLE_DECODER;
    if (!strcmp(s, "mix"))
        return LLMLINK_ROLE_MIX;
    return 0;
}

/* "1.2.3.4:5" or "[::1]:5", edited in place: *ip points into text. */
static bool parse_endpoint(char *text, llmlink_ip_info_t *out)
{
    char *port;
    if (text[0] == '[') {
        char *close = strchr(text, ']');
        if (!close || close[1] != ':')
            return false;
        *close = '\0';
        out->ip = text + 1;
        port = close + 2;
    } else {
        char *colon = strrchr(text, ':');
        if (!colon || strchr(text, ':') != colon)
            return false;
        *colon = '\0';
        out->ip = text;
        port = colon + 1;
    }
    uint64_t p;
    if (!*out->ip || !parse_u64(port, &p) || p > 65535)
        return false;
    out->port = (uint16_t)p;
    return true;
}

static void print_statuses(const char *verb, llmlink_status_t overall,
                           const llmlink_status_t *st, size_t n)
{
    char line[LINE_MAX_LEN];
    size_t off = (size_t)snprintf(line, sizeof line, "%s %s", verb, llmlink_status_name(overall));
    for (size_t i = 0; i < n && off < sizeof line; i++)
        off += (size_t)snprintf(line + off, sizeof line - off, " %s",
                                llmlink_status_name(st[i]));
    reply("%s", line);
}

/* link <timeout_ms> <id>@<ep>[,<ep>...] ... */
static void cmd_link(char **argv, int argc)
{
    static llmlink_ip_info_t ips[LLMLINK_MAX_CLUSTERS_PER_CALL][LLMLINK_MAX_IP_INFOS];
    llmlink_cluster_info_t ci[LLMLINK_MAX_CLUSTERS_PER_CALL];
    llmlink_status_t st[LLMLINK_MAX_CLUSTERS_PER_CALL];
    int32_t timeout;
    if (argc < 3 || !parse_i32(argv[1], &timeout)) {
        reply("ERR usage: link <timeout_ms> <id>@<ip>:<port>[,<ip>:<port>...] ...");
        return;
    }
    size_t n = (size_t)(argc - 2);
    if (n > LLMLINK_MAX_CLUSTERS_PER_CALL) {
        reply("ERR link: at most %d clusters per command", LLMLINK_MAX_CLUSTERS_PER_CALL);
        return;
    }
    memset(ci, 0, sizeof ci);
    for (size_t i = 0; i < n; i++) {
        char *spec = argv[2 + i];
        char *at = strchr(spec, '@');
        if (!at) {
            reply("ERR link: '%s' is not <id>@<ip>:<port>", spec);
            return;
        }
        *at = '\0';
        if (!parse_u64(spec, &ci[i].remote_cluster_id)) {
            reply("ERR link: bad cluster id '%s'", spec);
            return;
        }
        size_t k = 0;
        for (char *save = NULL, *ep = strtok_r(at + 1, ",", &save); ep;
             ep = strtok_r(NULL, ",", &save)) {
            if (k == LLMLINK_MAX_IP_INFOS) {
                reply("ERR link: at most %d addresses per cluster", LLMLINK_MAX_IP_INFOS);
                return;
            }
            char shown[80];
            snprintf(shown, sizeof shown, "%s", ep);
            if (!parse_endpoint(ep, &ips[i][k])) {
                reply("ERR link: bad address '%s' (ip:port or [ipv6]:port)", shown);
                return;
            }
            k++;
        }
        if (k == 0) {
            reply("ERR link: cluster %" PRIu64 " has no address", ci[i].remote_cluster_id);
            return;
        }
        ci[i].remote_ip_infos = ips[i];
        ci[i].num_remote_ip_infos = k;
    }
    llmlink_status_t overall = llmlink_link_clusters(g_engine, ci, n, timeout, st);
    if (overall != LLMLINK_SUCCESS)
        log_failure("link");
    print_statuses("LINK", overall, st, n);
}

/* unlink <timeout_ms> <force 0|1> <id>... */
static void cmd_unlink(char **argv, int argc)
{
    llmlink_cluster_info_t ci[LLMLINK_MAX_CLUSTERS_PER_CALL];
    llmlink_status_t st[LLMLINK_MAX_CLUSTERS_PER_CALL];
    int32_t timeout;
    if (argc < 4 || !parse_i32(argv[1], &timeout) ||
        (strcmp(argv[2], "0") != 0 && strcmp(argv[2], "1") != 0)) {
        reply("ERR usage: unlink <timeout_ms> <force 0|1> <id>...");
        return;
    }
    bool force = argv[2][0] == '1';
    size_t n = (size_t)(argc - 3);
    if (n > LLMLINK_MAX_CLUSTERS_PER_CALL) {
        reply("ERR unlink: at most %d clusters per command", LLMLINK_MAX_CLUSTERS_PER_CALL);
        return;
    }
    memset(ci, 0, sizeof ci);
    for (size_t i = 0; i < n; i++) {
        if (!parse_u64(argv[3 + i], &ci[i].remote_cluster_id)) {
            reply("ERR unlink: bad cluster id '%s'", argv[3 + i]);
            return;
        }
    }
    llmlink_status_t overall = llmlink_unlink_clusters(g_engine, ci, n, timeout, force, st);
    if (overall != LLMLINK_SUCCESS)
        log_failure("unlink");
    print_statuses("UNLINK", overall, st, n);
}

static void cmd_check(char **argv, int argc)
{
    uint64_t id;
    if (argc != 2 || !parse_u64(argv[1], &id)) {
        reply("ERR usage: check <id>");
        return;
    }
    reply("CHECK %s", llmlink_status_name(llmlink_check_link_status(g_engine, id)));
}

static void cmd_stats(void)
{
    llmlink_stats_t s;
    memset(&s, 0, sizeof s);
    s.version = LLMLINK_STATS_VERSION;
    llmlink_status_t st = llmlink_get_stats(g_engine, &s);
    if (st != LLMLINK_SUCCESS) {
        reply("ERR stats: %s: %s", llmlink_status_name(st), llmlink_last_error());
        return;
    }
    reply("STATS links=%u in=%u out=%u hs_now=%u hs_peak=%u accepted=%" PRIu64
          " completed=%" PRIu64 " rejected=%" PRIu64 " timed_out=%" PRIu64 " proto_err=%" PRIu64
          " lost=%" PRIu64,
          s.links, s.inbound_links, s.outbound_links, s.handshakes_in_progress,
          s.handshakes_peak, s.handshakes_accepted, s.handshakes_completed,
          s.handshakes_rejected, s.handshakes_timed_out, s.protocol_errors, s.links_lost);
}

/* Returns false on quit. */
static bool handle_line(char *line)
{
    char *argv[MAX_ARGS];
    int argc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(line, " \t\r", &save); tok; tok = strtok_r(NULL, " \t\r", &save)) {
        if (argc == MAX_ARGS) {
            reply("ERR too many arguments (at most %d)", MAX_ARGS);
            return true;
        }
        argv[argc++] = tok;
    }
    if (argc == 0) {
        reply("ERR empty command");
        return true;
    }
    const char *cmd = argv[0];
    if (!strcmp(cmd, "link"))
        cmd_link(argv, argc);
    else if (!strcmp(cmd, "unlink"))
        cmd_unlink(argv, argc);
    else if (!strcmp(cmd, "check"))
        cmd_check(argv, argc);
    else if (!strcmp(cmd, "stats") && argc == 1)
        cmd_stats();
    else if (!strcmp(cmd, "ping") && argc == 1)
        reply("PONG");
    else if (!strcmp(cmd, "quit") && argc == 1)
        return false;
    else
        reply("ERR unknown command '%.64s' (link, unlink, check, stats, ping, quit)", cmd);
    return true;
}

static void usage_exit(const char *why)
{
    printf("ERR %s; usage: llmlink-node --role prompt|decoder|mix --cluster-id N "
           "[--listen ip:port] [--opt key=value]...\n", why);
    fflush(stdout);
    exit(2);
}

int main(int argc, char **argv)
{
    llmlink_option_t opts[MAX_OPTS + 1];
    size_t nopts = 0;
    llmlink_role_t role = 0;
    bool have_id = false;
    const char *listen = NULL;

    /* A reader that went away must not kill us mid-destroy. */
    signal(SIGPIPE, SIG_IGN);

    for (int i = 1; i < argc; i += 2) { /* every flag takes a value */
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--role")) {
            role = parse_role(v);
            if (!role)
                usage_exit("--role needs prompt, decoder or mix");
        } else if (!strcmp(a, "--cluster-id")) {
            if (!parse_u64(v, &g_cluster_id))
                usage_exit("--cluster-id needs an unsigned integer");
            have_id = true;
        } else if (!strcmp(a, "--listen")) {
            if (!v || !*v)
                usage_exit("--listen needs ip:port");
            listen = v;
        } else if (!strcmp(a, "--opt")) {
            char *eq = v ? strchr(v, '=') : NULL;
            if (!eq || eq == v)
                usage_exit("--opt needs key=value");
            if (nopts == MAX_OPTS)
                usage_exit("too many --opt");
            *eq = '\0';
            opts[nopts].key = v;
            opts[nopts].value = eq + 1;
            nopts++;
        } else {
            usage_exit("unknown argument");
        }
    }
    if (!role || !have_id)
        usage_exit("--role and --cluster-id are required");
    if (listen) {
        opts[nopts].key = "llm.listenIpInfo";
        opts[nopts].value = listen;
        nopts++;
    }

    llmlink_status_t st = llmlink_create(&g_engine, role, g_cluster_id);
    if (st == LLMLINK_SUCCESS)
        st = llmlink_init(g_engine, opts, nopts);
    if (st != LLMLINK_SUCCESS) {
        printf("ERR init %s: %s\n", llmlink_status_name(st), llmlink_last_error());
        fflush(stdout);
        llmlink_destroy(g_engine);
        return 1;
    }
    uint16_t port = 0;
    if (listen && role != LLMLINK_ROLE_DECODER &&
        llmlink_get_listen_port(g_engine, 0, &port) != LLMLINK_SUCCESS) {
        printf("ERR get_listen_port: %s\n", llmlink_last_error());
        fflush(stdout);
        llmlink_destroy(g_engine);
        return 1;
    }
    reply("READY port=%u", (unsigned)port);

    static char line[LINE_MAX_LEN + 2];
    bool discarding = false;
    bool bye = false;
    while (fgets(line, sizeof line, stdin)) {
        size_t len = strlen(line);
        bool whole = len > 0 && line[len - 1] == '\n';
        if (discarding) {
            /* Rest of an overlong line. */
            if (whole)
                discarding = false;
            continue;
        }
        if (!whole && len == sizeof line - 1) {
            discarding = true;
            reply("ERR line longer than %d bytes", LINE_MAX_LEN);
            continue;
        }
        if (whole)
            line[--len] = '\0';
        if (!handle_line(line)) {
            bye = true;
            break;
        }
    }
    llmlink_destroy(g_engine);
    g_engine = NULL;
    if (bye)
        reply("BYE");
    return 0;
}

/*
 * bench_common.h - what the benchmarks in bench/ share: clocks, progress
 * lines on stderr, percentiles, VmRSS, the results table, option parsing,
 * the run's header line, and server children.
 *
 * A server child is a fork()ed process that owns one engine (what it
 * creates is the program's: a bench_child_fn), reports its listen port on
 * a pipe ("port N", or "error ..." and exit 1), then answers line requests
 * on another pipe until told to quit:
 *     "rss"   -> "rss <VmRSS in KiB>"          (answered here)
 *     other   -> the program's bench_request_fn, else "error unknown request"
 *     "quit"  -> the child tears down, answers "bye", exits (bench_child_exit)
 * Every child is reaped by bench_stop_all_servers (registered with atexit
 * by bench_init), so no exit path leaves one behind.
 *
 * bench/bench_common.c is linked into every bench program (see the
 * Makefile: it is not a program of its own).
 */
#ifndef LLK_BENCH_COMMON_H
#define LLK_BENCH_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "llmlink.h"

#define LOCALHOST "127.0.0.1"
#define LINK_TIMEOUT_MS 5000
#define UNLINK_TIMEOUT_MS 5000
/* A server child gives up on its own after this long (bounded even if the
 * parent hangs without dying). */
#define SERVER_MAX_LIFE_MS (2LL * 3600 * 1000)
/* Children alive at once, at most (bench_conf_t.max_servers can lower it). */
#define BENCH_MAX_SERVERS 32

/* What differs from one benchmark to the other; given to bench_init. */
typedef struct bench_conf {
    const char *name;         /* "bench_link": starts every progress line */
    bool fail_as_cell;        /* how bench_failed announces a row on stderr:
                               * "<sec> <what>: FAILED: <why>" (true) or
                               * "section <sec>: <what> FAILED: <why>" */
    const char *server_label; /* "server", "P": a child in messages */
    size_t max_servers;       /* children alive at once (<= BENCH_MAX_SERVERS) */
    int server_reply_ms;      /* a request to a child may take this long */
    int server_stop_ms;       /* after "quit", SIGKILL after this long */
} bench_conf_t;

/* Keeps *conf, ignores SIGPIPE, registers bench_stop_all_servers with
 * atexit. Call first in main(). */
void bench_init(const bench_conf_t *conf);

/* ---- small helpers ---------------------------------------------------- */

int64_t bench_now_ns(void); /* CLOCK_MONOTONIC */
int64_t bench_now_ms(void);
void bench_sleep_ms(int ms);

/* "<name>: <fmt>\n" on stderr. */
void bench_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Nearest-rank percentile of v[0..n) (sorts v); 0 when n is 0. */
double bench_percentile(double *v, size_t n, double p);
/* Median of v[0..n) (sorts v; the mean of the middle two when n is even). */
double bench_median(double *v, size_t n);

/* VmRSS of this process in KiB, -1 when /proc cannot tell. */
long bench_self_rss_kib(void);

/* ---- the results table ------------------------------------------------- */

/* Appends a row "| sec | figure | value | unit | detail |" (value from
 * vfmt); a '|' or newline in detail becomes '/'. */
void bench_add_row(char sec, const char *figure, const char *unit, const char *detail,
                   const char *vfmt, ...) __attribute__((format(printf, 5, 6)));
/* A FAILED row (detail from fmt), announced on stderr; the run then exits 1. */
void bench_failed(char sec, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool bench_any_failed(void);
/* The table of every row so far, on stdout. */
void bench_print_table(void);

/* "# <title>", then "date ... | kernel ... | cpu ... | N cores<cores_note> |
 * llmlink X | quick|full run[ (--only)]<tail>", on stdout (flushed). */
void bench_print_header(const char *title, const char *cores_note, bool quick, bool any_only,
                        const char *tail);

/* ---- options ------------------------------------------------------------ */

/* argv[*i] is "--name VALUE" (the next argument, consumed) or
 * "--name=VALUE": 1, with *val set. 0 when argv[*i] is something else; -1
 * when it is "--name" with nothing after it. */
int bench_opt_value(int argc, char **argv, int *i, const char *name, const char **val);

/* Sets only[c - 'a'] for every letter c of a list such as "a,c" or "B d".
 * A letter after `last` is refused ("<name>: unknown section 'x'" on
 * stderr): -1. Else how many letters the list named. */
int bench_parse_only(const char *list, char last, bool only[26]);

/* ---- server children ---------------------------------------------------- */

typedef struct bench_server {
    pid_t pid;
    int cmd_w; /* parent -> child requests */
    int rsp_r; /* child -> parent replies */
    uint16_t port;
    uint64_t cluster_id;
} bench_server_t;

/* The child's side of the pipes. */
typedef struct bench_child {
    int cmd_r, rsp_w;
    pid_t parent;
    uint64_t cluster_id;
} bench_child_t;

/* Runs in the child (only its descriptors and stdio are open): creates its
 * engine, then "port N" (bench_child_ready) and bench_child_serve, then
 * tears down and bench_child_exit; on a failure before "port", writes
 * "error ..." (bench_write_all) and exit(1). It must not return. */
typedef void (*bench_child_fn)(const bench_child_t *c, const void *arg);

/* Answers one request line into out ("...\n"); false: not one of its own. */
typedef bool (*bench_request_fn)(const char *line, char *out, size_t len, void *state);

/* Forks a child for cluster_id that runs fn(arg) and waits for its port.
 * Call only while this process runs no other threads (no live engine):
 * fork copies only the calling thread. false with err when it did not
 * start (the child is then reaped). */
bool bench_server_start(bench_server_t *s, uint64_t cluster_id, bench_child_fn fn,
                        const void *arg, char *err, size_t errlen);
/* "quit", then up to server_stop_ms for the child to exit, then SIGKILL.
 * false when it did not exit with status 0. */
bool bench_server_stop(bench_server_t *s);
/* One request line, one reply line (within server_reply_ms). */
bool bench_server_request(bench_server_t *s, const char *req, char *reply, size_t len);
/* The child's VmRSS in KiB, -1 when it did not answer. */
long bench_server_rss_kib(bench_server_t *s);
/* Stops every child still running (not in a child). */
void bench_stop_all_servers(void);
/* The address P children listen on and D links to: $LLMLINK_BENCH_IP (the
 * RDMA section sets a soft-RoCE netdev's), else LOCALHOST. */
const char *bench_ip(void);
/* What llmlink_link_clusters needs to reach the child's PROMPT engine on
 * bench_ip(): ci->remote_ip_infos points at *ip. */
void bench_server_target(const bench_server_t *s, llmlink_ip_info_t *ip,
                         llmlink_cluster_info_t *ci);

/* In the child. */
bool bench_write_all(int fd, const char *s);
void bench_child_ready(const bench_child_t *c, uint16_t port);
/* Answers requests until "quit", EOF, the parent's death or
 * SERVER_MAX_LIFE_MS: "rss" here, the rest through handle(state). */
void bench_child_serve(const bench_child_t *c, bench_request_fn handle, void *state);
/* "bye", closes the pipes, exit(status) (not _exit: LeakSanitizer checks
 * the child too). */
void bench_child_exit(const bench_child_t *c, int status) __attribute__((noreturn));

#endif /* LLK_BENCH_COMMON_H */

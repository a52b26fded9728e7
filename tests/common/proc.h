/*
 * proc.h - child processes for the multi-process tests: spawn llmlink-node
 * (or any program) with pipes on stdin/stdout, send line commands, read
 * reply lines with a timeout, signal, wait and reap. Every wait is bounded.
 *
 * The node program is $LLMLINK_NODE, or llmlink-node next to the running
 * test binary. Children get PR_SET_PDEATHSIG(SIGKILL), so a test process
 * that dies leaves none behind; proc_reap() is for the normal teardown.
 *
 * Functions that can fail return 0 on success and -1 on failure, with a
 * message in proc_last_error() (thread-local).
 */
#ifndef LLK_TEST_PROC_H
#define LLK_TEST_PROC_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PROC_LINE_MAX 4096
/* Longest command proc_send accepts (reply lines stay within PROC_LINE_MAX). */
#define PROC_CMD_MAX (64 * 1024)

typedef struct proc {
    pid_t pid;    /* 0 once reaped (or never started) */
    int in_fd;    /* child's stdin (we write), -1 when closed */
    int out_fd;   /* child's stdout (we read), -1 when closed */
    int status;   /* waitpid status once reaped */
    bool exited;  /* reaped: status is valid */
    bool stopped; /* SIGSTOPped by proc_kill and not yet continued */
    bool remote;  /* runs in the two-guest VM's guest A, through the agent:
                     pid is A's, in_fd/out_fd the agent's socket */
    uint16_t port;  /* llmlink-node: listen port from the READY line */
    uint64_t cluster_id; /* llmlink-node: its --cluster-id */
    char label[48]; /* for messages, e.g. "prompt 7" */
    size_t rlen;
    char rbuf[PROC_LINE_MAX * 2];
} proc_t;

/* Thread-local text of the last failure ("" if none). */
const char *proc_last_error(void);

/* The llmlink-node path ($LLMLINK_NODE, else <dir of this binary>/llmlink-node). */
const char *proc_node_path(void);

/* Milliseconds of CLOCK_MONOTONIC. */
int64_t proc_now_ms(void);
void proc_sleep_ms(int ms);

/* Starts argv[0] (a path) with argv; stdin/stdout are pipes, stderr is
 * inherited, every other descriptor is closed in the child. */
int proc_spawn(proc_t *p, char *const argv[]);

/*
 * Starts llmlink-node and waits (up to timeout_ms) for its READY line.
 *   role: "prompt", "decoder" or "mix"; listen: "ip:port" or NULL;
 *   opts: NULL-terminated "key=value" strings or NULL;
 *   netns: a network namespace name to run it in (via `ip netns exec`), or NULL.
 */
int proc_node_start(proc_t *p, const char *role, uint64_t cluster_id, const char *listen,
                    const char *const *opts, const char *netns, int timeout_ms);

/* proc_node_start with extra llmlink-node arguments (NULL-terminated, e.g.
 * {"--uid", "65534", NULL}), placed before the --opt ones. */
int proc_node_start_args(proc_t *p, const char *role, uint64_t cluster_id, const char *listen,
                         const char *const *opts, const char *const *extra_args,
                         const char *netns, int timeout_ms);

/*
 * The two-guest soft-RoCE VM (ci/rdma-vm.sh --two-guest): with
 * $LLMLINK_RDMA_AGENT ("ip:port" of tests/rdma/vm_agent.c in guest A) set,
 * proc_node_start / proc_node_start_args start every "prompt" node (without
 * netns) in guest A through the agent's EXEC, and proc_node_start_remote
 * any role. Such a proc_t has remote = true: its stdin/stdout are the
 * agent's socket (EOF = shutdown of its write side), proc_kill / proc_wait /
 * proc_stop / proc_reap go through the agent's KILL and WAIT. The program
 * path is the same in A (the harness stages one image for both guests).
 */
int proc_node_start_remote(proc_t *p, const char *role, uint64_t cluster_id, const char *listen,
                           const char *const *opts, const char *const *extra_args,
                           int timeout_ms);

/* Runs cmd (one line, no '\n') in guest A through the agent's SH; its
 * stdout+stderr into out (NUL-terminated, truncated to cap; out may be NULL).
 * Returns the command's exit status, or -1 (no agent, no answer within
 * timeout_ms: proc_last_error() says why). */
int proc_agent_sh(const char *cmd, char *out, size_t cap, int timeout_ms);

/* Writes one line (fmt, plus '\n'; at most PROC_CMD_MAX bytes), waiting at
 * most timeout_ms for pipe room. */
int proc_send(proc_t *p, int timeout_ms, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Reads one line (without '\n') within timeout_ms. */
int proc_read_line(proc_t *p, char *line, size_t len, int timeout_ms);
/* proc_send then proc_read_line. */
int proc_cmd(proc_t *p, char *reply, size_t len, int timeout_ms, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Sends sig; SIGSTOP/SIGCONT also track p->stopped. */
int proc_kill(proc_t *p, int sig);
/* Waits up to timeout_ms for the child to exit; reaps it (p->status). */
int proc_wait(proc_t *p, int timeout_ms);
/* Closes stdin (a node quits on EOF) and waits up to timeout_ms for a clean
 * exit. 0 when the child exited with status 0. Kills it otherwise. */
int proc_stop(proc_t *p, int timeout_ms);
/* Unconditional cleanup: SIGCONT + SIGKILL if still running, reap (bounded),
 * close the pipes. Safe on a zeroed or already reaped proc_t. */
void proc_reap(proc_t *p);
bool proc_running(const proc_t *p);

/* llmlink-node's STATS line, parsed. */
typedef struct proc_stats {
    unsigned links, in, out, hs_now, hs_peak;
    unsigned long long accepted, completed, rejected, timed_out, proto_err, lost;
} proc_stats_t;

int proc_node_stats(proc_t *p, proc_stats_t *s, int timeout_ms);

/* llmlink-node's XSTATS line (llmlink_get_xfer_stats), parsed. */
typedef struct proc_xstats {
    unsigned caches;
    unsigned long long transfers, failed, timed_out, bytes_req, bytes_served, served, refused,
        tcp, shm, shm_fallbacks;
    unsigned long long rdma; /* requests moved over RDMA (not in the public stats) */
} proc_xstats_t;

int proc_node_xstats(proc_t *p, proc_xstats_t *s, int timeout_ms);

/* The IPv4 address the multi-process tests listen on and link to:
 * $LLMLINK_TEST_IP (the RDMA tests set a soft-RoCE netdev's), else 127.0.0.1. */
const char *proc_test_ip(void);

/* A free TCP port on ip (IPv4 or IPv6 literal): bound, read, closed. Nothing
 * listens there afterwards (until someone else takes it). 0 on failure. */
uint16_t proc_unused_port(const char *ip);

/* Raises RLIMIT_NOFILE's soft limit to the hard limit. Returns the new soft limit. */
long proc_raise_nofile(void);

/* ---- what the multi-process tests share ---------------------------------- */

/* LLMLINK_SANITIZER is set (make asan / make tsan): slow tests scale down. */
bool proc_sanitized(void);

/* Starts llmlink-node (as proc_node_start_args) in the next entry of a
 * fixture's table procs[0..max), *n counting the entries in use. The entry
 * is taken even when the start fails, so that the fixture's teardown reaps
 * whatever did start. NULL on failure ("starting <role> <id>: <why>"). */
proc_t *proc_node_add(proc_t *procs, size_t *n, size_t max, const char *role,
                      uint64_t cluster_id, const char *listen, const char *const *opts,
                      const char *const *extra_args, const char *netns, int timeout_ms);

/* A fixture's teardown of procs[0..n): EOF on the stdin of every node still
 * running (SIGCONT first when stopped), so that they quit in parallel; then
 * up to timeout_ms each for a clean exit (proc_stop), and proc_reap for all.
 * Each that does not quit cleanly is reported on stderr ("teardown: <label>
 * did not quit cleanly: <why>"), and makes it return -1. */
int proc_stop_all(proc_t *procs, size_t n, int timeout_ms);

/* "<cluster id>@127.0.0.1:<port>" of a node listening on 127.0.0.1; one of
 * 8 rotating (thread-local) buffers, so several may appear in one call. */
const char *proc_endpoint(const proc_t *p);

/* Sends a command formatted from fmt (up to PROC_CMD_MAX bytes) and returns
 * its reply line: one of 8 rotating (thread-local) buffers. NULL on failure,
 * with a message naming the command: "<label>: '<command>': <why>". */
const char *proc_reply(proc_t *p, int timeout_ms, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *proc_vreply(proc_t *p, int timeout_ms, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* proc_reply, and the reply must be exactly want. Returns the ms the reply
 * took (>= 0), or -1: the command failed, or "<label>: '<command>' answered
 * '<reply>' after N ms; expected '<want>'". */
int64_t proc_expect(proc_t *p, int timeout_ms, const char *want, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Polls "check <remote>" every 50 ms (each reply within timeout_ms) until
 * the node answers "CHECK <want>". Returns the ms since since_ms, or -1: a
 * command failed, or max_ms passed since since_ms ("<label>: check <remote>
 * still '<reply>' after N ms (expected 'CHECK <want>' within <max_ms> ms)"). */
int64_t proc_wait_check(proc_t *p, uint64_t remote, const char *want, int64_t since_ms,
                        int max_ms, int timeout_ms);

#ifdef fail_msg
/* In a cmocka test (<cmocka.h> included before this header): a failure of
 * the helpers above (-1 or NULL) fails the test with proc_last_error(). */
static inline int64_t proc_must(int64_t r)
{
    if (r < 0)
        fail_msg("%s", proc_last_error());
    return r;
}

static inline const char *proc_must_reply(const char *reply)
{
    if (!reply)
        fail_msg("%s", proc_last_error());
    return reply;
}
#endif

#endif /* LLK_TEST_PROC_H */

/*
 * cli.h - what the subcommands of the `llmlink` command share
 * (docs/cli.md describes the command; each subcommand is one file here).
 *
 * Exit codes: 0 success, 1 failure (the reason on stderr), 2 usage (bad
 * arguments: the subcommand's usage on stderr). Subcommands return one of
 * them from their main function.
 *
 * The command uses only the public ABI (llmlink.h); what it prints is
 * its own. The verifiable fill pattern of serve, and what pull / push
 * check against it, are defined once, here.
 */
#ifndef LLMLINK_CLI_H
#define LLMLINK_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "llmlink.h"

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

#define CLI_DEFAULT_SERVE_ID 1u
#define CLI_DEFAULT_CLIENT_ID 1000u
#define CLI_DEFAULT_TENSORS 2u
#define CLI_DEFAULT_BLOCK (64u * 1024u)
#define CLI_DEFAULT_CACHE_BYTES (64ull << 20)
#define CLI_DEFAULT_LINK_MS 5000
#define CLI_MAX_OPTS 32
#define CLI_MAX_SIZES 16
#define CLI_MAX_TENSORS 64

/* One subcommand: name, one-line summary, entry point (argv[0] is the
 * subcommand's name). */
typedef struct cli_cmd {
    const char *name;
    const char *summary;
    int (*main)(int argc, char **argv);
} cli_cmd_t;

int cli_serve(int argc, char **argv);
int cli_link(int argc, char **argv);
int cli_pull(int argc, char **argv);
int cli_push(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_stats(int argc, char **argv);
int cli_doctor(int argc, char **argv);

/* ---- messages ---- */
/* "llmlink <sub>: <fmt>\n" on stderr; returns CLI_FAIL / CLI_USAGE. */
int cli_fail(const char *sub, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_usage_error(const char *sub, const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The status name, its sentence and llmlink_last_error(), for a failure. */
int cli_fail_status(const char *sub, const char *what, llmlink_status_t st);

/* ---- parsing (false: not valid) ---- */
/* A byte count: digits with an optional K, M, G (powers of 1024) suffix. */
bool cli_parse_size(const char *s, uint64_t *out);
/* A list of sizes, "4K,64K,1M" (at most max). */
bool cli_parse_sizes(const char *s, uint64_t *out, size_t max, size_t *n);
bool cli_parse_u64(const char *s, uint64_t *out);
/* "IP:PORT" or "[IP6]:PORT"; the ip part into ip (cap bytes). */
bool cli_parse_hostport(const char *s, char *ip, size_t cap, uint16_t *port);
/* A peer: "[ID@]IP:PORT" (ID defaults to CLI_DEFAULT_SERVE_ID). */
typedef struct cli_peer {
    uint64_t id;
    char ip[64];
    uint16_t port;
    const char *text;
} cli_peer_t;
bool cli_parse_peer(const char *s, cli_peer_t *p);

/* ---- engines ---- */
/* Engine options collected from the command line (--opt K=V, --transport,
 * --listen...): kept as "K=V" strings split at the first '='. */
typedef struct cli_opts {
    llmlink_option_t o[CLI_MAX_OPTS];
    char buf[CLI_MAX_OPTS][512];
    size_t n;
} cli_opts_t;
/* Adds key=value (false when full or malformed). */
bool cli_opts_add_kv(cli_opts_t *o, const char *kv);
bool cli_opts_add(cli_opts_t *o, const char *key, const char *value);
/* Creates and inits an engine; NULL after printing why. */
llmlink_t *cli_engine(const char *sub, llmlink_role_t role, uint64_t id, const cli_opts_t *o);
/* Links e to every peer (one call); statuses[i] per peer. */
llmlink_status_t cli_link_peers(llmlink_t *e, const cli_peer_t *peers, size_t n,
                                int32_t timeout_ms, llmlink_status_t *statuses);

/* Unlinks every link of e, telling the peers (bounded: 2 s a call);
 * print: one "unlinked cluster=ID status=NAME" line each on stdout. What
 * every subcommand does before llmlink_destroy, so that the peer counts an
 * unlink rather than a closed connection. */
void cli_unlink_all(llmlink_t *e, bool print);

/* ---- the verifiable pattern ----
 * Byte `off` of tensor t of a cache filled with `seed` is byte off % 8
 * (little-endian) of cli_pattern_word(seed, t, off / 8), where off counts
 * from the tensor's start: a block that lands at the wrong place (tensor,
 * block, offset) or from the wrong cache is caught. */
uint64_t cli_pattern_word(uint64_t seed, uint32_t tensor, uint64_t word);
void cli_fill(uint8_t *tensor, uint64_t bytes, uint64_t seed, uint32_t t);
/* Whether tensor bytes [off, off + len) hold the pattern of (seed, t) for
 * the offsets [src_off, src_off + len); off/src_off/len multiples of 8. */
bool cli_check(const uint8_t *tensor, uint64_t off, uint64_t src_off, uint64_t len,
               uint64_t seed, uint32_t t);

/* ---- a blocks cache of the command's geometry ----
 * serve registers one per block size, keyed BLOCKS(cluster id, model id =
 * block size in bytes), so that a client names a cache by its block size. */
typedef struct cli_cache {
    int64_t id;
    uint32_t tensors;
    uint64_t block, blocks;
    uint64_t addrs[CLI_MAX_TENSORS];
} cli_cache_t;
/* Allocates (llmlink_allocate_blocks_cache) blocks x block bytes per
 * tensor; key: NULL for a cache that only receives. */
llmlink_status_t cli_cache_alloc(llmlink_t *e, cli_cache_t *c, uint32_t tensors, uint64_t block,
                                 uint64_t blocks, const llmlink_cache_key_t *key);
/* Maps blocks x block bytes per tensor, fills them with the pattern of
 * seed, then registers them (llmlink_register_blocks_cache) under key: a
 * peer can address the cache only once every byte is written (the
 * registry's lock orders the fill before any peer's request). The memory
 * stays mapped until the process exits. */
llmlink_status_t cli_cache_filled(llmlink_t *e, cli_cache_t *c, uint32_t tensors, uint64_t block,
                                  uint64_t blocks, const llmlink_cache_key_t *key, uint64_t seed);
/* The cache of block size `block` that serve registers on cluster id. */
llmlink_cache_key_t cli_serve_key(uint64_t cluster_id, uint64_t block);

/* ---- output ---- */
double cli_now(void); /* CLOCK_MONOTONIC seconds */
/* A progress bar on stderr when it is a terminal (\r-updated), else a plain
 * line at each quarter. */
void cli_progress(const char *what, uint64_t done, uint64_t total);
/* "1.5 GiB"-style text of a byte count. */
const char *cli_bytes_text(uint64_t n, char *buf, size_t cap);
/* The transport that carried the transfers between two metrics snapshots
 * (the one whose transfer count grew most), as its label. */
const char *cli_transport_used(const llmlink_metrics_t *before, const llmlink_metrics_t *after);
bool cli_metrics(llmlink_t *e, llmlink_metrics_t *m);

/* ---- Prometheus text (prom.c) ---- */
/* Writes the exposition of one engine's metrics and links to f. */
void cli_prom_render(FILE *f, const llmlink_metrics_t *m, const llmlink_link_info_t *links,
                     size_t nlinks);

/* ---- the metrics endpoint of serve (http.c) ---- */
typedef struct cli_http cli_http_t;
/* Serves GET /metrics for e on ip:port (port 0: the kernel's choice);
 * NULL after printing why. *bound_port receives the port. */
cli_http_t *cli_http_start(llmlink_t *e, const char *ip, uint16_t port, uint16_t *bound_port);
void cli_http_stop(cli_http_t *h);

#endif /* LLMLINK_CLI_H */

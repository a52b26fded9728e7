/*
 * small_session.h - what bench_small and bench_async share: one P process
 * (a fork()ed child with a PROMPT engine on 127.0.0.1:0 and a blocks cache
 * of one tensor of nblocks blocks, filled with a pattern) and one DECODER
 * engine in this process, linked to it, with a cache of the same geometry.
 * One tensor, so that pulling one block moves exactly block_bytes.
 *
 * bench/small_session.c is linked into every bench program, as
 * bench_common.c is (see the Makefile).
 */
#ifndef LLK_BENCH_SMALL_SESSION_H
#define LLK_BENCH_SMALL_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bench_common.h"
#include "llmlink.h"

typedef struct small_pconf {
    uint64_t cluster_id, block_bytes, nblocks, seed;
    const char *transport; /* llmlink.Transport on both sides: "tcp", "shm" */
} small_pconf_t;

typedef struct small_session {
    small_pconf_t pc;
    bench_server_t srv;
    bool have_srv, linked;
    llmlink_t *d;
    uint8_t *mem; /* D's cache: nblocks x block_bytes */
    size_t bytes;
    int64_t cache_id;
    llmlink_ip_info_t ip;
    llmlink_cluster_info_t ci;
    llmlink_cache_key_t key; /* P's cache */
} small_session_t;

/* "fn: NAME (0x...): <last error>". */
void small_api_error(char *err, size_t len, const char *fn, llmlink_status_t st);

/* Forks P, creates, initializes and links D, registers D's cache (poison
 * bytes). Call while this process runs no engine. false with err; then
 * small_session_close it all the same. */
bool small_session_open(small_session_t *s, const char *transport, uint64_t block_bytes,
                        uint64_t nblocks, char *err, size_t len);
/* A blocking pull of P's block src into D's block dst. */
llmlink_status_t small_session_pull(small_session_t *s, uint64_t src, uint64_t dst);
/* D's block dst holds P's block src. */
bool small_session_check(const small_session_t *s, uint64_t src, uint64_t dst, char *err,
                         size_t len);
/* Requests of the session's transport that D's counters show (0 if none). */
uint64_t small_session_requests(const small_session_t *s);
/* Unlinks, unregisters, destroys D, stops P. false (with err) when a step
 * failed or P did not exit cleanly. */
bool small_session_close(small_session_t *s, char *err, size_t len);

#endif /* LLK_BENCH_SMALL_SESSION_H */

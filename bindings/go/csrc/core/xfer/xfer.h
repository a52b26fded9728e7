/*
 * xfer.h - the transfer half of the engine: data streams per link, the
 * owner thread that serves peers' requests, and the requester that runs
 * this engine's pull/push calls.
 *
 * Data flow: ffi/api_cache.c validates arguments -> llk_xfer_run()
 * (xfer/run.c: resolves the local cache and the link, plans with planner.c)
 * -> xfer/requester.c (requester: drives borrowed streams) -> wire <-
 * xfer/owner.c (owner thread: checks every request against
 * cache_registry.c). How the bytes of a granted request move is the
 * transport's (transport/transport.h).
 *
 * Streams. When a link is made, the client opens 2 x llmlink.StreamsPerLink
 * TCP connections to the server's listener and attaches each (control
 * messages ATTACH / ATTACH_OK, see wire.h): half are "forward" streams (the
 * client requests, the server owns), half "reverse" (the server requests,
 * the client owns). A side's requester streams are borrowed whole by one
 * call at a time; its owner streams belong to its owner thread.
 *
 * Lifetime. An llk_xlink_t hangs off the control connection of a link
 * (llk_xlink_install: an opaque attachment there, with the callbacks by
 * which the connection breaks and releases it) and is reference-counted: the connection holds one
 * reference, every call using it one, the owner thread one per owner
 * stream. llk_xlink_break() (any thread) marks it unusable and fences every
 * transport (tcp: shuts its sockets down), which ends every transfer on it
 * at once; only the holder
 * of a stream closes its descriptor. The connection breaks its xlink when
 * it dies (unlink, liveness, peer gone, finalize); a transfer that fails
 * on a link breaks the link too (llk_xfer_kill_link), so that the next call
 * sees NOT_YET_LINK until link_clusters links it again. What this plane asks
 * of the link plane (find a link, kill one, take an ATTACH'd descriptor)
 * goes through link/link_api.h.
 *
 * Locks: e->mu before xl->mu; the owner thread never takes e->mu. The
 * registry's mutex is a leaf.
 */
#ifndef LLK_XFER_H
#define LLK_XFER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "llmlink.h"
#include "base/options.h"
#include "link/wire.h"
#include "xfer/cancel.h"
#include "xfer/planner.h"
#include "xfer/xfer_wire.h"
#include "transport/transport.h"

struct llk_conn;
struct llk_xserver;
struct llk_cache;

typedef struct llk_xlink {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC: a stream came back, attached, or the link broke */
    uint32_t refs;
    bool broken;
    char why[192];
    /* The same as broken, set by llk_xlink_break before any transport's
     * fence, readable without xl->mu: the owner thread loads it before
     * every step (each recvmsg into a cache), where a lock would cost. */
    atomic_bool broken_now;

    uint64_t remote_id;
    bool outbound;     /* this side is the client of the link */
    uint32_t nstreams; /* client: streams it opens per direction; 0 on the server */
    /* Server: the data streams per direction the client announced in its
     * HELLO (LLK_EXT_STREAM_COUNT / 2), LLK_MAX_STREAMS when it did not;
     * an ATTACH at or beyond it is refused. Set by the reactor when the
     * xlink is installed, read by it at each ATTACH. 0 on the client. */
    uint32_t peer_streams;
    char peer[72];     /* for messages */

    /* Streams this side requests on: fd -1 when not (yet) attached. */
    int req_fd[LLK_MAX_STREAMS];
    bool req_busy[LLK_MAX_STREAMS];
    uint64_t req_next_id[LLK_MAX_STREAMS];
    /* Streams the owner thread serves (fds also kept here so that a break
     * can shut them down; the owner thread closes them). */
    int own_fd[LLK_MAX_STREAMS];

    /* What the transports decided for this link, and their own state
     * (transport/transport.h). */
    llk_xport_link_t xport;

    /* Accounting of this engine's memory as the peer's requests touch it
     * (llmlink_get_link_stats), updated without xl->mu by the owner thread
     * and the transports. peer_write_bytes counts what the peer may have
     * written: tcp's bytes received into a cache, and the whole extent of
     * every write grant (shm, rdma) from the moment it is granted, since
     * from then on the peer writes on its own. requests_fenced counts the
     * peer's requests that ended without completing (the link broke, a
     * stall, an unregister) after this side had admitted them. */
    _Atomic uint64_t peer_write_bytes, peer_read_bytes;
    _Atomic uint64_t requests_fenced;

    /* This engine's own calls over the link (llmlink_get_links), counted
     * with relaxed additions by xfer/xfer_metrics.c; up_since_ms: Unix
     * time in ms when the xlink was made (set once, before it is shared). */
    _Atomic uint64_t calls_ok, calls_failed, bytes_pulled, bytes_pushed;
    int64_t up_since_ms;

    /* The peer's llm.SyncKvCacheWaitTime from its HELLO / WELCOME
     * (LLK_EXT_WAIT_TIME, link/wire.h), 0 when it sent none. Set once by
     * the reactor when the xlink is installed, read by any thread. */
    _Atomic int32_t peer_wait_ms;

    /* The link's session key Ks (link/auth.h) when it was made with a key
     * (has_ks): what each data stream's ATTACH MAC is made with. Set once
     * by the reactor when the xlink is installed, before any stream
     * attaches; read-only after; wiped when the xlink is freed. */
    bool has_ks;
    uint8_t ks[32];
} llk_xlink_t;

/* The wait a request on xl gets: the smaller of this side's own
 * llm.SyncKvCacheWaitTime and the peer's, own when the peer sent none.
 * Both ends then bound a request alike: the requester's call deadline
 * (run.c) and the owner's stall limit (owner.c), so that neither side
 * gives up on a request the other still works on. */
static inline int32_t llk_xlink_wait_ms(llk_xlink_t *xl, int32_t own)
{
    int32_t peer = atomic_load(&xl->peer_wait_ms);
    return peer > 0 && peer < own ? peer : own;
}

/* ---- xfer/streams.c ---------------------------------------------------- */

llk_xlink_t *llk_xlink_new(uint64_t remote_id, bool outbound, uint32_t nstreams,
                           const char *peer);
/* A new xlink hung on control connection c (llk_conn_set_xfer), which holds
 * the first reference: c breaks it when it stops being a link and drops the
 * reference when freed. NULL when out of memory. e->mu held. The only
 * attachment ever hung on a connection: the opaque pointers link_api.h
 * hands back are xlinks. */
llk_xlink_t *llk_xlink_install(struct llk_conn *c, uint64_t remote_id, bool outbound,
                               uint32_t nstreams, const char *peer);
/* The xlink hung on c by llk_xlink_install, or NULL. e->mu held. */
llk_xlink_t *llk_xlink_of(const struct llk_conn *c);
void llk_xlink_ref(llk_xlink_t *xl);
/* Drops a reference; the last one closes the requester fds and frees. */
void llk_xlink_unref(llk_xlink_t *xl);
/* Marks the link unusable (first reason wins) and shuts every stream down. */
void llk_xlink_break(llk_xlink_t *xl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

bool llk_xlink_is_broken(llk_xlink_t *xl);

/* broken_now without the lock (acquire: whatever the breaker did before
 * setting it is visible). */
static inline bool llk_xlink_broken_now(llk_xlink_t *xl)
{
    return atomic_load_explicit(&xl->broken_now, memory_order_acquire);
}

/* Sends / receives all of buf on a non-blocking stream of xl before the
 * deadline: 0, or -1 with errno (ETIMEDOUT; ECONNABORTED when the link
 * broke meanwhile). For handshakes on a stream nobody else reads yet. */
int llk_xlink_send_all(llk_xlink_t *xl, int fd, const uint8_t *buf, size_t len,
                       int64_t deadline_ms);
int llk_xlink_recv_all(llk_xlink_t *xl, int fd, uint8_t *buf, size_t len, int64_t deadline_ms);

/* Borrows free requester streams, waiting until deadline_ms (monotonic) for
 * at least one: up to `want` indexes go to idx[]. Returns how many, or -1:
 * link broken (NOT_YET_LINK) or no stream came free in time
 * (WAIT_PROCESS_TIMEOUT), with llk_err() set. */
int llk_xlink_borrow(llk_xlink_t *xl, uint32_t want, int *idx, int64_t deadline_ms,
                     const char *fn);
/* The same, stopping when cx (NULL: none) is cancelled: -1 with
 * LLMLINK_CANCELLED, nothing borrowed. */
int llk_xlink_borrow_cx(llk_xlink_t *xl, uint32_t want, int *idx, int64_t deadline_ms,
                        const char *fn, llk_xfer_cancel_t *cx);
void llk_xlink_give_back(llk_xlink_t *xl, const int *idx, int n);

/*
 * Client side, after the control link is up: opens and attaches the
 * 2 x nstreams data streams to `remote` (the address the control connection
 * used), within deadline_ms. On failure returns LINK_FAILED / TIMEOUT with
 * a message in *detail (detail_len) and attaches nothing.
 */
llmlink_status_t llk_xfer_attach_streams(llmlink_t *e, llk_xlink_t *xl,
                                         const struct sockaddr_storage *remote,
                                         socklen_t remote_len,
                                         const struct sockaddr_storage *local, socklen_t local_len,
                                         uint64_t remote_incarnation, int64_t deadline_ms,
                                         char *detail, size_t detail_len);

/*
 * Server side: an ATTACH arrived on a handshake connection c (reactor
 * thread, e->mu held). Validates it against the inbound link it names,
 * answers ATTACH_OK or REJECT, and on success takes the descriptor: the
 * caller must then forget c->fd (the function sets it to -1) and let the
 * connection die. Returns true when the stream was adopted.
 */
bool llk_xfer_on_attach(llmlink_t *e, struct llk_conn *c, const uint8_t *payload, size_t len);

/* ---- xfer/stream_auth.c: a data stream's authentication, client side ----
 * With a key (e->auth), each stream runs the exchange of link/wire.h on
 * its own connection before its ATTACH. Blocking, bounded by deadline_ms;
 * on failure AUTH_FAILED / TIMEOUT / LINK_FAILED with a message in detail. */
/* Sends AUTH_HELLO with a fresh nonce, kept in nc. */
llmlink_status_t llk_stream_auth_hello(llmlink_t *e, llk_xlink_t *xl, int fd, uint8_t nc[32],
                                       int64_t deadline_ms, char *detail, size_t dlen);
/* Reads AUTH_CHALLENGE and checks MAC_s; then sends AUTH_PROOF and the
 * ATTACH m, with its MAC under the link's session key, in one write. */
llmlink_status_t llk_stream_auth_attach(llmlink_t *e, llk_xlink_t *xl, int fd,
                                        const uint8_t nc[32], llk_msg_attach_t *m,
                                        int64_t deadline_ms, char *detail, size_t dlen);

/* A live, usable xlink to/from remote_id, with a reference (release with
 * llk_xlink_unref), or NULL with llk_err(NOT_YET_LINK). Takes e->mu. */
llk_xlink_t *llk_xfer_find_link(llmlink_t *e, uint64_t remote_id, const char *fn);

/* Kills the link that xl belongs to (both ends free it: the control
 * connection closes); later calls get NOT_YET_LINK. Takes e->mu. */
void llk_xfer_kill_link(llmlink_t *e, llk_xlink_t *xl, const char *why);

/* ---- xfer/link_stats.c ------------------------------------------------- */

/* llmlink_get_link_stats (everything but version): NOT_YET_LINK when no
 * usable link with cluster_id exists (llk_err set). */
llmlink_status_t llk_xfer_link_stats(llmlink_t *e, uint64_t cluster_id, const char *fn,
                                     llmlink_link_stats_t *out);

/* ---- xfer/owner.c: the owner thread ---------------------------------- */

llmlink_status_t llk_xserver_start(llmlink_t *e);
/* Stops the thread and closes every owner stream. */
void llk_xserver_stop(llmlink_t *e);
/* The registry's cut hook (cache_registry.h): has the owner thread of
 * engine ctx cut its tcp requests on caches marked cut_requested. Any
 * thread; no lock held. */
void llk_xserver_cut(void *ctx);
/* Hands an attached owner stream (fd, non-blocking) of xl to the thread. */
llmlink_status_t llk_xserver_adopt(llmlink_t *e, llk_xlink_t *xl, int slot, int fd);

/* ---- xfer/run.c: one pull / push call ---------------------------------- */

typedef struct llk_xfer_req {
    const char *fn;        /* API name, for messages */
    bool push;             /* local -> remote (else remote -> local) */
    llmlink_cache_key_t key; /* the remote cache; key.cluster_id picks the link */
    int64_t local_id;      /* the local cache */
    llk_xkind_t kind;
    /* BLOCKS: local_blocks[i] <-> remote_blocks[i]; CACHE_AS_BLOCKS:
     * remote_blocks NULL, the remote entry's block i <-> local_blocks[i]. */
    const uint64_t *local_blocks;
    const uint64_t *remote_blocks;
    size_t nblocks;
    uint32_t local_batch;  /* CACHE: the local batch entry */
    int64_t size;          /* CACHE: bytes per tensor, -1 = whole entry */
    bool has_layers;
    llmlink_layer_range_t layers; /* "local"/"remote" are src/dst per push */
} llk_xfer_req_t;

/* Runs one transfer within llm.SyncKvCacheWaitTime (see llmlink.h for the
 * statuses). Takes no engine lock while bytes move. cx: the task's cancel
 * (xfer/cancel.h), NULL for none. llk_xfer_prepare + llk_xfer_exec. */
llmlink_status_t llk_xfer_run(llmlink_t *e, const llk_xfer_req_t *r, llk_xfer_cancel_t *cx);

/* A transfer split in two, so that a task's local mistakes fail its submit
 * (xfer/task.c): prepare resolves and holds the local cache (registry
 * reference) and the link (xlink reference), checks the request against
 * the local cache (kind, block indexes, layer ranges) and turns its lists
 * into byte runs; nothing goes on the network. exec plans and moves the
 * bytes. The request's block lists are not used after prepare. */
typedef struct llk_xfer_prep {
    llk_xfer_req_t req;        /* copy, lists cleared */
    struct llk_cache *lc;
    llk_xlink_t *xl;
    uint32_t l0, r0, n;        /* local tensor l0 + k <-> remote r0 + k, k < n */
    bool all;                  /* every tensor of both caches */
    llk_byte_run_t *runs;
    size_t nruns;
} llk_xfer_prep_t;

/* On failure *p holds nothing (llk_err set). */
llmlink_status_t llk_xfer_prepare(llmlink_t *e, const llk_xfer_req_t *r, llk_xfer_prep_t *p);
/* deadline_ms: monotonic, the task's; -1: llm.SyncKvCacheWaitTime from
 * now (a blocking call). A cx already cancelled ends CANCELLED, a deadline
 * already past WAIT_PROCESS_TIMEOUT, before any traffic. */
llmlink_status_t llk_xfer_exec(llmlink_t *e, llk_xfer_prep_t *p, llk_xfer_cancel_t *cx,
                               int64_t deadline_ms);
/* Drops what prepare holds (idempotent). */
void llk_xfer_prep_free(llmlink_t *e, llk_xfer_prep_t *p);

/* ---- xfer/requester.c: the requester side of one plan --------------------- */

typedef struct llk_xfer_ctx {
    llmlink_t *e;
    llk_xlink_t *xl;
    const char *fn;
    bool push;               /* requests write (else read) */
    llk_xreq_t hdr;          /* kind, flags, key, unit_bytes (segments from the plan) */
    const llk_plan_t *plan;
    bool consume_key;        /* then send CONSUME (pull_cache by an allocated CacheKey) */
    int64_t deadline_ms;
    struct llk_cache *local_cache; /* held by the call (transports may register it) */
    llk_xfer_cancel_t *cancel; /* the task's cancel, NULL: none (xfer/cancel.h) */
    /* per transport (LLK_XPORT_*), for llmlink_get_xfer_stats */
    uint64_t requests[LLK_NXPORTS], fallbacks[LLK_NXPORTS];
} llk_xfer_ctx_t;

/* Moves every group of the plan over its own borrowed stream (groups run
 * in parallel). Returns SUCCESS, the owner's refusal status (stream still
 * usable), or a stream failure (NETWORK_ERROR, PROTOCOL_ERROR,
 * WAIT_PROCESS_TIMEOUT: the link is killed before any stream goes back, and
 * a failed tcp WRITE waits, bounded, for the owner to end its streams).
 * *link_failed tells which. */
llmlink_status_t llk_xfer_execute(llk_xfer_ctx_t *ctx, bool *link_failed);

/* ---- xfer/xfer_metrics.c: operator counters of transfers and links ---- */

/* Records one finished call of run.c (ctx: its requests per transport;
 * start_ns: llk_metrics_now_ns() when it began): the engine's metrics and
 * the link's counters. No lock. */
void llk_xfer_record(llmlink_t *e, const llk_xfer_ctx_t *ctx, llmlink_status_t st,
                     bool link_failed, uint64_t bytes, int64_t start_ns);
/* llmlink_get_links: up to max elements at out, stride bytes apart (each
 * an llmlink_link_info_t of the caller's version, of which stride bytes
 * are written, version set to it); *count = live links. Takes e->mu. */
llmlink_status_t llk_xfer_links(llmlink_t *e, llmlink_link_info_t *out, uint32_t version,
                                size_t stride, size_t max, size_t *count);

#endif /* LLK_XFER_H */

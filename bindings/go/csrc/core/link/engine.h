/*
 * engine.h - the engine behind an llmlink_t, shared by the core modules.
 *
 * Threads: one I/O thread per engine (the reactor) owns every socket: it
 * accepts, connects, reads, writes, runs timers and closes. API threads
 * never touch a socket; under the engine mutex they create connection
 * objects, change their state, queue small frames, then wake the reactor
 * through an eventfd and wait on the engine condition variable. Only the
 * reactor frees a connection, so an API thread holding the mutex may use any
 * connection it finds in the list.
 *
 * Data flow: ffi/ validates and converts arguments -> link/manager.c (API
 * side) -> reactor.c (event loop) -> link/client.c / link/server.c
 * (handshake state machines) -> conn.c (framing on a non-blocking socket)
 * -> wire.c (codec). Transfers leave this path once a link is made: its
 * data streams, the owner thread and the requester are in xfer.h; the
 * control connection only carries their ATTACH and, when it dies, tells
 * them through the callbacks the transfer plane hung on it (conn->xfer_ops).
 * conn.c names no other module: frames, closes and freed handshake slots
 * go through e->conn_handlers, which engine.c fills in.
 */
#ifndef LLK_ENGINE_H
#define LLK_ENGINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "xfer/cache_registry.h"
#include "llmlink.h"
#include "base/events.h"
#include "base/options.h"
#include "link/auth.h"
#include "link/metrics.h"
#include "link/wire.h"
#include "base/events.h"
#include "xfer/xfer.h"
#include "xfer/notify.h"

typedef enum llk_engine_state {
    LLK_ENGINE_CREATED = 0,
    LLK_ENGINE_RUNNING,
    LLK_ENGINE_FINALIZED
} llk_engine_state_t;

typedef enum llk_conn_state {
    LLK_CONN_SRV_HANDSHAKE = 0, /* accepted, waiting for HELLO */
    LLK_CONN_SRV_PARKED,        /* accepted, not read, no handshake slot (park.c) */
    LLK_CONN_CLI_PENDING,       /* link requested, socket not opened yet */
    LLK_CONN_CLI_CONNECTING,    /* non-blocking connect in flight */
    LLK_CONN_CLI_HELLO_SENT,    /* waiting for WELCOME or REJECT */
    LLK_CONN_LINKED,
    LLK_CONN_UNLINKING,         /* UNLINK sent, waiting for UNLINK_ACK */
    LLK_CONN_CLOSING,           /* flush what is queued, then close */
    LLK_CONN_DEAD               /* the reactor closes and frees it */
} llk_conn_state_t;
#define LLK_CONN_NUM_STATES (LLK_CONN_DEAD + 1)

struct llk_conn;

/*
 * The transfer side of an established link, as the connection layer sees
 * it: an opaque attachment and what to call when the link dies. conn.c
 * calls broken() when the connection goes CLOSING or DEAD (and again when
 * it is freed; the first reason is the one kept), then release() once
 * when it frees the connection. Both run with e->mu held, on the thread
 * that changes the state (reactor or API thread): they must not take
 * e->mu, nor call back into the link plane.
 */
typedef struct llk_conn_xfer_ops {
    void (*broken)(void *ctx, const char *why);
    void (*release)(void *ctx);
} llk_conn_xfer_ops_t;

/* What an API call waits for; lives on the API thread's stack and is
 * detached (conn->waiter = NULL) when completed. */
typedef struct llk_waiter {
    llmlink_status_t status;
    bool done;
    char detail[320];
} llk_waiter_t;

/* epoll user data points at one of these tags. */
typedef enum { LLK_EV_WAKE = 1, LLK_EV_LISTENER, LLK_EV_CONN } llk_ev_kind_t;

#define LLK_TX_CAP 1024u
/* Family byte + the address bits that key a source (link/park.c). */
#define LLK_SRC_KEY_SIZE 17u

typedef struct llk_conn {
    llk_ev_kind_t kind; /* LLK_EV_CONN; first member, see reactor.c */
    struct llk_conn *prev, *next;
    int fd;
    bool outbound;
    bool want_out; /* EPOLLOUT is armed */
    llk_conn_state_t state;
    uint64_t remote_id;
    uint64_t remote_incarnation;
    char peer[72];
    int64_t deadline_ms; /* 0 = none; meaning depends on state */
    int64_t retry_at_ms; /* CLI_PENDING: do not connect before */
    int64_t last_rx_ms, last_tx_ms;
    uint32_t liveness_ms;
    llk_waiter_t *waiter;

    /* Server side, from accept: the source address's key for
     * llmlink.MaxHandshakesPerAddress, and the place in the parking FIFO
     * while SRV_PARKED (link/park.c). */
    uint8_t src_key[LLK_SRC_KEY_SIZE];
    struct llk_conn *park_prev, *park_next;

    /* Client side: where to connect, in order. */
    uint32_t expected_role;
    struct sockaddr_storage remote[LLMLINK_MAX_IP_INFOS];
    socklen_t remote_len[LLMLINK_MAX_IP_INFOS];
    size_t num_remote, remote_idx;
    uint32_t tries_left; /* for remote[remote_idx] */
    struct sockaddr_storage local[LLMLINK_MAX_IP_INFOS];
    socklen_t local_len[LLMLINK_MAX_IP_INFOS];
    size_t num_local;

    /* Transfer side of an established link (NULL before, and on handshake
     * connections): installed by the transfer plane (llk_conn_set_xfer),
     * opaque here; see llk_conn_xfer_ops_t. */
    void *xfer_ctx;
    const llk_conn_xfer_ops_t *xfer_ops;

    /* Authentication exchange (link/auth.h), when the engine has a key. */
    llk_auth_hs_t auth;

    /* Notifications (xfer/notify.c) on a link: the peer announced
     * LLK_EXT_NOTIFY; the next seq to send and the next one whose ACK is
     * due (ACKs come in order on the one stream, so any other is a
     * protocol error). */
    bool peer_notify;
    uint64_t notify_seq, notify_ack_next;
    /* The bulk queue (NOTIFY and NOTIFY_ACK frames, up to 4124 bytes each,
     * more than tx holds): heap, grown on first use, bounded by the caller
     * (llk_conn_queue_bulk). Bytes of tx always go out before those of
     * ntx, except that a frame of ntx partly written is finished first
     * (ntx_frame_left bytes of it remain), so frames never interleave. */
    uint8_t *ntx;
    size_t ntx_len, ntx_cap, ntx_frame_left;
    /* Why a link on this connection ended (llmlink_close_reason_t), set by
     * whoever ends it before the state change; 0 (OTHER) when nobody
     * said. Counted once, when it leaves LINKED / UNLINKING (link/metrics.h). */
    uint8_t close_reason;

    size_t rx_len, tx_len;
    uint8_t tx[LLK_TX_CAP];
    uint8_t rx[LLK_WIRE_MAX_RX_FRAME];
} llk_conn_t;

/* Transfer counters, updated without the engine lock. */
typedef struct llk_xstats {
    _Atomic uint64_t transfers, transfers_failed, transfers_timed_out;
    _Atomic uint64_t bytes_requested, bytes_served, requests_served, requests_refused;
    _Atomic uint64_t tcp_requests, shm_requests, shm_fallbacks;
    _Atomic uint64_t rdma_requests;
    /* Asynchronous tasks and notifications (core/xfer/task.c, notify.c):
     * tasks submitted / cancelled (CANCELLED or CANCELLED_LINK_CLOSED);
     * notifications sent (queued by the peer), received (queued here),
     * refused because a queue was full (either side's count of it). */
    _Atomic uint64_t tasks_submitted, tasks_cancelled;
    _Atomic uint64_t notifies_sent, notifies_received, notifies_refused_full;
} llk_xstats_t;

typedef void llk_conn_frame_fn(llmlink_t *e, struct llk_conn *c, const llk_frame_header_t *h,
                                const uint8_t *payload, int64_t now);

/*
 * What conn.c hands on to the modules that own a connection's states, so
 * that it names none of them: set once per engine at create time
 * (engine.c), read-only after. Every handler runs with e->mu held; all but
 * the on_frame entries are required.
 */
typedef struct llk_conn_handlers {
    /* A whole frame (header checked) on a connection in that state; NULL:
     * the frame is dropped (CLOSING and the client's pre-socket states). */
    llk_conn_frame_fn *on_frame[LLK_CONN_NUM_STATES];
    /* The peer closed (EOF: err 0) or recv failed (err). */
    void (*on_closed)(llmlink_t *e, struct llk_conn *c, int err);
    /* A server handshake ended (its slot is free): let the next one in. */
    void (*on_handshake_slot_free)(llmlink_t *e);
    /* c goes CLOSING or DEAD, or is freed: whatever waits on it (senders
     * of notifications) ends now. Optional; may be called more than once. */
    void (*on_link_down)(llmlink_t *e, struct llk_conn *c);
} llk_conn_handlers_t;

typedef struct llk_listener {
    llk_ev_kind_t kind; /* LLK_EV_LISTENER */
    int fd;
    uint16_t port;
    bool armed;
    char text[72];
} llk_listener_t;

struct llmlink {
    llmlink_role_t role;
    uint64_t cluster_id;
    uint64_t incarnation; /* random per engine: tells a restarted peer apart */
    llk_options_t opts;

    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC; broadcast when a waiter completes */
    llk_engine_state_t state;

    int epfd, wakefd;
    llk_ev_kind_t wake_tag;
    pthread_t io_thread;
    bool io_started, stop;

    llk_listener_t listeners[LLMLINK_MAX_LISTEN_ADDRS];
    size_t num_listeners;
    int64_t listen_retry_at_ms; /* after EMFILE: re-arm listeners then */

    llk_conn_t *conns; /* every connection, any state */
    const llk_conn_handlers_t *conn_handlers; /* see llk_conn_handlers_t */

    /* transfers (xfer.h) */
    llk_registry_t reg;
    bool reg_ready;
    /* Test seam (llk_test_set_legacy_wait): link as llmlink 0.3 did, without
     * LLK_EXT_WAIT_TIME, each side's calls bounded by its own wait. Set
     * before the engine links; read by the reactor. */
    bool test_legacy_wait;
    /* Test seam (llk_test_set_legacy_rails): RDMA rail records as llmlink
     * 0.3: no LLK_EXT_RDMA_READ_DEPTH or LLK_EXT_RDMA_RAILS sent or
     * read (rails by position), a peer's record with
     * the READ-depth byte set refused. Set before the engine links. */
    bool test_legacy_rails;
    /* Test seam (llk_test_set_rdma_cross_pairs): a client whose probe made
     * 2+ rails names each rail's target as the next rail's in its
     * XRDMA_SETUP, so the owner's check of the pairs must refuse it. */
    bool test_rdma_cross_pairs;
    /* Test seam (llk_test_set_legacy_notify): neither announce nor use
     * LLK_EXT_NOTIFY, as an llmlink without notifications. */
    bool test_legacy_notify;
    struct llk_xserver *xsrv;
    llk_host_id_t host;
    llk_xstats_t xstats;
    /* RDMA devices (rdma.h), opened at init for llmlink.Transport auto /
     * rdma; NULL when unusable, and rdma_why says why. Set before the
     * engine runs and unchanged until llk_engine_free. */
    struct llk_rdma *rdma;
    char rdma_why[256];
    /* The thread that re-establishes failed RDMA rails in the background
     * (transport/rdma_mender.c); NULL without RDMA. */
    struct llk_rdma_mender *rdma_mender;
    /* TLS (link/tls.h): loaded at init from llmlink.Tls*; NULL = plaintext.
     * Unchanged while the engine runs; released by llk_engine_free. */
    struct llk_tls *tls;

    /* server handshake accounting */
    uint32_t hs_in_progress, hs_peak;
    uint64_t hs_accepted, hs_completed, hs_rejected, hs_timed_out;
    /* Internal (llmlink_stats_t keeps its layout): those of hs_timed_out
     * cut by llmlink.FirstFrameTimeoutMs. limit_warn_*: one WARN a second,
     * with the count of those not logged. */
    uint64_t hs_first_frame_timeouts;
    /* HELLOs refused by access control (llmlink.AllowedClusters), and those
     * that claimed the cluster id of a live link (server.c) */
    uint64_t hs_access_denied, hs_claimed_live;
    int64_t limit_warn_next_ms;
    uint64_t limit_warn_suppressed;
    uint64_t protocol_errors, links_lost;
    /* Parked connections (link/park.c): the FIFO, oldest first, its length,
     * and counters (internal, see llk_test_park_stats). */
    llk_conn_t *park_head, *park_tail;
    uint32_t parked, park_max; /* park_max: set at the first park (park.c) */
    uint64_t parked_total, park_dropped, park_timed_out, park_promoted;


    /* llmlink.AuthKey / AuthKeyFile (link/auth.h), NULL without a key. Set
     * at init, freed (wiped) by llk_engine_free. auth_failures: internal
     * (llmlink_stats_t keeps its layout) count of connections refused or
     * abandoned for authentication (wrong, missing or unexpected key, a bad
     * ATTACH MAC), under e->mu. */
    llk_auth_key_t *auth;
    uint64_t auth_failures;

    /* Asynchronous transfers (xfer/task.h): the queue and the transfer
     * workers, from init to finalize (freed with the engine); the engine
     * descriptor (llmlink_get_event_fd), made at init, closed when freed. */
    struct llk_tasks *tasks;
    llk_events_t events;
    /* Notifications (xfer/notify.c), under e->mu. */
    llk_notify_state_t notify;
    /* Operator counters (llmlink_get_metrics, link/metrics.h): atomics,
     * no lock. */
    llk_metrics_t metrics;
};

/* ---- engine.c: lifecycle ---- */
/* This engine offers RDMA in its handshakes (LLK_EXT_RDMA). */
bool llk_engine_offers_rdma(const llmlink_t *e);
llmlink_status_t llk_engine_create(llmlink_t **out, llmlink_role_t role, uint64_t cluster_id);
llmlink_status_t llk_engine_init(llmlink_t *e, const llk_options_t *opts);
void llk_engine_finalize(llmlink_t *e);
void llk_engine_free(llmlink_t *e);
/* Requires e->mu. LLMLINK_SUCCESS when running, else the status to return
 * (with llmlink_last_error set). Defined in link_api.c (see there). */
llmlink_status_t llk_engine_check_running(const llmlink_t *e, const char *fn);
/* For ffi/: what the engine was created as. No lock (set at create). */
llmlink_role_t llk_engine_role(const llmlink_t *e);
uint64_t llk_engine_cluster_id(const llmlink_t *e);
/* The port listener `index` is bound to (the kernel's choice for port 0).
 * Takes e->mu; NOT_INITIALIZED / ENGINE_FINALIZED, or PARAM_INVALID for an
 * index past the listeners, with llmlink_last_error set. */
llmlink_status_t llk_engine_listen_port(llmlink_t *e, size_t index, uint16_t *port,
                                        const char *fn);

/* ---- reactor.c: the I/O thread ---- */
void *llk_reactor_main(void *arg);
/* Any thread: the reactor runs a pass soon. Defined in link_api.c. */
void llk_reactor_wake(llmlink_t *e);

/* ---- conn.c: connections, framing, state changes (all need e->mu) ---- */
llk_conn_t *llk_conn_new(llmlink_t *e, int fd, bool outbound, llk_conn_state_t state);
/* Hangs the transfer side of a link on c (c must have none yet). */
void llk_conn_set_xfer(llk_conn_t *c, void *ctx, const llk_conn_xfer_ops_t *ops);
void llk_conn_set_state(llmlink_t *e, llk_conn_t *c, llk_conn_state_t s);
/* Queues a frame; false if the queue is full (the peer stopped reading). */
bool llk_conn_queue(llk_conn_t *c, const uint8_t *frame, size_t len);
/* Queues a frame on the bulk queue (c->ntx) if it then holds at most
 * limit bytes; false when it would not (or out of memory). */
bool llk_conn_queue_bulk(llk_conn_t *c, const uint8_t *frame, size_t len, size_t limit);
bool llk_conn_queue_simple(llk_conn_t *c, llk_msg_type_t type);
bool llk_conn_queue_reject(llk_conn_t *c, llmlink_status_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Writes what is queued; arms EPOLLOUT when the socket is full. Returns -1
 * (and errno) on a socket error. */
int llk_conn_flush(llmlink_t *e, llk_conn_t *c, int64_t now);
/* Completes c's waiter (if any) and wakes the API threads. */
void llk_conn_complete(llmlink_t *e, llk_conn_t *c, llmlink_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Deregisters, shuts down and closes c's socket, if any. */
void llk_conn_close_fd(llmlink_t *e, llk_conn_t *c);
/* Closes the socket and frees c (reactor only). */
void llk_conn_destroy(llmlink_t *e, llk_conn_t *c);
void llk_conn_set_events(llmlink_t *e, llk_conn_t *c, bool want_out);
/* Reads what the socket has and hands every whole frame to the state
 * machine. Returns when the socket is drained, the peer closed, or the
 * connection left a readable state. */
void llk_conn_on_readable(llmlink_t *e, llk_conn_t *c, int64_t now);
/* Hands one whole frame (header checked, payload complete) to the state
 * machine that owns c's state (e->conn_handlers); what the reactor does for
 * every frame, and what the state-machine unit tests call. */
void llk_conn_dispatch(llmlink_t *e, llk_conn_t *c, const llk_frame_header_t *h,
                       const uint8_t *payload, int64_t now);
bool llk_conn_is_link(const llk_conn_t *c); /* LINKED or UNLINKING */
/* The status an unlink of c reports when the peer was not told. */
llmlink_status_t llk_conn_unlink_failure(const llk_conn_t *c);
/* The live (not CLOSING/DEAD) connection for remote_id in that direction. */
llk_conn_t *llk_conn_find(llmlink_t *e, uint64_t remote_id, bool outbound);
/* Links plus outbound attempts in progress: what llmlink.MaxLinks bounds. */
uint32_t llk_conn_count_links(const llmlink_t *e, bool include_pending);
const char *llk_conn_state_name(llk_conn_state_t s);

/* ---- link/server.c: accepting and the server handshake ---- */
void llk_server_on_listener(llmlink_t *e, llk_listener_t *l, int64_t now);
/* An accepted connection c (SRV_HANDSHAKE) starts its handshake: its
 * half-open deadline and the handshake counters (the unit tests' fake
 * accept calls it too). */
void llk_server_begin_handshake(llmlink_t *e, llk_conn_t *c, int64_t now);
/* How long an accepted connection may take to deliver its first complete
 * frame: the smaller of llmlink.FirstFrameTimeoutMs and HandshakeTimeoutMs. */
uint32_t llk_server_first_frame_ms(const llmlink_t *e);
/* A WARN for a limit that a hostile peer can trigger at will: at most one a
 * second, with the count of those not logged since. */
void llk_server_warn_limit(llmlink_t *e, int64_t now, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void llk_server_arm_listeners(llmlink_t *e, int64_t now);
void llk_server_on_frame(llmlink_t *e, llk_conn_t *c, const llk_frame_header_t *h,
                         const uint8_t *payload, int64_t now);
/* Both handshakes: records the peer's llm.SyncKvCacheWaitTime from its
 * HELLO / WELCOME extensions (LLK_EXT_WAIT_TIME) on xl; a malformed one is
 * ignored with a warning (the link then uses this side's own). */
void llk_xlink_take_peer_wait(llmlink_t *e, struct llk_xlink *xl, const llk_ext_t *ext,
                              uint16_t n);

/* ---- link/park.c: connections beyond the handshake limits ---- */
/* The key of a source address: IPv4 (or IPv4-mapped IPv6) by its /32,
 * IPv6 by its /64. */
void llk_park_key(const struct sockaddr *sa, uint8_t key[LLK_SRC_KEY_SIZE]);
/* Parks an accepted connection c (state SRV_PARKED, not in epoll) at the
 * end of the FIFO; when the pool is full, closes the oldest parked one. */
void llk_park_add(llmlink_t *e, llk_conn_t *c, int64_t now);
/* Takes c out of the FIFO (conn.c, when c leaves SRV_PARKED). */
void llk_park_unlink(llmlink_t *e, llk_conn_t *c);
/* Lets parked connections in, oldest first, while a slot is free and
 * their address is below its cap; closes those past their deadline. */
void llk_park_promote(llmlink_t *e, int64_t now);
/* Closes a parked connection at its first-frame deadline. */
void llk_park_timed_out(llmlink_t *e, llk_conn_t *c, int64_t now);
/* The reactor, after each timer pass (which may have freed slots): lets in
 * what can go in, closes parked connections past their deadline. Returns
 * the next parked deadline (0: none parked). */
int64_t llk_park_expire(llmlink_t *e, int64_t now);

/* ---- link/auth_handshake.c: the authentication exchange ---- */
/* Server, before a frame on a SRV_HANDSHAKE connection reaches HELLO /
 * ATTACH handling: runs AUTH_HELLO / AUTH_PROOF and refuses what may not
 * come yet. true: the frame goes on (authenticated, or no key anywhere). */
bool llk_auth_server_gate(llmlink_t *e, llk_conn_t *c, const llk_frame_header_t *h,
                          const uint8_t *payload, int64_t now);
/* Client, connected: queues AUTH_HELLO with a fresh Nc. false: the DRBG
 * failed (c's waiter completed, c DEAD). */
bool llk_auth_client_hello(llmlink_t *e, llk_conn_t *c);
/* Client: a frame (not REJECT) while waiting for AUTH_CHALLENGE. true:
 * MAC_s checked, AUTH_PROOF queued: queue HELLO now. false: c completed
 * and DEAD. */
bool llk_auth_client_on_challenge(llmlink_t *e, llk_conn_t *c, const llk_frame_header_t *h,
                                  const uint8_t *payload, int64_t now);
/* Both sides, when a link's xlink is installed on control connection c:
 * its session key Ks from c's nonces (nothing without a key). false when
 * libcrypto failed. */
bool llk_auth_bind_link(llmlink_t *e, llk_conn_t *c, struct llk_xlink *xl);
/* Server, e->mu held: ATTACH m (payload: its bytes) on connection c, which
 * passed the exchange, carries the right MAC under the link's session key
 * ks (NULL: the link has none). Counts and logs a failure. */
bool llk_auth_attach_ok_locked(llmlink_t *e, llk_conn_t *c, const uint8_t *ks,
                               const uint8_t *payload, const llk_msg_attach_t *m);
/* A WARN for an authentication failure (rate-limited, llk_server_warn_limit)
 * and the counter. */
void llk_auth_count_failure(llmlink_t *e, int64_t now, const char *peer, const char *why);

/* ---- link/client.c: connecting and the client handshake ---- */
void llk_client_start(llmlink_t *e, llk_conn_t *c, int64_t now);
void llk_client_on_writable(llmlink_t *e, llk_conn_t *c, int64_t now);
void llk_client_on_frame(llmlink_t *e, llk_conn_t *c, const llk_frame_header_t *h,
                         const uint8_t *payload, int64_t now);

/* ---- link/manager.c: established links, liveness, API side ---- */
void llk_link_on_frame(llmlink_t *e, llk_conn_t *c, const llk_frame_header_t *h,
                       const uint8_t *payload, int64_t now);
/* Peer closed (EOF or socket error `err`, 0 for EOF). */
void llk_link_on_closed(llmlink_t *e, llk_conn_t *c, int err);
/* Timers of one connection; returns its next deadline (0 = none). */
int64_t llk_link_on_timer(llmlink_t *e, llk_conn_t *c, int64_t now);

typedef struct llk_link_req {
    uint64_t remote_id;
    uint32_t remote_role; /* 0 = any */
    struct sockaddr_storage remote[LLMLINK_MAX_IP_INFOS];
    socklen_t remote_len[LLMLINK_MAX_IP_INFOS];
    size_t num_remote;
    struct sockaddr_storage local[LLMLINK_MAX_IP_INFOS];
    socklen_t local_len[LLMLINK_MAX_IP_INFOS];
    size_t num_local;
} llk_link_req_t;

llmlink_status_t llk_engine_link(llmlink_t *e, const llk_link_req_t *reqs, size_t n,
                                 int32_t timeout_ms, llmlink_status_t *statuses);
llmlink_status_t llk_engine_unlink(llmlink_t *e, const uint64_t *ids, size_t n,
                                   int32_t timeout_ms, bool force, llmlink_status_t *statuses);
llmlink_status_t llk_engine_check_link(llmlink_t *e, uint64_t remote_id);
llmlink_status_t llk_engine_stats(llmlink_t *e, llmlink_stats_t *s);
llmlink_status_t llk_engine_xfer_stats(llmlink_t *e, llmlink_xfer_stats_t *s);
/* llmlink_get_metrics (everything but version); link/metrics.c. */
void llk_engine_metrics(llmlink_t *e, llmlink_metrics_t *m);

#endif /* LLK_ENGINE_H */

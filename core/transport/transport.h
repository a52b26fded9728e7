/*
 * transport.h - how the bytes of one granted request move: the one table
 * of operations that every transport (tcp.c, shm.c, rdma.c) implements,
 * and the registry that lists them.
 *
 * Control flow stays in the transfer plane: the requester (xfer/requester.c)
 * sends a request on a borrowed data stream and reads the owner's answer;
 * the owner (xfer/owner.c) checks the request against its registry and
 * answers. Which bytes move how, and what each side must hold meanwhile, is
 * the transport's: the requester and the owner call this table and never
 * ask which transport they hold. The wire (xfer_wire.h) does not change:
 * each transport names the op codes and the answer type it uses.
 *
 * Choosing. llk_transports[] is in order of preference: shm, rdma, tcp.
 * For each request the requester takes the first transport whose
 * request_usable() says yes (tcp always does), so the fallback order is
 * shm -> rdma -> tcp. A transport that cannot serve (shm: EPERM from the
 * kernel, the owner's refusal, a pid not proven) marks itself refused on
 * the link and the request goes to the next one, unless the user forced it
 * (llmlink.Transport), then the call fails.
 *
 * Link state. What a transport needs per link lives behind
 * llk_xport_link_t.state[its index], made by link_new with the xlink and
 * freed by link_free after its last reference; it is guarded by the
 * xlink's mu. Which transports a link may use is decided once, from the
 * first data stream that attaches (llk_transport_attach): both ends'
 * llmlink.Transport and host identity.
 *
 * Fences. After fence(xl) returns, the transport moves no further byte
 * into either side's memory over xl, for any request:
 *   tcp  - the requester streams of the link are shut down (SHUT_RDWR),
 *          the owner streams for reading (SHUT_RD), which wakes the owner
 *          thread. A byte already in a socket's receive queue is not read
 *          into memory any more: the owner thread loads xl->broken_now
 *          before every step and closes the stream instead (unread bytes
 *          discarded, RST); a sendmsg/recvmsg already inside the kernel
 *          finishes that one call (at most one iovec batch). The peer sees
 *          an owner stream end only once the owner thread closed it: a
 *          requester whose WRITE failed waits (bounded) for that before
 *          its call returns (xfer/requester.c).
 *   shm  - nothing to stop on this side: process_vm_readv/writev runs on
 *          the requester's thread, so when its call has returned the copy
 *          is done. The owner cannot stop a peer's copy: it keeps its hold
 *          on the cache until the peer's XDONE or its exit (hold_watch,
 *          owner.c's lingering holds), so unregister_cache says
 *          CACHE_IN_USE meanwhile.
 *   rdma - every rail's QP moves to the error state: posted work requests
 *          complete flushed, and the peer's rkeys reach nothing over the
 *          link. Work requests the NIC has started may still complete;
 *          the requester reaps every completion before its call returns.
 *          Per request, grant_end invalidates the memory windows of the
 *          request's grant (where the device has type-2 windows, rdma.h).
 * fence is called by llk_xlink_break (xl->mu held) and so on every
 * failure, unlink and finalize; it must be idempotent and take only leaf
 * locks. Making it strict (a fence per request, waiting for the NIC) is
 * for a later change; this is the place.
 *
 * Adding a transport: one new file that defines an llk_transport_ops_t
 * (name, the LLK_TRANSPORT_* value that forces it, its op codes and answer
 * type, the hooks below: a NULL hook means "none needed"), and one entry
 * in llk_transports[] (transport.c) at its rank of preference, with an
 * LLK_XPORT_* index equal to that position. It must implement link_usable,
 * add_stats and, unless its bytes travel on the stream (on_stream), move,
 * serve_grant and a fence that keeps the guarantee above; link_new /
 * link_free when it keeps state per link, link_record / link_conflict when
 * llmlink.Transport or the peer's host decide whether a link may use it,
 * setup_client / serve_setup when a link needs a handshake of its own.
 * New op codes and message types are wire changes (xfer_wire.h).
 */
#ifndef LLK_TRANSPORT_H
#define LLK_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "llmlink.h"
#include "base/err.h"
#include "xfer/planner.h"
#include "xfer/xfer_wire.h"

struct llmlink;
struct llk_xlink;
struct llk_xfer_ctx;
struct llk_conn;
struct llk_cache;
struct llk_xstats;

/* Who this process is, for the same-host test: boot id, pid namespace. */
typedef struct llk_host_id {
    uint8_t boot_id[16];
    uint64_t pidns; /* inode of /proc/self/ns/pid */
    uint32_t pid;
} llk_host_id_t;

void llk_host_id_self(llk_host_id_t *h);
bool llk_host_id_same_host(const llk_host_id_t *a, const llk_host_id_t *b);

/* True when process `pid` holds the other end of TCP connection fd, on
 * this host (peer_proof.c): the proof shm needs before it trusts the
 * peer's claimed host id. */
bool llk_peer_proof(int fd, uint32_t pid);

/* The wire's op codes of the transports that move bytes off the stream
 * (xfer_wire.h keeps 3..LLK_XOP_LAST for them); tcp's are LLK_XOP_READ and
 * LLK_XOP_WRITE. Values are the wire's: never renumber. */
enum {
    LLK_XOP_SHM_READ = 3,  /* requester reads owner memory with process_vm_readv */
    LLK_XOP_SHM_WRITE = 4, /* requester writes owner memory with process_vm_writev */
    LLK_XOP_RDMA_READ = 5, /* requester RDMA-READs owner memory (XRESP_RDMA grant) */
    LLK_XOP_RDMA_WRITE = 6 /* requester RDMA-WRITEs owner memory */
};

/* Indexes into llk_transports[] and llk_xport_link_t.state. */
enum { LLK_XPORT_SHM = 0, LLK_XPORT_RDMA = 1, LLK_XPORT_TCP = 2, LLK_NXPORTS = 3 };

/* The transport part of a link (llk_xlink_t.xport), under the xlink's mu. */
typedef struct llk_xport_link {
    /* Set once, by the first stream to attach, before any stream is handed
     * out; later streams must agree. */
    bool set;
    uint8_t remote_transport; /* the peer's llmlink.Transport */
    llk_host_id_t remote_host;
    void *state[LLK_NXPORTS]; /* each transport's own, NULL when it has none */
} llk_xport_link_t;

/* ---- what the requester hands a transport -------------------------------- */

/* One granted request: the owner answered segs[0, nseg) of the plan. */
typedef struct llk_xmove {
    struct llk_xfer_ctx *ctx;
    int slot, fd;            /* the data stream */
    uint8_t op;              /* the request's op */
    const llk_xseg_t *segs;  /* local side of each segment */
    size_t nseg;
    uint64_t bytes;          /* their sum */
    const llk_xframe_header_t *h; /* the answer frame */
    const uint8_t *payload;
    const llk_xresp_t *resp; /* decoded XRESP, or NULL for the transport's own answer type */
} llk_xmove_t;

/* What the requester does next (fields left zero: nothing). */
typedef struct llk_xmove_out {
    bool send_done;          /* send XDONE(done_status) ... */
    bool done_gen;           /* ... with the grant's generation gen */
    uint32_t done_status;
    uint64_t gen;
    bool redo_on_stream;     /* then the same request again over tcp */
    llmlink_status_t refusal; /* the call fails with this; the link stays (msg: whole text) */
    llmlink_status_t failure; /* the link is lost (msg: what happened, the caller adds where) */
    char msg[LLK_ERR_MSG_MAX];
} llk_xmove_out_t;

/* request_usable's answers. */
typedef enum {
    LLK_XUSE_NO,   /* not this one: try the next */
    LLK_XUSE_YES,  /* this one */
    LLK_XUSE_STOP  /* none: the call is refused (out->refusal, out->msg) */
} llk_xuse_t;

/* ---- what the owner hands a transport ------------------------------------ */

typedef struct llk_xserve {
    struct llmlink *e;
    struct llk_xlink *xl;
    int slot, fd;
    uint64_t req_id;
    uint8_t op;
    /* An admitted request: the cache (held by the owner), the checked
     * segments as (address, length) pairs and their tensors. */
    struct llk_cache *cache;
    const uint64_t *segv;
    const uint32_t *segt;
    uint32_t nseg;
    uint64_t total;
    /* A setup frame: its type and payload. */
    uint16_t type;
    const uint8_t *rx;
    uint32_t rx_len;
    /* Out: the answer frame, in the owner's buffer (grown with realloc). */
    uint8_t **tx;
    size_t *tx_cap;
    size_t tx_len;
    uint64_t grant_gen;  /* checked against the requester's XDONE */
    bool revocable;      /* the peer may now touch the cache on its own */
    /* The transport's handle of the grant (NULL: nothing to end): the
     * owner hands it to grant_end exactly once. */
    void *grant;
    /* A refusal (return 1): the owner releases the cache and answers it. */
    uint32_t refusal;
    char msg[LLK_XWIRE_MAX_MSG + 1];
    /* A failure (return -1): the stream ends, and the link with it. */
    char why[224];
} llk_xserve_t;

typedef struct llk_transport_ops {
    const char *name;  /* llmlink.Transport's word: "shm", "rdma", "tcp" */
    const char *title; /* for messages: "shm", "RDMA", "tcp" */
    uint8_t index;     /* LLK_XPORT_* */
    uint8_t id;        /* LLK_TRANSPORT_* (options.h) that forces it */
    uint8_t op_read, op_write; /* its LLK_XOP_* */
    /* The owner's answer to a granted request: LLK_XMSG_RESP (iovecs), or
     * a type of the transport's own (decoded by the transport). */
    uint16_t answer_type;
    /* Its XDONE carries the grant's generation. */
    bool done_gen;
    /* The bytes travel on the data stream itself, moved by the caller's
     * poll loop (requester) and epoll loop (owner): no move/grant hooks. */
    bool on_stream;
    /* Nothing moves on the stream while the peer works with a grant, so
     * the owner's stall limit is stretched (owner.c). */
    bool long_grant;
    /* Largest planned slice, and whether one stream carries a whole call
     * (the transport moves the bytes off the streams). */
    uint64_t slice_bytes;
    bool one_stream;

    /* -- per link ---------------------------------------------------------- */
    /* Makes the transport's link state (NULL out of memory). */
    void *(*link_new)(void);
    /* Frees it; no call and no owner stream uses the link any more. */
    void (*link_free)(void *state);
    /* The first stream attached (xl->mu held; xport.set and remote_* are
     * filled): decide whether this link may use the transport. */
    void (*link_record)(struct llmlink *e, struct llk_xlink *xl);
    /* Why a link with a peer of that transport and host cannot run
     * transfers, or NULL (text in buf or static). Checked in reverse order
     * of preference (tcp, rdma, shm): a transport forced by one side
     * judges its pair first. */
    const char *(*link_conflict)(struct llmlink *e, struct llk_xlink *xl,
                                 const llk_host_id_t *remote, uint8_t remote_transport,
                                 char *buf, size_t cap);
    /* Client, first forward stream fd, before it is handed out (nothing
     * else reads it): per-link setup with the owner. SUCCESS also when the
     * transport is simply not used; a failure fails the link. */
    llmlink_status_t (*setup_client)(struct llmlink *e, struct llk_xlink *xl, int fd,
                                     int64_t deadline_ms, char *detail, size_t dlen);
    /* Owner: the setup frame this transport answers (0: none), and its
     * answer (0, or -1 with why: the stream ends). */
    uint16_t setup_type;
    /* A second frame type the owner hands to serve_setup (llk_xserve_t
     * type tells which; rdma: XRDMA_RAIL_RESET, the repair of a rail);
     * 0: none. */
    uint16_t repair_type;
    int (*serve_setup)(llk_xserve_t *q);
    /* See "Fences" above. xl->mu held. */
    void (*fence)(struct llk_xlink *xl);

    /* -- choosing ---------------------------------------------------------- */
    /* May the link carry requests now (planning; no side effect; takes
     * xl->mu). */
    bool (*link_usable)(struct llk_xlink *xl);
    /* May it carry this request over stream fd (may prove the peer, and
     * mark the transport refused on the link). NULL: link_usable. */
    llk_xuse_t (*request_usable)(struct llk_xfer_ctx *ctx, int fd, llk_xmove_out_t *out);
    /* The owner answered the transport's request with FEATURE_NOT_ENABLED
     * (msg): fall back (redo_on_stream) or refuse. NULL: a plain refusal. */
    void (*refused)(struct llk_xfer_ctx *ctx, const char *msg, llk_xmove_out_t *out);

    /* -- moving ------------------------------------------------------------ */
    /* Requester: move the granted segments (see llk_xmove_t). */
    void (*move)(llk_xmove_t *m, llk_xmove_out_t *out);
    /* Owner: may a request of this transport be served on this stream
     * (before the cache is looked up): SUCCESS, or a refusal status + msg. */
    llmlink_status_t (*serve_allowed)(struct llk_xlink *xl, int fd, char *msg, size_t cap);
    /* Owner: answer an admitted request with the grant (0), refuse it (1),
     * or fail the stream (-1). */
    int (*serve_grant)(llk_xserve_t *q);
    /* Owner: a grant of this transport is the peer process's to use until
     * its XDONE, and no fence stops it (shm: process_vm_writev). Returns a
     * new descriptor that becomes readable when that process is gone (the
     * caller closes it), or -1 (errno): the owner then keeps its hold on
     * the cache until the engine stops. NULL: the hold ends with the
     * stream, as before (tcp's bytes stop with the socket, rdma revokes). */
    int (*hold_watch)(struct llk_xlink *xl);
    /* Owner: the request of a grant that serve_grant made (q->grant) is
     * over: XDONE (done_ok: with SUCCESS), the stream ended (a stall, the
     * link broke, an unregister's revoke, engine stop). From its return
     * the peer can no longer move a byte with that grant. Called before
     * the owner drops its hold on the cache; NULL: nothing to end. */
    void (*grant_end)(struct llk_xlink *xl, void *grant, bool done_ok);

    /* -- counters ---------------------------------------------------------- */
    void (*add_stats)(struct llk_xstats *x, uint64_t requests, uint64_t fallbacks);
} llk_transport_ops_t;

extern const llk_transport_ops_t llk_transport_shm;
extern const llk_transport_ops_t llk_transport_rdma;
extern const llk_transport_ops_t llk_transport_tcp;

/* In order of preference; indexed by LLK_XPORT_*. */
extern const llk_transport_ops_t *const llk_transports[LLK_NXPORTS];

/* The transport every link can use, whose bytes travel on the stream (tcp):
 * what carries the CONSUME request, and a request again after another
 * transport declined it. */
#define LLK_TRANSPORT_ON_STREAM (llk_transports[LLK_NXPORTS - 1])

/* The transport that uses op code `op`, or NULL (an unknown op). */
const llk_transport_ops_t *llk_transport_by_op(uint8_t op);
/* The transport that answers setup frame `type`, or NULL. */
const llk_transport_ops_t *llk_transport_by_setup(uint16_t type);
/* The transport a call on xl would use now (planning): the first usable. */
const llk_transport_ops_t *llk_transport_for_link(struct llk_xlink *xl);
/* The transport one request over stream fd uses (the requester), or NULL
 * with out->refusal set. */
const llk_transport_ops_t *llk_transport_choose(struct llk_xfer_ctx *ctx, int fd,
                                                llk_xmove_out_t *out);

/* Link lifetime: every transport's state (-1 out of memory; freed), free
 * it, fence every transport (xl->mu held). */
int llk_transport_link_new(llk_xport_link_t *x);
void llk_transport_link_free(llk_xport_link_t *x);
void llk_transport_fence(struct llk_xlink *xl);

/* A data stream attached naming the peer's host and llmlink.Transport
 * (client: from ATTACH_OK; server: from ATTACH): NULL when the link may
 * run transfers with such a peer, else why not (text in buf, or static). */
const char *llk_transport_conflict(struct llmlink *e, struct llk_xlink *xl,
                                   const llk_host_id_t *remote, uint8_t remote_transport,
                                   char *buf, size_t cap);
/* Records what the first stream named and lets every transport decide
 * whether the link may use it; a later stream must name the same (false:
 * it names another host or transport). Takes xl->mu. */
bool llk_transport_record(struct llmlink *e, struct llk_xlink *xl, const llk_host_id_t *remote,
                          uint8_t remote_transport);
/* Client, first forward stream: every transport's setup_client. */
llmlink_status_t llk_transport_setup_client(struct llmlink *e, struct llk_xlink *xl, int fd,
                                            int64_t deadline_ms, char *detail, size_t dlen);

/* Neither side forces a transport other than t (auto, or t itself). */
bool llk_transport_allowed(const struct llmlink *e, const struct llk_xlink *xl,
                           const llk_transport_ops_t *t);

/* The peer offered RDMA and so does this side (link handshake). Client (c
 * its control connection): rail i is for local ip info i (or, without
 * ip infos, the control connection's address) and remote ip info i (mod
 * their count); server: c is NULL. Reactor thread, e->mu held. (rdma.c) */
void llk_xlink_set_rails(struct llk_xlink *xl, const struct llk_conn *c, bool peer_offers);
/* The peer reads the READ depths in rail records (LLK_EXT_RDMA_READ_DEPTH,
 * link/wire.h): this side fills them in its own. Reactor thread, e->mu
 * held, with llk_xlink_set_rails. (rdma.c) */
void llk_xlink_set_peer_read_depth(struct llk_xlink *xl, bool on);

#endif /* LLK_TRANSPORT_H */

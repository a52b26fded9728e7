/*
 * rdma_verbs_int.h - what the verbs side of the RDMA transport shares
 * between its files (not an interface: rdma.h is): devices, MR sets,
 * rails and their slot tables (rdma_verbs_link.c: devices, rails, MRs,
 * grants), and the data path with rail failover (rdma_move.c). Only with
 * LLK_HAVE_VERBS.
 */
#ifndef LLK_RDMA_VERBS_INT_H
#define LLK_RDMA_VERBS_INT_H

#include "transport/rdma.h"
#include "transport/transport_testing.h"
#include "transport/verbs.h"

#if LLK_HAVE_VERBS
#include <pthread.h>
#include <stdatomic.h>

#define MAX_DEVS 8
#define MAX_GIDS 256
/* Send queue depth of a rail's QP, and WRs per chain (one signaled). */
#define SQ_DEPTH 128u
#define MAX_CHAIN 8u
#define RD_ATOM_CAP 16u
#define RAIL_SLOTS 64u /* chains in flight per rail: SQ_DEPTH / 2 */
#define RETRY_CNT 7
#define POLL_BATCH 16

typedef struct rdma_dev {
    int index;
    char name[64];
    struct ibv_context *ctx;
    struct ibv_pd *pd;
    uint8_t port;
    uint8_t active_mtu; /* ibv_mtu */
    uint16_t lid;
    bool is_ib;
    int gid_tbl_len;
    uint32_t max_qp_wr, max_rd_atom, max_init_rd_atom;
    /* Type-2 memory windows (IBV_DEVICE_MEM_WINDOW_TYPE_2B, max_mw > 0):
     * grants are windows bound per request, MRs local-only. */
    bool mw2;
} rdma_dev_t;

struct llk_rdma {
    const llk_verbs_t *v;
    pthread_mutex_t mu; /* MR sets, and lmrs */
    /* Mode PD_PER_LINK: the MR sets of (link, cache) pairs, made on first
     * use (link_key) and freed with the link or the cache. */
    struct link_mrs *lmrs;
    rdma_dev_t dev[MAX_DEVS];
    int ndev;
    _Atomic uint64_t next_gen;
    llk_options_t o;
    _Atomic uint32_t post_delay_ms; /* test seam (transport_testing.h) */
    /* Grants whose windows are bound (owner side), and every window
     * operation: bind, invalidate, the revoke of cache_free and a link's
     * free. A leaf lock above the rails' (taken before rl->mu). */
    pthread_mutex_t gmu;
    llk_rdma_grant_t *grants;
    llk_test_rdma_grant_t last; /* the last grant made (test seam) */
};

struct llk_rdma_mrs {
    uint64_t gen;
    uint32_t nt;
    int ndev;
    struct ibv_mr **mr;  /* [dev * nt + tensor] */
    uint32_t *order;     /* tensors by address, for lkey lookups */
    uint8_t **addrs;     /* the cache's tensor bases (its array) */
    uint64_t tensor_bytes;
};

struct move_op;
typedef struct slot {
    bool busy;
    bool read;
    uint32_t seq, nwr;
    struct move_op *op; /* NULL: orphaned by a call that gave up */
    /* llk_rdma_move: the chain's slices (indexes into the call's sges,
     * given back to the call if the chain fails) and their bytes */
    uint32_t sidx[MAX_CHAIN];
    uint64_t bytes;
} slot_t;

typedef struct rail {
    rdma_dev_t *dev;
    /* The PD of the QP: the device's, or the rail's own (own_pd) in mode
     * PD_PER_LINK, where the link's MRs are registered (link_key). */
    struct ibv_pd *pd;
    bool own_pd;
    int gid_index;
    union ibv_gid gid;
    struct ibv_cq *cq;
    struct ibv_qp *qp;
    uint32_t psn;
    uint8_t mtu; /* negotiated path MTU, 0 before connect */
    pthread_mutex_t mu;
    uint32_t free_wr, rd_max, rd_inflight, seq;
    bool failed; /* down: no call posts on it (rail_down) */
    bool in_err; /* the QP was moved to IBV_QPS_ERR (qp_to_err) */
    /* Why the rail is down: its first real reason (a completion status, a
     * post error, the port state) once there is one (why_real). */
    bool why_real;
    char down_why[160];
    _Atomic uint64_t bytes; /* moved by this engine's requests (stats) */
    int64_t repair_at; /* the next repair attempt, not before (rdma_repair.c) */
    /* An attempt holds the rail from llk_rdma_rail_repairable to
     * llk_rdma_rail_repair_done: the mender and a request never run two at
     * once (the probe releases rl->mu while it waits). */
    bool repairing;
    /* The wait after a failed attempt (port ACTIVE, but the exchange or
     * the probe failed): 1 s, doubling to REPAIR_BACKOFF_MAX_MS; 0 again
     * once the rail is repaired. */
    uint32_t repair_backoff_ms;
    /* When a chain of the rail last completed, or the rail last went from
     * idle to busy (llk_now_ms; rl->mu): the stall check's clock. */
    int64_t progress_ms;
    bool repair_logged; /* a failed repair was logged since the rail went down */
    /* The peer's GID of this rail, from its first connect: a repair
     * (XRDMA_RAIL_RESET) may give the rail a fresh QP, never point it at
     * another address. */
    bool peer_gid_set;
    uint8_t peer_gid[16];
    /* READ depths: what this side's device allows as initiator and as
     * responder (advertised); rd_max is what the rail uses as initiator
     * once connected (llk_rdma_rd_initiator). */
    uint32_t rd_init, rd_dest;
    slot_t slot[RAIL_SLOTS];
    /* Type-2 windows not bound now, for the next grants (r->gmu). */
    struct ibv_mw **pool;
    uint32_t npool, pool_cap;
} rail_t;

/* Mode PD_PER_LINK: what a link registered of a cache, in its rails' own
 * PDs, [(kind * nrails + rail) * nt + tensor], each made on first use:
 * LMR_READ (REMOTE_READ: pull grants), LMR_WRITE (REMOTE_WRITE: push
 * grants), LMR_LOCAL (local only: this side's own buffers as requester).
 * In r->lmrs under r->mu. */
enum { LMR_READ = 0, LMR_WRITE = 1, LMR_LOCAL = 2, LMR_KINDS = 3 };
typedef struct link_mrs {
    struct link_mrs *next;
    const struct llk_rdma_link *l;
    const struct llk_rdma_mrs *m;
    struct ibv_mr **mr;
} link_mrs_t;

struct llk_rdma_link {
    llk_rdma_t *r;
    uint16_t nrails;
    int32_t wait_ms;
    llk_rdma_prot_t prot;
    /* Rails not down; failovers: rails that went down while others were
     * up (stats); port_due: the next port check (check_ports). */
    _Atomic uint32_t nup, failovers, repairs;
    _Atomic int64_t port_due;
    rail_t rail[LLK_XWIRE_MAX_RAILS];
};

/* One grant of the owner: the windows it bound, [seg * nrails + rail]
 * (NULL on a rail whose device has none: the rkeys there are the MRs'; no
 * array at all when no rail has windows). */
struct llk_rdma_grant {
    llk_rdma_grant_t *prev, *next; /* r->grants, in MW mode */
    llk_rdma_t *r;
    llk_rdma_link_t *l; /* outlives the grant: the owner ends it before the link goes */
    const llk_rdma_mrs_t *m;
    uint32_t nmw;
    uint16_t nrails;
    bool dead; /* windows already deallocated (revoke, link free) */
    struct ibv_mw **mw;
};

/* A slice's state in its call (move_op_t.state): waiting for a rail, in a
 * chain on the wire, or moved (its chain's signaled completion arrived
 * with success). */
enum { SG_PENDING = 0, SG_POSTED = 1, SG_DONE = 2 };

/* One llk_rdma_move call (state != NULL), or one run_local (state NULL).
 * Other calls may hand it completions (under the lock of the rail they
 * poll) while it looks at another rail: chains, failed, state, done and
 * requeued are atomic; st and rail (run_local: one rail, its lock) are
 * written before failed is set. */
typedef struct move_op {
    _Atomic uint32_t chains; /* in flight */
    _Atomic bool failed;     /* run_local: a chain completed in error */
    enum ibv_wc_status st;
    uint16_t rail;
    _Atomic uint8_t *state;    /* per slice, SG_* */
    _Atomic size_t done;       /* slices SG_DONE */
    _Atomic uint32_t requeued; /* chains that gave their slices back (failed) */
} move_op_t;

/* ---- shared by the data path (rdma_move.c) and the grants' local work
 * requests (rdma_verbs_link.c); "rl->mu held" where they say so ---------- */

/* Hands rail k's completions (at most a batch) to their chains (rl->mu
 * held): the number reaped, or -1 (the rail is then down). */
int llk_rv_poll_rail(llk_rdma_link_t *l, rail_t *rl, uint16_t rail_no);
/* A free slot of the rail, or -1 (rl->mu held). */
int llk_rv_free_slot(rail_t *rl);
/* Accounts nwr work requests just posted as one chain in slot si (rl->mu
 * held): send-queue room, READ credits when read, op's chains (op NULL:
 * a chain of no call, whose completion only gives the slot back). */
void llk_rv_slot_take(rail_t *rl, int si, uint32_t seq, uint32_t nwr, bool read, move_op_t *op);
/* Whether any chain of the rail is in flight (rl->mu held). */
bool llk_rv_slots_busy(const rail_t *rl);
/* Marks rail k down for the whole link, once (rl->mu held); why is kept
 * while it is the rail's first real reason (real: not a flush); count: a
 * failover when other rails are still up. */
void llk_rv_rail_down(llk_rdma_link_t *l, rail_t *rl, uint16_t k, const char *why, bool real,
                      bool count);
/* The rail's QP to the error state, once (rl->mu held). */
void llk_rv_qp_to_err(const llk_rdma_t *r, rail_t *rl);
/* Reaps op's chains on the rails of mask (their QPs in the error state),
 * bounded by a drain time; then llk_rv_orphan for what is left. */
void llk_rv_reap(llk_rdma_link_t *l, move_op_t *op, uint32_t mask);
void llk_rv_orphan(llk_rdma_link_t *l, move_op_t *op);
/* The rails up now, as a mask (bit k: rail k); takes each rail's lock. */
uint32_t llk_rv_rails_up(llk_rdma_link_t *l);
/* rdma_verbs_link.c: a rail's QP to INIT; INIT -> RTR -> RTS against the
 * peer's record (sets the rail's path MTU and READ depth). 0 or -1. */
int llk_rv_to_init(const llk_verbs_t *v, rail_t *rl);
/* A rail's send-queue depth on its device: SQ_DEPTH, or less where the
 * device allows less. */
uint32_t llk_rv_sq_depth(const rdma_dev_t *d);
/* An RC QP of that depth on rl's CQ and PD, in RESET; NULL with why
 * (rail_create, and a repair's fresh QP). */
struct ibv_qp *llk_rv_qp_new(const llk_rdma_t *r, const rail_t *rl, uint32_t depth, char *why,
                             size_t cap);
int llk_rv_rail_connect(llk_rdma_link_t *l, rail_t *rl, const llk_xrail_wire_t *rem, char *why,
                        size_t cap);
/* Sleeps *us microseconds, doubling it up to 1 ms. */
void llk_rv_nap(unsigned *us);

#endif /* LLK_HAVE_VERBS */
#endif /* LLK_RDMA_VERBS_INT_H */

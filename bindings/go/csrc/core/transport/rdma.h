/*
 * rdma.h - the RDMA transport: devices, rails (one RC QP pair per rail),
 * memory regions of registered caches, and the data path (chained RDMA
 * READ / WRITE work requests).
 *
 * Everything goes through the verbs table of verbs.h (dlopen), so this
 * compiles to stubs that report "built without libibverbs headers" where
 * <infiniband/verbs.h> is missing, and fails cleanly at run time where
 * libibverbs.so.1 or a device is missing.
 *
 * Engine: llk_rdma_open() at llmlink_init (llmlink.Transport auto or rdma)
 * opens every device with an active port (or llmlink.RdmaDevice /
 * llmlink.RdmaPort) and a protection domain on each; llk_rdma_close() at
 * llmlink_destroy releases them, after every link and cache (reverse order
 * of creation: QPs, CQs of the links -> MRs of the caches -> PDs ->
 * device contexts).
 *
 * Link: rails paired by the data where both ends announced
 * LLK_EXT_RDMA_RAILS (rdma_probe.h: the client's candidate addresses and
 * the owner's RDMA addresses, llk_rdma_local_addrs, paired by subnet by
 * llk_rdma_pair, the same rule on both ends; the owner refuses a setup
 * naming another pair); otherwise, and when no pair shares a subnet, one
 * rail per local address of the link (the client's ip infos, or the
 * address its control connection left from) to the remote ip info at its
 * position. A rail takes the device
 * and GID whose RoCE v2 GID is that address (llmlink.RdmaGidIndex names
 * the index instead), creates a CQ and an RC QP and moves it to INIT;
 * llk_rdma_link_connect() moves it to RTR and RTS with the peer's QP
 * number, PSN, GID, LID and active MTU (path MTU = the smaller active MTU,
 * capped by llmlink.RdmaMtu), GRH traffic class llm.RdmaTrafficClass,
 * service level llm.RdmaServiceLevel, ACK timeout / retry count from
 * llm.SyncKvCacheWaitTime (rdma_plan.h).
 *
 * Caches: a cache's MRs (one per tensor and device) are made on its first
 * RDMA use and live until the registry frees the cache (the registry calls
 * llk_rdma_cache_free through its transport hook; it knows nothing of
 * verbs). Each MR set has a generation, engine-wide and never reused, that
 * grants carry: the owner checks it in the requester's XDONE.
 *
 * What the hardware enforces (issue 13, least privilege). Where every
 * rail's device has type-2 memory windows (IBV_DEVICE_MEM_WINDOW_TYPE_2B),
 * the link runs in protection mode MW: MRs are registered LOCAL_WRITE |
 * MW_BIND only, so no region of this engine is remotely accessible by
 * itself (a requester's own caches included); a grant binds one type-2
 * window per segment and rail, through that rail's QP (so it works over
 * that QP only), with REMOTE_READ for a pull and REMOTE_WRITE for a push,
 * covering exactly the segment, and carries the windows' rkeys (a new key
 * at every binding). When the request ends (XDONE, the stream ends: a
 * stall, a link break, engine stop) the owner invalidates the windows
 * (IBV_WR_LOCAL_INV on the same QP; deallocated where the QP is down), and
 * an unregister that revokes a grant (llk_rdma_cache_free) deallocates
 * them before it deregisters the MRs. Binds and invalidations are one
 * posted chain per rail with one signaled completion; windows are pooled
 * per rail of the link.
 *
 * Devices without type-2 windows (or LLMLINK_TEST_RDMA_NO_MW set, which
 * makes the library treat every device so): mode PD_PER_LINK. Every rail
 * of such a link gets a protection domain of its own (a link that mixes
 * devices gets one on every rail, the windowed ones too), its QP is
 * created in it, and the device's shared PD holds no MR of a cache. A
 * cache granted over the link gets, on its first grant, MRs of its own in
 * the rail's PD, per tensor: REMOTE_READ only for pull grants,
 * REMOTE_WRITE (+ LOCAL_WRITE) only for push grants; the requester's own
 * buffers are registered there local-only (an lkey must come from the PD
 * of the QP that posts). They live until the link is freed (its MRs, then
 * its QPs and PDs) or the cache is (the registry's xport_free, also the
 * revoke of an unregister: every link's MRs of the cache are deregistered,
 * so the peer's keys stop working). What the NIC enforces then: a pull
 * grant's key cannot write, a push grant's cannot read, a key of link A
 * fails over link B's QP (another PD), the requester's regions are not
 * remotely accessible. The limits of the mode: a key covers its whole
 * tensor and stays usable after the request ends (XDONE, a timeout) until
 * the link breaks (QPs to error, then freed) or the cache is unregistered
 * - there are no windows to invalidate. Its price: up to three MRs (read,
 * write, local) per tensor, link and rail, each pinning the tensor once
 * more (MR count and registration time grow with links x caches; pinned
 * pages are shared, not copied). The old mode NONE (whole-tensor
 * read-write rkeys in one PD per device, shared by all links) is gone:
 * no device reaches it any more; LLMLINK_RDMA_PROTECTION_REGION of the ABI
 * is never reported now.
 *
 * Soft-RoCE (rxe, 5.14 to at least 6.x) checks a window's key, access
 * right, QP and state, but then the range of the window's MR, not of the
 * window: there a grant reaches its whole tensor (read-only or write-only,
 * over its link's QP, until the request ends); hardware checks the
 * window's bounds.
 *
 * Threads: rails are shared by every call on the link; a rail's mutex
 * covers posting, polling and its slot table, and a completion is handed
 * to whichever call owns its chain, so calls may poll for each other.
 */
#ifndef LLK_RDMA_H
#define LLK_RDMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "xfer/cache_registry.h"
#include "llmlink.h"
#include "base/options.h"
#include "transport/rdma_wire.h"

typedef struct llk_rdma llk_rdma_t;
typedef struct llk_rdma_link llk_rdma_link_t;
typedef struct llk_rdma_mrs llk_rdma_mrs_t;
typedef struct llk_rdma_grant llk_rdma_grant_t;
struct llk_test_rdma_grant;

/* How a link's grants are enforced (see above; for the per-link stats). */
typedef enum {
    LLK_RDMA_PROT_UNUSED = 0, /* the link does not use RDMA */
    LLK_RDMA_PROT_MW,         /* a type-2 window per grant, segment and rail */
    LLK_RDMA_PROT_PD_PER_LINK  /* a PD per link, read-only / write-only MRs per link */
} llk_rdma_prot_t;

/* "mw", "pd-per-link", "unused". */
const char *llk_rdma_protection_name(llk_rdma_prot_t p);
/* A link's mode (UNUSED for NULL). */
llk_rdma_prot_t llk_rdma_link_protection(const llk_rdma_link_t *l);

/* The engine's devices, or NULL with the reason in why (no library, no
 * device, no active port, ...). gen_seed makes generations differ between
 * engine incarnations. */
llk_rdma_t *llk_rdma_open(const llk_options_t *o, uint64_t gen_seed, char *why, size_t cap);
void llk_rdma_close(llk_rdma_t *r);
/* Test seam (transport_testing.h): ms a requester waits between a grant
 * and its work requests. 0 (the default) costs nothing. NULL r: no-op / 0. */
void llk_rdma_set_post_delay_ms(llk_rdma_t *r, uint32_t ms);
uint32_t llk_rdma_post_delay_ms(llk_rdma_t *r);
/* Registry hook (llk_registry_t.xport_free): deregisters c's MRs. */
void llk_rdma_cache_free(void *rdma, llk_cache_t *c);

/* The engine's RDMA addresses (XRDMA_PROBE / _OK, LLK_EXT_RDMA_RAILS): the
 * IP of every RoCE v2 GID of every open device's port that can end a rail
 * (llk_rdma_addr_routable: no IPv6 link-local), with the prefix length of
 * the address on the GID's netdev (llk_rdma_ip_prefix) and the
 * port's active MTU; in device, then GID-index order; an address on two
 * devices once. At most cap; the count (0 without devices, or on a port
 * whose GIDs are not IPs: InfiniBand). */
size_t llk_rdma_local_addrs(llk_rdma_t *r, llk_rdma_addr_t *out, size_t cap);
/* The prefix length of local address ip (16-byte GID form) on interface
 * ifname (the GID's netdev; "" or NULL: any interface that holds ip), from
 * getifaddrs; a host prefix (32 / 128) where none holds it. */
uint8_t llk_rdma_ip_prefix(const uint8_t ip[16], const char *ifname);

/* A link's rails for these local addresses (1..LLK_XWIRE_MAX_RAILS; one
 * address may serve several rails), QPs in INIT. All or nothing (rail i
 * of one end is rail i of the other): NULL with why
 * naming the first address no device serves. */
llk_rdma_link_t *llk_rdma_link_create(llk_rdma_t *r, const struct sockaddr_storage *ips,
                                      size_t n, int32_t wait_ms, char *why, size_t cap);
uint16_t llk_rdma_link_nrails(const llk_rdma_link_t *l);
/* This side's rail records (target_ip left zero), nrails of them. */
void llk_rdma_link_local(const llk_rdma_link_t *l, llk_xrail_wire_t *out);
/* INIT -> RTR -> RTS against the peer's records (as many as this side's rails). */
int llk_rdma_link_connect(llk_rdma_link_t *l, const llk_xrail_wire_t *remote, uint16_t n,
                          char *why, size_t cap);
/* The rail part of llmlink_get_link_stats (version 2): rdma_rails,
 * rdma_rails_up, rdma_rail_failovers, rdma_rail_repairs, rdma_rail_bytes,
 * rdma_rail_mtu. NULL l: leaves out untouched (all 0). */
void llk_rdma_link_rail_stats(const llk_rdma_link_t *l, llmlink_link_stats_t *out);
/* "rxe0 port 1 gid 1 mtu 1024, ..." for messages. */
void llk_rdma_link_describe(const llk_rdma_link_t *l, char *out, size_t cap);
/* Moves every rail's QP to the error state: posted work requests stop and
 * complete flushed, and the peer can no longer reach this side's memory
 * over the link. For a link that broke (llk_xlink_break) or a transfer that
 * gave up. Any thread; NULL: no-op. */
void llk_rdma_link_abort(llk_rdma_link_t *l);
/* Destroys QPs, then CQs. No call may be using the link. NULL: no-op. */
void llk_rdma_link_free(llk_rdma_link_t *l);

/* c's MRs on every device (made on first use). Valid while c is acquired.
 * NULL with why on failure. */
const llk_rdma_mrs_t *llk_rdma_cache_mrs(llk_rdma_t *r, llk_cache_t *c, char *why, size_t cap);
uint64_t llk_rdma_mrs_generation(const llk_rdma_mrs_t *m);
/* The lkey covering [addr, addr + len) for rail `rail` of l; false if no
 * tensor does (or, in mode PD_PER_LINK, its local MR in the link's PD
 * could not be registered: logged). */
bool llk_rdma_lkey(const llk_rdma_mrs_t *m, llk_rdma_link_t *l, uint16_t rail,
                   const uint8_t *addr, uint64_t len, uint32_t *lkey);

/*
 * Owner: the grant of segments (segv: address, length pairs; segt: their
 * tensors) of m over link l, REMOTE_WRITE if write else REMOTE_READ. Fills
 * rkeys[seg * nrails + rail]. 0 and *out (in mode NONE a handle with no
 * window); 1: refused (no window to be had, out of memory; the link stays);
 * -1: the binds failed (the link's QPs are down). why on failure.
 */
int llk_rdma_grant_new(llk_rdma_link_t *l, const llk_rdma_mrs_t *m, bool write,
                       const uint64_t *segv, const uint32_t *segt, uint32_t nseg,
                       uint32_t *rkeys, int64_t deadline_ms, llk_rdma_grant_t **out, char *why,
                       size_t cap);
/* Ends a grant: its windows stop working (invalidated and pooled, or
 * deallocated) before this returns. Exactly once per grant; NULL: no-op. */
void llk_rdma_grant_end(llk_rdma_grant_t *g, int64_t deadline_ms);

/* Test seams (transport_testing.h). */
void llk_rdma_test_last_grant(llk_rdma_t *r, struct llk_test_rdma_grant *out);
unsigned llk_rdma_test_live_grants(llk_rdma_t *r);
bool llk_rdma_test_rail(llk_rdma_link_t *l, uint16_t rail, void **qp, void **cq);
bool llk_rdma_test_mr_keys(const llk_rdma_mrs_t *m, uint32_t tensor, uint32_t *lkey,
                           uint32_t *rkey);

/* One work request: len bytes between local laddr and remote raddr, with
 * the keys of every rail of the link (lkey[k], rkey[k] for rail k: in mode
 * PD_PER_LINK a rail's lkey is its own PD's), so that a slice can move to
 * another rail when its preferred one (`rail`, the planner's round robin)
 * is down or fails under the call. */
typedef struct llk_rdma_sge {
    uint64_t laddr, raddr, len;
    uint32_t lkey[LLK_XWIRE_MAX_RAILS], rkey[LLK_XWIRE_MAX_RAILS];
    uint16_t rail;
} llk_rdma_sge_t;

/*
 * Posts every sge as RDMA READ (remote -> local) or WRITE, in chains of a
 * few WRs with only the last signaled, never more in flight per rail than
 * its send queue (READs: its max_rd_atomic), and waits for all.
 *
 * Failover: a rail whose chain completes in error, whose post fails, or
 * whose device port is not ACTIVE (checked while waiting, at most every
 * LLK_RDMA_PORT_CHECK_MS per link, by ibv_query_port: polling rather than
 * async events, which would need a thread per device context) is marked
 * down for the whole link (its QP to the error state at once, so it stops
 * instead of running into its retry timeout), and every slice of the call
 * that had not completed on it (a chain whose signaled completion did not
 * arrive with success) goes again over the rails still up: a READ or
 * WRITE of the same bytes again is idempotent. Later calls skip rails that
 * are down. Returns SUCCESS; NETWORK_ERROR when no rail is left (msg names
 * each rail's first real reason: ibv_wc_status_str of its first non-flush
 * completion error, a post error or the port state - never just
 * "flushed") - the caller then kills the link; WAIT_PROCESS_TIMEOUT past
 * deadline_ms; NOT_YET_LINK when aborted(actx) turns true (the link broke).
 *
 * What the owner side sees of a rail failed here: its own QP of that rail
 * stays in RTS (nothing tells it) until the repair replaces the rail
 * (llk_rdma_rail_reset_begin, below), or the link goes. That is safe: this side's QP is in the error state, so
 * nothing more lands in this side's memory through it; the owner's memory
 * is reachable through its QP of the rail only by this side's QP, which is
 * dead. In mode MW the owner's windows of a request are invalidated at its
 * XDONE as always (on a rail the owner cannot reach, deallocated); in mode
 * PD_PER_LINK the rkeys stay valid until the link or the cache goes, the
 * mode's documented limit, over a QP whose only peer is in error.
 */
#define LLK_RDMA_PORT_CHECK_MS 64
llmlink_status_t llk_rdma_move(llk_rdma_link_t *l, bool write, const llk_rdma_sge_t *sg,
                               size_t n, int64_t deadline_ms, bool (*aborted)(void *), void *actx,
                               char *msg, size_t cap);

/*
 * The repair of a rail that went down (rdma_repair.c), without relinking:
 * the client end of the link (the one that ran XRDMA_SETUP: its mender
 * thread in the background, or a request before it sends) asks, when
 * llk_rdma_rail_repairable (down, its port ACTIVE again, no attempt
 * running, at most one a second per rail): reset_begin gives the rail a fresh QP in
 * INIT (the old one destroyed once no chain of it is in flight and the
 * windows bound through it are deallocated) and this side's record for
 * XRDMA_RAIL_RESET; the owner does reset_begin and reset_end with the
 * client's record and answers with its own (XRDMA_RAIL_RESET_OK); the
 * client's reset_end with that brings the rail up again (stats:
 * rdma_rail_repairs) once the peer answers a zero-length RDMA READ on the
 * fresh QP within probe_ms (the client's; the owner passes 0: its QP is
 * the responder). reset_begin: 0, 1 (chains still in flight: later), -1
 * (why); reset_end: 0 or -1 (why; the rail stays down).
 */
bool llk_rdma_rail_repairable(llk_rdma_link_t *l, uint16_t k);
/* Ends the attempt that llk_rdma_rail_repairable (true) began: until then
 * no other attempt on the rail starts; the next one a second from now. */
void llk_rdma_rail_repair_done(llk_rdma_link_t *l, uint16_t k);
/* How many of l's rails are down now (a cheap look, no port query);
 * 0 for NULL. */
uint16_t llk_rdma_link_rails_down(llk_rdma_link_t *l);
/* true the first time since rail k went down (or was last repaired): a
 * failed attempt is logged once (WARN), the retries at DEBUG. */
bool llk_rdma_rail_repair_log_once(llk_rdma_link_t *l, uint16_t k);
int llk_rdma_rail_reset_begin(llk_rdma_link_t *l, uint16_t k, llk_xrail_wire_t *rec, char *why,
                              size_t cap);
int llk_rdma_rail_reset_end(llk_rdma_link_t *l, uint16_t k, const llk_xrail_wire_t *rem,
                            int probe_ms, char *why, size_t cap);

/* ---- the transport's link state (rdma.c) ---------------------------------- */

struct llk_xlink;

/* What the RDMA transport keeps per link, under the xlink's mu. peer: both
 * ends offered RDMA in the handshake (LLK_EXT_RDMA). The rails are set up
 * once, over the first forward stream, before it is handed out (client:
 * setup_client; server: the owner thread answers XRDMA_SETUP); then link
 * and use are set and never change until the xlink is freed, which frees
 * the rails. */
typedef struct llk_rdma_xlink {
    bool peer;
    bool forced; /* either end set llmlink.Transport=rdma: no fallback */
    bool use;
    /* The peer sent LLK_EXT_RDMA_READ_DEPTH: this side's rail records carry
     * its READ depths; without it they go with the byte 0, as an llmlink
     * 0.3 peer requires (llk_xwire_rails_for_peer). */
    bool peer_read_depth;
    /* Both ends announced LLK_EXT_RDMA_RAILS: the client sends XRDMA_PROBE
     * before XRDMA_SETUP and the rails are the pairs of llk_rdma_pair over
     * the two ends' addresses (without it, rails pair by position), and
     * a failed rail is repaired with XRDMA_RAIL_RESET (without it, it stays
     * down until the link is made again). */
    bool peer_rails;
    /* Owner, after the XRDMA_PROBE: the (client address, server address)
     * pairs its own run of the rule made (npairs 0: none usable by subnet,
     * the position rule of before applies), which XRDMA_SETUP must match. */
    bool probed;
    uint16_t npairs;
    uint8_t pair_client[LLK_XWIRE_MAX_RAILS][16], pair_server[LLK_XWIRE_MAX_RAILS][16];
    llk_rdma_link_t *link;
    /* Client: the addresses of its rails (its ip infos, or the control
     * connection's) and the server addresses they are for, by position;
     * given: its local ip infos as the user gave them (with
     * LLK_EXT_RDMA_RAILS, when any, its only candidate addresses). */
    uint16_t nrail_addrs, ngiven;
    struct sockaddr_storage given[LLMLINK_MAX_IP_INFOS];
    struct sockaddr_storage rail_local[LLK_XWIRE_MAX_RAILS], rail_target[LLK_XWIRE_MAX_RAILS];
} llk_rdma_xlink_t;

/* xl's RDMA state (tests read it). */
llk_rdma_xlink_t *llk_rdma_xlink(struct llk_xlink *xl);
/* The protection mode of xl's RDMA rails (UNUSED when it has none); takes
 * xl->mu. Name: llk_rdma_protection_name. */
llk_rdma_prot_t llk_rdma_xlink_protection(struct llk_xlink *xl);
/* The same as an llmlink_rdma_protection_t, for llmlink_get_link_stats. */
uint32_t llk_rdma_stats_protection(struct llk_xlink *xl);
/* Background repair (rdma_mender.c): the client end of link xl
 * re-establishes its rails that are down and whose port is ACTIVE again,
 * over one of its idle data streams (never waiting for one: a busy link
 * repairs at the start of its next request instead). Returns how many
 * rails it repaired; breaks the link when the exchange broke off. */
int llk_rdma_xlink_mend(struct llk_xlink *xl);
/* The engine's mender thread: started at llmlink_init when the engine has
 * RDMA, stopped at finalize before the links break. */
llmlink_status_t llk_rdma_mender_start(llmlink_t *e);
void llk_rdma_mender_stop(llmlink_t *e);
/* xl's rails into out (llk_rdma_link_rail_stats); takes xl->mu. */
void llk_rdma_xlink_rail_stats(struct llk_xlink *xl, llmlink_link_stats_t *out);

#endif /* LLK_RDMA_H */

/*
 * transport/rdma.c - the RDMA transport's table (transport.h): rails set
 * up once per link over its first forward stream (XRDMA_SETUP), grants
 * (XRESP_RDMA: addresses, rkeys, the generation of the cache's MRs) that
 * the requester uses with READ / WRITE work requests, and an XDONE that
 * names the generation. Devices, rails, MRs and the data path are in
 * rdma_verbs_link.c (rdma.h).
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "base/clock.h"
#include "base/log.h"
#include "link/engine.h"
#include "link/tls.h"
#include "transport/rdma.h"
#include "transport/rdma_plan.h"
#include "transport/rdma_probe.h"
#include "transport/transport.h"
#include "transport/transport_testing.h"

/* Bound on invalidating a grant's windows (the owner thread waits for it;
 * past it they are deallocated instead). */
#define GRANT_END_MS 2000

/* One work request per slice; slices go round robin over the rails. */
#define RDMA_SLICE_BYTES (1u << 20)

llk_rdma_xlink_t *llk_rdma_xlink(llk_xlink_t *xl)
{
    return xl->xport.state[LLK_XPORT_RDMA];
}

void llk_test_set_rdma_post_delay_ms(llmlink_t *e, uint32_t ms)
{
    llk_rdma_set_post_delay_ms(e->rdma, ms);
}

void llk_test_rdma_last_grant(llmlink_t *e, llk_test_rdma_grant_t *out)
{
    llk_rdma_test_last_grant(e->rdma, out);
}

unsigned llk_test_rdma_live_grants(llmlink_t *e)
{
    return llk_rdma_test_live_grants(e->rdma);
}

bool llk_test_rdma_rail(llmlink_t *e, uint64_t remote, uint16_t rail, void **qp, void **cq)
{
    llk_xlink_t *xl = llk_xfer_find_link(e, remote, "llk_test_rdma_rail");
    if (!xl)
        return false;
    pthread_mutex_lock(&xl->mu);
    bool ok = llk_rdma_test_rail(llk_rdma_xlink(xl)->link, rail, qp, cq);
    pthread_mutex_unlock(&xl->mu);
    llk_xlink_unref(xl);
    return ok;
}

bool llk_test_rdma_mr_keys(llmlink_t *e, int64_t cache_id, uint32_t tensor, uint32_t *lkey,
                           uint32_t *rkey)
{
    llk_cache_t *c = NULL;
    if (llk_registry_acquire_id(&e->reg, "llk_test_rdma_mr_keys", cache_id, &c) !=
        LLMLINK_SUCCESS)
        return false;
    char why[200];
    const llk_rdma_mrs_t *m = e->rdma ? llk_rdma_cache_mrs(e->rdma, c, why, sizeof why) : NULL;
    bool ok = llk_rdma_test_mr_keys(m, tensor, lkey, rkey);
    llk_registry_release(&e->reg, c, NULL);
    return ok;
}

bool llk_test_rdma_lkey(llmlink_t *e, uint64_t remote, int64_t cache_id, uint32_t tensor,
                        uint32_t *lkey)
{
    llk_cache_t *c = NULL;
    if (llk_registry_acquire_id(&e->reg, "llk_test_rdma_lkey", cache_id, &c) != LLMLINK_SUCCESS)
        return false;
    llk_xlink_t *xl = llk_xfer_find_link(e, remote, "llk_test_rdma_lkey");
    char why[200];
    const llk_rdma_mrs_t *m = e->rdma ? llk_rdma_cache_mrs(e->rdma, c, why, sizeof why) : NULL;
    bool ok = false;
    if (xl && m && tensor < c->num_tensors) {
        pthread_mutex_lock(&xl->mu);
        llk_rdma_link_t *l = llk_rdma_xlink(xl)->link;
        pthread_mutex_unlock(&xl->mu);
        ok = l && llk_rdma_lkey(m, l, 0, c->addrs[tensor], 1, lkey);
    }
    if (xl)
        llk_xlink_unref(xl);
    llk_registry_release(&e->reg, c, NULL);
    return ok;
}

const char *llk_test_rdma_protection(llmlink_t *e, uint64_t remote)
{
    llk_xlink_t *xl = llk_xfer_find_link(e, remote, "llk_test_rdma_protection");
    if (!xl)
        return "unused";
    llk_rdma_prot_t p = llk_rdma_xlink_protection(xl);
    llk_xlink_unref(xl);
    return llk_rdma_protection_name(p);
}

llk_rdma_prot_t llk_rdma_xlink_protection(llk_xlink_t *xl)
{
    llk_rdma_xlink_t *r = llk_rdma_xlink(xl);
    pthread_mutex_lock(&xl->mu);
    llk_rdma_prot_t p = r && r->use ? llk_rdma_link_protection(r->link) : LLK_RDMA_PROT_UNUSED;
    pthread_mutex_unlock(&xl->mu);
    return p;
}

void llk_rdma_xlink_rail_stats(llk_xlink_t *xl, llmlink_link_stats_t *out)
{
    llk_rdma_xlink_t *r = llk_rdma_xlink(xl);
    pthread_mutex_lock(&xl->mu);
    if (r && r->use)
        llk_rdma_link_rail_stats(r->link, out);
    pthread_mutex_unlock(&xl->mu);
}

/* ---- per link -------------------------------------------------------------- */

static void *rdma_link_new(void)
{
    return calloc(1, sizeof(llk_rdma_xlink_t));
}

static void rdma_link_free(void *p)
{
    llk_rdma_xlink_t *r = p;
    llk_rdma_link_free(r->link);
    free(r);
}

void llk_xlink_set_rails(llk_xlink_t *xl, const llk_conn_t *c, bool peer_offers)
{
    llk_rdma_xlink_t *r = llk_rdma_xlink(xl);
    pthread_mutex_lock(&xl->mu);
    r->peer = peer_offers;
    r->nrail_addrs = 0;
    r->ngiven = 0;
    for (size_t i = 0; c && i < c->num_local && i < LLMLINK_MAX_IP_INFOS; i++)
        r->given[r->ngiven++] = c->local[i];
    if (c && c->num_local == 0) {
        socklen_t len = sizeof r->rail_local[0];
        if (c->fd >= 0 &&
            llk_tls_getsockname(c->fd, (struct sockaddr *)&r->rail_local[0], &len) == 0) {
            r->rail_target[0] = c->remote[c->remote_idx];
            r->nrail_addrs = 1;
        }
    } else if (c) {
        for (size_t i = 0; i < c->num_local && r->nrail_addrs < LLK_XWIRE_MAX_RAILS; i++) {
            const struct sockaddr_storage *t =
                &c->remote[c->num_remote ? i % c->num_remote : 0];
            if (t->ss_family != c->local[i].ss_family)
                continue; /* a rail joins two addresses of one family */
            r->rail_local[r->nrail_addrs] = c->local[i];
            r->rail_target[r->nrail_addrs] = *t;
            r->nrail_addrs++;
        }
    }
    pthread_mutex_unlock(&xl->mu);
}

void llk_xlink_set_peer_read_depth(llk_xlink_t *xl, bool on)
{
    llk_rdma_xlink_t *r = llk_rdma_xlink(xl);
    pthread_mutex_lock(&xl->mu);
    r->peer_read_depth = on;
    pthread_mutex_unlock(&xl->mu);
}

void llk_xlink_set_peer_rails(llk_xlink_t *xl, bool on)
{
    llk_rdma_xlink_t *r = llk_rdma_xlink(xl);
    pthread_mutex_lock(&xl->mu);
    r->peer_rails = on;
    pthread_mutex_unlock(&xl->mu);
}

static void rdma_link_record(llmlink_t *e, llk_xlink_t *xl)
{
    llk_rdma_xlink_t *r = llk_rdma_xlink(xl);
    r->forced = e->opts.transport == LLK_TRANSPORT_RDMA ||
                xl->xport.remote_transport == LLK_TRANSPORT_RDMA;
}

static const char *rdma_link_conflict(llmlink_t *e, llk_xlink_t *xl, const llk_host_id_t *remote,
                                      uint8_t remote_transport, char *buf, size_t cap)
{
    (void)remote;
    bool mine = e->opts.transport == LLK_TRANSPORT_RDMA;
    bool theirs = remote_transport == LLK_TRANSPORT_RDMA;
    if (!mine && !theirs)
        return NULL;
    uint8_t other = mine ? remote_transport : (uint8_t)e->opts.transport;
    if (other == LLK_TRANSPORT_TCP || other == LLK_TRANSPORT_SHM)
        return other == LLK_TRANSPORT_TCP ? "one side forces llmlink.Transport=rdma, the other tcp"
                                          : "one side forces llmlink.Transport=rdma, the other shm";
    pthread_mutex_lock(&xl->mu);
    bool peer = llk_rdma_xlink(xl)->peer;
    pthread_mutex_unlock(&xl->mu);
    if (!e->rdma) {
        snprintf(buf, cap, "%s, but RDMA cannot be used on cluster %llu: %s",
                 mine ? "llmlink.Transport=rdma" : "the peer forces llmlink.Transport=rdma",
                 (unsigned long long)e->cluster_id, e->rdma_why);
        return buf;
    }
    if (!peer) {
        snprintf(buf, cap, "%s, but cluster %llu has no usable RDMA device (or does not "
                 "offer RDMA)", mine ? "llmlink.Transport=rdma" : "the peer forces "
                 "llmlink.Transport=rdma", (unsigned long long)xl->remote_id);
        return buf;
    }
    return NULL;
}

/* The rails of link xl are up (client or owner side): from now on its
 * requests may use them. */
static void install_rails(llk_xlink_t *xl, llk_rdma_xlink_t *rx, llk_rdma_link_t *l)
{
    pthread_mutex_lock(&xl->mu);
    rx->link = l;
    rx->use = true;
    if (xl->broken) /* broke while the rails came up: llk_xlink_break saw none */
        llk_rdma_link_abort(l);
    pthread_mutex_unlock(&xl->mu);
}

/*
 * The RDMA rails of a new link, over forward stream fd (client side, the
 * stream not handed out yet): this side's QPs go in XRDMA_SETUP, the
 * owner thread of the server makes its own, moves them to RTS and answers
 * with them, then this side moves its QPs to RTS. A failure is the link's
 * only where a side forces llmlink.Transport=rdma; otherwise the link
 * moves data over tcp/shm (SUCCESS).
 */
static llmlink_status_t rdma_setup_client(llmlink_t *e, llk_xlink_t *xl, int fd,
                                          int64_t deadline_ms, char *detail, size_t dlen)
{
    llk_rdma_xlink_t *rx = llk_rdma_xlink(xl);
    char why[300] = "";
    llmlink_status_t st = LLMLINK_LINK_FAILED;
    llk_rdma_link_t *l = NULL;
    uint8_t *buf = NULL;
    pthread_mutex_lock(&xl->mu);
    bool peer = rx->peer;
    uint16_t n = rx->nrail_addrs;
    struct sockaddr_storage local[LLK_XWIRE_MAX_RAILS], target[LLK_XWIRE_MAX_RAILS];
    memcpy(local, rx->rail_local, sizeof local);
    memcpy(target, rx->rail_target, sizeof target);
    bool forced = rx->forced;
    bool peer_depth = rx->peer_read_depth;
    bool peer_rails = rx->peer_rails;
    pthread_mutex_unlock(&xl->mu);
    if (!peer)
        return LLMLINK_SUCCESS; /* not offered by both ends: nothing to set up */
    if (peer_rails) {
        /* rails by the data: the pairs replace the position rule */
        struct sockaddr_storage pl[LLK_XWIRE_MAX_RAILS], pt[LLK_XWIRE_MAX_RAILS];
        uint16_t np = 0;
        llk_rdma_probe_out_t po = {0};
        if (llk_rdma_probe_client(e, xl, fd, deadline_ms, pl, pt, &np, &po) != 0) {
            snprintf(why, sizeof why, "%s", po.why);
            st = po.st;
            forced = forced || po.refusal == LLMLINK_LINK_FAILED;
            goto out;
        }
        if (np > 0) {
            memcpy(local, pl, sizeof pl);
            memcpy(target, pt, sizeof pt);
            n = np;
            /* The rails are the pairs from here on: a repair
             * (XRDMA_RAIL_RESET) names rail k's server address from them. */
            pthread_mutex_lock(&xl->mu);
            memcpy(rx->rail_local, pl, sizeof pl);
            memcpy(rx->rail_target, pt, sizeof pt);
            rx->nrail_addrs = np;
            pthread_mutex_unlock(&xl->mu);
        }
    }
    if (n == 0) {
        snprintf(why, sizeof why, "no local address for a rail");
        goto out;
    }
    l = llk_rdma_link_create(e->rdma, local, n, e->opts.sync_kv_wait_ms, why, sizeof why);
    if (!l)
        goto out;
    llk_xrail_wire_t rails[LLK_XWIRE_MAX_RAILS];
    llk_rdma_link_local(l, rails);
    llk_xwire_rails_for_peer(rails, n, peer_depth);
    for (uint16_t i = 0; i < n; i++) {
        uint8_t gid[16];
        if (llk_rdma_ip_gid((const struct sockaddr *)&target[i], gid))
            memcpy(rails[i].target_ip, gid, 16);
    }
    uint8_t f[LLK_XWIRE_HEADER_SIZE + 2 + LLK_XWIRE_MAX_RAILS * LLK_XWIRE_RAIL_REQ_SIZE];
    uint64_t req_id = xl->req_next_id[0]++;
    size_t len = llk_xwire_encode_rdma_setup(f, sizeof f, req_id, rails, n);
    if (!len || llk_xlink_send_all(xl, fd, f, len, deadline_ms) != 0) {
        snprintf(why, sizeof why, "sending XRDMA_SETUP: %s", strerror(errno));
        goto out;
    }
    uint8_t hb[LLK_XWIRE_HEADER_SIZE];
    llk_xframe_header_t h;
    const char *dwhy = NULL;
    if (llk_xlink_recv_all(xl, fd, hb, sizeof hb, deadline_ms) != 0) {
        snprintf(why, sizeof why, "no answer to XRDMA_SETUP: %s", strerror(errno));
        st = errno == ETIMEDOUT ? LLMLINK_TIMEOUT : LLMLINK_LINK_FAILED;
        goto out;
    }
    if (llk_xwire_read_header(hb, &h, &dwhy) != 0 || h.type != LLK_XMSG_RDMA_SETUP_OK ||
        h.req_id != req_id) {
        snprintf(why, sizeof why, "bad answer to XRDMA_SETUP (%s)", dwhy ? dwhy : "type");
        st = LLMLINK_PROTOCOL_ERROR;
        goto out;
    }
    buf = malloc(h.length ? h.length : 1);
    llk_xrdma_setup_ok_t ok;
    if (!buf || llk_xlink_recv_all(xl, fd, buf, h.length, deadline_ms) != 0 ||
        llk_rdma_setup_ok_read(buf, h.length, e->test_legacy_rails, &ok, &dwhy) != 0) {
        snprintf(why, sizeof why, "bad XRDMA_SETUP_OK: %s", buf ? (dwhy ? dwhy : strerror(errno))
                                                                : "out of memory");
        st = LLMLINK_PROTOCOL_ERROR;
        goto out;
    }
    if (ok.status != LLMLINK_SUCCESS) {
        snprintf(why, sizeof why, "cluster %llu refused the rails: %s",
                 (unsigned long long)xl->remote_id, ok.msg);
        /* LINK_FAILED: the server forces rdma itself */
        forced = forced || ok.status == LLMLINK_LINK_FAILED;
        goto out;
    }
    /* The server's rails are up: from here a failure leaves the two ends
     * disagreeing, so it is the link's in any case. */
    forced = true;
    if (llk_rdma_link_connect(l, ok.rail, ok.nrails, why, sizeof why) != 0)
        goto out;
    char desc[256];
    llk_rdma_link_describe(l, desc, sizeof desc);
    LLK_INFO("cluster %llu: link with cluster %llu moves data over RDMA (%u rail%s: %s)",
             (unsigned long long)e->cluster_id, (unsigned long long)xl->remote_id, n,
             n == 1 ? "" : "s", desc);
    install_rails(xl, rx, l);
    free(buf);
    return LLMLINK_SUCCESS;
out:
    free(buf);
    llk_rdma_link_free(l);
    if (forced) {
        snprintf(detail, dlen, "%sthe RDMA rails to cluster %llu could not be set up: %s",
                 rx->forced ? "llmlink.Transport=rdma: " : "",
                 (unsigned long long)xl->remote_id, why);
        return st == LLMLINK_SUCCESS ? LLMLINK_LINK_FAILED : st;
    }
    /* A stream that broke the protocol is of no use for tcp either. */
    if (st == LLMLINK_PROTOCOL_ERROR || st == LLMLINK_TIMEOUT) {
        snprintf(detail, dlen, "RDMA setup with cluster %llu: %s",
                 (unsigned long long)xl->remote_id, why);
        return st;
    }
    LLK_INFO("cluster %llu: no RDMA with cluster %llu (%s): tcp/shm",
             (unsigned long long)e->cluster_id, (unsigned long long)xl->remote_id, why);
    return LLMLINK_SUCCESS;
}

/* Grows the owner's answer buffer (false: out of memory). */
static bool tx_room(llk_xserve_t *q, size_t need)
{
    if (*q->tx_cap >= need && *q->tx)
        return true;
    uint8_t *p = realloc(*q->tx, need);
    if (!p)
        return false;
    *q->tx = p;
    *q->tx_cap = need;
    return true;
}

/* The wire wants printable ASCII. */
static void printable(char *msg)
{
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
}

/* XRDMA_RAIL_RESET (owner thread): the client re-establishes rail k of
 * the link; this side's rail gets a fresh QP too, connected to the
 * client's, and the answer carries it. A refusal leaves the rail down. */
static int rdma_serve_rail_reset(llk_xserve_t *q)
{
    llk_xlink_t *xl = q->xl;
    llk_rdma_xlink_t *rx = llk_rdma_xlink(xl);
    const char *dwhy = "?";
    uint16_t k = 0;
    llk_xrail_wire_t rem;
    if (llk_xwire_decode_rail_reset(q->rx, q->rx_len, &k, &rem, &dwhy) != 0) {
        snprintf(q->why, sizeof q->why, "protocol error: bad XRDMA_RAIL_RESET: %s", dwhy);
        return -1;
    }
    pthread_mutex_lock(&xl->mu);
    llk_rdma_link_t *l = rx->use ? rx->link : NULL;
    bool peer_rails = rx->peer_rails, peer_depth = rx->peer_read_depth;
    pthread_mutex_unlock(&xl->mu);
    llk_xrail_reset_ok_t ok;
    memset(&ok, 0, sizeof ok);
    ok.rail = k;
    char why[224] = "";
    int64_t t0 = llk_now_ms();
    if (!l || !peer_rails || k >= llk_rdma_link_nrails(l)) {
        ok.status = LLMLINK_FEATURE_NOT_ENABLED;
        snprintf(ok.msg, sizeof ok.msg, "no RDMA rail %u on this link", k);
    } else if (llk_rdma_rail_reset_begin(l, k, &ok.rec, why, sizeof why) != 0 ||
               llk_rdma_rail_reset_end(l, k, &rem, 0, why, sizeof why) != 0) {
        ok.status = LLMLINK_FAILED;
        memset(&ok.rec, 0, sizeof ok.rec);
        snprintf(ok.msg, sizeof ok.msg, "cluster %llu: %.200s",
                 (unsigned long long)q->e->cluster_id, why);
        printable(ok.msg);
    } else {
        llk_xwire_rails_for_peer(&ok.rec, 1, peer_depth);
    }
    LLK_DEBUG("rdma: rail %u reset asked by cluster %llu: %s in %lld ms%s%s", k,
              (unsigned long long)xl->remote_id, llmlink_status_name(ok.status),
              (long long)(llk_now_ms() - t0), ok.status ? ": " : "", ok.msg);
    size_t need = LLK_XWIRE_HEADER_SIZE + 8 + LLK_XWIRE_MAX_MSG + LLK_XWIRE_RAIL_ACK_SIZE;
    if (!tx_room(q, need)) {
        snprintf(q->why, sizeof q->why, "out of memory for XRDMA_RAIL_RESET_OK");
        return -1;
    }
    q->tx_len = llk_xwire_encode_rail_reset_ok(*q->tx, *q->tx_cap, q->req_id, &ok);
    if (q->tx_len == 0) {
        snprintf(q->why, sizeof q->why, "cannot encode XRDMA_RAIL_RESET_OK");
        return -1;
    }
    return 0;
}

/* XRDMA_SETUP (once per link, owner thread): this side's rails for the
 * addresses the client names, connected to its QPs, and the answer with
 * them. */
static int rdma_serve_setup(llk_xserve_t *q)
{
    if (q->type == LLK_XMSG_RDMA_RAIL_RESET)
        return rdma_serve_rail_reset(q);
    llmlink_t *e = q->e;
    llk_xlink_t *xl = q->xl;
    llk_rdma_xlink_t *rx = llk_rdma_xlink(xl);
    const char *dwhy = "?";
    if (q->type == LLK_XMSG_RDMA_PROBE)
        return llk_rdma_serve_probe(q);
    llk_xrail_wire_t rem[LLK_XWIRE_MAX_RAILS];
    uint16_t n = 0;
    if (llk_rdma_setup_read(q->rx, q->rx_len, e->test_legacy_rails, rem, &n, &dwhy) != 0) {
        snprintf(q->why, sizeof q->why, "protocol error: bad XRDMA_SETUP: %s", dwhy);
        return -1;
    }
    llk_xrdma_setup_ok_t ok;
    memset(&ok, 0, sizeof ok);
    /* LINK_FAILED tells the client this side forces rdma: no fallback */
    uint32_t refusal = e->opts.transport == LLK_TRANSPORT_RDMA ? LLMLINK_LINK_FAILED
                                                               : LLMLINK_FEATURE_NOT_ENABLED;
    pthread_mutex_lock(&xl->mu);
    bool allowed = rx->peer && !rx->link && e->rdma;
    bool peer_depth = rx->peer_read_depth;
    /* paired by the data: the setup must name the probe's pairs */
    bool paired = rx->peer_rails && rx->probed && rx->npairs > 0;
    bool unprobed = rx->peer_rails && !rx->probed;
    char pwhy[200] = "";
    if (allowed && paired &&
        !llk_rdma_setup_paired(rem, n, (const uint8_t(*)[16])rx->pair_client,
                               (const uint8_t(*)[16])rx->pair_server, rx->npairs, pwhy,
                               sizeof pwhy))
        allowed = false;
    pthread_mutex_unlock(&xl->mu);
    llk_rdma_link_t *l = NULL;
    if (allowed && unprobed)
        snprintf(pwhy, sizeof pwhy, "XRDMA_SETUP without XRDMA_PROBE (the client announced "
                 "rails paired by the data)");
    if (!allowed || unprobed) {
        ok.status = refusal;
        if (pwhy[0])
            snprintf(ok.msg, sizeof ok.msg, "cluster %llu: %s", (unsigned long long)e->cluster_id,
                     pwhy);
        else
            snprintf(ok.msg, sizeof ok.msg, "RDMA is not offered on this link, or set up already");
        printable(ok.msg);
    } else {
        struct sockaddr_storage ips[LLK_XWIRE_MAX_RAILS], stream_local;
        socklen_t slen = sizeof stream_local;
        memset(&stream_local, 0, sizeof stream_local);
        llk_tls_getsockname(q->fd, (struct sockaddr *)&stream_local, &slen);
        llk_rdma_setup_targets(rem, n, &stream_local, ips);
        char why[300] = "";
        l = llk_rdma_link_create(e->rdma, ips, n, e->opts.sync_kv_wait_ms, why, sizeof why);
        if (l && llk_rdma_link_connect(l, rem, n, why, sizeof why) != 0) {
            llk_rdma_link_free(l);
            l = NULL;
        }
        if (!l) {
            ok.status = refusal;
            snprintf(ok.msg, sizeof ok.msg, "cluster %llu: %.200s", (unsigned long long)e->cluster_id,
                     why);
            printable(ok.msg);
        } else {
            ok.nrails = n;
            llk_rdma_link_local(l, ok.rail);
            llk_xwire_rails_for_peer(ok.rail, n, peer_depth);
        }
    }
    size_t need = LLK_XWIRE_HEADER_SIZE + 10 + LLK_XWIRE_MAX_MSG +
                  LLK_XWIRE_MAX_RAILS * LLK_XWIRE_RAIL_ACK_SIZE;
    if (!tx_room(q, need)) {
        llk_rdma_link_free(l);
        snprintf(q->why, sizeof q->why, "out of memory for XRDMA_SETUP_OK");
        return -1;
    }
    q->tx_len = llk_xwire_encode_rdma_setup_ok(*q->tx, *q->tx_cap, q->req_id, &ok);
    if (q->tx_len == 0) {
        llk_rdma_link_free(l);
        snprintf(q->why, sizeof q->why, "cannot encode XRDMA_SETUP_OK");
        return -1;
    }
#define OWNER_FMT "cluster %llu: owner stream %d of the link with cluster %llu (%s)"
    if (l) {
        char desc[256];
        llk_rdma_link_describe(l, desc, sizeof desc);
        LLK_INFO(OWNER_FMT ": data over RDMA (%u rail%s: %s)", (unsigned long long)e->cluster_id,
                 q->slot, (unsigned long long)xl->remote_id, xl->peer, n, n == 1 ? "" : "s",
                 desc);
        install_rails(xl, rx, l);
    } else {
        LLK_INFO(OWNER_FMT ": no RDMA: %s", (unsigned long long)e->cluster_id, q->slot,
                 (unsigned long long)xl->remote_id, xl->peer, ok.msg);
    }
#undef OWNER_FMT
    return 0;
}

/* Stops the QPs now, not at the last unref, so that no work request of a
 * call that gave up keeps moving bytes, and a peer's old rkeys reach
 * nothing over this link (rail locks are leaves). */
static void rdma_fence(llk_xlink_t *xl)
{
    llk_rdma_xlink_t *r = llk_rdma_xlink(xl);
    if (r)
        llk_rdma_link_abort(r->link);
}

/* ---- choosing -------------------------------------------------------------- */

static bool rdma_link_usable(llk_xlink_t *xl)
{
    llk_rdma_xlink_t *r = llk_rdma_xlink(xl);
    pthread_mutex_lock(&xl->mu);
    bool use = r->use && r->link;
    pthread_mutex_unlock(&xl->mu);
    return use;
}

uint32_t llk_rdma_stats_protection(llk_xlink_t *xl)
{
    switch (llk_rdma_xlink_protection(xl)) {
    case LLK_RDMA_PROT_MW: return LLMLINK_RDMA_PROTECTION_WINDOW;
    case LLK_RDMA_PROT_PD_PER_LINK: return LLMLINK_RDMA_PROTECTION_LINK_PD;
    case LLK_RDMA_PROT_UNUSED: break;
    }
    return LLMLINK_RDMA_PROTECTION_NONE;
}

/* A failed repair of rail k: WARN the first time since the rail went
 * down, DEBUG for the retries (one a second). */
#define REPAIR_LOG(l, k, ...)                                                                      \
    do {                                                                                           \
        if (llk_rdma_rail_repair_log_once((l), (k)))                                              \
            LLK_WARN(__VA_ARGS__);                                                                 \
        else                                                                                       \
            LLK_DEBUG(__VA_ARGS__);                                                                \
    } while (0)

/* How long the client waits for the peer's answer to the reachability
 * probe of a repaired rail (llk_rdma_rail_reset_end): a round trip, with
 * room for a neighbour lookup after a NIC came back. */
#define REPAIR_PROBE_MS 1000
/* The bound on one rail's repair exchange, from XRDMA_RAIL_RESET to this
 * side's rail up (or not). The owner's part can take seconds without
 * anything being wrong: it may first finish the stream's last request
 * (its windows' invalidation: up to GRANT_END_MS), and moving its fresh
 * QP to RTR makes the kernel resolve the client's MAC address (RoCE),
 * which waits ~2 s for an ARP answer that does not come when a NIC on
 * the path is down; measured: 1991 ms. A bound of 2 s ended links. */
#define REPAIR_EXCHANGE_MS 8000

/* Client end, one rail: XRDMA_RAIL_RESET with this side's fresh QP over
 * stream fd, the owner's answer, then the rail up again. 0 (done, or
 * refused: the rail stays down and is tried again later), -1: the stream
 * is unusable (the request fails and the link goes). */
static int repair_rail(llk_xlink_t *xl, int fd, llk_rdma_link_t *l, uint16_t k,
                       const uint8_t target_gid[16], bool peer_depth, int64_t deadline_ms)
{
    llk_xrail_wire_t rec;
    char why[224] = "";
    int64_t t0 = llk_now_ms();
    if (llk_rdma_rail_reset_begin(l, k, &rec, why, sizeof why) != 0) {
        REPAIR_LOG(l, k, "rdma: rail %u of the link with cluster %llu not repaired: %s", k,
                   (unsigned long long)xl->remote_id, why);
        return 0;
    }
    llk_xwire_rails_for_peer(&rec, 1, peer_depth);
    memcpy(rec.target_ip, target_gid, 16);
    uint8_t f[LLK_XWIRE_HEADER_SIZE + 2 + LLK_XWIRE_RAIL_REQ_SIZE];
    /* the owner echoes it; a tag of its own, apart from requests' ids */
    uint64_t req_id = 0xFFFF0000ull | k;
    size_t len = llk_xwire_encode_rail_reset(f, sizeof f, req_id, k, &rec);
    uint8_t hb[LLK_XWIRE_HEADER_SIZE];
    uint8_t body[8 + LLK_XWIRE_MAX_MSG + LLK_XWIRE_RAIL_ACK_SIZE];
    llk_xframe_header_t h;
    const char *dwhy = NULL;
    llk_xrail_reset_ok_t ok;
    int64_t t1 = llk_now_ms();
    if (!len || llk_xlink_send_all(xl, fd, f, len, deadline_ms) != 0 ||
        llk_xlink_recv_all(xl, fd, hb, sizeof hb, deadline_ms) != 0) {
        REPAIR_LOG(l, k, "rdma: rail %u: XRDMA_RAIL_RESET: %s (fresh QP in %lld ms, then %lld ms "
                   "without an answer)", k, strerror(errno), (long long)(t1 - t0),
                   (long long)(llk_now_ms() - t1));
        return -1;
    }
    LLK_DEBUG("rdma: rail %u: fresh QP in %lld ms, the owner's answer in %lld ms", k,
              (long long)(t1 - t0), (long long)(llk_now_ms() - t1));
    if (llk_xwire_read_header(hb, &h, &dwhy) != 0 || h.type != LLK_XMSG_RDMA_RAIL_RESET_OK ||
        h.req_id != req_id || h.length > sizeof body ||
        llk_xlink_recv_all(xl, fd, body, h.length, deadline_ms) != 0 ||
        llk_xwire_decode_rail_reset_ok(body, h.length, &ok, &dwhy) != 0 || ok.rail != k) {
        REPAIR_LOG(l, k, "rdma: rail %u: bad answer to XRDMA_RAIL_RESET (%s)", k,
                   dwhy ? dwhy : "type, id or rail");
        return -1;
    }
    if (ok.status != LLMLINK_SUCCESS) {
        REPAIR_LOG(l, k, "rdma: rail %u of the link with cluster %llu not repaired: %s", k,
                   (unsigned long long)xl->remote_id, ok.msg);
        return 0;
    }
    /* the peer must answer on the fresh QP before the rail carries work:
     * its port may be up while the peer's NIC is still down */
    int64_t left = deadline_ms - llk_now_ms();
    int probe_ms = left < REPAIR_PROBE_MS ? (int)(left > 1 ? left : 1) : REPAIR_PROBE_MS;
    if (llk_rdma_rail_reset_end(l, k, &ok.rec, probe_ms, why, sizeof why) != 0)
        REPAIR_LOG(l, k, "rdma: rail %u of the link with cluster %llu not repaired: %s", k,
                   (unsigned long long)xl->remote_id, why);
    return 0;
}

/* The client end of a link (the one that ran XRDMA_SETUP) re-establishes
 * its rails that are down and whose port is ACTIVE again (one attempt at
 * a time per rail, at most one a second, backing off after failures),
 * over an idle stream it holds: the mender
 * thread's (rdma_mender.c), or a request's before its request goes, so
 * that the first request after the port came back finds the rail up even
 * when the mender has not come round yet. Returns the rails repaired, or
 * -1: the stream is unusable. */
static int repair_rails(llk_xlink_t *xl, int fd, llk_rdma_link_t *l, int64_t deadline_ms)
{
    llk_rdma_xlink_t *rx = llk_rdma_xlink(xl);
    uint8_t gid[LLK_XWIRE_MAX_RAILS][16];
    memset(gid, 0, sizeof gid);
    pthread_mutex_lock(&xl->mu);
    bool client = rx->nrail_addrs > 0, peer_rails = rx->peer_rails;
    bool peer_depth = rx->peer_read_depth;
    for (uint16_t k = 0; k < rx->nrail_addrs && k < LLK_XWIRE_MAX_RAILS; k++)
        (void)llk_rdma_ip_gid((const struct sockaddr *)&rx->rail_target[k], gid[k]);
    pthread_mutex_unlock(&xl->mu);
    if (!client || !peer_rails || llk_rdma_link_rails_down(l) == 0)
        return 0;
    int done = 0;
    for (uint16_t k = 0; k < llk_rdma_link_nrails(l); k++) {
        /* A late answer leaves the stream out of step, so a timeout here
         * ends the link: start an exchange only with its whole bound left
         * (a request with less leaves the rail to the mender). */
        int64_t now = llk_now_ms();
        if (deadline_ms - now < REPAIR_EXCHANGE_MS)
            break;
        if (!llk_rdma_rail_repairable(l, k))
            continue;
        uint16_t down = llk_rdma_link_rails_down(l);
        int rc = repair_rail(xl, fd, l, k, gid[k], peer_depth, now + REPAIR_EXCHANGE_MS);
        llk_rdma_rail_repair_done(l, k);
        if (rc != 0)
            return -1;
        if (llk_rdma_link_rails_down(l) < down)
            done++;
    }
    return done;
}

int llk_rdma_xlink_mend(llk_xlink_t *xl)
{
    pthread_mutex_lock(&xl->mu);
    llk_rdma_xlink_t *rx = llk_rdma_xlink(xl);
    llk_rdma_link_t *l = rx->use ? rx->link : NULL;
    bool client = rx->nrail_addrs > 0 && rx->peer_rails;
    pthread_mutex_unlock(&xl->mu);
    if (!l || !client || llk_rdma_link_rails_down(l) == 0)
        return 0;
    int idx = -1;
    /* never wait for a stream: a busy link repairs at its next request */
    if (llk_xlink_borrow(xl, 1, &idx, llk_now_ms(), "rdma rail repair") != 1)
        return 0;
    pthread_mutex_lock(&xl->mu);
    int fd = xl->req_fd[idx];
    pthread_mutex_unlock(&xl->mu);
    int n = repair_rails(xl, fd, l, INT64_MAX);
    if (n < 0)
        llk_xlink_break(xl, "RDMA rail repair: the data stream failed");
    llk_xlink_give_back(xl, &idx, 1);
    return n < 0 ? 0 : n;
}

static llk_xuse_t rdma_request_usable(llk_xfer_ctx_t *ctx, int fd, llk_xmove_out_t *out)
{
    if (!rdma_link_usable(ctx->xl) || !ctx->e->rdma || !ctx->local_cache)
        return LLK_XUSE_NO;
    if (fd >= 0 &&
        repair_rails(ctx->xl, fd, llk_rdma_xlink(ctx->xl)->link, ctx->deadline_ms) < 0) {
        /* the exchange broke off mid-frame: nothing more can go on it */
        llk_xlink_break(ctx->xl, "RDMA rail repair: the data stream failed");
        out->refusal = LLMLINK_NETWORK_ERROR;
        snprintf(out->msg, sizeof out->msg, "%s: RDMA rail repair: the data stream failed "
                 "(cluster %llu)", ctx->fn, (unsigned long long)ctx->xl->remote_id);
        return LLK_XUSE_STOP;
    }
    return LLK_XUSE_YES;
}

/* ---- moving ---------------------------------------------------------------- */

/* The move gives up when the link broke or the call's task was cancelled
 * (RDMA cannot stop one request alone: the QPs go to the error state). */
static bool link_aborted(void *arg)
{
    llk_xfer_ctx_t *ctx = arg;
    return llk_xlink_is_broken(ctx->xl) || llk_cancel_requested(ctx->cancel);
}

/* The owner's grant (XRESP_RDMA) for the request: check it, post the work
 * requests, wait, then XDONE with the grant's generation. The grant is
 * used for this request only and forgotten. */
static void rdma_move(llk_xmove_t *m, llk_xmove_out_t *out)
{
    llk_xfer_ctx_t *ctx = m->ctx;
    const char *why = NULL;
    llk_xgrant_t g;
    if (llk_xwire_decode_grant(m->payload, m->h->length, &g, &why) != 0) {
        out->failure = LLMLINK_PROTOCOL_ERROR;
        snprintf(out->msg, sizeof out->msg, "bad RDMA grant: %s", why);
        return;
    }
    llk_rdma_link_t *l = llk_rdma_xlink(ctx->xl)->link; /* set before streams are handed out */
    uint16_t nrails = llk_rdma_link_nrails(l);
    size_t n = m->nseg;
    if (g.niov != n || g.total_bytes != m->bytes || g.nrails != nrails) {
        out->failure = LLMLINK_PROTOCOL_ERROR;
        snprintf(out->msg, sizeof out->msg, "RDMA grant of %u regions on %u rails for %zu "
                 "segments on %u rails", g.niov, g.nrails, n, nrails);
        return;
    }
    if (llk_cancel_requested(ctx->cancel)) {
        /* Cancelled before any work was posted: end the grant unused. */
        out->send_done = out->done_gen = true;
        out->done_status = LLMLINK_CANCELLED;
        out->gen = g.generation;
        out->refusal = LLMLINK_CANCELLED;
        snprintf(out->msg, sizeof out->msg, "%s: cancelled: RDMA grant on data stream %d ended "
                 "unused (cluster %llu); the link stays usable", ctx->fn, m->slot,
                 (unsigned long long)ctx->xl->remote_id);
        return;
    }
    char msg[512];
    const llk_rdma_mrs_t *mrs = llk_rdma_cache_mrs(ctx->e->rdma, ctx->local_cache, msg, sizeof msg);
    llk_rdma_sge_t *sg = mrs ? malloc(n * sizeof *sg) : NULL;
    if (!sg) {
        /* this side's failure: the owner hears of it, the link stays */
        out->send_done = out->done_gen = true;
        out->done_status = LLMLINK_FAILED;
        out->gen = g.generation;
        out->refusal = mrs ? LLMLINK_OUT_OF_MEMORY : LLMLINK_FAILED;
        snprintf(out->msg, sizeof out->msg, "%s: RDMA: %s", ctx->fn, mrs ? "out of memory" : msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const llk_xseg_t *seg = &m->segs[i];
        uint16_t rail = (uint16_t)llk_rdma_rail_of((uint32_t)i, nrails);
        uint64_t addr = 0, len = 0;
        llk_rdma_sge_t *s = &sg[i];
        memset(s, 0, sizeof *s);
        bool keys = true;
        /* the keys of every rail: a slice may fail over to any of them */
        for (uint16_t k = 0; k < nrails && keys; k++) {
            uint64_t a, ln;
            llk_xwire_grant_at(&g, (uint32_t)i, k, &a, &ln, &s->rkey[k]);
            if (k == 0)
                addr = a, len = ln;
            keys = len == seg->len && llk_rdma_lkey(mrs, l, k, seg->lptr, len, &s->lkey[k]);
        }
        if (!keys) {
            free(sg);
            out->failure = len != seg->len ? LLMLINK_PROTOCOL_ERROR : LLMLINK_FAILED;
            snprintf(out->msg, sizeof out->msg,
                     len != seg->len ? "RDMA region %zu has %llu bytes, asked %llu"
                                     : "RDMA: segment %zu (%llu bytes) is outside every local MR",
                     i, (unsigned long long)len, (unsigned long long)seg->len);
            return;
        }
        s->laddr = (uint64_t)(uintptr_t)seg->lptr;
        s->raddr = addr;
        s->len = len;
        s->rail = rail;
    }
    /* Test seam: hold the grant before using it (an owner that revokes
     * meanwhile is then seen deterministically). */
    uint32_t delay = llk_rdma_post_delay_ms(ctx->e->rdma);
    if (delay > 0)
        for (int64_t until = llk_now_ms() + delay;
             llk_now_ms() < until && llk_now_ms() < ctx->deadline_ms;) {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    llmlink_status_t st = llk_rdma_move(l, m->op == LLK_XOP_RDMA_WRITE, sg, n, ctx->deadline_ms,
                                        link_aborted, ctx, msg, sizeof msg);
    free(sg);
    if (st == LLMLINK_SUCCESS) {
        out->send_done = out->done_gen = true;
        out->done_status = LLMLINK_SUCCESS;
        out->gen = g.generation;
        return;
    }
    /* No rail was left (llk_rdma_move failed over while it could), or the
     * call gave up: the link goes (the caller kills it), relink makes new
     * QPs. */
    out->failure = st == LLMLINK_NOT_YET_LINK ? LLMLINK_NETWORK_ERROR : st;
    if (llk_cancel_requested(ctx->cancel) && !llk_xlink_is_broken(ctx->xl))
        snprintf(out->msg, sizeof out->msg, "cancelled with RDMA work posted: every QP of the "
                 "link moved to the error state and its completions were reaped");
    else
        snprintf(out->msg, sizeof out->msg, "%s", msg);
}

static llmlink_status_t rdma_serve_allowed(llk_xlink_t *xl, int fd, char *msg, size_t cap)
{
    (void)fd;
    if (rdma_link_usable(xl))
        return LLMLINK_SUCCESS;
    snprintf(msg, cap, "RDMA is not in use on this link");
    return LLMLINK_FEATURE_NOT_ENABLED;
}

/* The grant of an admitted request: the owner's address and the rkey on
 * every rail of each segment (a memory window bound for this request, in
 * mode MW), and the generation of the cache's MRs. */
static int rdma_serve_grant(llk_xserve_t *q)
{
    llk_rdma_link_t *l = llk_rdma_xlink(q->xl)->link; /* set before any request, never changed */
    const llk_rdma_mrs_t *m = llk_rdma_cache_mrs(q->e->rdma, q->cache, q->msg, sizeof q->msg);
    if (!m) {
        q->refusal = LLMLINK_FAILED;
        return 1;
    }
    uint16_t nrails = llk_rdma_link_nrails(l);
    uint32_t *rkeys = malloc((size_t)q->nseg * nrails * sizeof *rkeys);
    size_t need = llk_xwire_grant_size(nrails, q->nseg);
    if (!rkeys || !tx_room(q, need)) {
        free(rkeys);
        snprintf(q->why, sizeof q->why, "out of memory for a %zu-byte RDMA grant", need);
        return -1;
    }
    bool write = q->op == LLK_XOP_RDMA_WRITE;
    llk_rdma_grant_t *g = NULL;
    char why[200];
    int rc = llk_rdma_grant_new(l, m, write, q->segv, q->segt, q->nseg, rkeys,
                                llk_now_ms() + q->e->opts.sync_kv_wait_ms, &g, why, sizeof why);
    if (rc != 0) {
        free(rkeys);
        if (rc > 0) {
            q->refusal = LLMLINK_FAILED;
            snprintf(q->msg, sizeof q->msg, "RDMA grant: %s", why);
            return 1;
        }
        snprintf(q->why, sizeof q->why, "RDMA grant: %s", why);
        return -1;
    }
    q->grant_gen = llk_rdma_mrs_generation(m);
    q->tx_len = llk_xwire_encode_grant(*q->tx, *q->tx_cap, q->req_id, q->total, q->grant_gen,
                                       nrails, q->segv, rkeys, q->nseg);
    free(rkeys);
    if (q->tx_len == 0) {
        llk_rdma_grant_end(g, llk_now_ms() + q->e->opts.sync_kv_wait_ms);
        snprintf(q->why, sizeof q->why, "cannot encode a %zu-byte RDMA grant", need);
        return -1;
    }
    q->grant = g;
    /* From the grant on the peer moves these bytes on its own. */
    atomic_fetch_add(write ? &q->xl->peer_write_bytes : &q->xl->peer_read_bytes, q->total);
    /* From here the peer may read or write on its own: an unregister that
     * times out on this hold revokes the MRs instead of failing. */
    q->revocable = true;
    return 0;
}

/* The request of grant g is over (owner.c): its windows stop working. (A
 * grant not ended by a successful XDONE is counted as fenced by owner.c.) */
static void rdma_grant_end(llk_xlink_t *xl, void *g, bool done_ok)
{
    (void)xl;
    (void)done_ok;
    llk_rdma_grant_end(g, llk_now_ms() + GRANT_END_MS);
}

static void rdma_add_stats(llk_xstats_t *x, uint64_t requests, uint64_t fallbacks)
{
    (void)fallbacks;
    atomic_fetch_add(&x->rdma_requests, requests);
}

const llk_transport_ops_t llk_transport_rdma = {
    .name = "rdma",
    .title = "RDMA",
    .index = LLK_XPORT_RDMA,
    .id = LLK_TRANSPORT_RDMA,
    .op_read = LLK_XOP_RDMA_READ,
    .op_write = LLK_XOP_RDMA_WRITE,
    .answer_type = LLK_XMSG_RESP_RDMA,
    .done_gen = true,
    /* While the peer works with a grant nothing moves on the stream. */
    .long_grant = true,
    /* The rails carry the bytes, spread by the transport itself: one
     * stream carries the requests. */
    .slice_bytes = RDMA_SLICE_BYTES,
    .one_stream = true,
    .link_new = rdma_link_new,
    .link_free = rdma_link_free,
    .link_record = rdma_link_record,
    .link_conflict = rdma_link_conflict,
    .setup_client = rdma_setup_client,
    .setup_type = LLK_XMSG_RDMA_SETUP,
    .probe_type = LLK_XMSG_RDMA_PROBE,
    .repair_type = LLK_XMSG_RDMA_RAIL_RESET,
    .serve_setup = rdma_serve_setup,
    .fence = rdma_fence,
    .link_usable = rdma_link_usable,
    .request_usable = rdma_request_usable,
    .move = rdma_move,
    .serve_allowed = rdma_serve_allowed,
    .serve_grant = rdma_serve_grant,
    .grant_end = rdma_grant_end,
    .add_stats = rdma_add_stats,
};

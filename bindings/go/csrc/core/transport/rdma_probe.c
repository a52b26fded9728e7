/*
 * rdma_probe.c - rails paired by the data (LLK_EXT_RDMA_RAILS): before
 * XRDMA_SETUP the client sends its candidate rail addresses (XRDMA_PROBE),
 * the owner answers with its RDMA addresses (XRDMA_PROBE_OK), and both run
 * llk_rdma_pair (rdma_plan.h) on the same two lists. The client then makes
 * one rail per pair, the owner checks that the setup names exactly those
 * pairs (llk_rdma_setup_paired). rdma.c calls in here (rdma_probe.h).
 */
#include "transport/rdma_probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "link/engine.h"
#include "transport/rdma.h"
#include "transport/rdma_plan.h"
#include "transport/transport.h"
#include "transport/transport_testing.h"

/* The 16-byte form back to a socket address (for the rails and logs). */
static void to_sockaddr(const uint8_t ip[16], struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (llk_rdma_ip_is_v4(ip)) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, ip + 12, 4);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, ip, 16);
    }
}

/* The address alone (no port) for messages. */
static void ip_text(const uint8_t ip[16], char *out, size_t cap)
{
    bool v4 = llk_rdma_ip_is_v4(ip);
    if (!inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? ip + 12 : ip, out, (socklen_t)cap))
        snprintf(out, cap, "?");
}

int llk_rdma_probe_client(llmlink_t *e, llk_xlink_t *xl, int fd, int64_t deadline_ms,
                          struct sockaddr_storage *local, struct sockaddr_storage *target,
                          uint16_t *n, llk_rdma_probe_out_t *out)
{
    llk_rdma_xlink_t *rx = llk_rdma_xlink(xl);
    llk_rdma_addr_t mine[LLK_RDMA_MAX_ADDRS], cand[LLK_RDMA_MAX_ADDRS];
    size_t nmine = llk_rdma_local_addrs(e->rdma, mine, LLK_RDMA_MAX_ADDRS);
    pthread_mutex_lock(&xl->mu);
    uint16_t ngiven = rx->ngiven;
    struct sockaddr_storage given[LLMLINK_MAX_IP_INFOS];
    memcpy(given, rx->given, sizeof given);
    pthread_mutex_unlock(&xl->mu);
    size_t nc = llk_rdma_candidates(mine, nmine, given, ngiven, cand, LLK_RDMA_MAX_ADDRS);
    uint8_t f[LLK_XWIRE_HEADER_SIZE + 2 + LLK_RDMA_MAX_ADDRS * LLK_XWIRE_PROBE_REC];
    uint64_t req_id = xl->req_next_id[0]++;
    size_t len = llk_xwire_encode_rdma_probe(f, sizeof f, req_id, cand, (uint16_t)nc);
    if (!len || llk_xlink_send_all(xl, fd, f, len, deadline_ms) != 0) {
        snprintf(out->why, sizeof out->why, "sending XRDMA_PROBE: %s",
                 len ? strerror(errno) : "cannot encode");
        out->st = LLMLINK_LINK_FAILED;
        return -1;
    }
    uint8_t hb[LLK_XWIRE_HEADER_SIZE];
    llk_xframe_header_t h;
    const char *dwhy = NULL;
    if (llk_xlink_recv_all(xl, fd, hb, sizeof hb, deadline_ms) != 0) {
        snprintf(out->why, sizeof out->why, "no answer to XRDMA_PROBE: %s", strerror(errno));
        out->st = errno == ETIMEDOUT ? LLMLINK_TIMEOUT : LLMLINK_LINK_FAILED;
        return -1;
    }
    if (llk_xwire_read_header(hb, &h, &dwhy) != 0 || h.type != LLK_XMSG_RDMA_PROBE_OK ||
        h.req_id != req_id) {
        snprintf(out->why, sizeof out->why, "bad answer to XRDMA_PROBE (%s)",
                 dwhy ? dwhy : "type");
        out->st = LLMLINK_PROTOCOL_ERROR;
        return -1;
    }
    uint8_t *buf = malloc(h.length ? h.length : 1);
    llk_xrdma_probe_t *ok = malloc(sizeof *ok);
    if (!buf || !ok || llk_xlink_recv_all(xl, fd, buf, h.length, deadline_ms) != 0 ||
        llk_xwire_decode_rdma_probe_ok(buf, h.length, ok, &dwhy) != 0) {
        snprintf(out->why, sizeof out->why, "bad XRDMA_PROBE_OK: %s",
                 buf && ok ? (dwhy ? dwhy : strerror(errno)) : "out of memory");
        out->st = LLMLINK_PROTOCOL_ERROR;
        free(ok);
        free(buf);
        return -1;
    }
    free(buf);
    if (ok->status != LLMLINK_SUCCESS) {
        snprintf(out->why, sizeof out->why, "cluster %llu refused the rail probe: %s",
                 (unsigned long long)xl->remote_id, ok->msg);
        out->refusal = ok->status;
        out->st = LLMLINK_LINK_FAILED;
        free(ok);
        return -1;
    }
    llk_rdma_pair_t p[LLK_XWIRE_MAX_RAILS];
    size_t np = llk_rdma_pair(cand, nc, ok->addr, ok->naddr, LLK_XWIRE_MAX_RAILS, p);
    for (size_t i = 0; i < np; i++) {
        to_sockaddr(cand[p[i].client].ip, &local[i]);
        to_sockaddr(ok->addr[p[i].server].ip, &target[i]);
    }
    if (e->test_rdma_cross_pairs && np >= 2) {
        struct sockaddr_storage first = target[0];
        for (size_t i = 0; i + 1 < np; i++)
            target[i] = target[i + 1];
        target[np - 1] = first;
    }
    if (np == 0)
        LLK_INFO("cluster %llu: no pair of RDMA addresses in one subnet with cluster %llu "
                 "(%zu local, %u remote): rails paired by position of the ip infos",
                 (unsigned long long)e->cluster_id, (unsigned long long)xl->remote_id, nc,
                 ok->naddr);
    free(ok);
    *n = (uint16_t)np;
    return 0;
}

void llk_test_set_rdma_cross_pairs(llmlink_t *e, bool on)
{
    e->test_rdma_cross_pairs = on;
}

/* The owner's answer to a probe, into q's buffer. */
static int answer(llk_xserve_t *q, const llk_xrdma_probe_t *m)
{
    size_t need = LLK_XWIRE_HEADER_SIZE + 8 + LLK_XWIRE_MAX_MSG +
                  LLK_XWIRE_PROBE_MAX_ADDRS * LLK_XWIRE_PROBE_REC;
    if (*q->tx_cap < need || !*q->tx) {
        uint8_t *p = realloc(*q->tx, need);
        if (!p) {
            snprintf(q->why, sizeof q->why, "out of memory for XRDMA_PROBE_OK");
            return -1;
        }
        *q->tx = p;
        *q->tx_cap = need;
    }
    q->tx_len = llk_xwire_encode_rdma_probe_ok(*q->tx, *q->tx_cap, q->req_id, m);
    if (q->tx_len == 0) {
        snprintf(q->why, sizeof q->why, "cannot encode XRDMA_PROBE_OK");
        return -1;
    }
    return 0;
}

int llk_rdma_serve_probe(llk_xserve_t *q)
{
    llmlink_t *e = q->e;
    llk_xlink_t *xl = q->xl;
    llk_rdma_xlink_t *rx = llk_rdma_xlink(xl);
    const char *dwhy = "?";
    llk_xrdma_probe_t *cl = malloc(sizeof *cl), *m = calloc(1, sizeof *m);
    if (!cl || !m) {
        free(cl);
        free(m);
        snprintf(q->why, sizeof q->why, "out of memory for XRDMA_PROBE");
        return -1;
    }
    if (llk_xwire_decode_rdma_probe(q->rx, q->rx_len, cl, &dwhy) != 0) {
        snprintf(q->why, sizeof q->why, "protocol error: bad XRDMA_PROBE: %s", dwhy);
        free(cl);
        free(m);
        return -1;
    }
    pthread_mutex_lock(&xl->mu);
    bool allowed = rx->peer && rx->peer_rails && !rx->link && !rx->probed && e->rdma;
    pthread_mutex_unlock(&xl->mu);
    if (!allowed) {
        /* LINK_FAILED tells the client this side forces rdma: no fallback */
        m->status = e->opts.transport == LLK_TRANSPORT_RDMA ? LLMLINK_LINK_FAILED
                                                            : LLMLINK_FEATURE_NOT_ENABLED;
        snprintf(m->msg, sizeof m->msg, "RDMA rails are not paired by the data on this link, "
                 "or probed already");
    } else {
        m->naddr = (uint16_t)llk_rdma_local_addrs(e->rdma, m->addr, LLK_XWIRE_PROBE_MAX_ADDRS);
        llk_rdma_pair_t p[LLK_XWIRE_MAX_RAILS];
        size_t np = llk_rdma_pair(cl->addr, cl->naddr, m->addr, m->naddr, LLK_XWIRE_MAX_RAILS, p);
        pthread_mutex_lock(&xl->mu);
        rx->probed = true;
        rx->npairs = (uint16_t)np;
        for (size_t i = 0; i < np; i++) {
            memcpy(rx->pair_client[i], cl->addr[p[i].client].ip, 16);
            memcpy(rx->pair_server[i], m->addr[p[i].server].ip, 16);
        }
        pthread_mutex_unlock(&xl->mu);
        if (np == 0)
            LLK_INFO("cluster %llu: no pair of RDMA addresses in one subnet with cluster %llu "
                     "(%u remote, %u local): rails paired by position",
                     (unsigned long long)e->cluster_id, (unsigned long long)xl->remote_id,
                     cl->naddr, m->naddr);
    }
    int rc = answer(q, m);
    free(cl);
    free(m);
    return rc;
}

bool llk_rdma_setup_paired(const llk_xrail_wire_t *rails, uint16_t n, const uint8_t (*pc)[16],
                           const uint8_t (*ps)[16], uint16_t npairs, char *why, size_t cap)
{
    if (n != npairs) {
        snprintf(why, cap, "XRDMA_SETUP has %u rails, the pairing %u", n, npairs);
        return false;
    }
    for (uint16_t i = 0; i < n; i++) {
        bool found = false, twice = false;
        for (uint16_t k = 0; k < npairs && !found; k++)
            found = !memcmp(rails[i].gid, pc[k], 16) && !memcmp(rails[i].target_ip, ps[k], 16);
        for (uint16_t k = 0; k < i && !twice; k++)
            twice = !memcmp(rails[i].gid, rails[k].gid, 16) &&
                    !memcmp(rails[i].target_ip, rails[k].target_ip, 16);
        if (!found || twice) {
            char a[64], b[64];
            ip_text(rails[i].gid, a, sizeof a);
            ip_text(rails[i].target_ip, b, sizeof b);
            snprintf(why, cap, "rail %u (%s -> %s) is %s", i, a, b,
                     twice ? "named twice" : "not a pair of the probe");
            return false;
        }
    }
    return true;
}

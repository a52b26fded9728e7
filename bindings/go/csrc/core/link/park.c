/* link/park.c - connections beyond the handshake limits wait *parked*.
 *
 * The server takes every connection off the listener at once (so the
 * kernel's accept queue never fills with a flood that keeps honest clients
 * behind it), but reads only those that hold a handshake slot: at most
 * llmlink.MaxConcurrentHandshakes in all and llmlink.MaxHandshakesPerAddress
 * from one source address. The others are parked: not read, not in epoll,
 * holding no slot, in a FIFO of at most park_max, each still under the
 * first-frame deadline from its accept. When a slot frees, parked
 * connections are let in oldest first, skipping those whose address is at
 * its cap. So idle connections from one address hold at most its cap of
 * slots, and an honest client from another address is let in at once; with
 * every slot idle, it waits at most llmlink.FirstFrameTimeoutMs.
 *
 * Why park rather than refuse over-cap connections at accept: one honest
 * client opens 2 x StreamsPerLink data streams at once from one address,
 * and many engines on one host link at once; refusing them failed links
 * that only had to wait a moment.
 */
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "base/clock.h"
#include "base/log.h"
#include "link/engine.h"
#include "link/tls.h"
#include "transport/transport_testing.h"

/* Parked connections per engine: one socket and one llk_conn_t each
 * (about 10 KiB), so at most about 10 MiB; and at most a quarter of the
 * process's descriptor limit, so that a flood leaves the application and
 * the links their descriptors (park_max). */
#define LLK_PARK_MAX 1024u
#define LLK_PARK_MIN 16u
/* Addresses at their cap remembered in one promotion pass, so that a long
 * FIFO from one address is skipped without a scan each. */
#define LLK_PARK_FULL_MEMO 64

void llk_park_key(const struct sockaddr *sa, uint8_t key[LLK_SRC_KEY_SIZE])
{
    memset(key, 0, LLK_SRC_KEY_SIZE);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        key[0] = 4;
        memcpy(key + 1, &in->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        const uint8_t *a = in6->sin6_addr.s6_addr;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            key[0] = 4; /* the same client over a dual-stack listener */
            memcpy(key + 1, a + 12, 4);
        } else {
            /* The /64: a host picks any address of its /64 (SLAAC, privacy
             * addresses), so a /128 key would not bound it. Hosts sharing
             * a /64 share the cap, which only makes them wait a moment. */
            key[0] = 6;
            memcpy(key + 1, a, 8);
        }
    } else {
        key[0] = 0xFF; /* not an IP address: all such share one key */
    }
}

void llk_park_unlink(llmlink_t *e, llk_conn_t *c)
{
    if (c->park_prev)
        c->park_prev->park_next = c->park_next;
    else if (e->park_head == c)
        e->park_head = c->park_next;
    else
        return; /* not in the FIFO */
    if (c->park_next)
        c->park_next->park_prev = c->park_prev;
    else
        e->park_tail = c->park_prev;
    c->park_prev = c->park_next = NULL;
    e->parked--;
}

static uint32_t park_max(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return LLK_PARK_MAX;
    rlim_t q = rl.rlim_cur / 4;
    if (q < LLK_PARK_MIN)
        return LLK_PARK_MIN;
    return q < LLK_PARK_MAX ? (uint32_t)q : LLK_PARK_MAX;
}

void llk_park_add(llmlink_t *e, llk_conn_t *c, int64_t now)
{
    if (!e->park_max)
        e->park_max = park_max();
    if (e->parked >= e->park_max)
        llk_park_promote(e, now); /* a free slot takes one before any is closed */
    if (e->parked >= e->park_max && e->park_head) {
        /* The oldest is the nearest its deadline; a flood pushes out its
         * own oldest, while a client that arrived later keeps its place. */
        llk_conn_t *old = e->park_head;
        e->park_dropped++;
        llk_server_warn_limit(e, now,
                              "closed parked connection from %s: %u connections wait parked, "
                              "the limit",
                              old->peer, e->park_max);
        llk_conn_set_state(e, old, LLK_CONN_DEAD);
    }
    c->deadline_ms = now + llk_server_first_frame_ms(e);
    c->last_rx_ms = c->last_tx_ms = now;
    c->park_next = NULL;
    c->park_prev = e->park_tail;
    if (e->park_tail)
        e->park_tail->park_next = c;
    else
        e->park_head = c;
    e->park_tail = c;
    e->parked++;
    e->parked_total++;
}

void llk_park_timed_out(llmlink_t *e, llk_conn_t *c, int64_t now)
{
    e->park_timed_out++;
    e->hs_timed_out++;
    e->hs_first_frame_timeouts++;
    llk_server_warn_limit(e, now,
                          "dropped parked connection from %s: no handshake slot within %u ms "
                          "(llmlink.FirstFrameTimeoutMs; %u connections parked)",
                          c->peer, llk_server_first_frame_ms(e), e->parked);
    llk_conn_set_state(e, c, LLK_CONN_DEAD);
}

/* Connections from key in handshake now. */
static uint32_t in_handshake(const llmlink_t *e, const uint8_t *key)
{
    uint32_t n = 0;
    for (const llk_conn_t *c = e->conns; c; c = c->next)
        if (c->state == LLK_CONN_SRV_HANDSHAKE && memcmp(c->src_key, key, LLK_SRC_KEY_SIZE) == 0)
            n++;
    return n;
}

static bool memo_has(uint8_t memo[][LLK_SRC_KEY_SIZE], size_t n, const uint8_t *key)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(memo[i], key, LLK_SRC_KEY_SIZE) == 0)
            return true;
    return false;
}

/* c leaves the FIFO for a handshake slot: read from now on. */
static bool promote(llmlink_t *e, llk_conn_t *c, int64_t now)
{
    int64_t deadline = c->deadline_ms;
    llk_park_unlink(e, c);
    /* TLS: the relay is made here, not at accept, so parked connections
     * cost no thread; its handshake has what is left of the first-frame
     * deadline, which the reactor enforces on the plaintext end too. */
    if (e->tls) {
        int64_t left = deadline - now;
        int fd = llk_tls_wrap(e->tls, c->fd, true, left > 0 ? (uint32_t)left : 1, c->peer);
        c->fd = fd;
        if (fd < 0) {
            LLK_ERROR("cluster %llu: TLS relay for %s: %m", (unsigned long long)e->cluster_id,
                      c->peer);
            c->state = LLK_CONN_DEAD; /* never counted as a handshake */
            return false;
        }
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        LLK_ERROR("cluster %llu: epoll_ctl for %s: %m", (unsigned long long)e->cluster_id,
                  c->peer);
        c->state = LLK_CONN_DEAD; /* never counted as a handshake */
        return false;
    }
    c->state = LLK_CONN_SRV_HANDSHAKE; /* not set_state: no slot was freed */
    llk_server_begin_handshake(e, c, now);
    /* The deadline runs from the accept, not from here, so a connection
     * let in late never holds its slot past one that came after it (what
     * its peer sent meanwhile is read, at the latest, at the deadline:
     * llk_link_on_timer). */
    c->deadline_ms = deadline;
    e->park_promoted++;
    return true;
}

/* Something arrived on a parked connection (it is not in epoll, so ask the
 * socket): such one past its deadline is let in and read once before it is
 * judged (llk_link_on_timer), since its peer may have sent in time. */
static bool has_bytes(const llk_conn_t *c)
{
    uint8_t b;
    return c->fd >= 0 && recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

void llk_park_promote(llmlink_t *e, int64_t now)
{
    uint8_t full[LLK_PARK_FULL_MEMO][LLK_SRC_KEY_SIZE];
    size_t nfull = 0;
    llk_conn_t *c = e->park_head;
    /* Bounded: each step removes c or moves past it in a FIFO of at most
     * LLK_PARK_MAX. */
    while (c && e->hs_in_progress < e->opts.max_concurrent_handshakes &&
           e->state == LLK_ENGINE_RUNNING) {
        llk_conn_t *nx = c->park_next;
        if (now >= c->deadline_ms && !has_bytes(c)) {
            llk_park_timed_out(e, c, now);
        } else if (!memo_has(full, nfull, c->src_key)) {
            if (in_handshake(e, c->src_key) < e->opts.max_handshakes_per_address)
                promote(e, c, now);
            else if (nfull < LLK_PARK_FULL_MEMO)
                memcpy(full[nfull++], c->src_key, LLK_SRC_KEY_SIZE);
        }
        c = nx;
    }
}

int64_t llk_park_expire(llmlink_t *e, int64_t now)
{
    if (!e->park_head)
        return 0;
    /* After the timer pass freed what it frees: those that can go in, go
     * in; the rest past their deadline are closed. The FIFO is in accept
     * order, so in deadline order. */
    llk_park_promote(e, now);
    bool closed = false;
    for (uint32_t i = 0; i < LLK_PARK_MAX && e->park_head && now >= e->park_head->deadline_ms;
         i++) {
        llk_park_timed_out(e, e->park_head, now);
        closed = true;
    }
    if (closed)
        return now; /* the reactor frees them in its next pass */
    return e->park_head ? e->park_head->deadline_ms : 0;
}

void llk_test_park_stats(llmlink_t *e, llk_test_park_stats_t *s)
{
    pthread_mutex_lock(&e->mu);
    s->parked = e->parked;
    s->parked_total = e->parked_total;
    s->dropped = e->park_dropped;
    s->timed_out = e->park_timed_out;
    s->promoted = e->park_promoted;
    s->in_handshake = e->hs_in_progress;
    pthread_mutex_unlock(&e->mu);
}

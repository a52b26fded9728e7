/* link/tls_relay.c - the relay thread of one TLS connection (see tls.h):
 * handshake, then SSL_read / SSL_write between the TCP socket and the
 * plaintext end the library uses, with TCP's close semantics. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "base/clock.h"
#include "base/log.h"
#include "link/tls_int.h"
#include "link/wire.h"

/* Bytes in flight per direction inside the relay; large enough that one
 * SSL_write fills several records and one recv drains a socketpair. */
#define RELAY_BUF (256u * 1024u)
/* The plaintext end's kernel buffers (capped by net.core.wmem_max). */
#define PAIR_SNDBUF (1 << 20)
/* After the plaintext end closed, how long the relay may take to pass on
 * what was queued and to see the peer's end (what llk_tls_peer_ended
 * reports): longer than any fence wait (1 s). */
#define LINGER_MS 2000
/* After a refused handshake: how long the server keeps reading what the
 * client still sends, so that its alert arrives rather than a reset. */
#define REFUSE_DRAIN_MS 200
#define RELAY_STACK (256u * 1024u)

typedef struct relay {
    llk_tls_t *t;
    llk_tls_entry_t *en;
    SSL *ssl;
    int tcp, app;
    bool server;
    int64_t hs_deadline;
    char peer[72];
    uint8_t *a2t, *t2a; /* app -> TLS, TLS -> app */
    size_t a2t_len, a2t_off, t2a_len, t2a_off;
} relay_t;

/* ---- failures ------------------------------------------------------------- */

/* Alerts a peer sends about this side's certificate (TLS alert numbers
 * 42-46, 48, 49, 51, 116, as OpenSSL's reason codes). */
static bool cert_alert(int reason)
{
    switch (reason - SSL_AD_REASON_OFFSET) {
    case 42: case 43: case 44: case 45: case 46: case 48: case 49: case 51: case 116:
        return true;
    default:
        return false;
    }
}

static void record(relay_t *r, bool auth, const char *why)
{
    llk_tls_registry_lock();
    if (!r->en->why[0]) {
        snprintf(r->en->why, sizeof r->en->why, "%s", why);
        r->en->auth = auth;
    }
    llk_tls_registry_unlock();
}

/* A server's refusals are a hostile peer's to trigger at will: one WARN a
 * second, with the count of those not logged. */
static void warn_refused(relay_t *r, const char *why)
{
    int64_t now = llk_now_ms();
    int64_t next = atomic_load(&r->t->warn_next_ms);
    if (now < next || !atomic_compare_exchange_strong(&r->t->warn_next_ms, &next, now + 1000)) {
        atomic_fetch_add(&r->t->warn_suppressed, 1);
        return;
    }
    LLK_WARN("TLS: refused connection from %s: %s (%llu more since the last such warning, "
             "not logged)", r->peer, why,
             (unsigned long long)atomic_exchange(&r->t->warn_suppressed, 0));
}

/* Why the handshake (or the first read after it, where a TLS 1.3 client
 * learns that the server refused its certificate) failed. */
static void failed(relay_t *r, int sslerr, int sys_errno, bool handshake)
{
    char why[224], e[160];
    bool auth = false, refused_peer = false; /* refused_peer: this side's own check */
    long vr = SSL_get_verify_result(r->ssl);
    unsigned long code = ERR_peek_last_error();
    int reason = ERR_GET_REASON(code);
    if (handshake && vr != X509_V_OK) {
        auth = refused_peer = true;
        snprintf(why, sizeof why, "the peer's certificate did not verify: %s",
                 X509_verify_cert_error_string(vr));
    } else if (code && ERR_GET_LIB(code) == ERR_LIB_SSL &&
               reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
        auth = refused_peer = true;
        snprintf(why, sizeof why, "the peer presented no certificate");
    } else if (code && ERR_GET_LIB(code) == ERR_LIB_SSL && cert_alert(reason)) {
        auth = true;
        ERR_error_string_n(code, e, sizeof e);
        snprintf(why, sizeof why, "the peer refused this side's certificate: %s", e);
    } else if (code) {
        ERR_error_string_n(code, e, sizeof e);
        snprintf(why, sizeof why, "TLS %s failed: %s", handshake ? "handshake" : "read", e);
    } else if (sslerr == SSL_ERROR_SYSCALL && sys_errno) {
        snprintf(why, sizeof why, "TLS %s failed: %s", handshake ? "handshake" : "read",
                 strerror(sys_errno));
    } else {
        snprintf(why, sizeof why, "the peer closed the connection during the TLS %s",
                 handshake ? "handshake" : "session");
    }
    ERR_clear_error();
    record(r, auth, why);
    if (r->server) {
        if (refused_peer)
            atomic_fetch_add(&r->t->auth_refusals, 1);
        warn_refused(r, why);
    } else {
        LLK_DEBUG("TLS: connection to %s: %s", r->peer, why);
    }
}

/* ---- handshake ------------------------------------------------------------ */

/* Waits, within the handshake deadline, until the TCP socket has `n` bytes
 * to peek at; returns how many it has (fewer on timeout or EOF). */
static ssize_t peek_first(relay_t *r, uint8_t *buf, size_t n)
{
    ssize_t got = 0;
    for (;;) {
        ssize_t g = recv(r->tcp, buf, n, MSG_PEEK | MSG_DONTWAIT);
        if (g > 0)
            got = g;
        if (g == (ssize_t)n || g == 0 || (g > 0 && buf[0] == 0x16) ||
            (g < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            return got; /* enough, a TLS record, EOF or an error */
        int64_t left = r->hs_deadline - llk_now_ms();
        if (left <= 0)
            return got;
        if (g > 0) {
            /* A few bytes of a frame: the rest comes in a moment (poll
             * would only say "readable" again). */
            poll(NULL, 0, 10);
            continue;
        }
        struct pollfd p[2] = {{.fd = r->tcp, .events = POLLIN},
                              {.fd = r->app, .events = POLLRDHUP}};
        if (poll(p, 2, left > 1000 ? 1000 : (int)left) > 0 &&
            (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR)))
            return got; /* the connection was given up */
    }
}

/* A server's first look: a peer that speaks llmlink in plaintext (an
 * engine without TLS options) gets a plaintext REJECT that says why, so
 * its link fails with LLMLINK_AUTH_FAILED and a message an operator can
 * act on, instead of a closed connection. It names nothing of this
 * engine. Returns true when it was such a peer. */
static bool refuse_plaintext(relay_t *r)
{
    uint8_t h[4];
    static const uint8_t magic[4] = {(LLK_WIRE_MAGIC >> 24) & 0xff, (LLK_WIRE_MAGIC >> 16) & 0xff,
                                     (LLK_WIRE_MAGIC >> 8) & 0xff, LLK_WIRE_MAGIC & 0xff};
    if (peek_first(r, h, sizeof h) != (ssize_t)sizeof h || memcmp(h, magic, sizeof h) != 0)
        return false;
    /* Counted before the peer can learn of it. */
    const char *why = "the peer speaks llmlink without TLS";
    record(r, true, why);
    atomic_fetch_add(&r->t->auth_refusals, 1);
    warn_refused(r, why);
    uint8_t f[LLK_WIRE_HEADER_SIZE + 8 + LLK_WIRE_MAX_REJECT_MSG];
    size_t n = llk_wire_encode_reject(f, sizeof f, LLK_WIRE_VERSION, LLMLINK_AUTH_FAILED,
                                      "this engine accepts TLS connections only: set "
                                      "llmlink.TlsCertFile, llmlink.TlsKeyFile and "
                                      "llmlink.TlsCaFile");
    if (n)
        send(r->tcp, f, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    return true;
}

static int handshake(relay_t *r)
{
    if (r->server && refuse_plaintext(r))
        return -1;
    for (;;) {
        ERR_clear_error();
        int rc = SSL_do_handshake(r->ssl);
        if (rc == 1)
            return 0;
        int se = SSL_get_error(r->ssl, rc);
        int err = errno;
        short ev;
        if (se == SSL_ERROR_WANT_READ)
            ev = POLLIN;
        else if (se == SSL_ERROR_WANT_WRITE)
            ev = POLLOUT;
        else {
            failed(r, se, err, true);
            return -1;
        }
        int64_t left = r->hs_deadline - llk_now_ms();
        if (left <= 0) {
            char why[96];
            snprintf(why, sizeof why, "the TLS handshake did not complete in time");
            record(r, false, why);
            if (r->server)
                warn_refused(r, why);
            return -1;
        }
        /* The plaintext end closing means the connection was given up
         * (its own deadline, an engine that stops): stop too. */
        struct pollfd p[2] = {{.fd = r->tcp, .events = ev}, {.fd = r->app, .events = POLLRDHUP}};
        if (poll(p, 2, left > 1000 ? 1000 : (int)left) > 0 &&
            (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR)))
            return -1;
    }
}

/* ---- copying -------------------------------------------------------------- */

typedef struct {
    bool app_eof;     /* the plaintext end shut its writing side or closed */
    bool app_wclosed; /* nothing more can be written to it: discard */
    bool app_shut;    /* this relay shut its side for writing: the plaintext end reads EOF */
    bool tls_rdone;   /* nothing more comes from the peer */
    bool tls_wdone;   /* close_notify sent, or writing failed: discard */
    bool got_data;
    int64_t linger_until;
    short app_ev, tcp_ev;
} pump_t;

static bool app_to_tls(relay_t *r, pump_t *s)
{
    bool progress = false;
    if (!s->app_eof && r->a2t_off == r->a2t_len) {
        ssize_t n = recv(r->app, r->a2t, RELAY_BUF, MSG_DONTWAIT);
        if (n > 0) {
            r->a2t_len = (size_t)n;
            r->a2t_off = 0;
            progress = true;
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            /* From here the relay has LINGER_MS to pass on what is queued
             * and see the peer's end: a peer that stops reading cannot
             * hold the thread. */
            s->app_eof = true;
            s->linger_until = llk_now_ms() + LINGER_MS;
            progress = true;
        } else {
            s->app_ev |= POLLIN;
        }
    }
    if (r->a2t_off < r->a2t_len) {
        if (s->tls_wdone) {
            r->a2t_off = r->a2t_len;
            return true;
        }
        ERR_clear_error();
        int w = SSL_write(r->ssl, r->a2t + r->a2t_off, (int)(r->a2t_len - r->a2t_off));
        if (w > 0) {
            r->a2t_off += (size_t)w;
            return true;
        }
        int se = SSL_get_error(r->ssl, w);
        if (se == SSL_ERROR_WANT_WRITE)
            s->tcp_ev |= POLLOUT;
        else if (se == SSL_ERROR_WANT_READ)
            s->tcp_ev |= POLLIN;
        else {
            ERR_clear_error();
            s->tls_wdone = true;
            progress = true;
        }
    }
    /* What the plaintext end queued before it closed goes out first, then
     * close_notify and a FIN: as a TCP socket's shutdown would. */
    if (s->app_eof && r->a2t_off == r->a2t_len && !s->tls_wdone) {
        ERR_clear_error();
        SSL_shutdown(r->ssl);
        ERR_clear_error();
        shutdown(r->tcp, SHUT_WR);
        s->tls_wdone = true;
        progress = true;
    }
    return progress;
}

static bool tls_to_app(relay_t *r, pump_t *s)
{
    bool progress = false;
    if (!s->tls_rdone && r->t2a_off == r->t2a_len)
        r->t2a_len = r->t2a_off = 0;
    /* Records are at most 16 KiB: gather what has arrived, then hand it on
     * in one send. */
    while (!s->tls_rdone && r->t2a_off == 0 && RELAY_BUF - r->t2a_len >= 16384) {
        ERR_clear_error();
        errno = 0;
        int n = SSL_read(r->ssl, r->t2a + r->t2a_len, (int)(RELAY_BUF - r->t2a_len));
        if (n > 0) {
            r->t2a_len += (size_t)n;
            s->got_data = true;
            progress = true;
            continue;
        }
        if (r->t2a_len) {
            /* Hand on what came first; the next pass meets this again. */
            if (SSL_get_error(r->ssl, n) == SSL_ERROR_WANT_READ)
                s->tcp_ev |= POLLIN;
            break;
        }
        {
            int se = SSL_get_error(r->ssl, n);
            int err = errno;
            if (se == SSL_ERROR_WANT_READ) {
                s->tcp_ev |= POLLIN;
            } else if (se == SSL_ERROR_WANT_WRITE) {
                s->tcp_ev |= POLLOUT;
            } else {
                /* EOF, close_notify, reset or a bad record: the peer's side
                 * is over. Before any data, a failure is the peer refusing
                 * this side (TLS 1.3: the client learns it here). */
                if (se != SSL_ERROR_ZERO_RETURN) {
                    if (!s->got_data)
                        failed(r, se, err, false);
                    s->tls_wdone = true; /* a broken session: nothing more to send */
                }
                ERR_clear_error();
                s->tls_rdone = true;
                atomic_store(&r->en->peer_ended, true);
                progress = true;
            }
        }
        break;
    }
    if (r->t2a_off < r->t2a_len) {
        if (s->app_wclosed) {
            r->t2a_off = r->t2a_len;
            return true;
        }
        ssize_t n = send(r->app, r->t2a + r->t2a_off, r->t2a_len - r->t2a_off,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            r->t2a_off += (size_t)n;
            progress = true;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            s->app_ev |= POLLOUT;
        } else {
            s->app_wclosed = true;
            progress = true;
        }
    }
    /* The peer's end reaches the plaintext end as EOF, after its data. */
    if (s->tls_rdone && r->t2a_off == r->t2a_len && !s->app_shut) {
        shutdown(r->app, SHUT_WR);
        s->app_shut = true;
        progress = true;
    }
    return progress;
}

static void pump(relay_t *r)
{
    pump_t s = {0};
    for (;;) {
        bool progress;
        do {
            s.app_ev = s.tcp_ev = 0;
            progress = app_to_tls(r, &s);
            progress |= tls_to_app(r, &s);
        } while (progress);
        if (s.app_eof && s.tls_wdone && s.tls_rdone)
            return;
        int timeout = -1;
        if (s.linger_until) {
            int64_t left = s.linger_until - llk_now_ms();
            if (left <= 0)
                return;
            timeout = (int)left;
        }
        /* A side with nothing to wait for is left out: its HUP would wake
         * the loop for nothing. */
        struct pollfd p[2] = {{.fd = s.app_ev ? r->app : -1, .events = s.app_ev},
                              {.fd = s.tcp_ev ? r->tcp : -1, .events = s.tcp_ev}};
        if (!s.app_ev && !s.tcp_ev && timeout < 0)
            return; /* nothing can move any more */
        poll(p, 2, timeout);
    }
}

/* ---- the thread ------------------------------------------------------------- */

static void refuse_drain(relay_t *r)
{
    /* The client may still be sending (its HELLO after its Finished): read
     * it away for a moment so that it gets this side's alert, not a reset. */
    shutdown(r->tcp, SHUT_WR);
    int64_t until = llk_now_ms() + REFUSE_DRAIN_MS;
    uint8_t sink[4096];
    for (;;) {
        int64_t left = until - llk_now_ms();
        struct pollfd p = {.fd = r->tcp, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return;
        ssize_t n = recv(r->tcp, sink, sizeof sink, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            return;
    }
}

static void *relay_main(void *arg)
{
    relay_t *r = arg;
    pthread_setname_np(pthread_self(), "llk-tls");
    int hs = handshake(r);
    /* The copy buffers only for a peer that proved itself: a flood of
     * unauthenticated connections costs a thread and an SSL each. */
    if (hs == 0) {
        r->a2t = malloc(RELAY_BUF);
        r->t2a = malloc(RELAY_BUF);
        if (!r->a2t || !r->t2a) {
            LLK_ERROR("TLS: connection with %s: out of memory for the relay", r->peer);
            hs = -1;
        }
    }
    if (hs == 0) {
        atomic_fetch_add(&r->t->handshakes, 1);
        bool tx = BIO_get_ktls_send(SSL_get_wbio(r->ssl));
        bool rx = BIO_get_ktls_recv(SSL_get_rbio(r->ssl));
        if (tx)
            atomic_fetch_add(&r->t->ktls_send, 1);
        if (tx && rx)
            atomic_fetch_add(&r->t->ktls_both, 1);
        LLK_DEBUG("TLS: %s %s: %s, kTLS %s", r->server ? "accepted" : "connected to", r->peer,
                  SSL_get_cipher_name(r->ssl),
                  tx && rx ? "both ways" : tx ? "sending" : rx ? "receiving" : "off");
        pump(r);
    } else {
        atomic_store(&r->en->peer_ended, true);
        /* The plaintext end first: its connection (and handshake slot) end
         * now; then the client gets to read the alert. */
        shutdown(r->app, SHUT_RDWR);
        if (r->server)
            refuse_drain(r);
    }
    llk_tls_registry_lock();
    r->en->gone_ms = llk_now_ms();
    llk_tls_registry_unlock();
    atomic_store(&r->en->peer_ended, true);
    SSL_free(r->ssl);
    close(r->tcp);
    close(r->app);
    free(r->a2t);
    free(r->t2a);
    llk_tls_release(r->t);
    free(r);
    return NULL;
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static relay_t *relay_new(llk_tls_t *t, int tcp_fd, bool server, uint32_t handshake_ms,
                          const char *peer)
{
    relay_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->tcp = tcp_fd;
    r->app = -1;
    r->server = server;
    r->hs_deadline = llk_now_ms() + handshake_ms;
    snprintf(r->peer, sizeof r->peer, "%s", peer ? peer : "?");
    r->en = calloc(1, sizeof *r->en);
    r->ssl = SSL_new(t->ctx);
    if (!r->en || !r->ssl || SSL_set_fd(r->ssl, tcp_fd) != 1) {
        SSL_free(r->ssl);
        free(r->en);
        free(r->a2t);
        free(r->t2a);
        free(r);
        ERR_clear_error();
        errno = ENOMEM;
        return NULL;
    }
    if (server)
        SSL_set_accept_state(r->ssl);
    else
        SSL_set_connect_state(r->ssl);
    r->t = t;
    return r;
}

int llk_tls_wrap(llk_tls_t *t, int tcp_fd, bool server, uint32_t handshake_ms, const char *peer)
{
    int sv[2] = {-1, -1};
    relay_t *r = NULL;
    bool registered = false;
    if (set_nonblock(tcp_fd) != 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        goto fail;
    r = relay_new(t, tcp_fd, server, handshake_ms, peer);
    if (!r)
        goto fail;
    r->app = sv[1];
    for (int i = 0; i < 2; i++) {
        int sz = PAIR_SNDBUF;
        setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    }
    llk_tls_entry_t *en = r->en;
    en->local_len = sizeof en->local;
    en->peer_len = sizeof en->peer;
    if (!llk_tls_cookie(sv[0], &en->cookie) ||
        getsockname(tcp_fd, (struct sockaddr *)&en->local, &en->local_len) != 0 ||
        getpeername(tcp_fd, (struct sockaddr *)&en->peer, &en->peer_len) != 0)
        goto fail;
    /* Registered before anyone sees sv[0]; never removed while running. */
    llk_tls_registry_add(en);
    registered = true;
    llk_tls_ref(t);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, RELAY_STACK);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* The relay starts with every signal blocked: OpenSSL writes to the
     * socket with write(), and a peer's reset must give EPIPE, not a
     * SIGPIPE that kills a process which does not ignore it; the
     * application's handlers run on its own threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t th;
    int rc = pthread_create(&th, &attr, relay_main, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        llk_tls_release(t);
        llk_tls_registry_lock();
        en->gone_ms = llk_now_ms(); /* the registry frees it */
        llk_tls_registry_unlock();
        r->en = NULL;
        errno = rc;
        goto fail;
    }
    return sv[0];
fail:;
    int err = errno;
    if (r) {
        SSL_free(r->ssl);
        if (r->en && !registered)
            free(r->en);
        free(r->a2t);
        free(r->t2a);
        free(r);
    }
    if (sv[0] >= 0) {
        close(sv[0]);
        close(sv[1]);
    }
    close(tcp_fd);
    errno = err ? err : EIO;
    return -1;
}

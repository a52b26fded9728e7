/* link/tls.c - the engine's TLS context (loading and checking the files at
 * llmlink_init) and the registry of relayed descriptors (see tls.h; the
 * relay itself is tls_relay.c). */
#include "link/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "base/clock.h"
#include "link/tls_int.h"

/* ---- the context ----------------------------------------------------------- */

/* OpenSSL's reason for the last failure (its error queue emptied). */
static const char *ssl_reason(char *buf, size_t n)
{
    unsigned long code = ERR_peek_last_error();
    if (!code) {
        snprintf(buf, n, "unknown OpenSSL error");
        return buf;
    }
    ERR_error_string_n(code, buf, n);
    ERR_clear_error();
    return buf;
}

/* The private key, read from the descriptor whose mode was checked (no
 * window between the check and the read). */
static EVP_PKEY *load_key(const char *path, char *err, size_t errlen)
{
    char r[256];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "llmlink_init: option llmlink.TlsKeyFile: %s: %s", path,
                 strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (st.st_mode & (S_IRWXG | S_IRWXO))) {
        snprintf(err, errlen, "llmlink_init: option llmlink.TlsKeyFile: %s is accessible by "
                 "group or others (mode %04o); a private key must be readable by its owner "
                 "only (chmod 600)", path, (unsigned)(st.st_mode & 07777));
        close(fd);
        return NULL;
    }
    FILE *f = fdopen(fd, "r");
    if (!f) {
        snprintf(err, errlen, "llmlink_init: option llmlink.TlsKeyFile: %s: %s", path,
                 strerror(errno));
        close(fd);
        return NULL;
    }
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!k)
        snprintf(err, errlen, "llmlink_init: option llmlink.TlsKeyFile: %s: cannot load the "
                 "private key: %s", path, ssl_reason(r, sizeof r));
    return k;
}

static SSL_CTX *make_ctx(const llk_options_t *o, char *err, size_t errlen)
{
    char r[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (!ctx) {
        snprintf(err, errlen, "llmlink_init: cannot create a TLS context: %s",
                 ssl_reason(r, sizeof r));
        return NULL;
    }
    /* TLS 1.3 only; both sides present and verify a certificate; no
     * session tickets: no record after the handshake but application
     * data, which a kTLS receive side would otherwise have to handle. */
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    /* AES-128-GCM first: the fastest with AES-NI (a quarter faster than
     * AES-256-GCM in user space), and one that kernels' kTLS offers. */
    SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                                  "TLS_CHACHA20_POLY1305_SHA256");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_ENABLE_KTLS | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* No read-ahead: it buys nothing measurable here (the relay gathers
     * records itself), and records read ahead in user space would stand in
     * the way of moving the receive side into the kernel (kTLS). */
    if (SSL_CTX_use_certificate_chain_file(ctx, o->tls_cert_file) != 1) {
        snprintf(err, errlen, "llmlink_init: option llmlink.TlsCertFile: %s: cannot load the "
                 "certificate: %s", o->tls_cert_file, ssl_reason(r, sizeof r));
        goto fail;
    }
    EVP_PKEY *k = load_key(o->tls_key_file, err, errlen);
    if (!k)
        goto fail;
    int used = SSL_CTX_use_PrivateKey(ctx, k);
    EVP_PKEY_free(k);
    if (used != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "llmlink_init: option llmlink.TlsKeyFile: %s does not match the "
                 "certificate in %s: %s", o->tls_key_file, o->tls_cert_file,
                 ssl_reason(r, sizeof r));
        goto fail;
    }
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->tls_ca_file);
    if (!names || SSL_CTX_load_verify_locations(ctx, o->tls_ca_file, NULL) != 1) {
        if (names)
            sk_X509_NAME_pop_free(names, X509_NAME_free);
        snprintf(err, errlen, "llmlink_init: option llmlink.TlsCaFile: %s: cannot load the CA "
                 "certificate(s): %s", o->tls_ca_file, ssl_reason(r, sizeof r));
        goto fail;
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

llmlink_status_t llk_tls_load(const llk_options_t *o, llk_tls_t **out, char *err, size_t errlen)
{
    *out = NULL;
    const char *keys[3] = {"llmlink.TlsCertFile", "llmlink.TlsKeyFile", "llmlink.TlsCaFile"};
    const char *vals[3] = {o->tls_cert_file, o->tls_key_file, o->tls_ca_file};
    int set = 0;
    for (int i = 0; i < 3; i++)
        set += vals[i][0] != '\0';
    if (set == 0)
        return LLMLINK_SUCCESS;
    if (set < 3) {
        char missing[96] = "";
        for (int i = 0; i < 3; i++)
            if (!vals[i][0])
                snprintf(missing + strlen(missing), sizeof missing - strlen(missing), "%s%s",
                         missing[0] ? " and " : "", keys[i]);
        snprintf(err, errlen, "llmlink_init: TLS needs llmlink.TlsCertFile, llmlink.TlsKeyFile "
                 "and llmlink.TlsCaFile together; %s missing", missing);
        return LLMLINK_PARAM_INVALID;
    }
    SSL_CTX *ctx = make_ctx(o, err, errlen);
    if (!ctx)
        return LLMLINK_PARAM_INVALID;
    llk_tls_t *t = calloc(1, sizeof *t);
    if (!t) {
        SSL_CTX_free(ctx);
        snprintf(err, errlen, "llmlink_init: out of memory");
        return LLMLINK_OUT_OF_MEMORY;
    }
    t->ctx = ctx;
    atomic_init(&t->refs, 1);
    *out = t;
    return LLMLINK_SUCCESS;
}

void llk_tls_ref(llk_tls_t *t)
{
    atomic_fetch_add(&t->refs, 1);
}

void llk_tls_release(llk_tls_t *t)
{
    if (t && atomic_fetch_sub(&t->refs, 1) == 1) {
        SSL_CTX_free(t->ctx);
        free(t);
    }
}

uint64_t llk_tls_auth_refusals(const llk_tls_t *t)
{
    return t ? atomic_load(&t->auth_refusals) : 0;
}

uint64_t llk_tls_handshakes(const llk_tls_t *t)
{
    return t ? atomic_load(&t->handshakes) : 0;
}

uint64_t llk_tls_ktls_send(const llk_tls_t *t)
{
    return t ? atomic_load(&t->ktls_send) : 0;
}

uint64_t llk_tls_ktls_both(const llk_tls_t *t)
{
    return t ? atomic_load(&t->ktls_both) : 0;
}

/* ---- the registry ------------------------------------------------------------ */

/* Relayed descriptors are found by their socket's cookie (SO_COOKIE: never
 * reused, unlike a descriptor number). An entry outlives its relay by
 * TOMBSTONE_MS, so that whoever reads the plaintext end's EOF can still
 * learn why (llk_tls_failure); then it goes on the next registration. */
#define TOMBSTONE_MS 10000

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static llk_tls_entry_t *reg_head;

static bool cookie_of(int fd, uint64_t *cookie)
{
    socklen_t len = sizeof *cookie;
    return getsockopt(fd, SOL_SOCKET, SO_COOKIE, cookie, &len) == 0;
}

void llk_tls_registry_add(llk_tls_entry_t *en)
{
    int64_t now = llk_now_ms();
    pthread_mutex_lock(&reg_mu);
    for (llk_tls_entry_t **p = &reg_head; *p;) {
        llk_tls_entry_t *x = *p;
        if (x->gone_ms && now - x->gone_ms > TOMBSTONE_MS) {
            *p = x->next;
            free(x);
        } else {
            p = &x->next;
        }
    }
    en->next = reg_head;
    reg_head = en;
    pthread_mutex_unlock(&reg_mu);
}

void llk_tls_registry_lock(void)
{
    pthread_mutex_lock(&reg_mu);
}

void llk_tls_registry_unlock(void)
{
    pthread_mutex_unlock(&reg_mu);
}

/* Requires reg_mu. */
static llk_tls_entry_t *find_locked(int fd)
{
    uint64_t cookie;
    if (!cookie_of(fd, &cookie))
        return NULL;
    for (llk_tls_entry_t *x = reg_head; x; x = x->next)
        if (x->cookie == cookie)
            return x;
    return NULL;
}

static bool is_unix(int fd)
{
    int dom = 0;
    socklen_t len = sizeof dom;
    return getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &len) == 0 && dom == AF_UNIX;
}

static int addr_of(int fd, struct sockaddr *sa, socklen_t *len, bool peer)
{
    pthread_mutex_lock(&reg_mu);
    llk_tls_entry_t *x = find_locked(fd);
    if (x) {
        int rc = 0;
        if (x->gone_ms) {
            errno = ENOTCONN;
            rc = -1;
        } else {
            const struct sockaddr_storage *a = peer ? &x->peer : &x->local;
            socklen_t alen = peer ? x->peer_len : x->local_len;
            memcpy(sa, a, alen < *len ? alen : *len);
            *len = alen;
        }
        pthread_mutex_unlock(&reg_mu);
        return rc;
    }
    pthread_mutex_unlock(&reg_mu);
    return peer ? getpeername(fd, sa, len) : getsockname(fd, sa, len);
}

int llk_tls_getsockname(int fd, struct sockaddr *sa, socklen_t *len)
{
    return addr_of(fd, sa, len, false);
}

int llk_tls_getpeername(int fd, struct sockaddr *sa, socklen_t *len)
{
    return addr_of(fd, sa, len, true);
}

int llk_tls_peer_ended(int fd)
{
    pthread_mutex_lock(&reg_mu);
    llk_tls_entry_t *x = find_locked(fd);
    int r = x ? (x->gone_ms || atomic_load(&x->peer_ended)) : -1;
    pthread_mutex_unlock(&reg_mu);
    /* Not registered: a plain socket, or a relay long gone (its TLS socket
     * is closed: nothing more of this side's can reach the peer). */
    if (r < 0 && is_unix(fd))
        r = 1;
    return r;
}

bool llk_tls_failure(int fd, char *why, size_t n, bool *auth)
{
    *auth = false;
    pthread_mutex_lock(&reg_mu);
    llk_tls_entry_t *x = find_locked(fd);
    bool failed = x && x->why[0];
    if (failed) {
        snprintf(why, n, "%s", x->why);
        *auth = x->auth;
    }
    pthread_mutex_unlock(&reg_mu);
    return failed;
}

bool llk_tls_cookie(int fd, uint64_t *cookie)
{
    return cookie_of(fd, cookie);
}

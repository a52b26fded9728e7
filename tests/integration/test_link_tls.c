/*
 * test_link_tls.c - mutual TLS 1.3 on links (llmlink.TlsCertFile,
 * TlsKeyFile, TlsCaFile; core/link/tls.c, tls_relay.c):
 *
 *  - good certificates on both sides link, and every byte of pulls and
 *    pushes over tcp arrives (three block sizes, 2 streams per link and
 *    direction), each connection through its own TLS handshake; shm over
 *    TLS still proves its peer (the relay's TCP addresses) and moves bytes;
 *  - a client whose certificate is from another CA, or expired, and a
 *    server whose certificate is expired: the client's cluster status is
 *    LLMLINK_AUTH_FAILED with the reason, the server links nothing and
 *    counts the refusal;
 *  - a raw TLS client with no certificate is refused (alert), nothing
 *    links; an llmlink client without TLS options gets AUTH_FAILED;
 *  - a raw plaintext HELLO to a TLS server gets one plaintext REJECT
 *    (AUTH_FAILED, "TLS connections only", nothing about the engine) and
 *    is closed within llmlink.FirstFrameTimeoutMs; a connection that
 *    sends nothing is closed at that deadline;
 *  - a peer that resets the TLS connection under a relay still sending:
 *    the link fails, the process (SIGPIPE not ignored) lives on;
 *  - bad option combinations and files are refused at init, naming them.
 *
 * Certificates are made at run time (tests/common/tls_certs.h) into a
 * temporary directory. Loopback only; every wait bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "kvfill.h"
#include "link/engine.h"
#include "link/tls.h"
#include "link/wire.h"
#include "llk_test.h"
#include "llmlink.h"
#include "tls_certs.h"

#define PROMPT_ID 11u
#define DECODER_ID 22u
#define NT 4
#define NB 24

static char dir[64];

static int group_setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/llk_tls_XXXXXX");
    if (!mkdtemp(dir) || tls_certs_make(dir) != 0) {
        fprintf(stderr, "cannot make test certificates in %s\n", dir);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    const char *files[] = {"ca.pem", "other_ca.pem", "server.pem", "server.key", "client.pem",
                           "client.key", "other.pem", "other.key", "expired.pem",
                           "expired.key", "open.key", "garbage.pem"};
    char p[256];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
    return 0;
}

static const char *path(const char *name)
{
    static char bufs[8][256];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, 256, "%s/%s", dir, name);
    return b;
}

/* llmlink.AuthKey (hex) for the next engines made; NULL: none. Set by the
 * tests of TLS and a pre-shared key together, cleared by teardown. */
static const char *auth_key_p, *auth_key_d;

typedef struct fx {
    llmlink_t *p, *d;
    uint16_t port;
} fx_t;

/* A PROMPT engine with the server certificate (or `cert`'s). */
static llmlink_t *prompt(const char *cert, const char *transport)
{
    char pem[32], key[32];
    snprintf(pem, sizeof pem, "%s.pem", cert);
    snprintf(key, sizeof key, "%s.key", cert);
    llmlink_option_t o[] = {{"llm.listenIpInfo", "127.0.0.1:0"},
                            {"llmlink.Transport", transport},
                            {"llm.SyncKvCacheWaitTime", "10000"},
                            {"llmlink.FirstFrameTimeoutMs", "500"},
                            {"llmlink.TlsCertFile", path(pem)},
                            {"llmlink.TlsKeyFile", path(key)},
                            {"llmlink.TlsCaFile", path("ca.pem")},
                            {"llmlink.AuthKey", auth_key_p}};
    llmlink_t *e = NULL;
    assert_status(llmlink_create(&e, LLMLINK_ROLE_PROMPT, PROMPT_ID), LLMLINK_SUCCESS);
    assert_status(llmlink_init(e, o, auth_key_p ? 8 : 7), LLMLINK_SUCCESS);
    return e;
}

/* A DECODER engine with `cert` (NULL: no TLS). */
static llmlink_t *decoder(const char *cert, const char *transport)
{
    char pem[32], key[32];
    snprintf(pem, sizeof pem, "%s.pem", cert ? cert : "");
    snprintf(key, sizeof key, "%s.key", cert ? cert : "");
    llmlink_option_t o[] = {{"llmlink.Transport", transport},
                            {"llmlink.StreamsPerLink", "2"},
                            {"llm.SyncKvCacheWaitTime", "10000"},
                            {"llmlink.TlsCertFile", path(pem)},
                            {"llmlink.TlsKeyFile", path(key)},
                            {"llmlink.TlsCaFile", path("ca.pem")}};
    llmlink_t *e = NULL;
    assert_status(llmlink_create(&e, LLMLINK_ROLE_DECODER, DECODER_ID), LLMLINK_SUCCESS);
    size_t n = cert ? 6 : 3;
    if (auth_key_d) {
        llmlink_option_t all[7];
        memcpy(all, o, n * sizeof o[0]);
        all[n].key = "llmlink.AuthKey";
        all[n].value = auth_key_d;
        assert_status(llmlink_init(e, all, n + 1), LLMLINK_SUCCESS);
    } else {
        assert_status(llmlink_init(e, o, n), LLMLINK_SUCCESS);
    }
    return e;
}

static llmlink_status_t link_to(llmlink_t *d, uint16_t port)
{
    llmlink_ip_info_t ip = {"127.0.0.1", port};
    llmlink_cluster_info_t c = {PROMPT_ID, LLMLINK_ROLE_PROMPT, NULL, 0, &ip, 1};
    llmlink_status_t st[1] = {0};
    llmlink_status_t all = llmlink_link_clusters(d, &c, 1, 5000, st);
    return all == LLMLINK_SUCCESS ? st[0] : st[0] ? st[0] : all;
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    llmlink_destroy(fx->d);
    llmlink_destroy(fx->p);
    free(fx);
    auth_key_p = auth_key_d = NULL;
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void start_prompt(fx_t *fx, const char *cert, const char *transport)
{
    fx->p = prompt(cert, transport);
    assert_status(llmlink_get_listen_port(fx->p, 0, &fx->port), LLMLINK_SUCCESS);
}

/* ---- good certificates: every byte ------------------------------------------ */

static uint8_t *tensor(size_t bytes)
{
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    return m;
}

/* Pull every block of P's cache (reversed) into D's, then push D's (a
 * new pattern) back into P's, each byte checked; block size bs. */
static void move_and_check(fx_t *fx, uint64_t bs, uint64_t model)
{
    size_t bytes = (size_t)(NB * bs);
    uint8_t *pm[NT], *dm[NT];
    uint64_t pa[NT], da[NT];
    uint64_t ps = kvfill_seed(PROMPT_ID, model), ds = kvfill_seed(DECODER_ID, model);
    for (int t = 0; t < NT; t++) {
        pm[t] = tensor(bytes);
        dm[t] = tensor(bytes);
        kvfill_fill(pm[t], bytes, ps, (uint64_t)t, 0);
        memset(dm[t], 0xEE, bytes);
        pa[t] = (uint64_t)(uintptr_t)pm[t];
        da[t] = (uint64_t)(uintptr_t)dm[t];
    }
    llmlink_cache_desc_t desc = {.num_tensors = NT, .data_type = LLMLINK_DT_FLOAT16,
                                 .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                                 .shape = {NB, bs / 2}};
    llmlink_cache_key_t key = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = PROMPT_ID,
                               .model_id = model, .prefix_id = -1};
    int64_t pc, dc;
    assert_status(llmlink_register_blocks_cache(fx->p, &desc, pa, NT, &key, &pc),
                  LLMLINK_SUCCESS);
    assert_status(llmlink_register_blocks_cache(fx->d, &desc, da, NT, NULL, &dc),
                  LLMLINK_SUCCESS);
    uint64_t src[NB], dst[NB];
    for (int i = 0; i < NB; i++) {
        src[i] = (uint64_t)i;
        dst[i] = (uint64_t)(NB - 1 - i);
    }
    assert_status(llmlink_pull_blocks(fx->d, &key, dc, src, NB, dst, NB, NULL), LLMLINK_SUCCESS);
    for (int t = 0; t < NT; t++)
        for (int i = 0; i < NB; i++)
            if (kvfill_check(dm[t] + dst[i] * bs, bs, ps, (uint64_t)t, src[i] * bs) !=
                KVFILL_OK)
                fail_msg("pull, block size %llu: tensor %d block %d is wrong",
                         (unsigned long long)bs, t, i);
    for (int t = 0; t < NT; t++)
        kvfill_fill(dm[t], bytes, ds, (uint64_t)t, 0);
    assert_status(llmlink_push_blocks(fx->d, &key, dc, src, NB, dst, NB, NULL), LLMLINK_SUCCESS);
    for (int t = 0; t < NT; t++)
        for (int i = 0; i < NB; i++)
            if (kvfill_check(pm[t] + dst[i] * bs, bs, ds, (uint64_t)t, src[i] * bs) !=
                KVFILL_OK)
                fail_msg("push, block size %llu: tensor %d block %d is wrong",
                         (unsigned long long)bs, t, i);
    assert_status(llmlink_unregister_cache(fx->d, dc), LLMLINK_SUCCESS);
    assert_status(llmlink_unregister_cache(fx->p, pc), LLMLINK_SUCCESS);
    for (int t = 0; t < NT; t++) {
        munmap(pm[t], bytes);
        munmap(dm[t], bytes);
    }
}

static void test_good_certs_move_every_byte(void **state)
{
    fx_t *fx = *state;
    start_prompt(fx, "server", "tcp");
    fx->d = decoder("client", "tcp");
    assert_status(link_to(fx->d, fx->port), LLMLINK_SUCCESS);
    assert_int_equal(stats_of(fx->p).links, 1);
    /* Every connection to the listener went through a TLS handshake: the
     * control connection and 2 streams in each direction. */
    assert_int_equal(llk_tls_handshakes(fx->p->tls), 1 + 2 * 2);
    assert_int_equal(llk_tls_auth_refusals(fx->p->tls), 0);
    static const uint64_t sizes[] = {2048, 65536, 262144 + 4096};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        move_and_check(fx, sizes[i], i + 1);
    llmlink_xfer_stats_t xs = {.version = LLMLINK_XFER_STATS_VERSION};
    assert_status(llmlink_get_xfer_stats(fx->d, &xs), LLMLINK_SUCCESS);
    assert_true(xs.tcp_requests > 0);
    /* Unlink and link again over TLS. */
    llmlink_ip_info_t ip = {"127.0.0.1", fx->port};
    llmlink_cluster_info_t c = {PROMPT_ID, LLMLINK_ROLE_PROMPT, NULL, 0, &ip, 1};
    llmlink_status_t st[1];
    assert_status(llmlink_unlink_clusters(fx->d, &c, 1, 3000, false, st), LLMLINK_SUCCESS);
    assert_status(link_to(fx->d, fx->port), LLMLINK_SUCCESS);
    move_and_check(fx, 4096, 9);
}

/* TLS and a pre-shared key together: the key exchange runs inside TLS on
 * every connection, and both have to pass. */
#define KEY_A "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define KEY_B "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

static void test_tls_and_key_together(void **state)
{
    fx_t *fx = *state;
    auth_key_p = auth_key_d = KEY_A;
    start_prompt(fx, "server", "tcp");
    fx->d = decoder("client", "tcp");
    assert_status(link_to(fx->d, fx->port), LLMLINK_SUCCESS);
    assert_int_equal(llk_tls_handshakes(fx->p->tls), 1 + 2 * 2);
    move_and_check(fx, 65536, 3);
}

static void test_tls_good_key_wrong(void **state)
{
    fx_t *fx = *state;
    auth_key_p = KEY_A;
    auth_key_d = KEY_B;
    start_prompt(fx, "server", "tcp");
    fx->d = decoder("client", "tcp");
    assert_status(link_to(fx->d, fx->port), LLMLINK_AUTH_FAILED);
    assert_int_equal(stats_of(fx->p).links, 0);
    /* TLS itself passed: it is the key that failed. */
    assert_int_equal(llk_tls_auth_refusals(fx->p->tls), 0);
}

/* shm over TLS: its setup frames ride the TLS stream, and its peer proof
 * sees the relay's TCP addresses (llk_tls_getsockname). */
static void test_shm_over_tls(void **state)
{
    fx_t *fx = *state;
    start_prompt(fx, "server", "shm");
    fx->d = decoder("client", "shm");
    assert_status(link_to(fx->d, fx->port), LLMLINK_SUCCESS);
    move_and_check(fx, 65536, 1);
    llmlink_xfer_stats_t xs = {.version = LLMLINK_XFER_STATS_VERSION};
    assert_status(llmlink_get_xfer_stats(fx->d, &xs), LLMLINK_SUCCESS);
    assert_true(xs.shm_requests > 0);
    assert_int_equal(xs.tcp_requests, 0);
}

/* ---- the fence holds through the relay ---------------------------------------- */

/* The readers of the owner's memory race, by design, with whatever a
 * broken engine would still write: the test is there to see such a write.
 * The order it relies on (the call returned, the owner closed its stream,
 * its relay and ours passed that on) crosses sockets, which
 * ThreadSanitizer cannot see (as in test_xfer_fence_tcp.c). */
#define RACY_READER __attribute__((no_sanitize("thread")))

RACY_READER static uint64_t checksum(uint8_t *const *m, int nt, size_t bytes)
{
    uint64_t h = 0;
    for (int t = 0; t < nt; t++) {
        const uint64_t *w = (const uint64_t *)(const void *)m[t];
        for (size_t i = 0; i < bytes / 8; i++)
            h = (h ^ w[i]) * 0x100000001b3ull + i;
    }
    return h;
}

RACY_READER static bool any_landed(uint8_t *const *m, int nt, size_t bytes)
{
    for (int t = 0; t < nt; t++)
        for (size_t i = 0; i < bytes; i += 4096)
            if (m[t][i] != 0xEE)
                return true;
    return false;
}

/* A push that times out mid-payload: when the call returns, the owner's
 * memory never changes again. Over TLS the requester cannot ask TCP_INFO
 * whether the owner closed its stream; it asks the relay
 * (llk_tls_peer_ended), which saw the owner's close_notify / FIN. */
static void test_failed_push_fenced(void **state)
{
    fx_t *fx = *state;
    enum { FT = 4, FB = 128 };
    const size_t bs = 262144, bytes = (size_t)FB * bs;
    llmlink_option_t po[] = {{"llm.listenIpInfo", "127.0.0.1:0"},
                             {"llmlink.Transport", "tcp"},
                             {"llm.SyncKvCacheWaitTime", "20"},
                             {"llmlink.TlsCertFile", path("server.pem")},
                             {"llmlink.TlsKeyFile", path("server.key")},
                             {"llmlink.TlsCaFile", path("ca.pem")}};
    llmlink_option_t dopt[] = {{"llmlink.Transport", "tcp"},
                               {"llm.SyncKvCacheWaitTime", "20"},
                               {"llmlink.TlsCertFile", path("client.pem")},
                               {"llmlink.TlsKeyFile", path("client.key")},
                               {"llmlink.TlsCaFile", path("ca.pem")}};
    assert_status(llmlink_create(&fx->p, LLMLINK_ROLE_PROMPT, PROMPT_ID), LLMLINK_SUCCESS);
    assert_status(llmlink_init(fx->p, po, 6), LLMLINK_SUCCESS);
    assert_status(llmlink_get_listen_port(fx->p, 0, &fx->port), LLMLINK_SUCCESS);
    assert_status(llmlink_create(&fx->d, LLMLINK_ROLE_DECODER, DECODER_ID), LLMLINK_SUCCESS);
    assert_status(llmlink_init(fx->d, dopt, 5), LLMLINK_SUCCESS);
    uint8_t *pm[FT], *dm[FT];
    uint64_t pa[FT], da[FT];
    for (int t = 0; t < FT; t++) {
        pm[t] = tensor(bytes);
        dm[t] = tensor(bytes);
        memset(pm[t], 0xEE, bytes);
        kvfill_fill(dm[t], bytes, 5, (uint64_t)t, 0);
        pa[t] = (uint64_t)(uintptr_t)pm[t];
        da[t] = (uint64_t)(uintptr_t)dm[t];
    }
    llmlink_cache_desc_t desc = {.num_tensors = FT, .data_type = LLMLINK_DT_FLOAT16,
                                 .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                                 .shape = {FB, bs / 2}};
    llmlink_cache_key_t key = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = PROMPT_ID,
                               .prefix_id = -1};
    int64_t pc, dc;
    assert_status(llmlink_register_blocks_cache(fx->p, &desc, pa, FT, &key, &pc),
                  LLMLINK_SUCCESS);
    assert_status(llmlink_register_blocks_cache(fx->d, &desc, da, FT, NULL, &dc),
                  LLMLINK_SUCCESS);
    uint64_t blocks[FB];
    for (int i = 0; i < FB; i++)
        blocks[i] = (uint64_t)i;
    bool mid_payload = false;
    for (int attempt = 0; attempt < 5 && !mid_payload; attempt++) {
        if (stats_of(fx->d).links == 0)
            assert_status(link_to(fx->d, fx->port), LLMLINK_SUCCESS);
        llmlink_status_t st =
            llmlink_push_blocks(fx->d, &key, dc, blocks, FB, blocks, FB, NULL);
        uint64_t at_return = checksum(pm, FT, bytes);
        assert_true(st != LLMLINK_SUCCESS); /* 128 MiB in 20 ms: never */
        /* Did any byte land? Then this is the case to check. */
        mid_payload = any_landed(pm, FT, bytes);
        if (!mid_payload)
            continue;
        int64_t t0 = now_ms();
        while (now_ms() - t0 < 500)
            if (checksum(pm, FT, bytes) != at_return)
                fail_msg("the owner's memory changed %lld ms after the failed push returned",
                         (long long)(now_ms() - t0));
    }
    assert_true(mid_payload);
    llmlink_unregister_cache(fx->d, dc);
    llmlink_unregister_cache(fx->p, pc);
    for (int t = 0; t < FT; t++) {
        munmap(pm[t], bytes);
        munmap(dm[t], bytes);
    }
}

/* ---- refused certificates --------------------------------------------------- */

/* The client's link fails with AUTH_FAILED naming `why`; the server has no
 * link, and counted `refusals` more refusals. */
static void expect_refused(fx_t *fx, const char *why, uint64_t refusals)
{
    uint64_t before = llk_tls_auth_refusals(fx->p->tls);
    assert_status(link_to(fx->d, fx->port), LLMLINK_AUTH_FAILED);
    if (!strstr(llmlink_last_error(), why))
        fail_msg("last_error \"%s\" does not say \"%s\"", llmlink_last_error(), why);
    assert_int_equal(stats_of(fx->p).links, 0);
    assert_int_equal(stats_of(fx->d).links, 0);
    /* The server's count may trail the client's answer by a moment. */
    for (int i = 0; i < 200 && llk_tls_auth_refusals(fx->p->tls) < before + refusals; i++)
        usleep(5000);
    assert_int_equal(llk_tls_auth_refusals(fx->p->tls), before + refusals);
}

static void test_client_cert_of_other_ca(void **state)
{
    fx_t *fx = *state;
    start_prompt(fx, "server", "tcp");
    /* "other" is signed by another CA; it trusts ca.pem, so only the
     * server refuses. */
    fx->d = decoder("other", "tcp");
    expect_refused(fx, "unknown ca", 1);
}

static void test_client_cert_expired(void **state)
{
    fx_t *fx = *state;
    start_prompt(fx, "server", "tcp");
    fx->d = decoder("expired", "tcp");
    expect_refused(fx, "certificate expired", 1);
}

static void test_server_cert_expired(void **state)
{
    fx_t *fx = *state;
    start_prompt(fx, "expired", "tcp");
    fx->d = decoder("client", "tcp");
    /* The client refuses the server: the server counts nothing of it. */
    expect_refused(fx, "certificate has expired", 0);
}

/* A TLS client without a certificate (a raw one: llmlink needs all three
 * files) is refused by the server's alert; nothing links. */
static void test_client_without_cert(void **state)
{
    fx_t *fx = *state;
    start_prompt(fx, "server", "tcp");
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    assert_int_equal(SSL_CTX_load_verify_locations(ctx, path("ca.pem"), NULL), 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(fx->port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    /* TLS 1.3: the client's side completes; the refusal comes after. */
    assert_int_equal(SSL_connect(ssl), 1);
    uint8_t f[LLK_WIRE_HEADER_SIZE + 64];
    llk_msg_hello_t m = {.client_cluster_id = DECODER_ID, .target_cluster_id = PROMPT_ID,
                         .client_role = LLMLINK_ROLE_DECODER, .liveness_ms = 3000};
    size_t n = llk_wire_encode_hello(f, sizeof f, LLK_WIRE_VERSION, &m);
    SSL_write(ssl, f, (int)n);
    uint8_t buf[256];
    int r = SSL_read(ssl, buf, sizeof buf);
    assert_true(r <= 0); /* no WELCOME */
    unsigned long e = ERR_peek_last_error();
    char es[256] = "";
    ERR_error_string_n(e, es, sizeof es);
    if (!strstr(es, "certificate required"))
        fail_msg("expected the server's certificate-required alert, got \"%s\"", es);
    ERR_clear_error();
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    for (int i = 0; i < 200 && llk_tls_auth_refusals(fx->p->tls) < 1; i++)
        usleep(5000);
    assert_int_equal(llk_tls_auth_refusals(fx->p->tls), 1);
    assert_int_equal(stats_of(fx->p).links, 0);
    /* An llmlink client without TLS options (so without a certificate)
     * is told, in plaintext, that TLS is needed: AUTH_FAILED. */
    fx->d = decoder(NULL, "tcp");
    assert_status(link_to(fx->d, fx->port), LLMLINK_AUTH_FAILED);
    assert_non_null(strstr(llmlink_last_error(), "TLS connections only"));
    assert_int_equal(stats_of(fx->p).links, 0);
    for (int i = 0; i < 200 && llk_tls_auth_refusals(fx->p->tls) < 2; i++)
        usleep(5000);
    assert_int_equal(llk_tls_auth_refusals(fx->p->tls), 2);
}

/* ---- plaintext to a TLS server ---------------------------------------------- */


static void test_plaintext_hello_closed(void **state)
{
    fx_t *fx = *state;
    start_prompt(fx, "server", "tcp");
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(fx->port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    int64_t t0 = now_ms();
    uint8_t f[LLK_WIRE_HEADER_SIZE + 64];
    llk_msg_hello_t m = {.client_cluster_id = DECODER_ID, .target_cluster_id = PROMPT_ID,
                         .client_role = LLMLINK_ROLE_DECODER, .liveness_ms = 3000};
    size_t n = llk_wire_encode_hello(f, sizeof f, LLK_WIRE_VERSION, &m);
    assert_int_equal(send(fd, f, n, MSG_NOSIGNAL), (ssize_t)n);
    /* Read until the server closes (bounded: 500 ms deadline + slack). */
    uint8_t buf[512];
    size_t got = 0;
    bool closed = false;
    while (!closed && now_ms() - t0 < 1500) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = recv(fd, buf + got, sizeof buf - got, 0);
        if (r <= 0)
            closed = true;
        else
            got += (size_t)r;
    }
    int64_t took = now_ms() - t0;
    close(fd);
    assert_true(closed);
    assert_true(took < 500 + 400);
    /* One plaintext REJECT came back: AUTH_FAILED, saying that TLS is
     * needed, and nothing about this engine (no cluster id, no WELCOME). */
    assert_true(got >= LLK_WIRE_HEADER_SIZE);
    llk_frame_header_t h;
    llk_wire_read_header(buf, &h);
    assert_int_equal(llk_wire_check_header(&h), LLK_HDR_OK);
    assert_int_equal(h.type, LLK_MSG_REJECT);
    assert_int_equal(got, LLK_WIRE_HEADER_SIZE + h.length);
    llk_msg_reject_t rj;
    const char *why = NULL;
    assert_int_equal(llk_wire_decode_reject(buf + LLK_WIRE_HEADER_SIZE, h.length, &rj, &why), 0);
    assert_int_equal(rj.status, LLMLINK_AUTH_FAILED);
    assert_non_null(strstr(rj.message, "TLS connections only"));
    assert_null(strstr(rj.message, "cluster"));
    assert_null(strstr(rj.message, "11"));
    assert_int_equal(llk_tls_auth_refusals(fx->p->tls), 1);
    /* The reactor frees the slot when it reads the relay's EOF: a moment
     * after the client saw the close. */
    for (int i = 0; i < 100 && stats_of(fx->p).handshakes_in_progress; i++)
        usleep(5000);
    assert_int_equal(stats_of(fx->p).links, 0);
    assert_int_equal(stats_of(fx->p).handshakes_in_progress, 0);
}

/* A connection that sends nothing (no ClientHello) holds its handshake
 * slot no longer than the first-frame deadline: the TLS handshake is
 * bounded by it too. */
static void test_idle_connection_closed(void **state)
{
    fx_t *fx = *state;
    start_prompt(fx, "server", "tcp");
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(fx->port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    int64_t t0 = now_ms();
    bool closed = false;
    uint8_t buf[256];
    while (!closed && now_ms() - t0 < 1500) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) > 0 && recv(fd, buf, sizeof buf, 0) <= 0)
            closed = true;
    }
    int64_t took = now_ms() - t0;
    close(fd);
    assert_true(closed);
    assert_true(took >= 400 && took < 500 + 400);
    for (int i = 0; i < 100 && stats_of(fx->p).handshakes_in_progress; i++)
        usleep(5000);
    assert_int_equal(stats_of(fx->p).handshakes_in_progress, 0);
    assert_int_equal(stats_of(fx->p).links, 0);
}

/* ---- a peer that resets --------------------------------------------------------- */

/* A raw TLS server (the deployment's certificate): it completes the
 * handshake, reads what the client sends first, then resets the
 * connection (SO_LINGER 0). */
typedef struct {
    int lfd;
    SSL_CTX *ctx;
    size_t got;
} rst_server_t;

static void *rst_server(void *arg)
{
    rst_server_t *s = arg;
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    SSL *ssl = SSL_new(s->ctx);
    SSL_set_fd(ssl, fd);
    uint8_t buf[256];
    if (SSL_accept(ssl) == 1) {
        int n = SSL_read(ssl, buf, sizeof buf);
        s->got = n > 0 ? (size_t)n : 0;
    }
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd); /* RST */
    SSL_free(ssl);
    return NULL;
}

/* The relay's TCP socket is reset under it while it still has to send
 * (its close_notify, at least): OpenSSL writes with write(), and the
 * process, which does not ignore SIGPIPE, must live on; the link fails. */
static void test_peer_reset_does_not_kill(void **state)
{
    fx_t *fx = *state;
    signal(SIGPIPE, SIG_DFL);
    rst_server_t s = {.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(s.lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(s.lfd, 4), 0);
    assert_int_equal(getsockname(s.lfd, (struct sockaddr *)&sa, &sl), 0);
    s.ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(s.ctx);
    assert_int_equal(SSL_CTX_use_certificate_file(s.ctx, path("server.pem"), SSL_FILETYPE_PEM), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(s.ctx, path("server.key"), SSL_FILETYPE_PEM), 1);
    assert_int_equal(SSL_CTX_load_verify_locations(s.ctx, path("ca.pem"), NULL), 1);
    SSL_CTX_set_verify(s.ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, rst_server, &s), 0);
    fx->d = decoder("client", "tcp");
    llmlink_status_t st = link_to(fx->d, ntohs(sa.sin_port));
    pthread_join(th, NULL);
    assert_true(st != LLMLINK_SUCCESS);
    assert_true(s.got > 0); /* the HELLO went through TLS */
    /* The relay sends its close_notify into the reset socket now or soon:
     * give it the time, alive. */
    usleep(300000);
    SSL_CTX_free(s.ctx);
    close(s.lfd);
}

/* ---- options --------------------------------------------------------------- */

static void expect_init_fails(const llmlink_option_t *o, size_t n, const char *want1,
                              const char *want2)
{
    llmlink_t *e = NULL;
    assert_status(llmlink_create(&e, LLMLINK_ROLE_DECODER, DECODER_ID), LLMLINK_SUCCESS);
    assert_status(llmlink_init(e, o, n), LLMLINK_PARAM_INVALID);
    const char *err = llmlink_last_error();
    if (!strstr(err, want1) || (want2 && !strstr(err, want2)))
        fail_msg("last_error \"%s\" does not name \"%s\" / \"%s\"", err, want1,
                 want2 ? want2 : "");
    llmlink_destroy(e);
}

static void copy_file(const char *from, const char *to, int mode)
{
    FILE *a = fopen(from, "r");
    assert_non_null(a);
    int fd = open(to, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    fchmod(fd, (mode_t)mode);
    char b[4096];
    size_t n;
    while ((n = fread(b, 1, sizeof b, a)) > 0)
        assert_int_equal(write(fd, b, n), (ssize_t)n);
    fclose(a);
    close(fd);
}

static void test_bad_options_refused(void **state)
{
    (void)state;
    char cert[256], key[256], ca[256];
    snprintf(cert, sizeof cert, "%s", path("client.pem"));
    snprintf(key, sizeof key, "%s", path("client.key"));
    snprintf(ca, sizeof ca, "%s", path("ca.pem"));
    llmlink_option_t only_cert[] = {{"llmlink.TlsCertFile", cert}};
    expect_init_fails(only_cert, 1, "llmlink.TlsKeyFile and llmlink.TlsCaFile missing", NULL);
    llmlink_option_t no_ca[] = {{"llmlink.TlsCertFile", cert}, {"llmlink.TlsKeyFile", key}};
    expect_init_fails(no_ca, 2, "llmlink.TlsCaFile missing", NULL);
    /* A private key others may read. */
    copy_file(key, path("open.key"), 0644);
    llmlink_option_t open_key[] = {{"llmlink.TlsCertFile", cert},
                                   {"llmlink.TlsKeyFile", path("open.key")},
                                   {"llmlink.TlsCaFile", ca}};
    expect_init_fails(open_key, 3, path("open.key"), "group or others");
    /* A key that is not the certificate's. */
    llmlink_option_t mismatch[] = {{"llmlink.TlsCertFile", cert},
                                   {"llmlink.TlsKeyFile", path("server.key")},
                                   {"llmlink.TlsCaFile", ca}};
    expect_init_fails(mismatch, 3, "does not match", path("server.key"));
    /* Not a certificate; a missing CA file. */
    FILE *g = fopen(path("garbage.pem"), "w");
    assert_non_null(g);
    fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", g);
    fclose(g);
    llmlink_option_t garbage[] = {{"llmlink.TlsCertFile", path("garbage.pem")},
                                  {"llmlink.TlsKeyFile", key},
                                  {"llmlink.TlsCaFile", ca}};
    expect_init_fails(garbage, 3, "llmlink.TlsCertFile", path("garbage.pem"));
    llmlink_option_t no_such_ca[] = {{"llmlink.TlsCertFile", cert},
                                     {"llmlink.TlsKeyFile", key},
                                     {"llmlink.TlsCaFile", path("nope.pem")}};
    expect_init_fails(no_such_ca, 3, "llmlink.TlsCaFile", path("nope.pem"));
    /* The good combination initializes (and the engine may init again
     * after a refused init). */
    llmlink_option_t good[] = {{"llmlink.TlsCertFile", cert},
                               {"llmlink.TlsKeyFile", key},
                               {"llmlink.TlsCaFile", ca}};
    llmlink_t *e = NULL;
    assert_status(llmlink_create(&e, LLMLINK_ROLE_DECODER, DECODER_ID), LLMLINK_SUCCESS);
    assert_status(llmlink_init(e, only_cert, 1), LLMLINK_PARAM_INVALID);
    assert_status(llmlink_init(e, good, 3), LLMLINK_SUCCESS);
    llmlink_destroy(e);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_good_certs_move_every_byte),
        T(test_tls_and_key_together),
        T(test_tls_good_key_wrong),
        T(test_shm_over_tls),
        T(test_failed_push_fenced),
        T(test_client_cert_of_other_ca),
        T(test_client_cert_expired),
        T(test_server_cert_expired),
        T(test_client_without_cert),
        T(test_plaintext_hello_closed),
        T(test_idle_connection_closed),
        T(test_peer_reset_does_not_kill),
        cmocka_unit_test(test_bad_options_refused),
    };
    return cmocka_run_group_tests_name("link_tls", tests, group_setup, group_teardown);
}

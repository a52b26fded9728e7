/*
 * test_link_auth.c - pre-shared-key mutual authentication (issue 14,
 * point 1): llmlink.AuthKey / llmlink.AuthKeyFile.
 *
 * Two engines of one process on loopback, and a raw socket peer (not
 * llmlink's client) that speaks the exchange of link/wire.h itself, its
 * MACs computed here from the spelled-out derivations with the RFC-checked
 * primitives of base/crypto.h (not the library's auth.c):
 *  - the right key on both sides (hex, or files of mode 0600) links, and a
 *    pull of a few blocks moves the right bytes; the key is never logged;
 *  - no key on the client, a wrong key, a key only on the client: the
 *    cluster's status is LLMLINK_AUTH_FAILED, the server holds no link and
 *    counted the failure;
 *  - a raw HELLO to a keyed server: REJECT AUTH_FAILED whose bytes do not
 *    hold the server's cluster id;
 *  - a raw peer that replays an AUTH_PROOF that was accepted once: refused
 *    (the server's nonce is fresh);
 *  - data streams: an ATTACH without a MAC, with a wrong one, or replayed
 *    from another connection is refused (AUTH_FAILED); the right one is
 *    accepted;
 *  - key files: mode 0644 refused at init with a message naming the file,
 *    0600 accepted; too short refused; both options refused; a bad hex key
 *    refused without quoting it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "llmlink.h"
#include "llk_test.h"
#include "rawpeer.h"
#include "base/crypto.h"
#include "link/engine.h"

#define PROMPT_ID 734561u /* distinctive: looked for in refusals' bytes */
#define DECODER_ID 2u
#define RAW_ID 77u
#define RAW_INCARNATION 0x5151515151515151ull
#define IO_MS 3000
#define LINK_MS 3000
#define NT 2
#define NB 8
#define BS 4096u

static const char *KEY_A = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
static const char *KEY_B = "b1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

typedef struct fx {
    llmlink_t *p, *d;
    uint16_t port;
    char dir[64];
    uint8_t pmem[NT][NB * BS], dmem[NT][NB * BS];
} fx_t;

/* ---- engines ---------------------------------------------------------------- */

/* key_opt: NULL, "llmlink.AuthKey" or "llmlink.AuthKeyFile"; key its value. */
static llmlink_status_t start_prompt(fx_t *fx, const char *key_opt, const char *key)
{
    llmlink_option_t o[] = {{"llm.listenIpInfo", "127.0.0.1:0"},
                            {"llmlink.Transport", "tcp"},
                            {"llmlink.LivenessIntervalMs", "20000"},
                            {key_opt, key}};
    assert_status(llmlink_create(&fx->p, LLMLINK_ROLE_PROMPT, PROMPT_ID), LLMLINK_SUCCESS);
    llmlink_status_t st = llmlink_init(fx->p, o, key_opt ? 4 : 3);
    if (st == LLMLINK_SUCCESS)
        assert_status(llmlink_get_listen_port(fx->p, 0, &fx->port), LLMLINK_SUCCESS);
    return st;
}

static llmlink_status_t start_decoder(fx_t *fx, const char *key_opt, const char *key)
{
    llmlink_option_t o[] = {{"llmlink.Transport", "tcp"}, {key_opt, key}};
    assert_status(llmlink_create(&fx->d, LLMLINK_ROLE_DECODER, DECODER_ID), LLMLINK_SUCCESS);
    return llmlink_init(fx->d, o, key_opt ? 2 : 1);
}

/* The decoder links to the prompt: the overall status; *one the cluster's. */
static llmlink_status_t link_once(fx_t *fx, llmlink_status_t *one)
{
    llmlink_ip_info_t ip = {.ip = "127.0.0.1", .port = fx->port};
    llmlink_cluster_info_t c = {.remote_cluster_id = PROMPT_ID,
                                .remote_role = LLMLINK_ROLE_PROMPT,
                                .remote_ip_infos = &ip,
                                .num_remote_ip_infos = 1};
    *one = LLMLINK_FAILED;
    return llmlink_link_clusters(fx->d, &c, 1, LINK_MS, one);
}

static uint64_t auth_failures(llmlink_t *e)
{
    pthread_mutex_lock(&e->mu);
    uint64_t n = e->auth_failures;
    pthread_mutex_unlock(&e->mu);
    return n;
}

/* Waits (bounded) until e counted at least n authentication failures. */
static void wait_failures(llmlink_t *e, uint64_t n)
{
    int64_t t0 = rawpeer_now_ms();
    while (auth_failures(e) < n && rawpeer_now_ms() - t0 < IO_MS)
        rawpeer_sleep_ms(2);
    if (auth_failures(e) < n)
        fail_msg("the server counted %llu authentication failures, expected %llu",
                 (unsigned long long)auth_failures(e), (unsigned long long)n);
}

/* ---- key files ---------------------------------------------------------------- */

static void write_key_file(const char *path, mode_t mode, const uint8_t *key, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, key, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

/* The bytes of a hex key (well-formed). */
static void key_bytes(const char *hex, uint8_t out[32])
{
    for (int i = 0; i < 32; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

/* ---- fixtures ---------------------------------------------------------------- */

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    snprintf(fx->dir, sizeof fx->dir, "/tmp/llk_auth_XXXXXX");
    if (!mkdtemp(fx->dir))
        return -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    llmlink_destroy(fx->d);
    llmlink_destroy(fx->p);
    char path[128];
    static const char *names[] = {"k600", "k644", "short", "b600"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", fx->dir, names[i]);
        unlink(path);
    }
    rmdir(fx->dir);
    free(fx);
    return 0;
}

/* ---- the right key links and moves data ----------------------------------------- */

static char logged[64 * 1024];
static size_t logged_len;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static void log_cb(llmlink_log_level_t level, const char *message, void *user)
{
    (void)level;
    (void)user;
    pthread_mutex_lock(&log_mu);
    size_t n = strlen(message);
    if (logged_len + n + 1 < sizeof logged) {
        memcpy(logged + logged_len, message, n);
        logged_len += n;
        logged[logged_len++] = '\n';
        logged[logged_len] = '\0';
    }
    pthread_mutex_unlock(&log_mu);
}

/* Registers caches on both sides, pulls 4 blocks, checks every byte. */
static void pull_and_check(fx_t *fx)
{
    uint64_t pa[NT], da[NT];
    for (unsigned t = 0; t < NT; t++) {
        for (unsigned i = 0; i < NB * BS; i++)
            fx->pmem[t][i] = (uint8_t)(t * 29u + i * 13u + 5u);
        memset(fx->dmem[t], 0xEE, NB * BS);
        pa[t] = (uint64_t)(uintptr_t)fx->pmem[t];
        da[t] = (uint64_t)(uintptr_t)fx->dmem[t];
    }
    llmlink_cache_desc_t d = {.num_tensors = NT, .data_type = LLMLINK_DT_UINT8,
                              .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                              .shape = {NB, BS}};
    llmlink_cache_key_t key = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = PROMPT_ID};
    int64_t pc, dc;
    assert_status(llmlink_register_blocks_cache(fx->p, &d, pa, NT, &key, &pc), LLMLINK_SUCCESS);
    assert_status(llmlink_register_blocks_cache(fx->d, &d, da, NT, NULL, &dc), LLMLINK_SUCCESS);
    uint64_t src[] = {7, 2, 3, 0}, dst[] = {0, 1, 5, 6};
    assert_status(llmlink_pull_blocks(fx->d, &key, dc, src, 4, dst, 4, NULL), LLMLINK_SUCCESS);
    for (unsigned t = 0; t < NT; t++)
        for (unsigned i = 0; i < 4; i++)
            assert_memory_equal(fx->dmem[t] + dst[i] * BS, fx->pmem[t] + src[i] * BS, BS);
    assert_int_equal(fx->dmem[0][2 * BS], 0xEE); /* block 2 was not a destination */
}

static void test_right_key_links_and_pulls(void **state)
{
    fx_t *fx = *state;
    logged_len = 0;
    logged[0] = '\0';
    llmlink_set_log_callback(log_cb, NULL, LLMLINK_LOG_DEBUG);
    assert_status(start_prompt(fx, "llmlink.AuthKey", KEY_A), LLMLINK_SUCCESS);
    assert_status(start_decoder(fx, "llmlink.AuthKey", KEY_A), LLMLINK_SUCCESS);
    llmlink_status_t one;
    assert_status(link_once(fx, &one), LLMLINK_SUCCESS);
    assert_status(one, LLMLINK_SUCCESS);
    assert_int_equal(stats_of(fx->p).inbound_links, 1);
    pull_and_check(fx);
    assert_int_equal(auth_failures(fx->p), 0);
    llmlink_set_log_callback(NULL, NULL, LLMLINK_LOG_NONE);
    /* The key is never logged, whole or in part. */
    assert_true(logged_len > 0);
    assert_null(strstr(logged, KEY_A));
    assert_null(strstr(logged, "a1b2c3d4e5f6"));
}

static void test_right_key_files_link(void **state)
{
    fx_t *fx = *state;
    uint8_t k[32];
    key_bytes(KEY_A, k);
    char path[128];
    snprintf(path, sizeof path, "%s/k600", fx->dir);
    write_key_file(path, 0600, k, sizeof k);
    assert_status(start_prompt(fx, "llmlink.AuthKeyFile", path), LLMLINK_SUCCESS);
    /* The same key in hex on the other side. */
    assert_status(start_decoder(fx, "llmlink.AuthKey", KEY_A), LLMLINK_SUCCESS);
    llmlink_status_t one;
    assert_status(link_once(fx, &one), LLMLINK_SUCCESS);
    pull_and_check(fx);
}

/* ---- a wrong, missing or unexpected key ------------------------------------------- */

/* The link fails with AUTH_FAILED, its message holding `why`. */
static void expect_auth_failed(fx_t *fx, const char *why)
{
    llmlink_status_t one;
    assert_status(link_once(fx, &one), LLMLINK_LINK_FAILED);
    assert_status(one, LLMLINK_AUTH_FAILED);
    if (!strstr(llmlink_last_error(), why))
        fail_msg("last_error \"%s\" does not say \"%s\"", llmlink_last_error(), why);
    wait_failures(fx->p, 1);
    assert_int_equal(stats_of(fx->p).links, 0);
    assert_int_equal(stats_of(fx->d).links, 0);
    assert_status(llmlink_check_link_status(fx->d, PROMPT_ID), LLMLINK_NOT_YET_LINK);
}

static void test_no_key_on_client(void **state)
{
    fx_t *fx = *state;
    assert_status(start_prompt(fx, "llmlink.AuthKey", KEY_A), LLMLINK_SUCCESS);
    assert_status(start_decoder(fx, NULL, NULL), LLMLINK_SUCCESS);
    expect_auth_failed(fx, "authentication required");
}

static void test_wrong_key(void **state)
{
    fx_t *fx = *state;
    assert_status(start_prompt(fx, "llmlink.AuthKey", KEY_A), LLMLINK_SUCCESS);
    assert_status(start_decoder(fx, "llmlink.AuthKey", KEY_B), LLMLINK_SUCCESS);
    expect_auth_failed(fx, "does not match this side's key");
    /* Linking again fails again: nothing was left half-made. */
    llmlink_status_t one;
    assert_status(link_once(fx, &one), LLMLINK_LINK_FAILED);
    assert_status(one, LLMLINK_AUTH_FAILED);
    wait_failures(fx->p, 2);
    assert_int_equal(stats_of(fx->p).links, 0);
}

static void test_key_only_on_client(void **state)
{
    fx_t *fx = *state;
    assert_status(start_prompt(fx, NULL, NULL), LLMLINK_SUCCESS);
    assert_status(start_decoder(fx, "llmlink.AuthKey", KEY_A), LLMLINK_SUCCESS);
    expect_auth_failed(fx, "has no key");
}

/* ---- the raw peer: the protocol of link/wire.h, spelled out here ------------------ */

typedef struct raw_auth {
    uint8_t k[32];  /* HKDF(key, "llmlink auth v1", "mac") */
    uint8_t raw[32];
    uint8_t nc[32], ns[32];
} raw_auth_t;

static void raw_auth_init(raw_auth_t *a, const char *hex)
{
    key_bytes(hex, a->raw);
    assert_int_equal(llk_hkdf_sha256(a->raw, 32, (const uint8_t *)"llmlink auth v1", 15,
                                     (const uint8_t *)"mac", 3, a->k, 32),
                     0);
}

static void raw_mac(const raw_auth_t *a, const char *label, uint8_t out[32])
{
    llk_crypto_part_t parts[] = {{label, strlen(label)}, {a->nc, 32}, {a->ns, 32}};
    assert_int_equal(llk_hmac_sha256(a->k, 32, parts, 3, out), 0);
}

static void send_frame(int fd, const uint8_t *f, size_t n)
{
    assert_true(n > 0);
    assert_int_equal(rawpeer_send(fd, f, n, IO_MS), RAWPEER_OK);
}

/* Reads a frame; for a REJECT, its status in *st. Returns its type. */
static uint16_t recv_any(int fd, uint8_t *payload, size_t cap, uint32_t *len, uint32_t *st)
{
    llk_frame_header_t h;
    assert_int_equal(rawpeer_recv_frame(fd, &h, payload, cap, IO_MS), RAWPEER_OK);
    *len = h.length;
    *st = 0;
    if (h.type == LLK_MSG_REJECT) {
        llk_msg_reject_t rj;
        const char *why = NULL;
        assert_int_equal(llk_wire_decode_reject(payload, h.length, &rj, &why), 0);
        *st = rj.status;
    }
    return h.type;
}

/* AUTH_HELLO with a fresh Nc; AUTH_CHALLENGE read, its MAC_s checked. */
static int raw_connect_challenged(fx_t *fx, raw_auth_t *a)
{
    int fd = rawpeer_connect(fx->port, IO_MS);
    assert_true(fd >= 0);
    assert_int_equal(llk_crypto_random(a->nc, 32), 0);
    llk_msg_auth_hello_t m = {.scheme = LLK_AUTH_SCHEME_PSK1};
    memcpy(m.nc, a->nc, 32);
    uint8_t f[LLK_WIRE_MAX_FRAME];
    send_frame(fd, f, llk_wire_encode_auth_hello(f, sizeof f, LLK_WIRE_VERSION, &m));
    uint32_t len, st;
    assert_int_equal(recv_any(fd, f, sizeof f, &len, &st), LLK_MSG_AUTH_CHALLENGE);
    llk_msg_auth_challenge_t ch;
    const char *why = NULL;
    assert_int_equal(llk_wire_decode_auth_challenge(f, len, &ch, &why), 0);
    memcpy(a->ns, ch.ns, 32);
    uint8_t want[32];
    raw_mac(a, "llmlink server v1", want);
    assert_memory_equal(want, ch.mac, 32);
    return fd;
}

static size_t raw_hello(uint8_t *f, size_t cap)
{
    llk_msg_hello_t m = {.client_cluster_id = RAW_ID, .target_cluster_id = PROMPT_ID,
                         .client_role = LLMLINK_ROLE_DECODER, .incarnation = RAW_INCARNATION,
                         .liveness_ms = 20000};
    return llk_wire_encode_hello(f, cap, LLK_WIRE_VERSION, &m);
}

/* The bytes of a frame hold neither the decimal text nor the big-endian
 * encoding of the server's cluster id. */
static void assert_no_cluster_id(const uint8_t *f, size_t n)
{
    char dec[32];
    snprintf(dec, sizeof dec, "%u", PROMPT_ID);
    assert_null(memmem(f, n, dec, strlen(dec)));
    uint8_t be[8];
    for (int i = 0; i < 8; i++)
        be[i] = (uint8_t)((uint64_t)PROMPT_ID >> (56 - 8 * i));
    assert_null(memmem(f, n, be, sizeof be));
    /* the low bytes alone (a u32 field) */
    assert_null(memmem(f, n, be + 4, 4));
}

static void test_raw_hello_to_keyed_server(void **state)
{
    fx_t *fx = *state;
    assert_status(start_prompt(fx, "llmlink.AuthKey", KEY_A), LLMLINK_SUCCESS);
    int fd = rawpeer_connect(fx->port, IO_MS);
    assert_true(fd >= 0);
    uint8_t f[LLK_WIRE_MAX_FRAME];
    send_frame(fd, f, raw_hello(f, sizeof f));
    /* The whole answer, header and all, up to the close. */
    uint8_t all[LLK_WIRE_MAX_FRAME];
    size_t got = 0;
    while (got < sizeof all) {
        ssize_t r = rawpeer_recv(fd, all + got, sizeof all - got, IO_MS);
        if (r <= 0) {
            assert_int_equal(r, RAWPEER_CLOSED);
            break;
        }
        got += (size_t)r;
    }
    assert_true(got >= LLK_WIRE_HEADER_SIZE);
    llk_frame_header_t h;
    llk_wire_read_header(all, &h);
    assert_int_equal(h.type, LLK_MSG_REJECT);
    assert_int_equal(got, LLK_WIRE_HEADER_SIZE + h.length); /* nothing else was sent */
    llk_msg_reject_t rj;
    const char *why = NULL;
    assert_int_equal(llk_wire_decode_reject(all + LLK_WIRE_HEADER_SIZE, h.length, &rj, &why), 0);
    assert_int_equal(rj.status, LLMLINK_AUTH_FAILED);
    assert_non_null(strstr(rj.message, "authentication required"));
    assert_no_cluster_id(all, got);
    rawpeer_close(fd);
    wait_failures(fx->p, 1);
    assert_int_equal(stats_of(fx->p).links, 0);
}

/* A wrong MAC_c from a raw peer: refused, nothing about the server in it. */
static void test_raw_wrong_proof(void **state)
{
    fx_t *fx = *state;
    assert_status(start_prompt(fx, "llmlink.AuthKey", KEY_A), LLMLINK_SUCCESS);
    raw_auth_t a;
    raw_auth_init(&a, KEY_A);
    int fd = raw_connect_challenged(fx, &a);
    /* The server's own MAC reflected back as the client's proof. */
    uint8_t mac[32], f[LLK_WIRE_MAX_FRAME];
    raw_mac(&a, "llmlink server v1", mac);
    size_t n = llk_wire_encode_auth_proof(f, sizeof f, LLK_WIRE_VERSION, mac);
    n += raw_hello(f + n, sizeof f - n);
    send_frame(fd, f, n);
    uint32_t len, st;
    assert_int_equal(recv_any(fd, f, sizeof f, &len, &st), LLK_MSG_REJECT);
    assert_int_equal(st, LLMLINK_AUTH_FAILED);
    assert_no_cluster_id(f, len);
    assert_int_equal(rawpeer_wait_closed(fd, IO_MS), RAWPEER_OK);
    rawpeer_close(fd);
    wait_failures(fx->p, 1);
    assert_int_equal(stats_of(fx->p).links, 0);
}

/* Links the raw peer with the right key (the control connection stays
 * open in *ctrl): fills a with the control connection's nonces, returns
 * the server's incarnation. */
static uint64_t raw_link(fx_t *fx, raw_auth_t *a, int *ctrl)
{
    int fd = raw_connect_challenged(fx, a);
    uint8_t mac[32], f[LLK_WIRE_MAX_FRAME];
    raw_mac(a, "llmlink client v1", mac);
    size_t n = llk_wire_encode_auth_proof(f, sizeof f, LLK_WIRE_VERSION, mac);
    n += raw_hello(f + n, sizeof f - n);
    send_frame(fd, f, n);
    uint32_t len, st;
    assert_int_equal(recv_any(fd, f, sizeof f, &len, &st), LLK_MSG_WELCOME);
    llk_msg_welcome_t w;
    const char *why = NULL;
    assert_int_equal(llk_wire_decode_welcome(f, len, &w, &why), 0);
    assert_int_equal(w.server_cluster_id, PROMPT_ID);
    *ctrl = fd;
    return w.incarnation;
}

static void test_replayed_proof_refused(void **state)
{
    fx_t *fx = *state;
    assert_status(start_prompt(fx, "llmlink.AuthKey", KEY_A), LLMLINK_SUCCESS);
    raw_auth_t a;
    raw_auth_init(&a, KEY_A);
    int ctrl;
    (void)raw_link(fx, &a, &ctrl); /* the proof was good: a link exists */
    assert_int_equal(stats_of(fx->p).inbound_links, 1);
    uint8_t ns1[32], proof[32];
    memcpy(ns1, a.ns, 32);
    raw_mac(&a, "llmlink client v1", proof);
    /* The same AUTH_HELLO (same Nc) on a new connection, then the captured
     * AUTH_PROOF and HELLO: the server's nonce is new, the proof is stale. */
    int fd = rawpeer_connect(fx->port, IO_MS);
    assert_true(fd >= 0);
    llk_msg_auth_hello_t m = {.scheme = LLK_AUTH_SCHEME_PSK1};
    memcpy(m.nc, a.nc, 32);
    uint8_t f[LLK_WIRE_MAX_FRAME];
    send_frame(fd, f, llk_wire_encode_auth_hello(f, sizeof f, LLK_WIRE_VERSION, &m));
    uint32_t len, st;
    assert_int_equal(recv_any(fd, f, sizeof f, &len, &st), LLK_MSG_AUTH_CHALLENGE);
    assert_memory_not_equal(f, ns1, 32); /* a fresh Ns */
    size_t n = llk_wire_encode_auth_proof(f, sizeof f, LLK_WIRE_VERSION, proof);
    n += raw_hello(f + n, sizeof f - n);
    send_frame(fd, f, n);
    assert_int_equal(recv_any(fd, f, sizeof f, &len, &st), LLK_MSG_REJECT);
    assert_int_equal(st, LLMLINK_AUTH_FAILED);
    assert_int_equal(rawpeer_wait_closed(fd, IO_MS), RAWPEER_OK);
    rawpeer_close(fd);
    wait_failures(fx->p, 1);
    /* The first link is untouched; no second one. */
    assert_int_equal(stats_of(fx->p).inbound_links, 1);
    rawpeer_close(ctrl);
}

/* ---- data streams -------------------------------------------------------------- */

/* An authenticated data connection: its nonces in *s. */
static int raw_stream(fx_t *fx, raw_auth_t *s, const char *key_hex)
{
    raw_auth_init(s, key_hex);
    int fd = raw_connect_challenged(fx, s);
    return fd;
}

/* AUTH_PROOF for stream s, then ATTACH a (with a MAC when mac != NULL):
 * the answer's type, the REJECT status in *st. */
static uint16_t raw_attach(int fd, const raw_auth_t *s, llk_msg_attach_t *a, const uint8_t *mac,
                           uint32_t *st)
{
    uint8_t f[LLK_WIRE_MAX_FRAME], proof[32];
    raw_mac(s, "llmlink client v1", proof);
    size_t n = llk_wire_encode_auth_proof(f, sizeof f, LLK_WIRE_VERSION, proof);
    a->has_mac = mac != NULL;
    if (mac)
        memcpy(a->mac, mac, 32);
    n += llk_wire_encode_attach(f + n, sizeof f - n, LLK_WIRE_VERSION, a);
    send_frame(fd, f, n);
    uint32_t len;
    return recv_any(fd, f, sizeof f, &len, st);
}

/* MAC_a of link/wire.h: HMAC(Ks, "llmlink attach v1" | Nc' | Ns' | ATTACH[0..64)). */
static void attach_mac(const uint8_t ks[32], const raw_auth_t *s, const llk_msg_attach_t *a,
                       uint8_t out[32])
{
    llk_msg_attach_t plain = *a;
    plain.has_mac = false;
    uint8_t f[LLK_WIRE_MAX_FRAME];
    size_t n = llk_wire_encode_attach(f, sizeof f, LLK_WIRE_VERSION, &plain);
    assert_int_equal(n, LLK_WIRE_HEADER_SIZE + LLK_WIRE_ATTACH_FIXED);
    llk_crypto_part_t parts[] = {{"llmlink attach v1", 17}, {s->nc, 32}, {s->ns, 32},
                                 {f + LLK_WIRE_HEADER_SIZE, LLK_WIRE_ATTACH_FIXED}};
    assert_int_equal(llk_hmac_sha256(ks, 32, parts, 4, out), 0);
}

static void test_attach_mac_checked(void **state)
{
    fx_t *fx = *state;
    assert_status(start_prompt(fx, "llmlink.AuthKey", KEY_A), LLMLINK_SUCCESS);
    raw_auth_t c;
    raw_auth_init(&c, KEY_A);
    int ctrl;
    uint64_t sinc = raw_link(fx, &c, &ctrl);
    /* Ks = HKDF(key, salt Nc | Ns, info "llmlink session v1"). */
    uint8_t salt[64], ks[32];
    memcpy(salt, c.nc, 32);
    memcpy(salt + 32, c.ns, 32);
    assert_int_equal(llk_hkdf_sha256(c.raw, 32, salt, 64, (const uint8_t *)"llmlink session v1",
                                     18, ks, 32),
                     0);
    llk_host_id_t me;
    llk_host_id_self(&me);
    llk_msg_attach_t a = {.client_cluster_id = RAW_ID, .server_cluster_id = PROMPT_ID,
                          .client_incarnation = RAW_INCARNATION, .server_incarnation = sinc,
                          .stream_index = 0, .direction = 0, .transport = 1,
                          .pidns = me.pidns, .pid = me.pid};
    memcpy(a.boot_id, me.boot_id, sizeof a.boot_id);
    uint32_t st;
    uint64_t f0 = auth_failures(fx->p);

    /* 1. no MAC */
    raw_auth_t s1;
    int fd1 = raw_stream(fx, &s1, KEY_A);
    assert_int_equal(raw_attach(fd1, &s1, &a, NULL, &st), LLK_MSG_REJECT);
    assert_int_equal(st, LLMLINK_AUTH_FAILED);
    assert_int_equal(rawpeer_wait_closed(fd1, IO_MS), RAWPEER_OK);
    wait_failures(fx->p, f0 + 1);

    /* 2. a MAC under the wrong session key (the handshake key K instead) */
    raw_auth_t s2;
    int fd2 = raw_stream(fx, &s2, KEY_A);
    uint8_t mac[32];
    attach_mac(c.k, &s2, &a, mac);
    assert_int_equal(raw_attach(fd2, &s2, &a, mac, &st), LLK_MSG_REJECT);
    assert_int_equal(st, LLMLINK_AUTH_FAILED);
    wait_failures(fx->p, f0 + 2);

    /* 3. the right MAC, for another stream index than the ATTACH names */
    raw_auth_t s3;
    int fd3 = raw_stream(fx, &s3, KEY_A);
    llk_msg_attach_t other = a;
    other.stream_index = 1;
    attach_mac(ks, &s3, &other, mac);
    assert_int_equal(raw_attach(fd3, &s3, &a, mac, &st), LLK_MSG_REJECT);
    assert_int_equal(st, LLMLINK_AUTH_FAILED);
    wait_failures(fx->p, f0 + 3);

    /* 4. the right MAC: accepted (so 1-3 were refused for their MAC) */
    raw_auth_t s4;
    int fd4 = raw_stream(fx, &s4, KEY_A);
    uint8_t good[32];
    attach_mac(ks, &s4, &a, good);
    assert_int_equal(raw_attach(fd4, &s4, &a, good, &st), LLK_MSG_ATTACH_OK);

    /* 5. that ATTACH replayed on a new connection (its own nonces): refused
     * for the MAC, before the slot check ("attached already") */
    raw_auth_t s5;
    int fd5 = raw_stream(fx, &s5, KEY_A);
    assert_int_equal(raw_attach(fd5, &s5, &a, good, &st), LLK_MSG_REJECT);
    assert_int_equal(st, LLMLINK_AUTH_FAILED);
    wait_failures(fx->p, f0 + 4);

    assert_int_equal(stats_of(fx->p).inbound_links, 1);
    rawpeer_close(fd1);
    rawpeer_close(fd2);
    rawpeer_close(fd3);
    rawpeer_close(fd4);
    rawpeer_close(fd5);
    rawpeer_close(ctrl);
}

/* ---- key options at init ------------------------------------------------------- */

static void test_key_file_modes(void **state)
{
    fx_t *fx = *state;
    uint8_t k[40];
    memset(k, 0x5A, sizeof k);
    char p644[128], p600[128], pshort[128];
    snprintf(p644, sizeof p644, "%s/k644", fx->dir);
    snprintf(p600, sizeof p600, "%s/k600", fx->dir);
    snprintf(pshort, sizeof pshort, "%s/short", fx->dir);
    write_key_file(p644, 0644, k, sizeof k);
    write_key_file(p600, 0600, k, sizeof k);
    write_key_file(pshort, 0600, k, 31);

    assert_status(start_decoder(fx, "llmlink.AuthKeyFile", p644), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), p644));
    assert_non_null(strstr(llmlink_last_error(), "0644"));
    llmlink_destroy(fx->d);
    fx->d = NULL;

    assert_status(start_decoder(fx, "llmlink.AuthKeyFile", pshort), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), pshort));
    llmlink_destroy(fx->d);
    fx->d = NULL;

    char missing[160];
    snprintf(missing, sizeof missing, "%s/nonexistent", fx->dir);
    assert_status(start_decoder(fx, "llmlink.AuthKeyFile", missing), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), missing));
    llmlink_destroy(fx->d);
    fx->d = NULL;

    assert_status(start_decoder(fx, "llmlink.AuthKeyFile", p600), LLMLINK_SUCCESS);
}

static void test_key_options_refused(void **state)
{
    fx_t *fx = *state;
    llmlink_option_t both[] = {{"llmlink.AuthKey", KEY_A}, {"llmlink.AuthKeyFile", "/x"}};
    assert_status(llmlink_create(&fx->d, LLMLINK_ROLE_DECODER, DECODER_ID), LLMLINK_SUCCESS);
    assert_status(llmlink_init(fx->d, both, 2), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "both"));
    /* A bad hex key: refused, and the message never quotes it. */
    char bad[80];
    snprintf(bad, sizeof bad, "%.62sZZ", KEY_A);
    llmlink_option_t o[] = {{"llmlink.AuthKey", bad}};
    assert_status(llmlink_init(fx->d, o, 1), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "llmlink.AuthKey"));
    assert_null(strstr(llmlink_last_error(), "a1b2c3"));
    snprintf(bad, sizeof bad, "%.62s", KEY_A); /* 31 bytes */
    assert_status(llmlink_init(fx->d, o, 1), LLMLINK_PARAM_INVALID);
    assert_null(strstr(llmlink_last_error(), "a1b2c3"));
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_right_key_links_and_pulls), T(test_right_key_files_link),
        T(test_no_key_on_client),          T(test_wrong_key),
        T(test_key_only_on_client),        T(test_raw_hello_to_keyed_server),
        T(test_raw_wrong_proof),           T(test_replayed_proof_refused),
        T(test_attach_mac_checked),        T(test_key_file_modes),
        T(test_key_options_refused),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}

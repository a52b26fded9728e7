/*
 * bench_tls.c - what mutual TLS (llmlink.TlsCertFile / TlsKeyFile /
 * TlsCaFile) costs a tcp pull: the same pull, 256 KiB blocks, plaintext
 * and TLS in the same run, and whether the kernel took the record layer
 * (kTLS in both directions) or the relays encrypted in user space.
 *
 * One process, two engines (PROMPT and DECODER) on 127.0.0.1, forced
 * llmlink.Transport=tcp; certificates of a test CA made at run time
 * (tests/common/tls_certs.h) into a temporary directory. Each mode: link,
 * one pull checked byte for byte, then REPS timed pulls of the whole
 * cache. It measures and prints; it asserts no speed.
 *
 * Usage: bench_tls [--quick] [--streams N] [--push]
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../tests/common/tls_certs.h"
#include "link/engine.h"
#include "link/tls.h"
#include "llmlink.h"

#define NT 8
#define BS (256u * 1024u)
#define P_ID 1u
#define D_ID 2u

static char dir[64];
static char f_srv[128], f_srvk[128], f_cli[128], f_clik[128], f_ca[128];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t word(unsigned t, uint64_t i)
{
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ ((uint64_t)t << 40);
    return x ^ (x >> 29);
}

typedef struct {
    double gbps;
    uint64_t handshakes, ktls, ktls_send;
    bool ok;
    char why[256];
} result_t;

static llmlink_t *engine(llmlink_role_t role, uint64_t id, bool tls, const char *streams)
{
    bool srv = role == LLMLINK_ROLE_PROMPT;
    llmlink_option_t o[8];
    size_t n = 0;
    if (srv)
        o[n++] = (llmlink_option_t){"llm.listenIpInfo", "127.0.0.1:0"};
    o[n++] = (llmlink_option_t){"llmlink.Transport", "tcp"};
    o[n++] = (llmlink_option_t){"llmlink.StreamsPerLink", streams};
    o[n++] = (llmlink_option_t){"llm.SyncKvCacheWaitTime", "60000"};
    if (tls) {
        o[n++] = (llmlink_option_t){"llmlink.TlsCertFile", srv ? f_srv : f_cli};
        o[n++] = (llmlink_option_t){"llmlink.TlsKeyFile", srv ? f_srvk : f_clik};
        o[n++] = (llmlink_option_t){"llmlink.TlsCaFile", f_ca};
    }
    llmlink_t *e = NULL;
    if (llmlink_create(&e, role, id) != LLMLINK_SUCCESS ||
        llmlink_init(e, o, n) != LLMLINK_SUCCESS) {
        fprintf(stderr, "bench_tls: engine: %s\n", llmlink_last_error());
        llmlink_destroy(e);
        return NULL;
    }
    return e;
}

static result_t run(bool tls, uint64_t nb, int reps, const char *streams, bool push)
{
    result_t r = {0};
    size_t bytes = (size_t)nb * BS;
    uint8_t *pm[NT], *dm[NT];
    uint64_t pa[NT], da[NT];
    for (int t = 0; t < NT; t++) {
        pm[t] = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        dm[t] = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (pm[t] == MAP_FAILED || dm[t] == MAP_FAILED) {
            snprintf(r.why, sizeof r.why, "out of memory");
            return r;
        }
        uint64_t *w = (uint64_t *)(void *)pm[t];
        for (uint64_t i = 0; i < bytes / 8; i++)
            w[i] = word((unsigned)t, i);
        memset(dm[t], 0, bytes);
        pa[t] = (uint64_t)(uintptr_t)pm[t];
        da[t] = (uint64_t)(uintptr_t)dm[t];
    }
    llmlink_t *p = engine(LLMLINK_ROLE_PROMPT, P_ID, tls, streams);
    llmlink_t *d = p ? engine(LLMLINK_ROLE_DECODER, D_ID, tls, streams) : NULL;
    uint16_t port = 0;
    llmlink_cache_desc_t desc = {.num_tensors = NT, .data_type = LLMLINK_DT_FLOAT16,
                                 .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                                 .shape = {nb, BS / 2}};
    llmlink_cache_key_t key = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = P_ID, .prefix_id = -1};
    int64_t pc, dc;
    uint64_t *blocks = calloc(nb, sizeof *blocks);
    llmlink_ip_info_t ip = {"127.0.0.1", 0};
    llmlink_status_t st[1];
    if (!d || !blocks || llmlink_get_listen_port(p, 0, &port) != LLMLINK_SUCCESS ||
        llmlink_register_blocks_cache(p, &desc, pa, NT, &key, &pc) != LLMLINK_SUCCESS ||
        llmlink_register_blocks_cache(d, &desc, da, NT, NULL, &dc) != LLMLINK_SUCCESS) {
        snprintf(r.why, sizeof r.why, "setup: %s", llmlink_last_error());
        goto out;
    }
    ip.port = port;
    llmlink_cluster_info_t c = {P_ID, LLMLINK_ROLE_PROMPT, NULL, 0, &ip, 1};
    if (llmlink_link_clusters(d, &c, 1, 10000, st) != LLMLINK_SUCCESS) {
        snprintf(r.why, sizeof r.why, "link: %s", llmlink_last_error());
        goto out;
    }
    for (uint64_t i = 0; i < nb; i++)
        blocks[i] = i;
    /* The first pull is checked, so that no figure is printed for wrong
     * bytes. */
    if (llmlink_pull_blocks(d, &key, dc, blocks, nb, blocks, nb, NULL) != LLMLINK_SUCCESS) {
        snprintf(r.why, sizeof r.why, "pull: %s", llmlink_last_error());
        goto out;
    }
    for (int t = 0; t < NT; t++)
        if (memcmp(pm[t], dm[t], bytes)) {
            snprintf(r.why, sizeof r.why, "pull moved wrong bytes (tensor %d)", t);
            goto out;
        }
    double t0 = now_s();
    for (int i = 0; i < reps; i++) {
        llmlink_status_t s = push ? llmlink_push_blocks(d, &key, dc, blocks, nb, blocks, nb, NULL)
                                  : llmlink_pull_blocks(d, &key, dc, blocks, nb, blocks, nb, NULL);
        if (s != LLMLINK_SUCCESS) {
            snprintf(r.why, sizeof r.why, "%s: %s", push ? "push" : "pull", llmlink_last_error());
            goto out;
        }
    }
    double el = now_s() - t0;
    r.gbps = (double)bytes * NT * reps / el / 1e9;
    r.handshakes = llk_tls_handshakes(p->tls);
    r.ktls = llk_tls_ktls_both(p->tls) + llk_tls_ktls_both(d->tls);
    r.ktls_send = llk_tls_ktls_send(p->tls) + llk_tls_ktls_send(d->tls);
    r.ok = true;
out:
    llmlink_destroy(d);
    llmlink_destroy(p);
    free(blocks);
    for (int t = 0; t < NT; t++) {
        munmap(pm[t], bytes);
        munmap(dm[t], bytes);
    }
    return r;
}

int main(int argc, char **argv)
{
    bool quick = false, push = false;
    const char *streams = "2";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = true;
        else if (!strcmp(argv[i], "--push"))
            push = true;
        else if (!strcmp(argv[i], "--streams") && i + 1 < argc)
            streams = argv[++i];
        else {
            fprintf(stderr, "usage: bench_tls [--quick] [--streams N] [--push]\n");
            return 2;
        }
    }
    snprintf(dir, sizeof dir, "/tmp/llk_bench_tls_XXXXXX");
    if (!mkdtemp(dir) || tls_certs_make(dir) != 0) {
        fprintf(stderr, "bench_tls: cannot make certificates\n");
        return 1;
    }
    snprintf(f_srv, sizeof f_srv, "%s/server.pem", dir);
    snprintf(f_srvk, sizeof f_srvk, "%s/server.key", dir);
    snprintf(f_cli, sizeof f_cli, "%s/client.pem", dir);
    snprintf(f_clik, sizeof f_clik, "%s/client.key", dir);
    snprintf(f_ca, sizeof f_ca, "%s/ca.pem", dir);
    uint64_t nb = quick ? 16 : 128; /* 8 tensors: 32 MiB or 256 MiB a call */
    int reps = quick ? 3 : 8;
    printf("bench_tls: tcp %s, %u KiB blocks, %d tensors x %llu blocks (%llu MiB a call), "
           "StreamsPerLink %s, %d calls per mode\n", push ? "push" : "pull", BS / 1024, NT,
           (unsigned long long)nb, (unsigned long long)(nb * BS * NT >> 20), streams, reps);
    result_t plain = run(false, nb, reps, streams, push);
    result_t tls = run(true, nb, reps, streams, push);
    int rc = 0;
    printf("%-10s %10s  %s\n", "mode", "GB/s", "notes");
    if (plain.ok)
        printf("%-10s %10.2f\n", "plaintext", plain.gbps);
    else {
        printf("%-10s %10s  %s\n", "plaintext", "FAILED", plain.why);
        rc = 1;
    }
    if (tls.ok)
        printf("%-10s %10.2f  %llu TLS handshakes on the server; of the relays of both "
               "engines, kTLS sending on %llu, both ways on %llu (%s)\n", "tls", tls.gbps,
               (unsigned long long)tls.handshakes, (unsigned long long)tls.ktls_send,
               (unsigned long long)tls.ktls,
               tls.ktls_send ? "kernel record layer" : "user-space crypto: no kTLS here");
    else {
        printf("%-10s %10s  %s\n", "tls", "FAILED", tls.why);
        rc = 1;
    }
    if (plain.ok && tls.ok)
        printf("ratio tls / plaintext: %.2f\n", tls.gbps / plain.gbps);
    const char *names[] = {"ca.pem", "other_ca.pem", "server.pem", "server.key", "client.pem",
                           "client.key", "other.pem", "other.key", "expired.pem", "expired.key"};
    char pth[160];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(pth, sizeof pth, "%s/%s", dir, names[i]);
        unlink(pth);
    }
    rmdir(dir);
    return rc;
}

/*
 * fuzz_options.c - fuzz target for the option parser (core/options.c).
 *
 * Input format: NUL-separated strings, taken as alternating keys and values
 * (key0 \0 value0 \0 key1 \0 value1 ...), at most 64 pairs; the last string
 * need not end with a NUL, and strings past the 64th pair are ignored. A key
 * left without a value (an odd number of strings) is passed with a NULL
 * value, which the parser must refuse like any other bad value.
 *
 * Beyond "no crash, no sanitizer report", it checks, calling abort() when
 * one fails:
 *  - the status is LLMLINK_SUCCESS or LLMLINK_PARAM_INVALID;
 *  - on failure the message is NUL-terminated within the buffer, non-empty,
 *    and names an option ("option ..." / "unknown option key ...");
 *  - on success every field is within the range documented for llmlink_init
 *    in ffi/llmlink.h, num_listen <= LLMLINK_MAX_LISTEN_ADDRS (each address
 *    an AF_INET / AF_INET6 sockaddr of the right length), and at most
 *    LLK_MAX_DEVICE_IDS device ids, each >= 0;
 *  - on success the value of every key is the one its last pair gave (a
 *    later pair overrides an earlier one, options.h), or the default;
 *  - parsing again into an exact-size 8-byte error buffer gives the same
 *    status and, on failure, a NUL-terminated prefix of the same message.
 *
 * Built with tests/fuzz/standalone_main.c (make fuzz-bins) or with
 * libFuzzer (make fuzz-libfuzzer). Seeds: tests/fuzz/corpus/options/, one
 * valid option set per file.
 */
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "llmlink.h"
#include "base/options.h"

#define CHECK(cond)      \
    do {                 \
        if (!(cond))     \
            abort();     \
    } while (0)

#define MAX_PAIRS 64
#define ERR_LEN 512   /* what llmlink_init uses */
#define SMALL_ERR_LEN 8

/* Documented ranges (ffi/llmlink.h, llmlink_init). */
typedef struct int_key {
    const char *key;
    int64_t lo, hi, def;
    size_t off; /* int32_t or uint32_t field */
    bool is_signed;
} int_key_t;

#define OFF(f) offsetof(llk_options_t, f)
static const int_key_t int_keys[] = {
    {"llm.SyncKvCacheWaitTime", 1, INT32_MAX, 1000, OFF(sync_kv_wait_ms), true},
    {"llm.LinkTotalTime", 0, INT32_MAX, 0, OFF(link_total_time_ms), true},
    {"llm.LinkRetryCount", 1, 100, 1, OFF(link_retry_count), false},
    {"llm.RdmaTrafficClass", 0, 255, 132, OFF(rdma_traffic_class), false},
    {"llm.RdmaServiceLevel", 0, 7, 4, OFF(rdma_service_level), false},
    {"llmlink.MaxLinks", 1, 65536, 512, OFF(max_links), false},
    {"llmlink.MaxConcurrentHandshakes", 1, 4096, 16, OFF(max_concurrent_handshakes), false},
    {"llmlink.HandshakeTimeoutMs", 10, 600000, 10000, OFF(handshake_timeout_ms), false},
    {"llmlink.LivenessIntervalMs", 30, 600000, 3000, OFF(liveness_interval_ms), false},
};

static const struct {
    const char *key;
    size_t off;
} bool_keys[] = {
    {"llm.EnableCacheManager", OFF(enable_cache_manager)},
    {"llm.EnableRemoteCacheAccessible", OFF(enable_remote_cache_accessible)},
    {"llm.EnableSwitchRole", OFF(enable_switch_role)},
};

static const char *const listen_keys[] = {"llm.listenIpInfo", "llm.ListenIpInfo"};
static const char *const device_keys[] = {"ge.exec.deviceId", "ge.session_device_id",
                                          "llm.DeviceId"};

static int64_t field_value(const llk_options_t *o, const int_key_t *k)
{
    const char *p = (const char *)o + k->off;
    if (k->is_signed) {
        int32_t v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Index of the last pair whose key is one of keys[0..n), or -1. */
static long last_pair(const llmlink_option_t *opts, size_t n, const char *const *keys,
                      size_t nkeys)
{
    long last = -1;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < nkeys; k++)
            if (strcmp(opts[i].key, keys[k]) == 0)
                last = (long)i;
    return last;
}

/* Splits a ';'-separated list into non-empty tokens (as strtok_r does).
 * Returns the count; the first max tokens go to tok/len. */
static size_t split(const char *v, const char **tok, size_t *len, size_t max)
{
    size_t n = 0;
    while (*v) {
        while (*v == ';')
            v++;
        if (!*v)
            break;
        const char *start = v;
        while (*v && *v != ';')
            v++;
        if (n < max) {
            tok[n] = start;
            len[n] = (size_t)(v - start);
        }
        n++;
    }
    return n;
}

static void check_success(const llk_options_t *o, const llmlink_option_t *opts, size_t n)
{
    /* Integers: in range, and the last pair's value or the default. */
    for (size_t i = 0; i < sizeof int_keys / sizeof int_keys[0]; i++) {
        const int_key_t *k = &int_keys[i];
        int64_t v = field_value(o, k);
        CHECK(v >= k->lo && v <= k->hi);
        long last = last_pair(opts, n, &k->key, 1);
        int64_t want = last < 0 ? k->def : strtoll(opts[last].value, NULL, 10);
        CHECK(v == want);
    }

    /* Booleans: 0 or 1; the last pair's value or false. */
    for (size_t i = 0; i < sizeof bool_keys / sizeof bool_keys[0]; i++) {
        unsigned char b;
        memcpy(&b, (const char *)o + bool_keys[i].off, 1);
        CHECK(b == 0 || b == 1);
        long last = last_pair(opts, n, &bool_keys[i].key, 1);
        bool want = false;
        if (last >= 0) {
            const char *v = opts[last].value;
            want = !strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "True");
            CHECK(want || !strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "False"));
        }
        CHECK((b == 1) == want);
    }

    /* Transport. */
    static const char *const names[] = {"auto", "tcp", "shm", "rdma"};
    static const char *const tkey = "llmlink.Transport";
    CHECK((int)o->transport >= LLK_TRANSPORT_AUTO && (int)o->transport <= LLK_TRANSPORT_RDMA);
    long lt = last_pair(opts, n, &tkey, 1);
    CHECK(strcmp(llk_transport_name(o->transport), lt < 0 ? "auto" : opts[lt].value) == 0);
    CHECK(strcmp(names[o->transport], llk_transport_name(o->transport)) == 0);

    /* Listen addresses. */
    CHECK(o->num_listen <= LLMLINK_MAX_LISTEN_ADDRS);
    for (size_t i = 0; i < o->num_listen; i++) {
        const llk_listen_addr_t *l = &o->listen[i];
        if (l->sa.ss_family == AF_INET)
            CHECK(l->sa_len == sizeof(struct sockaddr_in));
        else
            CHECK(l->sa.ss_family == AF_INET6 && l->sa_len == sizeof(struct sockaddr_in6));
        size_t tl = strnlen(l->text, sizeof l->text);
        CHECK(tl > 0 && tl < sizeof l->text);
    }
    long ll = last_pair(opts, n, listen_keys, 2);
    if (ll < 0) {
        CHECK(o->num_listen == 0);
    } else {
        const char *tok[LLMLINK_MAX_LISTEN_ADDRS];
        size_t len[LLMLINK_MAX_LISTEN_ADDRS];
        size_t nt = split(opts[ll].value, tok, len, LLMLINK_MAX_LISTEN_ADDRS);
        CHECK(nt >= 1 && nt == o->num_listen);
        for (size_t i = 0; i < nt; i++) {
            size_t keep = len[i] < sizeof o->listen[i].text - 1 ? len[i]
                                                                 : sizeof o->listen[i].text - 1;
            CHECK(strlen(o->listen[i].text) == keep);
            CHECK(memcmp(o->listen[i].text, tok[i], keep) == 0);
        }
    }

    /* Device ids. */
    CHECK(o->num_device_ids <= LLK_MAX_DEVICE_IDS);
    for (size_t i = 0; i < o->num_device_ids; i++)
        CHECK(o->device_ids[i] >= 0);
    long ld = last_pair(opts, n, device_keys, 3);
    if (ld < 0) {
        CHECK(o->num_device_ids == 0);
    } else {
        const char *tok[LLK_MAX_DEVICE_IDS];
        size_t len[LLK_MAX_DEVICE_IDS];
        size_t nt = split(opts[ld].value, tok, len, LLK_MAX_DEVICE_IDS);
        CHECK(nt >= 1 && nt == o->num_device_ids);
        for (size_t i = 0; i < nt; i++)
            CHECK(strtoll(tok[i], NULL, 10) == o->device_ids[i]);
    }
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A NUL-terminated copy, so the last string may end without a NUL. */
    char *buf = malloc(size + 1);
    CHECK(buf != NULL);
    if (size)
        memcpy(buf, data, size);
    buf[size] = '\0';

    const char *str[2 * MAX_PAIRS];
    size_t ns = 0, pos = 0;
    while (pos < size && ns < 2 * MAX_PAIRS) {
        str[ns++] = buf + pos;
        pos += strlen(buf + pos) + 1;
    }
    llmlink_option_t opts[MAX_PAIRS];
    size_t n = (ns + 1) / 2;
    for (size_t i = 0; i < n; i++) {
        opts[i].key = str[2 * i];
        opts[i].value = 2 * i + 1 < ns ? str[2 * i + 1] : NULL;
    }

    llk_options_t o;
    char err[ERR_LEN];
    memset(err, 0xA5, sizeof err); /* no NUL unless the parser writes one */
    llmlink_status_t st = llk_options_parse(&o, opts, n, err, sizeof err);
    CHECK(st == LLMLINK_SUCCESS || st == LLMLINK_PARAM_INVALID);
    if (st == LLMLINK_SUCCESS) {
        check_success(&o, opts, n);
    } else {
        CHECK(memchr(err, '\0', sizeof err) != NULL);
        CHECK(err[0] != '\0');
        CHECK(starts_with(err, "option ") || starts_with(err, "unknown option key ") ||
              starts_with(err, "options["));
    }

    /* Same input, a tiny exact-size error buffer: same verdict, and the
     * message is cut, never overrun (ASan sees a write past the 8 bytes). */
    char *small = malloc(SMALL_ERR_LEN);
    CHECK(small != NULL);
    memset(small, 0xA5, SMALL_ERR_LEN);
    llk_options_t again;
    CHECK(llk_options_parse(&again, opts, n, small, SMALL_ERR_LEN) == st);
    if (st != LLMLINK_SUCCESS) {
        CHECK(memchr(small, '\0', SMALL_ERR_LEN) != NULL);
        CHECK(strncmp(small, err, strlen(small)) == 0);
        CHECK(small[0] != '\0');
    }
    free(small);
    free(buf);
    return 0;
}

/*
 * test_options.c - unit tests of the option parser (core/options.c).
 *
 * Options are the only configuration surface of an engine and come from
 * user scripts written for llm_datadist, so the parser must accept every
 * documented key and refuse everything else with LLMLINK_PARAM_INVALID and
 * a message that names the key (llmlink.h, llmlink_init).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "llmlink.h"
#include "base/options.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- fixture ---------------------------------------------------------------- */

typedef struct options_fixture {
    llk_options_t o;
    char err[512];
} options_fixture_t;

static int setup(void **state)
{
    options_fixture_t *fx = test_calloc(1, sizeof *fx);
    assert_non_null(fx);
    llk_options_defaults(&fx->o);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    test_free(*state);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------ */

static llmlink_status_t parse1(options_fixture_t *fx, const char *key, const char *value)
{
    llmlink_option_t opt = {key, value};
    fx->err[0] = '\0';
    return llk_options_parse(&fx->o, &opt, 1, fx->err, sizeof fx->err);
}

static void assert_accepted(options_fixture_t *fx, const char *key, const char *value)
{
    llmlink_status_t st = parse1(fx, key, value);
    if (st != LLMLINK_SUCCESS)
        fail_msg("%s=\"%s\" refused (0x%08x): %s", key, value, st, fx->err);
}

/* Refused with PARAM_INVALID and a message that names the key. */
static void assert_refused(options_fixture_t *fx, const char *key, const char *value)
{
    llmlink_status_t st = parse1(fx, key, value);
    if (st != LLMLINK_PARAM_INVALID)
        fail_msg("%s=\"%s\": got 0x%08x, want LLMLINK_PARAM_INVALID", key, value, st);
    if (strstr(fx->err, key) == NULL)
        fail_msg("%s=\"%s\": message does not name the key: \"%s\"", key, value, fx->err);
}

/* ---- integer keys -------------------------------------------------------------- */

/* Reads a field as int64 whatever its declared type (int32_t or uint32_t). */
typedef int64_t (*int_getter)(const llk_options_t *o);

#define GETTER(field) \
    static int64_t get_##field(const llk_options_t *o) { return (int64_t)o->field; }
GETTER(sync_kv_wait_ms)
GETTER(link_total_time_ms)
GETTER(link_retry_count)
GETTER(rdma_traffic_class)
GETTER(rdma_service_level)
GETTER(max_links)
GETTER(max_concurrent_handshakes)
GETTER(handshake_timeout_ms)
GETTER(first_frame_timeout_ms)
GETTER(max_handshakes_per_address)
GETTER(liveness_interval_ms)
GETTER(debug_fence_fill)
GETTER(async_workers)
GETTER(notify_queue_depth)

/* Ranges and defaults as documented in llmlink.h (llmlink_init). */
static const struct int_key {
    const char *key;
    int64_t lo, hi, def;
    int_getter get;
} int_keys[] = {
    {"llm.SyncKvCacheWaitTime", 1, 2147483647, 1000, get_sync_kv_wait_ms},
    {"llm.LinkTotalTime", 0, 2147483647, 0, get_link_total_time_ms},
    {"llm.LinkRetryCount", 1, 100, 1, get_link_retry_count},
    {"llm.RdmaTrafficClass", 0, 255, 132, get_rdma_traffic_class},
    {"llm.RdmaServiceLevel", 0, 7, 4, get_rdma_service_level},
    {"llmlink.MaxLinks", 1, 65536, 512, get_max_links},
    {"llmlink.MaxConcurrentHandshakes", 1, 4096, 16, get_max_concurrent_handshakes},
    {"llmlink.HandshakeTimeoutMs", 10, 600000, 10000, get_handshake_timeout_ms},
    {"llmlink.FirstFrameTimeoutMs", 10, 600000, 1000, get_first_frame_timeout_ms},
    {"llmlink.MaxHandshakesPerAddress", 1, 4096, 4, get_max_handshakes_per_address},
    {"llmlink.LivenessIntervalMs", 30, 600000, 3000, get_liveness_interval_ms},
    {"llmlink.DebugFenceFill", -1, 255, -1, get_debug_fence_fill},
    {"llmlink.AsyncWorkers", 1, 64, 8, get_async_workers},
    {"llmlink.NotifyQueueDepth", 1, 65536, 1024, get_notify_queue_depth},
};

static void test_defaults(void **state)
{
    options_fixture_t *fx = *state;
    const llk_options_t *o = &fx->o;
    for (size_t i = 0; i < ARRAY_LEN(int_keys); i++)
        if (int_keys[i].get(o) != int_keys[i].def)
            fail_msg("%s: default %lld, want %lld", int_keys[i].key,
                     (long long)int_keys[i].get(o), (long long)int_keys[i].def);
    assert_int_equal(o->num_listen, 0);
    assert_int_equal(o->num_device_ids, 0);
    assert_false(o->enable_cache_manager);
    assert_false(o->enable_remote_cache_accessible);
    assert_false(o->enable_switch_role);
    assert_int_equal(o->transport, LLK_TRANSPORT_AUTO);
}

/* An empty option list is valid and changes nothing. */
static void test_empty_list_keeps_defaults(void **state)
{
    options_fixture_t *fx = *state;
    llk_options_t before;
    memcpy(&before, &fx->o, sizeof before);
    assert_int_equal(llk_options_parse(&fx->o, NULL, 0, fx->err, sizeof fx->err),
                     LLMLINK_SUCCESS);
    assert_memory_equal(&fx->o, &before, sizeof before);
}

/* options.h: "llk_options_parse() starts from the defaults": a struct
 * that held anything before must come out with the defaults for every key
 * that was not given. */
static void test_parse_starts_from_defaults(void **state)
{
    options_fixture_t *fx = *state;
    llk_options_t want;
    llk_options_defaults(&want);
    want.max_links = 7;

    memset(&fx->o, 0x5A, sizeof fx->o); /* e.g. left over from a previous parse */
    assert_accepted(fx, "llmlink.MaxLinks", "7");
    for (size_t i = 0; i < ARRAY_LEN(int_keys); i++)
        if (int_keys[i].get(&fx->o) != int_keys[i].get(&want))
            fail_msg("%s: %lld after parse, want %lld", int_keys[i].key,
                     (long long)int_keys[i].get(&fx->o), (long long)int_keys[i].get(&want));
    assert_int_equal(fx->o.num_listen, 0);
    assert_int_equal(fx->o.num_device_ids, 0);
    assert_int_equal(fx->o.transport, LLK_TRANSPORT_AUTO);
}

/* lo and hi are accepted and stored; lo-1 and hi+1 are refused. A middle
 * value is tried too so that a parser that only knows the edges fails. */
static void test_int_keys_edges(void **state)
{
    options_fixture_t *fx = *state;
    char v[32];
    for (size_t i = 0; i < ARRAY_LEN(int_keys); i++) {
        const struct int_key *k = &int_keys[i];
        const int64_t good[] = {k->lo, k->hi, k->lo + (k->hi - k->lo) / 3};
        for (size_t g = 0; g < ARRAY_LEN(good); g++) {
            snprintf(v, sizeof v, "%lld", (long long)good[g]);
            assert_accepted(fx, k->key, v);
            if (k->get(&fx->o) != good[g])
                fail_msg("%s=%s stored %lld", k->key, v, (long long)k->get(&fx->o));
        }
        const int64_t bad[] = {k->lo - 1, k->hi + 1};
        for (size_t b = 0; b < ARRAY_LEN(bad); b++) {
            snprintf(v, sizeof v, "%lld", (long long)bad[b]);
            assert_refused(fx, k->key, v);
            /* printable values are quoted back in the message */
            if (strstr(fx->err, v) == NULL)
                fail_msg("%s=%s: message does not show the value: %s", k->key, v, fx->err);
        }
    }
}

/* Only plain decimal digits: no sign, no spaces, no hex, no exponent, and
 * no silent wrap-around of huge numbers. */
static void test_int_keys_malformed(void **state)
{
    options_fixture_t *fx = *state;
    static const char *const malformed[] = {
        "", "+1", " 1", "1 ", "0x10", "1e3", "99999999999999999999",
        "9223372036854775808", "-9223372036854775809", "18446744073709551617",
        "-", "1.5", "abc", "1,000", "\t1", "1\n",
    };
    for (size_t i = 0; i < ARRAY_LEN(int_keys); i++)
        for (size_t m = 0; m < ARRAY_LEN(malformed); m++)
            assert_refused(fx, int_keys[i].key, malformed[m]);
}

/* A refused value is not stored, not even partly (e.g. clamped). */
static void test_refused_int_not_stored(void **state)
{
    options_fixture_t *fx = *state;
    assert_refused(fx, "llmlink.MaxLinks", "0");
    assert_int_equal(fx->o.max_links, 512);
    assert_refused(fx, "llm.RdmaServiceLevel", "8");
    assert_int_equal(fx->o.rdma_service_level, 4);
}

/* ---- listen addresses ------------------------------------------------------------ */

static void assert_listen_v4(const llk_listen_addr_t *l, const char *ip, uint16_t port)
{
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&l->sa;
    struct in_addr want;
    assert_int_equal(inet_pton(AF_INET, ip, &want), 1);
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(l->sa_len, sizeof(struct sockaddr_in));
    assert_int_equal(ntohs(sin->sin_port), port);
    assert_memory_equal(&sin->sin_addr, &want, sizeof want);
}

static void assert_listen_v6(const llk_listen_addr_t *l, const char *ip, uint16_t port)
{
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&l->sa;
    struct in6_addr want;
    assert_int_equal(inet_pton(AF_INET6, ip, &want), 1);
    assert_int_equal(sin6->sin6_family, AF_INET6);
    assert_int_equal(l->sa_len, sizeof(struct sockaddr_in6));
    assert_int_equal(ntohs(sin6->sin6_port), port);
    assert_memory_equal(&sin6->sin6_addr, &want, sizeof want);
}

static void test_listen_ipv4(void **state)
{
    options_fixture_t *fx = *state;
    assert_accepted(fx, "llm.listenIpInfo", "127.0.0.1:26000");
    assert_int_equal(fx->o.num_listen, 1);
    assert_listen_v4(&fx->o.listen[0], "127.0.0.1", 26000);
    assert_string_equal(fx->o.listen[0].text, "127.0.0.1:26000");
}

static void test_listen_ipv6_port0(void **state)
{
    options_fixture_t *fx = *state;
    assert_accepted(fx, "llm.listenIpInfo", "[::1]:0");
    assert_int_equal(fx->o.num_listen, 1);
    assert_listen_v6(&fx->o.listen[0], "::1", 0);
    assert_string_equal(fx->o.listen[0].text, "[::1]:0");
}

static void test_listen_multiple_in_order(void **state)
{
    options_fixture_t *fx = *state;
    assert_accepted(fx, "llm.listenIpInfo", "10.0.0.1:1;[::1]:2;0.0.0.0:65535");
    assert_int_equal(fx->o.num_listen, 3);
    assert_listen_v4(&fx->o.listen[0], "10.0.0.1", 1);
    assert_listen_v6(&fx->o.listen[1], "::1", 2);
    assert_listen_v4(&fx->o.listen[2], "0.0.0.0", 65535);
    assert_string_equal(fx->o.listen[1].text, "[::1]:2");
}

static void test_listen_alias(void **state)
{
    options_fixture_t *fx = *state;
    assert_accepted(fx, "llm.ListenIpInfo", "192.168.1.2:7000");
    assert_int_equal(fx->o.num_listen, 1);
    assert_listen_v4(&fx->o.listen[0], "192.168.1.2", 7000);
}

/* LLMLINK_MAX_LISTEN_ADDRS addresses fit; one more is refused. */
static void test_listen_count_limit(void **state)
{
    options_fixture_t *fx = *state;
    char v[512] = "";
    for (int i = 0; i < LLMLINK_MAX_LISTEN_ADDRS; i++) {
        char one[32];
        snprintf(one, sizeof one, "%s127.0.0.%d:%d", i ? ";" : "", i + 1, 1000 + i);
        strcat(v, one);
    }
    assert_accepted(fx, "llm.listenIpInfo", v);
    assert_int_equal(fx->o.num_listen, LLMLINK_MAX_LISTEN_ADDRS);
    assert_listen_v4(&fx->o.listen[LLMLINK_MAX_LISTEN_ADDRS - 1], "127.0.0.8", 1007);

    strcat(v, ";127.0.0.99:1");
    assert_refused(fx, "llm.listenIpInfo", v);
}

static void test_listen_bad_values(void **state)
{
    options_fixture_t *fx = *state;
    static const char *const bad[] = {
        "",                 /* no address */
        ";",                /* still none */
        "1.2.3.4",          /* no port */
        "1.2.3.4:",         /* empty port */
        "1.2.3.4:65536",    /* port out of range */
        "1.2.3.4:-1",
        "1.2.3.4:+80",
        "1.2.3.4:0x50",
        "host:80",          /* names are never resolved */
        "localhost:80",
        "::1:80",           /* IPv6 needs brackets */
        "[::1]80",          /* missing ':' */
        "[::1]",
        "[::1:80",
        "[]:80",
        "1.2.3:80",
        "256.0.0.1:80",
        "1.2.3.4:80;bogus", /* one bad address spoils the list */
        " 1.2.3.4:80",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        assert_refused(fx, "llm.listenIpInfo", bad[i]);
        assert_refused(fx, "llm.ListenIpInfo", bad[i]);
    }
}

/* ---- device ids ------------------------------------------------------------------ */

static void test_device_ids(void **state)
{
    options_fixture_t *fx = *state;
    /* ge.exec.deviceId and its two aliases */
    static const char *const keys[] = {"ge.exec.deviceId", "llm.DeviceId", "ge.session_device_id"};
    for (size_t k = 0; k < ARRAY_LEN(keys); k++) {
        assert_accepted(fx, keys[k], "0");
        assert_int_equal(fx->o.num_device_ids, 1);
        assert_int_equal(fx->o.device_ids[0], 0);

        assert_accepted(fx, keys[k], "3;1;2147483647");
        assert_int_equal(fx->o.num_device_ids, 3);
        assert_int_equal(fx->o.device_ids[0], 3);
        assert_int_equal(fx->o.device_ids[1], 1);
        assert_int_equal(fx->o.device_ids[2], 2147483647);
    }
}

static void test_device_ids_count_limit(void **state)
{
    options_fixture_t *fx = *state;
    char v[256] = "";
    for (int i = 0; i < LLK_MAX_DEVICE_IDS; i++) {
        char one[16];
        snprintf(one, sizeof one, "%s%d", i ? ";" : "", i);
        strcat(v, one);
    }
    assert_accepted(fx, "ge.exec.deviceId", v);
    assert_int_equal(fx->o.num_device_ids, LLK_MAX_DEVICE_IDS);
    assert_int_equal(fx->o.device_ids[LLK_MAX_DEVICE_IDS - 1], LLK_MAX_DEVICE_IDS - 1);
    strcat(v, ";99");
    assert_refused(fx, "ge.exec.deviceId", v);
}

static void test_device_ids_bad_values(void **state)
{
    options_fixture_t *fx = *state;
    static const char *const bad[] = {
        "", ";", "-1", "a", "1;x", "0;-1", "2147483648", "+1", " 1", "0x1", "1.0",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        assert_refused(fx, "ge.exec.deviceId", bad[i]);
        assert_refused(fx, "llm.DeviceId", bad[i]);
    }
}

/* ---- llmlink.AllowedClusters ---------------------------------------------------- */

#define ALLOWED "llmlink.AllowedClusters"

static void test_allowed_clusters(void **state)
{
    options_fixture_t *fx = *state;
    assert_int_equal(fx->o.allowed_clusters.count, 0); /* default: any */
    assert_true(llk_cluster_list_allows(&fx->o.allowed_clusters, 12345));
    assert_accepted(fx, ALLOWED, "7");
    assert_int_equal(fx->o.allowed_clusters.count, 1);
    assert_true(llk_cluster_list_allows(&fx->o.allowed_clusters, 7));
    assert_false(llk_cluster_list_allows(&fx->o.allowed_clusters, 8));
    assert_accepted(fx, ALLOWED, " 0 ,\t18446744073709551615, 42,42 ");
    assert_int_equal(fx->o.allowed_clusters.count, 4); /* the duplicate is kept, harmless */
    assert_true(llk_cluster_list_allows(&fx->o.allowed_clusters, 0));
    assert_true(llk_cluster_list_allows(&fx->o.allowed_clusters, UINT64_MAX));
    assert_true(llk_cluster_list_allows(&fx->o.allowed_clusters, 42));
    assert_false(llk_cluster_list_allows(&fx->o.allowed_clusters, 1));
    assert_accepted(fx, ALLOWED, "");
    assert_int_equal(fx->o.allowed_clusters.count, 0);
    assert_accepted(fx, ALLOWED, "   ");
    assert_int_equal(fx->o.allowed_clusters.count, 0);
}

static void test_allowed_clusters_count_limit(void **state)
{
    options_fixture_t *fx = *state;
    char v[256 * 5 + 8];
    size_t n = 0;
    for (int i = 0; i < 256; i++)
        n += (size_t)snprintf(v + n, sizeof v - n, "%s%d", i ? "," : "", i);
    assert_accepted(fx, ALLOWED, v);
    assert_int_equal(fx->o.allowed_clusters.count, 256);
    assert_true(llk_cluster_list_allows(&fx->o.allowed_clusters, 255));
    snprintf(v + n, sizeof v - n, ",256");
    assert_refused(fx, ALLOWED, v);
    assert_non_null(strstr(fx->err, "more than 256"));
}

static void test_allowed_clusters_bad_values(void **state)
{
    options_fixture_t *fx = *state;
    static const char *const bad[] = {
        ",", "1,", ",1", "1,,2", "-1", "+1", "0x10", "1.0", "1;2", "1 2", "a",
        "18446744073709551616", "99999999999999999999", "1,\n2", "\xff",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        assert_refused(fx, ALLOWED, bad[i]);
        /* a refused list lets nobody in by accident: it is left empty and
         * llmlink_init fails as a whole */
        assert_int_equal(fx->o.allowed_clusters.count, 0);
    }
    assert_refused(fx, ALLOWED, "5,x");
    assert_non_null(strstr(fx->err, "entry 1"));
}

/* ---- booleans, transport, pass-through strings ---------------------------------- */

static void test_booleans(void **state)
{
    options_fixture_t *fx = *state;
    static const struct {
        const char *key;
        size_t off;
    } keys[] = {
        {"llm.EnableCacheManager", offsetof(llk_options_t, enable_cache_manager)},
        {"llm.EnableRemoteCacheAccessible", offsetof(llk_options_t, enable_remote_cache_accessible)},
        {"llm.EnableSwitchRole", offsetof(llk_options_t, enable_switch_role)},
    };
    static const char *const bad[] = {"", "2", "-1", "yes", "on", " 1", "1 ", "01"};
    for (size_t k = 0; k < ARRAY_LEN(keys); k++) {
        const bool *field = (const bool *)((const char *)&fx->o + keys[k].off);
        assert_accepted(fx, keys[k].key, "1");
        assert_true(*field);
        assert_accepted(fx, keys[k].key, "0");
        assert_false(*field);
        for (size_t b = 0; b < ARRAY_LEN(bad); b++)
            assert_refused(fx, keys[k].key, bad[b]);
    }
}

static void test_transport(void **state)
{
    options_fixture_t *fx = *state;
    static const struct {
        const char *value;
        llk_transport_t want;
    } good[] = {
        {"tcp", LLK_TRANSPORT_TCP},
        {"shm", LLK_TRANSPORT_SHM},
        {"rdma", LLK_TRANSPORT_RDMA},
        {"auto", LLK_TRANSPORT_AUTO}, /* last: back from a non-default value */
    };
    for (size_t i = 0; i < ARRAY_LEN(good); i++) {
        assert_accepted(fx, "llmlink.Transport", good[i].value);
        assert_int_equal(fx->o.transport, good[i].want);
        assert_string_equal(llk_transport_name(good[i].want), good[i].value);
    }
    static const char *const bad[] = {"", "TCP", "udp", "tcp ", "ib", "rdma;tcp"};
    for (size_t b = 0; b < ARRAY_LEN(bad); b++)
        assert_refused(fx, "llmlink.Transport", bad[b]);
}

/* llm_datadist's memory-pool and deployment keys are accepted so that its
 * scripts run unchanged; they change nothing in llmlink. */
static void test_datadist_passthrough_keys(void **state)
{
    options_fixture_t *fx = *state;
    static const char *const keys[] = {
        "llm.MemPoolConfig", "llm.HostMemPoolConfig", "llm.BufPoolCfg",
        "llm.LocalCommRes", "llm.deployResPath",
    };
    for (size_t k = 0; k < ARRAY_LEN(keys); k++) {
        llk_options_t before;
        memcpy(&before, &fx->o, sizeof before);
        assert_accepted(fx, keys[k], "{\"memory_size\": 102400}");
        assert_accepted(fx, keys[k], "");
        assert_memory_equal(&fx->o, &before, sizeof before);
    }
}

/* The TLS file keys take a file name (unchecked here: the engine loads the
 * files at init), "" unsets one, and a name that does not fit is refused. */
static void test_tls_file_keys(void **state)
{
    options_fixture_t *fx = *state;
    assert_string_equal(fx->o.tls_cert_file, "");
    assert_string_equal(fx->o.tls_key_file, "");
    assert_string_equal(fx->o.tls_ca_file, "");
    llmlink_option_t opts[] = {{"llmlink.TlsCertFile", "/etc/llmlink/node.pem"},
                               {"llmlink.TlsKeyFile", "/etc/llmlink/node.key"},
                               {"llmlink.TlsCaFile", "ca.pem"}};
    assert_int_equal(llk_options_parse(&fx->o, opts, 3, fx->err, sizeof fx->err),
                     LLMLINK_SUCCESS);
    assert_string_equal(fx->o.tls_cert_file, "/etc/llmlink/node.pem");
    assert_string_equal(fx->o.tls_key_file, "/etc/llmlink/node.key");
    assert_string_equal(fx->o.tls_ca_file, "ca.pem");
    assert_accepted(fx, "llmlink.TlsCaFile", "");
    assert_string_equal(fx->o.tls_ca_file, "");
    char longname[LLK_MAX_PATH + 1];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_refused(fx, "llmlink.TlsKeyFile", longname);
    assert_non_null(strstr(fx->err, "longer than"));
}

/* ---- keys, NULLs, ordering, messages --------------------------------------------- */

static void test_unknown_key(void **state)
{
    options_fixture_t *fx = *state;
    /* Keys are case-sensitive: llmlink.h lists the one case alias
     * (llm.ListenIpInfo) explicitly. */
    static const char *const unknown[] = {
        "llm.Bogus", "llmlink.maxlinks", "llm.synckvcachewaittime", "MaxLinks",
        "llmlink.MaxLinks ", "llm.listenIpInfo.",
    };
    for (size_t i = 0; i < ARRAY_LEN(unknown); i++)
        assert_refused(fx, unknown[i], "1");
}

/* The empty key cannot be "named", but it must still be refused. */
static void test_empty_key(void **state)
{
    options_fixture_t *fx = *state;
    assert_int_equal(parse1(fx, "", "1"), LLMLINK_PARAM_INVALID);
    assert_true(fx->err[0] != '\0');
}

static void test_null_key_and_value(void **state)
{
    options_fixture_t *fx = *state;
    assert_int_equal(parse1(fx, NULL, "1"), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(fx->err, "key"));

    assert_int_equal(parse1(fx, "llmlink.MaxLinks", NULL), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(fx->err, "llmlink.MaxLinks"));
    assert_int_equal(fx->o.max_links, 512);

    /* a NULL key after a good pair is still found */
    llmlink_option_t opts[] = {{"llmlink.MaxLinks", "5"}, {NULL, "1"}};
    assert_int_equal(llk_options_parse(&fx->o, opts, 2, fx->err, sizeof fx->err),
                     LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(fx->err, "key"));
}

static void test_later_pairs_override(void **state)
{
    options_fixture_t *fx = *state;
    const llmlink_option_t opts[] = {
        {"llmlink.MaxLinks", "10"},
        {"llmlink.Transport", "rdma"},
        {"llm.listenIpInfo", "1.1.1.1:1;2.2.2.2:2"},
        {"llmlink.MaxLinks", "20"},
        {"llm.ListenIpInfo", "3.3.3.3:3"}, /* the alias replaces the list too */
        {"llmlink.Transport", "tcp"},
    };
    assert_int_equal(llk_options_parse(&fx->o, opts, ARRAY_LEN(opts), fx->err, sizeof fx->err),
                     LLMLINK_SUCCESS);
    assert_int_equal(fx->o.max_links, 20);
    assert_int_equal(fx->o.transport, LLK_TRANSPORT_TCP);
    assert_int_equal(fx->o.num_listen, 1);
    assert_listen_v4(&fx->o.listen[0], "3.3.3.3", 3);
}

/* Parsing stops at the first bad pair and reports that one. */
static void test_first_error_reported(void **state)
{
    options_fixture_t *fx = *state;
    const llmlink_option_t opts[] = {
        {"llmlink.MaxLinks", "10"},
        {"llm.FirstBadKey", "1"},
        {"llm.SecondBadKey", "1"},
    };
    assert_int_equal(llk_options_parse(&fx->o, opts, ARRAY_LEN(opts), fx->err, sizeof fx->err),
                     LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(fx->err, "llm.FirstBadKey"));
    assert_null(strstr(fx->err, "llm.SecondBadKey"));
}

/* Values are shown in messages only when printable, so a binary value
 * cannot put control characters into llmlink_last_error(). */
static void test_message_hides_nonprintable_value(void **state)
{
    options_fixture_t *fx = *state;
    assert_refused(fx, "llmlink.MaxLinks", "1\x1b[2J");
    assert_null(strchr(fx->err, '\x1b'));
    assert_refused(fx, "llm.listenIpInfo", "1.2.3.4:\x01");
    assert_null(strchr(fx->err, '\x01'));
    for (const char *p = fx->err; *p; p++)
        assert_true(*p >= 0x20 && *p < 0x7f);
}

/* A short err buffer is filled, terminated and never overrun. */
static void test_small_error_buffer(void **state)
{
    options_fixture_t *fx = *state;
    char buf[8 + 8];
    memset(buf, 'Q', sizeof buf);
    llmlink_option_t opt = {"llm.SomeUnknownKeyWithALongName", "1"};
    assert_int_equal(llk_options_parse(&fx->o, &opt, 1, buf, 8), LLMLINK_PARAM_INVALID);
    assert_int_equal(strlen(buf), 7);
    for (size_t i = 8; i < sizeof buf; i++)
        assert_int_equal(buf[i], 'Q');
}

static void test_transport_names_distinct(void **state)
{
    (void)state;
    for (int a = LLK_TRANSPORT_AUTO; a <= LLK_TRANSPORT_RDMA; a++)
        for (int b = LLK_TRANSPORT_AUTO; b < a; b++)
            assert_string_not_equal(llk_transport_name((llk_transport_t)a),
                                    llk_transport_name((llk_transport_t)b));
}

/* llmlink.AuthKey / AuthKeyFile: the caller's strings are kept for init
 * (which loads the key); a bad hex key is refused without being quoted;
 * both at once are refused. */
static void test_auth_keys(void **state)
{
    options_fixture_t *fx = *state;
    static const char hex[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    assert_null(fx->o.auth_key_hex);
    assert_null(fx->o.auth_key_file);
    assert_accepted(fx, "llmlink.AuthKey", hex);
    assert_ptr_equal(fx->o.auth_key_hex, hex);
    assert_accepted(fx, "llmlink.AuthKeyFile", "/etc/llmlink/key");
    assert_string_equal(fx->o.auth_key_file, "/etc/llmlink/key");
    static const char *const bad[] = {
        "", "0011", /* too short */
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff0", /* odd */
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeefg", /* not hex */
        "00112233445566778899aabbccddeeff 00112233445566778899aabbccddeeff",
    };
    for (size_t b = 0; b < ARRAY_LEN(bad); b++) {
        assert_refused(fx, "llmlink.AuthKey", bad[b]);
        if (strstr(fx->err, "0011") || strstr(fx->err, "eef"))
            fail_msg("the message quotes the key: \"%s\"", fx->err);
    }
    assert_refused(fx, "llmlink.AuthKeyFile", "");
    llmlink_option_t both[] = {{"llmlink.AuthKeyFile", "/k"}, {"llmlink.AuthKey", hex}};
    assert_int_equal(llk_options_parse(&fx->o, both, 2, fx->err, sizeof fx->err),
                     LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(fx->err, "both"));
}

/* ---- main ------------------------------------------------------------------------ */

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_empty_list_keeps_defaults),
        T(test_parse_starts_from_defaults),
        T(test_int_keys_edges),
        T(test_int_keys_malformed),
        T(test_refused_int_not_stored),
        T(test_listen_ipv4),
        T(test_listen_ipv6_port0),
        T(test_listen_multiple_in_order),
        T(test_listen_alias),
        T(test_listen_count_limit),
        T(test_listen_bad_values),
        T(test_device_ids),
        T(test_device_ids_count_limit),
        T(test_device_ids_bad_values),
        T(test_allowed_clusters),
        T(test_allowed_clusters_count_limit),
        T(test_allowed_clusters_bad_values),
        T(test_booleans),
        T(test_transport),
        T(test_datadist_passthrough_keys), T(test_tls_file_keys),
        T(test_unknown_key),
        T(test_empty_key),
        T(test_null_key_and_value),
        T(test_later_pairs_override),
        T(test_first_error_reported),
        T(test_message_hides_nonprintable_value),
        T(test_small_error_buffer),
        T(test_transport_names_distinct),
        T(test_auth_keys),
    };
    return cmocka_run_group_tests_name("options: key/value parser", tests, NULL, NULL);
}

/* options.c - key/value options to llk_options_t. */
#include "base/options.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/addr.h"
#include "link/auth.h"
#include "link/wire.h"

void llk_options_defaults(llk_options_t *o)
{
    memset(o, 0, sizeof *o);
    o->sync_kv_wait_ms = 1000;
    o->debug_fence_fill = -1;
    o->link_total_time_ms = 0;
    o->link_retry_count = 1;
    o->rdma_traffic_class = 132;
    o->rdma_service_level = 4;
    o->max_links = 512;
    o->max_concurrent_handshakes = 16;
    o->handshake_timeout_ms = 10000;
    o->first_frame_timeout_ms = 1000;
    o->max_handshakes_per_address = 4;
    o->liveness_interval_ms = 3000;
    o->transport = LLK_TRANSPORT_AUTO;
    o->streams_per_link = 2;
    o->rdma_gid_index = -1;
    o->max_caches = 4096;
    o->async_workers = 8;
    o->notify_queue_depth = 1024;
}

const char *llk_transport_name(llk_transport_t t)
{
    switch (t) {
    case LLK_TRANSPORT_AUTO: return "auto";
    case LLK_TRANSPORT_TCP: return "tcp";
    case LLK_TRANSPORT_SHM: return "shm";
    case LLK_TRANSPORT_RDMA: return "rdma";
    }
    return "?";
}

/* Writes `value` into a message only when it is short and printable, so a
 * binary or huge value cannot garble the error text. */
static const char *show(const char *v, char *buf, size_t n)
{
    size_t len = strlen(v);
    for (size_t i = 0; i < len && i < 64; i++)
        if (!isprint((unsigned char)v[i])) {
            snprintf(buf, n, "(non-printable, %zu bytes)", len);
            return buf;
        }
    if (len > 64)
        snprintf(buf, n, "\"%.64s...\" (%zu bytes)", v, len);
    else
        snprintf(buf, n, "\"%s\"", v);
    return buf;
}

/* Decimal integer in [lo, hi], digits only with an optional leading '-'
 * (no spaces, no '+', no hex): option strings come from config files. */
static int parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    const char *p = s;
    if (*p == '-')
        p++;
    if (!*p || strlen(p) > 19 || strspn(p, "0123456789") != strlen(p))
        return -1;
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    if (!strcmp(s, "1") || !strcmp(s, "true") || !strcmp(s, "True")) {
        *out = true;
        return 0;
    }
    if (!strcmp(s, "0") || !strcmp(s, "false") || !strcmp(s, "False")) {
        *out = false;
        return 0;
    }
    return -1;
}

typedef enum { K_INT, K_BOOL, K_LISTEN, K_DEVICES, K_TRANSPORT, K_STRING, K_RDMA_DEVICE,
               K_RDMA_GID, K_RDMA_MTU, K_AUTH_FILE, K_AUTH_HEX, K_PATH, K_CLUSTERS } kind_t;

typedef struct {
    const char *key;
    kind_t kind;
    int64_t lo, hi;
    size_t off; /* offsetof target in llk_options_t (K_INT: int32/uint32) */
} key_spec_t;

#define OFF(f) offsetof(llk_options_t, f)
static const key_spec_t specs[] = {
    {"llm.listenIpInfo", K_LISTEN, 0, 0, 0},
    {"llm.ListenIpInfo", K_LISTEN, 0, 0, 0},
    {"llm.SyncKvCacheWaitTime", K_INT, 1, INT32_MAX, OFF(sync_kv_wait_ms)},
    {"llm.LinkTotalTime", K_INT, 0, INT32_MAX, OFF(link_total_time_ms)},
    {"llm.LinkRetryCount", K_INT, 1, 100, OFF(link_retry_count)},
    {"llm.RdmaTrafficClass", K_INT, 0, 255, OFF(rdma_traffic_class)},
    {"llm.RdmaServiceLevel", K_INT, 0, 7, OFF(rdma_service_level)},
    {"ge.exec.deviceId", K_DEVICES, 0, 0, 0},
    {"ge.session_device_id", K_DEVICES, 0, 0, 0},
    {"llm.DeviceId", K_DEVICES, 0, 0, 0},
    {"llm.EnableCacheManager", K_BOOL, 0, 0, OFF(enable_cache_manager)},
    {"llm.EnableRemoteCacheAccessible", K_BOOL, 0, 0, OFF(enable_remote_cache_accessible)},
    {"llm.EnableSwitchRole", K_BOOL, 0, 0, OFF(enable_switch_role)},
    /* Memory-pool and deployment settings of llm_datadist: accepted so that
     * its scripts run unchanged; llmlink registers caller memory instead. */
    {"llm.MemPoolConfig", K_STRING, 0, 0, 0},
    {"llm.HostMemPoolConfig", K_STRING, 0, 0, 0},
    {"llm.BufPoolCfg", K_STRING, 0, 0, 0},
    {"llm.LocalCommRes", K_STRING, 0, 0, 0},
    {"llm.deployResPath", K_STRING, 0, 0, 0},
    {"llmlink.MaxLinks", K_INT, 1, 65536, OFF(max_links)},
    {"llmlink.MaxConcurrentHandshakes", K_INT, 1, 4096, OFF(max_concurrent_handshakes)},
    {"llmlink.HandshakeTimeoutMs", K_INT, 10, 600000, OFF(handshake_timeout_ms)},
    {"llmlink.FirstFrameTimeoutMs", K_INT, 10, 600000, OFF(first_frame_timeout_ms)},
    {"llmlink.MaxHandshakesPerAddress", K_INT, 1, 4096, OFF(max_handshakes_per_address)},
    {"llmlink.LivenessIntervalMs", K_INT, LLK_LIVENESS_MIN_MS, LLK_LIVENESS_MAX_MS, OFF(liveness_interval_ms)},
    {"llmlink.Transport", K_TRANSPORT, 0, 0, 0},
    {"llmlink.StreamsPerLink", K_INT, 1, 8, OFF(streams_per_link)},
    {"llmlink.MaxCaches", K_INT, 1, 1048576, OFF(max_caches)},
    {"llmlink.AsyncWorkers", K_INT, 1, 64, OFF(async_workers)},
    {"llmlink.NotifyQueueDepth", K_INT, 1, 65536, OFF(notify_queue_depth)},
    {"llmlink.RdmaDevice", K_RDMA_DEVICE, 0, 0, 0},
    {"llmlink.RdmaPort", K_INT, 0, 255, OFF(rdma_port)},
    {"llmlink.RdmaGidIndex", K_RDMA_GID, 0, 0, 0},
    {"llmlink.RdmaMtu", K_RDMA_MTU, 0, 0, 0},
    {"llmlink.DebugFenceFill", K_INT, -1, 255, OFF(debug_fence_fill)},
    {"llmlink.AuthKeyFile", K_AUTH_FILE, 0, 0, 0},
    /* Secret: no message ever shows its value (K_AUTH_HEX never calls show()). */
    {"llmlink.AuthKey", K_AUTH_HEX, 0, 0, 0},
    {"llmlink.TlsCertFile", K_PATH, 0, 0, OFF(tls_cert_file)},
    {"llmlink.TlsKeyFile", K_PATH, 0, 0, OFF(tls_key_file)},
    {"llmlink.TlsCaFile", K_PATH, 0, 0, OFF(tls_ca_file)},
    {"llmlink.AllowedClusters", K_CLUSTERS, 0, 0, 0},
};

static int parse_listen(llk_options_t *o, const char *v, char *err, size_t errlen,
                        const char *key)
{
    char buf[1024];
    if (strlen(v) >= sizeof buf) {
        snprintf(err, errlen, "option %s: value too long", key);
        return -1;
    }
    strcpy(buf, v);
    o->num_listen = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
        if (o->num_listen == LLMLINK_MAX_LISTEN_ADDRS) {
            snprintf(err, errlen, "option %s: more than %d addresses", key,
                     LLMLINK_MAX_LISTEN_ADDRS);
            return -1;
        }
        llk_listen_addr_t *l = &o->listen[o->num_listen];
        const char *why = NULL;
        if (llk_addr_parse_endpoint(tok, &l->sa, &l->sa_len, &why) != 0) {
            char shown[112];
            snprintf(err, errlen, "option %s: %s: %s (expected ip:port or [ipv6]:port)", key,
                     show(tok, shown, sizeof shown), why);
            return -1;
        }
        snprintf(l->text, sizeof l->text, "%s", tok);
        o->num_listen++;
    }
    if (o->num_listen == 0) {
        snprintf(err, errlen, "option %s: no address given (expected ip:port)", key);
        return -1;
    }
    return 0;
}

static int parse_devices(llk_options_t *o, const char *v, char *err, size_t errlen,
                         const char *key)
{
    char buf[512];
    char shown[112];
    if (strlen(v) >= sizeof buf) {
        snprintf(err, errlen, "option %s: value too long", key);
        return -1;
    }
    strcpy(buf, v);
    size_t n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
        int64_t id;
        if (n == LLK_MAX_DEVICE_IDS) {
            snprintf(err, errlen, "option %s: more than %d device ids", key, LLK_MAX_DEVICE_IDS);
            return -1;
        }
        if (parse_int(tok, 0, INT32_MAX, &id) != 0) {
            snprintf(err, errlen, "option %s: %s is not a device id (0..2147483647)", key,
                     show(tok, shown, sizeof shown));
            return -1;
        }
        o->device_ids[n++] = (int32_t)id;
    }
    if (n == 0) {
        snprintf(err, errlen, "option %s: no device id given", key);
        return -1;
    }
    o->num_device_ids = n;
    return 0;
}

llmlink_status_t llk_options_parse(llk_options_t *o, const llmlink_option_t *opts, size_t n,
                                   char *err, size_t errlen)
{
    char shown[112];
    llk_options_defaults(o);
    for (size_t i = 0; i < n; i++) {
        const char *k = opts[i].key, *v = opts[i].value;
        if (!k) {
            snprintf(err, errlen, "options[%zu].key is NULL", i);
            return LLMLINK_PARAM_INVALID;
        }
        if (!v) {
            snprintf(err, errlen, "option %s (options[%zu]): value is NULL",
                     show(k, shown, sizeof shown), i);
            return LLMLINK_PARAM_INVALID;
        }
        const key_spec_t *spec = NULL;
        for (size_t s = 0; s < sizeof specs / sizeof specs[0]; s++)
            if (strcmp(specs[s].key, k) == 0)
                spec = &specs[s];
        if (!spec) {
            snprintf(err, errlen, "unknown option key %s", show(k, shown, sizeof shown));
            return LLMLINK_PARAM_INVALID;
        }
        switch (spec->kind) {
        case K_INT: {
            int64_t x;
            if (parse_int(v, spec->lo, spec->hi, &x) != 0) {
                snprintf(err, errlen, "option %s: %s is not an integer in %" PRId64 "..%" PRId64,
                         k, show(v, shown, sizeof shown), spec->lo, spec->hi);
                return LLMLINK_PARAM_INVALID;
            }
            /* Every K_INT field is an int32_t or uint32_t (which may alias
             * each other) and every range lies within -1..INT32_MAX (-1
             * only for int32_t fields). */
            *(int32_t *)((char *)o + spec->off) = (int32_t)x;
            break;
        }
        case K_BOOL:
            if (parse_bool(v, (bool *)((char *)o + spec->off)) != 0) {
                snprintf(err, errlen, "option %s: %s is not a boolean (0 or 1)", k,
                         show(v, shown, sizeof shown));
                return LLMLINK_PARAM_INVALID;
            }
            break;
        case K_LISTEN:
            if (parse_listen(o, v, err, errlen, k) != 0)
                return LLMLINK_PARAM_INVALID;
            break;
        case K_DEVICES:
            if (parse_devices(o, v, err, errlen, k) != 0)
                return LLMLINK_PARAM_INVALID;
            break;
        case K_TRANSPORT: {
            static const llk_transport_t all[] = {LLK_TRANSPORT_AUTO, LLK_TRANSPORT_TCP,
                                                  LLK_TRANSPORT_SHM, LLK_TRANSPORT_RDMA};
            bool ok = false;
            for (size_t t = 0; t < 4; t++)
                if (strcmp(v, llk_transport_name(all[t])) == 0) {
                    o->transport = all[t];
                    ok = true;
                }
            if (!ok) {
                snprintf(err, errlen, "option %s: %s is not one of auto, tcp, shm, rdma", k,
                         show(v, shown, sizeof shown));
                return LLMLINK_PARAM_INVALID;
            }
            break;
        }
        case K_RDMA_DEVICE: {
            size_t vlen = strlen(v);
            bool ok = vlen < sizeof o->rdma_device;
            for (size_t c = 0; ok && c < vlen; c++)
                ok = (v[c] >= 'a' && v[c] <= 'z') || (v[c] >= 'A' && v[c] <= 'Z') ||
                     (v[c] >= '0' && v[c] <= '9') || v[c] == '_' || v[c] == '-' || v[c] == '.';
            if (!ok) {
                snprintf(err, errlen, "option %s: %s is not a device name (up to 63 of "
                         "[A-Za-z0-9_.-], \"\" for any)", k, show(v, shown, sizeof shown));
                return LLMLINK_PARAM_INVALID;
            }
            memcpy(o->rdma_device, v, vlen + 1);
            break;
        }
        case K_RDMA_GID: {
            int64_t x;
            if (parse_int(v, -1, 255, &x) != 0) {
                snprintf(err, errlen, "option %s: %s is not -1 (auto) or a GID index 0..255", k,
                         show(v, shown, sizeof shown));
                return LLMLINK_PARAM_INVALID;
            }
            o->rdma_gid_index = (int32_t)x;
            break;
        }
        case K_RDMA_MTU: {
            int64_t x;
            if (parse_int(v, 0, 4096, &x) != 0 ||
                (x != 0 && x != 256 && x != 512 && x != 1024 && x != 2048 && x != 4096)) {
                snprintf(err, errlen, "option %s: %s is not one of 0 (no cap), 256, 512, 1024, "
                         "2048, 4096", k, show(v, shown, sizeof shown));
                return LLMLINK_PARAM_INVALID;
            }
            o->rdma_mtu = (uint32_t)x;
            break;
        }
        case K_AUTH_FILE:
            if (!*v || strlen(v) >= 4096) {
                snprintf(err, errlen, "option %s: expected the path of a key file (1 to 4095 "
                         "bytes)", k);
                return LLMLINK_PARAM_INVALID;
            }
            o->auth_key_file = v;
            break;
        case K_AUTH_HEX: {
            const char *why = "?";
            size_t len;
            if (llk_auth_hex_decode(v, NULL, 0, &len, &why) != 0) {
                snprintf(err, errlen, "option %s: the value is %s (the key, at least 32 bytes, "
                         "in hex)", k, why);
                return LLMLINK_PARAM_INVALID;
            }
            o->auth_key_hex = v;
            break;
        }
        case K_PATH:
            /* A file name ("" = unset); the engine opens it at init. */
            if (strlen(v) >= LLK_MAX_PATH) {
                snprintf(err, errlen, "option %s: a file name longer than %d bytes", k,
                         LLK_MAX_PATH - 1);
                return LLMLINK_PARAM_INVALID;
            }
            memcpy((char *)o + spec->off, v, strlen(v) + 1);
            break;
        case K_CLUSTERS: {
            const char *why = "?";
            size_t at = 0;
            if (llk_cluster_list_parse(&o->allowed_clusters, v, &why, &at) != 0) {
                snprintf(err, errlen, "option %s: entry %zu of %s: %s", k, at,
                         show(v, shown, sizeof shown), why);
                return LLMLINK_PARAM_INVALID;
            }
            break;
        }
        case K_STRING:
            if (strlen(v) > 4096) {
                snprintf(err, errlen, "option %s: value longer than 4096 bytes", k);
                return LLMLINK_PARAM_INVALID;
            }
            break;
        }
    }
    if (o->auth_key_file && o->auth_key_hex) {
        snprintf(err, errlen, "options llmlink.AuthKeyFile and llmlink.AuthKey are both set: "
                 "give the key one way");
        return LLMLINK_PARAM_INVALID;
    }
    return LLMLINK_SUCCESS;
}

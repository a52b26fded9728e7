/*
 * options.h - the engine's configuration, parsed from key/value strings.
 *
 * llk_options_parse() starts from the defaults, applies every pair in order
 * (a later pair overrides an earlier one), and fails on the first unknown
 * key or bad value with a message naming the key. It does no I/O.
 */
#ifndef LLK_OPTIONS_H
#define LLK_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/cluster_list.h"
#include "llmlink.h"

typedef enum llk_transport {
    LLK_TRANSPORT_AUTO = 0,
    LLK_TRANSPORT_TCP = 1,
    LLK_TRANSPORT_SHM = 2,
    LLK_TRANSPORT_RDMA = 3
} llk_transport_t;

#define LLK_MAX_DEVICE_IDS 16
#define LLK_MAX_PATH 1024 /* a file option's value, with its NUL */

typedef struct llk_listen_addr {
    struct sockaddr_storage sa;
    socklen_t sa_len;
    char text[64]; /* as given, for messages */
} llk_listen_addr_t;

typedef struct llk_options {
    /* llm_datadist keys */
    llk_listen_addr_t listen[LLMLINK_MAX_LISTEN_ADDRS];
    size_t num_listen;
    int32_t sync_kv_wait_ms;      /* llm.SyncKvCacheWaitTime, default 1000 */
    int32_t link_total_time_ms;   /* llm.LinkTotalTime, 0 = per call */
    uint32_t link_retry_count;    /* llm.LinkRetryCount, default 1 */
    uint32_t rdma_traffic_class;  /* default 132 */
    uint32_t rdma_service_level;  /* default 4 */
    int32_t device_ids[LLK_MAX_DEVICE_IDS];
    size_t num_device_ids;
    bool enable_cache_manager;
    bool enable_remote_cache_accessible;
    bool enable_switch_role;
    /* llmlink keys */
    uint32_t max_links;               /* default 512 */
    uint32_t max_concurrent_handshakes; /* default 16 */
    uint32_t handshake_timeout_ms;    /* default 10000 */
    uint32_t first_frame_timeout_ms;  /* default 1000: a server connection's first frame */
    uint32_t max_handshakes_per_address; /* default 4: llmlink.MaxHandshakesPerAddress */
    uint32_t liveness_interval_ms;    /* default 3000 */
    llk_transport_t transport;        /* default auto */
    uint32_t streams_per_link;        /* llmlink.StreamsPerLink, default 2 */
    uint32_t max_caches;              /* llmlink.MaxCaches, default 4096 */
    uint32_t async_workers;           /* llmlink.AsyncWorkers, default 8 (1..64) */
    uint32_t notify_queue_depth;      /* llmlink.NotifyQueueDepth, default 1024 */
    /* RDMA (rdma.h) */
    char rdma_device[64];             /* llmlink.RdmaDevice: "" = pick by GID/IP */
    uint32_t rdma_port;               /* llmlink.RdmaPort: 0 = first active port */
    int32_t rdma_gid_index;           /* llmlink.RdmaGidIndex: -1 = the RoCE v2 GID of the IP */
    uint32_t rdma_mtu;                /* llmlink.RdmaMtu: cap in bytes, 0 = none */
    /* llmlink.DebugFenceFill: the byte a fenced tcp write's unreceived range
     * is filled with (xfer/owner.c), -1 = off (the default) */
    int32_t debug_fence_fill;
    /* llmlink.AuthKeyFile / llmlink.AuthKey: the caller's strings, valid
     * only during llmlink_init, which loads the key into the engine
     * (link/auth.h) and clears both; at most one is set. The hex value is
     * checked here (never quoted in a message), the file at init. */
    const char *auth_key_file;
    const char *auth_key_hex;
    /* TLS (link/tls.h): llmlink.TlsCertFile, TlsKeyFile, TlsCaFile; "" = unset
     * (all three or none, checked when the engine loads them at init) */
    char tls_cert_file[LLK_MAX_PATH];
    char tls_key_file[LLK_MAX_PATH];
    char tls_ca_file[LLK_MAX_PATH];
    /* llmlink.AllowedClusters: client cluster ids that may link (none: any) */
    llk_cluster_list_t allowed_clusters;
} llk_options_t;

void llk_options_defaults(llk_options_t *o);

/* On failure returns LLMLINK_PARAM_INVALID and writes a message that names
 * the key (and the value when it is printable) into err (size errlen). */
llmlink_status_t llk_options_parse(llk_options_t *o, const llmlink_option_t *opts, size_t n,
                                   char *err, size_t errlen);

const char *llk_transport_name(llk_transport_t t);

#endif /* LLK_OPTIONS_H */

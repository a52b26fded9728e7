/*
 * llmlink.h - the one public header of llmlink.
 *
 * llmlink links decode clusters (DECODER, the client) to prefill clusters
 * (PROMPT, the server) and moves KV cache between them.
 * The contract follows Huawei's llm_datadist: the same status codes, roles,
 * option keys and link semantics, as a C ABI.
 *
 * Conventions
 *  - Every function and type is prefixed llmlink_, every macro LLMLINK_.
 *  - Handles are opaque. llmlink_destroy(NULL) is a no-op.
 *  - Every call that can fail returns llmlink_status_t. On failure,
 *    llmlink_last_error() returns a message for the calling thread that names
 *    the argument, peer or errno behind the failure. It is never NULL.
 *  - Status values are never renumbered. Codes of llmlink's own lie above
 *    0x5010B100.
 *
 * Thread safety
 *  - One engine may be called from many threads at once; calls on different
 *    engines are independent. Link and unlink calls for different clusters
 *    run in parallel; a call that touches a cluster another call is linking
 *    or unlinking gets LLMLINK_PROCESSING_LINK for that cluster.
 *  - llmlink_finalize() and llmlink_destroy() must not race with other calls
 *    on the same engine: the caller ends its other uses first.
 *  - The log callback may be invoked from any thread, including the engine's
 *    internal I/O thread; it must not call back into the same engine.
 */
#ifndef LLMLINK_H
#define LLMLINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(LLMLINK_BUILDING) && defined(__GNUC__)
#define LLMLINK_EXTERN __attribute__((visibility("default")))
#else
#define LLMLINK_EXTERN
#endif

/* ------------------------------------------------------------------ */
/* Version                                                             */
/* ------------------------------------------------------------------ */

#define LLMLINK_VERSION_MAJOR 0
#define LLMLINK_VERSION_MINOR 3
#define LLMLINK_VERSION_PATCH 0
/* MAJOR * 10000 + MINOR * 100 + PATCH, as the library reports it. */
#define LLMLINK_VERSION_NUMBER \
    (LLMLINK_VERSION_MAJOR * 10000 + LLMLINK_VERSION_MINOR * 100 + LLMLINK_VERSION_PATCH)
#define LLMLINK_VERSION_STRING "0.3.0"

/* The version of the library actually loaded; bindings compare it with
 * LLMLINK_VERSION_NUMBER to catch a header/library mismatch. */
LLMLINK_EXTERN uint32_t llmlink_version_number(void);
LLMLINK_EXTERN const char *llmlink_version_string(void);

/* ------------------------------------------------------------------ */
/* Status codes (values of llm_datadist's LLMStatusCode)               */
/* ------------------------------------------------------------------ */

typedef uint32_t llmlink_status_t;

#define LLMLINK_SUCCESS                      0x00000000u
#define LLMLINK_FAILED                       0xFFFFFFFFu
#define LLMLINK_WAIT_PROCESS_TIMEOUT         0x5010B001u
#define LLMLINK_KV_CACHE_NOT_EXIST           0x5010B002u
#define LLMLINK_REPEAT_REQUEST               0x5010B003u
#define LLMLINK_REQUEST_ALREADY_COMPLETED    0x5010B004u
#define LLMLINK_PARAM_INVALID                0x5010B005u
#define LLMLINK_ENGINE_FINALIZED             0x5010B006u
#define LLMLINK_NOT_YET_LINK                 0x5010B007u
#define LLMLINK_ALREADY_LINK                 0x5010B008u
#define LLMLINK_LINK_FAILED                  0x5010B009u
#define LLMLINK_UNLINK_FAILED                0x5010B00Au
#define LLMLINK_NOTIFY_PROMPT_UNLINK_FAILED  0x5010B00Bu
#define LLMLINK_CLUSTER_NUM_EXCEED_LIMIT     0x5010B00Cu
#define LLMLINK_PROCESSING_LINK              0x5010B00Du
#define LLMLINK_DEVICE_OUT_OF_MEMORY         0x5010B00Eu
#define LLMLINK_PREFIX_ALREADY_EXIST         0x5010B00Fu
#define LLMLINK_PREFIX_NOT_EXIST             0x5010B010u
#define LLMLINK_SEQ_LEN_OVER_LIMIT           0x5010B011u
#define LLMLINK_NO_FREE_BLOCK                0x5010B012u
#define LLMLINK_BLOCKS_OUT_OF_MEMORY         0x5010B013u
#define LLMLINK_EXIST_LINK                   0x5010B018u
#define LLMLINK_FEATURE_NOT_ENABLED          0x5010B019u
#define LLMLINK_TIMEOUT                      0x5010B01Au
#define LLMLINK_LINK_BUSY                    0x5010B01Bu
#define LLMLINK_OUT_OF_MEMORY                0x5010B01Cu

/* llmlink's own codes. Never renumbered; new ones are appended. */
#define LLMLINK_NOT_INITIALIZED              0x5010B101u /* call needs llmlink_init() first */
#define LLMLINK_ALREADY_INITIALIZED          0x5010B102u /* llmlink_init() called twice */
#define LLMLINK_VERSION_MISMATCH             0x5010B103u /* peer speaks another protocol version */
#define LLMLINK_PROTOCOL_ERROR               0x5010B104u /* peer sent a malformed frame */
#define LLMLINK_ROLE_NOT_ALLOWED             0x5010B105u /* operation not allowed for this role */
#define LLMLINK_CLUSTER_ID_MISMATCH          0x5010B106u /* peer is not the cluster asked for */
#define LLMLINK_NETWORK_ERROR                0x5010B107u /* socket-level failure (see last_error) */
#define LLMLINK_CACHE_KEY_ALREADY_EXIST      0x5010B108u /* a registered cache already has that key */
#define LLMLINK_CACHE_IN_USE                 0x5010B109u /* cache still used by a transfer */
#define LLMLINK_AUTH_FAILED                  0x5010B10Au /* peer failed authentication (key, certificate) */
#define LLMLINK_ACCESS_DENIED                0x5010B10Bu /* refused by access control */
#define LLMLINK_TASK_PENDING                 0x5010B10Cu /* the task has not finished yet */
#define LLMLINK_CANCELLED                    0x5010B10Du /* cancelled; fenced; the link stays usable */
#define LLMLINK_CANCELLED_LINK_CLOSED        0x5010B10Eu /* cancelled mid-request; fenced by closing the link */
#define LLMLINK_NOTIFY_QUEUE_FULL            0x5010B10Fu /* the peer's notification queue is full */

/* "LLM_SUCCESS", "LLM_PARAM_INVALID", ...: the LLMStatusCode name, or
 * "LLMLINK_..." for llmlink's own codes, or "LLM_UNKNOWN_STATUS". Never NULL. */
LLMLINK_EXTERN const char *llmlink_status_name(llmlink_status_t status);
/* One sentence describing the status. Never NULL. */
LLMLINK_EXTERN const char *llmlink_strerror(llmlink_status_t status);
/* Detail of the last failure on the calling thread ("" if none). Valid until
 * the next llmlink call on this thread. Never NULL. */
LLMLINK_EXTERN const char *llmlink_last_error(void);
/* Status of the last failure on the calling thread (LLMLINK_SUCCESS if none). */
LLMLINK_EXTERN llmlink_status_t llmlink_last_error_status(void);
/* Forget the calling thread's last error. */
LLMLINK_EXTERN void llmlink_clear_error(void);

/* ------------------------------------------------------------------ */
/* Logging                                                             */
/* ------------------------------------------------------------------ */

typedef enum llmlink_log_level {
    LLMLINK_LOG_NONE = 0,
    LLMLINK_LOG_ERROR = 1,
    LLMLINK_LOG_WARN = 2,
    LLMLINK_LOG_INFO = 3,
    LLMLINK_LOG_DEBUG = 4
} llmlink_log_level_t;

typedef void (*llmlink_log_fn)(llmlink_log_level_t level, const char *message, void *user_data);

/* Process-wide. Messages at or below max_level reach fn (NULL disables; a
 * max_level above LLMLINK_LOG_DEBUG means DEBUG). fn is called with an
 * internal lock held, so that fn and user_data change together: it must
 * return quickly and must not call llmlink_set_log_callback.
 * Without a callback the library prints nothing, unless the environment
 * variable LLMLINK_LOG is set to error|warn|info|debug (then: stderr). */
LLMLINK_EXTERN void llmlink_set_log_callback(llmlink_log_fn fn, void *user_data,
                                             llmlink_log_level_t max_level);

/* ------------------------------------------------------------------ */
/* Engine                                                              */
/* ------------------------------------------------------------------ */

typedef struct llmlink llmlink_t;

/* Values of llm_datadist's LLMRole. */
typedef enum llmlink_role {
    LLMLINK_ROLE_PROMPT = 1,  /* prefill: the server, accepts links */
    LLMLINK_ROLE_DECODER = 2, /* decode: the client, initiates links */
    LLMLINK_ROLE_MIX = 3      /* both */
} llmlink_role_t;

typedef struct llmlink_option {
    const char *key;
    const char *value;
} llmlink_option_t;

/* Limits of the link contract. */
#define LLMLINK_MAX_CLUSTERS_PER_CALL 16
#define LLMLINK_MAX_IP_INFOS          16
#define LLMLINK_MAX_LISTEN_ADDRS      8

/* Creates an engine. cluster_id identifies this engine to its peers. */
LLMLINK_EXTERN llmlink_status_t llmlink_create(llmlink_t **out, llmlink_role_t role,
                                               uint64_t cluster_id);

/*
 * Applies options and starts the engine. Keys (values are strings):
 *   llm.listenIpInfo          "ip:port[;ip:port...]" ("[v6]:port" for IPv6).
 *                             PROMPT and MIX engines listen there; port 0
 *                             picks a free port (see llmlink_get_listen_port).
 *                             Alias: llm.ListenIpInfo.
 *   llm.SyncKvCacheWaitTime   transfer timeout, ms, 1..2147483647 (1000)
 *   llm.LinkTotalTime         cap on one link_clusters call, ms,
 *                             0..2147483647; 0 = the call's own timeout (0)
 *   llm.LinkRetryCount        connection attempts per cluster and address
 *                             within the call's timeout, 1..100 (1)
 *   llm.RdmaTrafficClass      0..255 (132)     llm.RdmaServiceLevel 0..7 (4):
 *                             GRH traffic class and service level of the
 *                             RDMA transport's QPs
 *   ge.exec.deviceId          device id(s) ">= 0" (";"-separated); alias
 *                             llm.DeviceId, ge.session_device_id
 *   llm.EnableCacheManager, llm.EnableRemoteCacheAccessible,
 *   llm.EnableSwitchRole      "0" or "1"
 *   llm.MemPoolConfig, llm.HostMemPoolConfig, llm.BufPoolCfg,
 *   llm.LocalCommRes, llm.deployResPath   accepted as in llm_datadist
 *   llmlink.MaxLinks                 links per engine, 1..65536 (512)
 *   llmlink.MaxConcurrentHandshakes  server handshakes at once, 1..4096 (16)
 *   llmlink.HandshakeTimeoutMs       half-open handshake age-out, 10..600000 (10000)
 *   llmlink.FirstFrameTimeoutMs      an accepted connection without a complete
 *                             first frame (HELLO, ATTACH) is closed, 10..600000 (1000)
 *   llmlink.MaxHandshakesPerAddress  server handshakes at once from one source
 *                             address (IPv4 /32, IPv6 /64), 1..4096 (4); more
 *                             wait parked, in arrival order
 *   llmlink.LivenessIntervalMs       a dead peer is noticed within this, 30..600000 (3000)
 *   llmlink.AllowedClusters          client cluster ids that may link, decimal,
 *                             comma-separated (spaces around an id allowed,
 *                             duplicates harmless, at most 256); "" (the
 *                             default): any. A HELLO from another id is
 *                             refused with LLMLINK_ACCESS_DENIED.
 *   llmlink.Transport                auto|tcp|shm|rdma (auto): how transfers
 *                             move bytes. auto: shm when both engines are on
 *                             one host (falling back to tcp by itself where the
 *                             kernel refuses process_vm_readv), else RDMA when
 *                             both ends have a usable RDMA device for the
 *                             link's addresses, else tcp.
 *                             tcp/shm force one (a forced shm that the kernel
 *                             refuses fails the transfer with
 *                             LLMLINK_FEATURE_NOT_ENABLED). A peer's word
 *                             that it is on this host is not enough: shm is
 *                             used once its pid is seen to hold the other
 *                             end of the data stream (else tcp, or the
 *                             forced-shm failure).
 *                             rdma (on either end) forces RDMA, also on one
 *                             host: where it cannot be used (no
 *                             libibverbs.so.1, no device or GID for the
 *                             link's address, the peer cannot, the QPs do
 *                             not come up) link_clusters fails that cluster
 *                             with LLMLINK_LINK_FAILED and a message saying
 *                             why. libibverbs is loaded at run time
 *                             (dlopen): no build or binding needs it.
 *                             RDMA details: one rail (an RC QP pair) per
 *                             local ip info of the link (or the address its
 *                             connection left from), paired with remote ip
 *                             info i (mod their count); the device and GID
 *                             are those whose RoCE v2 GID is that address.
 *                             Path MTU: the smaller of both ends' active
 *                             MTUs (and llmlink.RdmaMtu caps). pull_* are
 *                             RDMA READs, push_* RDMA WRITEs, spread over
 *                             the rails; the owner grants addresses and
 *                             rkeys per request, never reused. A rail
 *                             that fails under a call (work completion
 *                             error, port not ACTIVE) is taken out of the
 *                             link and the call's unfinished work goes on
 *                             over the other rails (stats:
 *                             rdma_rail_failovers), and set up again
 *                             without relinking once its port is ACTIVE
 *                             (rdma_rail_repairs); only with no rail left
 *                             does the call fail, LLMLINK_NETWORK_ERROR
 *                             naming each rail's ibv_wc_status_str or port
 *                             state, and the link is unusable
 *                             (NOT_YET_LINK until linked again). An
 *                             unregister_cache whose wait ends while only
 *                             peers' RDMA grants hold the cache revokes them
 *                             (kills their memory windows, deregisters its
 *                             memory regions) and succeeds:
 *                             the peer's transfer then fails as above
 *                             (remote access error).
 *   llmlink.RdmaDevice               RDMA device to use ("": any), e.g. mlx5_0
 *   llmlink.RdmaPort                 its port, 0..255 (0: the first active one)
 *   llmlink.RdmaGidIndex             GID index, -1..255 (-1: the RoCE v2 GID
 *                             of the rail's address)
 *   llmlink.RdmaMtu                  cap on the path MTU: 0 (none), 256, 512,
 *                             1024, 2048 or 4096 (0)
 *   llmlink.StreamsPerLink           data streams per link and direction, 1..8 (2)
 *   llmlink.MaxCaches                registered caches per engine, 1..1048576 (4096)
 *   llmlink.DebugFenceFill           -1..255 (-1: off): the byte that fills
 *                             what a fenced tcp write to this engine never
 *                             received (the rest of its blocks), so a half-
 *                             written KV cache shows; logged at INFO
 *   llmlink.AuthKeyFile              path of a file holding the pre-shared
 *                             key (raw bytes, 32..4096). Refused at init
 *                             (LLMLINK_PARAM_INVALID, the message naming the
 *                             file) when the file is readable or writable by
 *                             group or others (mode & 077, as ssh requires),
 *                             unreadable, not a regular file, or of the wrong
 *                             size.
 *   llmlink.AuthKey                  the same key in hex (64..8192 hex digits),
 *                             for programs that hold it in memory. A secret:
 *                             never logged nor quoted in a message. Setting
 *                             both keys is LLMLINK_PARAM_INVALID.
 *                             With a key, every connection (link and data
 *                             stream) runs a challenge-response with fresh
 *                             nonces from both sides (HMAC-SHA-256, keys
 *                             derived with HKDF, OpenSSL's libcrypto) before
 *                             either side reveals anything about itself, and
 *                             each data stream proves it belongs to its link.
 *                             Both ends need the same key: a wrong, missing
 *                             or unexpected key fails that cluster with
 *                             LLMLINK_AUTH_FAILED; the server logs a WARN
 *                             (at most one a second) and counts it. It
 *                             authenticates, it does not encrypt: see
 *                             docs/security.md.
 *   llmlink.TlsCertFile, llmlink.TlsKeyFile, llmlink.TlsCaFile
 *                             PEM files: this engine's certificate (chain),
 *                             its private key (mode 0600 or stricter) and
 *                             the CA that signs the peers' certificates.
 *                             All three or none (""). With them every
 *                             connection (control and tcp data streams, both
 *                             directions) runs mutual TLS 1.3, each side
 *                             verifying the other's certificate against the
 *                             CA; a peer that fails gives the client
 *                             LLMLINK_AUTH_FAILED with the reason. Files are
 *                             loaded at init: a bad one fails it with
 *                             LLMLINK_PARAM_INVALID naming it (docs/security.md)
 * An unknown key, or a value out of range, fails with LLMLINK_PARAM_INVALID
 * and a message that names the key.
 */
LLMLINK_EXTERN llmlink_status_t llmlink_init(llmlink_t *dd, const llmlink_option_t *options,
                                             size_t num_options);

/* Closes every link (peers notice at once) and stops the engine. Later
 * calls that need a running engine (init, link, unlink, check,
 * get_listen_port) return LLMLINK_ENGINE_FINALIZED; get_role,
 * get_cluster_id and get_stats keep answering, so counters can be read after
 * shutdown. Idempotent; NULL is a no-op. */
LLMLINK_EXTERN void llmlink_finalize(llmlink_t *dd);
/* llmlink_finalize() and free. NULL is a no-op. */
LLMLINK_EXTERN void llmlink_destroy(llmlink_t *dd);

LLMLINK_EXTERN llmlink_status_t llmlink_get_role(const llmlink_t *dd, llmlink_role_t *role);
LLMLINK_EXTERN llmlink_status_t llmlink_get_cluster_id(const llmlink_t *dd, uint64_t *cluster_id);
/* The port the engine listens on for listen address number `index` (in the
 * order of llm.listenIpInfo): the chosen one when 0 was asked for. */
LLMLINK_EXTERN llmlink_status_t llmlink_get_listen_port(llmlink_t *dd, size_t index,
                                                        uint16_t *port);

/* Counters of one engine, for monitoring and tests. Versioned: set
 * `version` to LLMLINK_STATS_VERSION before the call. */
#define LLMLINK_STATS_VERSION 1
typedef struct llmlink_stats {
    uint32_t version;
    uint32_t links;                  /* established links, both directions */
    uint32_t inbound_links;          /* links peers made to this engine */
    uint32_t outbound_links;         /* links this engine made */
    uint32_t handshakes_in_progress; /* server side, now */
    uint32_t handshakes_peak;        /* server side, highest ever */
    uint64_t handshakes_accepted;    /* connections accepted for a handshake */
    uint64_t handshakes_completed;   /* handshakes that made a link */
    uint64_t handshakes_rejected;    /* refused: limit, version, cluster id */
    uint64_t handshakes_timed_out;   /* half-open, dropped by age-out */
    uint64_t protocol_errors;        /* connections dropped for bad frames */
    uint64_t links_lost;             /* links freed because the peer died */
} llmlink_stats_t;

LLMLINK_EXTERN llmlink_status_t llmlink_get_stats(llmlink_t *dd, llmlink_stats_t *stats);

/* ------------------------------------------------------------------ */
/* Links                                                               */
/* ------------------------------------------------------------------ */

typedef struct llmlink_ip_info {
    const char *ip; /* IPv4 or IPv6 literal */
    uint16_t port;
} llmlink_ip_info_t;

typedef struct llmlink_cluster_info {
    uint64_t remote_cluster_id;
    /* Role the remote engine must have, or 0 for any. */
    llmlink_role_t remote_role;
    /* Local interfaces to use, one per NIC (may be NULL with 0). The port
     * is advisory: the connection binds to the ip with a port chosen by
     * the kernel, so equal ip:port on both sides never fails on one host. */
    const llmlink_ip_info_t *local_ip_infos;
    size_t num_local_ip_infos;
    /* Where the remote engine listens, one per NIC; tried in order. */
    const llmlink_ip_info_t *remote_ip_infos;
    size_t num_remote_ip_infos;
} llmlink_cluster_info_t;

/*
 * Links this engine (DECODER or MIX) to up to 16 clusters in parallel, all
 * within timeout_ms. Returns LLMLINK_SUCCESS when every cluster linked,
 * LLMLINK_LINK_FAILED when some did not (those that did stay linked). When
 * cluster_statuses is not NULL it receives num_clusters per-cluster statuses:
 * SUCCESS, ALREADY_LINK, PROCESSING_LINK, LINK_FAILED, TIMEOUT,
 * CLUSTER_NUM_EXCEED_LIMIT, VERSION_MISMATCH, CLUSTER_ID_MISMATCH,
 * ACCESS_DENIED (this cluster id is not in the server's
 * llmlink.AllowedClusters). ALREADY_LINK also comes from the server when it
 * holds a live link with this engine's cluster id (another process claims
 * it, or this one's old link is not yet known dead): a link whose peer sent
 * nothing within its liveness interval is dead and is replaced, so a
 * restarted decoder links at once when its old connection was closed, and
 * otherwise within llmlink.LivenessIntervalMs.
 * Bad arguments fail with PARAM_INVALID before any network traffic, more
 * than 16 clusters with CLUSTER_NUM_EXCEED_LIMIT, a PROMPT engine with
 * ROLE_NOT_ALLOWED; then every per-cluster status is that status.
 */
LLMLINK_EXTERN llmlink_status_t llmlink_link_clusters(llmlink_t *dd,
                                                      const llmlink_cluster_info_t *clusters,
                                                      size_t num_clusters, int32_t timeout_ms,
                                                      llmlink_status_t *cluster_statuses);

/*
 * Unlinks up to 16 clusters. force=false tells the peer and waits (within
 * timeout_ms) for its acknowledgement, so both ends are freed; force=true
 * frees only the local end at once (the peer notices the closed connection).
 * A DECODER unlinks the links it made; a PROMPT engine may unlink the links
 * made to it (by the decoder's cluster id). Per-cluster statuses: SUCCESS,
 * NOT_YET_LINK, PROCESSING_LINK, NOTIFY_PROMPT_UNLINK_FAILED (local end freed,
 * peer not told), UNLINK_FAILED. Overall: SUCCESS or UNLINK_FAILED.
 */
LLMLINK_EXTERN llmlink_status_t llmlink_unlink_clusters(llmlink_t *dd,
                                                        const llmlink_cluster_info_t *clusters,
                                                        size_t num_clusters, int32_t timeout_ms,
                                                        bool force,
                                                        llmlink_status_t *cluster_statuses);

/* LLMLINK_SUCCESS when a live link with remote_cluster_id exists (in either
 * direction), LLMLINK_NOT_YET_LINK otherwise. */
LLMLINK_EXTERN llmlink_status_t llmlink_check_link_status(llmlink_t *dd,
                                                          uint64_t remote_cluster_id);

/* ------------------------------------------------------------------ */
/* KV caches (llm_datadist's CacheManager)                             */
/* ------------------------------------------------------------------ */

/* Values of llm_datadist's DataType (ge::DataType). */
typedef enum llmlink_data_type {
    LLMLINK_DT_FLOAT = 0,
    LLMLINK_DT_FLOAT16 = 1,
    LLMLINK_DT_INT8 = 2,
    LLMLINK_DT_INT32 = 3,
    LLMLINK_DT_UINT8 = 4,
    LLMLINK_DT_INT16 = 6,
    LLMLINK_DT_UINT16 = 7,
    LLMLINK_DT_UINT32 = 8,
    LLMLINK_DT_INT64 = 9,
    LLMLINK_DT_UINT64 = 10,
    LLMLINK_DT_DOUBLE = 11,
    LLMLINK_DT_BOOL = 12,
    LLMLINK_DT_BF16 = 27
} llmlink_data_type_t;

/* Values of llm_datadist's Placement. Only HOST memory can be registered
 * in this version (DEVICE: LLMLINK_FEATURE_NOT_ENABLED). */
typedef enum llmlink_placement {
    LLMLINK_PLACEMENT_HOST = 0,
    LLMLINK_PLACEMENT_DEVICE = 1
} llmlink_placement_t;

#define LLMLINK_MAX_DIMS             8
#define LLMLINK_MAX_TENSORS          4096    /* per cache */
#define LLMLINK_MAX_KEYS             65536   /* CacheKeys per register/allocate call */
#define LLMLINK_MAX_BLOCKS_PER_CALL  1048576 /* entries of a block list */

/*
 * A cache: num_tensors tensors (K and V of each layer: K0 V0 K1 V1 ...),
 * each of shape shape[0..num_dims) and data_type, at one address each.
 * shape[0] is the batch size (register_cache) or the number of blocks
 * (register_blocks_cache): a tensor is shape[0] equal items, and one item
 * (one batch entry, or one block) is the unit that transfers address.
 * Every dimension is >= 1; a tensor is at most 2^48 bytes.
 */
typedef struct llmlink_cache_desc {
    uint32_t num_tensors;
    llmlink_data_type_t data_type;
    llmlink_placement_t placement;
    uint32_t num_dims;
    int64_t shape[LLMLINK_MAX_DIMS];
} llmlink_cache_desc_t;

/* The three key types of llm_datadist. */
typedef enum llmlink_cache_key_type {
    LLMLINK_KEY_CACHE = 1,        /* CacheKey(prompt_cluster_id, req_id, model_id, prefix_id) */
    LLMLINK_KEY_ID_AND_INDEX = 2, /* CacheKeyByIdAndIndex(cluster_id, cache_id, batch_index) */
    LLMLINK_KEY_BLOCKS = 3        /* BlocksCacheKey(prompt_cluster_id, model_id) */
} llmlink_cache_key_type_t;

/*
 * A key. cluster_id names the engine that holds the cache: a transfer goes
 * over the link to that cluster. The holder matches a key on its other
 * fields (req_id, model_id, prefix_id for LLMLINK_KEY_CACHE; model_id for
 * LLMLINK_KEY_BLOCKS; cache_id and batch_index for LLMLINK_KEY_ID_AND_INDEX);
 * fields a type does not use are ignored.
 */
typedef struct llmlink_cache_key {
    llmlink_cache_key_type_t type;
    uint64_t cluster_id;
    uint64_t req_id;
    uint64_t model_id;
    int64_t prefix_id;     /* -1: none */
    int64_t cache_id;
    uint32_t batch_index;
} llmlink_cache_key_t;

/*
 * Which layers a transfer moves (llm_datadist's src_layer_range,
 * dst_layer_range, tensor_num_per_layer). A layer is tensors_per_layer
 * consecutive tensors (0 means 2: K and V). Ranges are [start, end) in
 * layers; start = end = -1 means every layer of that cache. Both ranges
 * must cover the same number of layers (or both be "every layer" with equal
 * tensor counts); a cache addressed by a range needs a tensor count that is
 * a multiple of tensors_per_layer. Passing NULL for a layer range means
 * every tensor of both caches, which then have the same tensor count.
 */
typedef struct llmlink_layer_range {
    int32_t src_start, src_end;
    int32_t dst_start, dst_end;
    uint32_t tensors_per_layer;
} llmlink_layer_range_t;

/*
 * Registers caller memory as a blocks cache (PagedAttention): tensor i is
 * desc->shape[0] blocks at addrs[i]. blocks_key (LLMLINK_KEY_BLOCKS) lets
 * peers address it; it may be NULL for a cache that only receives. On
 * success *cache_id is a new id (>= 1). num_addrs must equal
 * desc->num_tensors; no address may be 0. A blocks key another cache has
 * already: LLMLINK_CACHE_KEY_ALREADY_EXIST. The memory stays the caller's;
 * it must stay valid until llmlink_unregister_cache returns.
 */
LLMLINK_EXTERN llmlink_status_t llmlink_register_blocks_cache(llmlink_t *dd,
                                                              const llmlink_cache_desc_t *desc,
                                                              const uint64_t *addrs, size_t num_addrs,
                                                              const llmlink_cache_key_t *blocks_key,
                                                              int64_t *cache_id);

/*
 * Registers caller memory as a cache of desc->shape[0] batch entries.
 * keys[i] (LLMLINK_KEY_CACHE) names batch entry i (num_keys <= shape[0]);
 * keys may be NULL with num_keys 0 (the cache is then addressed by
 * LLMLINK_KEY_ID_AND_INDEX, or only receives). A key registered twice, in
 * one call or across calls: LLMLINK_CACHE_KEY_ALREADY_EXIST.
 */
LLMLINK_EXTERN llmlink_status_t llmlink_register_cache(llmlink_t *dd,
                                                       const llmlink_cache_desc_t *desc,
                                                       const uint64_t *addrs, size_t num_addrs,
                                                       const llmlink_cache_key_t *keys,
                                                       size_t num_keys, int64_t *cache_id);

/*
 * Access control. What peers may do with a cache (this engine's own
 * transfers use its caches either way). Values are never renumbered.
 */
typedef enum llmlink_access {
    /* Not served to peers: any peer request that names it, by any key or
     * id, is answered LLMLINK_KV_CACHE_NOT_EXIST exactly as for a cache
     * that does not exist, and moves no byte (nor drops a key). */
    LLMLINK_ACCESS_NONE = 0,
    LLMLINK_ACCESS_READ = 1,      /* peers may pull from it (read this memory) */
    LLMLINK_ACCESS_WRITE = 2,     /* peers may push into it (write this memory) */
    LLMLINK_ACCESS_READ_WRITE = 3 /* both: what the calls without options register */
} llmlink_access_t;

/*
 * Options of the *_opts registration calls. Versioned: set version to
 * LLMLINK_REGISTER_OPTIONS_VERSION (or start from
 * LLMLINK_REGISTER_OPTIONS_INIT / llmlink_register_options_init, which give
 * today's defaults); a later version only appends fields, and a call checks
 * version and every field (PARAM_INVALID naming it). Passing NULL options
 * means the defaults: LLMLINK_ACCESS_READ_WRITE.
 * A peer's request in a direction the cache does not allow (a pull from a
 * cache without READ, a push into one without WRITE) is refused with
 * LLMLINK_ACCESS_DENIED before any hold, grant or byte, on every transport.
 */
#define LLMLINK_REGISTER_OPTIONS_VERSION 1
typedef struct llmlink_register_options {
    uint32_t version; /* LLMLINK_REGISTER_OPTIONS_VERSION */
    uint32_t access;  /* llmlink_access_t */
} llmlink_register_options_t;

#define LLMLINK_REGISTER_OPTIONS_INIT \
    { LLMLINK_REGISTER_OPTIONS_VERSION, LLMLINK_ACCESS_READ_WRITE }

/* Fills *opts with the defaults of `version` (LLMLINK_REGISTER_OPTIONS_VERSION).
 * PARAM_INVALID for a NULL opts or a version this library does not know. */
LLMLINK_EXTERN llmlink_status_t llmlink_register_options_init(llmlink_register_options_t *opts,
                                                              uint32_t version);

/* register_cache, register_blocks_cache, allocate_cache and
 * allocate_blocks_cache with options (NULL: as the calls without them). */
LLMLINK_EXTERN llmlink_status_t llmlink_register_cache_opts(
    llmlink_t *dd, const llmlink_cache_desc_t *desc, const uint64_t *addrs, size_t num_addrs,
    const llmlink_cache_key_t *keys, size_t num_keys, const llmlink_register_options_t *opts,
    int64_t *cache_id);
LLMLINK_EXTERN llmlink_status_t llmlink_register_blocks_cache_opts(
    llmlink_t *dd, const llmlink_cache_desc_t *desc, const uint64_t *addrs, size_t num_addrs,
    const llmlink_cache_key_t *blocks_key, const llmlink_register_options_t *opts,
    int64_t *cache_id);
LLMLINK_EXTERN llmlink_status_t llmlink_allocate_cache_opts(
    llmlink_t *dd, const llmlink_cache_desc_t *desc, const llmlink_cache_key_t *keys,
    size_t num_keys, const llmlink_register_options_t *opts, int64_t *cache_id,
    uint64_t *tensor_addrs, size_t num_tensor_addrs);
LLMLINK_EXTERN llmlink_status_t llmlink_allocate_blocks_cache_opts(
    llmlink_t *dd, const llmlink_cache_desc_t *desc, const llmlink_cache_key_t *blocks_key,
    const llmlink_register_options_t *opts, int64_t *cache_id, uint64_t *tensor_addrs,
    size_t num_tensor_addrs);

/*
 * Forgets a registered cache and its keys. A transfer that uses it is
 * waited for (up to llm.SyncKvCacheWaitTime, then LLMLINK_CACHE_IN_USE and
 * nothing changes); later requests for it get LLMLINK_KV_CACHE_NOT_EXIST.
 * When only peers' tcp requests (and RDMA grants) still hold it then, those
 * requests are cut (their links break, fenced; at most 1 s more) and it
 * succeeds.
 * A cache from llmlink_allocate_cache: PARAM_INVALID (deallocate it).
 */
LLMLINK_EXTERN llmlink_status_t llmlink_unregister_cache(llmlink_t *dd, int64_t cache_id);

/*
 * Memory the library owns (page-aligned, zeroed): as register_cache /
 * register_blocks_cache, and tensor_addrs[0..num_tensors) receives the
 * address of each tensor (num_tensor_addrs >= desc->num_tensors).
 * As in llm_datadist, an allocated cache is held by its id and by each of
 * its CacheKeys: llmlink_deallocate_cache drops the id, a successful
 * pull_cache by a CacheKey (or llmlink_remove_cache_key) drops that key,
 * and the memory is freed when nothing holds it.
 */
LLMLINK_EXTERN llmlink_status_t llmlink_allocate_cache(llmlink_t *dd,
                                                       const llmlink_cache_desc_t *desc,
                                                       const llmlink_cache_key_t *keys,
                                                       size_t num_keys, int64_t *cache_id,
                                                       uint64_t *tensor_addrs,
                                                       size_t num_tensor_addrs);
LLMLINK_EXTERN llmlink_status_t llmlink_allocate_blocks_cache(llmlink_t *dd,
                                                              const llmlink_cache_desc_t *desc,
                                                              const llmlink_cache_key_t *blocks_key,
                                                              int64_t *cache_id,
                                                              uint64_t *tensor_addrs,
                                                              size_t num_tensor_addrs);
/* Drops the id of an allocated cache. It never waits: the memory stays
 * valid until running transfers end and its keys are gone. */
LLMLINK_EXTERN llmlink_status_t llmlink_deallocate_cache(llmlink_t *dd, int64_t cache_id);
/* Removes one key (LLMLINK_KEY_CACHE or LLMLINK_KEY_BLOCKS) from the cache
 * that has it: peers can no longer address it. Unknown: KV_CACHE_NOT_EXIST. */
LLMLINK_EXTERN llmlink_status_t llmlink_remove_cache_key(llmlink_t *dd,
                                                         const llmlink_cache_key_t *key);

/*
 * Transfers. Every call blocks until the bytes have moved, within
 * llm.SyncKvCacheWaitTime. A transfer that times out returns
 * LLMLINK_WAIT_PROCESS_TIMEOUT and leaves the link unusable: later calls
 * over it get LLMLINK_NOT_YET_LINK until link_clusters links it again (as
 * llm_datadist). A peer that dies or breaks the protocol mid-transfer:
 * LLMLINK_NETWORK_ERROR / LLMLINK_PROTOCOL_ERROR, and the link is freed.
 * The side that holds the remote cache checks every request against what
 * it registered: an unknown key or id is LLMLINK_KV_CACHE_NOT_EXIST, a block
 * index past the end, a size past the item, a block size that differs
 * between the two caches are LLMLINK_PARAM_INVALID; the message (with the
 * remote side's words) is in llmlink_last_error(). Nothing outside a
 * registered region is ever read or written, and a refused request moves
 * no byte.
 *
 * pull_blocks: src_key is LLMLINK_KEY_BLOCKS with src_blocks[i] -> dst_blocks[i]
 *   (num_src_blocks == num_dst_blocks >= 1), or LLMLINK_KEY_CACHE /
 *   LLMLINK_KEY_ID_AND_INDEX with no src_blocks (NULL, 0): that batch entry,
 *   seen as consecutive blocks of the destination's block size, fills
 *   dst_blocks in order. A destination block may appear only once.
 * pull_cache: src_key is LLMLINK_KEY_CACHE or LLMLINK_KEY_ID_AND_INDEX; the
 *   entry fills batch entry batch_index of dst_cache_id; size is the bytes
 *   per tensor to move (-1: the whole entry, and both entries have the same
 *   size). A CacheKey of an allocated cache is dropped by the holder after a
 *   successful pull (LLMLINK_KV_CACHE_NOT_EXIST if pulled again).
 * push_blocks / push_cache mirror them: the local cache src_cache_id is
 *   written into the remote cache named by dst_key (LLMLINK_KEY_BLOCKS for
 *   push_blocks; LLMLINK_KEY_ID_AND_INDEX or LLMLINK_KEY_CACHE for
 *   push_cache, which writes from batch entry src_batch_index).
 * layers may be NULL (every tensor).
 * Any engine that holds a link with the key's cluster may call these, in
 * either direction of the link, from many threads at once.
 *
 * Fences. When a transfer call returns, whatever its status, no byte of it
 * lands later in this engine's memory, and the engine that holds the remote
 * cache has stopped (or will never start) writing into it for that call:
 * a call that fails breaks the link before it returns, every transport
 * stops at the break (tcp: the holder discards what it has not yet stored;
 * shm: the requester stops copying between batches of at most 64 MiB and
 * says so; rdma: the grant's memory windows die with the request, see
 * llmlink_rdma_protection_t), and a
 * push over tcp waits (at most 1 s) for the holder to confirm. The holder
 * keeps a cache held while a peer may still move bytes into or out of it,
 * so when llmlink_unregister_cache returns LLMLINK_SUCCESS no peer can
 * touch that memory any more, by any transport; a peer that was granted
 * direct access (shm) and neither finishes nor exits keeps the cache held:
 * unregister returns LLMLINK_CACHE_IN_USE until that process is gone.
 * llmlink_get_link_stats counts what each link's peer wrote.
 */
LLMLINK_EXTERN llmlink_status_t llmlink_pull_blocks(llmlink_t *dd, const llmlink_cache_key_t *src_key,
                                                    int64_t dst_cache_id, const uint64_t *src_blocks,
                                                    size_t num_src_blocks, const uint64_t *dst_blocks,
                                                    size_t num_dst_blocks,
                                                    const llmlink_layer_range_t *layers);
LLMLINK_EXTERN llmlink_status_t llmlink_pull_cache(llmlink_t *dd, const llmlink_cache_key_t *src_key,
                                                   int64_t dst_cache_id, uint32_t batch_index,
                                                   int64_t size, const llmlink_layer_range_t *layers);
LLMLINK_EXTERN llmlink_status_t llmlink_push_blocks(llmlink_t *dd, const llmlink_cache_key_t *dst_key,
                                                    int64_t src_cache_id, const uint64_t *src_blocks,
                                                    size_t num_src_blocks, const uint64_t *dst_blocks,
                                                    size_t num_dst_blocks,
                                                    const llmlink_layer_range_t *layers);
LLMLINK_EXTERN llmlink_status_t llmlink_push_cache(llmlink_t *dd, const llmlink_cache_key_t *dst_key,
                                                   int64_t src_cache_id, uint32_t src_batch_index,
                                                   int64_t size, const llmlink_layer_range_t *layers);

/* Transfer counters of one engine. Versioned like llmlink_stats_t: set
 * version to LLMLINK_XFER_STATS_VERSION (2). Version 1, the struct without
 * rdma_requests (llmlink 0.2), is still accepted: then only its fields are
 * written. */
#define LLMLINK_XFER_STATS_VERSION 2
typedef struct llmlink_xfer_stats {
    uint32_t version;
    uint32_t caches;                 /* registered or allocated now */
    uint64_t transfers;              /* pull/push calls that succeeded */
    uint64_t transfers_failed;       /* ... that failed after arguments passed */
    uint64_t transfers_timed_out;    /* ... with WAIT_PROCESS_TIMEOUT */
    uint64_t bytes_requested;        /* moved by this engine's calls (both ways) */
    uint64_t bytes_served;           /* moved for peers' requests (both ways) */
    uint64_t requests_served;        /* peer requests completed */
    uint64_t requests_refused;       /* peer requests refused (bad key, range...) */
    uint64_t tcp_requests;           /* requests this engine sent over tcp */
    uint64_t shm_requests;           /* requests this engine moved with process_vm_* */
    uint64_t shm_fallbacks;          /* shm refused by the kernel, redone over tcp */
    /* version >= 2 */
    uint64_t rdma_requests;          /* requests this engine moved with RDMA READ / WRITE */
} llmlink_xfer_stats_t;

LLMLINK_EXTERN llmlink_status_t llmlink_get_xfer_stats(llmlink_t *dd, llmlink_xfer_stats_t *stats);

/* How a link's RDMA grants are enforced by the NIC (llmlink_link_stats_t).
 * Values are never renumbered. */
typedef enum llmlink_rdma_protection {
    LLMLINK_RDMA_PROTECTION_NONE = 0,   /* the link moves no byte over RDMA */
    /* Each grant is a type-2 memory window bound to the link's QP, read-only
     * for a pull, write-only for a push, covering exactly the granted
     * blocks, invalidated when the request ends. */
    LLMLINK_RDMA_PROTECTION_WINDOW = 1,
    /* The device has no type-2 windows: the link has its own protection
     * domain, and caches are registered in it read-only for pull grants,
     * write-only for push grants and local-only for this side's own use.
     * A key covers its whole tensor and works until the link breaks or
     * the cache is unregistered. */
    LLMLINK_RDMA_PROTECTION_LINK_PD = 2,
    /* A grant's rkey covers its whole tensor for reading and writing until
     * the cache is unregistered or the link breaks: llmlink <= 0.3. This
     * version never reports it. */
    LLMLINK_RDMA_PROTECTION_REGION = 3
} llmlink_rdma_protection_t;

/* Counters of one link, as seen by this engine: what its peer's requests
 * did to this engine's memory, and (version 2) its RDMA rails. Versioned:
 * set version to LLMLINK_LINK_STATS_VERSION (2; 1 fills the fields before
 * rdma_rails only). The counters start at 0 when the link is made and go
 * with it. */
#define LLMLINK_LINK_STATS_VERSION 2
/* The most RDMA rails a link has (one per pair of local device and remote
 * address). */
#define LLMLINK_MAX_RDMA_RAILS 4
typedef struct llmlink_link_stats {
    uint32_t version;
    uint32_t rdma_protection;   /* llmlink_rdma_protection_t */
    /* Bytes the peer wrote into this engine's caches: received by tcp, or
     * granted for writing (shm, rdma: counted when granted, since the peer
     * then writes on its own). */
    uint64_t peer_write_bytes;
    uint64_t peer_read_bytes;   /* ... read from them, the same way */
    /* The peer's requests that this engine had admitted and that ended
     * unfinished (the link broke, a stall, a timeout): each was fenced. */
    uint64_t requests_fenced;
    /* version >= 2: the link's RDMA rails (all 0 on a link without RDMA). */
    uint32_t rdma_rails;        /* rails of the link, 0..LLMLINK_MAX_RDMA_RAILS */
    uint32_t rdma_rails_up;     /* of them usable now (the others failed and wait
                                   to be re-established) */
    /* Rails that failed under a transfer of this engine whose work went on
     * over the surviving rails (the call still succeeded). */
    uint64_t rdma_rail_failovers;
    /* Failed rails re-established (a fresh QP pair) without relinking. */
    uint64_t rdma_rail_repairs;
    /* Bytes this engine's requests moved over each rail (READ and WRITE
     * payload, counted when the work completed); [0, rdma_rails). */
    uint64_t rdma_rail_bytes[LLMLINK_MAX_RDMA_RAILS];
    /* Each rail's path MTU in bytes (the smaller of both ends' active MTUs,
     * capped by llmlink.RdmaMtu); [0, rdma_rails). */
    uint32_t rdma_rail_mtu[LLMLINK_MAX_RDMA_RAILS];
} llmlink_link_stats_t;

/* The counters of this engine's link with cluster `cluster_id` (either
 * direction). LLMLINK_NOT_YET_LINK when there is none or it is unusable. */
LLMLINK_EXTERN llmlink_status_t llmlink_get_link_stats(llmlink_t *dd, uint64_t cluster_id,
                                                       llmlink_link_stats_t *stats);

/* ------------------------------------------------------------------ */
/* Asynchronous transfers                                              */
/* ------------------------------------------------------------------ */

/*
 * A task is one pull or push submitted without waiting: the *_async calls
 * check their arguments exactly as the blocking calls do (a call that
 * fails moves no byte and creates no task), then return at once with a
 * task. Many tasks may be in flight per link and per engine; they run on
 * the engine's transfer workers (llmlink.AsyncWorkers) over the link's data
 * streams, and complete in any order. The blocking calls are a submit and
 * a wait on the calling thread (one code path, no thread hop).
 *
 * A task ends with a final status, the blocking call's status (SUCCESS,
 * KV_CACHE_NOT_EXIST, NETWORK_ERROR, ...), or LLMLINK_CANCELLED /
 * LLMLINK_CANCELLED_LINK_CLOSED. Its message (the blocking call's
 * llmlink_last_error) is llmlink_task_error(). Every handle must be given
 * to llmlink_task_release exactly once, before llmlink_destroy (as libgit2's
 * objects before their repository: destroy frees what a handle points to);
 * llmlink_finalize cancels the tasks still running (their handles stay valid
 * until released).
 */
typedef struct llmlink_task llmlink_task_t;

/* Called once on an engine thread when the task's status becomes final,
 * before llmlink_task_wait returns it and before the engine fd reports it.
 * It may call llmlink_task_status / llmlink_task_error on the task, and
 * may submit other tasks; it must not wait, cancel, release or finalize,
 * and should return quickly (it holds a transfer worker). */
typedef void (*llmlink_task_done_fn)(llmlink_task_t *task, llmlink_status_t status,
                                     void *user_data);

/* Options of the *_async calls. Versioned like llmlink_register_options_t:
 * set version to LLMLINK_TASK_OPTIONS_VERSION or start from
 * LLMLINK_TASK_OPTIONS_INIT / llmlink_task_options_init. NULL: defaults. */
#define LLMLINK_TASK_OPTIONS_VERSION 1
#define LLMLINK_MAX_NOTIFY_BYTES 4096
typedef struct llmlink_task_options {
    uint32_t version;          /* LLMLINK_TASK_OPTIONS_VERSION */
    /* The task's own limit in ms from submission; 0: llm.SyncKvCacheWaitTime
     * (as the blocking calls). A task past it ends WAIT_PROCESS_TIMEOUT. */
    int32_t timeout_ms;
    llmlink_task_done_fn on_done; /* NULL: none */
    void *user_data;              /* for on_done; also llmlink_task_user_data */
    /* A notification (at most LLMLINK_MAX_NOTIFY_BYTES, copied at submit)
     * sent to the link's peer once every byte of the task is in place on
     * both sides; the peer never receives it before. NULL with 0: none.
     * If the bytes moved but the peer refused the notification, the task
     * ends with that status (LLMLINK_NOTIFY_QUEUE_FULL, NOT_YET_LINK, ...)
     * and a message that says the bytes moved. */
    const void *notify_data;
    size_t notify_len;
} llmlink_task_options_t;

#define LLMLINK_TASK_OPTIONS_INIT { LLMLINK_TASK_OPTIONS_VERSION, 0, NULL, NULL, NULL, 0 }

/* Fills *opts with the defaults of `version`. PARAM_INVALID for NULL or a
 * version this library does not know. */
LLMLINK_EXTERN llmlink_status_t llmlink_task_options_init(llmlink_task_options_t *opts,
                                                          uint32_t version);

/* The blocking calls' arguments and checks; *task receives the handle
 * (NULL on failure). */
LLMLINK_EXTERN llmlink_status_t llmlink_pull_blocks_async(
    llmlink_t *dd, const llmlink_cache_key_t *src_key, int64_t dst_cache_id,
    const uint64_t *src_blocks, size_t num_src_blocks, const uint64_t *dst_blocks,
    size_t num_dst_blocks, const llmlink_layer_range_t *layers,
    const llmlink_task_options_t *opts, llmlink_task_t **task);
LLMLINK_EXTERN llmlink_status_t llmlink_pull_cache_async(
    llmlink_t *dd, const llmlink_cache_key_t *src_key, int64_t dst_cache_id,
    uint32_t batch_index, int64_t size, const llmlink_layer_range_t *layers,
    const llmlink_task_options_t *opts, llmlink_task_t **task);
LLMLINK_EXTERN llmlink_status_t llmlink_push_blocks_async(
    llmlink_t *dd, const llmlink_cache_key_t *dst_key, int64_t src_cache_id,
    const uint64_t *src_blocks, size_t num_src_blocks, const uint64_t *dst_blocks,
    size_t num_dst_blocks, const llmlink_layer_range_t *layers,
    const llmlink_task_options_t *opts, llmlink_task_t **task);
LLMLINK_EXTERN llmlink_status_t llmlink_push_cache_async(
    llmlink_t *dd, const llmlink_cache_key_t *dst_key, int64_t src_cache_id,
    uint32_t src_batch_index, int64_t size, const llmlink_layer_range_t *layers,
    const llmlink_task_options_t *opts, llmlink_task_t **task);

/* Non-blocking: the final status, or LLMLINK_TASK_PENDING. A NULL task:
 * PARAM_INVALID. A failed final status also sets this thread's
 * llmlink_last_error to the task's message. */
LLMLINK_EXTERN llmlink_status_t llmlink_task_status(llmlink_task_t *task);
/* Waits up to timeout_ms (-1: no limit; 0: as llmlink_task_status) for the
 * final status; LLMLINK_TASK_PENDING when the time ran out first (the task
 * goes on). */
LLMLINK_EXTERN llmlink_status_t llmlink_task_wait(llmlink_task_t *task, int32_t timeout_ms);
/*
 * Cancels the task and returns its final status. When it returns, no byte
 * of the task will land in either side's memory any more (pull: this
 * engine's cache; push: the peer's). A task that had not started, or that
 * the transport stopped between requests (tcp pulls, shm), ends
 * LLMLINK_CANCELLED and its link stays usable for other tasks; one that a
 * transport cannot stop alone (a tcp push with payload on the wire, RDMA
 * with work posted) ends LLMLINK_CANCELLED_LINK_CLOSED: the link was
 * closed as a failed transfer closes it (link again). A task that had
 * already finished keeps its status (cancel then changes nothing).
 * Bounded: at most the transport's fence time (tcp push: 1 s).
 */
LLMLINK_EXTERN llmlink_status_t llmlink_task_cancel(llmlink_task_t *task);
/* Frees the handle. A task still running is cancelled first (as
 * llmlink_task_cancel, so its memory may be reused at once). NULL: no-op. */
LLMLINK_EXTERN void llmlink_task_release(llmlink_task_t *task);
/* The task's message: "" while pending or after SUCCESS. Valid until the
 * task is released. Never NULL (for NULL: ""). */
LLMLINK_EXTERN const char *llmlink_task_error(llmlink_task_t *task);
/* opts->user_data of its submission (NULL for NULL). */
LLMLINK_EXTERN void *llmlink_task_user_data(llmlink_task_t *task);

/*
 * The engine's event descriptor, for epoll / poll / asyncio / Go's netpoller
 * / tokio: readable exactly while a finished task has not been collected by
 * llmlink_task_poll_done or a received notification waits in
 * llmlink_get_notifies (level-triggered; it never needs to be read). Owned
 * by the engine: do not close it; valid until llmlink_destroy.
 * ROLE_NOT_ALLOWED never; NOT_INITIALIZED before llmlink_init.
 */
LLMLINK_EXTERN llmlink_status_t llmlink_get_event_fd(llmlink_t *dd, int *fd);
/* Collects up to max finished tasks, each once, in the order they finished
 * (tasks already released are skipped); *count receives how many. The
 * handles stay owned by the caller (release them as usual). */
LLMLINK_EXTERN llmlink_status_t llmlink_task_poll_done(llmlink_t *dd, llmlink_task_t **tasks,
                                                       size_t max, size_t *count);

/*
 * Layer-wise push (llm_datadist's CacheManager.transfer_cache_async): the
 * local cache src_cache_id is pushed layer by layer to every target as
 * soon as sync(layer) says that layer is computed; the pushes of layer i
 * run while sync(i + 1) waits. sync is called on an engine thread, once per
 * layer in increasing order over the union of the targets' source ranges,
 * with timeout_ms -1; returning false ends the task: targets not finished
 * get LLMLINK_FAILED ("layer synchronizer returned false for layer i").
 * A cancel stops the pushes at once and calls sync no more, but does not
 * wait for a sync call that is running; llmlink_task_release does: once it
 * returns, sync is never called again and sync_user_data may be freed.
 * A target names the remote cache by key (LLMLINK_KEY_BLOCKS, or
 * LLMLINK_KEY_ID_AND_INDEX, or LLMLINK_KEY_CACHE) and its layer ranges
 * (start = end = -1: every layer; both ranges cover the same count).
 * Blocks caches: src_blocks[i] -> dst_blocks[i] for every target (both
 * lists NULL with 0 for a cache of batch entries). Results per target with
 * llmlink_task_results. The task's status: SUCCESS when every target
 * succeeded, else the first target failure's status.
 */
typedef bool (*llmlink_layer_sync_fn)(uint32_t layer_index, int32_t timeout_ms,
                                      void *user_data);
typedef struct llmlink_transfer_target {
    llmlink_cache_key_t dst_key;
    int32_t src_layer_start, src_layer_end;
    int32_t dst_layer_start, dst_layer_end;
    uint32_t src_batch_index; /* a cache of batch entries: the entry pushed */
} llmlink_transfer_target_t;

LLMLINK_EXTERN llmlink_status_t llmlink_transfer_cache_async(
    llmlink_t *dd, int64_t src_cache_id, llmlink_layer_sync_fn sync, void *sync_user_data,
    const llmlink_transfer_target_t *targets, size_t num_targets, const uint64_t *src_blocks,
    size_t num_src_blocks, const uint64_t *dst_blocks, size_t num_dst_blocks,
    uint32_t tensors_per_layer, const llmlink_task_options_t *opts, llmlink_task_t **task);
/* Per-target results of a transfer_cache_async task (num_results ==
 * num_targets): each target's final status, or LLMLINK_TASK_PENDING for a
 * target none of whose layers has been sent yet (llm_datadist's None).
 * Any other task: one result, its status. */
LLMLINK_EXTERN llmlink_status_t llmlink_task_results(llmlink_task_t *task,
                                                     llmlink_status_t *results,
                                                     size_t num_results);

/* ------------------------------------------------------------------ */
/* Notifications                                                       */
/* ------------------------------------------------------------------ */

/*
 * Small messages between linked engines ("request R's blocks were read:
 * free them"). Ordered per link; each engine keeps at most
 * llmlink.NotifyQueueDepth received and not yet fetched (all links
 * together). llmlink_notify sends one (1..LLMLINK_MAX_NOTIFY_BYTES bytes)
 * over the link with cluster_id and waits, up to timeout_ms, for the peer
 * to queue it: SUCCESS, LLMLINK_NOTIFY_QUEUE_FULL (the peer's queue is
 * full; nothing queued, try later), NOT_YET_LINK (no usable link, or it
 * died before the answer), TIMEOUT.
 */
LLMLINK_EXTERN llmlink_status_t llmlink_notify(llmlink_t *dd, uint64_t cluster_id,
                                               const void *data, size_t len,
                                               int32_t timeout_ms);

typedef struct llmlink_notification {
    uint64_t cluster_id; /* the sender */
    uint32_t len;
    uint8_t data[LLMLINK_MAX_NOTIFY_BYTES];
} llmlink_notification_t;

/* Takes up to max received notifications, oldest first (per link in the
 * order sent); *count receives how many (0 when none: SUCCESS). */
LLMLINK_EXTERN llmlink_status_t llmlink_get_notifies(llmlink_t *dd,
                                                     llmlink_notification_t *out,
                                                     size_t max, size_t *count);

/* ------------------------------------------------------------------ */
/* Metrics                                                             */
/* ------------------------------------------------------------------ */

/*
 * Counters an operator can chart (docs/metrics.md says what each means and
 * what to do when it moves). llmlink_get_metrics fills one snapshot of an
 * engine; llmlink_get_links one element per live link.
 *
 * Growth. The arrays below are indexed by the enums that follow; an enum
 * value is never renumbered, and each array is sized with room to spare
 * (LLMLINK_METRICS_MAX_*), so a later version adds values within that room
 * and appends fields after the last one, without moving any. Elements past
 * an enum's last value stay 0. llmlink_metrics_label names every value
 * (the label text docs/metrics.md and the Prometheus renderings use).
 *
 * Counters only grow (from 0 at llmlink_create) except the gauges marked
 * "now". Transfers are counted on the calling thread with relaxed atomic
 * additions (no lock on the transfer path), so one snapshot may see a
 * transfer's count and not yet its bytes; each counter is exact once the
 * calls have returned.
 */

/* Which way a transfer moved the bytes. */
typedef enum llmlink_metrics_dir {
    LLMLINK_METRICS_PULL = 0, /* remote cache -> this engine's (pull_*) */
    LLMLINK_METRICS_PUSH = 1  /* this engine's cache -> remote (push_*, transfer_cache_async) */
} llmlink_metrics_dir_t;
#define LLMLINK_METRICS_MAX_DIRS 2

/* The transport a transfer, or a link, moves its bytes with. A transfer
 * whose requests went over more than one (an shm request redone over tcp)
 * counts under the one that carried most of its requests (on a tie the
 * preferred: shm, rdma, tcp); NONE: no request was sent (it failed or was
 * cancelled before, e.g. no stream came free). */
typedef enum llmlink_metrics_transport {
    LLMLINK_METRICS_TRANSPORT_NONE = 0,
    LLMLINK_METRICS_TRANSPORT_TCP = 1,
    LLMLINK_METRICS_TRANSPORT_SHM = 2,
    LLMLINK_METRICS_TRANSPORT_RDMA = 3
} llmlink_metrics_transport_t;
#define LLMLINK_METRICS_MAX_TRANSPORTS 8

/* A transfer's final status, by class. */
typedef enum llmlink_metrics_result {
    LLMLINK_METRICS_SUCCESS = 0,
    /* the peer refused it (unknown key, range, access, cache in use...): no
     * byte moved, the link stays usable */
    LLMLINK_METRICS_REFUSED = 1,
    /* it failed on the wire (network, protocol, the link broke): the link
     * was closed */
    LLMLINK_METRICS_FAILED = 2,
    LLMLINK_METRICS_TIMED_OUT = 3, /* WAIT_PROCESS_TIMEOUT (the link was closed) */
    LLMLINK_METRICS_CANCELLED = 4  /* CANCELLED or CANCELLED_LINK_CLOSED */
} llmlink_metrics_result_t;
#define LLMLINK_METRICS_MAX_RESULTS 8

/* Which end made a link. */
typedef enum llmlink_link_direction {
    LLMLINK_LINK_OUTBOUND = 0, /* this engine linked to the peer (link_clusters) */
    LLMLINK_LINK_INBOUND = 1   /* the peer linked to this engine */
} llmlink_link_direction_t;
#define LLMLINK_METRICS_MAX_LINK_DIRS 2

/* Why a link ended. */
typedef enum llmlink_close_reason {
    LLMLINK_CLOSE_OTHER = 0,
    LLMLINK_CLOSE_UNLINKED = 1,         /* llmlink_unlink_clusters on this engine */
    LLMLINK_CLOSE_UNLINKED_BY_PEER = 2, /* the peer unlinked */
    LLMLINK_CLOSE_LIVENESS = 3,         /* nothing heard within llmlink.LivenessIntervalMs */
    LLMLINK_CLOSE_PEER_CLOSED = 4,      /* the connection ended (EOF, reset, socket error) */
    LLMLINK_CLOSE_TRANSFER_FAILED = 5,  /* a transfer failed or timed out on it */
    LLMLINK_CLOSE_FINALIZE = 6,         /* llmlink_finalize / destroy on this engine */
    LLMLINK_CLOSE_PROTOCOL_ERROR = 7,   /* the peer sent a bad frame */
    LLMLINK_CLOSE_REPLACED = 8          /* the peer's cluster linked again, from a new connection */
} llmlink_close_reason_t;

/* Why a handshake (server side) or a link attempt (client side) failed. */
typedef enum llmlink_refuse_reason {
    LLMLINK_REFUSE_OTHER = 0,
    LLMLINK_REFUSE_AUTH = 1,       /* AUTH_FAILED: key (or certificate) */
    LLMLINK_REFUSE_ACCESS = 2,     /* ACCESS_DENIED (llmlink.AllowedClusters), ROLE_NOT_ALLOWED */
    LLMLINK_REFUSE_VERSION = 3,    /* VERSION_MISMATCH */
    LLMLINK_REFUSE_CLUSTER_ID = 4, /* CLUSTER_ID_MISMATCH, ALREADY_LINK */
    LLMLINK_REFUSE_LIMITS = 5,     /* CLUSTER_NUM_EXCEED_LIMIT (llmlink.MaxLinks...) */
    LLMLINK_REFUSE_PROTOCOL = 6,   /* PROTOCOL_ERROR: a malformed or unexpected frame */
    /* client: LINK_FAILED: no connection (nothing listens, unreachable), or
     * the data streams could not attach (a transport the ends cannot agree on
     * included) */
    LLMLINK_REFUSE_CONNECT = 7,
    LLMLINK_REFUSE_TIMEOUT = 8,    /* client: TIMEOUT */
    /* server: a data stream refused because the two ends' llmlink.Transport
     * cannot agree (one forces a transport the link cannot use) */
    LLMLINK_REFUSE_TRANSPORT = 9
} llmlink_refuse_reason_t;
#define LLMLINK_METRICS_MAX_REASONS 16

/* Transfer durations: bucket i (0 <= i < LLMLINK_METRICS_BUCKETS) counts the
 * transfers that took more than bound(i - 1) and at most bound(i) seconds,
 * bound(i) = 8e-6 * 2^i (8 us ... 67.1 s; bound(-1) = 0); a transfer over
 * the last bound is only in latency_count. Buckets are NOT cumulative
 * (Prometheus' le buckets are their running sums). */
#define LLMLINK_METRICS_BUCKETS 24
/* bound(i) in seconds; +infinity for i >= LLMLINK_METRICS_BUCKETS. */
LLMLINK_EXTERN double llmlink_metrics_bucket_bound_seconds(size_t i);

/* What kind of value llmlink_metrics_label names. */
typedef enum llmlink_metrics_label_kind {
    LLMLINK_LABEL_DIR = 0,          /* llmlink_metrics_dir_t: "pull", "push" */
    LLMLINK_LABEL_TRANSPORT = 1,    /* llmlink_metrics_transport_t: "none", "tcp", "shm", "rdma" */
    LLMLINK_LABEL_RESULT = 2,       /* llmlink_metrics_result_t: "success", "refused", ... */
    LLMLINK_LABEL_LINK_DIR = 3,     /* llmlink_link_direction_t: "outbound", "inbound" */
    LLMLINK_LABEL_CLOSE_REASON = 4, /* llmlink_close_reason_t: "other", "unlinked", ... */
    LLMLINK_LABEL_REFUSE_REASON = 5 /* llmlink_refuse_reason_t: "other", "auth", ... */
} llmlink_metrics_label_kind_t;
/* The label text of one enum value (lower case, [a-z_]), static storage;
 * NULL for an unknown kind or a value the enum does not have (yet). */
LLMLINK_EXTERN const char *llmlink_metrics_label(llmlink_metrics_label_kind_t kind,
                                                 uint32_t value);

#define LLMLINK_METRICS_VERSION 1
typedef struct llmlink_metrics {
    uint32_t version;    /* set to LLMLINK_METRICS_VERSION before the call */
    uint32_t links_up;   /* now: established links, both directions */
    /* Links made, by llmlink_link_direction_t, and ended, by
     * llmlink_close_reason_t (whichever end made them). */
    uint64_t links_established[LLMLINK_METRICS_MAX_LINK_DIRS];
    uint64_t links_closed[LLMLINK_METRICS_MAX_REASONS];
    /* Server side (inbound): handshakes that made a link; refused, by
     * llmlink_refuse_reason_t (a REJECT sent, or the client walked away
     * from this engine's authentication); timed out (half-open, first
     * frame or handshake deadline passed). Data streams' ATTACH refusals
     * count under refused too. */
    uint64_t handshakes_ok;
    uint64_t handshakes_refused[LLMLINK_METRICS_MAX_REASONS];
    uint64_t handshakes_timed_out;
    /* Client side: clusters of llmlink_link_clusters calls that did not
     * link (ALREADY_LINK is no failure), by llmlink_refuse_reason_t. */
    uint64_t link_failures[LLMLINK_METRICS_MAX_REASONS];
    /* This engine's transfer calls (blocking or task) that reached a link:
     * by llmlink_metrics_dir_t, llmlink_metrics_transport_t and
     * llmlink_metrics_result_t. Calls refused by argument checks, or for
     * want of a link (NOT_YET_LINK), are not counted. */
    uint64_t transfers[LLMLINK_METRICS_MAX_DIRS][LLMLINK_METRICS_MAX_TRANSPORTS]
                      [LLMLINK_METRICS_MAX_RESULTS];
    /* Payload bytes of the successful ones (dir x transport). */
    uint64_t bytes[LLMLINK_METRICS_MAX_DIRS][LLMLINK_METRICS_MAX_TRANSPORTS];
    /* Durations of every counted transfer (any result), per direction:
     * see LLMLINK_METRICS_BUCKETS. count = the transfers counted above in
     * that direction; sum in nanoseconds. */
    uint64_t latency_buckets[LLMLINK_METRICS_MAX_DIRS][LLMLINK_METRICS_BUCKETS];
    uint64_t latency_count[LLMLINK_METRICS_MAX_DIRS];
    uint64_t latency_sum_ns[LLMLINK_METRICS_MAX_DIRS];
    /* Peers' requests this engine served (completed) and refused. */
    uint64_t requests_served;
    uint64_t requests_refused;
    /* Asynchronous tasks and notifications: tasks submitted; tasks that
     * ended CANCELLED or CANCELLED_LINK_CLOSED; notifications this engine
     * sent that the peer queued, received and queued here, and refused
     * because a queue was full (either side's count of it). */
    uint64_t tasks_submitted;
    uint64_t tasks_cancelled;
    uint64_t notifies_sent;
    uint64_t notifies_received;
    uint64_t notifies_refused_full;
    uint64_t protocol_errors; /* connections dropped for bad frames (llmlink_stats_t's) */
} llmlink_metrics_t;

/* A snapshot of this engine's metrics. Works on a finalized engine too
 * (counters can be read after shutdown; links_up is then 0). */
LLMLINK_EXTERN llmlink_status_t llmlink_get_metrics(llmlink_t *dd, llmlink_metrics_t *metrics);

/* One live link, as llmlink_get_links reports it. */
#define LLMLINK_LINK_INFO_VERSION 1
typedef struct llmlink_link_info {
    uint32_t version;         /* see llmlink_get_links */
    uint32_t direction;       /* llmlink_link_direction_t */
    uint64_t cluster_id;      /* the peer's */
    uint32_t transport;       /* llmlink_metrics_transport_t the link moves bytes with now */
    uint32_t streams;         /* data streams this engine requests on, attached now */
    int64_t up_since_ms;      /* when it was made: Unix time, milliseconds (CLOCK_REALTIME) */
    /* This engine's transfer calls over the link: payload bytes of the
     * successful pulls and pushes, and calls by outcome (success / any
     * other counted result, as in llmlink_metrics_t.transfers). */
    uint64_t bytes_pulled;
    uint64_t bytes_pushed;
    uint64_t transfers_ok;
    uint64_t transfers_failed;
    /* llmlink_link_stats_t's fields: what the peer's requests did here. */
    uint32_t rdma_protection; /* llmlink_rdma_protection_t */
    uint32_t reserved;        /* 0 */
    uint64_t peer_write_bytes;
    uint64_t peer_read_bytes;
    uint64_t requests_fenced;
    char peer[72];            /* the peer's address, "ip:port" or "[ip6]:port" */
} llmlink_link_info_t;

/* The engine's live links (LINKED, with their data streams: those a
 * transfer may use), outbound first, each direction in cluster id order.
 * Set out[0].version to LLMLINK_LINK_INFO_VERSION (it sets the stride of
 * out[] for every element; max 0 lets out be NULL). Fills up to max
 * elements; *count receives the number of live links, which may exceed
 * max (call again with a larger array). */
LLMLINK_EXTERN llmlink_status_t llmlink_get_links(llmlink_t *dd, llmlink_link_info_t *out,
                                                  size_t max, size_t *count);

#ifdef __cplusplus
}
#endif

#endif /* LLMLINK_H */

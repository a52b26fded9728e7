/*
 * wire.h - the control-plane protocol: framing and message codecs.
 *
 * Every frame is a 16-byte header followed by `length` payload bytes, all
 * integers big-endian:
 *
 *   offset size field
 *   0      4    magic    "LLMK" (0x4C4C4D4B)
 *   4      2    version  LLK_WIRE_VERSION
 *   6      2    type     llk_msg_type_t
 *   8      4    length   payload bytes, <= LLK_WIRE_MAX_PAYLOAD
 *   12     4    flags    must be 0 in version 1
 *
 * magic, version and length keep their place in every future version, so a
 * peer can always tell "another version" from "garbage" and answer with a
 * REJECT that the other side can read.
 *
 * Payloads (version 1):
 *   HELLO     u64 client_cluster_id, u64 target_cluster_id, u32 client_role,
 *             u32 expected_server_role (0 = any), u64 incarnation,
 *             u32 liveness_ms, extensions
 *   WELCOME   u64 server_cluster_id, u32 server_role, u32 liveness_ms,
 *             u64 incarnation, extensions
 *   REJECT    u32 status, u16 message length, message bytes (printable ASCII)
 *   HEARTBEAT (empty)
 *   UNLINK    u32 reserved (0)
 *   UNLINK_ACK (empty)
 *   ATTACH    u64 client_cluster_id, u64 server_cluster_id,
 *             u64 client_incarnation, u64 server_incarnation,
 *             u16 stream_index, u8 direction (0 forward: the client
 *             requests; 1 reverse: the server requests), u8 transport
 *             (the client's llmlink.Transport), host id (16 bytes boot id,
 *             u64 pid namespace, u32 pid). The first frame of a data stream:
 *             a new connection to the listener that joins an existing link
 *             (xfer.h) instead of making one.
 *             Then, optionally, extensions (below): an ATTACH of a link
 *             made with a key (llmlink.AuthKey/AuthKeyFile) carries
 *             LLK_EXT_ATTACH_MAC; one of a link without a key carries none
 *             and is the 64 bytes above exactly, as in llmlink 0.3.
 *   ATTACH_OK u8 transport (the server's), 3 zero bytes, host id
 *   AUTH_HELLO     u8 scheme (LLK_AUTH_SCHEME_PSK1), 32 bytes client nonce Nc
 *   AUTH_CHALLENGE 32 bytes server nonce Ns, 32 bytes MAC_s
 *   AUTH_PROOF     32 bytes MAC_c
 *   NOTIFY     u64 seq, u32 len (1..LLK_NOTIFY_MAX_DATA), len data bytes:
 *              a notification (llmlink_notify) on a LINKED control
 *              connection, sent only to a peer that announced
 *              LLK_EXT_NOTIFY. seq is the sender's, increasing per
 *              connection; the frame's payload is exactly 12 + len bytes.
 *              The only frame allowed above LLK_WIRE_MAX_PAYLOAD (up to
 *              LLK_WIRE_MAX_NOTIFY_PAYLOAD): a 4096-byte notification plus
 *              its 12 bytes of head must fit in one frame, and no other
 *              message needs more, so the limit grows for this type alone.
 *   NOTIFY_ACK u64 seq (of a NOTIFY this side received), u32 status
 *              (LLMLINK_SUCCESS: queued; LLMLINK_NOTIFY_QUEUE_FULL: the
 *              receiver's queue was full, nothing queued). A NOTIFY
 *              outside LINKED/UNLINKING, a malformed one, or an ACK for a
 *              seq with no NOTIFY waiting breaks the link (PROTOCOL_ERROR).
 *
 * Authentication (link/auth.h; docs/security.md). When the client has a
 * key, every connection it opens (control and data streams) starts with
 * AUTH_HELLO; the server answers AUTH_CHALLENGE, whose MAC_s proves it
 * holds the key, and the client sends AUTH_PROOF (MAC_c) and only then
 * HELLO or ATTACH (in the same write). The server reads nothing else
 * before MAC_c checked, and sends nothing about itself before; the client
 * sends nothing about itself before MAC_s checked:
 *   K     = HKDF-SHA-256(key, salt "llmlink auth v1", info "mac")
 *   MAC_s = HMAC-SHA-256(K, "llmlink server v1" | Nc | Ns)
 *   MAC_c = HMAC-SHA-256(K, "llmlink client v1" | Nc | Ns)
 * Distinct labels stop reflecting one side's MAC back at it; a fresh Ns
 * per connection stops replay. A keyed server refuses any other first
 * frame, a server without a key refuses AUTH_HELLO, both with REJECT
 * LLMLINK_AUTH_FAILED. A client whose check of MAC_s fails sends a REJECT
 * AUTH_FAILED to the server (so that it can count and log the failure)
 * and closes. The control connection's Nc|Ns give the link's session key
 *   Ks    = HKDF-SHA-256(key, salt Nc | Ns, info "llmlink session v1")
 * and each data stream's ATTACH proves it belongs to that link:
 *   MAC_a = HMAC-SHA-256(Ks, "llmlink attach v1" | Nc' | Ns' | ATTACH[0..64))
 * with the stream connection's own nonces Nc', Ns' and the 64 fixed bytes
 * of the ATTACH payload (ids, incarnations, stream index, direction, ...).
 *
 * extensions: u16 count, then per extension u16 type, u16 length, bytes.
 * They carry transport parameters and authentication in later versions.
 * Defined: LLK_EXT_DATA_STREAMS (WELCOME, empty), LLK_EXT_RDMA (HELLO /
 * WELCOME, empty), LLK_EXT_WAIT_TIME (HELLO / WELCOME, u32 ms),
 * LLK_EXT_RDMA_READ_DEPTH (HELLO / WELCOME, empty), LLK_EXT_STREAM_COUNT
 * (HELLO, u16), LLK_EXT_ATTACH_MAC (ATTACH, 32 bytes), LLK_EXT_NOTIFY
 * (HELLO / WELCOME, empty), below.
 * An extension whose type has bit 15 set is critical: a receiver that does
 * not know it must refuse the handshake; others are skipped.
 *
 * The decoders validate every field before it is used and never read past
 * the given buffer. They return 0 on success and -1 on malformed input,
 * with a reason in *why (a static string).
 */
#ifndef LLK_WIRE_H
#define LLK_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LLK_WIRE_MAGIC        0x4C4C4D4Bu
#define LLK_WIRE_VERSION      1u
#define LLK_WIRE_HEADER_SIZE  16u
#define LLK_WIRE_MAX_PAYLOAD  4096u
#define LLK_WIRE_MAX_FRAME    (LLK_WIRE_HEADER_SIZE + LLK_WIRE_MAX_PAYLOAD)
#define LLK_WIRE_MAX_REJECT_MSG 256u
#define LLK_WIRE_MAX_EXTENSIONS 32u
#define LLK_WIRE_EXT_CRITICAL 0x8000u
/* Bounds of a liveness interval, on the wire and in llmlink.LivenessIntervalMs. */
#define LLK_LIVENESS_MIN_MS   30u
#define LLK_LIVENESS_MAX_MS   600000u
/* A link's liveness interval is the smaller of both ends' (HELLO /
 * WELCOME liveness_ms) and each end sends a heartbeat every third of it
 * when it has sent nothing else. So that a peer cannot make us send
 * hundreds a second (30 ms would be 100 a second per link), heartbeats go
 * no closer together than this, unless this side's own
 * llmlink.LivenessIntervalMs asks for more (then its third): a peer whose
 * interval is below this floor is not served in time and drops the link
 * itself. */
#define LLK_HEARTBEAT_MIN_GAP_MS 100u

typedef enum llk_msg_type {
    LLK_MSG_HELLO = 1,
    LLK_MSG_WELCOME = 2,
    LLK_MSG_REJECT = 3,
    LLK_MSG_HEARTBEAT = 4,
    LLK_MSG_UNLINK = 5,
    LLK_MSG_UNLINK_ACK = 6,
    LLK_MSG_ATTACH = 7,
    LLK_MSG_ATTACH_OK = 8,
    /* 9..12: authentication (12 reserved) */
    LLK_MSG_AUTH_HELLO = 9,
    LLK_MSG_AUTH_CHALLENGE = 10,
    LLK_MSG_AUTH_PROOF = 11,
    /* 13, 14: notifications (llmlink_notify) */
    LLK_MSG_NOTIFY = 13,
    LLK_MSG_NOTIFY_ACK = 14
} llk_msg_type_t;
#define LLK_MSG_LAST LLK_MSG_NOTIFY_ACK
#define LLK_MSG_RESERVED_12 12

/* NOTIFY: the data bound (LLMLINK_MAX_NOTIFY_BYTES), the fixed head
 * (seq, len), the largest payload and frame; NOTIFY_ACK's payload. The
 * receive buffer of a connection holds the largest frame of any type. */
#define LLK_NOTIFY_MAX_DATA 4096u
#define LLK_NOTIFY_HEAD 12u
#define LLK_WIRE_MAX_NOTIFY_PAYLOAD (LLK_NOTIFY_HEAD + LLK_NOTIFY_MAX_DATA)
#define LLK_WIRE_MAX_NOTIFY_FRAME (LLK_WIRE_HEADER_SIZE + LLK_WIRE_MAX_NOTIFY_PAYLOAD)
#define LLK_WIRE_MAX_RX_FRAME LLK_WIRE_MAX_NOTIFY_FRAME
#define LLK_NOTIFY_ACK_PAYLOAD 12u

#define LLK_WIRE_HOST_ID_SIZE 28u

/* WELCOME extension (not critical, empty): the server accepts data streams
 * (ATTACH). A client links to a server without it, but moves no data. */
#define LLK_EXT_DATA_STREAMS 0x0001u
/* HELLO / WELCOME extension (not critical, empty): this side can move data
 * over RDMA (a usable device, llmlink.Transport auto or rdma). The server
 * sends it only to a client that sent it; when both did, the client sets
 * up the rails over its first data stream (XRDMA_SETUP, xfer_wire.h). */
#define LLK_EXT_RDMA 0x0002u
/* HELLO / WELCOME extension (not critical, 4 bytes: u32 milliseconds): the
 * sender's llm.SyncKvCacheWaitTime. Both ends bound a request on the link
 * by the smaller of the two (llk_xlink_wait_ms, xfer.h), so that an owner
 * does not give up on a request (and drop its hold) while the requester
 * still works on it, nor the other way round. Valid values are those of
 * the option, LLK_WAIT_TIME_MIN_MS..LLK_WAIT_TIME_MAX_MS; a bad length or
 * value is ignored (logged): the receiver then uses its own. Both sides
 * always send it; an older peer skips it. */
#define LLK_EXT_WAIT_TIME 0x0003u
#define LLK_WAIT_TIME_MIN_MS 1u
#define LLK_WAIT_TIME_MAX_MS 2147483647u /* INT32_MAX, as the option */
/* HELLO / WELCOME extension (not critical, empty): this side's RDMA rail
 * records (XRDMA_SETUP / XRDMA_SETUP_OK, transport/rdma_wire.h) may carry
 * its outstanding-READ depths in their byte after the mtu, and it reads
 * them in the peer's. A side fills that byte only when the peer sent this
 * extension: an llmlink 0.3 peer, which does not know it, refuses a rail
 * record whose byte is not 0 ("reserved byte set"), so RDMA with it keeps
 * working. Sent with LLK_EXT_RDMA (the server only to a client that sent
 * both); a byte of 0 still means "not advertised". A length other than 0
 * is ignored (an extension of a later version may carry more). */
#define LLK_EXT_RDMA_READ_DEPTH 0x0004u
/* HELLO extension (not critical, 2 bytes: u16): the number of data streams
 * the client will attach, both directions together (2 x its
 * llmlink.StreamsPerLink: half forward, half reverse), even and within
 * LLK_STREAM_COUNT_MIN..LLK_STREAM_COUNT_MAX. The server records it and
 * refuses (REJECT PROTOCOL_ERROR) an ATTACH whose stream index is at or
 * beyond half of it; a malformed one refuses the HELLO. A client that does
 * not send it (llmlink 0.3 and older) keeps the old cap: LLK_MAX_STREAMS
 * per direction. */
#define LLK_EXT_STREAM_COUNT 0x0005u
#define LLK_STREAM_COUNT_MIN 2u
#define LLK_STREAM_COUNT_MAX 16u /* 2 x LLK_MAX_STREAMS (xfer/planner.h) */

/* ATTACH extension (critical: a server that cannot check it must refuse
 * the stream; 32 bytes): MAC_a, above. 0x0007 stays reserved for
 * authentication. */
#define LLK_EXT_ATTACH_MAC (LLK_WIRE_EXT_CRITICAL | 0x0006u)

/* HELLO / WELCOME extension (not critical, empty): this side receives
 * NOTIFY and answers NOTIFY_ACK. A side sends NOTIFY only to a peer that
 * announced it: an older llmlink drops a link on a type it does not know
 * (LLK_HDR_BAD_TYPE), so llmlink_notify to it fails FEATURE_NOT_ENABLED
 * and the link stays up. The server announces it only to a client that
 * did. A length other than 0 is ignored (later versions may add). */
#define LLK_EXT_NOTIFY 0x0008u

/* HELLO / WELCOME extension (not critical, empty): this side pairs RDMA
 * rails by the data (XRDMA_PROBE / XRDMA_PROBE_OK before XRDMA_SETUP: each
 * side's RDMA addresses, subnets and MTUs, paired by the same rule on both
 * ends) and repairs a failed rail without relinking (XRDMA_RAIL_RESET /
 * XRDMA_RAIL_RESET_OK: a fresh QP pair for one rail). Sent with
 * LLK_EXT_RDMA (the server only to a client that sent both); towards a
 * peer without it, rails pair by position as before and a failed rail
 * stays down until the link is made again. A length other than 0 is
 * ignored. */
#define LLK_EXT_RDMA_RAILS 0x0009u

/* Authentication payloads. */
#define LLK_AUTH_SCHEME_PSK1 1u
#define LLK_AUTH_NONCE_SIZE 32u
#define LLK_AUTH_MAC_SIZE 32u
/* The fixed part of an ATTACH payload (what MAC_a covers). */
#define LLK_WIRE_ATTACH_FIXED 64u

typedef struct llk_msg_attach {
    uint64_t client_cluster_id;
    uint64_t server_cluster_id;
    uint64_t client_incarnation;
    uint64_t server_incarnation;
    uint16_t stream_index;
    uint8_t direction;
    uint8_t transport;
    uint8_t boot_id[16];
    uint64_t pidns;
    uint32_t pid;
    /* LLK_EXT_ATTACH_MAC: sent when has_mac; decoded into mac/has_mac. */
    bool has_mac;
    uint8_t mac[LLK_AUTH_MAC_SIZE];
} llk_msg_attach_t;

typedef struct llk_msg_auth_hello {
    uint8_t scheme;
    uint8_t nc[LLK_AUTH_NONCE_SIZE];
} llk_msg_auth_hello_t;

typedef struct llk_msg_auth_challenge {
    uint8_t ns[LLK_AUTH_NONCE_SIZE];
    uint8_t mac[LLK_AUTH_MAC_SIZE];
} llk_msg_auth_challenge_t;

typedef struct llk_msg_attach_ok {
    uint8_t transport;
    uint8_t boot_id[16];
    uint64_t pidns;
    uint32_t pid;
} llk_msg_attach_ok_t;

typedef struct llk_frame_header {
    uint32_t magic;
    uint16_t version;
    uint16_t type;
    uint32_t length;
    uint32_t flags;
} llk_frame_header_t;

/* Result of llk_wire_check_header. */
typedef enum llk_header_check {
    LLK_HDR_OK = 0,
    LLK_HDR_BAD_MAGIC,     /* not our protocol: drop the connection */
    LLK_HDR_BAD_VERSION,   /* our protocol, another version: REJECT then drop */
    LLK_HDR_TOO_LARGE,     /* length > LLK_WIRE_MAX_PAYLOAD */
    LLK_HDR_BAD_TYPE,      /* unknown message type */
    LLK_HDR_BAD_FLAGS      /* reserved flags set */
} llk_header_check_t;

typedef struct llk_ext {
    uint16_t type;
    uint16_t length;
    const uint8_t *data; /* points into the decoded buffer */
} llk_ext_t;

typedef struct llk_msg_hello {
    uint64_t client_cluster_id;
    uint64_t target_cluster_id;
    uint32_t client_role;
    uint32_t expected_server_role;
    uint64_t incarnation;
    uint32_t liveness_ms;
    uint16_t num_ext;
    llk_ext_t ext[LLK_WIRE_MAX_EXTENSIONS];
} llk_msg_hello_t;

typedef struct llk_msg_welcome {
    uint64_t server_cluster_id;
    uint32_t server_role;
    uint32_t liveness_ms;
    uint64_t incarnation;
    uint16_t num_ext;
    llk_ext_t ext[LLK_WIRE_MAX_EXTENSIONS];
} llk_msg_welcome_t;

typedef struct llk_msg_reject {
    uint32_t status;
    char message[LLK_WIRE_MAX_REJECT_MSG + 1]; /* NUL-terminated */
} llk_msg_reject_t;

/* Decodes the 16 header bytes at buf (no validation). */
void llk_wire_read_header(const uint8_t buf[LLK_WIRE_HEADER_SIZE], llk_frame_header_t *h);
/* Validates a decoded header. */
llk_header_check_t llk_wire_check_header(const llk_frame_header_t *h);
const char *llk_wire_header_check_str(llk_header_check_t c);

/* Encoders write a whole frame (header + payload) into out (capacity cap)
 * and return its size, or 0 if it does not fit. `version` is written as
 * given so tests can speak other versions; the library passes
 * LLK_WIRE_VERSION. */
size_t llk_wire_encode_hello(uint8_t *out, size_t cap, uint16_t version, const llk_msg_hello_t *m);
size_t llk_wire_encode_welcome(uint8_t *out, size_t cap, uint16_t version, const llk_msg_welcome_t *m);
/* message may be NULL; it is truncated to LLK_WIRE_MAX_REJECT_MSG bytes. */
size_t llk_wire_encode_reject(uint8_t *out, size_t cap, uint16_t version, uint32_t status,
                              const char *message);
/* HEARTBEAT, UNLINK, UNLINK_ACK. */
size_t llk_wire_encode_simple(uint8_t *out, size_t cap, uint16_t version, llk_msg_type_t type);

size_t llk_wire_encode_attach(uint8_t *out, size_t cap, uint16_t version, const llk_msg_attach_t *m);
size_t llk_wire_encode_attach_ok(uint8_t *out, size_t cap, uint16_t version,
                                 const llk_msg_attach_ok_t *m);
/* direction must be 0 or 1, transport a llk_transport_t value; after the
 * fixed part, extensions are optional: an unknown critical one, or an
 * LLK_EXT_ATTACH_MAC not 32 bytes long, is malformed. */
int llk_wire_decode_attach(const uint8_t *payload, size_t len, llk_msg_attach_t *m, const char **why);
int llk_wire_decode_attach_ok(const uint8_t *payload, size_t len, llk_msg_attach_ok_t *m,
                              const char **why);

/* Authentication frames (the scheme is any byte here: the server checks
 * it, to answer an unknown one with a clear REJECT). */
size_t llk_wire_encode_auth_hello(uint8_t *out, size_t cap, uint16_t version,
                                  const llk_msg_auth_hello_t *m);
size_t llk_wire_encode_auth_challenge(uint8_t *out, size_t cap, uint16_t version,
                                      const llk_msg_auth_challenge_t *m);
size_t llk_wire_encode_auth_proof(uint8_t *out, size_t cap, uint16_t version,
                                  const uint8_t mac[LLK_AUTH_MAC_SIZE]);
int llk_wire_decode_auth_hello(const uint8_t *payload, size_t len, llk_msg_auth_hello_t *m,
                               const char **why);
int llk_wire_decode_auth_challenge(const uint8_t *payload, size_t len,
                                   llk_msg_auth_challenge_t *m, const char **why);
int llk_wire_decode_auth_proof(const uint8_t *payload, size_t len,
                               uint8_t mac[LLK_AUTH_MAC_SIZE], const char **why);

/* Payload decoders: payload/len is what follows a header that passed
 * llk_wire_check_header. */
int llk_wire_decode_hello(const uint8_t *payload, size_t len, llk_msg_hello_t *m, const char **why);
int llk_wire_decode_welcome(const uint8_t *payload, size_t len, llk_msg_welcome_t *m, const char **why);
int llk_wire_decode_reject(const uint8_t *payload, size_t len, llk_msg_reject_t *m, const char **why);
/* HEARTBEAT / UNLINK_ACK must be empty, UNLINK exactly 4 zero bytes. */
int llk_wire_decode_simple(llk_msg_type_t type, const uint8_t *payload, size_t len, const char **why);

/* Notifications. NOTIFY: data (1..LLK_NOTIFY_MAX_DATA bytes) is copied
 * into the frame; 0 when it does not fit or len is out of range. The
 * decoder checks len against the bounds and against the payload's size,
 * and points *data into payload. NOTIFY_ACK: status must be SUCCESS or
 * NOTIFY_QUEUE_FULL. */
size_t llk_wire_encode_notify(uint8_t *out, size_t cap, uint16_t version, uint64_t seq,
                              const void *data, uint32_t len);
int llk_wire_decode_notify(const uint8_t *payload, size_t plen, uint64_t *seq,
                           const uint8_t **data, uint32_t *len, const char **why);
size_t llk_wire_encode_notify_ack(uint8_t *out, size_t cap, uint16_t version, uint64_t seq,
                                  uint32_t status);
int llk_wire_decode_notify_ack(const uint8_t *payload, size_t plen, uint64_t *seq,
                               uint32_t *status, const char **why);

/* Points ext at buf (4 bytes, kept by the caller) holding ms: the
 * LLK_EXT_WAIT_TIME extension. */
void llk_wire_ext_wait_time(llk_ext_t *ext, uint8_t buf[4], uint32_t ms);
/* The first LLK_EXT_WAIT_TIME in ext[0..n): 1 with *ms, 0 when there is
 * none, -1 when it is malformed (length not 4, 0 ms, above INT32_MAX ms),
 * with the reason in *why. */
int llk_wire_find_wait_time(const llk_ext_t *ext, uint16_t n, uint32_t *ms, const char **why);

/* Points ext at buf (2 bytes, kept by the caller) holding count: the
 * LLK_EXT_STREAM_COUNT extension. */
void llk_wire_ext_stream_count(llk_ext_t *ext, uint8_t buf[2], uint16_t count);
/* The first LLK_EXT_STREAM_COUNT in ext[0..n): 1 with *count, 0 when there
 * is none, -1 when it is malformed (length not 2, odd, outside
 * LLK_STREAM_COUNT_MIN..MAX), with the reason in *why. */
int llk_wire_find_stream_count(const llk_ext_t *ext, uint16_t n, uint16_t *count,
                               const char **why);

/* ext[0..n) holds an extension of this type (the first one counts). */
bool llk_wire_has_ext(const llk_ext_t *ext, uint16_t n, uint16_t type);

/* Index of the first critical extension in ext[0..n) that this version does
 * not understand, or -1 if none. */
int llk_wire_find_unknown_critical(const llk_ext_t *ext, uint16_t n);

#endif /* LLK_WIRE_H */

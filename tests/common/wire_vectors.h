/*
 * wire_vectors.h - hand-written control-plane frames (protocol version 1).
 *
 * These bytes are written out field by field from the layout documented in
 * core/wire.h, NOT produced by the encoder: they are the shared reference
 * that the unit tests compare the codec against, that the fuzz seed corpus
 * (tests/fuzz/corpus/wire/) was generated from, and that any other
 * implementation of the protocol can be checked with. If the encoder and
 * these bytes disagree, the encoder is wrong (or the protocol version has to
 * change).
 *
 * All integers are big-endian. The header is:
 *   magic "LLMK" | u16 version | u16 type | u32 payload length | u32 flags
 */
#ifndef LLK_TEST_WIRE_VECTORS_H
#define LLK_TEST_WIRE_VECTORS_H

#include <stdint.h>

/* ---- HEARTBEAT: a bare header, the simplest test of the header layout -- */
static const uint8_t vec_heartbeat[] = {
    'L', 'L', 'M', 'K',     /* magic 0x4C4C4D4B */
    0x00, 0x01,             /* version 1 */
    0x00, 0x04,             /* type 4 = HEARTBEAT */
    0x00, 0x00, 0x00, 0x00, /* payload length 0 */
    0x00, 0x00, 0x00, 0x00, /* flags 0 */
};

/* ---- HELLO with one (non-critical) extension ---------------------------- */
#define VEC_HELLO_CLIENT_ID      0x0102030405060708ull
#define VEC_HELLO_TARGET_ID      0x1112131415161718ull
#define VEC_HELLO_CLIENT_ROLE    2u /* DECODER */
#define VEC_HELLO_EXPECTED_ROLE  1u /* PROMPT */
#define VEC_HELLO_INCARNATION    0x2122232425262728ull
#define VEC_HELLO_LIVENESS_MS    3000u
#define VEC_HELLO_EXT0_TYPE      0x0001u
#define VEC_HELLO_EXT0_DATA      "abc"
#define VEC_HELLO_PAYLOAD_LEN    45u

static const uint8_t vec_hello[] = {
    'L', 'L', 'M', 'K', 0x00, 0x01, 0x00, 0x01, /* magic, version 1, type 1 */
    0x00, 0x00, 0x00, 0x2D,                     /* length 45 */
    0x00, 0x00, 0x00, 0x00,                     /* flags */
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* client_cluster_id */
    0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, /* target_cluster_id */
    0x00, 0x00, 0x00, 0x02,                     /* client_role DECODER */
    0x00, 0x00, 0x00, 0x01,                     /* expected_server_role PROMPT */
    0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, /* incarnation */
    0x00, 0x00, 0x0B, 0xB8,                     /* liveness_ms 3000 */
    0x00, 0x01,                                 /* extension count 1 */
    0x00, 0x01, 0x00, 0x03, 'a', 'b', 'c',      /* type 1, length 3, data */
};

/* ---- WELCOME with a non-critical and a critical (empty) extension ------- */
#define VEC_WELCOME_SERVER_ID    0x1112131415161718ull
#define VEC_WELCOME_SERVER_ROLE  1u /* PROMPT */
#define VEC_WELCOME_LIVENESS_MS  3000u
#define VEC_WELCOME_INCARNATION  0x3132333435363738ull
#define VEC_WELCOME_EXT0_TYPE    0x0007u
#define VEC_WELCOME_EXT0_DATA    "hi"
#define VEC_WELCOME_EXT1_TYPE    0x8100u /* bit 15: critical */
#define VEC_WELCOME_PAYLOAD_LEN  36u

static const uint8_t vec_welcome[] = {
    'L', 'L', 'M', 'K', 0x00, 0x01, 0x00, 0x02, /* magic, version 1, type 2 */
    0x00, 0x00, 0x00, 0x24,                     /* length 36 */
    0x00, 0x00, 0x00, 0x00,                     /* flags */
    0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, /* server_cluster_id */
    0x00, 0x00, 0x00, 0x01,                     /* server_role PROMPT */
    0x00, 0x00, 0x0B, 0xB8,                     /* liveness_ms 3000 */
    0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, /* incarnation */
    0x00, 0x02,                                 /* extension count 2 */
    0x00, 0x07, 0x00, 0x02, 'h', 'i',           /* type 7, length 2, data */
    0x81, 0x00, 0x00, 0x00,                     /* type 0x8100, length 0 */
};

/* ---- REJECT ---------------------------------------------------------------- */
#define VEC_REJECT_STATUS        0x5010B103u /* LLMLINK_VERSION_MISMATCH */
#define VEC_REJECT_MESSAGE       "bad version"
#define VEC_REJECT_PAYLOAD_LEN   17u

static const uint8_t vec_reject[] = {
    'L', 'L', 'M', 'K', 0x00, 0x01, 0x00, 0x03, /* magic, version 1, type 3 */
    0x00, 0x00, 0x00, 0x11,                     /* length 17 */
    0x00, 0x00, 0x00, 0x00,                     /* flags */
    0x50, 0x10, 0xB1, 0x03,                     /* status */
    0x00, 0x0B,                                 /* message length 11 */
    'b', 'a', 'd', ' ', 'v', 'e', 'r', 's', 'i', 'o', 'n',
};

/* ---- UNLINK (4 reserved zero bytes) and UNLINK_ACK (empty) ---------------- */
static const uint8_t vec_unlink[] = {
    'L', 'L', 'M', 'K', 0x00, 0x01, 0x00, 0x05, /* magic, version 1, type 5 */
    0x00, 0x00, 0x00, 0x04,                     /* length 4 */
    0x00, 0x00, 0x00, 0x00,                     /* flags */
    0x00, 0x00, 0x00, 0x00,                     /* reserved */
};

static const uint8_t vec_unlink_ack[] = {
    'L', 'L', 'M', 'K', 0x00, 0x01, 0x00, 0x06, /* magic, version 1, type 6 */
    0x00, 0x00, 0x00, 0x00,                     /* length 0 */
    0x00, 0x00, 0x00, 0x00,                     /* flags */
};

#endif /* LLK_TEST_WIRE_VECTORS_H */

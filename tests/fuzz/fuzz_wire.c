/*
 * fuzz_wire.c - fuzz target for the control-plane frame codec (core/wire.c).
 *
 * The input is read like the byte stream of a control connection: while at
 * least a header's worth of bytes is left, read a header, validate it, and
 * hand the payload (min(length, bytes left), so truncated last frames are
 * exercised too) to the decoder of its type. A header that fails
 * validation ends the stream, as the receiver drops the connection then.
 *
 * Beyond "no crash, no sanitizer report", it checks properties, calling
 * abort() when one fails:
 *  - HELLO / WELCOME / REJECT that decode are re-encoded, and decoding the
 *    re-encoded frame gives the same fields;
 *  - HELLO and WELCOME encodings are canonical: the re-encoded payload is
 *    byte-for-byte the accepted one (decoders refuse trailing bytes and
 *    store every field), and re-encoding never fails for accepted input;
 *  - a decoded REJECT message is printable ASCII and within the limit;
 *  - llk_wire_find_unknown_critical returns the first critical extension;
 *  - the extensions this side reads (LLK_EXT_WAIT_TIME, LLK_EXT_RDMA_READ_DEPTH)
 *    are found in any position, and a wait time is only ever taken within
 *    LLK_WAIT_TIME_MIN_MS..LLK_WAIT_TIME_MAX_MS (else refused with a reason);
 *  - a NOTIFY that decodes holds 1..4096 bytes filling its frame exactly,
 *    a NOTIFY_ACK a known status; both re-encode to the same bytes.
 *
 * Built with tests/fuzz/standalone_main.c (make fuzz-bins) or with
 * libFuzzer (make fuzz-libfuzzer). Seeds: tests/fuzz/corpus/wire/.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "link/wire.h"
#include "llmlink.h"

#define CHECK(cond)      \
    do {                 \
        if (!(cond))     \
            abort();     \
    } while (0)

/* Re-encoded frames; static so that a 4 KiB payload costs no stack. */
static uint8_t reencoded[LLK_WIRE_MAX_RX_FRAME];

/* Returns the payload of a frame this target just encoded, after checking
 * its header is valid and of the expected type and length. */
static const uint8_t *reencoded_payload(size_t n, llk_msg_type_t type)
{
    llk_frame_header_t h;
    CHECK(n >= LLK_WIRE_HEADER_SIZE && n <= sizeof reencoded);
    llk_wire_read_header(reencoded, &h);
    CHECK(llk_wire_check_header(&h) == LLK_HDR_OK);
    CHECK(h.type == type);
    CHECK(h.length == n - LLK_WIRE_HEADER_SIZE);
    return reencoded + LLK_WIRE_HEADER_SIZE;
}

static void check_ext_equal(const llk_ext_t *a, const llk_ext_t *b, uint16_t n)
{
    for (uint16_t i = 0; i < n; i++) {
        CHECK(a[i].type == b[i].type);
        CHECK(a[i].length == b[i].length);
        CHECK(a[i].length == 0 || memcmp(a[i].data, b[i].data, a[i].length) == 0);
    }
}

/* The index returned is the first critical extension, -1 if none. */
static void check_critical(const llk_ext_t *ext, uint16_t n)
{
    int first = -1;
    for (uint16_t i = 0; i < n && first < 0; i++)
        if (ext[i].type & LLK_WIRE_EXT_CRITICAL)
            first = i;
    CHECK(llk_wire_find_unknown_critical(ext, n) == first);
}

/* What the handshakes take from a peer's extensions (client.c, server.c). */
static void check_known_ext(const llk_ext_t *ext, uint16_t n)
{
    uint32_t ms = 0;
    const char *why = NULL;
    int rc = llk_wire_find_wait_time(ext, n, &ms, &why);
    bool any = false;
    for (uint16_t i = 0; i < n; i++)
        any |= ext[i].type == LLK_EXT_WAIT_TIME;
    CHECK(rc == 0 ? !any : any);
    if (rc > 0)
        CHECK(ms >= LLK_WAIT_TIME_MIN_MS && ms <= LLK_WAIT_TIME_MAX_MS);
    if (rc < 0)
        CHECK(why != NULL);
    bool depth = false;
    for (uint16_t i = 0; i < n; i++)
        depth |= ext[i].type == LLK_EXT_RDMA_READ_DEPTH;
    CHECK(llk_wire_has_ext(ext, n, LLK_EXT_RDMA_READ_DEPTH) == depth);
}

static void fuzz_hello(const uint8_t *p, size_t len)
{
    llk_msg_hello_t m, again;
    const char *why = NULL;
    if (llk_wire_decode_hello(p, len, &m, &why) != 0) {
        CHECK(why != NULL);
        return;
    }
    CHECK(m.num_ext <= LLK_WIRE_MAX_EXTENSIONS);
    check_critical(m.ext, m.num_ext);
    check_known_ext(m.ext, m.num_ext);

    size_t n = llk_wire_encode_hello(reencoded, sizeof reencoded, LLK_WIRE_VERSION, &m);
    CHECK(n == LLK_WIRE_HEADER_SIZE + len);
    const uint8_t *q = reencoded_payload(n, LLK_MSG_HELLO);
    CHECK(memcmp(q, p, len) == 0);

    CHECK(llk_wire_decode_hello(q, len, &again, &why) == 0);
    CHECK(again.client_cluster_id == m.client_cluster_id);
    CHECK(again.target_cluster_id == m.target_cluster_id);
    CHECK(again.client_role == m.client_role);
    CHECK(again.expected_server_role == m.expected_server_role);
    CHECK(again.incarnation == m.incarnation);
    CHECK(again.liveness_ms == m.liveness_ms);
    CHECK(again.num_ext == m.num_ext);
    check_ext_equal(again.ext, m.ext, m.num_ext);
}

static void fuzz_welcome(const uint8_t *p, size_t len)
{
    llk_msg_welcome_t m, again;
    const char *why = NULL;
    if (llk_wire_decode_welcome(p, len, &m, &why) != 0) {
        CHECK(why != NULL);
        return;
    }
    CHECK(m.num_ext <= LLK_WIRE_MAX_EXTENSIONS);
    check_critical(m.ext, m.num_ext);
    check_known_ext(m.ext, m.num_ext);

    size_t n = llk_wire_encode_welcome(reencoded, sizeof reencoded, LLK_WIRE_VERSION, &m);
    CHECK(n == LLK_WIRE_HEADER_SIZE + len);
    const uint8_t *q = reencoded_payload(n, LLK_MSG_WELCOME);
    CHECK(memcmp(q, p, len) == 0);

    CHECK(llk_wire_decode_welcome(q, len, &again, &why) == 0);
    CHECK(again.server_cluster_id == m.server_cluster_id);
    CHECK(again.server_role == m.server_role);
    CHECK(again.liveness_ms == m.liveness_ms);
    CHECK(again.incarnation == m.incarnation);
    CHECK(again.num_ext == m.num_ext);
    check_ext_equal(again.ext, m.ext, m.num_ext);
}

static void fuzz_reject(const uint8_t *p, size_t len)
{
    llk_msg_reject_t m, again;
    const char *why = NULL;
    if (llk_wire_decode_reject(p, len, &m, &why) != 0) {
        CHECK(why != NULL);
        return;
    }
    /* The message goes into llmlink_last_error(): printable and bounded.
     * Its length is what the frame said, so no byte became a NUL. */
    size_t mlen = strlen(m.message);
    CHECK(mlen <= LLK_WIRE_MAX_REJECT_MSG);
    CHECK(len == 6 + mlen);
    for (size_t i = 0; i < mlen; i++)
        CHECK(m.message[i] >= 0x20 && m.message[i] <= 0x7e);

    size_t n = llk_wire_encode_reject(reencoded, sizeof reencoded, LLK_WIRE_VERSION, m.status,
                                      m.message);
    CHECK(n == LLK_WIRE_HEADER_SIZE + len);
    const uint8_t *q = reencoded_payload(n, LLK_MSG_REJECT);
    CHECK(llk_wire_decode_reject(q, len, &again, &why) == 0);
    CHECK(again.status == m.status);
    CHECK(strcmp(again.message, m.message) == 0);
}

static void fuzz_simple(llk_msg_type_t type, const uint8_t *p, size_t len)
{
    const char *why = NULL;
    if (llk_wire_decode_simple(type, p, len, &why) != 0) {
        CHECK(why != NULL);
        return;
    }
    /* Only the canonical payload is accepted, and it is what we encode. */
    size_t n = llk_wire_encode_simple(reencoded, sizeof reencoded, LLK_WIRE_VERSION, type);
    CHECK(n == LLK_WIRE_HEADER_SIZE + len);
    const uint8_t *q = reencoded_payload(n, type);
    CHECK(len == 0 || memcmp(q, p, len) == 0);
}

static void fuzz_attach(const uint8_t *p, size_t len)
{
    llk_msg_attach_t m, again;
    const char *why = NULL;
    if (llk_wire_decode_attach(p, len, &m, &why) != 0) {
        CHECK(why != NULL);
        return;
    }
    CHECK(m.direction <= 1 && m.transport <= 3);
    CHECK(len >= LLK_WIRE_ATTACH_FIXED);
    /* The fixed part comes back byte for byte; of the optional extensions
     * only the MAC is kept (others are skipped, so the re-encoding may be
     * shorter than the input). */
    size_t n = llk_wire_encode_attach(reencoded, sizeof reencoded, LLK_WIRE_VERSION, &m);
    CHECK(n == LLK_WIRE_HEADER_SIZE + LLK_WIRE_ATTACH_FIXED +
                   (m.has_mac ? 2 + 4 + LLK_AUTH_MAC_SIZE : 0));
    CHECK(n <= LLK_WIRE_HEADER_SIZE + len);
    const uint8_t *q = reencoded_payload(n, LLK_MSG_ATTACH);
    CHECK(memcmp(q, p, LLK_WIRE_ATTACH_FIXED) == 0);
    if (len == LLK_WIRE_ATTACH_FIXED)
        CHECK(!m.has_mac);
    CHECK(llk_wire_decode_attach(q, n - LLK_WIRE_HEADER_SIZE, &again, &why) == 0);
    CHECK(memcmp(&again, &m, sizeof m) == 0); /* both memset before decoding */
}

/* Authentication frames: fixed sizes; what decodes re-encodes to the same
 * bytes. */
static void fuzz_auth(llk_msg_type_t type, const uint8_t *p, size_t len)
{
    const char *why = NULL;
    size_t n = 0;
    int rc;
    if (type == LLK_MSG_AUTH_HELLO) {
        llk_msg_auth_hello_t m;
        rc = llk_wire_decode_auth_hello(p, len, &m, &why);
        if (rc == 0)
            n = llk_wire_encode_auth_hello(reencoded, sizeof reencoded, LLK_WIRE_VERSION, &m);
    } else if (type == LLK_MSG_AUTH_CHALLENGE) {
        llk_msg_auth_challenge_t m;
        rc = llk_wire_decode_auth_challenge(p, len, &m, &why);
        if (rc == 0)
            n = llk_wire_encode_auth_challenge(reencoded, sizeof reencoded, LLK_WIRE_VERSION,
                                               &m);
    } else {
        uint8_t mac[LLK_AUTH_MAC_SIZE];
        rc = llk_wire_decode_auth_proof(p, len, mac, &why);
        if (rc == 0)
            n = llk_wire_encode_auth_proof(reencoded, sizeof reencoded, LLK_WIRE_VERSION, mac);
    }
    if (rc != 0) {
        CHECK(why != NULL);
        return;
    }
    CHECK(n == LLK_WIRE_HEADER_SIZE + len);
    CHECK(memcmp(reencoded_payload(n, type), p, len) == 0);
}

static void fuzz_attach_ok(const uint8_t *p, size_t len)
{
    llk_msg_attach_ok_t m, again;
    const char *why = NULL;
    if (llk_wire_decode_attach_ok(p, len, &m, &why) != 0) {
        CHECK(why != NULL);
        return;
    }
    CHECK(m.transport <= 3);
    size_t n = llk_wire_encode_attach_ok(reencoded, sizeof reencoded, LLK_WIRE_VERSION, &m);
    CHECK(n == LLK_WIRE_HEADER_SIZE + len);
    const uint8_t *q = reencoded_payload(n, LLK_MSG_ATTACH_OK);
    CHECK(memcmp(q, p, len) == 0); /* the reserved bytes were zero */
    CHECK(llk_wire_decode_attach_ok(q, len, &again, &why) == 0);
    CHECK(memcmp(&again, &m, sizeof m) == 0);
}

/* NOTIFY: what decodes has 1..4096 data bytes exactly filling the frame,
 * and re-encodes to the same bytes. NOTIFY_ACK: a known status. */
static void fuzz_notify(llk_msg_type_t type, const uint8_t *p, size_t len)
{
    const char *why = NULL;
    uint64_t seq;
    size_t n;
    if (type == LLK_MSG_NOTIFY) {
        const uint8_t *data = NULL;
        uint32_t dlen = 0;
        if (llk_wire_decode_notify(p, len, &seq, &data, &dlen, &why) != 0) {
            CHECK(why != NULL);
            return;
        }
        CHECK(dlen >= 1 && dlen <= LLK_NOTIFY_MAX_DATA);
        CHECK(len == LLK_NOTIFY_HEAD + dlen && data == p + LLK_NOTIFY_HEAD);
        n = llk_wire_encode_notify(reencoded, sizeof reencoded, LLK_WIRE_VERSION, seq, data,
                                   dlen);
    } else {
        uint32_t st = 0;
        if (llk_wire_decode_notify_ack(p, len, &seq, &st, &why) != 0) {
            CHECK(why != NULL);
            return;
        }
        CHECK(st == LLMLINK_SUCCESS || st == LLMLINK_NOTIFY_QUEUE_FULL);
        n = llk_wire_encode_notify_ack(reencoded, sizeof reencoded, LLK_WIRE_VERSION, seq, st);
    }
    CHECK(n == LLK_WIRE_HEADER_SIZE + len);
    CHECK(memcmp(reencoded_payload(n, type), p, len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t pos = 0;
    while (size - pos >= LLK_WIRE_HEADER_SIZE) {
        llk_frame_header_t h;
        llk_wire_read_header(data + pos, &h);
        pos += LLK_WIRE_HEADER_SIZE;

        llk_header_check_t hc = llk_wire_check_header(&h);
        CHECK(llk_wire_header_check_str(hc) != NULL);
        if (hc != LLK_HDR_OK)
            break;
        CHECK(h.length <= (h.type == LLK_MSG_NOTIFY ? LLK_WIRE_MAX_NOTIFY_PAYLOAD
                                                     : LLK_WIRE_MAX_PAYLOAD));

        size_t len = size - pos < h.length ? size - pos : h.length;
        /* An exact-size copy: a decoder that reads one byte too far hits
         * the end of the allocation (ASan) instead of the next frame. */
        uint8_t *payload = malloc(len ? len : 1);
        CHECK(payload != NULL);
        memcpy(payload, data + pos, len);
        pos += len;

        switch ((llk_msg_type_t)h.type) {
        case LLK_MSG_HELLO: fuzz_hello(payload, len); break;
        case LLK_MSG_WELCOME: fuzz_welcome(payload, len); break;
        case LLK_MSG_REJECT: fuzz_reject(payload, len); break;
        case LLK_MSG_HEARTBEAT:
        case LLK_MSG_UNLINK:
        case LLK_MSG_UNLINK_ACK: fuzz_simple((llk_msg_type_t)h.type, payload, len); break;
        case LLK_MSG_ATTACH: fuzz_attach(payload, len); break;
        case LLK_MSG_ATTACH_OK: fuzz_attach_ok(payload, len); break;
        case LLK_MSG_AUTH_HELLO:
        case LLK_MSG_AUTH_CHALLENGE:
        case LLK_MSG_AUTH_PROOF: fuzz_auth((llk_msg_type_t)h.type, payload, len); break;
        case LLK_MSG_NOTIFY:
        case LLK_MSG_NOTIFY_ACK: fuzz_notify((llk_msg_type_t)h.type, payload, len); break;
        default: abort(); /* llk_wire_check_header let an unknown type through */
        }
        free(payload);
    }
    return 0;
}

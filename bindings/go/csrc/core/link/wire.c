/* wire.c - control-plane frame and message codecs (see wire.h). */
#include "link/wire.h"

#include <string.h>

#include "base/bytes.h"
#include "llmlink.h"

/* ---- header ------------------------------------------------------------ */

void llk_wire_read_header(const uint8_t buf[LLK_WIRE_HEADER_SIZE], llk_frame_header_t *h)
{
    rbuf_t r = {buf, LLK_WIRE_HEADER_SIZE, 0, 0};
    h->magic = get_u32(&r);
    h->version = get_u16(&r);
    h->type = get_u16(&r);
    h->length = get_u32(&r);
    h->flags = get_u32(&r);
}

llk_header_check_t llk_wire_check_header(const llk_frame_header_t *h)
{
    if (h->magic != LLK_WIRE_MAGIC)
        return LLK_HDR_BAD_MAGIC;
    /* Version before the rest: the fields after it may mean something else
     * in another version. */
    if (h->version != LLK_WIRE_VERSION)
        return LLK_HDR_BAD_VERSION;
    /* NOTIFY alone may exceed LLK_WIRE_MAX_PAYLOAD (wire.h). */
    uint32_t max = h->type == LLK_MSG_NOTIFY ? LLK_WIRE_MAX_NOTIFY_PAYLOAD : LLK_WIRE_MAX_PAYLOAD;
    if (h->length > max)
        return LLK_HDR_TOO_LARGE;
    if (h->type < LLK_MSG_HELLO || h->type > LLK_MSG_LAST || h->type == LLK_MSG_RESERVED_12)
        return LLK_HDR_BAD_TYPE;
    if (h->flags != 0)
        return LLK_HDR_BAD_FLAGS;
    return LLK_HDR_OK;
}

const char *llk_wire_header_check_str(llk_header_check_t c)
{
    switch (c) {
    case LLK_HDR_OK: return "ok";
    case LLK_HDR_BAD_MAGIC: return "bad magic (not an llmlink peer)";
    case LLK_HDR_BAD_VERSION: return "unsupported protocol version";
    case LLK_HDR_TOO_LARGE: return "frame larger than the maximum";
    case LLK_HDR_BAD_TYPE: return "unknown message type";
    case LLK_HDR_BAD_FLAGS: return "reserved flags set";
    }
    return "?";
}

/* Frame = header with a length patched in once the payload is written. */
static void begin_frame(wbuf_t *w, uint16_t version, llk_msg_type_t type)
{
    put_u32(w, LLK_WIRE_MAGIC);
    put_u16(w, version);
    put_u16(w, (uint16_t)type);
    put_u32(w, 0); /* length, patched by end_frame */
    put_u32(w, 0); /* flags */
}

static size_t end_frame(wbuf_t *w)
{
    if (w->overflow)
        return 0;
    size_t payload = w->len - LLK_WIRE_HEADER_SIZE;
    bool notify = w->len >= 8 && w->p[6] == 0 && w->p[7] == LLK_MSG_NOTIFY;
    if (payload > (notify ? LLK_WIRE_MAX_NOTIFY_PAYLOAD : LLK_WIRE_MAX_PAYLOAD))
        return 0;
    w->p[8] = (uint8_t)(payload >> 24);
    w->p[9] = (uint8_t)(payload >> 16);
    w->p[10] = (uint8_t)(payload >> 8);
    w->p[11] = (uint8_t)payload;
    return w->len;
}

/* ---- extensions ---------------------------------------------------------- */

static void put_exts(wbuf_t *w, const llk_ext_t *ext, uint16_t n)
{
    if (n > LLK_WIRE_MAX_EXTENSIONS) {
        w->overflow = 1;
        return;
    }
    put_u16(w, n);
    for (uint16_t i = 0; i < n; i++) {
        put_u16(w, ext[i].type);
        put_u16(w, ext[i].length);
        if (ext[i].length)
            put_bytes(w, ext[i].data, ext[i].length);
    }
}

static int get_exts(rbuf_t *r, llk_ext_t *ext, uint16_t *n, const char **why)
{
    uint16_t count = get_u16(r);
    if (r->short_read) {
        *why = "truncated extension count";
        return -1;
    }
    if (count > LLK_WIRE_MAX_EXTENSIONS) {
        *why = "too many extensions";
        return -1;
    }
    for (uint16_t i = 0; i < count; i++) {
        ext[i].type = get_u16(r);
        ext[i].length = get_u16(r);
        if (r->short_read) {
            *why = "truncated extension header";
            return -1;
        }
        ext[i].data = r->p + r->pos;
        if (get_bytes(r, NULL, ext[i].length) != 0) {
            *why = "extension longer than the frame";
            return -1;
        }
    }
    *n = count;
    return 0;
}

int llk_wire_find_unknown_critical(const llk_ext_t *ext, uint16_t n)
{
    /* Version 1 defines no extension types yet. */
    for (uint16_t i = 0; i < n; i++)
        if (ext[i].type & LLK_WIRE_EXT_CRITICAL)
            return i;
    return -1;
}

bool llk_wire_has_ext(const llk_ext_t *ext, uint16_t n, uint16_t type)
{
    for (uint16_t i = 0; i < n; i++)
        if (ext[i].type == type)
            return true;
    return false;
}

void llk_wire_ext_wait_time(llk_ext_t *ext, uint8_t buf[4], uint32_t ms)
{
    buf[0] = (uint8_t)(ms >> 24);
    buf[1] = (uint8_t)(ms >> 16);
    buf[2] = (uint8_t)(ms >> 8);
    buf[3] = (uint8_t)ms;
    ext->type = LLK_EXT_WAIT_TIME;
    ext->length = 4;
    ext->data = buf;
}

int llk_wire_find_wait_time(const llk_ext_t *ext, uint16_t n, uint32_t *ms, const char **why)
{
    for (uint16_t i = 0; i < n; i++) {
        if (ext[i].type != LLK_EXT_WAIT_TIME)
            continue;
        /* The first one counts; a peer has no reason to send two. */
        if (ext[i].length != 4 || !ext[i].data) {
            *why = "wait-time extension is not 4 bytes long";
            return -1;
        }
        rbuf_t r = {ext[i].data, 4, 0, 0};
        uint32_t v = get_u32(&r);
        if (v < LLK_WAIT_TIME_MIN_MS) {
            *why = "wait-time extension says 0 ms";
            return -1;
        }
        if (v > LLK_WAIT_TIME_MAX_MS) {
            *why = "wait-time extension is above INT32_MAX ms";
            return -1;
        }
        *ms = v;
        return 1;
    }
    return 0;
}

void llk_wire_ext_stream_count(llk_ext_t *ext, uint8_t buf[2], uint16_t count)
{
    buf[0] = (uint8_t)(count >> 8);
    buf[1] = (uint8_t)count;
    ext->type = LLK_EXT_STREAM_COUNT;
    ext->length = 2;
    ext->data = buf;
}

int llk_wire_find_stream_count(const llk_ext_t *ext, uint16_t n, uint16_t *count,
                               const char **why)
{
    for (uint16_t i = 0; i < n; i++) {
        if (ext[i].type != LLK_EXT_STREAM_COUNT)
            continue;
        if (ext[i].length != 2 || !ext[i].data) {
            *why = "stream-count extension is not 2 bytes long";
            return -1;
        }
        uint16_t v = (uint16_t)((ext[i].data[0] << 8) | ext[i].data[1]);
        if (v < LLK_STREAM_COUNT_MIN || v > LLK_STREAM_COUNT_MAX) {
            *why = "stream-count extension is outside 2..16";
            return -1;
        }
        if (v % 2) {
            *why = "stream-count extension is odd (streams come in pairs, one per direction)";
            return -1;
        }
        *count = v;
        return 1;
    }
    return 0;
}

/* ---- messages ------------------------------------------------------------ */

size_t llk_wire_encode_hello(uint8_t *out, size_t cap, uint16_t version, const llk_msg_hello_t *m)
{
    wbuf_t w = {out, 0, cap, 0};
    begin_frame(&w, version, LLK_MSG_HELLO);
    put_u64(&w, m->client_cluster_id);
    put_u64(&w, m->target_cluster_id);
    put_u32(&w, m->client_role);
    put_u32(&w, m->expected_server_role);
    put_u64(&w, m->incarnation);
    put_u32(&w, m->liveness_ms);
    put_exts(&w, m->ext, m->num_ext);
    return end_frame(&w);
}

size_t llk_wire_encode_welcome(uint8_t *out, size_t cap, uint16_t version,
                               const llk_msg_welcome_t *m)
{
    wbuf_t w = {out, 0, cap, 0};
    begin_frame(&w, version, LLK_MSG_WELCOME);
    put_u64(&w, m->server_cluster_id);
    put_u32(&w, m->server_role);
    put_u32(&w, m->liveness_ms);
    put_u64(&w, m->incarnation);
    put_exts(&w, m->ext, m->num_ext);
    return end_frame(&w);
}

size_t llk_wire_encode_reject(uint8_t *out, size_t cap, uint16_t version, uint32_t status,
                              const char *message)
{
    wbuf_t w = {out, 0, cap, 0};
    size_t n = message ? strlen(message) : 0;
    if (n > LLK_WIRE_MAX_REJECT_MSG)
        n = LLK_WIRE_MAX_REJECT_MSG;
    begin_frame(&w, version, LLK_MSG_REJECT);
    put_u32(&w, status);
    put_u16(&w, (uint16_t)n);
    if (n)
        put_bytes(&w, message, n);
    return end_frame(&w);
}

size_t llk_wire_encode_simple(uint8_t *out, size_t cap, uint16_t version, llk_msg_type_t type)
{
    wbuf_t w = {out, 0, cap, 0};
    if (type != LLK_MSG_HEARTBEAT && type != LLK_MSG_UNLINK && type != LLK_MSG_UNLINK_ACK)
        return 0;
    begin_frame(&w, version, type);
    if (type == LLK_MSG_UNLINK)
        put_u32(&w, 0);
    return end_frame(&w);
}

static int finish(rbuf_t *r, const char **why)
{
    if (r->short_read) {
        *why = "truncated payload";
        return -1;
    }
    if (r->pos != r->len) {
        *why = "trailing bytes after payload";
        return -1;
    }
    return 0;
}

int llk_wire_decode_hello(const uint8_t *payload, size_t len, llk_msg_hello_t *m, const char **why)
{
    rbuf_t r = {payload, len, 0, 0};
    memset(m, 0, sizeof *m);
    m->client_cluster_id = get_u64(&r);
    m->target_cluster_id = get_u64(&r);
    m->client_role = get_u32(&r);
    m->expected_server_role = get_u32(&r);
    m->incarnation = get_u64(&r);
    m->liveness_ms = get_u32(&r);
    if (r.short_read) {
        *why = "truncated HELLO";
        return -1;
    }
    if (m->client_role < LLMLINK_ROLE_PROMPT || m->client_role > LLMLINK_ROLE_MIX) {
        *why = "HELLO: client role out of range";
        return -1;
    }
    if (m->expected_server_role > LLMLINK_ROLE_MIX) {
        *why = "HELLO: expected server role out of range";
        return -1;
    }
    if (m->liveness_ms < LLK_LIVENESS_MIN_MS || m->liveness_ms > LLK_LIVENESS_MAX_MS) {
        *why = "HELLO: liveness interval out of range";
        return -1;
    }
    if (get_exts(&r, m->ext, &m->num_ext, why) != 0)
        return -1;
    return finish(&r, why);
}

int llk_wire_decode_welcome(const uint8_t *payload, size_t len, llk_msg_welcome_t *m,
                            const char **why)
{
    rbuf_t r = {payload, len, 0, 0};
    memset(m, 0, sizeof *m);
    m->server_cluster_id = get_u64(&r);
    m->server_role = get_u32(&r);
    m->liveness_ms = get_u32(&r);
    m->incarnation = get_u64(&r);
    if (r.short_read) {
        *why = "truncated WELCOME";
        return -1;
    }
    if (m->server_role < LLMLINK_ROLE_PROMPT || m->server_role > LLMLINK_ROLE_MIX) {
        *why = "WELCOME: server role out of range";
        return -1;
    }
    if (m->liveness_ms < LLK_LIVENESS_MIN_MS || m->liveness_ms > LLK_LIVENESS_MAX_MS) {
        *why = "WELCOME: liveness interval out of range";
        return -1;
    }
    if (get_exts(&r, m->ext, &m->num_ext, why) != 0)
        return -1;
    return finish(&r, why);
}

int llk_wire_decode_reject(const uint8_t *payload, size_t len, llk_msg_reject_t *m,
                           const char **why)
{
    rbuf_t r = {payload, len, 0, 0};
    memset(m, 0, sizeof *m);
    m->status = get_u32(&r);
    static const text_why_t w = {"truncated REJECT", "REJECT: message too long",
                                 "REJECT: message longer than the frame"};
    if (get_text(&r, m->message, LLK_WIRE_MAX_REJECT_MSG, &w, why) != 0)
        return -1;
    return finish(&r, why);
}

int llk_wire_decode_simple(llk_msg_type_t type, const uint8_t *payload, size_t len,
                           const char **why)
{
    rbuf_t r = {payload, len, 0, 0};
    if (type == LLK_MSG_UNLINK) {
        if (get_u32(&r) != 0 && !r.short_read) {
            *why = "UNLINK: reserved field not zero";
            return -1;
        }
    } else if (type != LLK_MSG_HEARTBEAT && type != LLK_MSG_UNLINK_ACK) {
        *why = "not a simple message type";
        return -1;
    }
    return finish(&r, why);
}

/* ---- data-stream attach -------------------------------------------------- */

size_t llk_wire_encode_attach(uint8_t *out, size_t cap, uint16_t version, const llk_msg_attach_t *m)
{
    wbuf_t w = {out, 0, cap, 0};
    begin_frame(&w, version, LLK_MSG_ATTACH);
    put_u64(&w, m->client_cluster_id);
    put_u64(&w, m->server_cluster_id);
    put_u64(&w, m->client_incarnation);
    put_u64(&w, m->server_incarnation);
    put_u16(&w, m->stream_index);
    put_bytes(&w, &m->direction, 1);
    put_bytes(&w, &m->transport, 1);
    put_bytes(&w, m->boot_id, sizeof m->boot_id);
    put_u64(&w, m->pidns);
    put_u32(&w, m->pid);
    if (m->has_mac) {
        llk_ext_t mac = {.type = LLK_EXT_ATTACH_MAC, .length = LLK_AUTH_MAC_SIZE,
                         .data = m->mac};
        put_exts(&w, &mac, 1);
    }
    return end_frame(&w);
}

size_t llk_wire_encode_attach_ok(uint8_t *out, size_t cap, uint16_t version,
                                 const llk_msg_attach_ok_t *m)
{
    static const uint8_t zero[3];
    wbuf_t w = {out, 0, cap, 0};
    begin_frame(&w, version, LLK_MSG_ATTACH_OK);
    put_bytes(&w, &m->transport, 1);
    put_bytes(&w, zero, sizeof zero);
    put_bytes(&w, m->boot_id, sizeof m->boot_id);
    put_u64(&w, m->pidns);
    put_u32(&w, m->pid);
    return end_frame(&w);
}

int llk_wire_decode_attach(const uint8_t *payload, size_t len, llk_msg_attach_t *m, const char **why)
{
    rbuf_t r = {payload, len, 0, 0};
    memset(m, 0, sizeof *m);
    m->client_cluster_id = get_u64(&r);
    m->server_cluster_id = get_u64(&r);
    m->client_incarnation = get_u64(&r);
    m->server_incarnation = get_u64(&r);
    m->stream_index = get_u16(&r);
    get_bytes(&r, &m->direction, 1);
    get_bytes(&r, &m->transport, 1);
    get_bytes(&r, m->boot_id, sizeof m->boot_id);
    m->pidns = get_u64(&r);
    m->pid = get_u32(&r);
    if (r.short_read) {
        *why = "truncated ATTACH";
        return -1;
    }
    if (m->direction > 1) {
        *why = "ATTACH: direction out of range";
        return -1;
    }
    if (m->transport > 3) {
        *why = "ATTACH: transport out of range";
        return -1;
    }
    if (r.pos == r.len)
        return 0; /* no extensions: a link without a key */
    llk_ext_t ext[LLK_WIRE_MAX_EXTENSIONS];
    uint16_t n = 0;
    if (get_exts(&r, ext, &n, why) != 0)
        return -1;
    for (uint16_t i = 0; i < n; i++) {
        if (ext[i].type == LLK_EXT_ATTACH_MAC) {
            if (ext[i].length != LLK_AUTH_MAC_SIZE || m->has_mac) {
                *why = "ATTACH: MAC extension not 32 bytes, or twice";
                return -1;
            }
            memcpy(m->mac, ext[i].data, LLK_AUTH_MAC_SIZE);
            m->has_mac = true;
        } else if (ext[i].type & LLK_WIRE_EXT_CRITICAL) {
            *why = "ATTACH: unsupported critical extension";
            return -1;
        }
    }
    return finish(&r, why);
}

/* ---- authentication ------------------------------------------------------ */

size_t llk_wire_encode_auth_hello(uint8_t *out, size_t cap, uint16_t version,
                                  const llk_msg_auth_hello_t *m)
{
    wbuf_t w = {out, 0, cap, 0};
    begin_frame(&w, version, LLK_MSG_AUTH_HELLO);
    put_bytes(&w, &m->scheme, 1);
    put_bytes(&w, m->nc, sizeof m->nc);
    return end_frame(&w);
}

size_t llk_wire_encode_auth_challenge(uint8_t *out, size_t cap, uint16_t version,
                                      const llk_msg_auth_challenge_t *m)
{
    wbuf_t w = {out, 0, cap, 0};
    begin_frame(&w, version, LLK_MSG_AUTH_CHALLENGE);
    put_bytes(&w, m->ns, sizeof m->ns);
    put_bytes(&w, m->mac, sizeof m->mac);
    return end_frame(&w);
}

size_t llk_wire_encode_auth_proof(uint8_t *out, size_t cap, uint16_t version,
                                  const uint8_t mac[LLK_AUTH_MAC_SIZE])
{
    wbuf_t w = {out, 0, cap, 0};
    begin_frame(&w, version, LLK_MSG_AUTH_PROOF);
    put_bytes(&w, mac, LLK_AUTH_MAC_SIZE);
    return end_frame(&w);
}

int llk_wire_decode_auth_hello(const uint8_t *payload, size_t len, llk_msg_auth_hello_t *m,
                               const char **why)
{
    rbuf_t r = {payload, len, 0, 0};
    memset(m, 0, sizeof *m);
    get_bytes(&r, &m->scheme, 1);
    get_bytes(&r, m->nc, sizeof m->nc);
    return finish(&r, why);
}

int llk_wire_decode_auth_challenge(const uint8_t *payload, size_t len,
                                   llk_msg_auth_challenge_t *m, const char **why)
{
    rbuf_t r = {payload, len, 0, 0};
    memset(m, 0, sizeof *m);
    get_bytes(&r, m->ns, sizeof m->ns);
    get_bytes(&r, m->mac, sizeof m->mac);
    return finish(&r, why);
}

int llk_wire_decode_auth_proof(const uint8_t *payload, size_t len,
                               uint8_t mac[LLK_AUTH_MAC_SIZE], const char **why)
{
    rbuf_t r = {payload, len, 0, 0};
    memset(mac, 0, LLK_AUTH_MAC_SIZE);
    get_bytes(&r, mac, LLK_AUTH_MAC_SIZE);
    return finish(&r, why);
}

int llk_wire_decode_attach_ok(const uint8_t *payload, size_t len, llk_msg_attach_ok_t *m,
                              const char **why)
{
    rbuf_t r = {payload, len, 0, 0};
    uint8_t pad[3] = {0, 0, 0};
    memset(m, 0, sizeof *m);
    get_bytes(&r, &m->transport, 1);
    get_bytes(&r, pad, sizeof pad);
    get_bytes(&r, m->boot_id, sizeof m->boot_id);
    m->pidns = get_u64(&r);
    m->pid = get_u32(&r);
    if (r.short_read) {
        *why = "truncated ATTACH_OK";
        return -1;
    }
    if (m->transport > 3) {
        *why = "ATTACH_OK: transport out of range";
        return -1;
    }
    if (pad[0] | pad[1] | pad[2]) {
        *why = "ATTACH_OK: reserved bytes not zero";
        return -1;
    }
    return finish(&r, why);
}

/* ---- notifications ------------------------------------------------------- */

size_t llk_wire_encode_notify(uint8_t *out, size_t cap, uint16_t version, uint64_t seq,
                              const void *data, uint32_t len)
{
    if (!data || len == 0 || len > LLK_NOTIFY_MAX_DATA)
        return 0;
    wbuf_t w = {out, 0, cap, 0};
    begin_frame(&w, version, LLK_MSG_NOTIFY);
    put_u64(&w, seq);
    put_u32(&w, len);
    put_bytes(&w, data, len);
    return end_frame(&w);
}

int llk_wire_decode_notify(const uint8_t *payload, size_t plen, uint64_t *seq,
                           const uint8_t **data, uint32_t *len, const char **why)
{
    rbuf_t r = {payload, plen, 0, 0};
    *seq = get_u64(&r);
    *len = get_u32(&r);
    *data = NULL;
    if (r.short_read) {
        *why = "truncated NOTIFY";
        return -1;
    }
    if (*len == 0) {
        *why = "NOTIFY: empty notification";
        return -1;
    }
    if (*len > LLK_NOTIFY_MAX_DATA) {
        *why = "NOTIFY: notification longer than 4096 bytes";
        return -1;
    }
    if (plen - LLK_NOTIFY_HEAD != *len) {
        *why = "NOTIFY: length field disagrees with the frame";
        return -1;
    }
    *data = payload + LLK_NOTIFY_HEAD;
    return 0;
}

size_t llk_wire_encode_notify_ack(uint8_t *out, size_t cap, uint16_t version, uint64_t seq,
                                  uint32_t status)
{
    wbuf_t w = {out, 0, cap, 0};
    begin_frame(&w, version, LLK_MSG_NOTIFY_ACK);
    put_u64(&w, seq);
    put_u32(&w, status);
    return end_frame(&w);
}

int llk_wire_decode_notify_ack(const uint8_t *payload, size_t plen, uint64_t *seq,
                               uint32_t *status, const char **why)
{
    rbuf_t r = {payload, plen, 0, 0};
    *seq = get_u64(&r);
    *status = get_u32(&r);
    if (finish(&r, why) != 0)
        return -1;
    if (*status != LLMLINK_SUCCESS && *status != LLMLINK_NOTIFY_QUEUE_FULL) {
        *why = "NOTIFY_ACK: status neither SUCCESS nor NOTIFY_QUEUE_FULL";
        return -1;
    }
    return 0;
}

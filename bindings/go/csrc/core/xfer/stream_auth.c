/* xfer/stream_auth.c - the client side of a data stream's authentication
 * (link/wire.h "Authentication"), on the API thread that attaches the
 * link's streams: blocking reads and writes bounded by the call's
 * deadline, through the stream helpers of streams.c. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/crypto.h"
#include "link/auth.h"
#include "link/engine.h"

static llmlink_status_t io_status(void)
{
    return errno == ETIMEDOUT ? LLMLINK_TIMEOUT : LLMLINK_LINK_FAILED;
}

llmlink_status_t llk_stream_auth_hello(llmlink_t *e, llk_xlink_t *xl, int fd, uint8_t nc[32],
                                       int64_t deadline_ms, char *detail, size_t dlen)
{
    llk_msg_auth_hello_t m = {.scheme = LLK_AUTH_SCHEME_PSK1};
    if (llk_auth_nonce(nc) != 0) {
        snprintf(detail, dlen, "libcrypto: no random bytes for a nonce");
        return LLMLINK_FAILED;
    }
    memcpy(m.nc, nc, sizeof m.nc);
    uint8_t f[LLK_WIRE_HEADER_SIZE + 1 + LLK_AUTH_NONCE_SIZE];
    size_t n = llk_wire_encode_auth_hello(f, sizeof f, LLK_WIRE_VERSION, &m);
    if (!n || llk_xlink_send_all(xl, fd, f, n, deadline_ms) != 0) {
        snprintf(detail, dlen, "data stream AUTH_HELLO to %s: %s", xl->peer, strerror(errno));
        return io_status();
    }
    return LLMLINK_SUCCESS;
}

/* Reads the answer to AUTH_HELLO: AUTH_CHALLENGE into *ch, or a REJECT. */
static llmlink_status_t read_challenge(llk_xlink_t *xl, int fd, int64_t deadline_ms,
                                       llk_msg_auth_challenge_t *ch, char *detail, size_t dlen)
{
    uint8_t buf[LLK_WIRE_HEADER_SIZE + LLK_WIRE_MAX_REJECT_MSG + 8];
    if (llk_xlink_recv_all(xl, fd, buf, LLK_WIRE_HEADER_SIZE, deadline_ms) != 0) {
        snprintf(detail, dlen, "no answer to a data stream's AUTH_HELLO: %s", strerror(errno));
        return io_status();
    }
    llk_frame_header_t h;
    llk_wire_read_header(buf, &h);
    llk_header_check_t chk = llk_wire_check_header(&h);
    if (chk != LLK_HDR_OK || h.length > sizeof buf - LLK_WIRE_HEADER_SIZE ||
        (h.type != LLK_MSG_AUTH_CHALLENGE && h.type != LLK_MSG_REJECT)) {
        snprintf(detail, dlen, "bad answer to a data stream's AUTH_HELLO (%s, type %u)",
                 llk_wire_header_check_str(chk), h.type);
        return LLMLINK_PROTOCOL_ERROR;
    }
    uint8_t *payload = buf + LLK_WIRE_HEADER_SIZE;
    if (llk_xlink_recv_all(xl, fd, payload, h.length, deadline_ms) != 0) {
        snprintf(detail, dlen, "truncated answer to AUTH_HELLO: %s", strerror(errno));
        return io_status();
    }
    const char *why = "?";
    if (h.type == LLK_MSG_REJECT) {
        llk_msg_reject_t rj;
        if (llk_wire_decode_reject(payload, h.length, &rj, &why) != 0) {
            snprintf(detail, dlen, "bad REJECT to AUTH_HELLO: %s", why);
            return LLMLINK_PROTOCOL_ERROR;
        }
        snprintf(detail, dlen, "data stream refused: %s (%s)", rj.message,
                 llmlink_status_name(rj.status));
        return rj.status == LLMLINK_AUTH_FAILED ? LLMLINK_AUTH_FAILED : LLMLINK_LINK_FAILED;
    }
    if (llk_wire_decode_auth_challenge(payload, h.length, ch, &why) != 0) {
        snprintf(detail, dlen, "bad AUTH_CHALLENGE: %s", why);
        return LLMLINK_PROTOCOL_ERROR;
    }
    return LLMLINK_SUCCESS;
}

llmlink_status_t llk_stream_auth_attach(llmlink_t *e, llk_xlink_t *xl, int fd,
                                        const uint8_t nc[32], llk_msg_attach_t *m,
                                        int64_t deadline_ms, char *detail, size_t dlen)
{
    llk_msg_auth_challenge_t ch;
    llmlink_status_t st = read_challenge(xl, fd, deadline_ms, &ch, detail, dlen);
    if (st != LLMLINK_SUCCESS)
        return st;
    if (!llk_auth_mac_ok(e->auth, true, nc, ch.ns, ch.mac)) {
        snprintf(detail, dlen, "data stream to %s: the server's proof does not match this "
                 "side's key", xl->peer);
        return LLMLINK_AUTH_FAILED;
    }
    if (!xl->has_ks) {
        snprintf(detail, dlen, "the link with %s has no session key", xl->peer);
        return LLMLINK_AUTH_FAILED;
    }
    /* AUTH_PROOF, then the ATTACH with MAC_a over its fixed bytes. */
    uint8_t f[2 * LLK_WIRE_HEADER_SIZE + LLK_AUTH_MAC_SIZE + 128];
    uint8_t mac[LLK_AUTH_MAC_SIZE];
    size_t n = 0, a = 0;
    if (llk_auth_mac(e->auth, false, nc, ch.ns, mac) == 0)
        n = llk_wire_encode_auth_proof(f, sizeof f, LLK_WIRE_VERSION, mac);
    m->has_mac = false;
    if (n)
        a = llk_wire_encode_attach(f + n, sizeof f - n, LLK_WIRE_VERSION, m);
    if (a && llk_auth_attach_mac(xl->ks, nc, ch.ns, f + n + LLK_WIRE_HEADER_SIZE, m->mac) == 0) {
        m->has_mac = true;
        a = llk_wire_encode_attach(f + n, sizeof f - n, LLK_WIRE_VERSION, m);
    } else {
        a = 0;
    }
    if (!n || !a) {
        snprintf(detail, dlen, "cannot make a data stream's AUTH_PROOF / ATTACH");
        return LLMLINK_FAILED;
    }
    if (llk_xlink_send_all(xl, fd, f, n + a, deadline_ms) != 0) {
        snprintf(detail, dlen, "ATTACH to %s: %s", xl->peer, strerror(errno));
        return io_status();
    }
    return LLMLINK_SUCCESS;
}

/* link/auth_handshake.c - the authentication exchange on a control or data
 * connection, in the reactor (link/wire.h "Authentication"). The server's
 * side runs before HELLO / ATTACH handling (llk_auth_server_gate); the
 * client's between connect and HELLO. A data stream's client side runs on
 * the API thread (xfer/stream_auth.c). */
#include <stdio.h>
#include <string.h>

#include "base/clock.h"
#include "base/crypto.h"
#include "link/engine.h"
#include "base/log.h"

void llk_auth_count_failure(llmlink_t *e, int64_t now, const char *peer, const char *why)
{
    e->auth_failures++;
    /* A peer without the key can cause this at will: one WARN a second. */
    llk_server_warn_limit(e, now, "authentication failed with %s: %s (%llu such failures)", peer,
                          why, (unsigned long long)e->auth_failures);
}

/* Server: refuse c with AUTH_FAILED. The message names only the cause: a
 * peer that has not proved the key learns nothing about this engine. */
static void refuse(llmlink_t *e, llk_conn_t *c, int64_t now, const char *msg)
{
    llk_auth_count_failure(e, now, c->peer, msg);
    e->hs_rejected++;
    llk_metrics_hs_refused(&e->metrics, LLMLINK_AUTH_FAILED);
    llk_conn_queue_reject(c, LLMLINK_AUTH_FAILED, "%s", msg);
    llk_conn_set_state(e, c, LLK_CONN_CLOSING);
    c->deadline_ms = 0;
}

static bool is_auth_frame(uint16_t type)
{
    return type == LLK_MSG_AUTH_HELLO || type == LLK_MSG_AUTH_CHALLENGE ||
           type == LLK_MSG_AUTH_PROOF;
}

/* AUTH_HELLO: a fresh Ns, MAC_s, AUTH_CHALLENGE. */
static void on_auth_hello(llmlink_t *e, llk_conn_t *c, const llk_frame_header_t *h,
                          const uint8_t *payload, int64_t now)
{
    llk_msg_auth_hello_t m;
    const char *why = NULL;
    if (llk_wire_decode_auth_hello(payload, h->length, &m, &why) != 0) {
        e->protocol_errors++;
        refuse(e, c, now, "malformed AUTH_HELLO");
        return;
    }
    if (m.scheme != LLK_AUTH_SCHEME_PSK1) {
        char msg[96];
        snprintf(msg, sizeof msg, "authentication scheme %u not supported (this side: %u)",
                 m.scheme, LLK_AUTH_SCHEME_PSK1);
        refuse(e, c, now, msg);
        return;
    }
    llk_msg_auth_challenge_t ch;
    memcpy(c->auth.nc, m.nc, sizeof c->auth.nc);
    if (llk_auth_nonce(c->auth.ns) != 0 || llk_auth_mac(e->auth, true, c->auth.nc, c->auth.ns,
                                                        ch.mac) != 0) {
        LLK_ERROR("cluster %llu: libcrypto failed during a handshake with %s",
                  (unsigned long long)e->cluster_id, c->peer);
        e->hs_rejected++;
        llk_metrics_hs_refused(&e->metrics, LLMLINK_FAILED);
        llk_conn_queue_reject(c, LLMLINK_FAILED, "internal error");
        llk_conn_set_state(e, c, LLK_CONN_CLOSING);
        c->deadline_ms = 0;
        return;
    }
    memcpy(ch.ns, c->auth.ns, sizeof ch.ns);
    uint8_t f[LLK_WIRE_HEADER_SIZE + 2 * LLK_AUTH_MAC_SIZE];
    size_t n = llk_wire_encode_auth_challenge(f, sizeof f, LLK_WIRE_VERSION, &ch);
    if (!llk_conn_queue(c, f, n)) {
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
        return;
    }
    c->auth.stage = LLK_AUTH_SRV_CHALLENGED;
}

/* What follows AUTH_CHALLENGE: AUTH_PROOF, or the client's REJECT when our
 * MAC_s did not match its key. */
static void on_after_challenge(llmlink_t *e, llk_conn_t *c, const llk_frame_header_t *h,
                               const uint8_t *payload, int64_t now)
{
    if (h->type == LLK_MSG_REJECT) {
        llk_auth_count_failure(e, now, c->peer,
                               "the client refused this engine's proof (the two keys differ)");
        e->hs_rejected++;
        llk_metrics_hs_refused(&e->metrics, LLMLINK_AUTH_FAILED);
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
        return;
    }
    uint8_t mac[LLK_AUTH_MAC_SIZE];
    const char *why = NULL;
    if (h->type != LLK_MSG_AUTH_PROOF ||
        llk_wire_decode_auth_proof(payload, h->length, mac, &why) != 0) {
        e->protocol_errors++;
        refuse(e, c, now, "expected AUTH_PROOF");
        return;
    }
    if (!llk_auth_mac_ok(e->auth, false, c->auth.nc, c->auth.ns, mac)) {
        refuse(e, c, now, "authentication failed (wrong key)");
        return;
    }
    c->auth.stage = LLK_AUTH_DONE;
}

bool llk_auth_server_gate(llmlink_t *e, llk_conn_t *c, const llk_frame_header_t *h,
                          const uint8_t *payload, int64_t now)
{
    if (!e->auth) {
        if (!is_auth_frame(h->type))
            return true;
        refuse(e, c, now, "this engine has no key (llmlink.AuthKey / llmlink.AuthKeyFile)");
        return false;
    }
    switch ((llk_auth_stage_t)c->auth.stage) {
    case LLK_AUTH_DONE:
        if (!is_auth_frame(h->type))
            return true;
        e->protocol_errors++;
        refuse(e, c, now, "authentication frame after authentication");
        return false;
    case LLK_AUTH_SRV_CHALLENGED:
        on_after_challenge(e, c, h, payload, now);
        return false;
    default:
        if (h->type == LLK_MSG_AUTH_HELLO)
            on_auth_hello(e, c, h, payload, now);
        else
            refuse(e, c, now, "authentication required");
        return false;
    }
}

bool llk_auth_client_hello(llmlink_t *e, llk_conn_t *c)
{
    llk_msg_auth_hello_t m = {.scheme = LLK_AUTH_SCHEME_PSK1};
    if (llk_auth_nonce(c->auth.nc) != 0) {
        llk_conn_complete(e, c, LLMLINK_FAILED, "libcrypto: no random bytes for a nonce");
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
        return false;
    }
    memcpy(m.nc, c->auth.nc, sizeof m.nc);
    uint8_t f[LLK_WIRE_HEADER_SIZE + 1 + LLK_AUTH_NONCE_SIZE];
    size_t n = llk_wire_encode_auth_hello(f, sizeof f, LLK_WIRE_VERSION, &m);
    if (!llk_conn_queue(c, f, n)) {
        llk_conn_complete(e, c, LLMLINK_LINK_FAILED, "cannot queue AUTH_HELLO");
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
        return false;
    }
    c->auth.stage = LLK_AUTH_CLI_WAIT_CHALLENGE;
    return true;
}

/* Client: the server failed; tell it (so that it counts and logs the
 * failure too), then give up with AUTH_FAILED. */
static void client_fail(llmlink_t *e, llk_conn_t *c, int64_t now, const char *msg)
{
    llk_conn_queue_reject(c, LLMLINK_AUTH_FAILED, "%s", msg);
    llk_conn_flush(e, c, now); /* best effort: a REJECT fits the empty socket */
    llk_conn_complete(e, c, LLMLINK_AUTH_FAILED, "peer %s: %s", c->peer, msg);
    llk_conn_set_state(e, c, LLK_CONN_DEAD);
}

bool llk_auth_client_on_challenge(llmlink_t *e, llk_conn_t *c, const llk_frame_header_t *h,
                                  const uint8_t *payload, int64_t now)
{
    llk_msg_auth_challenge_t ch;
    const char *why = NULL;
    if (h->type != LLK_MSG_AUTH_CHALLENGE) {
        client_fail(e, c, now, "the server did not authenticate (no key there, or not llmlink "
                    "with authentication)");
        return false;
    }
    if (llk_wire_decode_auth_challenge(payload, h->length, &ch, &why) != 0) {
        e->protocol_errors++;
        client_fail(e, c, now, "malformed AUTH_CHALLENGE");
        return false;
    }
    if (!llk_auth_mac_ok(e->auth, true, c->auth.nc, ch.ns, ch.mac)) {
        client_fail(e, c, now, "the server's proof does not match this side's key "
                    "(wrong key on one side)");
        return false;
    }
    memcpy(c->auth.ns, ch.ns, sizeof c->auth.ns);
    uint8_t mac[LLK_AUTH_MAC_SIZE];
    uint8_t f[LLK_WIRE_HEADER_SIZE + LLK_AUTH_MAC_SIZE];
    size_t n = 0;
    if (llk_auth_mac(e->auth, false, c->auth.nc, c->auth.ns, mac) == 0)
        n = llk_wire_encode_auth_proof(f, sizeof f, LLK_WIRE_VERSION, mac);
    if (!n || !llk_conn_queue(c, f, n)) {
        llk_conn_complete(e, c, LLMLINK_FAILED, "cannot make or queue AUTH_PROOF");
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
        return false;
    }
    c->auth.stage = LLK_AUTH_DONE;
    return true;
}

bool llk_auth_bind_link(llmlink_t *e, llk_conn_t *c, llk_xlink_t *xl)
{
    if (!e->auth)
        return true;
    if (c->auth.stage != LLK_AUTH_DONE ||
        llk_auth_session_key(e->auth, c->auth.nc, c->auth.ns, xl->ks) != 0)
        return false;
    xl->has_ks = true;
    return true;
}

bool llk_auth_attach_ok_locked(llmlink_t *e, llk_conn_t *c, const uint8_t *ks,
                               const uint8_t *payload, const llk_msg_attach_t *m)
{
    uint8_t want[LLK_AUTH_MAC_SIZE];
    bool ok = ks && m->has_mac && c->auth.stage == LLK_AUTH_DONE &&
              llk_auth_attach_mac(ks, c->auth.nc, c->auth.ns, payload, want) == 0 &&
              llk_crypto_equal(want, m->mac, sizeof want);
    llk_crypto_wipe(want, sizeof want);
    if (!ok)
        llk_auth_count_failure(e, llk_now_ms(), c->peer,
                               m->has_mac ? "a data stream's ATTACH MAC is wrong"
                                          : "a data stream's ATTACH carries no MAC");
    return ok;
}

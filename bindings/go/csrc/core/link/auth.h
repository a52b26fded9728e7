/*
 * auth.h - pre-shared-key mutual authentication of connections
 * (llmlink.AuthKey / llmlink.AuthKeyFile). The protocol, its frames and
 * derivations are in link/wire.h ("Authentication"); the threat model is in
 * docs/security.md. The primitives come from base/crypto.h (OpenSSL).
 *
 * The key lives in engine memory only (llk_auth_key_t, wiped when freed):
 * never logged, never in a message, never in llk_options_t (which holds
 * only the caller's strings during llmlink_init).
 */
#ifndef LLK_AUTH_H
#define LLK_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmlink.h"
#include "link/wire.h"

#define LLK_AUTH_KEY_MIN 32u   /* bytes of key material at least */
#define LLK_AUTH_KEY_MAX 4096u /* bytes at most (a key file larger is a mistake) */

typedef struct llk_auth_key {
    uint8_t *raw; /* the key material (raw_len bytes), for the session keys */
    size_t raw_len;
    uint8_t k_mac[32]; /* K = HKDF(key, "llmlink auth v1", "mac"): the handshake MACs */
} llk_auth_key_t;

/* Where one connection is in the authentication exchange (llk_conn_t). */
typedef enum llk_auth_stage {
    LLK_AUTH_NONE = 0,          /* nothing exchanged yet */
    LLK_AUTH_SRV_CHALLENGED,    /* server: AUTH_CHALLENGE sent, waiting for AUTH_PROOF */
    LLK_AUTH_CLI_WAIT_CHALLENGE,/* client: AUTH_HELLO sent */
    LLK_AUTH_DONE               /* both proofs checked */
} llk_auth_stage_t;

typedef struct llk_auth_hs {
    uint8_t stage; /* llk_auth_stage_t */
    uint8_t nc[LLK_AUTH_NONCE_SIZE];
    uint8_t ns[LLK_AUTH_NONCE_SIZE];
} llk_auth_hs_t;

/* Hex key (llmlink.AuthKey): an even number of hex digits, at least 64
 * (32 bytes), at most 2 * LLK_AUTH_KEY_MAX. Decodes into out (capacity
 * cap, may be NULL to only check) and *len. -1 with a static reason in
 * *why, which never quotes the value. */
int llk_auth_hex_decode(const char *hex, uint8_t *out, size_t cap, size_t *len,
                        const char **why);

/* Loads the key from a file (llmlink.AuthKeyFile, raw bytes) or from hex;
 * exactly one of file, hex is non-NULL. The file is opened, then checked
 * with fstat on that descriptor: a regular file, not readable or writable
 * by group or others (mode & 077, as ssh requires of its keys), 32..4096
 * bytes. PARAM_INVALID with a message naming the file (never the key) in
 * err, OUT_OF_MEMORY, or FAILED when libcrypto fails. */
llmlink_status_t llk_auth_key_load(const char *file, const char *hex, llk_auth_key_t **out,
                                   char *err, size_t errlen);
/* Wipes and frees; NULL is a no-op. */
void llk_auth_key_free(llk_auth_key_t *k);

/* A fresh nonce; -1 when the DRBG fails. */
int llk_auth_nonce(uint8_t out[LLK_AUTH_NONCE_SIZE]);
/* MAC_s (server = true) or MAC_c over nc | ns. */
int llk_auth_mac(const llk_auth_key_t *k, bool server, const uint8_t nc[LLK_AUTH_NONCE_SIZE],
                 const uint8_t ns[LLK_AUTH_NONCE_SIZE], uint8_t out[LLK_AUTH_MAC_SIZE]);
/* mac is the right MAC_s / MAC_c for nc | ns (constant-time comparison). */
bool llk_auth_mac_ok(const llk_auth_key_t *k, bool server, const uint8_t nc[LLK_AUTH_NONCE_SIZE],
                     const uint8_t ns[LLK_AUTH_NONCE_SIZE], const uint8_t mac[LLK_AUTH_MAC_SIZE]);
/* Ks = HKDF(key, salt nc | ns, info "llmlink session v1"). */
int llk_auth_session_key(const llk_auth_key_t *k, const uint8_t nc[LLK_AUTH_NONCE_SIZE],
                         const uint8_t ns[LLK_AUTH_NONCE_SIZE], uint8_t ks[32]);
/* MAC_a = HMAC(ks, "llmlink attach v1" | nc | ns | fixed) where fixed is
 * the first LLK_WIRE_ATTACH_FIXED bytes of the ATTACH payload. */
int llk_auth_attach_mac(const uint8_t ks[32], const uint8_t nc[LLK_AUTH_NONCE_SIZE],
                        const uint8_t ns[LLK_AUTH_NONCE_SIZE],
                        const uint8_t fixed[LLK_WIRE_ATTACH_FIXED], uint8_t out[LLK_AUTH_MAC_SIZE]);

#endif /* LLK_AUTH_H */

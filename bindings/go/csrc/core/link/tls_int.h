/* tls_int.h - what tls.c and tls_relay.c share (not for other modules). */
#ifndef LLK_TLS_INT_H
#define LLK_TLS_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "link/tls.h"

struct llk_tls {
    SSL_CTX *ctx;
    _Atomic uint32_t refs; /* the engine's, and one per running relay */
    _Atomic uint64_t auth_refusals, handshakes, ktls_send, ktls_both;
    _Atomic int64_t warn_next_ms; /* refusals: one WARN a second */
    _Atomic uint64_t warn_suppressed;
};

/* One relayed descriptor, found by its plaintext end's socket cookie. The
 * relay fills it before registering it; afterwards peer_ended is atomic,
 * why/auth/gone_ms change under the registry lock. */
typedef struct llk_tls_entry {
    struct llk_tls_entry *next;
    uint64_t cookie;
    struct sockaddr_storage local, peer; /* the TCP socket's */
    socklen_t local_len, peer_len;
    atomic_bool peer_ended;
    bool auth;
    char why[224]; /* "" = no failure */
    int64_t gone_ms; /* the relay ended then; 0 = running */
} llk_tls_entry_t;

void llk_tls_ref(llk_tls_t *t);
void llk_tls_registry_add(llk_tls_entry_t *en);
void llk_tls_registry_lock(void);
void llk_tls_registry_unlock(void);
bool llk_tls_cookie(int fd, uint64_t *cookie);

#endif /* LLK_TLS_INT_H */

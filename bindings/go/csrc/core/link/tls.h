/*
 * tls.h - optional mutual TLS 1.3 below the llmlink frames (llmlink.TlsCertFile,
 * llmlink.TlsKeyFile, llmlink.TlsCaFile; docs/security.md).
 *
 * Design: a relay. Every connection of a TLS engine (accepted by the
 * listener, or opened by the client: control connection and data streams)
 * is handed, once its TCP connect is done, to a relay thread that owns the
 * TCP socket and its SSL object; the rest of the library gets one end of a
 * socketpair(AF_UNIX, SOCK_STREAM) instead and reads and writes plaintext
 * frames on it exactly as on a TCP socket. The relay drives the handshake
 * itself (its own thread: the reactor never blocks on a peer), bounded by
 * the deadline it is given (a server connection: the first-frame deadline,
 * which the reactor also enforces on the plaintext end, inside its
 * handshake slot), then copies both ways with SSL_read / SSL_write
 * (OpenSSL moves the record layer into the kernel where the kernel offers
 * kTLS: SSL_OP_ENABLE_KTLS).
 *
 * What the relay keeps of TCP semantics, for the fences (transport/tcp.c,
 * xfer/requester.c): the plaintext end's shutdown or close becomes, after
 * what it had queued, a close_notify and a FIN on the TCP socket; the
 * peer's FIN (or an error) becomes EOF on the plaintext end; and whether
 * the TLS peer has ended its side is asked with llk_tls_peer_ended instead
 * of TCP_INFO. The socket addresses of a relayed descriptor are the TCP
 * socket's (llk_tls_getsockname / llk_tls_getpeername), for the host
 * identity, the shm peer proof and the RDMA rails.
 */
#ifndef LLK_TLS_H
#define LLK_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/options.h"
#include "llmlink.h"

typedef struct llk_tls llk_tls_t;

/* The engine's TLS context from its options: NULL with SUCCESS when no Tls
 * option is set; PARAM_INVALID (message in err, naming the option, the
 * file and OpenSSL's reason) when only some are, or a file does not load,
 * or the key does not match the certificate, or the key file is readable
 * by group or others. */
llmlink_status_t llk_tls_load(const llk_options_t *o, llk_tls_t **out, char *err, size_t errlen);
/* Drops the engine's reference; relays still running keep theirs. */
void llk_tls_release(llk_tls_t *t);

/* Hands a connected TCP socket to a new relay (the server side of TLS when
 * `server`): returns the plaintext descriptor (non-blocking, close-on-exec)
 * the caller uses instead, or -1 with errno. tcp_fd belongs to the relay
 * (or is closed) in either case. `handshake_ms` bounds the handshake;
 * `peer` names the peer in logs. */
int llk_tls_wrap(llk_tls_t *t, int tcp_fd, bool server, uint32_t handshake_ms, const char *peer);

/* getsockname / getpeername that answer, for a relayed descriptor, with
 * its TCP socket's addresses (ENOTCONN once the relay is gone). */
int llk_tls_getsockname(int fd, struct sockaddr *sa, socklen_t *len);
int llk_tls_getpeername(int fd, struct sockaddr *sa, socklen_t *len);

/* For a relayed descriptor: 1 when the TLS peer has closed its end (FIN,
 * close_notify, reset or error), or the relay is gone; 0 while it may
 * still send. -1 when fd is not relayed (ask TCP_INFO). */
int llk_tls_peer_ended(int fd);

/* Why the relay of fd failed its handshake or the first read after it, if
 * it did: true and the reason in why; *auth is true when the failure is a
 * certificate that did not verify (this side's check, or the peer's alert
 * about ours). False when fd is not relayed or did not fail. */
bool llk_tls_failure(int fd, char *why, size_t n, bool *auth);

/* Counters (tests, the benchmark): server-side handshakes refused because
 * the peer's certificate was missing or did not verify; relays whose
 * handshake completed; of those, with kTLS sending, and with kTLS in both
 * directions (OpenSSL 3.0 offers TLS 1.3 kTLS for sending only). */
uint64_t llk_tls_auth_refusals(const llk_tls_t *t);
uint64_t llk_tls_handshakes(const llk_tls_t *t);
uint64_t llk_tls_ktls_send(const llk_tls_t *t);
uint64_t llk_tls_ktls_both(const llk_tls_t *t);

#endif /* LLK_TLS_H */

/*
 * rawpeer.h - raw TCP peers for single-process integration tests.
 *
 * Tests use these to play the other side of a link without an engine:
 *  - a raw client that connects to an engine's listener on 127.0.0.1,
 *    sends hand-built bytes (good frames, bad frames, garbage) and reads the
 *    answer with a timeout, or waits (bounded) for the engine to close;
 *  - a raw fake server on 127.0.0.1:0, run in its own thread, that accepts
 *    and never answers, or reads one HELLO and answers with bytes the test
 *    built (a WELCOME or REJECT of another version, with another cluster
 *    id, garbage, ...), or closes right after the HELLO.
 *
 * Everything here is bounded: every wait takes a timeout in milliseconds,
 * and the server thread stops on rawpeer_server_stop() (and on its own
 * after RAWPEER_SERVER_MAX_LIFE_MS as a backstop). Only loopback addresses
 * are used. Functions never call cmocka: they return codes the test checks,
 * so they may run on any thread.
 */
#ifndef LLK_TEST_RAWPEER_H
#define LLK_TEST_RAWPEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "link/wire.h"

/* Result codes (rawpeer_recv returns a byte count > 0 or one of these). */
#define RAWPEER_OK 0
#define RAWPEER_CLOSED (-1)  /* the peer closed the connection (EOF or reset) */
#define RAWPEER_TIMEOUT (-2) /* nothing happened within the timeout */
#define RAWPEER_ERROR (-3)   /* another socket error (errno is set) */
#define RAWPEER_BAD_FRAME (-4) /* the bytes read are not an llmlink frame */

/* Monotonic milliseconds, truncated exactly as the library's own clock
 * (core/clock.h), so elapsed times compare with its deadlines. */
int64_t rawpeer_now_ms(void);
void rawpeer_sleep_ms(int ms);

/* ---- raw client ------------------------------------------------------- */

/* Connects to 127.0.0.1:port within timeout_ms. Returns a non-blocking fd,
 * or -1 (errno set). */
int rawpeer_connect(uint16_t port, int timeout_ms);
/* Sends all of buf within timeout_ms: RAWPEER_OK, RAWPEER_CLOSED,
 * RAWPEER_TIMEOUT or RAWPEER_ERROR. */
int rawpeer_send(int fd, const void *buf, size_t len, int timeout_ms);
/* Reads what is there (at most len bytes), waiting up to timeout_ms for
 * something: the byte count (> 0), RAWPEER_CLOSED, RAWPEER_TIMEOUT or
 * RAWPEER_ERROR. */
ssize_t rawpeer_recv(int fd, void *buf, size_t len, int timeout_ms);
/* Reads exactly len bytes within timeout_ms (the whole read): RAWPEER_OK or
 * an error code. */
int rawpeer_recv_exact(int fd, void *buf, size_t len, int timeout_ms);
/* Reads one frame within timeout_ms: the header into *h and the payload
 * into payload (capacity cap, at least h->length). The header's magic and
 * length are checked (RAWPEER_BAD_FRAME), its version and type are not:
 * that is for the test. */
int rawpeer_recv_frame(int fd, llk_frame_header_t *h, uint8_t *payload, size_t cap,
                       int timeout_ms);
/* Reads and discards until the peer closes: RAWPEER_OK when it closed
 * within timeout_ms (EOF or connection reset), else RAWPEER_TIMEOUT or
 * RAWPEER_ERROR. */
int rawpeer_wait_closed(int fd, int timeout_ms);
/* close() when fd >= 0. */
void rawpeer_close(int fd);

/* A port on 127.0.0.1 where nothing listens, held by a bound, not
 * listening socket (so a connect gets ECONNREFUSED and no other test takes
 * the port). The socket has SO_REUSEADDR, so an engine may later listen on
 * the same port. Returns the fd (close it when done), or -1. */
int rawpeer_reserve_port(uint16_t *port);

/* ---- frames ----------------------------------------------------------- */

/* A HELLO from a DECODER: client_id, target_id, expected role any, the
 * given liveness. Returns the frame size (0 if it does not fit). */
size_t rawpeer_hello(uint8_t *out, size_t cap, uint16_t version, uint64_t client_id,
                     uint64_t target_id, uint32_t liveness_ms);
/* A WELCOME from server_id with that role and liveness 3000 ms. */
size_t rawpeer_welcome(uint8_t *out, size_t cap, uint16_t version, uint64_t server_id,
                       uint32_t server_role);

/* ---- raw fake server ---------------------------------------------------- */

typedef enum rawpeer_mode {
    RAWPEER_SILENT = 0,           /* accept; read and discard; never answer */
    RAWPEER_REPLY,                /* read one HELLO frame, send the reply bytes */
    RAWPEER_CLOSE_AFTER_HELLO     /* read one HELLO frame, close */
} rawpeer_mode_t;

#define RAWPEER_SERVER_MAX_CONNS 32
#define RAWPEER_SERVER_MAX_LIFE_MS 120000
#define RAWPEER_MAX_REPLY (LLK_WIRE_MAX_FRAME + 64)

typedef struct rawpeer_server rawpeer_server_t;

/* Listens on 127.0.0.1:0 and serves every connection in `mode` from its own
 * thread. reply (copied) is what RAWPEER_REPLY sends after a HELLO. A
 * connection's "HELLO" is its first 16-byte header plus the length it
 * announces (capped at LLK_WIRE_MAX_PAYLOAD). Returns NULL on failure. */
rawpeer_server_t *rawpeer_server_start(rawpeer_mode_t mode, const void *reply, size_t reply_len);
uint16_t rawpeer_server_port(const rawpeer_server_t *s);
/* Connections accepted / HELLO frames read so far. */
unsigned rawpeer_server_accepted(rawpeer_server_t *s);
unsigned rawpeer_server_hellos(rawpeer_server_t *s);
/* Waits (bounded) until at least n connections were accepted. */
bool rawpeer_server_wait_accepted(rawpeer_server_t *s, unsigned n, int timeout_ms);
/* Waits (bounded) until the peers closed every accepted connection. */
bool rawpeer_server_wait_all_closed(rawpeer_server_t *s, int timeout_ms);
/* The header and decoded payload of the last HELLO read (extension
 * pointers are cleared); false if none was read or it did not decode. */
bool rawpeer_server_last_hello(rawpeer_server_t *s, llk_frame_header_t *h, llk_msg_hello_t *m);
/* Stops the thread, closes every socket, frees s. NULL is a no-op. */
void rawpeer_server_stop(rawpeer_server_t *s);

#endif /* LLK_TEST_RAWPEER_H */

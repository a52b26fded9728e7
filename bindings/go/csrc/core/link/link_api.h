/*
 * link_api.h - what the transfer plane (core/xfer) may ask of the link
 * plane, so that it neither walks e->conns nor changes a connection's
 * state itself.
 *
 * A link's transfer side is known to the link plane only as the opaque
 * attachment the transfer plane hung on its control connection
 * (llk_conn_set_xfer); these functions take and return that pointer.
 *
 * Locks. Functions ending in _locked need the engine mutex (e->mu) held:
 * the reactor holds it when it hands a frame over; another thread takes it
 * with llk_link_lock. The others take it themselves and must be called
 * without it. The order is e->mu before any transfer-plane lock (xl->mu),
 * never the reverse; the owner thread (xfer/owner.c) never takes e->mu and
 * so calls none of these.
 */
#ifndef LLK_LINK_API_H
#define LLK_LINK_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmlink.h"

struct llk_conn;

void llk_link_lock(llmlink_t *e);
void llk_link_unlock(llmlink_t *e);

/*
 * The established link with remote_id, for a transfer by API call fn. Not
 * SUCCESS (with llmlink_last_error set) when the engine does not run.
 * Else *xfer_ctx is the attachment of its LINKED control connection (NULL:
 * the link has none) and *peer that connection's address text, or both
 * NULL when no LINKED connection exists. A MIX engine may hold both
 * directions: the one it made wins. Both pointers stay valid while e->mu
 * is held.
 */
llmlink_status_t llk_link_find_locked(llmlink_t *e, uint64_t remote_id, const char *fn,
                                      void **xfer_ctx, const char **peer);

/*
 * Ends the link whose control connection carries xfer_ctx (a transfer on
 * it failed): its API waiter, if any, gets the unlink failure, the link
 * counts as lost, the connection is closed by the reactor. Nothing if no
 * link carries it any more. Takes e->mu.
 */
void llk_link_kill(llmlink_t *e, const void *xfer_ctx, const char *why);

/*
 * Calls fn for every LINKED connection that carries a transfer side, with
 * its attachment, direction, peer id and address text (valid during the
 * call). e->mu held (llk_link_lock); fn must not take it.
 */
typedef void llk_link_each_fn(void *arg, void *xfer_ctx, bool outbound, uint64_t remote_id,
                              const char *peer);
void llk_link_each_locked(llmlink_t *e, llk_link_each_fn *fn, void *arg);

/* ---- data streams: an ATTACH on a fresh server connection c ----------- */

/* A data stream is no handshake: takes c out of the handshake counts. */
void llk_link_stream_begin_locked(llmlink_t *e);
/*
 * The attachment of the inbound LINKED link that an ATTACH names: from
 * client_id (at client_incarnation) to this engine (server_id at
 * server_incarnation, both checked against this engine). NULL when there
 * is no such link or it has no attachment.
 */
void *llk_link_attach_target_locked(llmlink_t *e, uint64_t server_id,
                                    uint64_t server_incarnation, uint64_t client_id,
                                    uint64_t client_incarnation);
/* Refuses the stream: REJECT(status, msg), then c closes. protocol_error:
 * count it as a protocol error too. */
void llk_link_stream_refuse_locked(llmlink_t *e, struct llk_conn *c, llmlink_status_t status,
                                   bool protocol_error, const char *msg);
/*
 * Sends the answer frame (it must fit the empty socket at once) and takes
 * c's descriptor away from the reactor: returns it, now the caller's.
 * -1 when the answer could not go out. c dies either way.
 */
int llk_link_stream_take_fd_locked(llmlink_t *e, struct llk_conn *c, const uint8_t *frame,
                                   size_t len);

#endif /* LLK_LINK_API_H */

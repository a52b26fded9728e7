/* xfer_args.h - the transfer calls' argument checks (ffi/api_cache.c),
 * shared by the blocking calls and their *_async forms (ffi/api_task.c):
 * one function per call fills an llk_xfer_req_t or fails with a message
 * naming the argument. The request points at the caller's lists. */
#ifndef LLK_FFI_XFER_ARGS_H
#define LLK_FFI_XFER_ARGS_H

#include "xfer/xfer.h"

llmlink_status_t llk_args_pull_blocks(llk_xfer_req_t *req, const char *fn,
                                      const llmlink_cache_key_t *src_key, int64_t dst_cache_id,
                                      const uint64_t *src_blocks, size_t num_src_blocks,
                                      const uint64_t *dst_blocks, size_t num_dst_blocks,
                                      const llmlink_layer_range_t *layers);
llmlink_status_t llk_args_push_blocks(llk_xfer_req_t *req, const char *fn,
                                      const llmlink_cache_key_t *dst_key, int64_t src_cache_id,
                                      const uint64_t *src_blocks, size_t num_src_blocks,
                                      const uint64_t *dst_blocks, size_t num_dst_blocks,
                                      const llmlink_layer_range_t *layers);
/* pull_cache (push false) / push_cache. */
llmlink_status_t llk_args_cache(llk_xfer_req_t *req, const char *fn, bool push,
                                const char *key_arg, const llmlink_cache_key_t *key,
                                const char *id_arg, int64_t local_id, uint32_t local_batch,
                                int64_t size, const llmlink_layer_range_t *layers);
/* One layer range (the blocking calls' rules); one key of any type. */
llmlink_status_t llk_args_layers(const char *fn, const llmlink_layer_range_t *layers);
llmlink_status_t llk_args_key(const char *fn, const char *arg, const llmlink_cache_key_t *key);
/* src[i] -> dst[i]: both lists valid, equal counts >= 1, dst unique. */
llmlink_status_t llk_args_block_pairs(const char *fn, const uint64_t *src, size_t nsrc,
                                      const uint64_t *dst, size_t ndst);

#endif /* LLK_FFI_XFER_ARGS_H */

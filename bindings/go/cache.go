//go:build cgo

package llmlink

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// DataType is an llmlink_data_type_t (llm_datadist's DataType).
type DataType uint32

const (
	DTFloat   DataType = C.LLMLINK_DT_FLOAT
	DTFloat16 DataType = C.LLMLINK_DT_FLOAT16
	DTInt8    DataType = C.LLMLINK_DT_INT8
	DTInt32   DataType = C.LLMLINK_DT_INT32
	DTUint8   DataType = C.LLMLINK_DT_UINT8
	DTInt16   DataType = C.LLMLINK_DT_INT16
	DTUint16  DataType = C.LLMLINK_DT_UINT16
	DTUint32  DataType = C.LLMLINK_DT_UINT32
	DTInt64   DataType = C.LLMLINK_DT_INT64
	DTUint64  DataType = C.LLMLINK_DT_UINT64
	DTDouble  DataType = C.LLMLINK_DT_DOUBLE
	DTBool    DataType = C.LLMLINK_DT_BOOL
	DTBF16    DataType = C.LLMLINK_DT_BF16
)

// Size is the bytes of one element, or 0 for a value that is no DataType.
func (d DataType) Size() int64 {
	switch d {
	case DTInt8, DTUint8, DTBool:
		return 1
	case DTFloat16, DTInt16, DTUint16, DTBF16:
		return 2
	case DTFloat, DTInt32, DTUint32:
		return 4
	case DTInt64, DTUint64, DTDouble:
		return 8
	}
	return 0
}

// Placement is an llmlink_placement_t: where a cache's memory lives. Only
// host memory can be registered in this version.
type Placement uint32

const (
	PlacementHost   Placement = C.LLMLINK_PLACEMENT_HOST
	PlacementDevice Placement = C.LLMLINK_PLACEMENT_DEVICE
)

// MaxDims is the most dimensions a cache's shape may have.
const MaxDims = C.LLMLINK_MAX_DIMS

// CacheDesc describes a cache (llmlink_cache_desc_t): NumTensors tensors
// (K and V of each layer: K0 V0 K1 V1 ...), each of Shape and DataType.
// Shape[0] is the number of blocks (blocks caches) or the batch size.
type CacheDesc struct {
	NumTensors uint32
	DataType   DataType
	Placement  Placement
	Shape      []int64
}

// TensorBytes is the size of one tensor: the product of Shape times the
// element size.
func (d CacheDesc) TensorBytes() int64 {
	n := d.DataType.Size()
	for _, s := range d.Shape {
		n *= s
	}
	return n
}

func (d CacheDesc) toC(op string) (C.llmlink_cache_desc_t, error) {
	var c C.llmlink_cache_desc_t
	if len(d.Shape) > MaxDims {
		return c, newError(op, StatusParamInvalid, "shape has %d dimensions, at most %d", len(d.Shape), MaxDims)
	}
	c.num_tensors = C.uint32_t(d.NumTensors)
	c.data_type = C.llmlink_data_type_t(d.DataType)
	c.placement = C.llmlink_placement_t(d.Placement)
	c.num_dims = C.uint32_t(len(d.Shape))
	for i, s := range d.Shape {
		c.shape[i] = C.int64_t(s)
	}
	return c, nil
}

// KeyType is an llmlink_cache_key_type_t.
type KeyType uint32

const (
	KeyCache      KeyType = C.LLMLINK_KEY_CACHE        // CacheKey
	KeyIDAndIndex KeyType = C.LLMLINK_KEY_ID_AND_INDEX // CacheKeyByIdAndIndex
	KeyBlocks     KeyType = C.LLMLINK_KEY_BLOCKS       // BlocksCacheKey
)

// CacheKey names a cache held by the engine of ClusterID (a transfer goes
// over the link to that cluster). Build one with NewCacheKey,
// NewCacheKeyByIDAndIndex or NewBlocksCacheKey: they set the fields the
// type uses (and PrefixID -1, "none", which the zero value is not).
type CacheKey struct {
	Type       KeyType
	ClusterID  uint64
	ReqID      uint64
	ModelID    uint64
	PrefixID   int64 // -1: none
	CacheID    int64
	BatchIndex uint32
}

// NewCacheKey is llm_datadist's CacheKey(prompt_cluster_id, req_id,
// model_id), without prefix.
func NewCacheKey(promptClusterID, reqID, modelID uint64) CacheKey {
	return CacheKey{Type: KeyCache, ClusterID: promptClusterID, ReqID: reqID, ModelID: modelID, PrefixID: -1}
}

// NewCacheKeyWithPrefix is CacheKey(prompt_cluster_id, req_id, model_id, prefix_id).
func NewCacheKeyWithPrefix(promptClusterID, reqID, modelID uint64, prefixID int64) CacheKey {
	k := NewCacheKey(promptClusterID, reqID, modelID)
	k.PrefixID = prefixID
	return k
}

// NewCacheKeyByIDAndIndex is CacheKeyByIdAndIndex(cluster_id, cache_id, batch_index).
func NewCacheKeyByIDAndIndex(clusterID uint64, cacheID int64, batchIndex uint32) CacheKey {
	return CacheKey{Type: KeyIDAndIndex, ClusterID: clusterID, CacheID: cacheID, BatchIndex: batchIndex, PrefixID: -1}
}

// NewBlocksCacheKey is BlocksCacheKey(prompt_cluster_id, model_id).
func NewBlocksCacheKey(promptClusterID, modelID uint64) CacheKey {
	return CacheKey{Type: KeyBlocks, ClusterID: promptClusterID, ModelID: modelID, PrefixID: -1}
}

func (k CacheKey) String() string {
	switch k.Type {
	case KeyCache:
		return fmt.Sprintf("CacheKey(%d, req %d, model %d, prefix %d)", k.ClusterID, k.ReqID, k.ModelID, k.PrefixID)
	case KeyIDAndIndex:
		return fmt.Sprintf("CacheKeyByIdAndIndex(%d, cache %d, batch %d)", k.ClusterID, k.CacheID, k.BatchIndex)
	case KeyBlocks:
		return fmt.Sprintf("BlocksCacheKey(%d, model %d)", k.ClusterID, k.ModelID)
	}
	return fmt.Sprintf("CacheKey(type %d, cluster %d)", uint32(k.Type), k.ClusterID)
}

func (k CacheKey) toC() C.llmlink_cache_key_t {
	return C.llmlink_cache_key_t{
		_type:       C.llmlink_cache_key_type_t(k.Type),
		cluster_id:  C.uint64_t(k.ClusterID),
		req_id:      C.uint64_t(k.ReqID),
		model_id:    C.uint64_t(k.ModelID),
		prefix_id:   C.int64_t(k.PrefixID),
		cache_id:    C.int64_t(k.CacheID),
		batch_index: C.uint32_t(k.BatchIndex),
	}
}

func cKeys(keys []CacheKey) []C.llmlink_cache_key_t {
	out := make([]C.llmlink_cache_key_t, len(keys))
	for i, k := range keys {
		out[i] = k.toC()
	}
	return out
}

func keyPtr(k []C.llmlink_cache_key_t) *C.llmlink_cache_key_t {
	if len(k) == 0 {
		return nil
	}
	return &k[0]
}

func u64Ptr(v []C.uint64_t) *C.uint64_t {
	if len(v) == 0 {
		return nil
	}
	return &v[0]
}

// Access is what peers may do with a cache (llmlink_access_t); this
// engine's own transfers use its caches either way.
type Access uint32

const (
	// AccessNone: not served to peers. A peer's request that names the
	// cache, by any key or id, gets StatusKVCacheNotExist exactly as for a
	// cache that does not exist, and moves no byte (nor drops a key).
	AccessNone Access = C.LLMLINK_ACCESS_NONE
	// AccessRead: peers may pull from it (read this memory); a push gets
	// StatusAccessDenied.
	AccessRead Access = C.LLMLINK_ACCESS_READ
	// AccessWrite: peers may push into it (write this memory); a pull gets
	// StatusAccessDenied.
	AccessWrite Access = C.LLMLINK_ACCESS_WRITE
	// AccessReadWrite: both; what a call without WithAccess registers.
	AccessReadWrite Access = C.LLMLINK_ACCESS_READ_WRITE
)

// String names the access: "none", "read", "write", "read-write", or
// "Access(n)" for a value the library does not know.
func (a Access) String() string {
	switch a {
	case AccessNone:
		return "none"
	case AccessRead:
		return "read"
	case AccessWrite:
		return "write"
	case AccessReadWrite:
		return "read-write"
	}
	return fmt.Sprintf("Access(%d)", uint32(a))
}

// CacheOption is an option of RegisterCache, RegisterBlocksCache,
// AllocateCache and AllocateBlocksCache (the C calls' registration
// options, llmlink_register_options_t).
type CacheOption func(*cacheOptions)

type cacheOptions struct {
	access Access
}

// WithAccess sets what peers may do with the cache (default
// AccessReadWrite). A value the library does not know fails the call with
// StatusParamInvalid.
func WithAccess(a Access) CacheOption {
	return func(o *cacheOptions) { o.access = a }
}

// cacheOpts applies opts over the defaults (nil options are skipped).
func cacheOpts(opts []CacheOption) cacheOptions {
	o := cacheOptions{access: AccessReadWrite}
	for _, f := range opts {
		if f != nil {
			f(&o)
		}
	}
	return o
}

// Cache is a registered or allocated cache.
type Cache struct {
	ID    int64     // the engine's id of the cache
	Desc  CacheDesc // as registered
	Addrs []uintptr // the address of each tensor

	allocated bool
	// The engine owns allocated memory: holding the Cache keeps the
	// engine from being finalized (and the memory freed) under it.
	engine  *Engine
	mu      sync.Mutex
	tensors [][]byte // allocated caches, until DeallocateCache
}

// Allocated tells whether the library owns the memory (AllocateCache,
// AllocateBlocksCache) rather than the caller (Register*).
func (c *Cache) Allocated() bool { return c.allocated }

// Tensor is tensor i of an allocated cache as a []byte over the library's
// memory itself (no copy): what a transfer moves in or out is visible
// there. It is nil for a registered cache (the memory is the caller's),
// for i out of range, and once DeallocateCache was called. The slice is
// valid until DeallocateCache or the engine's Close, whichever comes
// first: the memory may be freed after either, so it must not be used
// past them (keep the *Cache, not only the slice, while using it: the
// Cache keeps the engine alive).
func (c *Cache) Tensor(i int) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 0 || i >= len(c.tensors) {
		return nil
	}
	return c.tensors[i]
}

// RegisterBlocksCache registers memory the caller owns as a blocks cache
// (llmlink_register_blocks_cache): tensor i is Desc.Shape[0] blocks at
// addrs[i]. blocksKey (KeyBlocks) lets peers address it; nil for a cache
// that only receives.
//
// The addresses must be memory Go does not manage (C memory, an mmap, a
// device mapping): the C side reads and writes it from its own threads
// long after this call, which Go's rules forbid for Go-allocated memory
// (the garbage collector may move or free it). For memory the library
// should own, use AllocateBlocksCache. The memory must stay valid until
// UnregisterCache returns.
//
// opts: WithAccess (what peers may do with it; default AccessReadWrite).
func (e *Engine) RegisterBlocksCache(desc CacheDesc, addrs []uintptr, blocksKey *CacheKey, opts ...CacheOption) (*Cache, error) {
	const op = "RegisterBlocksCache"
	o := cacheOpts(opts)
	cd, err := desc.toC(op)
	if err != nil {
		return nil, err
	}
	caddrs := cAddrs(addrs)
	var ckey *C.llmlink_cache_key_t
	if blocksKey != nil {
		k := blocksKey.toC()
		ckey = &k
	}
	h, err := e.enter(op)
	if err != nil {
		return nil, err
	}
	defer e.leave()
	var id C.int64_t
	var ce C.gollk_err_t
	st := C.gollk_register_blocks(h, &cd, u64Ptr(caddrs), C.size_t(len(caddrs)), ckey, C.uint32_t(o.access), &id, &ce)
	runtime.KeepAlive(caddrs)
	if st != C.LLMLINK_SUCCESS {
		return nil, cError(op, &ce)
	}
	return &Cache{ID: int64(id), Desc: desc.clone(), Addrs: append([]uintptr(nil), addrs...)}, nil
}

// RegisterCache registers memory the caller owns as a cache of
// Desc.Shape[0] batch entries (llmlink_register_cache); keys[i] (KeyCache)
// names batch entry i and may be empty. The rules for addrs are those of
// RegisterBlocksCache, and so are opts.
func (e *Engine) RegisterCache(desc CacheDesc, addrs []uintptr, keys []CacheKey, opts ...CacheOption) (*Cache, error) {
	const op = "RegisterCache"
	o := cacheOpts(opts)
	cd, err := desc.toC(op)
	if err != nil {
		return nil, err
	}
	caddrs := cAddrs(addrs)
	ckeys := cKeys(keys)
	h, err := e.enter(op)
	if err != nil {
		return nil, err
	}
	defer e.leave()
	var id C.int64_t
	var ce C.gollk_err_t
	st := C.gollk_register(h, &cd, u64Ptr(caddrs), C.size_t(len(caddrs)), keyPtr(ckeys),
		C.size_t(len(ckeys)), C.uint32_t(o.access), &id, &ce)
	runtime.KeepAlive(caddrs)
	runtime.KeepAlive(ckeys)
	if st != C.LLMLINK_SUCCESS {
		return nil, cError(op, &ce)
	}
	return &Cache{ID: int64(id), Desc: desc.clone(), Addrs: append([]uintptr(nil), addrs...)}, nil
}

// AllocateCache allocates a cache of Desc.Shape[0] batch entries in memory
// the library owns (page-aligned, zeroed; llmlink_allocate_cache); keys[i]
// names batch entry i. Cache.Tensor gives the memory as []byte.
//
// As in llm_datadist the cache is held by its id and by each of its keys:
// DeallocateCache drops the id, a successful PullCache by a key (by a
// peer) or RemoveCacheKey drops that key, and the memory is freed when
// nothing holds it. opts: WithAccess (default AccessReadWrite).
func (e *Engine) AllocateCache(desc CacheDesc, keys []CacheKey, opts ...CacheOption) (*Cache, error) {
	return e.allocate("AllocateCache", desc, keys, false, cacheOpts(opts))
}

// AllocateBlocksCache allocates a blocks cache in memory the library owns
// (llmlink_allocate_blocks_cache); blocksKey may be nil. See AllocateCache.
func (e *Engine) AllocateBlocksCache(desc CacheDesc, blocksKey *CacheKey, opts ...CacheOption) (*Cache, error) {
	var keys []CacheKey
	if blocksKey != nil {
		keys = []CacheKey{*blocksKey}
	}
	return e.allocate("AllocateBlocksCache", desc, keys, true, cacheOpts(opts))
}

func (e *Engine) allocate(op string, desc CacheDesc, keys []CacheKey, blocks bool, o cacheOptions) (*Cache, error) {
	cd, err := desc.toC(op)
	if err != nil {
		return nil, err
	}
	ckeys := cKeys(keys)
	n := int(desc.NumTensors)
	if n > C.LLMLINK_MAX_TENSORS {
		n = C.LLMLINK_MAX_TENSORS // the C side refuses it; the buffer only needs to be valid
	}
	caddrs := make([]C.uint64_t, n+1)
	h, err := e.enter(op)
	if err != nil {
		return nil, err
	}
	defer e.leave()
	var id C.int64_t
	var ce C.gollk_err_t
	var st C.llmlink_status_t
	if blocks {
		st = C.gollk_allocate_blocks(h, &cd, keyPtr(ckeys), C.uint32_t(o.access), &id, &caddrs[0], C.size_t(n), &ce)
	} else {
		st = C.gollk_allocate(h, &cd, keyPtr(ckeys), C.size_t(len(ckeys)), C.uint32_t(o.access), &id, &caddrs[0], C.size_t(n), &ce)
	}
	runtime.KeepAlive(ckeys)
	runtime.KeepAlive(caddrs)
	if st != C.LLMLINK_SUCCESS {
		return nil, cError(op, &ce)
	}
	c := &Cache{ID: int64(id), Desc: desc.clone(), allocated: true, engine: e}
	size := desc.TensorBytes()
	for i := 0; i < n; i++ {
		c.Addrs = append(c.Addrs, uintptr(caddrs[i]))
		p := (*byte)(C.gollk_addr_ptr(caddrs[i]))
		c.tensors = append(c.tensors, unsafe.Slice(p, int(size)))
	}
	return c, nil
}

// DeallocateCache drops the id of an allocated cache
// (llmlink_deallocate_cache). It never waits: the memory stays valid until
// running transfers end and its keys are gone; c.Tensor returns nil from
// now on.
func (e *Engine) DeallocateCache(c *Cache) error {
	const op = "DeallocateCache"
	if c == nil {
		return newError(op, StatusParamInvalid, "nil cache")
	}
	h, err := e.enter(op)
	if err != nil {
		return err
	}
	defer e.leave()
	var ce C.gollk_err_t
	if C.gollk_deallocate(h, C.int64_t(c.ID), &ce) != C.LLMLINK_SUCCESS {
		return cError(op, &ce)
	}
	c.mu.Lock()
	c.tensors = nil
	c.mu.Unlock()
	return nil
}

// UnregisterCache forgets a registered cache and its keys
// (llmlink_unregister_cache). A transfer that uses it is waited for, up to
// llm.SyncKvCacheWaitTime (then StatusCacheInUse and nothing changes).
// Cancelling ctx returns ctx's error at once; the unregistering goes on in
// the background, so the memory must stay valid until it has ended (Close
// waits for it).
func (e *Engine) UnregisterCache(ctx context.Context, cacheID int64) error {
	const op = "UnregisterCache"
	var ce C.gollk_err_t
	var st C.llmlink_status_t
	var a cArena
	err := e.blocking(ctx, op, &a, blockingCall{call: func() {
		st = C.gollk_unregister(e.handle(), C.int64_t(cacheID), &ce)
	}})
	if err != nil {
		return err
	}
	if st != C.LLMLINK_SUCCESS {
		return cError(op, &ce)
	}
	return nil
}

// RemoveCacheKey removes one key (KeyCache or KeyBlocks) from the cache
// that has it (llmlink_remove_cache_key): peers can no longer address it.
func (e *Engine) RemoveCacheKey(key CacheKey) error {
	const op = "RemoveCacheKey"
	ck := key.toC()
	h, err := e.enter(op)
	if err != nil {
		return err
	}
	defer e.leave()
	var ce C.gollk_err_t
	if C.gollk_remove_key(h, &ck, &ce) != C.LLMLINK_SUCCESS {
		return cError(op, &ce)
	}
	return nil
}

func cAddrs(addrs []uintptr) []C.uint64_t {
	out := make([]C.uint64_t, len(addrs))
	for i, a := range addrs {
		out[i] = C.uint64_t(a)
	}
	return out
}

func (d CacheDesc) clone() CacheDesc {
	d.Shape = append([]int64(nil), d.Shape...)
	return d
}

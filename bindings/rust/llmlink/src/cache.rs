//! The value types of the cache manager: [`CacheDesc`], [`CacheKey`],
//! [`LayerRange`], [`CacheId`], [`DataType`], [`Placement`].

use llmlink_sys as sys;

use crate::error::{invalid, Result};

/// Element type of a cache's tensors (llm_datadist's `DataType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    /// 32-bit float.
    Float,
    /// 16-bit IEEE float.
    Float16,
    /// Signed 8-bit integer.
    Int8,
    /// Signed 32-bit integer.
    Int32,
    /// Unsigned 8-bit integer.
    Uint8,
    /// Signed 16-bit integer.
    Int16,
    /// Unsigned 16-bit integer.
    Uint16,
    /// Unsigned 32-bit integer.
    Uint32,
    /// Signed 64-bit integer.
    Int64,
    /// Unsigned 64-bit integer.
    Uint64,
    /// 64-bit float.
    Double,
    /// One-byte boolean.
    Bool,
    /// bfloat16.
    Bf16,
}

impl DataType {
    pub(crate) fn raw(self) -> sys::llmlink_data_type_t {
        match self {
            DataType::Float => sys::LLMLINK_DT_FLOAT,
            DataType::Float16 => sys::LLMLINK_DT_FLOAT16,
            DataType::Int8 => sys::LLMLINK_DT_INT8,
            DataType::Int32 => sys::LLMLINK_DT_INT32,
            DataType::Uint8 => sys::LLMLINK_DT_UINT8,
            DataType::Int16 => sys::LLMLINK_DT_INT16,
            DataType::Uint16 => sys::LLMLINK_DT_UINT16,
            DataType::Uint32 => sys::LLMLINK_DT_UINT32,
            DataType::Int64 => sys::LLMLINK_DT_INT64,
            DataType::Uint64 => sys::LLMLINK_DT_UINT64,
            DataType::Double => sys::LLMLINK_DT_DOUBLE,
            DataType::Bool => sys::LLMLINK_DT_BOOL,
            DataType::Bf16 => sys::LLMLINK_DT_BF16,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DataType::Int8 | DataType::Uint8 | DataType::Bool => 1,
            DataType::Float16 | DataType::Int16 | DataType::Uint16 | DataType::Bf16 => 2,
            DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
            DataType::Int64 | DataType::Uint64 | DataType::Double => 8,
        }
    }
}

/// Where a cache's memory lives. Only host memory can be registered in
/// this version (device: `FEATURE_NOT_ENABLED`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Host memory.
    #[default]
    Host,
    /// Device memory (not supported yet).
    Device,
}

impl Placement {
    fn raw(self) -> sys::llmlink_placement_t {
        match self {
            Placement::Host => sys::LLMLINK_PLACEMENT_HOST,
            Placement::Device => sys::LLMLINK_PLACEMENT_DEVICE,
        }
    }
}

/// What linked peers may do with a cache of this engine (`llmlink_access_t`).
/// This engine's own transfers use its caches either way. The methods
/// without an `Access` (such as
/// [`allocate_cache`](crate::CacheManager::allocate_cache)) register
/// [`Access::ReadWrite`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Access {
    /// Not served to peers: a peer's request that names the cache, by any
    /// key or id, gets [`Status::KV_CACHE_NOT_EXIST`](crate::Status::KV_CACHE_NOT_EXIST)
    /// exactly as for a cache that does not exist, and moves no byte (nor
    /// drops a key).
    None,
    /// Peers may pull from it (read this memory); a push gets
    /// [`Status::ACCESS_DENIED`](crate::Status::ACCESS_DENIED).
    Read,
    /// Peers may push into it (write this memory); a pull gets
    /// [`Status::ACCESS_DENIED`](crate::Status::ACCESS_DENIED).
    Write,
    /// Both directions (the default).
    #[default]
    ReadWrite,
}

impl Access {
    /// The `llmlink_access_t` value.
    pub fn raw(self) -> sys::llmlink_access_t {
        match self {
            Access::None => sys::LLMLINK_ACCESS_NONE,
            Access::Read => sys::LLMLINK_ACCESS_READ,
            Access::Write => sys::LLMLINK_ACCESS_WRITE,
            Access::ReadWrite => sys::LLMLINK_ACCESS_READ_WRITE,
        }
    }

    /// The access of a raw `llmlink_access_t`, `None` (the `Option`) for a
    /// value this version does not know.
    pub fn from_raw(raw: u32) -> Option<Access> {
        match raw {
            sys::LLMLINK_ACCESS_NONE => Some(Access::None),
            sys::LLMLINK_ACCESS_READ => Some(Access::Read),
            sys::LLMLINK_ACCESS_WRITE => Some(Access::Write),
            sys::LLMLINK_ACCESS_READ_WRITE => Some(Access::ReadWrite),
            _ => None,
        }
    }

    /// The versioned registration options of the `*_opts` C calls with this
    /// access.
    pub(crate) fn to_options(self) -> sys::llmlink_register_options_t {
        sys::llmlink_register_options_t {
            version: sys::LLMLINK_REGISTER_OPTIONS_VERSION,
            access: self.raw(),
        }
    }
}

/// A cache: `num_tensors` tensors (K and V of each layer: K0 V0 K1 V1 ...),
/// each of `shape` and `data_type`. `shape[0]` is the batch size (a cache)
/// or the number of blocks (a blocks cache): one batch entry or one block is
/// the unit transfers address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheDesc {
    /// Number of tensors.
    pub num_tensors: u32,
    /// Element type.
    pub data_type: DataType,
    /// Where the memory lives.
    pub placement: Placement,
    /// Dimensions, at most 8, each >= 1.
    pub shape: Vec<i64>,
}

impl CacheDesc {
    /// Host tensors of `shape`.
    pub fn new(num_tensors: u32, data_type: DataType, shape: impl Into<Vec<i64>>) -> CacheDesc {
        CacheDesc {
            num_tensors,
            data_type,
            placement: Placement::Host,
            shape: shape.into(),
        }
    }

    /// Bytes of one tensor, or `None` when a dimension is below 1 or the
    /// product overflows.
    pub fn tensor_bytes(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(self.data_type.size(), |acc, &d| {
                if d < 1 {
                    return None;
                }
                acc.checked_mul(usize::try_from(d).ok()?)
            })
    }

    /// Bytes of one item (one batch entry or one block) of a tensor.
    pub fn item_bytes(&self) -> Option<usize> {
        let first = *self.shape.first()?;
        self.tensor_bytes().map(|t| t / first as usize)
    }

    pub(crate) fn to_c(&self) -> Result<sys::llmlink_cache_desc_t> {
        if self.shape.len() > sys::LLMLINK_MAX_DIMS as usize {
            return Err(invalid(format!(
                "desc.shape has {} dimensions, more than {}",
                self.shape.len(),
                sys::LLMLINK_MAX_DIMS
            )));
        }
        let mut shape = [0i64; sys::LLMLINK_MAX_DIMS as usize];
        shape[..self.shape.len()].copy_from_slice(&self.shape);
        Ok(sys::llmlink_cache_desc_t {
            num_tensors: self.num_tensors,
            data_type: self.data_type.raw(),
            placement: self.placement.raw(),
            num_dims: self.shape.len() as u32,
            shape,
        })
    }
}

/// A key that names cache memory on the engine holding it (llm_datadist's
/// three key types). The cluster id field names that engine: a transfer
/// goes over the link to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// `CacheKey(prompt_cluster_id, req_id, model_id, prefix_id)`: one batch
    /// entry of a cache.
    Cache {
        /// The engine that holds the cache.
        prompt_cluster_id: u64,
        /// Request id.
        req_id: u64,
        /// Model id.
        model_id: u64,
        /// Prefix id, if any.
        prefix_id: Option<i64>,
    },
    /// `CacheKeyByIdAndIndex(cluster_id, cache_id, batch_index)`.
    IdAndIndex {
        /// The engine that holds the cache.
        cluster_id: u64,
        /// The cache's id on that engine.
        cache_id: i64,
        /// The batch entry.
        batch_index: u32,
    },
    /// `BlocksCacheKey(prompt_cluster_id, model_id)`: a blocks cache.
    Blocks {
        /// The engine that holds the cache.
        prompt_cluster_id: u64,
        /// Model id.
        model_id: u64,
    },
}

impl CacheKey {
    pub(crate) fn to_c(self) -> sys::llmlink_cache_key_t {
        let mut k = sys::llmlink_cache_key_t {
            prefix_id: -1,
            ..Default::default()
        };
        match self {
            CacheKey::Cache {
                prompt_cluster_id,
                req_id,
                model_id,
                prefix_id,
            } => {
                k.type_ = sys::LLMLINK_KEY_CACHE;
                k.cluster_id = prompt_cluster_id;
                k.req_id = req_id;
                k.model_id = model_id;
                k.prefix_id = prefix_id.unwrap_or(-1);
            }
            CacheKey::IdAndIndex {
                cluster_id,
                cache_id,
                batch_index,
            } => {
                k.type_ = sys::LLMLINK_KEY_ID_AND_INDEX;
                k.cluster_id = cluster_id;
                k.cache_id = cache_id;
                k.batch_index = batch_index;
            }
            CacheKey::Blocks {
                prompt_cluster_id,
                model_id,
            } => {
                k.type_ = sys::LLMLINK_KEY_BLOCKS;
                k.cluster_id = prompt_cluster_id;
                k.model_id = model_id;
            }
        }
        k
    }
}

/// Which layers a transfer moves (llm_datadist's `src_layer_range`,
/// `dst_layer_range`, `tensor_num_per_layer`). Ranges are `[start, end)` in
/// layers; `-1, -1` means every layer of that cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LayerRange {
    /// First source layer, or -1.
    pub src_start: i32,
    /// End of the source range, or -1.
    pub src_end: i32,
    /// First destination layer, or -1.
    pub dst_start: i32,
    /// End of the destination range, or -1.
    pub dst_end: i32,
    /// Tensors per layer (0 means 2: K and V).
    pub tensors_per_layer: u32,
}

impl LayerRange {
    /// Source layers `src` into destination layers `dst` (same length).
    pub fn new(
        src: std::ops::Range<i32>,
        dst: std::ops::Range<i32>,
        tensors_per_layer: u32,
    ) -> Self {
        LayerRange {
            src_start: src.start,
            src_end: src.end,
            dst_start: dst.start,
            dst_end: dst.end,
            tensors_per_layer,
        }
    }

    pub(crate) fn to_c(self) -> sys::llmlink_layer_range_t {
        sys::llmlink_layer_range_t {
            src_start: self.src_start,
            src_end: self.src_end,
            dst_start: self.dst_start,
            dst_end: self.dst_end,
            tensors_per_layer: self.tensors_per_layer,
        }
    }
}

/// The id of a cache on the engine that holds it (>= 1); peers address it
/// with [`CacheKey::IdAndIndex`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheId(pub(crate) i64);

impl CacheId {
    /// The raw id.
    pub fn raw(self) -> i64 {
        self.0
    }
}

impl std::fmt::Display for CacheId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

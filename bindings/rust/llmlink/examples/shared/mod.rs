//! What both examples agree on: the cache layout, the key and the bytes the
//! prefill side writes (so the decode side can verify every one).
#![allow(dead_code)] // each example uses its part

use llmlink::{CacheDesc, CacheKey, DataType};

/// 2 layers x (K, V) = 4 tensors; each `blocks` blocks of 16 x 64 fp16
/// (2 KiB per block).
pub fn cache_desc(blocks: i64) -> CacheDesc {
    CacheDesc::new(4, DataType::Float16, vec![blocks, 16, 64])
}

/// Bytes of one block of one tensor.
pub const BLOCK_BYTES: usize = 16 * 64 * 2;

/// The key the prefill side publishes its blocks cache under.
pub fn blocks_key(prompt_cluster_id: u64) -> CacheKey {
    CacheKey::Blocks {
        prompt_cluster_id,
        model_id: 0,
    }
}

/// The byte the prefill side puts at `offset` of tensor `tensor` (a stand-in
/// for computed KV values; differs between neighbours and tensors).
pub fn kv_byte(tensor: usize, offset: usize) -> u8 {
    let x = (offset as u64).wrapping_mul(0x9E37_79B9) ^ ((tensor as u64) << 29);
    (x ^ (x >> 11) ^ (x >> 23)) as u8
}

/// "ip:port" or "[v6]:port" -> (ip, port).
pub fn parse_addr(s: &str) -> Result<(String, u16), String> {
    let (ip, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not ip:port"))?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().map_err(|_| format!("{s:?}: bad port"))?;
    Ok((ip.to_string(), port))
}

/// The value after `--name` in the arguments, if given.
pub fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

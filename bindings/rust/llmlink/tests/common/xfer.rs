//! Helpers of the asynchronous-transfer tests: layouts, byte checks,
//! checksums, the 200 ms stability probe.

use std::time::{Duration, Instant};

use llmlink::{AllocatedCache, DataDist, Status};

use super::peer::{fnv, kv_byte, relink, Layout, Peer};

pub const SMALL: Layout = Layout {
    tensors: 4,
    blocks: 128,
    scale: 1,
};
/// 4 tensors x 64 blocks x 32 KiB: 8 MiB per whole pull, long enough to be
/// cancelled in the middle.
pub const BIG: Layout = Layout {
    tensors: 4,
    blocks: 64,
    scale: 16,
};
pub const WAIT: Option<Duration> = Some(Duration::from_secs(30));

pub fn assert_pulled(dst: &[Vec<u8>], layout: Layout, src_block: usize, dst_block: usize) {
    let bb = layout.block_bytes();
    for (t, tensor) in dst.iter().enumerate() {
        let got = &tensor[dst_block * bb..(dst_block + 1) * bb];
        for (i, &b) in got.iter().enumerate() {
            assert_eq!(
                b,
                kv_byte(t, src_block * bb + i),
                "tensor {t} dst block {dst_block} (src {src_block}) byte {i}"
            );
        }
    }
}

pub fn sum_of(cache: &AllocatedCache<'_>) -> String {
    let tensors: Vec<&[u8]> = (0..cache.num_tensors()).map(|t| cache.tensor(t)).collect();
    fnv(&tensors)
}

/// After `cancel` returns, `sum` (taken by `probe`) does not change for
/// 200 ms.
pub fn assert_stable(what: &str, mut probe: impl FnMut() -> String) -> String {
    let first = probe();
    let end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            probe(),
            first,
            "{what}: memory changed after cancel returned"
        );
    }
    first
}

/// What a cancel ended with; after it, the link must still move bytes
/// (CANCELLED) or have been closed (CANCELLED_LINK_CLOSED: link again).
pub fn after_cancel(d: &DataDist, peer: &Peer, r: &llmlink::Result<()>, counts: &mut [u32; 3]) {
    match r {
        Ok(()) => counts[0] += 1,
        Err(e) if e.status() == Status::CANCELLED => counts[1] += 1,
        Err(e) if e.status() == Status::CANCELLED_LINK_CLOSED => {
            counts[2] += 1;
            relink(d, peer);
        }
        Err(e) => panic!("cancel ended with {e}"),
    }
}

pub fn fill_tagged(cache: &mut AllocatedCache<'_>, tag: u8) {
    for t in 0..cache.num_tensors() {
        for (i, b) in cache.tensor_mut(t).iter_mut().enumerate() {
            *b = super::pattern(tag, t, i);
        }
    }
}

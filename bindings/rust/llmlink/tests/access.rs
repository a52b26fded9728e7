//! Access control of caches (`Access`): what a linked peer may do with a
//! cache of the prompt engine. A cache registered `Access::None` answers
//! every peer request `KV_CACHE_NOT_EXIST`, by every addressing mode, and
//! no byte moves; a read-only cache serves pulls and refuses pushes with
//! `Status::ACCESS_DENIED`.

mod common;

use common::*;
use llmlink::{Access, CacheDesc, CacheKey, DataType, Status};

/// 4 tensors, 8 blocks (or batch entries) of 4 x 16 fp16 (128 bytes).
fn desc() -> CacheDesc {
    CacheDesc::new(4, DataType::Float16, vec![8, 4, 16])
}

const BLOCK: usize = 4 * 16 * 2;

#[test]
fn a_cache_not_accessible_is_not_exist_to_peers() {
    let (p, d) = linked_pair(601, 602);
    let pm = p.cache_manager();
    let blocks_key = CacheKey::Blocks {
        prompt_cluster_id: 601,
        model_id: 0,
    };
    let cache_key = CacheKey::Cache {
        prompt_cluster_id: 601,
        req_id: 3,
        model_id: 0,
        prefix_id: None,
    };
    let mut blocks = pm
        .allocate_blocks_cache_with_access(&desc(), Some(&blocks_key), Access::None)
        .unwrap();
    let mut batch = pm
        .allocate_cache_with_access(&desc(), &[cache_key], Access::None)
        .unwrap();
    for t in 0..4 {
        fill(blocks.tensor_mut(t), 7, t);
        fill(batch.tensor_mut(t), 8, t);
    }
    let by_id = CacheKey::IdAndIndex {
        cluster_id: 601,
        cache_id: batch.id().raw(),
        batch_index: 0,
    };

    let dm = d.cache_manager();
    let mut dst = dm.allocate_blocks_cache(&desc(), None).unwrap();
    let e = dm
        .pull_blocks(&blocks_key, &mut dst, &[0, 1], &[0, 1], None)
        .unwrap_err();
    assert_eq!(e.status(), Status::KV_CACHE_NOT_EXIST, "pull blocks: {e}");
    let mut bdst = dm.allocate_cache(&desc(), &[]).unwrap();
    for key in [&cache_key, &by_id] {
        let e = dm.pull_cache(key, &mut bdst, 0, None, None).unwrap_err();
        assert_eq!(e.status(), Status::KV_CACHE_NOT_EXIST, "pull {key:?}: {e}");
    }
    for t in 0..4 {
        assert!(dst.tensor(t).iter().all(|&b| b == 0), "tensor {t} written");
        assert!(bdst.tensor(t).iter().all(|&b| b == 0), "tensor {t} written");
    }

    // Pushes are refused the same way; the owner's bytes stay.
    let mut src = dm.allocate_blocks_cache(&desc(), None).unwrap();
    for t in 0..4 {
        fill(src.tensor_mut(t), 9, t);
    }
    let e = dm
        .push_blocks(&blocks_key, &src, &[0], &[5], None)
        .unwrap_err();
    assert_eq!(e.status(), Status::KV_CACHE_NOT_EXIST, "push blocks: {e}");
    let e = dm.push_cache(&by_id, &src, 0, None, None).unwrap_err();
    assert_eq!(e.status(), Status::KV_CACHE_NOT_EXIST, "push by id: {e}");
    for t in 0..4 {
        assert!(
            blocks
                .tensor(t)
                .iter()
                .enumerate()
                .all(|(i, &b)| b == pattern(7, t, i)),
            "owner's blocks tensor {t} changed"
        );
        assert!(
            batch
                .tensor(t)
                .iter()
                .enumerate()
                .all(|(i, &b)| b == pattern(8, t, i)),
            "owner's batch tensor {t} changed"
        );
    }
    // The refused pull by CacheKey did not drop the allocated cache's key:
    // the owner still finds it (removing it succeeds).
    pm.remove_cache_key(&cache_key).unwrap();
}

#[test]
fn a_read_only_cache_refuses_a_push_with_access_denied() {
    let (p, d) = linked_pair(611, 612);
    let key = CacheKey::Blocks {
        prompt_cluster_id: 611,
        model_id: 0,
    };
    let mut owner = p
        .cache_manager()
        .allocate_blocks_cache_with_access(&desc(), Some(&key), Access::Read)
        .unwrap();
    for t in 0..4 {
        fill(owner.tensor_mut(t), 5, t);
    }
    let dm = d.cache_manager();
    let mut src = dm.allocate_blocks_cache(&desc(), None).unwrap();
    for t in 0..4 {
        fill(src.tensor_mut(t), 6, t);
    }
    let e = dm
        .push_blocks(&key, &src, &[0, 1], &[2, 3], None)
        .unwrap_err();
    assert_eq!(e.status(), Status::ACCESS_DENIED, "push: {e}");
    assert_eq!(Status::ACCESS_DENIED.raw(), 0x5010_B10B);
    assert_eq!(Status::ACCESS_DENIED.name(), "LLMLINK_ACCESS_DENIED");
    for t in 0..4 {
        assert!(
            owner
                .tensor(t)
                .iter()
                .enumerate()
                .all(|(i, &b)| b == pattern(5, t, i)),
            "owner's tensor {t} changed"
        );
    }
    // The allowed direction still works over the same link.
    let mut dst = dm.allocate_blocks_cache(&desc(), None).unwrap();
    dm.pull_blocks(&key, &mut dst, &[4], &[0], None).unwrap();
    for t in 0..4 {
        assert_eq!(
            &dst.tensor(t)[..BLOCK],
            &owner.tensor(t)[4 * BLOCK..5 * BLOCK]
        );
    }
}

#[test]
fn a_write_only_cache_refuses_a_pull_and_takes_a_push() {
    let (p, d) = linked_pair(621, 622);
    let key = CacheKey::Blocks {
        prompt_cluster_id: 621,
        model_id: 0,
    };
    // A registered (caller-owned) cache this time.
    let owner = p
        .cache_manager()
        .register_blocks_cache_with_access(
            &desc(),
            vec![vec![0u8; 8 * BLOCK]; 4],
            Some(&key),
            Access::Write,
        )
        .unwrap();
    let dm = d.cache_manager();
    let mut dst = dm.allocate_blocks_cache(&desc(), None).unwrap();
    let e = dm
        .pull_blocks(&key, &mut dst, &[0], &[0], None)
        .unwrap_err();
    assert_eq!(e.status(), Status::ACCESS_DENIED, "pull: {e}");
    let mut src = dm.allocate_blocks_cache(&desc(), None).unwrap();
    fill(src.tensor_mut(0), 4, 0);
    dm.push_blocks(&key, &src, &[1], &[7], None).unwrap();
    assert_eq!(
        &owner.tensor(0)[7 * BLOCK..],
        &src.tensor(0)[BLOCK..2 * BLOCK]
    );
}

#[test]
fn access_values_round_trip() {
    for a in [Access::None, Access::Read, Access::Write, Access::ReadWrite] {
        assert_eq!(Access::from_raw(a.raw()), Some(a));
    }
    assert_eq!(Access::from_raw(4), None);
    assert_eq!(Access::default(), Access::ReadWrite);
    assert_eq!(Access::ReadWrite.raw(), 3);
}

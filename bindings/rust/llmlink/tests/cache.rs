//! KV cache transfers between two linked engines of this process, every
//! byte verified.

mod common;

use common::*;
use llmlink::{CacheDesc, CacheKey, DataType, LayerRange, Status};

/// 4 tensors (2 layers x K/V), 8 blocks of 4 x 16 fp16 (128 bytes).
fn blocks_desc() -> CacheDesc {
    CacheDesc::new(4, DataType::Float16, vec![8, 4, 16])
}

const BLOCK: usize = 4 * 16 * 2;

#[test]
fn pull_blocks_moves_exactly_the_asked_blocks() {
    let (p, d) = linked_pair(101, 102);
    let key = CacheKey::Blocks {
        prompt_cluster_id: 101,
        model_id: 0,
    };
    let mut src = p
        .cache_manager()
        .allocate_blocks_cache(&blocks_desc(), Some(&key))
        .unwrap();
    assert_eq!(src.tensor_bytes(), 8 * BLOCK);
    for t in 0..src.num_tensors() {
        fill(src.tensor_mut(t), 1, t);
    }
    let mut dst = d
        .cache_manager()
        .allocate_blocks_cache(&blocks_desc(), None)
        .unwrap();
    // Library memory starts zeroed.
    assert!(dst.tensor(0).iter().all(|&b| b == 0));

    let (src_blocks, dst_blocks) = ([3u64, 4, 7], [0u64, 1, 2]);
    d.cache_manager()
        .pull_blocks(&key, &mut dst, &src_blocks, &dst_blocks, None)
        .unwrap();

    for t in 0..dst.num_tensors() {
        let got = dst.tensor(t);
        for (s, dblk) in src_blocks.iter().zip(dst_blocks) {
            let (s, dblk) = (*s as usize, dblk as usize);
            assert_eq!(
                &got[dblk * BLOCK..(dblk + 1) * BLOCK],
                &src.tensor(t)[s * BLOCK..(s + 1) * BLOCK],
                "tensor {t}: block {s} -> {dblk}"
            );
        }
        // Blocks not asked for are untouched.
        assert!(
            got[3 * BLOCK..].iter().all(|&b| b == 0),
            "tensor {t}: extra bytes written"
        );
    }
    let xs = d.xfer_stats().unwrap();
    assert_eq!(xs.transfers, 1);
    assert_eq!(xs.bytes_requested, (3 * BLOCK * 4) as u64);
    assert_eq!(xs.caches, 1);
    assert_eq!(xs.rdma_requests, 0, "no RDMA device on a test host");
}

#[test]
fn push_blocks_writes_the_remote_cache() {
    let (p, d) = linked_pair(111, 112);
    let key = CacheKey::Blocks {
        prompt_cluster_id: 111,
        model_id: 5,
    };
    let dst = p
        .cache_manager()
        .allocate_blocks_cache(&blocks_desc(), Some(&key))
        .unwrap();
    let mut src = d
        .cache_manager()
        .allocate_blocks_cache(&blocks_desc(), None)
        .unwrap();
    for t in 0..4 {
        fill(src.tensor_mut(t), 2, t);
    }
    d.cache_manager()
        .push_blocks(&key, &src, &[0, 1], &[6, 2], None)
        .unwrap();
    for t in 0..4 {
        assert_eq!(
            &dst.tensor(t)[6 * BLOCK..7 * BLOCK],
            &src.tensor(t)[..BLOCK]
        );
        assert_eq!(
            &dst.tensor(t)[2 * BLOCK..3 * BLOCK],
            &src.tensor(t)[BLOCK..2 * BLOCK]
        );
        assert!(dst.tensor(t)[..2 * BLOCK].iter().all(|&b| b == 0));
    }
}

#[test]
fn pull_cache_by_cache_key_and_the_key_is_dropped_after() {
    let (p, d) = linked_pair(121, 122);
    // 2 tensors, batch of 3 entries of 256 bytes each.
    let desc = CacheDesc::new(2, DataType::Uint8, vec![3, 256]);
    let key = CacheKey::Cache {
        prompt_cluster_id: 121,
        req_id: 9,
        model_id: 0,
        prefix_id: None,
    };
    let mut src = p.cache_manager().allocate_cache(&desc, &[key]).unwrap();
    for t in 0..2 {
        fill(src.tensor_mut(t), 3, t);
    }
    let mut dst = d.cache_manager().allocate_cache(&desc, &[]).unwrap();
    d.cache_manager()
        .pull_cache(&key, &mut dst, 2, None, None)
        .unwrap();
    for t in 0..2 {
        // Key names entry 0 of src; it lands in entry 2 of dst.
        assert_eq!(&dst.tensor(t)[512..768], &src.tensor(t)[..256]);
        assert!(dst.tensor(t)[..512].iter().all(|&b| b == 0));
    }
    // An allocated cache's CacheKey is dropped by its holder after a pull.
    let e = d
        .cache_manager()
        .pull_cache(&key, &mut dst, 0, None, None)
        .unwrap_err();
    assert_eq!(e.status(), Status::KV_CACHE_NOT_EXIST, "{e}");
    assert!(!e.message().is_empty());
}

#[test]
fn pull_and_push_cache_by_id_and_index_with_a_size_and_layers() {
    let (p, d) = linked_pair(131, 132);
    // 4 tensors = 2 layers of K/V; batch of 2 entries of 64 bytes.
    let desc = CacheDesc::new(4, DataType::Int32, vec![2, 16]);
    let mut remote = p.cache_manager().allocate_cache(&desc, &[]).unwrap();
    for t in 0..4 {
        fill(remote.tensor_mut(t), 4, t);
    }
    let by_id = CacheKey::IdAndIndex {
        cluster_id: 131,
        cache_id: remote.id().raw(),
        batch_index: 1,
    };
    let mut local = d.cache_manager().allocate_cache(&desc, &[]).unwrap();
    // Layer 1 of the remote entry 1 (tensors 2, 3) into layer 0 of local
    // entry 0 (tensors 0, 1), first 32 bytes of each tensor's entry.
    let layers = LayerRange::new(1..2, 0..1, 2);
    d.cache_manager()
        .pull_cache(&by_id, &mut local, 0, Some(32), Some(&layers))
        .unwrap();
    for (lt, rt) in [(0usize, 2usize), (1, 3)] {
        assert_eq!(&local.tensor(lt)[..32], &remote.tensor(rt)[64..96]);
        assert!(local.tensor(lt)[32..].iter().all(|&b| b == 0));
    }
    assert!(local
        .tensor(2)
        .iter()
        .chain(local.tensor(3))
        .all(|&b| b == 0));

    // Push local entry 0 (now partly filled) back into remote entry 0.
    for t in 0..4 {
        fill(local.tensor_mut(t), 5, t);
    }
    let entry0 = CacheKey::IdAndIndex {
        cluster_id: 131,
        cache_id: remote.id().raw(),
        batch_index: 0,
    };
    d.cache_manager()
        .push_cache(&entry0, &local, 1, None, None)
        .unwrap();
    for t in 0..4 {
        assert_eq!(&remote.tensor(t)[..64], &local.tensor(t)[64..128]);
    }
}

#[test]
fn registered_buffers_are_owned_then_given_back() {
    let (p, d) = linked_pair(141, 142);
    let desc = blocks_desc();
    let tensor_bytes = desc.tensor_bytes().unwrap();
    let bufs: Vec<Vec<u8>> = (0..4)
        .map(|t| (0..tensor_bytes).map(|i| pattern(6, t, i)).collect())
        .collect();
    let key = CacheKey::Blocks {
        prompt_cluster_id: 141,
        model_id: 1,
    };
    let src = p
        .cache_manager()
        .register_blocks_cache(&desc, bufs.clone(), Some(&key))
        .unwrap();
    assert_eq!(src.tensor(3), &bufs[3][..]);
    let mut dst = d
        .cache_manager()
        .register_blocks_cache(&desc, vec![vec![0; tensor_bytes]; 4], None)
        .unwrap();
    d.cache_manager()
        .pull_blocks(&key, &mut dst, &[5], &[1], None)
        .unwrap();
    let back = dst.unregister().unwrap();
    for (t, buf) in back.iter().enumerate() {
        assert_eq!(&buf[BLOCK..2 * BLOCK], &bufs[t][5 * BLOCK..6 * BLOCK]);
    }
    // The source is unregistered on drop: peers can no longer address it.
    drop(src);
    let mut again = d
        .cache_manager()
        .allocate_blocks_cache(&desc, None)
        .unwrap();
    let e = d
        .cache_manager()
        .pull_blocks(&key, &mut again, &[0], &[0], None)
        .unwrap_err();
    assert_eq!(e.status(), Status::KV_CACHE_NOT_EXIST, "{e}");
}

#[test]
fn registered_cache_with_cache_keys() {
    let (p, d) = linked_pair(151, 152);
    let desc = CacheDesc::new(2, DataType::Uint8, vec![2, 100]);
    let k0 = CacheKey::Cache {
        prompt_cluster_id: 151,
        req_id: 1,
        model_id: 0,
        prefix_id: None,
    };
    let k1 = CacheKey::Cache {
        prompt_cluster_id: 151,
        req_id: 2,
        model_id: 0,
        prefix_id: Some(4),
    };
    let bufs: Vec<Vec<u8>> = (0..2)
        .map(|t| (0..200).map(|i| pattern(7, t, i)).collect())
        .collect();
    let _src = p
        .cache_manager()
        .register_cache(&desc, bufs.clone(), &[k0, k1])
        .unwrap();
    let mut dst = d.cache_manager().allocate_cache(&desc, &[]).unwrap();
    d.cache_manager()
        .pull_cache(&k1, &mut dst, 0, None, None)
        .unwrap();
    d.cache_manager()
        .pull_cache(&k0, &mut dst, 1, None, None)
        .unwrap();
    for (t, buf) in bufs.iter().enumerate() {
        assert_eq!(&dst.tensor(t)[..100], &buf[100..]);
        assert_eq!(&dst.tensor(t)[100..], &buf[..100]);
    }
    // A registered (not allocated) cache keeps its keys after a pull.
    d.cache_manager()
        .pull_cache(&k1, &mut dst, 1, None, None)
        .unwrap();
    // remove_cache_key: the key is gone for peers.
    p.cache_manager().remove_cache_key(&k1).unwrap();
    let e = d
        .cache_manager()
        .pull_cache(&k1, &mut dst, 1, None, None)
        .unwrap_err();
    assert_eq!(e.status(), Status::KV_CACHE_NOT_EXIST);
}

#[test]
fn raw_registration_of_caller_memory() {
    let (p, d) = linked_pair(161, 162);
    let desc = CacheDesc::new(2, DataType::Uint8, vec![4, 64]);
    let mut mem: Vec<Vec<u8>> = (0..2)
        .map(|t| (0..256).map(|i| pattern(8, t, i)).collect())
        .collect();
    let addrs: Vec<u64> = mem.iter_mut().map(|m| m.as_mut_ptr() as u64).collect();
    let key = CacheKey::Blocks {
        prompt_cluster_id: 161,
        model_id: 2,
    };
    // SAFETY: `mem` outlives the handle, which is unregistered (Ok) before
    // `mem` is read or dropped; nothing else touches it meanwhile.
    let raw = unsafe {
        p.cache_manager()
            .register_blocks_cache_raw(&desc, &addrs, Some(&key))
    }
    .unwrap();
    let mut dst = d
        .cache_manager()
        .allocate_blocks_cache(&desc, None)
        .unwrap();
    d.cache_manager()
        .pull_blocks(&key, &mut dst, &[2, 3], &[0, 1], None)
        .unwrap();
    raw.unregister().unwrap();
    for (t, m) in mem.iter().enumerate() {
        assert_eq!(&dst.tensor(t)[..128], &m[128..]);
    }
}

#[test]
fn deallocate_reports_and_the_id_is_gone() {
    let (p, d) = linked_pair(171, 172);
    let desc = CacheDesc::new(2, DataType::Uint8, vec![2, 8]);
    let c = p.cache_manager().allocate_cache(&desc, &[]).unwrap();
    let id = c.id().raw();
    assert_eq!(p.xfer_stats().unwrap().caches, 1);
    c.deallocate().unwrap();
    assert_eq!(p.xfer_stats().unwrap().caches, 0);
    let mut dst = d.cache_manager().allocate_cache(&desc, &[]).unwrap();
    let key = CacheKey::IdAndIndex {
        cluster_id: 171,
        cache_id: id,
        batch_index: 0,
    };
    let e = d
        .cache_manager()
        .pull_cache(&key, &mut dst, 0, None, None)
        .unwrap_err();
    assert_eq!(e.status(), Status::KV_CACHE_NOT_EXIST);
}

//! Several threads sharing one engine: the `Sync` promise of `DataDist`
//! exercised against the C library's "one engine, many threads" contract.

mod common;

use std::sync::Arc;

use common::*;
use llmlink::{AllocatedCache, CacheDesc, CacheKey, DataDist, DataType, Status};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn handles_are_send_and_sync() {
    assert_send_sync::<DataDist>();
    assert_send_sync::<AllocatedCache<'static>>();
    assert_send_sync::<llmlink::RegisteredCache<'static>>();
}

const THREADS: usize = 8;
const ROUNDS: usize = 25;
const BLOCKS: i64 = 64;
const BLOCK: usize = 2 * 64; // shape [BLOCKS, 2, 64] of u8

#[test]
fn many_threads_pull_through_one_engine() {
    let (p, d) = linked_pair(201, 202);
    let desc = CacheDesc::new(2, DataType::Uint8, vec![BLOCKS, 2, 64]);
    let key = CacheKey::Blocks {
        prompt_cluster_id: 201,
        model_id: 0,
    };
    let mut src = p
        .cache_manager()
        .allocate_blocks_cache(&desc, Some(&key))
        .unwrap();
    for t in 0..2 {
        fill(src.tensor_mut(t), 9, t);
    }
    let src = &src;
    let d = &d;
    std::thread::scope(|s| {
        for th in 0..THREADS {
            let desc = desc.clone();
            s.spawn(move || {
                // Each thread its own destination: a pull borrows it mutably.
                let mut dst = d
                    .cache_manager()
                    .allocate_blocks_cache(&desc, None)
                    .unwrap();
                for round in 0..ROUNDS {
                    let first = ((th * 7 + round * 3) % (BLOCKS as usize - 4)) as u64;
                    let src_blocks = [first, first + 3, first + 1];
                    let dst_blocks = [(round % 8) as u64, 10, 20 + th as u64];
                    d.cache_manager()
                        .pull_blocks(&key, &mut dst, &src_blocks, &dst_blocks, None)
                        .unwrap();
                    for t in 0..2 {
                        for (sb, db) in src_blocks.iter().zip(dst_blocks) {
                            let (sb, db) = (*sb as usize, db as usize);
                            assert_eq!(
                                &dst.tensor(t)[db * BLOCK..(db + 1) * BLOCK],
                                &src.tensor(t)[sb * BLOCK..(sb + 1) * BLOCK],
                                "thread {th} round {round} tensor {t}"
                            );
                        }
                    }
                    // Other calls on the same engine meanwhile.
                    assert!(d.check_link_status(201).unwrap());
                    assert!(d.stats().unwrap().links >= 1);
                }
            });
        }
    });
    let xs = d.xfer_stats().unwrap();
    assert_eq!(xs.transfers, (THREADS * ROUNDS) as u64);
    assert_eq!(xs.transfers_failed, 0);
}

#[test]
fn threads_link_different_clusters_of_a_shared_engine_at_once() {
    let prompts: Vec<(DataDist, u16)> = (0..THREADS as u64).map(|i| prompt(300 + i)).collect();
    let d = Arc::new(decoder(299));
    let handles: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(i, (_, port))| {
            let d = Arc::clone(&d);
            let port = *port;
            std::thread::spawn(move || {
                let id = 300 + i as u64;
                let (st, per) = d.link_clusters(&[cluster(id, port)], LINK_TIMEOUT).unwrap();
                assert_eq!(
                    (st, per),
                    (Status::SUCCESS, vec![Status::SUCCESS]),
                    "cluster {id}"
                );
                assert!(d.check_link_status(id).unwrap());
                let (st, _) = d
                    .unlink_clusters(&[cluster(id, port)], LINK_TIMEOUT, false)
                    .unwrap();
                assert_eq!(st, Status::SUCCESS);
                let (st, _) = d.link_clusters(&[cluster(id, port)], LINK_TIMEOUT).unwrap();
                assert_eq!(st, Status::SUCCESS);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(d.stats().unwrap().outbound_links, THREADS as u32);
    // The last Arc is dropped here, on this thread: the engine moved freely.
    let d = Arc::try_unwrap(d).expect("threads ended");
    drop(d);
}

#[test]
fn errors_are_per_thread() {
    // One thread's failure message is not another thread's: each Error is
    // built from its own thread's last error, at once.
    let d = decoder(401);
    std::thread::scope(|s| {
        let a = s.spawn(|| {
            let e = d.link_clusters(&[cluster(7, 0)], LINK_TIMEOUT).unwrap_err();
            e.message().to_string()
        });
        let b = s.spawn(|| {
            let e = d.link_clusters(&[], LINK_TIMEOUT).unwrap_err();
            e.message().to_string()
        });
        let (ma, mb) = (a.join().unwrap(), b.join().unwrap());
        assert!(ma.contains("port"), "{ma}");
        assert!(mb.contains("num_clusters"), "{mb}");
    });
}

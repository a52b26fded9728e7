//! Layer-wise push (`CacheManager::transfer_cache_async`) to an
//! `async_prefill` peer: layer by layer with the synchronizer, per-target
//! results, a drop while the synchronizer waits.

mod common;

use std::time::{Duration, Instant};

use common::peer::{decoder_linked, fnv, Layout, Peer};
use common::xfer::{fill_tagged, WAIT};
use llmlink::{CacheKey, Status, TransferTarget};

/// 4 layers (8 tensors), 8 blocks; the synchronizer checks on the peer
/// that a layer's blocks are not there before it releases the layer, and
/// waits (bounded) for the previous layer's blocks to arrive before it
/// releases the next: each layer moves without waiting for the later ones.
#[test]
fn transfer_cache_async_pushes_layer_by_layer() {
    use std::sync::{Arc, Mutex};
    let layout = Layout {
        tensors: 8,
        blocks: 8,
        scale: 1,
    };
    let peer = Arc::new(Mutex::new(Peer::start(1, layout, &[])));
    let (key, cluster_id, port) = {
        let p = peer.lock().unwrap();
        (p.inbox_key(), p.cluster_id, p.port)
    };
    let d = common::decoder(10);
    let (st, _) = d
        .link_clusters(&[common::cluster(cluster_id, port)], common::LINK_TIMEOUT)
        .unwrap();
    assert_eq!(st, Status::SUCCESS);
    let cm = d.cache_manager();
    let mut src = cm.allocate_blocks_cache(&layout.desc(), None).unwrap();
    fill_tagged(&mut src, 42);
    let bb = layout.block_bytes();
    let blocks: Vec<u64> = vec![1, 4, 6];
    let dst_blocks: Vec<u64> = vec![0, 2, 7];
    // Expected checksums of each (tensor, destination block), and of a zero block.
    let expect: Vec<Vec<String>> = (0..8)
        .map(|t| {
            blocks
                .iter()
                .map(|&b| {
                    let b = b as usize;
                    format!("BLOCK {}", fnv(&[&src.tensor(t)[b * bb..(b + 1) * bb]]))
                })
                .collect()
        })
        .collect();
    let zero = format!("BLOCK {}", fnv(&[&vec![0u8; bb]]));
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let sync = {
        let (peer, log, dst_blocks) = (Arc::clone(&peer), Arc::clone(&log), dst_blocks.clone());
        let expect = expect.clone();
        move |layer: u32| {
            let mut p = peer.lock().unwrap();
            let mut log = log.lock().unwrap();
            let layer = layer as usize;
            for t in [2 * layer, 2 * layer + 1] {
                for &b in &dst_blocks {
                    if p.inbox_block(t, b as usize) != zero {
                        log.push(format!(
                            "layer {layer} tensor {t} block {b} there before release"
                        ));
                    }
                }
            }
            if layer > 0 {
                // Layer i-1 is pushed while this call waits: its bytes
                // arrive before layer i is released (bounded wait).
                let deadline = Instant::now() + Duration::from_secs(10);
                let there = |p: &mut Peer| {
                    [2 * layer - 2, 2 * layer - 1].iter().all(|&t| {
                        dst_blocks
                            .iter()
                            .enumerate()
                            .all(|(i, &b)| p.inbox_block(t, b as usize) == expect[t][i])
                    })
                };
                while !there(&mut p) {
                    if Instant::now() > deadline {
                        log.push(format!(
                            "layer {} not there at release of {layer}",
                            layer - 1
                        ));
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            log.push(format!("released {layer}"));
            true
        }
    };
    let tr = cm
        .transfer_cache_async(
            &src,
            sync,
            &[TransferTarget::new(key)],
            &blocks,
            &dst_blocks,
            2,
            None,
        )
        .unwrap();
    tr.wait(WAIT).unwrap();
    assert_eq!(tr.results().unwrap(), vec![Some(Status::SUCCESS)]);
    drop(tr);
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        vec!["released 0", "released 1", "released 2", "released 3"]
    );
    let mut p = peer.lock().unwrap();
    for (t, want) in expect.iter().enumerate() {
        for (i, &b) in dst_blocks.iter().enumerate() {
            assert_eq!(
                p.inbox_block(t, b as usize),
                want[i],
                "tensor {t} block {b}"
            );
        }
    }
}

/// Per-target results as llm_datadist's CacheTask.get_results: `None` for
/// a target not started (while layer 0 is held), then one status per
/// target; a missing remote cache fails only its target; a synchronizer
/// that says false fails the targets not finished.
#[test]
fn transfer_cache_async_results_per_target() {
    use std::sync::mpsc;
    let layout = Layout {
        tensors: 4,
        blocks: 8,
        scale: 1,
    };
    let p = Peer::start(1, layout, &[]);
    let d = decoder_linked(10, &[&p], "auto");
    let cm = d.cache_manager();
    let src = cm.allocate_blocks_cache(&layout.desc(), None).unwrap();
    let missing = CacheKey::Blocks {
        prompt_cluster_id: 1,
        model_id: 9,
    };
    let targets = [
        TransferTarget::new(p.inbox_key()),
        TransferTarget::new(missing),
    ];
    let (go, gate) = mpsc::channel::<()>();
    let sync = move |layer: u32| {
        if layer == 0 {
            gate.recv_timeout(Duration::from_secs(20)).is_ok()
        } else {
            true
        }
    };
    let tr = cm
        .transfer_cache_async(&src, sync, &targets, &[0, 1], &[2, 3], 0, None)
        .unwrap();
    assert_eq!(tr.results().unwrap(), vec![None, None]);
    assert_eq!(tr.status(), Status::TASK_PENDING);
    go.send(()).unwrap();
    let e = tr.wait(WAIT).unwrap_err();
    assert_eq!(e.status(), Status::KV_CACHE_NOT_EXIST, "{e}");
    assert_eq!(
        tr.results().unwrap(),
        vec![Some(Status::SUCCESS), Some(Status::KV_CACHE_NOT_EXIST)]
    );
    drop(tr);

    // false at layer 1: the target is not finished.
    let tr = cm
        .transfer_cache_async(
            &src,
            |layer: u32| layer == 0,
            &targets[..1],
            &[0],
            &[0],
            0,
            None,
        )
        .unwrap();
    let e = tr.wait(WAIT).unwrap_err();
    assert_eq!(e.status(), Status::FAILED, "{e}");
    assert!(e.message().contains("synchronizer"), "{e}");
    assert_eq!(tr.results().unwrap(), vec![Some(Status::FAILED)]);
    drop(tr);

    // A panicking synchronizer counts as false (it never unwinds into C;
    // its "test panic" message in the output is expected).
    let tr = cm
        .transfer_cache_async(
            &src,
            |_: u32| -> bool { panic!("test panic") },
            &targets[..1],
            &[0],
            &[0],
            0,
            None,
        )
        .unwrap();
    assert_eq!(tr.wait(WAIT).unwrap_err().status(), Status::FAILED);
}

/// A layer-wise transfer dropped while its synchronizer waits: the drop
/// cancels at once but returns only once that synchronizer call returned
/// (ffi/llmlink.h: after release the synchronizer is never called), the
/// synchronizer is not called again, it is dropped, and nothing reaches the
/// peer.
#[test]
fn dropping_a_layer_wise_transfer_while_its_synchronizer_waits() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};
    let layout = Layout {
        tensors: 4,
        blocks: 8,
        scale: 1,
    };
    let mut p = Peer::start(1, layout, &[]);
    let d = decoder_linked(10, &[&p], "auto");
    let cm = d.cache_manager();
    let mut src = cm.allocate_blocks_cache(&layout.desc(), None).unwrap();
    fill_tagged(&mut src, 3);
    let empty = p.inbox_sum();

    /// Sets its flag when the synchronizer is dropped.
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let (entered_tx, entered) = mpsc::channel::<()>();
    let (go, gate) = mpsc::channel::<()>();
    let sync = {
        let (guard, calls) = (Dropped(Arc::clone(&dropped)), Arc::clone(&calls));
        move |_layer: u32| {
            let _keep = &guard;
            calls.fetch_add(1, Ordering::SeqCst);
            let _ = entered_tx.send(());
            gate.recv_timeout(Duration::from_secs(20)).is_ok()
        }
    };
    let tr = cm
        .transfer_cache_async(
            &src,
            sync,
            &[TransferTarget::new(p.inbox_key())],
            &[0, 1],
            &[0, 1],
            0,
            None,
        )
        .unwrap();
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("synchronizer called");
    // Layer 0 is "computed" 300 ms from now, after the cancel: the drop
    // waits for that call to return.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        go.send(()).unwrap();
    });
    let t0 = Instant::now();
    drop(tr);
    let took = t0.elapsed();
    releaser.join().unwrap();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "drop took {:?}: it must wait for the running synchronizer call, and only for it",
        took
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dropped.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the synchronizer was never dropped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "called again after the drop"
    );
    assert_eq!(
        p.inbox_sum(),
        empty,
        "a layer reached the peer after the cancel"
    );
}

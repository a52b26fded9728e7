//! Asynchronous transfers through the blocking-style API of [`Transfer`]:
//! many in flight from several threads and links with every byte checked,
//! the event fd, cancel with a fence (pulls and pushes, checksummed for
//! 200 ms after it returns), drop of a pending transfer, a peer killed with
//! transfers in flight, and the layer-wise push. The prefill peers are
//! `async_prefill` processes.

mod common;

use std::time::{Duration, Instant};

use common::peer::{cont, decoder_linked, fnv, kv_byte, relink, stop, Layout, Lcg, Peer};
use llmlink::{
    AllocatedCache, CacheKey, DataDist, Status, Transfer, TransferOptions, TransferTarget,
};

const SMALL: Layout = Layout {
    tensors: 4,
    blocks: 128,
    scale: 1,
};
/// 4 tensors x 64 blocks x 32 KiB: 8 MiB per whole pull, long enough to be
/// cancelled in the middle.
const BIG: Layout = Layout {
    tensors: 4,
    blocks: 64,
    scale: 16,
};
const WAIT: Option<Duration> = Some(Duration::from_secs(30));

fn assert_pulled(dst: &[Vec<u8>], layout: Layout, src_block: usize, dst_block: usize) {
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

/// Two peer processes, four threads, each with 2 x 64 single-block pulls in
/// flight at once into its own cache: every one succeeds and every byte is
/// where it belongs.
#[test]
fn hundreds_of_transfers_in_flight_from_several_threads_and_links() {
    let p1 = Peer::start(1, SMALL, &[]);
    let p2 = Peer::start(2, SMALL, &[]);
    let d = decoder_linked(10, &[&p1, &p2], "auto");
    let blocks = SMALL.blocks as usize;
    let desc = llmlink::CacheDesc::new(SMALL.tensors, llmlink::DataType::Float16, {
        let mut s = SMALL.desc().shape;
        s[0] = 2 * blocks as i64; // peer 1's blocks, then peer 2's
        s
    });
    let bytes = desc.tensor_bytes().unwrap();
    std::thread::scope(|s| {
        for th in 0..4usize {
            let (d, desc) = (&d, &desc);
            let (k1, k2) = (p1.source_key(), p2.source_key());
            s.spawn(move || {
                let mut bufs: Vec<Vec<u8>> = (0..SMALL.tensors).map(|_| vec![0u8; bytes]).collect();
                let addrs: Vec<u64> = bufs.iter_mut().map(|b| b.as_mut_ptr() as u64).collect();
                let cm = d.cache_manager();
                // SAFETY: the buffers outlive the registration (unregistered
                // below before they are read) and nothing else refers to
                // them meanwhile.
                let raw = unsafe { cm.register_blocks_cache_raw(desc, &addrs, None) }.unwrap();
                let mine: Vec<usize> = (0..blocks).filter(|b| b % 4 == th).collect();
                let mut transfers: Vec<Transfer<'_>> = Vec::new();
                for &b in &mine {
                    for (key, base) in [(k1, 0), (k2, blocks)] {
                        let t = cm
                            .pull_blocks_async(
                                &key,
                                &raw,
                                &[b as u64],
                                &[(base + b) as u64],
                                None,
                                None,
                            )
                            .unwrap();
                        transfers.push(t);
                    }
                }
                assert_eq!(transfers.len(), 2 * mine.len());
                for t in &transfers {
                    t.wait(WAIT).unwrap();
                    assert_eq!(t.status(), Status::SUCCESS);
                    assert_eq!(t.results().unwrap(), vec![Some(Status::SUCCESS)]);
                }
                drop(transfers);
                raw.unregister().unwrap();
                for &b in &mine {
                    assert_pulled(&bufs, SMALL, b, b);
                    assert_pulled(&bufs, SMALL, b, blocks + b);
                }
            });
        }
    });
    let xs = d.xfer_stats().unwrap();
    assert!(xs.transfers >= (2 * blocks) as u64, "{xs:?}");
}

fn readable(fd: std::os::fd::RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let rc = unsafe { libc::poll(&mut p, 1, ms) };
    assert!(rc >= 0, "poll: {}", std::io::Error::last_os_error());
    rc == 1
}

/// The event fd is readable exactly while finished transfers wait to be
/// collected: not before any, yes after, not after poll_done took them.
#[test]
fn the_event_fd_reports_finished_transfers_until_collected() {
    use std::os::fd::AsRawFd;
    let p = Peer::start(1, SMALL, &[]);
    let d = decoder_linked(10, &[&p], "tcp");
    let fd = d.event_fd().unwrap().as_raw_fd();
    assert!(!readable(fd, 0), "readable before any transfer");
    let cm = d.cache_manager();
    let mut dsts: Vec<AllocatedCache<'_>> = (0..8)
        .map(|_| cm.allocate_blocks_cache(&SMALL.desc(), None).unwrap())
        .collect();
    let transfers: Vec<Transfer<'_>> = dsts
        .iter_mut()
        .enumerate()
        .map(|(i, dst)| {
            cm.pull_blocks_async(&p.source_key(), dst, &[i as u64], &[0], None, None)
                .unwrap()
        })
        .collect();
    for t in &transfers {
        t.wait(WAIT).unwrap();
    }
    assert!(
        readable(fd, 5000),
        "not readable after 8 transfers finished"
    );
    assert_eq!(d.poll_done().unwrap(), 8);
    assert!(!readable(fd, 0), "still readable once collected");
    assert_eq!(d.poll_done().unwrap(), 0);
    drop(transfers);
    for (i, dst) in dsts.iter().enumerate() {
        let bb = SMALL.block_bytes();
        for t in 0..4 {
            let want: Vec<u8> = (0..bb).map(|k| kv_byte(t, i * bb + k)).collect();
            assert_eq!(&dst.tensor(t)[..bb], &want[..], "dst {i} tensor {t}");
        }
    }
}

fn sum_of(cache: &AllocatedCache<'_>) -> String {
    let tensors: Vec<&[u8]> = (0..cache.num_tensors()).map(|t| cache.tensor(t)).collect();
    fnv(&tensors)
}

/// After `cancel` returns, `sum` (taken by `probe`) does not change for
/// 200 ms.
fn assert_stable(what: &str, mut probe: impl FnMut() -> String) -> String {
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
fn after_cancel(d: &DataDist, peer: &Peer, r: &llmlink::Result<()>, counts: &mut [u32; 3]) {
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

/// The checksum of raw-registered buffers, read through their addresses
/// while a transfer may still hold the cache (what the fence is about).
fn sum_raw(addrs: &[u64], len: usize) -> String {
    // SAFETY: each address is a live buffer of `len` bytes (owned by the
    // caller); reading plain bytes the library may write is the point of
    // the test, and a fenced transfer writes none.
    let tensors: Vec<&[u8]> = addrs
        .iter()
        .map(|&a| unsafe { std::slice::from_raw_parts(a as usize as *const u8, len) })
        .collect();
    fnv(&tensors)
}

/// Pulls of 8 MiB cancelled at random moments. The destination is
/// registered raw, so it is checksummed while the cancelled transfer still
/// exists: it is `cancel` that fences, not the drop.
fn cancel_pulls(transport: &str) {
    let p = Peer::start(1, BIG, &["--transport", transport]);
    let d = decoder_linked(10, &[&p], transport);
    let cm = d.cache_manager();
    let desc = BIG.desc();
    let len = desc.tensor_bytes().unwrap();
    let mut bufs: Vec<Vec<u8>> = (0..BIG.tensors).map(|_| vec![0u8; len]).collect();
    let addrs: Vec<u64> = bufs.iter_mut().map(|b| b.as_mut_ptr() as u64).collect();
    // SAFETY: the buffers outlive the registration (unregistered below) and
    // are only touched through `addrs` while no transfer runs, or read.
    let raw = unsafe { cm.register_blocks_cache_raw(&desc, &addrs, None) }.unwrap();
    let all: Vec<u64> = (0..BIG.blocks as u64).collect();
    let mut rng = Lcg(7);
    let mut counts = [0u32; 3];
    for round in 0..30 {
        for &a in &addrs {
            // SAFETY: no transfer holds the cache now.
            unsafe { std::ptr::write_bytes(a as usize as *mut u8, 0, len) };
        }
        let tr = cm
            .pull_blocks_async(&p.source_key(), &raw, &all, &all, None, None)
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
        let r = tr.cancel();
        assert_ne!(tr.status(), Status::TASK_PENDING, "round {round}");
        // The same result again: the status is final.
        assert_eq!(
            tr.wait(Some(Duration::ZERO)).map_err(|e| e.status()),
            r.clone().map_err(|e| e.status())
        );
        // Bytes that landed before the fence stay; none may land after it.
        assert_stable(&format!("{transport} pull round {round}"), || {
            sum_raw(&addrs, len)
        });
        drop(tr);
        if r.is_ok() {
            let full: Vec<Vec<u8>> = addrs
                .iter()
                .map(|&a| {
                    unsafe { std::slice::from_raw_parts(a as usize as *const u8, len) }.to_vec()
                })
                .collect();
            for b in 0..BIG.blocks as usize {
                assert_pulled(&full, BIG, b, b);
            }
        }
        after_cancel(&d, &p, &r, &mut counts);
    }
    // Other transfers on the link still complete after all those cancels.
    cm.pull_blocks_async(&p.source_key(), &raw, &[3], &[0], None, None)
        .unwrap()
        .wait(Some(Duration::from_secs(30)))
        .unwrap();
    raw.unregister().unwrap();
    assert_pulled(&bufs, BIG, 3, 0);
    eprintln!(
        "{transport} pulls: finished {}, cancelled {}, link closed {}",
        counts[0], counts[1], counts[2]
    );
}

#[test]
fn cancel_is_fenced_for_tcp_pulls() {
    cancel_pulls("tcp");
}

#[test]
fn cancel_is_fenced_for_shm_pulls() {
    cancel_pulls("shm");
}

fn fill_tagged(cache: &mut AllocatedCache<'_>, tag: u8) {
    for t in 0..cache.num_tensors() {
        for (i, b) in cache.tensor_mut(t).iter_mut().enumerate() {
            *b = common::pattern(tag, t, i);
        }
    }
}

fn cancel_pushes(transport: &str) {
    let mut p = Peer::start(1, BIG, &["--transport", transport]);
    let d = decoder_linked(10, &[&p], transport);
    let cm = d.cache_manager();
    let mut src = cm.allocate_blocks_cache(&BIG.desc(), None).unwrap();
    let all: Vec<u64> = (0..BIG.blocks as u64).collect();
    let mut rng = Lcg(11);
    let mut counts = [0u32; 3];
    for round in 0..20u8 {
        // New bytes each round: a late write of this round would show.
        fill_tagged(&mut src, round.wrapping_add(1));
        let tr = cm
            .push_blocks_async(&p.inbox_key(), &src, &all, &all, None, None)
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
        let r = tr.cancel();
        // Checked while the transfer still exists: `cancel` fences.
        let sum = assert_stable(&format!("{transport} push round {round}"), || p.inbox_sum());
        drop(tr);
        if r.is_ok() {
            assert_eq!(
                sum,
                format!("SUM {}", sum_of(&src)),
                "round {round}: a finished push"
            );
        }
        after_cancel(&d, &p, &r, &mut counts);
    }
    // The link still moves bytes: a whole push, checked on the peer.
    fill_tagged(&mut src, 200);
    cm.push_blocks(&p.inbox_key(), &src, &all, &all, None)
        .unwrap();
    assert_eq!(p.inbox_sum(), format!("SUM {}", sum_of(&src)));
    eprintln!(
        "{transport} pushes: finished {}, cancelled {}, link closed {}",
        counts[0], counts[1], counts[2]
    );
}

#[test]
fn cancel_is_fenced_for_tcp_pushes() {
    cancel_pushes("tcp");
}

#[test]
fn cancel_is_fenced_for_shm_pushes() {
    cancel_pushes("shm");
}

/// A transfer dropped while its peer is stopped: the drop cancels it
/// (bounded), nothing lands once the peer runs again, and the engine goes
/// on working with that peer.
#[test]
fn dropping_a_pending_transfer_cancels_it() {
    let p = Peer::start(1, BIG, &["--transport", "tcp"]);
    let d = decoder_linked(10, &[&p], "tcp");
    let cm = d.cache_manager();
    let mut dst = cm.allocate_blocks_cache(&BIG.desc(), None).unwrap();
    let all: Vec<u64> = (0..BIG.blocks as u64).collect();
    stop(p.pid());
    let tr = cm
        .pull_blocks_async(&p.source_key(), &mut dst, &all, &all, None, None)
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(tr.status(), Status::TASK_PENDING);
    assert_eq!(
        tr.wait(Some(Duration::from_millis(20)))
            .unwrap_err()
            .status(),
        Status::TASK_PENDING
    );
    let t0 = Instant::now();
    drop(tr);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "drop took {:?}",
        t0.elapsed()
    );
    cont(p.pid());
    let zeros = assert_stable("dropped pull", || sum_of(&dst));
    assert_eq!(
        zeros,
        fnv(&[&vec![0u8; BIG.desc().tensor_bytes().unwrap() * 4]])
    );
    relink(&d, &p);
    cm.pull_blocks(&p.source_key(), &mut dst, &[5], &[5], None)
        .unwrap();
    let full: Vec<Vec<u8>> = (0..4).map(|t| dst.tensor(t).to_vec()).collect();
    assert_pulled(&full, BIG, 5, 5);
}

/// A peer killed with transfers in flight: every one ends with an error
/// within its own timeout, none hangs.
#[test]
fn a_killed_peer_ends_every_transfer_in_flight() {
    let p = Peer::start(1, SMALL, &["--transport", "tcp"]);
    let d = decoder_linked(10, &[&p], "tcp");
    let cm = d.cache_manager();
    let mut dsts: Vec<AllocatedCache<'_>> = (0..16)
        .map(|_| cm.allocate_blocks_cache(&SMALL.desc(), None).unwrap())
        .collect();
    stop(p.pid());
    let opts = TransferOptions::new().timeout(Duration::from_secs(5));
    let transfers: Vec<Transfer<'_>> = dsts
        .iter_mut()
        .enumerate()
        .map(|(i, dst)| {
            cm.pull_blocks_async(
                &p.source_key(),
                dst,
                &[i as u64],
                &[i as u64],
                None,
                Some(&opts),
            )
            .unwrap()
        })
        .collect();
    assert_eq!(unsafe { libc::kill(p.pid(), libc::SIGKILL) }, 0);
    let t0 = Instant::now();
    for t in &transfers {
        let e = t.wait(Some(Duration::from_secs(15))).unwrap_err();
        assert_ne!(
            e.status(),
            Status::TASK_PENDING,
            "a transfer still runs: {e}"
        );
        assert!(!e.message().is_empty() || e.status() != Status::SUCCESS);
    }
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
}

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
/// returns without waiting for it, the synchronizer is not called again
/// once it returns, it is dropped, and nothing reaches the peer.
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
    let t0 = Instant::now();
    drop(tr);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "drop waited {:?}",
        t0.elapsed()
    );
    assert!(!dropped.load(Ordering::SeqCst), "dropped while running");
    go.send(()).unwrap(); // layer 0 "computed", after the cancel
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

/// Arguments are checked at submission exactly as the blocking calls do:
/// an error, no transfer.
#[test]
fn submission_checks_arguments() {
    let p = Peer::start(1, SMALL, &[]);
    let d = decoder_linked(10, &[&p], "auto");
    let cm = d.cache_manager();
    let mut dst = cm.allocate_blocks_cache(&SMALL.desc(), None).unwrap();
    let e = cm
        .pull_blocks_async(&p.source_key(), &mut dst, &[0, 1], &[0], None, None)
        .unwrap_err();
    assert_eq!(e.status(), Status::PARAM_INVALID, "{e}");
    let unlinked = CacheKey::Blocks {
        prompt_cluster_id: 77,
        model_id: 0,
    };
    let e = cm
        .pull_blocks_async(&unlinked, &mut dst, &[0], &[0], None, None)
        .unwrap_err();
    assert_eq!(e.status(), Status::NOT_YET_LINK, "{e}");
    let e = cm
        .pull_blocks_async(
            &p.source_key(),
            &mut dst,
            &[0],
            &[0],
            None,
            Some(&TransferOptions::new().timeout(Duration::ZERO)),
        )
        .unwrap_err();
    assert_eq!(e.status(), Status::PARAM_INVALID, "{e}");
    assert!(e.message().contains("timeout"), "{e}");
    let e = cm
        .push_blocks_async(
            &p.inbox_key(),
            &dst,
            &[0],
            &[0],
            None,
            Some(&TransferOptions::new().notify(vec![1u8; llmlink::MAX_NOTIFY_BYTES + 1])),
        )
        .unwrap_err();
    assert_eq!(e.status(), Status::PARAM_INVALID, "{e}");
    let e = cm
        .transfer_cache_async(&dst, |_: u32| true, &[], &[0], &[0], 0, None)
        .unwrap_err();
    assert_eq!(e.status(), Status::PARAM_INVALID, "{e}");
    // A cache of another engine.
    let other = common::decoder(11);
    let mut foreign = other
        .cache_manager()
        .allocate_blocks_cache(&SMALL.desc(), None)
        .unwrap();
    let e = cm
        .pull_blocks_async(&p.source_key(), &mut foreign, &[0], &[0], None, None)
        .unwrap_err();
    assert_eq!(e.status(), Status::PARAM_INVALID, "{e}");
    // Nothing was submitted: the engine is idle and the fd quiet.
    assert_eq!(d.poll_done().unwrap(), 0);
}

//! Asynchronous transfers through the blocking-style API of `Transfer`:
//! many in flight from several threads and links with every byte checked,
//! the event fd, drop of a pending transfer, a peer killed with transfers
//! in flight, submission errors. The prefill peers are `async_prefill`
//! processes. (Cancel: cancel.rs; layer-wise push: layer_push.rs.)

mod common;

use std::time::{Duration, Instant};

use common::peer::{cont, decoder_linked, fnv, kv_byte, relink, stop, Peer};
use common::xfer::{assert_pulled, assert_stable, sum_of, BIG, SMALL, WAIT};
use llmlink::{AllocatedCache, CacheKey, Status, Transfer, TransferOptions};

/// Two peer processes, four threads, each with 2 x 32 single-block pulls
/// in flight at once (256 in all) into its own cache: every one succeeds
/// and every byte is where it belongs.
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

//! Cancel with a fence, through `Transfer::cancel`: pulls and pushes of
//! 8 MiB cancelled at random moments over tcp and shm; after each cancel
//! returns, the destination (pull, read here) or the peer's memory (push,
//! asked of the `async_prefill` peer) is checksummed for 200 ms and never
//! changes, and the link still moves bytes (or was closed, for
//! CANCELLED_LINK_CLOSED, and links again).

mod common;

use std::time::Duration;

use common::peer::{decoder_linked, fnv, Lcg, Peer};
use common::xfer::{after_cancel, assert_pulled, assert_stable, fill_tagged, sum_of, BIG};
use llmlink::Status;

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

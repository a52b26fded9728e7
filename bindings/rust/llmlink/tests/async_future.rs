//! [`Transfer`] as a `std::future::Future`: awaited under tokio (many at
//! once with join_all and tokio::join), a dropped future is a fenced
//! cancel, the engine fd in tokio's `AsyncFd`, and a hand-written executor
//! (no runtime) whose waker only the library's completion callback wakes.
//! The prefill peers are `async_prefill` processes.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use common::peer::{cont, decoder_linked, fnv, kv_byte, stop, Layout, Peer};
use futures_util::future::join_all;
use llmlink::{Status, Transfer};

const LAYOUT: Layout = Layout {
    tensors: 4,
    blocks: 128,
    scale: 1,
};
const BIG: Layout = Layout {
    tensors: 4,
    blocks: 64,
    scale: 16,
};

fn check_block(tensor: &[u8], t: usize, src_block: usize, dst_block: usize, bb: usize) {
    let got = &tensor[dst_block * bb..(dst_block + 1) * bb];
    for (i, &b) in got.iter().enumerate() {
        assert_eq!(
            b,
            kv_byte(t, src_block * bb + i),
            "tensor {t} block {dst_block} byte {i}"
        );
    }
}

/// 128 pulls into one (raw-registered) cache awaited together with
/// join_all, then a pull and a push awaited with tokio::join: every result
/// Ok and every byte checked (the push on the peer).
#[tokio::test]
async fn many_transfers_awaited_under_tokio() {
    let mut p = Peer::start(1, LAYOUT, &[]);
    let d = decoder_linked(10, &[&p], "auto");
    let cm = d.cache_manager();
    let desc = LAYOUT.desc();
    let bytes = desc.tensor_bytes().unwrap();
    let bb = LAYOUT.block_bytes();
    let n = LAYOUT.blocks as usize;
    let mut bufs: Vec<Vec<u8>> = (0..4).map(|_| vec![0u8; bytes]).collect();
    let addrs: Vec<u64> = bufs.iter_mut().map(|b| b.as_mut_ptr() as u64).collect();
    // SAFETY: the buffers outlive the registration (unregistered before they
    // are read) and nothing else refers to them meanwhile.
    let raw = unsafe { cm.register_blocks_cache_raw(&desc, &addrs, None) }.unwrap();
    // Block b of the peer into block n-1-b: reversed, so a misplaced block shows.
    let transfers: Vec<Transfer<'_>> = (0..n)
        .map(|b| {
            cm.pull_blocks_async(
                &p.source_key(),
                &raw,
                &[b as u64],
                &[(n - 1 - b) as u64],
                None,
                None,
            )
            .unwrap()
        })
        .collect();
    let results = tokio::time::timeout(Duration::from_secs(30), join_all(transfers))
        .await
        .expect("128 transfers within 30 s");
    assert_eq!(results.len(), n);
    for r in results {
        r.unwrap();
    }
    raw.unregister().unwrap();
    for (t, tensor) in bufs.iter().enumerate() {
        for b in 0..n {
            check_block(tensor, t, b, n - 1 - b, bb);
        }
    }

    let mut dst = cm.allocate_blocks_cache(&desc, None).unwrap();
    let mut src = cm.allocate_blocks_cache(&desc, None).unwrap();
    for t in 0..4 {
        for (i, b) in src.tensor_mut(t).iter_mut().enumerate() {
            *b = common::pattern(9, t, i);
        }
    }
    let all: Vec<u64> = (0..n as u64).collect();
    let pull = cm
        .pull_blocks_async(&p.source_key(), &mut dst, &[3, 4], &[0, 1], None, None)
        .unwrap();
    let push = cm
        .push_blocks_async(&p.inbox_key(), &src, &all, &all, None, None)
        .unwrap();
    let (a, b) = tokio::join!(pull, push);
    a.unwrap();
    b.unwrap();
    for t in 0..4 {
        check_block(dst.tensor(t), t, 3, 0, bb);
        check_block(dst.tensor(t), t, 4, 1, bb);
    }
    let tensors: Vec<&[u8]> = (0..4).map(|t| src.tensor(t)).collect();
    assert_eq!(p.inbox_sum(), format!("SUM {}", fnv(&tensors)));
}

/// tokio::time::timeout drops the future when the time runs out: that is
/// a cancel with a fence. The peer is stopped so the pull cannot finish;
/// after the drop and the peer's resumption, nothing lands for 200 ms.
#[tokio::test]
async fn a_dropped_future_is_a_fenced_cancel() {
    let p = Peer::start(1, BIG, &["--transport", "tcp"]);
    let d = decoder_linked(10, &[&p], "tcp");
    let cm = d.cache_manager();
    let mut dst = cm.allocate_blocks_cache(&BIG.desc(), None).unwrap();
    let all: Vec<u64> = (0..BIG.blocks as u64).collect();
    stop(p.pid());
    let tr = cm
        .pull_blocks_async(&p.source_key(), &mut dst, &all, &all, None, None)
        .unwrap();
    let r = tokio::time::timeout(Duration::from_millis(100), tr).await;
    assert!(r.is_err(), "the pull finished with its peer stopped: {r:?}");
    cont(p.pid());
    let zero = fnv(&[&vec![0u8; BIG.desc().tensor_bytes().unwrap() * 4]]);
    let end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < end {
        let tensors: Vec<&[u8]> = (0..4).map(|t| dst.tensor(t)).collect();
        assert_eq!(
            fnv(&tensors),
            zero,
            "bytes landed after the future was dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The engine fd registered in tokio's reactor (AsyncFd): a notification
/// from the peer makes it readable; fetching clears it.
#[tokio::test]
async fn the_event_fd_drives_tokio() {
    use tokio::io::{unix::AsyncFd, Interest};
    let mut p = Peer::start(1, LAYOUT, &[]);
    let d = decoder_linked(10, &[&p], "auto");
    // SAFETY: the engine keeps its event fd open, the same descriptor,
    // until it is destroyed; `d` outlives `afd` (the EventFd borrows it).
    let afd = unsafe { AsyncFd::register_with_interest(d.event_fd().unwrap(), Interest::READABLE) }
        .unwrap();
    let answer = p.ask("notify 10 6869", "NOTIFY ");
    assert_eq!(answer, "NOTIFY LLM_SUCCESS");
    let mut guard = tokio::time::timeout(Duration::from_secs(5), afd.readable())
        .await
        .expect("fd readable within 5 s")
        .unwrap();
    let got = d.get_notifies().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].cluster_id, &got[0].data[..]), (1, &b"hi"[..]));
    guard.clear_ready();
    // Completion of a transfer also wakes the fd.
    let mut dst = d
        .cache_manager()
        .allocate_blocks_cache(&LAYOUT.desc(), None)
        .unwrap();
    let tr = d
        .cache_manager()
        .pull_blocks_async(&p.source_key(), &mut dst, &[1], &[1], None, None)
        .unwrap();
    let mut guard = tokio::time::timeout(Duration::from_secs(5), afd.readable())
        .await
        .expect("fd readable after a transfer")
        .unwrap();
    assert_eq!(d.poll_done().unwrap(), 1);
    guard.clear_ready();
    tr.await.unwrap();
}

/// A waker that unparks the test thread and counts its wakes.
struct Unpark {
    thread: std::thread::Thread,
    wakes: AtomicUsize,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// Polls `fut` only when woken; returns its output, the number of polls and
/// of wakes. Panics if a wake never comes within 10 s.
fn block_on<F: Future + Unpin>(mut fut: F) -> (F::Output, usize, usize) {
    let unpark = Arc::new(Unpark {
        thread: std::thread::current(),
        wakes: AtomicUsize::new(0),
    });
    let waker = Waker::from(Arc::clone(&unpark));
    let mut cx = Context::from_waker(&waker);
    let mut polls = 0;
    loop {
        let seen = unpark.wakes.load(Ordering::SeqCst);
        polls += 1;
        if let Poll::Ready(out) = Pin::new(&mut fut).poll(&mut cx) {
            return (out, polls, unpark.wakes.load(Ordering::SeqCst));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while unpark.wakes.load(Ordering::SeqCst) == seen {
            assert!(Instant::now() < deadline, "the future was never woken");
            std::thread::park_timeout(Duration::from_millis(100));
        }
    }
}

/// No runtime: the future is polled only when its waker is woken, and the
/// library's callback does that once per transfer.
#[test]
fn the_future_needs_no_runtime() {
    let p = Peer::start(1, BIG, &["--transport", "tcp"]);
    let d = decoder_linked(10, &[&p], "tcp");
    let cm = d.cache_manager();
    let mut dst = cm.allocate_blocks_cache(&BIG.desc(), None).unwrap();
    let all: Vec<u64> = (0..BIG.blocks as u64).collect();
    // Stopped peer: the first poll surely finds the transfer running.
    stop(p.pid());
    let tr = cm
        .pull_blocks_async(&p.source_key(), &mut dst, &all, &all, None, None)
        .unwrap();
    let resume = std::thread::spawn({
        let pid = p.pid();
        move || {
            std::thread::sleep(Duration::from_millis(100));
            cont(pid);
        }
    });
    let (out, polls, wakes) = block_on(tr);
    resume.join().unwrap();
    out.unwrap();
    assert_eq!(
        (polls, wakes),
        (2, 1),
        "polled {polls} times, woken {wakes} times"
    );
    let bb = BIG.block_bytes();
    for t in 0..4 {
        for b in [0, 31, 63] {
            check_block(dst.tensor(t), t, b, b, bb);
        }
    }
    // A failed transfer's future gives its error with the task's message.
    let bad = llmlink::CacheKey::Blocks {
        prompt_cluster_id: 1,
        model_id: 5,
    };
    let mut tr = cm
        .pull_blocks_async(&bad, &mut dst, &[0], &[0], None, None)
        .unwrap();
    let (out, _, _) = block_on(&mut tr);
    let e = out.unwrap_err();
    assert_eq!(e.status(), Status::KV_CACHE_NOT_EXIST, "{e}");
    assert!(!e.message().is_empty(), "{e}");
    // Right after the wake, the handle agrees (the library may not have
    // marked the task done for this thread yet).
    assert_eq!(tr.status(), Status::KV_CACHE_NOT_EXIST);
    assert_eq!(tr.wait(Some(Duration::ZERO)).unwrap_err(), e);
}

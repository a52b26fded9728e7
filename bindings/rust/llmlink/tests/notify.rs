//! Notifications between a decoder (this process) and a prefill peer
//! (`async_prefill` process): order, both directions through the event fd,
//! attached to a push (never before its bytes), a full queue, a dead peer,
//! argument errors.

mod common;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::peer::{decoder_linked, fnv, Layout, Peer};
use llmlink::{DataDist, Notification, Role, Status, TransferOptions};

const LAYOUT: Layout = Layout {
    tensors: 4,
    blocks: 16,
    scale: 1,
};
const T: Duration = Duration::from_secs(5);

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
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

/// Waits on the engine fd (bounded) until `n` notifications were fetched.
fn fetch(d: &DataDist, n: usize) -> Vec<Notification> {
    let fd = d.event_fd().unwrap().as_raw_fd();
    let deadline = Instant::now() + T;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} notifications: {got:?}",
            got.len()
        );
        if readable(fd, 100) {
            got.extend(d.get_notifies().unwrap());
        }
    }
    got
}

#[test]
fn notifications_arrive_in_order_both_ways() {
    let mut p = Peer::start(1, LAYOUT, &[]);
    let d = decoder_linked(10, &[&p], "auto");
    let sent: Vec<Vec<u8>> = (0..40u32)
        .map(|i| format!("request {i} read").into_bytes())
        .collect();
    for m in &sent {
        d.notify(1, m, T).unwrap();
    }
    // The largest size.
    let big = vec![0xA5u8; llmlink::MAX_NOTIFY_BYTES];
    d.notify(1, &big, T).unwrap();
    let got = p.notified(41, T);
    for (i, m) in sent.iter().enumerate() {
        assert_eq!(got[i].0, 10, "sender");
        assert_eq!(&got[i].1, m, "notification {i} out of order");
    }
    assert_eq!(got[40].1, big);

    // The other way: the prefill peer notifies the decoder, whose event fd
    // turns readable, and quiet again once fetched.
    let fd = d.event_fd().unwrap().as_raw_fd();
    assert!(!readable(fd, 0), "readable with nothing received");
    for i in 0..3u8 {
        let answer = p.ask(&format!("notify 10 {}", hex(&[b'p', i])), "NOTIFY ");
        assert_eq!(answer, "NOTIFY LLM_SUCCESS");
    }
    let got = fetch(&d, 3);
    let want: Vec<Notification> = (0..3u8)
        .map(|i| Notification {
            cluster_id: 1,
            data: vec![b'p', i],
        })
        .collect();
    assert_eq!(got, want);
    assert!(!readable(fd, 0), "still readable after get_notifies");
    assert!(d.get_notifies().unwrap().is_empty());
}

/// A notification attached to a push reaches the peer only once the bytes
/// are in place: the peer's checksum of its push cache, taken when it
/// fetched the notification, is already the pushed one.
#[test]
fn an_attached_notification_comes_after_the_bytes() {
    let mut p = Peer::start(1, LAYOUT, &[]);
    let d = decoder_linked(10, &[&p], "tcp");
    let cm = d.cache_manager();
    let mut src = cm.allocate_blocks_cache(&LAYOUT.desc(), None).unwrap();
    let all: Vec<u64> = (0..LAYOUT.blocks as u64).collect();
    for round in 0..5u8 {
        for t in 0..4 {
            for (i, b) in src.tensor_mut(t).iter_mut().enumerate() {
                *b = common::pattern(round + 1, t, i);
            }
        }
        let tensors: Vec<&[u8]> = (0..4).map(|t| src.tensor(t)).collect();
        let want = fnv(&tensors);
        let opts = TransferOptions::new().notify(format!("pushed {round}"));
        let tr = cm
            .push_blocks_async(&p.inbox_key(), &src, &all, &all, None, Some(&opts))
            .unwrap();
        tr.wait(Some(T)).unwrap();
        drop(tr);
        let got = p.notified(round as usize + 1, T);
        let (from, data, sum) = &got[round as usize];
        assert_eq!(*from, 10);
        assert_eq!(data, format!("pushed {round}").as_bytes());
        assert_eq!(
            sum, &want,
            "round {round}: notified before the bytes were in place"
        );
    }
    // Attached to a pull too: sent once this side has the bytes.
    let mut dst = cm.allocate_blocks_cache(&LAYOUT.desc(), None).unwrap();
    let opts = TransferOptions::new().notify(b"read 7".to_vec());
    let tr = cm
        .pull_blocks_async(&p.source_key(), &mut dst, &[7], &[0], None, Some(&opts))
        .unwrap();
    tr.wait(Some(T)).unwrap();
    drop(tr);
    assert_eq!(p.notified(6, T)[5].1, b"read 7");
}

/// A peer whose queue is full refuses with NOTIFY_QUEUE_FULL and queues
/// nothing; once it fetched, it takes more.
#[test]
fn a_full_queue_refuses_with_its_status() {
    let mut p = Peer::start(1, LAYOUT, &["--notify-queue-depth", "4", "--hold"]);
    let d = decoder_linked(10, &[&p], "auto");
    for i in 0..4u8 {
        d.notify(1, &[i], T).unwrap();
    }
    let e = d.notify(1, &[4], T).unwrap_err();
    assert_eq!(e.status(), Status::NOTIFY_QUEUE_FULL, "{e}");
    assert_eq!(p.ask("fetch", "FETCHED"), "FETCHED");
    let got = p.notified(4, T);
    let data: Vec<Vec<u8>> = got.into_iter().map(|(_, d, _)| d).collect();
    assert_eq!(data, vec![vec![0], vec![1], vec![2], vec![3]]);
    d.notify(1, &[5], T).unwrap();
    assert_eq!(p.notified(5, T)[4].1, vec![5]);
}

#[test]
fn a_dead_peer_is_reported() {
    let p = Peer::start(1, LAYOUT, &[]);
    let d = decoder_linked(10, &[&p], "auto");
    d.notify(1, b"alive", T).unwrap();
    assert_eq!(unsafe { libc::kill(p.pid(), libc::SIGKILL) }, 0);
    let t0 = Instant::now();
    // Until the engine sees the link die, a notification may still be
    // written to the socket: it must then fail, never succeed.
    let e = loop {
        match d.notify(1, b"dead?", T) {
            Err(e) => break e,
            Ok(()) => {
                assert!(
                    t0.elapsed() < Duration::from_millis(200),
                    "a dead peer took notifications"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert!(
        matches!(e.status(), Status::NOT_YET_LINK | Status::TIMEOUT),
        "{e}"
    );
    assert!(
        t0.elapsed() < T + Duration::from_secs(2),
        "took {:?}",
        t0.elapsed()
    );
}

#[test]
fn bad_arguments_are_refused() {
    let p = Peer::start(1, LAYOUT, &[]);
    let d = decoder_linked(10, &[&p], "auto");
    let e = d.notify(1, &[], T).unwrap_err();
    assert_eq!(e.status(), Status::PARAM_INVALID, "{e}");
    let e = d
        .notify(1, &vec![0u8; llmlink::MAX_NOTIFY_BYTES + 1], T)
        .unwrap_err();
    assert_eq!(e.status(), Status::PARAM_INVALID, "{e}");
    let e = d.notify(99, b"x", T).unwrap_err();
    assert_eq!(e.status(), Status::NOT_YET_LINK, "{e}");
    let e = d
        .notify(1, b"x", Duration::from_secs(u64::MAX / 4))
        .unwrap_err();
    assert_eq!(e.status(), Status::PARAM_INVALID, "{e}");

    let fresh = DataDist::new(Role::Decoder, 20).unwrap();
    let e = fresh.event_fd().unwrap_err();
    assert_eq!(e.status(), Status::NOT_INITIALIZED, "{e}");
}

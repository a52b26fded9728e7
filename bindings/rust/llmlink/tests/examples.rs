//! The examples as real processes: a prefill server child and a decode
//! client child that links to it over loopback and verifies the bytes.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// target/<profile>/examples/<name>, next to this test's deps/ folder
/// (`cargo test` builds the examples before it runs the tests).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not built: run plain `cargo test` (it builds the examples)",
        path.display()
    );
    path
}

/// Waits for `child` at most `limit`, killing it past that.
fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Server {
    child: Child,
    port: u16,
    lines: mpsc::Receiver<String>,
}

fn start_server(extra: &[&str]) -> Server {
    let mut child = Command::new(example("prefill_server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--cluster-id",
            "1",
            "--blocks",
            "16",
            "--serve-seconds",
            "60",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("server printed no PORT line");
    let port = first.strip_prefix("PORT ").expect(&first).parse().unwrap();
    Server {
        child,
        port,
        lines: rx,
    }
}

fn run_client(port: u16) -> (std::process::ExitStatus, String, String) {
    let mut child = Command::new(example("decode_client"))
        .args([
            "--connect",
            &format!("127.0.0.1:{port}"),
            "--prompt-cluster-id",
            "1",
            "--blocks",
            "16",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let st = wait_bounded(&mut child, Duration::from_secs(30));
    (st, out.join().unwrap(), err.join().unwrap())
}

#[test]
fn decode_client_pulls_and_verifies_from_the_prefill_server() {
    let mut server = start_server(&[]);
    let (st, out, err) = run_client(server.port);
    assert!(st.success(), "client failed: {out}\n{err}");
    // 8 of 16 blocks, 4 tensors, 2 KiB each.
    assert!(
        out.contains(&format!("verified {} bytes", 8 * 4 * 2048)),
        "{out}"
    );
    assert!(out.contains("unlinked"), "{out}");

    // A second client process after the first: the server keeps serving.
    let (st, out, err) = run_client(server.port);
    assert!(st.success(), "second client failed: {out}\n{err}");

    drop(server.child.stdin.take()); // EOF: the server reports and exits
    let st = wait_bounded(&mut server.child, Duration::from_secs(20));
    assert!(st.success());
    // The reader thread may still be forwarding the last lines: wait for
    // the summary (bounded). Its byte count is not checked: with the auto
    // transport a same-host client may move the bytes itself (shm), which
    // the server does not count as served; the clients verified every byte.
    let summary = loop {
        let line = server
            .lines
            .recv_timeout(Duration::from_secs(10))
            .expect("no summary line");
        if line.contains("served") {
            break line;
        }
    };
    // Both clients unlinked gracefully: the server holds no link.
    assert!(summary.ends_with("links now 0"), "{summary}");
}

#[test]
fn decode_client_reports_an_unreachable_server() {
    let (_fd, dead) = common::dead_port();
    let (st, out, err) = run_client(dead);
    assert!(!st.success(), "client succeeded against a dead port: {out}");
    assert!(err.contains("LLM_LINK_FAILED"), "{err}");
}

/// Waits (bounded) until /proc says `pid` is stopped: kill() returns before
/// the target's threads have all stopped.
fn wait_stopped(pid: libc::pid_t) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // "pid (comm) S ...": the state follows the last ')'.
        let state = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().chars().next());
        if state == Some(Some('T')) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} did not stop: {stat}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A stopped (SIGSTOP) server process: a pull times out with
/// WAIT_PROCESS_TIMEOUT and the link is closed (later calls: NOT_YET_LINK);
/// once the process runs again, linking again works and the bytes arrive.
#[test]
fn a_stalled_server_times_the_pull_out_then_relinks() {
    use common::{cluster, LINK_TIMEOUT};
    use llmlink::{CacheDesc, CacheKey, DataDist, DataType, Options, Role, Status};

    let mut server = start_server(&["--transport", "tcp"]);
    let pid = server.child.id() as libc::pid_t;
    let d = DataDist::new(Role::Decoder, 2).unwrap();
    d.init(
        &Options::new()
            // Long enough that a pull on a loaded machine does not time out
            // by itself, short enough to keep the suite quick.
            .set("llm.SyncKvCacheWaitTime", "1500")
            .set("llmlink.Transport", "tcp"),
    )
    .unwrap();
    let (st, _) = d
        .link_clusters(&[cluster(1, server.port)], LINK_TIMEOUT)
        .unwrap();
    assert_eq!(st, Status::SUCCESS);
    // The examples' layout: 4 tensors of 16 blocks of 16 x 64 fp16.
    let desc = CacheDesc::new(4, DataType::Float16, vec![16, 16, 64]);
    let key = CacheKey::Blocks {
        prompt_cluster_id: 1,
        model_id: 0,
    };
    let cm = d.cache_manager();
    let mut dst = cm.allocate_blocks_cache(&desc, None).unwrap();
    cm.pull_blocks(&key, &mut dst, &[1], &[0], None).unwrap();

    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    wait_stopped(pid);
    let e = cm
        .pull_blocks(&key, &mut dst, &[2], &[1], None)
        .unwrap_err();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    assert_eq!(e.status(), Status::WAIT_PROCESS_TIMEOUT, "{e}");
    let e = cm
        .pull_blocks(&key, &mut dst, &[2], &[1], None)
        .unwrap_err();
    assert_eq!(e.status(), Status::NOT_YET_LINK, "{e}");
    assert_eq!(d.xfer_stats().unwrap().transfers_timed_out, 1);

    // Link again (bounded: the server may still be closing the old link).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, per) = d
            .link_clusters(&[cluster(1, server.port)], LINK_TIMEOUT)
            .unwrap();
        if st == Status::SUCCESS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relink failed: {per:?}: {}",
            llmlink::last_error()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cm.pull_blocks(&key, &mut dst, &[2], &[1], None).unwrap();
    let block = 16 * 64 * 2;
    let t0 = dst.tensor(0);
    assert!(t0[block..2 * block].iter().any(|&b| b != 0));
    // Block 1 of the server and block 2 hold different bytes: both landed.
    assert_ne!(&t0[..block], &t0[block..2 * block]);

    drop(server.child.stdin.take());
    assert!(wait_bounded(&mut server.child, Duration::from_secs(20)).success());
}

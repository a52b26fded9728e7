//! A prefill peer in its own process: the `async_prefill` example, driven
//! through its standard input and output (see its doc comment).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use llmlink::{CacheDesc, CacheKey, DataType};

#[path = "../../examples/shared/mod.rs"]
mod shared;

/// The byte the peer's source cache holds at `offset` of tensor `tensor`.
pub fn kv_byte(tensor: usize, offset: usize) -> u8 {
    shared::kv_byte(tensor, offset)
}

/// Bound for one answer of the peer.
const ANSWER: Duration = Duration::from_secs(20);

/// target/<profile>/examples/<name> (`cargo test` builds the examples).
pub fn example(name: &str) -> PathBuf {
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

/// The layout both sides use: `tensors` tensors of `blocks` blocks of
/// `16 * scale` x 64 fp16 values.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub tensors: u32,
    pub blocks: i64,
    pub scale: i64,
}

impl Layout {
    pub fn desc(&self) -> CacheDesc {
        CacheDesc::new(
            self.tensors,
            DataType::Float16,
            vec![self.blocks, 16 * self.scale, 64],
        )
    }
    pub fn block_bytes(&self) -> usize {
        (16 * self.scale * 64 * 2) as usize
    }
}

pub struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// NOTIFIED lines seen while waiting for other answers.
    notified: Vec<String>,
    pub port: u16,
    pub cluster_id: u64,
    pub layout: Layout,
}

impl Peer {
    /// Starts `async_prefill` as cluster `cluster_id` with `layout` and
    /// `extra` arguments; returns once it listens.
    pub fn start(cluster_id: u64, layout: Layout, extra: &[&str]) -> Peer {
        let mut child = Command::new(example("async_prefill"))
            .args(["--listen", "127.0.0.1:0", "--cluster-id"])
            .arg(cluster_id.to_string())
            .arg("--tensors")
            .arg(layout.tensors.to_string())
            .arg("--blocks")
            .arg(layout.blocks.to_string())
            .arg("--block-scale")
            .arg(layout.scale.to_string())
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn async_prefill");
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx
            .recv_timeout(ANSWER)
            .expect("the peer printed no PORT line");
        let port = first
            .strip_prefix("PORT ")
            .unwrap_or_else(|| panic!("{first}"))
            .parse()
            .unwrap();
        Peer {
            child,
            stdin,
            lines: rx,
            notified: Vec::new(),
            port,
            cluster_id,
            layout,
        }
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// The key of the peer's source cache (pull from it).
    pub fn source_key(&self) -> CacheKey {
        CacheKey::Blocks {
            prompt_cluster_id: self.cluster_id,
            model_id: 0,
        }
    }

    /// The key of the peer's push cache (push into it).
    pub fn inbox_key(&self) -> CacheKey {
        CacheKey::Blocks {
            prompt_cluster_id: self.cluster_id,
            model_id: 1,
        }
    }

    fn next_line(&mut self, limit: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(limit).ok()?;
        Some(line)
    }

    /// Sends `cmd` and returns the first answer line that starts with
    /// `prefix` (NOTIFIED lines met meanwhile are kept).
    pub fn ask(&mut self, cmd: &str, prefix: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{cmd}").expect("write to the peer");
        stdin.flush().unwrap();
        let deadline = Instant::now() + ANSWER;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .next_line(left)
                .unwrap_or_else(|| panic!("no {prefix} answer to {cmd:?}"));
            if line.starts_with("NOTIFIED ") {
                self.notified.push(line);
            } else if line.starts_with(prefix) {
                return line;
            } else {
                panic!("unexpected answer to {cmd:?}: {line}");
            }
        }
    }

    /// The checksum of the peer's push cache.
    pub fn inbox_sum(&mut self) -> String {
        self.ask("sum", "SUM ")
    }

    /// The checksum of one block of one tensor of the push cache.
    pub fn inbox_block(&mut self, tensor: usize, block: usize) -> String {
        self.ask(&format!("block {tensor} {block}"), "BLOCK ")
    }

    /// Waits (bounded) until `n` notifications arrived in all; returns them
    /// as (cluster id, data, push-cache checksum when fetched).
    pub fn notified(&mut self, n: usize, limit: Duration) -> Vec<(u64, Vec<u8>, String)> {
        let deadline = Instant::now() + limit;
        while self.notified.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Some(l) if l.starts_with("NOTIFIED ") => self.notified.push(l),
                Some(l) => panic!("unexpected line from the peer: {l}"),
                None => panic!(
                    "{} of {n} notifications within {limit:?}: {:?}",
                    self.notified.len(),
                    self.notified
                ),
            }
        }
        self.notified.iter().map(|l| parse_notified(l)).collect()
    }
}

/// "NOTIFIED <cluster> <hex> SUM <hex>".
fn parse_notified(line: &str) -> (u64, Vec<u8>, String) {
    let w: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(w.len(), 5, "{line}");
    let data = (0..w[2].len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&w[2][i..i + 2], 16).unwrap())
        .collect();
    (w[1].parse().unwrap(), data, w[4].to_string())
}

/// FNV-1a 64 as the peer computes it, formatted as its answers.
pub fn fnv(chunks: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for c in chunks {
        for &b in *c {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

impl Drop for Peer {
    fn drop(&mut self) {
        // EOF ends it; killed past a bound (it may be stopped or dead).
        drop(self.stdin.take());
        unsafe { libc::kill(self.pid(), libc::SIGCONT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A DECODER engine (`transport`: llmlink.Transport) linked to `peers`.
pub fn decoder_linked(id: u64, peers: &[&Peer], transport: &str) -> llmlink::DataDist {
    let d = llmlink::DataDist::new(llmlink::Role::Decoder, id).expect("create decoder");
    d.init(
        &llmlink::Options::new()
            .set("llmlink.Transport", transport)
            .set("llm.SyncKvCacheWaitTime", "10000"),
    )
    .expect("init decoder");
    for p in peers {
        relink(&d, p);
    }
    d
}

/// Links `d` to `peer` (again), bounded: the peer may still be closing a
/// link that a cancel closed.
pub fn relink(d: &llmlink::DataDist, peer: &Peer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, per) = d
            .link_clusters(
                &[super::cluster(peer.cluster_id, peer.port)],
                super::LINK_TIMEOUT,
            )
            .expect("link");
        if st.is_success() || per == [llmlink::Status::ALREADY_LINK] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "link to {}: {per:?}: {}",
            peer.cluster_id,
            llmlink::last_error()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) until /proc says `pid` is stopped: kill() returns before
/// every thread of the target has stopped.
pub fn stop(pid: libc::pid_t) {
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if state == Some('T') {
            return;
        }
        assert!(Instant::now() < deadline, "{pid} did not stop: {stat}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Resumes a stopped peer.
pub fn cont(pid: libc::pid_t) {
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
}

/// A small deterministic generator for the tests' random moments.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

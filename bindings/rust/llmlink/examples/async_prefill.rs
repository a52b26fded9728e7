//! Prefill peer of the asynchronous-transfer examples and tests: a PROMPT
//! engine that publishes a blocks cache (key model 0, the bytes of
//! `shared::kv_byte`), takes pushes into a second, zeroed one (key model
//! 1), and waits on the engine's event descriptor and its standard input
//! with `poll(2)`: an event loop of its own, as a serving stack's would be.
//!
//! ```text
//! async_prefill [--listen 127.0.0.1:0] [--cluster-id 1] [--blocks 64]
//!               [--tensors 4] [--block-scale 1] [--transport auto|tcp|shm]
//!               [--notify-queue-depth N] [--hold]
//! ```
//!
//! A block of a tensor is `16 * block-scale` rows of 64 fp16 values
//! (2 KiB per scale unit); tensors K0 V0 K1 V1 ...
//!
//! Prints `PORT <n>`, then one line per event:
//!  - `NOTIFIED <cluster> <hex> SUM <hex>` for each notification received,
//!    with the push cache's checksum when it was fetched (while not
//!    holding: `--hold` leaves them queued until the `fetch` command);
//!
//! and answers commands, one per line on standard input:
//!  - `sum`: `SUM <hex>`, a checksum of the push cache;
//!  - `block <tensor> <block>`: `BLOCK <hex>`, a checksum of one block of the
//!    push cache;
//!  - `notify <cluster> <hex>`: sends that notification, `NOTIFY <status>`;
//!  - `fetch`: stop holding notifications (and print them);
//!  - `stats`: `STATS links <n> served <requests>`.
//!
//! Exits when its standard input closes.

mod shared;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use llmlink::{AllocatedCache, CacheDesc, CacheKey, DataDist, DataType, Options, Role};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("async_prefill: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error>;

fn run() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let listen = shared::arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:0".into());
    let cluster_id: u64 = shared::arg(&args, "--cluster-id").map_or(Ok(1), |s| s.parse())?;
    let blocks: i64 = shared::arg(&args, "--blocks").map_or(Ok(64), |s| s.parse())?;
    let tensors: u32 = shared::arg(&args, "--tensors").map_or(Ok(4), |s| s.parse())?;
    let scale: i64 = shared::arg(&args, "--block-scale").map_or(Ok(1), |s| s.parse())?;
    let mut hold = args.iter().any(|a| a == "--hold");

    let mut options = Options::new().set("llm.listenIpInfo", listen.as_str());
    if let Some(t) = shared::arg(&args, "--transport") {
        options.insert("llmlink.Transport", t);
    }
    if let Some(d) = shared::arg(&args, "--notify-queue-depth") {
        options.insert("llmlink.NotifyQueueDepth", d);
    }
    let engine = DataDist::new(Role::Prompt, cluster_id)?;
    engine.init(&options)?;
    let port = engine.listen_port(0)?;

    let cm = engine.cache_manager();
    let desc = CacheDesc::new(tensors, DataType::Float16, vec![blocks, 16 * scale, 64]);
    let block_bytes = desc.item_bytes().ok_or("bad cache shape")?;
    let mut source = cm.allocate_blocks_cache(&desc, Some(&shared::blocks_key(cluster_id)))?;
    for t in 0..source.num_tensors() {
        for (i, b) in source.tensor_mut(t).iter_mut().enumerate() {
            *b = shared::kv_byte(t, i);
        }
    }
    let inbox_key = CacheKey::Blocks {
        prompt_cluster_id: cluster_id,
        model_id: 1,
    };
    let inbox = cm.allocate_blocks_cache(&desc, Some(&inbox_key))?;

    println!("PORT {port}");
    std::io::stdout().flush()?;
    let efd = engine.event_fd()?;
    let mut input = Vec::new();
    loop {
        use std::os::fd::AsRawFd;
        let mut fds = [
            libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: efd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // Holding: the descriptor stays readable (level-triggered) while
        // notifications wait, so it is left out of the set.
        let n = if hold { 1 } else { 2 };
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), n, 1000) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if n == 2 && fds[1].revents != 0 {
            // Clear both levels: finished transfers (none here: a PROMPT
            // engine serves) and notifications.
            engine.poll_done()?;
            print_notifies(&engine, &inbox)?;
        }
        if fds[0].revents != 0 {
            let mut buf = [0u8; 4096];
            let got = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if got <= 0 {
                break; // EOF (or an error): the parent is done
            }
            input.extend_from_slice(&buf[..got as usize]);
            while let Some(pos) = input.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = input.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line).trim().to_string();
                command(&engine, &inbox, block_bytes, &line, &mut hold)?;
            }
        }
    }
    drop(inbox);
    drop(source);
    Ok(())
}

fn print_notifies(engine: &DataDist, inbox: &AllocatedCache<'_>) -> Result<(), BoxError> {
    let mut out = std::io::stdout().lock();
    for n in engine.get_notifies()? {
        let sum = checksum(inbox);
        writeln!(
            out,
            "NOTIFIED {} {} SUM {sum:016x}",
            n.cluster_id,
            hex(&n.data)
        )?;
    }
    out.flush()?;
    Ok(())
}

fn command(
    engine: &DataDist,
    inbox: &AllocatedCache<'_>,
    block_bytes: usize,
    line: &str,
    hold: &mut bool,
) -> Result<(), BoxError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let reply = match words.as_slice() {
        ["sum"] => format!("SUM {:016x}", checksum(inbox)),
        ["block", t, b] => {
            let (t, b): (usize, usize) = (t.parse()?, b.parse()?);
            let bytes = &inbox.tensor(t)[b * block_bytes..(b + 1) * block_bytes];
            let mut h = Fnv::new();
            h.add(bytes);
            format!("BLOCK {:016x}", h.0)
        }
        ["notify", cluster, data] => {
            let data = unhex(data).ok_or("notify: bad hex")?;
            match engine.notify(cluster.parse()?, &data, Duration::from_secs(5)) {
                Ok(()) => "NOTIFY LLM_SUCCESS".to_string(),
                Err(e) => format!("NOTIFY {}", e.status()),
            }
        }
        ["fetch"] => {
            *hold = false;
            print_notifies(engine, inbox)?;
            "FETCHED".to_string()
        }
        ["stats"] => format!(
            "STATS links {} served {}",
            engine.stats()?.links,
            engine.xfer_stats()?.requests_served
        ),
        _ => format!("ERROR unknown command {line:?}"),
    };
    println!("{reply}");
    std::io::stdout().flush()?;
    Ok(())
}

/// The checksum of every tensor of `cache`.
fn checksum(cache: &AllocatedCache<'_>) -> u64 {
    let mut h = Fnv::new();
    for t in 0..cache.num_tensors() {
        h.add(cache.tensor(t));
    }
    h.0
}

/// FNV-1a, 64 bits: a checksum that any changed byte changes.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn add(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

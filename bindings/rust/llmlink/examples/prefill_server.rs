//! Prefill server: a PROMPT engine that publishes a blocks cache of KV
//! "computed" for a request, and serves the decode nodes that pull it.
//!
//! ```text
//! prefill_server [--listen 127.0.0.1:0] [--cluster-id 1] [--blocks 32] [--serve-seconds 60]
//!                [--transport auto|tcp|shm]
//! ```
//!
//! Prints `PORT <n>` once it listens (port 0 picks a free one), then serves
//! until its standard input closes or `--serve-seconds` pass, and prints
//! what it served.

mod shared;

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use llmlink::{DataDist, Options, Role};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prefill_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let listen = shared::arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:0".into());
    let cluster_id: u64 = shared::arg(&args, "--cluster-id").map_or(Ok(1), |s| s.parse())?;
    let blocks: i64 = shared::arg(&args, "--blocks").map_or(Ok(32), |s| s.parse())?;
    let serve_for: u64 = shared::arg(&args, "--serve-seconds").map_or(Ok(60), |s| s.parse())?;

    let mut options = Options::new().set("llm.listenIpInfo", listen.as_str());
    if let Some(transport) = shared::arg(&args, "--transport") {
        options.insert("llmlink.Transport", transport);
    }

    let engine = DataDist::new(Role::Prompt, cluster_id)?;
    engine.init(&options)?;
    let port = engine.listen_port(0)?;

    // The KV of a request, in library memory the peers can pull from.
    let cm = engine.cache_manager();
    let key = shared::blocks_key(cluster_id);
    let mut cache = cm.allocate_blocks_cache(&shared::cache_desc(blocks), Some(&key))?;
    for t in 0..cache.num_tensors() {
        for (i, b) in cache.tensor_mut(t).iter_mut().enumerate() {
            *b = shared::kv_byte(t, i);
        }
    }

    println!("PORT {port}");
    println!(
        "prefill_server: cluster {cluster_id} listening on port {port}, {blocks} blocks x {} tensors",
        cache.num_tensors()
    );
    std::io::stdout().flush()?;

    // Serve until stdin closes (the parent is done) or the time is up: the
    // engine's own threads do the serving meanwhile.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(serve_for));

    let xs = engine.xfer_stats()?;
    println!(
        "prefill_server: served {} requests, {} bytes, links now {}",
        xs.requests_served,
        xs.bytes_served,
        engine.stats()?.links
    );
    drop(cache);
    Ok(())
}

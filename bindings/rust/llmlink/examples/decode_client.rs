//! Decode client: a DECODER engine that links to a prefill server, pulls
//! the blocks of a request into its own cache, verifies every byte and
//! unlinks.
//!
//! ```text
//! decode_client --connect 127.0.0.1:PORT [--prompt-cluster-id 1] [--cluster-id 2] [--blocks 32]
//! ```
//!
//! Exits 0 when every pulled byte is what the server wrote.

mod shared;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use llmlink::{ClusterInfo, DataDist, IpInfo, Options, Role, Status};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("decode_client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let connect = shared::arg(&args, "--connect").ok_or("--connect IP:PORT is required")?;
    let (ip, port) = shared::parse_addr(&connect)?;
    let prompt_id: u64 = shared::arg(&args, "--prompt-cluster-id").map_or(Ok(1), |s| s.parse())?;
    let cluster_id: u64 = shared::arg(&args, "--cluster-id").map_or(Ok(2), |s| s.parse())?;
    let blocks: i64 = shared::arg(&args, "--blocks").map_or(Ok(32), |s| s.parse())?;

    let engine = DataDist::new(Role::Decoder, cluster_id)?;
    engine.init(&Options::new())?;

    let prefill = ClusterInfo::new(prompt_id, IpInfo::new(ip, port)).with_remote_role(Role::Prompt);
    let started = Instant::now();
    let (status, per_cluster) =
        engine.link_clusters(std::slice::from_ref(&prefill), Duration::from_secs(5))?;
    if status != Status::SUCCESS {
        return Err(format!(
            "link to cluster {prompt_id} at {connect}: {status} {per_cluster:?}: {}",
            llmlink::last_error()
        )
        .into());
    }
    println!(
        "decode_client: linked to cluster {prompt_id} in {:?}",
        started.elapsed()
    );

    // Every other block of the request, into the front of our own cache.
    let cm = engine.cache_manager();
    let mut cache = cm.allocate_blocks_cache(&shared::cache_desc(blocks), None)?;
    let src: Vec<u64> = (0..blocks as u64).step_by(2).collect();
    let dst: Vec<u64> = (0..src.len() as u64).collect();
    let key = shared::blocks_key(prompt_id);
    let started = Instant::now();
    cm.pull_blocks(&key, &mut cache, &src, &dst, None)?;
    let took = started.elapsed();

    let mut verified = 0usize;
    for t in 0..cache.num_tensors() {
        let tensor = cache.tensor(t);
        for (&s, &d) in src.iter().zip(&dst) {
            let (s, d) = (
                s as usize * shared::BLOCK_BYTES,
                d as usize * shared::BLOCK_BYTES,
            );
            for i in 0..shared::BLOCK_BYTES {
                let want = shared::kv_byte(t, s + i);
                if tensor[d + i] != want {
                    return Err(format!(
                        "tensor {t} byte {} is {:#x}, want {want:#x}",
                        d + i,
                        tensor[d + i]
                    )
                    .into());
                }
            }
            verified += shared::BLOCK_BYTES;
        }
    }
    println!(
        "decode_client: pulled {} blocks in {took:?}, verified {verified} bytes",
        src.len()
    );

    let (status, per_cluster) =
        engine.unlink_clusters(&[prefill], Duration::from_secs(5), false)?;
    if status != Status::SUCCESS {
        return Err(format!("unlink: {status} {per_cluster:?}").into());
    }
    println!("decode_client: unlinked");
    Ok(())
}

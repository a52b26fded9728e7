//! Every error path of the safe API: the exact status, and a message that
//! names what was wrong (from C, read at once after the failing call, or
//! from the Rust-side checks).

mod common;

use std::time::Duration;

use common::*;
use llmlink::{
    CacheDesc, CacheKey, ClusterInfo, DataDist, DataType, Error, IpInfo, LayerRange, Options,
    Placement, Role, Status,
};

#[track_caller]
fn expect_err<T: std::fmt::Debug>(r: Result<T, Error>, status: Status, needle: &str) -> Error {
    let e = r.expect_err("expected an error");
    assert_eq!(e.status(), status, "{e}");
    assert!(
        e.message().contains(needle),
        "message {:?} does not contain {needle:?}",
        e.message()
    );
    // Display shows the status name and the message.
    let shown = e.to_string();
    assert!(
        shown.starts_with(status.name()) && shown.contains(e.message()),
        "{shown}"
    );
    e
}

#[test]
fn init_errors() {
    let dd = DataDist::new(Role::Decoder, 1).unwrap();
    expect_err(
        dd.init(&Options::new().set("llm.NoSuchKey", "1")),
        Status::PARAM_INVALID,
        "llm.NoSuchKey",
    );
    expect_err(
        dd.init(&Options::new().set("llm.LinkRetryCount", "1000")),
        Status::PARAM_INVALID,
        "llm.LinkRetryCount",
    );
    expect_err(
        dd.init(&Options::new().set("llm.Sync\0", "1")),
        Status::PARAM_INVALID,
        "NUL",
    );
    expect_err(
        dd.init(&Options::new().set("llmlink.Transport", "carrier-pigeon")),
        Status::PARAM_INVALID,
        "llmlink.Transport",
    );
    dd.init(&Options::new()).unwrap();
    expect_err(dd.init(&Options::new()), Status::ALREADY_INITIALIZED, "");
}

#[test]
fn calls_before_init_and_after_finalize() {
    let mut dd = DataDist::new(Role::Decoder, 2).unwrap();
    let info = [cluster(1, 1000)];
    expect_err(
        dd.link_clusters(&info, LINK_TIMEOUT),
        Status::NOT_INITIALIZED,
        "",
    );
    dd.init(&Options::new()).unwrap();
    dd.finalize();
    expect_err(
        dd.link_clusters(&info, LINK_TIMEOUT),
        Status::ENGINE_FINALIZED,
        "finalized",
    );
    expect_err(
        dd.unlink_clusters(&info, LINK_TIMEOUT, true),
        Status::ENGINE_FINALIZED,
        "finalized",
    );
    expect_err(
        dd.check_link_status(1),
        Status::ENGINE_FINALIZED,
        "finalized",
    );
    expect_err(
        dd.init(&Options::new()),
        Status::ENGINE_FINALIZED,
        "finalized",
    );
    let desc = CacheDesc::new(1, DataType::Uint8, vec![1, 8]);
    expect_err(
        dd.cache_manager().allocate_cache(&desc, &[]),
        Status::ENGINE_FINALIZED,
        "finalized",
    );
}

#[test]
fn link_argument_errors() {
    let (p, port) = prompt(10);
    let d = decoder(11);
    // A PROMPT engine does not link.
    expect_err(
        p.link_clusters(&[cluster(11, 1)], LINK_TIMEOUT),
        Status::ROLE_NOT_ALLOWED,
        "PROMPT",
    );
    // More than 16 clusters: nothing attempted.
    let many: Vec<ClusterInfo> = (0..17).map(|i| cluster(100 + i, port)).collect();
    expect_err(
        d.link_clusters(&many, LINK_TIMEOUT),
        Status::CLUSTER_NUM_EXCEED_LIMIT,
        "16",
    );
    expect_err(
        d.unlink_clusters(&many, LINK_TIMEOUT, false),
        Status::CLUSTER_NUM_EXCEED_LIMIT,
        "16",
    );
    assert_eq!(p.stats().unwrap().handshakes_accepted, 0);
    expect_err(
        d.link_clusters(&[], LINK_TIMEOUT),
        Status::PARAM_INVALID,
        "num_clusters",
    );
    let no_remote = ClusterInfo {
        remote_cluster_id: 10,
        ..ClusterInfo::default()
    };
    expect_err(
        d.link_clusters(&[no_remote], LINK_TIMEOUT),
        Status::PARAM_INVALID,
        "remote ip",
    );
    let bad_ip = ClusterInfo::new(10, IpInfo::new("not-an-ip", port));
    expect_err(
        d.link_clusters(&[bad_ip], LINK_TIMEOUT),
        Status::PARAM_INVALID,
        "not-an-ip",
    );
    expect_err(
        d.link_clusters(&[cluster(10, 0)], LINK_TIMEOUT),
        Status::PARAM_INVALID,
        "port",
    );
    let nul_ip = ClusterInfo::new(10, IpInfo::new("127.0.0.1\0", port));
    expect_err(
        d.link_clusters(&[nul_ip], LINK_TIMEOUT),
        Status::PARAM_INVALID,
        "NUL",
    );
    let to_decoder = cluster(10, port).with_remote_role(Role::Decoder);
    expect_err(
        d.link_clusters(&[to_decoder], LINK_TIMEOUT),
        Status::PARAM_INVALID,
        "remote_role",
    );
    expect_err(
        d.link_clusters(&[cluster(10, port)], Duration::ZERO),
        Status::PARAM_INVALID,
        "timeout",
    );
    expect_err(
        d.link_clusters(&[cluster(10, port)], Duration::from_secs(u64::MAX / 4)),
        Status::PARAM_INVALID,
        "timeout",
    );
    expect_err(
        d.link_clusters(&[cluster(10, port), cluster(10, port)], LINK_TIMEOUT),
        Status::PARAM_INVALID,
        "10",
    );
    // None of it reached the server, and nothing is linked.
    assert_eq!(p.stats().unwrap().handshakes_accepted, 0);
    assert!(!d.check_link_status(10).unwrap());
    expect_err(p.listen_port(5), Status::PARAM_INVALID, "5");
}

fn desc() -> CacheDesc {
    CacheDesc::new(2, DataType::Uint8, vec![4, 32])
}

#[test]
fn registration_errors() {
    let (p, _port) = prompt(20);
    let cm = p.cache_manager();
    let mut nine = desc();
    nine.shape = vec![1; 9];
    expect_err(
        cm.allocate_cache(&nine, &[]),
        Status::PARAM_INVALID,
        "dimensions",
    );
    let zero_dim = CacheDesc::new(2, DataType::Uint8, vec![4, 0]);
    expect_err(
        cm.allocate_cache(&zero_dim, &[]),
        Status::PARAM_INVALID,
        "shape",
    );
    let mut device = desc();
    device.placement = Placement::Device;
    expect_err(
        cm.allocate_cache(&device, &[]),
        Status::FEATURE_NOT_ENABLED,
        "",
    );
    // The buffers must fit the description: checked before C sees them.
    expect_err(
        cm.register_cache(&desc(), vec![vec![0; 128]], &[]),
        Status::PARAM_INVALID,
        "tensor buffers",
    );
    expect_err(
        cm.register_cache(&desc(), vec![vec![0; 128], vec![0; 127]], &[]),
        Status::PARAM_INVALID,
        "tensors[1]",
    );
    // The wrong key type for the call.
    let blocks = CacheKey::Blocks {
        prompt_cluster_id: 20,
        model_id: 0,
    };
    expect_err(
        cm.allocate_cache(&desc(), &[blocks]),
        Status::PARAM_INVALID,
        "keys[0]",
    );
    let ck = CacheKey::Cache {
        prompt_cluster_id: 20,
        req_id: 1,
        model_id: 0,
        prefix_id: None,
    };
    expect_err(
        cm.allocate_blocks_cache(&desc(), Some(&ck)),
        Status::PARAM_INVALID,
        "blocks_key",
    );
    // A key registered twice: in one call, and across calls.
    expect_err(
        cm.allocate_cache(&desc(), &[ck, ck]),
        Status::CACHE_KEY_ALREADY_EXIST,
        "",
    );
    let _first = cm.allocate_blocks_cache(&desc(), Some(&blocks)).unwrap();
    expect_err(
        cm.allocate_blocks_cache(&desc(), Some(&blocks)),
        Status::CACHE_KEY_ALREADY_EXIST,
        "",
    );
    expect_err(
        cm.register_blocks_cache(&desc(), vec![vec![0; 128]; 2], Some(&blocks)),
        Status::CACHE_KEY_ALREADY_EXIST,
        "",
    );
    // Raw registration: C checks what it can (count, NULL/0 address).
    unsafe {
        expect_err(
            cm.register_cache_raw(&desc(), &[0x1000], &[]),
            Status::PARAM_INVALID,
            "num_addrs",
        );
        expect_err(
            cm.register_blocks_cache_raw(&desc(), &[0, 0], None),
            Status::PARAM_INVALID,
            "addrs",
        );
    }
    let unknown = CacheKey::Cache {
        prompt_cluster_id: 20,
        req_id: 77,
        model_id: 0,
        prefix_id: None,
    };
    expect_err(
        cm.remove_cache_key(&unknown),
        Status::KV_CACHE_NOT_EXIST,
        "",
    );
    let by_id = CacheKey::IdAndIndex {
        cluster_id: 20,
        cache_id: 1,
        batch_index: 0,
    };
    expect_err(cm.remove_cache_key(&by_id), Status::PARAM_INVALID, "key");
}

#[test]
fn transfer_errors() {
    let (p, d) = linked_pair(30, 31);
    let key = CacheKey::Blocks {
        prompt_cluster_id: 30,
        model_id: 0,
    };
    let _src = p
        .cache_manager()
        .allocate_blocks_cache(&desc(), Some(&key))
        .unwrap();
    let cm = d.cache_manager();
    let mut dst = cm.allocate_blocks_cache(&desc(), None).unwrap();
    // No link with that cluster.
    let elsewhere = CacheKey::Blocks {
        prompt_cluster_id: 99,
        model_id: 0,
    };
    expect_err(
        cm.pull_blocks(&elsewhere, &mut dst, &[0], &[0], None),
        Status::NOT_YET_LINK,
        "99",
    );
    // Argument checks before any traffic.
    expect_err(
        cm.pull_blocks(&key, &mut dst, &[0, 1], &[0], None),
        Status::PARAM_INVALID,
        "blocks",
    );
    expect_err(
        cm.pull_blocks(&key, &mut dst, &[0, 1], &[2, 2], None),
        Status::PARAM_INVALID,
        "dst_blocks",
    );
    expect_err(
        cm.pull_cache(&key, &mut dst, 0, None, None),
        Status::PARAM_INVALID,
        "src_key",
    );
    expect_err(
        cm.push_cache(&key, &dst, 0, None, None),
        Status::PARAM_INVALID,
        "dst_key",
    );
    let by_cache = CacheKey::Cache {
        prompt_cluster_id: 30,
        req_id: 1,
        model_id: 0,
        prefix_id: None,
    };
    expect_err(
        cm.push_blocks(&by_cache, &dst, &[0], &[0], None),
        Status::PARAM_INVALID,
        "dst_key",
    );
    expect_err(
        cm.pull_cache(&by_cache, &mut dst, 0, Some(0), None),
        Status::PARAM_INVALID,
        "size",
    );
    expect_err(
        cm.pull_cache(&by_cache, &mut dst, 0, Some(u64::MAX), None),
        Status::PARAM_INVALID,
        "size",
    );
    let bad_layers = LayerRange::new(0..1, 0..2, 2);
    expect_err(
        cm.pull_blocks(&key, &mut dst, &[0], &[0], Some(&bad_layers)),
        Status::PARAM_INVALID,
        "layer",
    );
    // The holder refuses: block past the end; no byte moves, the link stays.
    expect_err(
        cm.pull_blocks(&key, &mut dst, &[4], &[0], None),
        Status::PARAM_INVALID,
        "",
    );
    assert!(dst.tensor(0).iter().all(|&b| b == 0));
    let unknown = CacheKey::Blocks {
        prompt_cluster_id: 30,
        model_id: 12,
    };
    expect_err(
        cm.pull_blocks(&unknown, &mut dst, &[0], &[0], None),
        Status::KV_CACHE_NOT_EXIST,
        "",
    );
    assert!(d.check_link_status(30).unwrap());
    assert_eq!(p.xfer_stats().unwrap().requests_refused, 2);
    // A handle of another engine is refused by the Rust side.
    let mut foreign = p
        .cache_manager()
        .allocate_blocks_cache(&desc(), None)
        .unwrap();
    expect_err(
        cm.pull_blocks(&key, &mut foreign, &[0], &[0], None),
        Status::PARAM_INVALID,
        "another engine",
    );
    // After the everything above, a good pull still works.
    cm.pull_blocks(&key, &mut dst, &[3], &[0], None).unwrap();
}

#[test]
fn statuses_are_constants_with_names() {
    assert_eq!(Status::SUCCESS.raw(), llmlink::llmlink_sys::LLMLINK_SUCCESS);
    assert_eq!(Status::CACHE_IN_USE.raw(), 0x5010_B109);
    assert_eq!(Status::LINK_FAILED.to_string(), "LLM_LINK_FAILED");
    assert_eq!(Status::ROLE_NOT_ALLOWED.name(), "LLMLINK_ROLE_NOT_ALLOWED");
    assert!(!Status::TIMEOUT.description().is_empty());
    // An unknown value from C is an ordinary value.
    let unknown = Status::from_raw(0x5010_BFFF);
    assert_eq!(unknown.to_string(), "LLM_UNKNOWN_STATUS");
    assert!(!unknown.is_success());
    assert!(format!("{unknown:?}").contains("0x5010bfff"));
    let header = llmlink::llmlink_sys::LLMLINK_VERSION_STRING;
    assert_eq!(llmlink::version().as_bytes(), &header[..header.len() - 1]);
}
